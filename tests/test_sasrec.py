"""SASRec: learns a planted sequential pattern that popularity cannot, is seeded, and honours the contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_llm.classic import PopularityRecommender, SASRec, Validation
from recsys_llm.classic.sasrec import training_windows

N_ITEMS = 30


def successor_data(n_users=90, length=8, seed=0):
    """Item i is always followed by item i + 1 (mod N_ITEMS): each user walks `length` consecutive items from a
    random start; the next item of the walk is held out. Every item is about equally popular."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, N_ITEMS, size=n_users)
    hist = [(s + np.arange(length, dtype=np.int64)) % N_ITEMS for s in starts]
    held = [np.array([(s + length) % N_ITEMS], dtype=np.int64) for s in starts]
    train = pd.DataFrame({"user": np.repeat(np.arange(n_users), length), "item": np.concatenate(hist),
                          "timestamp": np.tile(np.arange(length), n_users)})
    return train, hist, held


def small(**kw):
    return SASRec(**{"hidden": 32, "layers": 1, "dropout": 0.1, "max_len": 10, "lr": 1e-2, "epochs": 15,
                     "batch_size": 32, **kw})


def hit_rate(model, hist, held, k=3):
    _, ids = model.recommend(np.arange(len(hist)), hist, k=k, seen=hist)
    return float(np.mean([held[u][0] in ids[u] for u in range(len(hist))]))


@pytest.fixture(scope="module")
def planted():
    train, hist, held = successor_data()
    return train, hist, held, small().fit(train, len(hist), N_ITEMS)


def test_sasrec_learns_the_successor_and_popularity_does_not(planted):
    train, hist, held, model = planted
    assert hit_rate(model, hist, held, k=1) >= 0.9 and model.loss_ == "ce"  # auto: a small catalog gets full CE
    pop = PopularityRecommender().fit(train, len(hist), N_ITEMS)
    assert hit_rate(pop, hist, held, k=3) <= 0.3
    # order matters: the same items, last one first, point elsewhere
    shuffled = [h[::-1] for h in hist]
    assert hit_rate(model, shuffled, held, k=1) <= 0.3


def test_sasrec_is_deterministic_with_a_seed(planted):
    train, hist, _, model = planted
    again = small().fit(train, len(hist), N_ITEMS)
    users = np.arange(len(hist))
    np.testing.assert_array_equal(model.score(users, hist), again.score(users, hist))
    other = small(seed=1).fit(train, len(hist), N_ITEMS)
    assert not np.array_equal(model.score(users, hist), other.score(users, hist))


def test_sasrec_stops_early_and_keeps_the_best_epoch():
    train, hist, held = successor_data()
    valid = Validation(np.arange(len(hist)), hist, held)
    model = small(epochs=30, patience=2).fit(train, len(hist), N_ITEMS, valid=valid)
    scores = [r["valid_ndcg"] for r in model.history_]
    assert len(scores) < 30 and model.best_epoch_ == int(np.argmax(scores)) + 1  # first best, then 2 worse
    assert valid.ndcg(model) == pytest.approx(max(scores))


def test_bce_loss_also_learns_the_pattern():
    train, hist, held = successor_data()
    model = small(loss="bce", epochs=30).fit(train, len(hist), N_ITEMS)
    assert hit_rate(model, hist, held, k=3) >= 0.8


def test_windows_cover_every_transition_once():
    x, y = training_windows([np.arange(7), np.array([5]), np.array([3, 4])], max_len=3)
    pairs = sorted((int(a), int(b)) for a, b in zip(x[y >= 0], y[y >= 0], strict=True))
    assert pairs == [(0, 1), (1, 2), (2, 3), (3, 4), (3, 4), (4, 5), (5, 6)]
    assert x.shape == (3, 3) and (y[x < 0] < 0).all()


def test_scores_use_the_most_recent_items_and_empty_histories_score_zero(planted):
    _, hist, _, model = planted
    long = np.concatenate([np.arange(20), np.arange(3, 9)])  # longer than max_len: the tail decides
    np.testing.assert_array_equal(model.score(np.array([0]), [long]), model.score(np.array([0]), [long[-10:]]))
    assert (model.score(np.array([0]), [np.array([], np.int64)]) == 0).all()


def test_sasrec_bad_settings_are_named():
    with pytest.raises(ValueError, match="multiple of heads"):
        SASRec(hidden=33, heads=2)
    with pytest.raises(ValueError, match="loss must be one of auto, ce, sampled, bce"):
        SASRec(loss="bpr")
    with pytest.raises(ValueError, match="two or more training interactions"):
        SASRec().fit(pd.DataFrame({"user": [0, 1], "item": [0, 1]}), 2, 3)


def test_sampled_softmax_learns_the_pattern():
    train, hist, held = successor_data()
    model = small(loss="sampled", negatives=8).fit(train, len(hist), N_ITEMS)
    assert hit_rate(model, hist, held, k=1) >= 0.9
