"""Cold start and catalog updates: items join, change or leave the index without retraining or rebuilding.

* :func:`add_items`: description-only items are rendered with the run's item template, embedded with the
  fine-tuned encoder and added to the saved index; with ``upsert=True`` items already in the catalog get
  their new text and vector instead of an error.
* :func:`retire_items`: items leave the index (they are never recommended again); their rows stay in the
  catalog so old logs still resolve.

Changes are kept beside the prepared catalog, so the run's evaluation artifacts stay untouched:
``<run>/coldstart/items.parquet`` (one row per added or updated item, column ``item`` = internal id) with
``item_emb.npy`` (same rows; re-embedded by ``recsys-llm embed``) and ``retired.npy`` (internal ids).
:func:`full_catalog` returns the catalog with them applied, and ``recsys-llm index build`` indexes exactly
that (:func:`recsys_llm.pipeline.catalog_vectors`). New internal ids continue after the catalog's
(``data.ids.extend_ids``, the one id remapping place). The index is saved first: if a later write fails,
the side files still describe items the index may hold, never the reverse.

Example:
    >>> import pandas as pd
    >>> new = pd.DataFrame({"item_id": ["new-1"], "title": ["Orbit (2026)"],
    ...                     "description": ["A space station crew fights to get home."]})
    >>> add_items("runs/demo", new)        # doctest: +SKIP
    >>> retire_items("runs/demo", ["1"])   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_llm.data.ids import IdMap, extend_ids, normalise_external
from recsys_llm.io_utils import atomic_save_npy, atomic_write_with, load_npy
from recsys_llm.pipeline import Context, RunDir, load_embeddings, load_encoder, load_run_index
from recsys_llm.text.templates import item_texts

logger = logging.getLogger(__name__)


def full_catalog(run_dir: str | Path) -> pd.DataFrame:
    """The run's catalog with every cold-start addition and update applied (row i has item == i)."""
    run = RunDir(Path(run_dir))
    items = pd.read_parquet(run.require(run.data / "items.parquet", "prepare"))
    extra = run.coldstart / "items.parquet"
    if not extra.exists():
        return items
    rows = pd.read_parquet(extra)
    merged = pd.concat([items[~items["item"].isin(rows["item"])], rows], ignore_index=True)
    return merged.sort_values("item", kind="stable").reset_index(drop=True).fillna("")


def _catalog_ids(catalog: pd.DataFrame) -> IdMap:
    return IdMap(catalog["item_id"].astype(str).to_numpy(dtype=object))


def add_items(run_dir: str | Path, new_items: pd.DataFrame, source: str = "new items",
              upsert: bool = False) -> np.ndarray:
    """Embed items from their text alone with the fine-tuned encoder and add them to the run's index.

    Args:
        run_dir: a run with a trained encoder and a built index.
        new_items: ``item_id`` plus text columns (``title`` required; ``description``, ``genres``, ...).
        source: name used in error messages (e.g. the file the items came from).
        upsert: items whose ``item_id`` is already in the catalog get the new text and vector (and come
            back if retired); without it they are an error.

    Returns:
        The internal ids of the items, in input order.

    Raises:
        ValueError: missing ``item_id``/``title`` column, empty frame, repeated ids, or (without ``upsert``)
            ids already in the catalog.
    """
    missing = [c for c in ("item_id", "title") if c not in new_items.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {list(new_items.columns)}")
    if new_items.empty:
        raise ValueError(f"{source}: no items to add")
    ctx = Context.load(run_dir)
    catalog = full_catalog(run_dir)
    idmap = _catalog_ids(catalog)
    external = normalise_external(new_items["item_id"])
    if external.duplicated().any():
        raise ValueError(f"{source}: item ids repeated: {external[external.duplicated()].tolist()[:5]}; "
                         "each item needs one row")
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
    texts = item_texts(rows, ctx.cfg.text.item_template)

    _, _, meta = load_embeddings(ctx.run)
    index = load_run_index(ctx.run, meta)
    encoder = load_encoder(ctx.run, ctx.cfg.train.device)
    emb = encoder.encode_items(texts, ctx.cfg.text.item_max_tokens, show_progress=len(texts) > 256)
    replaced = index.upsert(emb, ids)

    folder = ctx.run.coldstart
    prev_rows, prev_emb = folder / "items.parquet", folder / "item_emb.npy"
    if prev_rows.exists():
        old = pd.read_parquet(prev_rows)
        keep = ~old["item"].isin(ids).to_numpy()
        all_rows = pd.concat([old[keep], rows], ignore_index=True).fillna("")
        all_emb = np.concatenate([load_npy(prev_emb)[keep], emb])
    else:
        all_rows, all_emb = rows, emb
    retired = _retired(ctx.run)
    index.metadata = {**index.metadata, "coldstart_items": int(len(all_rows))}
    index.save(ctx.run.index)
    atomic_save_npy(prev_emb, all_emb)
    atomic_write_with(prev_rows, lambda p: all_rows.to_parquet(p, index=False))
    if np.isin(retired, ids).any():
        atomic_save_npy(folder / "retired.npy", retired[~np.isin(retired, ids)])
    logger.info("%d items indexed (%d new, %d replaced) in %s", len(ids), len(ids) - replaced, replaced,
                ctx.run.index)
    return ids


def _retired(run: RunDir) -> np.ndarray:
    path = run.coldstart / "retired.npy"
    return load_npy(path).astype(np.int64) if path.exists() else np.empty(0, dtype=np.int64)


def retire_items(run_dir: str | Path, item_ids, source: str = "items") -> np.ndarray:
    """Remove items (external ids) from the run's index; they stay in the catalog for old logs.

    Returns:
        The internal ids removed.

    Raises:
        ValueError: an id is not in the catalog, or not in the index (already retired); nothing is removed.
    """
    ctx = Context.load(run_dir)
    external = normalise_external(pd.Series(list(item_ids), dtype=object))
    if external.empty:
        raise ValueError(f"{source}: no item ids given")
    ids = _catalog_ids(full_catalog(run_dir)).to_internal(external)
    if (ids < 0).any():
        raise ValueError(f"{source}: item ids not in the catalog: {external[ids < 0].tolist()[:5]}; nothing "
                         "removed")
    _, _, meta = load_embeddings(ctx.run)
    index = load_run_index(ctx.run, meta)
    absent = ~index.contains(ids)
    if absent.any():
        raise ValueError(f"{source}: item ids not in the index (already retired?): "
                         f"{external[absent].tolist()[:5]}; nothing removed")
    index.remove(ids)
    index.save(ctx.run.index)
    atomic_save_npy(ctx.run.coldstart / "retired.npy", np.union1d(_retired(ctx.run), ids))
    logger.info("retired %d items from %s", len(ids), ctx.run.index)
    return ids
