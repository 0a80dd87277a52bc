"""User embeddings -> top-K candidate items per user from an index, the user's seen items filtered.

Candidates are the artifact between retrieval and reranking (``candidates/<slice>.npz``): ``users`` (n,),
``ids`` (n, K) int64 best first with ``-1`` padding and ``scores`` (n, K) float32.

Example:
    >>> import numpy as np
    >>> from recsys_llm.index.exact import ExactIndex
    >>> idx = ExactIndex(2); idx.add(np.eye(2), ids=[0, 1])
    >>> c = retrieve(idx, np.array([[1.0, 0.0]]), users=np.array([3]), k=2, seen=[np.array([0])])
    >>> c.ids.tolist()
    [[1, -1]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from recsys_llm.index.base import VectorIndex
from recsys_llm.io_utils import atomic_save_npz


@dataclass
class Candidates:
    """Top-K candidates per user: ``ids[i]`` and ``scores[i]`` belong to ``users[i]``."""

    users: np.ndarray  # int64 (n,)
    ids: np.ndarray  # int64 (n, K), -1 = missing
    scores: np.ndarray  # float32 (n, K), -inf = missing

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users, dtype=np.int64)
        self.ids = np.asarray(self.ids, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        n = len(self.users)
        if self.ids.ndim != 2 or self.ids.shape[0] != n or self.scores.shape != self.ids.shape:
            raise ValueError(f"Candidates: users {self.users.shape}, ids {self.ids.shape}, scores "
                             f"{self.scores.shape}; need (n,), (n, K), (n, K)")

    @property
    def k(self) -> int:
        return self.ids.shape[1]

    def top(self, k: int) -> Candidates:
        """The first ``k`` columns."""
        return Candidates(self.users, self.ids[:, :k], self.scores[:, :k])

    def save(self, path: str | Path) -> None:
        atomic_save_npz(path, users=self.users, ids=self.ids, scores=self.scores)

    @classmethod
    def load(cls, path: str | Path) -> Candidates:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no candidates file; run `recsys-llm retrieve` first")
        with np.load(path, allow_pickle=False) as z:
            missing = {"users", "ids", "scores"} - set(z.files)
            if missing:
                raise ValueError(f"{path}: not a candidates file (missing {sorted(missing)})")
            return cls(z["users"], z["ids"], z["scores"])


def retrieve(index: VectorIndex, user_emb: np.ndarray, users: np.ndarray, k: int,
             seen: Sequence[np.ndarray] | None = None, batch_size: int = 4096) -> Candidates:
    """Search ``index`` with one embedding per user (row ``i`` of ``user_emb`` is ``users[i]``).

    Args:
        index: any :class:`VectorIndex`.
        user_emb: ``(n, dim)`` user embeddings.
        users: ``(n,)`` user ids, stored in the result.
        k: candidates per user.
        seen: ``n`` arrays of item ids to filter out (the user's known items); None keeps everything.
        batch_size: queries per index call (bounds the over-fetch memory).
    """
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    if len(user_emb) != len(users):
        raise ValueError(f"{len(user_emb)} user embeddings for {len(users)} users")
    if seen is not None and len(seen) != len(users):
        raise ValueError(f"{len(seen)} seen arrays for {len(users)} users")
    scores, ids = [], []
    n = len(users)
    for start in tqdm(range(0, n, batch_size), desc="retrieve", unit="batch", disable=n <= batch_size):
        sl = slice(start, start + batch_size)
        s, i = index.search(user_emb[sl], k, exclude=None if seen is None else seen[sl])
        scores.append(s)
        ids.append(i)
    if not n:
        return Candidates(users, np.empty((0, k), np.int64), np.empty((0, k), np.float32))
    return Candidates(users, np.concatenate(ids), np.concatenate(scores))
