"""Pure functions that turn item fields and user histories into text.

Item text comes from a template: the name of one in :data:`ITEM_TEMPLATES`, or a Python format string over
catalog columns, e.g. ``"{title}. Brand: {brand}. Category: {categories}. {description}"``. Named templates
are format strings too, so one renderer serves both. Rendering rule, per item:

1. The template is cut into one piece per field: a field owns the literal text just before it (back to the
   previous field), which introduces it (``". Brand: "`` introduces ``{brand}``). Text after the last field
   is the tail.
2. A field whose value is missing, empty, or nothing but whitespace and periods, or that repeats a value
   already rendered for this item (a title equal to the description), is skipped together with its literal
   and with the closing brackets and quotes that open the text after it (``"{title} ({brand})"`` renders
   ``"Drill"`` without a brand).
3. When the first field rendered is not the template's first field, its literal loses its leading
   separators (whitespace and ``. , ; : | - / –``), so the text never starts with a dangling ``". "``.
4. A value's trailing periods are dropped when the text after it starts with a period (no ``".."``).
5. The tail is kept when at least one field was rendered; an item with no field rendered has the text ``""``.

Values are stripped; a format spec applies to the value as a string (``{description:.300}`` keeps 300
characters). Columns a catalog lacks render as empty when texts are made (items added later may lack some),
but :func:`pick_item_template` rejects a format string that names a column the catalog lacks, listing the
columns there are. User text lists the user's most recent items first, so that truncation by tokens (done by
the tokenizer at encode time, ``truncation=True`` on the right) always keeps the newest items.

Example:
    >>> import pandas as pd
    >>> items = pd.DataFrame({"item": [0], "item_id": ["1"], "title": ["Toy Story (1995)"],
    ...                       "genres": ["Animation, Comedy"], "tags": [""]})
    >>> item_texts(items, "title_genres_tags")
    ['Toy Story (1995). Genres: Animation, Comedy.']
    >>> item_text({"title": "", "brand": "Acme", "categories": "Tools"}, "{title}. Brand: {brand}. Category: {categories}")
    'Brand: Acme. Category: Tools'
    >>> history_text([3, 1, 2], ["a", "b", "c", "d"], max_items=2)
    'c; b'
"""

from __future__ import annotations

import logging
import string
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import pandas as pd

from recsys_llm.config import TextConfig

logger = logging.getLogger(__name__)

ITEM_TEMPLATES: dict[str, str] = {
    "title": "{title}.",
    "title_genres": "{title}. Genres: {genres}.",
    "title_genres_tags": "{title}. Genres: {genres}. Tags: {tags}.",
    "title_description": "{title}. {description}.",
    "title_genres_description": "{title}. Genres: {genres}. {description}.",
    "full": "{title}. Genres: {genres}. Tags: {tags}. {description}.",
    "title_brand_categories_description": "{title}. Brand: {brand}. Category: {categories}. {description}.",
}
"""Template name -> format string over catalog columns (rendered by the rule in the module docstring)."""

HISTORY_SEPARATOR = "; "
_SEPARATORS = " \t\n.,;:|-/–—"
_CLOSERS = ")]}>\"'”’»"


class _Piece(NamedTuple):
    literal: str  # the text that introduces the field
    column: str
    spec: str


@lru_cache(maxsize=64)
def _pieces(template: str) -> tuple[tuple[_Piece, ...], str]:
    """A named template or a format string -> (pieces, tail); a bad one is a ValueError saying what to write."""
    text = ITEM_TEMPLATES.get(template, template)
    if "{" not in text:
        raise ValueError(f"text.item_template={template!r} is neither a named template "
                         f"({', '.join(ITEM_TEMPLATES)}) nor a format string over catalog columns such as "
                         "'{title}. Brand: {brand}. {description}'")
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise ValueError(f"text.item_template={template!r} is not a valid format string ({e}); write fields as "
                         "{column} and literal braces as {{ and }}") from None
    pieces, pending = [], ""
    for literal, column, spec, conversion in parsed:
        pending += literal  # escaped braces split a literal into several parts
        if column is None:
            continue
        if not column.isidentifier() or conversion or "{" in (spec or ""):
            raise ValueError(f"text.item_template={template!r}: field {{{column}{'!' + conversion if conversion else ''}}}"
                             " must be a plain catalog column name such as {title} (an optional :spec is allowed)")
        try:
            format("", spec or "")
        except ValueError as e:
            raise ValueError(f"text.item_template={template!r}: field {{{column}:{spec}}} has a bad format spec "
                             f"({e}); values are text, e.g. {{{column}:.200}} keeps 200 characters") from None
        pieces.append(_Piece(pending, column, spec or ""))
        pending = ""
    return tuple(pieces), pending


def template_columns(template: str) -> list[str]:
    """The catalog columns a template renders, in order.

    Example:
        >>> template_columns("title_genres")
        ['title', 'genres']
    """
    return [p.column for p in _pieces(template)[0]]


def _append(text: str, literal: str) -> str:
    return (text.rstrip(".") if literal.startswith(".") else text) + literal


def item_text(fields: Mapping[str, object], template: str) -> str:
    """Render one item's fields with a template (named or format string), by the rule of the module docstring."""
    pieces, tail = _pieces(template)
    out, skipped = "", False
    seen: set[str] = set()
    for i, piece in enumerate(pieces):
        raw = fields.get(piece.column)
        value = "" if raw is None or (isinstance(raw, float) and np.isnan(raw)) else str(raw).strip()
        if not value.strip(". \t\n") or value in seen:
            skipped = True
            continue
        literal = piece.literal.lstrip(_CLOSERS) if skipped else piece.literal
        literal = literal if seen or i == 0 else literal.lstrip(_SEPARATORS)
        out = _append(out, literal) + format(value, piece.spec)
        seen.add(value)
        skipped = False
    if not seen:
        return ""
    return _append(out, tail.lstrip(_CLOSERS) if skipped else tail).strip()


def item_texts(items: pd.DataFrame, template: str) -> list[str]:
    """Texts of every catalog item, position = internal item id.

    Raises:
        ValueError: a bad template, no ``title`` column, or none of the template's columns in the catalog.
    """
    if "title" not in items.columns:
        raise ValueError(f"item catalog has no 'title' column (columns: {list(items.columns)})")
    cols = [c for c in dict.fromkeys(template_columns(template)) if c in items.columns]
    if not cols:
        raise ValueError(f"text.item_template={template!r} renders none of the catalog's columns "
                         f"({', '.join(map(str, items.columns))})")
    records = items[cols].fillna("").astype(str).to_dict("records")
    return [item_text(r, template) for r in records]


def pick_item_template(columns: Iterable[str], configured: str, source: str, require_columns: bool) -> str:
    """The template to render a catalog with: the configured one, or a better named one for the default.

    * A format string is kept; a column it names that the catalog lacks is an error listing the columns.
    * A named template set explicitly is kept; a column it renders that the catalog lacks is an error when
      ``require_columns`` (description-only catalogs) and a logged warning otherwise (the part is skipped).
    * The default (``TextConfig().item_template``) is replaced by the named template rendering the most of the
      catalog's columns (fewest parts on ties) when that renders strictly more: ``title_description`` for
      ``item_id, title, description``, ``title_brand_categories_description`` for Amazon catalogs.

    Args:
        columns: the catalog's columns.
        configured: ``text.item_template``.
        source: names the catalog in messages.
        require_columns: whether an explicit named template's absent column is an error.

    Raises:
        ValueError: an unknown or malformed template, or an absent column (see above).

    Example:
        >>> pick_item_template(["item_id", "title", "brand", "categories"], "title_genres_tags", "x", True)
        'title_brand_categories_description'
    """
    columns = [str(c) for c in columns]
    wanted = template_columns(configured)
    absent = [c for c in wanted if c not in columns]
    shown = [c for c in columns if c != "item"]
    if configured not in ITEM_TEMPLATES:
        if absent:
            raise ValueError(f"{source}: text.item_template={configured!r} names column(s) {absent} that the items "
                             f"lack; available columns: {', '.join(shown)}")
        return configured
    if configured != TextConfig().item_template:
        if absent and require_columns:
            raise ValueError(f"{source}: text.item_template={configured} renders column(s) {absent}, which the "
                             f"items lack (columns: {shown}); add them or choose a template without them (leave "
                             "the default to pick one automatically)")
        if absent:
            logger.warning("%s: text.item_template=%s renders column(s) %s, which the items lack; they are skipped",
                           source, configured, absent)
        return configured

    def fit(name: str) -> tuple[int, int]:
        cols = template_columns(name)
        return sum(c in columns for c in cols), -len(cols)  # most columns rendered, then fewest parts

    best = max(ITEM_TEMPLATES, key=fit)
    if fit(best)[0] > fit(configured)[0]:
        logger.info("%s: item template %s renders more of the items' columns than the default %s; using it",
                    source, best, configured)
    else:
        best = configured
    known = {c for name in ITEM_TEMPLATES for c in template_columns(name)}
    unused = [c for c in shown if c not in known | {"item_id"}]
    if unused:
        logger.warning("%s: column(s) %s are in no named item template and are not embedded (write a format string "
                       "such as text.item_template='{title}. {%s}' to use them)", source, unused, unused[0])
    return best


def history_text(item_ids_oldest_first: Sequence[int] | np.ndarray, titles: Sequence[str], max_items: int) -> str:
    """User text: titles of the ``max_items`` most recent items, most recent first, ``"; "``-joined."""
    recent = list(item_ids_oldest_first)[-max_items:][::-1]
    return HISTORY_SEPARATOR.join(titles[int(i)] for i in recent)


def user_texts(histories: Sequence[np.ndarray], titles: Sequence[str], max_items: int) -> list[str]:
    """User text per user from per-user histories (item ids, oldest first); empty history gives ``""``."""
    return [history_text(h, titles, max_items) for h in histories]
