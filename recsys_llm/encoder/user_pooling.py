"""A learned pooling user model over frozen item embeddings: the user is a weighted mean of their history.

Encoding a user's history as text costs one transformer pass per user; this model reads the (frozen,
fine-tuned) item embeddings of the history instead and learns only a few thousand parameters: a recency weight
per position, a content-attention query, a ``dim x dim`` projection and a temperature.

``user = normalize(proj(sum_j w_j e_j))`` with ``w = softmax_j(recency[j] + e_j . query)`` over the real
history items, position 0 = the most recent. At the zero initialisation (recency = query = 0, proj = identity)
the user is exactly the normalised mean of the history embeddings, the usual strong baseline; training moves
away from it only where the next-item loss says so, and :func:`fit_pooling` keeps the mean model when the
trained one validates worse.

Speed of :func:`fit_pooling` (measured once: random unit items, 943 users x 1682 items x 384 dims,
ML-100k-like history lengths 20-737 (mean 108, 101k examples), 400 steps at batch 256, max_items 50, on 2 CPU
cores that another job kept ~1.2 busy, two Recall@10 passes over 300 validation users included): 6.5-7.2 s
with 2 torch threads and ``OMP_WAIT_POLICY=PASSIVE`` (as ``tests/conftest.py`` sets), 5.8-8.3 s with 1
thread; but 86 s with 2 threads and OpenMP's default active wait, which spins against the other job on these
small ops.

The model and its artifact live in :mod:`recsys_llm.encoder.pooling_model`, the history packing in
:mod:`recsys_llm.encoder.histories`; this module trains it (through the fit it shares with the sequence user
model, :mod:`recsys_llm.encoder._history_fit`) and re-exports both, so
``from recsys_llm.encoder.user_pooling import PoolingUserModel, encode_histories, fit_pooling`` works.

Example:
    >>> rng = np.random.default_rng(0)
    >>> item_emb = rng.normal(size=(30, 8)).astype(np.float32)
    >>> item_emb /= np.linalg.norm(item_emb, axis=1, keepdims=True)
    >>> histories = [rng.integers(0, 30, size=int(n)) for n in rng.integers(2, 8, size=40)]
    >>> model, info = fit_pooling(item_emb, histories, steps=5, batch_size=16, lr=3e-3, max_items=10,
    ...                           seed=0, show_progress=False)
    >>> encode_histories(model, item_emb, histories[:3]).shape  # (n_users, dim), unit rows
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

from recsys_llm.encoder._history_fit import ModelKind, Scored, fit_model
from recsys_llm.encoder.histories import pack_histories
from recsys_llm.encoder.next_item import NextItemExamples, Valid, fit_inputs
from recsys_llm.encoder.pooling_model import (
    FORMAT_VERSION,
    PoolingUserModel,
    encode_histories,
    encode_ids,
)

__all__ = ["FORMAT_VERSION", "PoolingUserModel", "encode_histories", "fit_pooling", "pack_histories"]

logger = logging.getLogger(__name__)

_KIND = ModelKind("user pooling", start="mean pooling", kept="mean pooling", encode=encode_histories, logger=logger)


def fit_pooling(
    item_emb: np.ndarray,
    histories: Sequence[np.ndarray],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    max_items: int,
    seed: int,
    allowed_items: np.ndarray | None = None,
    device: str = "cpu",
    valid: Valid | None = None,
    show_progress: bool = True,
) -> tuple[PoolingUserModel, dict[str, Any]]:
    """Train a :class:`PoolingUserModel` on next-item prediction over frozen item embeddings.

    Examples are every ``(prefix h[:c] -> positive h[c])``, ``1 <= c < len(h)``, stored as indices (never
    as dense prefixes); each step draws ``batch_size`` of them uniformly (seeded numpy Generator) and packs
    the last ``max_items`` items of each prefix. Loss: full softmax cross-entropy over ``allowed_items``,
    logits ``scale * user @ item_emb[allowed].T``, the positive's column as label, the prefix's other items
    masked out. AdamW (torch default weight decay 0.01), nothing random on the torch side (the start is
    deterministic), torch seeded with ``seed`` anyway.

    Speed: see the module docstring.

    Args:
        item_emb: ``(n_items, dim)`` float item embeddings, frozen (L2-normalised in this library).
        histories: per user, int item-id arrays, oldest first.
        steps: optimizer steps; 0 returns the untrained model (= mean pooling).
        batch_size: examples per step.
        lr: AdamW learning rate.
        max_items: most recent prefix items read (the model's ``max_items``).
        seed: seeds the example sampling and torch.
        allowed_items: int item ids the softmax ranks over (default all); every positive must be among them.
        device: ``cpu``, ``cuda``, ``auto``...
        valid: optional ``(histories, targets)``, ``targets[u]`` an int array of held-out ids; Recall@10
            (full ranking over ``allowed_items``, history items excluded) of the mean start and of the
            trained model; the better one is returned.
        show_progress: tqdm bar with the loss.

    Returns:
        ``(model, info)``: the model in eval mode on ``device``; ``info`` = ``{"steps", "final_loss"`` (mean
        loss of the last 10% of steps, NaN if ``steps == 0``), ``"train_examples", "seconds", "kept"``
        (``"trained"`` or ``"mean"``) and, with ``valid``, ``"valid_recall@10_mean", "valid_recall@10"}``.

    Raises:
        ValueError: bad arguments, ids outside ``item_emb``, a positive outside ``allowed_items``, no
            training example (every history shorter than 2), or ``valid`` without any target.
    """
    t0 = time.perf_counter()
    fit = fit_inputs(item_emb, histories, steps=steps, batch_size=batch_size, max_items=max_items, lr=lr,
                     allowed_items=allowed_items, valid=valid, device=device)
    dim, examples = fit.item_np.shape[1], fit.examples
    item_t = torch.from_numpy(fit.item_np).to(fit.device)  # (n_items, dim)
    allowed_t = item_t[torch.from_numpy(fit.allowed).to(fit.device)]  # (n_allowed, dim)

    def step(model: PoolingUserModel, rng: np.random.Generator) -> Scored:
        """Full softmax: the batch's users against every allowed item."""
        ids, labels, cells = _draw(examples, rng, batch_size, model.max_items)
        user = encode_ids(model, item_t, ids)  # (b, dim)
        return model.scale() * (user @ allowed_t.T), labels, cells  # (b, n_allowed)

    start = partial(PoolingUserModel, dim, max_items)  # mean pooling, the same whatever the seed
    info: dict[str, Any] = {"steps": int(steps), "train_examples": len(examples)}
    model = fit_model(_KIND, fit, info, start, step, restart=start, steps=steps, lr=lr, seed=seed, valid=valid,
                      fork_cuda=False, max_grad_norm=None, show_progress=show_progress, t0=t0)
    return model, info


def _draw(examples: NextItemExamples, rng: np.random.Generator, size: int, max_items: int
          ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """``size`` uniform examples: packed prefixes ``(b, L)``, label columns ``(b,)`` and the (row, column)
    logit cells of each prefix's items (masked: a seen item is no negative), the positive's excepted."""
    batch = examples.sample(rng, size)  # (b,)
    labels = examples.label_col[batch]
    rows, items = examples.prefix_items(batch)
    cols = examples.col_of[items]
    keep = (cols >= 0) & (cols != labels[rows])
    return examples.packed(batch, max_items), labels, (rows[keep], cols[keep])
