"""Build (or rebuild) the FAISS index of a run and query it for one user.

Usage:
    python index/build.py --run-dir runs/demo --user 1
"""

from __future__ import annotations

import argparse
import logging

from recsys_llm import pipeline
from recsys_llm.recommend import recommend

# 1. arguments
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--run-dir", required=True)
parser.add_argument("--user", help="external user id to query after building")
parser.add_argument("-k", type=int, default=10)
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

# 2. build the index over the run's item embeddings (written atomically, with the encoder fingerprint)
pipeline.build_index(args.run_dir)

# 3. query: retrieval-only top-k, seen items filtered
if args.user:
    print(recommend(args.run_dir, args.user, k=args.k, use_reranker=False).to_string(index=False))
