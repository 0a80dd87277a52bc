"""``recsys-llm info``: what a run holds, which stages ran (and how long they took), what it serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsys_llm import lineage
from recsys_llm.io_utils import load_json
from recsys_llm.run import RunDir
from recsys_llm.serve.served import ServedConfig

# stage -> (artifact that proves it ran, timings key)
STAGES: list[tuple[str, str, str]] = [
    ("prepare", "splits", "prepare"),
    ("embed --zero-shot", "embeddings_zeroshot/embeddings.json", "embed-zeroshot"),
    ("finetune", "encoder/encoder.json", "finetune"),
    ("embed", "embeddings/embeddings.json", "embed"),
    ("index build", "index/index.json", "index"),
    ("retrieve", "candidates", "retrieve"),
    ("hybrid", "hybrid/hybrid.json", "hybrid"),
    ("rerank train", "reranker", "rerank-train"),
    ("select", "served.json", "select"),
    ("rerank apply", "ranked", "rerank"),
    ("evaluate", "report.json", "evaluate"),
    ("export", "export/export.json", "export"),
]


def run_info(run_dir: str | Path) -> dict[str, Any]:
    """Stages done with their wall times, the served configuration and the served row's headline metric."""
    run = RunDir(Path(run_dir))
    cfg = run.load_config()
    timings = load_json(run.timings) if run.timings.exists() else {}
    stale = lineage.stale(run.root)
    stages = [{"stage": name, "done": (run.root / path).exists(), "seconds": timings.get(key),
               "stale": stale.get(key)} for name, path, key in STAGES]
    served = ServedConfig.for_run(run) if (run.embeddings() / "embeddings.json").exists() else None
    summary: dict[str, Any] = {"run": str(run.root), "data": f"{cfg.data.dataset} ({cfg.data.path or 'bundled'})",
                               "backbone": cfg.encoder.backbone}
    if stale:
        summary["stale"] = ", ".join(lineage.COMMAND[s] for s in stale) + " (rerun them in pipeline order)"
    if served is not None:
        summary["served"] = served.label + (" (chosen on validation)" if served.chosen_by == "validation"
                                            else " (default: run `recsys-llm select`)")
    if (run.root / "report.json").exists():
        report = load_json(run.root / "report.json")
        for row in report.get("rows", []):
            if row["model"] == "served":
                ndcg = {k: v for k, v in row["metrics"].items() if k.startswith("NDCG@")}
                first = min(ndcg, key=lambda k: int(k.split("@")[1])) if ndcg else None
                if first:
                    summary[f"served {row['slice']} {first}"] = f"{ndcg[first]:.4f}"
    timed = {k: v for k, v in timings.items()}
    return {"summary": summary, "stages": stages, "served": None if served is None else vars(served),
            "timings_s": timed}
