"""External ids <-> contiguous int64: the only place ids are remapped.

External ids are kept as strings (``"1"``, ``"tt0114709"``, ...) so that ``1`` and ``"1"`` from different file
formats map to the same item. Internal ids are ``0..n-1`` in sorted external-id order (numeric order when
every id is an integer), so the mapping is deterministic whatever the row order of the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd


def normalise_external(values: pd.Series) -> pd.Series:
    """Render external ids as strings; integral floats (``1.0`` from a CSV with gaps) become ``"1"``."""
    if pd.api.types.is_float_dtype(values) and np.all(np.isfinite(values)) and np.all(values == np.floor(values)):
        values = values.astype(np.int64)
    return values.astype(str).str.strip()


@dataclass(frozen=True)
class IdMap:
    """Bidirectional map between external string ids and internal ``int64`` ids ``0..n-1``."""

    external: np.ndarray  # (n,) object array of str, position = internal id

    @classmethod
    def fit(cls, external_ids: pd.Series) -> IdMap:
        uniq = pd.unique(normalise_external(external_ids))
        try:
            order = np.argsort(np.asarray([int(u) for u in uniq], dtype=np.int64), kind="stable")
        except ValueError:
            order = np.argsort(np.asarray(uniq, dtype=object).astype(str), kind="stable")
        return cls(np.asarray(uniq, dtype=object)[order])

    def __len__(self) -> int:
        return len(self.external)

    def to_internal(self, external_ids: pd.Series) -> np.ndarray:
        """Map external ids to internal ids; unknown ids become -1 (callers decide: raise or drop)."""
        return self._index.get_indexer(normalise_external(pd.Series(external_ids))).astype(np.int64)

    def lookup(self, external_id: str) -> int:
        """Internal id of one external id given as a string (-1 when unknown): a dict lookup, for serving
        one request at a time (:meth:`to_internal` builds pandas objects, ~1 ms a call)."""
        return self._dict.get(str(external_id).strip(), -1)

    @cached_property
    def _dict(self) -> dict[str, int]:
        return {str(x): i for i, x in enumerate(self.external.tolist())}

    @cached_property
    def _index(self) -> pd.Index:
        """The lookup table, built on first use (the map never changes; a frozen dataclass)."""
        return pd.Index(self.external)

    def to_external(self, internal_ids: np.ndarray) -> np.ndarray:
        return self.external[np.asarray(internal_ids, dtype=np.int64)]


def extend_ids(existing: IdMap, new_external: pd.Series) -> tuple[IdMap, np.ndarray]:
    """Append new external ids after the existing ones (cold-start items keep every old id stable).

    Returns:
        The extended map and the new internal ids (``len(existing) .. len(existing)+m-1``).

    Raises:
        ValueError: a new id already exists, or appears twice among the new ones (both named).
    """
    new = normalise_external(pd.Series(new_external)).to_numpy(dtype=object)
    dup_new = pd.Series(new)[pd.Series(new).duplicated()].tolist()
    if dup_new:
        raise ValueError(f"new ids repeated: {dup_new[:5]}; each new item needs a unique item_id")
    clash = [x for x in new if x in set(existing.external.tolist())]
    if clash:
        raise ValueError(f"item ids already in the catalog: {clash[:5]}; use new ids (updating items is not supported yet)")
    ids = np.arange(len(existing), len(existing) + len(new), dtype=np.int64)
    return IdMap(np.concatenate([existing.external, new])), ids
