"""The hybrid's collaborative source: a sparse item-item matrix from EASE or ItemKNN (:func:`fit_collaborative`)
that scores a user's history (:class:`CollaborativeScorer`), stored as ``collaborative.safetensors``."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_llm.classic import EASE, ItemKNN, query_matrix, recency_weights
from recsys_llm.hybrid.sparse import load_sparse, rows_dot, save_sparse

logger = logging.getLogger(__name__)
MATRIX_FILE = "collaborative.safetensors"
CF_MODELS = ("ease", "itemknn")
FULL_UP_TO = 4096  # catalogs up to this many items keep the whole item-item matrix (<= 16.8M entries)
FEW_QUERIES = 8  # up to this many queries per call are scored row by row (rows_dot), more with one sparse product


@dataclasses.dataclass
class CollaborativeScorer:
    """Sparse item-item scorer: ``score(history) = x @ S`` with ``S[h, i]`` = how much ``h`` predicts ``i``.

    Attributes:
        matrix: ``(n_items, n_items)`` CSR, float32.
        counts: ``(n_items,)`` training interactions per item (drives the per-item trust ``t_i``).
        name: the model it came from (``ease`` / ``itemknn``).
    """

    matrix: sp.csr_matrix
    counts: np.ndarray
    name: str
    _dense_cache: np.ndarray | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    _dense_checked: bool = dataclasses.field(default=False, init=False, repr=False, compare=False)

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[0])

    def score(self, histories: Sequence[np.ndarray], n_items: int | None = None, halflife: float = 0.0) -> np.ndarray:
        """``(len(histories), n_items)`` float32; items beyond the fitted catalog (added later) score 0.

        Args:
            histories: item ids per user, oldest first.
            n_items: output width (default the fitted catalog).
            halflife: recency weighting of the query: the item ``a`` positions before the most recent counts
                ``0.5 ** (a / halflife)`` (0 = every item counts 1, the classic binary query).

        Raises:
            ValueError: a history holds an id < 0 or >= ``n_items``.
        """
        n_out = self.n_items if n_items is None else int(n_items)
        out = np.zeros((len(histories), n_out), dtype=np.float32)
        for r, h in enumerate(histories):
            h = np.asarray(h, dtype=np.int64).ravel()
            if h.size and (h.min() < 0 or h.max() >= n_out):
                raise ValueError(f"history row {r}: item id {int(h.max() if h.max() >= n_out else h.min())} "
                                 f"outside 0..{n_out - 1}")
        if len(histories) <= FEW_QUERIES:  # serving: one user per call, numpy gathers instead of scipy products
            for r, h in enumerate(histories):
                ids, w = recency_weights(h, halflife)
                keep = ids < self.n_items  # items added after fitting have no collaborative row
                dense = self._dense()
                out[r, : self.n_items] = (w[keep] @ dense[ids[keep]] if dense is not None
                                          else rows_dot(self.matrix, ids[keep], w[keep]))
        else:
            out[:, : self.n_items] = (query_matrix(histories, self.n_items, halflife) @ self.matrix).toarray()
        return out

    def _dense(self) -> np.ndarray | None:
        """The matrix as a dense array when it is mostly full and small (a whole-catalog EASE up to
        ``FULL_UP_TO`` items, <= 64 MiB): gathering a user's rows is then one copy and one ``gemv``."""
        if not self._dense_checked:
            n = self.n_items
            if n <= FULL_UP_TO and self.matrix.nnz > n * n // 4:
                self._dense_cache = self.matrix.toarray()
            self._dense_checked = True
        return self._dense_cache

    def save(self, folder: str | Path) -> None:
        """Write ``collaborative.safetensors`` (the sparse matrix and the counts) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_sparse(folder / MATRIX_FILE, self.matrix, {"counts": self.counts.astype(np.int64)},
                     metadata={"name": self.name, "n_items": str(self.n_items)})

    @classmethod
    def load(cls, folder: str | Path) -> CollaborativeScorer:
        path = Path(folder) / MATRIX_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; run `recsys-llm hybrid --run-dir RUN` first")
        t, meta = load_sparse(path)
        n = int(meta.get("n_items", len(t["counts"])))
        if len(t["indptr"]) != n + 1 or len(t["counts"]) != n or len(t["indices"]) != len(t["data"]):
            raise ValueError(f"{path}: inconsistent sparse matrix ({len(t['indptr'])} indptr, {len(t['counts'])} "
                             f"counts for {n} items); rerun `recsys-llm hybrid`")
        matrix = sp.csr_matrix((t["data"], t["indices"], t["indptr"]), shape=(n, n))
        return cls(matrix, t["counts"], meta.get("name", "?"))




def _prune_columns(dense_or_sparse, keep: int) -> sp.csr_matrix:
    """Keep the ``keep`` largest entries of each column (ties: lower row), drop zeros; float32 CSR."""
    m = sp.csc_matrix(dense_or_sparse, dtype=np.float32)
    m.eliminate_zeros()
    n = m.shape[1]
    data, rows, cols = [], [], []
    for i in range(n):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        v, r = m.data[lo:hi], m.indices[lo:hi]
        if len(v) > keep:
            top = np.lexsort((r, -v))[:keep]
            v, r = v[top], r[top]
        data.append(v)
        rows.append(r)
        cols.append(np.full(len(v), i, dtype=np.int64))
    out = sp.csr_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=m.shape)
    return out.astype(np.float32)


def fit_collaborative(name: str, train: pd.DataFrame, n_users: int, n_items: int,
                      keep: int = 200, fitted: EASE | ItemKNN | None = None) -> CollaborativeScorer:
    """Fit EASE or ItemKNN on ``train`` (or take ``fitted``, one already fitted on it) and keep its item-item
    matrix sparse.

    Args:
        name: ``ease`` or ``itemknn``.
        train: canonical interactions (int ``user``, ``item``).
        keep: entries kept per item column (the rest contribute little to a top-k); a catalog of at most
            ``FULL_UP_TO`` items keeps every entry (pruning to 200 cost recency EASE 7% of its validation NDCG@10
            on the 3.7k-item demo catalog).
        fitted: a model of kind ``name`` fitted on ``train`` (e.g. the one tuned on validation); default: the
            library's default setting is fitted here.

    Raises:
        ValueError: unknown ``name``, ``fitted`` of another kind; the model's own input checks.
    """
    if name not in CF_MODELS:
        raise ValueError(f"unknown collaborative model {name!r}; choose one of {', '.join(CF_MODELS)}")
    kind = EASE if name == "ease" else ItemKNN
    if fitted is not None and not isinstance(fitted, kind):
        raise ValueError(f"collaborative model {name!r} given a fitted {type(fitted).__name__}")
    model = fitted if fitted is not None else kind().fit(train, n_users, n_items)
    raw = model.weights_ if isinstance(model, EASE) else model.similarity_  # (items, items) S[h, i]
    counts = np.bincount(train["item"].to_numpy(dtype=np.int64), minlength=n_items)[:n_items]
    matrix = _prune_columns(raw, n_items if n_items <= FULL_UP_TO else keep)
    logger.info("collaborative %s: %d x %d, %d entries kept (<= %d per item)", name, n_items, n_items,
                matrix.nnz, keep)
    return CollaborativeScorer(matrix, counts.astype(np.int64), name)
