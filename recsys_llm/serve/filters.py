"""Filters on catalog columns for recommendation requests: "only comedies", "from the 1990s", "brand Sony".

A filter maps a catalog column to a condition::

    {"genres": "Comedy"}                          substring, case-insensitive (same as {"contains": ...})
    {"genres": {"contains": "Comedy"}}
    {"brand": {"equals": "Sony"}}   {"brand": {"in": ["Sony", "Bose"]}}
    {"year": {"min": 1990, "max": 1999}}          numeric range, bounds included
    {"genres": {"not_contains": "Horror"}}

Every condition must hold. ``year`` is derived from a trailing ``(YYYY)`` in the title when the catalog has no
``year`` column (MovieLens titles). An unknown column or operator is a ``ValueError`` naming it and the
choices.

Example:
    >>> cat = pd.DataFrame({"title": ["A (1994)", "B (2004)"], "genres": ["Comedy|Drama", "Horror"]})
    >>> filter_mask(cat, {"genres": "comedy", "year": {"max": 2000}}).tolist()
    [True, False]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

OPERATORS = ("contains", "not_contains", "equals", "in", "min", "max")
_YEAR = r"\((\d{4})\)\s*$"


def _column(catalog: pd.DataFrame, name: str) -> pd.Series:
    if name in catalog.columns:
        return catalog[name]
    if name == "year" and "title" in catalog.columns:
        return catalog["title"].astype(str).str.extract(_YEAR, expand=False)
    usable = [c for c in catalog.columns if c != "item"] + (["year"] if "title" in catalog.columns else [])
    raise ValueError(f"filters: unknown column {name!r}; the catalog has {', '.join(usable)}")


def _condition(values: pd.Series, op: str, arg: Any, name: str) -> np.ndarray:
    text = values.fillna("").astype(str).str.lower()
    if op == "contains":
        return text.str.contains(str(arg).lower(), regex=False).to_numpy()
    if op == "not_contains":
        return ~text.str.contains(str(arg).lower(), regex=False).to_numpy()
    if op == "equals":
        return (text == str(arg).lower()).to_numpy()
    if op == "in":
        if isinstance(arg, (str, bytes)) or not hasattr(arg, "__iter__"):
            raise ValueError(f"filters: {name}.in needs a list of values, got {arg!r}")
        return text.isin([str(a).lower() for a in arg]).to_numpy()
    if op in ("min", "max"):
        try:
            bound = float(arg)
        except (TypeError, ValueError):
            raise ValueError(f"filters: {name}.{op} needs a number, got {arg!r}") from None
        num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            return (num >= bound) if op == "min" else (num <= bound)  # NaN (no value) never passes
    raise ValueError(f"filters: unknown operator {op!r} for {name}; choose from {', '.join(OPERATORS)}")


def filter_mask(catalog: pd.DataFrame, filters: Mapping[str, Any]) -> np.ndarray:
    """``(len(catalog),)`` bool: rows passing every condition (row ``i`` = internal item id ``i``)."""
    if not isinstance(filters, Mapping):
        raise ValueError(f"filters must map column -> condition, got {type(filters).__name__}")
    mask = np.ones(len(catalog), dtype=bool)
    for name, cond in filters.items():
        values = _column(catalog, str(name))
        ops = cond if isinstance(cond, Mapping) else {"contains": cond}
        if not ops:
            raise ValueError(f"filters: {name} has no condition; use one of {', '.join(OPERATORS)}")
        for op, arg in ops.items():
            mask &= _condition(values, str(op), arg, str(name))
    return mask
