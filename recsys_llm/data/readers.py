"""File formats -> :class:`~recsys_llm.data.checks.Table` (a frame that keeps each row's place in its file).

* :func:`read_csv`: quoted UTF-8 files with a header; rows with too many fields are reported by line number.
* :func:`read_headerless`: unquoted files without a header (MovieLens ``::``, tab, pipe); wrong field counts
  are found exactly, before pandas parses.
* :func:`read_jsonl`: one JSON object per line, streamed; rows are exact 1-based line numbers (blank lines
  skipped), an invalid line is reported (or dropped) by its line number. Lines written as Python literals
  (``{'asin': ...}``, the Amazon 2014 metadata dumps) are read with :func:`ast.literal_eval`, which
  evaluates literals only.
* :func:`read_parquet`; :func:`read_any` picks one of the above by extension for the generic formats.

Any text file may be gzip-compressed: compression is recognised by its magic bytes, not by its name.
Row numbers are 1-based line numbers for text files (a CSV header is line 1) and 1-based record indices for
parquet. Quoted CSV fields that span lines shift the line numbers after them.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import logging
import re
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from recsys_llm.data.checks import BadRows, DataError, Table

logger = logging.getLogger(__name__)

FORMATS = (".csv", ".tsv", ".jsonl", ".parquet", ".json")
_GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzip."""
    data = path.read_bytes()
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot decompress ({e}); the gzip file is truncated or corrupt") from None


@contextmanager
def open_text(path: Path) -> Iterator[IO[str]]:
    """Open a (possibly gzip) UTF-8 text file for streaming; decoding and gzip errors become DataErrors."""
    opener: Any = gzip.open if is_gzip(path) else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            yield f
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason}); re-save it as UTF-8") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: cannot decompress ({e}); the gzip file is truncated or corrupt") from None


def pandas_read(source: Any, file: str, **kwargs: Any) -> tuple[pd.DataFrame, list[str]]:
    """pd.read_csv keeping empty strings as NaN only; returns the frame and the ParserWarning texts."""
    opts = {"keep_default_na": False, "na_values": [""], "low_memory": False, "on_bad_lines": "warn"}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            frame = pd.read_csv(source, **opts, **kwargs)
    except pd.errors.EmptyDataError:
        raise DataError(f"{file}: the file is empty; check the path") from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"{file}: not {kwargs.get('encoding', 'utf-8')} text ({e.reason}); re-save it as UTF-8"
        ) from None
    except pd.errors.ParserError as e:
        raise DataError(f"{file}: cannot parse the file ({e}); check the separator and quoting") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{file}: cannot decompress ({e}); the gzip file is truncated or corrupt") from None
    for w in caught:
        if not issubclass(w.category, pd.errors.ParserWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return frame, [str(w.message) for w in caught if issubclass(w.category, pd.errors.ParserWarning)]


def require_rows(table: Table) -> Table:
    if len(table) == 0:
        raise DataError(
            f"{table.file}: no data rows (the file is empty or has only a header); check the file"
        )
    return table


def read_csv(
    path: Path, problems: BadRows, sep: str = ",", dtype: Any = None, quoting: int = csv.QUOTE_MINIMAL
) -> Table:
    """Read a delimited UTF-8 file with a header row; rows with too many fields are reported by line number.

    ``quoting=csv.QUOTE_NONE`` reads quote characters as text (files that never quote, e.g. item texts).
    """
    file = str(path)
    compression = "gzip" if is_gzip(path) else None
    frame, messages = pandas_read(
        path, file, sep=sep, encoding="utf-8", skip_blank_lines=False, dtype=dtype, compression=compression,
        quoting=quoting,
    )
    found = [
        re.search(r"line (\d+): expected (\d+) fields, saw (\d+)", m) for m in "".join(messages).splitlines()
    ]
    bad = np.array([int(m.group(1)) for m in found if m], dtype=np.int64)
    if len(bad):
        m = next(m for m in found if m)
        problems.malformed(
            file, "row", bad, f"expected {m.group(2)} fields separated by {sep!r}, found {m.group(3)}"
        )
    rows = np.setdiff1d(np.arange(2, 2 + len(frame) + len(bad), dtype=np.int64), bad)
    blank = frame.isna().all(axis=1).to_numpy()
    if blank.any():
        logger.info("%s: skipped %d blank line(s)", file, int(blank.sum()))
    return require_rows(Table(frame, file, rows).take(~blank))


def _fields_per_line(data: bytes, sep: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised field count and blank flag of every line of an unquoted file."""
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    if len(buf) and buf[-1] != 10:
        ends = np.append(ends, len(buf))
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    counts = np.bincount(np.searchsorted(ends, np.flatnonzero(buf == sep)), minlength=len(ends)) + 1
    length = ends - starts
    blank = (length == 0) | ((length == 1) & (buf[np.minimum(starts, max(len(buf) - 1, 0))] == 13))
    return counts[: len(ends)], blank


def _pick_encoding(data: bytes, encodings: tuple[str, ...]) -> str:
    for enc in encodings[:-1]:
        try:
            data.decode(enc)
            return enc
        except UnicodeDecodeError:
            logger.info("not %s text, falling back to %s", enc, encodings[-1])
    return encodings[-1]


def read_headerless(
    path: Path, sep: str, names: list[str], problems: BadRows, encodings: tuple[str, ...]
) -> Table:
    """Read an unquoted file without header (MovieLens ``::``, tab or pipe); wrong field counts are caught exactly."""
    file = str(path)
    data = read_bytes(path)
    if not data.strip():
        raise DataError(f"{file}: the file is empty; check the path")
    if sep == "::":
        data, sep = data.replace(b"::", b"\x1f"), "\x1f"
    encoding = _pick_encoding(data, encodings)
    counts, blank = _fields_per_line(data, ord(sep))
    bad = (counts != len(names)) & ~blank
    shown = "::" if sep == "\x1f" else sep
    if bad.any():
        i = int(np.argmax(bad))
        problems.malformed(
            file,
            "row",
            np.flatnonzero(bad) + 1,
            f"expected {len(names)} fields separated by {shown!r}, found {counts[i]}",
        )
    skip = np.flatnonzero(bad | blank)
    frame, _ = pandas_read(
        io.BytesIO(data), file, sep=sep, header=None, names=names, quoting=csv.QUOTE_NONE,
        skiprows=set(skip.tolist()), encoding=encoding,
    )  # fmt: skip
    rows = np.flatnonzero(~(bad | blank)).astype(np.int64) + 1
    if len(rows) != len(frame):  # a stray carriage return split a line: fall back to counting records
        rows = np.arange(1, len(frame) + 1, dtype=np.int64)
    return require_rows(Table(frame, file, rows))


def _parse_line(line: str) -> tuple[Any, str | None]:
    """One JSON (or Python-literal) value, or ``(None, problem)``."""
    line = line.strip()
    try:
        return json.loads(line), None
    except json.JSONDecodeError as e:
        problem = f"not valid JSON ({e.msg} at column {e.colno})"
    if line.startswith("{'"):  # Amazon 2014 metadata: Python dict literals, evaluated safely
        try:
            return ast.literal_eval(line), None
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    return None, problem


def read_jsonl(
    path: Path,
    problems: BadRows,
    fields: Sequence[str] | None = None,
    where: Callable[[dict[str, Any]], bool] | None = None,
) -> Table:
    """One JSON object per line (gzip allowed), streamed; rows are exact line numbers, blank lines skipped.

    Args:
        path: the file.
        problems: invalid lines (not JSON, not an object) raise naming the line, or are dropped and counted.
        fields: keep only these keys (absent keys become None), which keeps memory small for review dumps;
            None keeps every key.
        where: keep only the records for which this is true (e.g. metadata of the reviewed items).
    """
    file, records, lines = str(path), [], []
    columns: dict[str, list[Any]] = {k: [] for k in fields or ()}  # one list per kept field: less memory than dicts
    bad_lines: list[int] = []
    first_problem = ""
    with open_text(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            obj, problem = _parse_line(line)
            if problem is None and not isinstance(obj, dict):
                problem = f"expected a JSON object {{...}}, found {type(obj).__name__}"
            if problem is not None:
                if not problems.drop:
                    problems.malformed(file, "line", [n], problem)
                first_problem = first_problem or problem
                bad_lines.append(n)
                continue
            if where is None or where(obj):
                if fields is None:
                    records.append(obj)
                for k, values in columns.items():
                    values.append(obj.get(k))
                lines.append(n)
    problems.malformed(file, "line", bad_lines, first_problem)
    frame = pd.DataFrame.from_records(records) if fields is None else pd.DataFrame(columns, dtype=object)
    return Table(frame, file, np.asarray(lines, dtype=np.int64), "line")


def read_parquet(path: Path) -> Table:
    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: cannot read as parquet ({type(e).__name__}: {e}); check the file") from None
    return require_rows(Table(frame, str(path), np.arange(1, len(frame) + 1, dtype=np.int64), "record"))


def read_any(path: Path, problems: BadRows) -> Table:
    """Generic formats, chosen by extension (``.gz`` allowed after csv/tsv/jsonl/json)."""
    name = path.name.lower().removesuffix(".gz")
    ids_as_text = {"user_id": str, "item_id": str}  # "007" stays "007" in every file
    if name.endswith(".csv"):
        return read_csv(path, problems, ",", ids_as_text)
    if name.endswith(".tsv"):
        return read_csv(path, problems, "\t", ids_as_text)
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return require_rows(read_jsonl(path, problems))
    if name.endswith(".parquet"):
        return read_parquet(path)
    raise DataError(f"{path}: unknown format {path.suffix!r}; use one of {', '.join(FORMATS)}")


def find_optional(folder: Path, name: str) -> Path | None:
    """``folder/name`` or its ``.gz``, whichever exists."""
    return next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)


def find(folder: Path, name: str, dataset: str) -> Path:
    found = find_optional(folder, name)
    if found is not None:
        return found
    raise DataError(
        f"{folder}: missing {name} (needed by dataset {dataset!r}); point data.path at the unpacked folder"
    )
