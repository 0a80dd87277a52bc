"""Description-only mode: build_catalog / similar_items / search_text and `recsys-llm coldstart catalog |
similar | search`, on a tiny random BERT (and once on the real backbone)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recsys_llm.artifacts import load_embeddings, load_run_index
from recsys_llm.cli import main
from recsys_llm.coldstart import build_catalog, search_text, similar_items
from recsys_llm.config import PipelineConfig
from recsys_llm.io_utils import load_json, load_npy
from recsys_llm.run import RunDir
from recsys_llm.text.templates import item_texts

TOPICS = ["dragons", "submarines", "jazz", "volcanoes", "chess", "pirates", "robots", "gardens", "trains",
          "deserts", "spies", "ballet", "glaciers", "wolves", "castles", "comets", "bakeries", "samurai",
          "circuses", "lighthouses"]


def _items() -> pd.DataFrame:
    rows = [{"item_id": f"i{n}", "title": f"The {t.title()} Story",
             "description": f"A long tale of {t}, told over {n + 2} chapters."} for n, t in enumerate(TOPICS)]
    rows.append({**rows[3], "item_id": "copy-of-i3"})  # same text, another id: the same vector
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tiny_cfg(tiny_bert_path) -> PipelineConfig:
    return PipelineConfig().override({"encoder.backbone": tiny_bert_path, "train.device": "cpu",
                                      "text.item_max_tokens": 32, "text.user_max_tokens": 32})


@pytest.fixture(scope="module")
def items_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("catalog_items") / "items.csv"
    _items().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, items_csv, tiny_cfg):
    """A description-only run (read-only for the tests that use it) and build_catalog's summary."""
    run = tmp_path_factory.mktemp("catalog") / "run"
    return run, build_catalog(items_csv, run, tiny_cfg)


def test_build_writes_a_run_without_interactions(catalog, items_csv):
    run, summary = catalog
    n = len(TOPICS) + 1
    assert {k: summary[k] for k in ("n_items", "dim", "index", "factory", "zero_shot", "item_template")} == {
        "n_items": n, "dim": 32, "index": "faiss", "factory": "Flat", "zero_shot": True,
        "item_template": "title_description"}
    assert summary["encoder"]["adapter_sha256"] is None and summary["encoder_run"] is None
    assert summary["seconds"] > 0
    r = RunDir(run)
    items = pd.read_parquet(r.data / "items.parquet")
    assert items["item"].tolist() == list(range(n))
    assert set(items.columns) == {"item", "item_id", "title", "description"}
    assert sorted(items["item_id"]) == sorted(_items()["item_id"])
    assert len(pd.read_parquet(r.data / "interactions.parquet")) == 0
    cfg = r.load_config()
    assert cfg.text.item_template == "title_description"  # the default template would drop descriptions
    texts = [json.loads(line)["text"] for line in (r.text / "items.jsonl").read_text().splitlines()]
    assert texts == item_texts(items, cfg.text.item_template)
    assert texts[items.index[items["item_id"] == "i0"][0]] == "The Dragons Story. A long tale of dragons, told over 2 chapters."
    item_emb, user_emb, meta = load_embeddings(r)
    assert item_emb.shape == (n, 32) and user_emb.shape == (0, 32)
    assert load_npy(r.embeddings() / "item_ids.npy").tolist() == list(range(n))
    assert meta["catalog_only"] and meta["n_items"] == n and meta["encoder"]["item_template"] == "title_description"
    np.testing.assert_allclose(np.linalg.norm(item_emb, axis=1), 1.0, atol=1e-5)
    index = load_run_index(r, meta)  # the metadata checks of a trained run pass
    assert index.ntotal == n and sorted(index.ids.tolist()) == list(range(n))
    assert load_json(r.index / "index.json")["metadata"]["choice"].startswith("auto: Flat")
    assert not list(run.parent.glob(".run.*"))  # no temporary folders left


def test_similar_items_excludes_the_item_and_finds_its_textual_duplicate(catalog):
    run, _ = catalog
    for item in ["i0", "i3", "i7", "copy-of-i3"]:
        got = similar_items(run, item, k=5)
        assert list(got.columns) == ["rank", "item_id", "title", "score"] and len(got) == 5
        assert item not in set(got["item_id"]) and got["rank"].tolist() == [1, 2, 3, 4, 5]
        assert (np.diff(got["score"].to_numpy()) <= 1e-7).all()
    top = similar_items(run, "i3", k=3).iloc[0]
    assert top["item_id"] == "copy-of-i3" and top["title"] == "The Volcanoes Story"
    assert top["score"] == pytest.approx(1.0, abs=1e-5)
    assert similar_items(run, "copy-of-i3", k=1)["item_id"].tolist() == ["i3"]
    assert len(similar_items(run, "i1", k=100)) == len(TOPICS)  # every other item, no padding rows


def test_search_text_is_brute_force_over_the_query_encoding(catalog, tiny_cfg):
    from recsys_llm.encoder.model import TwoTowerEncoder

    run, _ = catalog
    text = "a story about volcanoes and glaciers"
    got = search_text(run, text, k=4)
    assert got.equals(search_text(run, text, k=4))  # deterministic
    assert len(got) == 4 and (np.diff(got["score"].to_numpy()) <= 1e-7).all()
    items = pd.read_parquet(RunDir(run).data / "items.parquet")
    enc = TwoTowerEncoder.from_config(tiny_cfg.encoder, lora=False, device="cpu")
    q = enc.encode_users([text], tiny_cfg.text.user_max_tokens, show_progress=False)[0]
    scores = load_embeddings(RunDir(run))[0] @ q  # (n,)
    best = np.argsort(-scores, kind="stable")[:4]  # i3 and its copy tie: compare sets, not order
    assert set(got["item_id"]) == set(items["item_id"].to_numpy()[best])
    np.testing.assert_allclose(got["score"], scores[best], atol=1e-5)


@pytest.mark.parametrize("case, expected", [
    ("no_title", ["items.csv", "missing required column 'title'", "columns found: item_id, description"]),
    ("repeated", ["items.csv", "row 4, column 'item_id'", "duplicate item id 'i1' (first at row 3)"]),
    ("header_only", ["items.csv", "no data rows"]),
    ("empty_file", ["items.csv", "the file is empty"]),
    ("empty_title", ["items.csv", "row 3, column 'title'", "title is empty"]),
])
def test_bad_items_name_the_file_row_and_field_and_leave_nothing(tmp_path, tiny_cfg, case, expected):
    path = tmp_path / "items.csv"
    frame = _items().head(4)
    if case == "no_title":
        frame = frame.drop(columns="title")
    elif case == "repeated":
        frame.loc[2, "item_id"] = "i1"
    elif case == "empty_title":
        frame.loc[1, "title"] = "  "
    if case == "header_only":
        path.write_text("item_id,title,description\n")
    elif case == "empty_file":
        path.write_text("")
    else:
        frame.to_csv(path, index=False)
    run = tmp_path / "run"
    with pytest.raises(ValueError) as err:
        build_catalog(path, run, tiny_cfg)
    for part in expected:
        assert part in str(err.value)
    assert not run.exists() and not list(tmp_path.glob(".run.*"))


def test_frames_templates_and_unknown_queries(tmp_path, tiny_cfg, catalog):
    frame = _items().head(5).assign(genres=["Drama", "Comedy", "", "War", "Drama"])
    summary = build_catalog(frame, tmp_path / "run", tiny_cfg)
    assert summary["item_template"] == "title_genres_description" and summary["n_items"] == 5
    explicit = tiny_cfg.override({"text.item_template": "full"})
    with pytest.raises(ValueError, match=r"renders column\(s\) \['tags'\], which the items lack"):
        build_catalog(frame, tmp_path / "other", explicit)
    with pytest.raises(ValueError, match=r"items \(DataFrame\): row 2, column 'title': title is empty"):
        build_catalog(frame.assign(title=["a", "", "c", "d", "e"]), tmp_path / "other", tiny_cfg)
    assert not (tmp_path / "other").exists()
    run, _ = catalog
    with pytest.raises(ValueError, match=r"item 'nope' is not in the catalog .* \(ids look like "):
        similar_items(run, "nope")
    with pytest.raises(ValueError, match="text is empty"):
        search_text(run, "   ")
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        similar_items(tmp_path / "missing", "i1")


def test_a_failed_build_leaves_the_last_good_run(tmp_path, tiny_cfg, monkeypatch):
    from recsys_llm.index.faiss_index import FaissIndex

    run = tmp_path / "run"
    frame = _items().head(6)

    def broken(self, folder):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(FaissIndex, "_write", broken)  # the last artifact written
        with pytest.raises(OSError, match="disk full"):
            build_catalog(frame, run, tiny_cfg)
    assert not run.exists() and not list(tmp_path.glob(".run.*"))
    build_catalog(frame, run, tiny_cfg)
    with monkeypatch.context() as m:
        m.setattr(FaissIndex, "_write", broken)
        with pytest.raises(OSError):
            build_catalog(_items(), run, tiny_cfg)
    assert load_embeddings(RunDir(run))[0].shape[0] == 6 and len(similar_items(run, "i0", k=10)) == 5
    build_catalog(_items(), run, tiny_cfg)  # rebuilding a catalog run replaces it
    assert len(pd.read_parquet(run / "data" / "items.parquet")) == len(TOPICS) + 1
    other = tmp_path / "trained"
    other.mkdir()
    (other / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not a description-only catalog"):
        build_catalog(frame, other, tiny_cfg)
    with pytest.raises(ValueError, match="Milvus"):
        build_catalog(frame, tmp_path / "m", tiny_cfg.override({"index.backend": "milvus"}))


def test_an_approximate_index_is_tuned_with_items_as_queries(tmp_path, tiny_cfg):
    cfg = tiny_cfg.override({"index.factory": "IVF4,Flat"})
    summary = build_catalog(_items(), tmp_path / "run", cfg)
    tuned = load_json(tmp_path / "run" / "index" / "index.json")["metadata"]["tuned"]
    assert summary["factory"] == "IVF4,Flat" and tuned["param"] == "nprobe" and tuned["queries_from"] == "items"
    assert similar_items(tmp_path / "run", "i3", k=1)["item_id"].tolist() == ["copy-of-i3"]


def test_a_trained_run_serves_both_queries_and_lends_its_encoder(tiny_run, tmp_path):
    from recsys_llm.coldstart import full_catalog

    got = similar_items(tiny_run, "101", k=5)
    assert len(got) == 5 and "101" not in set(got["item_id"])
    titles = full_catalog(tiny_run).set_index("item_id")["title"]
    assert got["title"].tolist() == titles.loc[got["item_id"]].tolist()
    found = search_text(tiny_run, "space rocket astronaut", k=5)
    assert len(found) == 5 and found.equals(search_text(tiny_run, "space rocket astronaut", k=5))
    # the trained run's own items, embedded by its fine-tuned encoder through a catalog run: same vectors
    items = pd.read_parquet(tiny_run / "data" / "items.parquet").drop(columns="item")
    cfg = RunDir(tiny_run).load_config().override({"train.device": "cpu"})
    summary = build_catalog(items, tmp_path / "run", cfg, encoder_run=tiny_run)
    trained_emb, _, trained_meta = load_embeddings(RunDir(tiny_run))
    assert not summary["zero_shot"] and summary["encoder"]["adapter_sha256"] == trained_meta["encoder"]["adapter_sha256"]
    assert (tmp_path / "run" / "encoder" / "encoder.json").is_file()
    np.testing.assert_allclose(load_embeddings(RunDir(tmp_path / "run"))[0], trained_emb, atol=1e-5)
    assert search_text(tmp_path / "run", "space rocket astronaut", k=5)["item_id"].tolist() == found["item_id"].tolist()


def test_cli_catalog_similar_search(tmp_path, items_csv, tiny_bert_path, capsys):
    run = str(tmp_path / "run")
    assert main(["coldstart", "catalog", "--items", str(items_csv), "--run-dir", run,
                 "--set", f"encoder.backbone={tiny_bert_path}", "--set", "train.device=cpu"]) == 0
    out = capsys.readouterr().out
    assert f"catalog of {len(TOPICS) + 1} items (dim 32)" in out and "untuned backbone" in out
    assert "title_description" in out and "Flat" in out
    assert main(["coldstart", "similar", "--item", "i3", "-k", "3", "--run-dir", run]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "top 3 items similar to [i3]:" and len(lines) == 4
    assert "The Volcanoes Story" in lines[1] and "[copy-of-i3]" in lines[1]
    assert main(["coldstart", "search", "--text", "a tale of chess", "-k", "2", "--run-dir", run]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "top 2 items for 'a tale of chess':" and len(lines) == 3
    assert all(any(f"The {t.title()} Story" in line for t in TOPICS) for line in lines[1:])
    assert main(["coldstart", "similar", "--item", "nope", "--run-dir", run]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: item 'nope' is not in the catalog") and "\n" not in err
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,name\n1,x\n")
    assert main(["coldstart", "catalog", "--items", str(bad), "--run-dir", str(tmp_path / "r2"),
                 "--set", f"encoder.backbone={tiny_bert_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}: missing required column 'title'") and "\n" not in err
    assert main(["coldstart", "search", "--text", "", "--run-dir", run]) == 2
    assert "text is empty" in capsys.readouterr().err


@pytest.mark.slow
def test_the_real_backbone_finds_the_space_movie_by_its_description(tmp_path, minilm_path):
    items = pd.DataFrame({
        "item_id": [str(i) for i in range(8)],
        "title": ["Orbit", "Kitchen Nights", "Final Whistle", "Deep Blue", "Vineyard", "Haunted Manor",
                  "Silicon Dreams", "Mountain Pass"],
        "description": [
            "Astronauts aboard a damaged space station fight to return to Earth.",
            "A young chef learns to cook in a busy restaurant kitchen.",
            "A football team chases the championship in its final season.",
            "Marine biologists study whales and coral reefs in the ocean.",
            "A family runs a vineyard and makes wine in the countryside.",
            "A family moves into a haunted house full of ghosts.",
            "Programmers build a startup company writing software.",
            "Climbers attempt a dangerous ascent of a snowy mountain.",
        ],
    })
    cfg = PipelineConfig().override({"encoder.backbone": minilm_path, "train.device": "cpu"})
    build_catalog(items, tmp_path / "run", cfg)
    got = search_text(tmp_path / "run", "a movie about astronauts in space", k=3)
    assert got["title"].iloc[0] == "Orbit" and got["score"].iloc[0] > got["score"].iloc[1] + 0.1
    assert search_text(tmp_path / "run", "cooking food recipes", k=1)["title"].tolist() == ["Kitchen Nights"]
