"""What a two-tower run carries through a checkpoint, and the checks that a resumed run is the same run.

:class:`LoopState` is the loop's state between steps (step, log records, the current loss window, best
validation, early-stopping count), saved as JSON inside ``trainer.json``. :func:`run_meta` describes the run
(config, world size, a hash of the training pairs, the sampler), and :func:`check_compatible` refuses a
checkpoint of another run.

Example:
    >>> st = LoopState(step=3, records=[{"step": 3, "loss": 1.2}])
    >>> LoopState.from_json(st.to_json(), torch.device("cpu")).records
    [{'step': 3, 'loss': 1.2}]
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from recsys_llm.config import TrainConfig
from recsys_llm.train.pairs import TrainingPairs
from recsys_llm.train.sampler import PairBatchSampler

__all__ = ["RESUME_MUST_MATCH", "LoopState", "check_compatible", "run_meta"]

logger = logging.getLogger(__name__)

RESUME_MUST_MATCH = ("seed", "batch_size", "grad_accum_steps", "sampling", "unique_items_in_batch",
                     "learnable_temperature", "logq_correction", "hard_negatives", "hard_negative_pool")
"""TrainConfig fields that must equal the checkpoint's for a resumed run to continue the same run."""
_RESUME_HARMLESS = ("log_every", "checkpoint_every", "keep_checkpoints", "device", "compile",
                    "gradient_checkpointing")


@dataclass
class LoopState:
    """What the loop carries from step to step (and through a checkpoint, as JSON)."""

    step: int = 0
    records: list[dict] = field(default_factory=list)
    window: list[torch.Tensor] = field(default_factory=list)
    seconds: float = 0.0
    best_step: int | None = None
    best_metrics: dict | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    done: bool = False

    def to_json(self) -> dict:
        return {"step": self.step, "records": self.records, "window": [float(w) for w in self.window],
                "seconds": self.seconds, "best_step": self.best_step, "best_metrics": self.best_metrics,
                "bad_evals": self.bad_evals, "stopped_early": self.stopped_early, "done": self.done}

    @classmethod
    def from_json(cls, d: dict, device: torch.device) -> LoopState:
        window = [torch.tensor(w, dtype=torch.float32, device=device) for w in d["window"]]
        return cls(step=int(d["step"]), records=list(d["records"]), window=window,
                   seconds=float(d["seconds"]), best_step=d["best_step"], best_metrics=d["best_metrics"], bad_evals=int(d["bad_evals"]),
                   stopped_early=bool(d["stopped_early"]), done=bool(d["done"]))


def run_meta(cfg: TrainConfig, world: int, n_steps: int, pairs: TrainingPairs, n_items: int,
             sampler: PairBatchSampler) -> dict:
    """The run's identity as saved in every checkpoint's ``trainer.json``."""
    return {"config": dataclasses.asdict(cfg), "world_size": world, "n_steps": n_steps,
            "pairs": {"n": len(pairs), "sha256": _pairs_sha256(pairs)}, "n_items": n_items,
            "sampler": {"seed": sampler.seed, "batch_size": sampler.batch_size, "sampling": sampler.sampling,
                        "unique_items": sampler.unique_items}}


def check_compatible(saved: dict, meta: dict, path: Path) -> None:
    """Refuse a checkpoint of another run (data or sampling differ); warn about other changed settings."""
    if saved["pairs"]["sha256"] != meta["pairs"]["sha256"]:
        raise ValueError(f"{path} was written for other training pairs ({saved['pairs']['n']} pairs, now "
                         f"{meta['pairs']['n']}); resume with the same data or start a new out_dir")
    # a field added after the checkpoint was written had its default there
    old = {**dataclasses.asdict(TrainConfig()), **saved["config"]}
    new = meta["config"]
    bad = [f for f in RESUME_MUST_MATCH if old.get(f) != new.get(f)]
    if bad:
        raise ValueError(f"{path}: cannot resume with changed train settings "
                         + ", ".join(f"{f}: {old.get(f)!r} -> {new.get(f)!r}" for f in bad))
    changed = [f for f in new if f not in RESUME_MUST_MATCH + _RESUME_HARMLESS and old.get(f) != new[f]]
    if changed or saved["world_size"] != meta["world_size"]:
        logger.warning("resuming %s with changed settings %s (world size %s -> %s): the result will differ "
                       "from an uninterrupted run", path, changed, saved["world_size"], meta["world_size"])


def _pairs_sha256(pairs: TrainingPairs) -> str:
    h = hashlib.sha256()
    h.update(pairs.pos_items.astype(np.int64).tobytes())
    h.update(pairs.users.astype(np.int64).tobytes())
    h.update("\x1f".join(pairs.user_texts).encode())
    return h.hexdigest()
