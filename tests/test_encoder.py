"""TwoTowerEncoder on tiny random BERT / GPT-2 (one slow test on the real MiniLM)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys_llm.config import EncoderConfig
from recsys_llm.encoder.backbone import pool
from recsys_llm.encoder.model import TwoTowerEncoder

TEXTS = [
    "Toy Story (1995). Genres: Animation, Comedy.",
    "Heat",
    "",
    "a much longer text about space rockets " * 3,
    "Casino (1995); Heat (1995); Toy Story (1995)",
]


def make(path: str, lora: bool = True) -> TwoTowerEncoder:
    return TwoTowerEncoder.from_config(
        EncoderConfig(backbone=path, lora_r=4, lora_alpha=8, inference_precision="fp32"), lora=lora, device="cpu"
    )


def perturb_lora(enc: TwoTowerEncoder, seed: int = 1) -> None:
    """LoRA B starts at zero (adapter = identity); give it weights as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


@pytest.fixture(scope="module")
def bert(tiny_bert_path) -> TwoTowerEncoder:
    return make(tiny_bert_path)


def test_architecture_table_picks_pooling(bert, tiny_gpt2_path):
    assert (bert.pooling, bert.model_type, bert.dim) == ("mean", "bert", 32)
    gpt2 = make(tiny_gpt2_path)
    assert (gpt2.pooling, gpt2.model_type) == ("last", "gpt2")


def test_only_lora_parameters_are_trainable(bert):
    trainable = [n for n, p in bert.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert sum(p.numel() for p in bert.parameters() if p.requires_grad) < 0.1 * sum(
        p.numel() for p in bert.parameters()
    )


def test_encode_items_contract(bert):
    emb = bert.encode_items(TEXTS, max_tokens=16, batch_size=2, show_progress=False)
    assert emb.shape == (len(TEXTS), 32) and emb.dtype == np.float32 and emb.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert bert.encode_users([], max_tokens=16, show_progress=False).shape == (0, 32)


def test_embed_has_gradients_and_matches_encode(bert):
    emb = bert.embed(TEXTS[:2], max_tokens=16)  # (2, dim)
    assert emb.requires_grad and emb.shape == (2, 32)
    bert.eval()
    np.testing.assert_allclose(
        bert.embed(TEXTS[:2], 16).detach().numpy(),
        bert.encode_users(TEXTS[:2], 16, show_progress=False),
        atol=1e-6,
    )


def test_order_restored_despite_length_sorting(bert):
    batched = bert.encode_users(TEXTS, max_tokens=24, batch_size=3, show_progress=False)
    single = np.concatenate([bert.encode_users([t], max_tokens=24, show_progress=False) for t in TEXTS])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert not np.allclose(batched[0], batched[1])


def test_zero_shot_is_the_base_model_and_differs_once_adapted(tiny_bert_path):
    from transformers import AutoModel

    enc = make(tiny_bert_path)
    perturb_lora(enc)
    with enc.zero_shot():
        zs = enc.encode_items(TEXTS, 16, show_progress=False)
    adapted = enc.encode_items(TEXTS, 16, show_progress=False)
    assert np.abs(zs - adapted).max() > 1e-2  # the adapter is back on after the block

    base = AutoModel.from_pretrained(tiny_bert_path).eval()
    batch = enc.tokenize(TEXTS, 16)
    with torch.no_grad():
        hidden = base(**batch).last_hidden_state  # (batch, seq, dim)
    ref = F.normalize(pool(hidden, batch["attention_mask"], "mean"), dim=-1).numpy()
    np.testing.assert_allclose(zs, ref, atol=1e-5)


def test_save_load_round_trip(tiny_bert_path, tmp_path):
    enc = make(tiny_bert_path)
    perturb_lora(enc)
    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "train_log.jsonl").write_text('{"step": 1}\n')  # written by training before save
    enc.save(folder)
    enc.save(folder)  # saving over an existing artifact replaces it
    assert (folder / "encoder.json").exists() and (folder / "adapter_model.safetensors").exists()
    assert (folder / "train_log.jsonl").read_text() == '{"step": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"]  # no temp folders left behind

    loaded = TwoTowerEncoder.load(folder, device="cpu")
    assert loaded.fingerprint() == enc.fingerprint()
    assert enc.fingerprint()["adapter_sha256"] != make(tiny_bert_path).fingerprint()["adapter_sha256"]
    np.testing.assert_allclose(
        loaded.encode_items(TEXTS, 16, show_progress=False),
        enc.encode_items(TEXTS, 16, show_progress=False),
        atol=1e-6,
    )


def test_load_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder.json.*finetune"):
        TwoTowerEncoder.load(tmp_path / "nope")


def test_gpt2_last_token_pooling_with_right_padding(tiny_gpt2_path):
    enc = make(tiny_gpt2_path)
    texts = ["space rockets and astronauts on the moon", "cooking"]
    batch = enc.tokenize(texts, 32)
    assert batch["attention_mask"][1, -1] == 0  # the short text is padded on the right
    emb = enc.encode_items(texts, 32, show_progress=False)
    for i, text in enumerate(texts):  # unpadded, alone: the last position is the last real token
        alone = enc.tokenize([text], 32)
        with torch.no_grad():
            hidden = enc.model(**alone).last_hidden_state[0, -1]  # (dim,)
        np.testing.assert_allclose(emb[i], F.normalize(hidden, dim=0).numpy(), atol=1e-5)


@pytest.mark.slow
def test_minilm_puts_similar_texts_closer(minilm_path):
    enc = TwoTowerEncoder.from_config(EncoderConfig(backbone=minilm_path), device="cpu")
    assert (enc.pooling, enc.dim) == ("mean", 384)
    emb = enc.encode_items(
        ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."],
        48,
        show_progress=False,
    )
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3


def test_bf16_inference_stays_close_to_fp32(tiny_bert_path):
    """inference_precision=bf16 (what `auto` picks on CPUs with AVX512-BF16/AMX) changes vectors only slightly."""
    from recsys_llm.config import EncoderConfig
    from recsys_llm.encoder.model import TwoTowerEncoder

    texts = ["space rocket launch", "a cooking show", "romantic comedy in paris"] * 4
    vec = {}
    for precision in ("fp32", "bf16"):
        enc = TwoTowerEncoder.from_config(EncoderConfig(backbone=tiny_bert_path, inference_precision=precision),
                                          lora=False, device="cpu")
        vec[precision] = enc.encode_items(texts, 16, show_progress=False)
    cos = (vec["fp32"] * vec["bf16"]).sum(axis=1)
    assert vec["bf16"].dtype == np.float32 and cos.min() > 0.99 and not np.array_equal(vec["fp32"], vec["bf16"])
