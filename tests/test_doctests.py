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


@pytest.mark.parametrize("name", ["protocol", "lineage", "serve.filters", "serve.served"])
def test_serving_and_protocol_examples(name):
    module = importlib.import_module(f"recsys_llm.{name}")
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
