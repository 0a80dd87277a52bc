"""Every model on every slice of one run: same split, same candidates, same evaluator, with intervals.

Models: the classic baselines (random, most-popular, ItemKNN, EASE, BM25 over item text), the untuned
backbone (zero-shot), fine-tuned retrieval (the FAISS candidates), fine-tuned + rerank (the reranked
candidates), the pooled and the sequence user, the hybrid and its ID-only part, and **served**: what the
:class:`~recsys_llm.serve.recommender.Recommender` serves with the configuration chosen on validation
(``served.json``), ranked by the Recommender itself. Slices: ``warm`` (held-out test interactions),
``cold-item`` (interactions of items removed from training, ranked among the cold items unless
``eval.cold_candidates=all``) and ``cold-user`` (warm test users with at most ``eval.cold_user_max_train``
training interactions).

Protocols: ``full`` ranking over the catalog (default) with every known item (train + valid) filtered; or,
with ``eval.sampled_negatives=N``, each user's held-out items ranked among ``N`` sampled unseen items
(labelled "sampled" in every output; the reranker and the served row are skipped there because they only
reorder their own lists).

For each (model, slice): metric means with percentile-bootstrap 95% intervals over users, beyond-accuracy
metrics (coverage, intra-list diversity, novelty, average recommendation popularity, Gini of exposure) and
the paired bootstrap of every fine-tuned model against the best baseline; the ablation (what text adds over
the best ID-only row, what the ID signal adds over the best text-only row, paired:
:mod:`recsys_llm.report.ablation`). Curves (Recall@K, NDCG@K for
K = 1..max(ks)) and plots go beside the report.

Example:
    >>> from recsys_llm.report.compare import compare_run
    >>> rows = compare_run("runs/ml100k")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from recsys_llm import metrics as M
from recsys_llm.artifacts import load_embeddings
from recsys_llm.baselines import popularity_scores
from recsys_llm.io_utils import load_json
from recsys_llm.protocol import rank_full, slice_candidates, slice_users, tie_order
from recsys_llm.report import plots
from recsys_llm.report.ablation import ID, KINDS, ablate, served_kind
from recsys_llm.report.fewshot import few_shot_curves
from recsys_llm.report.measures import metric_curve, per_user_metrics
from recsys_llm.report.scoring import (
    OURS,
    constant_over,
    display,
    rank_sampled,
    ranked_from_file,
    sampled_pools,
    score_functions,
    served_lists,
)
from recsys_llm.report.stats import bootstrap_ci, paired_bootstrap, paired_ratio
from recsys_llm.report.tables import ResultRow, write_report
from recsys_llm.rerank.base import reorder
from recsys_llm.run import Context
from recsys_llm.serve.recommender import Recommender
from recsys_llm.stages.rerank import dense_rerank_setting

logger = logging.getLogger(__name__)

PAIRS = (("rerank", "retrieval"), ("hybrid", "retrieval"), ("hybrid", "pooling"), ("pooling", "retrieval"),
         ("sequence", "retrieval"), ("sequence", "pooling"), ("hybrid", "sequence"),
         ("hybrid", "hybrid_cf"), ("hybrid", "ease"), ("hybrid", "bm25"), ("retrieval", "bm25"),
         ("served", "retrieval"))
"""Explicit paired comparisons beyond "each of ours vs the best baseline": what reranking, the hybrid and
the pooled and sequence users add over text retrieval (and the sequence user over the pooled one), and the
hybrid / text model vs the ID-only and BM25 baselines."""


# ------------------------------------------------------------------------------------------ comparison
def _rank_all(ctx: Context, fns: dict, rec: Recommender | None, users: np.ndarray, tg: list, seen: list,
              cand: np.ndarray | None, slice_name: str, perm: np.ndarray, kmax: int) -> dict[str, np.ndarray]:
    """Every model's top-``kmax`` lists for one slice."""
    cfg = ctx.cfg
    if cfg.eval.sampled_negatives > 0:
        pools = sampled_pools(users, tg, seen, ctx.split.n_items, cfg.eval.sampled_negatives, cand, cfg.eval.seed)
        return {key: rank_sampled(fn, users, pools, kmax, perm) for key, fn in fns.items()}
    ranked = {key: rank_full(fn, users, seen, kmax, cand, perm) for key, fn in fns.items() if key != "retrieval"}
    for key, folder in (("retrieval", ctx.run.candidates), ("rerank", ctx.run.ranked)):
        r = ranked_from_file(ctx, folder / f"{slice_name}.npz", users, kmax)
        if r is not None:
            ranked[key] = r
    if rec is not None:
        ranked["served"] = served_lists(rec, users, kmax, cand, ctx.run.ranked / f"served-{slice_name}.npz")
        logger.info("served (%s) ranked for %d %s users", rec.served.label, len(users), slice_name)
    return ranked


def _row(ctx: Context, key: str, slice_name: str, r: np.ndarray, per_user: dict[str, np.ndarray], ks: list[int],
         pop: np.ndarray, item_emb: np.ndarray | None, note: str) -> ResultRow:
    """One report row: metric means with bootstrap intervals and beyond-accuracy metrics at the first cut-off."""
    cfg, k0, n_items = ctx.cfg, ks[0], ctx.split.n_items
    top = r[:, :k0]
    metrics: dict[str, Any] = {n: float(v.mean()) for n, v in per_user.items()}
    ci = {n: bootstrap_ci(v, n_boot=cfg.eval.n_bootstrap, seed=cfg.eval.seed) for n, v in per_user.items()}
    metrics[f"Coverage@{k0}"] = M.catalog_coverage(top, n_items, k0)
    metrics[f"Novelty@{k0}"] = float(np.nanmean(M.novelty(top, pop, ctx.split.n_users, k0)))
    metrics[f"ARP@{k0}"] = float(np.nanmean(M.average_recommendation_popularity(top, pop, k0)))
    metrics[f"Gini@{k0}"] = M.gini_exposure(top, n_items, k0)
    if item_emb is not None:
        metrics[f"ILD@{k0}"] = float(np.nanmean(M.intra_list_diversity(top, item_emb, k0)))
    metrics["users"] = len(r)
    return ResultRow(display(key), slice_name, metrics, note=note, ci={n: [c.low, c.high] for n, c in ci.items()})


def compare_run(run_dir: str | Path) -> list[ResultRow]:
    """Evaluate every model on every slice of a run; write report.json, report.md and plots/."""
    t_start = time.perf_counter()
    ctx = Context.load(run_dir)
    cfg = ctx.cfg
    ks = sorted(set(cfg.eval.ks))
    sampled = cfg.eval.sampled_negatives > 0
    known = ctx.known_histories()
    pop = popularity_scores(ctx.split.train, ctx.split.n_items)
    fns = score_functions(ctx)
    perm = tie_order(ctx.split.n_items, cfg.eval.seed)
    item_emb = load_embeddings(ctx.run)[0] if ctx.run.embeddings().exists() else None
    rec = Recommender.load(ctx.run.root) if ctx.run.embeddings().exists() and ctx.run.index.exists() else None
    curve_ks = list(range(1, ks[-1] + 1))
    rows: list[ResultRow] = []
    paired: list[dict] = []
    curves: dict[str, dict[str, dict[str, list[float]]]] = {"Recall": {}, "NDCG": {}}
    rec_pop: dict[str, np.ndarray] = {}
    sweep: list[dict] = []
    ablation: list[dict] = []
    kinds = {**KINDS, "served": served_kind(rec.served.first_stage if rec else None)}
    for slice_name, (users, tg) in slice_users(cfg, ctx.split).items():
        if len(users) == 0:
            logger.warning("slice %s has no users; skipped", slice_name)
            continue
        seen = [known[u] for u in users]
        cand = slice_candidates(cfg, ctx.split, slice_name)
        blind = {key for key, fn in fns.items() if cand is not None and constant_over(fn, users, cand)}
        ranked = _rank_all(ctx, fns, rec, users, tg, seen, cand, slice_name, perm, ks[-1])
        per_user = {key: per_user_metrics(r, tg, ks) for key, r in ranked.items()}
        for key, r in ranked.items():
            note = "; ".join(filter(None, ["sampled" if sampled else "",
                                           "scores every candidate alike: random order" if key in blind else "",
                                           _served_note(rec) if key == "served" and rec else "",
                                           getattr(fns.get(key), "note", "")]))
            row = _row(ctx, key, slice_name, r, per_user[key], ks, pop, item_emb, note)
            rows.append(row)
            for metric in curves:
                curves[metric].setdefault(row.model, {})[slice_name] = metric_curve(r, tg, metric, curve_ks)
            if slice_name == "warm":
                top = r[:, : ks[0]]
                rec_pop[row.model] = pop[top[top >= 0]]
        paired += _paired(per_user, slice_name, ks[0], cfg)
        no_evidence = blind | ({key for key in per_user if kinds.get(key) == ID} if slice_name == "cold-item" else set())
        ablation += ablate({key: v[f"NDCG@{ks[0]}"] for key, v in per_user.items()}, kinds, slice_name,
                           f"NDCG@{ks[0]}", no_evidence, cfg.eval.n_bootstrap, cfg.eval.seed)
        if not sampled and "retrieval" in per_user:
            sweep += _rerank_sweep(ctx, slice_name, users, tg, ks, per_user["retrieval"])
    extra = _extra(ctx, sampled, paired, sweep, curves, curve_ks, t_start)
    extra["served"] = None if rec is None else {**asdict(rec.served), "label": rec.served.label}
    if not sampled and cfg.hybrid.few_shot and (ctx.run.hybrid / "hybrid.json").exists():
        t0 = time.perf_counter()
        extra["few_shot"] = few_shot_curves(ctx, k=ks[0])
        logger.info("few-shot curves in %.1f s", time.perf_counter() - t0)
    for fs in (v for v in (extra.get("few_shot") or {}).values() if v):  # one ablation table, one list of checks
        ablation += fs.pop("ablation", [])
        extra.setdefault("few_shot_checks", []).extend(filter(None, [fs.pop("check", None)]))
    extra["ablation"] = ablation
    write_report(ctx.run.root, rows, config=cfg.to_dict(), data=ctx.ds.summary(), extra=extra)
    _plots(ctx.run.root / "plots", rows, curves, curve_ks, rec_pop, ks[0])
    if any(extra.get("few_shot", {}).values()):
        plots.plot_few_shot(extra["few_shot"], f"NDCG@{ks[0]}", ctx.run.root / "plots" / "few_shot.png",
                            models=list(dict.fromkeys(r.model for r in rows)))
    return rows


def _served_note(rec: Recommender) -> str:
    how = "chosen on validation" if rec.served.chosen_by == "validation" else "default: `recsys-llm select` not run"
    return f"{rec.served.label} ({how})"


def _extra(ctx: Context, sampled: bool, paired: list, sweep: list, curves: dict, curve_ks: list[int],
           t_start: float) -> dict[str, Any]:
    cfg = ctx.cfg
    timings = _load_timings(ctx)
    timings["evaluate"] = round(time.perf_counter() - t_start, 2)
    return {
        "protocol": {"description": _protocol_text(ctx, sampled), "ranking": "sampled" if sampled else "full",
                     "sampled_negatives": cfg.eval.sampled_negatives},
        "split": ctx.split.summary(),
        "paired": paired,
        "rerank_sweep": sweep,
        "curves": {"ks": curve_ks, **curves},
        "timings_s": timings,
        "wall_time_s": round(sum(timings.values()), 1),
        "git_commit": git_commit(),
        "seeds": {"split": cfg.split.seed, "train": cfg.train.seed, "rerank": cfg.rerank.seed, "eval": cfg.eval.seed},
    }


def _paired_rows(per_user: dict, a: str, b: str, slice_name: str, k: int, cfg) -> list[dict]:
    out = []
    for metric in (f"NDCG@{k}", f"Recall@{k}"):
        d = paired_bootstrap(per_user[a][metric], per_user[b][metric], n_boot=cfg.eval.n_bootstrap, seed=cfg.eval.seed)
        r = paired_ratio(per_user[a][metric], per_user[b][metric], n_boot=cfg.eval.n_bootstrap, seed=cfg.eval.seed)
        out.append({"slice": slice_name, "model": display(a), "baseline": display(b), "metric": metric,
                    **d.to_dict(), "ratio": r.mean, "ratio_low": r.low, "ratio_high": r.high})
    return out


def _paired(per_user: dict[str, dict[str, np.ndarray]], slice_name: str, k: int, cfg) -> list[dict]:
    """Each of our models vs the best baseline on NDCG@k (chosen on this slice), for NDCG@k and Recall@k, then
    the explicit :data:`PAIRS`."""
    base = [b for b in per_user if b not in OURS]
    if not base:
        return []
    best = max(base, key=lambda b: float(np.mean(per_user[b][f"NDCG@{k}"])))
    out = []
    for ours in (m for m in OURS if m in per_user):
        out += _paired_rows(per_user, ours, best, slice_name, k, cfg)
    for a, b in PAIRS:
        if a in per_user and b in per_user and not (b == best and a in OURS):
            out += _paired_rows(per_user, a, b, slice_name, k, cfg)
    return out


def _rerank_sweep(ctx: Context, slice_name: str, users: np.ndarray, tg: list, ks: list[int],
                  retrieval: dict[str, np.ndarray]) -> list[dict]:
    """Reranked at each (depth, fusion weight) vs retrieval only, paired over users, from the stored scores.

    The validated dense setting (:func:`~recsys_llm.stages.rerank.dense_rerank_setting`) is always included
    (it is the "fine-tuned + rerank" row); ``rerank.sweep_depths`` / ``sweep_weights`` add more. Test numbers,
    labelled as such: the choice was made on validation. Nothing is scored again.
    """
    path = ctx.run.ranked / f"{slice_name}.scores.npz"
    if not path.exists():
        return []
    with np.load(path, allow_pickle=False) as z:
        if not np.array_equal(z["users"], users):
            raise ValueError(f"{path} was made for other users than this slice; rerun `recsys-llm rerank apply`")
        ids, ret, ce = z["ids"], z["retrieval"], z["rerank"]
    cfg = ctx.cfg
    depth0, weight0, _ = dense_rerank_setting(ctx.run, cfg)
    out = []
    for depth in sorted({depth0, *cfg.rerank.sweep_depths}):
        head = (ids >= 0) & (np.arange(ids.shape[1]) < depth)
        if not np.isfinite(ce[head]).all():
            logger.warning("rerank sweep: depth %d is deeper than the cross-encoder scored; rerun `recsys-llm "
                           "rerank apply` with it in rerank.sweep_depths", depth)
            continue
        for weight in sorted({weight0, *cfg.rerank.sweep_weights}):
            pu = per_user_metrics(reorder(ids, ret, ce, depth, weight)[1][:, : ks[-1]], tg, ks)
            row = {"slice": slice_name, "depth": depth, "weight": weight, "headline": (depth, weight) == (depth0, weight0)}
            for metric in (f"NDCG@{ks[0]}", f"Recall@{ks[0]}"):
                d = paired_bootstrap(pu[metric], retrieval[metric], n_boot=cfg.eval.n_bootstrap, seed=cfg.eval.seed)
                row[metric] = float(pu[metric].mean())
                row[f"{metric} gain"] = d.to_dict()
            out.append(row)
    return out


def _protocol_text(ctx: Context, sampled: bool) -> str:
    cfg, split = ctx.cfg, ctx.split
    ranking = (f"SAMPLED ranking: each user's held-out items among {cfg.eval.sampled_negatives} unseen items drawn "
               "uniformly (seeded); not comparable with full-ranking numbers"
               if sampled else f"Full ranking over the whole catalog ({split.n_items} items; no sampled negatives)")
    holdout = (f"the published split file {Path(cfg.split.fixed_holdout).name}" if cfg.split.fixed_holdout
               else "the user's last interaction by time (ties by file order)")
    depth, weight, chosen = dense_rerank_setting(ctx.run, cfg)
    return (
        f"{ranking}. Every item the user is known to have interacted with (train + valid) is filtered. "
        f"Split: {split.kind}" + (f" (test = {holdout})" if split.kind == "leave_last_out" else
                                  f" (cutoffs {split.cutoffs})") + ". "
        f"Slices: warm = held-out test interactions; cold-item = all interactions of {len(split.cold_items)} "
        f"items removed from training, candidates "
        f"{'= the cold items only' if cfg.eval.cold_candidates == 'cold' else '= the whole catalog'}; "
        f"cold-user = warm test users with <= {cfg.eval.cold_user_max_train} training interactions. "
        f"Score ties are broken in a seeded random order, never by item id (ids can correlate with popularity). "
        f"Baselines see the same split, filters and candidates; at test time every model may use train + valid "
        f"history. Rerank rows reorder the top {depth} retrieved candidates with fusion weight {weight:g}"
        f"{' (chosen on validation users)' if chosen else ''}; the served row is what the Recommender serves "
        f"(configuration chosen on validation users, ranked by the serving code); the held-out item is "
        f"never injected. Intervals: 95% percentile bootstrap over users ({cfg.eval.n_bootstrap} resamples); "
        f"paired rows resample the same users for both models."
    )


def _load_timings(ctx: Context) -> dict[str, float]:
    return load_json(ctx.run.timings) if ctx.run.timings.exists() else {}


def git_commit() -> str | None:
    """The commit of the recsys-llm checkout (``+dirty`` if modified), or None outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def _plots(folder: Path, rows: list[ResultRow], curves: dict, curve_ks: list[int], rec_pop: dict, k: int) -> None:
    models = list(dict.fromkeys(r.model for r in rows))  # one colour per model across every plot
    for metric in curves:
        plots.plot_metric_curves(curves[metric], curve_ks, metric, folder / f"{metric.lower()}_at_k.png",
                                 models=models)
    name = f"NDCG@{k}"
    values: dict[str, dict[str, dict]] = {}
    for r in rows:
        low, high = r.ci.get(name, [math.nan, math.nan])
        values.setdefault(r.model, {})[r.slice] = {"mean": r.metrics[name], "low": low, "high": high}
    plots.plot_slice_bars(values, name, folder / "slices_ndcg.png", models=models)
    if rec_pop:
        plots.plot_popularity_histogram(rec_pop, folder / "popularity_of_recommendations.png", models=models)
