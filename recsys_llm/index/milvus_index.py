"""Milvus inner-product index: the item vectors live in a Milvus collection, embedded or on a cluster.

``uri`` picks the store. A path ending in ``.db`` starts Milvus Lite on threads of this process (nothing to
install or run; the ``.db`` is a folder, shared by every client of the same path); ``http://milvus:19530`` is a Milvus server
and ``https://...zillizcloud.com`` Zilliz Cloud. Credentials (``"user:password"`` or an API key) come from
``token`` or the ``RECSYS_LLM_MILVUS_TOKEN`` environment variable and are never written to disk (a ``uri``
with credentials in it is refused for that reason).

The collection has an INT64 primary key ``id`` (the item id) and a FLOAT_VECTOR ``vector`` field with an IP
(inner-product) index. Milvus persists every write itself, so :meth:`VectorIndex.save` (``snapshot =
False``) writes only ``index.json``: the uri, collection and index parameters needed to reconnect. Keep a Lite
``.db`` outside the index folder: saving swaps that folder atomically and would take the database with it.

Index types, measured with milvus-lite 3.2.2 and pymilvus 3.0.2 (20k random 32-d vectors, recall@10 against
exact search, after Lite's background index build): ``FLAT`` exact; ``IVF_FLAT`` and ``IVF_SQ8``
(``index_params={"nlist": 256}``; ``search_params={"nprobe": 1}`` 0.12, ``{"nprobe": 16}`` 0.54);
``HNSW`` and ``HNSW_SQ`` (``{"M": 16, "efConstruction": 200}``, ``{"ef": 64}``: 1.00; ``M=4`` with ``ef=10``:
0.08); ``AUTOINDEX`` (HNSW with default parameters: 1.00). Lite accepts ``IVF_PQ``, ``DISKANN`` and ``SCANN``
at creation but fails to build them and silently searches by brute force, so they are refused on Lite; a
cluster takes every index type Milvus documents. Rows not yet in an indexed segment (fresh inserts) are
searched by brute force, so results right after an insert can be better than the index alone gives.

Example:
    >>> import numpy as np, tempfile, os
    >>> db = os.path.join(tempfile.mkdtemp(), "items.db")
    >>> idx = MilvusIndex(2, uri=db, collection="demo")
    >>> idx.add(np.array([[1, 0], [0, 1], [0.7, 0.7]]), ids=[10, 11, 12])
    >>> idx.search(np.array([[1.0, 0.0]]), k=2, exclude=[[10]])[1].tolist()
    [[12, 11]]
    >>> idx.close()

    On a cluster: ``export RECSYS_LLM_MILVUS_TOKEN=root:Milvus`` then
    ``MilvusIndex(384, uri="http://milvus:19530", collection="movies", index_type="HNSW",
    index_params={"M": 16, "efConstruction": 200}, search_params={"ef": 128})``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from recsys_llm.index.base import VectorIndex

logger = logging.getLogger(__name__)

TOKEN_ENV = "RECSYS_LLM_MILVUS_TOKEN"
MAX_TOPK = 16384  # Milvus caps search limit (and query windows) here
INSERT_BYTES = 16 << 20  # per insert call, well under gRPC's 64 MiB message cap
MAX_INSERT_ROWS = 5000
ID_CHUNK = 4096  # ids per `id in [...]` expression
QUERY_BATCH = 1024  # queries per search call
LITE_INDEX_TYPES = ("FLAT", "AUTOINDEX", "IVF_FLAT", "IVF_SQ8", "HNSW", "HNSW_SQ")
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")
SERVER_SCHEMES = ("http", "https", "tcp", "grpc", "unix")


def _pymilvus():
    try:
        import pymilvus
    except ImportError as e:
        raise ImportError("MilvusIndex needs pymilvus (and milvus-lite for a local .db): "
                          "pip install 'recsys-llm[milvus]'") from e
    return pymilvus


def _resolve_uri(uri: str) -> tuple[str, bool]:
    """``(uri, is_lite)``: a Lite path made absolute (its parent created), a server URI unchanged."""
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"uri={uri!r}: give a Milvus Lite path ending in .db or a server URI "
                         "such as http://milvus:19530")
    parsed = urlparse(uri)
    if parsed.scheme.lower() in SERVER_SCHEMES:
        if parsed.username or parsed.password:
            raise ValueError("uri: contains credentials, which would be written to index.json; pass them as "
                             f"token= or in the {TOKEN_ENV} environment variable instead")
        return uri, False
    if not uri.endswith(".db"):
        raise ValueError(f"uri={uri!r}: a Milvus Lite path must end in .db; a server URI starts with "
                         "http:// or https:// (e.g. http://milvus:19530)")
    path = Path(uri).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path), True


def _chunks(arr: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(arr), size):
        yield arr[start : start + size]


class MilvusIndex(VectorIndex):
    """Inner-product index over a Milvus collection (Milvus Lite for a ``.db`` path, else a server).

    Args:
        dim: vector dimension.
        uri: Milvus Lite ``.db`` path (relative paths resolve against the working directory) or a server
            URI (``http://host:19530``, Zilliz Cloud ``https://...``).
        collection: collection name; reopened when it exists with the same dimension.
        index_type: Milvus vector index (``FLAT`` exact; ``IVF_FLAT``, ``HNSW``, ``AUTOINDEX``, ...).
        index_params: build parameters, e.g. ``{"nlist": 128}`` for IVF or ``{"M": 16,
            "efConstruction": 200}`` for HNSW.
        search_params: search parameters, e.g. ``{"nprobe": 16}`` or ``{"ef": 64}`` (``ef`` is raised to
            the number of results fetched where smaller, as Milvus requires).
        token: credentials; default ``$RECSYS_LLM_MILVUS_TOKEN``. Never saved.
        metadata: free metadata recorded in ``index.json`` (encoder fingerprint, ...).
        drop_existing: drop the collection first if it exists.
        consistency_level: ``Strong`` (default) makes every search and read see all earlier writes.
        create: create the collection when missing; ``False`` (used when reconnecting a saved index) makes a
            missing collection an error.

    Raises:
        ValueError: bad uri or parameters, or an existing collection of another dimension or schema.
        ImportError: pymilvus (or milvus-lite, for a ``.db``) is not installed.
    """

    kind = "milvus"
    snapshot = False

    def __init__(self, dim: int, uri: str = "milvus.db", collection: str = "recsys_items",
                 index_type: str = "FLAT", index_params: Mapping[str, Any] | None = None,
                 search_params: Mapping[str, Any] | None = None, token: str | None = None,
                 metadata: Mapping[str, Any] | None = None, drop_existing: bool = False,
                 consistency_level: str = "Strong", create: bool = True) -> None:
        super().__init__(dim, metadata)
        self.uri, self.is_lite = _resolve_uri(uri)
        if not isinstance(collection, str) or not collection:
            raise ValueError(f"collection={collection!r}: must be a non-empty name")
        self.collection = collection
        self.index_type = str(index_type).upper()
        if self.is_lite and self.index_type not in LITE_INDEX_TYPES:
            raise ValueError(f"index_type={index_type!r}: Milvus Lite builds only {', '.join(LITE_INDEX_TYPES)} "
                             "(others fall back to brute force); use a Milvus server for it")
        for name, value in (("index_params", index_params), ("search_params", search_params)):
            if value is not None and not isinstance(value, Mapping):
                raise ValueError(f"{name}={value!r}: must be a dict such as {{'nlist': 128}}")
        self.index_params = dict(index_params or {})
        self.search_params = dict(search_params or {})
        if consistency_level not in CONSISTENCY_LEVELS:
            raise ValueError(f"consistency_level={consistency_level!r}: choose {', '.join(CONSISTENCY_LEVELS)}")
        self.consistency_level = consistency_level
        pymilvus = _pymilvus()
        token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        self._client: Any = pymilvus.MilvusClient(uri=self.uri, token=token)  # the token is kept nowhere else
        try:
            self._open(pymilvus.DataType, drop_existing, create)
        except BaseException:
            self.close()
            raise

    # --- connection --------------------------------------------------------------------------------------
    def _open(self, data_type: Any, drop_existing: bool, create: bool) -> None:
        c, name = self._client, self.collection
        if drop_existing and c.has_collection(name):
            c.drop_collection(name)
            logger.info("dropped Milvus collection %r at %s", name, self.uri)
        if c.has_collection(name):
            self._check_existing(data_type)
        elif not create:
            raise ValueError(f"Milvus collection {name!r} not found at {self.uri}; it was dropped, or the uri "
                             "points at another store (pass uri= to load_index). Rebuild the index")
        else:
            schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", data_type.INT64, is_primary=True)
            schema.add_field("vector", data_type.FLOAT_VECTOR, dim=self.dim)
            if self.is_lite:  # pymilvus waits for the index with AllocTimestamp, which Lite lacks: 0.5 s lost
                c.create_collection(name, schema=schema, consistency_level=self.consistency_level)
                self._create_index()
            else:
                c.create_collection(name, schema=schema, index_params=self._index_spec(),
                                    consistency_level=self.consistency_level)
            logger.info("created Milvus collection %r (dim %d, %s) at %s", name, self.dim, self.index_type,
                        self.uri)
        c.load_collection(name)

    def _index_spec(self) -> Any:
        params = dict(self.index_params)
        if self.is_lite and params:  # Lite 3.2 reads only the JSON "params" entry, which pymilvus 3 stopped sending
            params["params"] = dict(self.index_params)
        spec = self._client.prepare_index_params()
        spec.add_index(field_name="vector", index_type=self.index_type, metric_type="IP", params=params)
        return spec

    def _create_index(self) -> None:
        self._client.create_index(self.collection, self._index_spec(), sync=not self.is_lite)

    def _check_existing(self, data_type: Any) -> None:
        c, name = self._client, self.collection
        fields = {f["name"]: f for f in c.describe_collection(name)["fields"]}
        pk, vec = fields.get("id", {}), fields.get("vector", {})
        if not (pk.get("is_primary") and pk.get("type") == data_type.INT64
                and vec.get("type") == data_type.FLOAT_VECTOR):
            raise ValueError(f"Milvus collection {name!r} at {self.uri} exists with another schema (fields "
                             f"{sorted(fields)}); MilvusIndex needs an INT64 primary key 'id' and a FLOAT_VECTOR "
                             "'vector'. Choose another collection name or pass drop_existing=True")
        have = int(vec.get("params", {}).get("dim", -1))
        if have != self.dim:
            raise ValueError(f"Milvus collection {name!r} at {self.uri} holds dim {have} vectors, but this index "
                             f"has dim {self.dim}; pass drop_existing=True to replace it, or choose another "
                             "collection name")
        indexes = c.list_indexes(name, field_name="vector")
        if not indexes:
            self._create_index()
            return
        desc = c.describe_index(name, indexes[0])
        metric, kind = str(desc.get("metric_type", "")).upper(), str(desc.get("index_type", "")).upper()
        if metric != "IP" or kind != self.index_type:
            raise ValueError(f"Milvus collection {name!r} at {self.uri} has a {kind} index with metric {metric}; "
                             f"this index wants {self.index_type} with IP. Pass index_type={kind!r} to reuse it, "
                             "or drop_existing=True to rebuild")

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError(f"MilvusIndex over {self.collection!r} is closed; open a new one")
        return self._client

    def close(self) -> None:
        """Release the client connection (a Lite database keeps running until the process exits)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> MilvusIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, filter: str, fields: list[str], **kw: Any) -> list:
        return self.client.query(self.collection, filter=filter, output_fields=fields,
                                 consistency_level=self.consistency_level, **kw)

    # --- hooks -------------------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._query("", ["count(*)"])[0]["count(*)"])

    def _contains(self, ids: np.ndarray) -> np.ndarray:
        found = [h["id"] for chunk in _chunks(ids, ID_CHUNK)
                 for h in self._query(f"id in {chunk.tolist()}", ["id"])]
        return np.isin(ids, np.asarray(found, dtype=np.int64))

    def _stored_ids(self) -> np.ndarray:
        if self.is_lite:  # in process, 256 MiB messages; Lite's iterator warns it cannot allocate timestamps
            return np.asarray([h["id"] for h in self._query("id >= 0", ["id"])], dtype=np.int64)
        it = self.client.query_iterator(self.collection, batch_size=MAX_TOPK, output_fields=["id"],
                                        consistency_level=self.consistency_level)
        out = []
        try:
            while batch := it.next():
                out.append(np.fromiter((h["id"] for h in batch), dtype=np.int64, count=len(batch)))
        finally:
            it.close()
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def _add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        rows = max(1, min(MAX_INSERT_ROWS, INSERT_BYTES // (4 * self.dim)))
        for start in range(0, len(ids), rows):
            part = slice(start, start + rows)
            self.client.insert(self.collection, [{"id": i, "vector": v} for i, v in
                                                 zip(ids[part].tolist(), vectors[part], strict=True)])

    def _remove(self, ids: np.ndarray) -> None:
        for chunk in _chunks(ids, ID_CHUNK):
            self.client.delete(self.collection, ids=chunk.tolist())

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k > MAX_TOPK:
            raise ValueError(f"Milvus returns at most {MAX_TOPK} results per query, but {k} were needed (k plus "
                             f"the longest exclude list); lower k or the exclude lists")
        params = dict(self.search_params)
        if "ef" in params and int(params["ef"]) < k:
            params["ef"] = k  # HNSW needs ef >= k
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for start in range(0, len(queries), QUERY_BATCH):
            # output_fields=["id"]: Milvus Lite returns every field, vectors included, for [] or None
            res = self.client.search(self.collection, data=queries[start : start + QUERY_BATCH].tolist(),
                                     limit=k, output_fields=["id"], anns_field="vector",
                                     search_params={"metric_type": "IP", "params": params},
                                     consistency_level=self.consistency_level)
            for r, hits in enumerate(res, start):
                got = list(hits.ids) if hasattr(hits, "ids") else [h["id"] for h in hits]
                dist = list(hits.distances) if hasattr(hits, "distances") else [h["distance"] for h in hits]
                ids[r, : len(got)] = got
                scores[r, : len(dist)] = dist
        return scores, ids

    def params(self) -> dict[str, Any]:
        return {"uri": self.uri, "collection": self.collection, "index_type": self.index_type,
                "index_params": self.index_params, "search_params": self.search_params,
                "consistency_level": self.consistency_level}

    def save(self, folder: str | Path) -> None:
        """Write ``index.json`` (what reconnects: uri, collection, parameters; never the token).

        Raises:
            ValueError: the Lite ``.db`` lies inside ``folder``, which saving replaces.
        """
        target = Path(folder).expanduser().resolve()
        if self.is_lite and Path(self.uri).is_relative_to(target):
            raise ValueError(f"the Milvus Lite database {self.uri} lies inside the index folder {target}; saving "
                             "replaces that folder and would delete it. Put the .db elsewhere")
        super().save(folder)

    def _write(self, folder: Path) -> None:
        self.client.flush(self.collection)  # seal the memtable into segments: durable and indexed

    @classmethod
    def _read(cls, folder: Path, info: dict, uri: str | None = None, token: str | None = None,
              **_: object) -> MilvusIndex:
        p = info["params"]
        index = cls(info["dim"], uri=uri or p["uri"], collection=p["collection"], index_type=p["index_type"],
                    index_params=p.get("index_params"), search_params=p.get("search_params"), token=token,
                    consistency_level=p.get("consistency_level", "Strong"), create=False)
        logger.info("reconnected Milvus collection %r at %s (%d items; %d when saved)", index.collection,
                    index.uri, index.ntotal, info.get("ntotal", -1))
        return index
