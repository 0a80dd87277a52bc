"""The live service state: a change log shared by every worker, applied over one loaded Recommender.

* :mod:`~recsys_llm.serve.live.changelog`: :class:`ChangeLog`, the append-only fsynced JSON-lines file.
* :mod:`~recsys_llm.serve.live.state`: :class:`LiveRecommender`, the Recommender kept in step with it.
"""

from __future__ import annotations

from recsys_llm.serve.live.changelog import ChangeLog
from recsys_llm.serve.live.state import LiveRecommender

RUN_DIR_ENV = "RECSYS_LLM_RUN_DIR"
"""The run directory a service process serves (``recsys-llm serve`` sets it for its uvicorn workers)."""

__all__ = ["RUN_DIR_ENV", "ChangeLog", "LiveRecommender"]
