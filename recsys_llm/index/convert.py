"""The one numpy boundary of the index layer: vectors and ids are checked and converted here, once.

FAISS wants float32, C-contiguous ``(n, d)`` vectors and int64 ids; anything else is either converted (float64,
non-contiguous, a list) or refused with a ``ValueError`` that names the argument, the shape/dtype it got and
what to do (NaN/inf, wrong dimension, duplicate or negative ids).

Example:
    >>> import numpy as np
    >>> as_vectors(np.ones((2, 3)), dim=3).dtype
    dtype('float32')
    >>> as_ids([4, 2], n=2).tolist()
    [4, 2]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def as_vectors(x, dim: int | None = None, name: str = "vectors") -> np.ndarray:
    """``x`` as float32, C-contiguous ``(n, dim)``; a single vector ``(dim,)`` becomes ``(1, dim)``.

    Raises:
        ValueError: not numeric, not 1-D/2-D, wrong ``dim``, or containing NaN/inf.
    """
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as e:  # ragged lists
        raise ValueError(f"{name}: cannot be read as a numeric array ({e})") from e
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected shape (n, dim), got {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name}: dimension {arr.shape[1]} does not match the index dimension {dim}; "
                         "embed with the encoder the index was built from")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise ValueError(f"{name}: {len(bad)} row(s) contain NaN or inf (first: row {bad[0]})")
    return arr


def as_ids(ids, n: int, name: str = "ids") -> np.ndarray:
    """``ids`` as a 1-D int64 array of ``n`` distinct non-negative ids.

    Raises:
        ValueError: wrong length, not integers, negative, or duplicated.
    """
    arr = np.asarray(ids)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{name}: expected {n} ids (one per vector), got shape {arr.shape}")
    if n and arr.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected integer ids, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if n and arr.min() < 0:
        raise ValueError(f"{name}: ids must be >= 0 (-1 means 'missing' in results), got {arr.min()}")
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{name}: duplicate ids, e.g. {uniq[counts > 1][:5].tolist()}")
    return arr


def as_id_list(ids, name: str = "ids") -> np.ndarray:
    """Any number of item ids (a scalar, list or array) as a 1-D int64 array; duplicates are kept.

    Raises:
        ValueError: not integers.
    """
    arr = np.asarray(ids).reshape(-1)
    if len(arr) and arr.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected integer item ids, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def as_exclude(exclude: Sequence | None, n_queries: int) -> list[np.ndarray] | None:
    """Per-query arrays of ids to filter (``None`` = no filtering); checks there is one per query."""
    if exclude is None:
        return None
    if len(exclude) != n_queries:
        raise ValueError(f"exclude: one id array per query needed, got {len(exclude)} for {n_queries} queries")
    return [np.asarray(e, dtype=np.int64).reshape(-1) for e in exclude]


def check_k(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r}: must be a positive integer")
    return int(k)
