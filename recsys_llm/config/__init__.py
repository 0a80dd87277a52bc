"""Typed configuration, one dataclass per pipeline stage, saved as JSON beside the artifacts.

Every field has a type, a default and help text (``field(metadata=meta(...))``). Configs have no side
effects: nothing is loaded, downloaded or placed on a device when one is built. Every way a value comes in
(the CLI's ``--set``, a ``--config`` file, a run's ``config.json``, :meth:`PipelineConfig.override`, or
building a section such as ``TrainConfig(max_steps=300)``) runs the same checks, and a bad value raises one
:class:`ConfigError` naming the field, the value, what was expected and an example
(``--set train.max_steps=300``):

1. **Types**, from the dataclass annotations (read by :func:`typing.get_type_hints`, checked by
   :func:`~recsys_llm.config.checks.check_fields`): booleans are not integers; floats are not integers
   (2.5 and also 3.0 are rejected for an ``int`` field); integers are fine for a ``float`` field; a scalar
   is not a list (``eval.ks=10`` is an error, ``eval.ks=[10]`` is right) and every list element is checked;
   None (``null``) only where the annotation says ``| None``. Nothing is converted: a wrong type is an
   error, never a guess.
2. **Choices**, from the field metadata (``choices=("linear", "cosine", "constant")``).
3. **Ranges and cross-field rules**, in each section's ``validate()``, which runs after 1 and 2 and so never
   sees a wrong type.
4. **No secrets**: ``index.milvus_uri`` must not carry credentials (``http://user:password@host``) or a
   ``token=``/``password=`` parameter, because the config is written to ``config.json``; the token belongs in
   the ``RECSYS_LLM_MILVUS_TOKEN`` environment variable. No :class:`ConfigError` message echoes a password.

``--set SECTION.FIELD=VALUE`` strings are parsed by :func:`parse_overrides` (the one parser: the CLI, the
recipes in ``eval/`` and ``finetune/``): JSON first (``10``, ``true``, ``null``, ``[10, 20]``), then the raw
text for fields that take a string (``--set index.factory=IVF4,Flat``).

Modules: ``checks`` (the generic checks and :class:`ConfigError`), ``base`` (the section base class),
``training`` and ``ranking`` (the sections), ``overrides`` (dotted keys, ``--set``), ``pipeline``
(:class:`PipelineConfig`).

Example:
    >>> from recsys_llm.config import ConfigError, PipelineConfig, parse_overrides
    >>> cfg = PipelineConfig()
    >>> cfg.train.batch_size
    32
    >>> PipelineConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> cfg.override(parse_overrides(["train.max_steps=300"])).train.max_steps
    300
    >>> try:
    ...     cfg.override({"train.max_steps": 2.5})
    ... except ConfigError as e:
    ...     print(*str(e).split("; "), sep="\\n")
    train.max_steps=2.5 has the wrong type: expected int, got a float (integers only)
    e.g. --set train.max_steps=150
"""

from __future__ import annotations

from recsys_llm.config.base import Section, meta
from recsys_llm.config.checks import MILVUS_TOKEN_ENV, ConfigError, check_fields, mask_secrets, type_problem
from recsys_llm.config.overrides import SECTIONS, parse_overrides, resolve_key
from recsys_llm.config.pipeline import PipelineConfig, section_from_dict
from recsys_llm.config.ranking import EvalConfig, HybridConfig, IndexConfig, RerankConfig
from recsys_llm.config.training import (
    DEFAULT_BACKBONE,
    DataConfig,
    EncoderConfig,
    SplitConfig,
    TextConfig,
    TrainConfig,
)

__all__ = [
    "DEFAULT_BACKBONE",
    "MILVUS_TOKEN_ENV",
    "SECTIONS",
    "ConfigError",
    "DataConfig",
    "EncoderConfig",
    "EvalConfig",
    "HybridConfig",
    "IndexConfig",
    "PipelineConfig",
    "RerankConfig",
    "Section",
    "SplitConfig",
    "TextConfig",
    "TrainConfig",
    "check_fields",
    "mask_secrets",
    "meta",
    "parse_overrides",
    "resolve_key",
    "section_from_dict",
    "type_problem",
]
