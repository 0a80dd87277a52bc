"""End to end through the CLI on a tiny random BERT and synthetic generic-format files (fast)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recsys_llm.cli import main


def test_demo_writes_every_artifact(tiny_run):
    for rel in ["config.json", "data/interactions.parquet", "splits/train.parquet", "splits/cold.parquet",
                "text/items.jsonl", "encoder/encoder.json", "encoder/train_log.jsonl",
                "embeddings/item_emb.npy", "embeddings_zeroshot/item_emb.npy", "index/index.faiss",
                "index/index.json", "candidates/warm.npz", "candidates/cold-item.npz", "reranker/reranker.json",
                "ranked/warm.npz", "served.json", "hybrid/user_pooled.npy", "hybrid/user_sequence.npy", "report.json", "report.md",
                "timings.json"]:
        assert (tiny_run / rel).exists(), rel
    emb = np.load(tiny_run / "embeddings/item_emb.npy")
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-4)


def test_report_has_every_model_and_baseline_with_intervals(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text())
    got = {(r["model"], r["slice"]) for r in report["rows"]}
    models = {"random", "most popular", "ItemKNN", "EASE", "EASE, recency-weighted query", "SASRec",
              "BM25 (item text)", "zero-shot backbone",
              "fine-tuned retrieval", "fine-tuned + rerank", "fine-tuned, pooled user", "fine-tuned, sequence user",
              "hybrid (text + collaborative)",
              "ID only (hybrid's collaborative part)", "served"}
    slices = {r["slice"] for r in report["rows"]}
    assert {"warm", "cold-item"} <= slices <= {"warm", "cold-item", "cold-user"}
    assert got == {(m, s) for m in models for s in slices}
    for r in report["rows"]:
        m = r["metrics"]
        assert {"Recall@10", "NDCG@10", "MRR@10", "HitRate@10", "Recall@50", "NDCG@50", "Coverage@10",
                "Novelty@10", "ARP@10", "Gini@10", "ILD@10"} <= set(m)
        assert all(0.0 <= m[k] <= 1.0 for k in ("Recall@10", "NDCG@10", "Coverage@10", "Gini@10"))
        low, high = r["ci"]["NDCG@10"]
        assert low <= m["NDCG@10"] <= high
    # ID-based baselines cannot tell cold items apart: popularity gives them all 0 training interactions
    cold_pop = next(r for r in report["rows"] if r["model"] == "most popular" and r["slice"] == "cold-item")
    assert cold_pop["metrics"]["ARP@10"] == 0.0
    assert report["data"]["fingerprint"] and report["config"]["split"]["cold_item_fraction"] == 0.2
    assert report["protocol"]["ranking"] == "full" and "git_commit" in report and report["seeds"]["train"] == 0
    paired = {(p["slice"], p["model"], p["metric"]) for p in report["paired"]}
    assert ("warm", "fine-tuned retrieval", "NDCG@10") in paired
    assert len(report["curves"]["ks"]) == 50 and len(report["curves"]["NDCG"]["EASE"]["warm"]) == 50
    for png in ("recall_at_k.png", "ndcg_at_k.png", "slices_ndcg.png", "popularity_of_recommendations.png"):
        assert (tiny_run / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tiny_run / "report.md").read_text()
    assert "paired bootstrap" in md and "**" in md


def test_report_has_the_ablation_and_the_few_shot_checks(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text())
    by_slice = {(e["slice"], e["combined"]["model"]): e for e in report["ablation"]}
    slices = {r["slice"] for r in report["rows"]}
    assert {(s, "hybrid (text + collaborative)") for s in slices} <= set(by_slice)
    served = json.loads((tiny_run / "served.json").read_text())["first_stage"]
    assert (("warm", "served") in by_slice) == (served == "hybrid")
    warm = by_slice[("warm", "hybrid (text + collaborative)")]
    rows = {(r["model"], r["slice"]): r["metrics"]["NDCG@10"] for r in report["rows"]}
    id_rows = ["most popular", "ItemKNN", "EASE", "EASE, recency-weighted query", "SASRec",
               "ID only (hybrid's collaborative part)"]
    assert warm["id_only"]["mean"] == pytest.approx(max(rows[(m, "warm")] for m in id_rows))
    assert rows[(warm["id_only"]["model"], "warm")] == pytest.approx(warm["id_only"]["mean"])
    d = warm["text_adds"]
    assert d["diff"] == pytest.approx(warm["combined"]["mean"] - warm["id_only"]["mean"]) and d["low"] <= d["high"]
    assert by_slice[("cold-item", "hybrid (text + collaborative)")]["id_only"]["blind"]  # popularity: all 0
    assert any(e["slice"].startswith("few-shot item, n=") for e in report["ablation"])
    assert [c["side"] for c in report["few_shot_checks"]] == ["item", "user"]
    assert all("ablation" not in fs and "check" not in fs for fs in report["few_shot"].values() if fs)
    md = (tiny_run / "report.md").read_text()
    assert "## Ablation: what text adds over ID-only" in md and "## Few-shot checks of the hybrid's curves" in md
    assert "* item side: non-decreasing within intervals:" in md


def test_report_sweeps_rerank_depth_and_fusion_against_retrieval(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text())
    sweep = report["rerank_sweep"]
    slices = {r["slice"] for r in sweep}
    assert {(r["depth"], r["weight"]) for r in sweep} == {(d, w) for d in (3, 6) for w in (0.0, 0.5, 1.0)}
    rows = {(r["model"], r["slice"]): r["metrics"] for r in report["rows"]}
    for r in sweep:
        gain = r["NDCG@10 gain"]
        assert gain["low"] <= gain["diff"] <= gain["high"]
        retrieval = rows[("fine-tuned retrieval", r["slice"])]["NDCG@10"]
        assert r["NDCG@10"] - retrieval == pytest.approx(gain["diff"], abs=1e-6)
        if r["weight"] == 0.0:  # no reranker share: exactly the retrieval order
            assert gain["diff"] == 0.0
        if r["headline"]:  # the dense rerank setting chosen on validation by `select`
            chosen = json.loads((tiny_run / "served.json").read_text())["validation"]["dense_rerank"]
            assert (r["depth"], r["weight"]) == (chosen["depth"], chosen["weight"])
            assert r["NDCG@10"] == pytest.approx(rows[("fine-tuned + rerank", r["slice"])]["NDCG@10"], abs=1e-9)
    assert sum(r["headline"] for r in sweep) == len(slices)
    paired = [p for p in report["paired"] if p["baseline"] == "fine-tuned retrieval"]
    assert {p["slice"] for p in paired} == slices
    assert {p["model"] for p in paired} == {"fine-tuned + rerank", "fine-tuned, pooled user", "fine-tuned, sequence user",
                                            "hybrid (text + collaborative)", "served"}
    assert "by rerank depth and fusion weight" in (tiny_run / "report.md").read_text()
    with np.load(tiny_run / "ranked" / "warm.scores.npz") as z:
        assert np.isfinite(z["rerank"][:, :6][z["ids"][:, :6] >= 0]).all() and np.isnan(z["rerank"][:, 6:]).all()


def test_seen_items_never_recommended(tiny_run):
    from recsys_llm.retrieve import Candidates
    from recsys_llm.run import Context

    ctx = Context.load(tiny_run)
    known = ctx.known_histories()
    for name in ("candidates/warm.npz", "ranked/warm.npz", "candidates/cold-item.npz"):
        c = Candidates.load(tiny_run / name)
        for u, ids in zip(c.users, c.ids, strict=True):
            assert not set(ids.tolist()) & set(known[u].tolist())
    cold = Candidates.load(tiny_run / "candidates/cold-item.npz")
    assert set(cold.ids[cold.ids >= 0].tolist()) <= set(ctx.split.cold_items.tolist())


def test_recommend_prints_titles_with_the_served_configuration(tiny_run, capsys):
    served = json.loads((tiny_run / "served.json").read_text())
    assert main(["recommend", "--run-dir", str(tiny_run), "--user", "u3", "-k", "5"]) == 0
    out = capsys.readouterr().out
    assert f"top 5 ({served['first_stage']}" in out and out.count(". Item ") == 5


def test_unknown_user_is_a_clear_error(tiny_run, capsys):
    assert main(["recommend", "--run-dir", str(tiny_run), "--user", "nobody"]) == 2
    assert "user 'nobody' is not known to this run" in capsys.readouterr().err


def test_coldstart_items_become_recommendable(tiny_run, tmp_path):
    import shutil

    from recsys_llm.artifacts import load_embeddings, load_run_index
    from recsys_llm.coldstart import full_catalog
    from recsys_llm.run import RunDir
    from recsys_llm.serve import Recommender, ServedConfig

    tiny_run = shutil.copytree(tiny_run, tmp_path / "run")  # the shared run stays as the fixture built it
    new = tmp_path / "new.csv"
    pd.DataFrame({"item_id": ["n1", "n2"], "title": ["Orbit", "Soup"],
                  "genres": ["space rocket astronaut", "cooking recipe kitchen"]}).to_csv(new, index=False)
    n_before = len(full_catalog(tiny_run))
    assert main(["coldstart", "add-items", "--run-dir", str(tiny_run), "--items", str(new)]) == 0
    catalog = full_catalog(tiny_run)
    assert len(catalog) == n_before + 2 and catalog["item_id"].iloc[-1] == "n2"
    run = RunDir(tiny_run)
    _, _, meta = load_embeddings(run)
    index = load_run_index(run, meta)
    assert {n_before, n_before + 1} <= set(index.ids.tolist())
    # the new item is reachable: its own embedding retrieves it first
    emb = np.load(tiny_run / "coldstart/item_emb.npy")
    assert index.search(emb[:1], 1)[1][0, 0] == n_before
    recs = Recommender.load(tiny_run, served=ServedConfig("dense")).recommend("u0", k=len(catalog))
    assert {"Orbit", "Soup"} <= set(recs["title"])
    # adding the same ids again is refused, naming them
    assert main(["coldstart", "add-items", "--run-dir", str(tiny_run), "--items", str(new)]) == 2


def test_bad_input_is_an_error_not_a_traceback(tmp_path, capsys):
    assert main(["prepare", "--run-dir", str(tmp_path / "r"), "--dataset", "no-such-set"]) == 2
    assert "no-such-set" in capsys.readouterr().err
    assert main(["finetune", "--run-dir", str(tmp_path / "missing")]) == 2
    assert "recsys-llm prepare" in capsys.readouterr().err
    assert main(["prepare", "--run-dir", str(tmp_path / "r"), "--set", "train.batch_size=1"]) == 2
    assert "train.batch_size=1" in capsys.readouterr().err


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("prepare", "finetune", "embed", "index", "retrieve", "rerank", "recommend", "evaluate",
                "coldstart", "demo"):
        assert cmd in out


def test_public_api_resolves_lazily():
    import subprocess
    import sys

    import recsys_llm

    for name in recsys_llm.__all__:
        assert getattr(recsys_llm, name) is not None, name
    # importing the package alone must not pull in torch (fast CLI start, light imports)
    code = "import sys, recsys_llm; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_finetune_stage_validates_checkpoints_and_resumes(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    sets = ["--set", "train.eval_every=2", "--set", "train.checkpoint_every=2", "--set", "train.max_steps=4"]
    assert main(["finetune", "--run-dir", str(run), *sets]) == 0
    assert (run / "encoder" / "best" / "best.json").exists()
    assert sorted(p.name for p in (run / "encoder" / "checkpoints").iterdir())[-1] == "step-000004"
    log = [json.loads(line) for line in (run / "encoder" / "train_log.jsonl").read_text().splitlines()]
    assert any("val_ndcg@10" in r for r in log)
    assert main(["finetune", "--run-dir", str(run), "--resume"]) == 0  # finished run: nothing left to train


def test_select_chooses_the_served_configuration_on_validation(tiny_run, tmp_path, capsys):
    import shutil

    log = [json.loads(line) for line in (tiny_run / "reranker" / "rerank_log.jsonl").read_text().splitlines()]
    assert "val_retrieval_ndcg@10" in log[0] and any("val_ndcg@10" in r for r in log)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["select", "--run-dir", str(run)]) == 0
    assert "served:" in capsys.readouterr().out
    served = json.loads((run / "served.json").read_text())
    grid = {(g["first_stage"], g["rerank_depth"], g["rerank_weight"]): g["val_ndcg@10"]
            for g in served["validation"]["grid"]}
    expected = {(s, 0, 1.0) for s in ("dense", "hybrid")} | {
        (s, d, w) for s in ("dense", "hybrid") for d in (3, 6) for w in (0.5, 1.0)}
    assert set(grid) == expected
    best = (served["first_stage"], served["rerank_depth"], served["rerank_weight"])
    top = max(grid, key=grid.get)
    assert served["chosen_by"] == "validation" and served["validation"]["rule"] == "one standard error"
    # the one-standard-error rule: the best, or a simpler setting (shallower or no reranking) close to it
    assert best == top or (best[1] <= top[1] and grid[best] >= grid[top] - 0.1), (best, top, grid)
    dense = served["validation"]["dense_rerank"]
    assert grid[("dense", dense["depth"], dense["weight"])] == max(v for k, v in grid.items()
                                                                  if k[0] == "dense" and k[1] > 0)
    assert main(["rerank", "apply", "--run-dir", str(run)]) == 0
    assert main(["evaluate", "--run-dir", str(run)]) == 0
    report = json.loads((run / "report.json").read_text())
    heads = [r for r in report["rerank_sweep"] if r["headline"]]
    assert heads and all((r["depth"], r["weight"]) == (dense["depth"], dense["weight"]) for r in heads)
    assert report["served"]["first_stage"] == served["first_stage"]
