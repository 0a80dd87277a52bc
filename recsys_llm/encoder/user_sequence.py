"""Training the sequence user model (:mod:`recsys_llm.encoder.sequence_model`) on next-item prediction.

Examples are every ``(prefix h[:c] -> positive h[c])`` of the training histories (as for the pooling model,
:mod:`recsys_llm.encoder.next_item`); each step draws ``batch_size`` of them, packs the last ``max_items`` items
of each prefix, and scores the user against a candidate set of the batch's positives (in-batch negatives, which
follow item popularity) plus ``negatives`` item ids drawn uniformly from the allowed items (a "mixed" negative
sample); a candidate in the example's own prefix is masked, and the loss is the softmax cross-entropy of the
positive. Item scores are ``user . a(item)`` through the shared item adaptor, computed as the folded user vector
against the frozen item embeddings (the same number). The model starts as the mean of the history; with
``valid`` the trained one is kept only when its Recall@10 beats that start (``info["kept"]``). The loop around
the step (seeding, AdamW, validation, the fallback) is the pooling model's too
(:mod:`recsys_llm.encoder._history_fit`).

Speed of :func:`fit_sequence` (measured on the demo data, ml-latest-small 5-core: 610 users x 3,668 items x 384
dims, 84k training examples; 2 CPU cores that other jobs kept 1.5-2.5 busy, 2 torch threads,
``OMP_WAIT_POLICY=PASSIVE``, two Recall@10 passes over 300 validation users included; batch 256, ``max_items``
50, 1,024 sampled negatives): 80 steps 8.3-9.9 s, 100 steps 11.6-12.0 s, 200 steps 19.6-26 s (34 s with
a third job running); :func:`~recsys_llm.encoder.user_pooling.fit_pooling`'s 200 steps took 8-10 s beside
them. One step is ~0.1 s because the read-out layer works in item space
(:mod:`recsys_llm.encoder.sequence_model`); projecting every (user, position) token instead took 0.30 s per step
against 0.13 s (measured once, same load).

Example:
    >>> rng = np.random.default_rng(0)
    >>> item_emb = rng.normal(size=(30, 8)).astype(np.float32)
    >>> item_emb /= np.linalg.norm(item_emb, axis=1, keepdims=True)
    >>> histories = [rng.integers(0, 30, size=int(n)) for n in rng.integers(2, 8, size=40)]
    >>> model, info = fit_sequence(item_emb, histories, steps=5, batch_size=16, lr=1e-3, max_items=10,
    ...                            negatives=8, seed=0, show_progress=False)
    >>> encode_sequences(model, item_emb, histories[:3]).shape  # (n_users, dim), unit rows
    (3, 8)
    >>> info["kept"], info["steps"]
    ('trained', 5)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from recsys_llm.encoder._history_fit import ModelKind, Scored, fit_model, torch_seeded
from recsys_llm.encoder.next_item import NextItemExamples, Valid, fit_inputs
from recsys_llm.encoder.sequence_model import FORMAT_VERSION, SequenceUserModel, encode_sequences

__all__ = ["FORMAT_VERSION", "SequenceUserModel", "encode_sequences", "fit_sequence"]

logger = logging.getLogger(__name__)

MAX_GRAD_NORM = 1.0

_KIND = ModelKind("sequence user model", start="history mean", kept="the mean", encode=encode_sequences,
                  logger=logger)


def fit_sequence(
    item_emb: np.ndarray,
    histories: Sequence[np.ndarray],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    max_items: int,
    negatives: int,
    seed: int,
    allowed_items: np.ndarray | None = None,
    device: str = "cpu",
    valid: Valid | None = None,
    show_progress: bool = True,
    heads: int = 2,
    layers: int = 1,
    dropout: float = 0.1,
) -> tuple[SequenceUserModel, dict[str, Any]]:
    """Train a :class:`SequenceUserModel` on next-item prediction over frozen item embeddings.

    Args:
        item_emb: ``(n_items, dim)`` float item embeddings, frozen (L2-normalised in this library).
        histories: per user, int item-id arrays, oldest first.
        steps: AdamW steps (``lr``, torch's default weight decay, gradient norm clipped at 1); 0 returns the
            untrained model (= the mean of the history).
        batch_size: examples per step (their positives are each other's in-batch negatives).
        lr: AdamW learning rate.
        max_items: most recent prefix items read (the model's ``max_items``).
        negatives: item ids drawn uniformly from ``allowed_items`` per step, shared by the batch (``>= 0``).
        seed: seeds the initialisation, dropout, the example and negative sampling: equal seeds, equal models.
        allowed_items: int item ids positives and negatives come from (default all); every positive must be
            among them, and validation ranks over them.
        device: ``cpu``, ``cuda``, ``auto``...
        valid: optional ``(histories, targets)``; Recall@10 (full ranking over ``allowed_items``, history
            items excluded) of the mean start and of the trained model; the better one is returned.
        show_progress: tqdm bar with the loss.
        heads, layers, dropout: the model's (:class:`SequenceUserModel`).

    Returns:
        ``(model, info)``: the model in eval mode on ``device``; ``info`` = ``{"steps", "final_loss"`` (mean
        loss of the last 10% of steps, NaN if ``steps == 0``), ``"train_examples", "negatives", "seconds",
        "kept"`` (``"trained"`` or ``"mean"``) and, with ``valid``, ``"valid_recall@10_mean",
        "valid_recall@10"}``.

    Raises:
        ValueError: bad arguments, ids outside ``item_emb``, a positive outside ``allowed_items``, no
            training example (every history shorter than 2), or ``valid`` without any target.
    """
    t0 = time.perf_counter()
    if isinstance(negatives, bool) or not isinstance(negatives, (int, np.integer)) or negatives < 0:
        raise ValueError(f"negatives must be an integer >= 0; got {negatives!r}")
    fit = fit_inputs(item_emb, histories, steps=steps, batch_size=batch_size, max_items=max_items, lr=lr,
                     allowed_items=allowed_items, valid=valid, device=device)
    dev, item_np, allowed, examples = fit.device, fit.item_np, fit.allowed, fit.examples
    arch = {"dim": item_np.shape[1], "max_items": max_items, "heads": heads, "layers": layers, "dropout": dropout}
    item_t = torch.from_numpy(item_np).to(dev)  # (n_items, dim)

    def step(model: SequenceUserModel, rng: np.random.Generator) -> Scored:
        """Sampled softmax: the batch's users against its positives and ``negatives`` uniform allowed ids."""
        batch = examples.sample(rng, batch_size)
        ids = examples.packed(batch, model.max_items)  # (b, L)
        cand, labels, cells = _candidates(examples, batch, allowed[rng.integers(0, len(allowed), negatives)])
        user = model(item_t, torch.from_numpy(ids).to(dev))  # (b, dim), folded: u . e == z . a(e)
        return model.scale() * (user @ item_t[torch.from_numpy(cand).to(dev)].T), labels, cells  # (b, c)

    def restart() -> SequenceUserModel:
        """The start again: the same seed, the same weights (the history mean)."""
        with torch_seeded(seed):
            return SequenceUserModel(**arch)

    info: dict[str, Any] = {"steps": int(steps), "train_examples": len(examples), "negatives": int(negatives)}
    model = fit_model(_KIND, fit, info, partial(SequenceUserModel, **arch), step, restart=restart, steps=steps,
                      lr=lr, seed=seed, valid=valid, fork_cuda=True, max_grad_norm=MAX_GRAD_NORM,
                      show_progress=show_progress, t0=t0)
    return model, info


def _candidates(examples: NextItemExamples, batch: np.ndarray, negatives: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """``(cand, labels, (rows, cols))``: the sorted distinct candidate ids (the batch's positives and the
    sampled negatives), each example's positive column, and the logit cells of each prefix's own items (masked:
    a seen item is no negative), the positive's excepted."""
    positives = examples.flat[examples.pos[batch]]  # (b,)
    cand = np.unique(np.concatenate([positives, negatives]))  # (c,)
    labels = np.searchsorted(cand, positives)
    rows, items = examples.prefix_items(batch)
    cols = np.minimum(np.searchsorted(cand, items), len(cand) - 1)
    keep = (cand[cols] == items) & (cols != labels[rows])
    return cand, labels, (rows[keep], cols[keep])
