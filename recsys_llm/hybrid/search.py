"""Validation search of the hybrid's fusion settings on candidate lists: exact for full ranking, vectorised.

Every setting the hybrid validates fuses standardised parts per item (:func:`recsys_llm.hybrid.model.fuse`)::

    f_i = (1 - a_i - g_i) z(d)_i + a_i z(c)_i + g_i z(b)_i,      a_i, g_i >= 0,  a_i + g_i <= 1

a convex combination, so ``f_i <= max(z(d)_i, z(c)_i, z(b)_i)`` whatever the setting. For each user take the
``m`` best eligible (not excluded) items of each part, plus the user's targets: the *candidates*. An eligible
item in none of the lists has every part at most that part's ``m``-th best value, so its fused score is at
most ``U = max`` of those values. Hence, per (setting, user):

* a target outside the top ``k`` among the candidates is outside the top ``k`` of the catalogue (more items
  can only push it down): it contributes 0, exactly;
* a target inside the candidates' top ``k`` whose fused score is above ``U`` is outranked by candidates
  only: its candidate rank is its catalogue rank (ties to the lower item id, as
  :func:`recsys_llm.ranking.rank_items`), exactly.

A pair with a target in the candidates' top ``k`` that does not clear ``U`` (by a float32 rounding margin) is
scored again over the whole catalogue with :func:`~recsys_llm.hybrid.model.fuse`, so every grid value equals
the exhaustive one (:func:`~recsys_llm.hybrid.model.select_weight`); ``CandidateSet.fallback`` counts those
pairs. Settings sharing one trust vector are scored as one ``(settings, users, candidates)`` array operation,
with the same float32 operations as ``fuse`` (equal scores, equal ties).

Example:
    >>> cs = candidate_set(dense, collab, bridged, targets, exclude, m=200)      # doctest: +SKIP
    >>> fused_grid(cs, trust, [(w, 0.0) for w in (0.0, 0.5, 1.0)])              # doctest: +SKIP
    array([0.041, 0.062, 0.055])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from recsys_llm.hybrid.model import fuse, zscore_rows
from recsys_llm.ranking import full_ranking_metrics

__all__ = ["CandidateSet", "best_value", "candidate_set", "fused_grid"]

TOL = 1e-4
"""Relative margin a target's fused score must clear above ``U`` (float32 rounding of the convex mix)."""


@dataclasses.dataclass
class CandidateSet:
    """The candidates of every validation user and what the bound needs (see the module docstring).

    Attributes:
        items: ``(users, K)`` candidate item ids, ascending per row; ``-1`` = unused column.
        valid: ``(users, K)`` the column is a real, eligible, first-occurrence candidate.
        parts: ``(n_parts, users, K)`` float32 ``z(d)``, ``z(c)`` (and ``z(b)``) at the candidates.
        flat: ``(users,)`` the collaborative row is constant (the user is scored by text only).
        bound: ``(users,)`` ``U``; ``-inf`` when every eligible item is a candidate.
        targets: ``(users, T)`` unique target ids, ``-1`` padded; tcol: their column in ``items``, ``-1`` when
            excluded or padding (never a hit); n_rel: ``(users,)`` distinct targets (the NDCG denominator).
        full: ``(dense, collab, bridged, targets, exclude, lexical)`` for the exact fallback.
        names: which part each row of ``parts`` is (``dense``, ``collab``, then ``bridge`` / ``lexical``).
        pairs / fallback: (setting, user) pairs scored, and of those rescored over the whole catalogue.
    """

    items: np.ndarray
    valid: np.ndarray
    parts: np.ndarray
    flat: np.ndarray
    bound: np.ndarray
    targets: np.ndarray
    tcol: np.ndarray
    n_rel: np.ndarray
    full: tuple
    names: tuple[str, ...] = ("dense", "collab", "bridge")
    pairs: int = 0
    fallback: int = 0


def _eligible(exclude: Sequence[np.ndarray], rows: np.ndarray, n_items: int) -> np.ndarray:
    """``(len(rows), n_items)`` bool: the item is not excluded for that user."""
    ex = [np.asarray(exclude[u], dtype=np.int64).ravel() for u in rows]
    out = np.ones((len(rows), n_items), dtype=bool)
    out[np.repeat(np.arange(len(rows)), [len(e) for e in ex]), np.concatenate(ex) if ex else []] = False
    return out


def _padded(targets: Sequence[np.ndarray], rows: np.ndarray, width: int) -> np.ndarray:
    out = np.full((len(rows), width), -1, dtype=np.int64)
    for j, u in enumerate(rows):
        t = np.unique(np.asarray(targets[u], dtype=np.int64))
        out[j, : len(t)] = t
    return out


def candidate_set(dense: np.ndarray, collab: np.ndarray, bridged: np.ndarray | None,
                  targets: Sequence[np.ndarray], exclude: Sequence[np.ndarray], m: int = 200,
                  chunk: int = 512, lexical: np.ndarray | None = None) -> CandidateSet:
    """The top ``m`` eligible items of each standardised part per user, plus the targets, and the bound ``U``.

    Args:
        dense / collab / bridged / lexical: ``(users, n_items)`` raw part scores (``bridged``, ``lexical``
            may be None).
        targets: the users' held-out items; exclude: the items never ranked for them (training history).
        m: candidates per part (``>= 1``); chunk: users per working block.
    """
    n_users, n_items = dense.shape
    raw = [dense, collab] + [p for p in (bridged, lexical) if p is not None]
    names = ("dense", "collab") + tuple(n for n, p in (("bridge", bridged), ("lexical", lexical)) if p is not None)
    mm = min(int(m), n_items)
    width = max([1] + [len(np.unique(t)) for t in targets])
    n_cols = len(raw) * mm + width
    items = np.full((n_users, n_cols), -1, dtype=np.int64)
    valid = np.zeros((n_users, n_cols), dtype=bool)
    parts = np.zeros((len(raw), n_users, n_cols), dtype=np.float32)
    bound = np.full(n_users, -np.inf, dtype=np.float32)
    flat = np.zeros(n_users, dtype=bool)
    tgs = np.full((n_users, width), -1, dtype=np.int64)
    for lo in range(0, n_users, chunk):
        rows = np.arange(lo, min(n_users, lo + chunk))
        elig = _eligible(exclude, rows, n_items)  # (b, n_items)
        zs = [zscore_rows(p[rows]) for p in raw]  # each (b, n_items), over the whole catalogue as in fuse
        flat[rows] = np.asarray(collab[rows], dtype=np.float32).std(axis=1) <= 1e-12
        tops = []
        for z in zs:
            s = np.where(elig, z, -np.inf)
            top = np.argpartition(-s, mm - 1, axis=1)[:, :mm] if mm < n_items else np.tile(np.arange(n_items),
                                                                                              (len(rows), 1))
            tops.append(top)
            if mm < n_items:  # every eligible item outside `top` scores at most the m-th best of this part
                bound[rows] = np.maximum(bound[rows], np.take_along_axis(s, top, axis=1).min(axis=1))
        tgs[rows] = _padded(targets, rows, width)
        cand = np.sort(np.concatenate(tops + [tgs[rows]], axis=1), axis=1)  # (b, K) ascending, -1 first
        first = np.ones_like(cand, dtype=bool)
        first[:, 1:] = cand[:, 1:] != cand[:, :-1]
        safe = np.maximum(cand, 0)
        items[rows] = cand
        valid[rows] = first & (cand >= 0) & np.take_along_axis(elig, safe, axis=1)
        for p, z in enumerate(zs):
            parts[p, rows] = np.take_along_axis(z, safe, axis=1)
    keep = np.argsort(~valid, axis=1, kind="stable")[:, : max(1, int(valid.sum(axis=1).max(initial=0)))]
    items, valid = np.take_along_axis(items, keep, axis=1), np.take_along_axis(valid, keep, axis=1)
    parts = np.stack([np.take_along_axis(p, keep, axis=1) for p in parts])  # valid columns first, ascending ids
    tcol = np.full((n_users, width), -1, dtype=np.int64)
    for j in range(width):  # the column holding target j (one valid column at most: ids are unique there)
        match = (items == tgs[:, j : j + 1]) & valid & (tgs[:, j : j + 1] >= 0)
        tcol[:, j] = np.where(match.any(axis=1), match.argmax(axis=1), -1)
    n_rel = (tgs >= 0).sum(axis=1)
    return CandidateSet(items, valid, parts, flat, bound, tgs, tcol, n_rel,
                        (dense, collab, bridged, targets, exclude, lexical), names)


def _fused(cs: CandidateSet, rows: slice, trust: np.ndarray, w: np.ndarray, g: np.ndarray,
           lw: np.ndarray) -> np.ndarray:
    """``(settings, b, K)`` fused scores at the candidates, the float32 operations of ``fuse`` (invalid columns
    hold any value: :func:`_ndcg_block` never counts them)."""
    t = trust[np.maximum(cs.items[rows], 0)][None]  # (1, b, K)
    flat = cs.flat[rows]
    a = w[:, None, None] * t  # (P, b, K) float32
    if flat.any():
        a[:, flat] = 0.0
    rest = np.float32(1.0) - a
    terms = []
    if "bridge" in cs.names and g.any():
        gg = g[:, None, None] * (np.float32(1.0) - t)
        if flat.any():
            gg[:, flat] = 0.0
        rest, terms = rest - gg, [*terms, (gg, cs.names.index("bridge"))]
    if "lexical" in cs.names and lw.any():
        ll = lw[:, None, None] * (t == 0)
        if flat.any():
            ll[:, flat] = lw[:, None, None]
        rest, terms = rest - ll, [*terms, (ll, cs.names.index("lexical"))]
    f = rest * cs.parts[0, rows][None]
    f += a * cs.parts[1, rows][None]
    for coef, p in terms:
        f += coef * cs.parts[p, rows][None]
    return f


def _ndcg_block(cs: CandidateSet, rows: slice, f: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per (setting, user) NDCG@k from the candidates, and which pairs the bound cannot certify."""
    items, bound = cs.items[rows], cs.bound[rows]
    margin = np.full(bound.shape, -np.inf, dtype=np.float32)
    fin = np.isfinite(bound)
    margin[fin] = bound[fin] + TOL * (1.0 + np.abs(bound[fin]))
    margin = margin[None]  # (1, b)
    dcg = np.zeros(f.shape[:2])
    unsure = np.zeros(f.shape[:2], dtype=bool)
    for j in range(cs.tcol.shape[1]):
        col, tid = cs.tcol[rows, j], cs.targets[rows, j]
        has = col >= 0
        if not has.any():
            continue
        ft = np.take_along_axis(f, np.maximum(col, 0)[None, :, None], axis=2)  # (P, b, 1)
        above = (f > ft) | ((f == ft) & (items < tid[:, None])[None])
        rank = (above & cs.valid[rows][None]).sum(axis=2)  # (P, b) candidates ranked before target j
        hit = has[None] & (rank < k)
        dcg += np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)
        unsure |= hit & ~(ft[..., 0] > margin)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64)))])
    idcg = ideal[np.clip(cs.n_rel[rows], 0, k)]
    return dcg / np.where(idcg > 0, idcg, 1.0)[None], unsure


def fused_grid(cs: CandidateSet, trust: np.ndarray, settings: Sequence[tuple[float, ...]], k: int = 10,
               chunk: int = 256, per_user: bool = False) -> np.ndarray:
    """Mean validation NDCG@k of each setting ``(w, bridge[, lexical])`` with per-item ``trust``: ``(settings,)``
    float64, equal to ``mean(ndcg_at(fuse(dense, collab, w, trust, "weighted", bridged, bridge, lexical_scores,
    lexical), targets, exclude, k))``; with ``per_user``, the ``(settings, users with targets)`` values the
    means are taken over (paired comparisons of settings).
    """
    trust = np.asarray(trust, dtype=np.float32)
    settings = [(float(s[0]), float(s[1]), float(s[2]) if len(s) > 2 else 0.0) for s in settings]
    w, g, lw = (np.array([s[j] for s in settings], dtype=np.float32) for j in range(3))
    n_users = len(cs.items)
    out = np.zeros((len(settings), n_users))
    unsure = np.zeros((len(settings), n_users), dtype=bool)
    for lo in range(0, n_users, chunk):
        rows = slice(lo, min(n_users, lo + chunk))
        out[:, rows], unsure[:, rows] = _ndcg_block(cs, rows, _fused(cs, rows, trust, w, g, lw), k)
    dense, collab, bridged, targets, exclude, lexical = cs.full
    for p in np.flatnonzero(unsure.any(axis=1)):  # the pairs the bound cannot certify: the whole catalogue
        rows = np.flatnonzero(unsure[p])
        fused = fuse(dense[rows], collab[rows], settings[p][0], trust, "weighted",
                     None if bridged is None else bridged[rows], settings[p][1],
                     None if lexical is None else lexical[rows], settings[p][2])
        out[p, rows] = full_ranking_metrics(fused, [targets[u] for u in rows], k, seen=[exclude[u] for u in rows],
                                            metrics=("ndcg",))[f"ndcg@{k}"]
    cs.pairs += out.size
    cs.fallback += int(unsure.sum())
    has = cs.n_rel > 0
    if per_user:
        return out[:, has]
    return out[:, has].mean(axis=1) if has.any() else np.full(len(settings), np.nan)


def best_value(grid: dict[float, float]) -> float:
    """The grid key with the best value; ties: the smaller key (as :func:`~recsys_llm.hybrid.model.select_weight`)."""
    return max(grid, key=lambda v: (grid[v], -v))
