"""Stage ``index build`` (+ ``index stats`` / ``index evaluate``): item vectors -> a tuned, saved index.

:func:`build_tuned_index` is the one way an index is made from vectors (trained runs and description-only
catalogs alike): the configured or automatically chosen type, and for approximate types the smallest
``nprobe``/``ef_search`` whose recall@K against exact search reaches ``index.target_recall``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from recsys_llm.artifacts import catalog_vectors, load_embeddings, load_run_index
from recsys_llm.config import PipelineConfig
from recsys_llm.index.base import VectorIndex
from recsys_llm.index.choose import index_from_config
from recsys_llm.index.exact import ExactIndex
from recsys_llm.index.tuning import SweepRow, exact_neighbours, pick, search_param, sweep, timed_search, use
from recsys_llm.protocol import candidate_depth
from recsys_llm.run import RunDir, read_json, timed

logger = logging.getLogger(__name__)


def query_sample(queries: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded sample of ``n`` rows of ``queries`` (all when there are fewer): the queries of index tuning."""
    n = min(n, len(queries))
    return queries[np.sort(np.random.default_rng(seed).choice(len(queries), n, replace=False))]


def build_tuned_index(cfg: PipelineConfig, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray,
                      milvus_uri: str = "milvus.db") -> tuple[VectorIndex, str, dict[str, Any]]:
    """The configured index over ``vectors`` (row ``j`` = item ``ids[j]``), tuned on ``queries`` when approximate.

    Returns:
        ``(index, reason, tuned)``: the filled index, why its type was chosen, and the tuning record
        (``{}`` for exact types or an explicit ``index.nprobe``/``ef_search``).
    """
    index, reason = index_from_config(cfg.index, vectors.shape[1], len(ids), milvus_uri=milvus_uri)
    logger.info("index for %d items: %s", len(ids), reason)
    index.add(vectors, ids)
    param = search_param(index)[0]
    if not param or cfg.index.nprobe or cfg.index.ef_search or not len(queries):
        return index, reason, {}
    k = min(candidate_depth(cfg), len(ids))
    truth = exact_neighbours(vectors, ids, queries, k)
    rows = sweep(index, queries, truth, k, stop_at=cfg.index.target_recall)  # stops at the first hit
    try:
        row = pick(rows, cfg.index.target_recall)
    except ValueError as e:  # the sweep went through every value without reaching it; keep the best
        logger.warning("%s; keeping the best setting measured", e)
        row = max(rows, key=lambda r: r.recall)
    use(index, row)
    logger.info("tuned %s=%s: recall@%d %.4f vs exact", param, row.value, k, row.recall)
    return index, reason, {"param": param, "value": row.value, f"recall@{k}": round(row.recall, 4),
                           "queries": len(queries), "target": cfg.index.target_recall}


@timed("index")
def build_index(run_dir: str | Path) -> dict:
    """Index every item (catalog + cold-start, minus retired) with the configured backend and type.

    ``index.factory=auto`` picks the FAISS type by catalog size and memory budget; an approximate index gets
    tuned on a sample of user embeddings (:func:`build_tuned_index`). The saved index records the encoder
    fingerprint, so embeddings from another encoder are refused at query time.

    Returns:
        The saved ``index.json`` content.
    """
    run = RunDir(Path(run_dir))
    cfg = run.load_config()
    item_emb, user_emb, meta = load_embeddings(run)
    vectors, ids = catalog_vectors(run, item_emb)
    queries = query_sample(user_emb, cfg.index.tune_queries, cfg.eval.seed)
    index, reason, tuned = build_tuned_index(cfg, vectors, ids, queries, milvus_uri=str(run.root / "milvus.db"))
    index.metadata = {"encoder": meta["encoder"], "data_fingerprint": meta["data_fingerprint"],
                      "choice": reason, "tuned": tuned}
    index.save(run.index)
    return index.info()


def index_stats(run_dir: str | Path) -> dict:
    """What ``recsys-llm index stats`` prints: index.json plus bytes on disk and per item."""
    run = RunDir(Path(run_dir))
    folder = run.require(run.index, "index build")
    info = read_json(run, folder / "index.json", "index build")
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    return {**info, "bytes_on_disk": size, "bytes_per_item": round(size / max(info["ntotal"], 1), 1)}


def evaluate_index(run_dir: str | Path, k: int = 10, n_queries: int = 1000, target: float | None = None,
                   apply: bool = False) -> tuple[list[SweepRow], float, SweepRow | None]:
    """Recall@k against exact search and queries/s of the run's index, at each search setting.

    Queries are a seeded sample of the run's user embeddings; ground truth is numpy brute force over the
    vectors of exactly the items the index holds. With ``target`` the smallest setting reaching it is
    picked (and saved into the index with ``apply``).

    Returns:
        ``(rows, exact_qps, best)``: :class:`~recsys_llm.index.tuning.SweepRow` per setting, the brute-force
        queries/s on the same queries, and the picked row (None without ``target``).
    """
    run = RunDir(Path(run_dir))
    cfg = run.load_config()
    item_emb, user_emb, meta = load_embeddings(run)
    index = load_run_index(run, meta, cfg.index.use_gpu)
    vectors, ids = catalog_vectors(run, item_emb)
    held = index.ids
    keep = np.isin(ids, held)
    if keep.sum() != len(held):
        raise ValueError(f"{run.index} holds {len(held)} items but the run's embeddings cover "
                         f"{int(keep.sum())} of them; rebuild it (`recsys-llm index build`)")
    exact = ExactIndex(item_emb.shape[1])
    exact.add(vectors[keep], ids[keep])
    q = query_sample(user_emb, n_queries, cfg.eval.seed)
    k = min(k, len(held))
    truth, exact_qps = timed_search(exact, q, k)
    rows = sweep(index, q, truth, k)  # one sweep serves the table and the pick
    best = None
    if target is not None:
        best = pick(rows, target)
        use(index, best)
        if apply:
            index.save(run.index)
    return rows, exact_qps, best
