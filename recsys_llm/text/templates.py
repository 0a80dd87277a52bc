"""Pure functions that turn item fields and user histories into text.

Item text comes from a named template: an ordered list of ``(label, column)`` parts. A part whose column is
missing from the catalog or empty for an item is left out, so one template serves catalogs with and without
tags or descriptions. User text lists the user's most recent items first, so that truncation by tokens
(done by the tokenizer at encode time, ``truncation=True`` on the right) always keeps the newest items.

Example:
    >>> import pandas as pd
    >>> items = pd.DataFrame({"item": [0], "item_id": ["1"], "title": ["Toy Story (1995)"],
    ...                       "genres": ["Animation, Comedy"], "tags": [""]})
    >>> item_texts(items, "title_genres_tags")
    ['Toy Story (1995). Genres: Animation, Comedy.']
    >>> history_text([3, 1, 2], ["a", "b", "c", "d"], max_items=2)
    'c; b'
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

ITEM_TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "title": (("", "title"),),
    "title_genres": (("", "title"), ("Genres", "genres")),
    "title_genres_tags": (("", "title"), ("Genres", "genres"), ("Tags", "tags")),
    "title_description": (("", "title"), ("", "description")),
    "title_genres_description": (("", "title"), ("Genres", "genres"), ("", "description")),
    "full": (("", "title"), ("Genres", "genres"), ("Tags", "tags"), ("", "description")),
}
"""Template name -> ordered ``(label, column)`` parts; an empty label renders the value alone."""

HISTORY_SEPARATOR = "; "


def _template(name: str) -> tuple[tuple[str, str], ...]:
    try:
        return ITEM_TEMPLATES[name]
    except KeyError:
        raise ValueError(
            f"item template {name!r} is unknown; choose one of {', '.join(sorted(ITEM_TEMPLATES))}"
        ) from None


def _part(label: str, value: str) -> str:
    value = value.strip().rstrip(".")
    return f"{label}: {value}." if label else f"{value}."


def item_text(fields: dict[str, str], template: str) -> str:
    """Render one item's fields with a named template (empty or absent fields are skipped)."""
    parts = [_part(label, str(fields.get(col) or "")) for label, col in _template(template)]
    return " ".join(p for p in parts if p.strip(". :") and not p.endswith(": ."))


def item_texts(items: pd.DataFrame, template: str) -> list[str]:
    """Texts of every catalog item, position = internal item id.

    Raises:
        ValueError: unknown template, or the catalog has no ``title`` column.
    """
    parts = _template(template)
    if "title" not in items.columns:
        raise ValueError(f"item catalog has no 'title' column (columns: {list(items.columns)})")
    cols = [c for _, c in parts if c in items.columns]
    records = items[cols].fillna("").astype(str).to_dict("records")
    return [item_text(r, template) for r in records]


def history_text(item_ids_oldest_first: Sequence[int] | np.ndarray, titles: Sequence[str], max_items: int) -> str:
    """User text: titles of the ``max_items`` most recent items, most recent first, ``"; "``-joined."""
    recent = list(item_ids_oldest_first)[-max_items:][::-1]
    return HISTORY_SEPARATOR.join(titles[int(i)] for i in recent)


def user_texts(histories: Sequence[np.ndarray], titles: Sequence[str], max_items: int) -> list[str]:
    """User text per user from per-user histories (item ids, oldest first); empty history gives ``""``."""
    return [history_text(h, titles, max_items) for h in histories]
