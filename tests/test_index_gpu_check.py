"""eval/gpu_check.sh, the script for a lent GPU machine, works before one is lent: its dry run lists the steps
and compiles their Python; the faiss step skips cleanly on a CPU-only faiss; bad arguments are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "eval" / "gpu_check.sh"


def _run(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_dry_run_lists_every_step_within_five_minutes():
    res = _run("--dry-run")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for step in ("env", "faiss", "pytest", "encode"):
        assert f"step {step} (timeout" in out
    assert "pytest -m gpu" in out and "step scripts compile" in out
    assert int(out.split("total time limit: ")[1].split()[0]) <= 300
    assert "pip install" not in SCRIPT.read_text().split("read -r -d")[0]  # the script installs nothing


def test_faiss_step_skips_without_gpu_faiss(tmp_path):
    pytest.importorskip("faiss")
    from recsys_llm.index.faiss_index import faiss_gpus

    if faiss_gpus():
        pytest.skip("this faiss has GPUs: the real check runs on the GPU machine")
    res = _run("--steps", "faiss", "--n", "1000", "--out", str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SKIP: this faiss has no GPU support" in res.stdout
    assert "| faiss | skipped |" in (tmp_path / "summary.md").read_text()


@pytest.mark.parametrize(("args", "message"), [(["--bogus"], "unknown argument --bogus"),
                                               (["--n", "x"], "--n must be a positive integer"),
                                               (["--steps", "env,gpu"], "unknown step 'gpu'")])
def test_bad_arguments_are_refused(args, message):
    res = _run(*args, "--dry-run")
    assert res.returncode == 2 and message in res.stderr
