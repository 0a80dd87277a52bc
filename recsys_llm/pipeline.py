"""The pipeline's stages, each reading its inputs from and writing its artifact to a run directory.

Stages, in order (each can be rerun alone; later stages only read earlier artifacts)::

    prepare        raw files -> data/*.parquet, splits/*.parquet, text/*.jsonl, config.json
    finetune       splits + text -> encoder/ (LoRA adapter + encoder.json + train_log.jsonl)
    embed          encoder -> embeddings/{item_emb,item_ids,user_emb,user_ids}.npy (+ embeddings_zeroshot/)
    build_index    embeddings -> index/{index.faiss,index.json}
    retrieve       index + user embeddings -> candidates/{warm,cold}.npz (seen items filtered)
    train_reranker candidates of training prefixes -> reranker/ (adapter + head + reranker.json)
    rerank         candidates + reranker -> ranked/{warm,cold}.npz
    evaluate       everything above + popularity -> report.json, report.md

Example:
    >>> from recsys_llm.config import PipelineConfig
    >>> from recsys_llm import pipeline
    >>> cfg = PipelineConfig().override({"train.max_steps": 5})  # doctest: +SKIP
    >>> pipeline.run_all(cfg, "runs/demo")                         # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_llm.config import PipelineConfig
from recsys_llm.data.io import load_dataset
from recsys_llm.data.schema import Dataset
from recsys_llm.data.splits import Split, histories, make_split, targets, test_histories
from recsys_llm.io_utils import (
    atomic_save_npy,
    atomic_save_npz,
    atomic_write_json,
    atomic_write_text,
    load_json,
    load_npy,
)
from recsys_llm.text.templates import history_text, item_texts, user_texts

logger = logging.getLogger(__name__)

SLICES = ("warm", "cold-item", "cold-user")
MODEL_NAMES = {
    "popularity": "popularity",
    "zeroshot": "zero-shot backbone",
    "retrieval": "fine-tuned retrieval",
    "rerank": "fine-tuned + rerank",
    "pooling": "fine-tuned, pooled user",
    "hybrid": "hybrid (text + collaborative)",
    "hybrid_cf": "ID only (hybrid's collaborative part)",
}


# ----------------------------------------------------------------------------------------------- run dir
@dataclass
class RunDir:
    """Paths of every artifact in a run directory (one place, so stages agree on names)."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    config = property(lambda self: self.root / "config.json")
    data = property(lambda self: self.root / "data")
    splits = property(lambda self: self.root / "splits")
    text = property(lambda self: self.root / "text")
    encoder = property(lambda self: self.root / "encoder")
    reranker = property(lambda self: self.root / "reranker")
    index = property(lambda self: self.root / "index")
    candidates = property(lambda self: self.root / "candidates")
    ranked = property(lambda self: self.root / "ranked")
    coldstart = property(lambda self: self.root / "coldstart")  # items added/updated/retired after prepare
    hybrid = property(lambda self: self.root / "hybrid")  # user-pooling model + collaborative fusion
    timings = property(lambda self: self.root / "timings.json")

    def embeddings(self, zero_shot: bool = False) -> Path:
        return self.root / ("embeddings_zeroshot" if zero_shot else "embeddings")

    def require(self, path: Path, stage: str) -> Path:
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; run `recsys-llm {stage} --run-dir {self.root}` first")
        return path

    def load_config(self) -> PipelineConfig:
        self.require(self.config, "prepare")
        return PipelineConfig.load(self.config)


@dataclass
class Context:
    """What most stages need: config, data set, split and texts, loaded once from the run dir."""

    run: RunDir
    cfg: PipelineConfig
    ds: Dataset
    split: Split

    @classmethod
    def load(cls, run_dir: str | Path) -> Context:
        run = RunDir(Path(run_dir))
        cfg = run.load_config()
        ds = Dataset.load(run.require(run.data, "prepare"))
        split = Split.load(run.require(run.splits, "prepare"))
        return cls(run, cfg, ds, split)

    @property
    def titles(self) -> list[str]:
        return self.ds.items["title"].astype(str).tolist()

    def item_texts(self) -> list[str]:
        return item_texts(self.ds.items, self.cfg.text.item_template)

    def known_histories(self) -> list[np.ndarray]:
        """What each user is known to have done at test time (train then valid), oldest first."""
        return test_histories(self.split)

    def user_texts(self) -> list[str]:
        return user_texts(self.known_histories(), self.titles, self.cfg.text.user_max_items)


def _record_time(run: RunDir, stage: str, seconds: float) -> None:
    timings = load_json(run.timings) if run.timings.exists() else {}
    timings[stage] = round(seconds, 2)
    atomic_write_json(run.timings, timings)
    logger.info("stage %s done in %.1f s", stage, seconds)


def _timed(stage: str):
    def deco(fn):
        def wrapper(run_dir, *args, **kwargs):
            t0 = time.perf_counter()
            out = fn(run_dir, *args, **kwargs)
            name = f"{stage}-zeroshot" if kwargs.get("zero_shot") else stage  # both embeddings are timed
            _record_time(RunDir(Path(run_dir)), name, time.perf_counter() - t0)
            return out

        wrapper.__doc__, wrapper.__name__ = fn.__doc__, fn.__name__
        return wrapper

    return deco


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    import json

    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# ----------------------------------------------------------------------------------------------- stages
def prepare(cfg: PipelineConfig, run_dir: str | Path) -> Context:
    """Load raw data into the canonical schema, split it, render texts; write config.json."""
    t0 = time.perf_counter()
    run = RunDir(Path(run_dir))
    run.root.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(cfg.data)
    split = make_split(ds, cfg.split)
    ds.save(run.data)
    split.save(run.splits)
    cfg.save(run.config)
    ctx = Context(run, cfg, ds, split)
    texts = ctx.item_texts()
    _write_jsonl(run.text / "items.jsonl", [{"item": i, "text": t} for i, t in enumerate(texts)])
    _write_jsonl(run.text / "users.jsonl", [{"user": u, "text": t} for u, t in enumerate(ctx.user_texts())])
    _record_time(run, "prepare", time.perf_counter() - t0)
    return ctx


@_timed("finetune")
def finetune(run_dir: str | Path, resume: bool = False) -> None:
    """LoRA-fine-tune the two-tower encoder on (user history text -> next item text) training pairs.

    With ``train.eval_every > 0`` the validation split (each user's validation item, ranked from their training
    history) is evaluated during training and the best adapter kept in ``encoder/best/``; with
    ``train.checkpoint_every > 0`` checkpoints go to ``encoder/checkpoints/`` and ``resume=True`` continues
    from the latest one.
    """
    from recsys_llm.encoder.model import TwoTowerEncoder
    from recsys_llm.train.pairs import build_pairs
    from recsys_llm.train.two_tower import ValidationSet, train_two_tower

    ctx = Context.load(run_dir)
    cfg = ctx.cfg
    pairs = build_pairs(histories(ctx.split.train, ctx.split.n_users), ctx.titles, cfg.text.user_max_items,
                        cfg.train.min_history, cfg.train.pairs_per_user)
    logger.info("%d training pairs from %d users", len(pairs.pos_items), len(set(pairs.users.tolist())))
    valid = None
    if cfg.train.eval_every > 0:
        train_hist = histories(ctx.split.train, ctx.split.n_users)
        users, tg = validation_users(ctx.split, train_hist, cfg.eval.max_users, cfg.eval.seed)
        valid = ValidationSet([history_text(train_hist[u], ctx.titles, cfg.text.user_max_items) for u in users],
                              [tg[u] for u in users], seen=[train_hist[u] for u in users])
        logger.info("validating on %d users every %d steps", len(users), cfg.train.eval_every)
    encoder = TwoTowerEncoder.from_config(cfg.encoder, lora=True, device=cfg.train.device)
    train_two_tower(encoder, pairs, ctx.item_texts(), cfg.text, cfg.train, out_dir=ctx.run.encoder,
                    resume=resume, valid=valid)
    encoder.save(ctx.run.encoder)


def load_encoder(run: RunDir, device: str = "auto"):
    from recsys_llm.encoder.model import TwoTowerEncoder

    return TwoTowerEncoder.load(run.require(run.encoder, "finetune"), device=device)


@_timed("embed")
def embed(run_dir: str | Path, zero_shot: bool = False) -> None:
    """Encode every catalog item and every user (test-time history) with the fine-tuned or untuned encoder."""
    from recsys_llm.encoder.model import TwoTowerEncoder

    ctx = Context.load(run_dir)
    cfg = ctx.cfg
    if zero_shot:
        encoder = TwoTowerEncoder.from_config(cfg.encoder, lora=False, device=cfg.train.device)
    else:
        encoder = load_encoder(ctx.run, cfg.train.device)
    out = ctx.run.embeddings(zero_shot)
    item_emb = encoder.encode_items(ctx.item_texts(), cfg.text.item_max_tokens)
    user_emb = encoder.encode_users(ctx.user_texts(), cfg.text.user_max_tokens)
    atomic_save_npy(out / "item_emb.npy", item_emb)
    atomic_save_npy(out / "item_ids.npy", np.arange(len(item_emb), dtype=np.int64))
    atomic_save_npy(out / "user_emb.npy", user_emb)
    atomic_save_npy(out / "user_ids.npy", np.arange(len(user_emb), dtype=np.int64))
    cold_rows = ctx.run.coldstart / "items.parquet"
    if not zero_shot and cold_rows.exists():  # cold-start items follow the encoder, so a rebuilt index matches
        rows = pd.read_parquet(cold_rows)
        atomic_save_npy(ctx.run.coldstart / "item_emb.npy",
                        encoder.encode_items(item_texts(rows, cfg.text.item_template), cfg.text.item_max_tokens))
    fp = {"zero_shot": zero_shot, "encoder": _encoder_identity(encoder, cfg, zero_shot), "dim": encoder.dim,
          "data_fingerprint": ctx.ds.fingerprint(), "n_items": len(item_emb), "n_users": len(user_emb)}
    atomic_write_json(out / "embeddings.json", fp)


def _encoder_identity(encoder, cfg: PipelineConfig, zero_shot: bool) -> dict:
    ident = dict(encoder.fingerprint())
    if zero_shot:
        ident["adapter_sha256"] = None
    ident["item_template"] = cfg.text.item_template
    return ident


def load_embeddings(run: RunDir, zero_shot: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    folder = run.require(run.embeddings(zero_shot), "embed" + (" --zero-shot" if zero_shot else ""))
    meta = load_json(folder / "embeddings.json")
    return load_npy(folder / "item_emb.npy"), load_npy(folder / "user_emb.npy"), meta


def item_vectors(run: RunDir, item_emb: np.ndarray) -> np.ndarray:
    """Vectors of every item ever in the run (row = internal id): the prepared catalog, then cold-start
    items added or updated since (``coldstart/``; updates replace catalog rows)."""
    rows_file, emb_file = run.coldstart / "items.parquet", run.coldstart / "item_emb.npy"
    if not (rows_file.exists() and emb_file.exists()):
        return item_emb
    rows = pd.read_parquet(rows_file, columns=["item"])["item"].to_numpy(dtype=np.int64)
    emb = load_npy(emb_file)
    if len(emb) != len(rows) or emb.shape[1] != item_emb.shape[1]:
        raise ValueError(f"{emb_file}: {emb.shape} embeddings for {len(rows)} cold-start items of dim "
                         f"{item_emb.shape[1]}; rerun `recsys-llm embed --run-dir {run.root}`")
    vectors = np.zeros((max(len(item_emb), int(rows.max()) + 1), item_emb.shape[1]), dtype=np.float32)
    vectors[: len(item_emb)] = item_emb
    vectors[rows] = emb
    return vectors


def catalog_vectors(run: RunDir, item_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the index should hold: :func:`item_vectors` minus retired items. Row ``j`` is item ``ids[j]``."""
    vectors = item_vectors(run, item_emb)
    ids = np.arange(len(vectors), dtype=np.int64)
    retired_file = run.coldstart / "retired.npy"
    if retired_file.exists():
        keep = ~np.isin(ids, load_npy(retired_file))
        vectors, ids = vectors[keep], ids[keep]
    return vectors, ids


def _query_sample(user_emb: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded sample of ``n`` user embeddings (all when there are fewer): the queries of index tuning."""
    n = min(n, len(user_emb))
    return user_emb[np.sort(np.random.default_rng(seed).choice(len(user_emb), n, replace=False))]


@_timed("index")
def build_index(run_dir: str | Path) -> dict:
    """Index every item (catalog + cold-start, minus retired) with the configured backend and type.

    ``index.factory=auto`` picks the FAISS type by catalog size and memory budget; an approximate index gets
    the smallest ``nprobe``/``ef_search`` whose recall@K (K = the retrieval depth) against exact search on
    a sample of user embeddings reaches ``index.target_recall`` (unless set explicitly). The saved index
    records the encoder fingerprint, so embeddings from another encoder are refused at query time.

    Returns:
        The saved ``index.json`` content.
    """
    from recsys_llm.index.choose import index_from_config
    from recsys_llm.index.tuning import exact_neighbours, pick, search_param, sweep, use

    run = RunDir(Path(run_dir))
    cfg = run.load_config()
    item_emb, user_emb, meta = load_embeddings(run)
    vectors, ids = catalog_vectors(run, item_emb)
    index, reason = index_from_config(cfg.index, item_emb.shape[1], len(ids), milvus_uri=str(run.root / "milvus.db"))
    logger.info("index for %d items: %s", len(ids), reason)
    index.add(vectors, ids)
    tuned: dict = {}
    param = search_param(index)[0]
    if param and not (cfg.index.nprobe or cfg.index.ef_search) and len(user_emb):
        q = _query_sample(user_emb, cfg.index.tune_queries, cfg.eval.seed)
        k = min(candidate_depth(cfg), len(ids))
        truth = exact_neighbours(vectors, ids, q, k)
        rows = sweep(index, q, truth, k, stop_at=cfg.index.target_recall)  # stops at the first hit
        try:
            row = pick(rows, cfg.index.target_recall)
        except ValueError as e:  # unreachable: the sweep went through every value; keep the best
            logger.warning("%s; keeping the best setting measured", e)
            row = max(rows, key=lambda r: r.recall)
        use(index, row)
        tuned = {"param": param, "value": row.value, f"recall@{k}": round(row.recall, 4),
                 "queries": len(q), "target": cfg.index.target_recall}
        logger.info("tuned %s=%s: recall@%d %.4f vs exact", param, row.value, k, row.recall)
    index.metadata = {"encoder": meta["encoder"], "data_fingerprint": meta["data_fingerprint"],
                      "choice": reason, "tuned": tuned}
    index.save(run.index)
    return index.info()


def index_stats(run_dir: str | Path) -> dict:
    """What ``recsys-llm index stats`` prints: index.json plus bytes on disk and per item."""
    run = RunDir(Path(run_dir))
    folder = run.require(run.index, "index build")
    info = load_json(run.require(folder / "index.json", "index build"))
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    return {**info, "bytes_on_disk": size, "bytes_per_item": round(size / max(info["ntotal"], 1), 1)}


def evaluate_index(run_dir: str | Path, k: int = 10, n_queries: int = 1000, target: float | None = None,
                   apply: bool = False):
    """Recall@k against exact search and queries/s of the run's index, at each search setting.

    Queries are a seeded sample of the run's user embeddings; ground truth is numpy brute force over the
    vectors of exactly the items the index holds. With ``target`` the smallest setting reaching it is
    picked (and saved into the index with ``apply``).

    Returns:
        ``(rows, exact_qps, best)``: :class:`~recsys_llm.index.tuning.SweepRow` per setting, the brute-force
        queries/s on the same queries, and the picked row (None without ``target``).
    """
    from recsys_llm.index.exact import ExactIndex
    from recsys_llm.index.tuning import pick, sweep, timed_search, use

    run = RunDir(Path(run_dir))
    cfg = run.load_config()
    item_emb, user_emb, meta = load_embeddings(run)
    index = load_run_index(run, meta)
    vectors, ids = catalog_vectors(run, item_emb)
    held = index.ids
    keep = np.isin(ids, held)
    if keep.sum() != len(held):
        raise ValueError(f"{run.index} holds {len(held)} items but the run's embeddings cover "
                         f"{int(keep.sum())} of them; rebuild it (`recsys-llm index build`)")
    exact = ExactIndex(item_emb.shape[1])
    exact.add(vectors[keep], ids[keep])
    q = _query_sample(user_emb, n_queries, cfg.eval.seed)
    k = min(k, len(held))
    truth, exact_qps = timed_search(exact, q, k)
    rows = sweep(index, q, truth, k)  # one sweep serves the table and the pick
    best = None
    if target is not None:
        best = pick(rows, target)
        use(index, best)
        if apply:
            index.save(run.index)
    return rows, exact_qps, best


def load_run_index(run: RunDir, meta: dict):
    from recsys_llm.index.base import load_index

    cfg = run.load_config()
    return load_index(run.require(run.index, "index build"), use_gpu=cfg.index.use_gpu,
                      expected={"dim": meta["dim"], "metadata": {"encoder": meta["encoder"],
                                                                  "data_fingerprint": meta["data_fingerprint"]}})


def rerank_depth(cfg: PipelineConfig) -> int:
    """How deep the reranker scores: its serving depth and every depth the report sweeps."""
    return max([cfg.rerank.depth, *cfg.rerank.sweep_depths])


def candidate_depth(cfg: PipelineConfig) -> int:
    return max(max(cfg.eval.ks), rerank_depth(cfg) if cfg.rerank.enabled else 0)


def sample_users(users: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A sorted seeded sample of ``n`` of ``users`` (all of them when ``n`` is 0 or not smaller)."""
    if not n or len(users) <= n:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, n, replace=False))


def validation_users(split: Split, train_hist: list[np.ndarray], n: int, seed: int
                     ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Users with a validation item and a training history (a seeded sample of ``n``, 0 = all), and every
    user's validation targets: what the reranker and the hybrid validate on."""
    tg = targets(split.valid, split.n_users)
    users = np.array([u for u, t in enumerate(tg) if len(t) and len(train_hist[u])], dtype=np.int64)
    return sample_users(users, n, seed), tg


def slice_users(ctx: Context) -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
    """Users of each slice and their held-out items; a seeded sample of ``eval.max_users`` when set."""
    cfg, split = ctx.cfg, ctx.split
    warm = targets(split.test, split.n_users)
    n_train = np.bincount(split.train["user"].to_numpy(), minlength=split.n_users)
    parts = {
        "warm": warm,
        "cold-item": targets(split.cold, split.n_users),
        "cold-user": [t if n_train[u] <= cfg.eval.cold_user_max_train else t[:0] for u, t in enumerate(warm)],
    }
    out = {}
    for name, tg in parts.items():
        users = sample_users(np.array([u for u, t in enumerate(tg) if len(t)], dtype=np.int64), cfg.eval.max_users,
                             cfg.eval.seed)
        out[name] = (users, [tg[u] for u in users])
    return out


def slice_candidates(ctx: Context, slice_name: str) -> np.ndarray | None:
    """The candidate item set of a slice (None = the whole catalog)."""
    if slice_name == "cold-item" and ctx.cfg.eval.cold_candidates == "cold":
        return ctx.split.cold_items
    return None


def _dense_candidates(ctx: Context, item_emb: np.ndarray, user_emb: np.ndarray, index, slice_name: str,
                      users: np.ndarray, k: int):
    """Full-ranking candidates for one slice: the catalog index, or an index over cold items only."""
    from recsys_llm.index.faiss_index import FaissIndex
    from recsys_llm.retrieve import retrieve

    known = ctx.known_histories()
    cand = slice_candidates(ctx, slice_name)
    if cand is not None:
        index = FaissIndex(item_emb.shape[1], factory="Flat", use_gpu=ctx.cfg.index.use_gpu)
        index.add(item_emb[cand], cand)
    extra = outside_catalog(index, ctx.split.n_items)
    seen = [np.union1d(known[u], extra) if len(extra) else known[u] for u in users]
    return retrieve(index, user_emb[users], users, k, seen=seen)


def outside_catalog(index, n_items: int) -> np.ndarray:
    """Ids in ``index`` beyond the prepared catalog (cold-start items added since): evaluation and reranker
    training work on the prepared catalog and its split, so these are filtered like seen items."""
    ids = index.ids
    extra = ids[ids >= n_items]
    if len(extra):
        logger.info("%d items added after prepare are left out of evaluation and reranker training", len(extra))
    return extra


@_timed("retrieve")
def retrieve_candidates(run_dir: str | Path) -> None:
    """Top-K candidates per evaluated user from the saved index (seen items filtered), per slice."""
    ctx = Context.load(run_dir)
    item_emb, user_emb, meta = load_embeddings(ctx.run)
    index = load_run_index(ctx.run, meta)
    k = candidate_depth(ctx.cfg)
    for slice_name, (users, _) in slice_users(ctx).items():
        if len(users) == 0:
            continue
        cands = _dense_candidates(ctx, item_emb, user_emb, index, slice_name, users, k)
        cands.save(ctx.run.candidates / f"{slice_name}.npz")


def _prefix_examples(train_hist: list[np.ndarray], per_user: int, seed: int):
    """Training-data-only (user, prefix length) pairs: each prefix predicts the next training item.

    Up to ``per_user`` prefixes per user with at least one item before the positive, always including the
    last (the most recent, closest to test time); the rest drawn at random, seeded.
    """
    rng = np.random.default_rng(seed)
    users, cut = [], []
    for u, h in enumerate(train_hist):
        if len(h) < 2:
            continue
        cuts = np.arange(1, len(h))  # positive h[c] after the prefix h[:c]
        picked, earlier = cuts[-1:], cuts[:-1]
        if per_user > 1 and len(earlier):
            picked = np.union1d(picked, rng.choice(earlier, size=min(per_user - 1, len(earlier)), replace=False))
        users += [u] * len(picked)
        cut += picked.tolist()
    return np.asarray(users, dtype=np.int64), np.asarray(cut, dtype=np.int64)


@_timed("rerank-train")
def train_reranker(run_dir: str | Path) -> None:
    """Train the cross-encoder on hard negatives from the fine-tuned retriever's own candidates.

    Examples come from training data only: user text = a prefix of the training history, positive = the
    next training item, negatives = the retriever's top candidates for that text (every training item of the
    user excluded, so no false negatives). ``rerank.examples_per_user`` prefixes per user.

    With ``rerank.eval_every`` (or ``select_on_valid``) a seeded sample of ``rerank.valid_users`` users is
    held out as validation: text = training history, target = the validation item, candidates = the
    retriever's top ``rerank_depth`` for that text. Training keeps the best-validating weights;
    ``select_on_valid`` then picks (depth, fusion weight) from the sweep grid by validation NDCG@10 and
    writes ``reranker/selection.json``, which ``rerank apply`` uses.
    """
    from recsys_llm.rerank.cross_encoder import CrossEncoder
    from recsys_llm.rerank.train import RerankValidation, build_rerank_examples, train_cross_encoder
    from recsys_llm.retrieve import retrieve

    ctx = Context.load(run_dir)
    cfg = ctx.cfg
    rc = cfg.rerank
    train_hist = histories(ctx.split.train, ctx.split.n_users)
    users, cut = _prefix_examples(train_hist, rc.examples_per_user, rc.seed)
    texts = [history_text(train_hist[u][:c], ctx.titles, cfg.text.user_max_items) for u, c in zip(users, cut, strict=True)]
    positives = np.array([train_hist[u][c] for u, c in zip(users, cut, strict=True)], dtype=np.int64)
    _, _, meta = load_embeddings(ctx.run)
    encoder = load_encoder(ctx.run, cfg.train.device)
    index = load_run_index(ctx.run, meta)
    user_emb = encoder.encode_users(texts, cfg.text.user_max_tokens)
    extra = outside_catalog(index, ctx.split.n_items)
    exclude = [np.setdiff1d(np.union1d(train_hist[u], extra), [p]) for u, p in zip(users, positives, strict=True)]
    cands = retrieve(index, user_emb, users, rc.negative_pool, seen=exclude)
    examples = build_rerank_examples(texts, positives, cands.ids, exclude, rc, seed=rc.seed, n_items=ctx.split.n_items)
    logger.info("%d rerank training examples from %d users", len(texts), len(set(users.tolist())))
    valid = None
    if rc.eval_every > 0 or rc.select_on_valid:
        vusers, tg = validation_users(ctx.split, train_hist, rc.valid_users, rc.seed)
        vtexts = [history_text(train_hist[u], ctx.titles, cfg.text.user_max_items) for u in vusers]
        vc = retrieve(index, encoder.encode_users(vtexts, cfg.text.user_max_tokens, show_progress=False), vusers,
                      max(rerank_depth(cfg), 10), seen=[np.union1d(train_hist[u], extra) for u in vusers])
        valid = RerankValidation(vtexts, [tg[u] for u in vusers], vc.ids, vc.scores)
    model = CrossEncoder.from_config(cfg.encoder.backbone, rc, device=cfg.train.device)
    result = train_cross_encoder(model, examples, ctx.item_texts(), rc, device=cfg.train.device,
                                 out_dir=ctx.run.reranker, valid=valid)
    model.save(ctx.run.reranker)
    if rc.select_on_valid and valid is not None:
        depths = sorted({rc.depth, *rc.sweep_depths})
        weights = sorted({0.0, rc.fusion_weight, *rc.sweep_weights})
        grid = valid.grid(model, ctx.item_texts(), depths, weights)
        (depth, weight), best = max(grid.items(), key=lambda kv: (kv[1], -kv[0][1]))  # ties: less reranker
        sel = {"depth": depth, "weight": weight, "val_ndcg@10": best, "best_step": result.best_step,
               "val_retrieval_ndcg@10": valid.ndcg(valid.cand_ids), "users": len(valid.user_texts),
               "grid": [{"depth": d, "weight": w, "val_ndcg@10": v} for (d, w), v in grid.items()]}
        atomic_write_json(ctx.run.reranker / "selection.json", sel)
        logger.info("rerank selection on validation: depth %d, weight %.2f (NDCG@10 %.4f; retrieval %.4f)",
                    depth, weight, best, sel["val_retrieval_ndcg@10"])


@_timed("hybrid")
def fit_hybrid(run_dir: str | Path) -> dict:
    """Fit the user-pooling model and the collaborative fusion; choose both on validation users.

    Validation: each user's validation item, ranked over the catalog from their training history (training
    items filtered). Steps: (1) the pooling user model (:mod:`recsys_llm.encoder.user_pooling`) trains on
    training-history prefixes over the frozen fine-tuned item embeddings; (2) validation users are
    represented both ways, as text (history rendered and encoded) and pooled; (3) the collaborative model
    (``hybrid.cf_model``) is fitted on the training interactions; (4) for each user representation the fusion
    weight is chosen from ``hybrid.weights`` by validation NDCG@10 (:func:`recsys_llm.hybrid.select_weight`);
    ``hybrid.user_model=auto`` keeps the representation that is better over warm and cold validation together
    (:func:`_better_user_model`). The recency
    half-life of the collaborative query is chosen the same way from ``hybrid.cf_halflives``. Writes
    ``<run>/hybrid/`` (``hybrid.json`` with every grid, ``collaborative.safetensors``, ``user_pooling.*``).

    Returns:
        The ``hybrid.json`` record.
    """
    from recsys_llm.encoder.user_pooling import encode_histories, fit_pooling
    from recsys_llm.hybrid import (
        HybridModel,
        bridge_scores,
        fit_collaborative,
        item_trust,
        ndcg_at,
        select_weight,
        text_neighbours,
    )

    ctx = Context.load(run_dir)
    cfg, hc, split = ctx.cfg, ctx.cfg.hybrid, ctx.split
    item_emb, _, meta = load_embeddings(ctx.run)
    train_hist = histories(split.train, split.n_users)
    vusers, tg = validation_users(split, train_hist, hc.valid_users, hc.seed)
    if len(vusers) == 0:
        raise ValueError(f"{ctx.run.splits}: no user has both training and validation interactions, so the "
                         "hybrid cannot be validated; use a leave_last_out split or set hybrid.enabled=false")
    vhist, vtg = [train_hist[u] for u in vusers], [tg[u] for u in vusers]
    warm_items = np.unique(split.train["item"].to_numpy(dtype=np.int64))
    pool, pool_info = fit_pooling(item_emb, train_hist, steps=hc.pooling_steps, batch_size=hc.pooling_batch_size,
                                  lr=hc.pooling_lr, max_items=hc.pooling_max_items, seed=hc.seed,
                                  allowed_items=warm_items, device="cpu", valid=(vhist, vtg))
    pool.save(ctx.run.hybrid, metadata={"encoder": meta["encoder"], "data_fingerprint": meta["data_fingerprint"]})
    encoder = load_encoder(ctx.run, cfg.train.device)
    vtexts = [history_text(h, ctx.titles, cfg.text.user_max_items) for h in vhist]
    users_by = {"text": encoder.encode_users(vtexts, cfg.text.user_max_tokens, show_progress=False),
                "pooling": encode_histories(pool, item_emb, vhist)}
    cf = None if hc.cf_model == "none" else fit_collaborative(hc.cf_model, split.train, split.n_users, split.n_items)
    halflives = [0.0] if cf is None else sorted({float(h) for h in hc.cf_halflives})
    confidences = sorted({float(c) for c in hc.cf_confidences})
    bridge_grid = sorted({float(g) for g in hc.bridge_weights})
    neighbours = None
    if cf is not None and max(bridge_grid) > 0:
        neighbours = text_neighbours(item_emb, cf.counts, hc.bridge_neighbours, hc.bridge_temperature)
    no_trust = np.zeros(split.n_items, np.float32)
    # the cold-item slice ranks a user's item among the cold items only; the bridge is chosen the same way:
    # every item treated as cold, the validation item ranked among a fixed seeded sample of the catalog
    # (as many as the cold items, at least 10%) plus itself
    n_pool = max(len(split.cold_items), split.n_items // 10, 1)
    pool_items = np.random.default_rng(hc.seed).choice(warm_items, min(n_pool, len(warm_items)), replace=False)
    cold_excl = [np.union1d(h, np.setdiff1d(np.arange(split.n_items), np.union1d(pool_items, t)))
                 for h, t in zip(vhist, vtg, strict=True)]
    grids: dict = {}  # user model -> half-life -> confidence -> weight -> NDCG@10 (warm validation)
    cold_grids: dict = {}  # user model -> half-life -> bridge weight -> NDCG@10 (every item treated as cold)
    best: dict[str, dict] = {}
    for name, u in users_by.items():
        dense = u @ item_emb.T  # (users, items)
        grids[name], cold_grids[name] = {}, {}
        if cf is None:
            v = float(np.nanmean(ndcg_at(dense, vtg, vhist)))
            grids[name]["0.0"] = {"0.0": {0.0: v}}
            best[name] = {"ndcg@10": v, "halflife": 0.0, "weight": 0.0, "confidence": 0.0, "bridge": 0.0}
            continue
        for hl in halflives:
            collab = cf.score(vhist, halflife=hl)
            bridged = None if neighbours is None else bridge_scores(neighbours, collab)
            g, cold = select_weight(dense, collab, no_trust, vtg, cold_excl, bridge_grid, hc.fusion, bridged=bridged,
                                    vary="bridge")  # all items cold: text + bridge only
            cold_grids[name][str(hl)] = cold
            grids[name][str(hl)] = {}
            for c in confidences:
                trust = item_trust(cf.counts, c, split.n_items)
                w, grid = select_weight(dense, collab, trust, vtg, vhist, hc.weights, hc.fusion, bridged=bridged,
                                        bridge_weight=g)
                grids[name][str(hl)][str(c)] = grid
                if name not in best or grid[w] > best[name]["ndcg@10"]:
                    best[name] = {"ndcg@10": grid[w], "halflife": hl, "weight": w, "confidence": c, "bridge": g,
                                  "cold_ndcg@10": cold[g], "cold_text_only": cold[min(cold)]}
    user_model = hc.user_model if hc.user_model != "auto" else _better_user_model(best)
    b = best[user_model]
    info = {"valid_users": len(vusers), "chosen_by": "config" if hc.user_model != "auto" else "validation",
            "valid_ndcg@10": {n: {hl: {c: {str(w): v for w, v in g.items()} for c, g in by_c.items()}
                                  for hl, by_c in by_hl.items()} for n, by_hl in grids.items()},
            "cold_sim_ndcg@10": {n: {hl: {str(g): v for g, v in gr.items()} for hl, gr in by_hl.items()}
                                 for n, by_hl in cold_grids.items()},
            "best": best, "pooling": pool_info, "embeddings": meta["encoder"],
            "data_fingerprint": meta["data_fingerprint"]}
    model = HybridModel(cf, b["weight"], b["confidence"], hc.fusion, user_model, b["halflife"], info,
                        neighbours if b["bridge"] > 0 else None, b["bridge"])
    model.save(ctx.run.hybrid)
    plain = grids[user_model][str(halflives[0])][str(confidences[0])] if cf is not None else {}
    score, halflife, weight = b["ndcg@10"], b["halflife"], b["weight"]
    text_only, cf_only = plain.get(0.0, float("nan")), plain.get(1.0, float("nan"))
    logger.info("hybrid: %s users, %s weight %.2f, half-life %g, confidence %g, bridge %.2f (validation NDCG@10 "
                "%.4f; text only %.4f, plain %s only %.4f)", user_model, hc.cf_model, weight, halflife, b["confidence"],
                b["bridge"], score, text_only, hc.cf_model, cf_only)
    return load_json(ctx.run.hybrid / "hybrid.json")


def _better_user_model(best: dict[str, dict]) -> str:
    """``hybrid.user_model=auto``: warm and cold count equally. Each representation scores its validation
    NDCG@10 relative to the best representation, warm (the fused model) plus all-items-cold (text + bridge)."""
    def rel(key: str) -> dict[str, float]:
        top = max(b.get(key, 0.0) for b in best.values()) or 1.0
        return {n: b.get(key, 0.0) / top for n, b in best.items()}

    warm, cold = rel("ndcg@10"), rel("cold_ndcg@10")
    return max(best, key=lambda n: (warm[n] + cold[n], warm[n]))


def load_hybrid(run: RunDir):
    """(HybridModel, PoolingUserModel) of a run, checked against its current embeddings."""
    from recsys_llm.encoder.user_pooling import PoolingUserModel
    from recsys_llm.hybrid import HybridModel

    model = HybridModel.load(run.require(run.hybrid, "hybrid"))
    meta = load_json(run.embeddings() / "embeddings.json")
    if model.info.get("embeddings") != meta["encoder"] or model.info.get("data_fingerprint") != meta["data_fingerprint"]:
        raise ValueError(f"{run.hybrid} was fitted on other embeddings than {run.embeddings()}; rerun "
                         f"`recsys-llm hybrid --run-dir {run.root}`")
    return model, PoolingUserModel.load(run.hybrid)


def rerank_setting(run: RunDir, cfg: PipelineConfig) -> tuple[int, float]:
    """(depth, fusion weight) ``rerank apply`` uses: chosen on validation when ``select_on_valid``."""
    sel = run.reranker / "selection.json"
    if cfg.rerank.select_on_valid and sel.exists():
        s = load_json(sel)
        return int(s["depth"]), float(s["weight"])
    return cfg.rerank.depth, cfg.rerank.fusion_weight


@_timed("rerank")
def rerank(run_dir: str | Path) -> None:
    """Rerank the top `rerank.depth` candidates of every slice with the trained cross-encoder.

    The cross-encoder scores every candidate down to :func:`rerank_depth` once; ``ranked/<slice>.npz`` is
    the list at ``rerank.depth`` with ``rerank.fusion_weight``, and ``ranked/<slice>.scores.npz`` keeps the
    retrieval and rerank scores of every candidate, so the report can sweep depth and fusion weight
    without scoring again.
    """
    from recsys_llm.rerank.base import reorder
    from recsys_llm.rerank.cross_encoder import CrossEncoder
    from recsys_llm.retrieve import Candidates

    ctx = Context.load(run_dir)
    model = CrossEncoder.load(ctx.run.require(ctx.run.reranker, "rerank train"),
                              device=ctx.cfg.train.device).for_scoring(ctx.cfg.rerank.quantize)
    texts, item_txt = ctx.user_texts(), ctx.item_texts()
    for slice_name in SLICES:
        path = ctx.run.candidates / f"{slice_name}.npz"
        if not path.exists():
            continue
        cands = Candidates.load(path)
        ce = model.score_candidates([texts[u] for u in cands.users], cands.ids, item_txt, depth=rerank_depth(ctx.cfg))
        scores, ids = reorder(cands.ids, cands.scores, ce, *rerank_setting(ctx.run, ctx.cfg))
        Candidates(users=cands.users, ids=ids, scores=scores).save(ctx.run.ranked / f"{slice_name}.npz")
        atomic_save_npz(ctx.run.ranked / f"{slice_name}.scores.npz", users=cands.users, ids=cands.ids,
                        retrieval=cands.scores, rerank=ce)


# ----------------------------------------------------------------------------------------------- evaluate
@_timed("evaluate")
def evaluate(run_dir: str | Path) -> list:
    """Every model (baselines, zero-shot, fine-tuned retrieval, rerank) on every slice; see `recsys_llm.compare`."""
    from recsys_llm.compare import compare_run

    return compare_run(run_dir)


def run_all(cfg: PipelineConfig, run_dir: str | Path) -> list:
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
        rerank(run_dir)
    return evaluate(run_dir)
