"""Stage ``export``: the run's fine-tuned encoder and cross-encoder as ONNX graphs for fast CPU inference.

Writes ``export/`` atomically (a temporary folder beside it, then renames)::

    export.json          format, the precision served, source fingerprints, graphs + sha256, the checks
    encoder.onnx         LoRA merged, pooling + L2 normalisation inside: (input_ids, attention_mask) -> (b, dim)
    encoder.int8.onnx    --int8: dynamic int8 weights (per output channel)
    reranker.onnx        when the run has a reranker: the pair tensors -> (b,) scores
    reranker.int8.onnx   --int8

``export.json`` records the versions of the encoder (adapter sha256) and of the reranker (hash of its files)
the graphs were made from (:func:`recsys_llm.lineage.versions`): after ``finetune`` or ``rerank train`` runs
again, :func:`recsys_llm.artifacts.load_export` refuses the stale graphs and says to export again. Each
export is checked against torch on the run's own texts (128 items, 64 users; 64 pairs): the float32 encoder
graph must give cosine > 0.999 to torch float32 or nothing is written; int8 cosines and score correlations
are recorded as measured. ``encoder.backend = onnx`` (or ``--backend onnx``) then encodes and reranks with
the graphs of the precision exported last (``--int8``: int8).

Example:
    >>> export_models("runs/demo", fmt="onnx", int8=True)["precision"]  # doctest: +SKIP
    'int8'
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, cast

import numpy as np

from recsys_llm import lineage
from recsys_llm.artifacts import EXPORT_FILE, export_graphs, load_encoder, reading
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.encoder.onnx_encoder import OnnxTextEncoder, export_encoder
from recsys_llm.encoder.onnx_graph import quantize_int8
from recsys_llm.io_utils import atomic_dir, atomic_write_json, file_sha256
from recsys_llm.rerank.cross_encoder import CrossEncoder
from recsys_llm.rerank.onnx_reranker import OnnxCrossEncoder, export_cross_encoder
from recsys_llm.run import Context, timed

logger = logging.getLogger(__name__)

FORMATS = ("onnx",)
MIN_COSINE_FP32 = 0.999
"""The float32 graph must reproduce torch float32 embeddings to this cosine (every checked text)."""


def _encoder_check(encoder: TwoTowerEncoder, folder: Path, precisions: list[str], ctx: Context) -> dict:
    """Cosine of each graph's embeddings to torch float32 on the run's first 128 items and 64 users."""
    cfg = ctx.cfg
    texts = {"items": (ctx.item_texts()[:128], cfg.text.item_max_tokens),
             "users": (ctx.user_texts()[:64], cfg.text.user_max_tokens)}
    ref = {k: encoder.encode_items(t, m, show_progress=False) for k, (t, m) in texts.items()}
    out: dict[str, Any] = {}
    for p in precisions:
        onnx = OnnxTextEncoder.load(folder / export_graphs("encoder", p), encoder.fingerprint(), encoder.config, p)
        cos = np.concatenate([(onnx.encode_items(t, m, show_progress=False) * ref[k]).sum(1)
                              for k, (t, m) in texts.items()])
        out[p] = {"cosine_min": round(float(cos.min()), 6), "cosine_mean": round(float(cos.mean()), 6),
                  "texts": len(cos)}
    if out["fp32"]["cosine_min"] < MIN_COSINE_FP32:
        raise ValueError(f"the exported encoder does not reproduce torch: cosine {out['fp32']['cosine_min']} < "
                         f"{MIN_COSINE_FP32} on the run's texts; nothing was written (report this with the backbone)")
    return out


def _reranker_check(model: CrossEncoder, folder: Path, precisions: list[str], ctx: Context) -> dict:
    """Max |score difference| and Pearson correlation to torch float32 on 64 (user, item) pairs of the run."""
    users, items = ctx.user_texts(), ctx.item_texts()
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, len(users), 64), rng.integers(0, len(items), 64)
    pairs = ([users[j] for j in u], [items[j] for j in i])
    ref = model.score(*pairs)
    out = {}
    for p in precisions:
        onnx = OnnxCrossEncoder.load(folder / export_graphs("reranker", p), model.backbone, model.cfg, p)
        got = onnx.score(*pairs)
        corr = float(np.corrcoef(got, ref)[0, 1]) if np.std(ref) > 0 and np.std(got) > 0 else 1.0
        out[p] = {"max_abs_diff": round(float(np.abs(got - ref).max()), 6), "pearson": round(corr, 6),
                  "pairs": len(ref)}
    return out


@timed("export")
def export_models(run_dir: str | Path, fmt: str = "onnx", int8: bool = False) -> dict:
    """Export the run's encoder (and reranker, when trained) as ONNX graphs into ``export/``; returns export.json.

    Raises:
        ValueError: an unknown ``fmt``; the run has no fine-tuned encoder; onnx/onnxruntime missing; the float32
            graph does not reproduce torch.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: only {', '.join(FORMATS)} is supported")
    ctx = Context.load(run_dir)
    run = ctx.run
    encoder = cast(TwoTowerEncoder, load_encoder(run, "cpu", backend="torch"))
    encoder.config = dataclasses.replace(encoder.config, inference_precision="fp32")
    model = None
    if run.reranker.exists():
        with reading(run, run.reranker, "rerank train"):
            model = CrossEncoder.load(run.reranker, device="cpu")
    precisions = ["fp32", "int8"] if int8 else ["fp32"]
    sources = lineage.versions(run.root)
    with atomic_dir(run.export, carry_over=False) as tmp:
        export_encoder(encoder, tmp / export_graphs("encoder", "fp32"), ctx.cfg.text.item_max_tokens)
        if model is not None:
            export_cross_encoder(model, tmp / export_graphs("reranker", "fp32"))
        if int8:
            for name in ["encoder"] + (["reranker"] if model is not None else []):
                quantize_int8(tmp / export_graphs(name, "fp32"), tmp / export_graphs(name, "int8"))
        checks = {"encoder": _encoder_check(encoder, tmp, precisions, ctx)}
        if model is not None:
            checks["reranker"] = _reranker_check(model, tmp, precisions, ctx)
        manifest: dict[str, Any] = {
            "format": fmt, "precision": precisions[-1], "precisions": precisions,
            "source": {"finetune": sources["finetune"], "rerank-train": sources["rerank-train"] if model else None},
            "encoder": encoder.fingerprint(),
            "reranker": None if model is None else {"backbone": model.backbone, "rerank": dataclasses.asdict(model.cfg)},
            "graphs": {f.name: file_sha256(f) for f in sorted(tmp.glob("*.onnx"))},
            "checks": checks,
        }
        atomic_write_json(tmp / EXPORT_FILE, manifest)
    logger.info("exported %s to %s", ", ".join(manifest["graphs"]), run.export)
    return manifest
