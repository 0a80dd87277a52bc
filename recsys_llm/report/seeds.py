"""Repeatability: the same recipe run with several seeds, summarised per row as mean and spread.

The split stays fixed (``split.seed``), so every seed scores the same test interactions; what varies is every
model's own randomness: fine-tuning order and LoRA init (``train.seed``), the reranker (``rerank.seed``), the
pooling model and the hybrid's validation sample (``hybrid.seed``), and the baselines' seed, the evaluation
user sample, tie order and bootstrap (``eval.seed``). The spread over seeds is what two runs of one setup can
differ by; the bootstrap interval of one run is what its test users can differ by. Both go in the table.
:func:`seed_paired` lines up each seed's paired comparison of the served row against the best baseline (its
difference and paired interval) and says in how many seeds the interval is above zero.

Example:
    >>> from recsys_llm.report.tables import ResultRow
    >>> runs = [[ResultRow("EASE", "warm", {"NDCG@10": v}, ci={"NDCG@10": [v - .01, v + .01]})] for v in (.1, .12)]
    >>> rows = seed_summary(runs, ("NDCG@10",))
    >>> round(rows[0]["NDCG@10"]["mean"], 3), round(rows[0]["NDCG@10"]["std"], 4), rows[0]["seeds"]
    (0.11, 0.0141, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recsys_llm.config import PipelineConfig
from recsys_llm.report.tables import ResultRow

SEED_FIELDS = ("train.seed", "rerank.seed", "hybrid.seed", "eval.seed")


def with_seed(cfg: PipelineConfig, seed: int) -> PipelineConfig:
    """``cfg`` with every model seed (:data:`SEED_FIELDS`) set to ``seed``; the split is left as it is."""
    return cfg.override({name: seed for name in SEED_FIELDS})


def seed_summary(runs: Sequence[Sequence[ResultRow]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Per (slice, model): mean, sample std, min and max of each metric over the runs, and the first run's
    bootstrap interval. Rows keep the first run's order; a row missing from some runs counts the runs it is in."""
    by_key: dict[tuple[str, str], list[ResultRow]] = {}
    for rows in runs:
        for r in rows:
            by_key.setdefault((r.slice, r.model), []).append(r)
    out = []
    for (slice_name, model), rows in by_key.items():
        entry: dict[str, Any] = {"slice": slice_name, "model": model, "seeds": len(rows)}
        for m in metrics:
            v = np.array([r.metrics.get(m, np.nan) for r in rows], dtype=np.float64)
            v = v[np.isfinite(v)]
            if len(v) == 0:
                continue
            entry[m] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                        "min": float(v.min()), "max": float(v.max()), "ci_first": rows[0].ci.get(m)}
        out.append(entry)
    return out


def seed_markdown(summary: Sequence[dict[str, Any]], metrics: Sequence[str]) -> str:
    """A markdown table per slice: ``mean ± std [min, max]`` over seeds and the first seed's interval."""
    lines: list[str] = []
    for slice_name in dict.fromkeys(e["slice"] for e in summary):
        lines += [f"### {slice_name}", "", "| model | seeds | " + " | ".join(
            f"{m} mean ± std [min, max] | {m} 95% interval (seed 0)" for m in metrics) + " |",
            "|---|---:|" + "---:|---|" * len(metrics)]
        for e in (e for e in summary if e["slice"] == slice_name):
            cells = []
            for m in metrics:
                s = e.get(m)
                if s is None:
                    cells += ["", ""]
                    continue
                ci = s["ci_first"]
                cells += [f"{s['mean']:.4f} ± {s['std']:.4f} [{s['min']:.4f}, {s['max']:.4f}]",
                          f"{ci[0]:.4f}–{ci[1]:.4f}" if ci else ""]
            lines.append(f"| {e['model']} | {e['seeds']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def seed_paired(paired_runs: Sequence[Sequence[dict[str, Any]]], model: str = "served",
                metric: str = "NDCG@10") -> list[dict[str, Any]]:
    """Per (slice, baseline): ``model``'s paired difference against the baseline in every seed's report
    (``report.json`` -> ``paired``), the mean difference, and how many seeds have their 95% interval above zero
    (or below). Seeds without that comparison are left out of its entry."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for paired in paired_runs:
        for p in paired:
            if p["model"] == model and p["metric"] == metric:
                by_key.setdefault((p["slice"], p["baseline"]), []).append(p)
    return [{"slice": sl, "model": model, "baseline": base, "metric": metric, "seeds": len(ps),
             "diffs": [(p["diff"], p["low"], p["high"]) for p in ps],
             "mean_diff": float(np.mean([p["diff"] for p in ps])),
             "above_zero": sum(p["low"] > 0 for p in ps), "below_zero": sum(p["high"] < 0 for p in ps)}
            for (sl, base), ps in by_key.items()]


def seed_paired_markdown(entries: Sequence[dict[str, Any]]) -> str:
    """One line per (slice, baseline): every seed's ``diff [low, high]``, the mean, and the interval count."""
    lines = ["| slice | model | baseline | metric | per seed: difference [95% interval] | mean | "
             "intervals above / below 0 |", "|---|---|---|---|---|---:|---|"]
    for e in entries:
        per = "; ".join(f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]" for d, lo, hi in e["diffs"])
        lines.append(f"| {e['slice']} | {e['model']} | {e['baseline']} | {e['metric']} | {per} | "
                     f"{e['mean_diff']:+.4f} | {e['above_zero']} / {e['below_zero']} of {e['seeds']} |")
    return "\n".join(lines) + "\n"
