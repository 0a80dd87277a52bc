"""The live catalogue: items join, change or leave the index without retraining or rebuilding.

* :meth:`LiveCatalogue.add`: description-only items are rendered with the run's item template, embedded with
  the run's encoder and added to the index; with ``upsert=True`` items already in the catalog get their new
  text and vector instead of an error.
* :meth:`LiveCatalogue.retire`: items leave the index (never recommended again); their rows stay in the
  catalog so old logs still resolve.

Changes are kept beside the prepared catalog, so the run's evaluation artifacts stay untouched:
``<run>/coldstart/items.parquet`` (one row per added or updated item, column ``item`` = internal id) with
``item_emb.npy`` (same rows; re-embedded by ``recsys-llm embed``) and ``retired.npy`` (internal ids); they
are read back by :func:`recsys_llm.artifacts.full_catalog` / :func:`~recsys_llm.artifacts.catalog_vectors`,
and ``recsys-llm index build`` indexes exactly that. New internal ids continue after the catalog's
(``data.ids.extend_ids``, the one id remapping place). The index is saved first: if a later write fails, the
side files still describe items the index may hold, never the reverse.

Example:
    >>> cat = LiveCatalogue.load(RunDir("runs/demo"), "title_genres_tags")                  # doctest: +SKIP
    >>> cat.add(pd.DataFrame({"item_id": ["new-1"], "title": ["Orbit (2026)"]}), encoder)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recsys_llm.artifacts import full_catalog, item_vectors, load_embeddings, load_run_index, retired_items
from recsys_llm.data.ids import IdMap, extend_ids, normalise_external
from recsys_llm.encoder.onnx_encoder import TextEncoder
from recsys_llm.index.base import VectorIndex
from recsys_llm.io_utils import atomic_save_npy, atomic_write_with
from recsys_llm.run import ArtifactError, RunDir, read_json, read_npy, read_parquet
from recsys_llm.text.templates import item_texts

logger = logging.getLogger(__name__)


class UnknownIdError(ValueError):
    """A user or item id the run does not know (the service answers 404)."""


@dataclass
class LiveCatalogue:
    """Catalog rows, item vectors (row = internal id), the index of live items and their texts.

    Attributes:
        run: the run directory changes are persisted to.
        template: the run's item template (new items are rendered with it).
        catalog: every item ever in the run, row ``i`` = internal id ``i``.
        vectors: ``(n, dim)`` float32, row = internal id.
        index: the live items (retired ones removed).
        texts: rendered item texts, row = internal id (what the reranker reads).
        meta: the embeddings' ``embeddings.json`` (encoder identity, data fingerprint).
    """

    run: RunDir
    template: str
    catalog: pd.DataFrame
    vectors: np.ndarray
    index: VectorIndex
    texts: list[str]
    meta: dict
    prepared_items: int
    _derived: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def load(cls, run: RunDir, template: str, use_gpu: str = "auto") -> LiveCatalogue:
        item_emb, _, meta = load_embeddings(run)
        catalog = full_catalog(run)
        data_fp = read_json(run, run.data / "dataset.json", "prepare").get("fingerprint")
        if meta.get("data_fingerprint") != data_fp:
            raise ArtifactError(run.embeddings(), f"made for other data (fingerprint {meta.get('data_fingerprint')}; "
                                f"data/ now holds {data_fp})", "embed (and the stages after it)", run.root)
        return cls(run, template, catalog, item_vectors(run, item_emb), load_run_index(run, meta, use_gpu),
                   item_texts(catalog, template), meta, len(item_emb))

    def _cached(self, name: str, make: Callable[[], Any]) -> Any:
        """``make()`` computed once per catalog frame (changes replace the frame, never edit it in place)."""
        if self._derived.get("catalog") is not self.catalog:
            self._derived = {"catalog": self.catalog}
        if name not in self._derived:
            self._derived[name] = make()
        return self._derived[name]

    @property
    def idmap(self) -> IdMap:
        return self._cached("idmap", lambda: IdMap(self.catalog["item_id"].astype(str).to_numpy(dtype=object)))

    @property
    def titles(self) -> np.ndarray:
        return self._cached("titles", lambda: self.catalog["title"].astype(str).to_numpy(dtype=object))

    def live_mask(self) -> np.ndarray:
        """``(n_items,)`` bool: in the index (not retired)."""
        live = np.zeros(len(self.vectors), dtype=bool)
        live[self.index.ids] = True
        return live

    def to_internal(self, item_ids: Sequence[str], source: str = "items") -> np.ndarray:
        """Internal ids of external item ids, in order; unknown ids are an error naming them."""
        if len(item_ids) <= 64 and all(isinstance(x, str) for x in item_ids):  # a request's few ids: dict lookups
            external = np.asarray([x.strip() for x in item_ids], dtype=object)
            ids = np.asarray([self.idmap.lookup(x) for x in external], dtype=np.int64)
        else:
            external = normalise_external(pd.Series(list(item_ids), dtype=object)).to_numpy(dtype=object)
            ids = self.idmap.to_internal(external)
        if (ids < 0).any():
            sample = ", ".join(self.catalog["item_id"].astype(str).head(3))
            raise UnknownIdError(f"{source}: item ids not in the catalog: {external[ids < 0].tolist()[:5]} (ids look like "
                           f"{sample}); add new items first with `recsys-llm coldstart add-items`")
        return ids.astype(np.int64)

    # ------------------------------------------------------------------------------------------- changes
    def _rows(self, new_items: pd.DataFrame, source: str, upsert: bool) -> pd.DataFrame:
        """Checked rows of ``new_items`` with their internal ids in column ``item``."""
        missing = [c for c in ("item_id", "title") if c not in new_items.columns]
        if missing:
            raise ValueError(f"{source}: missing column(s) {missing}; found {list(new_items.columns)}")
        if new_items.empty:
            raise ValueError(f"{source}: no items to add")
        external = normalise_external(new_items["item_id"])
        if external.duplicated().any():
            raise ValueError(f"{source}: item ids repeated: {external[external.duplicated()].tolist()[:5]}; "
                             "each item needs one row")
        idmap = self.idmap
        known = idmap.to_internal(external)
        if (known >= 0).any() and not upsert:
            raise ValueError(f"{source}: item ids already in the catalog: {external[known >= 0].tolist()[:5]}; "
                             "pass upsert=True (`--upsert`) to replace their text and vector, or use new ids")
        ids = known.copy()
        if (known < 0).any():
            _, ids[known < 0] = extend_ids(idmap, external[known < 0])
        rows = new_items.copy()
        for col in rows.columns:
            if col != "item_id":
                rows[col] = rows[col].fillna("").astype(str)
        rows["item_id"] = external.to_numpy()
        rows.insert(0, "item", ids)
        return rows

    def add(self, new_items: pd.DataFrame, encoder: TextEncoder, max_tokens: int, source: str = "new items",
            upsert: bool = False) -> np.ndarray:
        """Embed items from their text alone and add them to the index, persisted before returning.

        Args:
            new_items: ``item_id`` plus text columns (``title`` required; ``description``, ``genres``, ...).
            encoder: the encoder that made the run's item vectors.
            max_tokens: item text truncation (``text.item_max_tokens``).
            source: name used in error messages (e.g. the file the items came from).
            upsert: items whose ``item_id`` is already in the catalog get the new text and vector (and come
                back if retired); without it they are an error.

        Returns:
            The internal ids of the items, in input order.

        Raises:
            ValueError: missing ``item_id``/``title`` column, empty frame, repeated ids, or (without ``upsert``)
                ids already in the catalog.
        """
        texts = item_texts(self._rows(new_items, source, upsert), self.template)
        emb = encoder.encode_items(texts, max_tokens, show_progress=len(texts) > 256)
        return self.add_embedded(new_items, emb, source, upsert)

    def render(self, new_items: pd.DataFrame, source: str = "new items", upsert: bool = False) -> list[str]:
        """The texts the encoder reads for ``new_items`` (checked as :meth:`add` checks them; nothing changes)."""
        return item_texts(self._rows(new_items, source, upsert), self.template)

    def add_embedded(self, new_items: pd.DataFrame, emb: np.ndarray, source: str = "new items",
                     upsert: bool = False, persist: bool = True) -> np.ndarray:
        """:meth:`add` with vectors already encoded (``emb`` row ``i`` = ``new_items`` row ``i``); with
        ``persist=False`` only memory changes (the service persists its own change log instead)."""
        rows = self._rows(new_items, source, upsert)
        ids = rows["item"].to_numpy(dtype=np.int64)
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if emb.shape != (len(ids), self.vectors.shape[1]):
            raise ValueError(f"{source}: {emb.shape} vectors for {len(ids)} items of dim {self.vectors.shape[1]}")
        texts = item_texts(rows, self.template)
        replaced = self.index.upsert(emb, ids)
        if persist:
            self._persist_added(rows, emb, ids)
        self._apply_added(rows, emb, ids, texts)
        logger.info("%d items indexed (%d new, %d replaced) in %s", len(ids), len(ids) - replaced, replaced,
                    self.run.index)
        return ids

    def _persist_added(self, rows: pd.DataFrame, emb: np.ndarray, ids: np.ndarray) -> None:
        folder = self.run.coldstart
        prev_rows, prev_emb = folder / "items.parquet", folder / "item_emb.npy"
        if prev_rows.exists():
            old = read_parquet(self.run, prev_rows, "coldstart add-items")
            keep = ~old["item"].isin(ids).to_numpy()
            all_rows = pd.concat([old[keep], rows], ignore_index=True).fillna("")
            all_emb = np.concatenate([read_npy(self.run, prev_emb, "embed", ndim=2, rows=len(old))[keep], emb])
        else:
            all_rows, all_emb = rows, emb
        retired = retired_items(self.run)
        self.index.metadata = {**self.index.metadata, "coldstart_items": int(len(all_rows))}
        self.index.save(self.run.index)
        atomic_save_npy(prev_emb, all_emb)
        atomic_write_with(prev_rows, lambda p: all_rows.to_parquet(p, index=False))
        if np.isin(retired, ids).any():
            atomic_save_npy(folder / "retired.npy", retired[~np.isin(retired, ids)])

    def _apply_added(self, rows: pd.DataFrame, emb: np.ndarray, ids: np.ndarray, texts: list[str]) -> None:
        n = max(len(self.vectors), int(ids.max()) + 1)
        if n > len(self.vectors):
            grown = np.zeros((n, self.vectors.shape[1]), dtype=np.float32)
            grown[: len(self.vectors)] = self.vectors
            self.vectors = grown
            self.texts = self.texts + [""] * (n - len(self.texts))
        self.vectors[ids] = emb
        for i, t in zip(ids.tolist(), texts, strict=True):
            self.texts[i] = t
        merged = pd.concat([self.catalog[~self.catalog["item"].isin(ids)], rows], ignore_index=True)
        self.catalog = merged.sort_values("item", kind="stable").reset_index(drop=True).fillna("")

    def retire(self, item_ids: Sequence[str], source: str = "items", persist: bool = True) -> np.ndarray:
        """Remove items (external ids) from the index, persisted; they stay in the catalog for old logs.

        Returns:
            The internal ids removed.

        Raises:
            ValueError: an id is not in the catalog, or not in the index (already retired); nothing is removed.
        """
        external = normalise_external(pd.Series(list(item_ids), dtype=object))
        if external.empty:
            raise ValueError(f"{source}: no item ids given")
        ids = self.idmap.to_internal(external)
        if (ids < 0).any():
            raise ValueError(f"{source}: item ids not in the catalog: {external[ids < 0].tolist()[:5]}; nothing "
                             "removed")
        absent = ~self.index.contains(ids)
        if absent.any():
            raise ValueError(f"{source}: item ids not in the index (already retired?): "
                             f"{external[absent].tolist()[:5]}; nothing removed")
        self.index.remove(ids)
        if persist:
            self.index.save(self.run.index)
            atomic_save_npy(self.run.coldstart / "retired.npy", np.union1d(retired_items(self.run), ids))
        logger.info("retired %d items from %s", len(ids), self.run.index)
        return ids
