"""The retriever contract: inner-product search over item vectors keyed by int64 item ids.

One contract serves exact numpy search, FAISS on CPU or GPU and Milvus (Lite or a cluster). Backends store
vectors under the caller's item ids and implement a handful of hooks; everything a user touches is here,
so checks and behaviour are the same for every backend:

* :meth:`VectorIndex.add` adds new ids (an id already present is an error that says to use ``upsert``);
  :meth:`VectorIndex.upsert` adds or replaces; :meth:`VectorIndex.remove` deletes (unknown ids are an error
  unless ``missing="ignore"``). None of them rebuilds the index.
* :meth:`VectorIndex.search` over-fetches by the longest ``exclude`` list, drops excluded ids (the user's
  seen items) and returns exactly ``k`` columns in the faiss convention: scores descending, ``-1`` ids and
  ``-inf`` scores where fewer than ``k`` items remain (an empty index, or ``k`` larger than the index).
* Vectors and ids cross one boundary, :mod:`recsys_llm.index.convert`: float64 or non-contiguous input is
  converted once; NaN/inf, wrong dimension, duplicate or negative ids are ``ValueError`` naming the argument.

A saved index is a folder: ``index.json`` (kind, dim, metric, ntotal, build parameters and free ``metadata``
such as the encoder fingerprint) plus the backend's files, written to a temporary folder and renamed, so a
crash mid-save never damages the last good index. :func:`~recsys_llm.index.registry.load_index` refuses a folder whose ``index.json``
disagrees with what the caller expects (another encoder, another dimension).

Example:
    >>> import numpy as np
    >>> from recsys_llm.index.exact import ExactIndex
    >>> idx = ExactIndex(2)
    >>> idx.add(np.array([[1, 0], [0, 1], [0.7, 0.7]]), ids=[10, 11, 12])
    >>> scores, ids = idx.search(np.array([[1.0, 0.0]]), k=2, exclude=[[10]])
    >>> ids.tolist()
    [[12, 11]]
    >>> idx.remove([12])
    1
    >>> idx.search(np.array([[1.0, 0.0]]), k=2)[1].tolist()
    [[10, 11]]
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from recsys_llm.index.convert import as_exclude, as_id_list, as_ids, as_vectors, check_k
from recsys_llm.io_utils import atomic_dir, atomic_save_npy, atomic_write_json, load_npy

logger = logging.getLogger(__name__)

INFO_FILE = "index.json"
IDS_FILE = "ids.npy"
METRIC = "inner_product"


class IndexMismatchError(ValueError):
    """A saved index does not match the embeddings it is queried with."""


class VectorIndex(ABC):
    """Inner-product index keyed by item id. Subclasses implement the ``_`` hooks below.

    ``snapshot`` says what :meth:`save` means: ``True`` (exact, FAISS) writes every vector into the folder, so
    the folder is a snapshot; ``False`` (Milvus) writes only a manifest, because the store persists each
    write itself.
    """

    kind: ClassVar[str]
    snapshot: ClassVar[bool] = True

    def __init__(self, dim: int, metadata: Mapping[str, Any] | None = None) -> None:
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"dim={dim!r}: must be a positive integer")
        self.dim = int(dim)
        self.metadata: dict[str, Any] = dict(metadata or {})

    # --- backend hooks -----------------------------------------------------------------------------------
    @property
    @abstractmethod
    def ntotal(self) -> int:
        """Number of items stored."""

    @abstractmethod
    def _contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of the (distinct) ``ids`` are stored."""

    @abstractmethod
    def _stored_ids(self) -> np.ndarray:
        """All stored ids, int64 (order is the backend's)."""

    @abstractmethod
    def _add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Store float32 ``(n, dim)`` vectors under ``n`` new ids."""

    @abstractmethod
    def _remove(self, ids: np.ndarray) -> None:
        """Delete ``ids`` (all stored)."""

    @abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, item ids)`` for float32 queries, ``-1`` ids where missing; ``k <= ntotal``."""

    @abstractmethod
    def _write(self, folder: Path) -> None:
        """Write the backend's files into ``folder`` (a fresh temporary folder)."""

    @classmethod
    @abstractmethod
    def _read(cls, folder: Path, info: dict, **kwargs: Any) -> VectorIndex:
        """Rebuild from ``folder`` and its ``index.json`` content (metadata is set by the caller)."""

    def params(self) -> dict[str, Any]:
        """Build and search parameters recorded in ``index.json``."""
        return {}

    # --- shared behaviour --------------------------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        """Stored item ids (a copy)."""
        return np.array(self._stored_ids(), dtype=np.int64)

    def contains(self, ids) -> np.ndarray:
        """Boolean mask: which of ``ids`` are in the index."""
        arr = as_id_list(ids, "ids")
        uniq, inverse = np.unique(arr, return_inverse=True)
        mask = self._contains(uniq) if self.ntotal and len(uniq) else np.zeros(len(uniq), dtype=bool)
        return mask[inverse]

    def add(self, vectors, ids) -> None:
        """Add ``(n, dim)`` vectors under ``n`` new, distinct int64 ids (use :meth:`upsert` to replace)."""
        vec = as_vectors(vectors, self.dim, "vectors")
        new = as_ids(ids, len(vec), "ids")
        if not len(vec):
            return
        clash = new[self.contains(new)]
        if len(clash):
            raise ValueError(f"ids already in the index: {clash[:5].tolist()}"
                             f"{' ...' if len(clash) > 5 else ''} ({len(clash)} in all); use upsert to replace "
                             "their vectors, or remove them first")
        self._add(vec, new)

    def upsert(self, vectors, ids) -> int:
        """Add new ids and replace the vectors of ids already present; returns how many were replaced."""
        vec = as_vectors(vectors, self.dim, "vectors")
        new = as_ids(ids, len(vec), "ids")
        if not len(vec):
            return 0
        present = new[self.contains(new)]
        if len(present):
            self._remove(present)
        self._add(vec, new)
        return len(present)

    def remove(self, ids, missing: str = "raise") -> int:
        """Delete ``ids``; returns how many were removed.

        Args:
            ids: item ids to delete.
            missing: ``"raise"`` (default) refuses ids that are not in the index, naming them, and removes
                nothing; ``"ignore"`` removes those present and skips the rest.
        """
        if missing not in ("raise", "ignore"):
            raise ValueError(f"missing={missing!r}: choose raise or ignore")
        arr = np.unique(as_id_list(ids, "ids"))
        mask = self.contains(arr)
        if missing == "raise" and not mask.all():
            absent = arr[~mask]
            raise ValueError(f"ids not in the index: {absent[:5].tolist()}{' ...' if len(absent) > 5 else ''} "
                             f"({len(absent)} in all); nothing removed. Pass missing='ignore' to skip them")
        if mask.any():
            self._remove(arr[mask])
        return int(mask.sum())

    def search(self, queries, k: int, exclude: Sequence | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items per query by inner product, excluding ``exclude[i]`` for query ``i``.

        Returns:
            ``(scores, ids)``: float32 and int64, both ``(n_queries, k)``, best first; ``-inf`` / ``-1``
            where fewer than ``k`` items remain after exclusion (k may exceed the index size).
        """
        q = as_vectors(queries, self.dim, "queries")
        k = check_k(k)
        excl = as_exclude(exclude, len(q))
        n = len(q)
        ntotal = self.ntotal
        if ntotal == 0 or n == 0:
            return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)
        extra = max((len(e) for e in excl), default=0) if excl else 0
        fetch = min(k + extra, ntotal)
        scores, ids = self._search(q, fetch)
        if not extra and fetch == k:  # the common case: nothing to filter or pad
            return scores, ids
        keep = ids >= 0
        if excl:
            for r, e in enumerate(excl):
                if len(e):
                    keep[r] &= ~np.isin(ids[r], e)
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept first, rank order preserved
        got = np.take_along_axis(keep, order, 1)
        width = order.shape[1]
        out_s = np.full((n, k), -np.inf, dtype=np.float32)
        out_i = np.full((n, k), -1, dtype=np.int64)
        out_s[:, :width] = np.where(got, np.take_along_axis(scores, order, 1), -np.inf)
        out_i[:, :width] = np.where(got, np.take_along_axis(ids, order, 1), -1)
        return out_s, out_i

    def info(self) -> dict[str, Any]:
        """What ``index.json`` records: kind, dim, metric, item count, parameters and metadata."""
        return {"kind": self.kind, "dim": self.dim, "metric": METRIC, "ntotal": self.ntotal,
                "params": self.params(), "metadata": self.metadata}

    def check(self, expected: Mapping[str, Any]) -> None:
        """Raise :class:`IndexMismatchError` where ``info()`` disagrees with ``expected`` (nested keys)."""
        bad = mismatches(expected, self.info())
        if bad:
            raise IndexMismatchError("the index was built for other embeddings: " + "; ".join(bad)
                                     + ". Rebuild it (`recsys-llm index build`) from the current embeddings")

    def save(self, folder: str | Path) -> None:
        """Write the index folder atomically: a crash mid-save leaves the last good index in place."""
        with atomic_dir(folder, carry_over=False) as tmp:
            self._write(tmp)
            atomic_write_json(tmp / INFO_FILE, self.info())
        logger.info("saved %s index (%d items, dim %d) to %s", self.kind, self.ntotal, self.dim, folder)


class LocalIds:
    """The id set of an in-process index: insertion-ordered ids plus a lazily sorted copy for lookups.

    Costs 16 bytes per item; membership is a binary search, so ``add``/``contains`` do not rescan the catalog.
    """

    def __init__(self, ids: np.ndarray | None = None) -> None:
        self.ids = np.empty(0, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        self._sorted: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        if self._sorted is None:
            self._sorted = np.sort(self.ids)
        pos = np.searchsorted(self._sorted, ids)
        return (pos < len(self._sorted)) & (self._sorted[np.minimum(pos, len(self._sorted) - 1)] == ids)

    def append(self, ids: np.ndarray) -> None:
        self.ids = np.concatenate([self.ids, ids])
        self._sorted = None

    def keep(self, mask: np.ndarray) -> None:
        self.ids = self.ids[mask]
        self._sorted = None

    def position_mask(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask over positions: True where the stored id is in ``ids``."""
        return np.isin(self.ids, ids)

    def save(self, folder: Path) -> None:
        atomic_save_npy(folder / IDS_FILE, self.ids)

    @classmethod
    def load(cls, folder: Path, ntotal: int) -> LocalIds:
        ids = load_npy(folder / IDS_FILE).astype(np.int64)
        if len(ids) != ntotal:
            raise ValueError(f"{folder}: {IDS_FILE} holds {len(ids)} ids but {INFO_FILE} says {ntotal}; "
                             "the folder is damaged, rebuild the index")
        return cls(ids)


class InProcessIndex(VectorIndex):
    """A backend whose id set lives in this process (:class:`LocalIds` in ``self._idset``)."""

    _idset: LocalIds

    @property
    def ntotal(self) -> int:
        return len(self._idset)

    def _contains(self, ids: np.ndarray) -> np.ndarray:
        return self._idset.contains(ids)

    def _stored_ids(self) -> np.ndarray:
        return self._idset.ids


def mismatches(expected: Mapping[str, Any], actual: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Keys of ``expected`` whose value differs in ``actual`` (nested mappings compared key by key)."""
    out = []
    for key, want in expected.items():
        have = actual.get(key) if isinstance(actual, Mapping) else None
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            out += mismatches(want, have, f"{prefix}{key}.")
        elif have != want:
            out.append(f"{prefix}{key}: index has {have!r}, expected {want!r}")
    return out
