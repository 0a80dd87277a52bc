"""Description-only mode: a catalog with no interactions at all still gets item-to-item and text-to-item
recommendations.

* :func:`build_catalog`: items file (``item_id``, ``title``, optional ``description``, ``genres``, ``tags``)
  -> a run directory without interactions: ``config.json``, ``data/`` (the canonical catalog, an empty
  interaction table), ``text/items.jsonl``, ``embeddings/`` (item vectors; ``user_emb.npy`` is ``(0, dim)``)
  and ``index/``, the same artifacts and metadata as a trained run, so ``recsys-llm index stats | build |
  evaluate`` work on it too. Items are embedded by the untuned backbone ``cfg.encoder`` (zero-shot), or by
  the fine-tuned encoder of another run (``encoder_run``; copied into ``<run>/encoder/`` so the run stands
  alone). The whole run is written to a temporary folder and renamed into place: a failed build leaves
  nothing, and rebuilding an existing catalog run replaces it only once the new one is complete.
* :func:`similar_items`: item-to-item, the item's own vector searched in the index (the item excluded).
* :func:`search_text`: text-to-item, free text encoded as a user/query by the run's encoder.

Both query functions serve a description-only run and a normal trained run alike (items added by
``coldstart add-items`` included, retired items never returned).

Item template: with the default ``text.item_template`` the template that renders the most of the file's
text columns is used (``title_description`` for ``item_id,title,description``) and written to the run's
config; a template set explicitly is kept, and a column it renders that the file lacks is an error.

CLI::

    recsys-llm coldstart catalog --items products.csv --run-dir runs/shop
    recsys-llm coldstart catalog --items products.csv --run-dir runs/shop --encoder-run runs/demo
    recsys-llm coldstart catalog --items products.csv --run-dir runs/shop --set index.factory=HNSW32
    recsys-llm coldstart similar --item sku-42 -k 5 --run-dir runs/shop
    recsys-llm coldstart search --text "a waterproof jacket for hiking" --run-dir runs/shop

Example:
    >>> summary = build_catalog("products.csv", "runs/shop")          # doctest: +SKIP
    >>> similar_items("runs/shop", "sku-42", k=5)                      # doctest: +SKIP
    >>> search_text("runs/shop", "a waterproof jacket for hiking")    # doctest: +SKIP
       rank item_id                 title     score
    0     1  sku-17  Storm shell jacket  0.61...
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_llm.artifacts import encoder_identity
from recsys_llm.config import PipelineConfig
from recsys_llm.data.canonical import canonical_catalog
from recsys_llm.data.checks import BadRows, Check, DataError, Table, blank, existing, missing_column
from recsys_llm.data.readers import read_any
from recsys_llm.data.schema import INTERACTION_COLUMNS, Dataset
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.io_utils import atomic_dir, atomic_save_npy, atomic_write_json, load_json
from recsys_llm.run import RunDir, write_jsonl
from recsys_llm.serve.catalogue import UnknownIdError
from recsys_llm.serve.recommender import Recommender
from recsys_llm.stages.index import build_tuned_index, query_sample
from recsys_llm.text.templates import item_texts, pick_item_template

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- build
def _read_catalog(items: pd.DataFrame | str | Path, on_bad_rows: str) -> tuple[pd.DataFrame, str]:
    """Items (frame or csv/tsv/jsonl/parquet file) -> canonical catalog (``item`` = 0..n-1) and its source name.

    The checks are the data loader's: file, row and column named; ``on_bad_rows='drop'`` drops bad rows.
    """
    problems = BadRows(on_bad_rows)
    if isinstance(items, pd.DataFrame):
        source = "items (DataFrame)"
        table = Table(items.reset_index(drop=True), source, np.arange(1, len(items) + 1, dtype=np.int64))
        if len(table) == 0:
            raise DataError(f"{source}: no rows; a catalog needs at least one item")
    else:
        table = read_any(existing(Path(items), "items file"), problems)
        source = table.file
    for col in ("item_id", "title"):
        if col not in table.frame.columns:
            raise missing_column(table, col)
    if "item" in table.frame.columns:
        raise DataError(f"{source}: column 'item' is reserved for the internal item index; rename it")
    empty = Check("empty_title", "title", blank(table.frame["title"]),
                  lambda i: "title is empty; every item needs a title (it is embedded and shown in results)")
    table, _ = problems.apply(table, [empty])
    catalog = canonical_catalog(table, problems).items  # empty and repeated ids
    if catalog.empty:
        raise DataError(f"{source}: no items left after dropping bad rows; fix the file")
    return catalog, source


def _encoder_folder(encoder_run: str | Path) -> Path:
    """A run directory (its ``encoder/``) or an encoder folder itself."""
    path = Path(encoder_run)
    if (path / "encoder.json").is_file():
        return path
    return RunDir(path).require(RunDir(path).encoder, "finetune")


def _replaceable(run: RunDir) -> None:
    """A catalog may be (re)built into a new or empty folder, or over an earlier description-only run."""
    root = run.root
    if not root.exists():
        return
    if not root.is_dir():
        raise ValueError(f"{root}: exists and is not a folder; choose another --run-dir")
    meta = run.embeddings() / "embeddings.json"
    if any(root.iterdir()) and not (meta.is_file() and load_json(meta).get("catalog_only")):
        raise ValueError(f"{root}: already holds files that are not a description-only catalog (a trained run?); "
                         "building a catalog there would replace them. Choose a new --run-dir or delete it")


def _check_backend(cfg: PipelineConfig) -> None:
    if cfg.index.backend == "milvus":
        raise ValueError("coldstart catalog writes its run atomically, which a Milvus store cannot follow; build "
                         "it with index.backend=faiss or exact, then `recsys-llm index build --run-dir RUN --set "
                         "index.backend=milvus`")


def _catalog_index(cfg: PipelineConfig, vectors: np.ndarray, ids: np.ndarray):
    """The configured index over the items; an approximate one is tuned with items as queries (no users here:
    item-to-item is what a catalog serves). Returns ``(index, reason, tuned)``."""
    index, reason, tuned = build_tuned_index(cfg, vectors, ids, query_sample(vectors, cfg.index.tune_queries,
                                                                              cfg.eval.seed))
    return index, reason, {**tuned, "queries_from": "items"} if tuned else tuned


def build_catalog(items: pd.DataFrame | str | Path, run_dir: str | Path, cfg: PipelineConfig | None = None,
                  encoder_run: str | Path | None = None) -> dict:
    """Embed and index a catalog that has no interactions, as a run directory (see the module doc).

    Args:
        items: a frame or a csv/tsv/jsonl/parquet file with ``item_id``, ``title`` and optional text columns.
        run_dir: where the run goes: a new or empty folder, or an earlier description-only run (replaced).
        cfg: settings (default :class:`PipelineConfig`); ``encoder``, ``text``, ``index``, ``train.device``
            and ``data.on_bad_rows`` are used. Saved as the run's ``config.json``.
        encoder_run: embed with this run's fine-tuned encoder (a run directory or its ``encoder/`` folder)
            instead of the untuned ``cfg.encoder`` backbone.

    Returns:
        Summary: ``run_dir, n_items, dim, index, factory, choice, encoder, encoder_run, zero_shot,
        item_template, seconds``.

    Raises:
        ValueError: bad items (missing column, empty, repeated ids, empty title: file, row and column
            named), a template needing absent columns, a Milvus backend, or a run_dir holding another run.
        FileNotFoundError: the items file or the encoder run's ``encoder/`` is missing.

    Example:
        >>> build_catalog("products.csv", "runs/shop")["n_items"]  # doctest: +SKIP
        1250
    """
    t0 = time.perf_counter()
    cfg = cfg or PipelineConfig()
    run = RunDir(Path(run_dir))
    _replaceable(run)
    _check_backend(cfg)
    catalog, source = _read_catalog(items, cfg.data.on_bad_rows)
    template = pick_item_template(catalog.columns, cfg.text.item_template, source, require_columns=True)
    if encoder_run is None:
        encoder = TwoTowerEncoder.from_config(cfg.encoder, lora=False, device=cfg.train.device)
    else:
        encoder = TwoTowerEncoder.load(_encoder_folder(encoder_run), device=cfg.train.device)
    cfg = dataclasses.replace(cfg, encoder=encoder.config,
                              text=dataclasses.replace(cfg.text, item_template=template))
    texts = item_texts(catalog, template)
    emb = encoder.encode_items(texts, cfg.text.item_max_tokens)  # (n, dim)
    ids = catalog["item"].to_numpy(dtype=np.int64)
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                          zip(INTERACTION_COLUMNS, ("int64", "int64", "int64", "float32"), strict=True)})
    users = pd.DataFrame({"user": pd.Series(dtype="int64"), "user_id": pd.Series(dtype=str)})
    ds = Dataset("catalog", empty, catalog, users, sources=[source])
    ds.validate()
    zero_shot = encoder_run is None
    meta = {"zero_shot": zero_shot, "encoder": encoder_identity(encoder, cfg, zero_shot), "dim": encoder.dim,
            "data_fingerprint": ds.fingerprint(), "n_items": len(emb), "n_users": 0, "catalog_only": True,
            "encoder_run": None if encoder_run is None else str(Path(encoder_run).resolve())}
    index, reason, tuned = _catalog_index(cfg, emb, ids)
    index.metadata = {"encoder": meta["encoder"], "data_fingerprint": meta["data_fingerprint"],
                      "choice": reason, "tuned": tuned}
    with atomic_dir(run.root, carry_over=False) as tmp:  # the old run (if any) stays until this completes
        new = RunDir(tmp)
        cfg.save(new.config)
        ds.save(new.data)
        write_jsonl(new.text / "items.jsonl", [{"item": i, "text": t} for i, t in enumerate(texts)])
        if not zero_shot:
            encoder.save(new.encoder)
        out = new.embeddings()
        atomic_save_npy(out / "item_emb.npy", emb)
        atomic_save_npy(out / "item_ids.npy", ids)
        atomic_save_npy(out / "user_emb.npy", np.zeros((0, encoder.dim), dtype=np.float32))
        atomic_save_npy(out / "user_ids.npy", np.zeros(0, dtype=np.int64))
        atomic_write_json(out / "embeddings.json", meta)
        index.save(new.index)
    info = index.info()
    summary = {"run_dir": str(run.root), "n_items": int(info["ntotal"]), "dim": encoder.dim, "index": info["kind"],
               "factory": info["params"].get("factory", info["kind"]), "choice": reason, "encoder": meta["encoder"],
               "encoder_run": meta["encoder_run"], "zero_shot": zero_shot, "item_template": template,
               "seconds": round(time.perf_counter() - t0, 2)}
    logger.info("catalog of %d items (dim %d) -> %s in %.1f s", len(ids), encoder.dim, run.root, summary["seconds"])
    return summary


# ------------------------------------------------------------------------------------------------- query
def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k={k}; ask for at least one item")


def _results(rec: Recommender, ids: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    catalog = rec.catalogue.catalog
    return pd.DataFrame({
        "rank": np.arange(1, len(ids) + 1),
        "item_id": catalog["item_id"].astype(str).to_numpy()[ids],
        "title": catalog["title"].astype(str).to_numpy()[ids],
        "score": scores.astype(np.float32),
    })


def similar_items(run_dir: str | Path, item_id: str, k: int = 10) -> pd.DataFrame:
    """Item-to-item: the ``k`` indexed items nearest to ``item_id``'s vector, the item itself excluded.

    Returns:
        Columns ``rank, item_id, title, score`` (cosine similarity), best first.

    Raises:
        ValueError: ``item_id`` is not in the run's catalog (a few known ids are named), or ``k < 1``.

    Example:
        >>> similar_items("runs/shop", "sku-42", k=3)["title"].tolist()  # doctest: +SKIP
        ['Storm shell jacket', 'Trail rain jacket', 'Packable windbreaker']
    """
    _check_k(k)
    rec = Recommender.load(run_dir, served=None)
    try:
        internal = int(rec.item_internal([str(item_id)])[0])
    except UnknownIdError:
        sample = ", ".join(rec.catalogue.catalog["item_id"].astype(str).head(5))
        raise UnknownIdError(f"item {item_id!r} is not in the catalog of {rec.run.root} (ids look like {sample})"
                             ) from None
    return _results(rec, *rec.similar(internal, k))


def search_text(run_dir: str | Path, text: str, k: int = 10) -> pd.DataFrame:
    """Text-to-item: ``text`` encoded as a user/query by the run's encoder, then searched in its index.

    Returns:
        Columns ``rank, item_id, title, score`` (cosine similarity), best first.

    Raises:
        ValueError: empty ``text``, ``k < 1``, or the run's encoder did not make its item embeddings.

    Example:
        >>> search_text("runs/shop", "a waterproof jacket for hiking", k=3)  # doctest: +SKIP
    """
    _check_k(k)
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text is empty; describe what you are looking for, e.g. 'a movie about astronauts'")
    rec = Recommender.load(run_dir)
    return _results(rec, *rec.search(text.strip(), k))
