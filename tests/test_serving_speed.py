"""The one-query paths that serving takes (recsys_llm.hybrid.sparse.rows_dot, the scorers' few-query branches,
IdMap.lookup, Recommender.rows) compute what the batch paths compute."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys_llm.data.ids import IdMap
from recsys_llm.hybrid import CollaborativeScorer, HybridModel, text_neighbours
from recsys_llm.hybrid.collaborative import FEW_QUERIES
from recsys_llm.hybrid.lexical import LexicalScorer
from recsys_llm.hybrid.sparse import rows_dot


def _histories(rng: np.random.Generator, n_items: int, n: int) -> list[np.ndarray]:
    hs = [rng.integers(0, n_items, size=int(rng.integers(1, 30))) for _ in range(n)]
    return [*hs, np.empty(0, np.int64), np.array([3, 3, 3])]  # an empty history and a repeated item


def test_rows_dot_is_the_sparse_product_with_repeats_and_empty_rows():
    rng = np.random.default_rng(0)
    m = sp.random(40, 55, density=0.15, format="csr", dtype=np.float32, random_state=1)
    m = sp.vstack([m, sp.csr_matrix((1, 55), dtype=np.float32)]).tocsr()  # row 40 has no entries
    for rows in (np.array([3, 7, 7, 0, 40]), np.array([40]), np.arange(41), np.empty(0, np.int64)):
        w = rng.random(len(rows)).astype(np.float32)
        want = (sp.csr_matrix((w, (np.zeros(len(rows), int), rows)), shape=(1, 41)) @ m).toarray()[0]
        got = rows_dot(m, rows, w)
        assert got.shape == (55,) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("density", [1.0, 0.05])  # a whole-catalog EASE (dense copy) and a pruned matrix
@pytest.mark.parametrize("halflife", [0.0, 3.0])
def test_collaborative_scores_of_one_query_equal_the_batch_product(density, halflife):
    rng = np.random.default_rng(1)
    n = 60
    matrix = sp.random(n, n, density=density, format="csr", dtype=np.float32, random_state=2)
    cf = CollaborativeScorer(matrix, np.ones(n, np.int64), "ease")
    hs = _histories(rng, n, FEW_QUERIES + 5)
    batch = cf.score(hs, n_items=n + 4, halflife=halflife)  # > FEW_QUERIES: one sparse product
    assert (cf._dense() is not None) == (density == 1.0)
    one = np.vstack([cf.score([h], n_items=n + 4, halflife=halflife) for h in hs])
    np.testing.assert_allclose(one, batch, rtol=1e-5, atol=1e-6)
    assert not one[:, n:].any()  # items added after fitting score 0
    with pytest.raises(ValueError, match="outside"):
        cf.score([np.array([n + 4])], n_items=n + 4)


def test_lexical_scores_of_one_query_equal_the_batch_product():
    texts = ["Acme X100 camera", "Acme X200 camera bag", "Zeta Q7 phone", "Zeta Q7 phone case", "", "the the",
             "camera phone Acme Zeta"]
    lex = LexicalScorer.fit(texts, query_items=3)
    hs = [np.array([0]), np.array([2, 1, 3, 6]), np.empty(0, np.int64), np.array([5, 5]), np.array([9, 0])]
    batch = lex.score(hs, n_items=9)
    one = np.vstack([lex.score([h], n_items=9) for h in hs])
    np.testing.assert_allclose(one, batch, rtol=1e-5, atol=1e-5)
    assert one[0, 1] > 0 and one[0, 2] == 0  # "Acme camera" shares words with item 1, none with item 2


def test_hybrid_scores_one_user_as_in_a_batch_and_ranks_alike():
    """What serving computes per request equals the batch the hybrid's validation used."""
    rng = np.random.default_rng(3)
    n, d = 50, 8
    emb = rng.normal(size=(n, d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    counts = rng.integers(0, 5, size=n)
    cf = CollaborativeScorer(sp.random(n, n, density=1.0, format="csr", dtype=np.float32, random_state=4),
                             counts.astype(np.int64), "ease")
    model = HybridModel(cf, 0.6, 2.0, halflife=5.0, neighbours=text_neighbours(emb, counts, k=5), bridge=0.3,
                        lexical=LexicalScorer.fit([f"w{i % 7} w{i % 3}" for i in range(n)]), lexical_weight=0.2)
    hs = _histories(rng, n, FEW_QUERIES + 3)
    dense = rng.normal(size=(len(hs), n)).astype(np.float32)
    batch = model.score(dense, hs)
    one = np.vstack([model.score(dense[i : i + 1], [h]) for i, h in enumerate(hs)])
    np.testing.assert_allclose(one, batch, rtol=1e-4, atol=1e-5)
    top = lambda s: np.argsort(-s, kind="stable")[:10]  # noqa: E731
    assert sum((top(a) == top(b)).all() for a, b in zip(one, batch, strict=True)) >= len(hs) - 1


def test_idmap_lookup_equals_to_internal():
    ids = IdMap.fit(pd.Series(["10", "2", "tt7", "3"]))
    for x in ["10", " 2 ", "tt7", "3", "99", ""]:
        assert ids.lookup(x) == int(ids.to_internal(pd.Series([x]))[0])
    assert ids.lookup("99") == -1


def test_rows_and_table_hold_the_same_recommendations(tiny_run):
    from recsys_llm.serve import Recommender

    rec = Recommender.load(tiny_run)
    user = str(rec.users.external[0])
    listing = rec.list_user(user, k=5)
    rows, table = rec.rows(*listing), rec.recommend(user, k=5)
    assert [r["item_id"] for r in rows] == table["item_id"].tolist() and len(rows) == 5
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([r["score"] for r in rows], table["score"].to_numpy())
    assert table.dtypes["score"] == np.float32 and table.dtypes["rank"] == np.int64
    assert all(r["stage"] == rec.served.label for r in rows)
