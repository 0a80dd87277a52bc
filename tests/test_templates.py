"""Item templates: format strings over catalog columns, the skip rule, named templates, the automatic choice."""

from __future__ import annotations

import doctest
import importlib
import logging

import pandas as pd
import pytest

from recsys_llm.text.templates import (
    ITEM_TEMPLATES,
    item_text,
    item_texts,
    pick_item_template,
    template_columns,
)

AMAZON = "{title}. Brand: {brand}. Category: {categories}. {description}"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"title": "Drill", "brand": "Acme", "categories": "Tools", "description": "Strong."},
         "Drill. Brand: Acme. Category: Tools. Strong."),
        ({"title": "Drill", "brand": "", "categories": "Tools", "description": "Strong."},
         "Drill. Category: Tools. Strong."),  # an empty field goes with the literal that introduces it
        ({"title": "Drill", "brand": "Acme"}, "Drill. Brand: Acme"),  # absent columns are empty
        ({"title": "", "brand": "Acme", "categories": "Tools"}, "Brand: Acme. Category: Tools"),  # no ". " first
        ({"title": "Drill.", "brand": " Acme ", "categories": "  ", "description": "..."}, "Drill. Brand: Acme"),
        ({"title": "Same text", "description": "Same text"}, "Same text"),  # a repeated value is not rendered twice
        ({"title": None, "brand": float("nan")}, ""),  # nothing rendered: no text at all
    ],
)  # fmt: skip
def test_format_string_skip_rule(fields, expected):
    assert item_text(fields, AMAZON) == expected


def test_tail_spec_and_escaped_braces():
    template = "{{item}} {title:.5}, by {brand}!"
    assert item_text({"title": "Storm shell jacket", "brand": "Acme"}, template) == "{item} Storm, by Acme!"
    assert item_text({"title": "", "brand": "Acme"}, template) == "by Acme!"  # "{item} " introduced the title
    assert item_text({"title": "Jacket", "brand": ""}, template) == "{item} Jacke!"  # :.5 keeps 5 characters
    assert template_columns(template) == ["title", "brand"]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{title", "not a valid format string"),
        ("{title.upper}", "plain catalog column name"),
        ("{0}", "plain catalog column name"),
        ("{title!r}", "plain catalog column name"),
        ("{title:d}", "bad format spec"),
        ("no_such_template", "neither a named template"),
    ],
)
def test_bad_templates_say_what_to_write(template, message):
    with pytest.raises(ValueError, match=message):
        item_text({"title": "x"}, template)


def test_item_texts_named_and_format():
    items = pd.DataFrame({"item": [0, 1], "item_id": ["a", "b"], "title": ["A", "B"], "genres": ["x", ""],
                          "brand": ["Acme", None]})
    assert item_texts(items, "title_genres") == ["A. Genres: x.", "B."]
    assert item_texts(items, "{title} ({brand})") == ["A (Acme)", "B"]  # ")" closes the skipped brand
    assert item_text({"title": "", "author": "Ann"}, '"{title}" by {author}') == "by Ann"
    with pytest.raises(ValueError, match=r"renders none of the catalog's columns \(item, item_id, title, genres"):
        item_texts(items, "{nope}")
    assert set(ITEM_TEMPLATES) >= {"title_genres_tags", "title_brand_categories_description"}


def test_pick_item_template(caplog):
    amazon = ["item", "item_id", "title", "brand", "categories", "description", "price"]
    default = "title_genres_tags"
    assert pick_item_template(amazon, default, "a", False) == "title_brand_categories_description"
    assert pick_item_template(["item", "item_id", "title", "description"], default, "u", False) == "title_description"
    assert pick_item_template(["item", "item_id", "title", "genres", "tags"], default, "m", False) == default
    assert pick_item_template(["item", "item_id", "title", "genres"], default, "g", False) == default  # ties keep it
    assert pick_item_template(amazon, AMAZON, "a", True) == AMAZON
    with pytest.raises(ValueError, match=r"names column\(s\) \['brnd'\] that the items lack; available columns: "
                                         r"item_id, title, brand"):
        pick_item_template(amazon, "{title}. {brnd}", "a.jsonl", False)
    with pytest.raises(ValueError, match=r"renders column\(s\) \['genres', 'tags'\], which the items lack"):
        pick_item_template(amazon, "full", "a", True)
    with caplog.at_level(logging.WARNING, logger="recsys_llm.text.templates"):
        assert pick_item_template(amazon, "full", "a", False) == "full"
    assert "['genres', 'tags'], which the items lack" in caplog.text


@pytest.mark.parametrize("module", ["recsys_llm.text.templates", "recsys_llm.data.amazon", "recsys_llm.data.filters"])
def test_module_examples(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
