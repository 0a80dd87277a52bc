"""Fine-tune the two-tower encoder from a recipe config.

Usage:
    python finetune/train.py --config finetune/configs/cpu_smoke.json --run-dir runs/smoke
    accelerate launch finetune/train.py --config finetune/configs/ml_latest_small.json --run-dir runs/ml
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from recsys_llm import pipeline
from recsys_llm.config import PipelineConfig

# 1. parse the recipe into the config dataclasses
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--config", required=True, help="PipelineConfig JSON")
parser.add_argument("--run-dir", required=True)
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
cfg = PipelineConfig.from_dict(__import__("json").loads(Path(args.config).read_text()))

# 2. raw data -> canonical data, splits and texts (skipped when the run dir already has them)
if not (Path(args.run_dir) / "config.json").exists():
    pipeline.prepare(cfg, args.run_dir)

# 3. LoRA fine-tuning on (user history text -> next item text) pairs
pipeline.finetune(args.run_dir)

# 4. item and user embeddings with the tuned encoder
pipeline.embed(args.run_dir)
