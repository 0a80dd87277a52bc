"""The fit shared by the history user models: seeded start, training loop, keeping the better of trained and start.

:func:`~recsys_llm.encoder.user_pooling.fit_pooling` and :func:`~recsys_llm.encoder.user_sequence.fit_sequence`
differ in their model and in what one training step scores (the full softmax over the allowed items, or a
sampled candidate set); everything around that is :func:`fit_model`: build the model under torch seeded with
the fit's seed, measure the start's validation Recall@10, run :func:`train_steps` (AdamW, masked softmax
cross-entropy), and keep the trained model only when it validates at least as well as the start
(:func:`keep_better`). The examples and the argument checks are :mod:`recsys_llm.encoder.next_item`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from recsys_llm.encoder.next_item import FitInputs, Valid, finish_info, fit_summary, valid_recall

__all__ = ["ModelKind", "Scored", "fit_model", "keep_better", "torch_seeded", "train_steps"]

M = TypeVar("M", bound=nn.Module)

Scored = tuple[torch.Tensor, np.ndarray, tuple[np.ndarray, np.ndarray]]
"""What a training step scores: ``(logits (b, c), label columns (b,), (rows, cols))``, the (row, column)
logit cells to mask (a prefix's own items: a seen item is no negative)."""


@dataclass(frozen=True)
class ModelKind:
    """How a history user model's fit names things and encodes users.

    ``name`` heads its log lines (``"user pooling"``) and, after ``"fit "``, its progress bar; ``start`` is
    the untrained start in the fallback warning (``"mean pooling"``) and ``kept`` what that warning says is
    kept; ``encode(model, item_emb, histories)`` gives the user vectors that validation ranks with; ``logger``
    is the fitting module's.
    """

    name: str
    start: str
    kept: str
    encode: Callable[[Any, np.ndarray, Sequence[np.ndarray]], np.ndarray]
    logger: logging.Logger


@contextmanager
def torch_seeded(seed: int, devices: Sequence[torch.device] = ()) -> Iterator[None]:
    """Torch seeded with ``seed`` inside; the CPU RNG (and the CUDA RNGs of ``devices``) restored after."""
    with torch.random.fork_rng(devices=list(devices)):
        torch.manual_seed(seed)
        yield


def fit_model(kind: ModelKind, fit: FitInputs, info: dict[str, Any], build: Callable[[], M],
              step: Callable[[M, np.random.Generator], Scored], *, restart: Callable[[], M], steps: int, lr: float,
              seed: int, valid: Valid | None, fork_cuda: bool, max_grad_norm: float | None, show_progress: bool,
              t0: float) -> M:
    """Build, validate, train and choose a history user model; ``info`` is filled in (see the fits).

    Args:
        kind: the model's names, encoder and logger.
        fit: the checked inputs (:func:`~recsys_llm.encoder.next_item.fit_inputs`).
        info: the fit's record so far (``steps``, ``train_examples``...); the validation recalls,
            ``final_loss``, ``kept`` and ``seconds`` are added in that order.
        build: the untrained model (on CPU), called with torch seeded with ``seed``; moved to ``fit.device``.
        step: one step's scores of ``model``, drawing its examples from the numpy generator it is given.
        restart: the start again, when the trained model validates worse (moved to the model's device).
        steps, lr, seed, max_grad_norm: as :func:`train_steps`.
        valid: validation users, or None (the trained model is kept).
        fork_cuda: also save and restore the CUDA RNG of ``fit.device`` around the build and the training
            (a model whose training draws random numbers on the GPU, e.g. dropout).
        show_progress: tqdm bar with the loss.
        t0: ``time.perf_counter()`` at the start of the fit (``info["seconds"]`` counts from it).

    Returns:
        The chosen model, in eval mode on ``fit.device``.
    """
    devices = [fit.device] if fork_cuda and fit.device.type == "cuda" else []
    with torch_seeded(seed, devices):
        model = build().to(fit.device)
        if valid is not None:
            info["valid_recall@10_mean"] = _valid_recall(kind, model, fit, valid)
        losses = train_steps(model, step, steps=steps, lr=lr, seed=seed, desc=f"fit {kind.name}",
                             max_grad_norm=max_grad_norm, show_progress=show_progress)
    finish_info(info, losses, steps)
    if valid is not None:
        model = keep_better(kind, model, info, lambda m: _valid_recall(kind, m, fit, valid), restart,
                            len(valid[0]))
    info["seconds"] = time.perf_counter() - t0
    kind.logger.info(f"{kind.name}: %s", fit_summary(info, len(fit.examples), valid is not None))
    return model


def train_steps(model: M, step: Callable[[M, np.random.Generator], Scored], *, steps: int, lr: float, seed: int,
                desc: str, max_grad_norm: float | None, show_progress: bool) -> list[float]:
    """``steps`` AdamW steps (torch's default weight decay) of softmax cross-entropy over ``step``'s logits,
    its masked cells at ``-inf``; the gradient norm clipped at ``max_grad_norm`` unless None. ``step`` draws
    from one numpy generator seeded with ``seed``. The model trains in train mode and is left in eval mode;
    returns the losses."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses: list[float] = []
    model.train()
    with tqdm(range(steps), desc=desc, unit="step", disable=not show_progress) as bar:
        for i in bar:
            logits, labels, (rows, cols) = step(model, rng)
            dev = logits.device
            if rows.size:
                logits = logits.index_put((torch.from_numpy(rows).to(dev), torch.from_numpy(cols).to(dev)),
                                          torch.tensor(float("-inf"), device=dev))
            loss = F.cross_entropy(logits, torch.from_numpy(labels).to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            losses.append(float(loss.detach()))
            if i % 10 == 0 or i == steps - 1:
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.eval()
    return losses


def keep_better(kind: ModelKind, model: M, info: dict[str, Any], recall: Callable[[M], float],
                restart: Callable[[], M], n_valid: int) -> M:
    """The trained model, or ``restart()`` (the untrained start, in eval mode on the model's device) when the
    start's ``info["valid_recall@10_mean"]`` beats the trained ``recall(model)``; ``info`` records both."""
    start_recall = info["valid_recall@10_mean"]
    trained = recall(model) if info["steps"] else start_recall
    info["valid_recall@10"] = trained
    if info["steps"] and trained < start_recall:
        kind.logger.warning(f"{kind.name}: trained Recall@10 %.4f < {kind.start} %.4f on %d validation users; "
                            f"keeping {kind.kept}", trained, start_recall, n_valid)
        model = restart().to(next(model.parameters()).device).eval()
        info["kept"] = "mean"
    return model


def _valid_recall(kind: ModelKind, model: nn.Module, fit: FitInputs, valid: Valid) -> float:
    return valid_recall(lambda h: kind.encode(model, fit.item_np, h), fit.item_np, fit.allowed, *valid)
