"""The JSONL log a training loop keeps: records in memory, and one JSON line per record in a file.

Both training loops (the two-tower encoder's ``train_log.jsonl``, the reranker's ``rerank_log.jsonl``) write
through :class:`RecordLog`, so a log file always holds exactly the records the loop returns.

Example:
    >>> log = RecordLog(None)            # no file (e.g. not the main process): records in memory only
    >>> log.append({"step": 1, "loss": 0.5})
    >>> log.records
    [{'step': 1, 'loss': 0.5}]
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["RecordLog"]


class RecordLog:
    """Records of a training run, mirrored to a JSONL file.

    Args:
        path: the file; None keeps the records in memory only. The file is rewritten with ``records`` at
            once (so a resumed run's log holds what came before the checkpoint, nothing after it).
        records: the records so far (a resumed run's); the list is kept and appended to.
    """

    def __init__(self, path: str | Path | None, records: list[dict] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.records = records if records is not None else []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def append(self, record: dict) -> None:
        """Keep ``record`` and add it to the file as one line."""
        self.records.append(record)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
