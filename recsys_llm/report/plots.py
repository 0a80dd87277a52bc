"""PNG plots of a report: metric@K curves, per-slice bars with interval whiskers, popularity of recommendations.

matplotlib is imported inside each function, so importing this module is cheap. Figures are drawn on an
explicit Agg canvas (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``), never through ``pyplot``: plotting
changes no global backend or state (an inline notebook session keeps its backend) and leaks no open figures.
Every file is written to a temporary name beside its target and renamed (``io_utils.atomic_path``), so a failed
plot never leaves a partial PNG.

Colours: model ``i`` in ``models`` (default: the input's key order) gets colour ``i`` of ``tab10`` (``tab20``
past 10 models). Pass the same ``models`` list to every plot of a report to keep one colour per model even
where a plot lacks some models.

Example:
    >>> plot_metric_curves({"EASE": {"warm": [0.1, 0.2]}}, [1, 2], "Recall", "plots/recall_at_k.png")  # doctest: +SKIP
    PosixPath('plots/recall_at_k.png')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys_llm.io_utils import atomic_path

_DPI = 110


def _figure(**kwargs: Any):
    """A figure on its own Agg canvas (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG to a temporary name beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight")
    return path


def _model_order(present: Sequence[str], models: Sequence[str] | None) -> list[str]:
    """``models`` (deduplicated) followed by any present model it lacks, in input order."""
    order = list(dict.fromkeys(models or ()))
    return order + [m for m in present if m not in order]


def _colors(order: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(order) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(order)}


def _num(x: Any) -> float:
    """A finite float, or NaN for None / NaN / inf / anything not a number."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def plot_metric_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], ks: Sequence[int], metric: str,
                       path: str | Path, models: Sequence[str] | None = None) -> Path:
    """Line plot of ``metric@K`` against ``K``: one subplot per slice, one line per model.

    Args:
        curves: ``curves[model][slice]`` = the metric at each ``K`` of ``ks`` (same length; NaN leaves a gap).
            A model may lack some slices.
        ks: the list lengths ``K`` (x axis).
        metric: the metric's name, e.g. ``"Recall"`` or ``"NDCG"`` (y axis ``"{metric}@K"``).
        path: the PNG to write (folders are created).
        models: colour and legend order (see the module docstring); default: the keys of ``curves``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: ``ks`` is empty or a curve's length differs from ``len(ks)``.
    """
    ks = list(ks)
    if not ks:
        raise ValueError("ks is empty")
    for m, per_slice in curves.items():
        for s, vals in per_slice.items():
            if len(vals) != len(ks):
                raise ValueError(f"curves[{m!r}][{s!r}] has {len(vals)} values for {len(ks)} values of K")
    from matplotlib.lines import Line2D

    order = _model_order(list(curves), models)
    colors = _colors(order)
    slices = list(dict.fromkeys(s for m in curves for s in curves[m])) or ["(no data)"]
    fig = _figure(figsize=(4.5 * len(slices), 3.8), layout="constrained")
    axes = fig.subplots(1, len(slices), squeeze=False)[0]
    marker = "o" if len(ks) <= 20 else None
    for ax, s in zip(axes, slices, strict=True):
        for m in order:
            if m in curves and s in curves[m]:
                ax.plot(ks, np.asarray(curves[m][s], dtype=np.float64), color=colors[m], marker=marker,
                        markersize=3, linewidth=1.5)
        ax.set_title(f"slice: {s}")
        ax.set_xlabel("K (length of the recommendation list)")
        ax.set_ylabel(f"{metric}@K (mean over users)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors[m], marker=marker, markersize=3, label=m) for m in order if m in curves]
    if handles:  # one legend for the figure, outside the axes: every model, even one missing from a slice
        fig.legend(handles=handles, loc="outside right center", fontsize=8)
    fig.suptitle(f"{metric}@K against K, per slice")
    return _save(fig, path)


def plot_slice_bars(values: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str, path: str | Path,
                    models: Sequence[str] | None = None,
                    interval_label: str = "95% bootstrap interval over users") -> Path:
    """Grouped bars: per slice, one bar per model at its mean, with whiskers from ``low`` to ``high``.

    Args:
        values: ``values[model][slice] = {"mean": .., "low": .., "high": ..}``. A missing, None or NaN
            ``low``/``high`` draws no whisker; a missing or NaN ``mean`` draws no bar. A whisker end on the
            wrong side of the mean (e.g. rounded inputs) is clipped to the mean rather than failing.
        metric: the metric's name, e.g. ``"NDCG@10"`` (y axis).
        path: the PNG to write.
        models: colour and bar order; default: the keys of ``values``.
        interval_label: what the whiskers are, for the title.

    Returns:
        ``path`` as a ``Path``.
    """
    order = [m for m in _model_order(list(values), models) if m in values]
    colors = _colors(_model_order(list(values), models))
    slices = list(dict.fromkeys(s for m in values for s in values[m]))
    width = 0.8 / max(1, len(order))
    fig = _figure(figsize=(max(6.0, 0.35 * len(slices) * max(1, len(order)) + 2), 4), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(slices), dtype=np.float64)
    for i, m in enumerate(order):
        means, below, above = [], [], []
        for s in slices:
            v = values[m].get(s) or {}
            mean, low, high = _num(v.get("mean")), _num(v.get("low")), _num(v.get("high"))
            ok = not (math.isnan(mean) or math.isnan(low) or math.isnan(high))
            means.append(mean)
            below.append(max(0.0, mean - low) if ok else 0.0)
            above.append(max(0.0, high - mean) if ok else 0.0)
        ax.bar(x + (i + 0.5) * width - 0.4, means, width, yerr=[below, above], capsize=2, label=m,
               color=colors[m], error_kw={"elinewidth": 1})
    ax.set_xticks(x)
    ax.set_xticklabels(slices)
    ax.set_xlabel("slice")
    ax.set_ylabel(f"{metric} (mean over users)")
    ax.set_title(f"{metric} per slice (whiskers: {interval_label})")
    ax.grid(axis="y", alpha=0.3)
    if order:
        fig.legend(loc="outside right center", fontsize=8)
    return _save(fig, path)


def plot_popularity_histogram(rec_popularity: Mapping[str, np.ndarray], path: str | Path, bins: int = 30,
                              models: Sequence[str] | None = None) -> Path:
    """Overlaid step histograms of the training popularity of every recommended item, one per model.

    The x axis is logarithmic over ``popularity + 1`` (so never-seen items, popularity 0, land at 1; the
    axis label says so), with ``bins`` log-spaced bins shared by all models; the y axis counts
    recommendations (one per recommended item per user). Integer counts get bin edges at half-integers
    (about ``bins`` bins; popularity 0 gets its own), so narrow low bins holding no integer show no false gaps.

    Args:
        rec_popularity: ``rec_popularity[model]`` = training interaction count of each recommended item
            (any shape; flattened). NaN entries are dropped; a model with none left is listed in the legend
            as ``(none)``.
        path: the PNG to write.
        bins: number of bins (at least 1).
        models: colour and legend order; default: the keys of ``rec_popularity``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: ``bins < 1`` or a popularity is negative.
    """
    if bins < 1:
        raise ValueError(f"bins={bins}: need at least 1")
    data: dict[str, np.ndarray] = {}
    for m, v in rec_popularity.items():
        v = np.asarray(v, dtype=np.float64).ravel()
        v = v[~np.isnan(v)]
        if (v < 0).any():
            raise ValueError(f"rec_popularity[{m!r}] has negative counts")
        data[m] = v
    order = [m for m in _model_order(list(data), models) if m in data]
    colors = _colors(_model_order(list(data), models))
    top = max((float(v.max()) for v in data.values() if len(v)), default=0.0)
    edges = np.logspace(0.0, np.log10(top + 1.0) + 1e-9, bins + 1)
    if all(np.array_equal(v, np.round(v)) for v in data.values()):
        # integer counts: edges at half-integers, so no bin falls between two integers and shows a false gap
        # (popularity 0, at x = 1, gets a bin of its own)
        edges = np.unique(np.r_[0.5, np.round(edges) + 0.5])
    fig = _figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for m in order:
        v = data[m]
        if len(v):
            ax.hist(v + 1.0, bins=edges, histtype="step", label=m, color=colors[m], linewidth=1.5)
        else:
            ax.plot([], [], color=colors[m], label=f"{m} (none)")
    ax.set_xscale("log")
    ax.set_xlabel("training interactions of the recommended item + 1 (log scale; +1 so 0 is shown)")
    ax.set_ylabel("number of recommendations")
    ax.set_title("Popularity of recommended items, per model")
    ax.grid(alpha=0.3)
    if order:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_few_shot(curves: Mapping[str, Any], metric: str, path: str | Path, models: Sequence[str] | None = None
                  ) -> Path:
    """Few-shot curves: ``metric`` against the number of known interactions, one subplot per side.

    Args:
        curves: ``{"item": side, "user": side}`` (a side may be None), each side ``{"counts": [...], "models":
            {model: {metric: [...], "low": [...], "high": [...]}}}`` (:func:`recsys_llm.fewshot.few_shot_curves`).
        metric: e.g. ``"NDCG@10"``.
        path: the PNG to write.
        models: colour order; default the models in the curves.

    Returns:
        ``path`` as a ``Path``.
    """
    sides = [(name, s) for name, s in curves.items() if s]
    if not sides:
        raise ValueError("no few-shot curve to plot")
    present = list(dict.fromkeys(m for _, s in sides for m in s["models"]))
    order = _model_order(present, [m for m in (models or present) if m in present])
    colors = _colors(order)
    fig = _figure(figsize=(5.0 * len(sides), 3.9), layout="constrained")
    axes = fig.subplots(1, len(sides), squeeze=False)[0]
    labels = {"item": "known interactions of each cold item (0 = description only)",
              "user": "known interactions of each user (most recent kept)"}
    for ax, (name, side) in zip(axes, sides, strict=True):
        x = np.asarray(side["counts"], dtype=np.float64)
        for m in order:
            if m not in side["models"]:
                continue
            v = side["models"][m]
            ax.plot(x, np.asarray(v[metric], dtype=np.float64), color=colors[m], marker="o", markersize=3,
                    linewidth=1.5, label=m)
            ax.fill_between(x, np.asarray(v["low"], dtype=np.float64), np.asarray(v["high"], dtype=np.float64),
                            color=colors[m], alpha=0.12, linewidth=0)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(x, [str(int(c)) for c in x])
        ax.set_title(f"{name} side")
        ax.set_xlabel(labels.get(name, "known interactions"))
        ax.set_ylabel(f"{metric} (95% interval)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", fontsize=8)
    fig.suptitle(f"{metric} against known interactions")
    return _save(fig, path)
