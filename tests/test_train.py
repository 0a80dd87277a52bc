"""In-batch InfoNCE (hand-computed), training pairs, the batch sampler, and the two-tower loop on planted data."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from conftest import make_synthetic_dataset
from torch.optim.optimizer import register_optimizer_step_pre_hook

from recsys_llm.config import ConfigError, EncoderConfig, TextConfig, TrainConfig
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.losses.info_nce import in_batch_info_nce
from recsys_llm.text.templates import history_text, item_texts
from recsys_llm.train.pairs import build_pairs
from recsys_llm.train.sampler import PairBatchSampler
from recsys_llm.train.two_tower import ValidationSet, lr_factor, train_two_tower

TEXT = TextConfig(user_max_tokens=32, item_max_tokens=16)


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


def test_learnable_temperature_gets_a_gradient_through_the_loss():
    u = torch.nn.functional.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    tau = torch.tensor(0.5, requires_grad=True)
    in_batch_info_nce(u, u, tau).backward()
    assert tau.grad is not None and tau.grad.item() > 0  # a perfect match: lowering tau lowers the loss
    assert in_batch_info_nce(u, u, torch.tensor(0.5)).item() == pytest.approx(in_batch_info_nce(u, u, 0.5).item())
    with pytest.raises(ValueError, match="scalar"):
        in_batch_info_nce(u, u, torch.ones(2))


# ------------------------------------------------------------------------------------------ the batch sampler
def test_sampler_batches_have_no_repeated_item_and_depend_only_on_seed_and_index():
    rng = np.random.default_rng(0)
    items = np.where(rng.random(2000) < 0.8, 0, rng.integers(1, 40, 2000))  # item 0 is 80% of all pairs
    users = rng.integers(0, 50, 2000)
    s = PairBatchSampler(items, users, batch_size=16, seed=3)
    for b in range(300):
        batch = s.batch(b)  # (16,)
        assert batch.shape == (16,) and batch.dtype == np.int64
        assert len(np.unique(items[batch])) == 16, f"batch {b} repeats an item"
    again = PairBatchSampler(items, users, batch_size=16, seed=3)
    assert all((again.batch(b) == s.batch(b)).all() for b in (0, 7, 299))  # pure function of (seed, b)
    assert not (PairBatchSampler(items, users, 16, seed=4).batch(7) == s.batch(7)).all()
    plain = PairBatchSampler(items, users, batch_size=16, seed=3, unique_items=False)
    assert any(len(np.unique(items[plain.batch(b)])) < 16 for b in range(20))  # repeats without the option
    with pytest.raises(ValueError, match="distinct"):
        PairBatchSampler(np.array([0, 0, 1]), np.array([0, 1, 2]), batch_size=3)


def test_user_sampling_gives_each_user_an_equal_share():
    # one heavy user with 1000 pairs, nine users with 10 pairs each; every pair its own item
    users = np.concatenate([np.zeros(1000, np.int64), np.repeat(np.arange(1, 10), 10)])
    items = np.arange(len(users))
    draws = {}
    for sampling in ("pairs", "user"):
        s = PairBatchSampler(items, users, batch_size=32, seed=0, sampling=sampling, unique_items=False)
        drawn = np.concatenate(list(s.batches(0, 400)))  # (12800,)
        draws[sampling] = np.bincount(users[drawn], minlength=10) / len(drawn)
        assert s.item_probs(len(items)).sum() == pytest.approx(1.0)
    assert draws["pairs"][0] == pytest.approx(1000 / 1090, abs=0.02)  # long histories dominate
    np.testing.assert_allclose(draws["user"], 0.1, atol=0.02)  # one user in ten, whatever its history length


# --------------------------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_lr_schedules_match_transformers(schedule):
    import transformers

    make = {"linear": transformers.get_linear_schedule_with_warmup,
            "cosine": transformers.get_cosine_schedule_with_warmup,
            "constant": lambda opt, w, _total: transformers.get_constant_schedule_with_warmup(opt, w)}[schedule]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = make(opt, 3, 20)
    for step in range(25):
        assert lr_factor(schedule, step, 3, 20) == pytest.approx(ref.get_last_lr()[0], abs=1e-12), step
        opt.step()
        ref.step()


# ------------------------------------------------------------------------------------------------- the loop
def planted() -> tuple:
    """Training pairs, item texts and histories of the planted two-group data."""
    ds = make_synthetic_dataset()
    hist = [g["item"].to_numpy() for _, g in ds.interactions.groupby("user", sort=True)]
    texts = item_texts(ds.items, "title_genres")
    return build_pairs(hist, ds.items["title"].tolist(), max_items=5), texts, hist, ds.items["title"].tolist()


def tiny_encoder(path: str, dropout: bool = True) -> TwoTowerEncoder:
    enc = TwoTowerEncoder.from_config(
        EncoderConfig(backbone=path, lora_r=4, lora_dropout=0.05 if dropout else 0.0), device="cpu"
    )
    if not dropout:
        for m in enc.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    return enc


def first_gradients(enc: TwoTowerEncoder, pairs, texts, cfg: TrainConfig) -> tuple[dict, float]:
    """Gradients of every trained parameter at the first optimizer step, and the first loss."""
    grads: dict[int, list] = {}

    def hook(opt, *_):
        if not grads:
            grads[0] = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()  # None: BERT's pooler
                        for g in opt.param_groups for p in g["params"]]

    handle = register_optimizer_step_pre_hook(hook)
    try:
        result = train_two_tower(enc, pairs, texts, TEXT, cfg)
    finally:
        handle.remove()
    return grads[0], result.log[0]["loss"]


def test_grad_accumulation_and_checkpointing_give_the_big_batch_gradient(tiny_bert_path):
    """4 pairs x 2 micro-batches (gradient caching) = one batch of 8; activation checkpointing changes nothing."""
    pairs, texts, _, _ = planted()
    common = dict(max_steps=1, lr=5e-3, warmup_steps=0, log_every=1, device="cpu", learnable_temperature=True,
                  temperature=0.1)
    big, big_loss = first_gradients(tiny_encoder(tiny_bert_path, dropout=False), pairs, texts,
                                    TrainConfig(batch_size=8, **common))
    acc, acc_loss = first_gradients(tiny_encoder(tiny_bert_path, dropout=False), pairs, texts,
                                    TrainConfig(batch_size=4, grad_accum_steps=2, **common))
    enc = tiny_encoder(tiny_bert_path, dropout=False)
    ckpt, ckpt_loss = first_gradients(enc, pairs, texts, TrainConfig(batch_size=8, gradient_checkpointing=True,
                                                                     **common))
    assert not enc.model.is_activation_checkpointing  # switched off again after training
    assert len(big) == len(acc) == len(ckpt) and big[-1].shape == ()  # the last one is log(temperature)
    assert acc_loss == pytest.approx(big_loss, rel=1e-5) and ckpt_loss == pytest.approx(big_loss, rel=1e-5)
    for g_big, g_acc, g_ckpt in zip(big, acc, ckpt, strict=True):
        torch.testing.assert_close(g_acc, g_big, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(g_ckpt, g_big, rtol=1e-4, atol=1e-7)
    assert max(float(g.abs().max()) for g in big) > 1e-4  # the gradients are not all zero


def test_learnable_temperature_moves_and_cosine_schedule_is_logged(tiny_bert_path, tmp_path):
    pairs, texts, _, _ = planted()
    cfg = TrainConfig(batch_size=8, max_steps=6, lr=5e-2, warmup_steps=2, lr_schedule="cosine", log_every=1,
                      device="cpu", learnable_temperature=True, temperature=0.2, grad_accum_steps=2)
    result = train_two_tower(tiny_encoder(tiny_bert_path), pairs, texts, TEXT, cfg, out_dir=tmp_path)
    temps = [r["temperature"] for r in result.log]
    assert result.temperature == pytest.approx(temps[-1]) and abs(result.temperature - 0.2) > 1e-3
    assert all(0.01 <= t <= 1.0 for t in temps)
    lrs = [r["lr"] for r in result.log]
    assert lrs == pytest.approx([5e-2 * lr_factor("cosine", s, 2, 6) for s in range(1, 7)])
    assert lrs[1] == pytest.approx(5e-2) and lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_early_stopping_on_a_plateau_keeps_the_best_adapter(tiny_bert_path, tmp_path, caplog):
    pairs, texts, hist, titles = planted()
    # validation: each user's last item from the items before it (a tuple is accepted as well)
    valid = ([history_text(h[:-1][-5:], titles, 5) for h in hist], [h[-1:] for h in hist], [h[:-1] for h in hist])
    cfg = TrainConfig(batch_size=8, max_steps=30, lr=1e-9, warmup_steps=0, log_every=5, device="cpu",
                      eval_every=2, early_stopping_patience=2)  # lr ~ 0: the metric cannot improve
    with caplog.at_level(logging.INFO, logger="recsys_llm.train.two_tower"):
        result = train_two_tower(tiny_encoder(tiny_bert_path), pairs, texts, TEXT, cfg, out_dir=tmp_path,
                                 valid=valid)
    assert result.stopped_early and result.steps == 6 and result.best_step == 2
    assert [e["step"] for e in result.evals] == [2, 4, 6] and [e["best"] for e in result.evals] == [True, False, False]
    assert set(result.best_metrics) == {"recall@10", "ndcg@10"} and 0 <= result.best_metrics["ndcg@10"] <= 1
    assert result.log[-1]["step"] == 6 and "early stopping at step 6" in caplog.text
    lines = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [x for x in lines if "val_ndcg@10" in x] == result.evals and [x for x in lines if "loss" in x] == result.log
    best = TwoTowerEncoder.load(tmp_path / "best", device="cpu")  # a loadable encoder
    assert json.loads((tmp_path / "best" / "best.json").read_text())["step"] == 2
    assert best.adapter_sha256() is not None
    v = ValidationSet(*valid)
    assert ValidationSet.coerce(v) is v and len(ValidationSet.coerce(valid).user_texts) == len(hist)


def test_new_train_options_are_validated():
    for bad in ({"lr_schedule": "step"}, {"sampling": "items"}, {"grad_accum_steps": 0},
                {"early_stopping_patience": 2}, {"learnable_temperature": True, "temperature": 5.0},
                {"keep_checkpoints": 0}, {"checkpoint_every": -1}):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)
    assert TrainConfig(eval_every=5, early_stopping_patience=2).early_stopping_patience == 2


def test_training_without_checkpoint_dir_refuses_checkpoints(tiny_bert_path):
    pairs, texts, _, _ = planted()
    with pytest.raises(ValueError, match="out_dir"):
        train_two_tower(tiny_encoder(tiny_bert_path), pairs, texts, TEXT, TrainConfig(checkpoint_every=2))
