"""Cold start: new items from their description, new users from a few items or a free-text profile, and a
catalog with no interactions at all.

* :mod:`~recsys_llm.coldstart.items`: items join, change or leave a run's index without retraining
  (:func:`add_items`, :func:`retire_items`, :func:`full_catalog`).
* :mod:`~recsys_llm.coldstart.users`: recommendations for a user the run has never seen, from 1-3 item ids
  and/or a free-text description of their taste (:func:`recommend_new_user`).
* :mod:`~recsys_llm.coldstart.catalog`: description-only mode, a catalog without interactions still gets
  item-to-item and text-to-item recommendations (:func:`build_catalog`, :func:`similar_items`,
  :func:`search_text`).

The CLI is ``recsys-llm coldstart add-items | retire | user | catalog | similar | search``.
"""

from __future__ import annotations

from recsys_llm.coldstart.catalog import build_catalog, search_text, similar_items
from recsys_llm.coldstart.items import add_items, full_catalog, retire_items
from recsys_llm.coldstart.users import recommend_new_user

__all__ = ["add_items", "build_catalog", "full_catalog", "recommend_new_user", "retire_items", "search_text",
           "similar_items"]
