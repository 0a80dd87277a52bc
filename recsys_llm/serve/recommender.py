"""The Recommender: a run loaded once, ranking exactly as the report measured it.

:meth:`Recommender.rank` is the only ranking code of the project's served model: the CLI ``recommend``,
cold-start users (``coldstart user``), the HTTP service and the report's **served** row all call it, with the
:class:`~recsys_llm.serve.served.ServedConfig` chosen on validation (``served.json``). One call ranks any mix
of queries:

* known users (``users=[...]``, internal ids): their stored vectors and what the run knows they did (train +
  validation; held-out test interactions are what the report scores against, so they are not used);
* new users (``histories=[...]`` and/or ``texts=[...]``): represented the same way, computed on the fly.

Each query is ranked on its own (one vector search or one fused score row, one cross-encoder batch), so a
user's list is the same whether they are ranked alone (the CLI) or among a thousand (the report). Ties break
in the seeded order of :func:`recsys_llm.protocol.tie_order`.

Example:
    >>> rec = Recommender.load("runs/demo")                    # doctest: +SKIP
    >>> r = rec.rank(users=[rec.user_internal("1")], k=10)     # doctest: +SKIP
    >>> rec.table(r.ids[0], r.scores[0], rec.history(r.queries[0]))   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_llm import lineage
from recsys_llm.artifacts import load_encoder, load_hybrid, load_reranker
from recsys_llm.config import PipelineConfig
from recsys_llm.data.ids import IdMap
from recsys_llm.data.schema import Dataset
from recsys_llm.data.splits import Split, test_histories
from recsys_llm.device import one_blas_thread
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.encoder.onnx_encoder import TextEncoder
from recsys_llm.encoder.user_pooling import PoolingUserModel, encode_histories
from recsys_llm.encoder.user_sequence import SequenceUserModel, encode_sequences
from recsys_llm.hybrid import HybridModel
from recsys_llm.protocol import tie_order
from recsys_llm.rerank.base import Reranker, reorder
from recsys_llm.run import ArtifactError, RunDir, read_npy, reading
from recsys_llm.serve.catalogue import LiveCatalogue, UnknownIdError
from recsys_llm.serve.filters import filter_mask
from recsys_llm.serve.listing import Listing, listing_rows, records_frame, top_k
from recsys_llm.serve.served import ServedConfig
from recsys_llm.text.templates import history_text

logger = logging.getLogger(__name__)

HISTORY_MODELS = ("pooling", "sequence")  # user models that read a history's item vectors (text: its titles)

@dataclass
class Query:
    """One ranking request: a known user (internal id) or a new one (history and/or text)."""

    user: int | None = None
    history: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    text: str = ""
    exclude: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


@dataclass
class Ranking:
    """Top-k per query: ``ids`` int64 ``(b, k)`` (-1 padded), ``scores`` float32 ``(b, k)``, the stage label."""

    ids: np.ndarray
    scores: np.ndarray
    stage: str
    queries: list[Query]


class Recommender:
    """Catalog, vectors, index, encoder, hybrid, reranker and the served configuration of one run, loaded once.

    Heavy models load on first use: the text encoder when a query needs encoding (new users with text, added
    items), the cross-encoder when the served configuration reranks.
    """

    def __init__(self, run: RunDir, cfg: PipelineConfig, catalogue: LiveCatalogue, served: ServedConfig,
                 users: IdMap | None, known: list[np.ndarray], n_items: int) -> None:
        self.run, self.cfg, self.catalogue, self.served = run, cfg, catalogue, served
        self.users, self.known = users, known
        self.n_items = n_items  # the prepared catalog (what the split and the report cover)
        self.hybrid: HybridModel | None = None
        self.pool: PoolingUserModel | None = None
        self.sequence: SequenceUserModel | None = None
        self._encoder: TextEncoder | None = None
        self._reranker: Reranker | None = None
        self._stored: dict[str, np.ndarray] = {}
        self._tie_ranks: dict[int, np.ndarray] = {}
        self.text_vectors: dict[str, np.ndarray] = {}  # texts encoded ahead, in batches (the service)

    # ------------------------------------------------------------------------------------------------ load
    @classmethod
    def load(cls, run_dir: str | Path, served: ServedConfig | None = None, device: str | None = None,
             backend: str | None = None) -> Recommender:
        """Load a run for serving; ``served`` overrides ``served.json`` (e.g. to evaluate a candidate setting),
        ``backend`` the run's ``encoder.backend`` (``torch`` | ``onnx``: the exported graphs)."""
        run = RunDir(Path(run_dir))
        if not run.config.is_file():
            raise FileNotFoundError(f"{run.root}: not a run directory (no config.json); build one with `recsys-llm "
                                    f"prepare` or `recsys-llm coldstart catalog --items FILE --run-dir {run.root}`")
        cfg = run.load_config()
        # served.json must be as fresh as what it was chosen on, unless the caller brings its own setting
        # (the select stage itself, evaluating candidates)
        uses = ["embed", "index"] + (["select"] if served is None else [])
        served = served or ServedConfig.for_run(run)
        uses += ["hybrid"] if served.first_stage == "hybrid" else []
        lineage.require_fresh(run.root, uses + (["rerank-train"] if served.reranks else []))
        cfg.train.device, cfg.encoder.backend = device or cfg.train.device, backend or cfg.encoder.backend
        catalogue = LiveCatalogue.load(run, cfg.text.item_template, cfg.index.use_gpu)
        users, known = None, []
        if (run.splits / "train.parquet").exists():
            with reading(run, run.splits, "prepare"):
                split = Split.load(run.splits)
            known = test_histories(split)
            with reading(run, run.data, "prepare"):
                users = IdMap(Dataset.load(run.data).users["user_id"].astype(str).to_numpy(dtype=object))
        rec = cls(run, cfg, catalogue, served, users, known, catalogue.prepared_items)
        if served.first_stage == "hybrid" or (run.hybrid / "hybrid.json").exists():
            rec.hybrid, rec.pool, rec.sequence = load_hybrid(run)
        if served.first_stage == "hybrid" and rec.hybrid is None:
            raise ArtifactError(run.hybrid, "missing but served.json serves the hybrid", "hybrid", run.root)
        return rec

    @property
    def encoder(self) -> TextEncoder:
        """The encoder that made the item vectors: the run's fine-tuned one, or the untuned backbone of a
        description-only catalog (checked against the embeddings' recorded identity)."""
        if self._encoder is None:
            if self.run.encoder.exists():
                enc: TextEncoder = load_encoder(self.run, self.cfg.train.device, self.cfg.encoder.backend)
            else:
                enc = TwoTowerEncoder.from_config(self.cfg.encoder, lora=False, device=self.cfg.train.device)
            want = self.catalogue.meta["encoder"]
            bad = [k for k in ("backbone", "adapter_sha256", "pooling", "dim") if want.get(k) != enc.fingerprint()[k]]
            if bad:
                raise ArtifactError(self.run.embeddings(), f"made by another encoder than the run's ({bad} differ)",
                                    "embed", self.run.root)
            self._encoder = enc
        return self._encoder

    @property
    def reranker(self) -> Reranker:
        if self._reranker is None:
            self._reranker = load_reranker(self.run, self.cfg)
        return self._reranker

    def stored_vectors(self, model: str) -> np.ndarray:
        """Known users' vectors as the stages stored them: ``text`` (embed), ``pooling`` or ``sequence`` (hybrid)."""
        if model not in self._stored:
            path, stage = self.run.user_vectors(model)
            self._stored[model] = read_npy(self.run, path, stage, ndim=2, rows=len(self.known), finite=True)
        return self._stored[model]

    # ------------------------------------------------------------------------------------------------ ids
    def user_internal(self, user_id: str) -> int:
        """Internal id of a known user's external id."""
        internal = -1 if self.users is None else self.users.lookup(str(user_id))
        if internal < 0:
            raise UnknownIdError(f"user {user_id!r} is not known to this run; new users are served from a few "
                                 "items and/or a text (`recsys-llm coldstart user --items ... --text ...`)")
        return internal

    def item_internal(self, item_ids: Sequence[str], source: str = "items") -> np.ndarray:
        return self.catalogue.to_internal(item_ids, source)

    def history(self, query: Query) -> np.ndarray:
        return self.known[query.user] if query.user is not None else query.history

    # ------------------------------------------------------------------------------------------------ rank
    def queries(self, users: Sequence[int] | None = None, histories: Sequence[np.ndarray] | None = None,
                texts: Sequence[str] | None = None, exclude: Sequence[np.ndarray] | None = None) -> list[Query]:
        """Queries for known ``users`` or new users (``histories`` and/or ``texts``); ``exclude`` defaults to each
        user's history."""
        if users is not None:
            qs = [Query(user=int(u), history=self.known[int(u)]) for u in users]
        else:
            n = len(histories) if histories is not None else len(texts or [])
            hs = histories if histories is not None else [np.empty(0, np.int64)] * n
            ts = texts if texts is not None else [""] * n
            if len(hs) != len(ts):
                raise ValueError(f"{len(hs)} histories for {len(ts)} texts")
            qs = [Query(history=np.asarray(h, np.int64), text=(t or "").strip()) for h, t in zip(hs, ts, strict=True)]
            for i, q in enumerate(qs):
                if not len(q.history) and not q.text:
                    raise ValueError(f"query {i}: a user needs at least one known item or a text describing their taste")
        for i, q in enumerate(qs):
            q.exclude = np.asarray(q.history if exclude is None else exclude[i], dtype=np.int64)
        return qs

    def rank(self, users: Sequence[int] | None = None, histories: Sequence[np.ndarray] | None = None,
             texts: Sequence[str] | None = None, k: int = 10, exclude: Sequence[np.ndarray] | None = None,
             filters: Mapping[str, Any] | None = None, candidates: np.ndarray | None = None,
             served: ServedConfig | None = None) -> Ranking:
        """Top-``k`` items per query with the served configuration (or ``served``).

        Args:
            users: internal ids of known users; or ``histories`` (item ids, oldest first) and/or ``texts``.
            k: list length.
            exclude: per query, items never returned (default: the user's history).
            filters: conditions on catalog columns (:func:`recsys_llm.serve.filters.filter_mask`).
            candidates: rank only among these item ids (e.g. the cold items); default every live item.
            served: a configuration to use instead of the run's (validation and evaluation of candidates).
        """
        if k < 1:
            raise ValueError(f"k={k}; ask for at least one recommendation")
        served = served or self.served
        qs = self.queries(users, histories, texts, exclude)
        allowed = self.allowed(filters, candidates)
        depth = max(k, served.rerank_depth)
        ids = np.full((len(qs), k), -1, np.int64)
        scores = np.full((len(qs), k), -np.inf, np.float32)
        with one_blas_thread() if len(qs) > 1 else contextlib.nullcontext():  # small products, one query each
            for i, q in enumerate(qs):
                top, sc = self.first_stage(q, served.first_stage, depth, allowed)
                if served.reranks and len(top):
                    sc, top = self.rerank(q, top, sc, served.rerank_depth, served.rerank_weight)
                ids[i, : min(k, len(top))], scores[i, : min(k, len(top))] = top[:k], sc[:k]
        return Ranking(ids, scores, served.label, qs)

    def allowed(self, filters: Mapping[str, Any] | None = None, candidates: np.ndarray | None = None) -> np.ndarray | None:
        """Item ids a query may get (live, within ``candidates``, passing ``filters``); None = every live item."""
        if not filters and candidates is None:
            return None
        mask = self.catalogue.live_mask()
        if candidates is not None:
            keep = np.zeros_like(mask)
            keep[np.asarray(candidates, dtype=np.int64)] = True
            mask &= keep
        if filters:
            mask &= filter_mask(self.catalogue.catalog, filters)
        if mask.sum() == len(self.catalogue.index.ids):
            return None  # nothing live is left out: the index serves it
        return np.flatnonzero(mask)

    # ----------------------------------------------------------------------------------------- the stages
    def user_vector(self, q: Query, model: str) -> np.ndarray:
        """``(d,)`` user vector: stored for known users, else the history through the pooling or sequence model
        (plus the encoded text, when there is one) or the encoded text of both."""
        if q.user is not None and not q.text:
            return self.stored_vectors(model)[q.user]
        if model in HISTORY_MODELS and len(q.history):
            u = self.history_vectors(model, [q.history])[0]
            if q.text:
                u = u + self.encode_user_texts([q.text])[0]
                u = u / np.linalg.norm(u)
            return u.astype(np.float32)
        return self.encode_user_texts([self.user_text(q)])[0]

    def history_vectors(self, model: str, histories: Sequence[np.ndarray]) -> np.ndarray:
        """``(n, d)`` unit vectors of histories (live item ids, oldest first) through the ``pooling`` or ``sequence``
        model, scored against the item vectors as they are (the sequence model folds its item adaptor in)."""
        if model == "sequence":
            assert self.sequence is not None, "the hybrid was fitted without a sequence model"
            return encode_sequences(self.sequence, self.catalogue.vectors, histories)
        assert self.pool is not None
        return encode_histories(self.pool, self.catalogue.vectors, histories)

    def encode_user_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, d)`` user-tower vectors; texts in :attr:`text_vectors` are taken from there, not encoded again."""
        if all(t in self.text_vectors for t in texts):
            return np.stack([self.text_vectors[t] for t in texts])
        return self.encoder.encode_users(list(texts), self.cfg.text.user_max_tokens, show_progress=False)

    def user_text(self, q: Query) -> str:
        """What the text towers read: the free text, then the history's titles, most recent first."""
        parts = [q.text] if q.text else []
        hist = self.history(q)
        if len(hist):
            parts.append(history_text(hist, self.catalogue.titles, self.cfg.text.user_max_items))
        return "; ".join(parts)

    def first_stage(self, q: Query, stage: str, depth: int, allowed: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``depth`` ``(ids, scores)`` of ``dense`` retrieval or the ``hybrid`` for one query."""
        if stage == "dense":
            u = self.user_vector(q, "text")
            if allowed is None:  # the index serves the whole live catalog
                scores, ids = self.catalogue.index.search(u[None, :], depth, exclude=[q.exclude])
                keep = ids[0] >= 0
                return ids[0][keep], scores[0][keep]
            scores = np.full(len(self.catalogue.vectors), -np.inf, np.float32)
            scores[allowed] = self.catalogue.vectors[allowed] @ u
            return self._top(scores, allowed, q.exclude, depth)
        if self.hybrid is None:
            raise ArtifactError(self.run.hybrid, "missing", "hybrid", self.run.root)
        u = self.user_vector(q, self.hybrid.user_model)
        fused = self.hybrid.score((self.catalogue.vectors @ u)[None, :], [self.history(q)])[0]  # (n_items,)
        pool = np.flatnonzero(self.catalogue.live_mask()) if allowed is None else allowed
        return self._top(fused, pool, q.exclude, depth)

    def _top(self, scores: np.ndarray, pool: np.ndarray, exclude: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return top_k(scores, pool, exclude, k, self._tie_rank(len(scores)))

    def _tie_rank(self, n: int) -> np.ndarray:
        if n not in self._tie_ranks:
            self._tie_ranks[n] = np.argsort(tie_order(n, self.cfg.eval.seed))  # item id -> position in the order
        return self._tie_ranks[n]

    def rerank(self, q: Query, ids: np.ndarray, scores: np.ndarray, depth: int, weight: float,
               ce: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The cross-encoder reorders the first ``depth`` of one query's list, fused with the first stage.

        Returns:
            ``(scores, ids)`` reordered (what :func:`recsys_llm.rerank.base.reorder` returns, one row).
        """
        if ce is None:
            ce = self.cross_scores(q, ids, depth)
        s, i = reorder(ids[None, :], scores[None, :], ce[None, :], depth, weight)
        return s[0], i[0]

    def cross_scores(self, q: Query, ids: np.ndarray, depth: int) -> np.ndarray:
        """Cross-encoder scores of the first ``depth`` of ``ids`` (NaN beyond), one batch per query."""
        return self.reranker.score_candidates([self.user_text(q)], ids[None, :], self.catalogue.texts, depth=depth)[0]

    # ------------------------------------------------------------------------------------------- output
    def table(self, ids: np.ndarray, scores: np.ndarray, history: np.ndarray, stage: str | None = None
              ) -> pd.DataFrame:
        """Recommendations as a frame with titles and "because you liked ..." (:func:`because`); the
        columns are :data:`~recsys_llm.serve.listing.COLUMNS`."""
        return records_frame(self.rows(ids, scores, history, stage))

    def rows(self, ids: np.ndarray, scores: np.ndarray, history: np.ndarray, stage: str | None = None
             ) -> list[dict[str, Any]]:
        """The recommendations as plain records (what the service answers; :meth:`table` as a frame)."""
        return listing_rows(self.catalogue, Listing(ids, scores, history, stage or self.served.label))

    # ------------------------------------------------------------------------------------ external ids
    def recommend(self, user_id: str, k: int = 10, exclude: Sequence[str] = (), filters: Mapping[str, Any] | None = None,
                  served: ServedConfig | None = None) -> pd.DataFrame:
        """Top-``k`` for a known user (external id) as a table with titles and explanations."""
        return self.table(*self.list_user(user_id, k, exclude, filters, served))

    def list_user(self, user_id: str, k: int = 10, exclude: Sequence[str] = (),
                  filters: Mapping[str, Any] | None = None, served: ServedConfig | None = None) -> Listing:
        """:meth:`recommend` before the table: the ranked ids and scores (:meth:`rows` makes records)."""
        u = self.user_internal(user_id)
        extra = self.item_internal(exclude, "exclude") if len(exclude) else np.empty(0, np.int64)
        r = self.rank(users=[u], k=k, exclude=[np.union1d(self.known[u], extra)], filters=filters, served=served)
        return Listing(r.ids[0], r.scores[0], self.known[u], r.stage)

    def recommend_new(self, items: Sequence[str] = (), text: str | None = None, k: int = 10,
                      filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Top-``k`` for a new user from a few liked items (external ids, oldest first) and/or a text."""
        return self.table(*self.list_new(items, text, k, filters))

    def list_new(self, items: Sequence[str] = (), text: str | None = None, k: int = 10,
                 filters: Mapping[str, Any] | None = None) -> Listing:
        """:meth:`recommend_new` before the table."""
        if len(set(map(str, items))) != len(items):
            raise ValueError(f"items: ids repeated in {list(items)}; give each item once")
        hist = self.item_internal(items) if len(items) else np.empty(0, np.int64)
        r = self.rank(histories=[hist], texts=[text or ""], k=k, filters=filters)
        return Listing(r.ids[0], r.scores[0], hist, r.stage)

    def add_items(self, new_items: pd.DataFrame, source: str = "new items", upsert: bool = False) -> np.ndarray:
        """Description-only items join the index, recommendable by the very next query (persisted first)."""
        return self.catalogue.add(new_items, self.encoder, self.cfg.text.item_max_tokens, source, upsert)

    def retire_items(self, item_ids: Sequence[str], source: str = "items") -> np.ndarray:
        """Items leave the index and are never served again (persisted first)."""
        return self.catalogue.retire(item_ids, source)

    def similar(self, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Item-to-item: the ``k`` live items nearest to ``item``'s vector, the item itself excluded."""
        scores, ids = self.catalogue.index.search(self.catalogue.vectors[item : item + 1], k, exclude=[[item]])
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    def search(self, text: str, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Text-to-item: ``text`` encoded by the user tower, then searched in the index."""
        scores, ids = self.catalogue.index.search(self.encode_user_texts([text]), k)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]


def recommend(run_dir: str | Path, user_id: str, k: int = 10, rerank: bool = True) -> pd.DataFrame:
    """One-off: load the run and recommend for one known user with its served configuration (``rerank=False``:
    its first stage only). For more than one call, load a :class:`Recommender` once and call
    :meth:`Recommender.recommend` (loading is most of the cost).

    Returns:
        Columns ``rank, item, item_id, title, score, stage, because_item_id, because, because_similarity``.
    """
    rec = Recommender.load(run_dir)
    served = None if rerank or not rec.served.reranks else ServedConfig(rec.served.first_stage, chosen_by="rerank=False")
    return rec.recommend(str(user_id), k=k, served=served)
