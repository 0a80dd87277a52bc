"""LoRA adapters via peft, with target modules from the per-architecture table."""

from __future__ import annotations

from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import PreTrainedModel

from recsys_llm.encoder.backbone import ARCHITECTURES, architecture_spec


def lora_target_modules(model_type: str, target_modules: list[str] | None) -> list[str]:
    """Explicit targets win; otherwise the architecture table's."""
    return list(target_modules) if target_modules else list(architecture_spec(model_type).lora_target_modules)


def apply_lora(
    model: PreTrainedModel,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: list[str] | None = None,
    modules_to_save: list[str] | None = None,
) -> nn.Module:
    """Wrap ``model`` in a peft LoRA model; only LoRA weights (and ``modules_to_save``) stay trainable.

    Args:
        model: a transformers model (``model.config.model_type`` picks the default targets).
        r, alpha, dropout: LoRA rank, scale numerator and branch dropout.
        target_modules: names of linear layers to adapt; None takes them from the table.

    Returns:
        The ``peft.PeftModel``.
    """
    targets = lora_target_modules(model.config.model_type, target_modules)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in present]
    if missing:
        raise ValueError(
            f"LoRA target modules {missing} not found in {model.config.model_type} model; "
            "set encoder.target_modules to names of its linear layers"
        )
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                     modules_to_save=modules_to_save,
                     fan_in_fan_out=_fan_in_fan_out(model.config.model_type))
    return get_peft_model(model, cfg)


def _fan_in_fan_out(model_type: str) -> bool:
    spec = ARCHITECTURES.get(model_type)
    return bool(spec and spec.fan_in_fan_out)


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
