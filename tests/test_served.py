"""What a user gets is what the report scored: the served configuration, chosen on validation, ranked by the
one Recommender for the CLI, new users and the report's served row."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, make_synthetic_dataset, write_generic

from recsys_llm import artifacts
from recsys_llm.cli import main
from recsys_llm.retrieve import Candidates
from recsys_llm.serve import Recommender, ServedConfig
from recsys_llm.serve.filters import filter_mask


@pytest.fixture(scope="module")
def served_run(tmp_path_factory, tiny_bert_path):
    """Every stage through the CLI demo, 60 synthetic users (enough for 50 test users) and a tiny random BERT."""
    folder = tmp_path_factory.mktemp("served_run")
    inter, items = write_generic(make_synthetic_dataset(n_users=60), folder)
    run = folder / "run"
    assert main(["demo", "--run-dir", str(run), "--dataset", "generic", "--path", str(inter),
                 "--items-path", str(items), "--set", f"encoder.backbone={tiny_bert_path}", *TINY]) == 0
    return run


def _cli_list(run, user: str, capsys, k: int = 10) -> list[str]:
    capsys.readouterr()
    assert main(["recommend", "--run-dir", str(run), "--user", user, "-k", str(k), "--json"]) == 0
    return [r["item_id"] for r in json.loads(capsys.readouterr().out)]


@pytest.mark.parametrize(("served", "user_model"), [(None, None), (ServedConfig("hybrid", 6, 0.5, "validation"), None),
                                                   (ServedConfig("hybrid", chosen_by="validation"), "sequence")],
                         ids=["chosen-on-validation", "hybrid-rerank", "hybrid-sequence-users"])
def test_cli_serves_exactly_the_reported_lists(served_run, served, user_model, capsys, tmp_path):
    """50 test users through `recsys-llm recommend`: the same items in the same order as the report's served
    row, for the validation-chosen configuration, a forced hybrid->rerank one, and the hybrid over the sequence
    user model (the hybrid refitted with it, then `select` and a forced hybrid first stage)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(served_run, run)
    if user_model is not None:
        assert main(["hybrid", "--run-dir", str(run), "--set", f"hybrid.user_model={user_model}"]) == 0
        assert main(["select", "--run-dir", str(run)]) == 0
    if served is not None:
        served.save(artifacts.RunDir(run))  # a new served.json: the stages after `select` are rerun, as info says
        assert main(["rerank", "apply", "--run-dir", str(run)]) == 0
        assert main(["evaluate", "--run-dir", str(run)]) == 0
    chosen = json.loads((run / "served.json").read_text())
    report = json.loads((run / "report.json").read_text())
    assert report["served"]["first_stage"] == chosen["first_stage"]
    assert report["served"]["rerank_depth"] == chosen["rerank_depth"]
    lists = Candidates.load(run / "ranked" / "served-warm.npz")
    external_users = pd.read_parquet(run / "data" / "users.parquet")["user_id"].astype(str).to_numpy()
    external_items = artifacts.full_catalog(artifacts.RunDir(run))["item_id"].astype(str).to_numpy()
    assert len(lists.users) >= 50
    for u, ids in zip(lists.users[:50], lists.ids[:50], strict=True):
        reported = [external_items[i] for i in ids[:10] if i >= 0]
        assert _cli_list(run, external_users[u], capsys) == reported, f"user {external_users[u]}"
    row = next(r for r in report["rows"] if r["model"] == "served" and r["slice"] == "warm")
    label = ServedConfig(chosen["first_stage"], chosen["rerank_depth"], chosen["rerank_weight"]).label
    assert label in row["note"]


def test_one_load_ranks_a_thousand_users(served_run, monkeypatch):
    """Ranking many users costs one load: no artifact is read again per call, the reranker loads once."""
    from recsys_llm.serve import catalogue, recommender

    rec = Recommender.load(served_run, served=ServedConfig("hybrid", 6, 0.5))
    rec.stored_vectors(rec.hybrid.user_model)  # what the first query reads, read now

    def reload(*a, **k):
        raise AssertionError("an artifact was loaded again while ranking")

    for module, name in ((catalogue.LiveCatalogue, "load"), (recommender, "load_hybrid"),
                         (recommender, "load_encoder"), (recommender, "read_npy")):
        monkeypatch.setattr(module, name, reload)
    real, calls = recommender.load_reranker, []
    monkeypatch.setattr(recommender, "load_reranker", lambda *a, **k: calls.append(1) or real(*a, **k))
    users = np.resize(np.arange(len(rec.known)), 1000)
    r = rec.rank(users=users, k=5, served=ServedConfig("hybrid"))
    assert r.ids.shape == (1000, 5) and (r.ids >= 0).all() and not calls
    assert (rec.rank(users=users[:50], k=5).ids >= 0).all() and len(calls) == 1  # reranked: loaded once
    for u, ids in zip(users[:60], r.ids[:60], strict=True):  # seen items never come back
        assert not set(ids.tolist()) & set(rec.known[u].tolist())


def test_new_users_and_filters_go_through_the_same_path(served_run):
    rec = Recommender.load(served_run)
    space = rec.catalogue.catalog["item_id"].astype(str).iloc[[0, 2]].tolist()  # even items: space
    table = rec.recommend_new(items=space, k=5)
    assert len(table) == 5 and not set(table["item_id"]) & set(space) and table["because"].ne("").all()
    text_only = rec.recommend_new(text="space rocket", k=3)
    assert len(text_only) == 3 and (text_only["because"] == "").all()
    mask = filter_mask(rec.catalogue.catalog, {"genres": "cooking"})
    user = rec.users.to_external(np.array([1]))[0]
    cooking = rec.recommend(user, k=4, filters={"genres": {"contains": "cooking"}})
    assert len(cooking) == 4 and mask[cooking["item"].to_numpy()].all()
    with pytest.raises(ValueError, match="unknown column 'colour'"):
        rec.recommend(user, filters={"colour": "red"})
    with pytest.raises(ValueError, match="not known to this run"):
        rec.recommend("nobody")


def test_info_prints_the_served_configuration(served_run, capsys):
    assert main(["info", "--run-dir", str(served_run)]) == 0
    out = capsys.readouterr().out
    served = ServedConfig.load(artifacts.RunDir(served_run))
    assert served.label in out and "chosen on validation" in out and "select" in out


def test_a_run_prepared_again_on_other_data_refuses_to_serve(served_run, tmp_path, capsys):
    """Re-running `prepare` with another catalogue makes every later artifact stale: `recommend` and the stages
    refuse, naming the stage to rerun, and `info` lists the stale stages."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(served_run, run)
    inter, items = write_generic(make_synthetic_dataset(n_users=20, n_items=12, seed=1), tmp_path)
    config = json.loads((run / "config.json").read_text())
    assert main(["prepare", "--run-dir", str(run), "--dataset", "generic", "--path", str(inter), "--items-path",
                 str(items), "--set", f"encoder.backbone={config['encoder']['backbone']}"]) == 0
    capsys.readouterr()
    assert main(["recommend", "--run-dir", str(run), "--user", "u1"]) == 2
    err = capsys.readouterr().err
    assert "stale" in err and "rerun `recsys-llm finetune" in err and "Traceback" not in err
    assert main(["index", "build", "--run-dir", str(run)]) == 2
    assert "rerun `recsys-llm finetune" in capsys.readouterr().err
    assert main(["info", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "stale" in out and "embed" in out
