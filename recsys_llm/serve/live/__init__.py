"""The live service state: a change log shared by every worker, applied over one loaded Recommender.

* :mod:`~recsys_llm.serve.live.changelog`: :class:`ChangeLog`, the append-only fsynced JSON-lines file.
* :mod:`~recsys_llm.serve.live.state`: :class:`LiveRecommender`, the Recommender kept in step with it.
"""

from __future__ import annotations

from recsys_llm.serve.live.changelog import ChangeLog
from recsys_llm.serve.live.state import LiveRecommender

__all__ = ["ChangeLog", "LiveRecommender"]
