"""Hybrid fusion (recsys_llm.hybrid): collaborative scorer, per-item trust, fusion formulas, selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys_llm.classic import EASE, ItemKNN
from recsys_llm.hybrid import (
    CollaborativeScorer,
    HybridModel,
    _prune_columns,
    fit_collaborative,
    fuse,
    item_trust,
    ndcg_at,
    select_weight,
    trust_key,
    zscore_rows,
)


def _train(seed: int = 0, n_users: int = 60, n_items: int = 25) -> pd.DataFrame:
    """Two taste groups (even / odd items); items 20..24 have no interactions (cold)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for t, i in enumerate(rng.choice(np.arange(u % 2, 20, 2), size=6, replace=False)):
            rows.append((u, int(i), t))
    return pd.DataFrame(rows, columns=["user", "item", "timestamp"])


@pytest.mark.parametrize("name, cls", [("ease", EASE), ("itemknn", ItemKNN)])
def test_collaborative_scorer_equals_the_full_model_when_nothing_is_pruned(name, cls):
    train = _train()
    cf = fit_collaborative(name, train, 60, 25, keep=25)
    full = cls().fit(train, 60, 25)
    hist = [np.array([0, 2, 4]), np.array([1]), np.array([], dtype=np.int64)]
    np.testing.assert_allclose(cf.score(hist), full.score(np.arange(3), hist), rtol=1e-5, atol=1e-6)
    assert cf.counts.tolist() == np.bincount(train["item"], minlength=25).tolist()
    assert (cf.score(hist)[:, 20:] == 0).all()  # nobody touched items 20..24: the ID model scores them 0


def test_pruning_keeps_the_largest_entries_of_each_column():
    m = np.array([[0.0, 3.0, 1.0], [2.0, 0.0, 5.0], [1.0, 4.0, 0.0]], dtype=np.float32)
    p = _prune_columns(m, keep=1).toarray()
    np.testing.assert_array_equal(p, [[0, 0, 0], [2, 0, 5], [0, 4, 0]])
    assert isinstance(_prune_columns(sp.csr_matrix(m), 5), sp.csr_matrix)


def test_recency_halflife_weights_the_query_by_position_from_the_most_recent():
    s = sp.csr_matrix(np.eye(4, dtype=np.float32))
    cf = CollaborativeScorer(s, np.ones(4, np.int64), "test")
    out = cf.score([np.array([0, 1, 2])], halflife=1.0)[0]  # oldest first: item 2 is the most recent
    np.testing.assert_allclose(out, [0.25, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(cf.score([np.array([0, 1, 2])])[0], [1, 1, 1, 0])  # 0 = binary
    np.testing.assert_allclose(cf.score([np.array([1, 0, 1])], halflife=1.0)[0], [0.5, 1.0, 0, 0])  # repeat: latest
    wide = cf.score([np.array([5])], n_items=6)  # an item added after fitting: no row, no score, no error
    assert wide.shape == (1, 6) and (wide == 0).all()
    with pytest.raises(ValueError, match="row 0: item id 9"):
        cf.score([np.array([9])], n_items=6)


def test_zscore_and_trust():
    z = zscore_rows(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    np.testing.assert_allclose(z[0], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    assert (z[1] == 0).all()  # a constant row carries no information
    np.testing.assert_allclose(item_trust(np.array([0, 10, 30]), 10.0, 4), [0.0, 0.5, 0.75, 0.0])
    np.testing.assert_allclose(item_trust(np.array([0, 10, 30]), 0.0, 3), [0.0, 1.0, 1.0])


def test_weighted_fusion_formula_by_hand():
    dense = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    collab = np.array([[3.0, 2.0, 1.0]], dtype=np.float32)
    trust = np.array([1.0, 1.0, 0.0], dtype=np.float32)
    z = 1.2247449
    # w_i = w t_i: items 0, 1 mix 3:1, item 2 (no evidence) keeps its full text score
    np.testing.assert_allclose(fuse(dense, collab, 0.25, trust)[0], [0.75 * -z + 0.25 * z, 0.0, z], rtol=1e-5)
    np.testing.assert_allclose(fuse(dense, collab, 0.0, trust), zscore_rows(dense))
    np.testing.assert_allclose(fuse(dense, collab, 1.0, trust)[0], [z, 0.0, z], rtol=1e-5)  # w=1: ID where it can
    # rrf: (1-w_i)/(60+rank_d) + w_i/(60+rank_c)
    got = fuse(dense, collab, 0.5, trust, "rrf")[0]
    np.testing.assert_allclose(got, [0.5 / 62 + 0.5 / 60, 0.5 / 61 + 0.5 / 61, 1 / 60], rtol=1e-6)
    flat = np.ones_like(collab)  # no collaborative evidence for this user: text only, whatever w
    np.testing.assert_allclose(fuse(dense, flat, 0.9, trust), zscore_rows(dense))
    with pytest.raises(ValueError, match="fusion"):
        fuse(dense, collab, 0.5, trust, "max")
    with pytest.raises(ValueError, match="weight"):
        fuse(dense, collab, 1.5, trust)


def test_cold_items_are_ranked_by_text_and_a_user_without_evidence_is_pure_text():
    train = _train()
    cf = fit_collaborative("ease", train, 60, 25)
    model = HybridModel(cf, weight=0.6, confidence=5.0)
    rng = np.random.default_rng(1)
    dense = rng.normal(size=(2, 25)).astype(np.float32)
    fused = model.score(dense, [np.array([0, 2]), np.array([], dtype=np.int64)])
    cold = np.arange(20, 25)
    assert (np.argsort(-fused[0, cold]) == np.argsort(-dense[0, cold])).all()  # trust 0: text order
    np.testing.assert_allclose(fused[1], zscore_rows(dense[1:])[0], rtol=1e-5)  # no history: text only


def test_select_weight_finds_the_planted_mix():
    """Relevant item = where dense and collaborative agree; either alone misses it. A mix wins."""
    n_users, n_items = 200, 30
    rng = np.random.default_rng(0)
    target = rng.integers(0, n_items, n_users)
    dense = rng.normal(size=(n_users, n_items)).astype(np.float32)
    collab = rng.normal(size=(n_users, n_items)).astype(np.float32)
    dense[np.arange(n_users), target] += 1.8
    collab[np.arange(n_users), target] += 1.8
    tg = [np.array([t]) for t in target]
    excl = [np.array([], dtype=np.int64)] * n_users
    w, grid = select_weight(dense, collab, np.ones(n_items, np.float32), tg, excl, [0.0, 0.5, 1.0])
    assert w == 0.5 and grid[0.5] > grid[0.0] + 0.1 and grid[0.5] > grid[1.0] + 0.1


def test_hybrid_model_round_trip(tmp_path):
    cf = fit_collaborative("itemknn", _train(), 60, 25)
    from recsys_llm.hybrid import text_neighbours

    emb = np.random.default_rng(0).normal(size=(25, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    model = HybridModel(cf, 0.3, 10.0, "rrf", "pooling", 5.0, {"valid_users": 7},
                        text_neighbours(emb, cf.counts, k=5), 0.4)
    model.save(tmp_path)
    back = HybridModel.load(tmp_path)
    assert (back.weight, back.confidence, back.fusion, back.user_model, back.halflife, back.bridge) == (
        0.3, 10.0, "rrf", "pooling", 5.0, 0.4)
    assert (back.neighbours != model.neighbours).nnz == 0
    assert back.info == {"valid_users": 7} and back.cf.name == "itemknn"
    dense = np.random.default_rng(0).normal(size=(3, 25)).astype(np.float32)
    hist = [np.array([0, 2]), np.array([1]), np.array([4, 6, 8])]
    np.testing.assert_array_equal(back.score(dense, hist), model.score(dense, hist))
    (tmp_path / "hybrid.json").write_text((tmp_path / "hybrid.json").read_text().replace('"format": 2', '"format": 9'))
    with pytest.raises(ValueError, match="format 9"):
        HybridModel.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="recsys-llm hybrid"):
        HybridModel.load(tmp_path / "nope")


def test_paired_ratio_interval():
    from recsys_llm.report.stats import paired_ratio

    rng = np.random.default_rng(0)
    b = rng.random(400)
    r = paired_ratio(2.0 * b + rng.normal(0, 0.05, 400), b)
    assert 1.9 < r.low < r.mean < r.high < 2.1
    assert np.isnan(paired_ratio(b, np.zeros(400)).mean)


def test_text_neighbours_exclude_self_and_items_without_evidence():
    from recsys_llm.hybrid import text_neighbours

    emb = np.eye(4, dtype=np.float32)[[0, 0, 1, 1, 2]]  # items 0,1 identical; 2,3 identical; 4 alone
    emb[1] += 0.01
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    counts = np.array([5, 5, 5, 0, 5])  # item 3 has no interactions: never a donor
    n = text_neighbours(emb, counts, k=2, temperature=0.05, chunk=2).toarray()
    np.testing.assert_allclose(n.sum(axis=1), 1.0, rtol=1e-5)
    assert (np.diag(n) == 0).all() and (n[:, 3] == 0).all()
    assert n[0].argmax() == 1 and n[1].argmax() == 0 and n[3].argmax() == 2  # the cold item borrows from its twin
    assert text_neighbours(emb, np.zeros(5), k=3).nnz == 0


def test_bridge_lends_collaborative_signal_to_items_without_it():
    from recsys_llm.hybrid import bridge_scores

    dense = np.array([[0.0, 0.0, 1.0, 1.0]], dtype=np.float32)  # text cannot tell items 2 and 3 apart
    collab = np.array([[3.0, -1.0, 0.0, 0.0]], dtype=np.float32)  # items 2, 3 are cold: no column
    neighbours = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]], np.float32))
    b = bridge_scores(neighbours, collab)
    np.testing.assert_allclose(b[0], [zscore_rows(collab)[0, 1], *zscore_rows(collab)[0, [0, 0, 1]]], rtol=1e-6)
    trust = np.array([1.0, 1.0, 0.0, 0.0], dtype=np.float32)
    fused = fuse(dense, collab, 0.5, trust, bridged=b, bridge_weight=0.5)
    zd, zc, zb = zscore_rows(dense)[0], zscore_rows(collab)[0], zscore_rows(b)[0]  # every part standardised
    np.testing.assert_allclose(fused[0], [0.5 * zd[0] + 0.5 * zc[0], 0.5 * zd[1] + 0.5 * zc[1],
                                          0.5 * zd[2] + 0.5 * zb[2], 0.5 * zd[3] + 0.5 * zb[3]], rtol=1e-5)
    assert fused[0, 2] > fused[0, 3]  # item 2's neighbour (item 0) is liked: it wins the tie text left
    model = HybridModel(CollaborativeScorer(sp.csr_matrix(np.eye(4, dtype=np.float32)), np.array([3, 3, 0, 0]), "x"),
                        0.5, 0.0, neighbours=neighbours, bridge=0.5)
    assert model.bridge_scores(collab).shape == (1, 4)


def _search_case(seed: int = 0, n_users: int = 300, n_items: int = 400):
    """Raw part scores with planted targets, some users excluded from their own target, some flat users."""
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(n_users, n_items)).astype(np.float32)
    collab = (rng.normal(size=(n_users, n_items)) ** 3).astype(np.float32)
    collab[:10] = 1.0  # no collaborative evidence: text only
    bridged = rng.normal(size=(n_users, n_items)).astype(np.float32)
    tg = [rng.choice(n_items, size=int(rng.integers(1, 4)), replace=False) for _ in range(n_users)]
    for u, t in enumerate(tg):
        dense[u, t] += 1.5
        collab[u, t] += 1.0
    excl = [np.setdiff1d(rng.choice(n_items, 30, replace=False), tg[u]) for u in range(n_users)]
    excl[5] = np.concatenate([excl[5], tg[5][:1]])  # a target the user has seen: never a hit
    return dense, collab, bridged, tg, excl, rng.integers(0, 100, n_items)


@pytest.mark.parametrize("m", [3, 40, 1000])
def test_candidate_search_equals_the_exhaustive_grid(m):
    """The bound makes the candidate grid exact for full ranking, with few or many candidates."""
    from recsys_llm.hybrid import candidate_set, fused_grid

    dense, collab, bridged, tg, excl, counts = _search_case()
    cs = candidate_set(dense, collab, bridged, tg, excl, m=m, chunk=128)
    weights = [0.0, 0.3, 0.7, 1.0]
    for c, g in [(0.0, 0.0), (10.0, 0.5)]:
        trust = item_trust(counts, c, dense.shape[1])
        fast = fused_grid(cs, trust, [(w, g) for w in weights], chunk=64)
        _, grid = select_weight(dense, collab, trust, tg, excl, weights, bridged=bridged, bridge_weight=g)
        np.testing.assert_allclose(fast, [grid[w] for w in weights], rtol=0, atol=1e-12)
    lexical = np.maximum(np.random.default_rng(5).normal(size=dense.shape), 0).astype(np.float32)  # BM25-like: many 0
    cs = candidate_set(dense, collab, bridged, tg, excl, m=m, chunk=128, lexical=lexical)
    settings = [(0.0, 0.0, 0.0), (0.0, 0.5, 0.5), (0.0, 0.0, 1.0), (0.6, 0.25, 0.5), (1.0, 0.0, 0.3)]
    trust = item_trust(counts, 10.0, dense.shape[1])
    fast = fused_grid(cs, trust, settings, chunk=64)
    exact = [np.mean(ndcg_at(fuse(dense, collab, w, trust, bridged=bridged, bridge_weight=g, lexical=lexical,
                                  lexical_weight=lw), tg, excl)) for w, g, lw in settings]
    np.testing.assert_allclose(fast, exact, rtol=0, atol=1e-12)
    if m == 3:
        assert cs.fallback > 0  # three candidates per part rarely certify: the catalogue answered instead
    cold = fused_grid(candidate_set(dense, collab, None, tg, excl, m=m), np.zeros(400, np.float32),
                      [(0.0, 0.0), (0.0, 0.5)])
    assert cold[0] == cold[1]  # no bridge part: the bridge weight changes nothing, as in fuse


def test_candidate_bound_holds_for_every_item_outside_the_lists():
    from recsys_llm.hybrid import candidate_set

    dense, collab, bridged, tg, excl, _ = _search_case(1, 50, 300)
    cs = candidate_set(dense, collab, bridged, tg, excl, m=20)
    rng = np.random.default_rng(0)
    for _ in range(5):
        w, g = float(rng.uniform(0, 0.6)), float(rng.uniform(0, 0.4))
        fused = fuse(dense, collab, w, rng.uniform(0, 1, 300).astype(np.float32), bridged=bridged, bridge_weight=g)
        for u in range(50):
            outside = np.setdiff1d(np.arange(300), np.union1d(cs.items[u][cs.valid[u]], excl[u]))
            assert fused[u, outside].max(initial=-np.inf) <= cs.bound[u] + 1e-4


def test_lexical_part_is_bm25_and_round_trips(tmp_path):
    """The hybrid's BM25 matrices score as the BM25 baseline; with lexical weight 1 cold items rank by BM25."""
    from recsys_llm.classic import BM25Recommender
    from recsys_llm.hybrid.lexical import LexicalScorer

    texts = ["Acme X100 camera", "Acme X200 camera bag", "Zeta Q7 phone", "Zeta Q7 phone case", "", "the the"]
    lex = LexicalScorer.fit(texts, query_items=2)
    train = pd.DataFrame({"user": [0, 1], "item": [0, 2], "timestamp": [0, 1]})
    bm25 = BM25Recommender(query_items=2).fit(train, 3, len(texts), item_texts=texts)
    hist = [np.array([0]), np.array([2, 1, 3]), np.array([], dtype=np.int64)]
    np.testing.assert_allclose(lex.score(hist), bm25.score(np.arange(3), hist), atol=1e-5)
    assert lex.score([np.array([9])], n_items=8).shape == (1, 8)  # ids beyond the fitted texts add nothing
    cf = CollaborativeScorer(sp.csr_matrix(np.eye(6, dtype=np.float32)), np.array([5, 5, 5, 0, 0, 0]), "x")
    model = HybridModel(cf, 0.5, 0.0, lexical=lex, lexical_weight=1.0)
    dense = np.random.default_rng(0).normal(size=(1, 6)).astype(np.float32)
    fused = model.score(dense, [np.array([2])])[0]
    assert fused[3] > fused[4] and fused[3] > fused[5]  # cold items: BM25 alone, the Q7 case first
    model.save(tmp_path)
    back = HybridModel.load(tmp_path)
    assert back.lexical_weight == 1.0 and back.lexical is not None
    np.testing.assert_array_equal(back.score(dense, [np.array([2])]), model.score(dense, [np.array([2])]))


def test_pseudo_cold_items_keep_their_first_interactions_only():
    from recsys_llm.hybrid.evidence import choose_confidence, hide_beyond, pseudo_cold_exclusions

    train = pd.DataFrame({"user": [0, 1, 2, 3, 0, 1, 2], "item": [5, 5, 5, 5, 6, 6, 7],
                          "timestamp": [40, 10, 30, 20, 1, 2, 3]})
    cut, reveal = hide_beyond(train, np.array([5, 6]), reveal=(2,), seed=0)
    assert reveal == {5: 2, 6: 2}
    assert sorted(cut[cut["item"] == 5]["user"]) == [1, 3]  # the two earliest (t = 10, 20)
    assert len(cut[cut["item"] == 6]) == 2 and len(cut[cut["item"] == 7]) == 1  # item 7 stays warm
    ex = pseudo_cold_exclusions([np.array([5]), np.array([], dtype=np.int64)], np.array([5, 6]), 8)
    assert ex[0].tolist() == [0, 1, 2, 3, 4, 5, 7] and ex[1].tolist() == [0, 1, 2, 3, 4, 7]
    rng = np.random.default_rng(0)
    base = rng.random(500)
    # warm validation cannot tell c = 0 from c = 50 (noise): the few-shot validation decides
    noise = rng.normal(0.0, 0.05, 500)
    noisy = {0.0: base, 50.0: base + noise - noise.mean() + 0.001}  # better by 0.001, the paired SE is ~0.002
    assert choose_confidence(noisy, {0.0: 0.15, 50.0: 0.30}) == 50.0
    assert choose_confidence(noisy, {0.0: 0.30, 50.0: 0.15}) == 0.0
    # a clear warm loss is never traded for a few-shot gain, however large
    assert choose_confidence({0.0: base, 50.0: base - 0.02}, {0.0: 0.10, 50.0: 0.90}) == 0.0
    assert choose_confidence({0.0: base, 50.0: base}, {0.0: 0.2, 50.0: 0.2}) == 0.0  # ties: the smaller c


def test_trust_lets_an_item_with_evidence_follow_the_collaborative_part():
    """Cold candidates with n interactions each: with a small confidence the hybrid's order approaches the
    collaborative order as n grows (the item-side few-shot curve), with a large one it stays with text."""
    rng = np.random.default_rng(0)
    dense, collab = rng.normal(size=(50, 40)).astype(np.float32), rng.normal(size=(50, 40)).astype(np.float32)
    target = np.argmax(collab, axis=1)  # the collaborative part knows the answer, text does not
    tg, excl = [np.array([t]) for t in target], [np.array([], dtype=np.int64)] * 50

    def ndcg(n, c):
        trust = item_trust(np.full(40, n), c, 40)
        return float(np.mean(ndcg_at(fuse(dense, collab, 0.8, trust), tg, excl)))

    small = [ndcg(n, 1.0) for n in (0, 1, 3, 5, 20)]
    assert all(b >= a - 1e-9 for a, b in zip(small, small[1:], strict=False)) and small[-1] > 0.8
    assert ndcg(20, 200.0) < 0.5  # a large confidence keeps an item with 20 interactions on its text


def test_trust_power_steepens_the_curve_and_round_trips(tmp_path):
    """p = 1: n/(n+c); p = 4: a step at c (items well below it lean on text, well above follow EASE)."""
    counts = np.array([0, 1, 5, 10, 20, 40])
    slow, steep = item_trust(counts, 10.0, 7), item_trust(counts, 10.0, 7, power=4.0)
    np.testing.assert_allclose(slow[:6], [0, 1 / 11, 5 / 15, 0.5, 20 / 30, 0.8], rtol=1e-6)
    np.testing.assert_allclose(steep[:6], [0, 1e-4 / (1 + 1e-4), 1 / 17, 0.5, 16 / 17, 256 / 257], rtol=1e-5)
    assert steep[6] == slow[6] == 0.0  # an item added after fitting: no evidence
    assert (item_trust(counts, 0.0, 6, power=4.0) == (counts > 0)).all()  # confidence 0: full trust, any power
    assert trust_key(10.0) == "10.0" and trust_key(10.0, 4.0) == "10.0^4.0"
    cf = CollaborativeScorer(sp.csr_matrix(np.eye(6, dtype=np.float32)), counts, "x")
    model = HybridModel(cf, 0.5, 10.0, trust_power=4.0)
    dense = np.random.default_rng(0).normal(size=(1, 6)).astype(np.float32)
    model.save(tmp_path)
    back = HybridModel.load(tmp_path)
    assert back.trust_power == 4.0
    np.testing.assert_array_equal(back.score(dense, [np.array([2])]), model.score(dense, [np.array([2])]))
    assert not np.allclose(model.score(dense, [np.array([2])]),
                           HybridModel(cf, 0.5, 10.0).score(dense, [np.array([2])]))  # the power is used
