"""Fine-tune the two-tower encoder from a recipe config, in one process or under ``accelerate launch``.

Usage:
    python finetune/train.py --config finetune/configs/cpu_smoke.json --run-dir runs/smoke
    accelerate launch --config_file finetune/accelerate/multi_gpu_ddp.yaml \\
        finetune/train.py --config finetune/configs/multi_gpu.json --run-dir runs/ml

With several processes only the main one prepares the run directory, writes its config and embeds; every
process trains (DDP) and the others wait at barriers. A run directory that is already prepared keeps its
data and splits (the recipe must agree on the ``data`` and ``split`` sections); the recipe's other sections
replace the ones in ``config.json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from accelerate import PartialState

from recsys_llm import pipeline
from recsys_llm.config import ConfigError, PipelineConfig, parse_overrides
from recsys_llm.device import resolve_device

# 1. parse the recipe (+ --set overrides) into the config dataclasses
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--config", required=True, help="PipelineConfig JSON (a file in finetune/configs/)")
parser.add_argument("--run-dir", required=True)
parser.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="SECTION.FIELD=VALUE",
    help="override one config field, e.g. --set encoder.backbone=/models/qwen2.5-0.5b",
)
parser.add_argument("--skip-embed", action="store_true", help="stop after fine-tuning")
args = parser.parse_args()
try:
    cfg = PipelineConfig.load(args.config).override(parse_overrides(args.set))
except ConfigError as e:
    parser.error(str(e))
# a single process, or this process's rank in an `accelerate launch` run; on CPU the ranks join over gloo
state = PartialState(cpu=resolve_device(cfg.train.device).type == "cpu")
logging.basicConfig(
    level=logging.INFO if state.is_main_process else logging.WARNING,
    format=f"%(asctime)s %(levelname)s [rank {state.process_index}] %(name)s: %(message)s",
)
run_dir = Path(args.run_dir)
config_path = run_dir / "config.json"

# 2. raw data -> canonical data, splits and texts; the main process goes first, the others then only read
with state.main_process_first():
    if config_path.exists():
        prepared = PipelineConfig.load(config_path)
        if (prepared.data, prepared.split) != (cfg.data, cfg.split):
            sys.exit(
                f"{run_dir} was prepared with other data/split settings than {args.config}; "
                "use a new --run-dir"
            )
        if state.is_main_process:
            cfg.save(config_path)  # this recipe's encoder/train/text settings for the stages below
    elif state.is_main_process:
        pipeline.prepare(cfg, run_dir)

# 3. LoRA fine-tuning on (user history text -> next item text) pairs, data-parallel over all processes
pipeline.finetune(run_dir)
state.wait_for_everyone()

# 4. item and user embeddings with the tuned encoder (main process; the others are done)
if state.is_main_process and not args.skip_embed:
    pipeline.embed(run_dir)
state.wait_for_everyone()
