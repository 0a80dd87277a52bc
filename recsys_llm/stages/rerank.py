"""Stages ``rerank train`` and ``rerank apply``: the cross-encoder, trained on the retriever's hard negatives.

``rerank train`` learns from training data only; the depth and fusion weight it is served with are chosen on
validation by ``select`` (:mod:`recsys_llm.stages.select`), together with the first stage. ``rerank apply``
reorders each slice's dense candidates at the setting validation chose for dense retrieval (the report's
"fine-tuned + rerank" row) and keeps every candidate's scores for the report's depth x weight sweep.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recsys_llm.artifacts import load_embeddings, load_encoder, load_reranker, load_run_index, outside_catalog
from recsys_llm.config import PipelineConfig
from recsys_llm.data.splits import histories
from recsys_llm.io_utils import atomic_save_npz
from recsys_llm.protocol import SLICES, rerank_depth, validation_users
from recsys_llm.rerank.base import reorder
from recsys_llm.rerank.cross_encoder import CrossEncoder
from recsys_llm.rerank.train import RerankValidation, build_rerank_examples, train_cross_encoder
from recsys_llm.retrieve import Candidates, retrieve
from recsys_llm.run import Context, RunDir, read_json, reading, timed
from recsys_llm.text.templates import history_text

logger = logging.getLogger(__name__)


def prefix_examples(train_hist: list[np.ndarray], per_user: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
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


def _validation(ctx: Context, encoder, index, train_hist: list[np.ndarray], extra: np.ndarray) -> RerankValidation:
    """Held-out users for early stopping: training history -> validation item, dense candidates."""
    cfg = ctx.cfg
    vusers, tg = validation_users(ctx.split, train_hist, cfg.rerank.valid_users, cfg.rerank.seed)
    vtexts = [history_text(train_hist[u], ctx.titles, cfg.text.user_max_items) for u in vusers]
    vc = retrieve(index, encoder.encode_users(vtexts, cfg.text.user_max_tokens, show_progress=False), vusers,
                  max(rerank_depth(cfg), 10), seen=[np.union1d(train_hist[u], extra) for u in vusers])
    return RerankValidation(vtexts, [tg[u] for u in vusers], vc.ids, vc.scores)


@timed("rerank-train")
def train_reranker(run_dir: str | Path) -> None:
    """Train the cross-encoder on hard negatives from the fine-tuned retriever's own candidates.

    Examples come from training data only: user text = a prefix of the training history, positive = the
    next training item, negatives = the retriever's top candidates for that text (every training item of the
    user excluded, so no false negatives). ``rerank.examples_per_user`` prefixes per user. With
    ``rerank.eval_every`` a seeded sample of ``rerank.valid_users`` users is held out (training history ->
    validation item) and the best-validating weights are kept.
    """
    ctx = Context.load(run_dir)
    cfg, rc = ctx.cfg, ctx.cfg.rerank
    train_hist = histories(ctx.split.train, ctx.split.n_users)
    users, cut = prefix_examples(train_hist, rc.examples_per_user, rc.seed)
    texts = [history_text(train_hist[u][:c], ctx.titles, cfg.text.user_max_items) for u, c in zip(users, cut, strict=True)]
    positives = np.array([train_hist[u][c] for u, c in zip(users, cut, strict=True)], dtype=np.int64)
    _, _, meta = load_embeddings(ctx.run)
    encoder = load_encoder(ctx.run, cfg.train.device)
    index = load_run_index(ctx.run, meta, cfg.index.use_gpu)
    extra = outside_catalog(index, ctx.split.n_items)
    exclude = [np.setdiff1d(np.union1d(train_hist[u], extra), [p]) for u, p in zip(users, positives, strict=True)]
    cands = retrieve(index, encoder.encode_users(texts, cfg.text.user_max_tokens), users, rc.negative_pool,
                     seen=exclude)
    examples = build_rerank_examples(texts, positives, cands.ids, exclude, rc, seed=rc.seed, n_items=ctx.split.n_items)
    logger.info("%d rerank training examples from %d users", len(texts), len(set(users.tolist())))
    valid = _validation(ctx, encoder, index, train_hist, extra) if rc.eval_every > 0 else None
    model = CrossEncoder.from_config(cfg.encoder.backbone, rc, device=cfg.train.device)
    train_cross_encoder(model, examples, ctx.item_texts(), rc, device=cfg.train.device, out_dir=ctx.run.reranker,
                        valid=valid)
    model.save(ctx.run.reranker)


def dense_rerank_setting(run: RunDir, cfg: PipelineConfig) -> tuple[int, float, bool]:
    """``(depth, weight, chosen_on_validation)`` for reranking dense candidates: what ``select`` chose for the
    dense first stage (``served.json``), else the configured ``rerank.depth`` / ``rerank.fusion_weight``."""
    if run.served.exists():
        chosen = read_json(run, run.served, "select").get("validation", {}).get("dense_rerank")
        if chosen:
            return int(chosen["depth"]), float(chosen["weight"]), True
    return cfg.rerank.depth, cfg.rerank.fusion_weight, False


@timed("rerank")
def rerank(run_dir: str | Path, backend: str | None = None) -> None:
    """Rerank every slice's dense candidates with the trained cross-encoder.

    The cross-encoder scores every candidate down to :func:`~recsys_llm.protocol.rerank_depth` once;
    ``ranked/<slice>.npz`` is the list at :func:`dense_rerank_setting`, and ``ranked/<slice>.scores.npz`` keeps
    the retrieval and rerank scores of every candidate, so the report can sweep depth and fusion weight
    without scoring again. ``backend`` overrides the run's ``encoder.backend`` (``onnx``: the exported graph).
    """
    ctx = Context.load(run_dir)
    if backend is not None:
        ctx.cfg.encoder.backend = backend
    model = load_reranker(ctx.run, ctx.cfg)
    texts, item_txt = ctx.user_texts(), ctx.item_texts()
    depth, weight, _ = dense_rerank_setting(ctx.run, ctx.cfg)
    for slice_name in SLICES:
        path = ctx.run.candidates / f"{slice_name}.npz"
        if not path.exists():
            continue
        with reading(ctx.run, path, "retrieve"):
            cands = Candidates.load(path)
        ce = model.score_candidates([texts[u] for u in cands.users], cands.ids, item_txt,
                                    depth=max(depth, rerank_depth(ctx.cfg)))
        scores, ids = reorder(cands.ids, cands.scores, ce, depth, weight)
        Candidates(users=cands.users, ids=ids, scores=scores).save(ctx.run.ranked / f"{slice_name}.npz")
        atomic_save_npz(ctx.run.ranked / f"{slice_name}.scores.npz", users=cands.users, ids=cands.ids,
                        retrieval=cands.scores, rerank=ce)
