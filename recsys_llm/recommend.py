"""Serving: top-k items for a known user, from everything the user is known to have done.

Retrieval uses the run's FAISS index (cold-start items included); the cross-encoder reranks the top
``rerank.depth`` when a trained reranker exists. Seen items are never recommended.

Example:
    >>> recs = recommend("runs/demo", user_id="1", k=10)   # doctest: +SKIP
    >>> recs[["rank", "item_id", "title", "score"]]        # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_llm.coldstart import full_catalog
from recsys_llm.data.ids import IdMap
from recsys_llm.data.splits import histories
from recsys_llm.pipeline import Context, item_vectors, load_embeddings, load_encoder, load_run_index
from recsys_llm.rerank.explain import because
from recsys_llm.text.templates import history_text, item_texts

logger = logging.getLogger(__name__)


def user_history(ctx: Context, user_id: str) -> tuple[int, np.ndarray]:
    """Internal id and full known history (all interactions, oldest first) of an external user id."""
    internal = IdMap(ctx.ds.users["user_id"].astype(str).to_numpy(dtype=object)).to_internal(pd.Series([user_id]))[0]
    if internal < 0:
        sample = ", ".join(ctx.ds.users["user_id"].astype(str).head(3))
        raise ValueError(f"user {user_id!r} is not in this run's data (ids look like {sample}); "
                         "new users are served by `recsys-llm coldstart` (a later release)")
    return int(internal), histories(ctx.ds.interactions, ctx.ds.n_users)[internal]


def recommend(run_dir: str | Path, user_id: str, k: int = 10, use_reranker: bool = True) -> pd.DataFrame:
    """Top-``k`` recommendations with titles for one known user.

    Returns:
        DataFrame with columns ``rank, item, item_id, title, score, stage`` (stage = retrieval or rerank)
        and the explanation ``because_item_id, because, because_similarity``: the history item most
        similar to each recommendation (:func:`recsys_llm.rerank.explain.because`).
    """
    if k < 1:
        raise ValueError(f"k={k}; ask for at least one recommendation")
    ctx = Context.load(run_dir)
    cfg = ctx.cfg
    internal, hist = user_history(ctx, user_id)
    catalog = full_catalog(run_dir)
    titles = catalog["title"].astype(str).tolist()
    text = history_text(hist, titles, cfg.text.user_max_items)
    item_emb, _, meta = load_embeddings(ctx.run)
    index = load_run_index(ctx.run, meta)
    encoder = load_encoder(ctx.run, cfg.train.device)
    q = encoder.encode_users([text], cfg.text.user_max_tokens, show_progress=False)
    depth = max(k, cfg.rerank.depth) if use_reranker else k
    scores, ids = index.search(q, depth, exclude=[hist])
    stage = "retrieval"
    if use_reranker and ctx.run.reranker.exists():
        from recsys_llm.rerank.cross_encoder import CrossEncoder

        model = CrossEncoder.load(ctx.run.reranker, device=cfg.train.device).for_scoring(cfg.rerank.quantize)
        scores, ids = model.rerank([text], ids, scores, item_texts(catalog, cfg.text.item_template),
                                   depth=cfg.rerank.depth, weight=cfg.rerank.fusion_weight)
        stage = "rerank"
    elif use_reranker:
        logger.info("no trained reranker in %s; showing retrieval order", ctx.run.reranker)
    keep = ids[0] >= 0
    ids, scores = ids[0][keep][:k], scores[0][keep][:k]
    why, sim = because(item_vectors(ctx.run, item_emb), hist, ids)
    has = why >= 0
    return pd.DataFrame({
        "rank": np.arange(1, len(ids) + 1),
        "item": ids,
        "item_id": catalog["item_id"].astype(str).to_numpy()[ids],
        "title": np.asarray(titles, dtype=object)[ids],
        "score": scores.astype(np.float32),
        "stage": stage,
        "because_item_id": np.where(has, catalog["item_id"].astype(str).to_numpy()[np.maximum(why, 0)], ""),
        "because": np.where(has, np.asarray(titles, dtype=object)[np.maximum(why, 0)], ""),
        "because_similarity": sim,
    })


def history_titles(run_dir: str | Path, user_id: str, n: int = 5) -> list[str]:
    """Titles of the user's ``n`` most recent items (for "because you watched ...")."""
    ctx = Context.load(run_dir)
    _, hist = user_history(ctx, user_id)
    titles = ctx.titles
    return [titles[i] for i in hist[::-1][:n]]
