"""The two-tower optimizer: AdamW on the trainable (LoRA) weights and the temperature, and its LR schedule.

Example:
    >>> [round(lr_factor("linear", s, 1, 3), 2) for s in range(4)]
    [0.0, 1.0, 0.5, 0.0]
"""

from __future__ import annotations

import math
from typing import Any

import torch

from recsys_llm.config import TrainConfig
from recsys_llm.train.step import TrainModule

__all__ = ["build_optimizer", "lr_factor"]


def lr_factor(schedule: str, step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier after ``step`` scheduler steps (the transformers schedules' formulas).

    Warm-up ``step / warmup`` for ``step < warmup``; then ``linear``: ``(total - step) / (total - warmup)``,
    ``cosine``: ``0.5 (1 + cos(pi p))`` with ``p = (step - warmup) / (total - warmup)``, ``constant``: 1;
    never below 0.

    Example:
        >>> [round(lr_factor("cosine", s, 2, 6), 3) for s in range(7)]
        [0.0, 0.5, 1.0, 0.854, 0.5, 0.146, 0.0]
    """
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))
    raise ValueError(f"lr_schedule={schedule!r}; choose linear, cosine or constant")


def build_optimizer(
    module: TrainModule, enc_params: list[tuple[str, torch.nn.Parameter]], cfg: TrainConfig, world: int
) -> tuple[list[tuple[str, torch.Tensor]], torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the encoder's trainable weights (+ the learnable log-temperature, no weight decay).

    The schedule advances ``world`` batches per optimizer step: with N processes each step consumes N batches
    of the ``cfg.max_steps`` the schedule spans.

    Returns:
        ``(named, optimizer, scheduler)``; ``named`` lists the trained tensors by checkpoint name
        (``encoder.<param>``, ``log_temperature``), in the optimizer's order.
    """
    named: list[tuple[str, torch.Tensor]] = [(f"encoder.{n}", p) for n, p in enc_params]
    groups: list[dict[str, Any]] = [{"params": [p for _, p in named]}]
    if module.log_temperature is not None:
        named.append(("log_temperature", module.log_temperature))
        groups.append({"params": [module.log_temperature], "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = min(cfg.warmup_steps, cfg.max_steps)
    schedule = cfg.lr_schedule
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(schedule, s * world, warmup, cfg.max_steps)
    )
    return named, optimizer, scheduler
