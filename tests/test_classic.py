"""Classic baselines: hand-checked scores, planted structure, and the shared recommend() contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_llm.classic import EASE, BM25Recommender, ItemKNN, PopularityRecommender, make_baseline


def frame(pairs):
    u, i = zip(*pairs, strict=True)
    return pd.DataFrame({"user": np.array(u, np.int64), "item": np.array(i, np.int64)})


def checkerboard(n_users=20, n_items=10, seed=0):
    """Even users touch only even items, odd users only odd items; one held-out item each."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for u in range(n_users):
        group = np.arange(u % 2, n_items, 2)
        pick = rng.permutation(group)
        train += [(u, int(i)) for i in pick[:3]]
        held.append(int(pick[3]))
    return frame(train), held


@pytest.mark.parametrize("name", ["itemknn", "ease"])
def test_collaborative_models_find_the_planted_groups(name):
    train, held = checkerboard()
    model = make_baseline(name).fit(train, 20, 10)
    hist = [train.item[train.user == u].to_numpy() for u in range(20)]
    _, ids = model.recommend(np.arange(20), hist, k=2, seen=hist)
    assert all(held[u] in ids[u] for u in range(20))  # HitRate@2 = 1: two unseen items left in the group
    assert all((ids[u] % 2 == u % 2).all() for u in range(20))
    rnd = make_baseline("random", seed=1).fit(train, 20, 10)
    _, rid = rnd.recommend(np.arange(20), hist, k=2, seen=hist)
    assert np.mean([held[u] in rid[u] for u in range(20)]) < 0.9


def test_ease_matches_the_closed_form_by_hand():
    train = frame([(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 2), (3, 3)])
    x = np.zeros((4, 4))
    x[train.user, train.item] = 1
    g = x.T @ x + 2.0 * np.eye(4)
    p = np.linalg.inv(g)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0)
    model = EASE(l2=2.0).fit(train, 4, 4)
    got = model.score(np.array([0]), [np.array([0, 1])])
    np.testing.assert_allclose(got[0], x[0] @ b, rtol=1e-5)


def test_itemknn_cosine_by_hand():
    # item 0: users {0, 1}; item 1: users {0}; cos = 1 / sqrt(2 * 1)
    model = ItemKNN(k_neighbors=5).fit(frame([(0, 0), (1, 0), (0, 1)]), 2, 3)
    s = model.score(np.array([0]), [np.array([1])])[0]
    np.testing.assert_allclose(s, [1 / np.sqrt(2), 0.0, 0.0], rtol=1e-5)


def test_bm25_matches_words_and_scores_untouched_items():
    texts = ["space opera with starships", "cooking show", "another starships adventure", "gardening"]
    model = BM25Recommender().fit(frame([(0, 0), (1, 1)]), 2, 4, texts)  # items 2, 3: no interactions
    s = model.score(np.array([0]), [np.array([0])])[0]
    assert s[2] > 0 and s[1] == 0 and s[3] == 0  # the untouched item 2 shares "starships"
    _, ids = model.recommend(np.array([0]), [np.array([0])], k=1, seen=[np.array([0])])
    assert ids[0, 0] == 2
    assert (model.score(np.array([1]), [np.array([], np.int64)]) == 0).all()  # empty history: no query


def test_recommend_filters_seen_respects_candidates_and_chunks():
    train, _ = checkerboard()
    pop = PopularityRecommender().fit(train, 20, 10)
    hist = [train.item[train.user == u].to_numpy() for u in range(20)]
    _, a = pop.recommend(np.arange(20), hist, k=3, seen=hist)
    _, b = pop.recommend(np.arange(20), hist, k=3, seen=hist, chunk=3)
    np.testing.assert_array_equal(a, b)
    assert all(not set(a[u]) & set(hist[u]) for u in range(20))
    _, c = pop.recommend(np.arange(20), hist, k=3, seen=hist, candidates=np.array([8, 9]))
    assert set(c[c >= 0].tolist()) <= {8, 9} and (c[:, 2] == -1).all()


def test_random_is_seeded_per_user():
    m = make_baseline("random", seed=3).fit(frame([(0, 0)]), 2, 50)
    a = m.score(np.array([0, 1]), [np.array([]), np.array([])])
    np.testing.assert_array_equal(a, m.score(np.array([0, 1]), [np.array([]), np.array([])]))
    assert not np.array_equal(a[0], a[1])
    other = make_baseline("random", seed=4).fit(frame([(0, 0)]), 2, 50)
    assert not np.array_equal(a, other.score(np.array([0, 1]), [np.array([]), np.array([])]))


def test_bad_input_is_clear():
    with pytest.raises(ValueError, match="'item' spans 0..7, outside 0..4"):
        EASE().fit(frame([(0, 7), (0, 0)]), 1, 5)
    with pytest.raises(RuntimeError, match="before fit"):
        EASE().score(np.array([0]), [np.array([0])])
    with pytest.raises(ValueError, match="max_items"):
        EASE(max_items=3).fit(frame([(0, 0)]), 1, 5)
    with pytest.raises(ValueError, match="one text per item"):
        BM25Recommender().fit(frame([(0, 0)]), 1, 2, ["only one"])
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline("sasrec")
