"""Classic baselines: hand-checked scores, planted structure, and the shared recommend() contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_llm.classic import (
    BASELINES,
    EASE,
    BM25Recommender,
    ItemKNN,
    PopularityRecommender,
    RandomRecommender,
    make_baseline,
)


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
        make_baseline("gru4rec")


# ------------------------------------------------------------------------------------------ more by hand
def hists_of(train, n_users):
    return [train.item[train.user == u].to_numpy() for u in range(n_users)]


def test_itemknn_disjoint_groups_rank_own_group_first():
    # items 0-2 (group A) co-occur only with each other, items 3-5 (group B) likewise
    train = frame([(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 2), (3, 3), (3, 4), (4, 4), (4, 5), (5, 3), (5, 5)])
    model = ItemKNN().fit(train, 6, 6)
    s = model.score(np.array([0]), [np.array([0])])[0]
    assert s.dtype == np.float32 and s.shape == (6,)
    np.testing.assert_allclose(s, [0, 0.5, 0.5, 0, 0, 0], rtol=1e-6)  # cos(0, 1) = 1 / (sqrt(2) sqrt(2))
    _, ids = model.recommend(np.array([0]), [np.array([0])], k=5, seen=[np.array([0])])
    assert ids[0].tolist() == [1, 2, 3, 4, 5]  # group A first; the zeros of group B by lower id


def test_itemknn_keeps_top_k_per_item_column_and_shrinks():
    # user 0 buys {0, 1, 2}, user 1 buys {0, 1}: sim(0,1) = 2/2 = 1, sim(0,2) = sim(1,2) = 1/sqrt(2)
    train = frame([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)])
    full = ItemKNN(k_neighbors=2).fit(train, 2, 3).similarity_.toarray()
    r = 1 / np.sqrt(2)
    np.testing.assert_allclose(full, [[0, 1, r], [1, 0, r], [r, r, 0]], rtol=1e-6)
    top1 = ItemKNN(k_neighbors=1).fit(train, 2, 3).similarity_.toarray()
    # column 2 keeps one neighbour among the tie sim(0,2) = sim(1,2): the lower id, 0
    np.testing.assert_allclose(top1, [[0, 1, r], [1, 0, 0], [0, 0, 0]], rtol=1e-6)
    shrunk = ItemKNN(shrink=2.0).fit(train, 2, 3).similarity_.toarray()
    np.testing.assert_allclose(shrunk[0, 1], 2 / (2 + 2.0), rtol=1e-6)


def test_ease_recommend_uses_closed_form_order():
    train = frame([(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 2), (3, 3)])
    model = EASE(l2=2.0).fit(train, 4, 4)
    hist = [np.array([0])]
    s = model.score(np.array([0]), hist)[0]
    assert s[0] == 0.0  # diag(B) = 0: an item never recommends itself
    _, ids = model.recommend(np.array([0]), hist, k=3, seen=hist)
    assert ids[0].tolist() == sorted([1, 2, 3], key=lambda i: (-s[i], i))


def test_bm25_scores_follow_the_lucene_formula():
    texts = ["apple banana", "apple", "cherry", "banana cherry cherry"]
    model = BM25Recommender(k1=1.2, b=0.75, stopwords=None).fit(frame([(0, 0)]), 1, 4, texts)
    s = model.score(np.array([0]), [np.array([2])])[0]  # query: "cherry"
    n, df, avgdl = 4, 2, (2 + 1 + 1 + 3) / 4

    def part(tf, dl):
        return np.log(1 + (n - df + 0.5) / (df + 0.5)) * tf / (tf + 1.2 * (1 - 0.75 + 0.75 * dl / avgdl))

    np.testing.assert_allclose(s, [0, 0, part(1, 1), part(2, 3)], rtol=1e-5)


def test_bm25_query_is_the_most_recent_items_only():
    texts = ["zebra", "lion", "zebra stripes", "lion mane", "", "the of and"]
    model = BM25Recommender(query_items=1).fit(frame([(0, 0), (0, 1)]), 1, 6, texts)
    s = model.score(np.array([0, 0]), [np.array([0, 1]), np.array([1, 0])])
    assert s[0, 3] > 0 and s[0, 2] == 0  # last item "lion" -> item 3 only
    assert s[1, 2] > 0 and s[1, 3] == 0  # last item "zebra" -> item 2 only
    assert (s[:, 4] == 0).all() and (s[:, 5] == 0).all()  # empty / stopword-only texts score 0
    both = BM25Recommender(query_items=10).fit(frame([(0, 0)]), 1, 6, texts)
    assert (both.score(np.array([0]), [np.array([0, 1])])[0, [2, 3]] > 0).all()


def test_bm25_all_empty_texts_score_zero():
    model = BM25Recommender().fit(frame([(0, 0)]), 1, 3, ["", None, "the"])
    assert (model.score(np.array([0]), [np.array([0, 1])]) == 0).all()


def test_popularity_scores_are_counts_for_everyone():
    train = frame([(0, 2), (1, 2), (1, 0), (0, 2)])
    s = PopularityRecommender().fit(train, 2, 4).score(np.array([0, 1]), [np.array([2]), np.array([])])
    np.testing.assert_array_equal(s, [[1, 0, 3, 0], [1, 0, 3, 0]])


def test_random_scores_do_not_depend_on_the_batch():
    m = RandomRecommender(seed=7).fit(frame([(0, 0)]), 5, 30)
    together = m.score(np.array([4, 1]), [np.array([]), np.array([])])
    alone = m.score(np.array([1]), [np.array([])])
    np.testing.assert_array_equal(together[1], alone[0])
    assert together.dtype == np.float32 and ((together >= 0) & (together < 1)).all()


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_chunking_gives_identical_results(name):
    train, _ = checkerboard()
    texts = [f"word{i % 3} item{i}" for i in range(10)]
    model = make_baseline(name, seed=2).fit(train, 20, 10, texts)
    assert model.name == name and isinstance(model, BASELINES[name])
    hist = hists_of(train, 20)
    one = model.recommend(np.arange(20), hist, k=4, seen=hist)
    for chunk in (1, 3):
        many = model.recommend(np.arange(20), hist, k=4, seen=hist, chunk=chunk)
        np.testing.assert_array_equal(one[0], many[0])
        np.testing.assert_array_equal(one[1], many[1])
    assert all(not set(one[1][u]) & set(hist[u]) for u in range(20))
    cand = np.array([1, 2, 7])
    _, ids = model.recommend(np.arange(20), hist, k=4, seen=hist, candidates=cand)
    assert set(ids[ids >= 0].tolist()) <= set(cand.tolist()) and (ids[:, 3] == -1).all()


def test_planted_checkerboard_hit_rate_at_5():
    """Two user groups x two item groups of 20 items; each user saw 15 of its group, 1 more is held out."""
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 40
    train, held = [], []
    for u in range(n_users):
        group = rng.permutation(np.arange(u % 2, n_items, 2))
        train += [(u, int(i)) for i in group[:15]]
        held.append(int(group[15]))
    train = frame(train)
    hist = hists_of(train, n_users)

    def hit_rate(model):
        _, ids = model.fit(train, n_users, n_items).recommend(np.arange(n_users), hist, k=5, seen=hist)
        return np.mean([held[u] in ids[u] for u in range(n_users)])

    assert hit_rate(ItemKNN()) == 1.0
    assert hit_rate(EASE(l2=10.0)) == 1.0
    assert hit_rate(RandomRecommender(seed=0)) < 0.5  # expected 5/25 = 0.2


def test_validation_names_the_column_and_range():
    with pytest.raises(ValueError, match=r"missing column\(s\) \['user'\]"):
        ItemKNN().fit(pd.DataFrame({"item": [0]}), 1, 1)
    with pytest.raises(ValueError, match="train column 'user' spans 0..3, outside 0..1"):
        ItemKNN().fit(frame([(0, 0), (3, 0)]), 2, 1)
    with pytest.raises(ValueError, match="'item' must hold integer ids"):
        ItemKNN().fit(pd.DataFrame({"user": [0], "item": [0.5]}), 1, 1)
    with pytest.raises(ValueError, match="n_items must be an integer >= 1"):
        ItemKNN().fit(frame([(0, 0)]), 1, 0)
    model = ItemKNN().fit(frame([(0, 0)]), 1, 2)
    with pytest.raises(ValueError, match="history item ids span 0..5, outside 0..1"):
        model.score(np.array([0]), [np.array([0, 5])])
    with pytest.raises(ValueError, match="2 histories for 1 users"):
        model.recommend(np.array([0]), [np.array([0]), np.array([1])], k=1)
    with pytest.raises(RuntimeError, match="before fit"):
        ItemKNN().recommend(np.array([0]), [np.array([0])], k=1)
    with pytest.raises(ValueError, match="needs item_texts"):
        BM25Recommender().fit(frame([(0, 0)]), 1, 1)
