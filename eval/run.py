"""Run every stage from a recipe config and print the report.

Usage:
    python eval/run.py --config eval/configs/ml100k_wiki.json --run-dir runs/ml100k
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from recsys_llm import pipeline
from recsys_llm.config import PipelineConfig
from recsys_llm.evaluate import format_table

# 1. parse the recipe into the config dataclasses
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--config", required=True, help="PipelineConfig JSON")
parser.add_argument("--run-dir", required=True)
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
cfg = PipelineConfig.from_dict(json.loads(Path(args.config).read_text()))

# 2. every stage: prepare, zero-shot embed, finetune, embed, index, retrieve, rerank, evaluate
rows = pipeline.run_all(cfg, args.run_dir)

# 3. the table, per slice
for s in dict.fromkeys(r.slice for r in rows):
    print(format_table(rows, s), end="\n\n")
