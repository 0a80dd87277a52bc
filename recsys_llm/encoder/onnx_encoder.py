"""The two-tower encoder as an ONNX graph: the same ``encode_items`` / ``encode_users`` on onnxruntime.

:func:`export_encoder` merges the LoRA adapter into the backbone (peft ``merge_and_unload`` on a copy) and
exports backbone + pooling + L2 normalisation as one graph (``input_ids``, ``attention_mask`` ->
``embedding (batch, dim)``), so :class:`OnnxTextEncoder` only tokenises, batches and runs it. It is a drop-in
for :class:`~recsys_llm.encoder.model.TwoTowerEncoder` where a caller encodes (``encode_items``,
``encode_users``, ``dim``, ``config``, ``fingerprint``): same tokenizer, truncation, longest-first batching
and empty-text rule. Its fingerprint is the torch encoder's plus ``backend`` (``onnx-fp32`` / ``onnx-int8``),
so vectors it makes say where they came from, and the serving check (backbone, adapter, pooling, dim) accepts
them against vectors of the torch encoder.

Example:
    >>> export_encoder(TwoTowerEncoder.load("run/encoder"), "enc.onnx")            # doctest: +SKIP
    >>> enc = OnnxTextEncoder.load("enc.onnx", TwoTowerEncoder.load(...).fingerprint(), cfg)  # doctest: +SKIP
    >>> enc.encode_items(["Toy Story (1995)."], max_tokens=48).shape                # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from recsys_llm.config import EncoderConfig
from recsys_llm.encoder.backbone import load_tokenizer, pool
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.encoder.onnx_graph import export_graph, run_session, session

OUTPUT = "embedding"


class TextEncoder(Protocol):
    """What encoding callers use: the torch :class:`TwoTowerEncoder` and :class:`OnnxTextEncoder` both fit."""

    dim: int
    config: EncoderConfig

    def encode_items(self, texts: Sequence[str], max_tokens: int, batch_size: int = ...,
                     show_progress: bool = ...) -> np.ndarray: ...

    def encode_users(self, texts: Sequence[str], max_tokens: int, batch_size: int = ...,
                     show_progress: bool = ...) -> np.ndarray: ...

    def fingerprint(self) -> dict: ...


class _Pooled(nn.Module):
    """Backbone -> pooled, L2-normalised ``(batch, dim)``: what the encoder graph computes."""

    def __init__(self, model: nn.Module, pooling: str) -> None:
        super().__init__()
        self.model, self.pooling = model, pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (b, s, d)
        return F.normalize(pool(hidden, attention_mask, self.pooling).float(), dim=-1)  # (b, d)


def merged_backbone(model: Any) -> nn.Module:
    """A float32 CPU copy of ``model`` with any LoRA adapter merged into its weights (the original is untouched)."""
    merged = copy.deepcopy(model).to("cpu").float()
    if hasattr(merged, "merge_and_unload"):
        merged = merged.merge_and_unload()
    return merged.eval().requires_grad_(False)


def export_encoder(encoder: TwoTowerEncoder, path: str | Path, max_tokens: int = 32) -> None:
    """Write ``encoder`` (LoRA merged, pooling and normalisation inside) as an ONNX graph at ``path``."""
    module = _Pooled(merged_backbone(encoder.model), encoder.pooling)
    example = encoder.tokenize(["an example text that is a little longer", "short"], max_tokens)
    export_graph(module, example, OUTPUT, path)


class OnnxTextEncoder:
    """Encodes texts with an exported encoder graph on onnxruntime (CPU).

    Args:
        sess: the onnxruntime session of the graph.
        tokenizer: the backbone's tokenizer (right padding).
        identity: the torch encoder's :meth:`~recsys_llm.encoder.model.TwoTowerEncoder.fingerprint`.
        config: the encoder's :class:`EncoderConfig`.
        precision: ``fp32`` or ``int8`` (which graph ``sess`` runs; recorded in :meth:`fingerprint`).
    """

    def __init__(self, sess: Any, tokenizer, identity: dict, config: EncoderConfig, precision: str) -> None:
        self.session, self.tokenizer, self.config, self.precision = sess, tokenizer, config, precision
        self.identity = dict(identity)
        self.pooling: str = identity["pooling"]
        self.dim: int = int(identity["dim"])
        self._empty_text = "" if len(tokenizer("")["input_ids"]) else (tokenizer.eos_token or tokenizer.pad_token)

    @classmethod
    def load(cls, path: str | Path, identity: dict, config: EncoderConfig, precision: str = "fp32",
             threads: int | None = None) -> OnnxTextEncoder:
        """Open the graph at ``path`` with the tokenizer of ``identity['backbone']``."""
        return cls(session(path, threads), load_tokenizer(identity["backbone"]), identity, config, precision)

    def fingerprint(self) -> dict:
        """The torch encoder's identity plus ``backend`` (``onnx-fp32`` or ``onnx-int8``)."""
        return {**self.identity, "backend": f"onnx-{self.precision}"}

    def tokenize(self, texts: Sequence[str], max_tokens: int) -> dict[str, torch.Tensor]:
        """As :meth:`TwoTowerEncoder.tokenize`: right-padded, truncated ``(batch, seq)`` tensors."""
        texts = [t if t else self._empty_text for t in texts]
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def _encode(self, texts: Sequence[str], max_tokens: int, batch_size: int, show_progress: bool,
                desc: str) -> np.ndarray:
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)  # (n, dim)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # longest first: less padding per batch
        with tqdm(total=len(texts), desc=desc, unit="text", disable=not show_progress) as bar:
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                out[idx] = run_session(self.session, self.tokenize([texts[i] for i in idx], max_tokens))
                bar.update(len(idx))
        return out

    def encode_items(self, texts: Sequence[str], max_tokens: int, batch_size: int = 128,
                     show_progress: bool = True) -> np.ndarray:
        """Item texts -> ``(n, dim)`` float32 C-contiguous unit vectors, in input order."""
        return self._encode(texts, max_tokens, batch_size, show_progress, "encode items (onnx)")

    def encode_users(self, texts: Sequence[str], max_tokens: int, batch_size: int = 128,
                     show_progress: bool = True) -> np.ndarray:
        """User (history) texts -> ``(n, dim)`` float32 C-contiguous unit vectors, in input order."""
        return self._encode(texts, max_tokens, batch_size, show_progress, "encode users (onnx)")
