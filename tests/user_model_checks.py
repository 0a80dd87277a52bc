"""Data and checks shared by the history user models' tests (tests/test_user_pooling.py, test_user_sequence.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

Encode = Callable[[Any, np.ndarray, list[np.ndarray]], np.ndarray]
"""``encode_histories`` or ``encode_sequences``: ``(model, item_emb, histories) -> (n_users, dim)``."""


def unit_items(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """``n`` random unit rows, float32 ``(n, dim)``."""
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def chains(n_items: int, n_users: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Histories s, s+1, ..., s+n-1 (mod n_items) of length 3-10; the target is the next item s+n."""
    rng = np.random.default_rng(seed)
    hists, targets = [], []
    for _ in range(n_users):
        start, n = int(rng.integers(n_items)), int(rng.integers(3, 11))
        seq = (start + np.arange(n + 1)) % n_items
        hists.append(seq[:-1].astype(np.int64))
        targets.append(seq[-1:].astype(np.int64))
    return hists, targets


def planted_chains(rng: np.random.Generator) -> dict:
    """200 random unit items in 32 dims (drawn from ``rng``); item i is always followed by item i + 1:
    ``{"item_emb", "train"`` (400 histories), ``"valid"`` (200 ``(histories, targets)``)}."""
    item_emb = unit_items(rng, 200, 32)
    train, _ = chains(200, 400, seed=1)
    valid = chains(200, 200, seed=2)
    return {"item_emb": item_emb, "train": train, "valid": valid}


def mean_start_case() -> tuple[np.ndarray, list[np.ndarray]]:
    """``(item_emb, histories)``: 30 unit items in 8 dims; histories of 1, 4, 7 and 12 items, then an empty one."""
    rng = np.random.default_rng(0)
    item_emb = unit_items(rng, 30, 8)
    histories = [rng.integers(0, 30, size=n) for n in (1, 4, 7, 12)] + [np.array([], np.int64)]
    return item_emb, histories


def assert_user_rows(users: np.ndarray, expected: np.ndarray) -> None:
    """``users`` is float32 C-contiguous, finite, close to ``expected``, and its last row (an empty history) is
    exactly zero."""
    assert users.shape == expected.shape and users.dtype == np.float32 and users.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(users, expected, atol=1e-6)
    np.testing.assert_array_equal(users[-1], 0.0)
    assert np.isfinite(users).all()


def normalised_means(item_emb: np.ndarray, hists: list[np.ndarray]) -> np.ndarray:
    """Per history, the normalised mean of its item embeddings (a zero row for an empty history): what the
    untrained models give."""
    rows = np.zeros((len(hists), item_emb.shape[1]), dtype=np.float32)
    for u, h in enumerate(hists):
        if len(h):
            mean = item_emb[h].mean(axis=0)
            rows[u] = mean / np.linalg.norm(mean)
    return rows


def mean_nearest_targets(item_emb: np.ndarray, hists: list[np.ndarray]) -> list[np.ndarray]:
    """Per history, the item nearest to its mean (history items excluded): the history mean finds each first,
    a learned next-item model looks elsewhere."""
    targets = []
    for h in hists:
        scores = item_emb @ item_emb[h].mean(axis=0)
        scores[h] = -np.inf
        targets.append(np.array([np.argmax(scores)]))
    return targets


def assert_fit_deterministic(fit: Callable[..., tuple[Any, dict]], *args: Any, **kwargs: Any) -> Any:
    """Two equal calls of ``fit`` give the same final loss and the same weights; returns the first model."""
    a, info_a = fit(*args, **kwargs)
    b, info_b = fit(*args, **kwargs)
    assert info_a["final_loss"] == info_b["final_loss"]
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    return a


def assert_round_trip(model: Any, info: dict, encode: Encode, item_emb: np.ndarray, hists: list[np.ndarray],
                      folder: Path, stem: str) -> Any:
    """Save ``model`` with metadata into ``folder`` and load it back: in eval mode, the metadata kept, the same
    users (``hists`` and an empty history), exactly ``<stem>.json`` and ``<stem>.safetensors`` written.
    Returns the loaded model."""
    model.save(folder, metadata={"item_emb_fingerprint": "abc", "fit": info})
    loaded = type(model).load(folder)
    assert loaded.metadata["item_emb_fingerprint"] == "abc" and not loaded.training
    hists = hists + [np.array([], np.int64)]
    np.testing.assert_array_equal(encode(loaded, item_emb, hists), encode(model, item_emb, hists))
    assert sorted(p.name for p in folder.iterdir()) == [f"{stem}.json", f"{stem}.safetensors"]
    return loaded


def edit_json(path: Path, **changes: Any) -> None:
    """Overwrite keys of the JSON object in ``path``."""
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))
