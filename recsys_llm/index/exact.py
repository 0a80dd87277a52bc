"""Exact brute-force inner-product search in numpy: the reference every approximate index is checked against.

Example:
    >>> import numpy as np
    >>> idx = ExactIndex(2)
    >>> idx.add(np.eye(2), ids=[5, 6])
    >>> idx.search(np.array([[0.0, 1.0]]), k=1)[1].tolist()
    [[6]]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys_llm.baselines import rank_items
from recsys_llm.index.base import InProcessIndex, LocalIds
from recsys_llm.io_utils import atomic_save_npy, load_npy

VECTORS_FILE = "vectors.npy"


class ExactIndex(InProcessIndex):
    """All vectors in one float32 matrix; search is one matrix product per batch of queries."""

    kind = "exact"

    def __init__(self, dim: int, metadata=None, batch_size: int = 1024) -> None:
        super().__init__(dim, metadata)
        self.batch_size = batch_size
        self._vectors = np.empty((0, self.dim), dtype=np.float32)
        self._idset = LocalIds()

    def _add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self._vectors = np.concatenate([self._vectors, vectors])
        self._idset.append(ids)

    def _remove(self, ids: np.ndarray) -> None:
        keep = ~self._idset.position_mask(ids)
        self._vectors = self._vectors[keep]
        self._idset.keep(keep)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, pos = [], []
        for start in range(0, len(queries), self.batch_size):
            s, p = rank_items(queries[start : start + self.batch_size] @ self._vectors.T, k)  # (b, n) -> (b, k)
            scores.append(s)
            pos.append(p)
        return np.concatenate(scores).astype(np.float32), self._idset.ids[np.concatenate(pos)]

    def _write(self, folder: Path) -> None:
        atomic_save_npy(folder / VECTORS_FILE, self._vectors)
        self._idset.save(folder)

    @classmethod
    def _read(cls, folder: Path, info: dict, **_: object) -> ExactIndex:
        index = cls(info["dim"])
        index._vectors = load_npy(folder / VECTORS_FILE).astype(np.float32)
        index._idset = LocalIds.load(folder, len(index._vectors))
        return index
