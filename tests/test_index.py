"""Index contract: one test mixin run against every retriever (exact numpy, FAISS types, Milvus in
test_index_milvus.py), plus FAISS-specific behaviour: index types, updates, tombstones, search parameters,
tuning, the auto choice and GPU (marked, skipped without faiss-gpu and CUDA)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from recsys_llm.config import IndexConfig
from recsys_llm.index.base import IndexMismatchError
from recsys_llm.index.choose import auto_factory, index_from_config, ivf_nlist
from recsys_llm.index.convert import as_id_list, as_ids, as_vectors
from recsys_llm.index.exact import ExactIndex
from recsys_llm.index.faiss_index import FaissIndex, faiss_gpus
from recsys_llm.index.registry import load_index
from recsys_llm.index.tuning import exact_neighbours, recall_at_k, sweep, tune


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clustered(rng: np.random.Generator, n: int, d: int, centres: int = 40) -> np.ndarray:
    """Planted structure: noisy copies of a few centres, as encoder outputs look."""
    c = _unit(rng, centres, d)
    x = c[rng.integers(0, centres, n)] + 0.35 * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


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


def _overlap(got, ref) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, ref, strict=True)]))


class IndexContract:
    """Every VectorIndex must pass these; subclasses provide ``make(dim)``.

    ``exact``: results must equal brute force (else recall >= ``min_recall``). ``snapshot``: ``save`` writes
    the vectors (False for stores that persist each write, like Milvus). ``tiny_ok``: works with fewer
    vectors than an IVF has lists.
    """

    exact = True
    min_recall = 0.8
    snapshot = True
    tiny_ok = True

    def make(self, dim):
        raise NotImplementedError

    def _check(self, got, ref):
        if self.exact:
            np.testing.assert_array_equal(got, ref)
        else:
            assert _overlap(got, ref) >= self.min_recall

    def test_search_matches_brute_force(self, data):
        vecs, ids, q = data
        idx = self.make(16)
        idx.add(vecs, ids)
        scores, got = idx.search(q, 10)
        assert got.dtype == np.int64 and scores.dtype == np.float32 and got.shape == (20, 10)
        assert (np.diff(scores, axis=1) <= 1e-5).all(), "scores must be descending"
        self._check(got, _brute(vecs, ids, q, 10))
        if self.exact:
            np.testing.assert_allclose(scores[:, 0], (q @ vecs.T).max(axis=1), rtol=1e-5)

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
        if not self.tiny_ok:
            pytest.skip("needs at least as many training vectors as IVF lists")
        idx = self.make(4)
        idx.add(np.eye(4), [3, 1, 2, 0])
        scores, got = idx.search(np.eye(4)[:2], 6, exclude=[[3], []])
        assert got.shape == (2, 6)
        assert (got[0, 3:] == -1).all() and np.isneginf(scores[0, 3:]).all()
        assert sorted(got[0, :3].tolist()) == [0, 1, 2]  # id 3 excluded
        assert sorted(got[1, :4].tolist()) == [0, 1, 2, 3] and (got[1, 4:] == -1).all()

    def test_empty_index_returns_padding(self, data):
        scores, got = self.make(4).search(np.ones((2, 4)), 3)
        assert (got == -1).all() and np.isneginf(scores).all()
        vecs, ids, q = data
        idx = self.make(16)
        idx.add(vecs, ids)
        assert idx.remove(ids) == 300 and idx.ntotal == 0  # emptied by removal: padding again
        assert (idx.search(q, 3)[1] == -1).all()

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
        with pytest.raises(ValueError, match="expected 300 ids"):
            idx.add(vecs, ids[:5])
        idx.add(vecs.astype(np.float64)[:, ::-1][:, ::-1], ids)  # float64, non-contiguous: converted once
        with pytest.raises(ValueError, match="already in the index.*use upsert"):
            idx.add(vecs[:1], ids[:1])
        with pytest.raises(ValueError, match="k=0"):
            idx.search(q, 0)
        with pytest.raises(ValueError, match="queries: dimension"):
            idx.search(q[:, :3], 2)
        with pytest.raises(ValueError, match="one id array per query"):
            idx.search(q, 2, exclude=[[1]])
        assert idx.ntotal == 300  # no failed call changed the index

    def test_remove_and_upsert(self, data):
        vecs, ids, q = data
        idx = self.make(16)
        idx.add(vecs, ids)
        assert idx.remove(ids[:50]) == 50 and idx.ntotal == 250
        got = idx.search(q, 10)[1]
        assert not np.isin(got, ids[:50]).any()
        self._check(got, _brute(vecs[50:], ids[50:], q, 10))
        with pytest.raises(ValueError, match=r"ids not in the index: \[.*\(2 in all\); nothing removed"):
            idx.remove([ids[0], 99999, ids[60]])
        assert idx.ntotal == 250 and idx.contains([ids[60]]).all()  # the valid id was not removed either
        assert idx.remove([ids[0], ids[60]], missing="ignore") == 1
        # upsert: 5 existing ids get query 0's direction, 2 new ids are added
        target = np.repeat(q[:1], 7, axis=0)
        up = np.concatenate([ids[100:105], [5, 6]])
        assert idx.upsert(target, up) == 5 and idx.ntotal == 251
        top = idx.search(q[:1], 7)[1][0]
        assert set(top.tolist()) == set(up.tolist())
        assert sorted(idx.contains([5, 6, ids[0], ids[100]]).tolist()) == [False, True, True, True]

    def test_id_map_stays_consistent_through_random_updates(self, data):
        vecs, ids, q = data
        rng = np.random.default_rng(1)
        idx = self.make(16)
        model = dict(zip(ids[:200].tolist(), vecs[:200], strict=True))
        idx.add(vecs[:200], ids[:200])
        spare = list(zip(ids[200:].tolist(), vecs[200:], strict=True))
        for step in range(6):
            gone = rng.choice(sorted(model), 15, replace=False)
            assert idx.remove(gone) == 15
            for g in gone:
                del model[int(g)]
            new = [spare.pop() for _ in range(10)]
            idx.add(np.stack([v for _, v in new]), [i for i, _ in new])
            model.update(new)
            again = rng.choice(sorted(model), 5, replace=False)
            fresh = _unit(rng, 5, 16)
            idx.upsert(fresh, again)
            model.update(zip(again.tolist(), fresh, strict=True))
            assert idx.ntotal == len(model), f"step {step}"
            assert sorted(idx.ids.tolist()) == sorted(model)
        mids = np.array(sorted(model))
        mvec = np.stack([model[i] for i in mids])
        got = idx.search(q, 10)[1]
        assert np.isin(got, mids).all(), "a removed id came back"
        self._check(got, _brute(mvec, mids, q, 10))

    def test_save_load_roundtrip_and_fingerprint(self, data, tmp_path):
        vecs, ids, q = data
        idx = self.make(16)
        idx.add(vecs, ids)
        idx.remove(ids[:7])
        idx.metadata = {"encoder": {"backbone": "b", "adapter_sha256": "abc"}, "data_fingerprint": "f"}
        idx.save(tmp_path / "index")
        info = json.loads((tmp_path / "index" / "index.json").read_text())
        assert info["ntotal"] == 293 and info["dim"] == 16 and info["metric"] == "inner_product"
        again = load_index(tmp_path / "index", expected={"dim": 16, "metadata": {"data_fingerprint": "f"}})
        assert type(again) is type(idx) and again.ntotal == 293
        assert sorted(again.ids.tolist()) == sorted(idx.ids.tolist())
        np.testing.assert_array_equal(again.search(q, 7)[1], idx.search(q, 7)[1])
        again.add(vecs[:1], ids[:1])  # a loaded index keeps taking updates
        assert again.ntotal == 294
        with pytest.raises(IndexMismatchError, match="adapter_sha256: index has 'abc', expected 'zzz'"):
            load_index(tmp_path / "index", expected={"metadata": {"encoder": {"adapter_sha256": "zzz"}}})
        with pytest.raises(IndexMismatchError, match="dim: index has 16, expected 384"):
            load_index(tmp_path / "index", expected={"dim": 384})
        with pytest.raises(IndexMismatchError, match="backbone: index has 'b', expected 'other'"):
            idx.check({"metadata": {"encoder": {"backbone": "other"}}})

    def test_save_is_atomic(self, data, tmp_path, monkeypatch):
        vecs, ids, _ = data
        idx = self.make(16)
        idx.add(vecs[:20], ids[:20])
        idx.save(tmp_path / "index")
        idx.add(vecs[20:30], ids[20:30])

        def boom(folder):
            raise OSError("disk full")

        monkeypatch.setattr(idx, "_write", boom)
        with pytest.raises(OSError, match="disk full"):
            idx.save(tmp_path / "index")
        # the last good folder survives; a snapshot index still holds what it held when saved
        assert load_index(tmp_path / "index").ntotal == (20 if self.snapshot else 30)
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".db")) == ["index"]


class TestExact(IndexContract):
    def make(self, dim):
        return ExactIndex(dim)


class TestFaissFlat(IndexContract):
    def make(self, dim):
        return FaissIndex(dim, factory="Flat", use_gpu="no")


class TestFaissIVF(IndexContract):
    tiny_ok = False

    def make(self, dim):
        return FaissIndex(dim, factory="IVF4,Flat", use_gpu="no", nprobe=4)  # all lists: exact up to float error


class TestFaissIVFPQ(IndexContract):
    exact, min_recall, tiny_ok = False, 0.5, False

    def make(self, dim):
        return FaissIndex(dim, factory=f"IVF4,PQ{dim // 2}x4", use_gpu="no", nprobe=4)


class TestFaissIVFRefine(IndexContract):
    tiny_ok = False

    def make(self, dim):  # all lists, and every candidate re-ranked exactly: exact up to float error
        return FaissIndex(dim, factory="IVF4,SQ8,RFlat", use_gpu="no", nprobe=4, k_factor=64)


class TestFaissIVFHNSWQuantizer(IndexContract):
    tiny_ok = False

    def make(self, dim):
        return FaissIndex(dim, factory="IVF4_HNSW8,Flat", use_gpu="no", nprobe=4)


class TestFaissHNSW(IndexContract):
    exact = False

    def make(self, dim):
        return FaissIndex(dim, factory="HNSW16", use_gpu="no", ef_search=64)


# ------------------------------------------------------------------------------------------ FAISS types
FACTORIES = [("Flat", None, 1.0), ("IVF32,Flat", 8, 0.9), ("IVF32,SQ8", 8, 0.85), ("IVF32,PQ8", 8, 0.5),
             ("OPQ4,IVF32,PQ4", 8, 0.4), ("SQ8", None, 0.9), ("PQ8", None, 0.5), ("HNSW16", None, 0.9),
             ("IVF32,SQ8,RFlat", 8, 0.85), ("IVF32_HNSW16,Flat", 8, 0.9)]


@pytest.mark.parametrize(("factory", "nprobe", "floor"), FACTORIES, ids=[f[0] for f in FACTORIES])
def test_every_documented_type_builds_updates_and_round_trips(factory, nprobe, floor, tmp_path):
    rng = np.random.default_rng(3)
    x = _clustered(rng, 3000, 32)
    ids = np.arange(10, 3010, dtype=np.int64)
    q = _clustered(np.random.default_rng(4), 50, 32)
    idx = FaissIndex(32, factory, use_gpu="no", nprobe=nprobe, ef_search=128 if factory.startswith("HNSW") else None)
    idx.add(x, ids)
    idx.remove(ids[:100])
    idx.upsert(x[100:150], ids[100:150] + 10_000)  # same vectors under new ids
    live_ids = np.concatenate([ids[100:], ids[100:150] + 10_000])
    live = np.concatenate([x[100:], x[100:150]])
    got = idx.search(q, 10)[1]
    assert not np.isin(got, ids[:100]).any()
    truth = exact_neighbours(live, live_ids, q, 10)
    assert recall_at_k(got, truth) >= floor
    idx.save(tmp_path / "i")
    again = load_index(tmp_path / "i", use_gpu="no")
    np.testing.assert_array_equal(again.search(q, 10)[1], got)
    assert again.params()["nprobe"] == nprobe


def test_hnsw_tombstones_are_skipped_and_compacted(tmp_path):
    rng = np.random.default_rng(5)
    x = _clustered(rng, 1000, 16)
    q = x[:20]
    idx = FaissIndex(16, "HNSW16", use_gpu="no", ef_search=64, compact_at=0.3)
    idx.add(x, np.arange(1000))
    idx.remove(np.arange(0, 200))  # 20% tombstones, below compact_at
    assert idx.params()["tombstones"] == 200 and idx._cpu.ntotal == 1000
    s, got = idx.search(q, 10)
    assert (got >= 200).all(), "tombstoned items must never come back"
    assert (got >= 0).all(), "tombstones are filtered inside the search: still k results"
    idx.save(tmp_path / "h")
    assert load_index(tmp_path / "h").params()["tombstones"] == 200
    idx.upsert(x[:5], np.arange(5))  # a tombstoned id comes back with a new vector
    assert idx.contains([0, 4, 5]).tolist() == [True, True, False]
    idx.remove(np.arange(200, 400))  # 395 tombstones > 0.3 * 605 live: rebuilt without them
    assert idx.params()["tombstones"] == 0 and idx._cpu.ntotal == idx.ntotal == 605
    truth = exact_neighbours(np.concatenate([x[:5], x[400:]]), np.concatenate([np.arange(5), np.arange(400, 1000)]),
                             q, 10)
    assert recall_at_k(idx.search(q, 10)[1], truth) >= 0.9


def test_search_params_are_validated_saved_and_reapplied(tmp_path):
    rng = np.random.default_rng(6)
    x = _clustered(rng, 2000, 16)
    idx = FaissIndex(16, "IVF32,Flat", use_gpu="no", nprobe=3)
    idx.add(x, np.arange(2000))
    assert idx.nlist == 32 and idx.nprobe == 3
    idx.set_search_params(nprobe=500)
    assert idx.nprobe == 32  # capped at nlist
    idx.set_search_params(nprobe=5)
    idx.save(tmp_path / "ivf")
    again = load_index(tmp_path / "ivf")
    assert again.nprobe == 5 and again._ivf.nprobe == 5
    with pytest.raises(ValueError, match="ef_search does not apply to FAISS 'IVF32,Flat'"):
        idx.set_search_params(ef_search=10)
    with pytest.raises(ValueError, match="nprobe does not apply to FAISS 'Flat'"):
        FaissIndex(16, "Flat", use_gpu="no", nprobe=4)
    with pytest.raises(ValueError, match="nprobe=0"):
        idx.set_search_params(nprobe=0)


def test_tune_picks_the_smallest_nprobe_reaching_the_target():
    rng = np.random.default_rng(7)
    x = _clustered(rng, 4000, 16, centres=200)
    q = _clustered(np.random.default_rng(8), 100, 16, centres=200)
    idx = FaissIndex(16, "IVF64,Flat", use_gpu="no")
    idx.add(x, np.arange(4000))
    truth = exact_neighbours(x, np.arange(4000), q, 10)
    rows = sweep(idx, q, truth, k=10)
    assert [r.value for r in rows] == [1, 2, 4, 8, 16, 32, 64] and rows[-1].recall == pytest.approx(1.0, abs=1e-6)
    assert idx.nprobe is None or idx._ivf.nprobe == 1  # a sweep leaves the index as it was
    every = sweep(idx, q, truth, k=10, values=list(range(1, 65)))
    smallest = next(r for r in every if r.reaches(0.9))  # the smallest integer nprobe reaching the target
    best = tune(idx, q, truth, k=10, target=0.9)  # doubling, then bisection
    assert best.value == smallest.value and idx.nprobe == smallest.value and best.recall >= 0.9
    first = next(r for r in rows if r.reaches(0.9))
    assert best.value <= first.value and (first.value == 1 or best.value > first.value // 2)
    with pytest.raises(ValueError, match="target=1.5"):
        tune(idx, q, truth, target=1.5)
    pq = FaissIndex(16, "IVF16,PQ4x4", use_gpu="no")
    pq.add(x, np.arange(4000))
    with pytest.raises(ValueError, match="below the target 0.999"):
        tune(pq, q, truth, k=10, target=0.999)


def test_training_sample_and_too_few_vectors(caplog):
    rng = np.random.default_rng(9)
    x = _clustered(rng, 3000, 16)
    idx = FaissIndex(16, "IVF16,Flat", use_gpu="no", train_sample=500, seed=1)
    with caplog.at_level(logging.INFO, logger="recsys_llm.index.faiss_index"):
        idx.add(x, np.arange(3000))
    assert "training FAISS IVF16,Flat on 500 vectors" in caplog.text
    assert "FAISS wants >= 624" in caplog.text  # 500 < 39 * 16: warned, still trained
    assert idx.is_trained and idx.ntotal == 3000
    small = FaissIndex(16, "IVF64,Flat", use_gpu="no")
    with pytest.raises(ValueError, match="could not be trained on 10 vectors.*at least ~64"):
        small.add(x[:10], np.arange(10))
    assert small.ntotal == 0
    with pytest.raises(ValueError, match="train_sample=0"):
        FaissIndex(16, "IVF16,Flat", use_gpu="no", train_sample=0)


def test_serialized_bytes_per_item_follow_the_codes():
    rng = np.random.default_rng(10)
    x = _clustered(rng, 2000, 64)
    per = {}
    for factory in ("Flat", "IVF16,SQ8", "IVF16,PQ8"):
        idx = FaissIndex(64, factory, use_gpu="no")
        idx.add(x, np.arange(2000))
        per[factory] = idx.serialized_bytes() / 2000
    assert 4 * 64 + 16 <= per["Flat"] < 4 * 64 + 24  # vectors + faiss id + our id map
    assert 64 + 16 <= per["IVF16,SQ8"] < 64 + 40  # 1 byte per dim (+ centroids amortised)
    assert per["IVF16,PQ8"] < per["IVF16,SQ8"] < per["Flat"]


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
    if faiss_gpus() == 0:
        with pytest.raises(RuntimeError, match="faiss reports no GPU"):
            FaissIndex(8, use_gpu="yes")


# ------------------------------------------------------------------------------------------ auto choice
def test_auto_factory_by_size_and_budget():
    gib = 2**30
    assert auto_factory(9_742, 384).factory == "Flat"
    assert auto_factory(50_000, 384).factory == "Flat"
    assert ivf_nlist(1_000_000) == 4096 and ivf_nlist(60_000) == 1024 and ivf_nlist(10) == 16
    c = auto_factory(1_000_000, 384, memory_budget=8 * gib)
    assert c.factory == "IVF4096_HNSW32,Flat" and c.train_sample == 16 * 4096 and c.train_iters == 10
    assert auto_factory(60_000, 384).factory == "IVF1024,Flat"  # below 2048 lists: brute-force quantizer
    c = auto_factory(10_000_000, 384, memory_budget=8 * gib)  # 15.4 GB float32 > 8 GiB, 3.9 GB SQ8 fits
    assert c.factory == "IVF16384_HNSW32,SQ8" and c.bytes_per_item == 392 and "8-bit" in c.reason
    assert auto_factory(100_000_000, 384, memory_budget=16 * gib).factory == "OPQ64,IVF32768_HNSW32,PQ64"
    assert auto_factory(100_000_000, 384, memory_budget=3 * gib).factory == "OPQ16,IVF32768_HNSW32,PQ16"
    with pytest.raises(ValueError, match="do not fit a 0.50 GiB memory budget"):
        auto_factory(100_000_000, 384, memory_budget=gib // 2)
    with pytest.raises(ValueError, match="memory_budget=0"):
        auto_factory(10, 8, memory_budget=0)


def test_auto_choice_builds_and_reaches_recall_at_scale_of_a_test(tmp_path):
    """The automatic path of `index build`: choice, sampled training, tuning; the loaded index serves the tuned
    nprobe and meets the target on queries it was not tuned on."""
    rng = np.random.default_rng(11)
    x = _clustered(rng, 60_000, 16, centres=500)
    idx, reason = index_from_config(IndexConfig(use_gpu="no"), 16, len(x))
    assert idx.factory == "IVF1024,Flat" and "16,384 sampled vectors" in reason
    assert idx.params()["train_sample"] == 16_384 and idx.params()["train_iters"] == 10
    idx.add(x, np.arange(len(x)))
    q = _clustered(np.random.default_rng(12), 300, 16, centres=500)
    truth = exact_neighbours(x, np.arange(len(x)), q, 10)
    row = tune(idx, q[:150], truth[:150], k=10, target=0.95)
    assert row.recall >= 0.95 and 1 < row.value < idx.nlist
    idx.save(tmp_path / "auto")
    again = load_index(tmp_path / "auto", use_gpu="no")
    assert again.nprobe == row.value and again._ivf.nprobe == row.value
    assert json.loads((tmp_path / "auto" / "index.json").read_text())["params"]["nprobe"] == row.value
    assert recall_at_k(again.search(q[150:], 10)[1], truth[150:]) >= 0.93  # held-out queries


def test_refine_k_factor_round_trips_and_tombstones(tmp_path):
    rng = np.random.default_rng(13)
    x = _clustered(rng, 4000, 32, centres=100)
    q = _clustered(np.random.default_rng(14), 60, 32, centres=100)
    ids = np.arange(500, 4500, dtype=np.int64)
    idx = FaissIndex(32, "IVF32,SQ8,RFlat", use_gpu="no", k_factor=3)
    idx.add(x, ids)
    assert idx.tombstones and idx.k_factor == 3 and idx._refine.k_factor == 3
    truth = exact_neighbours(x, ids, q, 10)
    row = tune(idx, q, truth, k=10, target=0.95)
    assert row.param == "nprobe" and row.recall >= 0.95
    idx.remove(ids[:300])  # tombstones, skipped inside the first stage: still k live results
    got = idx.search(q, 10)[1]
    assert not np.isin(got, ids[:300]).any() and (got >= 0).all()
    idx.save(tmp_path / "r")
    again = load_index(tmp_path / "r", use_gpu="no")
    assert (again.nprobe, again.k_factor, again._refine.k_factor) == (row.value, 3, 3)
    np.testing.assert_array_equal(again.search(q, 10)[1], got)
    again.remove(ids[300:1500])  # past compact_at: rebuilt, settings kept
    assert again.params()["tombstones"] == 0 and (again.nprobe, again.k_factor) == (row.value, 3)
    live = exact_neighbours(x[1500:], ids[1500:], q, 10)
    assert recall_at_k(again.search(q, 10)[1], live) >= 0.9


def test_bad_tuning_and_refine_arguments_are_clear():
    with pytest.raises(ValueError, match="k_factor does not apply to FAISS 'IVF16,Flat'.*RFlat"):
        FaissIndex(16, "IVF16,Flat", use_gpu="no", k_factor=4)
    with pytest.raises(ValueError, match="k_factor=0: must be a positive integer"):
        FaissIndex(16, "IVF16,SQ8,RFlat", use_gpu="no", k_factor=0)
    with pytest.raises(ValueError, match="train_iters=0"):
        FaissIndex(16, "IVF16,Flat", use_gpu="no", train_iters=0)
    with pytest.raises(ValueError, match="index.k_factor"):
        IndexConfig(k_factor=-1).validate()
    with pytest.raises(ValueError, match="n_items=-1"):
        auto_factory(-1, 16)


# ------------------------------------------------------------------------------------------ boundary
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
    assert as_id_list(7).tolist() == [7]
    with pytest.raises(ValueError, match="integer item ids"):
        as_id_list(["a"])


def test_load_missing_folder_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="index build"):
        load_index(tmp_path / "nothing")


def test_damaged_folder_is_refused(tmp_path, data):
    vecs, ids, _ = data
    idx = FaissIndex(16, use_gpu="no")
    idx.add(vecs, ids)
    idx.save(tmp_path / "i")
    info = json.loads((tmp_path / "i" / "index.json").read_text())
    info["ntotal"] = 5
    (tmp_path / "i" / "index.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="damaged"):
        load_index(tmp_path / "i")


# ------------------------------------------------------------------------------------------ GPU
needs_faiss_gpu = pytest.mark.skipif(faiss_gpus() == 0, reason="needs faiss-gpu and a CUDA device")


@pytest.mark.gpu
@needs_faiss_gpu
@pytest.mark.parametrize("shard", [True, False])
def test_gpu_flat_equals_cpu_and_follows_updates(shard):
    rng = np.random.default_rng(13)
    x = _clustered(rng, 20_000, 64)
    q = x[:64]
    cpu = FaissIndex(64, "Flat", use_gpu="no")
    gpu = FaissIndex(64, "Flat", use_gpu="yes", shard=shard)
    for idx in (cpu, gpu):
        idx.add(x, np.arange(20_000))
    assert gpu.on_gpu
    np.testing.assert_array_equal(gpu.search(q, 10)[1], cpu.search(q, 10)[1])
    for idx in (cpu, gpu):
        idx.remove(np.arange(0, 64))
        idx.upsert(x[100:110], np.arange(100, 110))
    np.testing.assert_array_equal(gpu.search(q, 10)[1], cpu.search(q, 10)[1])
    assert gpu.search(q, 3000)[1].shape == (64, 3000)  # deeper than the GPU top-k limit: CPU copy


@pytest.mark.gpu
@needs_faiss_gpu
def test_gpu_float16_and_ivf_keep_recall():
    rng = np.random.default_rng(14)
    x = _clustered(rng, 50_000, 64, centres=300)
    q = _clustered(np.random.default_rng(15), 200, 64, centres=300)
    truth = exact_neighbours(x, np.arange(50_000), q, 10)
    for factory, nprobe in (("Flat", None), ("IVF256,Flat", 32), ("IVF256,SQ8", 32)):
        idx = FaissIndex(64, factory, use_gpu="yes", float16=True, nprobe=nprobe)
        idx.add(x, np.arange(50_000))
        assert recall_at_k(idx.search(q, 10)[1], truth) >= 0.95, factory


@pytest.mark.gpu
@needs_faiss_gpu
def test_gpu_refuses_hnsw_when_asked_and_falls_back_on_auto():
    with pytest.raises(ValueError, match="no GPU implementation"):
        FaissIndex(16, "HNSW16", use_gpu="yes")
    assert not FaissIndex(16, "HNSW16", use_gpu="auto").on_gpu


def test_too_few_ivf_results_pad_with_minus_one_and_minus_inf():
    rng = np.random.default_rng(16)
    x = _clustered(rng, 2000, 16, centres=20)
    idx = FaissIndex(16, "IVF64,Flat", use_gpu="no", nprobe=1)
    idx.add(x, np.arange(2000))
    scores, ids = idx.search(x[:5], 1500)  # one list holds far fewer than 1500 items
    assert (ids == -1).any()
    assert np.isneginf(scores[ids == -1]).all() and np.isfinite(scores[ids >= 0]).all()
