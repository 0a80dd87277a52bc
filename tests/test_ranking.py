"""Full ranking (recsys_llm.ranking): popularity counts, rank_items against a naive sort, and the one
validation scorer (top-k metrics of a full ranking) on hand-computed examples and against the report's
per-user metrics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recsys_llm import baselines, ranking
from recsys_llm.ranking import (
    embedding_ranking_metrics,
    full_ranking_metrics,
    mean_metrics,
    popularity_scores,
    rank_items,
    topk_metrics,
)
from recsys_llm.report.measures import per_user_metrics


def test_popularity_scores_counts():
    train = pd.DataFrame({"user": [0, 0, 1, 2, 2, 2], "item": [1, 3, 3, 3, 0, 1], "timestamp": range(6)})
    pop = popularity_scores(train, 5)
    assert pop.dtype == np.float32
    assert pop.tolist() == [1, 2, 0, 3, 0]
    with pytest.raises(ValueError, match="outside the catalog"):
        popularity_scores(train, 3)


def _naive_rank(scores_row, k, seen_row, candidates):
    items = [i for i in candidates if i not in set(seen_row)]
    items.sort(key=lambda i: (-scores_row[i], i))
    ids = (items + [-1] * k)[:k]
    return ids


def test_rank_items_shared_scores_tie_break_and_padding():
    pop = np.array([2.0, 5.0, 2.0, 5.0, 1.0], dtype=np.float32)
    seen = [np.array([], dtype=np.int64), np.array([1]), np.array([0, 1, 2, 3])]
    scores, ids = rank_items(pop, 3, seen=seen, users=np.array([10, 11, 12]))
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert ids.tolist() == [[1, 3, 0], [3, 0, 2], [4, -1, -1]]  # ties -> lower id first
    assert scores.tolist() == [[5, 5, 2], [5, 2, 2], [1, -np.inf, -np.inf]]
    _, ids = rank_items(pop, 7, users=np.arange(2))  # k > catalog: padded
    assert ids.tolist() == [[1, 3, 0, 2, 4, -1, -1]] * 2
    with pytest.raises(ValueError, match="users"):
        rank_items(pop, 3)


def test_rank_items_candidates_restrict():
    pop = np.array([9.0, 8.0, 7.0, 6.0, 5.0])
    _, ids = rank_items(pop, 3, seen=[np.array([3]), np.array([0])], candidates=np.array([4, 3, 1]))
    assert ids.tolist() == [[1, 4, -1], [1, 3, 4]]
    per_user = np.tile(pop, (2, 1))
    _, ids2 = rank_items(per_user, 3, seen=[np.array([3]), np.array([0])], candidates=np.array([4, 3, 1]))
    assert ids2.tolist() == ids.tolist()


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("use_candidates", [True, False])
def test_rank_items_matches_naive_sort(shared, use_candidates, monkeypatch):
    monkeypatch.setattr(ranking, "_CHUNK_ELEMENTS", 64)  # force several row chunks
    rng = np.random.default_rng(0)
    n_users, n_items, k = 30, 25, 8
    scores = rng.integers(0, 4, (n_items,) if shared else (n_users, n_items)).astype(np.float32)  # many ties
    seen = [rng.choice(n_items, rng.integers(0, 22), replace=False) for _ in range(n_users)]
    cand = rng.choice(n_items, 12, replace=False) if use_candidates else None
    out_scores, ids = rank_items(scores, k, seen=seen, candidates=cand, users=np.arange(n_users))
    allowed = sorted(cand.tolist()) if use_candidates else list(range(n_items))
    for u in range(n_users):
        row = scores if shared else scores[u]
        assert ids[u].tolist() == _naive_rank(row.tolist(), k, seen[u].tolist(), allowed), u
        valid = ids[u] >= 0
        np.testing.assert_array_equal(out_scores[u][valid], row[ids[u][valid]])
        assert np.isneginf(out_scores[u][~valid]).all()


def test_rank_items_shared_equals_per_user():
    rng = np.random.default_rng(3)
    vec = rng.random(40).astype(np.float32)
    seen = [rng.choice(40, 5, replace=False) for _ in range(6)]
    a = rank_items(vec, 10, seen=seen, users=np.arange(6))
    b = rank_items(np.tile(vec, (6, 1)), 10, seen=seen)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_rank_items_rejects_bad_input():
    with pytest.raises(ValueError, match="finite"):
        rank_items(np.array([[1.0, np.nan]]), 1)
    with pytest.raises(ValueError, match="seen arrays"):
        rank_items(np.ones((2, 3)), 1, seen=[np.array([0])])
    with pytest.raises(ValueError, match="outside the catalog"):
        rank_items(np.ones((1, 3)), 1, seen=[np.array([3])])
    with pytest.raises(ValueError, match="outside the catalog"):
        rank_items(np.ones((1, 3)), 1, candidates=np.array([5]))
    with pytest.raises(ValueError, match="k must be"):
        rank_items(np.ones((1, 3)), 0)


def test_baselines_module_still_exports_the_ranking_helpers():
    assert baselines.rank_items is rank_items and baselines.popularity_scores is popularity_scores


# ------------------------------------------------------------------------------------- validation scoring
def test_full_ranking_metrics_by_hand():
    """3 users x 5 items. User 0 has seen item 1; user 2 has no target.

    user 0: scores [.1 .9 .8 .3 .5], item 1 masked -> top 3 = 2, 4, 3; targets {3, 0}: hit at rank 3,
        Recall@3 = 1/2, NDCG@3 = (1/log2 4) / (1 + 1/log2 3) = 0.5 / 1.6309
    user 1: scores [.5 .5 .1 .2 .4] -> 0, 1 (tie: lower id first), 4; target {1}: hit at rank 2,
        Recall@3 = 1, NDCG@3 = 1/log2 3
    user 2: no target -> NaN
    """
    scores = np.array([[0.1, 0.9, 0.8, 0.3, 0.5], [0.5, 0.5, 0.1, 0.2, 0.4], [0.0, 0.1, 0.2, 0.3, 0.4]])
    targets = [np.array([3, 0]), np.array([1]), np.array([], dtype=np.int64)]
    m = full_ranking_metrics(scores, targets, 3, seen=[np.array([1]), np.array([]), np.array([])])
    assert list(m) == ["recall@3", "ndcg@3"]
    np.testing.assert_allclose(m["recall@3"][:2], [0.5, 1.0])
    np.testing.assert_allclose(m["ndcg@3"][:2], [0.5 / (1 + 1 / math.log2(3)), 1 / math.log2(3)])
    assert np.isnan(m["recall@3"][2]) and np.isnan(m["ndcg@3"][2])
    mean_ndcg = (m["ndcg@3"][0] + m["ndcg@3"][1]) / 2
    assert mean_metrics(m) == pytest.approx({"recall@3": 0.75, "ndcg@3": mean_ndcg})
    only = full_ranking_metrics(scores, targets, 3, seen=[np.array([1]), [], []], candidates=np.array([0, 3]),
                                metrics=("hit_rate",))  # user 0 ranks 3, 0 only: both targets found
    assert list(only) == ["hit_rate@3"] and only["hit_rate@3"][:2].tolist() == [1.0, 0.0]


def test_topk_metrics_pads_short_lists_and_cuts_long_ones():
    targets = [np.array([5])]
    short = topk_metrics(np.array([[2, 5]]), targets, 4)  # padded to [2, 5, -1, -1]
    assert short["recall@4"].tolist() == [1.0] and short["ndcg@4"].tolist() == [1 / math.log2(3)]
    cut = topk_metrics(np.array([[2, 3, 5]]), targets, 2)  # the hit at rank 3 is beyond k
    assert cut["recall@2"].tolist() == [0.0]
    with pytest.raises(ValueError, match="k must be"):
        topk_metrics(np.array([[1]]), targets, 0)
    with pytest.raises(ValueError, match="unknown metrics"):
        topk_metrics(np.array([[1]]), targets, 1, ("auc",))


def test_the_scorer_matches_the_reports_per_user_metrics():
    rng = np.random.default_rng(1)
    scores = rng.random((40, 30)).astype(np.float32)
    seen = [rng.choice(30, rng.integers(0, 8), replace=False) for _ in range(40)]
    targets = [np.setdiff1d(rng.choice(30, rng.integers(0, 4), replace=False), s) for s in seen]
    ours = full_ranking_metrics(scores, targets, 10, seen=seen, metrics=("recall", "ndcg", "mrr"))
    report = per_user_metrics(rank_items(scores, 10, seen=seen)[1], targets, [10])
    has = np.array([len(t) > 0 for t in targets])
    for name in ("Recall", "NDCG", "MRR"):
        np.testing.assert_array_equal(ours[f"{name.lower()}@10"][has], report[f"{name}@10"])
        assert np.isnan(ours[f"{name.lower()}@10"][~has]).all()


def test_embedding_scorer_equals_the_score_matrix_in_any_chunking():
    rng = np.random.default_rng(2)
    users, items = rng.normal(size=(25, 6)), rng.normal(size=(40, 6))
    seen = [rng.choice(40, 5, replace=False) for _ in range(25)]
    targets = [rng.choice(40, 2, replace=False) for _ in range(25)]
    whole = full_ranking_metrics(users @ items.T, targets, 5, seen=seen, candidates=np.arange(30))
    for chunk in (1, 7, 1000):
        got = embedding_ranking_metrics(users, items, targets, 5, seen=seen, candidates=np.arange(30),
                                        user_chunk=chunk)
        for name, values in whole.items():
            np.testing.assert_array_equal(got[name], values)
    with pytest.raises(ValueError, match="one of each per user"):
        embedding_ranking_metrics(users, items, targets[:3], 5)
