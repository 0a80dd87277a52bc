"""Cold-start items: they join, change or leave a run's index without retraining or rebuilding.

Thin entry points over :class:`~recsys_llm.serve.catalogue.LiveCatalogue` (where the logic and the
persistence live), for the CLI (``coldstart add-items``, ``index add``, ``index remove``) and scripts. A
running service changes its own loaded :class:`~recsys_llm.serve.recommender.Recommender` instead.

Example:
    >>> import pandas as pd
    >>> new = pd.DataFrame({"item_id": ["new-1"], "title": ["Orbit (2026)"],
    ...                     "description": ["A space station crew fights to get home."]})
    >>> add_items("runs/demo", new)        # doctest: +SKIP
    >>> retire_items("runs/demo", ["1"])   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_llm import artifacts
from recsys_llm.run import RunDir
from recsys_llm.serve.recommender import Recommender


def full_catalog(run_dir: str | Path) -> pd.DataFrame:
    """The run's catalog with every cold-start addition and update applied (row i has item == i)."""
    return artifacts.full_catalog(RunDir(Path(run_dir)))


def add_items(run_dir: str | Path, new_items: pd.DataFrame, source: str = "new items",
              upsert: bool = False) -> np.ndarray:
    """Embed items from their text alone with the run's encoder and add them to its index.

    See :meth:`recsys_llm.serve.catalogue.LiveCatalogue.add` (arguments, errors).

    Returns:
        The internal ids of the items, in input order.
    """
    return Recommender.load(run_dir).add_items(new_items, source, upsert)


def retire_items(run_dir: str | Path, item_ids: Sequence[str], source: str = "items") -> np.ndarray:
    """Remove items (external ids) from the run's index; they stay in the catalog for old logs.

    Returns:
        The internal ids removed.
    """
    return Recommender.load(run_dir).retire_items(item_ids, source)
