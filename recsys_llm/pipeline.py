"""The pipeline: every stage in order. Each stage lives in :mod:`recsys_llm.stages` and can run alone.

Stages, in order (each reads earlier artifacts from the run directory and writes its own)::

    prepare        raw files -> data/*.parquet, splits/*.parquet, text/*.jsonl, config.json
    embed -z       untuned backbone -> embeddings_zeroshot/ (the zero-shot baseline)
    finetune       splits + text -> encoder/ (LoRA adapter + encoder.json + train_log.jsonl)
    embed          encoder -> embeddings/{item_emb,item_ids,user_emb,user_ids}.npy
    build_index    embeddings -> index/{index.faiss,index.json}
    retrieve       index + user embeddings -> candidates/{warm,cold-item,cold-user}.npz (seen items filtered)
    fit_hybrid     embeddings + training interactions -> hybrid/ (pooled + sequence users, collaborative fusion)
    train_reranker candidates of training prefixes -> reranker/ (adapter + head + reranker.json)
    select_served  validation users, through the Recommender -> served.json (first stage + rerank setting)
    rerank         candidates + reranker -> ranked/<slice>.npz (+ .scores.npz for the report's sweep)
    evaluate       everything above -> report.json, report.md, plots/

Example:
    >>> from recsys_llm.config import PipelineConfig
    >>> from recsys_llm import pipeline
    >>> cfg = PipelineConfig().override({"train.max_steps": 5})  # doctest: +SKIP
    >>> pipeline.run_all(cfg, "runs/demo")                         # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from recsys_llm.config import PipelineConfig
from recsys_llm.report.compare import compare_run
from recsys_llm.report.tables import ResultRow
from recsys_llm.run import timed
from recsys_llm.stages.embed import embed
from recsys_llm.stages.export import export_models
from recsys_llm.stages.finetune import finetune
from recsys_llm.stages.hybrid import fit_hybrid
from recsys_llm.stages.index import build_index, evaluate_index, index_stats
from recsys_llm.stages.prepare import prepare
from recsys_llm.stages.rerank import rerank, train_reranker
from recsys_llm.stages.retrieve import retrieve_candidates
from recsys_llm.stages.select import select_served

__all__ = ["build_index", "embed", "evaluate", "evaluate_index", "export_models", "finetune", "fit_hybrid", "index_stats", "prepare",
           "rerank", "retrieve_candidates", "run_all", "select_served", "train_reranker"]


@timed("evaluate")
def evaluate(run_dir: str | Path) -> list[ResultRow]:
    """Every model (baselines, zero-shot, fine-tuned, hybrid, served) on every slice (:mod:`recsys_llm.report`)."""
    return compare_run(run_dir)


def run_all(cfg: PipelineConfig, run_dir: str | Path) -> list[ResultRow]:
    """Every stage in order: what `recsys-llm demo` runs."""
    prepare(cfg, run_dir)
    embed(run_dir, zero_shot=True)
    finetune(run_dir)
    embed(run_dir)
    build_index(run_dir)
    retrieve_candidates(run_dir)
    if cfg.hybrid.enabled:
        fit_hybrid(run_dir)
    if cfg.rerank.enabled:
        train_reranker(run_dir)
    select_served(run_dir)
    if cfg.rerank.enabled:
        rerank(run_dir)
    return evaluate(run_dir)
