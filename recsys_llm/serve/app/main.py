"""The app factory: ``create_app(run_dir)`` loads one run and serves it (``recsys-llm serve`` runs it).

Example:
    >>> app = create_app("runs/demo")                      # doctest: +SKIP
    >>> TestClient(app).post("/recommend", json={"user_id": "1"}).json()["items"][0]   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from threadpoolctl import threadpool_limits

from recsys_llm import __version__
from recsys_llm.serve.app.metrics import Metrics, TimedRequests
from recsys_llm.serve.app.routes import router
from recsys_llm.serve.app.service import Service
from recsys_llm.serve.catalogue import UnknownIdError
from recsys_llm.serve.live import RUN_DIR_ENV, LiveRecommender

logger = logging.getLogger(__name__)


def _field_errors(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _field_errors(exc), "errors": [
            {"field": ".".join(str(x) for x in e.get("loc", ())), "message": e.get("msg", "")} for e in exc.errors()
        ]}, status_code=422)

    @app.exception_handler(UnknownIdError)
    async def unknown(request: Request, exc: UnknownIdError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("request %s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the service log"},
                            status_code=500)


def _warm(service: Service) -> None:
    """Load the models a first query needs (encoder, reranker), so that /ready means fast answers."""
    rec = service.rec
    rec.encoder  # noqa: B018 - loads it
    if rec.served.reranks:
        rec.reranker  # noqa: B018


def create_app(run_dir: str | Path, window_ms: float = 3.0, warm: bool = True, blas_threads: int | None = 1
               ) -> FastAPI:
    """The service over one run directory: the run is loaded once here, the change log replayed over it.

    Args:
        run_dir: a run that `recsys-llm demo` (or the stages up to ``select``) produced.
        window_ms: how long an encoder micro-batch waits for more requests.
        warm: load the encoder and reranker before answering (``/ready`` says when).
        blas_threads: numpy's BLAS threads while serving (None: leave them). A request's vector products are
            small (one user against a few thousand items); with 2 BLAS threads on a busy 2-core machine a
            3.7k x 384 ``gemv`` measured 2.0 ms against 0.1 ms on one thread, because the threads wait for
            each other. Torch (the encoders) keeps its own threads.
    """
    service = Service(LiveRecommender.load(str(run_dir)), window_ms)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        blas = threadpool_limits(limits=blas_threads, user_api="blas") if blas_threads else None
        if warm:
            _warm(service)
        app.state.ready = True
        yield
        service.close()
        if blas is not None:
            blas.restore_original_limits()

    app = FastAPI(title="recsys-llm", version=__version__, lifespan=lifespan,
                  description="Recommendations, live catalogue and feedback over one recsys-llm run.")
    app.state.service, app.state.metrics, app.state.ready = service, metrics, False
    app.add_middleware(TimedRequests, metrics=metrics)
    _handlers(app)
    app.include_router(router)
    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory of ``recsys-llm serve``: the run directory comes from ``RECSYS_LLM_RUN_DIR``."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir:
        raise RuntimeError(f"set {RUN_DIR_ENV} to a run directory (or use `recsys-llm serve --run-dir R`)")
    return create_app(run_dir, window_ms=float(os.environ.get("RECSYS_LLM_BATCH_MS", "3")))
