"""Item encoding split across the processes of an ``accelerate launch`` run.

Each of the N processes encodes one contiguous shard of the item ids (process ``r`` gets ids
``[n*r//N, n*(r+1)//N)``); the shards are gathered in fixed-size, zero-padded row chunks (so NCCL and
gloo both see equal-shaped tensors and GPU memory stays bounded) and concatenated in id order. Every
process returns the full ``(n, dim)`` array. In a single process this is ``encoder.encode_items``.

Example (inside a script started with ``accelerate launch --num_processes 4``):
    >>> emb = encode_items_distributed(encoder, item_texts, max_tokens=48)  # doctest: +SKIP
    >>> emb.shape == (len(item_texts), encoder.dim)  # on every process; row i = item id i  # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather

from recsys_llm.encoder.model import TwoTowerEncoder

logger = logging.getLogger(__name__)


def shard_bounds(n: int, num_processes: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` id ranges, one per process, sizes differing by at most one."""
    cuts = [n * r // num_processes for r in range(num_processes + 1)]
    return list(pairwise(cuts))


def encode_items_distributed(
    encoder: TwoTowerEncoder,
    texts: Sequence[str],
    max_tokens: int,
    batch_size: int = 128,
    gather_rows: int = 8192,
) -> np.ndarray:
    """Encode item texts with every process of the current accelerate/torch.distributed run.

    Args:
        encoder: the same (trained, unwrapped) encoder on every process, each on its own device.
        texts: item texts, position = item id; identical on every process.
        max_tokens: token budget per item text.
        batch_size: texts per forward pass on each process.
        gather_rows: rows per process per gather call (bounds the extra device memory).

    Returns:
        ``(len(texts), dim)`` float32 C-contiguous unit vectors in id order, on every process.
    """
    state = PartialState()
    world, rank = state.num_processes, state.process_index
    texts = list(texts)
    show = state.is_local_main_process
    if world == 1 or not texts:
        return encoder.encode_items(texts, max_tokens, batch_size, show_progress=show)

    bounds = shard_bounds(len(texts), world)
    lo, hi = bounds[rank]
    local = encoder.encode_items(texts[lo:hi], max_tokens, batch_size, show_progress=show)  # (hi-lo, dim)
    dim = encoder.dim
    longest = max(b - a for a, b in bounds)
    chunk = max(1, min(gather_rows, longest))
    parts: list[list[torch.Tensor]] = [[] for _ in range(world)]
    for offset in range(0, longest, chunk):  # the same number of collective calls on every process
        piece = torch.zeros(chunk, dim, dtype=torch.float32)  # (chunk, dim), zero rows past the shard
        rows = torch.from_numpy(local[offset : offset + chunk])
        piece[: len(rows)] = rows
        gathered = gather(piece.to(state.device)).cpu().view(world, chunk, dim)  # (world, chunk, dim)
        for r, (a, b) in enumerate(bounds):
            keep = max(0, min(chunk, (b - a) - offset))
            parts[r].append(gathered[r, :keep])
    out = torch.cat([t for rank_parts in parts for t in rank_parts]).numpy()  # (n, dim), id order
    logger.info("encoded %d items on %d processes (%d on this one)", len(out), world, hi - lo)
    return np.ascontiguousarray(out, dtype=np.float32)
