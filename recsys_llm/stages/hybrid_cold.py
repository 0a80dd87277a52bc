"""The hybrid stage's validation users, and its all-items-cold validation: how the cold-item parts (the bridge,
BM25) are weighted and how each user representation is judged on items nobody has touched.

The cold-item test slice (:mod:`recsys_llm.protocol`) draws a random set of items, removes every interaction of
them from training, and ranks each user's interactions with them among those items only, from the user's warm
history. The all-items-cold validation mirrors it inside the training data (:func:`validation`):

* a seeded sample of the warm items becomes *pseudo-cold* (:func:`recsys_llm.protocol.pseudo_cold_items`), as
  many as the cold items (at least 10% of the warm items), drawn uniformly as
  :func:`recsys_llm.data.splits.choose_cold_items` draws the cold ones, so their popularity is the catalogue's
  rather than that of what users did next;
* a seeded sample of the users who have training interactions with them (``hybrid.valid_users``, at most
  :data:`COLD_USERS` when that is 0) is ranked,
  from the rest of their training history, over the pseudo-cold items: every such interaction is a target;
* the collaborative part is refitted with its tuned setting without any interaction of the pseudo-cold items,
  and the bridge's text neighbours are drawn from the items that keep interactions (:func:`cold_refit`).

With ``hybrid.blind_cold_validation`` (the default) the fine-tuned encoder and the history user models never
saw the pseudo-cold items' interactions either (:func:`recsys_llm.protocol.blind_histories`): when they had
(fine-tuned with it off, or with another ``hybrid.seed``), the dense part learned which pseudo-cold items are
popular and these validations overrate it (on the ml-100k cold-start recipe: 1.66x BM25 on validation, 1.08x
on the cold-item test), so the hybrid stage records whether they were blind and warns when not.

Example:
    >>> one_se_simplest([(0.0, 0.0), (0.5, 0.0)], [np.array([0.2, 0.3]), np.array([0.9, 1.0])],
    ...                 {(0.0, 0.0): 0.25, (0.5, 0.0): 0.95})
    (0.5, 0.0)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from recsys_llm.config import HybridConfig
from recsys_llm.data.splits import Split, histories, targets
from recsys_llm.hybrid import CollaborativeScorer, text_neighbours
from recsys_llm.hybrid.evidence import (
    from_position,
    hide_beyond,
    pseudo_cold_exclusions,
    refit,
    within_one_se,
    without_items,
)
from recsys_llm.protocol import pseudo_cold_items, sample_users, validation_users
from recsys_llm.run import ArtifactError, Context

logger = logging.getLogger(__name__)

__all__ = ["Evidence", "Validation", "cold_choice", "cold_refit", "few_shot_evidence", "one_se_simplest",
           "pseudo_cold_users",
           "validation"]

COLD_USERS = 2000
"""At most this many all-items-cold users (a seeded sample) when ``hybrid.valid_users`` is 0 (all): each is one
more history encoded by every user model."""


@dataclass
class Validation:
    """Validation users (training histories, validation targets) and the all-items-cold validation.

    Attributes:
        users / hist / targets: the warm validation users, their training histories and validation items.
        cold_excl: per all-items-cold user, every item it is not ranked over (outside the pseudo-cold items, or
            known).
        cold_items: the pseudo-cold items (None: not drawn).
        cold_cf / cold_neighbours: the collaborative part and the bridge's neighbours refitted without them
            (:func:`cold_refit`; None: the warm ones).
        cold_hist / cold_targets / cold_users: the all-items-cold users' histories without the pseudo-cold items,
            their interactions with them, and their ids (None: the warm users' ``hist`` and ``targets``).
    """

    users: np.ndarray
    hist: list[np.ndarray]
    targets: list[np.ndarray]
    cold_excl: list[np.ndarray]
    cold_items: np.ndarray | None = None
    cold_cf: CollaborativeScorer | None = None
    cold_neighbours: sp.csr_matrix | None = None
    cold_hist: list[np.ndarray] | None = None
    cold_targets: list[np.ndarray] | None = None
    cold_users: np.ndarray | None = None

    @property
    def cold_users_hist(self) -> list[np.ndarray]:
        """The histories the all-items-cold validation scores from."""
        return self.hist if self.cold_hist is None else self.cold_hist

    @property
    def cold_users_targets(self) -> list[np.ndarray]:
        """The targets of the all-items-cold validation."""
        return self.targets if self.cold_targets is None else self.cold_targets


def pseudo_cold_users(train_hist: list[np.ndarray], pseudo: np.ndarray, n: int, seed: int
                      ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Users with training interactions on ``pseudo`` and others besides (a seeded sample of ``n``, 0 = all):
    ``(users, histories without the pseudo items, in order, their pseudo items)``."""
    inside = [np.isin(h, pseudo) for h in train_hist]
    users = np.array([u for u, m in enumerate(inside) if m.any() and not m.all()], dtype=np.int64)
    users = sample_users(users, n, seed)
    return (users, [train_hist[u][~inside[u]] for u in users],
            [np.unique(train_hist[u][inside[u]]) for u in users])


def validation(ctx: Context, hc: HybridConfig, train_hist: list[np.ndarray]) -> Validation:
    """The warm validation users and the all-items-cold validation that mirrors the cold-item slice (module
    doc); the collaborative refit is :func:`cold_refit`'s."""
    split = ctx.split
    vusers, tg = validation_users(split, train_hist, hc.valid_users, hc.seed)
    if len(vusers) == 0:
        raise ArtifactError(ctx.run.splits, "no user has both training and validation interactions, so the "
                            "hybrid cannot be validated (use a leave_last_out split or set hybrid.enabled=false)",
                            "prepare", ctx.run.root)
    pseudo = pseudo_cold_items(split, hc.seed)
    cold_users, cold_hist, cold_tg = pseudo_cold_users(train_hist, pseudo, hc.valid_users or COLD_USERS, hc.seed)
    logger.info("all-items-cold validation: %d pseudo-cold items, %d users, %d targets", len(pseudo), len(cold_hist),
                sum(len(t) for t in cold_tg))
    return Validation(vusers, [train_hist[u] for u in vusers], [tg[u] for u in vusers],
                      pseudo_cold_exclusions(cold_hist, pseudo, split.n_items), pseudo, cold_hist=cold_hist,
                      cold_targets=cold_tg, cold_users=cold_users)


def cold_refit(hc: HybridConfig, split: Split, val: Validation, cf: CollaborativeScorer | None, model,
               item_emb: np.ndarray) -> tuple[Validation, dict]:
    """``val`` with the all-items-cold validation's collaborative part: ``cf`` refitted with its tuned setting
    (``model``) on the training interactions minus every interaction of ``val.cold_items``, and the bridge's
    text neighbours drawn from the items that keep interactions. Otherwise a pseudo-cold item borrows through
    the bridge from neighbours (and a query) fitted on its own interactions, which the cold-item test never has
    (issue 15).

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
              "train_interactions": len(split.train), "users": len(val.cold_users_hist),
              "targets": int(sum(len(t) for t in val.cold_users_targets))}
    return replace(val, cold_cf=cold_cf, cold_neighbours=nb), record


@dataclass
class Evidence:
    """The few-shot validation of the trust confidence (:func:`few_shot_evidence`): the collaborative part
    refitted with the pseudo-cold items cut to their first few interactions, and, per user (``rows`` index the
    all-items-cold users), the history it queries with, the targets and the exclusions."""

    cf: CollaborativeScorer
    rows: np.ndarray
    hist: list[np.ndarray]
    targets: list[np.ndarray]
    exclude: list[np.ndarray]
    reveal: dict[int, int]


def few_shot_evidence(hc: HybridConfig, split: Split, val: Validation, train_hist: list[np.ndarray],
                      cf: CollaborativeScorer | None, model) -> Evidence | None:
    """The item-side few-shot curve (:mod:`recsys_llm.report.fewshot`) inside the training data: each pseudo-cold
    item keeps its first ``r`` training interactions (``r`` drawn per item from ``hybrid.fewshot_reveal``), the
    collaborative part is refitted on that with its tuned setting, and the all-items-cold users are ranked over
    the pseudo-cold items; the targets are their interactions from position ``max(reveal)`` on (never
    revealed, the same whatever ``r``), everything else they did is filtered. None when ``fewshot_reveal`` is
    empty, there is no collaborative part, or no user has such a target."""
    if cf is None or not hc.fewshot_reveal or val.cold_users is None or val.cold_items is None:
        return None
    pseudo = val.cold_items
    train_r, reveal = hide_beyond(split.train, pseudo, hc.fewshot_reveal, hc.seed)
    late = targets(from_position(split.train, pseudo, max(hc.fewshot_reveal)), split.n_users)
    rows = np.array([j for j, u in enumerate(val.cold_users) if len(late[u])], dtype=np.int64)
    if not len(rows):
        return None
    cf_r = refit(cf, model, train_r, split.n_users, split.n_items)
    hist_r = histories(train_r, split.n_users)
    users = val.cold_users[rows]
    known = [np.setdiff1d(train_hist[u], late[u]) for u in users]
    logger.info("few-shot validation: %d users, %d targets on pseudo-cold items with %s interactions revealed",
                len(rows), sum(len(late[u]) for u in users), sorted(set(reveal.values())))
    return Evidence(cf_r, rows, [hist_r[u] for u in users], [late[u] for u in users],
                    pseudo_cold_exclusions(known, pseudo, split.n_items), reveal)


def cold_choice(hc: HybridConfig, grade, n_items: int, parts: dict) -> tuple[dict, tuple[float, float]]:
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
    return min((keys[i] for i in range(len(keys)) if i == best or within_one_se(per_user[best], per_user[i])),
               key=lambda k: ((k[0] > 0) + (k[1] > 0), k[0] + k[1], k[1]))

