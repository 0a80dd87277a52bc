"""Cross-encoder speed options: the item token cache changes nothing; merged/int8/bf16 scoring copies agree.

Thresholds for the quantised copies hold for the tiny random models of conftest (2 layers, 32 dims) and were
set from measured values with a margin. Spearman against float32 on 300 pairs, seeds 0-3: BERT int8 1.0000,
bf16 0.9999; GPT-2 (last-token pooling) int8 0.982-0.996, bf16 0.9992-0.9998. We require 0.99, except 0.95
for GPT-2 int8. ``eval/bench_rerank.py`` measures the real backbone on real texts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from recsys_llm.config import RerankConfig
from recsys_llm.rerank.cross_encoder import CrossEncoder, longest_first

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["the", "alien", "star", "wars", "toy", "story", "heat", "ronin", "cars", "jaws", "big", "sci-fi",
         "animation", "comedy", "drama", "unbelievably", "antidisestablishmentarianism", "cinematographer",
         "(1986).", "genres:", "tags:"]  # long words become several word pieces: cuts inside a word


def _texts(n: int, max_words: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(0, max_words))) for _ in range(n)]


def _pairs(n_pairs: int = 240, seed: int = 0) -> tuple[list[str], list[str]]:
    """Users and items from 0 to 30 words (empty, short, cut, exactly full), items recurring across users."""
    users, items = _texts(30, 31, seed), _texts(40, 31, seed + 1)
    rng = np.random.default_rng(seed + 2)
    return ([users[i] for i in rng.integers(0, len(users), n_pairs)],
            [items[i] for i in rng.integers(0, len(items), n_pairs)])


def _model(path: str, max_tokens: int = 17, seed: int = 0) -> CrossEncoder:
    ce = CrossEncoder.from_config(path, RerankConfig(max_tokens=max_tokens, lora_r=4, score_batch_size=16),
                                  device="cpu")
    with torch.no_grad():  # trained-looking LoRA: B != 0, so merging really changes the weights
        gen = torch.Generator().manual_seed(seed)
        for name, p in ce.model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return ce


@pytest.fixture(params=["bert", "gpt2"])
def backbone_path(request, tiny_bert_path, tiny_gpt2_path) -> str:
    return {"bert": tiny_bert_path, "gpt2": tiny_gpt2_path}[request.param]


def test_longest_first_matches_the_tokenizer(tiny_bert_path):
    tok = CrossEncoder.from_config(tiny_bert_path, RerankConfig(lora_r=2), device="cpu").tokenizer
    hello, world = (tok(w, add_special_tokens=False)["input_ids"][0] for w in ("hello", "world"))
    for max_tokens in (8, 9, 12, 13):  # even and odd budgets (max_tokens - 3 special tokens)
        lens = [(a, b) for a in range(16) for b in range(16)]
        enc = tok([" ".join(["hello"] * a) for a, _ in lens], [" ".join(["world"] * b) for _, b in lens],
                  truncation="longest_first", max_length=max_tokens)["input_ids"]
        got = [(ids.count(hello), ids.count(world)) for ids in enc]
        assert got == [longest_first(a, b, max_tokens - 3) for a, b in lens]


@pytest.mark.parametrize("max_tokens", [16, 17])
def test_item_token_cache_builds_the_tokenizers_inputs(backbone_path, max_tokens):
    ce = _model(backbone_path, max_tokens)
    users, items = _pairs()
    pairs, lengths = ce.pairs.encode_pairs(users, items)
    cut_items, _ = ce.pairs.prepare(users, items)
    cached = ce.pairs.collate(pairs, ce.pairs.layout())
    plain = ce.pairs.tokenize(users, cut_items)  # the uncached path: the tokenizer on the cut item texts
    assert cached.keys() == plain.keys()
    for key in plain:
        torch.testing.assert_close(cached[key], plain[key], rtol=0, atol=0, msg=key)
    np.testing.assert_array_equal(lengths, plain["attention_mask"].sum(1).numpy())


def test_item_token_cache_gives_identical_scores(backbone_path):
    ce = _model(backbone_path)
    users, items = _pairs()
    ce.item_cache_size = 0
    plain = ce.score(users, items)
    ce.item_cache_size = 1000
    cold, warm = ce.score(users, items), ce.score(users, items)  # first call fills the cache, second reads it
    assert 0 < ce.pairs.cached_items <= len(set(items))
    ce.item_cache_size = 3  # evicting on every call changes nothing either
    tiny_cache = ce.score(users, items)
    assert ce.pairs.cached_items == 3
    for got in (cold, warm, tiny_cache):
        np.testing.assert_allclose(got, plain, rtol=0, atol=1e-6)
    ce.cfg.max_tokens = 24  # a new budget empties the cache instead of reusing cuts made for the old one
    ce.item_cache_size = 0
    plain = ce.score(users, items)
    ce.item_cache_size = 1000
    np.testing.assert_allclose(ce.score(users, items), plain, rtol=0, atol=1e-6)


def test_a_wrong_pair_layout_turns_the_cache_off(tiny_bert_path, monkeypatch, caplog):
    from recsys_llm.rerank import pair_tokens as module

    ce = _model(tiny_bert_path)
    users, items = _pairs(40)
    ce.item_cache_size = 0
    plain = ce.score(users, items)
    ce.item_cache_size = 1000
    wrong = module.PairTemplate(prefix=(101,), mid=(), suffix=(102,), types=(0, 0, 0, 1, 1))  # [SEP] missing
    monkeypatch.setattr(module, "pair_template", lambda tok: wrong)
    ce.pairs._template = False
    with caplog.at_level("WARNING", logger=module.__name__):
        assert ce.pairs.layout() is None
    assert "item token cache off" in caplog.text
    np.testing.assert_allclose(ce.score(users, items), plain, rtol=0, atol=1e-6)


def test_scoring_copies_agree_with_the_float32_model(backbone_path, tiny_gpt2_path):
    ce = _model(backbone_path, max_tokens=32)
    users, items = _pairs(300)
    ref = ce.score(users, items)
    merged = ce.for_scoring()
    np.testing.assert_allclose(merged.score(users, items), ref, rtol=0, atol=1e-5)
    assert not any(p.requires_grad for p in merged.parameters())
    for mode in ("int8", "bf16"):
        fast = ce.for_scoring(mode)
        rho = spearmanr(fast.score(users, items), ref).statistic
        assert rho > (0.95 if mode == "int8" and backbone_path == tiny_gpt2_path else 0.99), (mode, rho)
    int8 = ce.for_scoring("int8")
    quantised = [m for m in int8.model.modules() if type(m).__module__.startswith("torch.ao.nn.quantized")]
    assert len(quantised) >= 2 * 4  # every attention/MLP projection of both layers (GPT-2: Conv1D converted)
    np.testing.assert_allclose(ce.score(users, items), ref, rtol=0, atol=0)  # the original is untouched


@pytest.mark.parametrize("native", [False, True])
def test_auto_precision_is_bf16_only_where_the_device_computes_it(tiny_bert_path, monkeypatch, native):
    """rerank.quantize=auto and train.mixed_precision=auto: bf16 where native, else float32 (emulated bf16 on an
    AVX2-only CPU is ~20x slower than float32)."""
    from recsys_llm import device as device_module
    from recsys_llm.rerank import cross_encoder as module

    monkeypatch.setattr(module, "bf16_native", lambda device: native)
    monkeypatch.setattr(device_module, "bf16_native", lambda device: native)
    fast = _model(tiny_bert_path).for_scoring("auto")
    assert fast.scoring_only == ("bf16" if native else "none")
    assert next(fast.model.parameters()).dtype == (torch.bfloat16 if native else torch.float32)
    cpu = torch.device("cpu")
    assert device_module.training_precision(cpu, "auto") == ("bf16" if native else "no")
    assert device_module.training_precision(cpu, "fp16") == "fp16"


def test_scoring_copy_refuses_training_and_saving(tiny_bert_path, tmp_path):
    ce = _model(tiny_bert_path)
    fast = ce.for_scoring("int8")
    with pytest.raises(RuntimeError, match="scoring-only copy.*train the original"):
        fast.train()
    with pytest.raises(RuntimeError, match="save the original"):
        fast.save(tmp_path / "ce")
    with pytest.raises(ValueError, match="already a scoring-only copy"):
        fast.for_scoring("int8")
    with pytest.raises(ValueError, match="quantize='int4'; choose one of none, int8, bf16"):
        ce.for_scoring("int4")
    fast.eval()  # eval mode stays allowed, and the original still trains
    ce.train()


@pytest.mark.gpu
def test_bf16_on_cuda_tracks_float32(tiny_bert_path):
    ce = _model(tiny_bert_path, max_tokens=32)
    ce.to("cuda")
    users, items = _pairs(300)
    ref = ce.score(users, items)
    ce.bf16_autocast = True
    amp = ce.score(users, items)
    assert spearmanr(amp, ref).statistic > 0.99 and not np.array_equal(amp, ref)
    assert spearmanr(ce.for_scoring("bf16").score(users, items), ref).statistic > 0.99
    with pytest.raises(ValueError, match="CPU only"):
        ce.for_scoring("int8")


def test_bench_rerank_help_runs():
    out = subprocess.run([sys.executable, str(ROOT / "eval" / "bench_rerank.py"), "--help"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert "--quick" in out.stdout and "pairs/s" in out.stdout
