"""Dotted keys and ``--set SECTION.FIELD=VALUE``: the one parser every entry point uses.

``--set`` values are parsed as JSON first (``10``, ``2.5``, ``true``, ``null``, ``[10, 20]``, ``"text"``); a
field that takes a string gets the raw text when JSON gives something else (``--set encoder.backbone=123``
is the string ``"123"``, ``--set index.factory=IVF4,Flat`` needs no quotes); ``null`` is always None. The
value is not converted to the field's type: the section's type check rejects ``--set train.max_steps=abc``
with a clear message.

Example:
    >>> parse_overrides(["train.max_steps=10", "eval.ks=[5, 10]", "data.path=null", "encoder.backbone=123"])
    {'train.max_steps': 10, 'eval.ks': [5, 10], 'data.path': None, 'encoder.backbone': '123'}
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterable
from typing import Any

from recsys_llm.config.base import Section
from recsys_llm.config.checks import ConfigError, field_types, type_problem
from recsys_llm.config.ranking import EvalConfig, HybridConfig, IndexConfig, RerankConfig
from recsys_llm.config.training import DataConfig, EncoderConfig, SplitConfig, TextConfig, TrainConfig

SECTIONS: dict[str, type[Section]] = {
    "data": DataConfig, "split": SplitConfig, "text": TextConfig, "encoder": EncoderConfig,
    "train": TrainConfig, "index": IndexConfig, "rerank": RerankConfig, "hybrid": HybridConfig,
    "eval": EvalConfig,
}
"""Every section by its key in ``config.json`` and in ``--set SECTION.FIELD=VALUE``, in pipeline order."""

_USAGE = "use SECTION.FIELD=VALUE, e.g. --set train.max_steps=300"


def field_names(section: str) -> list[str]:
    """The fields of a section, in declaration order."""
    return [f.name for f in dataclasses.fields(SECTIONS[section])]


def resolve_key(key: str) -> tuple[str, str]:
    """``"train.max_steps"`` -> ``("train", "max_steps")``, or a :class:`ConfigError` saying what exists."""
    section, dot, name = key.partition(".")
    if not dot:
        owners = [f"{s}.{key}" for s in SECTIONS if key in field_names(s)]
        hint = f"; did you mean {' or '.join(owners)}?" if owners else f" (sections: {', '.join(SECTIONS)})"
        raise ConfigError(f"config key {key!r} has no section: {_USAGE}{hint}")
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r} in {key!r}; sections: {', '.join(SECTIONS)}")
    names = field_names(section)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {section}.{close[0]}? " if close else ""
        raise ConfigError(f"unknown config key {key!r}; {hint}{section} fields: {', '.join(names)}")
    return section, name


def parse_value(raw: str, tp: Any) -> Any:
    """``raw`` as JSON; for a field that takes a string, the raw text when JSON gives a value it cannot take.

    ``null`` is always None (never the text "null"), so it is an error where the field cannot be null.
    """
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    if value is not None and type_problem(value, tp) is not None and type_problem(raw, tp) is None:
        return raw
    return value


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["train.max_steps=10", "eval.ks=[5,10]"]`` -> ``{"train.max_steps": 10, "eval.ks": [5, 10]}``.

    Args:
        pairs: ``SECTION.FIELD=VALUE`` strings, as given to ``--set`` (a later pair for a key wins).

    Returns:
        Dotted overrides for :meth:`PipelineConfig.override`; values parsed, not yet type-checked.

    Raises:
        ConfigError: for a pair without ``=``, a key without a section, or an unknown section or field.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set {pair!r}: no '=' in it; {_USAGE}")
        section, name = resolve_key(key.strip())
        out[f"{section}.{name}"] = parse_value(raw, field_types(SECTIONS[section])[name])
    return out
