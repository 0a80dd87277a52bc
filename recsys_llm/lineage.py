"""The fingerprint chain: which inputs each artifact of a run was made from, and which artifacts are stale.

Every artifact has a version string (:func:`versions`): the data set's fingerprint (``data/dataset.json``), a
hash of ``splits/split.json``, the encoder adapter's sha256 (``encoder/encoder.json``), and a hash of the record
each later stage writes (``embeddings.json``, ``hybrid.json``, ``reranker/reranker.json`` + head, ``served.json``).
When a stage finishes, ``lineage.json`` records the versions of the inputs it read (:data:`INPUTS`). An
artifact is **stale** when an input changed since (say ``prepare`` was rerun on another catalogue), or when
an input is itself stale; :func:`require_fresh` refuses to use a stale artifact, naming the stage to rerun,
and ``recsys-llm info`` lists every stale stage. Runs written before this record existed are trusted as they
are (nothing recorded, nothing refused).

Example:
    >>> INPUTS["index"]
    ('embed',)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from recsys_llm.io_utils import atomic_write_json, load_json

LINEAGE_FILE = "lineage.json"

# stage (its timings.json key) -> the stages whose artifacts it reads
INPUTS: dict[str, tuple[str, ...]] = {
    "prepare": (),
    "embed-zeroshot": ("prepare",),
    "finetune": ("prepare",),
    "embed": ("prepare", "finetune"),
    "index": ("embed",),
    "retrieve": ("embed", "index"),
    "hybrid": ("prepare", "embed"),
    "rerank-train": ("prepare", "embed"),
    "select": ("embed", "hybrid", "rerank-train"),
    "rerank": ("retrieve", "rerank-train", "select"),
    "evaluate": ("embed", "retrieve", "hybrid", "select", "rerank"),
    "export": ("finetune", "rerank-train"),
}
COMMAND = {"prepare": "prepare", "embed-zeroshot": "embed --zero-shot", "finetune": "finetune", "embed": "embed",
           "index": "index build", "retrieve": "retrieve", "hybrid": "hybrid", "rerank-train": "rerank train",
           "select": "select", "rerank": "rerank apply", "evaluate": "evaluate",
           "export": "export --format onnx"}
"""The CLI command that (re)makes each stage's artifact."""

_RECORDS = {  # stage -> files whose content is the artifact's version
    "embed-zeroshot": ("embeddings_zeroshot/embeddings.json",),
    "embed": ("embeddings/embeddings.json",),
    "hybrid": ("hybrid/hybrid.json",),
    "rerank-train": ("reranker/reranker.json", "reranker/head.safetensors"),
    "select": ("served.json",),
    "export": ("export/export.json",),
}


class StaleArtifactError(ValueError):
    """An artifact was made from inputs that have changed since; the message names the stage to rerun."""


def _intact(path: Path, data: bytes, stage: str) -> None:
    """A record must parse (JSON) or be whole (safetensors: header + every tensor's bytes present)."""
    problem = None
    if path.suffix == ".json":
        try:
            json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            problem = f"not valid JSON ({e})"
    elif path.suffix == ".safetensors":
        n = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
        try:
            header = json.loads(data[8 : 8 + n]) if 0 < n <= len(data) - 8 else None
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0) if header else -1
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, IndexError):
            end = -1
        if end < 0 or 8 + n + end > len(data):
            problem = "truncated or not a safetensors file"
    if problem:
        raise StaleArtifactError(f"{path}: damaged: {problem}; rerun `recsys-llm {COMMAND.get(stage, stage)}` to "
                                 "make it again")


def _hash_files(root: Path, names: tuple[str, ...], stage: str) -> str | None:
    h = hashlib.sha256()
    for name in names:
        path = root / name
        if not path.is_file():
            return None
        data = path.read_bytes()
        _intact(path, data, stage)
        h.update(data)
    return h.hexdigest()[:16]


def versions(root: Path) -> dict[str, str | None]:
    """The current version of every stage's artifact in the run at ``root`` (None: not made)."""
    out: dict[str, str | None] = {}
    data = _hash_files(root, ("data/dataset.json",), "prepare")
    split = _hash_files(root, ("splits/split.json",), "prepare")
    out["prepare"] = None if data is None or split is None else f"{data}:{split}"
    enc = _hash_files(root, ("encoder/encoder.json",), "finetune")
    out["finetune"] = None if enc is None else read_record(root / "encoder" / "encoder.json").get("adapter_sha256")
    for stage, names in _RECORDS.items():
        out[stage] = _hash_files(root, names, stage)
    for stage in ("index", "retrieve", "rerank", "evaluate"):  # outputs nothing downstream fingerprints
        out[stage] = None
    return out


def read_record(path: Path) -> dict[str, Any]:
    """A small JSON record of the run (``lineage.json``, ``timings.json``); {} when absent, a clear error when
    damaged."""
    if not path.is_file():
        return {}
    try:
        record = load_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); delete it (the run's record starts afresh) or rerun the "
                         "stages") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object; delete it or rerun the stages")
    return record


def load(root: Path) -> dict[str, Any]:
    return read_record(root / LINEAGE_FILE)


def record(root: Path, stage: str, inputs: dict[str, str | None]) -> None:
    """Write what ``stage`` was made from into ``lineage.json`` (after the stage succeeded)."""
    if stage not in INPUTS:
        return
    lineage = load(root)
    lineage[stage] = {"inputs": {s: inputs.get(s) for s in INPUTS[stage]}}
    atomic_write_json(root / LINEAGE_FILE, lineage)


def input_versions(root: Path, stage: str) -> dict[str, str | None]:
    """The current versions of ``stage``'s inputs (what :func:`record` will store)."""
    now = versions(root)
    return {s: now[s] for s in INPUTS.get(stage, ())}


def stale(root: Path) -> dict[str, str]:
    """``{stage: why}`` for every recorded stage whose inputs changed since it ran, or are stale themselves."""
    lineage, now = load(root), versions(root)
    out: dict[str, str] = {}
    for stage in INPUTS:  # INPUTS is in pipeline order: inputs are decided before their users
        rec = lineage.get(stage)
        if rec is None:
            continue
        for dep, was in rec.get("inputs", {}).items():
            if dep in out:
                out[stage] = f"its input `{COMMAND[dep]}` is stale"
                break
            if was is not None and now.get(dep) is not None and was != now[dep]:
                out[stage] = f"`{COMMAND[dep]}` was rerun since (its artifact changed)"
                break
    return out


def upstream(stages: tuple[str, ...] | list[str]) -> set[str]:
    """``stages`` and every stage they depend on, transitively."""
    out: set[str] = set()
    todo = list(stages)
    while todo:
        s = todo.pop()
        if s not in out:
            out.add(s)
            todo += INPUTS.get(s, ())
    return out


def require_fresh(root: Path, stages: tuple[str, ...] | list[str]) -> None:
    """Refuse when any of ``stages``' artifacts is stale, naming the first stage to rerun (in pipeline order,
    among the ones ``stages`` depend on)."""
    bad = stale(root)
    hit = [s for s in stages if s in bad]
    if hit:
        redo = [s for s in INPUTS if s in bad and s in upstream(stages)]
        raise StaleArtifactError(
            f"{root}: the {COMMAND[hit[0]]} artifact is stale: {bad[hit[0]]}; rerun `recsys-llm {COMMAND[redo[0]]} "
            f"--run-dir {root}` and the stages after it ({', '.join(COMMAND[s] for s in redo)})")
