"""Every model on every slice of one run: same split, same candidates, same evaluator, with intervals.

Models: the classic baselines (random, most-popular, ItemKNN, EASE, BM25 over item text), the untuned
backbone (zero-shot), fine-tuned retrieval (the FAISS candidates) and fine-tuned + rerank (the reranked
candidates). Slices: ``warm`` (held-out test interactions), ``cold-item`` (interactions of items removed from
training, ranked among the cold items unless ``eval.cold_candidates=all``) and ``cold-user`` (warm test users
with at most ``eval.cold_user_max_train`` training interactions).

Protocols: ``full`` ranking over the catalog (default) with every known item (train + valid) filtered; or,
with ``eval.sampled_negatives=N``, each user's held-out items ranked among ``N`` sampled unseen items
(labelled "sampled" in every output; the reranker is skipped there because it only reorders its own list).

For each (model, slice): metric means with percentile-bootstrap 95% intervals over users, beyond-accuracy
metrics (coverage, intra-list diversity, novelty, average recommendation popularity, Gini of exposure) and
the paired bootstrap of every fine-tuned model against the best baseline. Curves (Recall@K, NDCG@K for
K = 1..max(ks)) and plots go beside the report.

Example:
    >>> from recsys_llm.compare import compare_run
    >>> rows = compare_run("runs/ml100k")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recsys_llm.baselines import popularity_scores, rank_items
from recsys_llm.evaluate import ResultRow, metric_curve, per_user_metrics, write_report
from recsys_llm.pipeline import (
    MODEL_NAMES,
    Context,
    load_embeddings,
    rerank_setting,
    slice_candidates,
    slice_users,
)
from recsys_llm.retrieve import Candidates

logger = logging.getLogger(__name__)

ScoreFn = Callable[[np.ndarray], np.ndarray]
"""users (b,) -> scores (b, n_items) float32."""

BASELINE_NAMES = {"random": "random", "popularity": "most popular", "itemknn": "ItemKNN", "ease": "EASE",
                  "ease_recency": "EASE, recency-weighted query", "sasrec": "SASRec",
                  "bm25": "BM25 (item text)", "zeroshot": MODEL_NAMES["zeroshot"]}
OURS = ("retrieval", "rerank", "pooling", "hybrid", "hybrid_cf")
PAIRS = (("rerank", "retrieval"), ("hybrid", "retrieval"), ("hybrid", "pooling"), ("pooling", "retrieval"),
         ("hybrid", "hybrid_cf"), ("hybrid", "ease"), ("hybrid", "bm25"), ("retrieval", "bm25"))
"""Explicit paired comparisons beyond "each of ours vs the best baseline": what reranking, the hybrid and
the pooled user add over text retrieval, and the hybrid / text model vs the ID-only and BM25 baselines."""
CHUNK = 1024


# --------------------------------------------------------------------------------------------- models
def score_functions(ctx: Context) -> dict[str, ScoreFn]:
    """Dense scorers of every model that can score any item: classic baselines, zero-shot and fine-tuned."""
    from recsys_llm.classic.from_config import baseline_scorer

    cfg, split = ctx.cfg, ctx.split
    query_hist = ctx.known_histories()  # what the model may use at test time: train + valid
    texts = ctx.item_texts()
    fns: dict[str, ScoreFn] = {}
    finetuned = None
    for name in cfg.eval.baselines:  # tuned on validation users (eval.tune_baselines); fitted on split.train
        fns[name] = baseline_scorer(name, split, cfg.eval, texts, query_hist, ctx.run.root / "baselines")
    for key, zero_shot in (("zeroshot", True), ("retrieval", False)):
        if ctx.run.embeddings(zero_shot).exists():
            items, users_emb, meta = load_embeddings(ctx.run, zero_shot=zero_shot)
            check_embeddings(ctx, items, users_emb, meta)
            fns[key] = (lambda users, i=items, u=users_emb: u[users] @ i.T)  # (b, n_items)
            if not zero_shot:
                finetuned = items, users_emb
    if (ctx.run.hybrid / "hybrid.json").exists() and finetuned is not None:
        from recsys_llm.encoder.user_pooling import encode_histories
        from recsys_llm.pipeline import load_hybrid

        hybrid, pool = load_hybrid(ctx.run)
        items, text_users = finetuned
        pooled = encode_histories(pool, items, query_hist)  # (n_users, d)
        dense_users = pooled if hybrid.user_model == "pooling" else text_users
        fns["pooling"] = (lambda users: pooled[users] @ items.T)
        if hybrid.cf is not None:  # the hybrid's collaborative part alone: the ID-only model at its best
            fns["hybrid_cf"] = (lambda users: hybrid.cf.score([query_hist[u] for u in users], ctx.split.n_items,
                                                              halflife=hybrid.halflife))
        fns["hybrid"] = (lambda users: hybrid.score(dense_users[users] @ items.T, [query_hist[u] for u in users]))
    return fns


def check_embeddings(ctx: Context, items: np.ndarray, users: np.ndarray, meta: dict) -> None:
    """Refuse embeddings made for another data set or split (a silently wrong number otherwise)."""
    fp = ctx.ds.fingerprint()
    problems = []
    if meta.get("data_fingerprint") != fp:
        problems.append(f"data fingerprint {meta.get('data_fingerprint')} != {fp}")
    if items.shape[0] != ctx.split.n_items:
        problems.append(f"{items.shape[0]} item embeddings for {ctx.split.n_items} items")
    if users.shape[0] != ctx.split.n_users:
        problems.append(f"{users.shape[0]} user embeddings for {ctx.split.n_users} users")
    if items.shape[1] != users.shape[1]:
        problems.append(f"item dim {items.shape[1]} != user dim {users.shape[1]}")
    if problems:
        raise ValueError(f"{ctx.run.root}: embeddings do not match this run's data/split: " + "; ".join(problems)
                         + ". Rerun `recsys-llm embed` (and the stages after it)")


def _constant_over(fn: ScoreFn, users: np.ndarray, cand: np.ndarray, n: int = 256) -> bool:
    """True when ``fn`` gives every candidate the same score for (a sample of) the users: an ID-based model on
    cold items, which the report then labels instead of letting its random tie order pass as a result."""
    s = fn(users[:n])[:, np.asarray(cand, dtype=np.int64)]
    return bool(np.all(s.max(axis=1) - s.min(axis=1) <= 1e-9))


def tie_order(n_items: int, seed: int) -> np.ndarray:
    """A seeded random permutation of the catalog used to break score ties.

    Breaking ties by item id would leak information wherever ids correlate with popularity (MovieLens ids
    follow the order movies entered the catalog): a model that scores every cold item 0 would then rank
    them in id order and look far better than chance. Ties are broken in this random order instead.
    """
    return np.random.default_rng([seed, n_items]).permutation(n_items).astype(np.int64)


def rank_full(fn: ScoreFn, users: np.ndarray, seen: list, k: int, cand: np.ndarray | None,
               perm: np.ndarray) -> np.ndarray:
    """Full ranking with ties broken in ``perm`` order: rank columns permuted by ``perm``, map ids back."""
    inv = np.argsort(perm)  # item id -> position in perm
    cand_p = None if cand is None else inv[np.asarray(cand, dtype=np.int64)]
    out = []
    for s in range(0, len(users), CHUNK):
        b = users[s : s + CHUNK]
        seen_p = [inv[np.asarray(x, dtype=np.int64)] for x in seen[s : s + CHUNK]]
        ids_p = rank_items(fn(b)[:, perm], k, seen=seen_p, candidates=cand_p)[1]  # (b, k) in perm positions
        out.append(np.where(ids_p >= 0, perm[np.clip(ids_p, 0, None)], -1))
    return np.concatenate(out) if out else np.empty((0, k), np.int64)


def sampled_pools(users: np.ndarray, tg: list[np.ndarray], seen: list[np.ndarray], n_items: int, n_neg: int,
                  cand: np.ndarray | None, seed: int) -> list[np.ndarray]:
    """Per user: the held-out items plus ``n_neg`` items drawn uniformly from the unseen, non-target items."""
    rng = np.random.default_rng(seed)
    universe = np.arange(n_items, dtype=np.int64) if cand is None else np.asarray(cand, dtype=np.int64)
    pools = []
    for t, s in zip(tg, seen, strict=True):
        free = np.setdiff1d(universe, np.concatenate([t, s]))
        neg = rng.choice(free, size=min(n_neg, len(free)), replace=False)
        pools.append(np.concatenate([t, neg]))
    return pools


def _rank_sampled(fn: ScoreFn, users: np.ndarray, pools: list[np.ndarray], k: int,
                  perm: np.ndarray) -> np.ndarray:
    """Each user's pool ordered by the model's score (ties in ``perm`` order), padded with -1 to width k."""
    inv = np.argsort(perm)
    width = max(k, max((len(p) for p in pools), default=0))
    out = np.full((len(users), width), -1, dtype=np.int64)
    for s in range(0, len(users), CHUNK):
        scores = fn(users[s : s + CHUNK])
        for r, pool in enumerate(pools[s : s + CHUNK]):
            order = np.lexsort((inv[pool], -scores[r, pool]))
            out[s + r, : len(pool)] = pool[order]
    return out


def _from_file(path: Path, users: np.ndarray, k: int, n_items: int) -> np.ndarray | None:
    if not path.exists():
        return None
    cands = Candidates.load(path)
    if not np.array_equal(cands.users, users):
        raise ValueError(f"{path} was made for other users than this evaluation's slice; rerun "
                         "`recsys-llm retrieve` (and `rerank apply`) with the same eval settings")
    if cands.ids.max(initial=-1) >= n_items:
        raise ValueError(f"{path} holds item id {cands.ids.max()} but the catalog has {n_items} items; it "
                         "belongs to another data set: rerun `recsys-llm retrieve`")
    if cands.k < k:
        raise ValueError(f"{path} has {cands.k} candidates per user, fewer than max(eval.ks)={k}")
    return cands.ids[:, :k]


# ------------------------------------------------------------------------------------------ comparison
def compare_run(run_dir: str | Path) -> list[ResultRow]:
    """Evaluate every model on every slice of a run; write report.json, report.md and plots/."""
    from recsys_llm import metrics as M
    from recsys_llm.stats import bootstrap_ci, paired_bootstrap

    t_start = time.perf_counter()
    ctx = Context.load(run_dir)
    cfg = ctx.cfg
    ks = sorted(set(cfg.eval.ks))
    kmax = ks[-1]
    sampled = cfg.eval.sampled_negatives > 0
    known = ctx.known_histories()
    pop = popularity_scores(ctx.split.train, ctx.split.n_items)
    fns = score_functions(ctx)
    perm = tie_order(ctx.split.n_items, cfg.eval.seed)
    item_emb = load_embeddings(ctx.run)[0] if ctx.run.embeddings().exists() else None
    curve_ks = list(range(1, kmax + 1))
    rows: list[ResultRow] = []
    paired: list[dict] = []
    curves: dict[str, dict[str, dict[str, list[float]]]] = {"Recall": {}, "NDCG": {}}
    rec_pop: dict[str, np.ndarray] = {}
    sweep: list[dict] = []
    for slice_name, (users, tg) in slice_users(ctx).items():
        if len(users) == 0:
            logger.warning("slice %s has no users; skipped", slice_name)
            continue
        seen = [known[u] for u in users]
        cand = slice_candidates(ctx, slice_name)
        ranked: dict[str, np.ndarray] = {}
        blind = {key for key, fn in fns.items() if cand is not None and _constant_over(fn, users, cand)}
        if sampled:
            pools = sampled_pools(users, tg, seen, ctx.split.n_items, cfg.eval.sampled_negatives, cand,
                                  cfg.eval.seed)
            for key, fn in fns.items():
                ranked[key] = _rank_sampled(fn, users, pools, kmax, perm)
        else:
            for key, fn in fns.items():
                if key != "retrieval":
                    ranked[key] = rank_full(fn, users, seen, kmax, cand, perm)
            for key, folder in (("retrieval", ctx.run.candidates), ("rerank", ctx.run.ranked)):
                r = _from_file(folder / f"{slice_name}.npz", users, kmax, ctx.split.n_items)
                if r is not None:
                    ranked[key] = r
        per_user = {key: per_user_metrics(r, tg, ks) for key, r in ranked.items()}
        for key, r in ranked.items():
            top = r[:, : ks[0]]
            metrics: dict[str, Any] = {n: float(v.mean()) for n, v in per_user[key].items()}
            ci = {n: bootstrap_ci(v, n_boot=cfg.eval.n_bootstrap, seed=cfg.eval.seed) for n, v in
                  per_user[key].items()}
            k0 = ks[0]
            metrics[f"Coverage@{k0}"] = M.catalog_coverage(top, ctx.split.n_items, k0)
            metrics[f"Novelty@{k0}"] = float(np.nanmean(M.novelty(top, pop, ctx.split.n_users, k0)))
            metrics[f"ARP@{k0}"] = float(np.nanmean(M.average_recommendation_popularity(top, pop, k0)))
            metrics[f"Gini@{k0}"] = M.gini_exposure(top, ctx.split.n_items, k0)
            if item_emb is not None:
                metrics[f"ILD@{k0}"] = float(np.nanmean(M.intra_list_diversity(top, item_emb, k0)))
            metrics["users"] = len(users)
            name = _display(key)
            note = "; ".join(filter(None, ["sampled" if sampled else "",
                                           "scores every candidate alike: random order" if key in blind else "",
                                           getattr(fns.get(key), "note", "")]))
            rows.append(ResultRow(name, slice_name, metrics, note=note,
                                  ci={n: [c.low, c.high] for n, c in ci.items()}))
            for metric in curves:
                curves[metric].setdefault(name, {})[slice_name] = metric_curve(r, tg, metric, curve_ks)
            if slice_name == "warm":
                rec_pop[name] = pop[top[top >= 0]]
        paired += _paired(per_user, slice_name, ks[0], paired_bootstrap, cfg)
        if not sampled and "retrieval" in per_user:
            sweep += _rerank_sweep(ctx, slice_name, users, tg, ks, per_user["retrieval"], paired_bootstrap)
    protocol = _protocol_text(ctx, sampled)
    timings = _load_timings(ctx)
    timings["evaluate"] = round(time.perf_counter() - t_start, 2)
    extra: dict[str, Any] = {
        "protocol": {"description": protocol, "ranking": "sampled" if sampled else "full",
                     "sampled_negatives": cfg.eval.sampled_negatives},
        "split": ctx.split.summary(),
        "paired": paired,
        "rerank_sweep": sweep,
        "curves": {"ks": curve_ks, **curves},
        "timings_s": timings,
        "wall_time_s": round(sum(timings.values()), 1),
        "git_commit": git_commit(),
        "seeds": {"split": cfg.split.seed, "train": cfg.train.seed, "rerank": cfg.rerank.seed,
                  "eval": cfg.eval.seed},
    }
    if not sampled and cfg.hybrid.few_shot and (ctx.run.hybrid / "hybrid.json").exists():
        from recsys_llm.fewshot import few_shot_curves

        t0 = time.perf_counter()
        extra["few_shot"] = few_shot_curves(ctx, k=ks[0])
        logger.info("few-shot curves in %.1f s", time.perf_counter() - t0)
    write_report(ctx.run.root, rows, config=cfg.to_dict(), data=ctx.ds.summary(), extra=extra)
    _plots(ctx.run.root / "plots", rows, curves, curve_ks, rec_pop, ks[0])
    if any(extra.get("few_shot", {}).values()):
        from recsys_llm import plots

        plots.plot_few_shot(extra["few_shot"], f"NDCG@{ks[0]}", ctx.run.root / "plots" / "few_shot.png",
                            models=list(dict.fromkeys(r.model for r in rows)))
    return rows


def _display(key: str) -> str:
    return BASELINE_NAMES.get(key) or MODEL_NAMES.get(key, key)


def _paired(per_user: dict[str, dict[str, np.ndarray]], slice_name: str, k: int, paired_bootstrap,
            cfg) -> list[dict]:
    """Each fine-tuned model vs the best baseline on NDCG@k (chosen on this slice), for NDCG@k and Recall@k."""
    base = [b for b in per_user if b not in OURS]
    if not base:
        return []
    best = max(base, key=lambda b: float(np.mean(per_user[b][f"NDCG@{k}"])))
    out = []
    for ours in (m for m in OURS if m in per_user):
        for metric in (f"NDCG@{k}", f"Recall@{k}"):
            d = paired_bootstrap(per_user[ours][metric], per_user[best][metric], n_boot=cfg.eval.n_bootstrap,
                                 seed=cfg.eval.seed)
            out.append({"slice": slice_name, "model": _display(ours), "baseline": _display(best),
                        "metric": metric, **d.to_dict(), **_ratio(per_user[ours][metric], per_user[best][metric], cfg)})
    for a, b in PAIRS:
        if a not in per_user or b not in per_user or (b == best and a in OURS):
            continue
        for metric in (f"NDCG@{k}", f"Recall@{k}"):
            d = paired_bootstrap(per_user[a][metric], per_user[b][metric], n_boot=cfg.eval.n_bootstrap,
                                 seed=cfg.eval.seed)
            out.append({"slice": slice_name, "model": _display(a), "baseline": _display(b),
                        "metric": metric, **d.to_dict(), **_ratio(per_user[a][metric], per_user[b][metric], cfg)})
    return out


def _ratio(a: np.ndarray, b: np.ndarray, cfg) -> dict[str, float]:
    from recsys_llm.stats import paired_ratio

    r = paired_ratio(a, b, n_boot=cfg.eval.n_bootstrap, seed=cfg.eval.seed)
    return {"ratio": r.mean, "ratio_low": r.low, "ratio_high": r.high}


def _rerank_sweep(ctx: Context, slice_name: str, users: np.ndarray, tg: list, ks: list[int],
                  retrieval: dict[str, np.ndarray], paired_bootstrap) -> list[dict]:
    """Reranked at each (depth, fusion weight) vs retrieval only, paired over users, from the stored scores.

    The configured (rerank.depth, rerank.fusion_weight) is always included (it is the "fine-tuned + rerank"
    row); ``rerank.sweep_depths`` / ``sweep_weights`` add more. Nothing is scored again.
    """
    from recsys_llm.rerank.base import reorder

    path = ctx.run.ranked / f"{slice_name}.scores.npz"
    if not path.exists():
        return []
    with np.load(path, allow_pickle=False) as z:
        if not np.array_equal(z["users"], users):
            raise ValueError(f"{path} was made for other users than this slice; rerun `recsys-llm rerank apply`")
        ids, ret, ce = z["ids"], z["retrieval"], z["rerank"]
    cfg = ctx.cfg
    setting = rerank_setting(ctx.run, cfg)
    depths = sorted({setting[0], *cfg.rerank.sweep_depths})
    weights = sorted({setting[1], *cfg.rerank.sweep_weights})
    k0 = ks[0]
    out = []
    for depth in depths:
        head = (ids >= 0) & (np.arange(ids.shape[1]) < depth)
        if not np.isfinite(ce[head]).all():
            logger.warning("rerank sweep: depth %d is deeper than the cross-encoder scored; rerun `recsys-llm "
                           "rerank apply` with it in rerank.sweep_depths", depth)
            continue
        for weight in weights:
            ranked = reorder(ids, ret, ce, depth, weight)[1][:, : ks[-1]]
            pu = per_user_metrics(ranked, tg, ks)
            row = {"slice": slice_name, "depth": depth, "weight": weight,
                   "headline": (depth, weight) == setting}
            for metric in (f"NDCG@{k0}", f"Recall@{k0}"):
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
    depth, weight = rerank_setting(ctx.run, cfg)
    chosen = " (chosen on validation users)" if cfg.rerank.select_on_valid and (ctx.run.reranker / "selection.json").exists() else ""
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
        f"history. Rerank rows reorder the top {depth} retrieved candidates with fusion weight {weight:g}{chosen}; "
        f"the held-out item is "
        f"never injected. Intervals: 95% percentile bootstrap over users ({cfg.eval.n_bootstrap} resamples); "
        f"paired rows resample the same users for both models."
    )


def _load_timings(ctx: Context) -> dict[str, float]:
    from recsys_llm.io_utils import load_json

    return load_json(ctx.run.timings) if ctx.run.timings.exists() else {}


def git_commit() -> str | None:
    """The commit of the recsys-llm checkout (``+dirty`` if modified), or None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def _plots(folder: Path, rows: list[ResultRow], curves: dict, curve_ks: list[int], rec_pop: dict,
           k: int) -> None:
    from recsys_llm import plots

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
