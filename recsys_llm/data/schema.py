"""The canonical data set every loader produces and every later stage reads.

Canonical schema (dtypes exact):

``interactions`` (one row per event, sorted by ``user`` then ``timestamp``, stable):
    ``user`` int64 (0..n_users-1), ``item`` int64 (0..n_items-1), ``timestamp`` int64 (seconds since epoch;
    the row position when the source has no time), ``rating`` float32 (NaN when the source has none).
``items`` (one row per catalog item, row i has ``item == i``):
    ``item`` int64, ``item_id`` str (external id), ``title`` str, and any text columns as str
    (``genres``, ``tags``, ``description``, ...; "" when missing). Items may have no interactions at all
    (description-only items for cold start).
``users``: ``user`` int64, ``user_id`` str (external id).
``holdout`` (optional): the data set's own split, one row per user: ``user_id``, ``valid_item_id``,
    ``test_item_id`` (external ids, str); :func:`recsys_llm.data.splits.make_split` reproduces it.

Artifacts: ``<run>/data/{interactions,items,users}.parquet`` (+ ``holdout.parquet``) + ``<run>/data/dataset.json``
(name, sources, counts, fingerprint, dropped-row report).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_llm.io_utils import atomic_write_json, atomic_write_with, load_json

INTERACTION_COLUMNS = ("user", "item", "timestamp", "rating")


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write a frame without its index (the callback of :func:`~recsys_llm.io_utils.atomic_write_with`)."""
    df.to_parquet(path, index=False)


@dataclass
class Dataset:
    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    sources: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    """Rows dropped, counted per reason: bad rows under ``on_bad_rows='drop'``, exact duplicates always."""
    holdout: pd.DataFrame | None = None
    """The data set's own validation and test item per user (``user_id, valid_item_id, test_item_id``)."""
    tag_rows: pd.DataFrame | None = None
    """User tags behind ``items["tags"]``: canonical ``item`` and ``user`` (-1: a user without interactions),
    ``tag``, ``timestamp``; not saved (``prepare`` rebuilds the column from the training period's rows)."""

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def text_columns(self) -> list[str]:
        return [c for c in self.items.columns if c not in ("item", "item_id")]

    def fingerprint(self) -> str:
        """sha256 over the canonical interactions and item ids: equal data, equal fingerprint."""
        h = hashlib.sha256()
        for col in INTERACTION_COLUMNS:
            h.update(np.ascontiguousarray(self.interactions[col].to_numpy()).tobytes())
        h.update("\x00".join(self.items["item_id"].astype(str)).encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sources": self.sources,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": len(self.interactions),
            "text_columns": self.text_columns,
            "dropped": self.dropped,
            "fingerprint": self.fingerprint(),
            "holdout_users": 0 if self.holdout is None else len(self.holdout),
        }

    def validate(self) -> None:
        """Check the canonical invariants; raises ValueError naming the broken one."""
        inter, items, users = self.interactions, self.items, self.users
        if list(inter.columns[:4]) != list(INTERACTION_COLUMNS):
            raise ValueError(f"interactions columns {list(inter.columns)}; expected {list(INTERACTION_COLUMNS)}")
        if not np.array_equal(items["item"].to_numpy(), np.arange(len(items))):
            raise ValueError("items.item must be 0..n_items-1 in row order")
        if not np.array_equal(users["user"].to_numpy(), np.arange(len(users))):
            raise ValueError("users.user must be 0..n_users-1 in row order")
        if len(inter) and (inter["item"].min() < 0 or inter["item"].max() >= len(items)):
            raise ValueError("interaction item id outside the catalog")
        if len(inter) and (inter["user"].min() < 0 or inter["user"].max() >= len(users)):
            raise ValueError("interaction user id outside the user table")

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        for name in ("interactions", "items", "users", "holdout"):
            df: pd.DataFrame | None = getattr(self, name)
            if df is not None:
                atomic_write_with(folder / f"{name}.parquet", partial(write_parquet, df))
        atomic_write_json(folder / "dataset.json", self.summary())

    @classmethod
    def load(cls, folder: str | Path) -> Dataset:
        folder = Path(folder)
        meta_path = folder / "dataset.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path} not found; run `recsys-llm prepare` first")
        meta = load_json(meta_path)
        return cls(
            name=meta["name"],
            interactions=pd.read_parquet(folder / "interactions.parquet"),
            items=pd.read_parquet(folder / "items.parquet"),
            users=pd.read_parquet(folder / "users.parquet"),
            sources=meta.get("sources", []),
            dropped=meta.get("dropped", {}),
            holdout=pd.read_parquet(folder / "holdout.parquet") if meta.get("holdout_users") else None,
        )
