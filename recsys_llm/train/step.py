"""One two-tower optimizer step's forward and backward pass, and the options that trade compute for memory.

:class:`TrainModule` wraps the encoder and the (optionally learnable) InfoNCE temperature in one module, so
distributed data parallel syncs both. :func:`backward_step` encodes a batch of (user text, positive item)
pairs, computes in-batch InfoNCE and back-propagates it; with ``grad_accum_steps = k > 1`` it uses gradient
caching (Gao et al., 2021): the embeddings of all k micro-batches are computed without a graph, the loss over
the whole batch gives the gradient of every embedding, and each micro-batch is then re-encoded with a graph
(same dropout masks) and back-propagated with those gradients. The update equals that of one batch of
``batch_size * k`` pairs, at one micro-batch's activation memory and one extra forward pass.
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

Batch = tuple[dict, dict, torch.Tensor, torch.Tensor | None]
"""Tokenised users, tokenised positive items, the items' ids ``(b,)`` and their log q ``(b,)`` (or None)."""


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

    def forward(self, user: dict, item: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]:
        user_emb, item_emb = self.encoder(user, item)  # (batch, dim) each
        return user_emb, item_emb, self.temperature()


def backward_step(model: nn.Module, module: TrainModule, accelerator: Accelerator,
                  inputs: Callable[[np.ndarray], Batch], idx: np.ndarray, micro_batches: int) -> torch.Tensor:
    """Forward + backward of the pairs ``idx`` (gradient-cached in ``micro_batches`` parts); the loss, detached.

    Args:
        model: ``module`` as prepared by ``accelerator`` (DDP-wrapped when distributed).
        module: the unwrapped :class:`TrainModule` (its temperature).
        inputs: pair indices -> :data:`Batch`.
        idx: ``(batch,)`` indices of the training pairs.
        micro_batches: ``k`` of the gradient caching; 1 = one plain forward/backward.
    """
    if micro_batches == 1:
        user, item, ids, log_q = inputs(idx)
        user_emb, item_emb, tau = model(user, item)  # (batch, dim) each
        loss = in_batch_info_nce(user_emb, item_emb, tau, ids, log_q)
        accelerator.backward(loss)
        return loss.detach()
    chunks = [inputs(c) for c in np.array_split(idx, micro_batches)]
    device = accelerator.device
    rng_states, users, items = [], [], []
    with torch.no_grad():  # 1. every micro-batch's embeddings, no graph
        for user, item, _, _ in chunks:
            rng_states.append(_rng_now(device))
            u, v, _ = model(user, item)  # (micro, dim) each
            users.append(u)
            items.append(v)
    user_all = torch.cat(users).requires_grad_()  # (batch, dim)
    item_all = torch.cat(items).requires_grad_()  # (batch, dim)
    tau_value = module.temperature()
    tau_leaf = tau_value.detach().requires_grad_() if isinstance(tau_value, torch.Tensor) else tau_value
    ids = torch.cat([c[2] for c in chunks])
    log_qs = [c[3] for c in chunks if c[3] is not None]
    log_q = torch.cat(log_qs) if log_qs else None
    loss = in_batch_info_nce(user_all, item_all, tau_leaf, ids, log_q)  # 2. loss over the whole batch
    wrt = [user_all, item_all] + ([tau_leaf] if isinstance(tau_leaf, torch.Tensor) else [])
    grads = torch.autograd.grad(loss, wrt)
    start = 0
    for j, (user, item, _, _) in enumerate(chunks):  # 3. re-encode with a graph, same dropout masks
        rows = slice(start, start + len(user["input_ids"]))
        start = rows.stop
        last = j == len(chunks) - 1
        with accelerator.no_sync(model) if not last else nullcontext(), _replay_rng(rng_states[j], device):
            u, v, tau = model(user, item)
            surrogate = (u * grads[0][rows]).sum() + (v * grads[1][rows]).sum()
            if last and len(grads) == 3:
                surrogate = surrogate + tau * grads[2]
            accelerator.backward(surrogate)
    return loss.detach()


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
