"""Plots write real PNGs, tolerate missing intervals, and never leave a partial file."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys_llm import plots

PNG = b"\x89PNG\r\n\x1a\n"


def test_each_plot_writes_a_png(tmp_path):
    curves = {"EASE": {"warm": [0.1, 0.2, 0.25], "cold-item": [0.0, 0.0, 0.0]}, "ours": {"warm": [0.2, 0.3, 0.4]}}
    p1 = plots.plot_metric_curves(curves, [1, 2, 3], "Recall", tmp_path / "r.png")
    bars = {"EASE": {"warm": {"mean": 0.1, "low": 0.08, "high": 0.12}},
            "ours": {"warm": {"mean": 0.2, "low": math.nan, "high": math.nan}, "cold-item": {"mean": 0.3}}}
    p2 = plots.plot_slice_bars(bars, "NDCG@10", tmp_path / "b.png")
    p3 = plots.plot_popularity_histogram({"EASE": np.array([0, 5, 500]), "ours": np.array([1, 2])},
                                         tmp_path / "h.png")
    for p in (p1, p2, p3):
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 1000


def test_failed_plot_leaves_no_partial_file(tmp_path, monkeypatch):
    import matplotlib.figure

    def boom(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", boom)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_popularity_histogram({"m": np.array([1, 2])}, tmp_path / "h.png")
    assert list(tmp_path.iterdir()) == []
