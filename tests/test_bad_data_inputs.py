"""Every bad input gets a clear error through `recsys-llm prepare`: exit code 2, the file and the row or field
named, no traceback, and nothing written to the run directory.

Each case builds a malformed input in tmp_path and returns the prepare flags plus the fragments the error must
contain. Good rows are added around the bad one so that the bad one, not an empty or unsplittable data set,
is what fails.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from recsys_llm.cli import main
from recsys_llm.config import DataConfig
from recsys_llm.data.io import load_dataset

ITEMS = "item_id,title\na,Apple\nb,Banana\nc,Cherry\n"
GOOD = "u1,a,1\nu1,b,2\nu1,c,3\nu2,a,4\nu2,b,5\n"
HEADER = "user_id,item_id,timestamp\n"
RATED = "user_id,item_id,timestamp,rating\n" + GOOD.replace("\n", ",4\n")


def generic(tmp: Path, inter: str, items: str = ITEMS, name: str = "i.csv") -> list[str]:
    (tmp / name).write_text(inter)
    (tmp / "items.csv").write_text(items)
    return ["--dataset", "generic", "--path", str(tmp / name), "--items-path", str(tmp / "items.csv")]


def bad_row(row: str, header: str = HEADER) -> Callable[[Path], list[str]]:
    """Generic CSV: the good rows, then ``row`` (line 7 of the file)."""
    return lambda tmp: generic(tmp, header + GOOD + row + "\n")


def jsonl(tmp: Path, lines: list[str]) -> list[str]:
    (tmp / "i.jsonl").write_text("".join(line + "\n" for line in lines))
    (tmp / "items.csv").write_text(ITEMS)
    return ["--dataset", "generic", "--path", str(tmp / "i.jsonl"), "--items-path", str(tmp / "items.csv")]


GOOD_JSONL = [json.dumps({"user_id": u, "item_id": i, "timestamp": t})
              for u, i, t in (("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3), ("u2", "c", 4))]


def parquet_nan_user(tmp: Path) -> list[str]:
    frame = pd.DataFrame({"user_id": ["u1", "u1", None, "u2"], "item_id": ["a", "b", "a", "c"]})
    frame.to_parquet(tmp / "i.parquet")
    (tmp / "items.csv").write_text(ITEMS)
    return ["--dataset", "generic", "--path", str(tmp / "i.parquet"), "--items-path", str(tmp / "items.csv")]


def amazon(tmp: Path, reviews: bytes | str, meta: list[dict] | None = None) -> list[str]:
    r = tmp / "reviews.jsonl.gz"
    r.write_bytes(reviews if isinstance(reviews, bytes) else gzip.compress(reviews.encode()))
    m = tmp / "meta.jsonl"
    m.write_text("".join(json.dumps(x) + "\n" for x in meta or [{"asin": "A1", "title": "Drill"}]))
    return ["--dataset", "amazon", "--path", str(r), "--items-path", str(m)]


def review(user: str | None, asin: str = "A1", t: float = 1000) -> str:
    return json.dumps({"reviewerID": user, "asin": asin, "overall": 5.0, "unixReviewTime": t})


def ml_latest(tmp: Path, ratings: str) -> list[str]:
    folder = tmp / "ml"
    folder.mkdir()
    (folder / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Animation\n2,Heat (1995),Crime\n")
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + ratings)
    return ["--dataset", "ml-latest", "--path", str(folder)]


def unisrec(tmp: Path, valid_line: str, extra: str = "") -> list[str]:
    folder = tmp / "uni"
    folder.mkdir()
    head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    (folder / "Tiny.train.inter").write_text(head + "1\t1 2\t3\n1\t1\t2\n")
    (folder / "Tiny.valid.inter").write_text(head + valid_line)
    (folder / "Tiny.test.inter").write_text(head + "1\t1 2 3 4\t5\n")
    (folder / "Tiny.text").write_text("item_id:token\ttext:token_seq\n" + "".join(f"{i}\titem {i}\n" for i in range(1, 6)))
    if extra:
        (folder / "Other.test.inter").write_text(head)
    return ["--dataset", "unisrec", "--path", str(folder)]


def holdout(tmp: Path, row: str) -> list[str]:
    (tmp / "loo.tsv").write_text("user_id\tvalid_item_id\ttest_item_id\n" + row)
    return [*generic(tmp, HEADER + GOOD), "--cold-item-fraction", "0", "--set", f"split.fixed_holdout={tmp / 'loo.tsv'}"]


CASES: dict[str, tuple[Callable[[Path], list[str]], list[str]]] = {
    # missing-value spellings used as ids
    "user NaN": (bad_row("NaN,a,9"), ["i.csv: row 7, column 'user_id'", "'NaN' means a missing value"]),
    "user nan": (bad_row("nan,a,9"), ["i.csv: row 7, column 'user_id'", "'nan'"]),
    "user None": (bad_row("None,a,9"), ["i.csv: row 7, column 'user_id'", "'None'"]),
    "user null": (bad_row("null,a,9"), ["i.csv: row 7, column 'user_id'", "'null'"]),
    "user NULL": (bad_row("NULL,a,9"), ["i.csv: row 7, column 'user_id'", "'NULL'"]),
    "user NA": (bad_row("NA,a,9"), ["i.csv: row 7, column 'user_id'", "'NA'"]),
    "item N/A": (bad_row("u3,N/A,9"), ["i.csv: row 7, column 'item_id'", "'N/A'"]),
    "item empty": (bad_row("u3, ,9"), ["i.csv: row 7, column 'item_id'", "value is empty"]),
    "user empty": (bad_row(",a,9"), ["i.csv: row 7, column 'user_id'", "value is empty"]),
    "catalog id nan": (lambda t: generic(t, HEADER + GOOD, ITEMS + "nan,Nothing\n"),
                       ["items.csv: row 5, column 'item_id'", "'nan'"]),
    # timestamps
    "timestamp 1e300": (bad_row("u3,a,1e300"), ["i.csv: row 7, column 'timestamp'", "'1e+300' is out of range"]),
    "timestamp negative": (bad_row("u3,a,-5"), ["row 7, column 'timestamp'", "'-5' is out of range"]),
    "timestamp inf": (bad_row("u3,a,inf"), ["row 7, column 'timestamp'", "'inf' is out of range"]),
    "timestamp beyond int64": (bad_row("u3,a,99999999999999999999999"), ["row 7", "is out of range"]),
    "timestamp year 30000": (bad_row("u3,a,30000-01-01"), ["row 7, column 'timestamp'", "cannot parse"]),
    "timestamp text": (bad_row("u3,a,yesterday"), ["row 7, column 'timestamp'", "'yesterday'"]),
    "timestamp fraction": (bad_row("u3,a,1.5"), ["row 7, column 'timestamp'", "'1.5'"]),
    # ratings, references, structure
    "rating text": (lambda t: generic(t, RATED + "u3,a,9,abc\n"), ["row 7, column 'rating'", "'abc'"]),
    "rating 1e300": (lambda t: generic(t, RATED + "u3,a,9,1e300\n"), ["row 7, column 'rating'", "'1e+300'"]),
    "unknown item": (bad_row("u3,zz,9"), ["i.csv: row 7, column 'item_id'", "'zz' is not in the item catalog"]),
    "duplicate catalog id": (lambda t: generic(t, HEADER + GOOD, ITEMS + "a,Again\n"),
                             ["items.csv: row 5, column 'item_id'", "duplicate item id 'a'"]),
    "missing column": (lambda t: generic(t, "user,item_id\nu1,a\n"), ["i.csv", "missing required column 'user_id'"]),
    "extra field": (bad_row("u3,a,9,extra"), ["i.csv: row 7", "expected 3 fields"]),
    "empty file": (lambda t: generic(t, ""), ["i.csv", "empty"]),
    "header only": (lambda t: generic(t, HEADER), ["i.csv", "no data rows"]),
    "unknown format": (lambda t: generic(t, "x", name="i.xlsx"), ["i.xlsx", "unknown format '.xlsx'"]),
    "missing file": (lambda t: ["--dataset", "generic", "--path", str(t / "nope.csv")], ["nope.csv", "not found"]),
    # whole-data-set problems name the file and the setting
    "single interaction": (lambda t: generic(t, HEADER + "u1,a,1\n"), ["'generic' is too small to split", "1 interaction"]),
    "min_rating empties": (lambda t: [*generic(t, "user_id,item_id,rating\nu1,a,3\nu1,b,4\n"), "--set", "data.min_rating=5"],
                           ["i.csv", "data.min_rating=5", "highest rating is 4"]),
    "min_rating without ratings": (lambda t: [*generic(t, HEADER + GOOD), "--set", "data.min_rating=4"],
                                   ["i.csv", "data.min_rating=4 needs ratings"]),
    "k-core empties": (lambda t: [*generic(t, HEADER + GOOD), "--set", "data.min_user_interactions=4"],
                       ["i.csv", "k-core filter data.min_user_interactions=4"]),
    "negative k-core": (lambda t: [*generic(t, HEADER + GOOD), "--set", "data.min_item_interactions=-1"],
                        ["data.min_item_interactions=-1", "integer >= 0"]),
    "unknown template column": (lambda t: [*generic(t, HEADER + GOOD), "--set", "text.item_template={title}. {brnd}"],
                                ["names column(s) ['brnd']", "available columns: item_id, title"]),
    # JSON lines: exact line numbers
    "jsonl invalid line": (lambda t: jsonl(t, [*GOOD_JSONL[:2], "", '{"user_id": "u3", '] + GOOD_JSONL[2:]),
                           ["i.jsonl: line 4: not valid JSON"]),
    "jsonl array line": (lambda t: jsonl(t, [*GOOD_JSONL, '["u3", "a"]']), ["i.jsonl: line 5", "expected a JSON object"]),
    "jsonl null user": (lambda t: jsonl(t, [*GOOD_JSONL, '{"user_id": null, "item_id": "a"}']),
                        ["i.jsonl: line 5, column 'user_id'", "empty"]),
    "jsonl timestamp 1e300": (lambda t: jsonl(t, [*GOOD_JSONL, '{"user_id": "u3", "item_id": "a", "timestamp": 1e300}']),
                              ["i.jsonl: line 5, column 'timestamp'", "out of range"]),
    "parquet null user": (parquet_nan_user, ["i.parquet: record 3, column 'user_id'"]),
    # Amazon dumps
    "amazon corrupt gzip": (lambda t: amazon(t, gzip.compress(review("U1").encode() * 50)[:40]),
                            ["reviews.jsonl.gz", "cannot decompress"]),
    "amazon invalid line": (lambda t: amazon(t, review("U1") + "\n{oops\n"), ["reviews.jsonl.gz: line 2: not valid JSON"]),
    "amazon null reviewer": (lambda t: amazon(t, review("U1") + "\n" + review(None) + "\n"),
                             ["reviews.jsonl.gz: line 2, column 'reviewerID'"]),
    "amazon time 1e300": (lambda t: amazon(t, review("U1") + "\n" + review("U2", t=1e300) + "\n"),
                          ["reviews.jsonl.gz: line 2, column 'unixReviewTime'", "out of range"]),
    "amazon wrong metadata": (lambda t: amazon(t, review("U1") + "\n", [{"asin": "X", "title": "x"}]),
                              ["meta.jsonl: no metadata record names a reviewed item"]),
    # UniSRec atomic files
    "unisrec broken history": (lambda t: unisrec(t, "1\t1 9 3\t4\n"), ["Tiny.valid.inter: row 2", "does not continue"]),
    "unisrec two data sets": (lambda t: unisrec(t, "1\t1 2 3\t4\n", extra="x"), ["several data sets (Other, Tiny)"]),
    # fixed split file
    "holdout same interaction": (lambda t: holdout(t, "u2\tb\tb\n"),
                                 ["loo.tsv: row 2, column valid_item_id", "cannot be both the validation and the test"]),
    "holdout unknown user": (lambda t: holdout(t, "u9\ta\tb\n"), ["loo.tsv: row 2, column user_id: 'u9'"]),
    # MovieLens
    "ml-latest NaN user": (lambda t: ml_latest(t, "1,1,4,5\nNaN,2,4,6\n"),
                           ["ratings.csv: row 3, column 'userId'", "'NaN'"]),
    "ml-latest timestamp 1e300": (lambda t: ml_latest(t, "1,1,4,5\n1,2,4,1e300\n"),
                                  ["ratings.csv: row 3, column 'timestamp'", "out of range"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_named_and_nothing_is_written(tmp_path, capsys, case):
    build, expected = CASES[case]
    run = tmp_path / "run"
    rc = main(["prepare", "--run-dir", str(run), *build(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 2, out + err
    assert err.startswith("error: ") and "Traceback" not in out + err, err
    missing = [frag for frag in expected if frag not in err]
    assert not missing, f"{missing} not in: {err}"
    assert not run.exists()


def test_a_failed_prepare_leaves_the_last_good_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["prepare", "--run-dir", str(run), *generic(tmp_path, HEADER + GOOD)]) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["prepare", "--run-dir", str(run), *generic(tmp_path, HEADER + GOOD + "NaN,a,9\n")]) == 2
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert "row 7, column 'user_id'" in capsys.readouterr().err


def test_drop_mode_counts_missing_ids_and_duplicates(tmp_path):
    generic(tmp_path, HEADER + GOOD + "NaN,a,9\nu3,null,9\nu1,a,1\n,b,3\n")
    ds = load_dataset(DataConfig(dataset="generic", path=str(tmp_path / "i.csv"),
                                 items_path=str(tmp_path / "items.csv"), on_bad_rows="drop"))
    assert ds.dropped == {"empty_id": 3, "duplicate_interaction": 1} and len(ds.interactions) == 5
