"""ONNX graphs of the library's torch models: export with dynamic batch and sequence axes, int8, sessions.

The encoder and the cross-encoder are exported the same way (:func:`export_graph`): a small ``nn.Module``
whose forward takes the tokenizer's tensors in a fixed order and returns one output, traced by
``torch.onnx.export`` (the TorchScript exporter: one self-contained file, dynamic axes ``batch`` and
``sequence`` on every input). :func:`quantize_int8` writes a dynamically quantised copy (onnxruntime's
``quantize_dynamic``: int8 weights per output channel, activations quantised per batch at run time);
per-channel weights kept the untuned MiniLM's item embeddings at cosine >= 0.986 to float32 (mean 0.992)
where per-tensor weights reached 0.928 (256 item texts, measured), at the same speed.

onnx and onnxruntime are optional dependencies (the ``onnx`` extra, also in ``dev`` and ``bench``): they are
imported when a function here runs, and a missing one is a ``ValueError`` that says what to install.

Example:
    >>> export_graph(module, {"input_ids": ids, "attention_mask": mask}, "embedding", "enc.onnx")  # doctest: +SKIP
    >>> quantize_int8("enc.onnx", "enc.int8.onnx")                                              # doctest: +SKIP
    >>> session("enc.int8.onnx").run(None, {"input_ids": ids.numpy(), ...})                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

MISSING = ("ONNX export and inference need onnx and onnxruntime: pip install -e '.[onnx]' "
           "(or pip install onnx onnxruntime)")
OPSET = 17


def onnxruntime() -> Any:
    """The ``onnxruntime`` module, or a ``ValueError`` saying how to install it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ValueError(MISSING) from None
    return ort


class NamedInputs(nn.Module):
    """``forward(*tensors)`` -> ``fn(**dict(zip(names, tensors)))``: the positional form the tracer needs."""

    def __init__(self, fn: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.fn, self.names = fn, list(names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.fn(**dict(zip(self.names, tensors, strict=True)))


def export_graph(module: nn.Module, inputs: Mapping[str, torch.Tensor], output: str, path: str | Path) -> None:
    """Trace ``module(**inputs)`` into an ONNX file with dynamic ``batch`` and ``sequence`` axes.

    Args:
        module: takes the ``inputs`` as keyword arguments, returns one tensor ``(batch, ...)``.
        inputs: an example batch, ``(batch, sequence)`` int64 each (two rows of different lengths is enough).
        output: the graph's output name.
        path: the ``.onnx`` file to write (weights inside it; MiniLM: 90 MB).
    """
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
    except ImportError:
        raise ValueError(MISSING) from None
    names = list(inputs)
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch"}
    wrapped = NamedInputs(module, names).eval()
    with torch.no_grad(), warnings.catch_warnings():  # the TorchScript exporter warns about itself and tracing
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, tuple(inputs[n].cpu() for n in names), str(path), input_names=names,
                          output_names=[output], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    logger.info("exported %s (%.1f MB)", path, Path(path).stat().st_size / 1e6)


def quantize_int8(src: str | Path, dst: str | Path) -> None:
    """Dynamic int8 copy of an ONNX graph: int8 weights per output channel, activations per batch.

    ``reduce_range``: 7-bit weights. On x86 CPUs without VNNI (AVX2 only, as this project's CI machine) the
    u8 x s8 products of 8-bit weights can saturate; the tiny run's int8 reranker then correlated 0.90 with torch
    (0.98 wanted, tests/test_export.py), and passes with it."""
    onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    logger.info("quantised %s -> %s (%.1f MB)", src, dst, Path(dst).stat().st_size / 1e6)


def session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session on ``path`` using ``threads`` intra-op threads (default: torch's)."""
    ort = onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_session(sess: Any, inputs: Mapping[str, torch.Tensor]) -> np.ndarray:
    """The graph's one output for tokenised ``inputs`` (only the names the graph declares are fed)."""
    wanted = {i.name for i in sess.get_inputs()}
    feed = {k: v.cpu().numpy().astype(np.int64) for k, v in inputs.items() if k in wanted}
    missing = wanted - set(feed)
    if missing:
        raise ValueError(f"the ONNX graph needs inputs {sorted(missing)} that the tokenizer did not produce; "
                         "export again with the same backbone")
    return sess.run(None, feed)[0]
