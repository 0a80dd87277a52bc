"""The cross-encoder as an ONNX graph: the same :meth:`~recsys_llm.rerank.base.Reranker.score` on onnxruntime.

:func:`export_cross_encoder` merges the LoRA adapter (on a copy) and exports backbone + pooling + the linear
head as one graph (the tokenizer's pair tensors -> ``score (batch,)``). :class:`OnnxCrossEncoder` builds the
pair inputs with the same :class:`~recsys_llm.rerank.pair_tokens.PairTokenizer` (item token cache, truncation,
longest-first batches of ``rerank.score_batch_size``), so it scores exactly the inputs the torch model scores.

Example:
    >>> export_cross_encoder(CrossEncoder.load("run/reranker"), "reranker.onnx")          # doctest: +SKIP
    >>> ce = OnnxCrossEncoder.load("reranker.onnx", "minilm", RerankConfig(), "mean")     # doctest: +SKIP
    >>> ce.score(["Alien; Star Wars"], ["Aliens (1986). Genres: Sci-Fi."]).shape          # doctest: +SKIP
    (1,)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from recsys_llm.config import RerankConfig
from recsys_llm.encoder.backbone import load_tokenizer, pool
from recsys_llm.encoder.onnx_encoder import merged_backbone
from recsys_llm.encoder.onnx_graph import export_graph, run_session, session
from recsys_llm.rerank.base import Reranker
from recsys_llm.rerank.cross_encoder import CrossEncoder
from recsys_llm.rerank.pair_tokens import DEFAULT_ITEM_CACHE, PairTokenizer

OUTPUT = "score"


class _Scored(nn.Module):
    """Backbone -> pooled -> head: the ``(batch,)`` logits the cross-encoder graph computes."""

    def __init__(self, model: nn.Module, head: nn.Linear, pooling: str) -> None:
        super().__init__()
        self.model, self.head, self.pooling = model, head, pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        return self.head(pool(hidden, attention_mask, self.pooling)).squeeze(-1)  # (batch,)


def export_cross_encoder(model: CrossEncoder, path: str | Path) -> None:
    """Write ``model`` (LoRA merged, head inside) as an ONNX graph at ``path``."""
    head = nn.Linear(model.head.in_features, 1)
    head.load_state_dict({k: v.detach().cpu().float() for k, v in model.head.state_dict().items()})
    module = _Scored(merged_backbone(model.model), head.eval(), model.pooling)
    example = model.pairs.tokenize(["an example user text, a little longer", "user"], ["an item", "item two"])
    export_graph(module, example, OUTPUT, path)


class OnnxCrossEncoder(Reranker):
    """Scores (user text, item text) pairs with an exported cross-encoder graph on onnxruntime (CPU).

    Args:
        sess: the onnxruntime session of the graph.
        tokenizer: the backbone's tokenizer.
        cfg: the reranker's :class:`RerankConfig` (``max_tokens``, ``score_batch_size``).
        precision: ``fp32`` or ``int8`` (which graph ``sess`` runs).
    """

    def __init__(self, sess: Any, tokenizer, cfg: RerankConfig, precision: str,
                 item_cache_size: int = DEFAULT_ITEM_CACHE) -> None:
        self.session, self.cfg, self.precision = sess, cfg, precision
        self.pairs = PairTokenizer(tokenizer, cfg, item_cache_size)

    @classmethod
    def load(cls, path: str | Path, backbone: str, cfg: RerankConfig, precision: str = "fp32",
             threads: int | None = None) -> OnnxCrossEncoder:
        """Open the graph at ``path`` with the tokenizer of ``backbone``."""
        return cls(session(path, threads), load_tokenizer(backbone), cfg, precision)

    def score(self, user_texts: Sequence[str], item_texts: Sequence[str]) -> np.ndarray:
        """float32 scores ``(n,)``, in batches of ``cfg.score_batch_size`` pairs of similar length."""
        n = len(user_texts)
        out = np.empty(n, dtype=np.float32)
        bs = self.cfg.score_batch_size
        batches = self.pairs.batches(user_texts, item_texts, bs)
        for idx, enc in tqdm(batches, total=-(-n // bs), desc="rerank (onnx)", unit="batch", disable=n <= 10 * bs):
            out[idx] = run_session(self.session, enc).reshape(-1)
        return out
