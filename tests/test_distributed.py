"""Multi-process training and item encoding: two CPU processes under ``accelerate launch`` (DDP over gloo).

The slow test launches a small script that trains the tiny BERT for a few DDP steps on planted synthetic
data, saves the adapter from the main process and encodes the catalog with both processes; the parent then
reloads the adapter and checks it against single-process encoding. The fast tests check the shard layout,
the single-process path, and that every recipe file in ``finetune/`` parses.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import textwrap
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from conftest import make_synthetic_dataset

from recsys_llm.config import EncoderConfig, PipelineConfig
from recsys_llm.encoder.distributed import encode_items_distributed, shard_bounds
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.text.templates import item_texts

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

DDP_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    import numpy as np
    from accelerate import PartialState
    from accelerate.utils import gather_object

    sys.path.insert(0, {tests!r})
    from conftest import make_synthetic_dataset

    from recsys_llm.config import EncoderConfig, TextConfig, TrainConfig
    from recsys_llm.encoder.distributed import encode_items_distributed
    from recsys_llm.encoder.model import TwoTowerEncoder
    from recsys_llm.text.templates import item_texts
    from recsys_llm.train.pairs import build_pairs
    from recsys_llm.train.two_tower import train_two_tower

    # 1. data: planted two-group synthetic interactions, the same on every process
    backbone, out = sys.argv[1], Path(sys.argv[2])
    state = PartialState(cpu=True)  # gloo on CPU machines
    ds = make_synthetic_dataset()
    hist = [g["item"].to_numpy() for _, g in ds.interactions.groupby("user", sort=True)]
    texts = item_texts(ds.items, "title_genres")
    pairs = build_pairs(hist, ds.items["title"].tolist(), max_items=5)

    # 2. a few DDP steps (gloo): each process trains on its share of the sampled batches
    enc = TwoTowerEncoder.from_config(EncoderConfig(backbone=backbone, lora_r=4), device="cpu")
    init_sha = enc.adapter_sha256()
    train_cfg = TrainConfig(batch_size=8, max_steps=8, lr=5e-3, warmup_steps=1, log_every=2, device="cpu")
    result = train_two_tower(enc, pairs, texts, TextConfig(user_max_tokens=32, item_max_tokens=16), train_cfg,
                             out_dir=out / "encoder")

    # 3. both processes encode half of the catalog each; the main process saves
    shas = gather_object([enc.adapter_sha256()])
    emb = encode_items_distributed(enc, texts, max_tokens=16, batch_size=7)
    if state.is_main_process:
        enc.save(out / "encoder")
        np.save(out / "dist_items.npy", emb)
        info = {{"world": state.num_processes, "init_sha": init_sha, "shas": shas, "steps": result.steps}}
        (out / "info.json").write_text(json.dumps(info))
    state.wait_for_everyone()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accelerate_launch(script: Path, *args: str, timeout: int = 150) -> subprocess.CompletedProcess:
    # accelerate 1.x runs `--cpu` jobs in one process (multi-CPU needs MPI); `--multi_gpu` starts torchrun with
    # 2 processes, and on a machine without CUDA our Accelerator(cpu=True) joins them over gloo.
    flags = shlex.split("--multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no")
    port = ["--main_process_port", str(_free_port())]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *flags, *port, str(script), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"accelerate launch failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.slow
def test_ddp_two_processes_train_save_and_encode(tiny_bert_path, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(tests=str(TESTS)))
    out = tmp_path / "out"
    _accelerate_launch(script, tiny_bert_path, str(out))

    info = json.loads((out / "info.json").read_text())
    assert info["world"] == 2 and info["steps"] >= 1
    assert info["shas"][0] == info["shas"][1], "DDP replicas diverged"
    assert info["shas"][0] != info["init_sha"], "training did not change the LoRA weights"
    assert (out / "encoder" / "train_log.jsonl").read_text().strip()

    enc = TwoTowerEncoder.load(out / "encoder", device="cpu")  # sha256 of the adapter is checked on load
    assert enc.adapter_sha256() == info["shas"][0]
    fresh = TwoTowerEncoder.from_config(EncoderConfig(backbone=tiny_bert_path, lora_r=4), device="cpu")
    assert fresh.adapter_sha256() == info["init_sha"]  # same seeded init as in the launched processes

    texts = item_texts(make_synthetic_dataset().items, "title_genres")
    single = enc.encode_items(texts, 16, batch_size=7, show_progress=False)  # (n_items, dim)
    dist = np.load(out / "dist_items.npy")
    assert dist.shape == single.shape and dist.dtype == np.float32
    np.testing.assert_allclose(dist, single, atol=1e-5)


def test_shard_bounds_are_contiguous_and_cover_every_id():
    assert shard_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert shard_bounds(1, 2) == [(0, 0), (0, 1)]
    for n, world in [(0, 2), (7, 1), (7, 4), (1000, 8)]:
        bounds = shard_bounds(n, world)
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in pairwise(bounds))
        assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


def test_single_process_equals_encode_items(tiny_bert_path):
    enc = TwoTowerEncoder.from_config(EncoderConfig(backbone=tiny_bert_path), device="cpu")
    texts = item_texts(make_synthetic_dataset(n_items=9).items, "title_genres")
    got = encode_items_distributed(enc, texts, max_tokens=16, batch_size=4)
    np.testing.assert_array_equal(got, enc.encode_items(texts, 16, batch_size=4, show_progress=False))


@pytest.mark.parametrize("path", sorted((ROOT / "finetune" / "configs").glob("*.json")), ids=lambda p: p.name)
def test_recipe_configs_parse(path):
    PipelineConfig.from_dict(json.loads(path.read_text()))


@pytest.mark.parametrize(
    "path", sorted((ROOT / "finetune" / "accelerate").glob("*.yaml")), ids=lambda p: p.name
)
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    assert cfg.num_processes >= 1 and cfg.num_machines >= 1
