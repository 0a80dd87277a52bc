"""A small torch module as an artifact: ``<stem>.safetensors`` (weights) + ``<stem>.json`` (constructor
arguments, format version, the weights' sha256 and the caller's metadata). No pickle anywhere.

The user models over frozen item embeddings (:mod:`recsys_llm.encoder.pooling_model`,
:mod:`recsys_llm.encoder.sequence_model`) save and load through these two functions, so each refuses a
missing, damaged, edited or mismatched pair the same way, naming the file and the command that makes it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Scale(nn.Module):
    ...     def __init__(self, dim: int) -> None:
    ...         super().__init__()
    ...         self.w = nn.Parameter(torch.ones(dim))
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> save_weights(Scale(3), {"dim": 3}, folder, "scale", format_version=1, metadata={"note": "x"})
    >>> m, meta = load_weights(Scale, ("dim",), folder, "scale", format_version=1, what="scale", make_it="-")
    >>> m.w.tolist(), meta["metadata"]
    ([1.0, 1.0, 1.0], {'note': 'x'})
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from safetensors.torch import load_file, save_file
from torch import nn

from recsys_llm.io_utils import atomic_path, atomic_write_json, file_sha256, load_json

__all__ = ["load_weights", "save_weights"]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=nn.Module)


def save_weights(module: nn.Module, config: dict[str, Any], folder: str | Path, stem: str, *,
                 format_version: int, metadata: dict[str, Any] | None = None) -> None:
    """Write ``folder/<stem>.safetensors`` then ``folder/<stem>.json``, each atomically.

    Args:
        module: its ``state_dict`` is saved (moved to CPU, contiguous).
        config: the constructor arguments, stored at the top level of the JSON.
        folder: created if missing; other files in it are left alone.
        stem: file name without extension.
        format_version: stored, and required equal by :func:`load_weights`.
        metadata: free JSON-serialisable dict stored as ``metadata``.
    """
    folder = Path(folder)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(folder / f"{stem}.safetensors") as tmp:
        save_file(tensors, str(tmp))
        sha = file_sha256(tmp)
    # the json names the weights' sha256: a crash between the two renames cannot pass as a valid pair
    atomic_write_json(folder / f"{stem}.json", {**config, "format_version": format_version, "weights_sha256": sha,
                                                "metadata": dict(metadata or {})})
    logger.info("saved %s to %s", stem, folder)


def load_weights(build: Callable[..., M], config_keys: Sequence[str], folder: str | Path, stem: str, *,
                 format_version: int, what: str, make_it: str) -> tuple[M, dict[str, Any]]:
    """Rebuild a module saved by :func:`save_weights`: ``(module, json record)``, weights loaded, on CPU.

    Args:
        build: called with the JSON's ``config_keys`` as keyword arguments (a ValueError it raises is
            re-raised naming the JSON file).
        what: the artifact's name in messages ("user pooling model"); make_it: the command that makes it.

    Raises:
        FileNotFoundError: either file missing.
        ValueError: JSON that does not parse, another format version, bad constructor arguments, weights that
            do not match the recorded sha256, or tensors whose names or shapes do not fit the arguments.
    """
    folder = Path(folder)
    meta_file, weights_file = folder / f"{stem}.json", folder / f"{stem}.safetensors"
    for path in (meta_file, weights_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: no saved {what} in {folder}; {make_it}")
    try:
        meta = load_json(meta_file)
    except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{meta_file} is not valid JSON ({e}); {make_it} again") from None
    if not isinstance(meta, dict) or meta.get("format_version") != format_version:
        found = meta.get("format_version") if isinstance(meta, dict) else None
        raise ValueError(f"{meta_file}: format_version {found!r}, this version reads {format_version}; "
                         f"{make_it} again")
    config = {k: meta.get(k) for k in config_keys}
    try:
        module = build(**config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{meta_file}: {e}") from None
    if file_sha256(weights_file) != meta.get("weights_sha256"):
        raise ValueError(f"{weights_file} does not match the sha256 recorded in {meta_file.name} "
                         f"(corrupt, edited or from another save); {make_it} again")
    tensors = load_file(str(weights_file))
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found_shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if found_shapes != expected:
        args = ", ".join(f"{k}={v}" for k, v in config.items())
        raise ValueError(f"{weights_file}: tensors {found_shapes} do not fit {args} from {meta_file.name} "
                         f"(expected {expected})")
    module.load_state_dict(tensors)
    return module, meta
