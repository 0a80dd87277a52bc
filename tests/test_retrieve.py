"""retrieve(): per-user search with seen items filtered; the Candidates artifact round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_llm.index.exact import ExactIndex
from recsys_llm.retrieve import Candidates, retrieve


def test_retrieve_filters_seen_and_batches(tmp_path):
    rng = np.random.default_rng(1)
    items = rng.standard_normal((50, 8)).astype(np.float32)
    users = rng.standard_normal((7, 8)).astype(np.float32)
    idx = ExactIndex(8)
    idx.add(items, np.arange(50))
    seen = [rng.choice(50, size=s, replace=False) for s in range(7)]
    full = retrieve(idx, users, np.arange(10, 17), k=5, seen=seen)
    small = retrieve(idx, users, np.arange(10, 17), k=5, seen=seen, batch_size=2)  # 4 batches, same answer
    np.testing.assert_array_equal(full.ids, small.ids)
    assert full.users.tolist() == list(range(10, 17))
    for row, s, u in zip(full.ids, seen, users, strict=True):
        assert not set(row) & set(s.tolist())
        allowed = np.setdiff1d(np.arange(50), s)
        best = allowed[np.argsort(-(items[allowed] @ u), kind="stable")[:5]]
        np.testing.assert_array_equal(row, best)
    full.save(tmp_path / "c.npz")
    back = Candidates.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.ids, full.ids)
    np.testing.assert_array_equal(back.scores, full.scores)
    assert back.top(2).ids.shape == (7, 2) and back.k == 5


def test_retrieve_bad_input():
    idx = ExactIndex(4)
    idx.add(np.eye(4), np.arange(4))
    with pytest.raises(ValueError, match="3 user embeddings for 2 users"):
        retrieve(idx, np.ones((3, 4)), np.arange(2), 2)
    with pytest.raises(ValueError, match="1 seen arrays for 2 users"):
        retrieve(idx, np.ones((2, 4)), np.arange(2), 2, seen=[np.array([0])])
    with pytest.raises(ValueError, match="need \\(n,\\), \\(n, K\\)"):
        Candidates(np.arange(2), np.zeros((3, 2)), np.zeros((3, 2)))


def test_candidates_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="recsys-llm retrieve"):
        Candidates.load(tmp_path / "none.npz")
    np.savez(tmp_path / "x.npz", users=np.arange(2))
    with pytest.raises(ValueError, match="not a candidates file"):
        Candidates.load(tmp_path / "x.npz")
