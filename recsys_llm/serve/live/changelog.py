"""The service's change log: one append-only, fsynced JSON-lines file in the run directory.

Every change the service acknowledges (items added or updated, items retired, interactions, refreshes) is one
line of ``<run>/live/changes.jsonl``, written and fsynced before the response goes out, under an exclusive
``flock`` so that several worker processes append in one order. Each worker keeps the byte offset it has
applied; before answering it compares it with the file size (one ``stat``) and applies the lines it has not
seen, so every worker serves the same catalogue and interactions. A restarted service replays the whole log
over the run's artifacts, which the service never rewrites.

A line is complete only with its trailing newline: a reader never applies a half-written line, and a writer
killed mid-line leaves a tail that the next writer cuts off before appending (:meth:`ChangeLog.append`).

Example:
    >>> log = ChangeLog(Path(tmp) / "changes.jsonl")                   # doctest: +SKIP
    >>> with log.locked(): log.append([{"op": "retire", "items": ["12"]}])   # doctest: +SKIP
    >>> log.read_new()                                                 # doctest: +SKIP
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

LOG_FOLDER = "live"
LOG_FILE = "changes.jsonl"
FORMAT = 1


def encode_vectors(emb: np.ndarray) -> dict[str, Any]:
    """float32 ``(n, d)`` vectors as JSON: base64 of the little-endian bytes, with the shape."""
    emb = np.ascontiguousarray(emb, dtype="<f4")
    return {"shape": list(emb.shape), "b64": base64.b64encode(emb.tobytes()).decode("ascii")}


def decode_vectors(obj: dict[str, Any]) -> np.ndarray:
    shape = tuple(int(s) for s in obj["shape"])
    return np.frombuffer(base64.b64decode(obj["b64"]), dtype="<f4").reshape(shape).astype(np.float32)


class ChangeLog:
    """Append, fsync and tail one JSON-lines file shared by every worker of a run.

    Attributes:
        path: the log file (created with its folder on first append).
        offset: bytes of the file already returned by :meth:`read_new`.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.seq = 0  # lines read so far (each entry's position in the log)
        self._lock_fd: int | None = None

    @classmethod
    def for_run(cls, run_root: Path) -> ChangeLog:
        return cls(Path(run_root) / LOG_FOLDER / LOG_FILE)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def behind(self) -> bool:
        """Has another process (or this one) appended lines not read yet? One ``stat``."""
        return self.size() > self.offset

    def read_new(self) -> list[dict[str, Any]]:
        """Entries appended since the last call (complete lines only), oldest first."""
        if not self.behind():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written (or torn by a crash) waits
        entries = []
        for n, line in enumerate(data[:end].splitlines()):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.path}: line {self.seq + n + 1} is not JSON ({e}); the change log is "
                                 "damaged: move it away to serve the run without its live changes") from None
        self.offset += end
        self.seq += len(entries)
        return entries

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the log's exclusive lock (across processes); writers read, check and append inside it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd
            yield
        finally:
            self._lock_fd = None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def try_lock(self) -> int | None:
        """Take the lock without waiting: its file descriptor, or None when another writer holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        self._lock_fd = fd
        return fd

    def unlock(self, fd: int) -> None:
        self._lock_fd = None
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def append(self, entries: list[dict[str, Any]]) -> None:
        """Write ``entries`` as lines and fsync them; call with the lock held, after :meth:`read_new`.

        Raises:
            RuntimeError: called without the lock (two writers could interleave).
        """
        if self._lock_fd is None:
            raise RuntimeError("ChangeLog.append needs the lock: use `with log.locked():` or try_lock()")
        if not entries:
            return
        stamp = time.time()
        data = b"".join(json.dumps({"format": FORMAT, "at": stamp, **e}, separators=(",", ":")).encode() + b"\n"
                        for e in entries)
        new_file = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size > self.offset:  # a writer killed mid-line left a torn tail: cut it before appending
                os.ftruncate(fd, self.offset)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new_file:
            _fsync_dir(self.path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
