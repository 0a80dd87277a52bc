"""The subcommands of ``recsys-llm``: parse flags into the library's calls, then print (:mod:`.output`)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from recsys_llm import __version__, pipeline
from recsys_llm.cli import output
from recsys_llm.coldstart import build_catalog, recommend_new_user, search_text, similar_items
from recsys_llm.config import PipelineConfig, parse_overrides
from recsys_llm.data.io import read_items
from recsys_llm.index.tuning import format_sweep
from recsys_llm.run import RunDir
from recsys_llm.serve.info import run_info
from recsys_llm.serve.live import RUN_DIR_ENV, LiveRecommender
from recsys_llm.serve.recommender import Recommender
from recsys_llm.serve.served import ServedConfig


def _apply_overrides(run_dir: str, pairs: list[str]) -> None:
    """Apply --set overrides to the run's config.json (a stage rerun with new settings)."""
    if pairs:
        run = RunDir(Path(run_dir))
        run.load_config().override(parse_overrides(pairs)).save(run.config)


def initial_config(args: argparse.Namespace) -> PipelineConfig:
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
    overrides: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    overrides.update(parse_overrides(getattr(args, "set", None) or []))
    return cfg.override(overrides) if overrides else cfg


# ------------------------------------------------------------------------------------------- stages
def cmd_prepare(args: argparse.Namespace) -> None:
    ctx = pipeline.prepare(initial_config(args), args.run_dir)
    s = ctx.split.summary()
    print(f"prepared {ctx.ds.name}: {ctx.ds.n_users} users, {ctx.ds.n_items} items, "
          f"{len(ctx.ds.interactions)} interactions -> {args.run_dir}")
    print("split:", json.dumps({k: v for k, v in s.items() if k != "cold_items"}))
    if ctx.ds.dropped:
        print("dropped rows:", json.dumps(ctx.ds.dropped))


def cmd_finetune(args: argparse.Namespace) -> None:
    _apply_overrides(args.run_dir, args.set)
    pipeline.finetune(args.run_dir, resume=args.resume)
    print(f"encoder saved to {Path(args.run_dir) / 'encoder'}")


def cmd_embed(args: argparse.Namespace) -> None:
    pipeline.embed(args.run_dir, zero_shot=args.zero_shot, backend=args.backend)
    print("embeddings written to", RunDir(Path(args.run_dir)).embeddings(args.zero_shot))


def cmd_retrieve(args: argparse.Namespace) -> None:
    pipeline.retrieve_candidates(args.run_dir)
    print("candidates written to", Path(args.run_dir) / "candidates")


def cmd_hybrid(args: argparse.Namespace) -> None:
    _apply_overrides(args.run_dir, args.set)
    output.print_hybrid(pipeline.fit_hybrid(args.run_dir), args.run_dir)


def cmd_rerank_train(args: argparse.Namespace) -> None:
    _apply_overrides(args.run_dir, args.set)
    pipeline.train_reranker(args.run_dir)
    print("reranker saved to", Path(args.run_dir) / "reranker")


def cmd_rerank_apply(args: argparse.Namespace) -> None:
    pipeline.rerank(args.run_dir, backend=args.backend)
    print("reranked lists written to", Path(args.run_dir) / "ranked")


def cmd_select(args: argparse.Namespace) -> None:
    _apply_overrides(args.run_dir, args.set)
    output.print_selection(pipeline.select_served(args.run_dir))


def cmd_evaluate(args: argparse.Namespace) -> None:
    output.print_report(pipeline.evaluate(args.run_dir), args.run_dir)


def cmd_export(args: argparse.Namespace) -> None:
    _apply_overrides(args.run_dir, args.set)
    info = pipeline.export_models(args.run_dir, fmt=args.format, int8=args.int8)
    print(f"exported {', '.join(info['graphs'])} ({info['format']}, serving {info['precision']}) -> "
          f"{Path(args.run_dir) / 'export'}")
    for model, checks in info["checks"].items():
        for precision, c in checks.items():
            print(f"  {model} {precision} vs torch fp32: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    print("use it with --backend onnx (embed, rerank apply, recommend) or --set encoder.backend=onnx")


def cmd_demo(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    cfg = initial_config(args)
    print(f"recsys-llm {__version__} demo: {cfg.data.dataset}, backbone {cfg.encoder.backbone}, run dir {args.run_dir}")
    rows = pipeline.run_all(cfg, args.run_dir)
    output.print_report(rows, args.run_dir)
    info = run_info(args.run_dir)
    print("\nstage wall times (s):")
    output.print_pairs([(k, f"{v:8.1f}") for k, v in info["timings_s"].items()])
    print(f"demo wall time: {time.perf_counter() - t0:.0f} s")


# -------------------------------------------------------------------------------------------- index
def cmd_index_build(args: argparse.Namespace) -> None:
    _apply_overrides(args.run_dir, args.set)
    info = pipeline.build_index(args.run_dir)
    meta = info["metadata"]
    print(f"{info['kind']} index over {info['ntotal']:,} items (dim {info['dim']}) -> {Path(args.run_dir) / 'index'}")
    print(f"  type: {meta.get('choice', '')}")
    if meta.get("tuned"):
        t = meta["tuned"]
        key = next(k for k in t if k.startswith("recall@"))
        print(f"  tuned {t['param']}={t['value']}: {key} {t[key]:.4f} vs exact on {t['queries']} user queries "
              f"(target {t['target']})")


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
    rec = Recommender.load(args.run_dir)
    ids = rec.add_items(read_items(args.items), source=str(args.items), upsert=args.upsert)
    print(f"indexed {len(ids)} items from {args.items} in {Path(args.run_dir) / 'index'}; "
          "they can be recommended now")


def cmd_index_remove(args: argparse.Namespace) -> None:
    ids = Recommender.load(args.run_dir).retire_items(_read_id_list(args), source=args.items_file or "--items")
    print(f"removed {len(ids)} items from {Path(args.run_dir) / 'index'}; they will not be recommended")


def cmd_index_stats(args: argparse.Namespace) -> None:
    info = pipeline.index_stats(args.run_dir)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        output.print_pairs(output.index_stats_rows(info))


def cmd_index_evaluate(args: argparse.Namespace) -> None:
    rows, exact_qps, best = pipeline.evaluate_index(args.run_dir, k=args.k, n_queries=args.queries,
                                                    target=args.target_recall, apply=args.apply)
    print(f"recall@{rows[0].k} against exact search and queries/s, up to {args.queries} sampled user queries "
          f"(one batch, this machine):")
    print(format_sweep(rows, exact_qps))
    if best is not None:
        saved = "saved into the index" if args.apply else "not saved (add --apply)"
        print(f"smallest setting reaching recall@{best.k} >= {args.target_recall}: {best.setting} "
              f"(recall {best.recall:.4f}, {best.qps:.0f} queries/s); {saved}")


# ----------------------------------------------------------------------------------------- serving
def _print_user(rec: Recommender, user: str, served: ServedConfig | None, k: int, as_json: bool = False) -> None:
    recs = rec.recommend(user, k=k, served=served)
    if as_json:
        print(recs.drop(columns=["item"]).to_json(orient="records"))
        return
    recent = rec.catalogue.titles[rec.known[rec.user_internal(user)][::-1][:3]]
    print(f"user {user} recently: " + "; ".join(recent))
    output.print_recs(recs)


def cmd_recommend(args: argparse.Namespace) -> None:
    rec = Recommender.load(args.run_dir, backend=args.backend)
    served = None
    if args.no_rerank and rec.served.reranks:
        served = ServedConfig(rec.served.first_stage, chosen_by=rec.served.chosen_by)
    _print_user(rec, str(args.user), served, args.k, args.json)


def cmd_index_query(args: argparse.Namespace) -> None:
    _print_user(Recommender.load(args.run_dir, served=ServedConfig("dense")), str(args.user), None, args.k)


def cmd_coldstart_user(args: argparse.Namespace) -> None:
    recs = recommend_new_user(args.run_dir, items=args.items, text=args.text, k=args.k)
    known = f"{len(args.items or [])} items" + (f" and {args.text!r}" if args.text else "")
    print(f"new user from {known}")
    output.print_recs(recs)


def cmd_coldstart_catalog(args: argparse.Namespace) -> None:
    s = build_catalog(args.items, args.run_dir, initial_config(args), encoder_run=args.encoder_run)
    enc = s["encoder"]
    how = (f"fine-tuned encoder of {s['encoder_run']} (adapter sha256 {(enc['adapter_sha256'] or '')[:16]})"
           if s["encoder_run"] else "untuned backbone (zero-shot)")
    print(f"catalog of {s['n_items']:,} items (dim {s['dim']}) from {args.items} -> {s['run_dir']}")
    print(f"  encoder: {enc['backbone']}, {how}")
    print(f"  item template: {s['item_template']}")
    print(f"  index: {s['index']} {s['factory']} ({s['choice']})")
    print(f"  time: {s['seconds']:.1f} s")


def cmd_coldstart_similar(args: argparse.Namespace) -> None:
    recs = similar_items(args.run_dir, str(args.item), k=args.k)
    print(f"top {len(recs)} items similar to [{args.item}]:")
    output.print_items(recs)


def cmd_coldstart_search(args: argparse.Namespace) -> None:
    recs = search_text(args.run_dir, args.text, k=args.k)
    print(f"top {len(recs)} items for {args.text!r}:")
    output.print_items(recs)


def cmd_info(args: argparse.Namespace) -> None:
    info = run_info(args.run_dir)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True, default=str))
        return
    output.print_pairs([(k, v) for k, v in info["summary"].items()])
    print("\nstages:")
    output.print_pairs([(s["stage"], ("done" if s["done"] else "not run")
                         + (f", {s['seconds']:.1f} s" if s.get("seconds") else "")
                         + (f"; STALE: {s['stale']}" if s.get("stale") else "")) for s in info["stages"]])


# ----------------------------------------------------------------------------------------- service
def cmd_serve(args: argparse.Namespace) -> None:
    run = Path(args.run_dir)
    if not (run / "config.json").is_file():
        raise FileNotFoundError(f"{run}: not a run directory (no config.json); build one with `make demo`")
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers}: need at least 1")
    try:
        import uvicorn  # the `serve` extra
    except ImportError:
        raise ValueError("the service needs the serve extra: pip install -e '.[serve]'") from None
    os.environ[RUN_DIR_ENV] = str(run.resolve())
    os.environ["RECSYS_LLM_BATCH_MS"] = str(args.batch_ms)
    print(f"serving {run} on http://{args.host}:{args.port} ({args.workers} worker(s)); docs at /docs, page at /")
    uvicorn.run("recsys_llm.serve.app.main:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="info", access_log=args.access_log)


def cmd_refresh(args: argparse.Namespace) -> None:
    live = LiveRecommender.load(args.run_dir)
    with live.log.locked():
        live.sync()
        done = live.write_refresh()
    if args.json:
        print(json.dumps(done, indent=2, sort_keys=True))
        return
    print(f"folded {done['interactions_folded']} interactions ({done['items_with_new_counts']} items) into the "
          f"collaborative part: {done['collaborative']}; {done['users_recomputed']} users' stored vectors "
          f"recomputed ({', '.join(done['user_models']) or 'none'})")
    print(f"running services apply it before their next answer ({live.log.path})")
