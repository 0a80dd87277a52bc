"""Every damaged artifact gets a clear error: the file named, what is wrong, the stage to rerun; no library
traceback, and the run directory left exactly as it was.

Each case copies the tiny run, damages one artifact, runs one command through the CLI and checks exit code 2,
the message and that no file of the run changed. (Bad config values and bad input data have their own corpora:
tests/test_config_types.py and tests/test_bad_data_inputs.py.)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from recsys_llm.cli import main


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, len(data) // 3)])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\x01 not what it claims to be \xff")


def _delete(path: Path) -> None:
    path.unlink()


def _broken_json(path: Path) -> None:
    path.write_text('{"format": 1, "oops": ')


def _nan_rows(path: Path) -> None:
    arr = np.load(path)
    arr[1] = np.nan
    np.save(path, arr)


def _half_dim(path: Path) -> None:
    arr = np.load(path)
    np.save(path, np.ascontiguousarray(arr[:, : arr.shape[1] // 2]))


def _fewer_rows(path: Path) -> None:
    np.save(path, np.load(path)[:-3])


def _served(value: dict) -> Callable[[Path], None]:
    return lambda path: path.write_text(json.dumps({"format": 1, **value}))


RECOMMEND = ["recommend", "--user", "u1"]
NEW_USER = ["coldstart", "user", "--text", "space rocket"]
RERANK = ["rerank", "apply"]

# (case id, artifact, damage, command, what the message must name besides the file)
CASES = [
    ("index-truncated", "index/index.faiss", _truncate, RECOMMEND, "index build"),
    ("index-garbage", "index/index.faiss", _garbage, RECOMMEND, "index build"),
    ("index-missing", "index/index.faiss", _delete, RECOMMEND, "index build"),
    ("index-ids-missing", "index/ids.npy", _delete, RECOMMEND, "index build"),
    ("index-json-broken", "index/index.json", _broken_json, RECOMMEND, "index build"),
    ("adapter-truncated", "encoder/adapter_model.safetensors", _truncate, NEW_USER, "finetune"),
    ("adapter-missing", "encoder/adapter_model.safetensors", _delete, NEW_USER, "finetune"),
    ("encoder-json-broken", "encoder/encoder.json", _broken_json, NEW_USER, "finetune"),
    ("item-emb-truncated", "embeddings/item_emb.npy", _truncate, RECOMMEND, "embed"),
    ("item-emb-nan", "embeddings/item_emb.npy", _nan_rows, RECOMMEND, "NaN"),
    ("item-emb-wrong-dim", "embeddings/item_emb.npy", _half_dim, ["index", "build"], "dim"),
    ("item-emb-fewer-rows", "embeddings/item_emb.npy", _fewer_rows, RECOMMEND, "rows"),
    ("user-emb-garbage", "embeddings/user_emb.npy", _garbage, RECOMMEND, "embed"),
    ("embeddings-json-broken", "embeddings/embeddings.json", _broken_json, RECOMMEND, "embed"),
    ("pooled-truncated", "hybrid/user_pooled.npy", _truncate, ["evaluate"], "hybrid"),
    ("hybrid-json-broken", "hybrid/hybrid.json", _broken_json, RECOMMEND, "hybrid"),
    ("collaborative-truncated", "hybrid/collaborative.safetensors", _truncate, RECOMMEND, "hybrid"),
    ("pooling-weights-garbage", "hybrid/user_pooling.safetensors", _garbage, RECOMMEND, "hybrid"),
    ("sequence-weights-garbage", "hybrid/user_sequence.safetensors", _garbage, RECOMMEND, "hybrid"),
    ("sequence-json-broken", "hybrid/user_sequence.json", _broken_json, RECOMMEND, "hybrid"),
    ("sequence-vectors-truncated", "hybrid/user_sequence.npy", _truncate, ["evaluate"], "hybrid"),
    ("served-json-broken", "served.json", _broken_json, RECOMMEND, "select"),
    ("served-unknown-stage", "served.json", _served({"first_stage": "magic"}), RECOMMEND, "select"),
    ("served-bad-weight", "served.json", _served({"first_stage": "dense", "rerank_depth": 3,
                                                   "rerank_weight": 7}), RECOMMEND, "select"),
    ("reranker-head-truncated", "reranker/head.safetensors", _truncate, RERANK, "rerank train"),
    ("reranker-json-broken", "reranker/reranker.json", _broken_json, RERANK, "rerank train"),
    ("candidates-truncated", "candidates/warm.npz", _truncate, RERANK, "retrieve"),
    ("items-parquet-truncated", "data/items.parquet", _truncate, RECOMMEND, "prepare"),
    ("interactions-parquet-garbage", "data/interactions.parquet", _garbage, ["retrieve"], "prepare"),
    ("train-split-truncated", "splits/train.parquet", _truncate, RECOMMEND, "prepare"),
    ("split-json-broken", "splits/split.json", _broken_json, ["retrieve"], "prepare"),
    ("config-json-broken", "config.json", _broken_json, RECOMMEND, "config.json"),
    ("lineage-json-broken", "lineage.json", _broken_json, ["retrieve"], "lineage.json"),
    ("timings-json-broken", "timings.json", _broken_json, ["retrieve"], "timings.json"),
]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("artifact", "damage", "command", "names"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_damaged_artifact_is_named_and_nothing_changes(tiny_run, tmp_path, capsys, artifact, damage, command,
                                                       names):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    damage(run / artifact)
    before = _snapshot(run)
    code = main([*command[:2], "--run-dir", str(run), *command[2:]] if command[0] in ("index", "rerank",
                                                                                       "coldstart")
                else [command[0], "--run-dir", str(run), *command[1:]])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    err = err.strip().splitlines()[-1]  # logs may come first; the error is the last line
    assert err.startswith("error: ")
    folder = str(Path(artifact).parent) if Path(artifact).parent != Path(".") else artifact
    assert artifact in err or folder in err, err
    assert names in err, err
    assert _snapshot(run) == before, "a failed command changed the run directory"


def test_the_corpus_covers_every_artifact_kind():
    kinds = {Path(c[1]).suffix for c in CASES}
    assert {".faiss", ".safetensors", ".npy", ".json", ".parquet", ".npz"} <= kinds and len(CASES) >= 30
