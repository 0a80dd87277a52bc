"""`recsys-llm index build | query | add | remove | stats | evaluate` on a copy of the tiny pipeline run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from recsys_llm.cli import main


@pytest.fixture
def run(tiny_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst, ignore=shutil.ignore_patterns("coldstart"))  # others add cold items to it
    assert main(["index", "build", "--run-dir", str(dst)]) == 0  # index of the catalog only
    return dst


def _index(run):
    from recsys_llm.artifacts import load_embeddings, load_run_index
    from recsys_llm.run import RunDir

    r = RunDir(run)
    return load_run_index(r, load_embeddings(r)[2])


def test_build_auto_is_flat_for_a_small_catalog_and_ivf_gets_tuned(run, capsys):
    info = json.loads((run / "index" / "index.json").read_text())
    assert info["params"]["factory"] == "Flat" and info["ntotal"] == 30
    assert info["metadata"]["choice"].startswith("auto: Flat (30 items")
    assert {"backbone", "adapter_sha256", "item_template"} <= set(info["metadata"]["encoder"])
    assert main(["index", "build", "--run-dir", str(run), "--set", "index.factory=IVF4,Flat",
                 "--set", "index.target_recall=0.99"]) == 0
    out = capsys.readouterr().out
    assert "index over 30 items" in out and "tuned nprobe=" in out
    tuned = json.loads((run / "index" / "index.json").read_text())["metadata"]["tuned"]
    k = next(key for key in tuned if key.startswith("recall@"))
    assert tuned["param"] == "nprobe" and tuned[k] >= 0.99 and 1 <= tuned["value"] <= 4
    assert _index(run).nprobe == tuned["value"]


def test_stats_and_evaluate_print_tables(run, capsys):
    assert main(["index", "build", "--run-dir", str(run), "--set", "index.factory=IVF4,Flat",
                 "--set", "index.nprobe=1"]) == 0
    capsys.readouterr()
    assert main(["index", "stats", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "kind" in out and "IVF4,Flat" in out and "bytes per item" in out and "backbone" in out
    assert main(["index", "stats", "--run-dir", str(run), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["ntotal"] == 30 and stats["bytes_per_item"] > 4 * stats["dim"]
    assert main(["index", "evaluate", "--run-dir", str(run), "-k", "5", "--queries", "20",
                 "--target-recall", "1.0", "--apply"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.startswith("exact (numpy)") for line in lines)
    rows = [line.split() for line in lines if line.startswith("nprobe=")]
    assert [r[0] for r in rows] == ["nprobe=1", "nprobe=2", "nprobe=4"]
    assert float(rows[-1][1]) == pytest.approx(1.0)  # every list searched = exact
    assert "saved into the index" in out
    picked = int(out.split("recall@5 >= 1.0: nprobe=")[1].split()[0])
    assert _index(run).nprobe == picked


def test_add_upsert_remove_and_rebuild_keep_the_catalog_and_index_in_step(run, tmp_path, capsys):
    from recsys_llm.coldstart import full_catalog
    from recsys_llm.serve.recommender import recommend

    new = tmp_path / "new.csv"
    pd.DataFrame({"item_id": ["n1"], "title": ["Orbit"], "genres": ["space rocket"]}).to_csv(new, index=False)
    assert main(["index", "add", "--run-dir", str(run), "--items", str(new)]) == 0
    assert _index(run).ntotal == 31 and "Orbit" in set(recommend(run, "u0", k=31, rerank=False)["title"])
    assert main(["index", "add", "--run-dir", str(run), "--items", str(new)]) == 2
    assert "--upsert" in capsys.readouterr().err
    # upsert: a new title for the new item and for a catalog item (id 101)
    upd = tmp_path / "upd.csv"
    pd.DataFrame({"item_id": ["n1", "101"], "title": ["Orbit II", "Renamed"],
                  "genres": ["space", "cooking"]}).to_csv(upd, index=False)
    assert main(["index", "add", "--run-dir", str(run), "--items", str(upd), "--upsert"]) == 0
    catalog = full_catalog(run)
    assert len(catalog) == 31 and (catalog["item"] == np.arange(31)).all()
    assert catalog.set_index("item_id").loc[["n1", "101"], "title"].tolist() == ["Orbit II", "Renamed"]
    assert _index(run).ntotal == 31
    # remove a catalog item and the new one: never recommended again
    assert main(["index", "remove", "--run-dir", str(run), "--items", "101", "n1"]) == 0
    titles = set(recommend(run, "u0", k=31, rerank=False)["title"])
    assert not {"Renamed", "Orbit II"} & titles and _index(run).ntotal == 29
    assert main(["index", "remove", "--run-dir", str(run), "--items", "101"]) == 2
    assert "already retired" in capsys.readouterr().err
    assert main(["index", "remove", "--run-dir", str(run), "--items", "nope"]) == 2
    assert "not in the catalog: ['nope']" in capsys.readouterr().err
    # a rebuild indexes exactly the live catalog: retired stay out
    assert main(["index", "build", "--run-dir", str(run)]) == 0
    assert sorted(_index(run).ids.tolist()) == [i for i in range(31) if i not in (1, 30)]
    # an upsert brings a retired item back
    assert main(["index", "add", "--run-dir", str(run), "--items", str(upd), "--upsert"]) == 0
    assert _index(run).contains([1, 30]).all()
    assert main(["index", "build", "--run-dir", str(run)]) == 0 and _index(run).ntotal == 31


def test_embeddings_from_another_encoder_are_refused(run, capsys):
    meta_path = run / "embeddings" / "embeddings.json"
    meta = json.loads(meta_path.read_text())
    meta["encoder"]["adapter_sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    assert main(["index", "query", "--run-dir", str(run), "--user", "u1"]) == 2
    err = capsys.readouterr().err
    assert "built for other embeddings" in err and "adapter_sha256" in err and "index build" in err
    meta["dim"] = 999
    meta_path.write_text(json.dumps(meta))
    assert main(["index", "stats", "--run-dir", str(run)]) == 0  # stats reads the folder alone
    assert main(["index", "evaluate", "--run-dir", str(run)]) == 2
    assert "embeddings.json dim 999 disagree" in capsys.readouterr().err  # the checked read names the file


def test_an_index_of_the_old_format_asks_for_a_rebuild(run, capsys):
    info_path = run / "index" / "index.json"
    info = json.loads(info_path.read_text())
    del info["params"]["format"]
    info_path.write_text(json.dumps(info))
    assert main(["index", "query", "--run-dir", str(run), "--user", "u1"]) == 2
    assert "older recsys-llm" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["exact", "milvus"])
def test_other_backends_serve_the_same_recommendations(run, backend):
    from recsys_llm.serve.recommender import recommend

    if backend == "milvus":
        pytest.importorskip("milvus_lite")
    flat = recommend(run, "u2", k=5, rerank=False)
    assert main(["index", "build", "--run-dir", str(run), "--set", f"index.backend={backend}"]) == 0
    assert json.loads((run / "index" / "index.json").read_text())["kind"] == backend
    got = recommend(run, "u2", k=5, rerank=False)
    assert got["item_id"].tolist() == flat["item_id"].tolist()
    np.testing.assert_allclose(got["score"], flat["score"], rtol=1e-4)
