"""The examples in the index modules' docstrings run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["base", "convert", "exact", "faiss_index", "choose", "tuning"])
def test_index_module_examples(name):
    module = importlib.import_module(f"recsys_llm.index.{name}")
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("name", ["protocol", "lineage", "serve.filters", "serve.served", "stages.select", "report.seeds",
                                  "report.ablation"])
def test_serving_and_protocol_examples(name):
    module = importlib.import_module(f"recsys_llm.{name}")
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("name", [
    "metrics", "metrics.beyond_accuracy", "ranking", "hybrid.model", "hybrid.evidence", "hybrid.lexical", "hybrid.sparse", "encoder.backbone",
    "encoder.histories", "encoder.next_item", "encoder.weights_file", "encoder.pooling_model", "encoder.user_pooling",
    "encoder.sequence_model", "encoder.user_sequence", "train.schedule", "train.resume",
    "train.records", "train.validation", "train.two_tower", "train.hard_negatives", "losses.info_nce",
    "text.bm25", "train.pairs", "train.sampler", "rerank.base", "rerank.examples",
    "rerank.validation", "rerank.pair_tokens", "stages.hybrid_cold",
])
def test_model_module_examples(name):
    """The model layer's examples (and the ranking/metrics ones under it) run as written."""
    module = importlib.import_module(f"recsys_llm.{name}")
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
