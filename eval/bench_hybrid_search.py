"""The hybrid's validation search, exhaustive vs on candidate lists, on one synthetic catalogue in one run.

Usage:
    python eval/bench_hybrid_search.py                                   # 8,400 users x 4,400 items
    python eval/bench_hybrid_search.py --users 2000 --items 1000 --json out.json

The catalogue has planted structure (items in topics; users' histories, validation items and text vectors
drawn from their topics), the shape of the Amazon-style case in issue 16 (8.4k users, 4.4k items). The
collaborative part is EASE fitted on the training histories (pruned as the hybrid stores it), the dense part
user vectors . item vectors, the bridge the text-neighbour matrix: what `recsys-llm hybrid` searches. Both
searches run `recsys_llm.stages.hybrid.search_settings` with the default grid (`HybridConfig`), once with
`hybrid.search_candidates=0` (every setting scored over the whole catalogue) and once with the candidate
lists; the script prints both times, the ratio, both chosen settings and the largest grid difference (0 when
the candidate search is exact, as it is built to be).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd

from recsys_llm.config import HybridConfig
from recsys_llm.hybrid import fit_collaborative, text_neighbours
from recsys_llm.stages.hybrid import search_settings
from recsys_llm.stages.hybrid_cold import Validation

# 1. arguments
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--users", type=int, default=8400)
parser.add_argument("--items", type=int, default=4400)
parser.add_argument("--topics", type=int, default=60)
parser.add_argument("--dim", type=int, default=64)
parser.add_argument("--candidates", type=int, default=200, help="hybrid.search_candidates of the fast search")
parser.add_argument("--halflives", type=float, nargs="+", help="hybrid.cf_halflives (default: the config's)")
parser.add_argument("--confidences", type=float, nargs="+", help="hybrid.cf_confidences (default: the config's)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--json", help="write the numbers here")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
rng = np.random.default_rng(args.seed)

# 2. a catalogue with planted topics: histories and validation items from the user's topics
topic = rng.integers(0, args.topics, args.items)
by_topic = [np.flatnonzero(topic == t) for t in range(args.topics)]
centres = rng.normal(size=(args.topics, args.dim))
item_emb = (centres[topic] + 0.8 * rng.normal(size=(args.items, args.dim))).astype(np.float32)
item_emb /= np.linalg.norm(item_emb, axis=1, keepdims=True)
rows, hist, targets = [], [], []
for u in range(args.users):
    mine = np.concatenate([by_topic[t] for t in rng.choice(args.topics, 2, replace=False)])
    seq = rng.choice(mine, min(len(mine), int(rng.integers(4, 30))), replace=False)
    hist.append(seq[:-1])
    targets.append(seq[-1:])
    rows += [(u, int(i), j) for j, i in enumerate(seq[:-1])]
train = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
user_vec = np.stack([item_emb[h].mean(axis=0) for h in hist]) + 0.05 * rng.normal(size=(args.users, args.dim))
dense = (user_vec.astype(np.float32) @ item_emb.T).astype(np.float32)  # (users, items)
pool = rng.choice(args.items, args.items // 10, replace=False)
cold_excl = [np.union1d(h, np.setdiff1d(np.arange(args.items), np.union1d(pool, t)))
             for h, t in zip(hist, targets, strict=True)]
val = Validation(np.arange(args.users), hist, targets, cold_excl)

# 3. the collaborative part and the bridge, as the stage builds them
t0 = time.perf_counter()
cf = fit_collaborative("ease", train, args.users, args.items)
neighbours = text_neighbours(item_emb, cf.counts)
logging.info("collaborative part and bridge: %.1f s", time.perf_counter() - t0)

# 4. both searches on the same inputs
out: dict = {"users": args.users, "items": args.items}
split = SimpleNamespace(n_items=args.items)
for label, m in (("exhaustive", 0), ("candidates", args.candidates)):
    hc = HybridConfig(search_candidates=m)
    hc.cf_halflives = args.halflives or hc.cf_halflives
    hc.cf_confidences = args.confidences or hc.cf_confidences
    stats: dict = {}
    start, cpu = time.perf_counter(), time.process_time()
    grids, cold, best = search_settings(hc, split, "synthetic", dense, cf, neighbours, val, stats)
    out[label] = {"seconds": round(time.perf_counter() - start, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
                  "best": best, "stats": stats, "grids": grids, "cold": {h: {str(k): v for k, v in c.items()}
                                                                         for h, c in cold.items()}}
    print(f"{label}: {out[label]['seconds']} s wall, {out[label]['cpu_seconds']} s CPU, best {best}, {stats}",
          flush=True)

# 5. the ratio, the same choice, the grids
ex, ca = out["exhaustive"], out["candidates"]
diff = max(abs(ex["grids"][h][c][w] - ca["grids"][h][c][w]) for h in ex["grids"] for c in ex["grids"][h]
           for w in ex["grids"][h][c])
same = all(ex["best"][k] == ca["best"][k] for k in ("halflife", "weight", "confidence", "bridge"))
out["ratio"] = round(ex["seconds"] / max(ca["seconds"], 1e-9), 1)
out["cpu_ratio"] = round(ex["cpu_seconds"] / max(ca["cpu_seconds"], 1e-9), 1)
print(f"speed-up {out['ratio']}x wall, {out['cpu_ratio']}x CPU; same chosen setting: {same}; "
      f"largest grid difference {diff:.2e}")
if args.json:
    with open(args.json, "w") as f:
        json.dump({k: v for k, v in out.items()}, f, indent=1, default=float)
