"""The hybrid's lexical part on a catalogue whose text is brand and model tokens: chosen on validation, and on
the all-items-cold validation never below BM25 alone."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from recsys_llm.config import HybridConfig
from recsys_llm.hybrid import fit_collaborative
from recsys_llm.hybrid.lexical import LexicalScorer
from recsys_llm.stages.hybrid import search_settings
from recsys_llm.stages.hybrid_cold import Validation


def _catalogue(seed: int = 0, n_brands: int = 12, per_brand: int = 6, n_users: int = 240):
    """Users buy within one brand; item text = brand + model tokens; text embeddings are noise."""
    rng = np.random.default_rng(seed)
    n_items = n_brands * per_brand
    brand = np.repeat(np.arange(n_brands), per_brand)
    texts = [f"brand{b}x model{b}k{i % per_brand} {'cable' if i % 2 else 'charger'}" for i, b in enumerate(brand)]
    rows, hist, tg = [], [], []
    for u in range(n_users):
        items = rng.permutation(np.flatnonzero(brand == u % n_brands))[:4]
        hist.append(items[:3])
        tg.append(items[3:])
        rows += [(u, int(i), t) for t, i in enumerate(items[:3])]
    train = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    dense = rng.normal(size=(n_users, n_items)).astype(np.float32)
    return train, texts, hist, tg, dense, n_items


def test_lexical_weight_is_chosen_and_never_below_bm25_on_cold_validation():
    train, texts, hist, tg, dense, n_items = _catalogue()
    cf = fit_collaborative("itemknn", train, len(hist), n_items)
    lexical = LexicalScorer.fit(texts)
    val = Validation(np.arange(len(hist)), hist, tg, hist)  # cold validation: every item treated as cold
    hc = HybridConfig(weights=[0.0, 0.5, 1.0], cf_halflives=[0.0], cf_confidences=[0.0], bridge_weights=[0.0],
                      lexical_weights=[0.0, 0.5, 1.0], search_candidates=20)
    split = SimpleNamespace(n_items=n_items)
    _, cold, best = search_settings(hc, split, "text", dense, cf, None, val, {}, lexical)
    assert best["lexical_weight"] > 0  # the text embeddings are noise: lexical matching carries cold items
    assert best["cold_ndcg@10"] >= best["cold_bm25_only"] > best["cold_text_only"] + 0.2
    exhaustive = search_settings(HybridConfig(**{**hc.__dict__, "search_candidates": 0}), split, "text", dense, cf,
                                 None, val, {}, lexical)
    assert exhaustive[1]["0.0"] == pytest.approx(cold["0.0"], abs=1e-12)  # the same grid, summed in another order
    assert exhaustive[2] == pytest.approx(best, abs=1e-12)  # and exactly the same choice
