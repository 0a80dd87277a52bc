"""The two-tower training loop on accelerate: LoRA on a shared backbone, in-batch InfoNCE.

The same code runs on CPU, one GPU, or several via ``accelerate launch``. ``max_steps`` counts batches of
``batch_size * grad_accum_steps`` pairs; with N processes each takes every N-th batch
(:class:`~recsys_llm.train.sampler.PairBatchSampler`: batch ``b`` is a pure function of ``(seed, b)``), so
each process runs ``ceil(max_steps / N)`` optimizer steps and the learning-rate schedule advances N batches
per step. Only ``accelerate.Accelerator`` knows about devices.

Per optimizer step: draw the batch (no repeated positive item with ``unique_items_in_batch``), encode
users and items with the shared backbone, in-batch InfoNCE with logQ correction, AdamW on the trainable
(LoRA) weights and, with ``learnable_temperature``, on log(temperature). With ``grad_accum_steps = k > 1``
the batch is processed in k micro-batches by gradient caching (Gao et al., 2021): embeddings of all k
micro-batches are computed without a graph, the loss over the whole batch gives the gradient of every
embedding, and each micro-batch is then re-encoded with a graph (same dropout masks) and back-propagated
with those gradients. The update equals that of one batch of ``batch_size * k`` pairs (every pair a
negative of every other), at one micro-batch's activation memory and one extra forward pass.

Files under ``out_dir``: ``train_log.jsonl`` (loss records ``{"step", "loss", "lr", "seconds"}`` (+
``"temperature"`` when learnable) and validation records ``{"step", "val_recall@10", "val_ndcg@10",
"best", "seconds"}``), ``checkpoints/step-NNNNNN/`` (:mod:`recsys_llm.train.checkpoint`) and ``best/`` (the
encoder with the best validation NDCG@10, loadable with ``TwoTowerEncoder.load``).

Example:
    >>> pairs = build_pairs(histories, titles, max_items=20)  # doctest: +SKIP
    >>> encoder = TwoTowerEncoder.from_config(EncoderConfig(), device="auto")  # doctest: +SKIP
    >>> cfg = TrainConfig(checkpoint_every=50, eval_every=25, early_stopping_patience=3)
    >>> valid = ValidationSet(val_user_texts, val_targets, seen=train_histories)  # doctest: +SKIP
    >>> result = train_two_tower(encoder, pairs, item_texts, TextConfig(), cfg, out_dir=Path("enc"),
    ...                          valid=valid, resume=True)  # continues from enc/checkpoints/ if present
    >>> result.final_loss < result.log[0]["loss"], result.best_step  # doctest: +SKIP
    (True, 75)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from recsys_llm.config import TextConfig, TrainConfig
from recsys_llm.device import resolve_device
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.io_utils import atomic_write_json
from recsys_llm.losses.info_nce import in_batch_info_nce
from recsys_llm.train.checkpoint import (
    capture_rng_state,
    checkpoint_dir,
    clear_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from recsys_llm.train.pairs import TrainingPairs
from recsys_llm.train.sampler import PairBatchSampler

logger = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
BEST_DIR = "best"
TEMPERATURE_RANGE = (0.01, 1.0)
"""A learnable temperature is clamped to this range."""
RESUME_MUST_MATCH = ("seed", "batch_size", "grad_accum_steps", "sampling", "unique_items_in_batch",
                     "learnable_temperature", "logq_correction")
"""TrainConfig fields that must equal the checkpoint's for a resumed run to continue the same run."""
_RESUME_HARMLESS = ("log_every", "checkpoint_every", "keep_checkpoints", "device", "compile", "gradient_checkpointing")


@dataclass
class TrainResult:
    steps: int
    """Optimizer steps taken (on this process), including those before a resume."""
    final_loss: float
    """Mean loss over the last logging window."""
    seconds: float
    log: list[dict] = field(default_factory=list)
    """One loss record every ``log_every`` steps (and at the last step): ``{"step", "loss", "lr", "seconds"}``."""
    evals: list[dict] = field(default_factory=list)
    """Validation records ``{"step", "val_recall@K", "val_ndcg@K", "best", "seconds"}``."""
    temperature: float = 0.0
    """The final InfoNCE temperature (learned, or the configured one)."""
    best_step: int | None = None
    """Step of the best validation NDCG@K (its encoder is in ``out_dir/best``); None without validation."""
    best_metrics: dict | None = None
    stopped_early: bool = False
    resumed_from: int = 0
    """The checkpoint step this call continued from (0 = a fresh start)."""


@dataclass
class ValidationSet:
    """Held-out users scored during training by full ranking over every item, seen items filtered.

    Args:
        user_texts: ``n_users`` user (history) texts.
        targets: ``n_users`` arrays of held-out item ids.
        seen: optional ``n_users`` arrays of item ids to exclude from each ranking (the training history).
        k: cut-off of Recall@k and NDCG@k.

    Example:
        >>> v = ValidationSet(["a; b"], [np.array([3])], seen=[np.array([0, 1])])
        >>> v.k, v.targets[0].dtype
        (10, dtype('int64'))
    """

    user_texts: list[str]
    targets: list[np.ndarray]
    seen: list[np.ndarray] | None = None
    k: int = 10

    def __post_init__(self) -> None:
        self.user_texts = list(self.user_texts)
        self.targets = [np.atleast_1d(np.asarray(t, dtype=np.int64)) for t in self.targets]
        if self.seen is not None:
            self.seen = [np.atleast_1d(np.asarray(s, dtype=np.int64)) for s in self.seen]
        n = len(self.user_texts)
        if n == 0 or len(self.targets) != n or (self.seen is not None and len(self.seen) != n):
            raise ValueError(
                f"validation needs equal, non-zero numbers of user_texts ({n}), targets ({len(self.targets)})"
                f" and seen lists ({'-' if self.seen is None else len(self.seen)})"
            )
        if self.k < 1:
            raise ValueError(f"k={self.k}; must be >= 1")

    @classmethod
    def coerce(cls, valid: ValidationSet | Sequence) -> ValidationSet:
        """Accept a :class:`ValidationSet` or a tuple ``(user_texts, targets[, seen])``."""
        if isinstance(valid, ValidationSet):
            return valid
        if isinstance(valid, tuple) and len(valid) in (2, 3):
            return cls(*valid)
        raise TypeError("valid must be a ValidationSet or a tuple (user_texts, targets[, seen])")


def evaluate_retrieval(
    encoder: TwoTowerEncoder,
    valid: ValidationSet,
    item_texts: Sequence[str],
    text_cfg: TextConfig,
    batch_size: int = 128,
    user_chunk: int = 1024,
) -> dict[str, float]:
    """Recall@k and NDCG@k of ``valid`` by full ranking over all items (items encoded once).

    Returns:
        ``{"recall@k": float, "ndcg@k": float}``, means over users with at least one target.
    """
    from recsys_llm.baselines import rank_items
    from recsys_llm.metrics import hit_matrix, ndcg_at_k, recall_at_k

    item_emb = encoder.encode_items(item_texts, text_cfg.item_max_tokens, batch_size, show_progress=False)
    user_emb = encoder.encode_users(valid.user_texts, text_cfg.user_max_tokens, batch_size, show_progress=False)
    k = min(valid.k, len(item_texts))
    recall, ndcg = [], []
    for start in range(0, len(user_emb), user_chunk):
        rows = slice(start, start + user_chunk)
        scores = user_emb[rows] @ item_emb.T  # (chunk, n_items)
        seen = valid.seen[rows] if valid.seen is not None else None
        _, ranked = rank_items(scores, k, seen=seen)  # (chunk, k)
        hits, n_rel = hit_matrix(ranked, valid.targets[rows])
        recall.append(recall_at_k(hits, n_rel, k))
        ndcg.append(ndcg_at_k(hits, n_rel, k))
    return {f"recall@{valid.k}": float(np.nanmean(np.concatenate(recall))),
            f"ndcg@{valid.k}": float(np.nanmean(np.concatenate(ndcg)))}


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


def make_accelerator(cpu: bool, mixed_precision: str):
    """A fresh Accelerator; in a single process, reset accelerate's global state so these settings apply."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
    # LoRA on layers the pooling never reads (e.g. BERT's pooler) gets no gradient: tell DDP.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision, kwargs_handlers=[ddp])


class _TrainModule(nn.Module):
    """The encoder plus the (optionally learnable) temperature: one module, so DDP syncs both."""

    log_temperature: nn.Parameter | None

    def __init__(self, encoder: TwoTowerEncoder, temperature: float, learnable: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.fixed_temperature = float(temperature)
        param = nn.Parameter(torch.tensor(math.log(temperature))) if learnable else None
        self.register_parameter("log_temperature", param)

    def temperature(self) -> torch.Tensor | float:
        if self.log_temperature is None:
            return self.fixed_temperature
        return self.log_temperature.exp().clamp(*TEMPERATURE_RANGE)

    def temperature_value(self) -> float:
        return float(torch.as_tensor(self.temperature()).detach())

    def forward(self, user: dict, item: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]:
        user_emb, item_emb = self.encoder(user, item)  # (batch, dim) each
        return user_emb, item_emb, self.temperature()


@contextmanager
def _replay_rng(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> Iterator[None]:
    """Run the block with the given (CPU, CUDA) generator states; the outer states are left as they were."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.set_rng_state(state[0])
        if cuda and state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


def _rng_now(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _pairs_sha256(pairs: TrainingPairs) -> str:
    h = hashlib.sha256()
    h.update(pairs.pos_items.astype(np.int64).tobytes())
    h.update(pairs.users.astype(np.int64).tobytes())
    h.update("\x1f".join(pairs.user_texts).encode())
    return h.hexdigest()


def train_two_tower(
    encoder: TwoTowerEncoder,
    pairs: TrainingPairs,
    item_texts: Sequence[str],
    text_cfg: TextConfig,
    train_cfg: TrainConfig,
    out_dir: Path | None = None,
    *,
    resume: bool = False,
    valid: ValidationSet | tuple | None = None,
) -> TrainResult:
    """Fine-tune ``encoder``'s trainable (LoRA) weights in place on (user text, next item) pairs.

    Args:
        encoder: the model to train; afterwards it is unwrapped, in eval mode, on the training device,
            with the weights of the last step (the best validation weights are in ``out_dir/best``).
        pairs: training pairs (user text before the positive, positive item id).
        item_texts: text of every item, position = item id.
        text_cfg: token budgets (``user_max_tokens``, ``item_max_tokens``).
        train_cfg: steps, batch size, optimizer, schedule, temperature, sampling, checkpointing, validation.
        out_dir: when given, ``train_log.jsonl``, ``checkpoints/`` and ``best/`` are written there (main
            process).
        resume: continue from the newest checkpoint in ``out_dir/checkpoints`` (weights, optimizer,
            scheduler, RNG states, log); the remaining batches are exactly those of an uninterrupted run.
            Without a checkpoint there, training starts fresh (a warning is logged), so the same command
            serves the first launch and every restart.
        valid: validation users (:class:`ValidationSet` or ``(user_texts, targets[, seen])``), evaluated
            every ``eval_every`` steps and at the last step; drives ``best/`` and early stopping.

    Returns:
        :class:`TrainResult` with the loss and validation logs.

    Raises:
        ValueError: no pairs, nothing trainable, ``resume``/``checkpoint_every`` without ``out_dir``, or a
            checkpoint from a run with different data or sampling settings.
    """
    from accelerate.utils import set_seed

    if len(pairs) == 0:
        raise ValueError("no training pairs: users need more than train.min_history interactions")
    if (resume or train_cfg.checkpoint_every) and out_dir is None:
        raise ValueError("resume=True and train.checkpoint_every need out_dir (where checkpoints live)")
    enc_params = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
    if not enc_params:
        raise ValueError("the encoder has no trainable parameters; build it with lora=True")
    val = ValidationSet.coerce(valid) if valid is not None else None
    if val is None and train_cfg.eval_every:
        logger.warning("train.eval_every=%d but no validation data was passed: no evaluation, no early stopping",
                       train_cfg.eval_every)
    eval_every = train_cfg.eval_every if val is not None else 0
    out = Path(out_dir) if out_dir is not None else None

    accelerator = make_accelerator(resolve_device(train_cfg.device).type == "cpu", train_cfg.mixed_precision)
    set_seed(train_cfg.seed)
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    n_steps = math.ceil(train_cfg.max_steps / world)
    k = train_cfg.grad_accum_steps
    sampler = PairBatchSampler(pairs.pos_items, pairs.users, train_cfg.batch_size * k, train_cfg.seed,
                               train_cfg.sampling, train_cfg.unique_items_in_batch)
    # logQ correction: log of the chance that one draw's positive is the item (zero-probability items never occur)
    q = sampler.item_probs(len(item_texts))  # (n_items,)
    log_q = torch.from_numpy(np.log(np.where(q > 0, q, 1.0)).astype(np.float32))  # (n_items,)

    module = _TrainModule(encoder, train_cfg.temperature, train_cfg.learnable_temperature)
    gc_enabled = _enable_gradient_checkpointing(encoder) if train_cfg.gradient_checkpointing else False
    if train_cfg.compile:
        module.compile(dynamic=True)
    named: list[tuple[str, torch.Tensor]] = [(f"encoder.{n}", p) for n, p in enc_params]
    groups: list[dict[str, Any]] = [{"params": [p for _, p in named]}]
    if module.log_temperature is not None:
        named.append(("log_temperature", module.log_temperature))
        groups.append({"params": [module.log_temperature], "weight_decay": 0.0})
    raw_optimizer = torch.optim.AdamW(groups, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    warmup = min(train_cfg.warmup_steps, train_cfg.max_steps)
    schedule = train_cfg.lr_schedule
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        raw_optimizer, lambda s: lr_factor(schedule, s * world, warmup, train_cfg.max_steps)
    )
    model, optimizer = accelerator.prepare(module, raw_optimizer)
    device = accelerator.device

    meta = {"config": dataclasses.asdict(train_cfg), "world_size": world, "n_steps": n_steps,
            "pairs": {"n": len(pairs), "sha256": _pairs_sha256(pairs)}, "n_items": len(item_texts),
            "sampler": {"seed": sampler.seed, "batch_size": sampler.batch_size, "sampling": sampler.sampling,
                        "unique_items": sampler.unique_items}}
    st = _LoopState()
    if resume:
        assert out is not None
        ckpt_path = latest_checkpoint(out)
        if ckpt_path is None:
            logger.warning("resume=True but no checkpoint in %s: starting from step 0", out / "checkpoints")
        else:
            ckpt = load_checkpoint(ckpt_path)
            _check_compatible(ckpt.trainer, meta, ckpt_path)
            if ckpt.param_names != [n for n, _ in named]:
                raise ValueError(f"{ckpt_path}: its trainable parameters differ from this model's "
                                 "(another backbone or LoRA config?)")
            with torch.no_grad():
                for n, p in named:
                    p.copy_(ckpt.trainable[n])
            raw_optimizer.load_state_dict(ckpt.optimizer)
            scheduler.load_state_dict(ckpt.trainer["scheduler"])
            if accelerator.scaler is not None and ckpt.trainer.get("scaler"):
                accelerator.scaler.load_state_dict(ckpt.trainer["scaler"])
            st = _LoopState.from_json(ckpt.trainer, device)
            if len(ckpt.rng) != world:
                logger.warning("checkpoint has RNG states of %d processes, this run has %d: dropout masks "
                               "will differ from an uninterrupted run", len(ckpt.rng), world)
            restore_rng_state(ckpt.rng[min(rank, len(ckpt.rng) - 1)])
            logger.info("resumed from %s (step %d of %d)", ckpt_path, st.step, n_steps)
    resumed_from = st.step
    if resumed_from == 0 and train_cfg.checkpoint_every and main:
        assert out is not None
        stale = clear_checkpoints(out)  # a fresh run must not mix (or prune) its checkpoints with older ones
        if stale:
            logger.warning("removed %d checkpoints of an earlier run from %s (fresh start; pass resume=True "
                           "to continue one)", stale, out / "checkpoints")

    log_path = out / LOG_FILE if out is not None else None
    if log_path is not None and main:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("".join(json.dumps(r) + "\n" for r in st.records))

    def write(rec: dict) -> None:
        st.records.append(rec)
        if log_path is not None and main:
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def save(step: int) -> None:
        rng_states = _gather([capture_rng_state()])
        if main:
            assert out is not None
            sampler_pos = {**meta["sampler"], "next_batch": step * world}  # batches below it are used up
            trainer = {**meta, **st.to_json(), "sampler": sampler_pos, "scheduler": scheduler.state_dict(),
                       "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None}
            trainable = {n: p for n, p in named}
            save_checkpoint(checkpoint_dir(out, step), trainable, raw_optimizer.state_dict(),
                            [n for n, _ in named], rng_states, trainer)
            prune_checkpoints(out, train_cfg.keep_checkpoints)
        accelerator.wait_for_everyone()

    def inputs(idx: np.ndarray) -> tuple[dict, dict, torch.Tensor, torch.Tensor]:
        items = pairs.pos_items[idx]  # (b,)
        return (encoder.tokenize([pairs.user_texts[i] for i in idx], text_cfg.user_max_tokens),
                encoder.tokenize([item_texts[i] for i in items], text_cfg.item_max_tokens),
                torch.from_numpy(items), log_q[items])

    def step_loss(idx: np.ndarray) -> torch.Tensor:
        """Forward + backward of one batch; returns the detached loss."""
        use_logq = train_cfg.logq_correction
        if k == 1:
            user, item, ids, lq = inputs(idx)
            user_emb, item_emb, tau = model(user, item)  # (batch, dim) each
            loss = in_batch_info_nce(user_emb, item_emb, tau, ids, lq if use_logq else None)
            accelerator.backward(loss)
            return loss.detach()
        chunks = [inputs(c) for c in np.array_split(idx, k)]
        rng_states, users, items = [], [], []
        with torch.no_grad():  # 1. every micro-batch's embeddings, no graph
            for user, item, _, _ in chunks:
                rng_states.append(_rng_now(device))
                u, v, _ = model(user, item)  # (micro, dim) each
                users.append(u)
                items.append(v)
        user_all = torch.cat(users).requires_grad_()  # (batch, dim)
        item_all = torch.cat(items).requires_grad_()  # (batch, dim)
        tau_value = module.temperature()
        tau_leaf = tau_value.detach().requires_grad_() if isinstance(tau_value, torch.Tensor) else tau_value
        ids = torch.cat([c[2] for c in chunks])
        lq_all = torch.cat([c[3] for c in chunks]) if use_logq else None
        loss = in_batch_info_nce(user_all, item_all, tau_leaf, ids, lq_all)  # 2. loss over the whole batch
        wrt = [user_all, item_all] + ([tau_leaf] if isinstance(tau_leaf, torch.Tensor) else [])
        grads = torch.autograd.grad(loss, wrt)
        start = 0
        for j, (user, item, _, _) in enumerate(chunks):  # 3. re-encode with a graph, same dropout masks
            rows = slice(start, start + len(user["input_ids"]))
            start = rows.stop
            last = j == len(chunks) - 1
            with accelerator.no_sync(model) if not last else nullcontext(), _replay_rng(rng_states[j], device):
                u, v, tau = model(user, item)
                surrogate = (u * grads[0][rows]).sum() + (v * grads[1][rows]).sum()
                if last and len(grads) == 3:
                    surrogate = surrogate + tau * grads[2]
                accelerator.backward(surrogate)
        return loss.detach()

    t0 = time.perf_counter() - st.seconds
    model.train()
    bar = tqdm(total=n_steps, initial=st.step, desc="finetune", disable=not accelerator.is_local_main_process)
    try:
        for step in range(st.step + 1, n_steps + 1):
            if st.done:
                break
            loss = step_loss(sampler.batch((step - 1) * world + rank))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if module.log_temperature is not None:
                with torch.no_grad():
                    module.log_temperature.clamp_(*(math.log(t) for t in TEMPERATURE_RANGE))
            st.step = step
            st.window.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if eval_every and (step % eval_every == 0 or step == n_steps):
                assert val is not None
                _evaluate(st, step, encoder, val, item_texts, text_cfg, train_cfg, out, main, write,
                          time.perf_counter() - t0)
            if step == n_steps:
                st.done = True
            if step % max(train_cfg.log_every, 1) == 0 or st.done:
                mean = accelerator.reduce(torch.stack(st.window).mean(), reduction="mean").item()
                rec = {"step": step, "loss": mean, "lr": scheduler.get_last_lr()[0],
                       "seconds": round(time.perf_counter() - t0, 3)}
                if module.log_temperature is not None:
                    rec["temperature"] = module.temperature_value()
                write(rec)
                st.window = []
                logger.info("step %d/%d loss %.4f lr %.2e", step, n_steps, mean, rec["lr"])
            st.seconds = time.perf_counter() - t0
            if train_cfg.checkpoint_every and (step % train_cfg.checkpoint_every == 0 or st.done):
                save(step)
    finally:
        bar.close()
        if gc_enabled:
            _disable_gradient_checkpointing(encoder)

    accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    encoder.eval()
    accelerator.free_memory()
    seconds = time.perf_counter() - t0
    log = [r for r in st.records if "loss" in r]
    evals = [r for r in st.records if "loss" not in r]
    logger.info("trained %d steps in %.1fs (%.3fs/step), final loss %.4f%s", st.step, seconds,
                seconds / max(st.step, 1), log[-1]["loss"], " (stopped early)" if st.stopped_early else "")
    return TrainResult(
        steps=st.step, final_loss=log[-1]["loss"], seconds=seconds, log=log, evals=evals,
        temperature=module.temperature_value(), best_step=st.best_step, best_metrics=st.best_metrics,
        stopped_early=st.stopped_early, resumed_from=resumed_from,
    )


@dataclass
class _LoopState:
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
    def from_json(cls, d: dict, device: torch.device) -> _LoopState:
        window = [torch.tensor(w, dtype=torch.float32, device=device) for w in d["window"]]
        return cls(step=int(d["step"]), records=list(d["records"]), window=window, seconds=float(d["seconds"]),
                   best_step=d["best_step"], best_metrics=d["best_metrics"], bad_evals=int(d["bad_evals"]),
                   stopped_early=bool(d["stopped_early"]), done=bool(d["done"]))


def _evaluate(
    st: _LoopState, step: int, encoder: TwoTowerEncoder, val: ValidationSet, item_texts: Sequence[str],
    text_cfg: TextConfig, train_cfg: TrainConfig, out: Path | None, main: bool,
    write: Callable[[dict], None], seconds: float,
) -> None:
    """Validate on the main process, share the result, keep ``best/``, count evaluations without gain."""
    from accelerate.utils import broadcast_object_list

    metrics = [evaluate_retrieval(encoder, val, item_texts, text_cfg) if main else None]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        metrics = broadcast_object_list(metrics, from_process=0)
    m = metrics[0]
    assert m is not None
    key = f"ndcg@{val.k}"
    better = st.best_metrics is None or m[key] > st.best_metrics[key]
    if better:
        st.best_step, st.best_metrics, st.bad_evals = step, m, 0
        if out is not None and main:
            encoder.save(out / BEST_DIR)
            atomic_write_json(out / BEST_DIR / "best.json", {"step": step, **m})
    else:
        st.bad_evals += 1
    write({"step": step, **{f"val_{name}": v for name, v in m.items()}, "best": better,
           "seconds": round(seconds, 3)})
    logger.info("step %d validation %s%s", step, ", ".join(f"{n} {v:.4f}" for n, v in m.items()),
                " (best)" if better else f" (no gain for {st.bad_evals} evaluations)")
    if train_cfg.early_stopping_patience and st.bad_evals >= train_cfg.early_stopping_patience:
        logger.info("early stopping at step %d: best %s %.4f at step %s", step, key,
                    st.best_metrics[key] if st.best_metrics else float("nan"), st.best_step)
        st.stopped_early = st.done = True


def _check_compatible(saved: dict, meta: dict, path: Path) -> None:
    """Refuse a checkpoint of another run (data or sampling differ); warn about other changed settings."""
    if saved["pairs"]["sha256"] != meta["pairs"]["sha256"]:
        raise ValueError(f"{path} was written for other training pairs ({saved['pairs']['n']} pairs, now "
                         f"{meta['pairs']['n']}); resume with the same data or start a new out_dir")
    old, new = saved["config"], meta["config"]
    bad = [f for f in RESUME_MUST_MATCH if old.get(f) != new.get(f)]
    if bad:
        raise ValueError(f"{path}: cannot resume with changed train settings "
                         + ", ".join(f"{f}: {old.get(f)!r} -> {new.get(f)!r}" for f in bad))
    changed = [f for f in new if f not in RESUME_MUST_MATCH + _RESUME_HARMLESS and old.get(f) != new[f]]
    if changed or saved["world_size"] != meta["world_size"]:
        logger.warning("resuming %s with changed settings %s (world size %s -> %s): the result will differ "
                       "from an uninterrupted run", path, changed, saved["world_size"], meta["world_size"])


def _gather(obj: list) -> list:
    """All processes' objects on every process (the list itself when not distributed)."""
    from accelerate.utils import gather_object

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return gather_object(obj)
    return obj


def _enable_gradient_checkpointing(encoder: TwoTowerEncoder) -> bool:
    """Turn on non-reentrant activation checkpointing in the backbone; True when this call turned it on.

    Works through a peft wrapper (attributes resolve to the transformers model). Non-reentrant checkpointing
    needs no ``requires_grad`` inputs, so frozen embeddings under LoRA are fine.
    """
    model = encoder.model
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(model).__name__} does not support gradient checkpointing; "
                         "set train.gradient_checkpointing=false")
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        if model.is_activation_checkpointing:
            return False
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        if model.is_gradient_checkpointing:
            return False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return True


def _disable_gradient_checkpointing(encoder: TwoTowerEncoder) -> None:
    model = encoder.model
    if hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()
    if hasattr(model, "disable_input_require_grads"):
        model.disable_input_require_grads()  # enabling registered an embedding hook; remove it
