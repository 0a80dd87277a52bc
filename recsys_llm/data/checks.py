"""Row checks shared by every loader: a table that remembers where each row came from, and checks that raise or drop.

A :class:`Table` is a raw frame plus its file name, each row's number in that file and the file's own column
names. A :class:`Check` flags bad rows with a reason and a describer; :class:`BadRows` applies the policy
``on_bad_rows``: ``'raise'`` stops at the earliest bad row with a :class:`DataError` naming file, row and
column and the fix, ``'drop'`` drops every bad row and counts it per reason (reported in ``Dataset.dropped``).

Value parsers return a value array plus masks of bad rows, so every loader reports the same problem the same way:

* ids (:func:`id_checks`): empty, or one of the missing-value spellings in :data:`MISSING_ID_SPELLINGS`;
* timestamps (:func:`parse_timestamps`): integer seconds, integer milliseconds (a column whose values are all
  at least :data:`MS_THRESHOLD`) or ISO-8601 dates; non-numbers, fractions and values outside
  ``0..MAX_TIMESTAMP`` seconds (1970 to year 9999: negative, beyond int64, 1e300) are bad rows;
* ratings (:func:`parse_ratings`): finite numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

DROP_HINT = "pass on_bad_rows='drop'"
MISSING_ID_SPELLINGS = frozenset({"nan", "none", "null", "na", "n/a", "<na>", "nat"})
"""Id values (compared stripped and lower-cased) that mean "missing", as written by pandas, R, SQL and Excel."""
MAX_TIMESTAMP = 253_402_300_799
"""9999-12-31T23:59:59Z in seconds: the latest timestamp accepted."""
MS_THRESHOLD = 10**11
"""A numeric timestamp column whose values are all >= this (year 5138 as seconds, 1973-03-03 as milliseconds)
is read as milliseconds (Amazon 2023 reviews, JavaScript clocks) and divided by 1000."""


class DataError(ValueError):
    """Input data cannot be loaded; the message names file, row and column where they apply, and the fix."""


@dataclass
class Table:
    """A raw frame plus what error messages need: its file, each row's number in that file, column labels."""

    frame: pd.DataFrame
    file: str
    rows: np.ndarray  # (n,) int64: line number (text, jsonl) or record index (parquet), 1-based
    unit: str = "row"
    labels: dict[str, str] = field(default_factory=dict)  # canonical column -> column name in the file

    def __len__(self) -> int:
        return len(self.frame)

    def take(self, keep: np.ndarray) -> Table:
        frame = self.frame.loc[keep].reset_index(drop=True)
        return Table(frame, self.file, self.rows[keep], self.unit, self.labels)

    def where(self, i: int, column: str | None = None) -> str:
        col = f", column '{self.labels.get(column, column)}'" if column else ""
        return f"{self.file}: {self.unit} {self.rows[i]}{col}"

    def value(self, i: int, column: str) -> str:
        """The raw cell as text for messages ("" when missing)."""
        v = self.frame[column].iloc[i]
        return "" if pd.api.types.is_scalar(v) and pd.isna(v) else str(v)


class Check(NamedTuple):
    reason: str  # key in Dataset.dropped
    column: str | None
    bad: np.ndarray  # (n,) bool
    describe: Callable[[int], str]  # row position -> the problem, for the message


class BadRows:
    """Applies ``on_bad_rows``: raise on the first bad row, or drop bad rows and count them per reason."""

    def __init__(self, on_bad_rows: str) -> None:
        self.drop = on_bad_rows == "drop"
        self.counts: dict[str, int] = {}

    def apply(self, table: Table, checks: list[Check]) -> tuple[Table, np.ndarray]:
        """Raise for the earliest bad row over all checks, or drop every bad row (counted under its first reason).

        Returns the kept table and the (n,) bool mask of kept rows.
        """
        checks = [c for c in checks if c.bad.any()]
        if not checks:
            return table, np.ones(len(table), dtype=bool)
        if not self.drop:
            first = min(checks, key=lambda c: int(np.argmax(c.bad)))
            i = int(np.argmax(first.bad))
            raise DataError(
                f"{table.where(i, first.column)}: {first.describe(i)}; fix the {table.unit} or {DROP_HINT}"
            )
        taken = np.zeros(len(table), dtype=bool)
        for c in checks:
            new = c.bad & ~taken
            self.count(table.file, table.unit, c.reason, int(new.sum()))
            taken |= new
        return table.take(~taken), ~taken

    def malformed(self, file: str, unit: str, rows: np.ndarray | list[int], describe: str) -> None:
        """Rows that could not be split into fields (reported before a frame exists)."""
        if len(rows) == 0:
            return
        if not self.drop:
            raise DataError(f"{file}: {unit} {rows[0]}: {describe}; fix the {unit} or {DROP_HINT}")
        self.count(file, unit, "malformed_line", len(rows))

    def count(self, file: str, unit: str, reason: str, n: int) -> None:
        """Record ``n`` rows dropped for ``reason`` (also used for rows every policy drops, e.g. duplicates)."""
        if n:
            self.counts[reason] = self.counts.get(reason, 0) + n
            logger.warning("%s: dropped %d %s(s): %s", file, n, unit, reason)


# ------------------------------------------------------------------------------------------------ columns
def missing_column(table: Table, column: str) -> DataError:
    found = ", ".join(map(str, table.frame.columns))
    return DataError(
        f"{table.file}: missing required column '{column}' (columns found: {found}); "
        "rename the column or check the separator/format"
    )


def require(table: Table, required: dict[str, str], optional: dict[str, str] | None = None) -> Table:
    """Rename file columns to canonical names (``{canonical: name in file}``); a missing required one raises."""
    found = list(table.frame.columns)
    missing = [col for col in required.values() if col not in found]
    if missing:
        raise missing_column(table, missing[0])
    mapping = {**required, **{k: v for k, v in (optional or {}).items() if v in found}}
    frame = table.frame[list(mapping.values())].set_axis(list(mapping), axis=1)
    return Table(frame, table.file, table.rows, table.unit, {k: str(v) for k, v in mapping.items()})


def existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found ({what}); check the path")
    return path


def as_text(s: pd.Series) -> pd.Series:
    """Any column -> str, "" for missing."""
    out = s.astype(object)
    return out.where(out.notna(), "").astype(str).reset_index(drop=True)


# ------------------------------------------------------------------------------------------------- values
def blank(s: pd.Series) -> np.ndarray:
    """(n,) bool: missing (NaN/None) or only whitespace."""
    if pd.api.types.is_numeric_dtype(s):
        return s.isna().to_numpy()
    return (s.isna() | s.astype(str).str.strip().eq("")).to_numpy()


def missing_id(s: pd.Series) -> np.ndarray:
    """(n,) bool: blank, or a missing-value spelling (:data:`MISSING_ID_SPELLINGS`) used as an id."""
    if pd.api.types.is_numeric_dtype(s):
        return s.isna().to_numpy()
    return blank(s) | s.astype(str).str.strip().str.lower().isin(MISSING_ID_SPELLINGS).to_numpy()


def id_checks(table: Table, columns: tuple[str, ...]) -> list[Check]:
    """Every row needs an id in each of ``columns``: empty and missing-value spellings are bad (``empty_id``)."""

    def describe(column: str) -> Callable[[int], str]:
        def text(i: int) -> str:
            raw = table.value(i, column)
            if not raw.strip():
                return "value is empty; every row needs an id"
            return f"value {raw!r} means a missing value; every row needs an id"

        return text

    return [Check("empty_id", c, missing_id(table.frame[c]), describe(c)) for c in columns]


class Timestamps(NamedTuple):
    seconds: np.ndarray  # (n,) int64, 0 where bad
    unparseable: np.ndarray  # (n,) bool: not a number or date, or not whole seconds
    out_of_range: np.ndarray  # (n,) bool: before 1970 or after year 9999 (negative, inf, 1e300, ...)
    milliseconds: bool  # the column was read as milliseconds


def parse_timestamps(s: pd.Series) -> Timestamps:
    """Integer seconds, integer milliseconds or ISO-8601 strings -> int64 seconds and the bad rows.

    A numeric column whose parsed values are all at least :data:`MS_THRESHOLD` is milliseconds (floored to
    seconds). Values must be whole numbers in ``0..MAX_TIMESTAMP`` seconds after the unit is applied.
    """
    if pd.api.types.is_datetime64_any_dtype(s):
        secs = (pd.to_datetime(s, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        values = secs.to_numpy(np.float64, na_value=np.nan)
        iso = np.zeros(len(s), dtype=bool)
    else:
        values = pd.to_numeric(s, errors="coerce").to_numpy(np.float64, na_value=np.nan, copy=True)
        iso = np.isnan(values) & ~blank(s)
        if iso.any():
            parsed = pd.to_datetime(s[iso].astype(str), utc=True, errors="coerce", format="ISO8601")
            values[iso] = ((parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(
                np.float64, na_value=np.nan
            )
    with np.errstate(invalid="ignore"):
        unparseable = np.isnan(values) | (np.isfinite(values) & (values != np.floor(values)))
        numeric = ~unparseable & ~iso & np.isfinite(values)
        ms = bool(numeric.any()) and bool(np.all(values[numeric] >= MS_THRESHOLD))
        if ms:
            values = np.where(numeric, np.floor(values / 1000), values)
        out_of_range = ~unparseable & ~((values >= 0) & (values <= MAX_TIMESTAMP))
    ok = ~unparseable & ~out_of_range
    return Timestamps(np.where(ok, values, 0).astype(np.int64), unparseable, out_of_range, ms)


def timestamp_checks(table: Table, ts: Timestamps) -> list[Check]:
    """The two timestamp problems as checks (reason ``bad_timestamp``), each with the raw value."""
    return [
        Check("bad_timestamp", "timestamp", ts.unparseable,
              lambda i: f"cannot parse {table.value(i, 'timestamp')!r} as a timestamp (integer seconds or "
                        "ISO-8601 date)"),
        Check("bad_timestamp", "timestamp", ts.out_of_range,
              lambda i: f"timestamp {table.value(i, 'timestamp')!r} is out of range: expected seconds (or "
                        f"milliseconds) since 1970-01-01, at most {MAX_TIMESTAMP} (year 9999)"),
    ]  # fmt: skip


def parse_ratings(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Any column -> (float32 ratings, (n,) bool not a finite number)."""
    values = pd.to_numeric(s, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    ok = np.abs(values) <= np.finfo(np.float32).max  # False for NaN and inf; 1e300 does not fit a float32
    return np.where(ok, values, np.nan).astype(np.float32), ~ok
