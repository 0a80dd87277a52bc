"""The sequence user model: the mean start, the exact fast read-out, the folded item adaptor, planted next-item
structure, an item never seen in training, persistence and its refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import user_model_checks as checks

from recsys_llm.encoder.histories import pack_histories
from recsys_llm.encoder.sequence_model import adapted_items
from recsys_llm.encoder.user_pooling import PoolingUserModel, encode_histories
from recsys_llm.encoder.user_sequence import SequenceUserModel, encode_sequences, fit_sequence


@pytest.fixture(scope="module")
def planted() -> dict:
    """200 random unit items in 32 dims; item i is always followed by item i + 1 (as for the pooling model);
    item 200 is a near copy of item 100 that no history holds (an item added after training)."""
    rng = np.random.default_rng(0)
    planted = checks.planted_chains(rng)
    copy = planted["item_emb"][100] + 0.05 * checks.unit_items(rng, 1, 32)[0]
    planted["item_emb"] = np.vstack([planted["item_emb"], copy / np.linalg.norm(copy)]).astype(np.float32)
    return planted


FIT = dict(batch_size=128, lr=3e-3, max_items=10, negatives=64, seed=0, show_progress=False)


@pytest.fixture(scope="module")
def trained(planted) -> tuple[SequenceUserModel, dict]:
    return fit_sequence(planted["item_emb"], planted["train"], steps=100, allowed_items=np.arange(200),
                        valid=planted["valid"], **FIT)


def _perturbed(**kwargs) -> SequenceUserModel:
    """A model away from its start (adaptor, positions and read-out all non-zero), in eval mode."""
    torch.manual_seed(0)
    model = SequenceUserModel(**{"dim": 8, "max_items": 6, "heads": 2, **kwargs})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


# ------------------------------------------------------------------------------------------ the model
def test_start_is_the_normalised_history_mean_and_empty_history_is_a_zero_row():
    item_emb, histories = checks.mean_start_case()
    users = encode_sequences(SequenceUserModel(dim=8, max_items=50), item_emb, histories)
    checks.assert_user_rows(users, encode_histories(PoolingUserModel(8, 50), item_emb, histories))


def test_fast_read_out_is_the_transformer_layer_at_position_zero():
    """With one layer the read-out works in item space; it must equal attention over the adapted tokens."""
    model = _perturbed()
    item = torch.nn.functional.normalize(torch.randn(20, 8), dim=-1)
    ids = torch.from_numpy(pack_histories([np.array([1, 2, 3]), np.arange(4, 12), np.array([5])], 6)[0])
    mask = ids >= 0
    hist = item[ids.clamp(min=0)]
    pos = model.position[: ids.shape[1]]
    fast = model._readout_items(hist, pos, mask)
    slow = model._readout(model.adapt_items(hist) + pos, mask)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_item_adaptor_is_folded_into_the_user_vector():
    """``forward`` returns u with ``u . e_i`` a positive multiple of ``z . a(e_i)`` (per user): the same ranking
    from the unchanged item embeddings, so the index needs no adapted items."""
    model = _perturbed()
    item = torch.nn.functional.normalize(torch.randn(20, 8), dim=-1)
    ids = torch.from_numpy(pack_histories([np.array([1, 2, 3]), np.array([7, 9])], 6)[0])
    with torch.no_grad():
        z, _ = model.state(item, ids)
        items_a = torch.from_numpy(adapted_items(model, item.numpy()))  # (n_items, dim): the item tower
        adapted = items_a @ z.T  # (n_items, b): scores through the item tower
        folded = item @ model(item, ids).T  # (n_items, b): the same scores, per-user scale aside
    assert not torch.allclose(items_a, item)  # the adaptor does change the items
    torch.testing.assert_close(folded / folded.norm(dim=0), adapted / adapted.norm(dim=0), atol=1e-5, rtol=1e-4)


def test_two_layers_run_and_every_parameter_trains():
    model = _perturbed(layers=2).train()
    item = torch.nn.functional.normalize(torch.randn(20, 8), dim=-1)
    ids = torch.from_numpy(pack_histories([np.array([1, 2, 3]), np.arange(4, 12), np.array([], np.int64)], 6)[0])
    users = model(item, ids)
    assert users.shape == (3, 8) and (users[2] == 0).all() and not torch.isnan(users).any()
    (users[:2] @ item.T).logsumexp(dim=1).sum().backward()
    for name, p in model.named_parameters():
        if name != "logit_scale":  # used by the training loss only
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_arguments_are_refused():
    items = checks.unit_items(np.random.default_rng(0), 10, 4)
    with pytest.raises(ValueError, match="dim=10 is not a multiple of heads=3"):
        SequenceUserModel(dim=10, heads=3)
    with pytest.raises(ValueError, match="dropout must be in"):
        SequenceUserModel(dim=8, dropout=1.0)
    with pytest.raises(ValueError, match="max_items=2"):
        SequenceUserModel(dim=4, max_items=2)(torch.eye(4), torch.zeros(1, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"histories\[1\] holds item id 10; ids must be in \[0, 10\)"):
        encode_sequences(SequenceUserModel(dim=4), items, [np.array([1]), np.array([10])])
    with pytest.raises(ValueError, match="negatives must be an integer >= 0"):
        fit_sequence(items, [np.array([1, 2])], steps=1, batch_size=2, lr=1e-3, max_items=3, negatives=-1, seed=0)
    with pytest.raises(ValueError, match="no training examples"):
        fit_sequence(items, [np.array([1])], steps=1, batch_size=2, lr=1e-3, max_items=3, negatives=1, seed=0)


# ------------------------------------------------------------------------------------------ training
def test_planted_next_item_structure_beats_the_history_mean(trained, planted):
    model, info = trained
    # measured: mean start 0.055, trained 1.0 (100 steps)
    assert info["valid_recall@10_mean"] < 0.15
    assert info["valid_recall@10"] > info["valid_recall@10_mean"] + 0.6
    assert info["kept"] == "trained" and info["steps"] == 100 and info["negatives"] == 64
    assert info["train_examples"] == sum(len(h) - 1 for h in planted["train"])
    # and beats mean pooling on the same users, ranked the way serving ranks (item_emb @ u)
    hists, targets = planted["valid"]
    item_emb = planted["item_emb"][:200]

    def hit_rate(users: np.ndarray) -> float:
        scores = users @ item_emb.T
        for s, h in zip(scores, hists, strict=True):
            s[h] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :10]
        return float(np.mean([t[0] in row for t, row in zip(targets, top, strict=True)]))

    seq = hit_rate(encode_sequences(model, planted["item_emb"], hists))
    mean = hit_rate(encode_histories(PoolingUserModel(32, 10), planted["item_emb"], hists))
    assert seq == pytest.approx(info["valid_recall@10"]) and seq > mean + 0.6


def test_an_item_never_seen_in_training_is_retrieved_from_its_text(trained, planted):
    """Item 200 is in no history and was never a positive or a negative; its embedding is a near copy of item
    100's. After 97, 98, 99 (100 excluded) the model's first pick is item 200."""
    model, _ = trained
    users = encode_sequences(model, planted["item_emb"], [np.array([97, 98, 99])])
    scores = planted["item_emb"] @ users[0]
    scores[[97, 98, 99, 100]] = -np.inf
    assert int(np.argmax(scores)) == 200


def test_trained_model_worse_than_the_mean_falls_back_to_it(planted, caplog):
    # each validation target is the item nearest to the history's mean: the mean finds it first
    item_emb, hists = planted["item_emb"], planted["valid"][0]
    targets = checks.mean_nearest_targets(item_emb, hists)
    with caplog.at_level("WARNING", logger="recsys_llm.encoder.user_sequence"):
        model, info = fit_sequence(item_emb, planted["train"], steps=60, valid=(hists, targets), **FIT)
    assert info["valid_recall@10_mean"] == 1.0 and info["valid_recall@10"] < 0.5
    assert info["kept"] == "mean" and "keeping the mean" in caplog.text
    np.testing.assert_allclose(encode_sequences(model, item_emb, hists),
                               encode_histories(PoolingUserModel(32, 10), item_emb, hists), atol=1e-6)


def test_fit_is_deterministic_given_the_seed(planted):
    kwargs = {**FIT, "seed": 3}
    a = checks.assert_fit_deterministic(fit_sequence, planted["item_emb"], planted["train"], steps=15, **kwargs)
    c, _ = fit_sequence(planted["item_emb"], planted["train"], steps=15, **{**kwargs, "seed": 4})
    assert not torch.equal(a.out.weight, c.out.weight)


def test_zero_steps_is_the_mean(planted):
    model, info = fit_sequence(planted["item_emb"], planted["train"][:20], steps=0, **FIT)
    assert info["kept"] == "mean" and np.isnan(info["final_loss"])
    hist = planted["train"][:1]
    np.testing.assert_allclose(encode_sequences(model, planted["item_emb"], hist),
                               checks.normalised_means(planted["item_emb"], hist), atol=1e-6)


# ------------------------------------------------------------------------------------------ persistence
def test_save_load_round_trip(trained, planted, tmp_path):
    model, info = trained
    loaded = checks.assert_round_trip(model, info, encode_sequences, planted["item_emb"], planted["valid"][0],
                                      tmp_path / "seq", stem="user_sequence")
    assert isinstance(loaded, SequenceUserModel)
    assert loaded.config() == model.config() == {"dim": 32, "max_items": 10, "heads": 2, "layers": 1,
                                                 "ff_mult": 2, "dropout": 0.1}


def _edit_json(folder, **changes) -> None:
    checks.edit_json(folder / "user_sequence.json", **changes)


def test_load_refuses_damaged_missing_or_mismatched_files(tmp_path):
    model = SequenceUserModel(dim=8, max_items=5)
    for folder in "abcde":
        model.save(tmp_path / folder)
    _edit_json(tmp_path / "a", max_items=6)
    with pytest.raises(ValueError, match="do not fit dim=8, max_items=6"):
        SequenceUserModel.load(tmp_path / "a")
    _edit_json(tmp_path / "b", format_version=99)
    with pytest.raises(ValueError, match="format_version 99"):
        SequenceUserModel.load(tmp_path / "b")
    weights = tmp_path / "c" / "user_sequence.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match="does not match the sha256"):
        SequenceUserModel.load(tmp_path / "c")
    (tmp_path / "d" / "user_sequence.json").write_text("{not json")
    with pytest.raises(ValueError, match="user_sequence.json is not valid JSON"):
        SequenceUserModel.load(tmp_path / "d")
    _edit_json(tmp_path / "e", heads=3)
    with pytest.raises(ValueError, match="user_sequence.json: dim=8 is not a multiple of heads=3"):
        SequenceUserModel.load(tmp_path / "e")
    with pytest.raises(FileNotFoundError, match=r"user_sequence.json not found.*hybrid.sequence_steps > 0"):
        SequenceUserModel.load(tmp_path / "nowhere")
    (tmp_path / "a" / "user_sequence.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="user_sequence.safetensors not found"):
        SequenceUserModel.load(tmp_path / "a")
