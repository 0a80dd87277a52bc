"""Sparse matrices of the hybrid (collaborative item-item, text neighbours, BM25) as safetensors files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from safetensors import safe_open
from safetensors.numpy import save_file

from recsys_llm.io_utils import atomic_path


def save_sparse(path: Path, matrix: sp.csr_matrix, extra: dict[str, np.ndarray] | None = None,
                metadata: dict[str, str] | None = None) -> None:
    """A CSR matrix as ``indptr``/``indices`` (int64) and ``data`` (float32) safetensors, atomically."""
    m = matrix.tocsr()
    tensors = {"indptr": m.indptr.astype(np.int64), "indices": m.indices.astype(np.int64),
               "data": m.data.astype(np.float32), **(extra or {})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_sparse(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor of a :func:`save_sparse` file, and its metadata."""
    with safe_open(str(path), framework="numpy") as f:
        names = list(f.keys())  # a safetensors handle, not a dict: keys() lists its tensors
        return {k: f.get_tensor(k) for k in names}, f.metadata() or {}
