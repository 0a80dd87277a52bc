"""Stage ``hybrid``: the history user models and the text + collaborative fusion, every choice on validation.

Validation: each user's validation item, ranked over the catalog from their training history (training items
filtered). Steps: (1) the pooling user model (:mod:`recsys_llm.encoder.user_pooling`) and, with
``hybrid.sequence_steps > 0``, the sequence user model (:mod:`recsys_llm.encoder.user_sequence`) train on
training-history prefixes over the frozen fine-tuned item embeddings (with ``hybrid.blind_cold_validation``,
without the pseudo-cold items of the cold validations, as the encoder was fine-tuned); (2) validation users are represented
every way: as text (history rendered and encoded), pooled, and sequence-encoded; (3) the collaborative model (``hybrid.cf_model``)
is fitted on the training interactions with the setting its baseline row is tuned to (the same search, budget
and validation users: :func:`recsys_llm.classic.from_config.fit_baseline`, recency-weighted EASE for ``ease``),
so the hybrid starts from the tuned baseline rather than a default, and the tuned half-life joins the grid; (4) for
each user representation, recency half-life, trust confidence and fusion weight are chosen from their grids by
validation NDCG@10, every setting scored on candidate lists with a bound that keeps it exact for full ranking
(:mod:`recsys_llm.hybrid.search`; ``hybrid.search_candidates=0``: :func:`recsys_llm.hybrid.fuse` over
the whole catalogue),
and the cold-item parts (text-neighbour bridge, BM25) on an all-items-cold validation that mirrors the cold-item
test slice (:mod:`recsys_llm.stages.hybrid_cold`: a random sample of warm items made pseudo-cold, the users who
had them ranked over them from the rest of their history, the collaborative part refitted without them); the
trust curve of items with at most ``max(hybrid.fewshot_reveal)`` interactions by a few-shot validation (the
pseudo-cold items cut to their first few interactions: :func:`~recsys_llm.stages.hybrid_cold.few_shot_evidence`)
among those warm validation cannot tell apart (every other item keeps the curve warm validation chose; the
half-life keeps the baseline's tuned value unless another is better by more than one standard error); ``hybrid.user_model=auto`` keeps
the representation that is best over warm and cold validation together (:func:`better_user_model`).
Writes ``<run>/hybrid/``: ``hybrid.json`` with every grid, ``collaborative.safetensors``, ``user_pooling.*``,
``user_pooled.npy`` (every known user's pooled vector, what serving and the report read), and
``user_sequence.*`` + ``user_sequence.npy`` likewise for the sequence model.
"""

from __future__ import annotations

import logging
import time
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
    trust_key,
)
from recsys_llm.hybrid.evidence import choose_confidence, within_one_se
from recsys_llm.hybrid.lexical import LexicalScorer
from recsys_llm.io_utils import atomic_save_npy, load_json
from recsys_llm.protocol import blind_histories, hidden_record
from recsys_llm.run import Context, timed
from recsys_llm.stages.hybrid_cold import (
    Evidence,
    Validation,
    cold_choice,
    cold_refit,
    few_shot_evidence,
    validation,
)
from recsys_llm.text.templates import history_text

logger = logging.getLogger(__name__)

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


def _parts(cf: CollaborativeScorer, neighbours: sp.csr_matrix | None, hist: list[np.ndarray], halflife: float,
           lex: np.ndarray | None) -> dict:
    """The ``collab``, ``bridged`` and ``lexical`` scores a grader fuses with the dense ones (:func:`_grader`),
    for users with ``hist``: ``cf``'s recency-weighted query, the bridge through ``neighbours`` (None: off),
    and the BM25 scores ``lex`` as given."""
    collab = cf.score(hist, halflife=halflife)
    return {"collab": collab, "bridged": None if neighbours is None else bridge_scores(neighbours, collab),
            "lexical": lex}


def _cold_search(hc: HybridConfig, split: Split, val: Validation, cf: CollaborativeScorer, neighbours,
                 halflife: float, dense: np.ndarray, lex: np.ndarray | None, stats: dict
                 ) -> tuple[dict, tuple[float, float]]:
    """The all-items-cold grid and choice (:func:`~recsys_llm.stages.hybrid_cold.cold_choice`) at one half-life,
    from the refitted collaborative part when there is one; no all-items-cold users: every cold part off."""
    hist = val.cold_users_hist
    if not len(hist):
        return {(0.0, 0.0): float("nan")}, (0.0, 0.0)
    refitted = val.cold_cf is not None
    parts = _parts(val.cold_cf if refitted else cf,
                   None if neighbours is None else (val.cold_neighbours if refitted else neighbours), hist, halflife, lex)
    return cold_choice(hc, _grader(hc, dense, parts, val.cold_users_targets, val.cold_excl, stats), split.n_items,
                       parts)


def _trust_settings(hc: HybridConfig) -> list[tuple[float, float]]:
    """Every ``(confidence, power)`` of the grid; confidence 0 (full trust) once, whatever the power."""
    return sorted({(float(c), float(p) if c > 0 else 1.0) for c in hc.cf_confidences for p in hc.cf_trust_powers})


def search_settings(hc: HybridConfig, split: Split, name: str, dense: np.ndarray, cf: CollaborativeScorer | None,
                    neighbours, val: Validation, stats: dict, lexical: LexicalScorer | None = None,
                    evidence: Evidence | None = None, cold_dense: np.ndarray | None = None,
                    tuned_halflife: float | None = None) -> tuple[dict, dict, dict]:
    """Grids and best setting of one user representation: ``(warm grid, cold grid, best)``; ``stats`` gathers
    the candidate search's counts (pairs scored, pairs rescored over the whole catalogue). ``dense``: the warm
    validation users' text scores; ``cold_dense``: the all-items-cold users' (None: ``dense``, the same users).
    ``tuned_halflife``: the collaborative baseline's tuned half-life, kept unless another beats it by more than
    one standard error (:func:`_keep_tuned_halflife`)."""
    if cf is None:
        v = float(np.nanmean(ndcg_at(dense, val.targets, val.hist)))
        return ({"0.0": {"0.0": {0.0: v}}}, {},
                {"ndcg@10": v, "halflife": 0.0, "weight": 0.0, "confidence": 0.0, "bridge": 0.0,
                 "lexical_weight": 0.0, "trust_power": 1.0, "few_trust": None})
    lex = None if lexical is None else lexical.score(val.hist, split.n_items)
    lex_cold = lex if val.cold_hist is None or lexical is None else lexical.score(val.cold_hist, split.n_items)
    grids: dict = {}
    cold_grids: dict = {}
    by_hl: dict = {}
    graders: dict = {}
    for hl in sorted({float(h) for h in hc.cf_halflives}):
        parts = _parts(cf, neighbours, val.hist, hl, lex)
        cold, (g, lw) = _cold_search(hc, split, val, cf, neighbours, hl, dense if cold_dense is None else cold_dense,
                                     lex_cold, stats)
        cold_grids[str(hl)], grids[str(hl)] = cold, {}
        grade = graders[hl] = _grader(hc, dense, parts, val.targets, val.hist, stats)
        for c, p in _trust_settings(hc):
            weights = sorted({float(w) for w in hc.weights})
            grid = dict(zip(weights, grade(item_trust(cf.counts, c, split.n_items, p), [(w, g, lw) for w in weights]),
                            strict=True))
            w = best_value(grid)
            grids[str(hl)][trust_key(c, p)] = grid
            if hl not in by_hl or grid[w] > by_hl[hl]["ndcg@10"]:
                by_hl[hl] = {"ndcg@10": grid[w], "halflife": hl, "weight": w, "confidence": c, "trust_power": p,
                             "few_trust": None, "bridge": g, "lexical_weight": lw, "cold_ndcg@10": cold[(g, lw)],
                             "cold_text_only": cold[min(cold)], "cold_bm25_only": cold.get((0.0, 1.0))}
    best = _keep_tuned_halflife(by_hl, graders, tuned_halflife, cf.counts, split.n_items)
    if evidence is not None:  # the trust of items with few interactions by how well they are ranked
        best = _evidence_choice(hc, split, dense if cold_dense is None else cold_dense, best, evidence,
                                neighbours, lexical, stats, graders[best["halflife"]], cf.counts)
    logger.info("hybrid validation, %s users: NDCG@10 %.4f (all-items-cold %.4f)", name, best["ndcg@10"],
                best["cold_ndcg@10"])
    return grids, cold_grids, best


def _keep_tuned_halflife(by_hl: dict[float, dict], graders: dict, tuned: float | None, counts: np.ndarray,
                         n_items: int) -> dict:
    """The best setting of the best half-life, unless the collaborative baseline's tuned half-life ``tuned``
    is within one standard error of it (paired over the warm validation users,
    :func:`~recsys_llm.hybrid.evidence.within_one_se`): then the tuned half-life's best setting. The baseline was
    tuned on the same users; moving away from it on a difference validation cannot tell from noise gained
    +0.0043 on validation and lost 0.006 on test on the ml-100k peer split. ``best`` records both half-lives
    (``halflife_tuned``, ``halflife_best``: the best on validation)."""
    top = max(by_hl.values(), key=lambda b: b["ndcg@10"])  # the first (smallest half-life) of equal values
    rule = {"halflife_tuned": tuned, "halflife_best": top["halflife"]}
    if tuned is not None and float(tuned) in by_hl and float(tuned) != top["halflife"]:
        def per_user(b: dict) -> np.ndarray:
            trust = item_trust(counts, b["confidence"], n_items, b["trust_power"])
            return np.asarray(graders[b["halflife"]](trust, [(b["weight"], b["bridge"], b["lexical_weight"])],
                                                     per_user=True)[0])
        if within_one_se(per_user(top), per_user(by_hl[float(tuned)])):
            top = by_hl[float(tuned)]
    return {**top, **rule}


def better_user_model(best: dict[str, dict]) -> str:
    """``hybrid.user_model=auto``: warm and cold count equally. Each representation scores its validation
    NDCG@10 relative to the best representation, warm (the fused model) plus all-items-cold (text + bridge)."""
    def rel(key: str) -> dict[str, float]:
        value = {n: float(np.nan_to_num(b.get(key, 0.0))) for n, b in best.items()}  # nan: no all-items-cold users
        top = max(value.values()) or 1.0
        return {n: v / top for n, v in value.items()}

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


def _evidence_choice(hc: HybridConfig, split: Split, dense: np.ndarray, best: dict, ev: Evidence,
                     neighbours, lexical: LexicalScorer | None, stats: dict, warm_grade, cf_counts: np.ndarray
                     ) -> dict:
    """The few-shot curve (``few_trust`` of :func:`~recsys_llm.hybrid.item_trust`): the trust of items with at
    most ``max(hybrid.fewshot_reveal)`` interactions, the best on the few-shot validation among the curves warm
    validation cannot tell from the warm best (:func:`~recsys_llm.hybrid.evidence.choose_confidence`; few-shot
    users: :func:`~recsys_llm.stages.hybrid_cold.few_shot_evidence`). Half-life, weight and the curve of every
    other item stay as warm validation chose them: the few-shot validation ranks only items within the horizon.
    ``dense``: the all-items-cold users' text scores (``ev.rows`` index them); ``warm_grade``: the warm
    validation's grader at the chosen half-life. None when the warm curve wins (one curve)."""
    parts = _parts(ev.cf, neighbours, ev.hist, best["halflife"],
                   None if lexical is None else lexical.score(ev.hist, split.n_items))
    grade = _grader(hc, dense[ev.rows], parts, ev.targets, ev.exclude, stats)
    setting = [(best["weight"], best["bridge"], best["lexical_weight"])]
    main, horizon = (best["confidence"], best["trust_power"]), float(max(hc.fewshot_reveal))
    few, warm_users = {}, {}
    for c, p in _trust_settings(hc):
        warm_users[c, p] = np.asarray(warm_grade(item_trust(cf_counts, main[0], split.n_items, main[1],
                                                            (c, p, horizon)), setting, per_user=True)[0])
        few[c, p] = grade(item_trust(ev.cf.counts, main[0], split.n_items, main[1], (c, p, horizon)), setting)[0]
    c, p = choose_confidence(warm_users, few, hc.fewshot_warm_tolerance)
    return {**best, "ndcg@10": float(np.mean(warm_users[c, p])) if len(warm_users[c, p]) else best["ndcg@10"],
            "few_trust": None if (c, p) == main else [c, p, horizon], "fewshot_ndcg@10": few[c, p],
            "fewshot_by_confidence": {trust_key(*k): v for k, v in few.items()}}


def _history_models(ctx: Context, hc: HybridConfig, item_emb: np.ndarray, train_hist: list[np.ndarray],
                    warm_items: np.ndarray, val: Validation, meta: dict, users_by: dict[str, tuple]) -> dict:
    """Fit the pooling and (``hybrid.sequence_steps > 0``) sequence user models on the training histories
    (blind ones: :func:`recsys_llm.protocol.blind_histories`, ``warm_items`` without what they hide), save each
    with every known user's vector, add their validation users' vectors to ``users_by`` (:func:`_both`); their
    fit records (``{"pooling": ..., "sequence": ... or None}``)."""
    keep = {"encoder": meta["encoder"], "data_fingerprint": meta["data_fingerprint"]}
    known, valid = ctx.known_histories(), (val.hist, val.targets)
    pool, pool_info = fit_pooling(item_emb, train_hist, steps=hc.pooling_steps, batch_size=hc.pooling_batch_size,
                                  lr=hc.pooling_lr, max_items=hc.pooling_max_items, seed=hc.seed,
                                  allowed_items=warm_items, device="cpu", valid=valid)
    pool.save(ctx.run.hybrid, metadata=keep)
    atomic_save_npy(ctx.run.user_vectors("pooling")[0], encode_histories(pool, item_emb, known))
    users_by["pooling"] = _both(lambda h: encode_histories(pool, item_emb, h), val)
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
    users_by["sequence"] = _both(lambda h: encode_sequences(seq, item_emb, h), val)
    return {"pooling": pool_info, "sequence": seq_info}


def _both(encode, val: Validation) -> tuple[np.ndarray, np.ndarray | None]:
    """``(warm validation users' vectors, all-items-cold users' vectors or None when they are the same users)``."""
    return encode(val.hist), None if val.cold_hist is None else encode(val.cold_hist)


def _blindness(ctx: Context, meta: dict, hidden: np.ndarray) -> dict:
    """Whether the item embeddings and the history user models never saw the pseudo-cold items' interactions
    (``hybrid.blind_cold_validation``; the embeddings: ``encoder/blind.json`` written by ``finetune`` names the
    same items, or they are the untuned backbone's); a warning when the embeddings did see them."""
    want = hidden_record(hidden)
    if meta.get("zero_shot"):
        encoder_blind = True
    else:
        path = ctx.run.encoder_blind
        encoder_blind = bool(len(hidden)) and path.exists() and load_json(path) == want
    if ctx.cfg.hybrid.blind_cold_validation and not encoder_blind:
        logger.warning("the fine-tuned encoder saw the interactions of the hybrid's pseudo-cold items (no %s with "
                       "the same %d items: fine-tuned with hybrid.blind_cold_validation=false, another hybrid.seed "
                       "or an older version), so the all-items-cold and few-shot validations overrate the text "
                       "part; rerun `recsys-llm finetune` and `embed` for blind cold validations",
                       ctx.run.encoder_blind, len(hidden))
    return {"blind_items": int(len(hidden)), "encoder_blind": encoder_blind, "user_models_blind": bool(len(hidden))}


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
    val = validation(ctx, hc, train_hist)
    blind_hist, hidden = blind_histories(cfg, split, train_hist)
    blind = _blindness(ctx, meta, hidden)
    encoder = load_encoder(ctx.run, cfg.train.device)
    users_by = {"text": _both(lambda hs: encoder.encode_users([history_text(h, ctx.titles, cfg.text.user_max_items)
                                                               for h in hs], cfg.text.user_max_tokens,
                                                              show_progress=False), val)}
    fits = _history_models(ctx, hc, item_emb, blind_hist, np.setdiff1d(split.train["item"].to_numpy(np.int64),
                                                                         hidden), val, meta, users_by)
    cf, cf_tuned, cf_fitted = _collaborative(cfg, split)
    ev = few_shot_evidence(hc, split, val, train_hist, cf, cf_fitted)
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
    for name, (u, u_cold) in users_by.items():
        grids[name], cold_grids[name], best[name] = search_settings(
            hc, split, name, u @ item_emb.T, cf, neighbours, val, stats, lexical, ev,
            None if u_cold is None else u_cold @ item_emb.T, (cf_tuned or {}).get("params", {}).get("halflife"))
    stats["seconds"] = round(time.perf_counter() - start, 2)
    user_model = hc.user_model if hc.user_model != "auto" else better_user_model(best)
    b = best[user_model]
    info = _record(grids, cold_grids, best, len(val.users), "config" if hc.user_model != "auto" else "validation",
                   fits, meta)
    info["collaborative"] = cf_tuned
    info["cold_validation"] = {**cold_record, **blind}
    info["search"] = stats
    model = HybridModel(cf, b["weight"], b["confidence"], hc.fusion, user_model, b["halflife"], info,
                        neighbours if b["bridge"] > 0 else None, b["bridge"],
                        lexical if b["lexical_weight"] > 0 else None, b["lexical_weight"], b["trust_power"],
                        None if b.get("few_trust") is None else tuple(b["few_trust"]))
    model.save(ctx.run.hybrid)
    logger.info("hybrid: %s users, %s weight %.2f, half-life %g, confidence %g (power %g; few-shot curve %s), "
                "bridge %.2f, lexical %.2f (validation NDCG@10 %.4f)", user_model, hc.cf_model, b["weight"],
                b["halflife"], b["confidence"], b["trust_power"], b.get("few_trust"), b["bridge"], b["lexical_weight"],
                b["ndcg@10"])
    return load_json(ctx.run.hybrid / "hybrid.json")
