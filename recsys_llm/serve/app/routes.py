"""The HTTP endpoints: parse a request body (pydantic), call one :class:`Service` method, answer JSON.

Every endpoint is ``async``: FastAPI runs plain ``def`` endpoints in a thread pool, where they would read the
Recommender while the event loop changes it; here they all run on the loop thread, one at a time, and only
model forward passes leave it (:mod:`~recsys_llm.serve.app.batching`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from recsys_llm.serve.app import schemas as s
from recsys_llm.serve.app.service import Service

STATIC = Path(__file__).parent / "static"
router = APIRouter()


def _service(request: Request) -> Service:
    return request.app.state.service


def _recs(rows: list[dict[str, Any]], user_id: str | None) -> dict[str, Any]:
    """The body of :class:`~recsys_llm.serve.app.schemas.Recommendations` from :meth:`Recommender.rows`
    (FastAPI validates it against the response model once; NaN similarity = no explanation = null)."""
    items = [{k: v for k, v in r.items() if k not in ("item", "stage")} for r in rows]
    for r in items:
        if not math.isfinite(r["because_similarity"]):
            r["because_similarity"] = None
    return {"user_id": user_id, "stage": rows[0]["stage"] if rows else "", "items": items}


def _items(svc: Service, ids: np.ndarray, scores: np.ndarray | None = None) -> s.ItemList:
    cat = svc.rec.catalogue
    external, titles = cat.idmap.external, cat.titles
    return s.ItemList(items=[s.ItemOut(item_id=external[i], title=str(titles[i]),
                                       score=None if scores is None else float(scores[n]))
                             for n, i in enumerate(ids.tolist())])


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/health", tags=["status"])
async def health(request: Request) -> dict:
    """Alive, with what this worker serves (catalogue size, users, change log position)."""
    svc = _service(request)
    svc.fresh()
    return {"status": "ok", **svc.status()}


@router.get("/ready", tags=["status"])
async def ready(request: Request) -> JSONResponse:
    """200 once the run is loaded and the models a query needs are warm; 503 before."""
    ok = bool(getattr(request.app.state, "ready", False))
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("/metrics", tags=["status"])
async def metrics(request: Request) -> Response:
    """Prometheus: request counts and latency per endpoint, catalogue size, known users."""
    svc, m = _service(request), request.app.state.metrics
    svc.fresh()
    m.live_items.set(len(svc.rec.catalogue.index.ids))
    m.catalogue_items.set(len(svc.rec.catalogue.vectors))
    m.users.set(len(svc.rec.known))
    m.log_bytes.set(svc.live.log.offset)
    return m.render()


@router.post("/recommend", response_model=s.Recommendations, tags=["recommend"])
async def recommend(body: s.RecommendRequest, request: Request) -> dict[str, Any]:
    """Top-k for a known user (or one who posted interactions), with "because you liked" per item."""
    rows = await _service(request).recommend(body.user_id, body.k, body.exclude, body.filters, body.rerank)
    return _recs(rows, body.user_id)


@router.post("/recommend/anonymous", response_model=s.Recommendations, tags=["recommend"])
async def anonymous(body: s.AnonymousRequest, request: Request) -> dict[str, Any]:
    """Top-k for a new user from a few liked item ids and/or a text describing their taste."""
    return _recs(await _service(request).anonymous(body.items, body.text, body.k, body.filters), None)


@router.get("/users/{user_id}", response_model=s.UserOut, tags=["users"])
async def user(user_id: str, request: Request) -> s.UserOut:
    """A user's history as the service knows it (training data plus posted interactions)."""
    svc = _service(request)
    svc.fresh()
    return s.UserOut(user_id=user_id, history=_items(svc, svc.live.history(user_id)).items)


@router.get("/users", tags=["users"])
async def users(request: Request, limit: int = Query(50, ge=1, le=10_000)) -> dict:
    """Some known user ids (for the page's picker)."""
    svc = _service(request)
    svc.fresh()
    ext = svc.rec.users.external if svc.rec.users is not None else []
    return {"users": [str(u) for u in list(ext)[:limit]], "total": len(ext)}


@router.get("/items/{item_id}/similar", response_model=s.ItemList, tags=["items"])
async def similar(item_id: str, request: Request, k: int = Query(10, ge=1, le=s.MAX_K)) -> s.ItemList:
    """The k live items nearest to an item."""
    svc = _service(request)
    return _items(svc, *svc.similar(item_id, k))


@router.get("/search", response_model=s.ItemList, tags=["items"])
async def search(request: Request, q: str = Query(min_length=1, max_length=2000),
                 k: int = Query(10, ge=1, le=s.MAX_K)) -> s.ItemList:
    """Items matching a free-text description."""
    svc = _service(request)
    return _items(svc, *await svc.search(q, k))


@router.post("/items", response_model=s.AddItemsResponse, tags=["items"])
async def add_items(body: s.AddItemsRequest, request: Request) -> s.AddItemsResponse:
    """Add (or with upsert, update) items from their description; served by the very next query. The change
    is on disk (fsynced) before this answers."""
    svc = _service(request)
    added = await svc.add_items([it.row() for it in body.items], body.upsert)
    return s.AddItemsResponse(added=added, live_items=len(svc.rec.catalogue.index.ids))


@router.post("/items/retire", tags=["items"])
async def retire(body: s.RetireRequest, request: Request) -> dict:
    """Items leave the index and are never served again (persisted before this answers)."""
    svc = _service(request)
    await svc.retire(body.items)
    return {"retired": body.items, "live_items": len(svc.rec.catalogue.index.ids)}


@router.post("/interactions", tags=["feedback"])
async def interactions(body: s.InteractionsRequest, request: Request) -> dict:
    """Record interactions; the user's next recommendations use them, a new user id becomes known."""
    return await _service(request).interact([e.model_dump() for e in body.events])


@router.post("/refresh", tags=["feedback"])
async def refresh(request: Request) -> dict:
    """Fold the interactions posted since the last refresh into the stored user vectors and the
    collaborative part (no retraining); says what it did."""
    return await _service(request).refresh()
