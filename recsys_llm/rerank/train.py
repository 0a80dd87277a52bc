"""Training the cross-encoder: hard negatives from the retriever, a listwise loss, an accelerate loop.

Each example is one user text, its true next item and ``N`` hard negatives: items the retriever ranked high
for that text but the user never interacted with (:mod:`recsys_llm.rerank.examples`). Every step scores
``batch * (1 + N)`` pairs in one forward pass and pushes the positive above its negatives. With validation
(:mod:`recsys_llm.rerank.validation`) the model ends with the weights of its best validation step.

Example:
    >>> ex = build_rerank_examples(texts, positives, cands.ids, known, cfg.rerank)  # doctest: +SKIP
    >>> model = CrossEncoder.from_config("minilm", cfg.rerank)  # doctest: +SKIP
    >>> train_cross_encoder(model, ex, item_texts, cfg.rerank, out_dir=Path("run/reranker"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from recsys_llm.config import RerankConfig
from recsys_llm.device import resolve_device, seed_everything
from recsys_llm.rerank.cross_encoder import CrossEncoder
from recsys_llm.rerank.examples import RerankExamples, build_rerank_examples
from recsys_llm.rerank.validation import RerankValidation
from recsys_llm.train.accelerator import make_accelerator
from recsys_llm.train.records import RecordLog

__all__ = ["LOSSES", "RerankExamples", "RerankTrainResult", "RerankValidation", "build_rerank_examples",
           "listwise_loss", "pointwise_bce_loss", "train_cross_encoder"]

logger = logging.getLogger(__name__)

LOG_EVERY = 10
"""Steps between log records (the mean loss over those steps)."""
LOG_FILE = "rerank_log.jsonl"


def listwise_loss(logits: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy with the positive in column 0.

    ``L = mean_b [ log sum_j exp(s_bj) - s_b0 ]`` for logits ``s`` of shape ``(batch, 1 + N)``.
    """
    target = torch.zeros(logits.size(0), dtype=torch.long, device=logits.device)  # (batch,)
    return F.cross_entropy(logits, target)


def pointwise_bce_loss(logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy, label 1 for column 0 and 0 for the rest, averaged over all ``batch * (1 + N)``.

    ``L = -mean_bj [ y_bj log sigmoid(s_bj) + (1 - y_bj) log(1 - sigmoid(s_bj)) ]``.
    """
    labels = torch.zeros_like(logits)  # (batch, 1 + N)
    labels[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(logits, labels)


LOSSES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "listwise": listwise_loss,
    "bce": pointwise_bce_loss,
}


@dataclass
class RerankTrainResult:
    steps: int
    final_loss: float
    """Mean loss over the last logged interval."""
    seconds: float
    log: list[dict] = field(default_factory=list)
    best_step: int | None = None
    """Step whose weights the model holds after training (validation only; None = the last step)."""


def train_cross_encoder(model: CrossEncoder, examples: RerankExamples, item_texts: Sequence[str],
                        cfg: RerankConfig, device: str = "auto", loss: str | None = None,
                        out_dir: Path | None = None,
                        valid: RerankValidation | None = None) -> RerankTrainResult:
    """Train LoRA + head in place for ``cfg.max_steps`` steps of ``cfg.batch_size`` examples.

    Examples are sampled with replacement (seeded); AdamW with linear warm-up over 10% of the steps.
    The loop runs on accelerate, so it is the same on CPU, one GPU or several (``accelerate launch``; on GPU
    accelerate picks the process's device). ``model`` is left in eval mode, unwrapped, on that device.

    With ``valid`` and ``cfg.eval_every > 0``, the reranked validation candidates (at ``cfg.depth``, reranker
    alone) are scored every ``eval_every`` steps and at the end; records gain ``val_ndcg@k`` and the model
    ends with the weights of the best validation step (the retriever's own NDCG@k is logged once as
    ``val_retrieval_ndcg@k``, the bar to clear).

    Args:
        loss: ``listwise`` (:func:`listwise_loss`) or ``bce`` (:func:`pointwise_bce_loss`); default
            ``cfg.loss``.
        out_dir: when given, the log records also go to ``out_dir/rerank_log.jsonl``.
        valid: held-out users and their retriever candidates.

    Returns:
        :class:`RerankTrainResult` with one log record (step, loss, lr, seconds) per ``LOG_EVERY`` steps.
    """
    loss = loss or cfg.loss
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r}; choose one of {', '.join(LOSSES)}")
    if len(examples.user_texts) == 0:
        raise ValueError("no rerank training examples")
    top = max(int(examples.positives.max()), int(examples.negatives.max()))
    if top >= len(item_texts) or min(examples.positives.min(), examples.negatives.min()) < 0:
        raise ValueError(f"example item ids must lie in [0, {len(item_texts)}) (the item_texts), "
                         f"got max {top}")
    return _RerankLoop(model, examples, item_texts, cfg, device, LOSSES[loss], out_dir, valid).run()


class _RerankLoop:
    """One call of :func:`train_cross_encoder`: set up, stepped, validated, best weights restored."""

    def __init__(self, model: CrossEncoder, examples: RerankExamples, item_texts: Sequence[str],
                 cfg: RerankConfig, device: str, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                 out_dir: Path | None, valid: RerankValidation | None) -> None:
        self.examples, self.item_texts, self.cfg, self.loss_fn = examples, item_texts, cfg, loss_fn
        cpu = resolve_device(device).type == "cpu"
        self.accelerator = acc = make_accelerator(cpu=cpu, mixed_precision="no")
        seed_everything(cfg.seed + acc.process_index)
        self.rng = np.random.default_rng(cfg.seed + acc.process_index)
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.0)
        sched = get_linear_schedule_with_warmup(opt, int(0.1 * cfg.max_steps), cfg.max_steps)
        self.wrapped, self.opt, self.sched = acc.prepare(model, opt, sched)
        self.wrapped.train()
        self.width = 1 + examples.negatives.shape[1]
        main = acc.is_main_process
        self.log = RecordLog(Path(out_dir) / LOG_FILE if out_dir is not None and main else None)
        self.valid = valid if valid is not None and cfg.eval_every > 0 else None
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        if self.valid is not None and main:
            key = f"val_retrieval_ndcg@{self.valid.k}"
            base = {"step": 0, key: self.valid.ndcg(self.valid.cand_ids)}
            logger.info("rerank validation: retrieval alone NDCG@%d %.4f", self.valid.k, base[key])
            self.log.append(base)

    def run(self) -> RerankTrainResult:
        cfg, window = self.cfg, []
        self.start = time.perf_counter()
        main = self.accelerator.is_main_process
        bar = tqdm(range(1, cfg.max_steps + 1), desc="rerank train", disable=not main)
        for step in bar:
            window.append(self._step())
            bar.set_postfix(loss=f"{window[-1]:.4f}")
            at_eval = self.valid is not None and (step % cfg.eval_every == 0 or step == cfg.max_steps)
            if step % LOG_EVERY == 0 or step == cfg.max_steps or at_eval:
                self._record(step, float(np.mean(window)), at_eval)
                window = []
        return self._finish()

    def _step(self) -> float:
        """One optimizer step on ``batch_size`` sampled examples; the loss."""
        ex, bs = self.examples, self.cfg.batch_size
        idx = self.rng.integers(0, len(ex.user_texts), size=bs)  # (batch,)
        items = np.concatenate([ex.positives[idx, None], ex.negatives[idx]], axis=1)  # (batch, 1 + N)
        users = [ex.user_texts[i] for i in idx for _ in range(self.width)]
        logits = self.wrapped(users, [self.item_texts[j] for j in items.ravel()])  # (batch * (1 + N),)
        value = self.loss_fn(logits.float().view(bs, self.width))
        self.accelerator.backward(value)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return value.item()

    def _record(self, step: int, loss: float, at_eval: bool) -> None:
        record = {"step": step, "loss": loss, "lr": float(self.sched.get_last_lr()[0]),
                  "seconds": round(time.perf_counter() - self.start, 3)}
        if at_eval and self.accelerator.is_main_process:
            self._validate(step, record)
        self.log.append(record)
        logger.info("rerank step %d/%d loss %.4f", step, self.cfg.max_steps, record["loss"])

    def _validate(self, step: int, record: dict) -> None:
        """Validation NDCG@k of the reranked candidates into ``record``; keep the best step's weights."""
        valid, depth = self.valid, self.cfg.depth
        assert valid is not None
        inner = self.accelerator.unwrap_model(self.wrapped)
        value = valid.grid(inner, self.item_texts, [depth], [1.0])[(depth, 1.0)]
        inner.train()
        record[f"val_ndcg@{valid.k}"] = value
        if self.best is None or value > self.best[0]:
            self.best = (value, step, {n: p.detach().clone() for n, p in inner.named_parameters()
                                       if p.requires_grad})
        record["best"] = self.best[1] == step

    def _finish(self) -> RerankTrainResult:
        final = self.accelerator.unwrap_model(self.wrapped)
        if self.best is not None:
            params = dict(final.named_parameters())
            with torch.no_grad():
                for name, value in self.best[2].items():
                    params[name].copy_(value)
            assert self.valid is not None
            logger.info("rerank: keeping the weights of step %d (validation NDCG@%d %.4f)", self.best[1],
                        self.valid.k, self.best[0])
        final.eval()
        losses = [r["loss"] for r in self.log.records if "loss" in r]
        return RerankTrainResult(steps=self.cfg.max_steps, final_loss=losses[-1],
                                 seconds=time.perf_counter() - self.start, log=self.log.records,
                                 best_step=self.best[1] if self.best else None)
