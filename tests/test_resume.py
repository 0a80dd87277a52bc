"""Resumable training: a run killed with SIGKILL and resumed ends with the weights of an uninterrupted run.

The killed run is a subprocess that trains the tiny BERT (dropout on) with a checkpoint every 4 steps and
stalls inside step 6, after ``checkpoints/step-000004`` is on disk; the parent kills it, resumes in-process
and compares the adapter with an uninterrupted run of the same seed. A failure while a checkpoint is being
written leaves the previous one loadable. ``resume=True`` with no checkpoint starts fresh (with a warning).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import make_synthetic_dataset

from recsys_llm.config import EncoderConfig, TextConfig, TrainConfig
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.text.templates import item_texts
from recsys_llm.train import checkpoint as ckpt_mod
from recsys_llm.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from recsys_llm.train.pairs import build_pairs
from recsys_llm.train.two_tower import train_two_tower

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TEXT = TextConfig(user_max_tokens=32, item_max_tokens=16)
CFG = dict(batch_size=8, lr=5e-3, warmup_steps=2, log_every=1, device="cpu", lr_schedule="cosine",
           learnable_temperature=True, temperature=0.1)

CHILD = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, {tests!r})
    import torch
    from conftest import make_synthetic_dataset

    from recsys_llm.config import EncoderConfig, TextConfig, TrainConfig
    from recsys_llm.encoder.model import TwoTowerEncoder
    from recsys_llm.text.templates import item_texts
    from recsys_llm.train.pairs import build_pairs
    from recsys_llm.train.two_tower import train_two_tower

    # 1. the same data, encoder and config as the parent's uninterrupted run
    backbone, out = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads({threads})
    ds = make_synthetic_dataset()
    hist = [g["item"].to_numpy() for _, g in ds.interactions.groupby("user", sort=True)]
    pairs = build_pairs(hist, ds.items["title"].tolist(), max_items=5)
    enc = TwoTowerEncoder.from_config(EncoderConfig(backbone=backbone, lora_r=4), device="cpu")

    # 2. stall inside step 6 (after the step-4 checkpoint, before the step-8 one) until the parent kills us
    calls, tokenize = [0], enc.tokenize

    def stalling_tokenize(texts, max_tokens):
        calls[0] += 1
        if calls[0] > 2 * 5:  # two tokenize calls per step: call 11 is the first of step 6
            (out / "stalled").write_text("")
            time.sleep(600)
        return tokenize(texts, max_tokens)

    enc.tokenize = stalling_tokenize
    cfg = TrainConfig(max_steps=12, checkpoint_every=4, **{cfg!r})
    train_two_tower(enc, pairs, item_texts(ds.items, "title_genres"), TextConfig(user_max_tokens=32, item_max_tokens=16), cfg,
                    out_dir=out)
    """
)


DDP_CHILD = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, {tests!r})
    from conftest import make_synthetic_dataset

    from recsys_llm.config import EncoderConfig, TextConfig, TrainConfig
    from recsys_llm.encoder.model import TwoTowerEncoder
    from recsys_llm.text.templates import history_text, item_texts
    from recsys_llm.train.pairs import build_pairs
    from recsys_llm.train.two_tower import train_two_tower

    # 1. data and validation users, the same on every process
    backbone, out, resume = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1"
    ds = make_synthetic_dataset()
    hist = [g["item"].to_numpy() for _, g in ds.interactions.groupby("user", sort=True)]
    titles = ds.items["title"].tolist()
    pairs = build_pairs(hist, titles, max_items=5)
    valid = ([history_text(h[:-1], titles, 5) for h in hist], [h[-1:] for h in hist], [h[:-1] for h in hist])

    # 2. 8 batches over 2 processes = 4 steps each, a checkpoint after every step, validation every 2
    enc = TwoTowerEncoder.from_config(EncoderConfig(backbone=backbone, lora_r=4), device="cpu")
    cfg = TrainConfig(max_steps=8, checkpoint_every=1, keep_checkpoints=10, eval_every=2, grad_accum_steps=2,
                      **{cfg!r})
    r = train_two_tower(enc, pairs, item_texts(ds.items, "title_genres"),
                        TextConfig(user_max_tokens=32, item_max_tokens=16), cfg, out_dir=out, valid=valid,
                        resume=resume)
    rank = __import__("torch").distributed.get_rank()
    info = {{"sha": enc.adapter_sha256(), "steps": r.steps, "resumed_from": r.resumed_from, "log": r.log,
             "evals": r.evals, "temperature": r.temperature}}
    (out / f"rank{{rank}}-resume{{int(resume)}}.json").write_text(json.dumps(info))
    """
)


def planted():
    ds = make_synthetic_dataset()
    hist = [g["item"].to_numpy() for _, g in ds.interactions.groupby("user", sort=True)]
    return build_pairs(hist, ds.items["title"].tolist(), max_items=5), item_texts(ds.items, "title_genres")


def adapter(enc: TwoTowerEncoder) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in enc.named_parameters() if p.requires_grad}


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def fresh(path: str) -> TwoTowerEncoder:
    return TwoTowerEncoder.from_config(EncoderConfig(backbone=path, lora_r=4), device="cpu")


def without_seconds(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_sigkilled_run_resumes_to_the_uninterrupted_weights(tiny_bert_path, tmp_path, caplog):
    pairs, texts = planted()
    killed = tmp_path / "killed"
    killed.mkdir()
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(TESTS), threads=torch.get_num_threads(), cfg=CFG))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, str(script), tiny_bert_path, str(killed)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # 1. meanwhile, the uninterrupted reference run in this process (resume=True on an empty folder = fresh)
        ref_dir = tmp_path / "ref"
        with caplog.at_level(logging.WARNING, logger="recsys_llm.train.two_tower"):
            ref_enc = fresh(tiny_bert_path)
            ref = train_two_tower(ref_enc, pairs, texts, TEXT, TrainConfig(max_steps=12, checkpoint_every=4, **CFG),
                                  out_dir=ref_dir, resume=True)
        assert "no checkpoint" in caplog.text and ref.resumed_from == 0 and ref.steps == 12
        # 2. wait until the child stalls in step 6, then kill it without warning
        deadline = time.monotonic() + 300
        while not (killed / "stalled").exists():
            assert proc.poll() is None, f"child exited early ({proc.returncode}):\n{proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "child never reached step 6"
            time.sleep(0.1)
        assert [s for s, _ in list_checkpoints(killed)] == [4]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    logged = [json.loads(x) for x in (killed / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5]  # step 5 was logged after the checkpoint

    # 3. resume from step 4 and finish: same weights, temperature and log as the uninterrupted run
    enc = fresh(tiny_bert_path)
    result = train_two_tower(enc, pairs, texts, TEXT, TrainConfig(max_steps=12, checkpoint_every=4, **CFG),
                             out_dir=killed, resume=True)
    diff = max_abs_diff(adapter(enc), adapter(ref_enc))
    logging.getLogger(__name__).info("resumed vs uninterrupted: max abs weight difference %.3g", diff)
    assert result.resumed_from == 4 and result.steps == 12
    assert diff <= 1e-5, diff
    assert result.temperature == pytest.approx(ref.temperature, abs=1e-6)
    for got, want in zip(without_seconds(result.log), without_seconds(ref.log), strict=True):
        assert got.keys() == want.keys() and got == pytest.approx(want, rel=1e-5)
    lines = [json.loads(x) for x in (killed / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 13))  # the killed run's step-5 line was replaced
    assert [s for s, _ in list_checkpoints(killed)] == [8, 12]  # keep_checkpoints=2 pruned step 4


def test_crash_while_saving_keeps_the_previous_checkpoint(tiny_bert_path, tmp_path, monkeypatch, caplog):
    pairs, texts = planted()
    cfg = TrainConfig(max_steps=4, checkpoint_every=2, keep_checkpoints=3, **CFG)
    out = tmp_path / "run"
    save_file = ckpt_mod.save_file

    def failing_save(tensors, path, *args, **kwargs):
        if "step-000004" in str(Path(path).parent) and Path(path).name == "optimizer.safetensors":
            raise OSError("disk full (simulated)")
        return save_file(tensors, path, *args, **kwargs)

    monkeypatch.setattr(ckpt_mod, "save_file", failing_save)
    with pytest.raises(OSError, match="simulated"):
        train_two_tower(fresh(tiny_bert_path), pairs, texts, TEXT, cfg, out_dir=out)
    monkeypatch.undo()

    # the failed save left nothing behind; step 2 is intact and loadable
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000002"]
    assert load_checkpoint(latest_checkpoint(out)).step == 2
    # leftovers of a save killed mid-way, and a folder without trainer.json, are ignored (and pruned later)
    (out / "checkpoints" / ".step-000004.tmp-dead0000").mkdir()
    (out / "checkpoints" / "step-000006").mkdir()
    with caplog.at_level(logging.WARNING, logger="recsys_llm.train.checkpoint"):
        assert latest_checkpoint(out).name == "step-000002"
    assert "incomplete checkpoint" in caplog.text

    enc = fresh(tiny_bert_path)
    result = train_two_tower(enc, pairs, texts, TEXT, cfg, out_dir=out, resume=True)
    ref_enc = fresh(tiny_bert_path)
    train_two_tower(ref_enc, pairs, texts, TEXT, cfg, out_dir=tmp_path / "ref")
    assert result.resumed_from == 2 and max_abs_diff(adapter(enc), adapter(ref_enc)) <= 1e-5
    assert not list((out / "checkpoints").glob(".step-*"))

    # resuming a finished run trains nothing and restores its final weights
    again = fresh(tiny_bert_path)
    done = train_two_tower(again, pairs, texts, TEXT, cfg, out_dir=out, resume=True)
    assert done.resumed_from == 4 and done.steps == 4 and max_abs_diff(adapter(again), adapter(enc)) == 0.0

    # another seed is another run: refused
    with pytest.raises(ValueError, match="seed"):
        train_two_tower(fresh(tiny_bert_path), pairs, texts, TEXT, TrainConfig(**{**cfg.__dict__, "seed": 1}),
                        out_dir=out, resume=True)
    with pytest.raises(ValueError, match="out_dir"):
        train_two_tower(fresh(tiny_bert_path), pairs, texts, TEXT, cfg, resume=True)

    # a fresh run (resume=False) in the same folder removes the earlier run's checkpoints first
    short = TrainConfig(**{**cfg.__dict__, "max_steps": 2})
    with caplog.at_level(logging.WARNING, logger="recsys_llm.train.two_tower"):
        train_two_tower(fresh(tiny_bert_path), pairs, texts, TEXT, short, out_dir=out)
    assert "removed 2 checkpoints of an earlier run" in caplog.text
    assert [s for s, _ in list_checkpoints(out)] == [2]


def test_checkpoint_holds_no_pickle(tiny_bert_path, tmp_path):
    pairs, texts = planted()
    train_two_tower(fresh(tiny_bert_path), pairs, texts, TEXT, TrainConfig(max_steps=2, checkpoint_every=2, **CFG),
                    out_dir=tmp_path)
    folder = latest_checkpoint(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [
        "optimizer.json", "optimizer.safetensors", "rng.json", "rng.safetensors", "trainable.safetensors",
        "trainer.json"]
    state = load_checkpoint(folder)
    assert state.step == 2 and state.param_names[-1] == "log_temperature"
    assert state.trainer["sampler"] == {"seed": 0, "batch_size": 8, "sampling": "pairs", "unique_items": True,
                                        "next_batch": 2}
    assert state.rng[0]["torch_cpu"].dtype == torch.uint8
    assert state.optimizer["param_groups"][0]["betas"] == (0.9, 0.999)
    assert set(state.optimizer["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}


@pytest.mark.slow
def test_two_process_run_resumes_exactly(tiny_bert_path, tmp_path):
    """DDP over gloo (torchrun, 2 CPU processes): main-process checkpoints with every process's RNG state."""
    script = tmp_path / "ddp_child.py"
    script.write_text(DDP_CHILD.format(tests=str(TESTS), cfg=CFG))
    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)

    def launch(resume: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(script), tiny_bert_path, str(out), resume]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stderr[-4000:]}"

    launch("0")
    assert [s for s, _ in list_checkpoints(out)] == [1, 2, 3, 4]  # 4 steps per process, one writer
    for step, folder in list_checkpoints(out):
        if step > 2:
            shutil.rmtree(folder)  # as if the job had died after step 2
    assert len(load_checkpoint(latest_checkpoint(out)).rng) == 2  # both processes' RNG states
    launch("1")
    full, resumed = ({r: json.loads((out / f"rank{r}-resume{x}.json").read_text()) for r in (0, 1)} for x in (0, 1))
    assert full[0]["sha"] == full[1]["sha"] and full[0]["steps"] == 4  # replicas agree
    assert resumed[0]["resumed_from"] == 2 and resumed[0]["sha"] == resumed[1]["sha"] == full[0]["sha"]
    assert resumed[0]["temperature"] == full[0]["temperature"]
    assert without_seconds(resumed[0]["log"]) == without_seconds(full[0]["log"])
    assert without_seconds(resumed[0]["evals"]) == without_seconds(full[0]["evals"])
