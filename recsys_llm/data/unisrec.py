"""The ``unisrec`` loader: UniSRec/RecBole atomic files, as published by text-based sequential recommenders.

``data.path`` is the folder holding (each file may be gzip):

* ``NAME.train.inter``, ``NAME.valid.inter``, ``NAME.test.inter``: tab-separated, header
  ``user_id:token  item_id_list:token_seq  item_id:token`` (the ``:type`` suffixes are optional): the items
  before the target, space-separated and oldest first (possibly cut to the last 50), then the target.
  ``train.inter`` has one line per training target; ``valid.inter`` and ``test.inter`` one line per user.
* ``NAME.text``: ``item_id:token  text:token_seq``, the item's text (UniSRec: title, categories, brand).
* ``NAME.item2index``, ``NAME.user2index`` (optional, no header): ``token  index``. When the ``.inter`` files
  use the indices (UniSRec does), ids are mapped back to the tokens (ASINs, reviewer ids), which become the
  external ids; ``NAME.text`` may be keyed by either.

NAME is found from the ``*.test.inter`` file in the folder; when several data sets share a folder, point
``data.path`` at ``FOLDER/NAME``.

Sequences: each user's full sequence is rebuilt from the lines (train lines ordered by history length; each
history must continue the sequence rebuilt so far), then the validation and test targets are appended. There
are no timestamps: an interaction's timestamp is its position in the user's sequence (0, 1, 2, ...), so
``leave_last_out`` order equals the files' order; a ``temporal`` split over these positions is meaningless.

Split: the validation and test targets become the data set's holdout (``Dataset.holdout``), which
:func:`recsys_llm.data.splits.make_split` reproduces exactly (with ``split.cold_item_fraction=0``).

Catalog: ``item_id``, ``title`` = the text, ``description`` = the text (UniSRec texts have no reliable
title boundary; item templates skip a value already rendered, so the text is embedded once). Items of the
``.inter`` files missing from ``NAME.text`` get an empty text (counted in the log).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_llm.config import DataConfig
from recsys_llm.data.canonical import Loaded, canonical_catalog, map_interactions
from recsys_llm.data.checks import BadRows, DataError, Table, as_text, missing_column
from recsys_llm.data.readers import find_optional, read_csv, read_headerless

logger = logging.getLogger(__name__)

PARTS = ("train", "valid", "test")
SUFFIX = ".test.inter"


def _locate(cfg: DataConfig) -> tuple[Path, str]:
    """(folder, NAME) from ``data.path``: a folder with one ``NAME.test.inter``, or ``FOLDER/NAME``."""
    if cfg.path is None:
        raise DataError("dataset 'unisrec' needs data.path: the folder of NAME.train.inter, NAME.valid.inter, "
                        "NAME.test.inter and NAME.text")
    path = Path(cfg.path)
    if not path.is_dir():
        if find_optional(path.parent, path.name + SUFFIX) is not None:
            return path.parent, path.name
        raise DataError(f"{path}: folder not found (data.path for dataset 'unisrec'); check the path")
    names = sorted({p.name.removesuffix(".gz").removesuffix(SUFFIX) for p in path.iterdir()
                    if p.name.removesuffix(".gz").endswith(SUFFIX)})
    if not names:
        raise DataError(f"{path}: no NAME{SUFFIX} file; dataset 'unisrec' needs the folder of NAME.train.inter, "
                        "NAME.valid.inter, NAME.test.inter and NAME.text (UniSRec/RecBole atomic files)")
    if len(names) > 1:
        raise DataError(f"{path}: several data sets ({', '.join(names)}); point data.path at one of them, "
                        f"e.g. {path / names[0]}")
    return path, names[0]


def _file(folder: Path, name: str, ext: str) -> Path:
    found = find_optional(folder, f"{name}.{ext}")
    if found is None:
        raise DataError(f"{folder}: missing {name}.{ext} (needed by dataset 'unisrec'); the folder must hold "
                        f"{name}.train.inter, {name}.valid.inter, {name}.test.inter and {name}.text")
    return found


def _columns(table: Table, names: tuple[str, ...]) -> pd.DataFrame:
    """Columns by RecBole field name (``user_id:token`` or ``user_id``), as str."""
    by_field = {str(c).split(":")[0].strip(): c for c in table.frame.columns}
    for n in names:
        if n not in by_field:
            raise missing_column(table, n)
    return pd.DataFrame({n: as_text(table.frame[by_field[n]]).str.strip() for n in names})


def _read_remap(path: Path | None, problems: BadRows) -> dict[str, str]:
    """``NAME.item2index`` / ``NAME.user2index`` -> {index: token}; empty when the file is absent."""
    if path is None:
        return {}
    table = read_headerless(path, "\t", ["token", "index"], problems, ("utf-8", "latin-1"))
    frame = _columns(table, ("token", "index"))
    return dict(zip(frame["index"], frame["token"], strict=True))


def _to_tokens(values: set[str], remap: dict[str, str]) -> dict[str, str]:
    """``remap`` when ``values`` are all its indices (ids to map back to tokens), else {} (ids kept as they are)."""
    return remap if remap and values <= remap.keys() else {}


class _Sequences:
    """Per-user sequences rebuilt from the .inter lines, and each user's validation and test target."""

    def __init__(self) -> None:
        self.seq: dict[str, list[str]] = {}
        self.targets: dict[str, dict[str, str]] = {"valid": {}, "test": {}}

    def extend(self, user: str, history: list[str], target: str, where: str) -> None:
        """Append ``target`` after checking that ``history`` is the end (or the start) of the user's sequence."""
        seq = self.seq.get(user, [])
        n = len(history)
        if n and n <= len(seq) and seq[-n:] == history:
            seq.append(target)
        elif not seq or (n > len(seq) and history[: len(seq)] == seq):
            self.seq[user] = [*history, target]
        else:
            raise DataError(
                f"{where}: the history of user {user!r} ({' '.join(history[-5:]) or 'empty'}, last 5 shown) does "
                f"not continue the sequence rebuilt from the user's earlier lines (ending {' '.join(seq[-5:])}); "
                "each line must list the items before the target, oldest first"
            )


def _read_inter(path: Path, problems: BadRows) -> tuple[pd.DataFrame, np.ndarray]:
    table = read_csv(path, problems, "\t", dtype=str, quoting=csv.QUOTE_NONE)
    return _columns(table, ("user_id", "item_id_list", "item_id")), table.rows


def _rebuild(folder: Path, name: str, problems: BadRows) -> tuple[_Sequences, list[str]]:
    """Every user's sequence: train lines ordered by history length, then the validation and test targets."""
    seqs, sources = _Sequences(), []
    for part in PARTS:
        path = _file(folder, name, f"{part}.inter")
        sources.append(str(path))
        frame, rows = _read_inter(path, problems)
        # plain lists, each history split when used: all at once would be 25M strings on a large category
        users, targets, histories = (frame[c].tolist() for c in ("user_id", "item_id", "item_id_list"))
        order = np.arange(len(frame))
        if part == "train":  # by user, then history length; UniSRec writes each user's longest line first
            lengths = np.fromiter((len(h.split()) for h in histories), dtype=np.int64, count=len(histories))
            order = np.lexsort((-order, lengths, pd.factorize(frame["user_id"])[0]))
        for i in order.tolist():
            user, target = users[i], targets[i]
            where = f"{path}: row {rows[i]}"
            if not user or not target:
                raise DataError(f"{where}: empty user_id or item_id; every line needs both")
            if part != "train":
                if user in seqs.targets[part]:
                    raise DataError(f"{where}: user {user!r} has a second line; {part}.inter holds one per user")
                seqs.targets[part][user] = target
            seqs.extend(user, histories[i].split(), target, where)
    return seqs, sources


def _catalog_table(folder: Path, name: str, items: set[str], item_map: dict[str, str],
                   problems: BadRows) -> tuple[Table, str]:
    """NAME.text -> item_id, title, description; items of the .inter files without text get an empty one."""
    path = _file(folder, name, "text")
    table = read_csv(path, problems, "\t", dtype=str, quoting=csv.QUOTE_NONE)
    frame = _columns(table, ("item_id", "text"))
    keys = _to_tokens(set(frame["item_id"]), item_map)
    ids = frame["item_id"].map(lambda v: keys.get(v, v))
    missing = sorted(items - set(ids))
    if missing:
        logger.warning("%s: %d items of the .inter files have no text (e.g. %s); their text is empty",
                       path, len(missing), missing[:3])
    out = pd.DataFrame({"item_id": [*ids, *missing], "title": [*frame["text"], *[""] * len(missing)]})
    out["description"] = out["title"]
    rows = np.concatenate([table.rows, np.zeros(len(missing), dtype=np.int64)])
    return Table(out, str(path), rows, table.unit, {"title": "text", "description": "text"}), str(path)


def load_unisrec(cfg: DataConfig, problems: BadRows) -> Loaded:
    """UniSRec/RecBole atomic files -> catalog, sequences as interactions, and the published split as holdout."""
    folder, name = _locate(cfg)
    seqs, sources = _rebuild(folder, name, problems)
    item_map = _read_remap(find_optional(folder, f"{name}.item2index"), problems)
    items_used = {i for s in seqs.seq.values() for i in s}
    item_keys = _to_tokens(items_used, item_map)
    user_keys = _to_tokens(set(seqs.seq), _read_remap(find_optional(folder, f"{name}.user2index"), problems))

    def item_of(v: str) -> str:
        return item_keys.get(v, v)

    def user_of(v: str) -> str:
        return user_keys.get(v, v)

    table, text_path = _catalog_table(folder, name, {item_of(i) for i in items_used}, item_map, problems)
    catalog = canonical_catalog(table, problems)
    users = [user_of(u) for u, s in seqs.seq.items() for _ in s]
    inter = pd.DataFrame({"user_id": users, "item_id": [item_of(i) for s in seqs.seq.values() for i in s],
                          "timestamp": np.concatenate([np.arange(len(s)) for s in seqs.seq.values()])})
    rows = np.arange(1, len(inter) + 1, dtype=np.int64)
    mapped = map_interactions(Table(inter, f"{folder / name} (rebuilt sequences)", rows, "interaction"),
                              catalog, problems)
    test = seqs.targets["test"]
    holdout = pd.DataFrame({
        "user_id": [user_of(u) for u in test],
        "valid_item_id": [item_of(seqs.targets["valid"].get(u, "")) for u in test],
        "test_item_id": [item_of(t) for t in test.values()],
    })  # fmt: skip
    logger.info("unisrec %s: %d users, %d interactions rebuilt; published split for %d users",
                name, len(seqs.seq), len(mapped), len(holdout))
    return Loaded(catalog, mapped, [*sources, text_path], interacted_only=True, holdout=holdout)
