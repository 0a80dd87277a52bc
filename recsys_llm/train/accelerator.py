"""The accelerate plumbing the training loops share: a fresh Accelerator, and objects between processes.

Only ``accelerate.Accelerator`` knows about devices; a single process (CPU, one GPU) and ``accelerate launch``
with several run the same code.

Example:
    >>> accelerator = make_accelerator(cpu=True, mixed_precision="no")
    >>> accelerator.num_processes, gather_objects([1])
    (1, [1])
"""

from __future__ import annotations

import os
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list, gather_object

__all__ = ["broadcast_from_main", "gather_objects", "make_accelerator"]


def make_accelerator(cpu: bool, mixed_precision: str) -> Accelerator:
    """A fresh Accelerator; in a single process, reset accelerate's global state so these settings apply."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
    # LoRA on layers the pooling never reads (e.g. BERT's pooler) gets no gradient: tell DDP.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision, kwargs_handlers=[ddp])


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def gather_objects(obj: list) -> list:
    """All processes' objects on every process (the list itself when not distributed)."""
    return gather_object(obj) if _distributed() else obj


def broadcast_from_main(value: Any) -> Any:
    """The main process's ``value`` on every process (``value`` itself when not distributed)."""
    return broadcast_object_list([value], from_process=0)[0] if _distributed() else value
