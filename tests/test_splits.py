"""Splits: hand-checked rows, leakage-freedom on synthetic and demo data, determinism, save/load."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_synthetic_dataset

from recsys_llm.config import DataConfig, SplitConfig
from recsys_llm.data.schema import INTERACTION_COLUMNS, Dataset
from recsys_llm.data.splits import Split, histories, make_split, targets, temporal_cutoffs, test_histories

KINDS = ("leave_last_out", "temporal")
KEY = ["user", "item", "timestamp"]


def _dataset(
    rows: list[tuple[int, int, int, float]], n_users: int, n_items: int, name: str = "tiny"
) -> Dataset:
    inter = pd.DataFrame(rows, columns=list(INTERACTION_COLUMNS)).astype(
        {"user": "int64", "item": "int64", "timestamp": "int64", "rating": "float32"}
    )
    items = pd.DataFrame(
        {
            "item": np.arange(n_items, dtype=np.int64),
            "item_id": [str(i) for i in range(n_items)],
            "title": [f"t{i}" for i in range(n_items)],
        }
    )
    users = pd.DataFrame(
        {"user": np.arange(n_users, dtype=np.int64), "user_id": [f"u{u}" for u in range(n_users)]}
    )
    return Dataset(name=name, interactions=inter, items=items, users=users)


# 3 users with 1, 2 and 4 interactions, rows deliberately out of time order; user 2's items 3 and 5 are tied
# at ts 300 (item 3 comes first in row order, so item 5 is the later one). Item 6 has no interactions.
TINY_ROWS = [
    (2, 3, 300, 3.0),
    (1, 1, 200, 1.0),
    (0, 0, 400, 0.5),
    (2, 4, 100, 4.0),
    (1, 2, 150, 2.0),
    (2, 5, 300, 5.0),
    (2, 0, 50, 0.0),
]


@pytest.fixture
def tiny() -> Dataset:
    return _dataset(TINY_ROWS, n_users=3, n_items=7)


def _rows(df: pd.DataFrame) -> list[tuple]:
    return [
        (int(u), int(i), int(t), float(r))
        for u, i, t, r in df[list(INTERACTION_COLUMNS)].itertuples(index=False)
    ]


def _sorted_all(df: pd.DataFrame) -> pd.DataFrame:
    return (
        df[list(INTERACTION_COLUMNS)]
        .sort_values(list(INTERACTION_COLUMNS), kind="stable")
        .reset_index(drop=True)
    )


def assert_leakage_free(ds: Dataset, split: Split, cfg: SplitConfig) -> None:
    inter = ds.interactions
    parts = {"train": split.train, "valid": split.valid, "test": split.test, "cold": split.cold}
    for name, df in parts.items():
        assert list(df.columns) == list(INTERACTION_COLUMNS), name
        assert (df.dtypes == inter[list(INTERACTION_COLUMNS)].dtypes).all(), name
        assert df.index.equals(pd.RangeIndex(len(df))), name
        order = np.lexsort((df["timestamp"].to_numpy(), df["user"].to_numpy()))
        assert np.array_equal(order, np.arange(len(df))), f"{name} not sorted by user, timestamp"

    # nothing silently dropped or duplicated: the four parts are exactly the input (as a multiset)
    union = pd.concat(list(parts.values()), ignore_index=True)
    pd.testing.assert_frame_equal(_sorted_all(union), _sorted_all(inter))

    # no held-out row is in train
    train_keys = set(map(tuple, split.train[KEY].to_numpy().tolist()))
    for name in ("valid", "test"):
        assert not train_keys & set(map(tuple, parts[name][KEY].to_numpy().tolist())), name

    # cold items: drawn among interacted items, round(fraction * n) of them, every row in cold and only there
    interacted = np.unique(inter["item"].to_numpy())
    assert split.cold_items.dtype == np.int64 and np.all(np.diff(split.cold_items) > 0)
    assert len(split.cold_items) == round(cfg.cold_item_fraction * len(interacted))
    assert np.isin(split.cold_items, interacted).all()
    for name in ("train", "valid", "test"):
        assert not np.isin(parts[name]["item"].to_numpy(), split.cold_items).any(), name
    assert np.isin(split.cold["item"].to_numpy(), split.cold_items).all()
    pd.testing.assert_frame_equal(
        _sorted_all(split.cold), _sorted_all(inter[inter["item"].isin(split.cold_items)])
    )
    assert (split.n_users, split.n_items) == (ds.n_users, ds.n_items)

    if split.kind == "leave_last_out":
        warm = inter[~inter["item"].isin(split.cold_items)]
        n_warm = warm.groupby("user").size()
        n_test = split.test.groupby("user").size().reindex(n_warm.index, fill_value=0)
        n_valid = split.valid.groupby("user").size().reindex(n_warm.index, fill_value=0)
        n_train = split.train.groupby("user").size().reindex(n_warm.index, fill_value=0)
        assert (n_test == (n_warm >= 2).astype(int)).all()
        assert (n_valid == (n_warm >= 3).astype(int)).all()
        assert (n_train == n_warm - n_test - n_valid).all() and (n_train >= 1).all()
        last_train = split.train.groupby("user")["timestamp"].max()
        valid_ts = split.valid.set_index("user")["timestamp"]
        test_ts = split.test.set_index("user")["timestamp"]
        assert (test_ts >= last_train.reindex(test_ts.index)).all()
        assert (valid_ts >= last_train.reindex(valid_ts.index)).all()
        assert (test_ts.reindex(valid_ts.index) >= valid_ts).all()
        assert split.cutoffs == {}
    else:
        t_valid, t_test = split.cutoffs["t_valid"], split.cutoffs["t_test"]
        assert split.train["timestamp"].max() < t_valid <= t_test <= split.test["timestamp"].min()
        if len(split.valid):
            assert t_valid <= split.valid["timestamp"].min() and split.valid["timestamp"].max() < t_test
        n_warm = len(inter) - len(split.cold)
        assert len(split.test) >= round(cfg.temporal_test_fraction * n_warm)


def _demo_dataset() -> Dataset:
    try:
        from recsys_llm.data.io import load_dataset
    except ImportError as e:
        pytest.skip(f"demo data loader not importable yet: {e}")
    return load_dataset(DataConfig())


@pytest.fixture(scope="module")
def demo_dataset() -> Dataset:
    return _demo_dataset()


# ------------------------------------------------------------------------------------------ hand-checked
def test_leave_last_out_hand_example(tiny):
    split = make_split(tiny, SplitConfig(kind="leave_last_out", cold_item_fraction=0.0))
    # user 0 (1 row) -> train; user 1 (2 rows) -> first train, last test; user 2 (4 rows) -> 2 train, valid, test
    assert _rows(split.train) == [(0, 0, 400, 0.5), (1, 2, 150, 2.0), (2, 0, 50, 0.0), (2, 4, 100, 4.0)]
    assert _rows(split.valid) == [(2, 3, 300, 3.0)]  # tied with item 5, earlier in row order
    assert _rows(split.test) == [(1, 1, 200, 1.0), (2, 5, 300, 5.0)]
    assert len(split.cold) == 0 and split.cold_items.dtype == np.int64 and len(split.cold_items) == 0
    assert split.summary()["n_test_users_without_train"] == 0


def test_temporal_hand_example_ties_go_later_and_cold_users_kept(tiny):
    cfg = SplitConfig(
        kind="temporal", cold_item_fraction=0.0, temporal_test_fraction=0.3, temporal_valid_fraction=0.3
    )
    split = make_split(tiny, cfg)
    # sorted ts s = 50,100,150,200,300,300,400 (n = 7): n_test = round(2.1) = 2 -> t_test = s[5] = 300;
    # n_valid = round(2.1) = 2 -> t_valid = s[3] = 200
    assert split.cutoffs == {"t_valid": 200, "t_test": 300}
    assert _rows(split.train) == [(1, 2, 150, 2.0), (2, 0, 50, 0.0), (2, 4, 100, 4.0)]
    assert _rows(split.valid) == [(1, 1, 200, 1.0)]
    # s[4] = 300 is tied with t_test, so it goes to test too; user 0 has no training history and is kept
    assert _rows(split.test) == [(0, 0, 400, 0.5), (2, 3, 300, 3.0), (2, 5, 300, 5.0)]
    assert split.summary()["n_test_users_without_train"] == 1

    # n_valid = round(1.05) = 1 -> t_valid = s[4] = 300 == t_test: the tie empties valid, train is unchanged
    split = make_split(
        tiny,
        SplitConfig(
            kind="temporal", cold_item_fraction=0.0, temporal_test_fraction=0.3, temporal_valid_fraction=0.15
        ),
    )
    assert split.cutoffs == {"t_valid": 300, "t_test": 300}
    assert _rows(split.train) == [(1, 2, 150, 2.0), (1, 1, 200, 1.0), (2, 0, 50, 0.0), (2, 4, 100, 4.0)]
    assert len(split.valid) == 0 and len(split.test) == 3


def test_temporal_cutoffs():
    ts = np.array([5, 1, 9, 3, 7, 0, 2, 8, 4, 6])
    assert temporal_cutoffs(ts, 0.2, 0.1) == (7, 8)
    assert temporal_cutoffs(ts, 0.2, 0.0) == (8, 8)  # no valid
    assert temporal_cutoffs(np.array([1, 2, 2, 2, 3]), 0.2, 0.2) == (2, 3)  # ties at t_valid all go to valid


def test_cold_items_hand_example(tiny):
    cfg = SplitConfig(kind="leave_last_out", cold_item_fraction=0.4, seed=3)
    split = make_split(tiny, cfg)
    assert len(split.cold_items) == round(0.4 * 6)  # item 6 has no interactions: 6 candidates, not 7
    assert 6 not in split.cold_items
    assert_leakage_free(tiny, split, cfg)


# ------------------------------------------------------------------------------------------ leakage
@pytest.mark.parametrize("kind", KINDS)
def test_leakage_free_synthetic(kind):
    ds = make_synthetic_dataset(seed=1)
    for frac in (0.0, 0.2):
        cfg = SplitConfig(kind=kind, cold_item_fraction=frac, seed=7)
        assert_leakage_free(ds, make_split(ds, cfg), cfg)


@pytest.mark.parametrize("kind", KINDS)
def test_leakage_free_demo(demo_dataset, kind):
    cfg = SplitConfig(kind=kind, cold_item_fraction=0.1, seed=0)
    split = make_split(demo_dataset, cfg)
    assert len(split.test) > 0 and len(split.cold) > 0
    assert_leakage_free(demo_dataset, split, cfg)


# ------------------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_by_seed(synthetic_dataset, kind):
    a = make_split(synthetic_dataset, SplitConfig(kind=kind, cold_item_fraction=0.2, seed=0))
    b = make_split(synthetic_dataset, SplitConfig(kind=kind, cold_item_fraction=0.2, seed=0))
    c = make_split(synthetic_dataset, SplitConfig(kind=kind, cold_item_fraction=0.2, seed=1))
    np.testing.assert_array_equal(a.cold_items, b.cold_items)
    for name in ("train", "valid", "test", "cold"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert len(c.cold_items) == len(a.cold_items) == 6
    assert not np.array_equal(a.cold_items, c.cold_items)


# ------------------------------------------------------------------------------------------ artifacts
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(synthetic_dataset, tmp_path, kind):
    split = make_split(synthetic_dataset, SplitConfig(kind=kind, cold_item_fraction=0.2))
    split.save(tmp_path / "splits")
    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == [
        "cold.parquet",
        "split.json",
        "test.parquet",
        "train.parquet",
        "valid.parquet",
    ]
    meta = json.loads((tmp_path / "splits" / "split.json").read_text())
    assert meta["kind"] == kind and meta["n_train"] == len(split.train) and meta["n_cold"] == len(split.cold)
    back = Split.load(tmp_path / "splits")
    assert (back.kind, back.n_users, back.n_items, back.cutoffs) == (
        split.kind,
        split.n_users,
        split.n_items,
        split.cutoffs,
    )
    assert back.cold_items.dtype == np.int64
    np.testing.assert_array_equal(back.cold_items, split.cold_items)
    for name in ("train", "valid", "test", "cold"):
        pd.testing.assert_frame_equal(getattr(back, name), getattr(split, name))
    assert back.summary() == split.summary()


def test_load_missing_says_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match="recsys-llm prepare"):
        Split.load(tmp_path / "nope")


# ------------------------------------------------------------------------------------------ errors, logs
def test_no_interactions_raises():
    with pytest.raises(ValueError, match="no interactions"):
        make_split(_dataset([], n_users=1, n_items=1), SplitConfig())


def test_empty_train_raises():
    one_item = _dataset([(0, 0, 1, 1.0), (1, 0, 2, 1.0)], n_users=2, n_items=1)
    with pytest.raises(ValueError, match="train empty.*cold_item_fraction"):
        make_split(one_item, SplitConfig(cold_item_fraction=0.6))  # round(0.6 * 1) = 1: every item is cold
    same_time = _dataset([(0, 0, 5, 1.0), (1, 1, 5, 1.0), (0, 1, 5, 1.0)], n_users=2, n_items=2)
    with pytest.raises(ValueError, match="train empty"):
        make_split(same_time, SplitConfig(kind="temporal", cold_item_fraction=0.0))


def test_counts_are_logged(tiny, caplog):
    with caplog.at_level(logging.INFO, logger="recsys_llm.data.splits"):
        make_split(tiny, SplitConfig(cold_item_fraction=0.0))
    assert "train=4 valid=1 test=2 cold=0" in caplog.text


# ------------------------------------------------------------------------------------------ readers
def test_histories_and_targets_hand_example():
    df = pd.DataFrame(
        {
            "user": [2, 0, 2, 2, 0, 2],
            "item": [7, 1, 3, 9, 4, 3],
            "timestamp": [30, 10, 10, 30, 5, 40],
        }
    )
    h = histories(df, n_users=4)
    assert [x.tolist() for x in h] == [[4, 1], [], [3, 7, 9, 3], []]  # ties (7, 9 at 30) keep row order
    assert all(x.dtype == np.int64 for x in h)
    t = targets(df, n_users=4)
    assert [x.tolist() for x in t] == [[1, 4], [], [3, 7, 9], []]
    assert all(x.dtype == np.int64 for x in t)
    with pytest.raises(ValueError, match="user ids"):
        histories(df, n_users=2)


def test_test_histories_train_then_valid(tiny):
    split = make_split(tiny, SplitConfig(kind="leave_last_out", cold_item_fraction=0.0))
    assert [x.tolist() for x in test_histories(split)] == [[0], [2], [0, 4, 3]]
    assert [x.tolist() for x in histories(split.train, split.n_users)] == [[0], [2], [0, 4]]
    assert [x.tolist() for x in targets(split.test, split.n_users)] == [[], [1], [5]]


def test_fixed_holdout_reproduces_a_given_split(tiny, tmp_path):
    # user u2's tie (items 3 and 5 at ts 300) resolved the other way round from our default
    f = tmp_path / "loo.tsv"
    f.write_text("user_id\tvalid_item_id\ttest_item_id\nu2\t5\t3\n")
    split = make_split(tiny, SplitConfig(cold_item_fraction=0.0, fixed_holdout=str(f)))
    assert _rows(split.valid) == [(2, 5, 300, 5.0)]
    assert _rows(split.test) == [(2, 3, 300, 3.0)]
    assert len(split.train) == 5  # unlisted users stay in train


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user_id\tvalid\ttest_item_id\n", "missing column"),
        ("user_id\tvalid_item_id\ttest_item_id\nu9\t5\t3\n", "row 2, column user_id: 'u9'"),
        ("user_id\tvalid_item_id\ttest_item_id\nu2\t5\t99\n", "row 2, column test_item_id: '99'"),
        ("user_id\tvalid_item_id\ttest_item_id\nu2\t5\t1\n", "user u2 never interacted with item 1"),
    ],
)
def test_fixed_holdout_bad_file(tiny, tmp_path, content, message):
    from recsys_llm.data.io import DataError

    f = tmp_path / "loo.tsv"
    f.write_text(content)
    with pytest.raises(DataError, match=message):
        make_split(tiny, SplitConfig(cold_item_fraction=0.0, fixed_holdout=str(f)))


def test_fixed_holdout_needs_loo_without_cold_items():
    with pytest.raises(ValueError, match="fixed_holdout"):
        SplitConfig(cold_item_fraction=0.05, fixed_holdout="x.tsv")


ML100K = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (ML100K / "ml-100k" / "u.data").exists(), reason="../shared/data/ml-100k absent")
def test_ml100k_peer_split_matches_the_published_file():
    from recsys_llm.data.io import load_dataset

    ds = load_dataset(DataConfig(dataset="ml-100k", path=str(ML100K / "ml-100k")))
    f = ML100K / "ml-100k-loo-split" / "ml-100k.split_valid_test.tsv"
    split = make_split(ds, SplitConfig(cold_item_fraction=0.0, fixed_holdout=str(f)))
    table = pd.read_csv(f, sep="\t", dtype=str)
    assert len(split.test) == len(table) == 943 and len(split.valid) == 943
    got = dict(zip(ds.users["user_id"].astype(str).to_numpy()[split.test["user"]],
                   ds.items["item_id"].astype(str).to_numpy()[split.test["item"]], strict=True))
    assert got == dict(zip(table["user_id"], table["test_item_id"], strict=True))
    assert len(split.train) == 100_000 - 2 * 943
