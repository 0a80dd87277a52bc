"""Few-shot curves: recommendation quality as a function of how many interactions are known.

**Item side** (needs cold items, ``split.cold_item_fraction > 0``): every cold item's interactions are sorted
by time; the first ``n`` are revealed to the models (as if the item had been live that long), the ones from
position ``max(counts)`` on are the test targets (the same targets for every ``n``, so the curve compares like
with like; only cold items with more than ``max(counts)`` interactions contribute targets). ``n = 0`` is pure
description. Users are ranked over the cold items, with everything they are known to have done (train +
valid + their own revealed cold interactions) filtered. At each ``n`` the collaborative model is refitted on
train + revealed; the text models do not change (their item vectors come from descriptions), the hybrid
fuses the two with the weight and trust chosen on validation (:mod:`recsys_llm.hybrid`).

**User side**: warm test users with at least ``max(counts)`` known items; each model sees only their ``n``
most recent items (``n >= 1``; ``n <= 3`` is the cold-user regime), ranked over the catalog with their full
known history filtered (so the targets and exclusions are identical across ``n``).

Each point is the mean NDCG@k over the slice's users with a 95% bootstrap interval (a seeded sample of
``eval.max_users`` users when set). Each side also carries the ablation at every count (what text adds over
the best ID-only model and ID over the best text-only one, paired) and the check of the hybrid's curve
(:mod:`recsys_llm.report.ablation`), both from the same per-user values.

Example:
    >>> from recsys_llm.report.fewshot import few_shot_curves
    >>> curves = few_shot_curves(ctx)   # doctest: +SKIP
    >>> curves["item"]["models"]["hybrid (text + collaborative)"]["NDCG@10"]   # one value per count
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from recsys_llm.artifacts import load_embeddings, load_encoder, load_hybrid
from recsys_llm.classic import make_baseline
from recsys_llm.data.splits import histories, targets
from recsys_llm.encoder.user_pooling import encode_histories
from recsys_llm.encoder.user_sequence import encode_sequences
from recsys_llm.hybrid import HybridModel, fit_collaborative, text_neighbours
from recsys_llm.protocol import rank_full, sample_users, tie_order
from recsys_llm.report.ablation import FEW_SHOT_KINDS, ablate, few_shot_checks
from recsys_llm.report.measures import per_user_metrics
from recsys_llm.report.scoring import BASELINE_NAMES, MODEL_NAMES, constant_over
from recsys_llm.report.stats import bootstrap_ci
from recsys_llm.run import Context
from recsys_llm.text.templates import user_texts

logger = logging.getLogger(__name__)

HistFn = Callable[[np.ndarray, list[np.ndarray]], np.ndarray]
"""(users (b,), histories) -> (b, n_items) scores."""


def _add(out: dict, name: str, ranked: np.ndarray, tg: list[np.ndarray], k: int, cfg) -> np.ndarray:
    """Append the point of ``ranked`` to ``out[name]`` and return its per-user NDCG@k."""
    v = per_user_metrics(ranked, tg, [k])[f"NDCG@{k}"]
    ci = bootstrap_ci(v, n_boot=cfg.eval.n_bootstrap, seed=cfg.eval.seed)
    m = out.setdefault(name, {f"NDCG@{k}": [], "low": [], "high": []})
    m[f"NDCG@{k}"].append(ci.mean)
    m["low"].append(ci.low)
    m["high"].append(ci.high)
    return v


def _ablation(side: str, counts: list[int], per_user: list[dict], blind: list[set], k: int, cfg) -> dict:
    """The side's ablation at every count and the check of the hybrid's curve (:mod:`recsys_llm.report.ablation`)."""
    n_boot, seed = cfg.eval.n_bootstrap, cfg.eval.seed
    entries = [e for n, pu, bl in zip(counts, per_user, blind, strict=True)
               for e in ablate(pu, FEW_SHOT_KINDS, f"few-shot {side}, n={n}", f"NDCG@{k}", bl, n_boot, seed, str)]
    return {"ablation": entries, "check": few_shot_checks(counts, per_user, side, n_boot, seed)}


def _history_users(models: tuple, hists: list[np.ndarray]) -> dict[str, np.ndarray]:
    """``{"pooling": (n, d), "sequence": (n, d)}`` vectors of ``hists`` (``sequence`` when the run has one)."""
    items, _, _, pool, seq = models
    out = {"pooling": encode_histories(pool, items, hists)}
    if seq is not None:
        out["sequence"] = encode_sequences(seq, items, hists)
    return out


def _scorers(hist: list[np.ndarray], text_u: np.ndarray, hist_u: dict[str, np.ndarray], cf, hybrid, bm25,
             pop: np.ndarray, items: np.ndarray) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Every model of the curves as ``rows (b,) -> scores (b, n_items)``; ``rows`` index ``hist`` / ``text_u`` /
    ``hist_u[...]`` (:func:`_history_users`; one entry per evaluated user)."""

    n_items = len(items)
    dense_u = hist_u.get(hybrid.user_model, text_u)
    pop = pop.astype(np.float32)

    def h(rows: np.ndarray) -> list[np.ndarray]:
        return [hist[i] for i in rows]

    fns: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        BASELINE_NAMES["popularity"]: lambda rows: np.broadcast_to(pop, (len(rows), n_items)).copy(),
        BASELINE_NAMES["bm25"]: lambda rows: bm25.score(rows, h(rows)),
    }
    if cf is not None:
        fns[f"{'EASE' if cf.name == 'ease' else 'ItemKNN'} (ID only)"] = lambda rows: cf.score(h(rows), n_items)
    fns[MODEL_NAMES["retrieval"] + " (text user)"] = lambda rows: text_u[rows] @ items.T
    for model, vectors in hist_u.items():
        fns[MODEL_NAMES[model]] = lambda rows, v=vectors: v[rows] @ items.T
    fns[MODEL_NAMES["hybrid"]] = lambda rows: hybrid.score(dense_u[rows] @ items.T, h(rows))
    return fns


def item_side_split(cold: pd.DataFrame, n_max: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(ordered, test)``: cold interactions with ``position`` (0 = earliest, per item) and the test rows
    (``position >= n_max``)."""
    order = cold.sort_values(["item", "timestamp"], kind="stable").copy()
    order["position"] = order.groupby("item").cumcount()
    return order, order[order["position"] >= n_max]


def few_shot_curves(ctx: Context, counts: Sequence[int] | None = None, k: int = 10) -> dict:
    """Item-side and user-side few-shot curves of every model the run has (see the module docstring).

    Returns:
        ``{"item": {...}, "user": {...}}``, each ``{"counts", "users", "targets", "models": {name:
        {"NDCG@k": [...], "low": [...], "high": [...]}}}``; a side is ``None`` when the run cannot support it
        (no cold items / no user with enough history).
    """

    counts = sorted(set(ctx.cfg.hybrid.few_shot if counts is None else counts))
    items, text_users, _ = load_embeddings(ctx.run)
    models = (items, text_users, *load_hybrid(ctx.run))
    return {"item": _item_side(ctx, models, counts, k),
            "user": _user_side(ctx, models, [c for c in counts if c >= 1], k)}


def _refit_collaborative(hybrid: HybridModel, train: pd.DataFrame, n_users: int, n_items: int):
    """The hybrid's collaborative part refitted on ``train`` with the setting it was tuned to (``hybrid.json``'s
    ``collaborative`` record: e.g. recency EASE with its l2), so each few-shot point scores the served model's
    kind of matrix; the library default only for a hybrid saved without that record."""
    name = hybrid.cf.name if hybrid.cf is not None else "ease"
    tuned = hybrid.info.get("collaborative") or {}
    fitted = None
    if tuned.get("baseline"):
        fitted = make_baseline(tuned["baseline"]).with_params(**tuned.get("params", {})).fit(train, n_users, n_items)
    return fit_collaborative(name, train, n_users, n_items, fitted=fitted)


def _item_side(ctx: Context, models: tuple, counts: list[int], k: int) -> dict | None:

    split, cfg = ctx.split, ctx.cfg
    if len(split.cold_items) == 0 or not counts:
        return None
    n_max = max(counts)
    ordered, test = item_side_split(split.cold, n_max)
    if test.empty:
        logger.warning("item-side few-shot: no cold item has more than %d interactions; skipped", n_max)
        return None
    users = sample_users(np.unique(test["user"].to_numpy(dtype=np.int64)), cfg.eval.max_users, cfg.eval.seed)
    tg_all = histories(test, split.n_users)
    tg = [tg_all[u] for u in users]
    known = ctx.known_histories()
    items, text_users, hybrid, _, _ = models
    hist_u = _history_users(models, [known[u] for u in users])  # (users, d) each: no cold item inside
    perm = tie_order(split.n_items, cfg.eval.seed)
    texts = ctx.item_texts()
    cand = split.cold_items
    out: dict = {}
    per_user: list[dict] = []
    blind: list[set] = []
    for n in counts:
        revealed = ordered[ordered["position"] < n]
        train_n = pd.concat([split.train, revealed[split.train.columns]], ignore_index=True)
        rev_hist = histories(revealed, split.n_users)
        hist = [np.concatenate([known[u], rev_hist[u]]) for u in users]
        cf = _refit_collaborative(hybrid, train_n, split.n_users, split.n_items)
        hc = cfg.hybrid
        neighbours = (text_neighbours(items, cf.counts, hc.bridge_neighbours, hc.bridge_temperature)
                      if hybrid.bridge > 0 else None)  # revealed items become donors of the bridge
        model_n = dataclasses.replace(hybrid, cf=cf, neighbours=neighbours)  # every chosen setting, this data
        bm25 = make_baseline("bm25").fit(train_n, split.n_users, split.n_items, texts)
        fns = _scorers(hist, text_users[users], hist_u, cf, model_n, bm25,
                       np.bincount(train_n["item"], minlength=split.n_items), items)
        rows = np.arange(len(users))
        per_user.append({name: _add(out, name, rank_full(fn, rows, hist, k, cand, perm), tg, k, cfg)
                         for name, fn in fns.items()})
        blind.append({name for name, fn in fns.items() if constant_over(fn, rows, cand)})
        logger.info("item-side few-shot n=%d: hybrid NDCG@%d %.4f", n, k, out[MODEL_NAMES["hybrid"]][f"NDCG@{k}"][-1])
    return {"counts": counts, "users": len(users), "targets": int(sum(len(t) for t in tg)), "items": int(test["item"].nunique()),
            "models": out, **_ablation("item", counts, per_user, blind, k, cfg)}


def _user_side(ctx: Context, models: tuple, counts: list[int], k: int) -> dict | None:

    split, cfg = ctx.split, ctx.cfg
    if not counts:
        return None
    n_max = max(counts)
    known = ctx.known_histories()
    tg_all = targets(split.test, split.n_users)
    users = np.array([u for u, t in enumerate(tg_all) if len(t) and len(known[u]) >= n_max], dtype=np.int64)
    users = sample_users(users, cfg.eval.max_users, cfg.eval.seed)
    if len(users) == 0:
        logger.warning("user-side few-shot: no test user has %d known items; skipped", n_max)
        return None
    tg = [tg_all[u] for u in users]
    seen = [known[u] for u in users]
    items, _, hybrid, _, _ = models
    encoder = load_encoder(ctx.run, cfg.train.device)
    perm = tie_order(split.n_items, cfg.eval.seed)
    texts = ctx.item_texts()
    bm25 = make_baseline("bm25").fit(split.train, split.n_users, split.n_items, texts)
    pop = np.bincount(split.train["item"], minlength=split.n_items).astype(np.float32)
    out: dict = {}
    per_user: list[dict] = []
    for n in counts:
        hist = [h[-n:] for h in seen]
        text_u = encoder.encode_users(user_texts(hist, ctx.titles, cfg.text.user_max_items), cfg.text.user_max_tokens,
                                      show_progress=False)
        fns = _scorers(hist, text_u, _history_users(models, hist), hybrid.cf, hybrid, bm25, pop, items)
        per_user.append({name: _add(out, name, rank_full(fn, np.arange(len(users)), seen, k, None, perm), tg, k, cfg)
                         for name, fn in fns.items()})
        logger.info("user-side few-shot n=%d: hybrid NDCG@%d %.4f", n, k, out[MODEL_NAMES["hybrid"]][f"NDCG@{k}"][-1])
    return {"counts": counts, "users": len(users), "models": out,
            **_ablation("user", counts, per_user, [set()] * len(counts), k, cfg)}
