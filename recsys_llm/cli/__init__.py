"""`recsys-llm`: one subcommand per pipeline stage, plus serving, cold start, `info` and `demo`.

The CLI is the only place that prints tables; the library logs. Every stage reads and writes the run
directory (``--run-dir``), so stages can be rerun alone. Bad input ends with ``error: ...`` and exit code 2,
never a traceback (``--debug`` shows one). The parser (:mod:`recsys_llm.cli.parser`) imports nothing heavy:
a subcommand's module (:mod:`recsys_llm.cli.commands`) is imported when it runs, so ``--help`` is instant.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence

# Idle OpenMP threads sleep instead of spinning (set before torch loads): on a shared or busy machine the
# spinning default made small-op loops (user-pooling fit) 13x slower: 86 s vs 6.5 s, 2 cores, measured.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from recsys_llm.cli.parser import build_parser  # noqa: E402

__all__ = ["build_parser", "main"]

NOISY_LOGGERS = ("httpx", "urllib3", "filelock", "accelerate", "faiss", "bm25s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; 0 on success, 2 (with ``error: ...`` on stderr) on bad input."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    module, _, name = args.func.partition(":")
    try:
        getattr(importlib.import_module(module), name)(args)
    except (ValueError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
