"""Prometheus metrics of one service process: requests, latency per endpoint, catalogue and users.

Each app has its own registry (several apps in one test process do not collide). With several worker
processes each answers ``/metrics`` for itself; scrape each (or run one worker per port).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Counters and histograms, filled by :class:`TimedRequests`; gauges read from the live state on scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("recsys_requests", "HTTP requests", ["endpoint", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("recsys_request_seconds", "request latency", ["endpoint"], buckets=BUCKETS,
                                 registry=self.registry)
        self.live_items = Gauge("recsys_catalogue_live_items", "items that can be recommended",
                                registry=self.registry)
        self.catalogue_items = Gauge("recsys_catalogue_items", "items ever in the catalogue (retired included)",
                                     registry=self.registry)
        self.users = Gauge("recsys_known_users", "users the service knows", registry=self.registry)
        self.log_bytes = Gauge("recsys_change_log_bytes", "change log bytes applied by this process",
                               registry=self.registry)
        self.batch_size = Histogram("recsys_encoder_batch_texts", "texts per encoder micro-batch", ["model"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type="text/plain; version=0.0.4; charset=utf-8")


class TimedRequests:
    """Pure ASGI middleware (no extra task per request): counts requests and times them per route into
    :class:`Metrics` (``app.add_middleware(TimedRequests, metrics=m)``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(endpoint, scope["method"], str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
