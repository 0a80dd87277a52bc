"""Loading a run's trained models and vectors, checked against each other: the one place every reader uses.

Stages, the :class:`~recsys_llm.serve.recommender.Recommender`, the report and the cold-start commands all
read encoder, embeddings, index, hybrid and reranker through these functions, so a mismatch (embeddings
made by another encoder, an index built from other embeddings, a hybrid fitted on other vectors) is refused
in one place, with the stage to rerun.

The live catalog: items added or updated after ``prepare`` (``coldstart/items.parquet`` + ``item_emb.npy``,
rows keyed by internal id) and retired items (``coldstart/retired.npy``) are applied on top of the prepared
catalog by :func:`full_catalog`, :func:`item_vectors` and :func:`catalog_vectors`.

Example:
    >>> run = RunDir("runs/demo")                          # doctest: +SKIP
    >>> item_emb, user_emb, meta = load_embeddings(run)    # doctest: +SKIP
    >>> index = load_run_index(run, meta)                  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_llm import lineage
from recsys_llm.config import PipelineConfig
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.encoder.onnx_encoder import OnnxTextEncoder, TextEncoder
from recsys_llm.encoder.user_pooling import PoolingUserModel
from recsys_llm.encoder.user_sequence import SequenceUserModel
from recsys_llm.hybrid import HybridModel
from recsys_llm.index.base import IndexMismatchError, VectorIndex
from recsys_llm.index.registry import load_index
from recsys_llm.io_utils import file_sha256
from recsys_llm.rerank.base import Reranker
from recsys_llm.rerank.cross_encoder import CrossEncoder
from recsys_llm.rerank.onnx_reranker import OnnxCrossEncoder
from recsys_llm.run import ArtifactError, Context, RunDir, read_json, read_npy, read_parquet
from recsys_llm.run import reading as run_reading

logger = logging.getLogger(__name__)

_KEEP = (IndexMismatchError,)  # index errors that already say what is wrong and what to do


def reading(run: RunDir, folder: Path, stage: str):
    """:func:`recsys_llm.run.reading` that lets the index's own mismatch errors through."""
    return run_reading(run, folder, stage, keep=_KEEP)


def load_encoder(run: RunDir, device: str = "auto", backend: str | None = None) -> TextEncoder:
    """The fine-tuned two-tower encoder of a run, encoding at the run's ``encoder.inference_precision``.

    ``backend`` (default: the run's ``encoder.backend``): ``torch``, or ``onnx`` = the run's exported graph
    (:func:`load_export`; CPU, the precision exported last).
    """
    cfg = run.load_config().encoder
    if (backend or cfg.backend) == "onnx":
        path, meta = load_export(run, "encoder")
        return OnnxTextEncoder.load(path, meta["encoder"], cfg, meta["precision"])
    with reading(run, run.encoder, "finetune"):
        encoder = TwoTowerEncoder.load(run.require(run.encoder, "finetune"), device=device)
    encoder.config.inference_precision = cfg.inference_precision
    return encoder


def load_reranker(run: RunDir, cfg: PipelineConfig) -> Reranker:
    """The trained cross-encoder, as the scoring copy ``rerank.quantize`` asks for (``encoder.backend = onnx``:
    the exported graph)."""
    folder = run.require(run.reranker, "rerank train")
    if cfg.encoder.backend == "onnx":
        path, meta = load_export(run, "reranker")
        return OnnxCrossEncoder.load(path, meta["reranker"]["backbone"], cfg.rerank, meta["precision"])
    with reading(run, folder, "rerank train"):
        return CrossEncoder.load(folder, device=cfg.train.device).for_scoring(cfg.rerank.quantize)


EXPORT_FILE = "export.json"
_EXPORT_STAGE = lineage.COMMAND["export"]
_EXPORT_SOURCE = {"encoder": "finetune", "reranker": "rerank-train"}


def export_graphs(model: str, precision: str) -> str:
    """File name of ``model``'s (``encoder`` | ``reranker``) graph at ``precision`` (``fp32`` | ``int8``)."""
    return f"{model}.onnx" if precision == "fp32" else f"{model}.{precision}.onnx"


def load_export(run: RunDir, model: str) -> tuple[Path, dict]:
    """``(graph path, export.json)`` of ``model`` (``encoder`` | ``reranker``) at the exported precision.

    Raises:
        ArtifactError: no export, no graph of ``model`` in it, or a graph changed since the export.
        StaleArtifactError: ``model`` was trained again after the export (the graph is of the old weights).
    """
    folder = run.require(run.export, _EXPORT_STAGE)
    meta = read_json(run, folder / EXPORT_FILE, _EXPORT_STAGE)
    source = _EXPORT_SOURCE[model]
    was, now = meta.get("source", {}).get(source), lineage.versions(run.root).get(source)
    if was is None:
        raise ArtifactError(folder, f"has no {model} graph (exported before `recsys-llm {lineage.COMMAND[source]}` "
                            "ran)", _EXPORT_STAGE, run.root)
    if was != now:
        raise lineage.StaleArtifactError(
            f"{folder}: stale: the ONNX {model} was exported from another {model} than the run's now "
            f"(`recsys-llm {lineage.COMMAND[source]}` ran since); rerun `recsys-llm export --run-dir {run.root} "
            f"--format onnx{' --int8' if meta.get('precision') == 'int8' else ''}`, or use --backend torch")
    path = folder / export_graphs(model, meta.get("precision", "fp32"))
    if not path.is_file() or file_sha256(path) != meta.get("graphs", {}).get(path.name):
        raise ArtifactError(path, "missing or changed since the export", _EXPORT_STAGE, run.root)
    return path, meta


def encoder_identity(encoder: TextEncoder, cfg: PipelineConfig, zero_shot: bool) -> dict:
    """What makes two sets of vectors comparable: backbone, adapter hash, pooling, dim and item template."""
    ident = dict(encoder.fingerprint())
    if zero_shot:
        ident["adapter_sha256"] = None
    ident["item_template"] = cfg.text.item_template
    return ident


def load_embeddings(run: RunDir, zero_shot: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(item_emb (n_items, d), user_emb (n_users, d), embeddings.json)``, checked for shape and NaN."""
    stage = "embed" + (" --zero-shot" if zero_shot else "")
    folder = run.require(run.embeddings(zero_shot), stage)
    meta = read_json(run, folder / "embeddings.json", stage)
    items = read_npy(run, folder / "item_emb.npy", stage, ndim=2, rows=meta.get("n_items"), finite=True)
    users = read_npy(run, folder / "user_emb.npy", stage, ndim=2, rows=meta.get("n_users"), finite=True)
    if items.shape[1] != meta.get("dim", items.shape[1]) or (len(users) and users.shape[1] != items.shape[1]):
        raise ArtifactError(folder, f"item dim {items.shape[1]}, user dim {users.shape[1]} and embeddings.json "
                            f"dim {meta.get('dim')} disagree", stage, run.root)
    return items, users, meta


def check_embeddings(ctx: Context, items: np.ndarray, users: np.ndarray, meta: dict) -> None:
    """Refuse embeddings made for another data set or split (a silently wrong number otherwise)."""
    fp = ctx.ds.fingerprint()
    problems = []
    if meta.get("data_fingerprint") != fp:
        problems.append(f"data fingerprint {meta.get('data_fingerprint')} != {fp}")
    if items.shape[0] != ctx.split.n_items:
        problems.append(f"{items.shape[0]} item embeddings for {ctx.split.n_items} items")
    if users.shape[0] != ctx.split.n_users:
        problems.append(f"{users.shape[0]} user embeddings for {ctx.split.n_users} users")
    if problems:
        raise ArtifactError(ctx.run.embeddings(bool(meta.get("zero_shot"))),
                            "made for other data than this run's: " + "; ".join(problems),
                            "embed (and the stages after it)", ctx.run.root)


def load_run_index(run: RunDir, meta: dict, use_gpu: str | None = None) -> VectorIndex:
    """The run's index, refused when it was built from other embeddings than ``meta`` describes."""
    if use_gpu is None:
        use_gpu = run.load_config().index.use_gpu
    with reading(run, run.index, "index build"):
        return load_index(run.require(run.index, "index build"), use_gpu=use_gpu,
                          expected={"dim": meta["dim"], "metadata": {"encoder": meta["encoder"],
                                                                      "data_fingerprint": meta["data_fingerprint"]}})


def load_hybrid(run: RunDir) -> tuple[HybridModel, PoolingUserModel, SequenceUserModel | None]:
    """(HybridModel, PoolingUserModel, SequenceUserModel or None when the run has none) of a run, checked
    against its current embeddings."""
    with reading(run, run.hybrid, "hybrid"):
        model = HybridModel.load(run.require(run.hybrid, "hybrid"))
        pool = PoolingUserModel.load(run.hybrid)
        seq = None
        if model.user_model == "sequence" or (run.hybrid / "user_sequence.json").exists():
            seq = SequenceUserModel.load(run.hybrid)
    meta = read_json(run, run.embeddings() / "embeddings.json", "embed")
    if model.info.get("embeddings") != meta["encoder"] or model.info.get("data_fingerprint") != meta["data_fingerprint"]:
        raise ArtifactError(run.hybrid, f"fitted on other embeddings than {run.embeddings()}", "hybrid", run.root)
    return model, pool, seq


# -------------------------------------------------------------------------------------------- live catalog
def full_catalog(run: RunDir) -> pd.DataFrame:
    """The run's catalog with every cold-start addition and update applied (row i has item == i)."""
    items = read_parquet(run, run.data / "items.parquet", "prepare")
    extra = run.coldstart / "items.parquet"
    if not extra.exists():
        return items
    rows = read_parquet(run, extra, "coldstart add-items")
    merged = pd.concat([items[~items["item"].isin(rows["item"])], rows], ignore_index=True)
    return merged.sort_values("item", kind="stable").reset_index(drop=True).fillna("")


def retired_items(run: RunDir) -> np.ndarray:
    """Internal ids of items retired from the index (never served again)."""
    path = run.coldstart / "retired.npy"
    return read_npy(run, path, "coldstart retire", ndim=1).astype(np.int64) if path.exists() else np.empty(0, np.int64)


def item_vectors(run: RunDir, item_emb: np.ndarray) -> np.ndarray:
    """Vectors of every item ever in the run (row = internal id): the prepared catalog, then cold-start
    items added or updated since (``coldstart/``; updates replace catalog rows)."""
    rows_file, emb_file = run.coldstart / "items.parquet", run.coldstart / "item_emb.npy"
    if not (rows_file.exists() and emb_file.exists()):
        return item_emb
    rows = read_parquet(run, rows_file, "coldstart add-items", ["item"])["item"].to_numpy(dtype=np.int64)
    emb = read_npy(run, emb_file, "embed", ndim=2, rows=len(rows), finite=True)
    if emb.shape[1] != item_emb.shape[1]:
        raise ArtifactError(emb_file, f"dimension {emb.shape[1]}, the catalog's is {item_emb.shape[1]}", "embed",
                            run.root)
    vectors = np.zeros((max(len(item_emb), int(rows.max()) + 1), item_emb.shape[1]), dtype=np.float32)
    vectors[: len(item_emb)] = item_emb
    vectors[rows] = emb
    return vectors


def catalog_vectors(run: RunDir, item_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the index should hold: :func:`item_vectors` minus retired items. Row ``j`` is item ``ids[j]``."""
    vectors = item_vectors(run, item_emb)
    ids = np.arange(len(vectors), dtype=np.int64)
    retired = retired_items(run)
    if len(retired):
        keep = ~np.isin(ids, retired)
        vectors, ids = vectors[keep], ids[keep]
    return vectors, ids


def outside_catalog(index: VectorIndex, n_items: int) -> np.ndarray:
    """Ids in ``index`` beyond the prepared catalog (cold-start items added since): evaluation and reranker
    training work on the prepared catalog and its split, so these are filtered like seen items."""
    ids = index.ids
    extra = ids[ids >= n_items]
    if len(extra):
        logger.info("%d items added after prepare are left out of evaluation and reranker training", len(extra))
    return extra
