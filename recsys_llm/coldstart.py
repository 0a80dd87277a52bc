"""Cold start: items that exist only as descriptions join the index without retraining.

New items are rendered with the run's item template, embedded with the fine-tuned encoder and added to the
saved index. They are kept beside the original catalog (``<run>/coldstart/items.parquet`` and
``item_emb.npy``) so the evaluation artifacts of the run stay untouched; :func:`full_catalog` returns both.
New internal ids continue after the catalog's (``data.ids.extend_ids``, the one id remapping place).

Example:
    >>> import pandas as pd
    >>> new = pd.DataFrame({"item_id": ["new-1"], "title": ["Orbit (2026)"],
    ...                     "description": ["A space station crew fights to get home."]})
    >>> add_items("runs/demo", new)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_llm.data.ids import IdMap, extend_ids
from recsys_llm.io_utils import atomic_save_npy, atomic_write_with, load_npy
from recsys_llm.pipeline import Context, RunDir, load_embeddings, load_encoder, load_run_index
from recsys_llm.text.templates import item_texts

logger = logging.getLogger(__name__)


def _coldstart_dir(run: RunDir) -> Path:
    return run.root / "coldstart"


def full_catalog(run_dir: str | Path) -> pd.DataFrame:
    """The run's catalog plus every cold-start item added since (row i has item == i)."""
    run = RunDir(Path(run_dir))
    items = pd.read_parquet(run.require(run.data / "items.parquet", "prepare"))
    extra = _coldstart_dir(run) / "items.parquet"
    if extra.exists():
        items = pd.concat([items, pd.read_parquet(extra)], ignore_index=True).fillna("")
    return items


def add_items(run_dir: str | Path, new_items: pd.DataFrame, source: str = "new items") -> np.ndarray:
    """Embed description-only items with the fine-tuned encoder and add them to the run's index.

    Args:
        run_dir: a run with a trained encoder and a built index.
        new_items: ``item_id`` plus text columns (``title`` required; ``description``, ``genres``, ...).
        source: name used in error messages (e.g. the file the items came from).

    Returns:
        The internal ids given to the new items.

    Raises:
        ValueError: missing ``item_id``/``title`` column, empty frame, or ids already in the catalog.
    """
    missing = [c for c in ("item_id", "title") if c not in new_items.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {list(new_items.columns)}")
    if new_items.empty:
        raise ValueError(f"{source}: no items to add")
    ctx = Context.load(run_dir)
    catalog = full_catalog(run_dir)
    _, new_ids = extend_ids(IdMap(catalog["item_id"].astype(str).to_numpy(dtype=object)), new_items["item_id"])
    rows = new_items.copy()
    for col in rows.columns:
        if col != "item_id":
            rows[col] = rows[col].fillna("").astype(str)
    rows["item_id"] = rows["item_id"].astype(str)
    rows.insert(0, "item", new_ids)
    texts = item_texts(rows, ctx.cfg.text.item_template)

    _, _, meta = load_embeddings(ctx.run)
    index = load_run_index(ctx.run, meta)
    encoder = load_encoder(ctx.run, ctx.cfg.train.device)
    emb = encoder.encode_items(texts, ctx.cfg.text.item_max_tokens, show_progress=len(texts) > 256)
    index.add(emb, new_ids)

    folder = _coldstart_dir(ctx.run)
    prev = folder / "items.parquet"
    all_rows = pd.concat([pd.read_parquet(prev), rows], ignore_index=True).fillna("") if prev.exists() else rows
    prev_emb = folder / "item_emb.npy"
    all_emb = np.concatenate([load_npy(prev_emb), emb]) if prev_emb.exists() else emb
    # Index first: if saving it fails, the side files still describe the last good index.
    index.metadata = {**index.metadata, "coldstart_items": int(len(all_rows))}
    index.save(ctx.run.index)
    atomic_save_npy(prev_emb, all_emb)
    atomic_write_with(prev, lambda p: all_rows.to_parquet(p, index=False))
    logger.info("added %d cold-start items (ids %d..%d) to %s", len(new_ids), new_ids[0], new_ids[-1], ctx.run.index)
    return new_ids
