"""Reproduce a comparison table: every stage, every baseline, every slice, with intervals and plots.

Usage:
    python eval/run.py --recipe ml100k               # leave-last-out (peer split) + temporal, ../shared/data
    python eval/run.py --recipe ml-latest-small      # the bundled data, both splits
    python eval/run.py --recipe ml100k-rerank        # ml-100k peer split, reranker validated, depth/fusion swept
    python eval/run.py --config eval/configs/ml100k_loo.json --out runs/eval   # one config
    python eval/run.py --recipe ml100k --set eval.max_users=500                 # any field, every config
    python eval/run.py --recipe ml100k-rerank --seeds 3        # 3 seeds: mean and spread per row

Each config runs in ``<out>/<config name>/`` (report.json, report.md, plots/); the script prints each table.
With ``--seeds N`` each config runs N times (``<out>/<config name>/seed-<s>/``, every model seed = s, the split
fixed; recsys_llm.report.seeds) and ``<out>/<config name>/seeds.md`` / ``seeds.json`` give mean ± std [min, max]
per row next to the first seed's bootstrap interval, and the served row's paired difference against each baseline
in every seed (``recsys_llm.report.seeds.seed_paired``).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from recsys_llm import pipeline
from recsys_llm.config import ConfigError, PipelineConfig, parse_overrides
from recsys_llm.io_utils import atomic_write_json, atomic_write_text, load_json
from recsys_llm.report.seeds import seed_markdown, seed_paired, seed_paired_markdown, seed_summary, with_seed
from recsys_llm.report.tables import format_table

HERE = Path(__file__).resolve().parent
RECIPES = {
    "ml100k": ["ml100k_loo", "ml100k_temporal"],
    "ml100k-rerank": ["ml100k_rerank"],
    "coldstart": ["ml100k_coldstart", "ml_latest_small_coldstart"],
    "ml-latest-small": ["ml_latest_small_loo", "ml_latest_small_temporal"],
}
COLUMNS = ("NDCG@10", "Recall@10", "MRR@10", "Recall@50", "users")

# 1. arguments: a named recipe or explicit config files
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--recipe", choices=sorted(RECIPES), help="named recipe (configs in eval/configs/)")
parser.add_argument("--config", action="append", default=[], help="PipelineConfig JSON (repeatable)")
parser.add_argument("--out", default="runs/eval", help="parent folder of the run directories")
parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="override a field in every config, e.g. --set eval.max_users=500 (repeatable)")
parser.add_argument("--seeds", type=int, default=1, help="run each config with seeds 0..N-1 and summarise (default 1)")
args = parser.parse_args()
paths = [HERE / "configs" / f"{n}.json" for n in RECIPES.get(args.recipe, [])]
paths += [Path(c) for c in args.config]
if not paths:
    parser.error("give --recipe or --config")
if args.seeds < 1:
    parser.error(f"--seeds {args.seeds}: give at least 1")
try:  # every config checked before the first one runs
    configs = {path: PipelineConfig.load(path).override(parse_overrides(args.set)) for path in paths}
except ConfigError as e:
    parser.error(str(e))
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
for noisy in ("faiss", "accelerate"):
    logging.getLogger(noisy).setLevel(logging.WARNING)

# 2. every stage of every config: prepare, zero-shot, finetune, embed, index, retrieve, rerank, evaluate
t0 = time.perf_counter()
results = {}
for path, cfg in configs.items():
    run_dir = Path(args.out) / path.stem
    if args.seeds == 1:
        results[path.stem] = (run_dir, pipeline.run_all(cfg, run_dir))
        continue
    runs = [pipeline.run_all(with_seed(cfg, s), run_dir / f"seed-{s}") for s in range(args.seeds)]
    results[path.stem] = (run_dir / "seed-0", runs[0])
    summary = seed_summary(runs, COLUMNS[:-1])
    paired = seed_paired([load_json(run_dir / f"seed-{s}" / "report.json").get("paired", []) for s in range(args.seeds)])
    atomic_write_json(run_dir / "seeds.json", {"seeds": args.seeds, "rows": summary, "paired": paired})
    text = seed_markdown(summary, COLUMNS[:2]) + "\n### served vs the baselines, paired, per seed\n\n" + seed_paired_markdown(paired)
    atomic_write_text(run_dir / "seeds.md", f"# {path.stem}: {args.seeds} seeds\n\n" + text)
    print(f"\n## {path.stem}: {args.seeds} seeds ({run_dir}/seeds.md)\n" + text)

# 3. the tables (markdown with intervals and the paired comparison are in each report.md)
for name, (run_dir, rows) in results.items():
    print(f"\n## {name}  ({run_dir}/report.md, plots in {run_dir}/plots/)")
    for s in dict.fromkeys(r.slice for r in rows):
        print(format_table(rows, s, columns=COLUMNS, with_ci=True), end="\n\n")
print(f"total wall time: {time.perf_counter() - t0:.0f} s")
