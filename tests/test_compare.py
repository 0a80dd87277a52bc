"""The comparison stage: protocols, slices, and refusal of mismatched artifacts (on the tiny CLI run)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from recsys_llm.protocol import slice_users
from recsys_llm.report.compare import compare_run
from recsys_llm.report.scoring import sampled_pools
from recsys_llm.run import Context


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst)
    return dst


def _set(run, section, field, value):
    cfg = json.loads((run / "config.json").read_text())
    cfg[section][field] = value
    (run / "config.json").write_text(json.dumps(cfg))


def test_sampled_protocol_is_labelled_and_skips_the_reranker(run_copy):
    _set(run_copy, "eval", "sampled_negatives", 20)
    rows = compare_run(run_copy)
    report = json.loads((run_copy / "report.json").read_text())
    assert report["protocol"]["ranking"] == "sampled" and "SAMPLED" in report["protocol"]["description"]
    assert all(r.note.startswith("sampled") for r in rows)
    assert "fine-tuned + rerank" not in {r.model for r in rows}
    assert "sampled" in (run_copy / "report.md").read_text()


def test_sampled_pools_hold_targets_and_unseen_negatives():
    pools = sampled_pools(np.arange(2), [np.array([3]), np.array([4, 5])], [np.array([0, 1]), np.array([])],
                          n_items=30, n_neg=10, cand=None, seed=0)
    assert pools[0][0] == 3 and len(pools[0]) == 11 and not {0, 1} & set(pools[0][1:].tolist())
    assert set(pools[1][:2].tolist()) == {4, 5} and len(set(pools[1].tolist())) == 12


def test_cold_user_slice_has_only_users_with_few_training_interactions(run_copy):
    _set(run_copy, "eval", "cold_user_max_train", 5)
    ctx = Context.load(run_copy)
    users, tg = slice_users(ctx.cfg, ctx.split)["cold-user"]
    n_train = np.bincount(ctx.split.train["user"], minlength=ctx.split.n_users)
    assert len(users) and (n_train[users] <= 5).all() and all(len(t) for t in tg)


def test_embeddings_from_another_data_set_are_refused(run_copy):
    meta = json.loads((run_copy / "embeddings" / "embeddings.json").read_text())
    meta["data_fingerprint"] = "0000"
    (run_copy / "embeddings" / "embeddings.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="made for other data.*data fingerprint 0000"):
        compare_run(run_copy)


def test_candidates_for_another_catalog_are_refused(run_copy):
    from recsys_llm.retrieve import Candidates

    c = Candidates.load(run_copy / "candidates" / "warm.npz")
    c.ids[0, 0] = 10_000
    c.save(run_copy / "candidates" / "warm.npz")
    with pytest.raises(ValueError, match="catalog has"):
        compare_run(run_copy)


def test_ties_are_not_broken_by_item_id():
    """A model scoring every item 0 must look like chance, even when the targets are the lowest ids."""
    from recsys_llm.protocol import rank_full, tie_order

    n_items, users = 200, np.arange(300)
    ranked = rank_full(lambda b: np.zeros((len(b), n_items), np.float32), users, [np.array([], int)] * 300,
                        10, None, tie_order(n_items, seed=0))
    hit_rate = np.mean((ranked == 0).any(axis=1))  # every user's target: item 0
    assert hit_rate == 0.0 or hit_rate == 1.0  # one fixed order for everybody
    assert not (ranked[:, 0] == 0).all() or tie_order(n_items, 0)[0] == 0
    assert sorted(ranked[0].tolist()) != list(range(10))  # not the ten lowest ids
    cand = np.arange(100, 200)
    r2 = rank_full(lambda b: np.zeros((len(b), n_items), np.float32), users[:2], [np.array([150])] * 2, 10,
                    cand, tie_order(n_items, seed=0))
    assert set(r2.ravel().tolist()) <= set(range(100, 200)) - {150}


def test_seed_summary_reports_mean_spread_and_first_interval():
    from recsys_llm.config import PipelineConfig
    from recsys_llm.report.seeds import seed_markdown, seed_summary, with_seed
    from recsys_llm.report.tables import ResultRow

    cfg = with_seed(PipelineConfig(), 2)
    assert (cfg.train.seed, cfg.rerank.seed, cfg.hybrid.seed, cfg.eval.seed, cfg.split.seed) == (2, 2, 2, 2, 0)
    runs = [[ResultRow("hybrid", "warm", {"NDCG@10": v, "Recall@10": 2 * v}, ci={"NDCG@10": [v - 0.01, v + 0.01]}),
             ResultRow("EASE", "warm", {"NDCG@10": 0.05})] for v in (0.10, 0.11, 0.12)]
    runs[2] = runs[2][:1]  # EASE missing from one run: counted over the runs it is in
    rows = {r["model"]: r for r in seed_summary(runs, ("NDCG@10", "Recall@10"))}
    assert rows["hybrid"]["seeds"] == 3 and rows["EASE"]["seeds"] == 2
    assert rows["hybrid"]["NDCG@10"]["mean"] == pytest.approx(0.11) and rows["hybrid"]["NDCG@10"]["std"] == pytest.approx(0.01)
    assert rows["hybrid"]["NDCG@10"]["ci_first"] == pytest.approx([0.09, 0.11])
    assert "Recall@10" not in rows["EASE"]  # no value in any run: no entry
    md = seed_markdown(list(rows.values()), ("NDCG@10",))
    assert "| hybrid | 3 | 0.1100 ± 0.0100 [0.1000, 0.1200] | 0.0900–0.1100 |" in md


def test_seed_paired_lines_up_the_served_rows_paired_differences():
    from recsys_llm.report.seeds import seed_paired, seed_paired_markdown

    def pair(diff, low, high, model="served", baseline="EASE, recency-weighted query", metric="NDCG@10"):
        return {"slice": "warm", "model": model, "baseline": baseline, "metric": metric, "diff": diff, "low": low,
                "high": high}

    runs = [[pair(0.004, 0.001, 0.007), pair(0.1, 0.05, 0.2, model="hybrid"), pair(0.2, 0.1, 0.3, metric="Recall@10")],
            [pair(-0.002, -0.006, 0.002)], [pair(0.003, 0.0005, 0.006), pair(0.05, 0.01, 0.09, baseline="SASRec")]]
    entries = {e["baseline"]: e for e in seed_paired(runs)}
    ease = entries["EASE, recency-weighted query"]
    assert ease["seeds"] == 3 and ease["mean_diff"] == pytest.approx(0.005 / 3)
    assert (ease["above_zero"], ease["below_zero"]) == (2, 0)  # seed 1's interval straddles zero
    assert entries["SASRec"]["seeds"] == 1  # only the seeds that have the comparison
    md = seed_paired_markdown(list(entries.values()))
    assert "+0.0040 [+0.0010, +0.0070]; -0.0020 [-0.0060, +0.0020]; +0.0030 [+0.0005, +0.0060] | +0.0017 | 2 / 0 of 3" in md
