"""Stage ``hybrid``: the user-pooling model and the text + collaborative fusion, every choice on validation.

Validation: each user's validation item, ranked over the catalog from their training history (training items
filtered). Steps: (1) the pooling user model (:mod:`recsys_llm.encoder.user_pooling`) trains on
training-history prefixes over the frozen fine-tuned item embeddings; (2) validation users are represented
both ways, as text (history rendered and encoded) and pooled; (3) the collaborative model (``hybrid.cf_model``)
is fitted on the training interactions with the setting its baseline row is tuned to (the same search, budget
and validation users: :func:`recsys_llm.classic.from_config.fit_baseline`, recency-weighted EASE for ``ease``),
so the hybrid starts from the tuned baseline rather than a default, and the tuned half-life joins the grid; (4) for each user representation, recency half-life, trust confidence
and fusion weight are chosen from their grids by validation NDCG@10 (:func:`recsys_llm.hybrid.select_weight`),
and the text-neighbour bridge on an all-items-cold version of the same users; ``hybrid.user_model=auto`` keeps
the representation that is better over warm and cold validation together (:func:`better_user_model`).
Writes ``<run>/hybrid/``: ``hybrid.json`` with every grid, ``collaborative.safetensors``, ``user_pooling.*`` and
``user_pooled.npy`` (every known user's pooled vector, what serving and the report read).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys_llm.artifacts import load_embeddings, load_encoder
from recsys_llm.classic.from_config import fit_baseline
from recsys_llm.config import HybridConfig, PipelineConfig
from recsys_llm.data.splits import Split, histories
from recsys_llm.encoder.user_pooling import encode_histories, fit_pooling
from recsys_llm.hybrid import (
    CollaborativeScorer,
    HybridModel,
    bridge_scores,
    fit_collaborative,
    item_trust,
    ndcg_at,
    select_weight,
    text_neighbours,
)
from recsys_llm.io_utils import atomic_save_npy, load_json
from recsys_llm.protocol import validation_users
from recsys_llm.run import ArtifactError, Context, timed
from recsys_llm.text.templates import history_text

logger = logging.getLogger(__name__)

POOLED_FILE = "user_pooled.npy"


@dataclass
class _Validation:
    """Validation users: training histories, validation targets, and the all-items-cold exclusions."""

    users: np.ndarray
    hist: list[np.ndarray]
    targets: list[np.ndarray]
    cold_excl: list[np.ndarray]


def _validation(ctx: Context, hc: HybridConfig, train_hist: list[np.ndarray], warm_items: np.ndarray) -> _Validation:
    split = ctx.split
    vusers, tg = validation_users(split, train_hist, hc.valid_users, hc.seed)
    if len(vusers) == 0:
        raise ArtifactError(ctx.run.splits, "no user has both training and validation interactions, so the "
                            "hybrid cannot be validated (use a leave_last_out split or set hybrid.enabled=false)",
                            "prepare", ctx.run.root)
    vhist, vtg = [train_hist[u] for u in vusers], [tg[u] for u in vusers]
    # the cold-item slice ranks a user's item among the cold items only; the bridge is chosen the same way:
    # every item treated as cold, the validation item ranked among a fixed seeded sample of the catalog
    # (as many as the cold items, at least 10%) plus itself
    n_pool = max(len(split.cold_items), split.n_items // 10, 1)
    pool_items = np.random.default_rng(hc.seed).choice(warm_items, min(n_pool, len(warm_items)), replace=False)
    cold_excl = [np.union1d(h, np.setdiff1d(np.arange(split.n_items), np.union1d(pool_items, t)))
                 for h, t in zip(vhist, vtg, strict=True)]
    return _Validation(vusers, vhist, vtg, cold_excl)


def _search(hc: HybridConfig, split: Split, name: str, dense: np.ndarray, cf: CollaborativeScorer | None,
            neighbours, val: _Validation) -> tuple[dict, dict, dict]:
    """Grids and best setting of one user representation: ``(warm grid, cold grid, best)``."""
    if cf is None:
        v = float(np.nanmean(ndcg_at(dense, val.targets, val.hist)))
        return ({"0.0": {"0.0": {0.0: v}}}, {},
                {"ndcg@10": v, "halflife": 0.0, "weight": 0.0, "confidence": 0.0, "bridge": 0.0})
    no_trust = np.zeros(split.n_items, np.float32)
    bridge_grid = sorted({float(g) for g in hc.bridge_weights})
    grids: dict = {}
    cold_grids: dict = {}
    best: dict = {}
    for hl in sorted({float(h) for h in hc.cf_halflives}):
        collab = cf.score(val.hist, halflife=hl)
        bridged = None if neighbours is None else bridge_scores(neighbours, collab)
        g, cold = select_weight(dense, collab, no_trust, val.targets, val.cold_excl, bridge_grid, hc.fusion,
                                bridged=bridged, vary="bridge")  # all items cold: text + bridge only
        cold_grids[str(hl)], grids[str(hl)] = cold, {}
        for c in sorted({float(c) for c in hc.cf_confidences}):
            trust = item_trust(cf.counts, c, split.n_items)
            w, grid = select_weight(dense, collab, trust, val.targets, val.hist, hc.weights, hc.fusion,
                                    bridged=bridged, bridge_weight=g)
            grids[str(hl)][str(c)] = grid
            if not best or grid[w] > best["ndcg@10"]:
                best = {"ndcg@10": grid[w], "halflife": hl, "weight": w, "confidence": c, "bridge": g,
                        "cold_ndcg@10": cold[g], "cold_text_only": cold[min(cold)]}
    logger.info("hybrid validation, %s users: NDCG@10 %.4f", name, best["ndcg@10"])
    return grids, cold_grids, best


def better_user_model(best: dict[str, dict]) -> str:
    """``hybrid.user_model=auto``: warm and cold count equally. Each representation scores its validation
    NDCG@10 relative to the best representation, warm (the fused model) plus all-items-cold (text + bridge)."""
    def rel(key: str) -> dict[str, float]:
        top = max(b.get(key, 0.0) for b in best.values()) or 1.0
        return {n: b.get(key, 0.0) / top for n, b in best.items()}

    warm, cold = rel("ndcg@10"), rel("cold_ndcg@10")
    return max(best, key=lambda n: (warm[n] + cold[n], warm[n]))


def _record(grids: dict, cold_grids: dict, best: dict, n_users: int, chosen_by: str, pool_info: dict,
            meta: dict) -> dict:
    return {"valid_users": n_users, "chosen_by": chosen_by,
            "valid_ndcg@10": {n: {hl: {c: {str(w): v for w, v in g.items()} for c, g in by_c.items()}
                                  for hl, by_c in by_hl.items()} for n, by_hl in grids.items()},
            "cold_sim_ndcg@10": {n: {hl: {str(g): v for g, v in gr.items()} for hl, gr in by_hl.items()}
                                 for n, by_hl in cold_grids.items()},
            "best": best, "pooling": pool_info, "embeddings": meta["encoder"],
            "data_fingerprint": meta["data_fingerprint"]}


CF_BASELINE = {"ease": "ease_recency", "itemknn": "itemknn"}
"""The baseline row whose tuned setting the hybrid's collaborative part takes."""


def _collaborative(cfg: PipelineConfig, split: Split) -> tuple[CollaborativeScorer | None, dict | None]:
    """The collaborative part, fitted with its baseline's tuned setting: ``(scorer, search record)``."""
    name = cfg.hybrid.cf_model
    if name == "none":
        return None, None
    result = fit_baseline(CF_BASELINE[name], split, cfg.eval)
    logger.info("hybrid collaborative part: %s %s", CF_BASELINE[name], result.note() or "defaults")
    cf = fit_collaborative(name, split.train, split.n_users, split.n_items, fitted=result.model)
    return cf, {"baseline": CF_BASELINE[name], "params": result.params, "valid_ndcg@10": result.valid_ndcg,
                "note": result.note()}


@timed("hybrid")
def fit_hybrid(run_dir: str | Path) -> dict:
    """Fit the user-pooling model and the collaborative fusion; choose both on validation users (module doc).

    Returns:
        The ``hybrid.json`` record.
    """
    ctx = Context.load(run_dir)
    cfg, hc, split = ctx.cfg, ctx.cfg.hybrid, ctx.split
    item_emb, _, meta = load_embeddings(ctx.run)
    train_hist = histories(split.train, split.n_users)
    warm_items = np.unique(split.train["item"].to_numpy(dtype=np.int64))
    val = _validation(ctx, hc, train_hist, warm_items)
    pool, pool_info = fit_pooling(item_emb, train_hist, steps=hc.pooling_steps, batch_size=hc.pooling_batch_size,
                                  lr=hc.pooling_lr, max_items=hc.pooling_max_items, seed=hc.seed,
                                  allowed_items=warm_items, device="cpu", valid=(val.hist, val.targets))
    pool.save(ctx.run.hybrid, metadata={"encoder": meta["encoder"], "data_fingerprint": meta["data_fingerprint"]})
    atomic_save_npy(ctx.run.hybrid / POOLED_FILE, encode_histories(pool, item_emb, ctx.known_histories()))
    encoder = load_encoder(ctx.run, cfg.train.device)
    vtexts = [history_text(h, ctx.titles, cfg.text.user_max_items) for h in val.hist]
    users_by = {"text": encoder.encode_users(vtexts, cfg.text.user_max_tokens, show_progress=False),
                "pooling": encode_histories(pool, item_emb, val.hist)}
    cf, cf_tuned = _collaborative(cfg, split)
    if cf_tuned and "halflife" in cf_tuned["params"]:
        hc.cf_halflives = sorted({*map(float, hc.cf_halflives), float(cf_tuned["params"]["halflife"])})
    neighbours = None
    if cf is not None and max(hc.bridge_weights) > 0:
        neighbours = text_neighbours(item_emb, cf.counts, hc.bridge_neighbours, hc.bridge_temperature)
    grids, cold_grids, best = {}, {}, {}
    for name, u in users_by.items():
        grids[name], cold_grids[name], best[name] = _search(hc, split, name, u @ item_emb.T, cf, neighbours, val)
    user_model = hc.user_model if hc.user_model != "auto" else better_user_model(best)
    b = best[user_model]
    info = _record(grids, cold_grids, best, len(val.users), "config" if hc.user_model != "auto" else "validation",
                   pool_info, meta)
    info["collaborative"] = cf_tuned
    model = HybridModel(cf, b["weight"], b["confidence"], hc.fusion, user_model, b["halflife"], info,
                        neighbours if b["bridge"] > 0 else None, b["bridge"])
    model.save(ctx.run.hybrid)
    logger.info("hybrid: %s users, %s weight %.2f, half-life %g, confidence %g, bridge %.2f (validation NDCG@10 "
                "%.4f)", user_model, hc.cf_model, b["weight"], b["halflife"], b["confidence"], b["bridge"],
                b["ndcg@10"])
    return load_json(ctx.run.hybrid / "hybrid.json")
