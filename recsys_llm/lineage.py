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
}
COMMAND = {"prepare": "prepare", "embed-zeroshot": "embed --zero-shot", "finetune": "finetune", "embed": "embed",
           "index": "index build", "retrieve": "retrieve", "hybrid": "hybrid", "rerank-train": "rerank train",
           "select": "select", "rerank": "rerank apply", "evaluate": "evaluate"}
"""The CLI command that (re)makes each stage's artifact."""

_RECORDS = {  # stage -> files whose content is the artifact's version
    "embed-zeroshot": ("embeddings_zeroshot/embeddings.json",),
    "embed": ("embeddings/embeddings.json",),
    "hybrid": ("hybrid/hybrid.json",),
    "rerank-train": ("reranker/reranker.json", "reranker/head.safetensors"),
    "select": ("served.json",),
}


class StaleArtifactError(ValueError):
    """An artifact was made from inputs that have changed since; the message names the stage to rerun."""


def _hash_files(root: Path, names: tuple[str, ...]) -> str | None:
    h = hashlib.sha256()
    for name in names:
        path = root / name
        if not path.is_file():
            return None
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def versions(root: Path) -> dict[str, str | None]:
    """The current version of every stage's artifact in the run at ``root`` (None: not made)."""
    out: dict[str, str | None] = {}
    data = root / "data" / "dataset.json"
    split = _hash_files(root, ("splits/split.json",))
    out["prepare"] = None if not data.is_file() or split is None else f"{load_json(data).get('fingerprint')}:{split}"
    enc = root / "encoder" / "encoder.json"
    out["finetune"] = load_json(enc).get("adapter_sha256") if enc.is_file() else None
    for stage, names in _RECORDS.items():
        out[stage] = _hash_files(root, names)
    for stage in ("index", "retrieve", "rerank", "evaluate"):  # outputs nothing downstream fingerprints
        out[stage] = None
    return out


def load(root: Path) -> dict[str, Any]:
    path = root / LINEAGE_FILE
    return load_json(path) if path.is_file() else {}


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
