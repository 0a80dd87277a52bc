"""Per-user latency of `recommend`: the Recommender loaded once vs a load per call, and (optionally) the
code of an earlier commit on the same run, in one command.

    python eval/bench_recommend.py --run-dir runs/demo --users 50 --before 39f4fd5

Rows:
  * ``loaded once``: ``Recommender.load(run)`` once, then ``recommend(user)`` per user (what the service and
    the report do);
  * ``load per call``: ``recsys_llm.serve.recommender.recommend(run, user)``, the one-off helper (a load each);
  * ``before (REV)``: ``recsys_llm.recommend.recommend(run, user)`` of commit REV, run from a temporary git
    worktree in a subprocess on the same run and the same users (the code before the Recommender existed:
    it reloaded the run, the encoder and the reranker on every call).
Each row serves the run's configuration (served.json for the Recommender; the old code applies its own).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recsys_llm.serve.recommender import Recommender, recommend

OLD = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from recsys_llm.recommend import recommend
users = json.loads(sys.argv[2])
recommend(sys.argv[1], users[0], k=10)  # warm-up: imports
out = []
for u in users:
    t0 = time.perf_counter()
    recommend(sys.argv[1], u, k=10)
    out.append(time.perf_counter() - t0)
print(json.dumps(out))
"""


def _stats(name: str, seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"path": name, "calls": len(ms), "mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95))}


def _time(fn, users: list[str]) -> list[float]:
    out = []
    for u in users:
        t0 = time.perf_counter()
        fn(u)
        out.append(time.perf_counter() - t0)
    return out


def _before(rev: str, run_dir: str, users: list[str]) -> list[float]:
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
        try:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            proc = subprocess.run([sys.executable, "-c", OLD, str(Path(run_dir).resolve()), json.dumps(users)],
                                  env=env, capture_output=True, text=True, cwd=tmp)
            if proc.returncode:
                tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
                raise SystemExit(f"the code of {rev} failed on {run_dir}: {tail[0]}")
            return json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)], capture_output=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--users", type=int, default=50, help="users timed per path (a seeded sample)")
    p.add_argument("--rank-users", type=int, default=1000, help="users ranked in one call for the batch row")
    p.add_argument("--before", help="also time this commit's recommend() on the same run and users")
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args()

    t0 = time.perf_counter()
    rec = Recommender.load(args.run_dir)
    load_s = time.perf_counter() - t0
    external = rec.users.to_external(np.arange(len(rec.known)))
    users = [str(u) for u in np.random.default_rng(0).choice(external, min(args.users, len(external)), replace=False)]
    rec.recommend(users[0])  # warm-up: lazy models
    rows = [_stats("loaded once", _time(rec.recommend, users)),
            _stats("load per call", _time(lambda u: recommend(args.run_dir, u), users))]
    if args.before:
        rows.append(_stats(f"before ({args.before})", _before(args.before, args.run_dir, users)))
    batch = np.resize(np.arange(len(rec.known)), args.rank_users)
    t0 = time.perf_counter()
    rec.rank(users=batch, k=10)
    batch_s = time.perf_counter() - t0
    print(f"run {args.run_dir}; served: {rec.served.label}; Recommender.load {load_s:.2f} s")
    print(f"{'path':<24} {'calls':>6} {'mean ms':>9} {'p50 ms':>9} {'p95 ms':>9}")
    for r in rows:
        print(f"{r['path']:<24} {r['calls']:>6} {r['mean_ms']:>9.1f} {r['p50_ms']:>9.1f} {r['p95_ms']:>9.1f}")
    base = rows[0]["mean_ms"]
    for r in rows[1:]:
        print(f"{r['path']} / loaded once: {r['mean_ms'] / base:.1f}x the per-user latency")
    print(f"rank({args.rank_users} users) in one call: {batch_s:.2f} s ({1000 * batch_s / args.rank_users:.2f} ms/user), "
          f"one load")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "load_s": load_s, "batch_s": batch_s,
                                              "served": rec.served.label,
                                              "median_ms": statistics.median(r["mean_ms"] for r in rows)}, indent=2))


if __name__ == "__main__":
    main()
