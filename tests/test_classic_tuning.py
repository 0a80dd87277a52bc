"""Tuning on validation: the known-better setting wins, one budget for all, no refit, the report hook."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recsys_llm.classic import EASE, ItemKNN, RecencyEASE, Validation, make_baseline
from recsys_llm.classic.from_config import baseline_scorer, fit_baseline
from recsys_llm.classic.tuning import DEFAULT_BUDGET, DEFAULT_GRIDS, grid_product, tune
from recsys_llm.config import EvalConfig, SplitConfig
from recsys_llm.data.splits import histories, make_split, test_histories
from recsys_llm.protocol import validation_users


def two_groups(n_users=40, n_items=20, per_user=6, seed=0):
    """Even users touch only even items, odd users only odd items."""
    rng = np.random.default_rng(seed)
    rows = [(u, int(i)) for u in range(n_users) for i in rng.choice(np.arange(u % 2, n_items, 2), per_user, False)]
    u, i = zip(*rows, strict=True)
    return pd.DataFrame({"user": np.array(u, np.int64), "item": np.array(i, np.int64)})


def switching_users(train, n_items=20, n=20, seed=1):
    """Validation users who watched group A, then switched to group B: their next item is in group B."""
    rng = np.random.default_rng(seed)
    hists, targets = [], []
    for v in range(n):
        a, b = v % 2, 1 - v % 2
        older, newer = rng.choice(np.arange(a, n_items, 2), 4, False), rng.choice(np.arange(b, n_items, 2), 4, False)
        hists.append(np.concatenate([older, newer]))
        targets.append(rng.choice(np.setdiff1d(np.arange(b, n_items, 2), newer), 1))
    return Validation(np.arange(n), hists, targets)


def test_recency_wins_when_the_most_recent_items_decide():
    train = two_groups()
    valid = switching_users(train)
    grid = grid_product(l2=[1.0], halflife=[0.0, 2.0])
    result = tune("ease_recency", RecencyEASE(), train, 40, 20, valid, grid=grid)
    assert result.params == {"l2": 1.0, "halflife": 2.0}
    scores = [g["valid_ndcg"] for g in result.grid]
    assert scores[1] > scores[0] and result.valid_ndcg == scores[1] == valid.ndcg(result.model)
    assert "halflife=2" in result.note() and "2 settings" in result.note()


def test_the_chosen_model_is_the_validated_one_fitted_on_train_only():
    train = two_groups()
    valid = switching_users(train)
    result = tune("ease", EASE(), train, 40, 20, valid, grid=grid_product(l2=[0.1, 10.0, 1000.0]))
    alone = EASE(l2=result.params["l2"]).fit(train, 40, 20)  # train only: nothing from the validation users
    users, hists = np.arange(5), valid.histories[:5]
    np.testing.assert_allclose(result.model.score(users, hists), alone.score(users, hists), rtol=1e-6)
    assert result.valid_ndcg == max(g["valid_ndcg"] for g in result.grid)


def test_budget_cuts_every_grid_the_same_way_and_ties_keep_the_first():
    train = two_groups()
    valid = switching_users(train)
    grid = grid_product(k_neighbors=[50, 60, 70, 80, 90], shrink=[0.0, 1.0])  # k > catalog: ties within shrink
    a = tune("itemknn", ItemKNN(), train, 40, 20, valid, grid=grid, budget=3, seed=7)
    b = tune("itemknn", ItemKNN(), train, 40, 20, valid, grid=grid, budget=3, seed=7)
    assert len(a.grid) == 3 and a.grid_size == 10 and [g["params"] for g in a.grid] == [g["params"] for g in b.grid]
    assert "(of 10)" in a.note()
    full = tune("itemknn", ItemKNN(), train, 40, 20, valid, grid=grid_product(k_neighbors=[50, 60]))
    assert full.grid[0]["valid_ndcg"] == full.grid[1]["valid_ndcg"] and full.params == {"k_neighbors": 50}
    with pytest.raises(ValueError, match="budget"):
        tune("itemknn", ItemKNN(), train, 40, 20, valid, budget=0)


def test_default_grids_fit_the_default_budget():
    assert all(1 <= len(g) <= DEFAULT_BUDGET for g in DEFAULT_GRIDS.values())
    for name, grid in DEFAULT_GRIDS.items():
        for params in grid:
            make_baseline(name).with_params(**params)  # every name is a real hyper-parameter


def test_validation_users_are_the_hybrids(synthetic_dataset):
    split = make_split(synthetic_dataset, SplitConfig(cold_item_fraction=0.0))
    for n in (0, 7):
        ours = Validation.from_frames(split.train, split.valid, split.n_users, max_users=n, seed=3)
        users, tg = validation_users(split, histories(split.train, split.n_users), n, 3)
        np.testing.assert_array_equal(ours.users, users)
        assert all(np.array_equal(t, tg[u]) for u, t in zip(users, ours.targets, strict=True))


def test_report_hook_tunes_and_names_the_setting(synthetic_dataset, tmp_path):
    split = make_split(synthetic_dataset, SplitConfig(cold_item_fraction=0.0))
    known = test_histories(split)
    cfg = EvalConfig(sasrec_epochs=2)
    scorer = baseline_scorer("ease", split, cfg, None, known, tmp_path)
    n_valid = len(Validation.from_frames(split.train, split.valid, split.n_users).users)
    assert scorer.note.startswith(f"tuned on {n_valid} validation users, 7 settings: l2=")
    assert scorer(np.arange(3)).shape == (3, split.n_items)
    record = json.loads((tmp_path / "ease.json").read_text())
    assert len(record["grid"]) == 7 and record["params"] == scorer.result.params and record["budget"] == 16
    untuned = fit_baseline("ease", split, EvalConfig(tune_baselines=False))
    assert untuned.params == {} and untuned.note() == "" and untuned.model.l2 == 500.0
    sas = fit_baseline("sasrec", split, cfg)
    assert sas.model.epochs == 2 and "epochs=" in sas.note()
    assert fit_baseline("popularity", split, cfg).note() == ""
