"""End to end through the CLI on a tiny random BERT and synthetic generic-format files (fast)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_synthetic_dataset

from recsys_llm.cli import main


def write_generic(ds, folder):
    users, items = ds.users["user_id"].to_numpy(), ds.items["item_id"].to_numpy()
    inter = pd.DataFrame({
        "user_id": users[ds.interactions["user"]], "item_id": items[ds.interactions["item"]],
        "timestamp": ds.interactions["timestamp"], "rating": ds.interactions["rating"],
    })
    inter.to_csv(folder / "interactions.csv", index=False)
    ds.items[["item_id", "title", "genres"]].to_csv(folder / "items.csv", index=False)
    return folder / "interactions.csv", folder / "items.csv"


TINY = [
    "--set", "train.max_steps=4", "--set", "train.batch_size=8", "--set", "train.device=cpu",
    "--set", "rerank.max_steps=2", "--set", "rerank.batch_size=4", "--set", "rerank.negative_pool=8",
    "--set", "rerank.negatives=3", "--set", "rerank.depth=6", "--set", "split.cold_item_fraction=0.2",
    "--set", "text.user_max_tokens=32", "--set", "text.item_max_tokens=16", "--set", "rerank.max_tokens=48",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_bert_path):
    folder = tmp_path_factory.mktemp("tiny_run")
    inter, items = write_generic(make_synthetic_dataset(), folder)
    run = folder / "run"
    rc = main(["demo", "--run-dir", str(run), "--dataset", "generic", "--path", str(inter),
               "--items-path", str(items), "--set", f"encoder.backbone={tiny_bert_path}", *TINY])
    assert rc == 0
    return run


def test_demo_writes_every_artifact(tiny_run):
    for rel in ["config.json", "data/interactions.parquet", "splits/train.parquet", "splits/cold.parquet",
                "text/items.jsonl", "encoder/encoder.json", "encoder/train_log.jsonl",
                "embeddings/item_emb.npy", "embeddings_zeroshot/item_emb.npy", "index/index.faiss",
                "index/index.json", "candidates/warm.npz", "candidates/cold-item.npz", "reranker/reranker.json",
                "ranked/warm.npz", "report.json", "report.md", "timings.json"]:
        assert (tiny_run / rel).exists(), rel
    emb = np.load(tiny_run / "embeddings/item_emb.npy")
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-4)


def test_report_has_every_model_on_both_slices(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text())
    got = {(r["model"], r["slice"]) for r in report["rows"]}
    models = {"popularity", "zero-shot backbone", "fine-tuned retrieval", "fine-tuned + rerank"}
    assert got == {(m, s) for m in models for s in ("warm", "cold-item")}
    for r in report["rows"]:
        assert {"Recall@10", "NDCG@10", "MRR@10", "HitRate@10", "Recall@50", "NDCG@50"} <= set(r["metrics"])
        assert all(0.0 <= v <= 1.0 for k, v in r["metrics"].items() if k != "users")
    # popularity cannot rank items nobody touched in training: cold items all tie at zero
    assert report["data"]["fingerprint"] and report["config"]["split"]["cold_item_fraction"] == 0.2


def test_seen_items_never_recommended(tiny_run):
    from recsys_llm.pipeline import Context
    from recsys_llm.retrieve import Candidates

    ctx = Context.load(tiny_run)
    known = ctx.known_histories()
    for name in ("candidates/warm.npz", "ranked/warm.npz", "candidates/cold-item.npz"):
        c = Candidates.load(tiny_run / name)
        for u, ids in zip(c.users, c.ids, strict=True):
            assert not set(ids.tolist()) & set(known[u].tolist())
    cold = Candidates.load(tiny_run / "candidates/cold-item.npz")
    assert set(cold.ids[cold.ids >= 0].tolist()) <= set(ctx.split.cold_items.tolist())


def test_recommend_prints_titles(tiny_run, capsys):
    assert main(["recommend", "--run-dir", str(tiny_run), "--user", "u3", "-k", "5"]) == 0
    out = capsys.readouterr().out
    assert "top 5 (rerank)" in out and out.count(". Item ") == 5


def test_unknown_user_is_a_clear_error(tiny_run, capsys):
    assert main(["recommend", "--run-dir", str(tiny_run), "--user", "nobody"]) == 2
    assert "user 'nobody' is not in this run's data" in capsys.readouterr().err


def test_coldstart_items_become_recommendable(tiny_run, tmp_path):
    from recsys_llm.coldstart import full_catalog
    from recsys_llm.pipeline import RunDir, load_embeddings, load_run_index
    from recsys_llm.recommend import recommend

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
    recs = recommend(tiny_run, "u0", k=len(catalog), use_reranker=False)
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
