"""The run directory: where every artifact lives, how it is read back (checked), and the shared context.

Every stage reads its inputs from and writes its artifact to one folder (``--run-dir``)::

    config.json              the resolved PipelineConfig (prepare)
    data/ splits/ text/      catalog + interactions, train/valid/test/cold, rendered texts (prepare)
    encoder/                 LoRA adapter + encoder.json + blind.json (finetune)
    embeddings[_zeroshot]/   item_emb.npy, item_ids.npy, user_emb.npy, user_ids.npy, embeddings.json (embed)
    index/                   index.faiss (or .npy / Milvus) + index.json (index build)
    candidates/ ranked/      per-slice top-K lists (retrieve, rerank apply)
    hybrid/                  user pooling, sequence model + collaborative fusion, chosen on validation (hybrid)
    reranker/                cross-encoder adapter + head (rerank train)
    served.json              the configuration the Recommender serves, chosen on validation (select)
    export/                  ONNX graphs of the encoder and cross-encoder + export.json (export)
    coldstart/               items added, updated or retired after prepare (coldstart add-items, serve)
    report.json report.md plots/   (evaluate)

:class:`RunDir` names the paths; the ``read_*`` functions load an artifact and turn every failure (missing,
truncated, not what it claims to be) into an :class:`ArtifactError` naming the file, what is wrong and the
stage to rerun; :class:`Context` is what most stages need (config, data set, split) loaded once.

Example:
    >>> run = RunDir("runs/demo")
    >>> run.embeddings().name
    'embeddings'
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from recsys_llm import lineage
from recsys_llm.config import ConfigError, PipelineConfig
from recsys_llm.data.schema import Dataset
from recsys_llm.data.splits import Split, test_histories
from recsys_llm.io_utils import atomic_write_json, atomic_write_text, load_json
from recsys_llm.text.templates import item_texts, user_texts

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class ArtifactError(ValueError):
    """An artifact of a run directory is missing or unreadable; the message names the file and the stage to
    rerun."""

    def __init__(self, path: Path, problem: str, stage: str, run_root: Path | None = None) -> None:
        where = f" --run-dir {run_root}" if run_root is not None else ""
        super().__init__(f"{path}: {problem}; rerun `recsys-llm {stage}{where}`")
        self.path, self.problem, self.stage = path, problem, stage


# ----------------------------------------------------------------------------------------------- paths
@dataclass
class RunDir:
    """Paths of every artifact in a run directory (one place, so stages agree on names)."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    config = property(lambda self: self.root / "config.json")
    data = property(lambda self: self.root / "data")
    splits = property(lambda self: self.root / "splits")
    text = property(lambda self: self.root / "text")
    encoder = property(lambda self: self.root / "encoder")
    encoder_blind = property(lambda self: self.root / "encoder" / "blind.json")  # items fine-tuning never saw
    reranker = property(lambda self: self.root / "reranker")
    export = property(lambda self: self.root / "export")  # ONNX graphs of the encoder and cross-encoder
    index = property(lambda self: self.root / "index")
    candidates = property(lambda self: self.root / "candidates")
    ranked = property(lambda self: self.root / "ranked")
    coldstart = property(lambda self: self.root / "coldstart")  # items added/updated/retired after prepare
    hybrid = property(lambda self: self.root / "hybrid")  # pooling + sequence user models, collaborative fusion
    served = property(lambda self: self.root / "served.json")  # what the Recommender serves
    timings = property(lambda self: self.root / "timings.json")

    def embeddings(self, zero_shot: bool = False) -> Path:
        return self.root / ("embeddings_zeroshot" if zero_shot else "embeddings")

    def user_vectors(self, model: str) -> tuple[Path, str]:
        """Every known user's stored vector of a user model (``text``, ``pooling``, ``sequence``): the ``.npy``
        file and the stage that writes it."""
        files = {"text": (self.embeddings() / "user_emb.npy", "embed"),
                 "pooling": (self.hybrid / "user_pooled.npy", "hybrid"),
                 "sequence": (self.hybrid / "user_sequence.npy", "hybrid")}
        if model not in files:
            raise ValueError(f"user model {model!r} has no stored vectors; one of {', '.join(files)}")
        return files[model]

    def require(self, path: Path, stage: str) -> Path:
        """``path`` if it exists, else an :class:`ArtifactError` saying which stage makes it."""
        if not path.exists():
            raise ArtifactError(path, "missing", stage, self.root)
        return path

    def load_config(self) -> PipelineConfig:
        self.require(self.config, "prepare")
        return PipelineConfig.load(self.config)


# ----------------------------------------------------------------------------------------- checked reads
@contextmanager
def reading(run: RunDir, folder: Path, stage: str, keep: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Turn any failure of a library reading ``folder`` (parquet, FAISS, safetensors, peft, transformers) into an
    :class:`ArtifactError` naming the folder, the first line of what the library said, and the stage to rerun.
    Errors of ours (and ``keep``) already say what is wrong and pass through."""
    try:
        yield
    except (ArtifactError, ConfigError, lineage.StaleArtifactError, *keep):
        raise
    except FileNotFoundError as e:
        missing = Path(e.filename).name if getattr(e, "filename", None) else "a file"
        raise ArtifactError(folder, f"{missing} is missing", stage, run.root) from None
    except Exception as e:  # noqa: BLE001 - the artifact boundary: every library error becomes one named error
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ArtifactError(folder, f"unreadable or damaged ({type(e).__name__}: {first})", stage, run.root) from None


def read_json(run: RunDir, path: Path, stage: str) -> Any:
    """A JSON artifact; missing or broken files name the stage that writes them."""
    run.require(path, stage)
    try:
        return load_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(path, f"not valid JSON ({e})", stage, run.root) from None


def read_npy(run: RunDir, path: Path, stage: str, ndim: int | None = None, rows: int | None = None,
             finite: bool = False) -> np.ndarray:
    """A ``.npy`` artifact (never unpickled), checked for truncation, rank, row count and non-finite values."""
    run.require(path, stage)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ArtifactError(path, f"unreadable or truncated ({e})", stage, run.root) from None
    if ndim is not None and arr.ndim != ndim:
        raise ArtifactError(path, f"has shape {arr.shape}, expected {ndim} dimensions", stage, run.root)
    if rows is not None and len(arr) != rows:
        raise ArtifactError(path, f"has {len(arr)} rows, expected {rows}", stage, run.root)
    if finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).reshape(len(arr), -1).any(axis=1).sum()) if arr.ndim else 1
        raise ArtifactError(path, f"{bad} rows hold NaN or infinite values", stage, run.root)
    return arr


def read_parquet(run: RunDir, path: Path, stage: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A parquet artifact (optionally only ``columns``), with missing columns named."""
    run.require(path, stage)
    try:
        return pd.read_parquet(path, columns=list(columns) if columns else None)
    except (OSError, ValueError, KeyError) as e:
        raise ArtifactError(path, f"unreadable parquet ({e})", stage, run.root) from None


def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# ------------------------------------------------------------------------------------------------ context
@dataclass
class Context:
    """What most stages need: config, data set, split and texts, loaded once from the run dir."""

    run: RunDir
    cfg: PipelineConfig
    ds: Dataset
    split: Split

    @classmethod
    def load(cls, run_dir: str | Path) -> Context:
        run = RunDir(Path(run_dir))
        cfg = run.load_config()
        with reading(run, run.data, "prepare"):
            ds = Dataset.load(run.require(run.data, "prepare"))
        with reading(run, run.splits, "prepare"):
            split = Split.load(run.require(run.splits, "prepare"))
        return cls(run, cfg, ds, split)

    @property
    def titles(self) -> list[str]:
        return self.ds.items["title"].astype(str).tolist()

    def item_texts(self) -> list[str]:
        return item_texts(self.ds.items, self.cfg.text.item_template)

    def known_histories(self) -> list[np.ndarray]:
        """What each user is known to have done at test time (train then valid), oldest first."""
        return test_histories(self.split)

    def user_texts(self) -> list[str]:
        return user_texts(self.known_histories(), self.titles, self.cfg.text.user_max_items)


# ------------------------------------------------------------------------------------------------ timing
def record_time(run: RunDir, stage: str, seconds: float) -> None:
    """Add a stage's wall time to ``timings.json`` (the demo prints the table; the report keeps it)."""
    timings = lineage.read_record(run.timings)
    timings[stage] = round(seconds, 2)
    atomic_write_json(run.timings, timings)
    logger.info("stage %s done in %.1f s", stage, seconds)


def timed(stage: str) -> Callable[[F], F]:
    """Decorate a stage ``fn(run_dir, ...)``: refuse stale inputs, then record its wall time in ``timings.json``
    and what it was made from in ``lineage.json`` (:mod:`recsys_llm.lineage`; ``-zeroshot`` for zero-shot
    embeddings)."""
    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(run_dir, *args, **kwargs):
            name = f"{stage}-zeroshot" if kwargs.get("zero_shot") else stage
            root = Path(run_dir)
            lineage.require_fresh(root, lineage.INPUTS.get(name, ()))
            inputs = lineage.input_versions(root, name)
            t0 = time.perf_counter()
            out = fn(run_dir, *args, **kwargs)
            record_time(RunDir(root), name, time.perf_counter() - t0)
            lineage.record(root, name, inputs)
            return out

        return wrapper  # type: ignore[return-value]

    return deco
