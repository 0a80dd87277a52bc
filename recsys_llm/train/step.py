"""One two-tower optimizer step's forward and backward pass, and the options that trade compute for memory.

:class:`TrainModule` wraps the encoder and the (optionally learnable) InfoNCE temperature in one module, so
distributed data parallel syncs both. :func:`backward_step` encodes a batch of (user text, positive item)
pairs, computes in-batch InfoNCE and back-propagates it; with ``grad_accum_steps = k > 1`` it uses gradient
caching (Gao et al., 2021): the embeddings of all k micro-batches are computed without a graph, the loss over
the whole batch gives the gradient of every embedding, and each micro-batch is then re-encoded with a graph
(same dropout masks) and back-propagated with those gradients. The update equals that of one batch of
``batch_size * k`` pairs, at one micro-batch's activation memory and one extra forward pass. A :class:`Batch`
may carry hard negatives (``TrainConfig.hard_negatives``): more item columns, encoded in the same forward call,
that every user of the whole batch is scored against.
:func:`enable_gradient_checkpointing` recomputes activations in the backward pass instead of storing them.

Example:
    >>> module = TrainModule(encoder, temperature=0.05, learnable=True)  # doctest: +SKIP
    >>> model = accelerator.prepare(module)  # doctest: +SKIP
    >>> loss = backward_step(model, module, accelerator, inputs, idx, micro_batches=4)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.losses.info_nce import in_batch_info_nce

__all__ = ["TEMPERATURE_RANGE", "Batch", "TrainModule", "backward_step", "disable_gradient_checkpointing",
           "enable_gradient_checkpointing"]

TEMPERATURE_RANGE = (0.01, 1.0)
"""A learnable temperature is clamped to this range."""


@dataclass
class Batch:
    """One (micro-)batch's model inputs: ``b`` users, their positives and ``m >= 0`` hard negatives."""

    user: dict
    """Tokenised user texts, ``b`` rows."""
    item: dict
    """Tokenised positive item texts, ``b`` rows (row ``i`` is user ``i``'s)."""
    item_ids: torch.Tensor
    """``(b,)`` the positives' item ids."""
    log_q: torch.Tensor | None
    """``(b,)`` their log q (logQ correction), or None."""
    neg: dict | None = None
    """Tokenised hard-negative item texts, ``m`` rows, or None."""
    neg_ids: torch.Tensor | None = None
    """``(m,)`` the hard negatives' item ids."""
    neg_log_q: torch.Tensor | None = None
    """``(m,)`` their log q, or None."""


class TrainModule(nn.Module):
    """The encoder plus the (optionally learnable) temperature: one module, so DDP syncs both."""

    log_temperature: nn.Parameter | None

    def __init__(self, encoder: TwoTowerEncoder, temperature: float, learnable: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.fixed_temperature = float(temperature)
        param = nn.Parameter(torch.tensor(math.log(temperature))) if learnable else None
        self.register_parameter("log_temperature", param)

    def temperature(self) -> torch.Tensor | float:
        if self.log_temperature is None:
            return self.fixed_temperature
        return self.log_temperature.exp().clamp(*TEMPERATURE_RANGE)

    def temperature_value(self) -> float:
        return float(torch.as_tensor(self.temperature()).detach())

    def clamp_temperature(self) -> None:
        """Keep a learnable temperature inside :data:`TEMPERATURE_RANGE` after an optimizer step."""
        if self.log_temperature is not None:
            with torch.no_grad():
                self.log_temperature.clamp_(*(math.log(t) for t in TEMPERATURE_RANGE))

    def forward(self, user: dict, item: dict, neg: dict | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | float]:
        """User, positive-item and (with ``neg``) hard-negative embeddings, and the temperature."""
        if neg is None:
            user_emb, item_emb = self.encoder(user, item)  # (batch, dim) each
            return user_emb, item_emb, None, self.temperature()
        user_emb, item_emb, neg_emb = self.encoder(user, item, neg)  # (batch, dim) x 2, (m, dim)
        return user_emb, item_emb, neg_emb, self.temperature()


def backward_step(model: nn.Module, module: TrainModule, accelerator: Accelerator,
                  inputs: Callable[[np.ndarray], Batch], rows: np.ndarray, micro_batches: int,
                  neg_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Forward + backward of the examples ``rows`` (gradient-cached in ``micro_batches`` parts); the loss, detached.

    Args:
        model: ``module`` as prepared by ``accelerator`` (DDP-wrapped when distributed).
        module: the unwrapped :class:`TrainModule` (its temperature).
        inputs: a slice of ``rows`` -> :class:`Batch`.
        rows: ``(batch, ...)`` one entry per example (pair indices, or pair indices with their hard
            negatives); split along the first axis into micro-batches.
        micro_batches: ``k`` of the gradient caching; 1 = one plain forward/backward.
        neg_mask: optional ``(batch, m)`` bool over the whole batch's hard negatives (micro-batch order): True
            where a hard negative is no negative for that row (a false negative).
    """
    if micro_batches == 1:
        b = inputs(rows)
        user_emb, item_emb, neg_emb, tau = model(b.user, b.item, b.neg)  # (batch, dim) x 2, (m, dim)
        loss = _loss(user_emb, item_emb, neg_emb, tau, [b], neg_mask)
        accelerator.backward(loss)
        return loss.detach()
    chunks = [inputs(c) for c in np.array_split(rows, micro_batches)]
    device = accelerator.device
    rng_states, embs = [], []
    with torch.no_grad():  # 1. every micro-batch's embeddings, no graph
        for c in chunks:
            rng_states.append(_rng_now(device))
            embs.append(model(c.user, c.item, c.neg)[:3])  # (micro, dim) x 2, (m_j, dim) or None
    user_all = torch.cat([e[0] for e in embs]).requires_grad_()  # (batch, dim)
    item_all = torch.cat([e[1] for e in embs]).requires_grad_()  # (batch, dim)
    negs = [e[2] for e in embs if e[2] is not None]
    neg_all = torch.cat(negs).requires_grad_() if negs else None  # (m, dim)
    tau_value = module.temperature()
    tau_leaf = tau_value.detach().requires_grad_() if isinstance(tau_value, torch.Tensor) else tau_value
    loss = _loss(user_all, item_all, neg_all, tau_leaf, chunks, neg_mask)  # 2. loss over the whole batch
    wrt = {"user": user_all, "item": item_all, "neg": neg_all, "tau": tau_leaf}
    wrt = {k: t for k, t in wrt.items() if isinstance(t, torch.Tensor)}
    grads = dict(zip(wrt, torch.autograd.grad(loss, list(wrt.values())), strict=True))
    start = neg_start = 0
    for j, c in enumerate(chunks):  # 3. re-encode with a graph, same dropout masks
        rows_j = slice(start, start + len(c.user["input_ids"]))
        negs_j = slice(neg_start, neg_start + (len(c.neg_ids) if c.neg_ids is not None else 0))
        start, neg_start = rows_j.stop, negs_j.stop
        last = j == len(chunks) - 1
        with accelerator.no_sync(model) if not last else nullcontext(), _replay_rng(rng_states[j], device):
            u, v, n, tau = model(c.user, c.item, c.neg)
            surrogate = (u * grads["user"][rows_j]).sum() + (v * grads["item"][rows_j]).sum()
            if n is not None:
                surrogate = surrogate + (n * grads["neg"][negs_j]).sum()
            if last and "tau" in grads:
                surrogate = surrogate + tau * grads["tau"]
            accelerator.backward(surrogate)
    return loss.detach()


def _loss(user_emb: torch.Tensor, item_emb: torch.Tensor, neg_emb: torch.Tensor | None,
          tau: torch.Tensor | float, chunks: list[Batch], neg_mask: torch.Tensor | None) -> torch.Tensor:
    """In-batch InfoNCE over the micro-batches' embeddings (concatenated in order) and their hard negatives."""
    log_qs = [c.log_q for c in chunks if c.log_q is not None]
    kwargs = {}
    if neg_emb is not None:
        kwargs = {"neg_emb": neg_emb, "neg_ids": torch.cat([c.neg_ids for c in chunks if c.neg_ids is not None]),
                  "neg_mask": neg_mask}
        neg_log_qs = [c.neg_log_q for c in chunks if c.neg_log_q is not None]
        kwargs["neg_log_q"] = torch.cat(neg_log_qs) if neg_log_qs else None
    return in_batch_info_nce(user_emb, item_emb, tau, torch.cat([c.item_ids for c in chunks]),
                             torch.cat(log_qs) if log_qs else None, **kwargs)


@contextmanager
def _replay_rng(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> Iterator[None]:
    """Run the block with the given (CPU, CUDA) generator states; the outer states are left as they were."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.set_rng_state(state[0])
        if cuda and state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


def _rng_now(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def enable_gradient_checkpointing(encoder: TwoTowerEncoder) -> bool:
    """Turn on non-reentrant activation checkpointing in the backbone; True when this call turned it on.

    Works through a peft wrapper (attributes resolve to the transformers model). Non-reentrant checkpointing
    needs no ``requires_grad`` inputs, so frozen embeddings under LoRA are fine.
    """
    model = encoder.model
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(model).__name__} does not support gradient checkpointing; "
                         "set train.gradient_checkpointing=false")
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        if model.is_activation_checkpointing:
            return False
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        if model.is_gradient_checkpointing:
            return False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return True


def disable_gradient_checkpointing(encoder: TwoTowerEncoder) -> None:
    model = encoder.model
    if hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()
    if hasattr(model, "disable_input_require_grads"):
        model.disable_input_require_grads()  # enabling registered an embedding hook; remove it
