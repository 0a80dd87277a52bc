"""Device resolution ("auto"), seeding and numpy's BLAS threads, in one place."""

from __future__ import annotations

import contextlib
import functools
import os
import random
from typing import Any

import numpy as np
import torch
from threadpoolctl import ThreadpoolController


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


def bf16_native(device: torch.device) -> bool:
    """True where bfloat16 matmuls run natively: CUDA with bf16, or a CPU with AVX512-BF16 / AMX (oneDNN)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def inference_precision(device: torch.device, precision: str = "auto") -> str:
    """Resolve ``auto`` / ``fp32`` / ``bf16`` to what inference on ``device`` will use."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision={precision!r}; choose auto, fp32 or bf16")
    if precision == "auto":
        return "bf16" if bf16_native(device) else "fp32"
    return precision


def training_precision(device: torch.device, precision: str) -> str:
    """``train.mixed_precision`` as accelerate takes it: ``auto`` is ``bf16`` where :func:`bf16_native`, else
    ``no`` (emulated bf16 on an AVX2-only CPU made a MiniLM LoRA step 56 s instead of 2-4 s); other values
    pass through."""
    if precision == "auto":
        return "bf16" if bf16_native(device) else "no"
    return precision


def autocast(device: torch.device, precision: str = "auto") -> Any:
    """A context running ``device`` work in bfloat16 autocast when :func:`inference_precision` says bf16."""
    if inference_precision(device, precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@functools.cache
def _threadpools() -> ThreadpoolController:
    return ThreadpoolController()  # made on first use: it lists the BLAS libraries loaded by then


def one_blas_thread() -> contextlib.AbstractContextManager:
    """numpy's BLAS on one thread inside the ``with`` block (torch keeps its own threads); ~0.1 ms to enter.

    For loops of small products, one query at a time (a user against a few thousand items): two BLAS
    threads on a busy 2-core machine wait for each other, and a 3.7k x 384 ``gemv`` measured 2.0 ms against
    0.1 ms on one thread; ranking 200 demo users took 4.9 s against 0.55 s.
    """
    return _threadpools().limit(limits=1, user_api="blas")

