"""Decoder (GPT-style) backbones: tiny random Llama / Qwen2 / Mistral / Gemma / Phi-3 built from a config.

Each is saved with the MiniLM tokenizer (vocab 30522, pad id 0) and must get last-token pooling and its
LoRA targets from ``ARCHITECTURES``; Llama and Qwen2 also run three training steps and reload.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import _copy_tokenizer, make_synthetic_dataset

from recsys_llm.config import EncoderConfig, TextConfig, TrainConfig
from recsys_llm.encoder.backbone import ARCHITECTURES
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.text.templates import item_texts
from recsys_llm.train.pairs import build_pairs
from recsys_llm.train.two_tower import train_two_tower

TINY = dict(
    vocab_size=30522,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    pad_token_id=0,
)


def _config(model_type: str):
    import transformers as tf

    if model_type == "llama":
        return tf.LlamaConfig(**TINY)
    if model_type == "qwen2":
        return tf.Qwen2Config(**TINY)
    if model_type == "mistral":
        return tf.MistralConfig(**TINY)
    if model_type == "gemma":
        return tf.GemmaConfig(**TINY, head_dim=8)
    if model_type == "phi3":
        return tf.Phi3Config(**TINY)
    raise AssertionError(model_type)


@pytest.fixture(scope="module")
def decoder_path(tmp_path_factory, request) -> str:
    from transformers import AutoModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(f"tiny_{request.param}")
    AutoModel.from_config(_config(request.param)).save_pretrained(path)
    _copy_tokenizer(path)
    return str(path)


def _lora_names(enc: TwoTowerEncoder) -> set[str]:
    """Short names of the layers that got a LoRA branch."""
    return {
        n.split(".lora_A.")[0].rsplit(".", 1)[-1] for n, _ in enc.model.named_parameters() if ".lora_A." in n
    }


@pytest.mark.parametrize("decoder_path", ["llama", "qwen2", "mistral", "gemma", "phi3"], indirect=True)
def test_decoder_gets_last_pooling_and_table_targets(decoder_path):
    enc = TwoTowerEncoder.from_config(EncoderConfig(backbone=decoder_path, lora_r=4, inference_precision="fp32"), device="cpu")
    spec = ARCHITECTURES[enc.model_type]
    assert enc.pooling == "last" == spec.pooling
    assert _lora_names(enc) == set(spec.lora_target_modules)
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    texts = ["a space rocket", "", "cooking a recipe in the kitchen with a long description"]
    emb = enc.encode_items(texts, max_tokens=16, show_progress=False)  # (3, 32)
    assert emb.shape == (3, 32) and emb.dtype == np.float32 and emb.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    # right padding + last-token pooling: a text's embedding does not depend on its batch mates
    alone = enc.encode_items(texts[:1], max_tokens=16, show_progress=False)
    np.testing.assert_allclose(alone[0], emb[0], atol=1e-5)


@pytest.mark.parametrize("decoder_path", ["llama", "qwen2"], indirect=True)
def test_decoder_trains_three_steps_and_reloads(decoder_path, tmp_path):
    ds = make_synthetic_dataset(n_users=12, n_items=10, per_user=4)
    hist = [g["item"].to_numpy() for _, g in ds.interactions.groupby("user", sort=True)]
    texts = item_texts(ds.items, "title_genres")
    pairs = build_pairs(hist, ds.items["title"].tolist(), max_items=3)
    enc = TwoTowerEncoder.from_config(EncoderConfig(backbone=decoder_path, lora_r=4, inference_precision="fp32"), device="cpu")
    init_sha = enc.adapter_sha256()

    cfg = TrainConfig(batch_size=4, max_steps=3, lr=5e-3, warmup_steps=0, log_every=1, device="cpu")
    result = train_two_tower(enc, pairs, texts, TextConfig(user_max_tokens=24, item_max_tokens=12), cfg)
    assert result.steps == 3 and all(np.isfinite(r["loss"]) for r in result.log)
    assert enc.adapter_sha256() != init_sha

    enc.save(tmp_path / "enc")
    back = TwoTowerEncoder.load(tmp_path / "enc", device="cpu")
    assert (back.pooling, back.model_type) == ("last", enc.model_type)
    np.testing.assert_allclose(
        back.encode_items(texts, 12, show_progress=False),
        enc.encode_items(texts, 12, show_progress=False),
        atol=1e-5,
    )
