"""Ranking metrics: hand-computed values, padding, NaN for users without targets, a naive-loop cross-check, a
trec_eval (pytrec_eval) cross-check, and the beyond-accuracy metrics on the ranked ids."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from recsys_llm.metrics import (
    average_recommendation_popularity,
    catalog_coverage,
    gini_exposure,
    hit_matrix,
    hit_rate_at_k,
    intra_list_diversity,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    novelty,
    precision_at_k,
    recall_at_k,
)

ALL = [recall_at_k, precision_at_k, hit_rate_at_k, ndcg_at_k, mrr_at_k, map_at_k]
L2, L3, L4, L5 = (1 / math.log2(r + 1) for r in (2, 3, 4, 5))  # discounts of ranks 2..5; rank 1 -> 1


@pytest.fixture
def one_user():
    # items 10..14 ranked best first; held out {11, 13, 99}: hits at ranks 2 and 4, n_rel = 3
    hits, n_rel = hit_matrix(np.array([[10, 11, 12, 13, 14]]), [np.array([11, 13, 99])])
    assert hits.tolist() == [[False, True, False, True, False]]
    assert n_rel.tolist() == [3]
    return hits, n_rel


def test_hand_computed_k5(one_user):
    hits, n_rel = one_user
    assert recall_at_k(hits, n_rel, 5)[0] == pytest.approx(2 / 3)  # 2 hits / 3 relevant
    assert precision_at_k(hits, n_rel, 5)[0] == pytest.approx(2 / 5)  # 2 hits / k
    assert hit_rate_at_k(hits, n_rel, 5)[0] == 1.0
    assert mrr_at_k(hits, n_rel, 5)[0] == pytest.approx(1 / 2)  # first hit at rank 2
    # DCG = 1/log2(3) + 1/log2(5) = 0.63093 + 0.43068 = 1.06161
    # IDCG (min(3, 5) = 3 relevant) = 1 + 1/log2(3) + 1/log2(4) = 1 + 0.63093 + 0.5 = 2.13093
    # NDCG = 1.06161 / 2.13093 = 0.49819
    assert ndcg_at_k(hits, n_rel, 5)[0] == pytest.approx((L2 + L4) / (1 + L2 + L3))
    assert ndcg_at_k(hits, n_rel, 5)[0] == pytest.approx(0.49819, abs=1e-5)
    # AP@5 = (P@2 * 1 + P@4 * 1) / n_rel = (1/2 + 2/4) / 3 = 1/3  (trec_eval: divide by all 3 relevant)
    assert map_at_k(hits, n_rel, 5)[0] == pytest.approx(1 / 3)


def test_hand_computed_smaller_k(one_user):
    hits, n_rel = one_user
    # k = 3: only the rank-2 hit counts
    assert recall_at_k(hits, n_rel, 3)[0] == pytest.approx(1 / 3)
    assert precision_at_k(hits, n_rel, 3)[0] == pytest.approx(1 / 3)
    # NDCG@3 = (1/log2(3)) / (1 + 1/log2(3) + 1/log2(4)) = 0.63093 / 2.13093 = 0.29608
    assert ndcg_at_k(hits, n_rel, 3)[0] == pytest.approx(0.29608, abs=1e-5)
    # AP@3 = (P@2 * 1) / 3 = (1/2) / 3 = 1/6
    assert map_at_k(hits, n_rel, 3)[0] == pytest.approx(1 / 6)
    # k = 2 with n_rel = 3 > k: IDCG is capped at 2 ranks = 1 + 1/log2(3) = 1.63093; NDCG = 0.63093 / 1.63093
    assert ndcg_at_k(hits, n_rel, 2)[0] == pytest.approx(L2 / (1 + L2))
    # k = 1: nothing found
    for fn in ALL:
        assert fn(hits, n_rel, 1)[0] == 0.0


def test_perfect_and_empty_rankings():
    hits = np.array([[True, True, False], [False, False, False]])
    n_rel = np.array([2, 1])
    assert ndcg_at_k(hits, n_rel, 3).tolist() == [1.0, 0.0]  # both relevant at the top -> DCG = IDCG
    assert mrr_at_k(hits, n_rel, 3).tolist() == [1.0, 0.0]
    assert hit_rate_at_k(hits, n_rel, 3).tolist() == [1.0, 0.0]
    assert recall_at_k(hits, n_rel, 3).tolist() == [1.0, 0.0]
    assert map_at_k(hits, n_rel, 3).tolist() == [1.0, 0.0]  # (1/1 + 2/2) / 2 = 1


def test_padding_is_never_a_hit():
    # user 1 is all padding. Its key for -1 would be 1*M - 1 = user 0's key for item M-1 = 1 if padding were
    # not masked (M = 2 here): it must not become a hit.
    hits, n_rel = hit_matrix(np.array([[0, 1], [-1, -1]]), [np.array([1]), np.array([0])])
    assert hits.tolist() == [[False, True], [False, False]]
    assert n_rel.tolist() == [1, 1]
    hits, _ = hit_matrix(np.array([[5, -1, -1]]), [np.array([5, 7])])
    assert hits.tolist() == [[True, False, False]]


def test_duplicate_targets_count_once():
    hits, n_rel = hit_matrix(np.array([[3, 4]]), [np.array([3, 3, 4])])
    assert n_rel.tolist() == [2]
    assert recall_at_k(hits, n_rel, 2)[0] == 1.0


def test_no_targets_gives_nan():
    hits, n_rel = hit_matrix(np.array([[1, 2], [1, 2]]), [np.array([], dtype=np.int64), np.array([2])])
    assert n_rel.tolist() == [0, 1]
    for fn in ALL:
        out = fn(hits, n_rel, 2)
        assert out.dtype == np.float64
        assert math.isnan(out[0]) and not math.isnan(out[1])


def test_bad_inputs_rejected():
    hits, n_rel = hit_matrix(np.array([[1, 2]]), [np.array([2])])
    for fn in ALL:
        with pytest.raises(ValueError, match="only 2 columns"):
            fn(hits, n_rel, 3)
        with pytest.raises(ValueError, match="k must be"):
            fn(hits, n_rel, 0)
    with pytest.raises(ValueError, match="repeats an item"):
        hit_matrix(np.array([[1, 1]]), [np.array([1])])
    with pytest.raises(ValueError, match="one per row"):
        hit_matrix(np.array([[1, 2]]), [np.array([1]), np.array([2])])
    with pytest.raises(ValueError, match=">= 0"):
        hit_matrix(np.array([[1, 2]]), [np.array([-1])])
    with pytest.raises(ValueError, match="2-D"):
        hit_matrix(np.array([1, 2]), [np.array([1])])


def _naive(ranked, targets, k):
    """Per-user Python loops, written from the definitions."""
    out = {fn.__name__: [] for fn in ALL}
    for row, tg in zip(ranked.tolist(), targets, strict=True):
        rel = set(tg.tolist())
        if not rel:
            for name in out:
                out[name].append(math.nan)
            continue
        top = row[:k]
        hit = [i >= 0 and i in rel for i in top]
        out["recall_at_k"].append(sum(hit) / len(rel))
        out["precision_at_k"].append(sum(hit) / k)
        out["hit_rate_at_k"].append(float(any(hit)))
        dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hit) if h)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(rel), k)))
        out["ndcg_at_k"].append(dcg / idcg)
        out["mrr_at_k"].append(next((1 / (r + 1) for r, h in enumerate(hit) if h), 0.0))
        ap, found = 0.0, 0
        for r, h in enumerate(hit):
            if h:
                found += 1
                ap += found / (r + 1)
        out["map_at_k"].append(ap / len(rel))
    return out


def _random_rankings(rng, n_users=200, n_items=60, depth=20):
    ranked = np.stack([rng.permutation(n_items)[:depth] for _ in range(n_users)]).astype(np.int64)
    pad = rng.integers(0, 4, n_users)  # some rows end in padding
    for u in range(n_users):
        if pad[u]:
            ranked[u, depth - pad[u] :] = -1
    targets = [rng.choice(n_items, rng.integers(0, 6), replace=False) for _ in range(n_users)]
    return ranked, targets


def test_vectorised_equals_naive_loop():
    ranked, targets = _random_rankings(np.random.default_rng(0))
    hits, n_rel = hit_matrix(ranked, targets)
    for k in (1, 3, 10, 20):
        expected = _naive(ranked, targets, k)
        for fn in ALL:
            np.testing.assert_allclose(
                fn(hits, n_rel, k), expected[fn.__name__], rtol=1e-12, err_msg=fn.__name__
            )


def test_ndcg_matches_sklearn():
    """Independent implementation: sklearn's ndcg_score on binary relevance (rank r gets score K - r)."""
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    n_users, n_items, depth = 50, 40, 15
    ranked = np.stack([rng.permutation(n_items)[:depth] for _ in range(n_users)]).astype(np.int64)
    targets = [rng.choice(n_items, rng.integers(1, 6), replace=False) for _ in range(n_users)]
    y_true = np.zeros((n_users, n_items))
    y_score = np.zeros((n_users, n_items))
    for u in range(n_users):
        y_true[u, targets[u]] = 1
        y_score[u, ranked[u]] = depth - np.arange(depth)  # unranked items tie at 0, below every ranked one
    hits, n_rel = hit_matrix(ranked, targets)
    for k in (1, 5, 15):
        assert ndcg_at_k(hits, n_rel, k).mean() == pytest.approx(metrics.ndcg_score(y_true, y_score, k=k))


def test_hit_matrix_is_fast():
    rng = np.random.default_rng(2)
    n_users, n_items, depth = 10_000, 5_000, 100
    offset = (np.arange(n_users, dtype=np.int64)[:, None] % 49) * depth
    ranked = np.argsort(rng.random((n_users, depth)), axis=1) + offset  # distinct ids per row, < n_items
    targets = [rng.integers(0, n_items, 3) for _ in range(n_users)]
    t0 = time.perf_counter()
    hits, n_rel = hit_matrix(ranked, targets)
    ndcg_at_k(hits, n_rel, 100)
    assert time.perf_counter() - t0 < 1.0  # typically ~0.1 s


# ------------------------------------------------------------------ MAP and beyond-accuracy, by hand
def test_map_by_hand():
    hits = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], bool)
    # user 0: (1/1 + 2/3) / 3 relevant; user 1: (1/2) / 1; user 2: no targets -> NaN
    out = map_at_k(hits, np.array([3, 1, 0]), 4)
    np.testing.assert_allclose(out[:2], [(1 + 2 / 3) / 3, 0.5])
    assert math.isnan(out[2])
    # n_rel > k caps AP@k below 1 even for a perfect list: 2 hits in 2 slots, 5 relevant -> (1 + 1) / 5
    assert map_at_k(np.array([[1, 1]], bool), np.array([5]), 2)[0] == pytest.approx(2 / 5)


def test_beyond_accuracy_by_hand():
    ranked = np.array([[0, 1, 2], [0, 3, -1]])
    assert catalog_coverage(ranked, 5, 3) == 4 / 5
    assert catalog_coverage(ranked, 5, 1) == 1 / 5
    emb = np.array([[1.0, 0], [0, 1.0], [1.0, 0], [-1.0, 0]])
    # user 0: cos(0,1)=0, cos(0,2)=1, cos(1,2)=0 -> 1 - 1/3; user 1: cos(0,3) = -1 -> 2
    np.testing.assert_allclose(intra_list_diversity(ranked, emb, 3), [2 / 3, 2.0])
    counts = np.array([8, 2, 0, 1, 0])
    # p = counts / 8 users (0 clipped to 1): user 0: (0 + 2 + 3) / 3; user 1: (0 + 3) / 2
    np.testing.assert_allclose(novelty(ranked, counts, 8, 3), [5 / 3, 1.5])
    np.testing.assert_allclose(average_recommendation_popularity(ranked, counts, 3), [10 / 3, 4.5])
    # exposure x = [2, 1, 1, 1, 0] sorted [0, 1, 1, 1, 2]: sum (2i - 6) x_i = (-4*0 -2*1 + 0 + 2*1 + 4*2) = 8
    assert gini_exposure(ranked, 5, 3) == pytest.approx(8 / (5 * 5))
    assert gini_exposure(np.full((2, 2), -1), 5, 2) == 0.0


def test_beyond_accuracy_second_case():
    ranked = np.array([[0, 1, 2], [2, 3, -1], [-1, -1, -1]])
    # coverage: {0, 1, 2, 3} / 6; at k = 1: {0, 2} / 6
    assert catalog_coverage(ranked, 6, 3) == pytest.approx(4 / 6)
    assert catalog_coverage(ranked, 6, 1) == pytest.approx(2 / 6)
    # exposure [1, 1, 2, 1, 0, 0] sorted [0, 0, 1, 1, 1, 2], n = 6, sum 5:
    # sum (2i - 7) x_i = -1*1 + 1*1 + 3*1 + 5*2 = 13  ->  G = 13 / 30
    assert gini_exposure(ranked, 6, 3) == pytest.approx(13 / 30)
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    # user 0: cos = 0, 1/sqrt2, 1/sqrt2 -> 1 - sqrt2/3 = 0.52860; user 1: cos(2, 3) = -1/sqrt2 -> 1.70711
    ild = intra_list_diversity(ranked, emb, 3)
    np.testing.assert_allclose(ild[:2], [1 - math.sqrt(2) / 3, 1 + 1 / math.sqrt(2)])
    assert math.isnan(ild[2])  # empty list
    assert np.isnan(intra_list_diversity(ranked, emb, 1)).all()  # one item: no pairs
    # novelty with 4 users, counts [4, 2, 1, 0] (item 3: 0 clipped to 1): info = [0, 1, 2, 2]
    counts = np.array([4, 2, 1, 0, 9, 9])
    nov = novelty(ranked, counts, 4, 3)
    np.testing.assert_allclose(nov[:2], [(0 + 1 + 2) / 3, (2 + 2) / 2])
    assert math.isnan(nov[2])
    arp = average_recommendation_popularity(ranked, counts, 3)
    np.testing.assert_allclose(arp[:2], [(4 + 2 + 1) / 3, (1 + 0) / 2])
    assert math.isnan(arp[2])
    for fn in (nov, arp, ild):
        assert fn.dtype == np.float64


def test_gini_extremes():
    # every item shown exactly once: equal exposure
    assert gini_exposure(np.array([[0, 1], [2, 3]]), 4, 2) == pytest.approx(0.0)
    # one item shown to every user, the other n-1 never: maximum (n - 1) / n
    assert gini_exposure(np.array([[3], [3], [3]]), 5, 1) == pytest.approx(4 / 5)
    assert catalog_coverage(np.full((3, 2), -1), 5, 2) == 0.0


def test_ild_identical_and_zero_vectors():
    emb = np.array([[2.0, 0.0], [5.0, 0.0], [0.0, 0.0], [0.0, 3.0]])
    # identical directions -> 0 (not a tiny negative); a zero vector has cosine 0 with everything
    assert intra_list_diversity(np.array([[0, 1]]), emb, 2)[0] == 0.0
    # items 0, 2, 3: cos(0,2) = 0, cos(0,3) = 0, cos(2,3) = 0 -> 1
    assert intra_list_diversity(np.array([[0, 2, 3]]), emb, 3)[0] == pytest.approx(1.0)


def _naive_ild(ranked, emb, k):
    out = []
    for row in ranked[:, :k]:
        ids = [i for i in row.tolist() if i >= 0]
        if len(ids) < 2:
            out.append(math.nan)
            continue
        cos = [
            float(emb[a] @ emb[b] / (np.linalg.norm(emb[a]) * np.linalg.norm(emb[b])))
            for x, a in enumerate(ids)
            for b in ids[x + 1 :]
        ]
        out.append(1 - sum(cos) / len(cos))
    return out


def test_beyond_accuracy_equals_naive_loops_and_chunks_agree():
    rng = np.random.default_rng(3)
    ranked, _ = _random_rankings(rng, n_users=120, n_items=60, depth=20)
    emb = rng.normal(size=(60, 8))
    counts = rng.integers(0, 30, 60)
    for k in (1, 5, 20):
        want = _naive_ild(ranked, emb, k)
        np.testing.assert_allclose(intra_list_diversity(ranked, emb, k), want, rtol=1e-10, atol=1e-12)
        # a tiny memory budget forces one user per chunk: same answer
        np.testing.assert_allclose(
            intra_list_diversity(ranked, emb, k, max_chunk_bytes=1), want, rtol=1e-10, atol=1e-12
        )
        rows = [[i for i in r if i >= 0] for r in ranked[:, :k].tolist()]
        np.testing.assert_allclose(
            novelty(ranked, counts, 30, k),
            [np.mean([-math.log2(max(counts[i], 1) / 30) for i in r]) if r else math.nan for r in rows],
        )
        np.testing.assert_allclose(
            average_recommendation_popularity(ranked, counts, k),
            [np.mean([counts[i] for i in r]) if r else math.nan for r in rows],
        )
        shown = {i for r in rows for i in r}
        assert catalog_coverage(ranked, 60, k) == pytest.approx(len(shown) / 60)
        x = sorted(sum(i in r for r in rows) for i in range(60))
        g = sum((2 * (j + 1) - 60 - 1) * v for j, v in enumerate(x)) / (60 * sum(x))
        assert gini_exposure(ranked, 60, k) == pytest.approx(g)


def test_beyond_accuracy_bad_inputs_rejected():
    ranked = np.array([[0, 1], [2, -1]])
    emb, counts = np.ones((3, 2)), np.ones(3)
    calls = [
        lambda k: catalog_coverage(ranked, 3, k),
        lambda k: gini_exposure(ranked, 3, k),
        lambda k: intra_list_diversity(ranked, emb, k),
        lambda k: novelty(ranked, counts, 5, k),
        lambda k: average_recommendation_popularity(ranked, counts, k),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="only 2 columns"):
            call(3)
        with pytest.raises(ValueError, match="k must be"):
            call(0)
    with pytest.raises(ValueError, match="only 2 items"):
        catalog_coverage(ranked, 2, 2)
    with pytest.raises(ValueError, match="only 2 items"):
        intra_list_diversity(ranked, emb[:2], 2)
    with pytest.raises(ValueError, match="only 2 items"):
        novelty(ranked, counts[:2], 5, 2)
    with pytest.raises(ValueError, match=">= 0"):
        average_recommendation_popularity(ranked, -counts, 2)
    with pytest.raises(ValueError, match="n_users"):
        novelty(ranked, counts, 0, 2)
    with pytest.raises(ValueError, match="n_items"):
        gini_exposure(ranked, 0, 2)
    with pytest.raises(ValueError, match="2-D"):
        catalog_coverage(np.array([0, 1]), 3, 1)


# -------------------------------------------------------------- cross-check against trec_eval (pytrec)
def test_ranking_metrics_match_trec_eval_on_random_rankings():
    """Independent implementation: trec_eval via pytrec_eval (dev extra ``pytrec-eval-terrier``).

    Binary qrels; the run holds only each user's top k with distinct descending scores, so trec_eval's order
    is ours and its recip_rank is MRR@k. P_k, recall_k, ndcg_cut_k, map_cut_k = our @k metrics.
    """
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(7)
    n_users, n_items, K = 50, 200, 20
    ranked = np.stack([rng.choice(n_items, K, replace=False) for _ in range(n_users)])
    tg = []
    for u in range(n_users):
        n_t = rng.integers(1, 4)  # 1..3 targets, 0..n_t of them inside the ranked list
        inside = rng.choice(ranked[u], size=rng.integers(0, n_t + 1), replace=False)
        outside = rng.choice(
            np.setdiff1d(np.arange(n_items), ranked[u]), size=n_t - len(inside), replace=False
        )
        tg.append(np.concatenate([inside, outside]).astype(np.int64))
    hits, n_rel = hit_matrix(ranked, tg)
    assert 0 < hits.any(axis=1).sum() < n_users  # some users found something, some found nothing
    assert (hits.sum(axis=1) < n_rel).any()  # some targets absent from the list
    qrel = {f"u{u}": {f"d{i}": 1 for i in tg[u]} for u in range(n_users)}
    users = [f"u{u}" for u in range(n_users)]
    for k in (5, 10, 20):
        run = {f"u{u}": {f"d{i}": float(K - r) for r, i in enumerate(ranked[u][:k])} for u in range(n_users)}
        ev = pytrec_eval.RelevanceEvaluator(qrel, {"recall", "P", "ndcg_cut", "recip_rank", "map_cut"})
        ref = ev.evaluate(run)
        for ours, measure in (
            (recall_at_k, f"recall_{k}"),
            (precision_at_k, f"P_{k}"),
            (ndcg_at_k, f"ndcg_cut_{k}"),
            (mrr_at_k, "recip_rank"),
            (map_at_k, f"map_cut_{k}"),
        ):
            want = [ref[u][measure] for u in users]
            np.testing.assert_allclose(ours(hits, n_rel, k), want, atol=1e-6, err_msg=measure)
