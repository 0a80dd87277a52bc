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
    select_weight,
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
    model = HybridModel(cf, 0.3, 10.0, "rrf", "pooling", 5.0, {"valid_users": 7})
    model.save(tmp_path)
    back = HybridModel.load(tmp_path)
    assert (back.weight, back.confidence, back.fusion, back.user_model, back.halflife) == (0.3, 10.0, "rrf", "pooling", 5.0)
    assert back.info == {"valid_users": 7} and back.cf.name == "itemknn"
    dense = np.random.default_rng(0).normal(size=(3, 25)).astype(np.float32)
    hist = [np.array([0, 2]), np.array([1]), np.array([4, 6, 8])]
    np.testing.assert_array_equal(back.score(dense, hist), model.score(dense, hist))
    (tmp_path / "hybrid.json").write_text((tmp_path / "hybrid.json").read_text().replace('"format": 1', '"format": 9'))
    with pytest.raises(ValueError, match="format 9"):
        HybridModel.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="recsys-llm hybrid"):
        HybridModel.load(tmp_path / "nope")


def test_paired_ratio_interval():
    from recsys_llm.stats import paired_ratio

    rng = np.random.default_rng(0)
    b = rng.random(400)
    r = paired_ratio(2.0 * b + rng.normal(0, 0.05, 400), b)
    assert 1.9 < r.low < r.mean < r.high < 2.1
    assert np.isnan(paired_ratio(b, np.zeros(400)).mean)
