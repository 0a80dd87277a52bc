"""Recall against exact search, queries per second, and the smallest search setting that reaches a target.

:func:`sweep` measures an index at every value of its search parameter (``nprobe`` for IVF, ``ef_search``
for HNSW; one row for an index without one) against exact ground truth; :func:`tune` picks the smallest
value whose recall@k reaches the target and leaves it set on the index (save the index to keep it). Recall@k
here is the overlap of the approximate and the exact top-k, ``|A ∩ E| / k`` averaged over queries.

"Reaches" means the one-sided 95% lower confidence bound of the mean over the tuning queries,
``mean - 1.645 sd / sqrt(n)``, is at least the target: a setting tuned on a few hundred queries then meets
the target on queries it has not seen (at 1M items a mean that just touches 0.95 on 200 tuning queries
measured 0.93 on the test queries). The search doubles the value until it reaches the target, then bisects
between the last miss and the first hit (recall grows with ``nprobe``/``ef_search``).

Example:
    >>> import numpy as np
    >>> from recsys_llm.index.faiss_index import FaissIndex
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((5000, 16)).astype("float32")
    >>> idx = FaissIndex(16, "IVF64,Flat", use_gpu="no"); idx.add(x, np.arange(5000))
    >>> truth = exact_neighbours(x, np.arange(5000), x[:200], k=10)
    >>> row = tune(idx, x[:200], truth, k=10, target=0.95)
    >>> row.recall >= 0.95 and idx.nprobe == row.value
    True
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from recsys_llm.index.base import VectorIndex
from recsys_llm.index.convert import as_vectors
from recsys_llm.index.exact import ExactIndex

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepRow:
    """One search setting: parameter name and value (None: no parameter), recall@k and throughput."""

    param: str | None
    value: int | None
    k: int
    recall: float
    qps: float
    recall_low: float | None = None  # one-sided 95% lower confidence bound of recall (None: use recall)

    def reaches(self, target: float) -> bool:
        """Whether the lower confidence bound of recall (or recall itself) is at least ``target``."""
        return (self.recall if self.recall_low is None else self.recall_low) >= target

    @property
    def setting(self) -> str:
        return f"{self.param}={self.value}" if self.param else "-"


def exact_neighbours(vectors, ids, queries, k: int) -> np.ndarray:
    """Exact top-``k`` item ids per query (the ground truth), by brute force."""
    vec = as_vectors(vectors, None, "vectors")
    exact = ExactIndex(vec.shape[1])
    exact.add(vec, ids)
    return exact.search(queries, k)[1]


def query_recalls(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per row ``|found_i ∩ truth_i| / |truth_i|`` (``-1`` padding ignored)."""
    found, truth = np.asarray(found), np.asarray(truth)
    if found.shape[0] != truth.shape[0]:
        raise ValueError(f"recall_at_k: {found.shape[0]} result rows for {truth.shape[0]} ground-truth rows")
    return np.array([len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max((t >= 0).sum(), 1)
                     for f, t in zip(found, truth, strict=True)], dtype=np.float64)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean ``|found_i ∩ truth_i| / |truth_i|`` over rows (``-1`` padding ignored)."""
    per = query_recalls(found, truth)
    return float(per.mean()) if len(per) else 0.0


def recall_lower_bound(per_query: np.ndarray, z: float = 1.645) -> float:
    """One-sided lower confidence bound of the mean recall: ``mean - z sd / sqrt(n)`` (z = 1.645: 95%)."""
    n = len(per_query)
    if n < 2:
        return float(per_query.mean()) if n else 0.0
    return float(per_query.mean() - z * per_query.std(ddof=1) / np.sqrt(n))


def timed_search(index: VectorIndex, queries: np.ndarray, k: int, repeats: int = 1) -> tuple[np.ndarray, float]:
    """``(ids, queries per second)``: the best of ``repeats`` timed passes after one warm-up query batch."""
    index.search(queries[: min(len(queries), 16)], k)
    best = np.inf
    ids = np.empty((0, k), dtype=np.int64)
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        _, ids = index.search(queries, k)
        best = min(best, time.perf_counter() - t0)
    return ids, len(queries) / max(best, 1e-9)


def search_param(index: VectorIndex) -> tuple[str | None, list[int]]:
    """The tunable parameter of ``index`` and the values a sweep tries (smallest first)."""
    nlist = getattr(index, "nlist", None)
    if nlist:
        return "nprobe", [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096) if v < nlist] + [nlist]
    if getattr(index, "_hnsw", None) is not None:
        return "ef_search", [16, 32, 64, 128, 256, 512, 1024]
    return None, [None]  # type: ignore[list-item]


def _set(index: VectorIndex, param: str | None, value: int | None) -> None:
    if param is not None:
        index.set_search_params(**{param: value})  # type: ignore[attr-defined]


def sweep(index: VectorIndex, queries, truth: np.ndarray, k: int = 10, values: list[int] | None = None,
          stop_at: float | None = None, repeats: int = 1) -> list[SweepRow]:
    """Recall@k and QPS at each value of the index's search parameter; the index ends at its old setting.

    Args:
        index: the index to measure.
        queries: ``(n, dim)`` query vectors.
        truth: exact top-``k`` ids per query (:func:`exact_neighbours`).
        values: parameter values to try (default :func:`search_param`'s list).
        stop_at: stop after the first value whose recall reaches this (its lower bound), then bisect between it and the value
            before (recall grows with ``nprobe``/``ef_search``), so the smallest integer setting reaching it
            is measured too; rows come back sorted by value, and :func:`pick` takes that smallest setting.
    """
    q = as_vectors(queries, index.dim, "queries")
    param, default = search_param(index)
    old = getattr(index, param) if param else None
    rows: list[SweepRow] = []

    def measure(value: int | None) -> SweepRow:
        _set(index, param, value)
        ids, qps = timed_search(index, q, k, repeats)
        per = query_recalls(ids[:, :k], truth[:, :k])
        rows.append(SweepRow(param, value, k, float(per.mean()) if len(per) else 0.0, qps, recall_lower_bound(per)))
        logger.info("%s: recall@%d %.4f (>= %.4f), %.0f queries/s", rows[-1].setting, k, rows[-1].recall,
                    rows[-1].recall_low, qps)
        return rows[-1]

    try:
        for value in values or default:
            if stop_at is not None and measure(value).reaches(stop_at):
                break
            if stop_at is None:
                measure(value)
        if stop_at is not None and param and len(rows) > 1 and rows[-1].reaches(stop_at):
            lo, hi = int(rows[-2].value), int(rows[-1].value)  # type: ignore[arg-type]
            while hi - lo > 1:  # invariant: lo misses the target, hi reaches it
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if measure(mid).reaches(stop_at) else (mid, hi)
    finally:
        if param and old is not None:
            _set(index, param, old)
    return sorted(rows, key=lambda r: r.value or 0)


def _check_target(target: float) -> None:
    if not 0 < target <= 1:
        raise ValueError(f"target={target}: a recall between 0 and 1")


def pick(rows: list[SweepRow], target: float) -> SweepRow:
    """The first (smallest) setting of a sweep whose recall reaches ``target`` (:meth:`SweepRow.reaches`).

    Raises:
        ValueError: ``target`` outside (0, 1], or no row reaches it (the message gives the best recall).
    """
    _check_target(target)
    hit = next((r for r in rows if r.reaches(target)), None)
    if hit is None:
        best = max(rows, key=lambda r: r.recall)
        low = f" (95% lower bound {best.recall_low:.4f})" if best.recall_low is not None else ""
        raise ValueError(f"recall@{best.k} {best.recall:.4f}{low} at {best.setting} (the most this index "
                         f"searches) is below the target {target}; use a finer index (more bytes per vector), "
                         "more tuning queries or a lower target")
    return hit


def use(index: VectorIndex, row: SweepRow) -> None:
    """Set the search parameter of ``row`` on ``index`` (save the index to keep it)."""
    _set(index, row.param, row.value)


def tune(index: VectorIndex, queries, truth: np.ndarray, k: int = 10, target: float = 0.95,
         repeats: int = 1) -> SweepRow:
    """Set the smallest search parameter whose recall@k reaches ``target`` and return its measurement.

    Raises:
        ValueError: ``target`` outside (0, 1], or unreachable (the message gives the best recall measured).
    """
    _check_target(target)
    best = pick(sweep(index, queries, truth, k, stop_at=target, repeats=repeats), target)
    use(index, best)
    return best


def format_sweep(rows: list[SweepRow], exact_qps: float | None = None) -> str:
    """A plain-text table of a sweep (the CLI prints it)."""
    lines = [f"{'setting':<16} {'recall@' + str(rows[0].k if rows else 10):>10} {'queries/s':>12} {'vs exact':>9}"]
    if exact_qps is not None:
        lines.append(f"{'exact (numpy)':<16} {1.0:>10.4f} {exact_qps:>12.0f} {1.0:>8.2f}x")
    for r in rows:
        ratio = f"{r.qps / exact_qps:>8.2f}x" if exact_qps else f"{'':>9}"
        lines.append(f"{r.setting:<16} {r.recall:>10.4f} {r.qps:>12.0f} {ratio}")
    return "\n".join(lines)
