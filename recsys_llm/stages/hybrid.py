"""Stage ``hybrid``: the history user models and the text + collaborative fusion, every choice on validation.

Validation: each user's validation item, ranked over the catalog from their training history (training items
filtered). Steps: (1) the pooling user model (:mod:`recsys_llm.encoder.user_pooling`) and, with
``hybrid.sequence_steps > 0``, the sequence user model (:mod:`recsys_llm.encoder.user_sequence`) train on
training-history prefixes over the frozen fine-tuned item embeddings; (2) validation users are represented
every way: as text (history rendered and encoded), pooled, and sequence-encoded; (3) the collaborative model (``hybrid.cf_model``)
is fitted on the training interactions with the setting its baseline row is tuned to (the same search, budget
and validation users: :func:`recsys_llm.classic.from_config.fit_baseline`, recency-weighted EASE for ``ease``),
so the hybrid starts from the tuned baseline rather than a default, and the tuned half-life joins the grid; (4) for
each user representation, recency half-life, trust confidence and fusion weight are chosen from their grids by
validation NDCG@10, every setting scored on candidate lists with a bound that keeps it exact for full ranking
(:mod:`recsys_llm.hybrid.search`; ``hybrid.search_candidates=0``: :func:`recsys_llm.hybrid.fuse` over
the whole catalogue),
and the text-neighbour bridge on an all-items-cold version of the same users (:func:`cold_refit`: the
collaborative part refitted without any interaction of the items that validation treats as cold, so the bridge
borrows no evidence the cold-item test would not have); ``hybrid.user_model=auto`` keeps
the representation that is best over warm and cold validation together (:func:`better_user_model`).
Writes ``<run>/hybrid/``: ``hybrid.json`` with every grid, ``collaborative.safetensors``, ``user_pooling.*``,
``user_pooled.npy`` (every known user's pooled vector, what serving and the report read), and
``user_sequence.*`` + ``user_sequence.npy`` likewise for the sequence model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys_llm.artifacts import load_embeddings, load_encoder
from recsys_llm.classic.from_config import fit_baseline
from recsys_llm.config import HybridConfig, PipelineConfig
from recsys_llm.data.splits import Split, histories
from recsys_llm.encoder.user_pooling import encode_histories, fit_pooling
from recsys_llm.encoder.user_sequence import encode_sequences, fit_sequence
from recsys_llm.hybrid import (
    CollaborativeScorer,
    HybridModel,
    best_value,
    bridge_scores,
    candidate_set,
    fit_collaborative,
    fuse,
    fused_grid,
    item_trust,
    ndcg_at,
    text_neighbours,
)
from recsys_llm.hybrid.evidence import (
    choose_confidence,
    hide_beyond,
    pseudo_cold_exclusions,
    refit,
    without_items,
)
from recsys_llm.hybrid.lexical import LexicalScorer
from recsys_llm.io_utils import atomic_save_npy, load_json
from recsys_llm.protocol import validation_users
from recsys_llm.run import ArtifactError, Context, timed
from recsys_llm.text.templates import history_text

logger = logging.getLogger(__name__)

@dataclass
class Validation:
    """Validation users: training histories, validation targets, and the all-items-cold exclusions; the
    all-items-cold validation's own collaborative part and bridge neighbours (:func:`cold_refit`; None: the
    warm ones, as before the refit) and the items it treats as cold."""

    users: np.ndarray
    hist: list[np.ndarray]
    targets: list[np.ndarray]
    cold_excl: list[np.ndarray]
    cold_items: np.ndarray | None = None
    cold_cf: CollaborativeScorer | None = None
    cold_neighbours: sp.csr_matrix | None = None


def _validation(ctx: Context, hc: HybridConfig, train_hist: list[np.ndarray], warm_items: np.ndarray) -> Validation:
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
    return Validation(vusers, vhist, vtg, cold_excl, np.union1d(pool_items, np.concatenate(vtg)))


def cold_refit(hc: HybridConfig, split: Split, val: Validation, cf: CollaborativeScorer | None, model,
               item_emb: np.ndarray) -> tuple[Validation, dict]:
    """``val`` with the all-items-cold validation's collaborative part: ``cf`` refitted with its tuned setting
    (``model``) on the training interactions minus every interaction of ``val.cold_items`` (the sampled pool and
    the validation items, everything that validation ranks as cold), and the bridge's text neighbours drawn
    from the items that keep interactions. Otherwise the bridge of a validation item borrows from neighbours
    (and a query) fitted on that item's own interactions, which the cold-item test never has (issue 15). The
    fine-tuned item embeddings did see those interactions; refitting the encoder is beyond this stage's budget.

    Returns:
        ``(val, record)``: the record counts the pseudo-cold items and the interactions hidden from the refit.
    """
    if cf is None or val.cold_items is None:
        return val, {}
    train_c = without_items(split.train, val.cold_items)
    cold_cf = refit(cf, model, train_c, split.n_users, split.n_items)
    nb = None
    if max(hc.bridge_weights) > 0:
        nb = text_neighbours(item_emb, cold_cf.counts, hc.bridge_neighbours, hc.bridge_temperature)
    hidden = len(split.train) - len(train_c)
    logger.info("all-items-cold validation: collaborative part refitted without %d pseudo-cold items (%d of %d "
                "training interactions hidden)", len(val.cold_items), hidden, len(split.train))
    record = {"pseudo_cold_items": len(val.cold_items), "hidden_interactions": hidden,
              "train_interactions": len(split.train)}
    return replace(val, cold_cf=cold_cf, cold_neighbours=nb), record


def _grader(hc: HybridConfig, dense: np.ndarray, parts: dict, targets: list[np.ndarray],
            exclude: list[np.ndarray], stats: dict):
    """``grade(trust, settings) -> [mean validation NDCG@10 of each (w, bridge, lexical)]`` for one exclusion set
    (``per_user=True``: each setting's per-user values instead of the mean): on candidate lists
    (:mod:`recsys_llm.hybrid.search`, exact) unless ``search_candidates = 0`` or rrf. ``parts``: the
    ``collab``, ``bridged`` and ``lexical`` scores of the validation users (the last two may be None)."""
    collab, bridged, lexical = parts["collab"], parts["bridged"], parts["lexical"]
    if hc.search_candidates == 0 or hc.fusion != "weighted":
        def exhaustive(trust, settings, per_user=False):
            values = [ndcg_at(fuse(dense, collab, w, trust, hc.fusion, bridged, g, lexical, lw), targets, exclude)
                      for w, g, lw in settings]
            return values if per_user else [float(np.nanmean(v)) for v in values]
        return exhaustive
    cs = candidate_set(dense, collab, bridged, targets, exclude, hc.search_candidates, lexical=lexical)

    def fast(trust, settings, per_user=False):
        before = cs.fallback, cs.pairs
        values = fused_grid(cs, trust, settings, per_user=per_user)
        stats["pairs"] = stats.get("pairs", 0) + cs.pairs - before[1]
        stats["rescored"] = stats.get("rescored", 0) + cs.fallback - before[0]
        return list(values) if per_user else list(map(float, values))
    return fast


def _cold_choice(hc: HybridConfig, grade, n_items: int, parts: dict) -> tuple[dict, tuple[float, float]]:
    """Bridge and lexical weights on the all-items-cold validation: ``({(bridge, lexical): NDCG@10}, chosen)``.

    The one-standard-error rule of ``select``: among the settings whose mean is within one standard error of the
    paired per-user difference from the best, the simplest wins (fewest parts on, then the smallest total
    weight). A part that validation cannot tell from noise stays off: on the demo the bridge won its
    validation by 0.0010 and then cost cold items 0.027 NDCG@10 on test. ``(0, 1)``, BM25 alone on cold items,
    is in the grid whenever the lexical part is on."""
    bridges = sorted({float(g) for g in hc.bridge_weights}) if parts["bridged"] is not None else [0.0]
    lexicals = sorted({float(v) for v in hc.lexical_weights}) if parts["lexical"] is not None else [0.0]
    settings = [(0.0, g, lw) for g in bridges for lw in lexicals if g + lw <= 1.0 + 1e-9]
    per_user = grade(np.zeros(n_items, np.float32), settings, per_user=True)  # no evidence: text, bridge, BM25
    keys = [(g, lw) for _, g, lw in settings]
    cold = {key: float(np.mean(v)) if len(v) else float("nan") for key, v in zip(keys, per_user, strict=True)}
    return cold, one_se_simplest(keys, per_user, cold)


def one_se_simplest(keys: list[tuple[float, float]], per_user: list[np.ndarray], means: dict) -> tuple[float, float]:
    """The simplest ``(bridge, lexical)`` whose mean is within one standard error (of the paired per-user
    difference) of the best mean; simplest = fewest nonzero weights, then the smallest total, then the
    smaller lexical weight."""
    best = max(range(len(keys)), key=lambda i: (means[keys[i]], -(keys[i][0] + keys[i][1]), -keys[i][1]))
    n = len(per_user[best])

    def close(i: int) -> bool:
        if i == best or n < 2:
            return i == best
        diff = per_user[best] - per_user[i]
        return float(diff.mean()) <= float(diff.std(ddof=1)) / np.sqrt(n)

    return min((keys[i] for i in range(len(keys)) if close(i)),
               key=lambda k: ((k[0] > 0) + (k[1] > 0), k[0] + k[1], k[1]))


def _cold_parts(cf: CollaborativeScorer, neighbours: sp.csr_matrix | None, hist: list[np.ndarray],
                halflife: float, lex: np.ndarray | None) -> dict:
    """The all-items-cold validation's scores from its refitted collaborative part (:func:`cold_refit`)."""
    collab = cf.score(hist, halflife=halflife)
    return {"collab": collab, "bridged": None if neighbours is None else bridge_scores(neighbours, collab),
            "lexical": lex}


def search_settings(hc: HybridConfig, split: Split, name: str, dense: np.ndarray, cf: CollaborativeScorer | None,
                    neighbours, val: Validation, stats: dict, lexical: LexicalScorer | None = None,
                    evidence: Evidence | None = None) -> tuple[dict, dict, dict]:
    """Grids and best setting of one user representation: ``(warm grid, cold grid, best)``; ``stats`` gathers
    the candidate search's counts (pairs scored, pairs rescored over the whole catalogue)."""
    if cf is None:
        v = float(np.nanmean(ndcg_at(dense, val.targets, val.hist)))
        return ({"0.0": {"0.0": {0.0: v}}}, {},
                {"ndcg@10": v, "halflife": 0.0, "weight": 0.0, "confidence": 0.0, "bridge": 0.0,
                 "lexical_weight": 0.0})
    lex = None if lexical is None else lexical.score(val.hist, split.n_items)
    grids: dict = {}
    cold_grids: dict = {}
    best: dict = {}
    for hl in sorted({float(h) for h in hc.cf_halflives}):
        collab = cf.score(val.hist, halflife=hl)
        parts = {"collab": collab, "bridged": None if neighbours is None else bridge_scores(neighbours, collab),
                 "lexical": lex}
        cold_parts = parts if val.cold_cf is None else _cold_parts(
            val.cold_cf, None if neighbours is None else val.cold_neighbours, val.hist, hl, lex)
        cold, (g, lw) = _cold_choice(hc, _grader(hc, dense, cold_parts, val.targets, val.cold_excl, stats),
                                     split.n_items, cold_parts)
        cold_grids[str(hl)], grids[str(hl)] = cold, {}
        grade = _grader(hc, dense, parts, val.targets, val.hist, stats)
        for c in sorted({float(c) for c in hc.cf_confidences}):
            weights = sorted({float(w) for w in hc.weights})
            grid = dict(zip(weights, grade(item_trust(cf.counts, c, split.n_items), [(w, g, lw) for w in weights]),
                            strict=True))
            w = best_value(grid)
            grids[str(hl)][str(c)] = grid
            if not best or grid[w] > best["ndcg@10"]:
                best = {"ndcg@10": grid[w], "halflife": hl, "weight": w, "confidence": c, "bridge": g,
                        "lexical_weight": lw, "cold_ndcg@10": cold[(g, lw)], "cold_text_only": cold[min(cold)],
                        "cold_bm25_only": cold.get((0.0, 1.0))}
    if evidence is not None:  # the confidence also by how well items with few interactions are ranked
        best = _evidence_choice(hc, split, dense, grids, best, evidence, val, neighbours, lexical, stats)
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


def _record(grids: dict, cold_grids: dict, best: dict, n_users: int, chosen_by: str, fits: dict,
            meta: dict) -> dict:
    return {"valid_users": n_users, "chosen_by": chosen_by,
            "valid_ndcg@10": {n: {hl: {c: {str(w): v for w, v in g.items()} for c, g in by_c.items()}
                                  for hl, by_c in by_hl.items()} for n, by_hl in grids.items()},
            "cold_sim_ndcg@10": {n: {hl: {f"{g},{lw}": v for (g, lw), v in gr.items()} for hl, gr in by_hl.items()}
                                 for n, by_hl in cold_grids.items()},
            "best": best, "pooling": fits["pooling"], "sequence": fits["sequence"], "embeddings": meta["encoder"],
            "data_fingerprint": meta["data_fingerprint"]}


CF_BASELINE = {"ease": "ease_recency", "itemknn": "itemknn"}
"""The baseline row whose tuned setting the hybrid's collaborative part takes."""


def _collaborative(cfg: PipelineConfig, split: Split) -> tuple[CollaborativeScorer | None, dict | None, object]:
    """The collaborative part, fitted with its baseline's tuned setting: ``(scorer, search record, model)``."""
    name = cfg.hybrid.cf_model
    if name == "none":
        return None, None, None
    result = fit_baseline(CF_BASELINE[name], split, cfg.eval)
    logger.info("hybrid collaborative part: %s %s", CF_BASELINE[name], result.note() or "defaults")
    cf = fit_collaborative(name, split.train, split.n_users, split.n_items, fitted=result.model)
    return cf, {"baseline": CF_BASELINE[name], "params": result.params, "valid_ndcg@10": result.valid_ndcg,
                "note": result.note()}, result.model


@dataclass
class Evidence:
    """The pseudo-cold validation of the trust confidence (:mod:`recsys_llm.hybrid.evidence`): the
    collaborative part refitted with the validation items cut to a few interactions, the users' histories
    without the hidden ones, and the exclusions that rank among the pseudo-cold items."""

    cf: CollaborativeScorer
    rows: np.ndarray
    hist: list[np.ndarray]
    exclude: list[np.ndarray]
    reveal: dict[int, int]


EVIDENCE_USERS = 1000
"""At most this many validation users (a seeded sample) rank among the pseudo-cold items."""


def _evidence(hc: HybridConfig, split: Split, val: Validation, cf: CollaborativeScorer | None,
              model) -> Evidence | None:
    """Cut every validation item to its first ``r`` training interactions and refit the collaborative part
    with its tuned setting (None when ``hybrid.fewshot_reveal`` is empty or there is no collaborative part)."""
    if cf is None or not hc.fewshot_reveal:
        return None
    rng = np.random.default_rng(hc.seed)
    rows = np.sort(rng.choice(len(val.users), min(len(val.users), EVIDENCE_USERS), replace=False))
    pseudo = np.unique(np.concatenate([val.targets[r] for r in rows]))
    train_r, reveal = hide_beyond(split.train, pseudo, hc.fewshot_reveal, hc.seed)
    cf_r = refit(cf, model, train_r, split.n_users, split.n_items)
    hist_r = histories(train_r, split.n_users)
    return Evidence(cf_r, rows, [hist_r[val.users[r]] for r in rows],
                    pseudo_cold_exclusions([val.hist[r] for r in rows], pseudo, split.n_items), reveal)


def _evidence_choice(hc: HybridConfig, split: Split, dense: np.ndarray, grids: dict, best: dict, ev: Evidence,
                     val: Validation, neighbours, lexical: LexicalScorer | None, stats: dict) -> dict:
    """The confidence (and its best weight) by warm + pseudo-cold validation together (module doc)."""
    hl, by_c = best["halflife"], grids[str(best["halflife"])]
    collab = ev.cf.score(ev.hist, halflife=hl)
    parts = {"collab": collab, "bridged": None if neighbours is None else bridge_scores(neighbours, collab),
             "lexical": None if lexical is None else lexical.score(ev.hist, split.n_items)}
    grade = _grader(hc, dense[ev.rows], parts, [val.targets[r] for r in ev.rows], ev.exclude, stats)
    few, warm = {}, {}
    for c_key, grid in by_c.items():
        w = best_value(grid)
        warm[float(c_key)] = grid[w]
        few[float(c_key)] = grade(item_trust(ev.cf.counts, float(c_key), split.n_items),
                                  [(w, best["bridge"], best["lexical_weight"])])[0]
    c = choose_confidence(warm, few)
    w = best_value(by_c[str(c)])
    return {**best, "ndcg@10": warm[c], "weight": w, "confidence": c, "fewshot_ndcg@10": few[c],
            "fewshot_by_confidence": {str(k): v for k, v in few.items()}}


def _history_models(ctx: Context, hc: HybridConfig, item_emb: np.ndarray, train_hist: list[np.ndarray],
                    warm_items: np.ndarray, val: Validation, meta: dict, users_by: dict[str, np.ndarray]) -> dict:
    """Fit the pooling and (``hybrid.sequence_steps > 0``) sequence user models on the training histories, save
    each with every known user's vector, add their validation users' vectors to ``users_by``; their fit records
    (``{"pooling": ..., "sequence": ... or None}``)."""
    keep = {"encoder": meta["encoder"], "data_fingerprint": meta["data_fingerprint"]}
    known, valid = ctx.known_histories(), (val.hist, val.targets)
    pool, pool_info = fit_pooling(item_emb, train_hist, steps=hc.pooling_steps, batch_size=hc.pooling_batch_size,
                                  lr=hc.pooling_lr, max_items=hc.pooling_max_items, seed=hc.seed,
                                  allowed_items=warm_items, device="cpu", valid=valid)
    pool.save(ctx.run.hybrid, metadata=keep)
    atomic_save_npy(ctx.run.user_vectors("pooling")[0], encode_histories(pool, item_emb, known))
    users_by["pooling"] = encode_histories(pool, item_emb, val.hist)
    stored = ctx.run.user_vectors("sequence")[0]
    if hc.sequence_steps == 0:  # off: a sequence model of an earlier fit must not be served with this one
        for path in (stored, ctx.run.hybrid / "user_sequence.json", ctx.run.hybrid / "user_sequence.safetensors"):
            path.unlink(missing_ok=True)
        return {"pooling": pool_info, "sequence": None}
    seq, seq_info = fit_sequence(item_emb, train_hist, steps=hc.sequence_steps, batch_size=hc.sequence_batch_size,
                                 lr=hc.sequence_lr, max_items=hc.sequence_max_items, negatives=hc.sequence_negatives,
                                 seed=hc.seed, allowed_items=warm_items, device="cpu", valid=valid,
                                 layers=hc.sequence_layers)
    seq.save(ctx.run.hybrid, metadata=keep)
    atomic_save_npy(stored, encode_sequences(seq, item_emb, known))
    users_by["sequence"] = encode_sequences(seq, item_emb, val.hist)
    return {"pooling": pool_info, "sequence": seq_info}


@timed("hybrid")
def fit_hybrid(run_dir: str | Path) -> dict:
    """Fit the history user models and the collaborative fusion; choose all on validation users (module doc).

    Returns:
        The ``hybrid.json`` record.
    """
    ctx = Context.load(run_dir)
    cfg, hc, split = ctx.cfg, ctx.cfg.hybrid, ctx.split
    item_emb, _, meta = load_embeddings(ctx.run)
    train_hist = histories(split.train, split.n_users)
    warm_items = np.unique(split.train["item"].to_numpy(dtype=np.int64))
    val = _validation(ctx, hc, train_hist, warm_items)
    encoder = load_encoder(ctx.run, cfg.train.device)
    vtexts = [history_text(h, ctx.titles, cfg.text.user_max_items) for h in val.hist]
    users_by = {"text": encoder.encode_users(vtexts, cfg.text.user_max_tokens, show_progress=False)}
    fits = _history_models(ctx, hc, item_emb, train_hist, warm_items, val, meta, users_by)
    cf, cf_tuned, cf_fitted = _collaborative(cfg, split)
    ev = _evidence(hc, split, val, cf, cf_fitted)
    val, cold_record = cold_refit(hc, split, val, cf, cf_fitted, item_emb)
    if cf_tuned and "halflife" in cf_tuned["params"]:
        hc.cf_halflives = sorted({*map(float, hc.cf_halflives), float(cf_tuned["params"]["halflife"])})
    lexical = LexicalScorer.fit(ctx.item_texts()) if cf is not None and max(hc.lexical_weights) > 0 else None
    neighbours = None
    if cf is not None and max(hc.bridge_weights) > 0:
        neighbours = text_neighbours(item_emb, cf.counts, hc.bridge_neighbours, hc.bridge_temperature)
    grids, cold_grids, best = {}, {}, {}
    stats: dict = {"candidates": hc.search_candidates}
    start = time.perf_counter()
    for name, u in users_by.items():
        grids[name], cold_grids[name], best[name] = search_settings(hc, split, name, u @ item_emb.T, cf,
                                                                    neighbours, val, stats, lexical, ev)
    stats["seconds"] = round(time.perf_counter() - start, 2)
    user_model = hc.user_model if hc.user_model != "auto" else better_user_model(best)
    b = best[user_model]
    info = _record(grids, cold_grids, best, len(val.users), "config" if hc.user_model != "auto" else "validation",
                   fits, meta)
    info["collaborative"] = cf_tuned
    info["cold_validation"] = cold_record
    info["search"] = stats
    model = HybridModel(cf, b["weight"], b["confidence"], hc.fusion, user_model, b["halflife"], info,
                        neighbours if b["bridge"] > 0 else None, b["bridge"],
                        lexical if b["lexical_weight"] > 0 else None, b["lexical_weight"])
    model.save(ctx.run.hybrid)
    logger.info("hybrid: %s users, %s weight %.2f, half-life %g, confidence %g, bridge %.2f, lexical %.2f "
                "(validation NDCG@10 %.4f)", user_model, hc.cf_model, b["weight"], b["halflife"], b["confidence"],
                b["bridge"], b["lexical_weight"], b["ndcg@10"])
    return load_json(ctx.run.hybrid / "hybrid.json")
