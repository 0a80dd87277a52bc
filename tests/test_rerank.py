"""Reranker contract, cross-encoder scoring/saving, hard-negative examples, losses and a training loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys_llm.config import RerankConfig
from recsys_llm.rerank.base import IdentityReranker, Reranker
from recsys_llm.rerank.cross_encoder import CrossEncoder
from recsys_llm.rerank.train import (
    build_rerank_examples,
    listwise_loss,
    pointwise_bce_loss,
    train_cross_encoder,
)


class ById(Reranker):
    def score(self, user_texts, item_texts):
        return np.array([float(t) for t in item_texts], dtype=np.float32)


ITEM_TEXTS = [str(i) for i in range(10)]


def test_rerank_reorders_head_keeps_tail_and_pads():
    ids = np.array([[1, 5, 3, 9, 2, -1], [4, 0, -1, -1, -1, -1]])
    old = np.array([[6, 5, 4, 3, 2, -np.inf], [2, 1, -np.inf, -np.inf, -np.inf, -np.inf]], dtype=np.float32)
    scores, new = ById().rerank(["a", "b"], ids, old, ITEM_TEXTS, depth=3)
    assert new.tolist() == [[5, 3, 1, 9, 2, -1], [4, 0, -1, -1, -1, -1]]
    assert scores[0, :3].tolist() == [5.0, 3.0, 1.0] and scores[0, 3] == 3.0  # tail keeps retriever score
    scores, new = IdentityReranker().rerank(["a", "b"], ids, old, ITEM_TEXTS, depth=3)
    np.testing.assert_array_equal(new, ids)


def test_rerank_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        ById().rerank(["a"], np.array([1, 2]), np.array([1.0, 2.0]), ITEM_TEXTS)
    with pytest.raises(ValueError, match="1 user texts for 2 candidate rows"):
        ById().rerank(["a"], np.zeros((2, 2), int), np.zeros((2, 2)), ITEM_TEXTS)
    with pytest.raises(ValueError, match="outside item_texts"):
        ById().rerank(["a"], np.array([[42]]), np.zeros((1, 1)), ITEM_TEXTS)


@pytest.fixture(scope="module")
def cross_encoder(tiny_bert_path):
    cfg = RerankConfig(max_tokens=32, lora_r=4, score_batch_size=3, batch_size=4, negatives=3, max_steps=30,
                       lr=5e-3)
    return CrossEncoder.from_config(tiny_bert_path, cfg, device="cpu")


def test_cross_encoder_scores_batched_like_unbatched_and_round_trips(cross_encoder, tmp_path):
    users = ["Alien; Star Wars; Blade Runner " * 4, "Toy Story", "Heat"] * 2
    items = ["Aliens (1986). Sci-Fi.", "Up (2009). Animation. " * 10, "Ronin", "Cars", "Jaws", "Big"]
    scores = cross_encoder.score(users, items)  # batches of 3, sorted by length
    assert scores.shape == (6,) and scores.dtype == np.float32
    one_by_one = np.array([cross_encoder.score([u], [i])[0] for u, i in zip(users, items, strict=True)])
    np.testing.assert_allclose(scores, one_by_one, atol=1e-5)
    cross_encoder.save(tmp_path / "ce")
    (tmp_path / "ce" / "rerank_log.jsonl").write_text("{}\n")
    cross_encoder.save(tmp_path / "ce")  # re-save keeps files that are not ours
    assert (tmp_path / "ce" / "rerank_log.jsonl").exists()
    again = CrossEncoder.load(tmp_path / "ce", device="cpu")
    np.testing.assert_allclose(again.score(users, items), scores, atol=1e-5)


def test_cross_encoder_truncates_user_side_first(cross_encoder):
    items, lengths = cross_encoder.pairs.prepare(["word " * 200], ["Short item"])
    assert items == ["Short item"] and lengths[0] == 32  # the user text was cut, the item kept
    items, _ = cross_encoder.pairs.prepare(["u"], ["long " * 200])
    assert len(cross_encoder.tokenizer(items[0], add_special_tokens=False)["input_ids"]) < 32


def test_load_missing_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="rerank train"):
        CrossEncoder.load(tmp_path)


def test_examples_never_use_known_items_as_negatives():
    cfg = RerankConfig(negatives=3, negative_pool=6, skip_top=1)
    cands = np.array([[9, 1, 2, 3, 4, 5, 6], [0, 1, -1, -1, -1, -1, -1]])
    ex = build_rerank_examples(["a", "b"], np.array([2, 7]), cands, [np.array([3]), np.array([])], cfg,
                               n_items=10)
    assert ex.negatives.shape == (2, 3)
    assert set(ex.negatives[0]) <= {1, 4, 5}  # pool cols 1..5 minus positive 2 and known 3; top skipped
    assert 1 in ex.negatives[1] and 7 not in ex.negatives[1] and len(set(ex.negatives[1])) == 3  # topped up


def test_losses_match_hand_computation():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    assert listwise_loss(logits).item() == pytest.approx(-2 + math.log(math.exp(2) + 2))
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = -(math.log(sig(2.0)) + 2 * math.log(1 - sig(0.0))) / 3
    assert pointwise_bce_loss(logits).item() == pytest.approx(want)


def test_training_learns_a_planted_preference(tiny_bert_path, tmp_path):
    """Users who 'like red' must come to score red items above blue ones."""
    cfg = RerankConfig(max_tokens=24, lora_r=4, batch_size=8, negatives=3, max_steps=40, lr=1e-2, seed=0)
    model = CrossEncoder.from_config(tiny_bert_path, cfg, device="cpu")
    item_texts = [f"red thing {i}" for i in range(6)] + [f"blue thing {i}" for i in range(6)]
    users = [f"likes red {i}" for i in range(16)]
    positives = np.arange(16) % 6  # a red item
    negatives = np.stack([6 + (np.arange(3) + i) % 6 for i in range(16)])  # blue items
    cands = np.concatenate([negatives, negatives], axis=1)
    ex = build_rerank_examples(users, positives, cands, [np.array([])] * 16, cfg)
    pairs_u = users[:4] * 2
    pairs_i = item_texts[:4] + item_texts[6:10]
    before = model.score(pairs_u, pairs_i)
    result = train_cross_encoder(model, ex, item_texts, cfg, device="cpu", out_dir=tmp_path)
    after = model.score(pairs_u, pairs_i)
    assert result.log[-1]["loss"] < 0.5 * result.log[0]["loss"]
    assert (after[:4].min() > after[4:].max()) and not (before[:4].min() > before[4:].max())
    assert (tmp_path / "rerank_log.jsonl").read_text().count("\n") == len(result.log)


def test_reorder_fuses_retrieval_and_reranker_scores():
    from recsys_llm.rerank.base import reorder

    ids = np.array([[7, 8, 9, -1]])
    ret = np.array([[3.0, 2.0, 1.0, -np.inf]], dtype=np.float32)
    ce = np.array([[0.0, 1.0, 5.0, np.nan]], dtype=np.float32)
    assert reorder(ids, ret, ce, depth=3, weight=1.0)[1].tolist() == [[9, 8, 7, -1]]
    assert reorder(ids, ret, ce, depth=3, weight=0.0)[1].tolist() == [[7, 8, 9, -1]]  # retriever order back
    # z(ret) = [1.225, 0, -1.225], z(ce) = [-0.926, -0.463, 1.389]: w=0.3 -> [0.580, -0.139, -0.441]
    s, got = reorder(ids, ret, ce, depth=3, weight=0.3)
    assert got.tolist() == [[7, 8, 9, -1]] and s[0, 0] == pytest.approx(0.7 * 1.2247 - 0.3 * 0.9258, abs=1e-3)
    assert reorder(ids, ret, ce, depth=3, weight=0.6)[1].tolist() == [[9, 7, 8, -1]]
    assert reorder(ids, ret, ce, depth=2, weight=1.0)[1].tolist() == [[8, 7, 9, -1]]  # 9 is beyond the depth
    with pytest.raises(ValueError, match="finite for every real candidate of the first 3"):
        reorder(ids, ret, np.array([[0.0, 1.0, np.nan, np.nan]], dtype=np.float32), depth=3)
    with pytest.raises(ValueError, match=r"weight=1.5"):
        reorder(ids, ret, ce, weight=1.5)


def test_scoring_once_deep_gives_every_shallower_rerank():
    from recsys_llm.rerank.base import reorder

    rng = np.random.default_rng(0)
    ids = np.stack([rng.permutation(10) for _ in range(4)])
    ret = -np.sort(-rng.random((4, 10)), axis=1).astype(np.float32)
    deep = ById().score_candidates(["u"] * 4, ids, ITEM_TEXTS, depth=8)
    assert np.isnan(deep[:, 8:]).all() and np.isfinite(deep[:, :8]).all()
    for d in (2, 5, 8):
        np.testing.assert_array_equal(reorder(ids, ret, deep, depth=d)[1],
                                      ById().rerank(["u"] * 4, ids, ret, ITEM_TEXTS, depth=d)[1])


def test_validation_tracks_ndcg_and_keeps_the_best_weights(tiny_bert_path, tmp_path):
    from recsys_llm.rerank.train import RerankValidation

    cfg = RerankConfig(max_tokens=24, lora_r=4, batch_size=8, negatives=3, max_steps=12, lr=1e-2, seed=0,
                       depth=4, eval_every=4)
    model = CrossEncoder.from_config(tiny_bert_path, cfg, device="cpu")
    item_texts = [f"red thing {i}" for i in range(6)] + [f"blue thing {i}" for i in range(6)]
    users = [f"likes red {i}" for i in range(16)]
    ex = build_rerank_examples(users, np.arange(16) % 6, np.stack([6 + (np.arange(6) + i) % 6 for i in range(16)]),
                               [np.array([])] * 16, cfg)
    # validation: the retriever put the red target last of 4 (blue first): NDCG@10 = 1/log2(5)
    vids = np.array([[6, 7, 8, i] for i in range(4)])
    valid = RerankValidation([f"likes red v{i}" for i in range(4)], [np.array([i]) for i in range(4)], vids,
                             np.tile(np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32), (4, 1)))
    assert valid.ndcg(valid.cand_ids) == pytest.approx(1 / math.log2(5))
    result = train_cross_encoder(model, ex, item_texts, cfg, device="cpu", out_dir=tmp_path, valid=valid)
    vals = [r for r in result.log if "val_ndcg@10" in r]
    assert [r["step"] for r in vals] == [4, 8, 12]
    assert result.log[0] == {"step": 0, "val_retrieval_ndcg@10": pytest.approx(1 / math.log2(5))}
    best = max(vals, key=lambda r: r["val_ndcg@10"])
    assert result.best_step == best["step"] and best["best"]
    assert valid.grid(model, item_texts, [4], [1.0])[(4, 1.0)] == pytest.approx(best["val_ndcg@10"], abs=1e-6)
    assert best["val_ndcg@10"] > 1 / math.log2(5)  # it learned to lift the red item


def test_prefix_examples_use_training_data_only():
    from recsys_llm.stages.rerank import prefix_examples as _prefix_examples

    hist = [np.array([5, 6, 7, 8]), np.array([1]), np.array([2, 3])]
    users, cut = _prefix_examples(hist, per_user=1, seed=0)
    assert users.tolist() == [0, 2] and cut.tolist() == [3, 1]  # last training item, after the rest
    users, cut = _prefix_examples(hist, per_user=3, seed=0)
    assert users.tolist() == [0, 0, 0, 2] and cut[:3].max() == 3 and len(set(cut[:3].tolist())) == 3
    assert (cut >= 1).all()  # at least one item of history before every positive
