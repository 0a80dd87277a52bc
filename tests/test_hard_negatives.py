"""Lexical hard negatives: the neighbour table, the seeded draw, the loss with extra columns, and training with them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_synthetic_dataset

from recsys_llm.config import ConfigError, EncoderConfig, TextConfig, TrainConfig
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.losses.info_nce import in_batch_info_nce
from recsys_llm.text.templates import item_texts
from recsys_llm.train import checkpoint as ckpt_mod
from recsys_llm.train import step as step_mod
from recsys_llm.train.hard_negatives import HardNegativeSampler, expected_counts, lexical_neighbours
from recsys_llm.train.pairs import build_pairs
from recsys_llm.train.sampler import PairBatchSampler
from recsys_llm.train.two_tower import train_two_tower

TEXT = TextConfig(user_max_tokens=32, item_max_tokens=16)
CATALOGUE = [
    "acme x100 camera",
    "zeta x100 strap",
    "acme camera",
    "acme camera bag",
    "zeta camera lens",
    "acme camera case",
    "nova camera",
    "red apple pie",
    "green apple",
    "acme digital camera",
]


def ce(row: list[float], target: int) -> float:
    return -row[target] + math.log(sum(math.exp(x) for x in row if x != -math.inf))


# ------------------------------------------------------------------------------------------- neighbour table
def test_neighbour_table_links_items_that_share_rare_words():
    nb = lexical_neighbours(CATALOGUE, m=3)  # (10, 3)
    assert nb.shape == (10, 3) and nb.dtype == np.int64
    assert nb[0].tolist() == [1, 2, 3]  # the rare "x100" outweighs the common "acme" and "camera" together
    assert nb[1, 0] == 0 and nb[7, 0] == 8
    assert nb[8].tolist() == [7, -1, -1]  # one item shares a word with "green apple": the rest is -1
    assert all(i not in row for i, row in enumerate(nb))  # never the item itself
    allowed = np.ones(10, dtype=bool)
    allowed[1] = False  # e.g. a cold item: nobody's neighbour, but it has neighbours of its own
    nb2 = lexical_neighbours(CATALOGUE, m=3, allowed=allowed)
    assert 1 not in nb2 and nb2[0].tolist() == [2, 3, 5] and nb2[1, 0] == 0
    with pytest.raises(ValueError, match="allowed"):
        lexical_neighbours(CATALOGUE, m=3, allowed=np.ones(3, dtype=bool))


def test_expected_counts_follow_the_neighbour_table():
    nb = np.array([[1, 2], [0, -1], [-1, -1]])
    q = np.array([0.5, 0.3, 0.2])
    # n=1: item 0's draw is 1 or 2 (each 1/2), item 1's is 0 for sure, item 2 has none
    np.testing.assert_allclose(expected_counts(nb, q, 1), [0.3, 0.25, 0.25])
    np.testing.assert_allclose(expected_counts(nb, q, 2), [0.3, 0.5, 0.5])  # both of item 0's


# -------------------------------------------------------------------------------------------------- the draw
def random_setup(seed: int = 0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(25)]
    texts = [" ".join(rng.choice(words, size=4, replace=False)) for _ in range(60)]
    histories = [rng.choice(60, size=rng.integers(3, 20), replace=False) for _ in range(30)]
    return texts, histories


def test_hard_negatives_never_include_the_positive_or_the_users_history():
    texts, histories = random_setup()
    s = HardNegativeSampler.fit(texts, histories, n=3, pool=10, seed=7)
    held = np.unique(np.concatenate(histories))
    assert np.isin(s.neighbours[s.neighbours >= 0], held).all()  # only items some training history holds
    rng = np.random.default_rng(1)
    drawn = masked = 0
    for b in range(50):
        users = rng.choice(30, size=8, replace=False)
        pos = np.array([rng.choice(histories[u]) for u in users])
        negs = s.draw(b, pos, users)  # (8, 3)
        assert negs.shape == (8, 3) and negs.dtype == np.int64
        valid = negs[negs >= 0]
        drawn += len(valid)
        assert len(np.unique(valid)) == len(valid) and not np.isin(valid, pos).any()  # one column per item
        for r, u in enumerate(users):
            row = negs[r][negs[r] >= 0]
            assert not np.isin(row, histories[u]).any() and np.isin(row, s.neighbours[pos[r]]).all()
        mask = s.false_negatives(users, valid)  # (8, m)
        want = np.array([[v in set(histories[u].tolist()) for v in valid] for u in users]).reshape(
            8, len(valid)
        )
        np.testing.assert_array_equal(mask, want)
        masked += int(mask.sum())
    assert drawn > 0.6 * 50 * 8 * 3 and masked > 0  # most slots are filled; other users hold some of them
    again = HardNegativeSampler.fit(texts, histories, n=3, pool=10, seed=7)
    assert all((again.draw(b, pos, users) == s.draw(b, pos, users)).all() for b in (0, 13, 49))  # (seed, b)
    other = HardNegativeSampler.fit(texts, histories, n=3, pool=10, seed=8)
    assert not (other.draw(13, pos, users) == s.draw(13, pos, users)).all()


# ------------------------------------------------------------------------------------------------- the loss
def test_info_nce_with_hard_negative_columns_by_hand():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    n = torch.tensor(
        [[0.6, 0.8], [0.8, 0.6], [1.0, 0.0]]
    )  # the last is row 0's positive again: masked for it
    mask = torch.tensor([[False, False, False], [True, False, False]])  # neg 0 is in user 1's history
    got = in_batch_info_nce(
        u, v, 1.0, torch.tensor([10, 11]), neg_emb=n, neg_ids=torch.tensor([12, 13, 10]), neg_mask=mask
    )
    row0 = [1.0, 0.0, 0.6, 0.8, -math.inf]
    row1 = [0.0, 1.0, -math.inf, 0.6, 0.0]
    assert got.item() == pytest.approx((ce(row0, 0) + ce(row1, 1)) / 2, rel=1e-6)
    log_q = torch.tensor([0.1, 0.2])
    neg_log_q = torch.tensor([0.3, 0.4, 0.1])
    got_q = in_batch_info_nce(u, v, 1.0, log_q=log_q, neg_emb=n, neg_log_q=neg_log_q)
    lq = [0.1, 0.2, 0.3, 0.4, 0.1]
    rows = [
        [s - q for s, q in zip(r, lq, strict=True)]
        for r in ([1.0, 0.0, 0.6, 0.8, 1.0], [0.0, 1.0, 0.8, 0.6, 0.0])
    ]
    assert got_q.item() == pytest.approx((ce(rows[0], 0) + ce(rows[1], 1)) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="neg_log_q"):
        in_batch_info_nce(u, v, 1.0, log_q=log_q, neg_emb=n)
    with pytest.raises(ValueError, match="neg_mask"):
        in_batch_info_nce(u, v, 1.0, neg_emb=n, neg_mask=mask[:, :2])
    with pytest.raises(ValueError, match="need neg_emb"):
        in_batch_info_nce(u, v, 1.0, neg_ids=torch.tensor([1]))


# -------------------------------------------------------------------------------------------------- training
def planted():
    ds = make_synthetic_dataset()
    hist = [g["item"].to_numpy() for _, g in ds.interactions.groupby("user", sort=True)]
    return build_pairs(hist, ds.items["title"].tolist(), max_items=5), item_texts(ds.items, "title_genres")


def tiny_encoder(path: str) -> TwoTowerEncoder:
    enc = TwoTowerEncoder.from_config(EncoderConfig(backbone=path, lora_r=4, lora_dropout=0.0), device="cpu")
    for m in enc.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return enc


def record_widths(monkeypatch) -> list[tuple[int, int]]:
    """(rows, columns) of every loss matrix the training step builds."""
    widths: list[tuple[int, int]] = []
    loss = step_mod.in_batch_info_nce

    def spy(user_emb, item_emb, *args, **kwargs):
        neg = kwargs.get("neg_emb")
        widths.append((user_emb.shape[0], item_emb.shape[0] + (0 if neg is None else neg.shape[0])))
        return loss(user_emb, item_emb, *args, **kwargs)

    monkeypatch.setattr(step_mod, "in_batch_info_nce", spy)
    return widths


def hard_config(**fields) -> TrainConfig:
    """A tiny training run with 2 hard negatives per example from a pool of 6."""
    return TrainConfig(batch_size=8, lr=5e-3, warmup_steps=0, log_every=1, device="cpu", hard_negatives=2,
                       hard_negative_pool=6, **fields)


def test_training_with_hard_negatives_is_deterministic_and_widens_the_loss(tiny_bert_path, monkeypatch):
    pairs, texts = planted()
    cfg = hard_config(max_steps=3)
    widths = record_widths(monkeypatch)
    first = train_two_tower(tiny_encoder(tiny_bert_path), pairs, texts, TEXT, cfg)
    # the expected width: 8 positives + the distinct valid hard negatives the seeded draw gives each batch
    sampler = PairBatchSampler(pairs.pos_items, pairs.users, 8, cfg.seed)
    hard = HardNegativeSampler.fit(texts, pairs.histories, 2, 6, cfg.seed)
    want = []
    for b in range(3):
        idx = sampler.batch(b)
        want.append((8, 8 + int((hard.draw(b, pairs.pos_items[idx], pairs.users[idx]) >= 0).sum())))
    assert widths == want and all(w > 8 for _, w in want)
    assert all(np.isfinite(r["loss"]) for r in first.log)

    widths.clear()  # same seed: the same losses; the same batch in two micro-batches: the same loss matrix
    again = train_two_tower(tiny_encoder(tiny_bert_path), pairs, texts, TEXT, cfg)
    assert [r["loss"] for r in again.log] == [r["loss"] for r in first.log]
    accum = TrainConfig(**{**cfg.__dict__, "batch_size": 4, "grad_accum_steps": 2})
    widths.clear()
    split = train_two_tower(tiny_encoder(tiny_bert_path), pairs, texts, TEXT, accum)
    assert split.log[0]["loss"] == pytest.approx(first.log[0]["loss"], rel=1e-5)
    assert widths == want  # gradient caching: one loss over the whole batch per step
    other = train_two_tower(
        tiny_encoder(tiny_bert_path), pairs, texts, TEXT, TrainConfig(**{**cfg.__dict__, "seed": 1})
    )
    assert [r["loss"] for r in other.log] != [r["loss"] for r in first.log]


def test_resumed_run_with_hard_negatives_matches_the_uninterrupted_one(tiny_bert_path, tmp_path, monkeypatch):
    pairs, texts = planted()
    cfg = hard_config(max_steps=4, checkpoint_every=2)
    save_file = ckpt_mod.save_file

    def failing_save(tensors, path, *args, **kwargs):
        if "step-000004" in str(Path(path).parent):
            raise OSError("disk full (simulated)")
        return save_file(tensors, path, *args, **kwargs)

    monkeypatch.setattr(ckpt_mod, "save_file", failing_save)
    with pytest.raises(OSError, match="simulated"):
        train_two_tower(tiny_encoder(tiny_bert_path), pairs, texts, TEXT, cfg, out_dir=tmp_path / "run")
    monkeypatch.undo()
    resumed = train_two_tower(
        tiny_encoder(tiny_bert_path), pairs, texts, TEXT, cfg, out_dir=tmp_path / "run", resume=True
    )
    ref = train_two_tower(tiny_encoder(tiny_bert_path), pairs, texts, TEXT, cfg, out_dir=tmp_path / "ref")
    assert resumed.resumed_from == 2
    assert [r["loss"] for r in resumed.log] == pytest.approx([r["loss"] for r in ref.log], rel=1e-5)
    with pytest.raises(ValueError, match="hard_negatives"):  # another number of hard negatives: another run
        train_two_tower(
            tiny_encoder(tiny_bert_path),
            pairs,
            texts,
            TEXT,
            TrainConfig(**{**cfg.__dict__, "hard_negatives": 1}),
            out_dir=tmp_path / "run",
            resume=True,
        )


def test_hard_negative_options_are_validated():
    with pytest.raises(ConfigError, match=r"train\.hard_negatives=-1 is invalid: must be an integer >= 0"):
        TrainConfig(hard_negatives=-1)
    with pytest.raises(
        ConfigError,
        match=r"train\.hard_negative_pool=3 is invalid: must be >= 1 and >= "
        r"train\.hard_negatives \(5\)",
    ):
        TrainConfig(hard_negatives=5, hard_negative_pool=3)
    with pytest.raises(ConfigError, match="hard_negatives"):
        TrainConfig(hard_negatives=1.5)
    assert TrainConfig(hard_negatives=4).hard_negative_pool == 20
