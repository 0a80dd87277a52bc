"""The service's work: one :class:`LiveRecommender`, the encoder micro-batchers and the change-log lock.

Every handler first applies what other workers appended to the change log (:meth:`Service.fresh`, one
``stat`` when nothing changed). Ranking and state changes run on the event loop thread, one at a time (numpy
work of a few milliseconds); model forward passes that take longer (new items, free-text users) run batched in
worker threads (:class:`~recsys_llm.serve.app.batching.MicroBatcher`), so the loop keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pandas as pd

from recsys_llm.serve.app.batching import MicroBatcher
from recsys_llm.serve.live import LiveRecommender
from recsys_llm.serve.recommender import HISTORY_MODELS, Query
from recsys_llm.serve.served import ServedConfig


class Service:
    """What the routes call (see the module docstring)."""

    def __init__(self, live: LiveRecommender, window_ms: float = 3.0) -> None:
        self.live = live
        rec = live.rec
        self.items = MicroBatcher(lambda t: rec.encoder.encode_items(t, rec.cfg.text.item_max_tokens,
                                                                     show_progress=False),
                                  window_ms, max_batch=256, name="encode-items")
        self.users = MicroBatcher(lambda t: rec.encoder.encode_users(t, rec.cfg.text.user_max_tokens,
                                                                     show_progress=False),
                                  window_ms, max_batch=64, name="encode-users")
        self.cross = MicroBatcher(self._cross_scores, window_ms, max_batch=32, name="cross-encoder")
        self._write_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None  # made in the serving loop
        self.started = time.time()

    @property
    def rec(self):  # noqa: ANN201 - the Recommender
        return self.live.rec

    def fresh(self) -> None:
        """Apply the change log's new lines (other workers' writes) before answering."""
        self.live.sync()

    def close(self) -> None:
        self.items.close()
        self.users.close()
        self.cross.close()

    # ---------------------------------------------------------------------------------- encoding
    async def _pre_encode(self, texts: Sequence[str]) -> None:
        """Encode ``texts`` in a micro-batch into the Recommender's text cache (used by the next rank)."""
        todo = [t for t in dict.fromkeys(texts) if t and t not in self.rec.text_vectors]
        if todo:
            vectors = await self.users.submit(todo)
            for t, v in zip(todo, vectors, strict=True):
                self.rec.text_vectors[t] = v

    def _release(self, texts: Sequence[str]) -> None:
        for t in texts:
            self.rec.text_vectors.pop(t, None)

    def _user_model(self) -> str:
        rec = self.rec
        return "text" if rec.served.first_stage == "dense" or rec.hybrid is None else rec.hybrid.user_model

    # ---------------------------------------------------------------------------------- reading
    def _served(self, rerank: bool) -> ServedConfig | None:
        s = self.rec.served
        return None if rerank or not s.reranks else ServedConfig(s.first_stage, chosen_by=s.chosen_by)

    def _cross_scores(self, queries: list[tuple[str, np.ndarray, int]]) -> np.ndarray:
        """One cross-encoder pass over several requests' candidates: ``(n, width)``, NaN-padded."""
        ids = np.full((len(queries), max(len(top) for _, top, _ in queries)), -1, np.int64)
        for r, (_, top, _) in enumerate(queries):
            ids[r, : len(top)] = top
        return self.rec.reranker.score_candidates([t for t, _, _ in queries], ids, self.rec.catalogue.texts,
                                                  depth=max(d for _, _, d in queries))

    async def _reranked(self, q: Query, k: int, filters: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        """:meth:`Recommender.rank` for one query (the same ``first_stage`` -> cross-encoder -> ``rerank``
        steps), its cross-encoder pass micro-batched with concurrent requests' in a worker thread."""
        rec, served = self.rec, self.rec.served
        top, sc = rec.first_stage(q, served.first_stage, max(k, served.rerank_depth), rec.allowed(filters))
        if len(top):
            ce = (await self.cross.submit([(rec.user_text(q), top, served.rerank_depth)]))[0, : len(top)]
            sc, top = rec.rerank(q, top, sc, served.rerank_depth, served.rerank_weight, ce=ce)
        return rec.rows(top[:k], sc[:k], rec.history(q), served.label)

    async def recommend(self, user_id: str, k: int, exclude: Sequence[str], filters: Mapping[str, Any] | None,
                        rerank: bool) -> list[dict[str, Any]]:
        self.fresh()
        text = self.live.user_query_text(self.rec.user_internal(user_id))
        texts = [text] if text else []
        await self._pre_encode(texts)
        self.fresh()
        try:
            if rerank and self.rec.served.reranks:
                return await self._reranked(self.live.query(user_id, exclude), k, filters)
            return self.rec.rows(*self.live.list_user(user_id, k, exclude, filters, self._served(rerank)))
        finally:
            self._release(texts)

    async def anonymous(self, items: Sequence[str], text: str, k: int, filters: Mapping[str, Any] | None
                        ) -> list[dict[str, Any]]:
        self.fresh()
        if len(set(items)) != len(items):
            raise ValueError(f"items: ids repeated in {list(items)}; give each item once")
        hist = self.rec.item_internal(items) if items else np.empty(0, np.int64)
        q = Query(history=hist, text=text.strip())
        if not len(hist) and not q.text:
            raise ValueError("items, text: give at least one liked item id or a text describing the taste")
        pooled = self._user_model() in HISTORY_MODELS and len(hist)
        texts = ([q.text] if q.text else []) if pooled else [self.rec.user_text(q)]
        await self._pre_encode(texts)
        self.fresh()
        try:
            if self.rec.served.reranks:
                return await self._reranked(self.rec.queries(histories=[hist], texts=[q.text])[0], k, filters)
            return self.rec.rows(*self.rec.list_new(items=list(items), text=q.text, k=k, filters=filters))
        finally:
            self._release(texts)

    async def search(self, text: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.fresh()
        await self._pre_encode([text])
        self.fresh()
        try:
            return self.rec.search(text, k)
        finally:
            self._release([text])

    def similar(self, item_id: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.fresh()
        item = int(self.rec.item_internal([item_id], "item_id")[0])
        return self.rec.similar(item, k)

    # ---------------------------------------------------------------------------------- writing
    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        """Hold the change log's lock (other workers wait), with every earlier change applied."""
        log = self.live.log
        loop = asyncio.get_running_loop()
        if self._write_lock is None or self._write_lock[0] is not loop:
            self._write_lock = (loop, asyncio.Lock())
        async with self._write_lock[1]:  # this process's writers in arrival order
            while (fd := log.try_lock()) is None:  # other processes' writers
                await asyncio.sleep(0.002)
            try:
                self.live.sync()
                yield
            finally:
                log.unlock(fd)

    async def add_items(self, rows: list[dict[str, str]], upsert: bool) -> list[str]:
        frame = pd.DataFrame(rows)
        self.fresh()
        texts = self.live.check_items(frame, upsert)  # a bad request fails before any encoding
        emb = await self.items.submit(texts)
        async with self._writing():
            self.live.write_items(frame, emb, upsert)
        return frame["item_id"].astype(str).tolist()

    async def retire(self, item_ids: Sequence[str]) -> None:
        async with self._writing():
            self.live.write_retire(item_ids)

    async def interact(self, events: list[dict[str, Any]]) -> dict[str, int]:
        now = int(time.time())
        events = [{**e, "timestamp": now if e.get("timestamp") is None else e["timestamp"]} for e in events]
        self.fresh()
        texts = self.live.interaction_texts(events)  # unknown items fail here
        vectors = dict(zip(texts, await self.users.submit(list(texts.values())), strict=True)) if texts else {}
        async with self._writing():  # the users' new text vectors, encoded once (batched) and logged
            now = self.live.interaction_texts(events)  # a write in between changed a history: no vector
            return self.live.write_interactions(events, {u: v for u, v in vectors.items() if now.get(u) == texts[u]})

    async def refresh(self) -> dict[str, Any]:
        async with self._writing():
            return self.live.write_refresh()

    # ---------------------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        rec, c = self.rec, self.live.counters
        return {"run_dir": str(rec.run.root), "served": rec.served.label,
                "live_items": int(len(rec.catalogue.index.ids)), "catalogue_items": int(len(rec.catalogue.vectors)),
                "known_users": len(rec.known), "interactions_since_refresh": len(self.live.pending),
                "change_log": {"path": str(self.live.log.path), "applied_bytes": self.live.log.offset,
                               "entries": self.live.log.seq, "skipped": c.skipped[-5:]},
                "uptime_s": round(time.time() - self.started, 1)}
