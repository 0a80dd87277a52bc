"""Build the index of a run, measure it against exact search and query it for one user.

Usage:
    python index/build.py --run-dir runs/demo [--factory auto|Flat|IVF128,Flat|HNSW32|...] [--user 1]
"""

from __future__ import annotations

import argparse
import logging

from recsys_llm import pipeline
from recsys_llm.config import PipelineConfig
from recsys_llm.index.tuning import format_sweep
from recsys_llm.serve.recommender import recommend

# 1. arguments
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--run-dir", required=True)
parser.add_argument("--factory", default=None, help="FAISS factory string or auto (default: the run's config)")
parser.add_argument("--user", help="external user id to query after building")
parser.add_argument("-k", type=int, default=10)
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

# 2. choose the index type in the run's config (typed: a bad value stops here, naming the field)
run = pipeline.RunDir(args.run_dir)
if args.factory:
    cfg: PipelineConfig = run.load_config().override({"index.factory": args.factory})
    cfg.save(run.config)

# 3. build: every live item, atomically saved with the encoder fingerprint; approximate types get tuned
info = pipeline.build_index(args.run_dir)
print(f"{info['params'].get('factory', info['kind'])}: {info['ntotal']} items; {info['metadata']['choice']}")

# 4. measure: recall@k against exact search and queries/s at every search setting
rows, exact_qps, _ = pipeline.evaluate_index(args.run_dir, k=args.k)
print(format_sweep(rows, exact_qps))

# 5. query: retrieval-only top-k, seen items filtered
if args.user:
    print(recommend(args.run_dir, args.user, k=args.k, use_reranker=False).to_string(index=False))
