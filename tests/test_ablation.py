"""The ablation table (what text adds over ID-only, what ID adds over text) and the few-shot curve checks, on
synthetic per-user scores whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_llm.report.ablation import (
    BOTH,
    FEW_SHOT_KINDS,
    ID,
    KINDS,
    TEXT,
    ablate,
    ablation_markdown,
    few_shot_checks,
    served_kind,
)

N = 400


def _users(seed: int = 0) -> dict[str, np.ndarray]:
    """Per-user NDCG of a planted slice: the hybrid beats every ID-only model by ~0.1 and matches the best
    text-only model (fine-tuned retrieval) up to noise."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.0, 0.6, N)
    return {
        "random": base * 0.0,
        "popularity": base - 0.2,
        "ease": base - 0.1 + rng.normal(0, 0.02, N),
        "ease_recency": base - 0.15,
        "bm25": base - 0.3,
        "retrieval": base + rng.normal(0, 0.02, N),
        "hybrid": base + rng.normal(0, 0.02, N),
    }


def test_best_rows_are_chosen_by_mean_and_the_intervals_have_the_planted_signs():
    (e,) = ablate(_users(), KINDS, "warm", "NDCG@10", n_boot=500)
    assert e["combined"]["model"] == "hybrid (text + collaborative)" and e["users"] == N
    assert e["id_only"]["model"] == "EASE" and not e["id_only"]["blind"]  # not popularity, not recency EASE
    assert e["text_only"]["model"] == "fine-tuned retrieval"  # not BM25; random is no model of either kind
    ta, ia = e["text_adds"], e["id_adds"]
    assert ta["diff"] == pytest.approx(0.1, abs=0.01) and 0.09 < ta["low"] <= ta["diff"] <= ta["high"] < 0.11
    assert (
        ia["low"] < 0.0 < ia["high"] and abs(ia["diff"]) < 0.01
    )  # ID adds nothing here: the interval holds 0
    assert e["combined"]["mean"] - e["id_only"]["mean"] == pytest.approx(ta["diff"])


def test_cold_items_without_id_signal_are_labelled_and_a_missing_kind_is_none():
    pu = _users()
    pu["ease"] = pu["popularity"] = pu["ease_recency"] = np.full(N, 0.05)  # every cold item scored alike
    (e,) = ablate(pu, KINDS, "cold-item", "NDCG@10", blind={"ease", "popularity", "ease_recency"}, n_boot=200)
    assert e["id_only"]["blind"] and e["text_adds"]["low"] > 0
    (e,) = ablate(
        {k: v for k, v in pu.items() if KINDS.get(k) != ID}, KINDS, "cold-item", "NDCG@10", n_boot=200
    )
    assert e["id_only"] is None and e["text_adds"] is None and e["id_adds"] is not None
    md = "\n".join(ablation_markdown([e]))
    assert "| cold-item | hybrid (text + collaborative) |" in md and "| none | – | – |" in md


def test_served_counts_as_combined_only_when_it_serves_the_hybrid():
    pu = {**_users(), "served": _users()["hybrid"] + 0.01}
    both = ablate(pu, {**KINDS, "served": served_kind("hybrid")}, "warm", "NDCG@10", n_boot=100)
    assert [e["combined"]["model"] for e in both] == ["hybrid (text + collaborative)", "served"]
    pu["served"] = pu["retrieval"] + 0.05  # dense retrieval + rerank: the best text-only row
    (e,) = ablate(pu, {**KINDS, "served": served_kind("dense")}, "warm", "NDCG@10", n_boot=100)
    assert e["text_only"]["model"] == "served" and e["id_adds"]["high"] < 0
    assert served_kind("sequence") is None and served_kind(None) is None
    assert {KINDS["hybrid_cf"], KINDS["pooling"], KINDS["hybrid"]} == {ID, TEXT, BOTH}


def _curve(hybrid_means: list[float], floor: list[float], seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Per-user values at each count: the hybrid around ``hybrid_means``, EASE and text retrieval around
    ``floor`` (the better of the two by 0.01)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-0.1, 0.1, N)
    out = []
    for h, f in zip(hybrid_means, floor, strict=True):
        out.append(
            {
                "EASE (ID only)": f + base + rng.normal(0, 0.02, N),
                "fine-tuned retrieval (text user)": f - 0.01 + base,
                "hybrid (text + collaborative)": h + base + rng.normal(0, 0.02, N),
            }
        )
    return out


def test_few_shot_check_finds_a_significant_drop_and_a_gap_below_the_floor():
    good = few_shot_checks([0, 1, 3], _curve([0.3, 0.35, 0.4], [0.2, 0.3, 0.35]), "item", n_boot=300)
    assert good["monotone"] and good["below_floor"] == []
    assert good["line"].startswith("item side: non-decreasing within intervals: yes")
    assert "below max(text-only, ID-only): no;" in good["line"]
    bad = few_shot_checks([1, 3, 5], _curve([0.3, 0.2, 0.21], [0.25, 0.3, 0.2]), "user", n_boot=300)
    assert not bad["monotone"] and (bad["worst_step"]["from"], bad["worst_step"]["to"]) == (1, 3)
    assert bad["worst_step"]["diff"] == pytest.approx(-0.1, abs=0.01) and bad["worst_step"]["high"] < 0
    assert bad["below_floor"] == [3]  # 0.2 vs EASE 0.3; at n=5 the hybrid is 0.01 above its floor
    assert bad["floor"][1]["best_single"] == "EASE (ID only)"
    assert "non-decreasing within intervals: no (weakest step n=1->3: -0.1" in bad["line"]
    assert "yes, at n=3; lowest at n=3: -0.1" in bad["line"]
    curve = _curve([0.3, 0.299], [0.2, 0.3])
    curve[1]["hybrid (text + collaborative)"] = curve[1]["EASE (ID only)"] - 0.001 + np.resize([0.2, -0.2], N)
    noisy = few_shot_checks([1, 3], curve, "user", n_boot=300)
    gap = noisy["floor"][1]
    assert (
        gap["diff"] < 0 < gap["high"] and noisy["below_floor"] == []
    )  # below on the mean, within the interval
    assert noisy["monotone"] and "no (mean below it at n=3, within the interval)" in noisy["line"]


def test_few_shot_check_without_the_hybrid_is_none_and_markdown_lists_each_check():
    assert few_shot_checks([1], [{"EASE (ID only)": np.ones(3)}], "user") is None
    assert set(FEW_SHOT_KINDS.values()) == {ID, TEXT, BOTH}
    check = few_shot_checks([0, 1], _curve([0.3, 0.35], [0.2, 0.3]), "item", n_boot=100)
    md = ablation_markdown([], [check])
    assert md[0] == "## Few-shot checks of the hybrid's curves" and md[-2] == f"* {check['line']}"
    assert ablation_markdown([], []) == []
