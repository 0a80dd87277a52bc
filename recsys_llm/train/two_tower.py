"""The two-tower training loop on accelerate: LoRA on a shared backbone, in-batch InfoNCE.

The same code runs on CPU, one GPU, or several via ``accelerate launch``. ``max_steps`` counts batches of
``batch_size * grad_accum_steps`` pairs; with N processes each takes every N-th batch
(:class:`~recsys_llm.train.sampler.PairBatchSampler`: batch ``b`` is a pure function of ``(seed, b)``), so
each process runs ``ceil(max_steps / N)`` optimizer steps and the learning-rate schedule advances N batches
per step. Only ``accelerate.Accelerator`` knows about devices.

Per optimizer step: draw the batch (no repeated positive item with ``unique_items_in_batch``), encode
users and items with the shared backbone (with ``hard_negatives = n > 0`` also ``n`` lexical hard negatives per
pair, :mod:`recsys_llm.train.hard_negatives`: extra item columns for every user of the batch), in-batch InfoNCE
with logQ correction, AdamW on the trainable (LoRA) weights and, with ``learnable_temperature``, on
log(temperature) (:mod:`recsys_llm.train.step`;
``grad_accum_steps = k > 1`` processes the batch in k micro-batches by gradient caching, the same update
as one batch of ``batch_size * k`` pairs at one micro-batch's activation memory).

The loop is :class:`_TwoTowerLoop`: setup (accelerator, sampler, optimizer), resume or a fresh start, the
step, validation (:mod:`recsys_llm.train.validation`, best weights kept) and checkpointing
(:mod:`recsys_llm.train.checkpoint`, state in :mod:`recsys_llm.train.resume`).

Files under ``out_dir``: ``train_log.jsonl`` (loss records ``{"step", "loss", "lr", "seconds"}`` (+
``"temperature"`` when learnable) and validation records ``{"step", "val_recall@10", "val_ndcg@10",
"best", "seconds"}``), ``checkpoints/step-NNNNNN/`` (:mod:`recsys_llm.train.checkpoint`) and ``best/`` (the
encoder with the best validation NDCG@10, loadable with ``TwoTowerEncoder.load``).

Example:
    >>> pairs = build_pairs(histories, titles, max_items=20)  # doctest: +SKIP
    >>> encoder = TwoTowerEncoder.from_config(EncoderConfig(), device="auto")  # doctest: +SKIP
    >>> cfg = TrainConfig(checkpoint_every=50, eval_every=25, early_stopping_patience=3)
    >>> valid = ValidationSet(val_user_texts, val_targets, seen=train_histories)  # doctest: +SKIP
    >>> result = train_two_tower(encoder, pairs, item_texts, TextConfig(), cfg,  # doctest: +SKIP
    ...                          out_dir=Path("enc"), valid=valid, resume=True)  # continues a checkpoint
    >>> result.final_loss < result.log[0]["loss"], result.best_step  # doctest: +SKIP
    (True, 75)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from recsys_llm.config import TextConfig, TrainConfig
from recsys_llm.device import resolve_device, training_precision
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.io_utils import atomic_write_json
from recsys_llm.train.accelerator import broadcast_from_main, gather_objects, make_accelerator
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
from recsys_llm.train.hard_negatives import HardNegativeSampler, expected_counts
from recsys_llm.train.pairs import TrainingPairs
from recsys_llm.train.records import RecordLog
from recsys_llm.train.resume import RESUME_MUST_MATCH, LoopState, check_compatible, run_meta
from recsys_llm.train.sampler import PairBatchSampler
from recsys_llm.train.schedule import build_optimizer, lr_factor
from recsys_llm.train.step import (
    TEMPERATURE_RANGE,
    Batch,
    TrainModule,
    backward_step,
    disable_gradient_checkpointing,
    enable_gradient_checkpointing,
)
from recsys_llm.train.validation import ValidationSet, evaluate_retrieval

__all__ = ["RESUME_MUST_MATCH", "TEMPERATURE_RANGE", "TrainResult", "ValidationSet", "evaluate_retrieval",
           "lr_factor", "make_accelerator", "train_two_tower"]

logger = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
BEST_DIR = "best"


@dataclass
class TrainResult:
    steps: int
    """Optimizer steps taken (on this process), including those before a resume."""
    final_loss: float
    """Mean loss over the last logging window."""
    seconds: float
    log: list[dict] = field(default_factory=list)
    """One loss record every ``log_every`` steps and at the last: ``{"step", "loss", "lr", "seconds"}``."""
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
    if len(pairs) == 0:
        raise ValueError("no training pairs: users need more than train.min_history interactions")
    if (resume or train_cfg.checkpoint_every) and out_dir is None:
        raise ValueError("resume=True and train.checkpoint_every need out_dir (where checkpoints live)")
    loop = _TwoTowerLoop(encoder, pairs, item_texts, text_cfg, train_cfg,
                         Path(out_dir) if out_dir is not None else None, valid)
    if resume:
        loop.restore()
    return loop.run()


class _TwoTowerLoop:
    """One call of :func:`train_two_tower`: set up once, then stepped, validated and checkpointed."""

    log: RecordLog
    """The run's records (and ``train_log.jsonl`` on the main process); opened by :meth:`run`."""
    t0: float
    """``time.perf_counter()`` at step 0 of the run (earlier than the call after a resume)."""

    def __init__(self, encoder: TwoTowerEncoder, pairs: TrainingPairs, item_texts: Sequence[str],
                 text_cfg: TextConfig, cfg: TrainConfig, out: Path | None,
                 valid: ValidationSet | tuple | None) -> None:
        enc_params = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
        if not enc_params:
            raise ValueError("the encoder has no trainable parameters; build it with lora=True")
        self.val = ValidationSet.coerce(valid) if valid is not None else None
        if self.val is None and cfg.eval_every:
            logger.warning("train.eval_every=%d but no validation data was passed: no evaluation, no early "
                           "stopping", cfg.eval_every)
        self.eval_every = cfg.eval_every if self.val is not None else 0
        self.encoder, self.pairs, self.item_texts = encoder, pairs, item_texts
        self.text_cfg, self.cfg, self.out = text_cfg, cfg, out
        device = resolve_device(cfg.device)
        self.accelerator = make_accelerator(device.type == "cpu", training_precision(device, cfg.mixed_precision))
        set_seed(cfg.seed)
        acc = self.accelerator
        self.world, self.rank, self.main = acc.num_processes, acc.process_index, acc.is_main_process
        self.n_steps = math.ceil(cfg.max_steps / self.world)
        self.sampler = PairBatchSampler(pairs.pos_items, pairs.users, cfg.batch_size * cfg.grad_accum_steps,
                                        cfg.seed, cfg.sampling, cfg.unique_items_in_batch)
        self.hard = None
        if cfg.hard_negatives:
            if pairs.histories is None:
                raise ValueError("train.hard_negatives needs the users' training histories "
                                 "(TrainingPairs.histories, as build_pairs sets them)")
            self.hard = HardNegativeSampler.fit(item_texts, pairs.histories, cfg.hard_negatives,
                                                cfg.hard_negative_pool, cfg.seed)
        # logQ correction: log of the expected times one example brings the item into the batch's columns (its
        # positive, plus its hard negatives); zero-probability items never occur
        q = self.sampler.item_probs(len(item_texts))  # (n_items,)
        if self.hard is not None:
            q = q + expected_counts(self.hard.neighbours, q, cfg.hard_negatives)
        self.log_q = torch.from_numpy(np.log(np.where(q > 0, q, 1.0)).astype(np.float32))  # (n_items,)
        self.module = TrainModule(encoder, cfg.temperature, cfg.learnable_temperature)
        self.gc_enabled = enable_gradient_checkpointing(encoder) if cfg.gradient_checkpointing else False
        if cfg.compile:
            self.module.compile(dynamic=True)
        self.named, self.raw_optimizer, self.scheduler = build_optimizer(self.module, enc_params, cfg,
                                                                         self.world)
        self.model, self.optimizer = acc.prepare(self.module, self.raw_optimizer)
        self.meta = run_meta(cfg, self.world, self.n_steps, pairs, len(item_texts), self.sampler)
        self.st = LoopState()
        self.resumed_from = 0

    # ------------------------------------------------------------------------------------ resume
    def restore(self) -> None:
        """Continue from the newest checkpoint in ``out/checkpoints``; a fresh start (warned) without one."""
        assert self.out is not None
        ckpt_path = latest_checkpoint(self.out)
        if ckpt_path is None:
            logger.warning("resume=True but no checkpoint in %s: starting from step 0",
                           self.out / "checkpoints")
            return
        ckpt = load_checkpoint(ckpt_path)
        check_compatible(ckpt.trainer, self.meta, ckpt_path)
        if ckpt.param_names != [n for n, _ in self.named]:
            raise ValueError(f"{ckpt_path}: its trainable parameters differ from this model's "
                             "(another backbone or LoRA config?)")
        with torch.no_grad():
            for n, p in self.named:
                p.copy_(ckpt.trainable[n])
        self.raw_optimizer.load_state_dict(ckpt.optimizer)
        self.scheduler.load_state_dict(ckpt.trainer["scheduler"])
        scaler = self.accelerator.scaler
        if scaler is not None and ckpt.trainer.get("scaler"):
            scaler.load_state_dict(ckpt.trainer["scaler"])
        self.st = LoopState.from_json(ckpt.trainer, self.accelerator.device)
        if len(ckpt.rng) != self.world:
            logger.warning("checkpoint has RNG states of %d processes, this run has %d: dropout masks "
                           "will differ from an uninterrupted run", len(ckpt.rng), self.world)
        restore_rng_state(ckpt.rng[min(self.rank, len(ckpt.rng) - 1)])
        self.resumed_from = self.st.step
        logger.info("resumed from %s (step %d of %d)", ckpt_path, self.st.step, self.n_steps)

    def _start_log(self) -> RecordLog:
        """The log file holds the records so far; a fresh run first removes an older run's checkpoints."""
        if self.resumed_from == 0 and self.cfg.checkpoint_every and self.main:
            assert self.out is not None
            # a fresh run must not mix (or prune) its checkpoints with older ones
            stale = clear_checkpoints(self.out)
            if stale:
                logger.warning("removed %d checkpoints of an earlier run from %s (fresh start; pass "
                               "resume=True to continue one)", stale, self.out / "checkpoints")
        path = self.out / LOG_FILE if self.out is not None and self.main else None
        return RecordLog(path, self.st.records)

    # -------------------------------------------------------------------------------------- run
    def run(self) -> TrainResult:
        st, acc = self.st, self.accelerator
        self.log = self._start_log()
        self.t0 = time.perf_counter() - st.seconds
        self.model.train()
        bar = tqdm(total=self.n_steps, initial=st.step, desc="finetune",
                   disable=not acc.is_local_main_process)
        try:
            for step in range(st.step + 1, self.n_steps + 1):
                if st.done:
                    break
                loss = self._step(step)
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
                if self.eval_every and (step % self.eval_every == 0 or step == self.n_steps):
                    self._validate(step)
                if step == self.n_steps:
                    st.done = True
                if step % max(self.cfg.log_every, 1) == 0 or st.done:
                    self._log_loss(step)
                st.seconds = time.perf_counter() - self.t0
                if self.cfg.checkpoint_every and (step % self.cfg.checkpoint_every == 0 or st.done):
                    self._save(step)
        finally:
            bar.close()
            if self.gc_enabled:
                disable_gradient_checkpointing(self.encoder)
        acc.unwrap_model(self.model, keep_fp32_wrapper=False)
        self.encoder.eval()
        acc.free_memory()
        return self._result(time.perf_counter() - self.t0)

    def _inputs(self, rows: np.ndarray) -> Batch:
        """Pair indices ``(b,)``, or ``(b, 1 + n)`` pair indices and their hard negatives (-1 = none)."""
        idx = rows if rows.ndim == 1 else rows[:, 0]
        items = self.pairs.pos_items[idx]  # (b,)
        texts, tc, logq = self.item_texts, self.text_cfg, self.cfg.logq_correction
        batch = Batch(self.encoder.tokenize([self.pairs.user_texts[i] for i in idx], tc.user_max_tokens),
                      self.encoder.tokenize([texts[i] for i in items], tc.item_max_tokens),
                      torch.from_numpy(items), self.log_q[items] if logq else None)
        neg = rows[:, 1:].reshape(-1) if rows.ndim == 2 else rows[:0]
        neg = neg[neg >= 0]  # (m,) row-major: the whole batch's column order
        if len(neg):
            batch.neg = self.encoder.tokenize([texts[i] for i in neg], tc.item_max_tokens)
            batch.neg_ids, batch.neg_log_q = torch.from_numpy(neg), self.log_q[neg] if logq else None
        return batch

    def _step(self, step: int) -> torch.Tensor:
        """One optimizer step on this process's batch of ``step``; returns the detached loss."""
        index = (step - 1) * self.world + self.rank
        rows = idx = self.sampler.batch(index)  # (batch,)
        neg_mask = None
        if self.hard is not None:
            pos, users = self.pairs.pos_items[idx], self.pairs.users[idx]
            negs = self.hard.draw(index, pos, users)  # (batch, n), -1 = none
            rows = np.column_stack([idx, negs])  # (batch, 1 + n)
            neg_mask = torch.from_numpy(self.hard.false_negatives(users, negs[negs >= 0]))  # (batch, m)
        loss = backward_step(self.model, self.module, self.accelerator, self._inputs, rows,
                             self.cfg.grad_accum_steps, neg_mask)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.module.clamp_temperature()
        self.st.step = step
        self.st.window.append(loss)
        return loss

    def _log_loss(self, step: int) -> None:
        """A loss record: the mean over the window since the last one, averaged over processes."""
        st = self.st
        mean = self.accelerator.reduce(torch.stack(st.window).mean(), reduction="mean").item()
        rec = {"step": step, "loss": mean, "lr": self.scheduler.get_last_lr()[0],
               "seconds": round(time.perf_counter() - self.t0, 3)}
        if self.module.log_temperature is not None:
            rec["temperature"] = self.module.temperature_value()
        self.log.append(rec)
        st.window = []
        logger.info("step %d/%d loss %.4f lr %.2e", step, self.n_steps, mean, rec["lr"])

    # ------------------------------------------------------------------------- validation, saving
    def _validate(self, step: int) -> None:
        """Validate on the main process, share the result, keep ``best/``, count evaluations without gain."""
        st, val, seconds = self.st, self.val, time.perf_counter() - self.t0
        assert val is not None
        m = broadcast_from_main(evaluate_retrieval(self.encoder, val, self.item_texts, self.text_cfg)
                                if self.main else None)
        assert m is not None
        key = f"ndcg@{val.k}"
        better = st.best_metrics is None or m[key] > st.best_metrics[key]
        if better:
            st.best_step, st.best_metrics, st.bad_evals = step, m, 0
            if self.out is not None and self.main:
                self.encoder.save(self.out / BEST_DIR)
                atomic_write_json(self.out / BEST_DIR / "best.json", {"step": step, **m})
        else:
            st.bad_evals += 1
        self.log.append({"step": step, **{f"val_{name}": v for name, v in m.items()}, "best": better,
                         "seconds": round(seconds, 3)})
        logger.info("step %d validation %s%s", step, ", ".join(f"{n} {v:.4f}" for n, v in m.items()),
                    " (best)" if better else f" (no gain for {st.bad_evals} evaluations)")
        patience = self.cfg.early_stopping_patience
        if patience and st.bad_evals >= patience:
            logger.info("early stopping at step %d: best %s %.4f at step %s", step, key,
                        st.best_metrics[key] if st.best_metrics else float("nan"), st.best_step)
            st.stopped_early = st.done = True

    def _save(self, step: int) -> None:
        """Checkpoint ``step``: every process's RNG state, the main process writes."""
        rng_states = gather_objects([capture_rng_state()])
        if self.main:
            assert self.out is not None
            # batches below next_batch are used up
            sampler_pos = {**self.meta["sampler"], "next_batch": step * self.world}
            scaler = self.accelerator.scaler
            trainer = {**self.meta, **self.st.to_json(), "sampler": sampler_pos,
                       "scheduler": self.scheduler.state_dict(),
                       "scaler": scaler.state_dict() if scaler is not None else None}
            save_checkpoint(checkpoint_dir(self.out, step), dict(self.named), self.raw_optimizer.state_dict(),
                            [n for n, _ in self.named], rng_states, trainer)
            prune_checkpoints(self.out, self.cfg.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    def _result(self, seconds: float) -> TrainResult:
        st = self.st
        log = [r for r in st.records if "loss" in r]
        evals = [r for r in st.records if "loss" not in r]
        note = " (stopped early)" if st.stopped_early else ""
        logger.info("trained %d steps in %.1fs (%.3fs/step), final loss %.4f%s", st.step, seconds,
                    seconds / max(st.step, 1), log[-1]["loss"], note)
        return TrainResult(
            steps=st.step, final_loss=log[-1]["loss"], seconds=seconds, log=log, evals=evals,
            temperature=self.module.temperature_value(), best_step=st.best_step, best_metrics=st.best_metrics,
            stopped_early=st.stopped_early, resumed_from=self.resumed_from,
        )
