"""The retriever contract: inner-product search over item vectors keyed by int64 item ids.

Every index stores vectors at positions ``0..n-1`` and keeps its own position -> item-id map, so the same
code serves exact search, FAISS on CPU or GPU, and later backends. :meth:`VectorIndex.search` is shared:
it over-fetches by the longest ``exclude`` list, drops excluded ids (the user's seen items) and returns
exactly ``k`` columns in the faiss convention: scores descending, ``-1`` ids and ``-inf`` scores where fewer
than ``k`` items remain.

A saved index is a folder: ``index.json`` (kind, dim, metric, ntotal, build parameters and free ``metadata``
such as the encoder fingerprint) plus the backend's files. :func:`load_index` refuses a folder whose
``index.json`` disagrees with what the caller expects (another encoder, another dimension).

Example:
    >>> import numpy as np
    >>> from recsys_llm.index.exact import ExactIndex
    >>> idx = ExactIndex(2)
    >>> idx.add(np.array([[1, 0], [0, 1], [0.7, 0.7]]), ids=[10, 11, 12])
    >>> scores, ids = idx.search(np.array([[1.0, 0.0]]), k=2, exclude=[[10]])
    >>> ids.tolist()
    [[12, 11]]
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from recsys_llm.index.convert import as_exclude, as_ids, as_vectors, check_k
from recsys_llm.io_utils import atomic_dir, atomic_save_npy, atomic_write_json, load_json, load_npy

logger = logging.getLogger(__name__)

INFO_FILE = "index.json"
IDS_FILE = "ids.npy"


class IndexMismatchError(ValueError):
    """A saved index does not match the embeddings it is queried with."""


class VectorIndex(ABC):
    """Inner-product index; subclasses implement ``_add``, ``_search``, ``_write`` and ``_read``."""

    kind: ClassVar[str]

    def __init__(self, dim: int, metadata: Mapping[str, Any] | None = None) -> None:
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim={dim!r}: must be a positive integer")
        self.dim = int(dim)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._ids = np.empty(0, dtype=np.int64)  # position -> item id

    # --- backend hooks -----------------------------------------------------------------------------------
    @abstractmethod
    def _add(self, vectors: np.ndarray) -> None:
        """Append float32 ``(n, dim)`` vectors at the next positions."""

    @abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, positions)`` for float32 queries, ``-1`` positions where missing."""

    @abstractmethod
    def _write(self, folder: Path) -> None:
        """Write the backend's files into ``folder`` (a fresh temporary folder)."""

    @classmethod
    @abstractmethod
    def _read(cls, folder: Path, info: dict, **kwargs: Any) -> VectorIndex:
        """Rebuild from ``folder`` and its ``index.json`` content (ids and metadata are set by the caller)."""

    def params(self) -> dict[str, Any]:
        """Build parameters recorded in ``index.json``."""
        return {}

    # --- shared behaviour --------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> np.ndarray:
        """Stored item ids, in insertion order (a copy)."""
        return self._ids.copy()

    def add(self, vectors, ids) -> None:
        """Add ``(n, dim)`` vectors under ``n`` new, distinct int64 ids."""
        vec = as_vectors(vectors, self.dim, "vectors")
        new = as_ids(ids, len(vec), "ids")
        clash = np.intersect1d(new, self._ids)
        if len(clash):
            raise ValueError(f"ids already in the index: {clash[:5].tolist()}; remove them first or use new ids")
        if len(vec):
            self._add(vec)
            self._ids = np.concatenate([self._ids, new])

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
        out_s = np.full((n, k), -np.inf, dtype=np.float32)
        out_i = np.full((n, k), -1, dtype=np.int64)
        if self.ntotal == 0 or n == 0:
            return out_s, out_i
        extra = max((len(e) for e in excl), default=0) if excl else 0
        fetch = min(k + extra, self.ntotal)
        scores, pos = self._search(q, fetch)
        ids = np.where(pos >= 0, self._ids[np.clip(pos, 0, None)], -1)  # (n, fetch)
        keep = ids >= 0
        if excl:
            for r, e in enumerate(excl):
                if len(e):
                    keep[r] &= ~np.isin(ids[r], e)
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept first, rank order preserved
        got = np.take_along_axis(keep, order, 1)
        width = order.shape[1]
        out_s[:, :width] = np.where(got, np.take_along_axis(scores, order, 1), -np.inf)
        out_i[:, :width] = np.where(got, np.take_along_axis(ids, order, 1), -1)
        return out_s, out_i

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "metric": "inner_product", "ntotal": self.ntotal,
                "params": self.params(), "metadata": self.metadata}

    def save(self, folder: str | Path) -> None:
        """Write the index folder atomically: a crash mid-save leaves the last good index in place."""
        with atomic_dir(folder, carry_over=False) as tmp:
            self._write(tmp)
            atomic_save_npy(tmp / IDS_FILE, self._ids)
            atomic_write_json(tmp / INFO_FILE, self.info())
        logger.info("saved %s index (%d items, dim %d) to %s", self.kind, self.ntotal, self.dim, folder)


def _mismatches(expected: Mapping[str, Any], actual: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Keys of ``expected`` whose value differs in ``actual`` (nested mappings compared key by key)."""
    out = []
    for key, want in expected.items():
        have = actual.get(key) if isinstance(actual, Mapping) else None
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            out += _mismatches(want, have, f"{prefix}{key}.")
        elif have != want:
            out.append(f"{prefix}{key}: index has {have!r}, expected {want!r}")
    return out


def index_classes() -> dict[str, type[VectorIndex]]:
    from recsys_llm.index.exact import ExactIndex
    from recsys_llm.index.faiss_index import FaissIndex

    return {cls.kind: cls for cls in (ExactIndex, FaissIndex)}


def load_index(folder: str | Path, expected: Mapping[str, Any] | None = None, **kwargs) -> VectorIndex:
    """Load a saved index; with ``expected`` (e.g. ``{"dim": 384, "metadata": {"encoder": ...}}``) refuse
    one built differently. Extra ``kwargs`` go to the backend (``use_gpu`` for FAISS).

    Raises:
        FileNotFoundError: no index at ``folder``.
        IndexMismatchError: ``index.json`` disagrees with ``expected``.
    """
    folder = Path(folder)
    if not (folder / INFO_FILE).is_file():
        raise FileNotFoundError(f"{folder}: no saved index here ({INFO_FILE} missing); build one first "
                                "(`recsys-llm index build`)")
    info = load_json(folder / INFO_FILE)
    classes = index_classes()
    if info.get("kind") not in classes:
        raise ValueError(f"{folder / INFO_FILE}: unknown index kind {info.get('kind')!r}; "
                         f"known: {', '.join(classes)}")
    if expected:
        bad = _mismatches(expected, info)
        if bad:
            raise IndexMismatchError(f"{folder} was built for other embeddings: " + "; ".join(bad)
                                     + ". Rebuild it (`recsys-llm index build`) from the current embeddings")
    index = classes[info["kind"]]._read(folder, info, **kwargs)
    index._ids = load_npy(folder / IDS_FILE).astype(np.int64)
    index.metadata = dict(info.get("metadata") or {})
    if len(index._ids) != info["ntotal"]:
        raise ValueError(f"{folder}: {IDS_FILE} holds {len(index._ids)} ids but {INFO_FILE} says "
                         f"{info['ntotal']}; the folder is damaged, rebuild the index")
    return index
