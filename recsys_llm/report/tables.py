"""Report rows -> ``report.json`` / ``report.md`` and the plain-text table the CLI prints.

`write_report` saves one row per (model, slice) with the protocol that produced it; `load_report` /
`report_rows` read it back; `format_table` renders rows as aligned plain text.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from recsys_llm.io_utils import atomic_write_json, atomic_write_text, load_json
from recsys_llm.report.ablation import ablation_markdown

__all__ = ["REPORT_JSON", "REPORT_MD", "ResultRow", "format_table", "load_report", "report_rows", "write_report"]

logger = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


@dataclass
class ResultRow:
    """One line of the report: a model's metrics on one slice (``note`` e.g. "oracle" or "reranked top 50")."""

    model: str
    slice: str
    metrics: dict[str, float] = field(default_factory=dict)
    note: str = ""
    ci: dict[str, list[float]] = field(default_factory=dict)
    """95% interval ``[low, high]`` per metric (bootstrap over users), where computed."""


# ------------------------------------------------------------------------------------------------ report
def write_report(
    folder: str | Path,
    rows: list[ResultRow],
    config: dict,
    data: dict,
    extra: dict | None = None,
) -> None:
    """Write ``report.json`` and ``report.md`` into ``folder``, each atomically.

    ``report.json`` = ``{"rows", "config", "data", "protocol", "created", **extra}``; NaN metrics are stored as
    ``null`` (strict JSON). ``extra["protocol"]`` may be a text (stored as ``protocol["description"]`` and used
    as the protocol paragraph of the markdown) or a dict merged into ``protocol``.

    Args:
        folder: run directory (created if missing).
        rows: results, any order; the markdown groups them by slice in order of first appearance.
        config: the run configuration (as a dict).
        data: dataset summary; should include its ``fingerprint``.
        extra: more top-level keys (``protocol``, ``split``, ``timings_s``, ...).

    Example:
        >>> write_report("runs/ml", rows, cfg.to_dict(), ds.summary(), extra={"protocol": "Full ranking ..."})
    """
    folder = Path(folder)
    extra = dict(extra or {})
    if "fingerprint" not in data:
        logger.warning("report data has no 'fingerprint'; results cannot be tied to their data")
    protocol = _protocol(rows, config, extra)
    extra.pop("protocol", None)
    report = {
        "rows": [_row_to_json(r) for r in rows],
        "config": config,
        "data": data,
        "protocol": protocol,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
    atomic_write_json(folder / REPORT_JSON, report)
    atomic_write_text(folder / REPORT_MD, _markdown(rows, report))
    logger.info("wrote %s and %s (%d rows)", folder / REPORT_JSON, folder / REPORT_MD, len(rows))


def load_report(folder: str | Path) -> dict[str, Any]:
    """Read ``folder/report.json``.

    Metric ``null`` values come back as NaN, and each row's metrics in the column order of
    ``protocol["metrics"]`` (the JSON file itself has sorted keys). `report_rows` turns rows into `ResultRow`.
    """
    report = load_json(Path(folder) / REPORT_JSON)
    order = list((report.get("protocol") or {}).get("metrics") or [])
    for row in report.get("rows", []):
        metrics = row.get("metrics", {})
        names = [n for n in order if n in metrics] + [n for n in metrics if n not in order and n != "users"]
        names += ["users"] if "users" in metrics else []
        row["metrics"] = {n: math.nan if metrics[n] is None else metrics[n] for n in names}
    return report


def report_rows(report: dict[str, Any]) -> list[ResultRow]:
    """The rows of a loaded report as `ResultRow` objects."""
    return [ResultRow(r["model"], r["slice"], dict(r["metrics"]), r.get("note", ""),
                      {n: [math.nan if x is None else x for x in v] for n, v in (r.get("ci") or {}).items()})
            for r in report["rows"]]


def _row_to_json(row: ResultRow) -> dict[str, Any]:
    out = asdict(row)
    out["metrics"] = {n: None if _isnan(v) else v for n, v in row.metrics.items()}
    out["ci"] = {n: [None if _isnan(x) else x for x in v] for n, v in row.ci.items()}
    return out


def _isnan(v: Any) -> bool:
    try:
        return math.isnan(v)
    except TypeError:
        return False


def _protocol(rows: list[ResultRow], config: dict, extra: dict) -> dict[str, Any]:
    eval_cfg = config.get("eval", {}) if isinstance(config, dict) else {}
    split = extra.get("split", {}) if isinstance(extra.get("split"), dict) else {}
    protocol: dict[str, Any] = {
        "ranking": "full ranking over the catalog (no sampled negatives)",
        "seen_items": "filtered",
        "split": split.get("kind", config.get("split", {}).get("kind") if isinstance(config, dict) else None),
        "ks": eval_cfg.get("ks"),
        "cold_candidates": eval_cfg.get("cold_candidates"),
        "metrics": [c for c in _columns(rows) if c != "users"],  # column order (report.json sorts keys)
        "averaging": "mean over users with >= 1 held-out item",
    }
    given = extra.get("protocol")
    if isinstance(given, dict):
        protocol.update(given)
    elif given is not None:
        protocol["description"] = str(given)
    return protocol


def _protocol_text(protocol: dict[str, Any]) -> str:
    if protocol.get("description"):
        return str(protocol["description"])
    cold = protocol.get("cold_candidates")
    cold_txt = {"cold": "the cold items only", "all": "the whole catalog"}.get(str(cold), str(cold))
    return (
        f"Full ranking over the whole catalog (no sampled negatives); items the user has seen are filtered. "
        f"Split: {protocol.get('split') or 'unknown'}. Cold-item slice candidates: {cold_txt}. "
        f"Metrics are means over users with at least one held-out item."
    )


# ---------------------------------------------------------------------------------------------- tables
def _slices(rows: list[ResultRow]) -> list[str]:
    return list(dict.fromkeys(r.slice for r in rows))


def _columns(rows: list[ResultRow]) -> list[str]:
    """Metric columns in order of first appearance, ``users`` last."""
    names = list(dict.fromkeys(n for r in rows for n in r.metrics))
    return [n for n in names if n != "users"] + (["users"] if "users" in names else [])


def _fmt(value: Any, missing: str) -> str:
    if value is None:
        return missing
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    if _isnan(value):
        return "nan"
    return f"{float(value):.4f}"


def _fmt2(value: Any) -> str:
    return "nan" if value is None or _isnan(value) else f"{float(value):.2f}"


def _markdown(rows: list[ResultRow], report: dict[str, Any]) -> str:
    data = report.get("data", {})
    lines = ["# recsys-llm evaluation report", ""]
    ident = ", ".join(f"{key} `{data[key]}`" for key in ("name", "fingerprint") if key in data)
    lines += [f"Created {report['created']}" + (f"; data {ident}." if ident else "."), ""]
    lines += ["## Protocol", "", _protocol_text(report["protocol"]), ""]
    for s in _slices(rows):
        lines += [f"## Slice: {s}", "", _markdown_table([r for r in rows if r.slice == s]), ""]
    if report.get("paired"):
        lines += ["## Paired comparisons: fine-tuned models vs the best baseline, reranked vs retrieval only "
                  "(paired bootstrap over users)", "",
                  "| slice | model | baseline | metric | difference | 95% interval | p | ratio (95% interval) |",
                  "|---|---|---|---|---:|---|---:|---:|"]
        for p in report["paired"]:
            ratio = (f"{_fmt2(p['ratio'])}x ({_fmt2(p.get('ratio_low'))}–{_fmt2(p.get('ratio_high'))})"
                     if p.get("ratio") is not None else "")
            lines.append(f"| {p['slice']} | {p['model']} | {p['baseline']} | {p['metric']} | {p['diff']:+.4f} | "
                         f"[{_fmt(p['low'], 'nan')}, {_fmt(p['high'], 'nan')}] | {_fmt(p['p_value'], 'nan')} | {ratio} |")
        lines.append("")
    if report.get("rerank_sweep"):
        lines += ["## Reranking vs retrieval only, by rerank depth and fusion weight (same candidates)", "",
                  "Weight w: final score (1-w) z(retrieval) + w z(rerank) within the top depth; * = the "
                  "configured setting (the 'fine-tuned + rerank' rows). Gain = reranked - retrieval, paired "
                  "bootstrap over users.", ""]
        metric = next(key for key in report["rerank_sweep"][0] if key.startswith("NDCG@") and "gain" not in key)
        lines += [f"| slice | depth | weight | {metric} | gain | 95% interval |", "|---|---:|---:|---:|---:|---|"]
        for r in report["rerank_sweep"]:
            g = r[f"{metric} gain"]
            lines.append(f"| {r['slice']} | {r['depth']}{'*' if r['headline'] else ''} | {r['weight']:.2f} | "
                         f"{r[metric]:.4f} | {g['diff']:+.4f} | [{_fmt(g['low'], 'nan')}, {_fmt(g['high'], 'nan')}] |")
        lines.append("")
    for side, text in (("item", "cold items with n interactions revealed (0 = description only); ranked among the "
                                 "cold items; the same targets at every n"),
                       ("user", "test users with only their n most recent items known; full ranking, full known "
                                "history filtered; n <= 3 is the cold-user regime")):
        fs = (report.get("few_shot") or {}).get(side)
        if not fs:
            continue
        metric = next(iter(next(iter(fs["models"].values()))))
        lines += [f"## Few-shot, {side} side: {metric} by known interactions", "",
                  f"{text} ({fs['users']} users). 95% bootstrap intervals in brackets; plot: plots/few_shot.png.", "",
                  "| model | " + " | ".join(f"n={c}" for c in fs["counts"]) + " |",
                  "|---|" + "---:|" * len(fs["counts"])]
        for model, v in fs["models"].items():
            cells = [f"{m:.4f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in zip(v[metric], v["low"], v["high"], strict=True)]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ablation_markdown(report.get("ablation") or [], report.get("few_shot_checks") or [])
    if report.get("wall_time_s") is not None:
        lines += [f"Wall time of the run's stages: {report['wall_time_s']} s; git commit "
                  f"`{report.get('git_commit')}`; seeds {report.get('seeds')}.", ""]
    return "\n".join(lines)


def _markdown_table(rows: list[ResultRow]) -> str:
    """Rows = models, columns = metrics (4 decimals); the best value of each metric column in **bold**."""
    cols = _columns(rows)
    has_note = any(r.note for r in rows)
    best: dict[str, float] = {}
    for c in cols:
        vals = [float(r.metrics[c]) for r in rows if c in r.metrics and not _isnan(r.metrics[c])]
        if c != "users" and vals:
            best[c] = max(vals)
    header = ["model", *cols] + (["note"] if has_note else [])
    align = ["---", *(["---:"] * len(cols))] + (["---"] if has_note else [])
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for r in rows:
        cells = [r.model]
        for c in cols:
            v = r.metrics.get(c)
            text = _fmt(v, "–")
            if c in best and v is not None and not _isnan(v) and _fmt(v, "") == _fmt(best[c], ""):
                text = f"**{text}**"
            if c in r.ci and not any(_isnan(x) for x in r.ci[c]):
                text += f" ({_fmt(r.ci[c][0], '')}–{_fmt(r.ci[c][1], '')})"
            cells.append(text)
        if has_note:
            cells.append(r.note)
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def format_table(rows: list[ResultRow], slice: str | None = None, columns: Sequence[str] | None = None,
                 with_ci: bool = False) -> str:
    """Aligned plain-text table: ``model | slice | metric columns | users``, one header line, 4 decimals.

    Text columns are left-aligned, numbers right-aligned, columns separated by two spaces; a dashed rule
    follows the header. Missing metrics show ``-``; NaN shows ``nan``. The CLI prints it; this returns it.

    Args:
        rows: results.
        slice: keep only this slice's rows; ``None`` keeps all.
        columns: metric columns to show, in this order (default: all).
        with_ci: append each metric's 95% interval as ``[low, high]`` where the row has one.

    Example:
        >>> print(format_table([ResultRow("popularity", "warm", {"NDCG@10": 0.0443, "users": 943})]))
        model       slice  NDCG@10  users
        ----------  -----  -------  -----
        popularity  warm    0.0443    943
    """
    if slice is not None:
        rows = [r for r in rows if r.slice == slice]
    cols = _columns(rows) if columns is None else [c for c in columns if any(c in r.metrics for r in rows)]
    has_note = any(r.note for r in rows)
    header = ["model", "slice", *cols] + (["note"] if has_note else [])

    def cell(r: ResultRow, c: str) -> str:
        text = _fmt(r.metrics.get(c), "-")
        if with_ci and c in r.ci and not any(_isnan(x) for x in r.ci[c]):
            text += f" [{_fmt(r.ci[c][0], '')}, {_fmt(r.ci[c][1], '')}]"
        return text

    body = [[r.model, r.slice, *(cell(r, c) for c in cols)] + ([r.note] if has_note else []) for r in rows]
    numeric = [False, False, *([True] * len(cols))] + ([False] if has_note else [])
    widths = [max(len(line[j]) for line in [header, *body]) for j in range(len(header))]

    def render(cells: list[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(header), rule, *(render(b) for b in body)])
