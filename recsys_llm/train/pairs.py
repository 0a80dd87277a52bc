"""Training pairs for the two-tower encoder: (text of a user's history so far, the next item).

For a user with history ``h`` (item ids, oldest first) every position ``t >= min_history`` gives one pair:
the user text renders ``h[:t]`` (most recent first, at most ``max_items`` titles) and the positive is
``h[t]``. Only the training split's histories should be passed in, so no test item leaks into training.

Example:
    >>> import numpy as np
    >>> pairs = build_pairs([np.array([0, 1, 2])], ["a", "b", "c"], max_items=5)
    >>> pairs.user_texts, pairs.pos_items.tolist(), pairs.users.tolist()
    (['a', 'b; a'], [1, 2], [0, 0])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recsys_llm.text.templates import history_text

logger = logging.getLogger(__name__)


@dataclass
class TrainingPairs:
    """Named, aligned columns: row ``k`` is ``(user_texts[k], pos_items[k])`` of user ``users[k]``."""

    user_texts: list[str]
    """Text of the user's history before the positive (``history_text``)."""
    pos_items: np.ndarray
    """``(n,)`` int64 internal ids of the positive (next) items."""
    users: np.ndarray
    """``(n,)`` int64 internal user ids."""
    histories: Sequence[np.ndarray] | None = None
    """Every user's training items (position = user id), when known: hard negatives
    (``TrainConfig.hard_negatives``) are never a user's own items, nor items no training history holds."""

    def __post_init__(self) -> None:
        if not (len(self.user_texts) == len(self.pos_items) == len(self.users)):
            raise ValueError(
                f"TrainingPairs columns differ in length: {len(self.user_texts)} texts, "
                f"{len(self.pos_items)} items, {len(self.users)} users"
            )

    def __len__(self) -> int:
        return len(self.user_texts)


def build_pairs(
    histories: Sequence[np.ndarray],
    titles: Sequence[str],
    max_items: int,
    min_history: int = 1,
    pairs_per_user: int = 0,
) -> TrainingPairs:
    """All (history prefix text, next item) pairs, users in id order and positions oldest first.

    Args:
        histories: per user (position = user id), item ids oldest first.
        titles: item titles, position = item id.
        max_items: most recent items rendered into the user text.
        min_history: a pair needs at least this many earlier items (``t >= min_history``).
        pairs_per_user: keep only each user's most recent ``pairs_per_user`` pairs (0 keeps all).

    Returns:
        :class:`TrainingPairs` (possibly empty), with ``histories``.

    Raises:
        ValueError: negative ``min_history``/``pairs_per_user`` or ``max_items < 1``.
    """
    if min_history < 0 or pairs_per_user < 0 or max_items < 1:
        raise ValueError(
            f"min_history={min_history}, pairs_per_user={pairs_per_user} must be >= 0 and "
            f"max_items={max_items} >= 1"
        )
    texts: list[str] = []
    items: list[int] = []
    users: list[int] = []
    for user, hist in enumerate(histories):
        hist = np.asarray(hist, dtype=np.int64)
        positions = range(min_history, len(hist))
        if pairs_per_user:
            positions = positions[-pairs_per_user:]
        for t in positions:
            texts.append(history_text(hist[max(0, t - max_items) : t], titles, max_items))
            items.append(int(hist[t]))
            users.append(user)
    logger.debug("built %d training pairs from %d histories", len(texts), len(histories))
    return TrainingPairs(
        texts,
        np.asarray(items, dtype=np.int64),
        np.asarray(users, dtype=np.int64),
        [np.asarray(h, dtype=np.int64) for h in histories],
    )
