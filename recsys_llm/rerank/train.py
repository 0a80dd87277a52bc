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


@dataclass
class RerankValidation:
    """Held-out users with the retriever's candidates for them: what the reranker is validated on.

    ``cand_ids[i]`` / ``cand_scores[i]`` are the retriever's top candidates for ``user_texts[i]`` (the user's
    known items filtered), ``targets[i]`` the held-out items. The held-out item is never added to the
    candidates: a miss by the retriever stays a miss.
    """

    user_texts: list[str]
    targets: list[np.ndarray]
    cand_ids: np.ndarray  # int64 (n, K)
    cand_scores: np.ndarray  # float32 (n, K)
    k: int = 10

    def __post_init__(self) -> None:
        n = len(self.user_texts)
        self.cand_ids = np.asarray(self.cand_ids, dtype=np.int64)
        self.cand_scores = np.asarray(self.cand_scores, dtype=np.float32)
        if n == 0 or len(self.targets) != n or self.cand_ids.shape[0] != n or self.cand_scores.shape != self.cand_ids.shape:
            raise ValueError(f"rerank validation: {n} user texts, {len(self.targets)} targets, candidates "
                             f"{self.cand_ids.shape} / {self.cand_scores.shape}; need n > 0 of each")

    def ndcg(self, ranked: np.ndarray) -> float:
        """Mean NDCG@k of ranked id lists ``(n, >= k)`` against the targets."""
        from recsys_llm.metrics import hit_matrix, ndcg_at_k

        ranked = np.asarray(ranked, dtype=np.int64)[:, : self.k]
        if ranked.shape[1] < self.k:  # fewer candidates than k: the rest are misses
            ranked = np.pad(ranked, ((0, 0), (0, self.k - ranked.shape[1])), constant_values=-1)
        hits, n_rel = hit_matrix(ranked, self.targets)
        return float(np.nanmean(ndcg_at_k(hits, n_rel, self.k)))

    def grid(self, model: CrossEncoder, item_texts: Sequence[str], depths: Sequence[int],
             weights: Sequence[float]) -> dict[tuple[int, float], float]:
        """Validation NDCG@k of the reranked list at every (depth, fusion weight), scored once."""
        from recsys_llm.rerank.base import reorder

        ce = model.score_candidates(self.user_texts, self.cand_ids, item_texts, depth=max(depths))
        return {(d, w): self.ndcg(reorder(self.cand_ids, self.cand_scores, ce, d, w)[1])
                for d in depths for w in weights}


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
    best_step: int | None = None
    """Step whose weights the model holds after training (validation only; None = the last step)."""


def train_cross_encoder(model: CrossEncoder, examples: RerankExamples, item_texts: Sequence[str],
                        cfg: RerankConfig, device: str = "auto", loss: str | None = None,
                        out_dir: Path | None = None, valid: RerankValidation | None = None) -> RerankTrainResult:
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
    from transformers import get_linear_schedule_with_warmup

    loss = loss or cfg.loss
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
    validate = valid is not None and cfg.eval_every > 0
    best: tuple[float, int, dict] | None = None
    if validate and accelerator.is_main_process:
        base = {"step": 0, f"val_retrieval_ndcg@{valid.k}": valid.ndcg(valid.cand_ids)}
        logger.info("rerank validation: retrieval alone NDCG@%d %.4f", valid.k, base[f"val_retrieval_ndcg@{valid.k}"])
        log.append(base)
        if log_file is not None:
            log_file.write(json.dumps(base) + "\n")
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
            at_eval = validate and (step % cfg.eval_every == 0 or step == cfg.max_steps)
            if step % LOG_EVERY == 0 or step == cfg.max_steps or at_eval:
                record = {"step": step, "loss": float(np.mean(window)), "lr": float(sched.get_last_lr()[0]),
                          "seconds": round(time.perf_counter() - start, 3)}
                window = []
                if at_eval and accelerator.is_main_process:
                    inner = accelerator.unwrap_model(wrapped)
                    value_ndcg = valid.grid(inner, item_texts, [cfg.depth], [1.0])[(cfg.depth, 1.0)]
                    inner.train()
                    record[f"val_ndcg@{valid.k}"] = value_ndcg
                    if best is None or value_ndcg > best[0]:
                        best = (value_ndcg, step, {n: p.detach().clone() for n, p in inner.named_parameters()
                                                   if p.requires_grad})
                    record["best"] = best[1] == step
                log.append(record)
                logger.info("rerank step %d/%d loss %.4f", step, cfg.max_steps, record["loss"])
                if log_file is not None:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
    finally:
        if log_file is not None:
            log_file.close()
    final = accelerator.unwrap_model(wrapped)
    if best is not None:
        params = dict(final.named_parameters())
        with torch.no_grad():
            for name, value in best[2].items():
                params[name].copy_(value)
        logger.info("rerank: keeping the weights of step %d (validation NDCG@%d %.4f)", best[1], valid.k, best[0])
    final.eval()
    seconds = time.perf_counter() - start
    losses = [r["loss"] for r in log if "loss" in r]
    return RerankTrainResult(steps=cfg.max_steps, final_loss=losses[-1], seconds=seconds, log=log,
                             best_step=best[1] if best else None)
