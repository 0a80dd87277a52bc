"""Config sections of the stages after the embeddings: index, rerank, eval, hybrid.

See :mod:`recsys_llm.config.base` for how a section checks itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recsys_llm.config.base import Section, meta
from recsys_llm.config.checks import MILVUS_TOKEN_ENV, credentials_in_uri, without_credentials
from recsys_llm.config.checks import check as _check


@dataclass
class IndexConfig(Section):
    _section = "index"

    backend: str = field(default="faiss", metadata=meta(
        "faiss (in process, CPU or GPU), exact (numpy brute force) or milvus (Milvus Lite file or a "
        "cluster).", choices=("faiss", "exact", "milvus")))
    factory: str = field(default="auto", metadata=meta(
        "FAISS factory string (Flat, IVF1024,Flat, IVF1024,SQ8, OPQ64,IVF4096,PQ64, HNSW32, ...) or auto: "
        "chosen by catalog size and memory_budget_gb (recsys_llm/index/choose.py)."))
    memory_budget_gb: float = field(default=0.0, metadata=meta(
        "Memory the index may use, for factory=auto (0 = half of this machine's RAM)."))
    nprobe: int = field(default=0, metadata=meta("IVF lists searched per query (0 = tuned at build time)."))
    ef_search: int = field(default=0, metadata=meta("HNSW search depth (0 = tuned at build time)."))
    k_factor: int = field(default=0, metadata=meta(
        "Refine indexes (factory ending in ,RFlat): candidates re-ranked with exact scores, as a multiple of "
        "K (0 = FAISS's 1)."))
    target_recall: float = field(default=0.95, metadata=meta(
        "Approximate indexes: at build time the smallest nprobe/ef_search whose recall@K against exact search "
        "reaches this is chosen (K = the retrieval depth), measured on a sample of user embeddings."))
    tune_queries: int = field(default=500, metadata=meta("User embeddings sampled to tune the search setting."))
    train_sample: int = field(default=0, metadata=meta(
        "Most vectors used to train IVF/PQ (0 = 64 per IVF list, at least 10,000)."))
    use_gpu: str = field(default="auto", metadata=meta(
        "auto (GPU when faiss reports one), yes or no.", choices=("auto", "yes", "no")))
    num_gpus: int = field(default=0, metadata=meta("Use the first N GPUs (0 = all)."))
    shard: bool = field(default=True, metadata=meta("Several GPUs: split the items over them (else replicate)."))
    float16: bool = field(default=False, metadata=meta("Store vectors as float16 on the GPU."))
    milvus_uri: str = field(default="", metadata=meta(
        "Milvus backend: a Milvus Lite file (default RUN_DIR/milvus.db) or a cluster URI such as "
        f"http://milvus:19530 (never credentials: the token comes from the {MILVUS_TOKEN_ENV} environment "
        "variable).", example="http://milvus:19530"))
    milvus_collection: str = field(default="recsys_items", metadata=meta("Milvus collection name."))
    milvus_index_type: str = field(default="FLAT", metadata=meta(
        "Milvus index type (FLAT exact; IVF_FLAT, HNSW or AUTOINDEX on a cluster)."))

    def validate(self) -> None:
        _check(bool(self.factory.strip()), "index", "factory", self.factory, "a FAISS factory string or auto")
        for name in ("memory_budget_gb", "nprobe", "ef_search", "k_factor", "train_sample", "num_gpus"):
            _check(getattr(self, name) >= 0, "index", name, getattr(self, name), "must be >= 0 (0 = default)")
        _check(0 < self.target_recall <= 1, "index", "target_recall", self.target_recall, "a recall in (0, 1]")
        _check(self.tune_queries >= 1, "index", "tune_queries", self.tune_queries, "must be >= 1")
        secret = credentials_in_uri(self.milvus_uri)
        _check(secret is None, "index", "milvus_uri", self.milvus_uri,
               f"it contains {secret}, which would be saved in config.json; give the URI without it "
               f"({without_credentials(self.milvus_uri) if secret else ''}) and pass the token in the "
               f"{MILVUS_TOKEN_ENV} environment variable (user:password or an API key)")


@dataclass
class RerankConfig(Section):
    _section = "rerank"

    enabled: bool = field(default=True, metadata=meta("Train and apply the cross-encoder reranker."))
    depth: int = field(default=20, metadata=meta("Rerank the top-K retrieved candidates."))
    negatives: int = field(default=3, metadata=meta("Hard negatives per positive (from the retriever)."))
    negative_pool: int = field(default=50, metadata=meta("Hard negatives are drawn from this top-K pool."))
    skip_top: int = field(default=0, metadata=meta("Skip this many top candidates (likely false negatives)."))
    batch_size: int = field(default=8, metadata=meta("Positives per step (each with `negatives` negatives)."))
    max_steps: int = field(default=60, metadata=meta("Optimizer steps."))
    lr: float = field(default=5e-4, metadata=meta("AdamW learning rate (LoRA + head)."))
    max_tokens: int = field(default=64, metadata=meta("Max tokens of the (user text, item text) pair."))
    lora_r: int = field(default=16, metadata=meta("LoRA rank of the cross-encoder."))
    score_batch_size: int = field(default=64, metadata=meta("Pairs per forward pass at inference."))
    seed: int = field(default=0, metadata=meta("Seed."))
    quantize: str = field(default="none", metadata=meta(
        "Scoring copy used by `rerank apply` and `recommend` (LoRA always merged): none (float32, same scores, "
        "1.2x faster), bf16 (3.6-4.6x faster on CPUs with AMX, Spearman >= 0.998 vs float32), int8 (2x "
        "faster on CPU but reorders: Spearman 0.83-0.91), auto (bf16 where the device computes it natively: "
        "CUDA with bf16, CPUs with AVX512-BF16/AMX; else none, since emulated bf16 is far slower than float32). "
        "Measured by eval/bench_rerank.py.",
        choices=("none", "bf16", "int8", "auto")))
    loss: str = field(default="listwise", metadata=meta(
        "listwise (softmax over the positive and its negatives) or bce (pointwise binary cross-entropy).",
        choices=("listwise", "bce")))
    examples_per_user: int = field(default=1, metadata=meta(
        "Training examples per user: history prefixes, each predicting the next training item."))
    eval_every: int = field(default=0, metadata=meta(
        "Validate every N steps (NDCG@10 of the reranked validation candidates) and keep the best weights; "
        "0 = no validation."))
    valid_users: int = field(default=200, metadata=meta("Validation users (seeded sample) for eval_every and for `recsys-llm select`."))
    select_on_valid: bool = field(default=False, metadata=meta(
        "Kept so older configs load; no effect: `recsys-llm select` always picks depth and fusion weight from "
        "depth + sweep_depths x fusion_weight + sweep_weights by validation NDCG@10 (served.json)."))
    fusion_weight: float = field(default=1.0, metadata=meta(
        "Share of the reranker in the final score of the top `depth`: (1-w) z(retrieval) + w z(rerank), "
        "z-scored per list; 1 = reranker alone, 0 = retrieval order."))
    sweep_depths: list[int] = field(default_factory=list, metadata=meta(
        "Also report reranking at these depths (scored once at the largest; e.g. [10, 20, 50, 100]).",
        example=[10, 20, 50, 100]))
    sweep_weights: list[float] = field(default_factory=list, metadata=meta(
        "Also report these fusion weights at every depth (e.g. [0.25, 0.5, 0.75, 1.0]).",
        example=[0.25, 0.5, 0.75, 1.0]))

    def validate(self) -> None:
        _check(self.depth >= 1, "rerank", "depth", self.depth, "must be >= 1")
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
class EvalConfig(Section):
    _section = "eval"

    ks: list[int] = field(default_factory=lambda: [10, 50], metadata=meta("Cut-offs for Recall/NDCG."))
    cold_candidates: str = field(
        default="cold",
        metadata=meta("Candidate set for the cold-item slice: 'cold' ranks among cold items only, 'all' the "
                      "catalog.", choices=("cold", "all")),
    )
    max_users: int = field(default=0, metadata=meta("Evaluate at most this many users (0 = all), seeded sample."))
    seed: int = field(default=0, metadata=meta("Seed for the user sample, sampled negatives and bootstrap."))
    baselines: list[str] = field(
        default_factory=lambda: ["random", "popularity", "itemknn", "ease", "ease_recency", "bm25", "sasrec"],
        metadata=meta("Classic baselines evaluated in the same run (random, popularity, itemknn, ease, "
                      "ease_recency, bm25, sasrec)."),
    )
    tune_baselines: bool = field(default=True, metadata=meta(
        "Choose each baseline's hyper-parameters on validation users (NDCG@10, the hybrid's protocol) from its grid "
        "in recsys_llm.classic.tuning.DEFAULT_GRIDS, at most tune_budget settings each; false = library defaults."))
    tune_budget: int = field(default=16, metadata=meta(
        "Most settings any baseline is tried with on validation (the same cap for every model; a larger grid is "
        "cut to a seeded random subset)."))
    tune_valid_users: int = field(default=0, metadata=meta("Validation users to tune on (0 = all, else a sample)."))
    sasrec_hidden: list[int] = field(default_factory=lambda: [64], metadata=meta(
        "SASRec widths tried on validation (grid axis)."))
    sasrec_dropout: list[float] = field(default_factory=lambda: [0.2], metadata=meta(
        "SASRec dropout rates tried on validation (grid axis)."))
    sasrec_lr: list[float] = field(default_factory=lambda: [2e-3], metadata=meta(
        "SASRec Adam learning rates tried on validation (grid axis)."))
    sasrec_epochs: int = field(default=10, metadata=meta(
        "Most SASRec training epochs per setting (early stopping on validation NDCG@10 picks the epoch)."))
    sasrec_patience: int = field(default=3, metadata=meta(
        "SASRec: epochs without a better validation NDCG@10 before stopping."))
    sasrec_max_len: int = field(default=50, metadata=meta("SASRec: most recent history items read."))
    sasrec_loss: str = field(default="auto", metadata=meta(
        "SASRec loss: ce (full softmax over the catalog), sampled (popularity-sampled softmax, 512 items), bce (one "
        "sampled negative per position), auto (ce up to 4,096 items, else sampled).",
        choices=("auto", "ce", "sampled", "bce")))
    cold_user_max_train: int = field(
        default=3, metadata=meta("cold-user slice: warm test users with at most this many training interactions."))
    sampled_negatives: int = field(
        default=0, metadata=meta("0 = full ranking (default); N > 0 ranks held-out items among N sampled "
                                 "unseen items (labelled 'sampled' everywhere)."))
    n_bootstrap: int = field(default=1000, metadata=meta("Bootstrap resamples for the 95% intervals."))

    def validate(self) -> None:
        _check(self.sampled_negatives >= 0, "eval", "sampled_negatives", self.sampled_negatives, "must be >= 0")
        _check(self.n_bootstrap >= 10, "eval", "n_bootstrap", self.n_bootstrap, "must be >= 10")
        known = ("random", "popularity", "itemknn", "ease", "ease_recency", "bm25", "sasrec")
        _check(all(b in known for b in self.baselines), "eval", "baselines", self.baselines,
               f"choose from {', '.join(known)}")
        _check(len(self.ks) > 0 and all(k >= 1 for k in self.ks), "eval", "ks", self.ks, "need cut-offs >= 1")
        _check(self.tune_budget >= 1, "eval", "tune_budget", self.tune_budget, "must be >= 1")
        _check(self.tune_valid_users >= 0, "eval", "tune_valid_users", self.tune_valid_users, "must be >= 0 (0 = all)")
        for name in ("sasrec_epochs", "sasrec_patience", "sasrec_max_len"):
            _check(getattr(self, name) >= 1, "eval", name, getattr(self, name), "must be >= 1")
        for name, ok in (("sasrec_hidden", lambda v: v >= 2 and v % 2 == 0), ("sasrec_dropout", lambda v: 0 <= v < 1),
                         ("sasrec_lr", lambda v: v > 0)):
            _check(len(getattr(self, name)) > 0 and all(ok(v) for v in getattr(self, name)), "eval", name,
                   getattr(self, name), "need a non-empty list of valid values (hidden: even; dropout: [0, 1); lr > 0)")


@dataclass
class HybridConfig(Section):
    _section = "hybrid"

    enabled: bool = field(default=True, metadata=meta(
        "Fit the user-pooling model and the collaborative fusion after `embed` (`recsys-llm hybrid`)."))
    user_model: str = field(default="auto", metadata=meta(
        "User representation of the hybrid and of new users: text (history rendered and encoded), pooling "
        "(learned pooling over the history's item embeddings), sequence (a small transformer over them, "
        "hybrid.sequence_steps > 0), or auto (the best on validation users, warm and all-items-cold counted "
        "equally).", choices=("auto", "text", "pooling", "sequence")))
    cf_model: str = field(default="ease", metadata=meta(
        "Collaborative source fused with dense retrieval: ease, itemknn, or none (text only).",
        choices=("ease", "itemknn", "none")))
    fusion: str = field(default="weighted", metadata=meta(
        "weighted: (1-w_i) z(dense) + w_i z(collaborative) with w_i = w n_i/(n_i+c) per item, z-scored per user "
        "over the catalog (see recsys_llm.hybrid); rrf: the same weights on reciprocal ranks.",
        choices=("weighted", "rrf")))
    weights: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
                                 metadata=meta("Fusion weights tried on validation users; the best is kept."))
    cf_halflives: list[float] = field(default_factory=lambda: [0.0, 5.0, 10.0, 20.0, 40.0], metadata=meta(
        "Recency half-lives (in items) tried on validation for the collaborative query: the item a positions "
        "before the most recent counts 0.5^(a/h); 0 = every item counts 1 (classic EASE/ItemKNN query)."))
    cf_confidences: list[float] = field(default_factory=lambda: [0.0, 5.0, 20.0, 50.0, 200.0], metadata=meta(
        "Per-item shrinkage c of the collaborative weight, tried on validation: w * n_i / (n_i + c) for an item "
        "with n_i training interactions, so items nobody (or few) touched lean on their text (0 = none: at weight "
        "1 the hybrid is its collaborative part alone, so validation can choose it)."))
    cf_trust_powers: list[float] = field(default_factory=lambda: [1.0, 4.0], metadata=meta(
        "Powers p of the trust curve w * n_i^p / (n_i^p + c^p), tried with every confidence c: 1 grows slowly, 4 is "
        "a steep step at c (items with fewer interactions lean on their text, items with more follow the "
        "collaborative part)."))
    bridge_weights: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], metadata=meta(
        "Weights tried for the text-neighbour bridge on items without interactions, chosen on validation with "
        "every item treated as cold (its own column unused); [0] = off."))
    lexical_weights: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], metadata=meta(
        "Weights tried for BM25 over the item texts on items without interactions (the cold-item fallback), chosen "
        "with the bridge on validation with every item treated as cold (bridge + lexical <= 1; lexical 1 = BM25 "
        "alone on cold items); [0] = off."))
    fewshot_reveal: list[int] = field(default_factory=lambda: [1, 3, 5, 10, 20], metadata=meta(
        "Trust confidence also validated on pseudo-cold items (a random sample of warm items): each keeps only its "
        "first r training interactions (r drawn from this list), the collaborative part is refitted, and users are "
        "ranked among the pseudo-cold items for their interactions from position max(r) on; the confidence is "
        "chosen by warm + few-shot validation together (recsys_llm.stages.hybrid_cold). [] = warm validation only."))
    fewshot_warm_tolerance: float = field(default=0.005, metadata=meta(
        "The few-shot trust curve (items with at most max(fewshot_reveal) interactions) may cost warm validation "
        "NDCG@10 up to one standard error of the paired difference, or up to this share of the warm best "
        "(0.005 = 0.5%) when that is larger: with few warm users affected, the paired test calls a negligible "
        "loss real. 0 = one standard error only."))
    blind_cold_validation: bool = field(default=True, metadata=meta(
        "Hide the pseudo-cold items' interactions (recsys_llm.protocol.pseudo_cold_items) from fine-tuning and "
        "from the pooling and sequence user models, so the all-items-cold and few-shot validations are as blind "
        "as the cold-item test (false: those parts learn from every training interaction and the cold "
        "validations overrate them). Set it before `finetune`: the hybrid checks the encoder was fitted the same "
        "way."))
    bridge_neighbours: int = field(default=50, metadata=meta("Text neighbours per item in the bridge."))
    bridge_temperature: float = field(default=0.05, metadata=meta(
        "Softmax temperature over the neighbours' cosine similarities."))
    valid_users: int = field(default=0, metadata=meta(
        "Validation users for the choices (0 = all; the all-items-cold validation then takes at most 2,000 of the "
        "users who had its pseudo-cold items)."))
    search_candidates: int = field(default=200, metadata=meta(
        "Validation search on candidate lists: the top m items of each fused part per user, exact for full "
        "ranking by a bound (recsys_llm.hybrid.search); 0 = score every setting over the whole catalogue."))
    pooling_steps: int = field(default=400, metadata=meta("Optimizer steps of the user-pooling model."))
    pooling_batch_size: int = field(default=256, metadata=meta("(history prefix, next item) pairs per step."))
    pooling_lr: float = field(default=3e-3, metadata=meta("AdamW learning rate of the user-pooling model."))
    pooling_max_items: int = field(default=50, metadata=meta("Most recent history items the pooling sees."))
    sequence_steps: int = field(default=200, metadata=meta(
        "Optimizer steps of the sequence user model (a one-layer transformer over the history's item "
        "embeddings, recsys_llm.encoder.sequence_model); 0 = no sequence model (about 12 s per 100 steps on 2 "
        "busy CPU cores for 384-dim items at the default batch, measured on ml-latest-small)."))
    sequence_batch_size: int = field(default=256, metadata=meta(
        "(history prefix, next item) pairs per step of the sequence model; their positives are each other's "
        "in-batch negatives."))
    sequence_lr: float = field(default=1e-3, metadata=meta("AdamW learning rate of the sequence model."))
    sequence_max_items: int = field(default=50, metadata=meta("Most recent history items the sequence model reads."))
    sequence_negatives: int = field(default=1024, metadata=meta(
        "Item ids sampled uniformly per step as extra negatives of the sequence model (0 = in-batch only)."))
    sequence_layers: int = field(default=1, metadata=meta(
        "Transformer layers of the sequence model (1 is computed in item space and is fast on a CPU; each more "
        "layer runs over every history position)."))
    few_shot: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 5, 10, 20], metadata=meta(
        "Few-shot curve points: known interactions of each cold item (0 = description only) and of each "
        "user (0 is skipped on the user side: no user text)."))
    seed: int = field(default=0, metadata=meta("Seed."))

    def validate(self) -> None:
        _check(len(self.weights) > 0 and all(0.0 <= w <= 1.0 for w in self.weights), "hybrid", "weights",
               self.weights, "need weights in [0, 1]")
        _check(len(self.cf_halflives) > 0 and all(h >= 0 for h in self.cf_halflives), "hybrid", "cf_halflives",
               self.cf_halflives, "need half-lives >= 0 (0 = no recency weighting)")
        _check(len(self.cf_confidences) > 0 and all(c >= 0 for c in self.cf_confidences), "hybrid",
               "cf_confidences", self.cf_confidences, "need values >= 0 (0 = no shrinkage)")
        _check(len(self.cf_trust_powers) > 0 and all(p > 0 for p in self.cf_trust_powers), "hybrid",
               "cf_trust_powers", self.cf_trust_powers, "need values > 0 (1 = n/(n+c))")
        _check(len(self.bridge_weights) > 0 and all(0.0 <= w <= 1.0 for w in self.bridge_weights), "hybrid",
               "bridge_weights", self.bridge_weights, "need weights in [0, 1]")
        _check(len(self.lexical_weights) > 0 and all(0.0 <= w <= 1.0 for w in self.lexical_weights), "hybrid",
               "lexical_weights", self.lexical_weights, "need weights in [0, 1]")
        _check(all(r >= 1 for r in self.fewshot_reveal), "hybrid", "fewshot_reveal", self.fewshot_reveal,
               "need counts >= 1")
        _check(0.0 <= self.fewshot_warm_tolerance < 1.0, "hybrid", "fewshot_warm_tolerance",
               self.fewshot_warm_tolerance, "need a share in [0, 1)")
        _check(self.bridge_neighbours >= 1, "hybrid", "bridge_neighbours", self.bridge_neighbours, "must be >= 1")
        _check(self.bridge_temperature > 0, "hybrid", "bridge_temperature", self.bridge_temperature, "must be > 0")
        for name in ("valid_users", "pooling_steps", "search_candidates", "sequence_steps", "sequence_negatives"):
            _check(getattr(self, name) >= 0, "hybrid", name, getattr(self, name), "must be >= 0")
        for name in ("pooling_batch_size", "pooling_max_items", "sequence_batch_size", "sequence_max_items",
                     "sequence_layers"):
            _check(getattr(self, name) >= 1, "hybrid", name, getattr(self, name), "must be >= 1")
        for name in ("pooling_lr", "sequence_lr"):
            _check(getattr(self, name) > 0, "hybrid", name, getattr(self, name), "must be > 0")
        _check(self.user_model != "sequence" or self.sequence_steps > 0, "hybrid", "user_model", self.user_model,
               "needs the sequence model: set hybrid.sequence_steps > 0 (or another user_model)")
        _check(all(n >= 0 for n in self.few_shot), "hybrid", "few_shot", self.few_shot, "counts must be >= 0")
