"""Training the cross-encoder: hard negatives from the retriever, a listwise loss, an accelerate loop.

Each example is one user text, its true next item and ``N`` hard negatives: items the retriever ranked high
for that text but the user never interacted with. Every step scores ``batch * (1 + N)`` pairs in one forward
pass and pushes the positive above its negatives.

Example:
    >>> ex = build_rerank_examples(texts, positives, cands.ids, known, cfg.rerank)  # doctest: +SKIP
    >>> model = CrossEncoder.from_config("minilm", cfg.rerank)  # doctest: +SKIP
    >>> train_cross_encoder(model, ex, item_texts, cfg.rerank, out_dir=Path("run/reranker"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from recsys_llm.config import RerankConfig
from recsys_llm.device import resolve_device, seed_everything
from recsys_llm.rerank.cross_encoder import CrossEncoder
from recsys_llm.train.two_tower import make_accelerator

logger = logging.getLogger(__name__)

LOG_EVERY = 10
"""Steps between log records (the mean loss over those steps)."""


@dataclass
class RerankExamples:
    """Training examples with named fields: ``negatives[i]`` are hard negatives for ``user_texts[i]``."""

    user_texts: list[str]
    positives: np.ndarray  # int64 (n,)
    negatives: np.ndarray  # int64 (n, N)

    def __post_init__(self) -> None:
        n = len(self.user_texts)
        if self.positives.shape != (n,) or self.negatives.ndim != 2 or self.negatives.shape[0] != n:
            raise ValueError(f"{n} user texts, positives {self.positives.shape}, negatives "
                             f"{self.negatives.shape}: need (n,) and (n, N)")


def _random_items(rng: np.random.Generator, n_items: int, k: int, banned: np.ndarray) -> np.ndarray:
    """``k`` distinct ids in ``[0, n_items)`` outside ``banned``, uniformly at random."""
    free = np.setdiff1d(np.arange(n_items, dtype=np.int64), banned)
    if len(free) < k:
        raise ValueError(f"only {len(free)} catalog items are not excluded; cannot draw {k} negatives")
    return rng.choice(free, size=k, replace=False)


def build_rerank_examples(user_texts: Sequence[str], positives: np.ndarray, candidate_ids: np.ndarray,
                          exclude: Sequence[np.ndarray], cfg: RerankConfig, seed: int = 0,
                          n_items: int | None = None) -> RerankExamples:
    """Draw ``cfg.negatives`` hard negatives per example from the retriever's candidates.

    Negatives are drawn uniformly without replacement from ``candidate_ids[i, skip_top:negative_pool]``
    after removing ``-1``, the positive and every id in ``exclude[i]`` (the user's known items: no false
    negatives). A row with too few eligible candidates keeps all of them and is topped up with random
    catalog items that are neither excluded nor the positive; the number of such rows is logged.

    Args:
        user_texts: ``n`` user texts.
        positives: ``(n,)`` int64 true next items.
        candidate_ids: ``(n, pool)`` int64 retriever candidates for each text, best first, ``-1`` padded.
        exclude: ``n`` arrays of ids that must not be negatives.
        cfg: ``negatives``, ``skip_top`` and ``negative_pool`` are used.
        seed: seed of the draw.
        n_items: catalog size for top-ups; None takes the largest id seen + 1.

    Returns:
        :class:`RerankExamples` with ``negatives`` of shape ``(n, cfg.negatives)``.
    """
    positives = np.asarray(positives, dtype=np.int64).reshape(-1)
    cands = np.asarray(candidate_ids, dtype=np.int64)
    n = len(user_texts)
    if cands.ndim != 2 or cands.shape[0] != n or len(positives) != n or len(exclude) != n:
        raise ValueError(f"{n} user texts, positives {positives.shape}, candidate_ids {cands.shape}, "
                         f"{len(exclude)} exclude arrays: need n, (n,), (n, pool) and n")
    if n_items is None:
        n_items = 1 + max([int(cands.max(initial=-1)), int(positives.max(initial=-1))]
                          + [int(np.max(e)) for e in exclude if len(e)])
    rng = np.random.default_rng(seed)
    k = cfg.negatives
    pool = cands[:, cfg.skip_top : cfg.negative_pool]  # (n, pool')
    negatives = np.empty((n, k), dtype=np.int64)
    topped = 0
    for i in range(n):
        banned = np.append(np.asarray(exclude[i], dtype=np.int64), positives[i])
        row = pool[i]
        eligible = np.unique(row[(row >= 0) & ~np.isin(row, banned)])
        if len(eligible) >= k:
            negatives[i] = rng.choice(eligible, size=k, replace=False)
        else:
            topped += 1
            extra = _random_items(rng, n_items, k - len(eligible), np.concatenate([banned, eligible]))
            negatives[i] = np.concatenate([eligible, extra])
    if topped:
        logger.info("%d of %d rerank examples had fewer than %d eligible hard negatives; topped up with "
                    "random catalog items", topped, n, k)
    return RerankExamples(list(user_texts), positives, negatives)


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


LOSSES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"listwise": listwise_loss, "bce": pointwise_bce_loss}


@dataclass
class RerankTrainResult:
    steps: int
    final_loss: float
    """Mean loss over the last logged interval."""
    seconds: float
    log: list[dict] = field(default_factory=list)


def train_cross_encoder(model: CrossEncoder, examples: RerankExamples, item_texts: Sequence[str],
                        cfg: RerankConfig, device: str = "auto", loss: str = "listwise",
                        out_dir: Path | None = None) -> RerankTrainResult:
    """Train LoRA + head in place for ``cfg.max_steps`` steps of ``cfg.batch_size`` examples.

    Examples are sampled with replacement (seeded); AdamW with linear warm-up over 10% of the steps.
    The loop runs on accelerate, so it is the same on CPU, one GPU or several (``accelerate launch``; on GPU
    accelerate picks the process's device). ``model`` is left in eval mode, unwrapped, on that device.

    Args:
        loss: ``listwise`` (:func:`listwise_loss`) or ``bce`` (:func:`pointwise_bce_loss`).
        out_dir: when given, the log records also go to ``out_dir/rerank_log.jsonl``.

    Returns:
        :class:`RerankTrainResult` with one log record (step, loss, lr, seconds) per ``LOG_EVERY`` steps.
    """
    from transformers import get_linear_schedule_with_warmup

    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r}; choose one of {', '.join(LOSSES)}")
    n = len(examples.user_texts)
    if n == 0:
        raise ValueError("no rerank training examples")
    top = max(int(examples.positives.max()), int(examples.negatives.max()))
    if top >= len(item_texts) or min(examples.positives.min(), examples.negatives.min()) < 0:
        raise ValueError(f"example item ids must lie in [0, {len(item_texts)}) (the item_texts), got max {top}")
    accelerator = make_accelerator(cpu=resolve_device(device).type == "cpu", mixed_precision="no")
    seed_everything(cfg.seed + accelerator.process_index)
    rng = np.random.default_rng(cfg.seed + accelerator.process_index)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * cfg.max_steps), cfg.max_steps)
    wrapped, opt, sched = accelerator.prepare(model, opt, sched)
    wrapped.train()
    width = 1 + examples.negatives.shape[1]
    log_file = None
    if out_dir is not None and accelerator.is_main_process:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        log_file = open(Path(out_dir) / "rerank_log.jsonl", "w")  # noqa: SIM115 (closed below)
    log: list[dict] = []
    window: list[float] = []
    start = time.perf_counter()
    bar = tqdm(range(1, cfg.max_steps + 1), desc="rerank train", disable=not accelerator.is_main_process)
    try:
        for step in bar:
            idx = rng.integers(0, n, size=cfg.batch_size)  # (batch,)
            items = np.concatenate([examples.positives[idx, None], examples.negatives[idx]], axis=1)
            users = [examples.user_texts[i] for i in idx for _ in range(width)]
            logits = wrapped(users, [item_texts[j] for j in items.ravel()])  # (batch * (1 + N),)
            value = LOSSES[loss](logits.float().view(cfg.batch_size, width))
            accelerator.backward(value)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            window.append(value.item())
            bar.set_postfix(loss=f"{window[-1]:.4f}")
            if step % LOG_EVERY == 0 or step == cfg.max_steps:
                record = {"step": step, "loss": float(np.mean(window)), "lr": float(sched.get_last_lr()[0]),
                          "seconds": round(time.perf_counter() - start, 3)}
                window = []
                log.append(record)
                logger.info("rerank step %d/%d loss %.4f", step, cfg.max_steps, record["loss"])
                if log_file is not None:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
    finally:
        if log_file is not None:
            log_file.close()
    accelerator.unwrap_model(wrapped).eval()
    seconds = time.perf_counter() - start
    return RerankTrainResult(steps=cfg.max_steps, final_loss=log[-1]["loss"], seconds=seconds, log=log)
