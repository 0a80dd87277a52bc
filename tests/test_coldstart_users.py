"""The hybrid stage, new users (`coldstart user`) and few-shot curves on the tiny pipeline run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from recsys_llm.cli import main
from recsys_llm.hybrid import trust_key


@pytest.fixture
def run(tiny_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst, ignore=shutil.ignore_patterns("coldstart"))  # other tests add items to it
    assert main(["index", "build", "--run-dir", str(dst)]) == 0  # so the index holds the catalog only
    return dst


def test_hybrid_stage_records_every_choice_and_picks_the_best(tiny_run):
    meta = json.loads((tiny_run / "hybrid" / "hybrid.json").read_text())
    assert meta["user_model"] in ("text", "pooling", "sequence") and meta["chosen_by"] == "validation"
    grids = meta["valid_ndcg@10"]
    tuned = meta["collaborative"]  # the collaborative part takes its baseline's tuned setting; its half-life joins
    assert tuned["baseline"] == "ease_recency" and "l2" in tuned["params"]
    assert set(grids) == {"text", "pooling", "sequence"} and set(grids["text"]) == {"0.0", "5.0", str(tuned["params"]["halflife"])}
    from recsys_llm.stages.hybrid import better_user_model as _better_user_model

    um = meta["user_model"]
    best = max(v for by_c in grids[um].values() for g in by_c.values() for v in g.values())
    chosen = grids[um][str(meta["halflife"])][trust_key(meta["confidence"], meta["trust_power"])][str(meta["weight"])]
    assert chosen == pytest.approx(best)  # what was kept is the best validated setting of that user model
    assert um == _better_user_model(meta["best"])  # and the user model the better over warm + cold
    cold = meta["cold_sim_ndcg@10"][meta["user_model"]][str(meta["halflife"])]
    # the bridge and BM25 weights by the one-standard-error rule: the chosen setting is at most the best, and
    # every simpler setting (fewer parts on, then less weight) validated below it (else it would have won)
    chosen_key = (float(meta["bridge"]), float(meta["lexical_weight"]))
    means = {tuple(map(float, k.split(","))): v for k, v in cold.items()}
    assert means[chosen_key] <= max(means.values()) + 1e-9

    def simplicity(k):
        return ((k[0] > 0) + (k[1] > 0), k[0] + k[1], k[1])

    assert all(v < means[chosen_key] for k, v in means.items() if simplicity(k) < simplicity(chosen_key))
    assert meta["pooling"]["steps"] == 20 and meta["sequence"]["steps"] == 20 and meta["valid_users"] > 0
    for f in ("collaborative.safetensors", "user_pooling.safetensors", "user_pooling.json", "user_sequence.json",
              "user_sequence.safetensors", "user_sequence.npy"):
        assert (tiny_run / "hybrid" / f).exists()


def test_report_has_hybrid_rows_ratios_and_few_shot_curves(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text())
    rows = {(r["model"], r["slice"]): r["metrics"] for r in report["rows"]}
    cold_id = rows[("ID only (hybrid's collaborative part)", "cold-item")]
    assert cold_id["ARP@10"] == 0.0  # it can only rank cold items at random (all score 0)
    notes = {(r["model"], r["slice"]): r["note"] for r in report["rows"]}
    for m in ("EASE", "ItemKNN", "most popular", "ID only (hybrid's collaborative part)"):
        assert "random order" in notes[(m, "cold-item")] and "random order" not in notes[(m, "warm")], m
    assert "random order" not in notes[("hybrid (text + collaborative)", "cold-item")]
    pair = next(p for p in report["paired"] if p["model"] == "hybrid (text + collaborative)"
                and p["baseline"] == "fine-tuned retrieval" and p["slice"] == "warm" and p["metric"] == "NDCG@10")
    a = rows[("hybrid (text + collaborative)", "warm")]["NDCG@10"]
    b = rows[("fine-tuned retrieval", "warm")]["NDCG@10"]
    assert pair["diff"] == pytest.approx(a - b, abs=1e-9)
    if b > 0:
        assert pair["ratio"] == pytest.approx(a / b, rel=1e-6)
    fs = report["few_shot"]
    assert fs["item"]["counts"] == [0, 1, 3] and fs["user"]["counts"] == [1, 3]
    for side in ("item", "user"):
        for name, v in fs[side]["models"].items():
            assert len(v["NDCG@10"]) == len(fs[side]["counts"]), name
            assert all(lo <= m <= hi for m, lo, hi in zip(v["NDCG@10"], v["low"], v["high"], strict=True))
    models = fs["item"]["models"]
    meta = json.loads((tiny_run / "hybrid" / "hybrid.json").read_text())
    dense = models[{"text": "fine-tuned retrieval (text user)", "pooling": "fine-tuned, pooled user",
                    "sequence": "fine-tuned, sequence user"}[meta["user_model"]]]
    if meta["bridge"] == 0 and meta["lexical_weight"] == 0:
        # n = 0: no cold item has a collaborative signal (trust 0), so the hybrid ranks them by text alone
        assert models["hybrid (text + collaborative)"]["NDCG@10"][0] == pytest.approx(dense["NDCG@10"][0])
    assert (tiny_run / "plots" / "few_shot.png").read_bytes()[:4] == b"\x89PNG"
    md = (tiny_run / "report.md").read_text()
    assert "Few-shot, item side" in md and "ratio (95% interval)" in md


def test_item_side_targets_are_fixed_across_counts(tiny_run):
    from recsys_llm.report.fewshot import item_side_split
    from recsys_llm.run import Context

    ctx = Context.load(tiny_run)
    ordered, test = item_side_split(ctx.split.cold, 3)
    assert (test["position"] >= 3).all() and len(ordered) == len(ctx.split.cold)
    first = ordered[ordered["position"] == 0]
    assert (first.groupby("item")["timestamp"].min() == ctx.split.cold.groupby("item")["timestamp"].min()).all()


def test_new_user_from_items_and_from_text(run, capsys):
    from recsys_llm.coldstart import recommend_new_user

    # synthetic data: even items are "space", odd items "cooking"; a user who liked two space items
    recs = recommend_new_user(run, items=["100", "102"], k=5)
    assert len(recs) == 5 and not {"100", "102"} & set(recs["item_id"])
    served = json.loads((run / "served.json").read_text())
    assert recs["stage"].iloc[0].startswith(served["first_stage"])
    head = served["rerank_depth"] or len(recs)  # reranked items carry reranker scores, the rest first-stage ones
    for part in (recs["score"][:head], recs["score"][head:]):
        assert (np.diff(part) <= 1e-6).all()
    assert set(recs["because_item_id"]) <= {"100", "102"}
    by_text = recommend_new_user(run, text="space rocket astronaut", k=4)
    assert len(by_text) == 4 and (by_text["because"] == "").all()
    both = recommend_new_user(run, items=["101"], text="cooking recipe kitchen", k=3)
    assert "101" not in set(both["item_id"])
    assert main(["coldstart", "user", "--run-dir", str(run), "--items", "100", "102", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "new user from 2 items" in out and f"top 3 ({served['first_stage']}" in out and "because you liked" in out
    assert main(["coldstart", "user", "--run-dir", str(run), "--text", "space rocket", "-k", "2"]) == 0
    assert "top 2" in capsys.readouterr().out


def test_new_user_with_items_from_an_ID_model_point_of_view_gets_collaborative_neighbours(run):
    """The planted groups: users who liked even items liked other even items. With the hybrid weight at 1
    (collaborative only) a new user with even items gets even items."""
    from recsys_llm.coldstart import recommend_new_user
    from recsys_llm.hybrid import HybridModel

    model = HybridModel.load(run / "hybrid")
    model.weight, model.confidence = 1.0, 0.0  # collaborative only, whatever the item's interactions
    model.save(run / "hybrid")
    assert main(["select", "--run-dir", str(run)]) == 0  # the served choice is made again on the edited hybrid
    recs = recommend_new_user(run, items=["100", "102", "104"], k=5)
    assert all(int(i) % 2 == 0 for i in recs["item_id"])


def test_new_user_errors_are_clear(run, capsys):
    from recsys_llm.coldstart import recommend_new_user

    with pytest.raises(ValueError, match="--items .* and/or --text"):
        recommend_new_user(run)
    with pytest.raises(ValueError, match="not in the catalog: \\['nope'\\]"):
        recommend_new_user(run, items=["nope"])
    with pytest.raises(ValueError, match="repeated"):
        recommend_new_user(run, items=["100", "100"])
    assert main(["coldstart", "user", "--run-dir", str(run)]) == 2
    assert "error:" in capsys.readouterr().err


def test_new_items_are_recommendable_to_new_users_at_once(run, tmp_path):
    import pandas as pd

    from recsys_llm.coldstart import add_items, recommend_new_user

    add_items(run, pd.DataFrame({"item_id": ["fresh"], "title": ["Item 100 space"], "genres": ["space rocket astronaut"],
                                 "tags": [""]}))
    recs = recommend_new_user(run, text="Item 100 space", k=40)
    assert "fresh" in set(recs["item_id"])  # text-scored, no interactions needed


def test_hybrid_cli_prints_the_choice(run, capsys):
    assert main(["hybrid", "--run-dir", str(run), "--set", "hybrid.user_model=pooling",
                 "--set", "hybrid.cf_model=itemknn"]) == 0
    out = capsys.readouterr().out
    assert "hybrid: pooling users + itemknn" in out and "validation NDCG@10" in out
    meta = json.loads((run / "hybrid" / "hybrid.json").read_text())
    assert meta["user_model"] == "pooling" and meta["chosen_by"] == "config" and meta["cf_model"] == "itemknn"


def test_auto_user_model_weighs_warm_and_cold_equally():
    from recsys_llm.stages.hybrid import better_user_model as _better_user_model

    warm_only = {"text": {"ndcg@10": 0.072}, "pooling": {"ndcg@10": 0.070}}
    assert _better_user_model(warm_only) == "text"
    both = {"text": {"ndcg@10": 0.072, "cold_ndcg@10": 0.20}, "pooling": {"ndcg@10": 0.070, "cold_ndcg@10": 0.30}}
    assert _better_user_model(both) == "pooling"  # 3% behind on warm, 50% ahead on cold


def test_hybrid_with_sequence_users_serves_their_stored_and_encoded_vectors(run, capsys):
    """`hybrid.user_model=sequence`: the model is saved with every known user's vector; a known user ranked from
    the stored vector and the same history given as a new user get the same vector and the same list."""
    from recsys_llm.encoder.user_sequence import SequenceUserModel, encode_sequences
    from recsys_llm.serve import Recommender, ServedConfig

    assert main(["hybrid", "--run-dir", str(run), "--set", "hybrid.user_model=sequence"]) == 0
    assert "hybrid: sequence users" in capsys.readouterr().out
    meta = json.loads((run / "hybrid" / "hybrid.json").read_text())
    assert meta["user_model"] == "sequence" and meta["chosen_by"] == "config"
    assert meta["sequence"]["kept"] in ("trained", "mean") and "valid_recall@10" in meta["sequence"]
    rec = Recommender.load(run, served=ServedConfig("hybrid"))
    assert isinstance(rec.sequence, SequenceUserModel) and rec.hybrid.user_model == "sequence"
    stored = rec.stored_vectors("sequence")
    np.testing.assert_allclose(stored, encode_sequences(rec.sequence, rec.catalogue.vectors, rec.known), atol=1e-6)
    users = [u for u in range(len(rec.known)) if len(rec.known[u])][:5]
    known = rec.rank(users=users, k=10)
    new = rec.rank(histories=[rec.known[u] for u in users], k=10)
    np.testing.assert_array_equal(known.ids, new.ids)
    np.testing.assert_allclose(known.scores, new.scores, atol=1e-5)

    # feedback: an interaction recomputes the user's stored sequence vector from the new history at once
    from recsys_llm.serve.live import LiveRecommender

    live = LiveRecommender(rec)
    u, uid = users[0], rec.users.to_external(np.array([users[0]]))[0]
    item = next(i for i in range(rec.n_items) if i not in set(rec.known[u].tolist()))
    before = live.rec.stored_vectors("sequence")[u].copy()
    with live.log.locked():
        live.write_interactions([{"user_id": uid, "item_id": str(rec.catalogue.idmap.external[item])}])
    assert rec.known[u][-1] == item and live.user_models() == ["sequence"]
    after = rec.stored_vectors("sequence")[u]
    np.testing.assert_allclose(after, encode_sequences(rec.sequence, rec.catalogue.vectors, [rec.known[u]])[0],
                               atol=1e-6)
    assert not np.allclose(after, before)


def test_sequence_steps_zero_turns_the_sequence_model_off(run, capsys):
    assert main(["hybrid", "--run-dir", str(run), "--set", "hybrid.sequence_steps=0"]) == 0
    meta = json.loads((run / "hybrid" / "hybrid.json").read_text())
    assert meta["sequence"] is None and set(meta["valid_ndcg@10"]) == {"text", "pooling"}
    assert not list((run / "hybrid").glob("user_sequence*"))  # the earlier fit's files are gone
    capsys.readouterr()
    assert main(["hybrid", "--run-dir", str(run), "--set", "hybrid.user_model=sequence"]) == 2
    err = capsys.readouterr().err
    assert "hybrid.user_model" in err and "needs the sequence model: set hybrid.sequence_steps > 0" in err
