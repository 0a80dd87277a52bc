"""The HTTP service (FastAPI): recommendations, live catalogue, feedback and a small page over one run.

* :mod:`~recsys_llm.serve.app.main`: :func:`create_app` (the app factory) and the uvicorn factory.
* :mod:`~recsys_llm.serve.app.routes`: the endpoints; :mod:`~recsys_llm.serve.app.schemas`: their bodies.
* :mod:`~recsys_llm.serve.app.service`: the work behind them; :mod:`~recsys_llm.serve.app.batching`: encoder
  micro-batches; :mod:`~recsys_llm.serve.app.metrics`: Prometheus.
"""

from __future__ import annotations

from recsys_llm.serve.app.main import create_app

__all__ = ["create_app"]
