"""`recsys-llm`: one subcommand per pipeline stage, plus `demo` (all stages on the bundled data).

The CLI is the only place that prints tables; the library logs. Every stage reads and writes the run
directory (``--run-dir``), so stages can be rerun alone. Bad input ends with ``error: ...`` and exit code 2,
never a traceback (``--debug`` shows one).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep instead of spinning (set before torch loads): on a shared or busy machine the
# spinning default made small-op loops (user-pooling fit) 13x slower: 86 s vs 6.5 s, 2 cores, measured.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from recsys_llm import __version__  # noqa: E402
from recsys_llm.config import parse_overrides  # noqa: E402

logger = logging.getLogger("recsys_llm")

DEFAULT_RUN_DIR = "runs/demo"


def _parse_set(pairs: Sequence[str]) -> dict[str, Any]:
    """``["train.max_steps=10", "text.item_template=title"]`` -> dotted overrides (values parsed as JSON)."""
    return parse_overrides(pairs)


def _apply_overrides(run_dir: str, pairs: Sequence[str]) -> None:
    """Apply --set overrides to the run's config.json (a stage rerun with new settings)."""
    if not pairs:
        return
    from recsys_llm.pipeline import RunDir

    run = RunDir(Path(run_dir))
    run.load_config().override(_parse_set(pairs)).save(run.config)


def _initial_config(args: argparse.Namespace):
    from recsys_llm.config import PipelineConfig

    cfg = PipelineConfig.load(args.config) if getattr(args, "config", None) else PipelineConfig()
    flags = {
        "data.dataset": getattr(args, "dataset", None),
        "data.path": getattr(args, "path", None),
        "data.items_path": getattr(args, "items_path", None),
        "data.descriptions_path": getattr(args, "descriptions", None),
        "data.on_bad_rows": getattr(args, "on_bad_rows", None),
        "split.kind": getattr(args, "split", None),
        "split.cold_item_fraction": getattr(args, "cold_item_fraction", None),
    }
    overrides = {k: v for k, v in flags.items() if v is not None}
    overrides.update(_parse_set(getattr(args, "set", None) or []))
    return cfg.override(overrides) if overrides else cfg


# ------------------------------------------------------------------------------------------ commands
def cmd_prepare(args: argparse.Namespace) -> None:
    from recsys_llm.pipeline import prepare

    ctx = prepare(_initial_config(args), args.run_dir)
    s = ctx.split.summary()
    print(f"prepared {ctx.ds.name}: {ctx.ds.n_users} users, {ctx.ds.n_items} items, "
          f"{len(ctx.ds.interactions)} interactions -> {args.run_dir}")
    print("split:", json.dumps({k: v for k, v in s.items() if k != "cold_items"}))
    if ctx.ds.dropped:
        print("dropped rows:", json.dumps(ctx.ds.dropped))


def cmd_finetune(args: argparse.Namespace) -> None:
    from recsys_llm.pipeline import finetune

    _apply_overrides(args.run_dir, args.set)
    finetune(args.run_dir, resume=args.resume)
    print(f"encoder saved to {Path(args.run_dir) / 'encoder'}")


def cmd_embed(args: argparse.Namespace) -> None:
    from recsys_llm.pipeline import embed

    embed(args.run_dir, zero_shot=args.zero_shot)
    print("embeddings written to", Path(args.run_dir) / ("embeddings_zeroshot" if args.zero_shot else "embeddings"))


def cmd_index_build(args: argparse.Namespace) -> None:
    from recsys_llm.pipeline import build_index

    _apply_overrides(args.run_dir, args.set)
    info = build_index(args.run_dir)
    meta = info["metadata"]
    print(f"{info['kind']} index over {info['ntotal']:,} items (dim {info['dim']}) -> {Path(args.run_dir) / 'index'}")
    print(f"  type: {meta.get('choice', '')}")
    if meta.get("tuned"):
        t = meta["tuned"]
        rec = next(v for key, v in t.items() if key.startswith("recall@"))
        print(f"  tuned {t['param']}={t['value']}: {next(key for key in t if key.startswith('recall@'))} "
              f"{rec:.4f} vs exact on {t['queries']} user queries (target {t['target']})")


def _read_id_list(args: argparse.Namespace) -> list[str]:
    ids = list(args.items or [])
    if args.items_file:
        path = Path(args.items_file)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (one external item id per line)")
        ids += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError("give item ids with --items ID [ID ...] or --items-file FILE")
    return ids


def cmd_index_add(args: argparse.Namespace) -> None:
    from recsys_llm.coldstart import add_items
    from recsys_llm.data.io import read_items

    ids = add_items(args.run_dir, read_items(args.items), source=str(args.items), upsert=args.upsert)
    print(f"indexed {len(ids)} items from {args.items} in {Path(args.run_dir) / 'index'}; "
          "they can be recommended now")


def cmd_index_remove(args: argparse.Namespace) -> None:
    from recsys_llm.coldstart import retire_items

    ids = retire_items(args.run_dir, _read_id_list(args), source=args.items_file or "--items")
    print(f"removed {len(ids)} items from {Path(args.run_dir) / 'index'}; they will not be recommended")


def cmd_coldstart_catalog(args: argparse.Namespace) -> None:
    from recsys_llm.coldstart import build_catalog

    s = build_catalog(args.items, args.run_dir, _initial_config(args), encoder_run=args.encoder_run)
    enc = s["encoder"]
    how = (f"fine-tuned encoder of {s['encoder_run']} (adapter sha256 {(enc['adapter_sha256'] or '')[:16]})"
           if s["encoder_run"] else "untuned backbone (zero-shot)")
    print(f"catalog of {s['n_items']:,} items (dim {s['dim']}) from {args.items} -> {s['run_dir']}")
    print(f"  encoder: {enc['backbone']}, {how}")
    print(f"  item template: {s['item_template']}")
    print(f"  index: {s['index']} {s['factory']} ({s['choice']})")
    print(f"  time: {s['seconds']:.1f} s")


def _print_items(recs) -> None:
    width = max([len(t) for t in recs["title"]] + [5])
    for r in recs.itertuples():
        print(f"{r.rank:>3}. {r.title:<{width}}  {r.score:8.4f}  [{r.item_id}]")


def cmd_coldstart_similar(args: argparse.Namespace) -> None:
    from recsys_llm.coldstart import similar_items

    recs = similar_items(args.run_dir, str(args.item), k=args.k)
    print(f"top {len(recs)} items similar to [{args.item}]:")
    _print_items(recs)


def cmd_coldstart_search(args: argparse.Namespace) -> None:
    from recsys_llm.coldstart import search_text

    recs = search_text(args.run_dir, args.text, k=args.k)
    print(f"top {len(recs)} items for {args.text!r}:")
    _print_items(recs)


def cmd_index_stats(args: argparse.Namespace) -> None:
    from recsys_llm.pipeline import index_stats

    info = index_stats(args.run_dir)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return
    meta, params = info.get("metadata", {}), info.get("params", {})
    enc = meta.get("encoder", {})
    rows = [("kind", info["kind"]), ("items", f"{info['ntotal']:,}"), ("dim", info["dim"]),
            ("metric", info["metric"]),
            *((k, v) for k, v in params.items() if v not in (None, 0, False) and k != "format"),
            ("bytes on disk", f"{info['bytes_on_disk']:,}"), ("bytes per item", info["bytes_per_item"]),
            ("chosen", meta.get("choice", "")), ("tuned", json.dumps(meta.get("tuned") or {})),
            ("backbone", enc.get("backbone", "")), ("adapter sha256", (enc.get("adapter_sha256") or "none")[:16]),
            ("item template", enc.get("item_template", "")), ("data fingerprint", meta.get("data_fingerprint", "")),
            ("cold-start items", meta.get("coldstart_items", 0))]
    width = max(len(str(k)) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def cmd_index_evaluate(args: argparse.Namespace) -> None:
    from recsys_llm.index.tuning import format_sweep
    from recsys_llm.pipeline import evaluate_index

    rows, exact_qps, best = evaluate_index(args.run_dir, k=args.k, n_queries=args.queries,
                                           target=args.target_recall, apply=args.apply)
    print(f"recall@{rows[0].k} against exact search and queries/s, up to {args.queries} sampled user queries "
          f"(one batch, this machine):")
    print(format_sweep(rows, exact_qps))
    if best is not None:
        saved = "saved into the index" if args.apply else "not saved (add --apply)"
        print(f"smallest setting reaching recall@{best.k} >= {args.target_recall}: {best.setting} "
              f"(recall {best.recall:.4f}, {best.qps:.0f} queries/s); {saved}")


def _print_recs(args: argparse.Namespace, use_reranker: bool, use_hybrid: bool = True) -> None:
    from recsys_llm.recommend import history_titles, recommend

    recs = recommend(args.run_dir, str(args.user), k=args.k, use_reranker=use_reranker, use_hybrid=use_hybrid)
    print(f"user {args.user} recently: " + "; ".join(history_titles(args.run_dir, str(args.user), 3)))
    _print_rec_table(recs)


def _print_rec_table(recs) -> None:
    stage = recs["stage"].iloc[0] if len(recs) else "retrieval"
    print(f"top {len(recs)} ({stage}):")
    width = max([len(t) for t in recs["title"]] + [5])
    for r in recs.itertuples():
        why = f"  because you liked {r.because} ({r.because_similarity:.2f})" if r.because else ""
        print(f"{r.rank:>3}. {r.title:<{width}}  {r.score:8.4f}  [{r.item_id}]{why}")


def cmd_coldstart_user(args: argparse.Namespace) -> None:
    from recsys_llm.coldstart import recommend_new_user

    recs = recommend_new_user(args.run_dir, items=args.items, text=args.text, k=args.k)
    known = f"{len(args.items or [])} items" + (f" and {args.text!r}" if args.text else "")
    print(f"new user from {known}")
    _print_rec_table(recs)


def cmd_hybrid(args: argparse.Namespace) -> None:
    from recsys_llm.pipeline import fit_hybrid

    _apply_overrides(args.run_dir, args.set)
    r = fit_hybrid(args.run_dir)
    print(f"hybrid: {r['user_model']} users + {r['cf_model']} (weight {r['weight']:.2f}, recency half-life "
          f"{r['halflife']:g}, confidence {r['confidence']:g}, text-neighbour bridge {r['bridge']:.2f}, {r['fusion']}), "
          f"chosen on {r['valid_users']} validation users -> {Path(args.run_dir) / 'hybrid'}")
    for name, b in r["best"].items():
        by_hl = r["valid_ndcg@10"][name]
        plain = next(iter(next(iter(by_hl.values())).values()))  # half-life 0 (no recency), first confidence
        line = (f"  {name} users: validation NDCG@10 best {b['ndcg@10']:.4f}; text only {plain.get('0.0', float('nan')):.4f}"
                f"; {r['cf_model']} only {plain.get('1.0', float('nan')):.4f}")
        if "cold_ndcg@10" in b:
            line += f"; all items treated as cold: text {b['cold_text_only']:.4f} -> bridged {b['cold_ndcg@10']:.4f}"
        print(line)


def cmd_index_query(args: argparse.Namespace) -> None:
    _print_recs(args, use_reranker=False, use_hybrid=False)


def cmd_retrieve(args: argparse.Namespace) -> None:
    from recsys_llm.pipeline import retrieve_candidates

    retrieve_candidates(args.run_dir)
    print("candidates written to", Path(args.run_dir) / "candidates")


def cmd_rerank_train(args: argparse.Namespace) -> None:
    from recsys_llm.pipeline import train_reranker

    _apply_overrides(args.run_dir, args.set)
    train_reranker(args.run_dir)
    print("reranker saved to", Path(args.run_dir) / "reranker")


def cmd_rerank_apply(args: argparse.Namespace) -> None:
    from recsys_llm.pipeline import rerank

    rerank(args.run_dir)
    print("reranked lists written to", Path(args.run_dir) / "ranked")


def cmd_recommend(args: argparse.Namespace) -> None:
    _print_recs(args, use_reranker=not args.no_rerank)


def _print_report(rows: list, run_dir: str) -> None:
    from recsys_llm.evaluate import format_table

    slices = list(dict.fromkeys(r.slice for r in rows))
    ks = sorted({int(n.split("@")[1]) for r in rows for n in r.metrics if n.startswith("NDCG@")})
    cols = [f"NDCG@{ks[0]}", f"Recall@{ks[0]}", f"MRR@{ks[0]}", *(f"Recall@{k}" for k in ks[1:]),
            f"Coverage@{ks[0]}", "users"] if ks else None
    for s in slices:
        print()
        print(format_table(rows, s, columns=cols, with_ci=True))
    print(f"\nreport (every metric, intervals, paired comparison): {Path(run_dir) / 'report.md'}; "
          f"plots: {Path(run_dir) / 'plots'}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from recsys_llm.pipeline import evaluate

    _print_report(evaluate(args.run_dir), args.run_dir)


def cmd_demo(args: argparse.Namespace) -> None:
    from recsys_llm.pipeline import run_all

    t0 = time.perf_counter()
    cfg = _initial_config(args)
    print(f"recsys-llm {__version__} demo: {cfg.data.dataset}, backbone {cfg.encoder.backbone}, run dir {args.run_dir}")
    rows = run_all(cfg, args.run_dir)
    _print_report(rows, args.run_dir)
    print(f"demo wall time: {time.perf_counter() - t0:.0f} s")


# ------------------------------------------------------------------------------------------ parser
def _add_run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help=f"run directory (default {DEFAULT_RUN_DIR})")


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. --set train.max_steps=50 (repeatable)")


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="PipelineConfig JSON file to start from")
    p.add_argument("--dataset", help="ml-latest-small (bundled), ml-100k, ml-1m, ml-10m, ml-latest or generic")
    p.add_argument("--path", help="data folder (MovieLens) or interactions file (generic)")
    p.add_argument("--items-path", help="items file (generic)")
    p.add_argument("--descriptions", help="item descriptions CSV (ml-100k wiki summaries)")
    p.add_argument("--on-bad-rows", choices=["raise", "drop"], help="stop at the first bad row, or drop and report")
    p.add_argument("--split", choices=["leave_last_out", "temporal"], help="split kind")
    p.add_argument("--cold-item-fraction", type=float, help="fraction of items held out as cold items")
    _add_set(p)


def _add_user(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", required=True, help="external user id, as in the raw data")
    p.add_argument("-k", type=int, default=10, help="number of items (default 10)")


def _add_items_parser(sub, name: str) -> None:
    """`index add` and `coldstart add-items`: the same command under both names."""
    q = sub.add_parser(name, help="embed items from a file (item_id, title, description, ...) and index them")
    _add_run_dir(q)
    q.add_argument("--items", required=True, help="items file: csv, tsv, jsonl or parquet")
    q.add_argument("--upsert", action="store_true", help="replace the text and vector of ids already indexed")
    q.set_defaults(func=cmd_index_add)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys-llm",
        description="LLM-augmented hybrid recommender. Stages: prepare -> finetune -> embed -> index build -> "
        "retrieve -> hybrid -> rerank train/apply -> evaluate; `demo` runs them all on the bundled data.",
    )
    parser.add_argument("--version", action="version", version=f"recsys-llm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="raw files -> canonical data, splits and texts in the run dir")
    _add_run_dir(p)
    _add_data_flags(p)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("finetune", help="LoRA-fine-tune the two-tower encoder (accelerate)")
    _add_run_dir(p)
    _add_set(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in RUN_DIR/encoder/checkpoints (train.checkpoint_every)")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("embed", help="encode all items and users with the fine-tuned (or untuned) encoder")
    _add_run_dir(p)
    p.add_argument("--zero-shot", action="store_true", help="use the untuned backbone (baseline)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("index", help="vector index: build | query | add | remove | stats | evaluate")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    q = isub.add_parser("build", help="index every item (type by --set index.factory=..., default auto)")
    _add_run_dir(q)
    _add_set(q)
    q.set_defaults(func=cmd_index_build)
    q = isub.add_parser("query", help="retrieval-only top-k for one user (seen items filtered)")
    _add_run_dir(q)
    _add_user(q)
    q.set_defaults(func=cmd_index_query)
    _add_items_parser(isub, "add")
    q = isub.add_parser("remove", help="retire items: they leave the index and are never recommended")
    _add_run_dir(q)
    q.add_argument("--items", nargs="+", metavar="ID", help="external item ids")
    q.add_argument("--items-file", help="file with one external item id per line")
    q.set_defaults(func=cmd_index_remove)
    q = isub.add_parser("stats", help="type, size, bytes per item, search setting and encoder fingerprint")
    _add_run_dir(q)
    q.add_argument("--json", action="store_true", help="print index.json plus sizes as JSON")
    q.set_defaults(func=cmd_index_stats)
    q = isub.add_parser("evaluate", help="recall@k vs exact search and queries/s, per search setting")
    _add_run_dir(q)
    q.add_argument("-k", type=int, default=10, help="recall cut-off (default 10)")
    q.add_argument("--queries", type=int, default=1000, help="user embeddings sampled as queries (default 1000)")
    q.add_argument("--target-recall", type=float, help="also pick the smallest setting reaching this recall")
    q.add_argument("--apply", action="store_true", help="save the picked setting into the index")
    q.set_defaults(func=cmd_index_evaluate)

    p = sub.add_parser("retrieve", help="top-K candidates for every evaluated user, per slice")
    _add_run_dir(p)
    p.set_defaults(func=cmd_retrieve)

    p = sub.add_parser("rerank", help="cross-encoder reranker: train | apply")
    rsub = p.add_subparsers(dest="rerank_command", required=True, metavar="ACTION")
    q = rsub.add_parser("train", help="train the cross-encoder on the retriever's hard negatives")
    _add_run_dir(q)
    _add_set(q)
    q.set_defaults(func=cmd_rerank_train)
    q = rsub.add_parser("apply", help="rerank the retrieved candidates of every slice")
    _add_run_dir(q)
    q.set_defaults(func=cmd_rerank_apply)

    p = sub.add_parser("recommend", help="print the top items, with titles, for one user")
    _add_run_dir(p)
    _add_user(p)
    p.add_argument("--no-rerank", action="store_true", help="first-stage order only (hybrid, or retrieval)")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("evaluate", help="full-ranking metrics per model and slice -> report.json/report.md")
    _add_run_dir(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("hybrid", help="fit the user-pooling model and the text + collaborative fusion (choices "
                       "made on validation users)")
    _add_run_dir(p)
    _add_set(p)
    p.set_defaults(func=cmd_hybrid)

    p = sub.add_parser("coldstart", help="cold start: add-items (description-only items join the index) | user "
                       "(a new user from 1-3 items or a text) | catalog "
                       "(a run from descriptions alone, no interactions) | similar (item-to-item) | search "
                       "(text-to-item)")
    csub = p.add_subparsers(dest="coldstart_command", required=True, metavar="ACTION")
    _add_items_parser(csub, "add-items")
    q = csub.add_parser("user", help="recommendations for a new user from 1-3 item ids and/or a free-text taste")
    _add_run_dir(q)
    q.add_argument("--items", nargs="+", metavar="ID", help="external ids of items the user liked (oldest first)")
    q.add_argument("--text", help='their taste in words, e.g. "slow-burning Scandinavian crime dramas"')
    q.add_argument("-k", type=int, default=10, help="number of items (default 10)")
    q.set_defaults(func=cmd_coldstart_user)
    q = csub.add_parser("catalog", help="embed and index an items file that has no interactions (zero-shot "
                        "backbone, or --encoder-run's fine-tuned encoder)")
    q.add_argument("--items", required=True, help="items file: item_id, title, optional description/genres/tags "
                   "(csv, tsv, jsonl or parquet)")
    q.add_argument("--run-dir", required=True, help="new run directory (an earlier catalog run there is replaced)")
    q.add_argument("--encoder-run", help="embed with the fine-tuned encoder of this run (or its encoder/ folder)")
    q.add_argument("--config", help="PipelineConfig JSON file to start from")
    _add_set(q)
    q.set_defaults(func=cmd_coldstart_catalog)
    q = csub.add_parser("similar", help="items most similar to one item (item-to-item)")
    _add_run_dir(q)
    q.add_argument("--item", required=True, help="external item id")
    q.add_argument("-k", type=int, default=10, help="number of items (default 10)")
    q.set_defaults(func=cmd_coldstart_similar)
    q = csub.add_parser("search", help="items matching a free-text description (text-to-item)")
    _add_run_dir(q)
    q.add_argument("--text", required=True, help='what to look for, e.g. "a movie about astronauts in space"')
    q.add_argument("-k", type=int, default=10, help="number of items (default 10)")
    q.set_defaults(func=cmd_coldstart_search)

    p = sub.add_parser("demo", help="every stage end to end on the bundled data with the default backbone")
    _add_run_dir(p)
    _add_data_flags(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "accelerate", "faiss", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
