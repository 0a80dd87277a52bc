"""Stage ``select``: choose on validation what the Recommender serves, and write ``served.json``.

Candidates: each first stage the run has (``dense`` fine-tuned retrieval; the ``hybrid`` once fitted),
served as it is or, when a reranker is trained, reranked at every depth x fusion weight of the grid
(``rerank.depth`` + ``rerank.sweep_depths`` x ``rerank.fusion_weight`` + ``rerank.sweep_weights``). Each is
scored by validation NDCG@10 over a seeded sample of ``rerank.valid_users`` users (their training history ->
their validation item, training items filtered, ranked over the prepared catalog) **through the Recommender
itself** (:meth:`~recsys_llm.serve.recommender.Recommender.first_stage` and ``rerank``), so the chosen setting
is measured by the code that serves it. The one-standard-error rule picks among them: the simplest candidate
(no reranking, then the shallower depth and the smaller reranker weight) whose mean is within one standard
error of the paired per-user difference from the best mean; a validation sample too small to tell a reranker
from no reranker therefore serves without one. The cross-encoder scores each (user, item) pair once, at the
deepest depth, however many candidates share it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from recsys_llm.data.splits import histories
from recsys_llm.protocol import validation_users
from recsys_llm.ranking import topk_metrics
from recsys_llm.run import Context, timed
from recsys_llm.serve.recommender import Query, Recommender
from recsys_llm.serve.served import ServedConfig

logger = logging.getLogger(__name__)

K = 10


def _ndcg(lists: list[np.ndarray], targets: list[np.ndarray]) -> np.ndarray:
    """(n_users,) validation NDCG@10 per user."""
    ranked = np.full((len(lists), K), -1, np.int64)
    for r, ids in enumerate(lists):
        ranked[r, : min(K, len(ids))] = ids[:K]
    return np.nan_to_num(topk_metrics(ranked, targets, K, ("ndcg",))[f"ndcg@{K}"])


def _row(first_stage: str, depth: int, weight: float, per_user: np.ndarray) -> dict[str, Any]:
    return {"first_stage": first_stage, "rerank_depth": depth, "rerank_weight": weight,
            "val_ndcg@10": float(per_user.mean()), "per_user": per_user}


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The one-standard-error rule: the simplest row whose mean is within one standard error (of the paired
    per-user difference) of the best mean; among equally simple rows, the higher mean.

    Example:
        >>> a = _row("hybrid", 0, 1.0, np.array([0.1, 0.0, 0.3, 0.2]))
        >>> b = _row("hybrid", 20, 0.5, np.array([0.2, 0.0, 0.3, 0.2]))  # better on one user of four
        >>> choose([a, b])["rerank_depth"]
        0
    """
    best = max(rows, key=lambda r: r["val_ndcg@10"])
    n = len(best["per_user"])

    def within(r: dict[str, Any]) -> bool:
        diff = best["per_user"] - r["per_user"]
        se = float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        return r is best or float(diff.mean()) <= se

    return min((r for r in rows if within(r)),
               key=lambda r: (r["rerank_depth"] > 0, r["rerank_depth"], r["rerank_weight"], -r["val_ndcg@10"]))


def _grid(ctx: Context) -> tuple[list[int], list[float]]:
    rc = ctx.cfg.rerank
    return sorted({rc.depth, *rc.sweep_depths}), sorted({rc.fusion_weight, *rc.sweep_weights} - {0.0})


def _stage_lists(rec: Recommender, qs: list[Query], stage: str, depth: int, allowed) -> list[tuple[np.ndarray, np.ndarray]]:
    return [rec.first_stage(q, stage, depth, allowed) for q in tqdm(qs, desc=f"select: {stage}", unit="user",
                                                                     disable=len(qs) < 200)]


def _candidates(rec: Recommender, qs: list[Query], tg: list[np.ndarray], depths: list[int], weights: list[float],
                rerank: bool) -> list[dict[str, Any]]:
    """Validation NDCG@10 of every candidate configuration."""
    stages = ["dense"] + (["hybrid"] if rec.hybrid is not None else [])
    depth = max([K, *depths]) if rerank else K
    allowed = rec.allowed(candidates=np.arange(rec.n_items))
    lists = {s: _stage_lists(rec, qs, s, depth, allowed) for s in stages}
    rows = [_row(s, 0, 1.0, _ndcg([ids for ids, _ in lists[s]], tg)) for s in stages]
    if not rerank:
        return rows
    ce: dict[str, list[np.ndarray]] = {s: [] for s in stages}
    for i, q in enumerate(tqdm(qs, desc="select: cross-encoder", unit="user", disable=len(qs) < 50)):
        union = np.unique(np.concatenate([lists[s][i][0][:depth] for s in stages]))
        scores = dict(zip(union.tolist(), rec.cross_scores(q, union, len(union)).tolist(), strict=True))
        for s in stages:
            ce[s].append(np.array([scores.get(int(j), np.nan) for j in lists[s][i][0]], np.float32))
    for s in stages:
        for d in depths:
            for w in weights:
                reranked = [rec.rerank(q, ids, sc, d, w, ce=c)[1]
                            for q, (ids, sc), c in zip(qs, lists[s], ce[s], strict=True)]
                rows.append(_row(s, d, w, _ndcg(reranked, tg)))
    return rows


@timed("select")
def select_served(run_dir: str | Path) -> ServedConfig:
    """Choose the served configuration on validation users and write ``served.json`` (see the module doc).

    Returns:
        The chosen :class:`~recsys_llm.serve.served.ServedConfig`.
    """
    ctx = Context.load(run_dir)
    cfg, split = ctx.cfg, ctx.split
    rec = Recommender.load(run_dir, served=ServedConfig("dense"))
    train_hist = histories(split.train, split.n_users)
    users, tg_all = validation_users(split, train_hist, cfg.rerank.valid_users, cfg.rerank.seed)
    if len(users) == 0:
        raise ValueError(f"{ctx.run.splits}: no user has both training and validation interactions, so nothing "
                         "can be chosen on validation; use a leave_last_out split")
    qs = rec.queries(histories=[train_hist[u] for u in users])
    tg = [tg_all[u] for u in users]
    rerank = ctx.run.reranker.exists() and cfg.rerank.enabled
    depths, weights = _grid(ctx)
    rows = _candidates(rec, qs, tg, depths, weights, rerank)
    best = choose(rows)
    dense_rr = [r for r in rows if r["first_stage"] == "dense" and r["rerank_depth"] > 0]
    b = max(dense_rr, key=lambda r: (r["val_ndcg@10"], -r["rerank_weight"], -r["rerank_depth"])) if dense_rr else None
    validation = {"users": len(users), "metric": "NDCG@10", "rule": "one standard error",
                  "grid": [{k: v for k, v in r.items() if k != "per_user"} for r in rows],
                  "dense_rerank": ({"depth": b["rerank_depth"], "weight": b["rerank_weight"],
                                    "val_ndcg@10": b["val_ndcg@10"]} if b else None)}
    served = ServedConfig(best["first_stage"], best["rerank_depth"], best["rerank_weight"], "validation", validation)
    served.save(ctx.run)
    logger.info("served: %s (validation NDCG@10 %.4f over %d users; %d candidates)", served.label,
                best["val_ndcg@10"], len(users), len(rows))
    return served
