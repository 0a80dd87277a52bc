"""Plots write real PNGs, tolerate missing intervals, and never leave a partial file."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from recsys_llm.report import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(p):
    return p.read_bytes()[:8] == PNG and p.stat().st_size > 1000


def test_each_plot_writes_a_png(tmp_path):
    curves = {"EASE": {"warm": [0.1, 0.2, 0.25], "cold-item": [0.0, 0.0, 0.0]},
              "ours": {"warm": [0.2, 0.3, math.nan]}}
    p1 = plots.plot_metric_curves(curves, [1, 2, 3], "Recall", tmp_path / "r.png")
    bars = {"EASE": {"warm": {"mean": 0.1, "low": 0.08, "high": 0.12}},
            "ours": {"warm": {"mean": 0.2, "low": math.nan, "high": math.nan}, "cold-item": {"mean": 0.3},
                     "cold-user": {"mean": 0.1, "low": None, "high": None}}}
    p2 = plots.plot_slice_bars(bars, "NDCG@10", tmp_path / "sub" / "b.png")
    p3 = plots.plot_popularity_histogram({"EASE": np.array([0, 5, 500]), "ours": np.array([1, 2])},
                                         str(tmp_path / "h.png"))
    assert (p1, p2, p3) == (tmp_path / "r.png", tmp_path / "sub" / "b.png", tmp_path / "h.png")
    for p in (p1, p2, p3):
        assert _is_png(p)
    # no temporary files left behind
    assert sorted(f.name for f in tmp_path.iterdir()) == ["h.png", "r.png", "sub"]
    assert [f.name for f in (tmp_path / "sub").iterdir()] == ["b.png"]


def test_odd_inputs_do_not_crash(tmp_path):
    # a whisker end on the wrong side of the mean (rounded inputs), a NaN mean, empty / NaN popularity
    bars = {"m": {"warm": {"mean": 0.1, "low": 0.12, "high": 0.2}, "cold": {"mean": math.nan, "low": 0, "high": 1}}}
    assert _is_png(plots.plot_slice_bars(bars, "NDCG@10", tmp_path / "b.png", models=["other", "m"]))
    pop = {"a": np.array([]), "b": np.array([0.0, np.nan, 0.0])}
    assert _is_png(plots.plot_popularity_histogram(pop, tmp_path / "h.png", bins=5))
    assert _is_png(plots.plot_popularity_histogram({"a": np.array([0.5, 12.3])}, tmp_path / "f.png"))


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(ValueError, match="values of K"):
        plots.plot_metric_curves({"m": {"warm": [0.1, 0.2]}}, [1, 2, 3], "Recall", tmp_path / "r.png")
    with pytest.raises(ValueError, match="negative"):
        plots.plot_popularity_histogram({"m": np.array([-1, 2])}, tmp_path / "h.png")
    assert list(tmp_path.iterdir()) == []


def test_stable_colours():
    assert plots._colors(["a", "b"])["b"] == plots._colors(["a", "b", "c"])["b"]
    assert plots._model_order(["c", "a"], ["a", "b"]) == ["a", "b", "c"]


def test_failed_plot_leaves_no_partial_file(tmp_path, monkeypatch):
    import matplotlib.figure

    target = tmp_path / "h.png"
    target.write_bytes(b"last good")

    def boom(self, fname, *a, **k):
        open(fname, "wb").write(b"partial")  # noqa: SIM115
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", boom)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_popularity_histogram({"m": np.array([1, 2])}, target)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_metric_curves({"m": {"w": [0.1]}}, [1], "NDCG", tmp_path / "c.png")
    assert [f.name for f in tmp_path.iterdir()] == ["h.png"] and target.read_bytes() == b"last good"


def test_import_is_cheap_and_plotting_leaves_pyplot_alone():
    code = ("import sys, recsys_llm.report.plots as p; assert 'matplotlib' not in sys.modules; "
            "import tempfile, pathlib; p.plot_popularity_histogram({'m': [1, 2]}, pathlib.Path(tempfile.mkdtemp()) / 'h.png'); "
            "assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
