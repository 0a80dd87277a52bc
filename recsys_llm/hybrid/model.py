"""Hybrid scoring: dense text retrieval fused with a collaborative item-item model, trusted per item by how
much collaborative evidence the item has.

For a user with dense scores ``d`` (user embedding . item embeddings, one row over the catalog) and
collaborative scores ``c`` (``x_u @ S``, ``x_u`` the user's history, optionally recency-weighted, ``S`` an
item-item matrix from EASE or ItemKNN fitted on the training interactions)::

    t_i = n_i^p / (n_i^p + confidence^p)                 (t_i = 1 for n_i > 0 when confidence = 0; p = trust power)
          (items with 1..H interactions: their own confidence and power, the few-shot curve, when one is set)
    a_i = w t_i (own evidence),  g_i = bridge (1 - t_i) (borrowed through text),  l_i = lex [t_i = 0] (BM25)
    weighted:  score_i = (1 - a_i - g_i - l_i) z(d)_i + a_i z(c)_i + g_i z(b)_i + l_i z(l)_i
    rrf:       the same weights on reciprocal ranks 1 / (60 + rank)
    b = z(c) @ N^T,  N[i, j] = softmax_j(cos(e_i, e_j) / temperature) over the k nearest items j != i with n_j > 0

``z`` standardises a row over the catalog; ``n_i`` is item ``i``'s number of training interactions. Each item
mixes the two opinions by how much collaborative evidence it has: an item nobody touched (a cold item, or one
added with ``coldstart add-items``) has ``a_i = 0`` and is scored by its text (and, with the bridge, its
neighbours' borrowed score), on the same standardised scale as every other item, so it can be recommended the
moment it exists, whatever ``w``. A user whose
collaborative row is constant (no known items, a text-only new user) gets ``a_i = g_i = 0`` everywhere: pure
text. The *bridge* ``b`` carries collaborative signal to items without it: an item's borrowed score is what the
collaborative model thinks of its nearest neighbours in the fine-tuned text space (its own column excluded),
so a cold item liked-by-description also inherits "users like you liked items like this". ``w``, the
confidence, the bridge weight and the recency half-life of ``x_u`` are chosen on validation users
(:func:`select_weight`); ``w = 0`` is text only, ``w = 1`` (with confidence 0) the collaborative model alone on
every item it has evidence for.

The item-item matrix (:mod:`recsys_llm.hybrid.collaborative`) is stored sparse, the ``keep`` largest entries of
each column (EASE's dense ``B`` would be ``n_items^2`` floats), as ``collaborative.safetensors`` + ``hybrid.json``
in ``<run>/hybrid/``; what is evaluated is exactly what is served.

Example:
    >>> import numpy as np, pandas as pd
    >>> from recsys_llm.hybrid.collaborative import fit_collaborative
    >>> train = pd.DataFrame({"user": [0, 0, 1, 1, 2], "item": [0, 1, 0, 1, 2]})
    >>> cf = fit_collaborative("itemknn", train, n_users=3, n_items=4)
    >>> model = HybridModel(cf, weight=0.5, confidence=0.0)
    >>> dense = np.array([[0.1, 0.2, 0.3, 0.9]], dtype=np.float32)   # item 3: nobody touched it
    >>> int(model.score(dense, [np.array([0])]).argmax())            # text still finds it
    3
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys_llm.hybrid.collaborative import (
    CollaborativeScorer,
)
from recsys_llm.hybrid.lexical import LEXICAL_FILE, LexicalScorer
from recsys_llm.hybrid.sparse import load_sparse, save_sparse
from recsys_llm.io_utils import atomic_write_json, load_json
from recsys_llm.ranking import full_ranking_metrics

logger = logging.getLogger(__name__)

NEIGHBOURS_FILE = "text_neighbours.safetensors"
META_FILE = "hybrid.json"
FORMAT = 2
READABLE = (1, 2)  # format 1 (before the lexical part) loads with lexical weight 0
RRF_K = 60.0


def text_neighbours(item_emb: np.ndarray, counts: np.ndarray, k: int = 50, temperature: float = 0.05,
                    chunk: int = 2048) -> sp.csr_matrix:
    """``N`` (n_items, n_items) CSR: row i = softmax weights over the ``k`` items most similar to ``i`` (inner
    product of the normalised embeddings) among those with interactions (``counts > 0``), ``i`` itself excluded.

    Row-chunked (``chunk x n_items`` similarities at a time), so memory stays bounded.
    """
    emb = np.asarray(item_emb, dtype=np.float32)
    n = len(emb)
    donors = np.flatnonzero(np.asarray(counts)[:n] > 0)
    k = min(int(k), max(len(donors) - 1, 0))
    if k == 0:
        return sp.csr_matrix((n, n), dtype=np.float32)
    rows, cols, vals = [], [], []
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        sim = emb[lo:hi] @ emb[donors].T  # (chunk, donors)
        own = np.flatnonzero((donors >= lo) & (donors < hi))
        sim[donors[own] - lo, own] = -np.inf  # never its own neighbour
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # (chunk, k)
        v = np.take_along_axis(sim, top, axis=1) / temperature
        v = np.exp(v - v.max(axis=1, keepdims=True))
        v /= v.sum(axis=1, keepdims=True)
        rows.append(np.repeat(np.arange(lo, hi), k))
        cols.append(donors[top].ravel())
        vals.append(v.ravel().astype(np.float32))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def bridge_scores(neighbours: sp.csr_matrix, collab: np.ndarray) -> np.ndarray:
    """``b = z(c) @ N^T`` (b, n): the collaborative opinion of each item's text neighbours; items beyond
    ``N`` (added after fitting) get 0."""
    n = neighbours.shape[0]
    out = np.zeros_like(collab, dtype=np.float32)
    z = zscore_rows(collab[:, :n])
    if len(z) == 1:  # one query: a sparse matrix-vector product, without the (n, 1) matrix round trip
        out[0, :n] = neighbours @ z[0]
    else:
        out[:, :n] = np.asarray((neighbours @ z.T).T)
    return out


# ----------------------------------------------------------------------------------------------- fusion
def zscore_rows(scores: np.ndarray) -> np.ndarray:
    """Each row minus its mean, over its standard deviation; constant rows become 0."""
    s = np.asarray(scores, dtype=np.float32)
    mean = s.mean(axis=1, keepdims=True)
    std = s.std(axis=1, keepdims=True)
    return np.divide(s - mean, std, out=np.zeros_like(s), where=std > 1e-12)


def item_trust(counts: np.ndarray, confidence: float, n_items: int, power: float = 1.0,
               few: Sequence[float] | None = None) -> np.ndarray:
    """``t_i = n_i^p / (n_i^p + confidence^p)`` (1 for any item with interactions when confidence = 0); items
    beyond ``counts`` (added after fitting) get 0. ``power`` ``p = 1`` grows slowly (an item with ``confidence``
    interactions gets half the trust, one with 4x as many 80%); a larger ``p`` is a steeper step at
    ``confidence`` (``p = 4``: 1% at a third of it, 94% at twice it).

    ``few = (confidence, power, horizon)``: items with 1 to ``horizon`` interactions follow that curve instead,
    the *few-shot curve*. The hybrid stage chooses it on the few-shot validation, which ranks only items with at
    most ``horizon`` interactions and so says nothing about the rest, and the main curve on warm validation.
    One curve for both let the few-shot items' preference (little trust up to ~50 interactions) cost warm test
    users ~0.006 NDCG@10 on ml-100k that warm validation could not see.

    >>> [round(float(t), 3) for t in item_trust(np.array([0, 3, 30]), 5.0, 4, few=(50.0, 4.0, 20))]
    [0.0, 0.0, 0.857, 0.0]
    """
    c = np.zeros(n_items, dtype=np.float32)  # items added after fitting: 0 interactions, so 0 trust on any curve
    c[: min(len(counts), n_items)] = np.asarray(counts, dtype=np.float32)[:n_items]
    t = _curve(c, confidence, power)
    if few is not None:
        low = (c > 0) & (c <= few[2])
        t[low] = _curve(c[low], few[0], few[1])
    return t


def _curve(c: np.ndarray, confidence: float, power: float) -> np.ndarray:
    """``c^p / (c^p + confidence^p)`` per count (``c > 0`` when confidence = 0), float32."""
    if confidence == 0:
        return (c > 0).astype(np.float32)
    if power == 1.0:
        return (c / (c + confidence)).astype(np.float32)
    r = (c.astype(np.float64) / confidence) ** power
    return (r / (1.0 + r)).astype(np.float32)


def trust_key(confidence: float, power: float = 1.0) -> str:
    """The grid key of a trust setting in ``hybrid.json``: ``"50.0"``, or ``"50.0^4.0"`` for another power."""
    return str(float(confidence)) if power == 1.0 else f"{float(confidence)}^{float(power)}"


def _ranks(scores: np.ndarray) -> np.ndarray:
    """0-based rank of every item in its row (best = 0)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :].repeat(len(scores), 0), axis=1)
    return ranks


def fuse(dense: np.ndarray, collab: np.ndarray, weight: float, trust: np.ndarray,
         fusion: str = "weighted", bridged: np.ndarray | None = None, bridge_weight: float = 0.0,
         lexical: np.ndarray | None = None, lexical_weight: float = 0.0) -> np.ndarray:
    """Fused ``(b, n)`` scores; see the module docstring for the formulas.

    Args:
        dense: ``(b, n)`` text scores.
        collab: ``(b, n)`` collaborative scores.
        weight: ``w`` in ``[0, 1]``.
        trust: ``(n,)`` per-item ``t_i`` (:func:`item_trust`).
        fusion: ``weighted`` or ``rrf``.
        bridged: ``(b, n)`` borrowed collaborative scores ``b`` (:meth:`HybridModel.bridge_scores`), or None.
        bridge_weight: its weight ``bridge`` in ``[0, 1]`` on items without evidence of their own.
        lexical: ``(b, n)`` BM25 scores ``l`` (:class:`~recsys_llm.hybrid.lexical.LexicalScorer`), or None.
        lexical_weight: its weight ``lex`` on items without any interaction (``bridge + lex <= 1``): the
            cold-item fallback, so warm items are ranked as without it.
    """
    if dense.shape != collab.shape or trust.shape != (dense.shape[1],):
        raise ValueError(f"dense {dense.shape}, collaborative {collab.shape} and trust {trust.shape} disagree")
    if not (0.0 <= weight <= 1.0 and bridge_weight >= 0.0 and lexical_weight >= 0.0
            and bridge_weight + lexical_weight <= 1.0 + 1e-9):
        raise ValueError(f"fusion weights must be in [0, 1] (bridge + lexical <= 1); got weight={weight}, "
                         f"bridge_weight={bridge_weight}, lexical_weight={lexical_weight}")
    if fusion not in ("weighted", "rrf"):
        raise ValueError(f"unknown fusion {fusion!r}; choose weighted or rrf")
    flat = collab.std(axis=1, keepdims=True) <= 1e-12  # (b, 1): no collaborative evidence: text only
    a = np.where(flat, 0.0, weight * trust[None, :]).astype(np.float32)  # (b, n) own evidence
    part = zscore_rows if fusion == "weighted" else (lambda x: 1.0 / (RRF_K + _ranks(x)))
    rest = np.float32(1.0) - a
    terms = []
    if bridged is not None and bridge_weight > 0:
        g = np.where(flat, 0.0, bridge_weight * (1.0 - trust[None, :])).astype(np.float32)  # (b, n) borrowed
        rest, terms = rest - g, [*terms, (g, bridged)]
    if lexical is not None and lexical_weight > 0:  # items without evidence (every item, for a user without any)
        lw = np.where(flat, lexical_weight, lexical_weight * (trust[None, :] == 0)).astype(np.float32)
        rest, terms = rest - lw, [*terms, (lw, lexical)]
    out = rest * part(dense)
    out += a * part(collab)
    for coef, scores in terms:
        out += coef * part(scores)
    return out.astype(np.float32)


@dataclasses.dataclass
class HybridModel:
    """Dense scores + collaborative scores -> fused scores, with the settings chosen on validation.

    Attributes:
        cf: the collaborative source, or None (text only).
        weight: ``w``; confidence / trust_power: the trust curve (:func:`item_trust`); fusion: ``weighted`` / ``rrf``.
        few_trust: ``(confidence, power, horizon)`` of the few-shot curve for items with at most ``horizon``
            interactions, or None (one curve for every item).
        halflife: recency weighting of the collaborative query (:meth:`CollaborativeScorer.score`).
        neighbours: the text-neighbour matrix ``N`` of the bridge; bridge: its weight (0 = off).
        lexical: BM25 over the item texts; lexical_weight: its weight on items without evidence (0 = off).
        user_model: which user representation the dense part uses (``text`` / ``pooling`` / ``sequence``).
        info: the validation record (grids, pooling and sequence training), saved in ``hybrid.json``.
    """

    cf: CollaborativeScorer | None
    weight: float = 0.5
    confidence: float = 10.0
    fusion: str = "weighted"
    user_model: str = "text"
    halflife: float = 0.0
    info: dict = dataclasses.field(default_factory=dict)
    neighbours: sp.csr_matrix | None = None
    bridge: float = 0.0
    lexical: LexicalScorer | None = None
    lexical_weight: float = 0.0
    trust_power: float = 1.0
    few_trust: tuple[float, float, float] | None = None

    def bridge_scores(self, collab: np.ndarray) -> np.ndarray | None:
        """Each item's borrowed collaborative score (:func:`bridge_scores`), None without neighbours."""
        return None if self.neighbours is None else bridge_scores(self.neighbours, collab)

    def score(self, dense: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Fused ``(b, n)`` scores for users with ``dense`` text scores and known ``histories``."""
        dense = np.asarray(dense, dtype=np.float32)
        if self.cf is None or (self.weight == 0.0 and self.bridge == 0.0 and self.lexical_weight == 0.0):
            return dense
        collab = self.cf.score(histories, n_items=dense.shape[1], halflife=self.halflife)
        lexical = None
        if self.lexical is not None and self.lexical_weight > 0:
            lexical = self.lexical.score(histories, n_items=dense.shape[1])
        trust = item_trust(self.cf.counts, self.confidence, dense.shape[1], self.trust_power, self.few_trust)
        return fuse(dense, collab, self.weight, trust,
                    self.fusion, self.bridge_scores(collab) if self.bridge > 0 else None, self.bridge,
                    lexical, self.lexical_weight)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        if self.cf is not None:
            self.cf.save(folder)
        atomic_write_json(folder / META_FILE, {
            "format": FORMAT, "cf_model": self.cf.name if self.cf is not None else "none",
            "weight": self.weight, "confidence": self.confidence, "fusion": self.fusion,
            "user_model": self.user_model, "halflife": self.halflife, "bridge": self.bridge,
            "lexical_weight": self.lexical_weight, "trust_power": self.trust_power,
            "few_trust": None if self.few_trust is None else list(self.few_trust), **self.info})
        if self.neighbours is not None:
            save_sparse(folder / NEIGHBOURS_FILE, self.neighbours)
        if self.lexical is not None:
            self.lexical.save(folder)

    @classmethod
    def load(cls, folder: str | Path) -> HybridModel:
        folder = Path(folder)
        path = folder / META_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; run `recsys-llm hybrid --run-dir RUN` first")
        meta = load_json(path)
        if meta.get("format") not in READABLE:
            raise ValueError(f"{path}: format {meta.get('format')} is not one of {READABLE}; rerun "
                             "`recsys-llm hybrid`")
        cf = None if meta["cf_model"] == "none" else CollaborativeScorer.load(folder)
        info = {k: v for k, v in meta.items() if k not in
                ("format", "cf_model", "weight", "confidence", "fusion", "user_model", "halflife", "bridge",
                 "lexical_weight", "trust_power", "few_trust")}
        neighbours = None
        if (folder / NEIGHBOURS_FILE).exists():
            t, _ = load_sparse(folder / NEIGHBOURS_FILE)
            n = len(t["indptr"]) - 1
            neighbours = sp.csr_matrix((t["data"], t["indices"], t["indptr"]), shape=(n, n))
        lexical = LexicalScorer.load(folder) if (folder / LEXICAL_FILE).exists() else None
        return cls(cf, float(meta["weight"]), float(meta["confidence"]), meta["fusion"], meta["user_model"],
                   float(meta["halflife"]), info, neighbours, float(meta.get("bridge", 0.0)), lexical,
                   float(meta.get("lexical_weight", 0.0)), float(meta.get("trust_power", 1.0)),
                   _few_trust(meta.get("few_trust")))


def _few_trust(value) -> tuple[float, float, float] | None:
    """``hybrid.json``'s ``few_trust`` (absent before it existed: one curve)."""
    return None if value is None else (float(value[0]), float(value[1]), float(value[2]))


# -------------------------------------------------------------------------------------------- selection
def ndcg_at(scores: np.ndarray, targets: Sequence[np.ndarray], exclude: Sequence[np.ndarray],
            k: int = 10) -> np.ndarray:
    """Per-user NDCG@k of a full ranking of ``scores`` rows with ``exclude`` filtered, for the users with
    targets (:func:`recsys_llm.ranking.full_ranking_metrics`, the scorer every validation uses)."""
    ndcg = full_ranking_metrics(np.ascontiguousarray(scores, dtype=np.float32), list(targets), k,
                                seen=list(exclude), metrics=("ndcg",))[f"ndcg@{k}"]
    return ndcg[~np.isnan(ndcg)]


def select_weight(dense: np.ndarray, collab: np.ndarray, trust: np.ndarray, targets: Sequence[np.ndarray],
                  exclude: Sequence[np.ndarray], weights: Sequence[float], fusion: str = "weighted",
                  k: int = 10, bridged: np.ndarray | None = None, bridge_weight: float = 0.0,
                  vary: str = "weight") -> tuple[float, dict[float, float]]:
    """The weight (``vary="weight"``: ``w``; ``"bridge"``: the bridge weight) with the best mean validation
    NDCG@k (ties: the smaller weight) and the grid."""
    def run(v: float) -> float:
        w, g = (v, bridge_weight) if vary == "weight" else (0.0, v)
        return float(np.nanmean(ndcg_at(fuse(dense, collab, w, trust, fusion, bridged, g), targets, exclude, k)))

    grid = {float(w): run(float(w)) for w in sorted(set(weights))}
    best = max(grid, key=lambda w: (grid[w], -w))
    return best, grid
