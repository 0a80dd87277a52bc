"""Lexical hard negatives for two-tower training: items whose text shares rare words with the positive's.

In-batch negatives are random items and rarely share a word with the positive, so the encoder never has to
tell "Acme X100 camera" from "Acme X200 camera bag". :func:`lexical_neighbours` precomputes, once, each item's
top-``m`` neighbours by BM25 of its own text against the other items' texts (rare shared words weigh most;
:func:`recsys_llm.text.bm25.bm25_matrices`). :class:`HardNegativeSampler` draws ``n`` of them per training
example, never one of the user's own training items, and removes repeats across the batch, so every hard
negative is one extra item column that every user of the batch is scored against.

Determinism: the draw for batch ``b`` uses ``np.random.default_rng([seed, b, 1])`` alone (the pair sampler
uses ``[seed, b]``), so a resumed run draws the hard negatives of an uninterrupted one and nothing needs to be
checkpointed.

Only items that some training history holds can be hard negatives (as only they can be in-batch
negatives): an item training never saw interacted with, such as a cold item, is neither a positive nor a
negative, and the encoder meets its text first when it is embedded.

Example:
    >>> texts = ["acme x100 camera", "acme x200 camera bag", "acme x100 lens", "red apple"]
    >>> lexical_neighbours(texts, m=2).tolist()  # best first; -1: no item shares a word with "red apple"
    [[2, 1], [0, 2], [0, 1], [-1, -1]]
    >>> s = HardNegativeSampler(lexical_neighbours(texts, m=2), [np.array([0, 3]), np.array([0, 1])], n=1, seed=0)
    >>> s.draw(0, pos_items=np.array([0]), users=np.array([1])).tolist()  # user 1 holds item 1: never drawn
    [[2]]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from recsys_llm.text.bm25 import bm25_matrices

__all__ = ["HardNegativeSampler", "expected_counts", "lexical_neighbours"]

logger = logging.getLogger(__name__)

STREAM = 1
"""Third element of the draw's seed ``[seed, batch, STREAM]``: a stream apart from the pair sampler's."""
_CHUNK_CELLS = 1 << 24
"""Dense score cells (rows x items) per chunk of :func:`lexical_neighbours` (64 MiB of float32)."""


def lexical_neighbours(
    item_texts: Sequence[str | None], m: int, allowed: np.ndarray | None = None
) -> np.ndarray:
    """Each item's ``m`` nearest other items by BM25 of its text against theirs.

    Args:
        item_texts: one text per item, position = item id.
        m: neighbours per item.
        allowed: optional ``(n_items,)`` bool; only these items can be neighbours (every item has a row).

    Returns:
        ``(n_items, m)`` int64, best first; ``-1`` where fewer than ``m`` items share a word with the item.
    """
    t0 = time.perf_counter()
    weights, counts = bm25_matrices(item_texts)  # (n, vocab) each
    n = weights.shape[0]
    ok = np.ones(n, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    if ok.shape != (n,):
        raise ValueError(f"allowed has shape {ok.shape}; expected ({n},)")
    out = np.full((n, m), -1, dtype=np.int64)
    k = min(m, n)
    step = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, n, step):
        rows = np.arange(start, min(start + step, n))
        scores = (counts[rows] @ weights.T).toarray()  # (chunk, n)
        scores[:, ~ok] = 0.0
        scores[np.arange(len(rows)), rows] = 0.0  # never the item itself
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (chunk, k), unordered
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -top_scores), axis=1)  # best first; ties by item id
        top, top_scores = np.take_along_axis(top, order, 1), np.take_along_axis(top_scores, order, 1)
        out[rows, :k] = np.where(top_scores > 0, top, -1)
    logger.info(
        "lexical neighbours: %d items x %d in %.1f s; %.1f%% of the slots filled",
        n,
        m,
        time.perf_counter() - t0,
        100.0 * (out >= 0).mean() if out.size else 0.0,
    )
    return out


def expected_counts(neighbours: np.ndarray, item_probs: np.ndarray, n: int) -> np.ndarray:
    """``(n_items,)`` expected hard-negative draws of each item per training example.

    An example's positive is item ``p`` with probability ``item_probs[p]``, and each of its ``n`` hard negatives
    is drawn without replacement from ``p``'s valid neighbours, so neighbour ``j`` is drawn with probability
    ``min(1, n / |N(p)|)``. History exclusions and repeats across the batch are ignored. The logQ correction
    adds this to ``item_probs`` (TensorFlow's sampled softmax subtracts the log of the expected count of an item
    among the sampled columns in the same way).
    """
    valid = neighbours >= 0  # (n_items, m)
    per_row = np.minimum(1.0, n / np.maximum(valid.sum(axis=1), 1))  # (n_items,)
    weights = (item_probs * per_row)[:, None] * valid  # (n_items, m)
    return np.bincount(neighbours[valid], weights=weights[valid], minlength=len(item_probs))


class HardNegativeSampler:
    """Seeded draws of lexical hard negatives for a batch of training examples.

    Args:
        neighbours: ``(n_items, m)`` from :func:`lexical_neighbours` (``-1`` = none).
        histories: every user's training items (position = user id); never drawn for that user.
        n: hard negatives per example.
        seed: the training seed; batch ``b``'s draw depends only on ``(seed, b)``.
    """

    def __init__(self, neighbours: np.ndarray, histories: Sequence[np.ndarray], n: int, seed: int) -> None:
        if neighbours.ndim != 2:
            raise ValueError(f"neighbours has shape {neighbours.shape}; expected (n_items, m)")
        if n < 1:
            raise ValueError(f"n={n}; must be >= 1")
        self.neighbours = np.asarray(neighbours, dtype=np.int64)
        self.seen = [np.unique(np.asarray(h, dtype=np.int64)) for h in histories]  # sorted, for np.isin
        self.n = int(n)
        self.seed = int(seed)

    @classmethod
    def fit(
        cls, item_texts: Sequence[str | None], histories: Sequence[np.ndarray], n: int, pool: int, seed: int
    ) -> HardNegativeSampler:
        """The neighbour table of ``item_texts`` (``pool`` per item, among the items some history holds)."""
        allowed = np.zeros(len(item_texts), dtype=bool)
        for h in histories:
            allowed[np.asarray(h, dtype=np.int64)] = True
        return cls(lexical_neighbours(item_texts, pool, allowed), histories, n, seed)

    def draw(self, index: int, pos_items: np.ndarray, users: np.ndarray) -> np.ndarray:
        """``(batch, n)`` int64 hard negatives of batch ``index``; ``-1`` = none.

        Each row's are drawn without replacement among its positive's neighbours outside its user's history;
        an item already in the batch (a positive, or drawn for an earlier slot) becomes ``-1``, so the valid
        entries are distinct items that are no positive of the batch.
        """
        rng = np.random.default_rng([self.seed, int(index), STREAM])
        cand = self.neighbours[pos_items]  # (batch, m)
        keys = rng.random(cand.shape)  # (batch, m): a random order of each row's candidates
        bad = cand < 0
        for r, u in enumerate(users):
            bad[r] |= np.isin(cand[r], self.seen[u])
        keys[bad] = np.inf
        order = np.argsort(keys, axis=1, kind="stable")[:, : self.n]  # (batch, n)
        picks = np.take_along_axis(cand, order, axis=1)
        picks[np.isinf(np.take_along_axis(keys, order, axis=1))] = -1
        if picks.shape[1] < self.n:  # fewer neighbours per item than n
            picks = np.pad(picks, ((0, 0), (0, self.n - picks.shape[1])), constant_values=-1)
        flat = picks.reshape(-1)  # row-major: the column order of the batch
        _, first = np.unique(flat, return_index=True)
        repeat = np.ones(len(flat), dtype=bool)
        repeat[first] = False
        flat[repeat | np.isin(flat, pos_items)] = -1
        return picks

    def false_negatives(self, users: np.ndarray, neg_items: np.ndarray) -> np.ndarray:
        """``(batch, m)`` bool: True where hard negative ``neg_items[j]`` is in row ``i``'s user history."""
        if len(users) == 0:
            return np.zeros((0, len(neg_items)), dtype=bool)
        return np.stack([np.isin(neg_items, self.seen[u]) for u in users])
