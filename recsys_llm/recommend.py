"""Serving: top-k items for a known user, from everything the user is known to have done.

One first stage for every user (:class:`Server`): the hybrid (fine-tuned text + collaborative) when the
run has one, else the FAISS index (cold-start items included); the cross-encoder reranks the top
``rerank.depth`` when a trained reranker exists. Seen items are never recommended. New users:
:func:`recsys_llm.coldstart.users.recommend_new_user`.

Example:
    >>> recs = recommend("runs/demo", user_id="1", k=10)   # doctest: +SKIP
    >>> recs[["rank", "item_id", "title", "score"]]        # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recsys_llm.coldstart.items import full_catalog
from recsys_llm.data.ids import IdMap
from recsys_llm.data.splits import histories
from recsys_llm.pipeline import (
    Context,
    item_vectors,
    load_embeddings,
    load_encoder,
    load_hybrid,
    load_run_index,
)
from recsys_llm.rerank.explain import because
from recsys_llm.text.templates import history_text, item_texts

if TYPE_CHECKING:
    from recsys_llm.encoder.model import TwoTowerEncoder
    from recsys_llm.encoder.user_pooling import PoolingUserModel
    from recsys_llm.hybrid import HybridModel
    from recsys_llm.index.base import VectorIndex

logger = logging.getLogger(__name__)


def user_history(ctx: Context, user_id: str) -> tuple[int, np.ndarray]:
    """Internal id and full known history (all interactions, oldest first) of an external user id."""
    internal = IdMap(ctx.ds.users["user_id"].astype(str).to_numpy(dtype=object)).to_internal(pd.Series([user_id]))[0]
    if internal < 0:
        sample = ", ".join(ctx.ds.users["user_id"].astype(str).head(3))
        raise ValueError(f"user {user_id!r} is not in this run's data (ids look like {sample}); "
                         "new users are served by `recsys-llm coldstart user --items ... --text ...`")
    return int(internal), histories(ctx.ds.interactions, ctx.ds.n_users)[internal]


@dataclass
class Server:
    """What serving needs from a run, loaded once: catalog, vectors, index, encoder, hybrid (if fitted).

    ``score(history, text)`` is the one first stage for every user, known or new: the hybrid (text +
    collaborative, with the user representation chosen on validation) when ``recsys-llm hybrid`` has run,
    else dense retrieval from the index. Cold-start items (``coldstart add-items``) are scored by their text
    from the moment they are added; retired items never come back.
    """

    ctx: Context
    catalog: pd.DataFrame
    vectors: np.ndarray
    index: VectorIndex
    encoder: TwoTowerEncoder
    hybrid: HybridModel | None
    pool: PoolingUserModel | None

    @classmethod
    def load(cls, run_dir: str | Path, use_hybrid: bool = True) -> Server:
        """Load a run for serving; ``use_hybrid=False`` (or a run without ``hybrid/``) serves retrieval only."""
        ctx = Context.load(run_dir)
        item_emb, _, meta = load_embeddings(ctx.run)
        index = load_run_index(ctx.run, meta)
        hybrid = pool = None
        if use_hybrid and (ctx.run.hybrid / "hybrid.json").exists():
            hybrid, pool = load_hybrid(ctx.run)
        return cls(ctx, full_catalog(run_dir), item_vectors(ctx.run, item_emb), index,
                   load_encoder(ctx.run, ctx.cfg.train.device), hybrid, pool)

    @property
    def titles(self) -> list[str]:
        return self.catalog["title"].astype(str).tolist()

    def user_vector(self, history: np.ndarray, text: str | None = None) -> np.ndarray:
        """``(1, d)`` user embedding from known items (oldest first) and/or a free-text taste description."""
        cfg = self.ctx.cfg
        text = (text or "").strip()
        if not len(history) and not text:
            raise ValueError("a user needs at least one known item or a text describing their taste")
        if self.hybrid is not None and self.pool is not None and self.hybrid.user_model == "pooling" and len(history):
            from recsys_llm.encoder.user_pooling import encode_histories

            u = encode_histories(self.pool, self.vectors, [history])
            if text:
                u = u + self.encoder.encode_users([text], cfg.text.user_max_tokens, show_progress=False)
                u = u / np.linalg.norm(u, axis=1, keepdims=True)
            return u.astype(np.float32)
        parts = [text] if text else []
        if len(history):
            parts.append(history_text(history, self.titles, cfg.text.user_max_items))
        return self.encoder.encode_users(["; ".join(parts)], cfg.text.user_max_tokens, show_progress=False)

    def score(self, history: np.ndarray, text: str | None, k: int, exclude: np.ndarray) -> tuple[np.ndarray,
                                                                                              np.ndarray, str]:
        """Top-``k`` ``(ids, scores, stage)`` for one user; ``exclude`` is never recommended."""
        q = self.user_vector(history, text)
        if self.hybrid is None:
            scores, ids = self.index.search(q, k, exclude=[exclude])
            keep = ids[0] >= 0
            return ids[0][keep], scores[0][keep], "retrieval"
        fused = self.hybrid.score(q @ self.vectors.T, [history])[0]  # (n_items,)
        live = np.zeros(len(fused), dtype=bool)
        live[self.index.ids] = True
        live[np.asarray(exclude, dtype=np.int64)] = False
        cand = np.flatnonzero(live)
        top = cand[np.argsort(-fused[cand], kind="stable")[:k]]
        return top, fused[top].astype(np.float32), "hybrid"

    def table(self, ids: np.ndarray, scores: np.ndarray, stage: str, history: np.ndarray) -> pd.DataFrame:
        """Recommendations as a frame with titles and "because you liked ..." (:func:`because`)."""
        why, sim = because(self.vectors, history, ids)
        has = why >= 0
        external = self.catalog["item_id"].astype(str).to_numpy()
        titles = np.asarray(self.titles, dtype=object)
        return pd.DataFrame({
            "rank": np.arange(1, len(ids) + 1),
            "item": ids,
            "item_id": external[ids],
            "title": titles[ids],
            "score": scores.astype(np.float32),
            "stage": stage,
            "because_item_id": np.where(has, external[np.maximum(why, 0)], ""),
            "because": np.where(has, titles[np.maximum(why, 0)], ""),
            "because_similarity": sim,
        })


def recommend(run_dir: str | Path, user_id: str, k: int = 10, use_reranker: bool = True,
              use_hybrid: bool = True) -> pd.DataFrame:
    """Top-``k`` recommendations with titles for one known user.

    First stage: the hybrid when the run has one (``recsys-llm hybrid``) and ``use_hybrid``, else dense
    retrieval from the index (what ``recsys-llm index query`` shows); then the
    cross-encoder reorders the top ``rerank.depth`` when a trained reranker exists and ``use_reranker``.

    Returns:
        DataFrame with columns ``rank, item, item_id, title, score, stage`` (stage = retrieval, hybrid or
        rerank) and the explanation ``because_item_id, because, because_similarity``: the history item most
        similar to each recommendation (:func:`recsys_llm.rerank.explain.because`).
    """
    if k < 1:
        raise ValueError(f"k={k}; ask for at least one recommendation")
    server = Server.load(run_dir, use_hybrid=use_hybrid)
    cfg = server.ctx.cfg
    _, hist = user_history(server.ctx, user_id)
    depth = max(k, cfg.rerank.depth) if use_reranker else k
    ids, scores, stage = server.score(hist, None, depth, exclude=hist)
    if use_reranker and server.ctx.run.reranker.exists():
        from recsys_llm.rerank.cross_encoder import CrossEncoder

        model = CrossEncoder.load(server.ctx.run.reranker, device=cfg.train.device).for_scoring(cfg.rerank.quantize)
        text = history_text(hist, server.titles, cfg.text.user_max_items)
        scores, ids = model.rerank([text], ids[None, :], scores[None, :],
                                   item_texts(server.catalog, cfg.text.item_template),
                                   depth=cfg.rerank.depth, weight=cfg.rerank.fusion_weight)
        keep = ids[0] >= 0
        ids, scores, stage = ids[0][keep], scores[0][keep], "rerank"
    elif use_reranker:
        logger.info("no trained reranker in %s; showing %s order", server.ctx.run.reranker, stage)
    return server.table(ids[:k], scores[:k], stage, hist)


def history_titles(run_dir: str | Path, user_id: str, n: int = 5) -> list[str]:
    """Titles of the user's ``n`` most recent items (for "because you watched ...")."""
    ctx = Context.load(run_dir)
    _, hist = user_history(ctx, user_id)
    titles = ctx.titles
    return [titles[i] for i in hist[::-1][:n]]
