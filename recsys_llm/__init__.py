"""recsys-llm: an LLM-augmented hybrid recommender.

The public API is importable from the package root; names resolve lazily, so ``import recsys_llm`` does not
import torch, transformers or faiss until one of them is used.

Example:
    >>> import recsys_llm
    >>> cfg = recsys_llm.PipelineConfig().override({"train.max_steps": 20})  # doctest: +SKIP
    >>> recsys_llm.run_all(cfg, "runs/quick")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Candidates": "recsys_llm.retrieve",
    "CrossEncoder": "recsys_llm.rerank.cross_encoder",
    "DataError": "recsys_llm.data.io",
    "ExactIndex": "recsys_llm.index.exact",
    "FaissIndex": "recsys_llm.index.faiss_index",
    "IdentityReranker": "recsys_llm.rerank.base",
    "MilvusIndex": "recsys_llm.index.milvus_index",
    "PipelineConfig": "recsys_llm.config",
    "Reranker": "recsys_llm.rerank.base",
    "TwoTowerEncoder": "recsys_llm.encoder.model",
    "VectorIndex": "recsys_llm.index.base",
    "add_items": "recsys_llm.coldstart",
    "auto_factory": "recsys_llm.index.choose",
    "evaluate_ranked": "recsys_llm.report.measures",
    "Recommender": "recsys_llm.serve.recommender",
    "ServedConfig": "recsys_llm.serve.served",
    "load_dataset": "recsys_llm.data.io",
    "load_index": "recsys_llm.index.registry",
    "make_split": "recsys_llm.data.splits",
    "recommend": "recsys_llm.serve.recommender",
    "retire_items": "recsys_llm.coldstart",
    "retrieve": "recsys_llm.retrieve",
    "run_all": "recsys_llm.pipeline",
    "train_two_tower": "recsys_llm.train.two_tower",
    "tune": "recsys_llm.index.tuning",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recsys_llm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
