"""FAISS inner-product index from a factory string, on GPU when faiss reports one, CPU otherwise.

The FAISS index stores vectors at positions ``0..n-1``; the item-id map lives in :class:`VectorIndex`
(``ids.npy``), which works the same for every factory string and on GPU, where ``IndexIDMap`` is not
available for all index types. Trainable indexes (IVF, PQ) are trained on the first batch added.

Example:
    >>> import numpy as np
    >>> idx = FaissIndex(4, factory="Flat", use_gpu="no")
    >>> idx.add(np.eye(4), ids=[7, 8, 9, 10])
    >>> idx.search(np.eye(4)[:1], k=2, exclude=[[7]])[1][0, 0] != 7
    True
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recsys_llm.index.base import VectorIndex

logger = logging.getLogger(__name__)

FAISS_FILE = "index.faiss"


def faiss_gpus() -> int:
    """Number of GPUs faiss can use (0 with faiss-cpu)."""
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _want_gpu(use_gpu: str) -> bool:
    if use_gpu not in ("auto", "yes", "no"):
        raise ValueError(f"use_gpu={use_gpu!r}: choose auto, yes or no")
    n = faiss_gpus() if use_gpu != "no" else 0
    if use_gpu == "yes" and n == 0:
        raise RuntimeError("use_gpu='yes' but faiss reports no GPU; install the `gpu` extra (faiss-gpu) on a "
                           "CUDA machine, or set index.use_gpu=auto")
    return n > 0


class FaissIndex(VectorIndex):
    """A FAISS index built with ``faiss.index_factory(dim, factory, METRIC_INNER_PRODUCT)``."""

    kind = "faiss"

    def __init__(self, dim: int, factory: str = "Flat", use_gpu: str = "auto", metadata=None) -> None:
        import faiss

        super().__init__(dim, metadata)
        self.factory = factory
        try:
            cpu = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise ValueError(f"FAISS factory string {factory!r} is not valid for dim {self.dim}: "
                             f"{str(e).splitlines()[-1]}") from e
        self._index = self._to_device(cpu, use_gpu)

    def _to_device(self, cpu_index, use_gpu: str):
        import faiss

        self.on_gpu = _want_gpu(use_gpu)
        if not self.on_gpu:
            return cpu_index
        logger.info("FAISS index on %d GPU(s)", faiss_gpus())
        return faiss.index_cpu_to_all_gpus(cpu_index)

    def params(self) -> dict:
        return {"factory": self.factory}

    def _add(self, vectors: np.ndarray) -> None:
        if not self._index.is_trained:
            logger.info("training FAISS %s on %d vectors", self.factory, len(vectors))
            try:
                self._index.train(vectors)
            except RuntimeError as e:
                raise ValueError(f"FAISS {self.factory} could not be trained on {len(vectors)} vectors "
                                 f"({str(e).splitlines()[-1]}); add more items or use factory 'Flat'") from e
        self._index.add(vectors)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, pos = self._index.search(queries, k)
        return scores.astype(np.float32, copy=False), pos.astype(np.int64, copy=False)

    def _cpu_index(self):
        import faiss

        return faiss.index_gpu_to_cpu(self._index) if self.on_gpu else self._index

    def _write(self, folder: Path) -> None:
        import faiss

        faiss.write_index(self._cpu_index(), str(folder / FAISS_FILE))

    @classmethod
    def _read(cls, folder: Path, info: dict, use_gpu: str = "auto") -> FaissIndex:
        import faiss

        index = cls.__new__(cls)
        VectorIndex.__init__(index, info["dim"])
        index.factory = info["params"]["factory"]
        cpu = faiss.read_index(str(folder / FAISS_FILE))
        if cpu.d != index.dim or cpu.ntotal != info["ntotal"]:
            raise ValueError(f"{folder / FAISS_FILE}: holds {cpu.ntotal} vectors of dim {cpu.d}, index.json says "
                             f"{info['ntotal']} of dim {index.dim}; the folder is damaged, rebuild the index")
        index._index = index._to_device(cpu, use_gpu)
        return index
