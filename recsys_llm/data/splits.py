"""Canonical interactions -> train / valid / test / cold-item split, saved as parquet beside ``split.json``.

Two steps, always in this order:

1. **Cold items.** Among the items that have interactions, ``round(cold_item_fraction * n)`` are drawn with
   ``np.random.default_rng(seed)``. Every interaction of a cold item goes to ``cold`` and nowhere else, so the
   model never sees them: ``cold`` is the ground truth of the cold-item slice.
2. **Warm split** of the remaining interactions, ``leave_last_out`` or ``temporal``:

   * ``leave_last_out``: per user, ordered by (timestamp, original row order). A user with 3 or more
     interactions gives the last one to test, the second last to valid and the rest to train; with 2, the
     last to test and the first to train; with 1, it stays in train. A fixed split (``split.fixed_holdout``,
     else the data set's own ``Dataset.holdout``) names each user's validation and test item instead
     (:mod:`recsys_llm.data.holdout`).
   * ``temporal``: one global cutoff for everybody (see :func:`temporal_cutoffs` for the exact rule and
     ties). Users whose interactions all fall after the cutoff appear in valid/test with no training
     history (cold users); they are kept.

Every frame holds canonical interaction rows (``user, item, timestamp, rating``), sorted by user then
timestamp (stable). Nothing is dropped: ``train + valid + test + cold`` is exactly the input.

Artifacts: ``<run>/splits/{train,valid,test,cold}.parquet`` + ``<run>/splits/split.json``.

Example:
    >>> from recsys_llm.config import SplitConfig
    >>> split = make_split(ds, SplitConfig(kind="leave_last_out", cold_item_fraction=0.05))  # doctest: +SKIP
    >>> split.save("runs/demo/splits")                                                      # doctest: +SKIP
    >>> train_hist = histories(split.train, split.n_users)                                 # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_llm.config import SplitConfig
from recsys_llm.data.checks import DataError
from recsys_llm.data.holdout import fixed_holdout
from recsys_llm.data.schema import INTERACTION_COLUMNS, Dataset, write_parquet
from recsys_llm.io_utils import atomic_write_json, atomic_write_with, load_json

logger = logging.getLogger(__name__)

PARTS = ("train", "valid", "test", "cold")
SPLIT_KINDS = ("leave_last_out", "temporal")


@dataclass
class Split:
    """The split of one data set.

    Attributes:
        kind: ``"leave_last_out"`` or ``"temporal"``.
        train, valid, test: canonical interaction rows of warm items, sorted by user then timestamp.
        cold: ALL interactions of the cold items (never in train/valid/test).
        cold_items: sorted int64 ids of the cold items.
        n_users, n_items: sizes of the data set's user table and item catalog.
        cutoffs: temporal only: ``{"t_valid": ..., "t_test": ...}``; empty for leave_last_out.
    """

    kind: str
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    cold: pd.DataFrame
    cold_items: np.ndarray
    n_users: int
    n_items: int
    cutoffs: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Counts for logs and reports.

        Returns:
            ``kind``, ``n_users``, ``n_items``, ``n_train``/``n_valid``/``n_test``/``n_cold`` (rows),
            ``n_test_users``, ``n_test_users_without_train`` (cold users), ``n_cold_items``, ``cold_items``
            (list) and ``cutoffs``.
        """
        test_users = np.unique(self.test["user"].to_numpy())
        without_train = np.setdiff1d(test_users, self.train["user"].to_numpy())
        return {
            "kind": self.kind,
            "n_users": int(self.n_users),
            "n_items": int(self.n_items),
            **{f"n_{name}": len(getattr(self, name)) for name in PARTS},
            "n_test_users": len(test_users),
            "n_test_users_without_train": len(without_train),
            "n_cold_items": len(self.cold_items),
            "cold_items": [int(i) for i in self.cold_items],
            "cutoffs": {k: int(v) for k, v in self.cutoffs.items()},
        }

    def save(self, folder: str | Path) -> None:
        """Write ``<folder>/{train,valid,test,cold}.parquet`` and ``split.json`` (each atomically).

        ``split.json`` (kind, counts, cold items, sizes, cutoffs) is written last.
        """
        folder = Path(folder)
        for name in PARTS:
            atomic_write_with(folder / f"{name}.parquet", partial(write_parquet, getattr(self, name)))
        atomic_write_json(folder / "split.json", self.summary())

    @classmethod
    def load(cls, folder: str | Path) -> Split:
        """Read a split written by :meth:`save`.

        Raises:
            FileNotFoundError: ``split.json`` or a parquet file is missing (run ``recsys-llm prepare`` first).
        """
        folder = Path(folder)
        paths = [folder / "split.json"] + [folder / f"{name}.parquet" for name in PARTS]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(
                f"split files missing: {', '.join(missing)}; run `recsys-llm prepare` first"
            )
        meta = load_json(folder / "split.json")
        frames = {name: pd.read_parquet(folder / f"{name}.parquet") for name in PARTS}
        return cls(
            kind=meta["kind"],
            cold_items=np.asarray(meta["cold_items"], dtype=np.int64),
            n_users=int(meta["n_users"]),
            n_items=int(meta["n_items"]),
            cutoffs={k: int(v) for k, v in meta.get("cutoffs", {}).items()},
            **frames,
        )


# ------------------------------------------------------------------------------------------------ making
def make_split(ds: Dataset, cfg: SplitConfig) -> Split:
    """Split a data set into train / valid / test (warm items) and cold (every row of the cold items).

    Args:
        ds: canonical data set.
        cfg: split kind, cold-item fraction, temporal fractions and seed.

    Returns:
        The :class:`Split`; its counts are logged.

    Raises:
        ValueError: the data set has no interactions, or the split would leave train or test empty (a
            :class:`~recsys_llm.data.checks.DataError` saying why), or a bad fixed split.

    Example:
        >>> split = make_split(ds, SplitConfig(kind="temporal", cold_item_fraction=0.0))  # doctest: +SKIP
        >>> split.summary()["n_test"]                                                      # doctest: +SKIP
    """
    if cfg.kind not in SPLIT_KINDS:
        raise ValueError(f"split kind {cfg.kind!r} is unknown; choose one of {', '.join(SPLIT_KINDS)}")
    inter = _canonical_order(ds.interactions)
    if len(inter) == 0:
        raise ValueError(f"data set {ds.name!r} has no interactions; nothing to split")

    cold_items = choose_cold_items(inter["item"].to_numpy(), cfg.cold_item_fraction, cfg.seed)
    is_cold = _membership(inter["item"].to_numpy(), cold_items)
    cold, warm = inter[is_cold], inter[~is_cold]
    part, cutoffs = _warm_parts(warm, ds, cfg, cold_items)
    train, valid, test = (_frame(warm[part == k]) for k in range(3))
    _check_sizes(ds, cfg, len(inter), len(cold), len(cold_items), len(train), len(test))
    split = Split(
        kind=cfg.kind,
        train=train,
        valid=valid,
        test=test,
        cold=_frame(cold),
        cold_items=cold_items,
        n_users=ds.n_users,
        n_items=ds.n_items,
        cutoffs=cutoffs,
    )
    s = split.summary()
    logger.info(
        "split %s of %s: train=%d valid=%d test=%d cold=%d rows; %d cold items; %d test users (%d without "
        "training history)%s",
        s["kind"],
        ds.name,
        s["n_train"],
        s["n_valid"],
        s["n_test"],
        s["n_cold"],
        s["n_cold_items"],
        s["n_test_users"],
        s["n_test_users_without_train"],
        f"; cutoffs {cutoffs}" if cutoffs else "",
    )
    return split


def _warm_parts(warm: pd.DataFrame, ds: Dataset, cfg: SplitConfig, cold_items: np.ndarray
                ) -> tuple[np.ndarray, dict[str, int]]:
    """Part per warm row (0 train, 1 valid, 2 test) and the temporal cutoffs (empty for leave_last_out)."""
    if cfg.kind == "leave_last_out":
        part = fixed_holdout(warm, ds, cfg, cold_items)
        return (_leave_last_out_parts(warm) if part is None else part), {}
    t_valid, t_test = temporal_cutoffs(
        warm["timestamp"].to_numpy(), cfg.temporal_test_fraction, cfg.temporal_valid_fraction
    )
    ts = warm["timestamp"].to_numpy()
    return np.where(ts >= t_test, 2, np.where(ts >= t_valid, 1, 0)), {"t_valid": t_valid, "t_test": t_test}


def _check_sizes(ds: Dataset, cfg: SplitConfig, n: int, n_cold: int, n_cold_items: int, n_train: int,
                 n_test: int) -> None:
    """A split with an empty train or test part is an error that says why and what to change."""
    if n_train == 0:
        raise DataError(
            f"split {cfg.kind!r} of {ds.name!r} leaves train empty ({n} interactions, "
            f"{n_cold} of them on {n_cold_items} cold items, {n - n_cold} warm); "
            + (
                "lower split.cold_item_fraction"
                if n == n_cold
                else "lower split.temporal_test_fraction / temporal_valid_fraction (timestamps may be tied)"
            )
        )
    if n_test == 0:
        raise DataError(
            f"data set {ds.name!r} is too small to split: {n} interaction(s) of {ds.n_users} user(s) leave no "
            f"test interaction ({cfg.kind} holds out a user's last interaction only when the user has at least "
            "2 warm ones); add interactions, or lower split.cold_item_fraction"
        )


def choose_cold_items(items: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Draw ``round(fraction * n)`` of the ``n`` distinct items in ``items`` (items with interactions).

    Args:
        items: item id of every interaction.
        fraction: share of the interacted items to make cold, in [0, 1).
        seed: seed of ``np.random.default_rng``.

    Returns:
        Sorted int64 ids; empty when ``fraction`` is 0.
    """
    candidates = np.unique(np.asarray(items, dtype=np.int64))
    n_cold = int(round(fraction * len(candidates)))
    if n_cold == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=n_cold, replace=False)).astype(np.int64)


def temporal_cutoffs(timestamps: np.ndarray, test_fraction: float, valid_fraction: float) -> tuple[int, int]:
    """Global cutoffs ``(t_valid, t_test)``: train = ts < t_valid <= valid < t_test <= test.

    With ``s`` the ``n`` timestamps sorted, ``n_test = max(1, round(test_fraction * n))``,
    ``n_valid = max(1, round(valid_fraction * n))`` (0 when ``valid_fraction`` is 0),
    ``t_test = s[n - n_test]`` and ``t_valid = s[max(0, n - n_test - n_valid)]``: the empirical quantiles
    at ``1 - test_fraction`` and ``1 - test_fraction - valid_fraction``.

    Tie rule: a cutoff never separates equal timestamps; every row whose timestamp equals a cutoff goes to the
    later part (``ts == t_test`` -> test, ``ts == t_valid`` -> valid). So with ties test is at least its
    nominal size and train at most its own; valid may grow or shrink (it is empty when ``t_valid == t_test``),
    and nothing in train happens at or after anything in valid or test.

    Args:
        timestamps: timestamps of the warm interactions.
        test_fraction: share of interactions (by time) at or after ``t_test``.
        valid_fraction: share between ``t_valid`` and ``t_test``; 0 gives ``t_valid == t_test`` (empty valid).

    Returns:
        ``(t_valid, t_test)`` as ints.

    Example:
        >>> temporal_cutoffs(np.arange(10), 0.2, 0.1)
        (7, 8)
    """
    s = np.sort(np.asarray(timestamps, dtype=np.int64))
    n = len(s)
    if n == 0:
        raise ValueError("no warm interactions to split by time; lower split.cold_item_fraction")
    n_test = max(1, int(round(test_fraction * n)))
    n_valid = max(1, int(round(valid_fraction * n))) if valid_fraction > 0 else 0
    t_test = s[max(0, n - n_test)]
    t_valid = s[max(0, n - n_test - n_valid)]
    return int(t_valid), int(t_test)


def _leave_last_out_parts(warm: pd.DataFrame) -> np.ndarray:
    """Part per row (0 train, 1 valid, 2 test) of rows already in canonical order (user, timestamp, row)."""
    by_user = warm.groupby("user", sort=False)
    from_end = by_user.cumcount(ascending=False).to_numpy()  # 0 = the user's last interaction
    size = by_user["user"].transform("size").to_numpy()
    part = np.zeros(len(warm), dtype=np.int8)
    part[(from_end == 0) & (size >= 2)] = 2
    part[(from_end == 1) & (size >= 3)] = 1
    return part


def _canonical_order(inter: pd.DataFrame) -> pd.DataFrame:
    """Canonical columns, rows sorted by (user, timestamp, original row order)."""
    missing = [c for c in INTERACTION_COLUMNS if c not in inter.columns]
    if missing:
        raise ValueError(f"interactions lack column(s) {missing}; expected {list(INTERACTION_COLUMNS)}")
    df = inter[list(INTERACTION_COLUMNS)]
    order = np.lexsort((np.arange(len(df)), df["timestamp"].to_numpy(), df["user"].to_numpy()))
    return df.iloc[order].reset_index(drop=True)


def _membership(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Boolean mask ``values in members`` for non-negative int ids (a lookup table, O(n))."""
    if len(members) == 0 or len(values) == 0:
        return np.zeros(len(values), dtype=bool)
    table = np.zeros(int(max(values.max(), members.max())) + 1, dtype=bool)
    table[members] = True
    return table[values]


def _frame(df: pd.DataFrame) -> pd.DataFrame:
    return df.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- reading
def _check_users(df: pd.DataFrame, n_users: int) -> np.ndarray:
    users = df["user"].to_numpy().astype(np.int64, copy=False)
    if len(users) and (users.min() < 0 or users.max() >= n_users):
        raise ValueError(f"user ids must be in [0, {n_users}); got {users.min()}..{users.max()}")
    return users


def _per_user(users_sorted: np.ndarray, values_sorted: np.ndarray, n_users: int) -> list[np.ndarray]:
    counts = np.bincount(users_sorted, minlength=n_users)
    return np.split(values_sorted.astype(np.int64, copy=False), np.cumsum(counts)[:-1])


def histories(df: pd.DataFrame, n_users: int) -> list[np.ndarray]:
    """Per-user item ids, oldest first (by timestamp; rows with equal timestamps keep their row order).

    Args:
        df: interaction rows (``user``, ``item``, ``timestamp``).
        n_users: length of the returned list.

    Returns:
        ``n_users`` int64 arrays; an empty one for a user with no rows.

    Example:
        >>> df = pd.DataFrame({"user": [1, 0, 1], "item": [5, 6, 7], "timestamp": [20, 10, 10]})
        >>> [h.tolist() for h in histories(df, 3)]
        [[6], [7, 5], []]
    """
    users = _check_users(df, n_users)
    order = np.lexsort((np.arange(len(df)), df["timestamp"].to_numpy(), users))
    return _per_user(users[order], df["item"].to_numpy()[order], n_users)


def targets(df: pd.DataFrame, n_users: int) -> list[np.ndarray]:
    """Per-user set of item ids held out in ``df`` (unique, sorted).

    Args:
        df: held-out rows (``user``, ``item``), e.g. ``split.test`` or ``split.cold``.
        n_users: length of the returned list.

    Returns:
        ``n_users`` sorted int64 arrays; an empty one for a user with no rows.

    Example:
        >>> df = pd.DataFrame({"user": [1, 1, 1], "item": [9, 3, 9], "timestamp": [1, 2, 3]})
        >>> [t.tolist() for t in targets(df, 2)]
        [[], [3, 9]]
    """
    users = _check_users(df, n_users)
    items = df["item"].to_numpy().astype(np.int64, copy=False)
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    keep = np.ones(len(users), dtype=bool)
    keep[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
    return _per_user(users[keep], items[keep], n_users)


def test_histories(split: Split) -> list[np.ndarray]:
    """What each user is known to have done at test time: train then valid, oldest first.

    Rows with equal timestamps keep train before valid.

    Args:
        split: the split.

    Returns:
        ``split.n_users`` int64 arrays of item ids.
    """
    known = pd.DataFrame(
        {
            c: np.concatenate([split.train[c].to_numpy(), split.valid[c].to_numpy()])
            for c in ("user", "item", "timestamp")
        }
    )
    return histories(known, split.n_users)


test_histories.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported into tests
