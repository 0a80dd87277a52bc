"""The ablation: what the text model adds over the best ID-only model, and what the ID signal adds over the best
text-only model, per slice and few-shot point, with paired intervals (issue 15).

Every model the report scores is of one kind (:data:`KINDS`, :data:`FEW_SHOT_KINDS`):

* **ID-only**: interactions only (most popular, ItemKNN, EASE, SASRec, the hybrid's collaborative part);
* **text-only**: item text only at scoring time (BM25, the zero-shot and fine-tuned encoders, the pooled and sequence users,
  the reranker; the fine-tuned ones learned from training interactions, but score any item from its text);
* **both**: the hybrid, and the served row when it serves the hybrid (:func:`served_kind`).

For each combined row::

    text adds = combined - best ID-only        ID adds = combined - best text-only

each the mean NDCG@k difference over the same users with its paired 95% bootstrap interval
(:func:`~recsys_llm.report.stats.paired_bootstrap`). The best row of a kind is the one with the highest mean on
that slice (chosen on the test users themselves, which favours the single-signal side). On cold items no ID-only
model has a single interaction of the targets: most score every candidate alike and the report ranks them in
its seeded random order, SASRec scores them with item vectors that never were a positive. The entry names the
best such row with ``blind`` set, so "text adds" there is the gain over chance.

:func:`few_shot_checks` reads the hybrid's few-shot curve: is it non-decreasing within its intervals (no step
between consecutive counts whose paired interval lies below zero), and is it ever below the better of the
best text-only and the best ID-only model (paired, at each count)?

Example:
    >>> import numpy as np
    >>> pu = {"ease": np.array([0.2, 0.4, 0.0, 0.3]), "retrieval": np.array([0.1, 0.5, 0.2, 0.1]),
    ...       "hybrid": np.array([0.3, 0.5, 0.2, 0.4])}
    >>> e = ablate(pu, KINDS, "warm", "NDCG@10", n_boot=100)[0]
    >>> e["id_only"]["model"], e["text_only"]["model"], round(e["text_adds"]["diff"], 3)
    ('EASE', 'fine-tuned retrieval', 0.125)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from recsys_llm.report.scoring import BASELINE_NAMES, MODEL_NAMES, display
from recsys_llm.report.stats import paired_bootstrap

ID, TEXT, BOTH = "ID-only", "text-only", "both"

KINDS: dict[str, str] = {
    "popularity": ID,
    "itemknn": ID,
    "ease": ID,
    "ease_recency": ID,
    "sasrec": ID,
    "hybrid_cf": ID,
    "bm25": TEXT,
    "zeroshot": TEXT,
    "retrieval": TEXT,
    "rerank": TEXT,
    "pooling": TEXT,
    "sequence": TEXT,
    "hybrid": BOTH,
}
"""The report's model keys by kind (``random`` is none: it is the floor, not a model of either signal)."""

FEW_SHOT_KINDS: dict[str, str] = {
    BASELINE_NAMES["popularity"]: ID,
    "EASE (ID only)": ID,
    "ItemKNN (ID only)": ID,
    BASELINE_NAMES["bm25"]: TEXT,
    MODEL_NAMES["retrieval"] + " (text user)": TEXT,
    MODEL_NAMES["pooling"]: TEXT,
    MODEL_NAMES["sequence"]: TEXT,
    MODEL_NAMES["hybrid"]: BOTH,
}
"""The few-shot curves' model names (:mod:`recsys_llm.report.fewshot`) by kind."""


def served_kind(first_stage: str | None) -> str | None:
    """The kind of the served row: both when it serves the hybrid, text-only when dense retrieval (a reranker
    on top reads text); None for a first stage this table does not know."""
    return {"hybrid": BOTH, "dense": TEXT}.get(str(first_stage))


def _mean(values: np.ndarray) -> float:
    """Mean over the users with a value (NaN: none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else float("nan")


def _best(per_user: Mapping[str, np.ndarray], kinds: Mapping[str, str | None], kind: str) -> str | None:
    """The model of ``kind`` with the highest mean (first in order on ties); None when there is none."""
    keys = [k for k in per_user if kinds.get(k) == kind and not np.isnan(_mean(per_user[k]))]
    return max(keys, key=lambda k: _mean(per_user[k]), default=None)


def ablate(
    per_user: Mapping[str, np.ndarray],
    kinds: Mapping[str, str | None],
    slice_name: str,
    metric: str,
    blind: Collection[str] = (),
    n_boot: int = 1000,
    seed: int = 0,
    label: Callable[[str], str] = display,
) -> list[dict]:
    """One ablation entry per combined model of a slice (see the module doc).

    Args:
        per_user: model key -> ``(n_users,)`` per-user ``metric`` values, the same users in the same order.
        kinds: model key -> :data:`ID`, :data:`TEXT` or :data:`BOTH` (others are left out).
        slice_name: the slice (or few-shot point) the values come from.
        metric: the metric's name, e.g. ``NDCG@10``.
        blind: model keys without evidence for this slice's targets (cold items), ranked at chance.
        label: model key -> the report's name.

    Returns:
        ``[{"slice", "metric", "users", "combined": {"model", "mean"}, "id_only": {"model", "mean", "blind"} |
        None, "text_only": {...} | None, "text_adds": PairedDiff dict | None, "id_adds": ... | None}]``.
    """
    best = {kind: _best(per_user, kinds, kind) for kind in (ID, TEXT)}
    out = []
    for key in (k for k in per_user if kinds.get(k) == BOTH):
        entry: dict = {
            "slice": slice_name,
            "metric": metric,
            "users": int(np.sum(~np.isnan(per_user[key]))),
            "combined": {"model": label(key), "mean": _mean(per_user[key])},
        }
        for kind, side, adds in ((ID, "id_only", "text_adds"), (TEXT, "text_only", "id_adds")):
            b = best[kind]
            entry[side] = (
                None if b is None else {"model": label(b), "mean": _mean(per_user[b]), "blind": b in blind}
            )
            entry[adds] = (
                None
                if b is None
                else paired_bootstrap(per_user[key], per_user[b], n_boot=n_boot, seed=seed).to_dict()
            )
        out.append(entry)
    return out


def few_shot_checks(
    counts: Sequence[int],
    per_user: Sequence[Mapping[str, np.ndarray]],
    side: str,
    n_boot: int = 1000,
    seed: int = 0,
    kinds: Mapping[str, str | None] = FEW_SHOT_KINDS,
) -> dict | None:
    """Is the combined model's few-shot curve non-decreasing within its intervals, and ever below
    ``max(best text-only, best ID-only)``?

    Args:
        counts: the curve's known-interaction counts, ascending.
        per_user: one ``{model name: per-user values}`` per count, the same users at every count.
        side: ``item`` or ``user`` (named in the line).

    Returns:
        ``{"side", "model", "monotone", "worst_step", "below_floor", "floor", "line"}`` (None without a
        combined model): ``monotone`` is False when some step ``n_i -> n_{i+1}`` has a paired 95% interval
        entirely below 0; ``worst_step`` is the step with the lowest mean change; ``floor`` has, per count, the
        combined mean minus the better single-signal model (paired), ``below_floor`` the counts where that
        interval lies entirely below 0.
    """
    model = next((m for m in per_user[0] if kinds.get(m) == BOTH), None) if per_user else None
    if model is None:
        return None
    steps = [
        {
            "from": a,
            "to": b,
            **paired_bootstrap(
                per_user[i + 1][model], per_user[i][model], n_boot=n_boot, seed=seed
            ).to_dict(),
        }
        for i, (a, b) in enumerate(zip(counts[:-1], counts[1:], strict=True))
    ]
    floor: list[dict[str, Any]] = []
    for n, pu in zip(counts, per_user, strict=True):
        single = [b for b in (_best(pu, kinds, ID), _best(pu, kinds, TEXT)) if b is not None]
        if single:
            b = max(single, key=lambda k: _mean(pu[k]))
            floor.append(
                {
                    "n": n,
                    "best_single": b,
                    **paired_bootstrap(pu[model], pu[b], n_boot=n_boot, seed=seed).to_dict(),
                }
            )
    worst = min(steps, key=lambda s: s["diff"], default=None)
    monotone = not any(s["high"] < 0 for s in steps)
    below = [f["n"] for f in floor if f["high"] < 0]
    return {
        "side": side,
        "model": model,
        "monotone": monotone,
        "steps": steps,
        "worst_step": worst,
        "below_floor": below,
        "floor": floor,
        "line": _check_line(side, monotone, worst, below, floor),
    }


def _interval(d: Mapping) -> str:
    return f"{d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"


def _check_line(side: str, monotone: bool, worst: dict | None, below: list[int], floor: list[dict]) -> str:
    mono = "yes" if monotone else "no"
    if worst is not None:
        mono += f" (weakest step n={worst['from']}->{worst['to']}: {_interval(worst)})"
    lowest = min(floor, key=lambda f: f["diff"], default=None)
    if below:
        under = "yes, at n=" + ", ".join(map(str, below))
    else:
        under = "no" + (
            " (mean below it at n=" + ", ".join(str(f["n"]) for f in floor if f["diff"] < 0) + ", "
            "within the interval)"
            if any(f["diff"] < 0 for f in floor)
            else ""
        )
    if lowest is not None:
        under += f"; lowest at n={lowest['n']}: {_interval(lowest)} vs {lowest['best_single']}"
    return f"{side} side: non-decreasing within intervals: {mono}; below max(text-only, ID-only): {under}"


def ablation_markdown(entries: Sequence[dict], checks: Sequence[dict] = ()) -> list[str]:
    """The report's ablation section (markdown lines); empty without entries or checks."""
    lines: list[str] = []
    if entries:
        metric = entries[0]["metric"]
        lines += [
            f"## Ablation: what text adds over ID-only and ID adds over text ({metric})",
            "",
            "Best ID-only / text-only = the row of that kind with the highest mean on the slice (chosen on "
            "these users). Text adds = combined - best ID-only, ID adds = combined - best text-only: mean "
            "difference over the same users, paired 95% bootstrap interval. † = the ID-only row has no "
            "interaction of the slice's targets (cold items): it ranks them at chance (constant scores in "
            "the seeded random order, or SASRec's item vectors that never were a positive), so text adds "
            "is the gain over chance.",
            "",
            f"| slice | combined | {metric} | best ID-only | {metric} | text adds [95%] | best text-only | "
            f"{metric} | ID adds [95%] | users |",
            "|---|---|---:|---|---:|---|---|---:|---|---:|",
        ]
        for e in entries:
            cells = [e["slice"], e["combined"]["model"], f"{e['combined']['mean']:.4f}"]
            for side, adds in (("id_only", "text_adds"), ("text_only", "id_adds")):
                s = e[side]
                cells += (
                    ["none", "–", "–"]
                    if s is None
                    else [
                        s["model"] + (" †" if s.get("blind") else ""),
                        f"{s['mean']:.4f}",
                        _interval(e[adds]),
                    ]
                )
            lines.append("| " + " | ".join([*cells, str(e["users"])]) + " |")
        lines.append("")
    if checks:
        lines += [
            "## Few-shot checks of the hybrid's curves",
            "",
            "Steps and floors are paired over the same users (95% bootstrap); a step or a gap counts only "
            "when its interval lies below zero.",
            "",
        ]
        lines += [f"* {c['line']}" for c in checks] + [""]
    return lines
