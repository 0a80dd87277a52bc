"""evaluate_ranked, report files and the CLI table (rank_items and popularity: tests/test_ranking.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from recsys_llm.report.measures import METRICS, evaluate_ranked, metric_names
from recsys_llm.report.tables import ResultRow, format_table, load_report, report_rows, write_report

L2 = 1 / math.log2(3)  # discount of rank 2


# ------------------------------------------------------------------------------------------ evaluate_ranked
def test_metric_names_order():
    assert METRICS == ["Recall@10", "NDCG@10", "MRR@10", "HitRate@10", "Precision@10", "MAP@10", "Recall@50", "NDCG@50"]
    assert metric_names([5, 1, 5]) == ["Recall@1", "NDCG@1", "MRR@1", "HitRate@1", "Precision@1", "MAP@1",
                                       "Recall@5", "NDCG@5"]
    with pytest.raises(ValueError, match="ks"):
        metric_names([])


def test_evaluate_ranked_means_and_users():
    ranked = np.array([[7, 3, -1], [1, 2, 3], [4, 5, 6]])
    targets = [np.array([3]), np.array([], dtype=np.int64), np.array([4, 9])]
    out = evaluate_ranked(ranked, targets, ks=[1, 3])
    assert list(out) == [*metric_names([1, 3]), "users"]
    assert out["users"] == 2  # user 1 has no target: dropped
    # user 0: hit at rank 2 (n_rel 1); user 2: hit at rank 1 (n_rel 2)
    assert out["Recall@1"] == pytest.approx((0 + 1 / 2) / 2)
    assert out["HitRate@1"] == pytest.approx((0 + 1) / 2)
    assert out["MRR@1"] == pytest.approx((0 + 1) / 2)
    assert out["Recall@3"] == pytest.approx((1 + 1 / 2) / 2)
    # NDCG@3: user 0 = (1/log2(3)) / 1; user 2 = 1 / (1 + 1/log2(3))
    assert out["NDCG@3"] == pytest.approx((L2 + 1 / (1 + L2)) / 2)


def test_evaluate_ranked_no_users_is_nan():
    out = evaluate_ranked(np.array([[1, 2]]), [np.array([], dtype=np.int64)], ks=[2])
    assert out["users"] == 0 and math.isnan(out["NDCG@2"])


def test_evaluate_ranked_needs_max_k_columns():
    with pytest.raises(ValueError, match=r"2 columns but max\(ks\) = 3"):
        evaluate_ranked(np.array([[1, 2]]), [np.array([1])], ks=[1, 3])


# ------------------------------------------------------------------------------------------------ reports
def _rows():
    return [
        ResultRow("popularity", "warm", {"Recall@10": 0.0848, "NDCG@10": 0.0443, "users": 943}),
        ResultRow(
            "fine-tuned", "warm", {"Recall@10": 0.1729, "NDCG@10": 0.0904, "users": 943}, note="seen filtered"
        ),
        ResultRow("popularity", "cold-item", {"Recall@10": 0.01, "NDCG@10": math.nan, "users": 50}),
        ResultRow("fine-tuned", "cold-item", {"Recall@10": 0.25, "NDCG@10": 0.12, "users": 50}),
    ]


def _write(folder: Path) -> None:
    write_report(
        folder,
        _rows(),
        config={"eval": {"ks": [10], "cold_candidates": "cold"}},
        data={"name": "ml-100k", "fingerprint": "abc123"},
        extra={
            "protocol": "Full ranking over 1682 items; split: leave-one-out.",
            "timings_s": {"embed": 1.5},
        },
    )


def _tables(md: str) -> dict[str, list[list[str]]]:
    """Slice name -> table rows split into cells (header first, the alignment row dropped)."""
    out: dict[str, list[list[str]]] = {}
    current = None
    for line in md.splitlines():
        if line.startswith("## Slice: "):
            current = line.removeprefix("## Slice: ")
            assert current not in out, "one table per slice"
            out[current] = []
        elif line.startswith("|") and current is not None and not line.startswith("|---"):
            out[current].append([c.strip() for c in line.strip("|").split("|")])
    return out


def test_write_report_markdown(tmp_path):
    _write(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# ")
    assert "Full ranking over 1682 items; split: leave-one-out." in md  # protocol paragraph from extra
    assert "abc123" in md
    tables = _tables(md)
    assert list(tables) == ["warm", "cold-item"]
    assert md.count("| model |") == 2
    warm = tables["warm"]
    assert warm[0] == ["model", "Recall@10", "NDCG@10", "users", "note"]
    assert warm[1] == ["popularity", "0.0848", "0.0443", "943", ""]
    assert warm[2] == ["fine-tuned", "**0.1729**", "**0.0904**", "943", "seen filtered"]
    cold = tables["cold-item"]
    assert cold[0] == ["model", "Recall@10", "NDCG@10", "users"]
    assert cold[1] == ["popularity", "0.0100", "nan", "50"]  # NaN never best
    assert cold[2] == ["fine-tuned", "**0.2500**", "**0.1200**", "50"]


def test_report_json_round_trip(tmp_path):
    _write(tmp_path)
    text = (tmp_path / "report.json").read_text()
    raw = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert raw["rows"][2]["metrics"]["NDCG@10"] is None  # NaN stored as null
    report = load_report(tmp_path)
    assert {"rows", "config", "data", "protocol", "created", "timings_s"} <= set(report)
    assert report["data"]["fingerprint"] == "abc123"
    assert report["protocol"]["description"].startswith("Full ranking over 1682 items")
    assert report["protocol"]["seen_items"] == "filtered"
    assert report["timings_s"] == {"embed": 1.5}
    back = report_rows(report)
    expected = _rows()
    assert [(r.model, r.slice, r.note) for r in back] == [(r.model, r.slice, r.note) for r in expected]
    for got, want in zip(back, expected, strict=True):
        assert got.metrics.keys() == want.metrics.keys()
        np.testing.assert_array_equal(list(got.metrics.values()), list(want.metrics.values()))  # NaN == NaN


def test_crash_mid_write_leaves_no_report(tmp_path, monkeypatch):
    def half_write(self, data, *args, **kwargs):
        with open(self, "w") as f:
            f.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_write)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no report.json, no temporary left behind


def test_crash_keeps_previous_report(tmp_path, monkeypatch):
    _write(tmp_path)
    before = (tmp_path / "report.json").read_text()

    def boom(self, data, *args, **kwargs):
        raise OSError("killed")

    monkeypatch.setattr(Path, "write_text", boom)
    with pytest.raises(OSError):
        _write(tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "report.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md"]


# -------------------------------------------------------------------------------------------- format_table
def test_format_table():
    table = format_table(_rows(), "warm")
    lines = table.splitlines()
    assert len(lines) == 4  # header, rule, 2 rows
    assert lines[0].split() == ["model", "slice", "Recall@10", "NDCG@10", "users", "note"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["popularity", "warm", "0.0848", "0.0443", "943"]
    assert lines[3].split() == ["fine-tuned", "warm", "0.1729", "0.0904", "943", "seen", "filtered"]
    # numbers are right-aligned: every metric column ends at the same offset
    for name in ("Recall@10", "NDCG@10", "users"):
        end = lines[0].index(name) + len(name)
        assert lines[2][end - 1] != " " and lines[3][end - 1] != " "
        assert lines[2][end : end + 1] in ("", " ") and lines[3][end] == " "


def test_format_table_all_slices_and_nan():
    table = format_table(_rows())
    lines = table.splitlines()
    assert len(lines) == 2 + 4
    assert lines[0].split() == ["model", "slice", "Recall@10", "NDCG@10", "users", "note"]
    assert "nan" in lines[4] and "cold-item" in lines[4]
    plain = format_table([ResultRow("a", "s", {"NDCG@10": 0.5}), ResultRow("bb", "s", {"Recall@10": 1 / 3})])
    widths = {len(line) for line in plain.splitlines()}
    assert len(widths) == 1  # all lines the same width (no note column)
    assert plain.splitlines()[2].split() == ["a", "s", "0.5000", "-"]  # missing metric -> "-"
    assert plain.splitlines()[3].split() == ["bb", "s", "-", "0.3333"]
