"""What the CLI prints: recommendation lists, report tables, index stats, the hybrid's choices, run info."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from recsys_llm.report.tables import ResultRow, format_table


def print_items(recs: pd.DataFrame) -> None:
    width = max([len(t) for t in recs["title"]] + [5])
    for r in recs.itertuples():
        print(f"{r.rank:>3}. {r.title:<{width}}  {r.score:8.4f}  [{r.item_id}]")


def print_recs(recs: pd.DataFrame) -> None:
    stage = recs["stage"].iloc[0] if len(recs) else "retrieval"
    print(f"top {len(recs)} ({stage}):")
    width = max([len(t) for t in recs["title"]] + [5])
    for r in recs.itertuples():
        why = f"  because you liked {r.because} ({r.because_similarity:.2f})" if r.because else ""
        print(f"{r.rank:>3}. {r.title:<{width}}  {r.score:8.4f}  [{r.item_id}]{why}")


def print_report(rows: list[ResultRow], run_dir: str) -> None:
    slices = list(dict.fromkeys(r.slice for r in rows))
    ks = sorted({int(n.split("@")[1]) for r in rows for n in r.metrics if n.startswith("NDCG@")})
    cols = [f"NDCG@{ks[0]}", f"Recall@{ks[0]}", f"MRR@{ks[0]}", *(f"Recall@{k}" for k in ks[1:]),
            f"Coverage@{ks[0]}", "users"] if ks else None
    for s in slices:
        print()
        print(format_table(rows, s, columns=cols, with_ci=True))
    print(f"\nreport (every metric, intervals, paired comparison): {Path(run_dir) / 'report.md'}; "
          f"plots: {Path(run_dir) / 'plots'}")


def print_pairs(rows: list[tuple[str, Any]]) -> None:
    width = max(len(str(k)) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def index_stats_rows(info: dict) -> list[tuple[str, Any]]:
    meta, params = info.get("metadata", {}), info.get("params", {})
    enc = meta.get("encoder", {})
    return [("kind", info["kind"]), ("items", f"{info['ntotal']:,}"), ("dim", info["dim"]),
            ("metric", info["metric"]),
            *((k, v) for k, v in params.items() if v not in (None, 0, False) and k != "format"),
            ("bytes on disk", f"{info['bytes_on_disk']:,}"), ("bytes per item", info["bytes_per_item"]),
            ("chosen", meta.get("choice", "")), ("tuned", json.dumps(meta.get("tuned") or {})),
            ("backbone", enc.get("backbone", "")), ("adapter sha256", (enc.get("adapter_sha256") or "none")[:16]),
            ("item template", enc.get("item_template", "")), ("data fingerprint", meta.get("data_fingerprint", "")),
            ("cold-start items", meta.get("coldstart_items", 0))]


def _few_curve(few: list | None) -> str:
    """The few-shot trust curve of ``hybrid.json``, as printed: empty when there is none (one curve)."""
    return "" if not few else f"; items with <= {few[2]:g} interactions: confidence {few[0]:g}, power {few[1]:g}"


def print_hybrid(r: dict, run_dir: str) -> None:
    print(f"hybrid: {r['user_model']} users + {r['cf_model']} (weight {r['weight']:.2f}, recency half-life "
          f"{r['halflife']:g}, confidence {r['confidence']:g} (trust power {r.get('trust_power', 1.0):g}"
          f"{_few_curve(r.get('few_trust'))}), text-neighbour bridge {r['bridge']:.2f}, "
          f"BM25 {r.get('lexical_weight', 0.0):.2f}, "
          f"{r['fusion']}), "
          f"chosen on {r['valid_users']} validation users -> {Path(run_dir) / 'hybrid'}")
    for name, b in r["best"].items():
        by_hl = r["valid_ndcg@10"][name]
        plain = next(iter(next(iter(by_hl.values())).values()))  # half-life 0 (no recency), first confidence
        line = (f"  {name} users: validation NDCG@10 best {b['ndcg@10']:.4f}; text only {plain.get('0.0', float('nan')):.4f}"
                f"; {r['cf_model']} only {plain.get('1.0', float('nan')):.4f}")
        if "cold_ndcg@10" in b:
            line += f"; all items treated as cold: text {b['cold_text_only']:.4f} -> fused {b['cold_ndcg@10']:.4f}"
            if b.get("cold_bm25_only") is not None:
                line += f" (BM25 alone {b['cold_bm25_only']:.4f})"
        if "fewshot_ndcg@10" in b:
            line += f"; pseudo-cold items (first 1-20 interactions) {b['fewshot_ndcg@10']:.4f}"
        print(line)


def print_selection(served: Any) -> None:
    v = served.validation
    print(f"served: {served.label} (chosen on {v.get('users', 0)} validation users, {v.get('metric', 'NDCG@10')})")
    rows = sorted(v.get("grid", []), key=lambda r: -r["val_ndcg@10"])
    for r in rows[:8]:
        label = r["first_stage"] + (f" -> rerank d{r['rerank_depth']} w{r['rerank_weight']:g}"
                                    if r["rerank_depth"] else "")
        print(f"  {label:<36} {r['val_ndcg@10']:.4f}")
    if len(rows) > 8:
        print(f"  ... {len(rows) - 8} more in served.json")
