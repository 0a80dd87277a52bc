"""Seeded batch sampler for two-tower training: each batch is a pure function of ``(seed, batch index)``.

Batch ``b`` is drawn from ``np.random.default_rng([seed, b])`` alone, so a run resumed at any step draws
exactly the batches an uninterrupted run would have drawn, without replaying the ones before it, and
several processes can each draw their own share (process ``r`` of ``N`` takes batches ``r, r + N, ...``).

Two sampling schemes (``TrainConfig.sampling``):

* ``pairs``: every training pair is equally likely (a user with a long history contributes many pairs).
* ``user``: a user is picked uniformly, then one of that user's pairs uniformly, so pair ``k`` of user
  ``u`` has probability ``1 / (n_users * n_pairs(u))`` and heavy users do not dominate.

With ``unique_items=True`` no positive item appears twice in a batch (a repeat is a false negative for the
other rows): slots holding a repeated item are redrawn from the same generator; after a few rounds of
redraws the remaining slots are drawn from the pairs whose item is not yet in the batch.

Example:
    >>> import numpy as np
    >>> s = PairBatchSampler(pos_items=np.array([0, 0, 1, 2]), users=np.array([0, 0, 0, 1]), batch_size=3, seed=7)
    >>> batch = s.batch(0)  # (3,) pair indices
    >>> sorted(s.pos_items[batch].tolist())  # three different items
    [0, 1, 2]
    >>> bool((s.batch(0) == batch).all())  # a pure function of (seed, index)
    True
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

logger = logging.getLogger(__name__)

SAMPLING = ("pairs", "user")
REDRAW_ROUNDS = 16
"""Rounds of redrawing repeated items before the exact fallback (drawing among unused items only)."""


class PairBatchSampler:
    """Batches of training-pair indices, drawn with replacement across batches.

    Args:
        pos_items: ``(n,)`` positive item id of each pair.
        users: ``(n,)`` user id of each pair.
        batch_size: pairs per batch (the effective batch of one optimizer step).
        seed: non-negative seed; batch ``b`` depends only on ``(seed, b)``.
        sampling: ``pairs`` (uniform over pairs) or ``user`` (uniform over users, then over their pairs).
        unique_items: no positive item twice in a batch.

    Raises:
        ValueError: empty or misaligned inputs, a bad ``sampling``, a negative seed, or ``unique_items``
            with fewer distinct items than ``batch_size``.
    """

    def __init__(
        self,
        pos_items: np.ndarray,
        users: np.ndarray,
        batch_size: int,
        seed: int = 0,
        sampling: str = "pairs",
        unique_items: bool = True,
    ) -> None:
        self.pos_items = np.asarray(pos_items, dtype=np.int64)  # (n,)
        self.users = np.asarray(users, dtype=np.int64)  # (n,)
        n = len(self.pos_items)
        if n == 0 or self.pos_items.shape != (n,) or self.users.shape != (n,):
            raise ValueError(
                f"pos_items {self.pos_items.shape} and users {self.users.shape} must be equal-length, non-empty 1-d"
            )
        if sampling not in SAMPLING:
            raise ValueError(f"sampling={sampling!r}; choose one of {', '.join(SAMPLING)}")
        if seed < 0:
            raise ValueError(f"seed={seed}; must be >= 0")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; must be >= 1")
        n_distinct = len(np.unique(self.pos_items))
        if unique_items and n_distinct < batch_size:
            raise ValueError(
                f"unique items per batch asked for {batch_size} distinct positives but the pairs have only "
                f"{n_distinct} distinct items; lower train.batch_size or set train.unique_items_in_batch=false"
            )
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.sampling = sampling
        self.unique_items = bool(unique_items)
        if sampling == "pairs":
            probs = np.full(n, 1.0 / n)
        else:
            _, inverse, counts = np.unique(self.users, return_inverse=True, return_counts=True)
            probs = 1.0 / (len(counts) * counts[inverse].astype(np.float64))
        self.pair_probs = probs  # (n,) sums to 1
        self._cdf = np.cumsum(probs)  # (n,)
        self._cdf[-1] = 1.0

    def item_probs(self, n_items: int) -> np.ndarray:
        """``(n_items,)`` probability that one draw's positive is each item (the logQ correction's ``q``)."""
        return np.bincount(self.pos_items, weights=self.pair_probs, minlength=n_items)

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        idx = np.searchsorted(self._cdf, rng.random(size), side="right")
        return np.minimum(idx, len(self._cdf) - 1).astype(np.int64)

    def batch(self, index: int) -> np.ndarray:
        """The ``(batch_size,)`` int64 pair indices of batch ``index`` (0-based)."""
        if index < 0:
            raise ValueError(f"batch index {index}; must be >= 0")
        rng = np.random.default_rng([self.seed, int(index)])
        idx = self._draw(rng, self.batch_size)  # (batch,)
        if not self.unique_items:
            return idx
        for _ in range(REDRAW_ROUNDS):
            repeat = _repeats(self.pos_items[idx])
            if not repeat.any():
                return idx
            idx[repeat] = self._draw(rng, int(repeat.sum()))
        return self._fill_unique(rng, idx)

    def _fill_unique(self, rng: np.random.Generator, idx: np.ndarray) -> np.ndarray:
        """Exact fallback: redraw each repeated slot among pairs whose item is not in the batch yet."""
        repeat = _repeats(self.pos_items[idx])
        used = set(self.pos_items[idx[~repeat]].tolist())
        for slot in np.flatnonzero(repeat):
            allowed = ~np.isin(self.pos_items, list(used))  # (n,)
            p = self.pair_probs * allowed
            pick = int(rng.choice(len(p), p=p / p.sum()))
            idx[slot] = pick
            used.add(int(self.pos_items[pick]))
        return idx

    def batches(self, start: int, stop: int, step: int = 1) -> Iterator[np.ndarray]:
        """Batches ``start, start + step, ...`` below ``stop`` (e.g. one process's share)."""
        for b in range(start, stop, step):
            yield self.batch(b)


def _repeats(items: np.ndarray) -> np.ndarray:
    """``(batch,)`` bool: True where the item already occurred earlier in the batch."""
    _, first = np.unique(items, return_index=True)
    repeat = np.ones(len(items), dtype=bool)
    repeat[first] = False
    return repeat
