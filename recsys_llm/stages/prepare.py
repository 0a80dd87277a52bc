"""Stage ``prepare``: raw files -> canonical catalog + interactions, splits and rendered texts.

Everything is validated (loader checks, split checks, item template) before the first file is written, so a
failed ``prepare`` leaves the run directory as it was.
"""

from __future__ import annotations

import time
from pathlib import Path

from recsys_llm import lineage
from recsys_llm.config import PipelineConfig
from recsys_llm.data.io import load_dataset
from recsys_llm.data.splits import make_split
from recsys_llm.data.tags import training_tags
from recsys_llm.run import Context, RunDir, record_time, write_jsonl
from recsys_llm.text.templates import pick_item_template


def prepare(cfg: PipelineConfig, run_dir: str | Path) -> Context:
    """Load raw data into the canonical schema, split it, render texts; write config.json and the artifacts."""
    t0 = time.perf_counter()
    run = RunDir(Path(run_dir))
    ds = load_dataset(cfg.data)
    split = make_split(ds, cfg.split)
    if ds.tag_rows is not None:  # tags from the training period only: no test-period or cold-item tags
        ds.items["tags"] = training_tags(ds, split)
    cfg = cfg.override({"text.item_template": pick_item_template(ds.items.columns, cfg.text.item_template,
                                                                 ds.name, require_columns=False)})
    ctx = Context(run, cfg, ds, split)
    items = ctx.item_texts()  # a bad item template fails here, before anything is written
    users = ctx.user_texts()
    run.root.mkdir(parents=True, exist_ok=True)
    ds.save(run.data)
    split.save(run.splits)
    cfg.save(run.config)
    write_jsonl(run.text / "items.jsonl", [{"item": i, "text": t} for i, t in enumerate(items)])
    write_jsonl(run.text / "users.jsonl", [{"user": u, "text": t} for u, t in enumerate(users)])
    record_time(run, "prepare", time.perf_counter() - t0)
    lineage.record(run.root, "prepare", {})
    return ctx
