"""Index contract: one test mixin run against every retriever (exact numpy, FAISS Flat, FAISS IVF)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys_llm.index.base import IndexMismatchError, load_index
from recsys_llm.index.convert import as_ids, as_vectors
from recsys_llm.index.exact import ExactIndex
from recsys_llm.index.faiss_index import FaissIndex


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    vecs = _unit(rng, 300, 16)
    ids = rng.permutation(np.arange(1000, 1300)).astype(np.int64)  # non-contiguous, shuffled ids
    queries = _unit(rng, 20, 16)
    return vecs, ids, queries


def _brute(vecs, ids, queries, k, exclude=None):
    """Independent reference: full argsort of the score matrix."""
    scores = queries @ vecs.T
    out = []
    for r, row in enumerate(scores):
        order = np.argsort(-row, kind="stable")
        got = [ids[j] for j in order if exclude is None or ids[j] not in set(exclude[r])]
        out.append(got[:k])
    return np.array(out)


class IndexContract:
    """Every VectorIndex must pass these; subclasses provide ``make(dim)``."""

    exact = True

    def make(self, dim):
        raise NotImplementedError

    def test_search_matches_brute_force(self, data):
        vecs, ids, q = data
        idx = self.make(16)
        idx.add(vecs, ids)
        scores, got = idx.search(q, 10)
        assert got.dtype == np.int64 and scores.dtype == np.float32 and got.shape == (20, 10)
        assert (np.diff(scores, axis=1) <= 1e-6).all(), "scores must be descending"
        ref = _brute(vecs, ids, q, 10)
        if self.exact:
            np.testing.assert_array_equal(got, ref)
            np.testing.assert_allclose(scores[:, 0], (q @ vecs.T).max(axis=1), rtol=1e-5)
        else:
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref, strict=True)])
            assert recall >= 0.8

    def test_exclude_filters_and_keeps_k(self, data):
        vecs, ids, q = data
        idx = self.make(16)
        idx.add(vecs, ids)
        first = idx.search(q, 5)[1]
        exclude = [row[:3] for row in first]  # each query's top 3 are "seen"
        _, got = idx.search(q, 5, exclude=exclude)
        assert got.shape == (20, 5) and (got >= 0).all()
        for row, ex in zip(got, exclude, strict=True):
            assert not set(row) & set(ex)
        if self.exact:
            np.testing.assert_array_equal(got, _brute(vecs, ids, q, 5, exclude))

    def test_k_larger_than_index_pads(self):
        idx = self.make(4)
        idx.add(np.eye(4), [3, 1, 2, 0])
        scores, got = idx.search(np.eye(4)[:2], 6, exclude=[[3], []])
        assert got.shape == (2, 6)
        assert (got[0, 3:] == -1).all() and np.isneginf(scores[0, 3:]).all()
        assert sorted(got[0, :3].tolist()) == [0, 1, 2]  # id 3 excluded
        assert sorted(got[1, :4].tolist()) == [0, 1, 2, 3] and (got[1, 4:] == -1).all()

    def test_empty_index_returns_padding(self):
        scores, got = self.make(4).search(np.ones((2, 4)), 3)
        assert (got == -1).all() and np.isneginf(scores).all()

    def test_input_hygiene(self, data):
        vecs, ids, q = data
        idx = self.make(16)
        with pytest.raises(ValueError, match="dimension 8 does not match the index dimension 16"):
            idx.add(vecs[:, :8], ids)
        bad = vecs.copy()
        bad[5, 0] = np.nan
        with pytest.raises(ValueError, match="NaN or inf.*row 5"):
            idx.add(bad, ids)
        with pytest.raises(ValueError, match="duplicate ids"):
            idx.add(vecs[:2], [1, 1])
        idx.add(vecs.astype(np.float64)[:, ::-1][:, ::-1], ids)  # float64, non-contiguous: converted once
        with pytest.raises(ValueError, match="already in the index"):
            idx.add(vecs[:1], ids[:1])
        with pytest.raises(ValueError, match="k=0"):
            idx.search(q, 0)
        with pytest.raises(ValueError, match="queries: dimension"):
            idx.search(q[:, :3], 2)
        with pytest.raises(ValueError, match="one id array per query"):
            idx.search(q, 2, exclude=[[1]])

    def test_save_load_roundtrip_and_fingerprint(self, data, tmp_path):
        vecs, ids, q = data
        idx = self.make(16)
        idx.add(vecs, ids)
        idx.metadata = {"encoder": {"backbone": "b", "adapter_sha256": "abc"}, "data_fingerprint": "f"}
        idx.save(tmp_path / "index")
        info = json.loads((tmp_path / "index" / "index.json").read_text())
        assert info["ntotal"] == 300 and info["dim"] == 16 and info["metric"] == "inner_product"
        again = load_index(tmp_path / "index", expected={"dim": 16, "metadata": {"data_fingerprint": "f"}})
        assert type(again) is type(idx) and again.ntotal == 300
        np.testing.assert_array_equal(again.search(q, 7)[1], idx.search(q, 7)[1])
        with pytest.raises(IndexMismatchError, match="adapter_sha256: index has 'abc', expected 'zzz'"):
            load_index(tmp_path / "index", expected={"metadata": {"encoder": {"adapter_sha256": "zzz"}}})
        with pytest.raises(IndexMismatchError, match="dim: index has 16, expected 384"):
            load_index(tmp_path / "index", expected={"dim": 384})

    def test_save_is_atomic(self, data, tmp_path, monkeypatch):
        vecs, ids, _ = data
        idx = self.make(16)
        idx.add(vecs[:10], ids[:10])
        idx.save(tmp_path / "index")
        idx.add(vecs[10:20], ids[10:20])

        def boom(folder):
            raise OSError("disk full")

        monkeypatch.setattr(idx, "_write", boom)
        with pytest.raises(OSError, match="disk full"):
            idx.save(tmp_path / "index")
        assert load_index(tmp_path / "index").ntotal == 10  # the last good index survives
        assert [p.name for p in tmp_path.iterdir()] == ["index"]  # no temp folders left behind


class TestExact(IndexContract):
    def make(self, dim):
        return ExactIndex(dim)


class TestFaissFlat(IndexContract):
    def make(self, dim):
        return FaissIndex(dim, factory="Flat", use_gpu="no")


class TestFaissIVF(IndexContract):
    exact = False

    def make(self, dim):
        idx = FaissIndex(dim, factory="IVF4,Flat", use_gpu="no")
        idx._index.nprobe = 4  # all lists: exact up to float error, tested as approximate
        return idx

    def test_k_larger_than_index_pads(self):
        pytest.skip("IVF needs at least as many training vectors as lists")

    def test_empty_index_returns_padding(self):
        pytest.skip("covered for Flat")


def test_faiss_and_exact_agree(data):
    vecs, ids, q = data
    a, b = ExactIndex(16), FaissIndex(16, use_gpu="no")
    a.add(vecs, ids)
    b.add(vecs, ids)
    np.testing.assert_array_equal(a.search(q, 20)[1], b.search(q, 20)[1])


def test_bad_factory_and_gpu_requests_are_clear():
    with pytest.raises(ValueError, match="factory string 'Nope' is not valid"):
        FaissIndex(8, factory="Nope", use_gpu="no")
    with pytest.raises(ValueError, match="use_gpu='maybe'"):
        FaissIndex(8, use_gpu="maybe")
    from recsys_llm.index.faiss_index import faiss_gpus

    if faiss_gpus() == 0:
        with pytest.raises(RuntimeError, match="faiss reports no GPU"):
            FaissIndex(8, use_gpu="yes")


def test_load_missing_folder_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="index build"):
        load_index(tmp_path / "nothing")


def test_convert_boundary():
    assert as_vectors([1, 2, 3]).shape == (1, 3)
    with pytest.raises(ValueError, match="expected shape"):
        as_vectors(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="numeric"):
        as_vectors(np.array([["a"]]))
    with pytest.raises(ValueError, match="ids must be >= 0"):
        as_ids([0, -3], 2)
    with pytest.raises(ValueError, match="expected 3 ids"):
        as_ids([0, 1], 3)
    with pytest.raises(ValueError, match="integer ids"):
        as_ids([0.5], 1)
