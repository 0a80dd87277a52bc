"""Honest baselines on the ml-100k peer split: each tuned on validation under one budget, against EASE's defaults.

Usage:
    python eval/bench_baselines.py --data ../shared/data                        # every model, default grids
    python eval/bench_baselines.py --data ../shared/data --models ease itemknn  # a subset
    python eval/bench_baselines.py --data ../shared/data --sasrec-dropout 0.2 0.5 --json bench.json

Protocol (the `ml100k` recipe's, `eval/configs/ml100k_loo.json`): all 100,000 ratings as implicit
interactions, the published leave-one-out split (validation and test item per user from
``ml-100k-loo-split``), no cold items. Every model is fitted on the training interactions only and tuned by
`recsys_llm.classic.tuning.tune`: validation NDCG@10 of each user's training history -> validation item,
training items filtered, full ranking, at most ``--budget`` settings per model. Test: full ranking over all
1,682 items with train + valid filtered, the user's train + valid history as the query, ties broken in the
report's seeded random order (`recsys_llm.protocol.rank_full`), NDCG@10 / Recall@10 / MRR@10 with 95%
percentile bootstrap intervals over the 943 users. "EASE (defaults)" is ``make_baseline("ease")``, what
the report used before tuning.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from recsys_llm.classic import Validation, make_baseline
from recsys_llm.classic.tuning import DEFAULT_GRIDS, grid_product, tune
from recsys_llm.config import PipelineConfig
from recsys_llm.data.io import load_dataset
from recsys_llm.data.splits import make_split, targets, test_histories
from recsys_llm.protocol import rank_full, tie_order
from recsys_llm.report.measures import per_user_metrics
from recsys_llm.report.stats import bootstrap_ci

HERE = Path(__file__).resolve().parent
MODELS = ("popularity", "ease", "ease_recency", "itemknn", "sasrec")
METRICS = ("NDCG@10", "Recall@10", "MRR@10")

# 1. arguments
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data", default=str(HERE.parents[1] / "shared" / "data"), help="the shared data folder")
parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
parser.add_argument("--budget", type=int, default=16, help="most settings tried per model")
parser.add_argument("--sasrec-hidden", type=int, nargs="+", default=[64])
parser.add_argument("--sasrec-dropout", type=float, nargs="+", default=[0.2, 0.5])
parser.add_argument("--sasrec-lr", type=float, nargs="+", default=[2e-3])
parser.add_argument("--sasrec-epochs", type=int, default=40, help="most epochs (early stopping picks)")
parser.add_argument("--sasrec-patience", type=int, default=5)
parser.add_argument("--sasrec-max-len", type=int, default=50)
parser.add_argument("--sasrec-loss", default="auto", choices=("auto", "ce", "sampled", "bce"))
parser.add_argument("--n-bootstrap", type=int, default=1000)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--json", help="write every number (and the validation grids) here")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
t_start = time.perf_counter()

# 2. data: the ml100k_loo recipe's data set and published split
recipe = (HERE / "configs" / "ml100k_loo.json").read_text().replace("../shared/data", str(Path(args.data).resolve()))
cfg = PipelineConfig.from_dict(json.loads(recipe))
split = make_split(load_dataset(cfg.data), cfg.split)
valid = Validation.from_frames(split.train, split.valid, split.n_users)
known = test_histories(split)  # train + valid, oldest first: the test-time query and the filter
test_targets = targets(split.test, split.n_users)
users = np.array([u for u, t in enumerate(test_targets) if len(t)], dtype=np.int64)
perm = tie_order(split.n_items, args.seed)

# 3. models: defaults for reference, then each tuned on validation (fitted on train only)
sasrec_fixed = {"epochs": args.sasrec_epochs, "patience": args.sasrec_patience, "max_len": args.sasrec_max_len,
                "loss": args.sasrec_loss, "seed": args.seed}
sasrec_grid = grid_product(hidden=args.sasrec_hidden, dropout=args.sasrec_dropout, lr=args.sasrec_lr)
runs = [("EASE (defaults)", "ease", [{}])] if "ease" in args.models else []
runs += [(name, name, sasrec_grid if name == "sasrec" else DEFAULT_GRIDS[name]) for name in args.models]
rows = []
for label, name, grid in runs:
    base = make_baseline(name, seed=args.seed)
    base = base.with_params(**sasrec_fixed) if name == "sasrec" else base
    result = tune(name, base, split.train, split.n_users, split.n_items, valid, grid=grid, budget=args.budget,
                  seed=args.seed)

    # 4. test: full ranking, train + valid filtered, the report's tie order
    def scores(batch: np.ndarray, model=result.model) -> np.ndarray:
        return model.score(batch, [known[u] for u in batch])

    ranked = rank_full(scores, users, [known[u] for u in users], 10, None, perm)
    per_user = per_user_metrics(ranked, [test_targets[u] for u in users], [10])
    cis = {m: bootstrap_ci(per_user[m], n_boot=args.n_bootstrap, seed=args.seed) for m in METRICS}
    rows.append({"model": label, "setting": result.note() or "defaults", "valid_ndcg@10": result.valid_ndcg,
                 "seconds": round(result.seconds, 1), **{m: [c.mean, c.low, c.high] for m, c in cis.items()},
                 "tuning": result.to_dict()})

# 5. the table
print(f"\nml-100k peer split, {len(users)} test users, full ranking over {split.n_items} items, train + valid "
      f"filtered; 95% bootstrap intervals ({args.n_bootstrap} resamples)\n")
print("| model | NDCG@10 | Recall@10 | MRR@10 | valid NDCG@10 | tuning time | chosen on validation |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    cells = [f"{r[m][0]:.4f} ({r[m][1]:.4f}-{r[m][2]:.4f})" for m in METRICS]
    print(f"| {r['model']} | {' | '.join(cells)} | {r['valid_ndcg@10']:.4f} | {r['seconds']:.0f} s | {r['setting']} |")
print(f"\ntotal wall time: {time.perf_counter() - t_start:.0f} s")
if args.json:
    Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=str) + "\n")
