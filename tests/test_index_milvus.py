"""MilvusIndex on embedded Milvus Lite: the shared index contract plus reconnect, save and upsert behaviour.

One Lite database per module (starting one costs about half a second); every index gets its own collection,
dropped after the test.
"""

from __future__ import annotations

import doctest
import json
import sys
import uuid

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

import test_index  # noqa: E402
from test_index import IndexContract, _brute  # noqa: E402

from recsys_llm.index import milvus_index  # noqa: E402
from recsys_llm.index.milvus_index import MAX_TOPK, TOKEN_ENV, MilvusIndex  # noqa: E402
from recsys_llm.index.registry import load_index  # noqa: E402

data = test_index.data  # the contract's fixture, shared


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("milvus") / "items.db")


@pytest.fixture
def opened(db):
    """Factory for indexes over fresh collections; drops them afterwards."""
    made: list[MilvusIndex] = []

    def make(dim, **kw):
        kw.setdefault("collection", f"t_{uuid.uuid4().hex[:12]}")
        idx = MilvusIndex(dim, uri=db, **kw)
        made.append(idx)
        return idx

    yield make
    for idx in made:
        if idx._client is not None:
            if idx.client.has_collection(idx.collection):
                idx.client.drop_collection(idx.collection)
            idx.close()


class TestMilvus(IndexContract):
    snapshot = False

    @pytest.fixture(autouse=True)
    def _factory(self, opened):
        self._opened = opened

    def make(self, dim):
        return self._opened(dim)


def test_reopened_collection_sees_data(opened, data):
    vecs, ids, q = data
    a = opened(16)
    a.add(vecs, ids)
    b = opened(16, collection=a.collection)
    assert b.ntotal == 300 and sorted(b.ids.tolist()) == sorted(ids.tolist())
    np.testing.assert_array_equal(b.search(q, 5)[1], _brute(vecs, ids, q, 5))
    b.remove(ids[:10])
    assert a.ntotal == 290 and not a.contains(ids[:10]).any()  # one store, seen by both at once
    assert b.upsert(q[:1] * 3, [ids[60]]) == 1  # delete + insert of the same primary key
    assert a.search(q[:1], 1)[1][0, 0] == ids[60] and a.ntotal == 290


def test_dim_clash_and_drop_existing(opened):
    a = opened(16)
    a.add(np.eye(16)[:3], [1, 2, 3])
    with pytest.raises(ValueError, match=rf"{a.collection}.*dim 16.*dim 8.*drop_existing=True"):
        opened(8, collection=a.collection)
    with pytest.raises(ValueError, match="has a FLAT index.*index_type='FLAT'"):
        opened(16, collection=a.collection, index_type="HNSW")
    b = opened(8, collection=a.collection, drop_existing=True)
    assert b.dim == 8 and b.ntotal == 0


def test_save_load_roundtrip_reconnects_without_token(opened, data, tmp_path, monkeypatch):
    vecs, ids, q = data
    monkeypatch.setenv(TOKEN_ENV, "env-secret-123")
    idx = opened(16, token="arg-secret-456", search_params={"nprobe": 4})
    idx.add(vecs, ids)
    idx.metadata = {"encoder": "e"}
    idx.save(tmp_path / "index")
    assert [p.name for p in (tmp_path / "index").iterdir()] == ["index.json"]
    text = (tmp_path / "index" / "index.json").read_text()
    assert "secret" not in text
    info = json.loads(text)
    assert info["kind"] == "milvus" and info["ntotal"] == 300
    assert info["params"]["uri"] == idx.uri and info["params"]["search_params"] == {"nprobe": 4}
    again = load_index(tmp_path / "index", expected={"metadata": {"encoder": "e"}})
    assert isinstance(again, MilvusIndex) and again.metadata == {"encoder": "e"}
    np.testing.assert_array_equal(again.search(q, 7)[1], idx.search(q, 7)[1])
    again.add(vecs[:1] * 0.5, [5])  # writes go to the store, no save needed
    assert idx.contains([5]).all()
    again.close()
    with pytest.raises(RuntimeError, match="closed"):
        again.ntotal  # noqa: B018
    idx.client.drop_collection(idx.collection)
    with pytest.raises(ValueError, match="not found"):
        load_index(tmp_path / "index")


def test_lite_db_inside_index_folder_is_refused(tmp_path):
    idx = MilvusIndex(4, uri=str(tmp_path / "index" / "items.db"), collection="c")
    try:
        with pytest.raises(ValueError, match="inside the index folder"):
            idx.save(tmp_path / "index")
        assert (tmp_path / "index" / "items.db").exists()
    finally:
        idx.close()


def test_relative_uri_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    idx = MilvusIndex(4, uri="sub/rel.db", collection="c")
    try:
        assert idx.params()["uri"] == str(tmp_path.resolve() / "sub" / "rel.db")
    finally:
        idx.close()


def test_k_above_milvus_cap_is_clear(opened, monkeypatch):
    idx = opened(4)
    idx.add(np.eye(4), [0, 1, 2, 3])
    monkeypatch.setattr(milvus_index, "MAX_TOPK", 2)
    with pytest.raises(ValueError, match="at most 2 results per query"):
        idx.search(np.eye(4)[:1], 3)
    assert MAX_TOPK == 16384


def test_bad_arguments_are_clear(db):
    with pytest.raises(ValueError, match="must end in .db"):
        MilvusIndex(4, uri="somewhere")
    with pytest.raises(ValueError, match="credentials"):
        MilvusIndex(4, uri="http://root:Milvus@localhost:19530")
    with pytest.raises(ValueError, match="Milvus Lite builds only"):
        MilvusIndex(4, uri=db, index_type="IVF_PQ")
    with pytest.raises(ValueError, match="must be a dict"):
        MilvusIndex(4, uri=db, index_params=128)


def test_ivf_and_hnsw_search(opened, data):
    vecs, ids, q = data
    ref = _brute(vecs, ids, q, 10)
    for kw in ({"index_type": "IVF_FLAT", "index_params": {"nlist": 4}, "search_params": {"nprobe": 4}},
               {"index_type": "HNSW", "index_params": {"M": 16, "efConstruction": 64},
                "search_params": {"ef": 4}}):  # ef < k is raised to k
        idx = opened(16, **kw)
        idx.add(vecs, ids)
        params = idx.client.describe_index(idx.collection, "vector")["params"]
        assert params == kw["index_params"]  # the build parameters reach Lite
        idx.client.flush(idx.collection)
        got = idx.search(q, 10)[1]
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref, strict=True)]) >= 0.8


def test_stored_ids_through_the_cluster_iterator(opened, data, monkeypatch):
    vecs, ids, _ = data
    idx = opened(16)
    idx.add(vecs, ids)
    lite = np.sort(idx.ids)
    monkeypatch.setattr(idx, "is_lite", False)  # the query_iterator path a server uses (Lite warns, works)
    np.testing.assert_array_equal(np.sort(idx.ids), lite)
    np.testing.assert_array_equal(lite, np.sort(ids))


def test_module_doctest():
    assert doctest.testmod(milvus_index).failed == 0


def test_missing_pymilvus_says_what_to_install(db, monkeypatch):
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install 'recsys-llm\[milvus\]'"):
        MilvusIndex(4, uri=db)
