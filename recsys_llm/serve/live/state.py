"""The live state of a served run: the :class:`Recommender` plus every change of the log, applied in order.

:class:`LiveRecommender` wraps one loaded :class:`Recommender` and its :class:`ChangeLog`. :meth:`sync` applies
what other workers appended (one ``stat`` when nothing changed); the write methods check a change against the
current state, append it (fsynced) under the log's lock, then apply it through the same code as a replay, so
a restarted or second worker ends in the same state.

Interactions update the user at once: their history (what is excluded, what the collaborative part reads)
and their stored user vectors (the text vector encoded by the writer and logged with the events, the pooled
or sequence one recomputed from the history); a new user id becomes a known user. A user whose text vector
could not be logged (``recsys-llm`` API callers without an encoder) is ranked from their history, encoded per
query, until the next refresh. :meth:`write_refresh` folds the interactions into the collaborative part: its per-item
interaction counts (the trust of each item's collaborative score) grow by the new interactions, stale users'
vectors are recomputed; the item-item matrix itself is kept (``recsys-llm hybrid`` refits it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recsys_llm.data.ids import IdMap
from recsys_llm.serve.catalogue import UnknownIdError
from recsys_llm.serve.listing import Listing
from recsys_llm.serve.live.changelog import ChangeLog, decode_vectors, encode_vectors
from recsys_llm.serve.recommender import HISTORY_MODELS, Query, Recommender
from recsys_llm.serve.served import ServedConfig

logger = logging.getLogger(__name__)


@dataclass
class Counters:
    """What the log has done to this worker since it started (``/health`` and ``refresh`` report it)."""

    applied: int = 0
    items_added: int = 0
    items_retired: int = 0
    interactions: int = 0
    new_users: int = 0
    refreshes: int = 0
    skipped: list[str] = field(default_factory=list)


class LiveRecommender:
    """A :class:`Recommender` kept in step with the run's change log (see the module docstring)."""

    def __init__(self, rec: Recommender, log: ChangeLog | None = None) -> None:
        self.rec = rec
        self.log = log or ChangeLog.for_run(rec.run.root)
        self.stale: set[int] = set()  # users whose stored vectors miss their latest interactions
        self.pending: list[tuple[int, int]] = []  # (user, item) not folded into the collaborative counts yet
        self.counters = Counters()
        for model in self.user_models():  # loaded now: the rows grow with new users
            if rec.known:
                rec.stored_vectors(model)
            else:  # a catalogue without users: every user will come from the feedback loop
                rec._stored[model] = np.zeros((0, rec.catalogue.vectors.shape[1]), np.float32)
        if rec.users is None:
            rec.users = IdMap(np.empty(0, dtype=object))
        self.sync()

    @classmethod
    def load(cls, run_dir: str, device: str | None = None) -> LiveRecommender:
        return cls(Recommender.load(run_dir, device=device))

    def user_models(self) -> list[str]:
        """The stored user vectors the served first stages read (``text`` and/or ``pooling`` / ``sequence``)."""
        models = {"text"} if self.rec.served.first_stage == "dense" else set()
        if self.rec.hybrid is not None and self.rec.served.first_stage == "hybrid":
            models.add(self.rec.hybrid.user_model)
        return sorted(models)

    # ---------------------------------------------------------------------------------------- the log
    def sync(self) -> int:
        """Apply the entries other writers appended; returns how many."""
        entries = self.log.read_new()
        for e in entries:
            self._apply(e)
        return len(entries)

    def _apply(self, e: Mapping[str, Any]) -> None:
        op = e.get("op")
        try:
            if op == "add":
                items = pd.DataFrame(e["items"])
                self.rec.catalogue.add_embedded(items, decode_vectors(e["vectors"]), "change log",
                                                bool(e.get("upsert")), persist=False)
                self.counters.items_added += len(items)
            elif op == "retire":
                self.rec.catalogue.retire(e["items"], "change log", persist=False)
                self.counters.items_retired += len(e["items"])
            elif op == "interact":
                self._apply_events(e["events"], e.get("text_vectors"))
            elif op == "refresh":
                self._fold()
            else:
                raise ValueError(f"unknown op {op!r}")
            self.counters.applied += 1
        except (ValueError, KeyError) as err:  # a log line the current artifacts reject: say so, keep serving
            msg = f"change log line {self.log.seq}: {op} not applied ({err})"
            logger.warning(msg)
            self.counters.skipped.append(msg)

    def _write(self, entries: list[dict[str, Any]]) -> None:
        """Append ``entries`` (lock held, state synced and checked by the caller) and apply them."""
        self.log.append(entries)
        self.sync()

    # ------------------------------------------------------------------------------------- items
    def check_items(self, items: pd.DataFrame, upsert: bool) -> list[str]:
        """The texts to encode for ``items``; raises ``ValueError`` (what is wrong) before anything changes."""
        return self.rec.catalogue.render(items, "items", upsert)

    def write_items(self, items: pd.DataFrame, emb: np.ndarray, upsert: bool) -> np.ndarray:
        """Log and apply items already encoded; call with the log's lock held (after :meth:`sync`)."""
        self.rec.catalogue.render(items, "items", upsert)  # checked again against the synced state
        records = items.astype(object).where(items.notna(), "").to_dict(orient="records")
        self._write([{"op": "add", "items": records, "upsert": upsert, "vectors": encode_vectors(emb)}])
        return self.rec.item_internal(items["item_id"].astype(str).tolist())

    def write_retire(self, item_ids: Sequence[str]) -> np.ndarray:
        ids = self.rec.item_internal(list(item_ids), "items")
        absent = ~self.rec.catalogue.index.contains(ids)
        if absent.any():
            raise ValueError(f"items: already retired: {np.asarray(item_ids, dtype=object)[absent].tolist()[:5]}")
        self._write([{"op": "retire", "items": [str(i) for i in item_ids]}])
        return ids

    # ------------------------------------------------------------------------------ interactions
    def _histories_after(self, events: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """User id -> their history with ``events`` appended (in timestamp order; nothing changes yet).

        Raises:
            UnknownIdError: an item id the catalogue does not have.
        """
        rec = self.rec
        assert rec.users is not None
        out: dict[str, np.ndarray] = {}
        for ev in sorted(events, key=lambda ev: ev.get("timestamp") or 0):
            item = int(rec.item_internal([str(ev["item_id"])], "interactions.item_id")[0])
            uid = str(ev["user_id"])
            if uid not in out:
                u = rec.users.lookup(uid)
                out[uid] = rec.known[u] if u >= 0 else np.empty(0, np.int64)
            if item not in set(out[uid].tolist()):
                out[uid] = np.append(out[uid], np.int64(item))
        return out

    def interaction_texts(self, events: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """User id -> the text the text user model encodes for them after ``events`` ({} when the served first
        stage reads no text user vectors). The writer encodes them and logs the vectors with the events."""
        if "text" not in self.user_models():
            return {}
        return {uid: self.rec.user_text(Query(history=h)) for uid, h in self._histories_after(events).items()}

    def write_interactions(self, events: list[dict[str, Any]], text_vectors: Mapping[str, np.ndarray] | None = None
                           ) -> dict[str, int]:
        """Log and apply interactions (``user_id``, ``item_id``, ``timestamp``, optional ``rating``) with the
        users' new text vectors (:meth:`interaction_texts` encoded); without them those users are ranked from
        their history, encoded per query, until the next refresh."""
        self._histories_after(events)  # unknown items fail here, before anything is written
        entry: dict[str, Any] = {"op": "interact", "events": events}
        if text_vectors:
            users = sorted(text_vectors)
            entry["text_vectors"] = {"users": users, **encode_vectors(np.stack([text_vectors[u] for u in users]))}
        before = len(self.rec.known)
        self._write([entry])
        return {"interactions": len(events), "new_users": len(self.rec.known) - before}

    def _apply_events(self, events: Sequence[Mapping[str, Any]], text_vectors: Mapping[str, Any] | None) -> None:
        rec = self.rec
        vectors = {}
        if text_vectors:
            vectors = dict(zip(text_vectors["users"], decode_vectors(text_vectors), strict=True))
        for uid, hist in self._histories_after(events).items():
            u = self._user_or_new(uid)
            rec.known[u] = hist
            if not self._set_user_vectors(u, vectors.get(uid)):
                self.stale.add(u)
        for ev in events:
            self.pending.append((rec.user_internal(str(ev["user_id"])),
                                 int(rec.item_internal([str(ev["item_id"])], "interactions.item_id")[0])))
        self.counters.interactions += len(events)

    def _set_user_vectors(self, u: int, text_vector: np.ndarray | None) -> bool:
        """Store user ``u``'s vectors for their current history; False when a text vector is needed and absent."""
        models = self.user_models()
        if "text" in models and text_vector is None:
            return False
        for model in models:
            vec = text_vector if model == "text" else self._user_vectors([u], model)[0]
            self.rec._stored[model][u] = vec
        self.stale.discard(u)
        return True

    def _user_or_new(self, user_id: str) -> int:
        rec = self.rec
        assert rec.users is not None
        u = rec.users.lookup(user_id)
        if u >= 0:
            return u
        rec.users = IdMap(np.concatenate([rec.users.external, np.array([user_id], dtype=object)]))
        rec.known.append(np.empty(0, np.int64))
        for model, vectors in rec._stored.items():
            rec._stored[model] = np.vstack([vectors, np.zeros((1, vectors.shape[1]), vectors.dtype)])
        self.counters.new_users += 1
        return len(rec.known) - 1

    # ------------------------------------------------------------------------------------ refresh
    def write_refresh(self) -> dict[str, Any]:
        """Log a refresh and fold the pending interactions in (see :meth:`_fold`); what it did."""
        users, events = sorted(self.stale), len(self.pending)
        items = len({i for _, i in self.pending})
        self._write([{"op": "refresh"}])
        return {"interactions_folded": events, "users_recomputed": len(users), "items_with_new_counts": items,
                "user_models": self.user_models(),
                "collaborative": "per-item interaction counts (trust) updated; the item-item matrix is kept "
                                 "(`recsys-llm hybrid` refits it)" if self._has_cf() else "none in this run"}

    def _has_cf(self) -> bool:
        return self.rec.hybrid is not None and self.rec.hybrid.cf is not None

    def _fold(self) -> None:
        rec, users = self.rec, sorted(self.stale)
        if users:
            for model in self.user_models():
                rec._stored[model][users] = self._user_vectors(users, model)
        if self._has_cf() and self.pending:
            assert rec.hybrid is not None and rec.hybrid.cf is not None
            n = max(len(rec.hybrid.cf.counts), len(rec.catalogue.vectors))
            counts = np.zeros(n, np.int64)
            counts[: len(rec.hybrid.cf.counts)] = rec.hybrid.cf.counts
            np.add.at(counts, np.array([i for _, i in self.pending], np.int64), 1)
            rec.hybrid.cf.counts = counts
        self.stale.clear()
        self.pending.clear()
        self.counters.refreshes += 1

    def _user_vectors(self, users: list[int], model: str) -> np.ndarray:
        rec = self.rec
        if model in HISTORY_MODELS:
            return rec.history_vectors(model, [rec.known[u] for u in users])
        texts = [rec.user_text(Query(history=rec.known[u])) for u in users]
        return rec.encode_user_texts(texts)

    # ------------------------------------------------------------------------------------- reading
    def user_query_text(self, user: int) -> str | None:
        """The text a stale user's query encodes (text user model), None when nothing needs encoding."""
        if user not in self.stale or "text" not in self.user_models():
            return None
        return self.rec.user_text(Query(history=self.rec.known[user]))

    def query(self, user_id: str, exclude: Sequence[str] = ()) -> Query:
        """The ranking query of a user: their stored vector, or their updated history when stale."""
        rec = self.rec
        u = rec.user_internal(user_id)
        extra = rec.item_internal(exclude, "exclude") if len(exclude) else np.empty(0, np.int64)
        skip = [np.union1d(rec.known[u], extra)]
        if u in self.stale:
            return rec.queries(histories=[rec.known[u]], texts=[""], exclude=skip)[0]
        return rec.queries(users=[u], exclude=skip)[0]

    def recommend(self, user_id: str, k: int = 10, exclude: Sequence[str] = (),
                  filters: Mapping[str, Any] | None = None, served: ServedConfig | None = None) -> pd.DataFrame:
        """:meth:`Recommender.recommend`, with a stale user ranked from their updated history."""
        return self.rec.table(*self.list_user(user_id, k, exclude, filters, served))

    def list_user(self, user_id: str, k: int = 10, exclude: Sequence[str] = (),
                  filters: Mapping[str, Any] | None = None, served: ServedConfig | None = None) -> Listing:
        """:meth:`recommend` before the table (:meth:`Recommender.rows` makes the records the service sends)."""
        rec = self.rec
        u = rec.user_internal(user_id)
        if u not in self.stale:
            return rec.list_user(user_id, k, exclude, filters, served)
        extra = rec.item_internal(exclude, "exclude") if len(exclude) else np.empty(0, np.int64)
        hist = rec.known[u]
        r = rec.rank(histories=[hist], texts=[""], k=k, exclude=[np.union1d(hist, extra)], filters=filters,
                     served=served)
        return Listing(r.ids[0], r.scores[0], hist, r.stage)

    def history(self, user_id: str) -> np.ndarray:
        return self.rec.known[self.rec.user_internal(user_id)]


__all__ = ["Counters", "LiveRecommender", "UnknownIdError"]
