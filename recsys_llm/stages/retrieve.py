"""Stage ``retrieve``: top-K dense candidates per evaluated user and slice, from the saved index."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys_llm.artifacts import load_embeddings, load_run_index, outside_catalog
from recsys_llm.index.base import VectorIndex
from recsys_llm.index.faiss_index import FaissIndex
from recsys_llm.protocol import candidate_depth, slice_candidates, slice_users
from recsys_llm.retrieve import Candidates, retrieve
from recsys_llm.run import Context, timed


def dense_candidates(ctx: Context, item_emb: np.ndarray, user_emb: np.ndarray, index: VectorIndex,
                     slice_name: str, users: np.ndarray, k: int) -> Candidates:
    """Full-ranking candidates for one slice: the catalog index, or an exact index over the slice's items."""
    known = ctx.known_histories()
    cand = slice_candidates(ctx.cfg, ctx.split, slice_name)
    if cand is not None:
        index = FaissIndex(item_emb.shape[1], factory="Flat", use_gpu=ctx.cfg.index.use_gpu)
        index.add(item_emb[cand], cand)
    extra = outside_catalog(index, ctx.split.n_items)
    seen = [np.union1d(known[u], extra) if len(extra) else known[u] for u in users]
    return retrieve(index, user_emb[users], users, k, seen=seen)


@timed("retrieve")
def retrieve_candidates(run_dir: str | Path) -> None:
    """Top-K candidates per evaluated user from the saved index (seen items filtered), per slice."""
    ctx = Context.load(run_dir)
    item_emb, user_emb, meta = load_embeddings(ctx.run)
    index = load_run_index(ctx.run, meta, ctx.cfg.index.use_gpu)
    k = candidate_depth(ctx.cfg)
    for slice_name, (users, _) in slice_users(ctx.cfg, ctx.split).items():
        if len(users) == 0:
            continue
        cands = dense_candidates(ctx, item_emb, user_emb, index, slice_name, users, k)
        cands.save(ctx.run.candidates / f"{slice_name}.npz")
