"""The base of every config section: declared types and choices checked on construction, then ranges.

Every field has a type, a default and help text (``field(metadata=meta("..."))``); fields with a fixed
set of values declare ``choices=``, fields whose default makes a poor example in an error message declare
``example=``. Building a section runs :func:`~recsys_llm.config.checks.check_fields` (types, then choices)
and then the section's :meth:`Section.validate` (ranges and cross-field rules), so ``validate`` only ever
sees values of the declared types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from recsys_llm.config.checks import check_fields


def meta(text: str, choices: tuple[str, ...] | None = None, example: Any = None) -> dict[str, Any]:
    """Field metadata: help text, the allowed values (checked generically), a value for error messages."""
    out: dict[str, Any] = {"help": text}
    if choices is not None:
        out["choices"] = choices
    if example is not None:
        out["example"] = example
    return out


@dataclass
class Section:
    """Base of every section: building one checks the declared types and choices, then :meth:`validate`.

    Subclasses set ``_section`` (their key in ``config.json``) and override :meth:`validate`, never
    ``__post_init__``.
    """

    _section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_fields(self, self._section)
        self.validate()

    def validate(self) -> None:
        """Range and cross-field checks; every field already has its declared type."""
