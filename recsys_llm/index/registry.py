"""The backend registry: every index kind, and loading a saved index of any kind.

:mod:`recsys_llm.index.base` defines the interface and never imports a backend; each backend imports the base;
this module sits above them all, so there is no import circle. A new backend is one class with a unique
``kind`` and one entry in :data:`BACKENDS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recsys_llm.index.base import INFO_FILE, IndexMismatchError, VectorIndex, mismatches
from recsys_llm.index.exact import ExactIndex
from recsys_llm.index.faiss_index import FaissIndex
from recsys_llm.index.milvus_index import MilvusIndex
from recsys_llm.io_utils import load_json

BACKENDS: dict[str, type[VectorIndex]] = {cls.kind: cls for cls in (ExactIndex, FaissIndex, MilvusIndex)}
"""Backends by their ``kind`` as written in ``index.json`` (Milvus imports pymilvus only when it runs)."""


def index_classes() -> dict[str, type[VectorIndex]]:
    """A copy of :data:`BACKENDS`."""
    return dict(BACKENDS)


def load_index(folder: str | Path, expected: Mapping[str, Any] | None = None, **kwargs) -> VectorIndex:
    """Load a saved index; with ``expected`` (e.g. ``{"dim": 384, "metadata": {"encoder": ...}}``) refuse
    one built differently. Extra ``kwargs`` go to the backend (``use_gpu`` for FAISS, ``uri`` for Milvus).

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
        bad = mismatches(expected, info)
        if bad:
            raise IndexMismatchError(f"{folder} was built for other embeddings: " + "; ".join(bad)
                                     + ". Rebuild it (`recsys-llm index build`) from the current embeddings")
    index = classes[info["kind"]]._read(folder, info, **kwargs)
    index.metadata = dict(info.get("metadata") or {})
    if index.snapshot and index.ntotal != info["ntotal"]:
        raise ValueError(f"{folder}: the index holds {index.ntotal} items but {INFO_FILE} says "
                         f"{info['ntotal']}; the folder is damaged, rebuild the index")
    return index
