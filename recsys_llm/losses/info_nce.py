"""In-batch InfoNCE (multiple negatives ranking loss) for two-tower retrieval.

Each user in the batch has one positive item (the same row); the other rows' items are its negatives.
When the same item is the positive of several rows, it must not count as a negative for those rows,
so duplicates of a row's positive are masked out of its softmax.

Example:
    >>> import torch
    >>> u = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
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
) -> torch.Tensor:
    r"""Mean cross entropy of each user against its own item, with the batch's other items as negatives.

    .. math::

        s_{ij} = \frac{u_i \cdot v_j}{\tau}, \qquad
        \mathcal{L} = \frac{1}{B} \sum_i -\log \frac{e^{s_{ii}}}{\sum_{j \in N(i)} e^{s_{ij}}},

    where :math:`N(i)` is every column except those :math:`j \ne i` whose item id equals row
    :math:`i`'s positive (when ``item_ids`` is given; otherwise every column).

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

    Returns:
        Scalar float32 loss tensor.

    Raises:
        ValueError: mismatched shapes or a non-positive temperature.
    """
    if user_emb.dim() != 2 or user_emb.shape != item_emb.shape:
        raise ValueError(
            f"user_emb {tuple(user_emb.shape)} and item_emb {tuple(item_emb.shape)} must both be (batch, dim)"
        )
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1:
            raise ValueError(f"temperature has shape {tuple(temperature.shape)}; expected a scalar")
        temperature = temperature.reshape(()).to(user_emb.device, torch.float32)
        value = float(temperature.detach())
    else:
        value = float(temperature)
    if value <= 0:
        raise ValueError(f"temperature={value}; must be > 0")
    batch = user_emb.size(0)
    logits = user_emb.float() @ item_emb.float().T / temperature  # (batch, batch)
    target = torch.arange(batch, device=logits.device)  # (batch,)
    if log_q is not None:
        if log_q.shape != (batch,):
            raise ValueError(f"log_q has shape {tuple(log_q.shape)}; expected ({batch},)")
        logits = logits - log_q.to(logits.device, torch.float32)[None, :]  # (batch, batch)
    if item_ids is not None:
        if item_ids.shape != (batch,):
            raise ValueError(f"item_ids has shape {tuple(item_ids.shape)}; expected ({batch},)")
        item_ids = item_ids.to(logits.device)
        same = item_ids[:, None] == item_ids[None, :]  # (batch, batch)
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, target)
