"""Next-item training examples and the checks shared by the history user models (pooling and sequence).

Both :func:`recsys_llm.encoder.user_pooling.fit_pooling` and
:func:`recsys_llm.encoder.user_sequence.fit_sequence` learn from every ``(prefix h[:c] -> positive h[c])`` of
the training histories, check their arguments the same way, and keep the trained model only when its
validation Recall@10 beats the mean-of-history start: :class:`NextItemExamples`, :func:`check_settings`,
:func:`check_valid`, :func:`allowed_ids` and :func:`valid_recall` are that common part; :func:`fit_inputs` runs
the checks and builds what both fits start from, :func:`finish_info` and :func:`fit_summary` close them.

Example:
    >>> ex = NextItemExamples.build([np.array([3, 4, 5]), np.array([7])], np.arange(10), n_items=10)
    >>> len(ex), ex.flat[ex.pos].tolist()   # prefixes [3] -> 4 and [3, 4] -> 5; a 1-item history has none
    (2, [4, 5])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recsys_llm.device import resolve_device
from recsys_llm.encoder.histories import flatten_histories, pack_rows
from recsys_llm.encoder.pooling_model import item_matrix
from recsys_llm.ranking import embedding_ranking_metrics

__all__ = ["FitInputs", "NextItemExamples", "Valid", "allowed_ids", "check_settings", "check_valid", "finish_info",
           "fit_inputs", "fit_summary", "valid_recall"]

Valid = tuple[Sequence[np.ndarray], Sequence[np.ndarray]]
"""Validation users: ``(histories, targets)``, one held-out id array per history."""


@dataclass
class NextItemExamples:
    """Every ``(prefix h[:c] -> positive h[c])``, ``1 <= c < len(h)``, as indices into the flat histories.

    Example ``e``: positive ``flat[pos[e]]``, prefix ``flat[start[e]:pos[e]]``; ``label_col[e]`` is the
    positive's column among the allowed items, ``col_of`` maps item id -> column (-1 = not an allowed item).
    """

    flat: np.ndarray
    start: np.ndarray
    pos: np.ndarray
    label_col: np.ndarray
    col_of: np.ndarray

    @classmethod
    def build(cls, histories: Sequence[np.ndarray], allowed: np.ndarray, n_items: int) -> NextItemExamples:
        """Raises ``ValueError`` for an id outside ``[0, n_items)``, no example at all, or a positive outside
        ``allowed`` (the row and position named)."""
        col_of = np.full(n_items, -1, dtype=np.int64)  # item id -> softmax column, -1 = not allowed
        col_of[allowed] = np.arange(len(allowed))
        flat, starts, lens = flatten_histories(histories, n_items, "histories")
        n_cuts = np.maximum(lens - 1, 0)  # examples per user
        n_examples = int(n_cuts.sum())
        if n_examples == 0:
            raise ValueError(f"no training examples: all {len(lens)} histories are shorter than 2 items "
                             "(each example is a prefix of >= 1 item and the next item)")
        ex_start = np.repeat(starts, n_cuts)  # (n_examples,)
        pos = ex_start + 1 + np.arange(n_examples) - np.repeat(np.cumsum(n_cuts) - n_cuts, n_cuts)
        label_col = col_of[flat[pos]]
        if (label_col < 0).any():
            bad = int(np.flatnonzero(label_col < 0)[0])
            row = int(np.searchsorted(starts + lens, pos[bad], side="right"))
            raise ValueError(f"histories[{row}] has item {int(flat[pos[bad]])} at position "
                             f"{int(pos[bad] - starts[row])}, a training positive outside allowed_items; "
                             "pass allowed_items that cover every history item, or drop those items from the "
                             "histories")
        return cls(flat, ex_start, pos, label_col, col_of)

    def __len__(self) -> int:
        return len(self.pos)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` example indices drawn uniformly (with replacement)."""
        return rng.integers(0, len(self), size=size)

    def packed(self, batch: np.ndarray, max_items: int) -> np.ndarray:
        """The prefixes of ``batch``: int64 ``(b, L)``, most recent first, ``-1`` padded, ``L <= max_items``."""
        b_pos = self.pos[batch]
        return pack_rows(self.flat, b_pos, b_pos - self.start[batch], max_items)[0]

    def prefix_items(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, items)``: every item of each whole prefix of ``batch`` (not only the packed ones), with its
        batch row: what a softmax masks (a seen item is no negative)."""
        b_pos, b_start = self.pos[batch], self.start[batch]
        lens = b_pos - b_start
        rows = np.repeat(np.arange(len(lens)), lens)
        offsets = np.repeat(b_start - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
        return rows, self.flat[offsets]


def valid_recall(encode: Callable[[Sequence[np.ndarray]], np.ndarray], item_np: np.ndarray, allowed: np.ndarray,
                 histories: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> float:
    """Mean Recall@10 over users with targets of ``encode(histories) @ item_np.T``: full ranking over
    ``allowed``, history items excluded."""
    users = encode(histories)  # (n, dim)
    recall = embedding_ranking_metrics(users, item_np, targets, 10, seen=histories, candidates=allowed,
                                       metrics=("recall",))["recall@10"]
    if not np.isfinite(recall).any():
        raise ValueError("valid has no user with a held-out target; pass non-empty targets or valid=None")
    return float(np.nanmean(recall))


def check_settings(*, steps: int, batch_size: int, max_items: int, lr: float) -> None:
    """ValueError unless ``steps >= 0``, ``batch_size >= 1``, ``max_items >= 1`` (integers) and ``lr > 0``."""
    for name, value, low in (("steps", steps, 0), ("batch_size", batch_size, 1), ("max_items", max_items, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0; got {lr!r}")


def check_valid(valid: Valid, n_items: int) -> None:
    """ValueError unless ``valid`` is one target array per history, every id in ``[0, n_items)``."""
    v_hist, v_targets = valid
    if len(v_hist) != len(v_targets):
        raise ValueError(f"valid has {len(v_hist)} histories but {len(v_targets)} target arrays; "
                         "need one target array per history")
    flatten_histories(v_hist, n_items, "valid histories")
    flatten_histories(v_targets, n_items, "valid targets")


def allowed_ids(allowed_items: np.ndarray | None, n_items: int) -> np.ndarray:
    """The sorted unique allowed item ids (every item when None); ValueError for a bad array."""
    if allowed_items is None:
        return np.arange(n_items, dtype=np.int64)
    arr = np.asarray(allowed_items)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"allowed_items must be a non-empty 1-D integer array; got shape {arr.shape}, "
                         f"dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n_items:
        raise ValueError(f"allowed_items must hold ids in [0, {n_items}) (rows of item_emb); got "
                         f"{int(arr.min())}..{int(arr.max())}")
    return np.unique(arr.astype(np.int64))


@dataclass
class FitInputs:
    """What a history user model's fit starts from (:func:`fit_inputs`)."""

    device: torch.device
    item_np: np.ndarray
    allowed: np.ndarray
    examples: NextItemExamples


def fit_inputs(item_emb: np.ndarray, histories: Sequence[np.ndarray], *, steps: int, batch_size: int,
               max_items: int, lr: float, allowed_items: np.ndarray | None, valid: Valid | None,
               device: str) -> FitInputs:
    """Check a fit's arguments (ValueError naming the bad one) and build its examples: the device, the items
    as float32 ``(n_items, dim)``, the allowed ids and every ``(prefix -> next item)`` example."""
    check_settings(steps=steps, batch_size=batch_size, max_items=max_items, lr=lr)
    dev = resolve_device(device)
    item_np = item_matrix(item_emb, None)
    allowed = allowed_ids(allowed_items, item_np.shape[0])
    examples = NextItemExamples.build(histories, allowed, item_np.shape[0])
    if valid is not None:
        check_valid(valid, item_np.shape[0])
    return FitInputs(dev, item_np, allowed, examples)


def finish_info(info: dict[str, Any], losses: list[float], steps: int) -> None:
    """``info["final_loss"]`` (mean of the last 10% of steps, NaN without steps) and ``info["kept"]``."""
    tail = losses[-max(1, len(losses) // 10):]
    info["final_loss"] = float(np.mean(tail)) if tail else float("nan")
    info["kept"] = "trained" if steps > 0 else "mean"


def fit_summary(info: dict[str, Any], n_examples: int, validated: bool) -> str:
    """The log line's tail: steps, examples, time, loss, what was kept and the validation Recall@10."""
    text = (f"{info['steps']} steps on {n_examples} examples in {info['seconds']:.1f}s, final loss "
            f"{info['final_loss']:.4f}, kept {info['kept']}")
    if validated:
        text += (f", valid Recall@10 mean {info['valid_recall@10_mean']:.4f} -> trained "
                 f"{info['valid_recall@10']:.4f}")
    return text
