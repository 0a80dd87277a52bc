"""Serving: one :class:`Recommender` loaded from a run directory ranks for the CLI, the service and the report.

* :mod:`~recsys_llm.serve.recommender`: :class:`Recommender` (``rank``, ``similar``, ``search``), the only ranking
  path of the served model.
* :mod:`~recsys_llm.serve.served`: :class:`ServedConfig`, the configuration chosen on validation
  (``served.json``).
* :mod:`~recsys_llm.serve.catalogue`: :class:`LiveCatalogue`, items added, updated and retired without
  retraining.
* :mod:`~recsys_llm.serve.filters`: filters on catalog columns.
* :mod:`~recsys_llm.serve.listing`: a ranked list as records (the service) or a table (CLI, Python API).
"""

from __future__ import annotations

from recsys_llm.serve.catalogue import LiveCatalogue, UnknownIdError
from recsys_llm.serve.listing import Listing
from recsys_llm.serve.recommender import Query, Ranking, Recommender
from recsys_llm.serve.served import ServedConfig

__all__ = ["Listing", "LiveCatalogue", "Query", "Ranking", "Recommender", "ServedConfig", "UnknownIdError"]
