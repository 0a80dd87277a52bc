"""The whole configuration of a run: one :class:`PipelineConfig` of sections, saved as ``config.json``.

Every way in (``PipelineConfig(...)``, :meth:`PipelineConfig.from_dict`, :meth:`PipelineConfig.load`,
:meth:`PipelineConfig.override`, :func:`section_from_dict`) builds the section dataclasses, so every value is
checked against its declared type and range on the way in; :meth:`PipelineConfig.save` checks again before
writing, so an invalid value (or a secret) never reaches ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from recsys_llm.config.checks import ConfigError, check_fields, kind
from recsys_llm.config.overrides import SECTIONS, resolve_key
from recsys_llm.config.ranking import EvalConfig, HybridConfig, IndexConfig, RerankConfig
from recsys_llm.config.training import DataConfig, EncoderConfig, SplitConfig, TextConfig, TrainConfig
from recsys_llm.io_utils import atomic_write_text

T = TypeVar("T")


@dataclass
class PipelineConfig:
    """Every section of a run, each with its defaults; ``config.json`` in the run directory holds one."""

    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    text: TextConfig = field(default_factory=TextConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        check_fields(self, "")  # each section is its section class (they check their own fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineConfig:
        """Build from ``{"train": {"max_steps": 10}, ...}``; what is missing keeps its default."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config is a JSON object of sections ({', '.join(SECTIONS)}), got {kind(d)}")
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; known: {sorted(SECTIONS)}")
        sections: dict[str, Any] = {name: section_from_dict(sub, d.get(name, {}), name)
                                    for name, sub in SECTIONS.items()}
        return cls(**sections)

    def save(self, path: str | Path) -> None:
        """Write ``config.json`` (checked again first: attributes may have been set since construction)."""
        checked = PipelineConfig.from_dict(self.to_dict())
        atomic_write_text(Path(path), json.dumps(checked.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PipelineConfig:
        """Read and check a saved config; every error names the file."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found; run `recsys-llm prepare` first") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def override(self, dotted: dict[str, Any]) -> PipelineConfig:
        """Return a copy with ``{"train.max_steps": 10, ...}`` applied (every check re-runs).

        Values are taken as given (no parsing: use :func:`~recsys_llm.config.parse_overrides` for
        ``--set`` strings), so ``{"train.max_steps": "10"}`` is a type error.
        """
        d = self.to_dict()
        for key, value in dotted.items():
            section, name = resolve_key(key)
            d[section][name] = value
        return PipelineConfig.from_dict(d)


def section_from_dict(cls: type[T], d: dict[str, Any], section: str) -> T:
    """Build a section dataclass from a dict, rejecting unknown keys with the list of known ones."""
    if not isinstance(d, dict):
        raise ConfigError(f"config section {section!r} must be a JSON object of fields, got {kind(d)}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in config section {section!r}; known: {sorted(names)}")
    return cls(**d)
