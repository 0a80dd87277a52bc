"""Resumable training checkpoints without pickle: tensors in safetensors, everything else in JSON.

Layout (one folder per checkpoint, written atomically with :func:`recsys_llm.io_utils.atomic_dir`, so a
crash while saving leaves the previous checkpoint untouched and no half-written folder under a final name)::

    OUT/checkpoints/step-000123/
        trainable.safetensors   trainable parameters by name (LoRA weights, the log-temperature if learnable)
        optimizer.safetensors   optimizer state tensors, keys "<param index>.<name>" (AdamW: step, exp_avg, ...)
        optimizer.json          param groups (hyperparameters, param indices), non-tensor state, param names
        rng.safetensors         torch CPU / CUDA generator states per process ("torch_cpu.<rank>", ...), uint8
        rng.json                numpy global bit-generator state and python ``random`` state per process
        trainer.json            step, scheduler + grad-scaler state, sampler seed, running log, best metric, ...

``trainer.json`` is written last; a folder without it is never picked by :func:`latest_checkpoint`. Nothing
here is unpickled, so a checkpoint from an untrusted source cannot run code when loaded.

Example:
    >>> ckpt = latest_checkpoint("runs/ml/encoder")  # doctest: +SKIP
    >>> state = load_checkpoint(ckpt)  # doctest: +SKIP
    >>> state.trainer["step"], sorted(state.trainable)[:1]  # doctest: +SKIP
    (120, ['encoder.model.base_model.model.encoder.layer.0.attention.self.query.lora_A.default.weight'])
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from recsys_llm.io_utils import atomic_dir, atomic_write_json, load_json

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
FORMAT_VERSION = 1
TRAINER_FILE = "trainer.json"
_NAME = re.compile(r"^step-(\d+)$")


def checkpoint_dir(out_dir: str | Path, step: int) -> Path:
    """``out_dir/checkpoints/step-000123`` for ``step=123``."""
    return Path(out_dir) / CHECKPOINTS_DIR / f"step-{step:06d}"


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints ``(step, folder)`` under ``out_dir/checkpoints``, oldest first.

    Only folders named ``step-<digits>`` that contain ``trainer.json`` count; temporary folders of an
    interrupted save (``.step-*.tmp-*``) and incomplete folders are ignored.
    """
    root = Path(out_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir():
            if (p / TRAINER_FILE).is_file():
                found.append((int(m.group(1)), p))
            else:
                logger.warning("ignoring incomplete checkpoint %s (no %s)", p, TRAINER_FILE)
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None when there is none."""
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def prune_checkpoints(out_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints and leftovers of interrupted saves; returns what went.

    Call it only from the process that writes checkpoints, never while a save is in progress.
    """
    if keep < 1:
        raise ValueError(f"keep={keep}; must be >= 1")
    root = Path(out_dir) / CHECKPOINTS_DIR
    removed = [p for _, p in list_checkpoints(out_dir)[:-keep]]
    if root.is_dir():
        removed += [p for p in root.iterdir() if p.name.startswith(".step-")]  # .step-*.tmp-* / .old-*
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    if removed:
        logger.debug("pruned %s", ", ".join(p.name for p in removed))
    return removed


def clear_checkpoints(out_dir: str | Path) -> int:
    """Remove ``out_dir/checkpoints`` (an earlier run's) before a fresh run; returns how many there were."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    n = len(list_checkpoints(out_dir))
    if root.is_dir():
        shutil.rmtree(root)
    return n


# ---------------------------------------------------------------------------------------------- RNG states
def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states: torch CPU and every CUDA device (uint8 tensors), numpy, python ``random``."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch_cpu": torch.get_rng_state(),  # (5056,) uint8
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {**np_state, "state": {k: _jsonable(v) for k, v in np_state["state"].items()}},
        "python": _jsonable(random.getstate()),
    }
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states restored for as many devices as both sides have)."""
    torch.set_rng_state(state["torch_cpu"])
    cuda = list(state.get("torch_cuda", []))
    if cuda and torch.cuda.is_available():
        for i, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, device=i)
    np_state = dict(state["numpy"])
    np_state["state"] = {
        k: np.asarray(v, dtype=np.uint32) if k == "key" else v for k, v in np_state["state"].items()
    }
    np.random.set_state(np_state)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# ------------------------------------------------------------------------------------------ optimizer state
def flatten_optimizer_state(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (``"<param>.<key>"``) and a JSON-able rest.

    Raises:
        TypeError: a non-tensor state value that JSON cannot hold.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state_dict["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = _jsonable(value)
    groups = [{k: _jsonable(v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild the ``state_dict`` that :func:`flatten_optimizer_state` split (lists in groups back to tuples)."""
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = t
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    groups = [{k: (v if k == "params" or not isinstance(v, list) else tuple(v)) for k, v in g.items()}
              for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# ------------------------------------------------------------------------------------------ save and load
@dataclass
class TrainingCheckpoint:
    """Everything :func:`load_checkpoint` reads back."""

    folder: Path
    trainable: dict[str, torch.Tensor]
    """Trainable parameters by name (CPU tensors)."""
    optimizer: dict[str, Any]
    """A ``state_dict`` for ``optimizer.load_state_dict``."""
    param_names: list[str]
    """Names of the optimizer's parameters in index order (to check the model matches)."""
    rng: list[dict[str, Any]]
    """Per process (index = rank): the states for :func:`restore_rng_state`."""
    trainer: dict[str, Any]
    """``trainer.json``: step, scheduler/scaler state, sampler seed, log, best metric, config, ..."""

    @property
    def step(self) -> int:
        return int(self.trainer["step"])


def save_checkpoint(
    folder: str | Path,
    trainable: Mapping[str, torch.Tensor],
    optimizer_state: Mapping[str, Any],
    param_names: Sequence[str],
    rng_states: Sequence[Mapping[str, Any]],
    trainer: Mapping[str, Any],
) -> Path:
    """Write one checkpoint folder atomically (built beside ``folder``, then renamed onto it).

    Args:
        folder: usually :func:`checkpoint_dir` ``(out_dir, step)``.
        trainable: trainable parameters by name.
        optimizer_state: ``optimizer.state_dict()``.
        param_names: the optimizer's parameter names, in its index order.
        rng_states: :func:`capture_rng_state` of every process, index = rank.
        trainer: JSON-able loop state; must hold ``step``.

    Returns:
        ``folder``.
    """
    folder = Path(folder)
    opt_tensors, opt_meta = flatten_optimizer_state(optimizer_state)
    rng_tensors: dict[str, torch.Tensor] = {}
    rng_meta = []
    for rank, s in enumerate(rng_states):
        rng_tensors[f"torch_cpu.{rank}"] = s["torch_cpu"].contiguous()
        for i, t in enumerate(s["torch_cuda"]):
            rng_tensors[f"torch_cuda.{rank}.{i}"] = t.cpu().contiguous()
        rng_meta.append({"numpy": s["numpy"], "python": s["python"], "n_cuda": len(s["torch_cuda"])})
    with atomic_dir(folder, carry_over=False) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, tmp / "trainable.safetensors")
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        atomic_write_json(tmp / "optimizer.json", {**opt_meta, "param_names": list(param_names)})
        save_file(rng_tensors, tmp / "rng.safetensors")
        atomic_write_json(tmp / "rng.json", rng_meta)
        atomic_write_json(tmp / TRAINER_FILE, {"format": FORMAT_VERSION, **trainer})  # last: marks it complete
    logger.info("saved checkpoint %s", folder)
    return folder


def load_checkpoint(folder: str | Path) -> TrainingCheckpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on CPU).

    Raises:
        FileNotFoundError: ``folder/trainer.json`` is missing (not a complete checkpoint).
        ValueError: a newer, unknown checkpoint format.
    """
    folder = Path(folder)
    if not (folder / TRAINER_FILE).is_file():
        raise FileNotFoundError(f"{folder / TRAINER_FILE} not found: {folder} is not a complete training checkpoint")
    trainer = load_json(folder / TRAINER_FILE)
    if trainer.get("format", 0) > FORMAT_VERSION:
        raise ValueError(f"{folder}: checkpoint format {trainer['format']} is newer than this code ({FORMAT_VERSION})")
    opt_meta = load_json(folder / "optimizer.json")
    rng_tensors = load_file(folder / "rng.safetensors")
    rng = [
        {
            "torch_cpu": rng_tensors[f"torch_cpu.{rank}"],
            "torch_cuda": [rng_tensors[f"torch_cuda.{rank}.{i}"] for i in range(meta["n_cuda"])],
            "numpy": meta["numpy"],
            "python": meta["python"],
        }
        for rank, meta in enumerate(load_json(folder / "rng.json"))
    ]
    return TrainingCheckpoint(
        folder=folder,
        trainable=load_file(folder / "trainable.safetensors"),
        optimizer=unflatten_optimizer_state(load_file(folder / "optimizer.safetensors"), opt_meta),
        param_names=list(opt_meta["param_names"]),
        rng=rng,
        trainer=trainer,
    )


def _jsonable(v: Any) -> Any:
    """Tuples to lists and numpy scalars/arrays to Python; raise for anything JSON cannot hold."""
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    raise TypeError(f"checkpoint value of type {type(v).__name__} is neither a tensor nor JSON-serialisable")
