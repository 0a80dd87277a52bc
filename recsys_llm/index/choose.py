"""``factory="auto"``: choose a FAISS index type from the catalog size and a memory budget.

The rule, in order (``n`` items of dimension ``d``; the budget defaults to half of this machine's RAM):

==============================================  ====================================  ======================
condition                                        factory (n = 1M, d = 384)              bytes per item (d=384)
==============================================  ====================================  ======================
``n <= 50,000``                                  ``Flat`` (exact)                       ``4d + 8`` = 1,544
``n * (4d + 8) <= budget``                       ``IVF4096_HNSW32,Flat``                ``4d + 8`` = 1,544
``n * (d + 8) <= budget``                        ``IVF4096_HNSW32,SQ8``                 ``d + 8`` = 392
largest ``m`` in 64, 48, 32, 16, 8 dividing d,   ``OPQ{m},IVF{nlist},PQ{m}``            ``m + 8`` = 72 (m = 64)
with ``n * (m + 8) <= budget``
otherwise                                        error: raise the budget or use Milvus
==============================================  ====================================  ======================

``nlist`` is the power of two nearest ``4 sqrt(n)`` (at least 16; :func:`ivf_nlist`): ~250 items per list at
1M. More, smaller lists than the textbook ``sqrt(n)`` make each probe cheaper, and the tuned ``nprobe`` grows
less than the list count shrinks: at 1M x 384 (``eval/bench_index_scale.py``, 2 cores, the same run)
``IVF4096_HNSW32,Flat`` reached recall@10 0.96-0.97 at 97x-349x exact search, IVF1024 at 67x-73x. An
``IVF4096_HNSW32,SQ8,RFlat`` refine index (8-bit codes re-ranked exactly, ``k_factor`` 4) tied with it on the
synthetic set and was slower on the real one (fewer lists to scan leave the re-ranking as the cost), and it
needs 25% more memory, has no GPU version and deletes with tombstones: ask for it by name. From ``nlist >= 2048`` the coarse quantizer is an HNSW graph over
the centroids (``IVF{nlist}_HNSW32``): assigning 1M items (and each query) to 4,096 centroids by brute force
costs as much as a probe of 16 lists, the graph a fraction of that. Training runs on a seeded sample of
``TRAIN_PER_LIST`` (16) vectors per list with ``TRAIN_ITERS`` (10) k-means iterations: centroids a little
coarser than FAISS's 39-256 per list and 25 iterations, which the tuned ``nprobe`` absorbs, at a fraction
of the build time (k-means costs sample x nlist x d per iteration). Exact search below 50,000 items costs
one ``(queries, 50k x d)`` GEMM, fast enough that an approximate index would only add error.

HNSW over the items is never chosen automatically: its graph takes long to build on a CPU (1M x 384: tens
of minutes on 2 cores), it cannot run on a GPU and cannot delete items (we keep tombstones); pass ``HNSW32``
explicitly for read-mostly catalogs where its latency matters. After building, the search setting is tuned
to a target recall with :func:`recsys_llm.index.tuning.tune` and saved in ``index.json``.

Example:
    >>> auto_factory(9_742, 384).factory
    'Flat'
    >>> auto_factory(1_000_000, 384, memory_budget=8 * 2**30).factory
    'IVF4096_HNSW32,Flat'
    >>> auto_factory(200_000, 384, memory_budget=8 * 2**30).factory
    'IVF2048_HNSW32,Flat'
    >>> auto_factory(100_000_000, 384, memory_budget=16 * 2**30).factory
    'OPQ64,IVF32768_HNSW32,PQ64'
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from recsys_llm.index.exact import ExactIndex
from recsys_llm.index.faiss_index import FaissIndex
from recsys_llm.index.milvus_index import MilvusIndex

EXACT_MAX_ITEMS = 50_000
ID_BYTES = 8
LISTS_PER_SQRT = 4
HNSW_QUANTIZER_FROM = 2048
TRAIN_PER_LIST = 16
TRAIN_ITERS = 10


@dataclass(frozen=True)
class IndexChoice:
    """What :func:`auto_factory` picked and why."""

    factory: str
    bytes_per_item: int
    reason: str
    train_sample: int | None = None
    train_iters: int | None = None


def default_memory_budget() -> int:
    """Half of this machine's physical memory, in bytes (4 GiB when it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def ivf_nlist(n_items: int) -> int:
    """Power of two nearest ``LISTS_PER_SQRT * sqrt(n_items)``, at least 16."""
    return max(16, 2 ** round(math.log2(max(LISTS_PER_SQRT * math.sqrt(max(n_items, 1)), 1))))


def ivf_spec(nlist: int) -> str:
    """``IVF{nlist}``, with an HNSW coarse quantizer from ``HNSW_QUANTIZER_FROM`` lists."""
    return f"IVF{nlist}_HNSW32" if nlist >= HNSW_QUANTIZER_FROM else f"IVF{nlist}"


def auto_factory(n_items: int, dim: int, memory_budget: int | None = None) -> IndexChoice:
    """The factory string for ``n_items`` vectors of ``dim`` within ``memory_budget`` bytes (see module doc).

    Raises:
        ValueError: bad arguments, or the catalog does not fit the budget even at 8 bytes per vector.
    """
    if n_items < 0 or dim < 1:
        raise ValueError(f"auto_factory: n_items={n_items}, dim={dim}; need n_items >= 0 and dim >= 1")
    budget = memory_budget if memory_budget is not None else default_memory_budget()
    if budget <= 0:
        raise ValueError(f"memory_budget={budget}: must be a positive number of bytes")
    gib = budget / 2**30
    flat = 4 * dim + ID_BYTES
    if n_items <= EXACT_MAX_ITEMS:
        return IndexChoice("Flat", flat, f"{n_items:,} items <= {EXACT_MAX_ITEMS:,}: exact search is fast enough")
    nlist = ivf_nlist(n_items)
    ivf = ivf_spec(nlist)
    train = {"train_sample": max(10_000, TRAIN_PER_LIST * nlist), "train_iters": TRAIN_ITERS}
    lists = f"{nlist} lists (~{n_items // nlist} items each), trained on {train['train_sample']:,} sampled vectors"
    if n_items * flat <= budget:
        return IndexChoice(f"{ivf},Flat", flat, f"full float32 vectors ({n_items * flat / 2**30:.1f} GiB) fit "
                           f"the {gib:.1f} GiB budget; {lists}", **train)
    sq = dim + ID_BYTES
    if n_items * sq <= budget:
        return IndexChoice(f"{ivf},SQ8", sq, f"float32 needs {n_items * flat / 2**30:.1f} GiB > {gib:.1f} GiB; "
                           f"8-bit scalar quantisation needs {n_items * sq / 2**30:.1f} GiB; {lists}", **train)
    for m in (64, 48, 32, 16, 8):
        if dim % m == 0 and n_items * (m + ID_BYTES) <= budget:
            return IndexChoice(f"OPQ{m},{ivf},PQ{m}", m + ID_BYTES,
                               f"8-bit scalars need {n_items * sq / 2**30:.1f} GiB > {gib:.1f} GiB; "
                               f"product quantisation with {m} bytes per vector fits; {lists}", **train)
    raise ValueError(f"{n_items:,} vectors of dim {dim} do not fit a {gib:.2f} GiB memory budget even with "
                     "8-byte PQ codes; raise index.memory_budget_gb, shard over GPUs, or use the Milvus backend")


def index_from_config(cfg, dim: int, n_items: int, milvus_uri: str = "milvus.db"):
    """An empty index for ``n_items`` vectors of ``dim`` as an :class:`~recsys_llm.config.IndexConfig` says.

    Returns:
        ``(index, reason)``: the index and a sentence on why this type was chosen.
    """
    if cfg.backend == "exact":
        return ExactIndex(dim), "index.backend=exact: numpy brute force"
    if cfg.backend == "milvus":
        return (MilvusIndex(dim, uri=cfg.milvus_uri or milvus_uri, collection=cfg.milvus_collection,
                            index_type=cfg.milvus_index_type, drop_existing=True),
                f"index.backend=milvus: {cfg.milvus_index_type} at {cfg.milvus_uri or milvus_uri}")
    train_sample, train_iters = cfg.train_sample or None, None
    if cfg.factory == "auto":
        budget = int(cfg.memory_budget_gb * 2**30) if cfg.memory_budget_gb else None
        choice = auto_factory(n_items, dim, budget)
        factory, reason = choice.factory, f"auto: {choice.factory} ({choice.reason})"
        train_sample, train_iters = train_sample or choice.train_sample, choice.train_iters
    else:
        factory, reason = cfg.factory, f"index.factory={cfg.factory}"
    index = FaissIndex(dim, factory, use_gpu=cfg.use_gpu, nprobe=cfg.nprobe or None,
                       ef_search=cfg.ef_search or None, train_sample=train_sample, train_iters=train_iters,
                       k_factor=cfg.k_factor or None,
                       float16=cfg.float16, shard=cfg.shard, num_gpus=cfg.num_gpus or None)
    return index, reason
