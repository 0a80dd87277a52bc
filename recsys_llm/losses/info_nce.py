"""In-batch InfoNCE (multiple negatives ranking loss) for two-tower retrieval.

Each user in the batch has one positive item (the same row); the other rows' items are its negatives.
When the same item is the positive of several rows, it must not count as a negative for those rows,
so duplicates of a row's positive are masked out of its softmax. Extra negatives (``neg_emb``, e.g. lexical
hard negatives) are more columns every row is scored against, less those masked for a row.

Example:
    >>> import torch
    >>> u = torch.eye(4, 8)  # four orthogonal unit users, each matching its own item exactly
    >>> loss = in_batch_info_nce(u, u, temperature=0.05)  # a perfect match: loss close to 0
    >>> float(loss) < 1e-3
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def in_batch_info_nce(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    temperature: float | torch.Tensor,
    item_ids: torch.Tensor | None = None,
    log_q: torch.Tensor | None = None,
    *,
    neg_emb: torch.Tensor | None = None,
    neg_ids: torch.Tensor | None = None,
    neg_log_q: torch.Tensor | None = None,
    neg_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Mean cross entropy of each user against its own item, with the batch's other items as negatives.

    .. math::

        s_{ij} = \frac{u_i \cdot v_j}{\tau}, \qquad
        \mathcal{L} = \frac{1}{B} \sum_i -\log \frac{e^{s_{ii}}}{\sum_{j \in N(i)} e^{s_{ij}}},

    where :math:`N(i)` is every column except those :math:`j \ne i` whose item id equals row
    :math:`i`'s positive (when ``item_ids`` is given; otherwise every column). With ``neg_emb`` the columns are
    the batch's positives followed by ``m`` extra negatives shared by all rows, less those ``neg_mask`` excludes.

    With ``log_q`` (sampling-bias or "logQ" correction, Yi et al., RecSys 2019) the logits become
    :math:`s_{ij} - \log q_j`, where :math:`q_j` is the probability that item :math:`j` appears in a batch.
    In-batch negatives are drawn in proportion to popularity; without the correction the model learns to
    push popular items down, which hurts full-ranking accuracy.

    Args:
        user_emb: ``(batch, dim)`` user embeddings (usually L2-normalised).
        item_emb: ``(batch, dim)`` embeddings of each user's positive item, same row order.
        temperature: softmax temperature :math:`\tau > 0` (0.05 suits unit vectors); a scalar tensor
            (e.g. a learnable temperature) receives a gradient.
        item_ids: optional ``(batch,)`` int ids of the positives; duplicates of a row's positive
            elsewhere in the batch are masked (-inf) instead of counted as negatives.
        log_q: optional ``(batch,)`` log sampling probability of each row's positive item.
        neg_emb: optional ``(m, dim)`` extra negatives (e.g. lexical hard negatives): ``m`` more columns that
            every row is scored against, so the logits are ``(batch, batch + m)``.
        neg_ids: ``(m,)`` their item ids (with ``item_ids``): a column equal to row ``i``'s positive is masked.
        neg_log_q: ``(m,)`` their log q; needed with ``log_q``.
        neg_mask: optional ``(batch, m)`` bool, True where column ``j`` is no negative for row ``i`` (e.g. an
            item in that user's history); masked (-inf).

    Returns:
        Scalar float32 loss tensor.

    Raises:
        ValueError: mismatched shapes or a non-positive temperature.
    """
    if user_emb.dim() != 2 or user_emb.shape != item_emb.shape:
        raise ValueError(
            f"user_emb {tuple(user_emb.shape)} and item_emb {tuple(item_emb.shape)} must both be (batch, dim)"
        )
    temperature = _checked_temperature(temperature, user_emb.device)
    batch = user_emb.size(0)
    m = _check_columns(item_ids, log_q, neg_emb, neg_ids, neg_log_q, neg_mask, batch, user_emb.size(1))
    columns = item_emb if neg_emb is None else torch.cat([item_emb, neg_emb])  # (batch + m, dim)
    logits = user_emb.float() @ columns.float().T / temperature  # (batch, batch + m)
    target = torch.arange(batch, device=logits.device)  # (batch,)
    if log_q is not None:
        col_log_q = log_q if neg_log_q is None else torch.cat([log_q, neg_log_q.to(log_q.device)])
        logits = logits - col_log_q.to(logits.device, torch.float32)[None, :]  # (batch, batch + m)
    if item_ids is not None:
        item_ids = item_ids.to(logits.device)
        col_ids = item_ids if neg_ids is None else torch.cat([item_ids, neg_ids.to(logits.device)])
        same = item_ids[:, None] == col_ids[None, :]  # (batch, batch + m)
        same[:, :batch].fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    if neg_mask is not None and m:
        excluded = torch.zeros_like(logits, dtype=torch.bool)  # (batch, batch + m)
        excluded[:, batch:] = neg_mask.to(logits.device)
        logits = logits.masked_fill(excluded, float("-inf"))
    return F.cross_entropy(logits, target)


def _checked_temperature(temperature: float | torch.Tensor, device: torch.device) -> float | torch.Tensor:
    """A positive float, or a scalar float32 tensor on ``device`` (a learnable temperature keeps its graph)."""
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1:
            raise ValueError(f"temperature has shape {tuple(temperature.shape)}; expected a scalar")
        temperature = temperature.reshape(()).to(device, torch.float32)
        value = float(temperature.detach())
    else:
        value = float(temperature)
    if value <= 0:
        raise ValueError(f"temperature={value}; must be > 0")
    return temperature


def _check_columns(
    item_ids: torch.Tensor | None,
    log_q: torch.Tensor | None,
    neg_emb: torch.Tensor | None,
    neg_ids: torch.Tensor | None,
    neg_log_q: torch.Tensor | None,
    neg_mask: torch.Tensor | None,
    batch: int,
    dim: int,
) -> int:
    """The number of extra negative columns ``m``; ValueError when the column arguments do not fit together."""
    for name, value in (("log_q", log_q), ("item_ids", item_ids)):
        if value is not None and value.shape != (batch,):
            raise ValueError(f"{name} has shape {tuple(value.shape)}; expected ({batch},)")
    if neg_emb is None:
        if any(x is not None for x in (neg_ids, neg_log_q, neg_mask)):
            raise ValueError("neg_ids, neg_log_q and neg_mask need neg_emb")
        return 0
    m = neg_emb.size(0)
    if neg_emb.dim() != 2 or neg_emb.size(1) != dim:
        raise ValueError(f"neg_emb has shape {tuple(neg_emb.shape)}; expected (m, {dim})")
    expected = {
        "neg_ids": (neg_ids, (m,), item_ids is not None),
        "neg_log_q": (neg_log_q, (m,), log_q is not None),
        "neg_mask": (neg_mask, (batch, m), False),
    }
    for name, (value, shape, needed) in expected.items():
        if value is None and needed:
            raise ValueError(
                f"{name} is needed with neg_emb when {'item_ids' if name == 'neg_ids' else 'log_q'} is given"
            )
        if value is not None and tuple(value.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(value.shape)}; expected {shape}")
    return m
