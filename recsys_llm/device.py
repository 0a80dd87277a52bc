"""Device resolution ("auto") and seeding, in one place."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def resolve_device(device: str = "auto") -> torch.device:
    """Map ``"auto"`` to CUDA when available, else CPU; validate explicit names.

    Raises:
        ValueError: ``cuda`` asked for but not available, or an unknown device string.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device={device!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asked for but CUDA is not available here; use device='auto' or 'cpu'")
    return dev


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    np.random.seed(seed)
    torch.manual_seed(seed)
