"""The evaluation protocol in one place: who is validated and tested on what, how deep, how ties break.

Every stage that validates (fine-tuning, reranker, hybrid, served configuration) takes its users from
:func:`validation_users`; retrieval and the report take theirs from :func:`slice_users`; every full ranking
(report rows, the served :class:`~recsys_llm.serve.recommender.Recommender`) breaks score ties in
:func:`tie_order` through :func:`rank_full`.

Example:
    >>> sample_users(np.arange(10), 3, seed=0).tolist()
    [5, 6, 9]
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from recsys_llm.baselines import rank_items
from recsys_llm.config import PipelineConfig
from recsys_llm.data.splits import Split, targets

SLICES = ("warm", "cold-item", "cold-user")
CHUNK = 1024

ScoreFn = Callable[[np.ndarray], np.ndarray]
"""users (b,) -> scores (b, n_items) float32."""


def sample_users(users: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A sorted seeded sample of ``n`` of ``users`` (all of them when ``n`` is 0 or not smaller)."""
    if not n or len(users) <= n:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, n, replace=False))


def validation_users(split: Split, train_hist: list[np.ndarray], n: int, seed: int
                     ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Users with a validation item and a training history (a seeded sample of ``n``, 0 = all), and every
    user's validation targets: what fine-tuning, the reranker, the hybrid and the served choice validate on."""
    tg = targets(split.valid, split.n_users)
    users = np.array([u for u, t in enumerate(tg) if len(t) and len(train_hist[u])], dtype=np.int64)
    return sample_users(users, n, seed), tg


PSEUDO_COLD_SHARE = 0.1
"""The hybrid's pseudo-cold items are at least this share of the warm items (more when the split has more cold
items)."""


def pseudo_cold_items(split: Split, seed: int) -> np.ndarray:
    """The validation's cold items: a seeded uniform sample of the items with training interactions, as many as
    the split's cold items and at least :data:`PSEUDO_COLD_SHARE` of them (at most half; none with fewer than two warm items), drawn the
    way :func:`recsys_llm.data.splits.choose_cold_items` draws the test's cold items, so their popularity is the
    catalogue's. The hybrid's all-items-cold and few-shot validations rank over them
    (:mod:`recsys_llm.stages.hybrid_cold`); with ``hybrid.blind_cold_validation`` every learned text part is
    fitted without their interactions (:func:`blind_histories`). Sorted int64 ids; empty without warm items."""
    warm = np.unique(split.train["item"].to_numpy(dtype=np.int64))
    if len(warm) < 2:
        return np.zeros(0, dtype=np.int64)
    n = min(max(len(split.cold_items), int(round(PSEUDO_COLD_SHARE * len(warm))), 1), len(warm) // 2)
    return np.sort(np.random.default_rng(seed).choice(warm, n, replace=False)).astype(np.int64)


def blind_histories(cfg: PipelineConfig, split: Split, train_hist: list[np.ndarray]
                    ) -> tuple[list[np.ndarray], np.ndarray]:
    """The training histories the learned text parts (fine-tuning, the pooling and sequence user models) fit on,
    and the items hidden from them: without the pseudo-cold items (:func:`pseudo_cold_items`, seeded by
    ``hybrid.seed``) when the hybrid is on and ``hybrid.blind_cold_validation`` is set, so its cold validations
    are as blind as the cold-item test; otherwise ``train_hist`` and no item."""
    hc = cfg.hybrid
    if not (hc.enabled and hc.blind_cold_validation):
        return train_hist, np.zeros(0, dtype=np.int64)
    hidden = pseudo_cold_items(split, hc.seed)
    return [h[~np.isin(h, hidden)] for h in train_hist], hidden


def hidden_record(hidden: np.ndarray) -> dict:
    """What a learned part records of the items hidden from it: their count and the sha256 of their sorted ids
    (compared by :func:`recsys_llm.stages.hybrid.fit_hybrid` with its own pseudo-cold items)."""
    ids = np.sort(np.asarray(hidden, dtype=np.int64))
    return {"hidden_items": int(len(ids)), "sha256": hashlib.sha256(ids.tobytes()).hexdigest()}


def slice_users(cfg: PipelineConfig, split: Split) -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
    """Users of each slice and their held-out items; a seeded sample of ``eval.max_users`` when set."""
    warm = targets(split.test, split.n_users)
    n_train = np.bincount(split.train["user"].to_numpy(), minlength=split.n_users)
    parts = {
        "warm": warm,
        "cold-item": targets(split.cold, split.n_users),
        "cold-user": [t if n_train[u] <= cfg.eval.cold_user_max_train else t[:0] for u, t in enumerate(warm)],
    }
    out = {}
    for name, tg in parts.items():
        users = sample_users(np.array([u for u, t in enumerate(tg) if len(t)], dtype=np.int64), cfg.eval.max_users,
                             cfg.eval.seed)
        out[name] = (users, [tg[u] for u in users])
    return out


def slice_candidates(cfg: PipelineConfig, split: Split, slice_name: str) -> np.ndarray | None:
    """The item set a slice ranks over: the cold items for ``cold-item`` (unless ``eval.cold_candidates=all``),
    else None: the prepared catalog (items added after ``prepare`` are never evaluated)."""
    if slice_name == "cold-item" and cfg.eval.cold_candidates == "cold":
        return np.asarray(split.cold_items, dtype=np.int64)
    return None


def rerank_depth(cfg: PipelineConfig) -> int:
    """How deep the reranker scores: the deepest setting validation may choose."""
    return max([cfg.rerank.depth, *cfg.rerank.sweep_depths])


def candidate_depth(cfg: PipelineConfig) -> int:
    """How many candidates retrieval keeps: enough for the metrics and for the deepest rerank."""
    return max(max(cfg.eval.ks), rerank_depth(cfg) if cfg.rerank.enabled else 0)


def tie_order(n_items: int, seed: int) -> np.ndarray:
    """A seeded random permutation of the catalog used to break score ties.

    Breaking ties by item id would leak information wherever ids correlate with popularity (MovieLens ids
    follow the order movies entered the catalog): a model that scores every cold item 0 would then rank
    them in id order and look far better than chance. Ties are broken in this random order instead.
    """
    return np.random.default_rng([seed, n_items]).permutation(n_items).astype(np.int64)


def rank_full(fn: ScoreFn, users: np.ndarray, seen: Sequence[np.ndarray], k: int, cand: np.ndarray | None,
              perm: np.ndarray) -> np.ndarray:
    """Top-``k`` ids per user of ``fn``'s scores, ``seen`` filtered, within ``cand`` (None = all), ties broken in
    ``perm`` order (rank columns permuted by ``perm``, ids mapped back). ``(len(users), k)``, -1 padded."""
    return rank_scored(fn, users, seen, k, cand, perm)[1]


def rank_scored(fn: ScoreFn, users: np.ndarray, seen: Sequence[np.ndarray], k: int, cand: np.ndarray | None,
                perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rank_full` with the scores: ``(scores (b, k) float32, ids (b, k) int64)``."""
    inv = np.argsort(perm)  # item id -> position in perm
    cand_p = None if cand is None else inv[np.asarray(cand, dtype=np.int64)]
    scores, ids = [], []
    for s in range(0, len(users), CHUNK):
        b = users[s : s + CHUNK]
        seen_p = [inv[np.asarray(x, dtype=np.int64)] for x in seen[s : s + CHUNK]]
        sc, ids_p = rank_items(fn(b)[:, perm], k, seen=seen_p, candidates=cand_p)  # (b, k) in perm positions
        scores.append(sc)
        ids.append(np.where(ids_p >= 0, perm[np.clip(ids_p, 0, None)], -1))
    if not ids:
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    return np.concatenate(scores), np.concatenate(ids)
