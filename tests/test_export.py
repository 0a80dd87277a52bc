"""ONNX export: the graphs reproduce torch, int8 stays close, stale exports are refused, onnx serves.

Everything runs on a copy of the tiny run of ``conftest.tiny_run`` (2-layer, 32-dim random BERT).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="ONNX export needs onnxruntime: pip install -e '.[onnx]'")
pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install -e '.[onnx]'")

from recsys_llm.artifacts import load_encoder, load_export, load_reranker  # noqa: E402
from recsys_llm.cli import main  # noqa: E402
from recsys_llm.encoder.onnx_encoder import OnnxTextEncoder  # noqa: E402
from recsys_llm.lineage import StaleArtifactError  # noqa: E402
from recsys_llm.rerank.cross_encoder import CrossEncoder  # noqa: E402
from recsys_llm.run import Context, RunDir  # noqa: E402
from recsys_llm.serve.recommender import Recommender  # noqa: E402
from recsys_llm.stages.export import export_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """A copy of the tiny run, exported with --int8 through the CLI."""
    run = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(tiny_run, run)
    assert main(["export", "--run-dir", str(run), "--format", "onnx", "--int8"]) == 0
    return run


def test_export_writes_graphs_and_record(exported):
    meta = json.loads((exported / "export" / "export.json").read_text())
    assert meta["precision"] == "int8" and meta["precisions"] == ["fp32", "int8"]
    assert set(meta["graphs"]) == {"encoder.onnx", "encoder.int8.onnx", "reranker.onnx", "reranker.int8.onnx"}
    assert meta["checks"]["encoder"]["fp32"]["cosine_min"] > 0.999
    assert meta["checks"]["reranker"]["fp32"]["max_abs_diff"] < 1e-3
    assert not list(exported.glob(".export.tmp-*"))  # written through a temporary folder


def test_onnx_encoder_matches_torch(exported):
    run = RunDir(exported)
    ctx = Context.load(exported)
    texts = ctx.item_texts() + ctx.user_texts()[:20] + [""]
    torch_enc = load_encoder(run, "cpu", backend="torch")
    torch_enc.config.inference_precision = "fp32"
    ref = torch_enc.encode_items(texts, 32, show_progress=False)
    meta = json.loads((exported / "export" / "export.json").read_text())
    onnx = load_encoder(run, backend="onnx")  # int8: the precision exported last
    assert onnx.fingerprint()["backend"] == "onnx-int8" and onnx.dim == torch_enc.dim
    assert (onnx.encode_items(texts, 32, show_progress=False) * ref).sum(1).min() > 0.98
    fp32 = OnnxTextEncoder.load(exported / "export" / "encoder.onnx", meta["encoder"], torch_enc.config)
    got = fp32.encode_users(texts, 32, batch_size=7, show_progress=False)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert (got * ref).sum(1).min() > 0.999
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_onnx_reranker_matches_torch(exported):
    run = RunDir(exported)
    cfg = run.load_config()
    ctx = Context.load(exported)
    users, items = ctx.user_texts()[:12], ctx.item_texts()[:12]
    ref = CrossEncoder.load(run.reranker, device="cpu").score(users, items)
    cfg.encoder.backend = "onnx"
    onnx = load_reranker(run, cfg)
    assert np.corrcoef(onnx.score(users, items), ref)[0, 1] > 0.98


def test_recommender_ranks_with_onnx(exported, capsys):
    rec = Recommender.load(exported, backend="onnx")
    ranked = rec.rank(texts=["space rocket astronaut"], k=5)
    assert ranked.ids.shape == (1, 5) and (ranked.ids >= 0).all()
    assert type(rec.encoder).__name__ == "OnnxTextEncoder"
    assert main(["recommend", "--run-dir", str(exported), "--user", "u0", "-k", "3", "--backend", "onnx"]) == 0
    assert main(["rerank", "apply", "--run-dir", str(exported), "--backend", "onnx"]) == 0


def test_embed_with_onnx_records_backend(exported, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported, run)
    assert main(["embed", "--run-dir", str(run), "--backend", "onnx"]) == 0
    emb = json.loads((run / "embeddings" / "embeddings.json").read_text())
    assert emb["encoder"]["backend"] == "onnx-int8"


def test_stale_export_is_refused(exported, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported, run)
    enc = json.loads((run / "encoder" / "encoder.json").read_text())
    enc["adapter_sha256"] = "0" * 64  # as if finetune ran again
    (run / "encoder" / "encoder.json").write_text(json.dumps(enc))
    with pytest.raises(StaleArtifactError, match="rerun `recsys-llm export"):
        load_export(RunDir(run), "encoder")
    (run / "export" / "reranker.int8.onnx").write_bytes(b"edited")
    with pytest.raises(ValueError, match="changed since the export"):
        load_export(RunDir(run), "reranker")


def test_bad_args_give_clear_errors(exported, tmp_path, capsys):
    assert main(["export", "--run-dir", str(exported), "--format", "tflite"]) == 2
    assert "only onnx is supported" in capsys.readouterr().err
    assert main(["export", "--run-dir", str(tmp_path / "nothing")]) == 2
    assert "config.json" in capsys.readouterr().err
    run = tmp_path / "noexport"
    shutil.copytree(exported, run, ignore=shutil.ignore_patterns("export"))
    assert main(["embed", "--run-dir", str(run), "--backend", "onnx"]) == 2
    assert "recsys-llm export --format onnx" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["embed", "--run-dir", str(run), "--backend", "tensorrt"])


def test_export_without_reranker(exported, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported, run, ignore=shutil.ignore_patterns("export", "reranker"))
    meta = export_models(run)
    assert set(meta["graphs"]) == {"encoder.onnx"} and meta["source"]["rerank-train"] is None


@pytest.mark.slow
def test_bench_export_runs_on_the_tiny_run(exported, tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(ROOT / "eval" / "bench_export.py"), "--run-dir", str(exported), "--items", "20",
                    "--users", "10", "--repeats", "1", "--variants", "onnx-int8", "--json", str(out)],
                   capture_output=True, text=True, timeout=300, check=True, env=env)
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"torch-fp32", "onnx-int8"}
    assert rows["torch-fp32"]["cosine_min"] > 0.9999 and rows["onnx-int8"]["cosine_min"] > 0.98
    assert rows["onnx-int8"]["items_per_s"] > 0 and rows["onnx-int8"]["peak_rss_mb"] > 0
