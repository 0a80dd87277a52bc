"""The models a report compares, as score functions over the catalog, and how their lists are ranked.

Every model that can score any item is a :data:`~recsys_llm.protocol.ScoreFn` (``users (b,) -> (b, n_items)``):
the classic baselines, the untuned backbone, fine-tuned retrieval, the pooled and the sequence user, the hybrid
and its collaborative part. Lists that stages already wrote (dense candidates, reranked candidates) are read back;
the **served** row is ranked by the :class:`~recsys_llm.serve.recommender.Recommender` itself.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recsys_llm.artifacts import check_embeddings, load_embeddings, load_hybrid
from recsys_llm.classic.from_config import baseline_scorer
from recsys_llm.protocol import CHUNK, ScoreFn
from recsys_llm.retrieve import Candidates
from recsys_llm.run import ArtifactError, Context, read_npy, reading
from recsys_llm.serve.recommender import Recommender

logger = logging.getLogger(__name__)

MODEL_NAMES = {
    "popularity": "popularity",
    "zeroshot": "zero-shot backbone",
    "retrieval": "fine-tuned retrieval",
    "rerank": "fine-tuned + rerank",
    "pooling": "fine-tuned, pooled user",
    "sequence": "fine-tuned, sequence user",
    "hybrid": "hybrid (text + collaborative)",
    "hybrid_cf": "ID only (hybrid's collaborative part)",
    "served": "served",
}
BASELINE_NAMES = {"random": "random", "popularity": "most popular", "itemknn": "ItemKNN", "ease": "EASE",
                  "ease_recency": "EASE, recency-weighted query", "sasrec": "SASRec",
                  "bm25": "BM25 (item text)", "zeroshot": MODEL_NAMES["zeroshot"]}
OURS = ("retrieval", "rerank", "pooling", "sequence", "hybrid", "hybrid_cf", "served")


def display(key: str) -> str:
    """The report's name of a model key."""
    return BASELINE_NAMES.get(key) or MODEL_NAMES.get(key, key)


def score_functions(ctx: Context) -> dict[str, ScoreFn]:
    """Dense scorers of every model that can score any item: classic baselines, zero-shot and fine-tuned."""
    cfg, split = ctx.cfg, ctx.split
    query_hist = ctx.known_histories()  # what the model may use at test time: train + valid
    texts = ctx.item_texts()
    fns: dict[str, ScoreFn] = {}
    finetuned = None
    for key, zero_shot in (("zeroshot", True), ("retrieval", False)):
        if ctx.run.embeddings(zero_shot).exists():
            items, users_emb, meta = load_embeddings(ctx.run, zero_shot=zero_shot)
            check_embeddings(ctx, items, users_emb, meta)
            fns[key] = (lambda users, i=items, u=users_emb: u[users] @ i.T)  # (b, n_items)
            if not zero_shot:
                finetuned = items, users_emb
    if (ctx.run.hybrid / "hybrid.json").exists() and finetuned is not None:
        hybrid, _, sequence = load_hybrid(ctx.run)
        items, text_users = finetuned
        stored = {"text": text_users}
        for model in ("pooling", "sequence") if sequence is not None else ("pooling",):
            stored[model] = read_npy(ctx.run, *ctx.run.user_vectors(model), ndim=2, rows=len(query_hist))
            fns[model] = (lambda users, v=stored[model]: v[users] @ items.T)  # dense retrieval, this user model
        dense_users = stored[hybrid.user_model]
        if hybrid.cf is not None:  # the hybrid's collaborative part alone: the ID-only model at its best
            fns["hybrid_cf"] = (lambda users: hybrid.cf.score([query_hist[u] for u in users], ctx.split.n_items,
                                                              halflife=hybrid.halflife))
        fns["hybrid"] = (lambda users: hybrid.score(dense_users[users] @ items.T, [query_hist[u] for u in users]))
    # baselines last: fitting them writes baselines/*.json, so every run artifact above is read (and a damaged
    # one refused) before anything is written; the report still lists them first
    base: dict[str, ScoreFn] = {}
    for name in cfg.eval.baselines:  # tuned on validation users (eval.tune_baselines); fitted on split.train
        base[name] = baseline_scorer(name, split, cfg.eval, texts, query_hist, ctx.run.root / "baselines")
    return {**base, **fns}


def constant_over(fn: ScoreFn, users: np.ndarray, cand: np.ndarray, n: int = 256) -> bool:
    """True when ``fn`` gives every candidate the same score for (a sample of) the users: an ID-based model on
    cold items, which the report then labels instead of letting its random tie order pass as a result."""
    s = fn(users[:n])[:, np.asarray(cand, dtype=np.int64)]
    return bool(np.all(s.max(axis=1) - s.min(axis=1) <= 1e-9))


def sampled_pools(users: np.ndarray, tg: list[np.ndarray], seen: list[np.ndarray], n_items: int, n_neg: int,
                  cand: np.ndarray | None, seed: int) -> list[np.ndarray]:
    """Per user: the held-out items plus ``n_neg`` items drawn uniformly from the unseen, non-target items."""
    rng = np.random.default_rng(seed)
    universe = np.arange(n_items, dtype=np.int64) if cand is None else np.asarray(cand, dtype=np.int64)
    pools = []
    for t, s in zip(tg, seen, strict=True):
        free = np.setdiff1d(universe, np.concatenate([t, s]))
        neg = rng.choice(free, size=min(n_neg, len(free)), replace=False)
        pools.append(np.concatenate([t, neg]))
    return pools


def rank_sampled(fn: ScoreFn, users: np.ndarray, pools: list[np.ndarray], k: int, perm: np.ndarray) -> np.ndarray:
    """Each user's pool ordered by the model's score (ties in ``perm`` order), padded with -1 to width k."""
    inv = np.argsort(perm)
    width = max(k, max((len(p) for p in pools), default=0))
    out = np.full((len(users), width), -1, dtype=np.int64)
    for s in range(0, len(users), CHUNK):
        scores = fn(users[s : s + CHUNK])
        for r, pool in enumerate(pools[s : s + CHUNK]):
            order = np.lexsort((inv[pool], -scores[r, pool]))
            out[s + r, : len(pool)] = pool[order]
    return out


def ranked_from_file(ctx: Context, path: Path, users: np.ndarray, k: int) -> np.ndarray | None:
    """The first ``k`` ids of a stage's list file for exactly these users (None when the stage did not run)."""
    if not path.exists():
        return None
    stage = "retrieve" if path.parent.name == "candidates" else "rerank apply"
    with reading(ctx.run, path, stage):
        cands = Candidates.load(path)
    if not np.array_equal(cands.users, users):
        raise ArtifactError(path, "made for other users than this evaluation's slice", stage, ctx.run.root)
    if cands.ids.max(initial=-1) >= ctx.split.n_items:
        raise ArtifactError(path, f"holds item id {cands.ids.max()} but the catalog has {ctx.split.n_items} items",
                            stage, ctx.run.root)
    if cands.k < k:
        raise ArtifactError(path, f"has {cands.k} candidates per user, fewer than max(eval.ks)={k}", stage,
                            ctx.run.root)
    return cands.ids[:, :k]


def served_lists(rec: Recommender, users: np.ndarray, k: int, cand: np.ndarray | None, path: Path) -> np.ndarray:
    """What the Recommender serves these known users (their known history filtered), within ``cand``
    (None: the prepared catalog); saved to ``path`` (``ranked/served-<slice>.npz``) so anyone can check that
    ``recsys-llm recommend`` gives the same lists."""
    cand = np.arange(rec.n_items, dtype=np.int64) if cand is None else cand
    r = rec.rank(users=users, k=k, candidates=cand)
    Candidates(users, r.ids, r.scores).save(path)
    return r.ids
