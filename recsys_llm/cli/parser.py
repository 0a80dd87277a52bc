"""The argument parser of ``recsys-llm``: every subcommand, its flags and help, and the function it runs.

Each subcommand's ``func`` names ``module:function`` in :mod:`recsys_llm.cli.commands` (resolved by
:func:`recsys_llm.cli.main` only when that command runs), so building the parser imports nothing heavy.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from recsys_llm import __version__

DEFAULT_RUN_DIR = "runs/demo"
COMMANDS = "recsys_llm.cli.commands"

Adder = Callable[[argparse.ArgumentParser], None]


def _run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help=f"run directory (default {DEFAULT_RUN_DIR})")


def _set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. --set train.max_steps=50 (repeatable)")


def _data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="PipelineConfig JSON file to start from")
    p.add_argument("--dataset", help="ml-latest-small (bundled), ml-100k, ml-1m, ml-10m, ml-latest, generic, amazon "
                   "or unisrec")
    p.add_argument("--path", help="data folder (MovieLens, unisrec), interactions file (generic) or reviews (amazon)")
    p.add_argument("--items-path", help="items file (generic) or metadata (amazon)")
    p.add_argument("--descriptions", help="item descriptions CSV (ml-100k wiki summaries)")
    p.add_argument("--on-bad-rows", choices=["raise", "drop"], help="stop at the first bad row, or drop and report")
    p.add_argument("--split", choices=["leave_last_out", "temporal"], help="split kind")
    p.add_argument("--cold-item-fraction", type=float, help="fraction of items held out as cold items")
    _set(p)


def _k(p: argparse.ArgumentParser) -> None:
    p.add_argument("-k", type=int, default=10, help="number of items (default 10)")


def _user(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", required=True, help="external user id, as in the raw data")
    _k(p)


def _items_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", required=True, help="items file: csv, tsv, jsonl or parquet")
    p.add_argument("--upsert", action="store_true", help="replace the text and vector of ids already indexed")


def _id_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", nargs="+", metavar="ID", help="external item ids")
    p.add_argument("--items-file", help="file with one external item id per line")


def _resume(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in RUN_DIR/encoder/checkpoints (train.checkpoint_every)")


def _zero_shot(p: argparse.ArgumentParser) -> None:
    p.add_argument("--zero-shot", action="store_true", help="use the untuned backbone (baseline)")


def _no_rerank(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-rerank", action="store_true", help="the served first stage only, without reranking")


def _index_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("-k", type=int, default=10, help="recall cut-off (default 10)")
    p.add_argument("--queries", type=int, default=1000, help="user embeddings sampled as queries (default 1000)")
    p.add_argument("--target-recall", type=float, help="also pick the smallest setting reaching this recall")
    p.add_argument("--apply", action="store_true", help="save the picked setting into the index")


def _backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["torch", "onnx"],
                   help="torch, or onnx = the run's ONNX export (`recsys-llm export`); default: the run's encoder.backend")


def _export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="onnx", help="export format (onnx)")
    p.add_argument("--int8", action="store_true", help="also write dynamically quantised int8 graphs and serve them")
    _set(p)


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _new_user(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", nargs="+", metavar="ID", help="external ids of items the user liked (oldest first)")
    p.add_argument("--text", help='their taste in words, e.g. "slow-burning Scandinavian crime dramas"')
    _k(p)


def _catalog(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", required=True, help="items file: item_id, title, optional description/genres/tags "
                   "(csv, tsv, jsonl or parquet)")
    p.add_argument("--encoder-run", help="embed with the fine-tuned encoder of this run (or its encoder/ folder)")
    p.add_argument("--config", help="PipelineConfig JSON file to start from")
    _set(p)


def _similar(p: argparse.ArgumentParser) -> None:
    p.add_argument("--item", required=True, help="external item id")
    _k(p)


def _search(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text", required=True, help='what to look for, e.g. "a movie about astronauts in space"')
    _k(p)


def _serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes; they share the run's change log "
                   "(default 1)")
    p.add_argument("--batch-ms", type=float, default=3.0, help="encoder micro-batch window in ms (default 3)")
    p.add_argument("--access-log", action="store_true", help="log every request (off: it costs throughput)")


# (name, help, function in recsys_llm.cli.commands, flag adders); every command takes --run-dir
TOP: list[tuple[str, str, str, list[Adder]]] = [
    ("prepare", "raw files -> canonical data, splits and texts in the run dir", "cmd_prepare", [_data_flags]),
    ("finetune", "LoRA-fine-tune the two-tower encoder (accelerate)", "cmd_finetune", [_set, _resume]),
    ("embed", "encode all items and users with the fine-tuned (or untuned) encoder", "cmd_embed", [_zero_shot, _backend]),
    ("retrieve", "top-K candidates for every evaluated user, per slice", "cmd_retrieve", []),
    ("hybrid", "fit the pooling and sequence user models and the text + collaborative fusion (choices made on "
     "validation users)", "cmd_hybrid", [_set]),
    ("select", "choose on validation what is served (first stage, rerank depth and weight) -> served.json",
     "cmd_select", [_set]),
    ("evaluate", "full-ranking metrics per model and slice -> report.json/report.md", "cmd_evaluate", []),
    ("recommend", "print the top items, with titles and explanations, for one user (the served configuration)",
     "cmd_recommend", [_user, _no_rerank, _json, _backend]),
    ("export", "the fine-tuned encoder and the cross-encoder as ONNX graphs (LoRA merged; --int8: dynamic int8) "
     "for fast CPU inference -> export/; use them with --backend onnx or --set encoder.backend=onnx",
     "cmd_export", [_export]),
    ("serve", "HTTP service (FastAPI): recommendations, live catalogue, feedback, metrics, a page at /",
     "cmd_serve", [_serve]),
    ("refresh", "fold the interactions posted to the service into the user vectors and the collaborative "
     "part (no retraining)", "cmd_refresh", [_json]),
    ("info", "what a run holds: stages done, the served configuration, headline metrics", "cmd_info", [_json]),
    ("demo", "every stage end to end on the bundled data with the default backbone", "cmd_demo", [_data_flags]),
]
GROUPS: list[tuple[str, str, list[tuple[str, str, str, list[Adder]]]]] = [
    ("index", "vector index: build | query | add | remove | stats | evaluate", [
        ("build", "index every item (type by --set index.factory=..., default auto)", "cmd_index_build", [_set]),
        ("query", "dense retrieval only: top-k for one user (seen items filtered)", "cmd_index_query", [_user]),
        ("add", "embed items from a file (item_id, title, description, ...) and index them", "cmd_index_add",
         [_items_file]),
        ("remove", "retire items: they leave the index and are never recommended", "cmd_index_remove", [_id_list]),
        ("stats", "type, size, bytes per item, search setting and encoder fingerprint", "cmd_index_stats", [_json]),
        ("evaluate", "recall@k vs exact search and queries/s, per search setting", "cmd_index_evaluate",
         [_index_eval]),
    ]),
    ("rerank", "cross-encoder reranker: train | apply", [
        ("train", "train the cross-encoder on the retriever's hard negatives", "cmd_rerank_train", [_set]),
        ("apply", "rerank the retrieved candidates of every slice", "cmd_rerank_apply", [_backend]),
    ]),
    ("coldstart", "cold start: add-items | retire | user (a new user from 1-3 items or a text) | catalog (a run "
     "from descriptions alone) | similar (item-to-item) | search (text-to-item)", [
        ("add-items", "embed items from a file (item_id, title, description, ...) and index them", "cmd_index_add",
         [_items_file]),
        ("retire", "retire items: they leave the index and are never recommended", "cmd_index_remove", [_id_list]),
        ("user", "recommendations for a new user from 1-3 item ids and/or a free-text taste", "cmd_coldstart_user",
         [_new_user]),
        ("catalog", "embed and index an items file that has no interactions (zero-shot backbone, or "
         "--encoder-run's fine-tuned encoder)", "cmd_coldstart_catalog", [_catalog]),
        ("similar", "items most similar to one item (item-to-item)", "cmd_coldstart_similar", [_similar]),
        ("search", "items matching a free-text description (text-to-item)", "cmd_coldstart_search", [_search]),
    ]),
]


def _add(sub, name: str, help_: str, func: str, adders: list[Adder]) -> None:
    p = sub.add_parser(name, help=help_, description=help_)
    _run_dir(p)
    for add in adders:
        add(p)
    p.set_defaults(func=f"{COMMANDS}:{func}")


def build_parser() -> argparse.ArgumentParser:
    """The ``recsys-llm`` parser (see :data:`TOP` and :data:`GROUPS`)."""
    parser = argparse.ArgumentParser(
        prog="recsys-llm",
        description="LLM-augmented hybrid recommender. Stages: prepare -> finetune -> embed -> index build -> "
        "retrieve -> hybrid -> rerank train -> select -> rerank apply -> evaluate; `demo` runs them all on the "
        "bundled data; `recommend` and `coldstart` serve what `select` chose.",
    )
    parser.add_argument("--version", action="version", version=f"recsys-llm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_, func, adders in TOP:
        _add(sub, name, help_, func, adders)
    for group, help_, actions in GROUPS:
        g = sub.add_parser(group, help=help_, description=help_)
        gsub = g.add_subparsers(dest=f"{group}_command", required=True, metavar="ACTION")
        for name, action_help, func, adders in actions:
            _add(gsub, name, action_help, func, adders)
    return parser
