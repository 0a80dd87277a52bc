"""In-batch InfoNCE (hand-computed), training pairs, and the two-tower loop on planted synthetic data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import make_synthetic_dataset

from recsys_llm.config import EncoderConfig, TextConfig, TrainConfig
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.losses.info_nce import in_batch_info_nce
from recsys_llm.text.templates import item_texts
from recsys_llm.train.pairs import build_pairs
from recsys_llm.train.two_tower import train_two_tower


def ce(row: list[float], target: int) -> float:
    return -row[target] + math.log(sum(math.exp(x) for x in row))


def test_info_nce_2x2_by_hand():
    eye = torch.eye(2)
    # logits = I / 0.5 = [[2, 0], [0, 2]]: each row is -log(e^2 / (e^2 + 1))
    expected = math.log(1 + math.exp(-2))
    assert in_batch_info_nce(eye, eye, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_3x3_by_hand():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    # u @ v.T = [[1, 1, 0], [0, 0, 2], [1, 1, 2]]
    logits = [[1, 1, 0], [0, 0, 2], [1, 1, 2]]
    expected = sum(ce(row, i) for i, row in enumerate(logits)) / 3
    assert in_batch_info_nce(u, v, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)


def test_duplicate_positive_is_not_a_negative():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    ids = torch.tensor([5, 5, 7])  # rows 0 and 1 share their positive item
    # row 0 drops column 1, row 1 drops column 0; row 2 (item 7) keeps all three columns
    masked = [[1, 0], [0, 2], [1, 1, 2]]
    expected = (ce(masked[0], 0) + ce(masked[1], 0) + ce(masked[2], 2)) / 3
    got = in_batch_info_nce(u, v, temperature=1.0, item_ids=ids).item()
    assert got == pytest.approx(expected, rel=1e-6)
    assert got < in_batch_info_nce(u, v, temperature=1.0).item()


def test_logq_correction_by_hand():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    log_q = torch.log(torch.tensor([0.5, 0.25, 0.25]))  # column j's logits lose log q_j
    logits = [[1, 1, 0], [0, 0, 2], [1, 1, 2]]
    corrected = [[x - math.log(q) for x, q in zip(row, (0.5, 0.25, 0.25), strict=True)] for row in logits]
    expected = sum(ce(row, i) for i, row in enumerate(corrected)) / 3
    assert in_batch_info_nce(u, v, 1.0, log_q=log_q).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="log_q"):
        in_batch_info_nce(u, v, 1.0, log_q=log_q[:2])


def test_info_nce_rejects_bad_shapes():
    with pytest.raises(ValueError, match="batch, dim"):
        in_batch_info_nce(torch.zeros(3, 2), torch.zeros(2, 2), 0.1)
    with pytest.raises(ValueError, match="item_ids"):
        in_batch_info_nce(torch.zeros(3, 2), torch.zeros(3, 2), 0.1, item_ids=torch.zeros(2))


def test_build_pairs_by_hand():
    hist = [np.array([0, 1, 2, 3]), np.array([4]), np.array([5, 6])]
    titles = ["a", "b", "c", "d", "e", "f", "g"]
    p = build_pairs(hist, titles, max_items=2)
    assert p.user_texts == ["a", "b; a", "c; b", "f"]
    assert p.pos_items.tolist() == [1, 2, 3, 6] and p.users.tolist() == [0, 0, 0, 2]
    assert p.pos_items.dtype == np.int64 and p.users.dtype == np.int64
    p = build_pairs(hist, titles, max_items=2, min_history=2)
    assert (p.user_texts, p.pos_items.tolist()) == (["b; a", "c; b"], [2, 3])
    p = build_pairs(hist, titles, max_items=3, pairs_per_user=1)
    assert (p.user_texts, p.pos_items.tolist(), p.users.tolist()) == (["c; b; a", "f"], [3, 6], [0, 2])
    with pytest.raises(ValueError):
        build_pairs(hist, titles, max_items=2, min_history=-1)


def same_group_auc(enc: TwoTowerEncoder, user_texts: list[str], users: np.ndarray, texts: list[str]) -> float:
    """How often a user scores a same-parity item above an other-parity item (0.5 = chance)."""
    scores = (
        enc.encode_users(user_texts, 32, show_progress=False)
        @ enc.encode_items(texts, 16, show_progress=False).T
    )  # (users, items)
    group = np.arange(len(texts)) % 2
    fr = [
        (row[group == u % 2][:, None] > row[group != u % 2][None, :]).mean()
        for row, u in zip(scores, users, strict=True)
    ]
    return float(np.mean(fr))


def test_training_learns_the_planted_groups(tiny_bert_path, tmp_path):
    ds = make_synthetic_dataset()
    hist = [g["item"].to_numpy() for _, g in ds.interactions.groupby("user", sort=True)]
    texts = item_texts(ds.items, "title_genres")
    pairs = build_pairs(hist, ds.items["title"].tolist(), max_items=5)
    enc = TwoTowerEncoder.from_config(EncoderConfig(backbone=tiny_bert_path, lora_r=8), device="cpu")
    probe = slice(0, len(pairs), 7)
    before = same_group_auc(enc, pairs.user_texts[probe], pairs.users[probe], texts)

    cfg = TrainConfig(batch_size=8, max_steps=30, lr=5e-3, warmup_steps=2, log_every=5, device="cpu")
    result = train_two_tower(
        enc, pairs, texts, TextConfig(user_max_tokens=32, item_max_tokens=16), cfg, out_dir=tmp_path
    )
    after = same_group_auc(enc, pairs.user_texts[probe], pairs.users[probe], texts)

    assert result.steps == 30 and [r["step"] for r in result.log] == [5, 10, 15, 20, 25, 30]
    lines = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert lines == result.log and set(lines[0]) == {"step", "loss", "lr", "seconds"}
    # chance is log(8) = 2.08; with ~4 same-group items per batch of 8 the floor is about log(4) = 1.39
    assert result.final_loss < result.log[0]["loss"] - 0.2 and result.final_loss < 1.65
    assert after > max(before, 0.95)
    assert not enc.training and enc.device.type == "cpu"
