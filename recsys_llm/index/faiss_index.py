"""FAISS inner-product index from a factory string, on CPU or on one or all GPUs.

Any FAISS factory string works; the ones we document and test are ``Flat`` (exact), ``IVF{nlist},Flat``,
``IVF{nlist},SQ8``, ``IVF{nlist},PQ{m}`` (optionally ``OPQ{m},IVF{nlist},PQ{m}``), ``SQ8``, ``PQ{m}`` and
``HNSW{M}``, IVF with an HNSW coarse quantizer (``IVF{nlist}_HNSW32,Flat``) and an exact re-ranking stage
on top of any of them, e.g. ``IVF{nlist},SQ8,RFlat`` (FAISS ``IndexRefineFlat``: the first stage fetches
``k_factor * k`` candidates from its compact codes, float32 copies of the vectors rank them exactly).
:func:`recsys_llm.index.choose.auto_factory` picks one by catalog size and memory budget.

How ids and updates work (nothing here rebuilds the index):

* IVF indexes store the item ids themselves (``add_with_ids``); flat-code indexes (Flat, SQ8, PQ) are
  wrapped in ``IndexIDMap``. Both remove physically with ``remove_ids`` and an ``IDSelectorBatch`` (a hash
  lookup per stored vector, not the O(n * m) scan of ``IDSelectorArray`` that makes naive removal slow).
* HNSW and refine indexes cannot remove. Their labels are positions, mapped to item ids here; a removed
  item becomes a tombstone that searches skip through an ``IDSelectorBitmap`` (exactly ``k`` live results, no over-fetch),
  and :meth:`FaissIndex.compact` rebuilds the graph from the live vectors once tombstones pass
  ``compact_at`` (a fraction of the live count).
* The master copy is always on the CPU (it is what is saved). With ``use_gpu`` it is cloned to the GPU(s)
  for search — sharded over all GPUs by default, float16 storage optional — and re-cloned lazily on the next
  search after an update. FAISS GPU searches take ``k <= 2048``; deeper searches run on the CPU copy.
* Trainable indexes (IVF, PQ, SQ) are trained on the first batch added (or an explicit :meth:`train`), on a
  seeded random sample of at most ``train_sample`` vectors (default: 64 per IVF list, at least 10,000).

Search parameters (``nprobe`` for IVF, ``ef_search`` for HNSW, ``k_factor`` for refine) are set with
:meth:`set_search_params`, saved in ``index.json`` and applied again on load; :func:`recsys_llm.index.tuning.tune` finds the smallest
setting that reaches a target recall against exact search.

Example:
    >>> import numpy as np
    >>> idx = FaissIndex(4, factory="Flat", use_gpu="no")
    >>> idx.add(np.eye(4), ids=[7, 8, 9, 10])
    >>> int(idx.search(np.eye(4)[:1], k=2, exclude=[[7]])[1][0, 0]) != 7
    True
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recsys_llm.index.base import InProcessIndex, LocalIds, VectorIndex
from recsys_llm.index.convert import as_vectors
from recsys_llm.io_utils import atomic_save_npy, load_npy

logger = logging.getLogger(__name__)

FAISS_FILE = "index.faiss"
SLOTS_FILE = "slots.npy"
GPU_MAX_K = 2048  # faiss GPU top-k limit
QUANTIZER_EF = 64  # HNSW coarse quantizer: efSearch = max(this, 2 nprobe)
FORMAT = 2  # 1 (recsys-llm <= 0.1 before updates): labels were positions; such folders must be rebuilt


def faiss_gpus() -> int:
    """Number of GPUs faiss can use (0 with faiss-cpu)."""
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _want_gpu(use_gpu: str) -> bool:
    if use_gpu not in ("auto", "yes", "no"):
        raise ValueError(f"use_gpu={use_gpu!r}: choose auto, yes or no")
    n = faiss_gpus() if use_gpu != "no" else 0
    if use_gpu == "yes" and n == 0:
        raise RuntimeError("use_gpu='yes' but faiss reports no GPU; install the `gpu` extra (faiss-gpu) on a "
                           "CUDA machine, or set index.use_gpu=auto")
    return n > 0


def _find(index, cls_name: str):
    """The first index of FAISS class ``cls_name`` inside wrappers (IDMap, PreTransform), or None."""

    cls = getattr(faiss, cls_name)
    while index is not None:
        index = faiss.downcast_index(index)
        if isinstance(index, cls):
            return index
        # IndexPreTransform / IndexIDMap hold the next one in .index, IndexRefine in .base_index
        index = getattr(index, "index", None) or getattr(index, "base_index", None)
    return None


def nlist_of(factory: str, dim: int = 8) -> int | None:
    """The number of IVF lists a factory string asks for (None when it is not IVF)."""

    ivf = _find(faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT), "IndexIVF")
    return int(ivf.nlist) if ivf is not None else None


def _new_faiss(dim: int, factory: str):
    """``faiss.index_factory`` for inner product, with a clear error and polysemous PQ training off (the
    factory turns it on; it makes training ~30x slower and only serves Hamming-filtered search, unused here)."""

    try:
        cpu = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ValueError(f"FAISS factory string {factory!r} is not valid for dim {dim}: "
                         f"{str(e).splitlines()[-1]}") from e
    for name in ("IndexPQ", "IndexIVFPQ"):
        pq = _find(cpu, name)
        if pq is not None:
            pq.do_polysemous_training = False
    return cpu


class FaissIndex(InProcessIndex):
    """A FAISS index built with ``faiss.index_factory(dim, factory, METRIC_INNER_PRODUCT)``.

    Args:
        dim: vector dimension.
        factory: FAISS factory string (see the module docstring).
        use_gpu: ``auto`` (GPU when faiss reports one and the index type runs there), ``yes`` or ``no``.
        nprobe: IVF lists visited per query (default FAISS's 1; tune it).
        ef_search: HNSW candidate list size (default FAISS's 16; tune it).
        k_factor: refine indexes (``...,RFlat``): candidates re-ranked exactly, as a multiple of k (default 1).
        train_sample: most vectors used to train IVF/PQ/SQ (seeded random sample).
        float16: store vectors as float16 on the GPU (half the memory, tiny score error).
        shard: with several GPUs, split the items over them (True) or replicate the index on each (False).
        num_gpus: use the first ``num_gpus`` GPUs (None: all).
        compact_at: HNSW only: rebuild once tombstones exceed this fraction of the live items.
        seed: sampling seed for training.
    """

    kind = "faiss"

    def __init__(self, dim: int, factory: str = "Flat", use_gpu: str = "auto", metadata=None, *,
                 nprobe: int | None = None, ef_search: int | None = None, k_factor: int | None = None,
                 train_sample: int | None = None, train_iters: int | None = None,
                 float16: bool = False, shard: bool = True, num_gpus: int | None = None,
                 compact_at: float = 0.25, seed: int = 0) -> None:
        super().__init__(dim, metadata)
        self.factory = factory
        cpu = _new_faiss(self.dim, factory)
        if train_sample is not None and train_sample < 1:
            raise ValueError(f"train_sample={train_sample}: must be a positive number of vectors")
        if train_iters is not None and train_iters < 1:
            raise ValueError(f"train_iters={train_iters}: must be a positive number of k-means iterations")
        self.train_sample, self.train_iters = train_sample, train_iters
        self.seed, self.compact_at = seed, compact_at
        self.float16, self.shard, self.num_gpus = bool(float16), bool(shard), num_gpus
        self.use_gpu = use_gpu
        self._init_storage(cpu)
        self.nprobe: int | None = None
        self.ef_search: int | None = None
        self.k_factor: int | None = None
        self.set_search_params(nprobe=nprobe, ef_search=ef_search, k_factor=k_factor)
        self._record_search_defaults()
        self.on_gpu = _want_gpu(use_gpu) and self._gpu_capable(use_gpu)

    # --- storage -------------------------------------------------------------------------------------
    def _init_storage(self, cpu) -> None:
        self._ivf = _find(cpu, "IndexIVF")
        self._hnsw = _find(cpu, "IndexHNSW")
        self._refine = _find(cpu, "IndexRefine")
        # HNSW and IndexRefine cannot remove_ids (and refine's labels must be positions): tombstones
        self.tombstones = self._refine is not None or (self._ivf is None and self._hnsw is not None)
        if not self.tombstones and self._ivf is None and not isinstance(faiss.downcast_index(cpu), faiss.IndexIDMap):
            cpu = faiss.IndexIDMap(cpu)
        self._cpu = cpu
        self._idset = LocalIds()
        self._slots = np.empty(0, dtype=np.int64)  # tombstone mode: position -> item id, -1 = removed
        self._gpu: Any = None

    def _gpu_capable(self, use_gpu: str) -> bool:
        if self.tombstones:
            msg = f"FAISS {self.factory} has no GPU implementation"
            if use_gpu == "yes":
                raise ValueError(msg + "; use a Flat or IVF factory on the GPU, or set use_gpu=no")
            logger.warning("%s; searching on the CPU", msg)
            return False
        return True

    def _search_index(self, k: int):
        """The index to search: the GPU clone (made again after updates) or the CPU master."""
        if not self.on_gpu or k > GPU_MAX_K:
            return self._cpu
        if self._gpu is None:
            co = faiss.GpuMultipleClonerOptions()
            co.shard, co.useFloat16 = self.shard, self.float16
            ngpu = self.num_gpus or faiss_gpus()
            try:
                self._gpu = faiss.index_cpu_to_all_gpus(self._cpu, co=co, ngpu=ngpu)
            except RuntimeError as e:
                if self.use_gpu == "yes":
                    raise ValueError(f"FAISS {self.factory} cannot move to the GPU: {str(e).splitlines()[-1]}") from e
                logger.warning("FAISS %s stays on the CPU: %s", self.factory, str(e).splitlines()[-1])
                self.on_gpu = False
                return self._cpu
            self._apply_search_params(self._gpu, gpu=True)
            logger.info("FAISS %s on %d GPU(s) (%s, float16=%s)", self.factory, ngpu,
                        "sharded" if self.shard else "replicated", self.float16)
        return self._gpu

    # --- search parameters ---------------------------------------------------------------------------
    @property
    def nlist(self) -> int | None:
        return int(self._ivf.nlist) if self._ivf is not None else None

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None,
                          k_factor: int | None = None) -> None:
        """Set ``nprobe`` (IVF), ``ef_search`` (HNSW), ``k_factor`` (refine); one it lacks is an error."""
        for name, value, ok, kind in (("nprobe", nprobe, self._ivf is not None, "IVF"),
                                      ("ef_search", ef_search, self._hnsw is not None, "HNSW"),
                                      ("k_factor", k_factor, self._refine is not None, "refine (',RFlat')")):
            if value is None:
                continue
            if not ok:
                raise ValueError(f"{name} does not apply to FAISS {self.factory!r} ({kind} indexes only)")
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}={value!r}: must be a positive integer")
        if nprobe is not None:
            self.nprobe = min(int(nprobe), self.nlist or int(nprobe))
        if ef_search is not None:
            self.ef_search = int(ef_search)
        if k_factor is not None:
            self.k_factor = int(k_factor)
        self._apply_search_params(self._cpu, gpu=False)
        if self._gpu is not None:
            self._apply_search_params(self._gpu, gpu=True)

    def _record_search_defaults(self) -> None:
        """Parameters left unset take FAISS's defaults; record those, so params() says what searches use."""
        if self.nprobe is None and self._ivf is not None:
            self.nprobe = int(self._ivf.nprobe)
        if self.ef_search is None and self._hnsw is not None:
            self.ef_search = int(self._hnsw.hnsw.efSearch)
        if self.k_factor is None and self._refine is not None:
            self.k_factor = int(self._refine.k_factor)

    def _apply_search_params(self, index, gpu: bool) -> None:
        space = faiss.GpuParameterSpace() if gpu else faiss.ParameterSpace()
        if self.nprobe is not None:
            space.set_index_parameter(index, "nprobe", self.nprobe)
            quantizer = faiss.downcast_index(self._ivf.quantizer) if not gpu else None
            if isinstance(quantizer, faiss.IndexHNSW):  # its default efSearch 16 misses near lists
                quantizer.hnsw.efSearch = max(QUANTIZER_EF, 2 * self.nprobe)
        if self.ef_search is not None and not gpu:
            space.set_index_parameter(index, "efSearch", self.ef_search)
        if self.k_factor is not None and not gpu:
            self._refine.k_factor = float(self.k_factor)

    def params(self) -> dict[str, Any]:
        return {"format": FORMAT, "factory": self.factory, "nlist": self.nlist, "nprobe": self.nprobe,
                "ef_search": self.ef_search, "k_factor": self.k_factor, "train_sample": self.train_sample,
                "train_iters": self.train_iters, "seed": self.seed, "float16": self.float16,
                "shard": self.shard, "compact_at": self.compact_at,
                "tombstones": int((self._slots < 0).sum()) if self.tombstones else 0}

    # --- training ------------------------------------------------------------------------------------
    @property
    def is_trained(self) -> bool:
        return bool(self._cpu.is_trained)

    def default_train_sample(self) -> int:
        return max(10_000, 64 * (self.nlist or 0))

    def train(self, vectors) -> None:
        """Train IVF centroids / PQ or SQ codebooks on (a seeded sample of at most ``train_sample``) vectors."""
        vec = as_vectors(vectors, self.dim, "vectors")
        size = self.train_sample or self.default_train_sample()
        if len(vec) > size:
            rows = np.sort(np.random.default_rng(self.seed).choice(len(vec), size, replace=False))
            vec = vec[rows]
        if self.nlist and len(vec) < 39 * self.nlist:
            logger.warning("training %d IVF lists on %d vectors; FAISS wants >= %d (39 per list) for good "
                           "centroids: add more items or use a smaller nlist", self.nlist, len(vec), 39 * self.nlist)
        if self.train_iters and self._ivf is not None:
            self._ivf.cp.niter = self.train_iters
        logger.info("training FAISS %s on %d vectors", self.factory, len(vec))
        try:
            self._cpu.train(vec)
        except RuntimeError as e:
            need = max(self.nlist or 1, 256 if "PQ" in self.factory or "SQ" in self.factory else 1)
            raise ValueError(f"FAISS {self.factory} could not be trained on {len(vec)} vectors "
                             f"({str(e).splitlines()[-1]}); it needs at least ~{need}: add more items, "
                             "use a smaller nlist, or use factory 'Flat'") from e
        self._gpu = None

    # --- hooks ---------------------------------------------------------------------------------------
    def _add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if not self._cpu.is_trained:
            self.train(vectors)
        if self.tombstones:
            self._cpu.add(vectors)  # labels are positions
            self._slots = np.concatenate([self._slots, ids])
        else:
            self._cpu.add_with_ids(vectors, ids)
        self._idset.append(ids)
        self._gpu = None

    def _remove(self, ids: np.ndarray) -> None:
        if self.tombstones:
            self._slots[np.isin(self._slots, ids)] = -1
        else:
            removed = self._cpu.remove_ids(faiss.IDSelectorBatch(ids))
            if removed != len(ids):
                raise RuntimeError(f"FAISS removed {removed} of {len(ids)} ids; the index and its id map "
                                   "disagree, rebuild the index")
        self._idset.keep(~self._idset.position_mask(ids))
        self._gpu = None
        if self.tombstones and (self._slots < 0).sum() > self.compact_at * max(self.ntotal, 1):
            self.compact()

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.tombstones:
            scores, ids = self._search_index(k).search(queries, k)
            if (ids < 0).any():  # too few results (e.g. small nprobe): FAISS pads with -FLT_MAX; we use -inf
                scores[ids < 0] = -np.inf
            return scores, ids
        params = None
        dead = self._slots < 0
        if dead.any():
            self._live_bits = np.packbits(~dead, bitorder="little")  # kept alive while faiss reads it
            params = self._tombstone_params(faiss.IDSelectorBitmap(len(dead), faiss.swig_ptr(self._live_bits)))
        scores, pos = self._cpu.search(queries, k, params=params)
        scores[pos < 0] = -np.inf
        return scores, np.where(pos >= 0, self._slots[np.clip(pos, 0, None)], -1)

    def _tombstone_params(self, sel):
        """Search parameters that skip tombstones: the selector goes to the stage that produces candidates."""
        if self._refine is None:
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
            params.efSearch = self.ef_search or self._hnsw.hnsw.efSearch
            params.sel = sel
            return params
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = float(self.k_factor or 1)
        if self._ivf is not None:
            base = faiss.SearchParametersIVF()
            base.nprobe = self.nprobe or self._ivf.nprobe
        else:
            base = faiss.SearchParametersHNSW() if self._hnsw is not None else faiss.SearchParameters()
            if self._hnsw is not None:
                base.efSearch = self.ef_search or self._hnsw.hnsw.efSearch
        base.sel = sel
        params.base_index_params = base
        self._params_alive = (base, sel)  # SWIG does not keep them alive through params
        return params

    def compact(self) -> None:
        """HNSW: rebuild without tombstones (same factory, parameters and ids); other types: nothing to do."""
        if not self.tombstones or not (self._slots < 0).any():
            return
        live = self._slots >= 0
        vectors = self._cpu.reconstruct_n(0, self._cpu.ntotal)[live]
        ids = self._slots[live]
        order = self._idset.ids
        logger.info("compacting FAISS %s: %d live items, %d tombstones", self.factory, len(ids), (~live).sum())
        self._init_storage(_new_faiss(self.dim, self.factory))
        self.set_search_params(nprobe=self.nprobe, ef_search=self.ef_search, k_factor=self.k_factor)
        if len(ids):
            self._add(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self._idset = LocalIds(order)

    # --- persistence ---------------------------------------------------------------------------------
    def serialized_bytes(self) -> int:
        """Size of the FAISS index as saved (bytes), id map included."""
        return int(faiss.serialize_index(self._cpu).nbytes) + 8 * self.ntotal

    def _write(self, folder: Path) -> None:
        faiss.write_index(self._cpu, str(folder / FAISS_FILE))
        self._idset.save(folder)
        if self.tombstones:
            atomic_save_npy(folder / SLOTS_FILE, self._slots)

    @classmethod
    def _read(cls, folder: Path, info: dict, use_gpu: str = "auto", **_: Any) -> FaissIndex:
        p = info["params"]
        if p.get("format") != FORMAT:
            raise ValueError(f"{folder}: saved by an older recsys-llm (index format {p.get('format', 1)}, this "
                             f"version reads {FORMAT}); rebuild it with `recsys-llm index build`")
        index = cls.__new__(cls)
        VectorIndex.__init__(index, info["dim"])
        index.factory = p["factory"]
        index.train_sample, index.train_iters = p.get("train_sample"), p.get("train_iters")
        index.seed = p.get("seed", 0)
        index.compact_at = p.get("compact_at", 0.25)
        index.float16, index.shard, index.num_gpus = p.get("float16", False), p.get("shard", True), None
        index.use_gpu = use_gpu
        cpu = faiss.read_index(str(folder / FAISS_FILE))
        index._init_storage(cpu)
        index._idset = LocalIds.load(folder, info["ntotal"])
        if index.tombstones:
            index._slots = load_npy(folder / SLOTS_FILE).astype(np.int64)
        stored = len(index._slots) if index.tombstones else len(index._idset)
        if cpu.d != index.dim or cpu.ntotal != stored:
            raise ValueError(f"{folder / FAISS_FILE}: holds {cpu.ntotal} vectors of dim {cpu.d}, the id map "
                             f"{stored} of dim {index.dim}; the folder is damaged, rebuild the index")
        index.nprobe = index.ef_search = index.k_factor = None
        index.set_search_params(nprobe=p.get("nprobe"), ef_search=p.get("ef_search"),
                                k_factor=p.get("k_factor"))
        index._record_search_defaults()
        index.on_gpu = _want_gpu(use_gpu) and index._gpu_capable(use_gpu)
        return index
