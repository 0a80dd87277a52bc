"""EASE's two solvers, recency-weighted queries, and fit_variants equal to one fit per setting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys_llm.classic import EASE, ItemKNN, RecencyEASE, make_baseline, query_matrix, recency_weights
from recsys_llm.hybrid import CollaborativeScorer


def random_train(n_users=30, n_items=50, per_user=8, seed=0):
    rng = np.random.default_rng(seed)
    rows = [(u, int(i), t) for u in range(n_users) for t, i in enumerate(rng.choice(n_items, per_user, replace=False))]
    u, i, t = zip(*rows, strict=True)
    return pd.DataFrame({"user": np.array(u, np.int64), "item": np.array(i, np.int64), "timestamp": np.array(t)})


def hists(train, n_users):
    return [train.item[train.user == u].to_numpy() for u in range(n_users)]


def test_recency_weights_by_hand():
    ids, w = recency_weights(np.array([4, 2, 4, 9]), halflife=1.0)  # ages: 9 -> 0, 4 -> 1, 2 -> 2
    assert ids.tolist() == [2, 4, 9]
    np.testing.assert_allclose(w, [0.25, 0.5, 1.0])
    np.testing.assert_array_equal(recency_weights(np.array([4, 2, 4]), 0.0)[1], [1.0, 1.0])  # binary
    q = query_matrix([np.array([1, 0]), np.array([], np.int64), np.array([7, 2])], n_items=3, halflife=2.0)
    np.testing.assert_allclose(q.toarray(), [[1, 2**-0.5, 0], [0, 0, 0], [0, 0, 1]], rtol=1e-6)  # 7 >= n_items


@pytest.mark.parametrize("halflife", [0.0, 3.0])
def test_query_matrix_is_the_hybrid_query(halflife):
    """The hybrid's collaborative scorer and the classic models weight a history the same way."""
    rng = np.random.default_rng(1)
    matrix = sp.random(20, 20, density=0.3, random_state=1, format="csr", dtype=np.float32)
    scorer = CollaborativeScorer(matrix, np.ones(20, np.int64), "ease")
    histories = [rng.integers(0, 20, size=n) for n in (0, 1, 5, 12)]
    ours = (query_matrix(histories, 20, halflife) @ matrix).toarray()
    np.testing.assert_allclose(ours, scorer.score(histories, halflife=halflife), rtol=1e-6)


@pytest.mark.parametrize(("n_users", "n_items"), [(30, 50), (60, 20)])
def test_ease_user_and_item_solvers_agree(n_users, n_items):
    train = random_train(n_users, n_items)
    h = hists(train, n_users)
    by_items = EASE(l2=7.0, solver="items").fit(train, n_users, n_items)
    by_users = EASE(l2=7.0, solver="users").fit(train, n_users, n_items)
    np.testing.assert_allclose(by_users.weights_, by_items.weights_, atol=1e-5)
    np.testing.assert_allclose(by_users.score(np.arange(n_users), h), by_items.score(np.arange(n_users), h),
                               atol=1e-5)
    assert not isinstance(by_users._solution, np.ndarray) and isinstance(by_items._solution, np.ndarray)


def test_recency_ease_weights_recent_items_more():
    # item 0 predicts item 2 only, item 1 predicts item 3 only (two disjoint groups of users)
    train = pd.DataFrame({"user": [0, 0, 1, 1, 2, 2, 3, 3], "item": [0, 2, 0, 2, 1, 3, 1, 3]})
    query = [np.array([0, 1])]  # 1 is the most recent
    plain = EASE(l2=1.0).fit(train, 4, 4).score(np.array([0]), query)[0]
    assert plain[2] == pytest.approx(plain[3])
    recent = RecencyEASE(l2=1.0, halflife=1.0).fit(train, 4, 4).score(np.array([0]), query)[0]
    assert recent[3] == pytest.approx(2 * recent[2])  # weights 1 and 0.5
    flat = RecencyEASE(l2=1.0, halflife=0.0).fit(train, 4, 4).score(np.array([0]), query)[0]
    np.testing.assert_array_equal(flat, plain)


@pytest.mark.parametrize(("name", "grid"), [
    ("ease", [{"l2": 1.0}, {"l2": 30.0}]),
    ("ease_recency", [{"l2": 5.0, "halflife": h} for h in (0.0, 2.0)] + [{"l2": 50.0, "halflife": 2.0}]),
    ("itemknn", [{"shrink": s, "k_neighbors": k} for s in (0.0, 5.0) for k in (2, 5, 40)]),
    ("bm25", [{"k1": k1, "query_items": q} for k1 in (0.5, 2.0) for q in (1, 3)]),
])
def test_fit_variants_equal_one_fit_per_setting(name, grid):
    train = random_train()
    h = hists(train, 30)
    base = make_baseline(name)
    texts = [f"w{i % 7} w{i % 3} item{i}" for i in range(50)]
    for params, model in base.fit_variants(grid, train, 30, 50, texts):
        alone = base.with_params(**params).fit(train, 30, 50, texts)
        np.testing.assert_allclose(model.score(np.arange(30), h), alone.score(np.arange(30), h), rtol=1e-6)
        assert repr(model) == repr(alone)


def test_itemknn_blocks_give_the_unblocked_answer(monkeypatch):
    import recsys_llm.classic.knn as knn

    train = random_train()
    whole = ItemKNN(k_neighbors=3, shrink=1.0).fit(train, 30, 50).similarity_.toarray()
    monkeypatch.setattr(knn, "_BLOCK_CELLS", 7 * 50)  # 7 items per block
    blocked = ItemKNN(k_neighbors=3, shrink=1.0).fit(train, 30, 50).similarity_.toarray()
    np.testing.assert_array_equal(whole, blocked)
    assert ((whole > 0).sum(axis=0) <= 3).all()


def test_with_params_names_unknown_settings():
    with pytest.raises(ValueError, match=r"no hyper-parameter\(s\) \['alpha'\]"):
        EASE().with_params(alpha=1.0)
