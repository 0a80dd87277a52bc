"""PNG plots of a report: metric@K curves, per-slice bars with interval whiskers, popularity of recommendations.

matplotlib (Agg backend) is imported inside each function, so importing this module is cheap. Every file is
written to a temporary name beside its target and renamed, so a failed plot never leaves a partial PNG.

Example:
    >>> plot_metric_curves({"EASE": {"warm": [0.1, 0.2]}}, [1, 2], "Recall", "plots/recall_at_k.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from recsys_llm.io_utils import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    plt = _pyplot()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _colors(models: list[str]) -> dict[str, object]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(models)}


def plot_metric_curves(curves: dict[str, dict[str, list[float]]], ks: list[int], metric: str,
                       path: str | Path) -> Path:
    """One subplot per slice, one line per model: ``metric@K`` against ``K`` (``curves[model][slice]``)."""
    plt = _pyplot()
    models = list(curves)
    slices = list(dict.fromkeys(s for m in models for s in curves[m]))
    colors = _colors(models)
    fig, axes = plt.subplots(1, max(1, len(slices)), figsize=(5 * max(1, len(slices)), 4), squeeze=False)
    for ax, s in zip(axes[0], slices, strict=False):
        for m in models:
            if s in curves[m]:
                ax.plot(ks, curves[m][s], label=m, color=colors[m])
        ax.set_title(f"{metric}@K, slice {s}")
        ax.set_xlabel("K (list length)")
        ax.set_ylabel(f"{metric}@K")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(fig, path)


def plot_slice_bars(values: dict[str, dict[str, dict]], metric: str, path: str | Path) -> Path:
    """Grouped bars: per slice, one bar per model at ``values[model][slice]["mean"]`` with 95% whiskers."""
    plt = _pyplot()
    models = list(values)
    slices = list(dict.fromkeys(s for m in models for s in values[m]))
    colors = _colors(models)
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(slices) * max(1, len(models)) / 3), 4))
    x = np.arange(len(slices))
    for i, m in enumerate(models):
        means, lo, hi = [], [], []
        for s in slices:
            v = values[m].get(s, {})
            mean = v.get("mean", math.nan)
            low, high = v.get("low", math.nan), v.get("high", math.nan)
            means.append(mean)
            ok = not (low is None or high is None or math.isnan(low) or math.isnan(high))
            lo.append(mean - low if ok else 0.0)
            hi.append(high - mean if ok else 0.0)
        ax.bar(x + i * width - 0.4 + width / 2, means, width, yerr=[lo, hi], capsize=2, label=m,
               color=colors[m])
    ax.set_xticks(x)
    ax.set_xticklabels(slices)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per slice (whiskers: 95% bootstrap interval over users)")
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def plot_popularity_histogram(rec_popularity: dict[str, np.ndarray], path: str | Path, bins: int = 30) -> Path:
    """Overlaid step histograms of the training popularity of every recommended item, per model (log x)."""
    plt = _pyplot()
    models = list(rec_popularity)
    colors = _colors(models)
    top = max((float(np.max(v)) for v in rec_popularity.values() if len(v)), default=1.0)
    edges = np.logspace(0, np.log10(top + 1) + 1e-9, bins + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    for m in models:
        v = np.asarray(rec_popularity[m], dtype=np.float64)
        if len(v):
            ax.hist(v + 1, bins=edges, histtype="step", label=m, color=colors[m], linewidth=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("training interactions of the recommended item + 1 (log scale)")
    ax.set_ylabel("recommendations")
    ax.set_title("Popularity of recommended items")
    ax.legend(fontsize=8)
    return _save(fig, path)
