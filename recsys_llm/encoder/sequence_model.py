"""The sequence user model: a small transformer over the frozen item text embeddings of a user's history.

UniSRec / Recformer style: there is no item-ID embedding anywhere, so an item never seen in training (a
cold-start addition) is represented and retrieved from its text embedding alone.
:mod:`recsys_llm.encoder.user_sequence` trains it.

Item tower: the frozen fine-tuned item embedding ``e`` through a learned residual linear adaptor,
``a(e) = e + A e`` (``A`` starts at zero). User tower, over the last ``max_items`` history items, position 0 =
the most recent (as the pooling model):

* ``x_j = a(e_j) + p_j``: the same adaptor, plus a learned position embedding (zero at the start);
* ``layers - 1`` pre-LayerNorm transformer encoder layers over all positions (none by default), then one
  read-out layer computed at position 0 only (the most recent item queries the whole history: ``heads``
  heads, GELU feed-forward of ``ff_mult * dim``, dropout). A transformer layer's output at one position only
  needs that position's query, so the read-out is exact, and with ``layers = 1`` its keys and values are
  projected once per distinct item of a batch instead of once per (user, position);
* ``z = mean_j a(e_j) + W_out LN(h_0)``, ``W_out`` zero at the start: the model starts as the mean of the
  history and moves away from it only where the next-item loss says so.

Scores and the folded user vector: the score of item ``i`` is ``z . a(e_i)``. The adaptor is linear, so this
equals ``(z + A^T z) . e_i``: :meth:`SequenceUserModel.forward` returns that folded vector, L2-normalised
(the norm does not change a user's ranking), and everything downstream (the index, the catalogue, the hybrid's
dense part, items added later) scores it against the unchanged item embeddings, so nothing on the item side is
stored or recomputed. :func:`adapted_items` gives the adapted item matrix when it is wanted explicitly
(``adapted_items(E) @ z == E @ fold(z)``). A non-linear item adaptor would need a second item matrix
in the index and in every added item; the linear one keeps one.

Artifact (``save``/``load``, shared with the pooling model through
:class:`~recsys_llm.encoder.pooling_model.HistoryUserModel`): ``user_sequence.safetensors`` +
``user_sequence.json`` (constructor arguments, format version, sha256 of the weights, the caller's metadata),
through :mod:`recsys_llm.encoder.weights_file`. No pickle anywhere.

Example:
    >>> model = SequenceUserModel(dim=4, max_items=3, heads=2)           # the start: the mean of the history
    >>> item_emb = np.eye(4, dtype=np.float32)
    >>> encode_sequences(model, item_emb, [np.array([0, 1]), np.array([], np.int64)]).round(4)
    array([[0.7071, 0.7071, 0.    , 0.    ],
           [0.    , 0.    , 0.    , 0.    ]], dtype=float32)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys_llm.encoder.pooling_model import HistoryUserModel, encode_in_batches, item_matrix

__all__ = ["FORMAT_VERSION", "SequenceUserModel", "adapted_items", "encode_sequences"]

logger = logging.getLogger(__name__)

STEM = "user_sequence"  # user_sequence.safetensors + user_sequence.json
FORMAT_VERSION = 1
CONFIG_KEYS = ("dim", "max_items", "heads", "layers", "ff_mult", "dropout")
_MAKE_IT = "make it with `recsys-llm hybrid --run-dir RUN` (hybrid.sequence_steps > 0)"


class SequenceUserModel(HistoryUserModel):
    """History item embeddings -> folded user vector (see the module docstring).

    Args:
        dim: item embedding dimension (384 for MiniLM); a multiple of ``heads``.
        max_items: most recent history items read; each position has its own embedding.
        heads: attention heads.
        layers: transformer layers, the read-out layer included (``>= 1``).
        ff_mult: feed-forward width as a multiple of ``dim``.
        dropout: on attention weights and feed-forward outputs while training.

    Artifact: ``user_sequence.safetensors`` + ``user_sequence.json`` (:meth:`~HistoryUserModel.save`,
    :meth:`~HistoryUserModel.load`).

    Example:
        >>> m = SequenceUserModel(dim=4, max_items=3, heads=2).eval()
        >>> m(torch.eye(4), torch.tensor([[2, 0, -1]]))        # the mean of items 2 and 0, normalised
        tensor([[0.7071, 0.0000, 0.7071, 0.0000]], grad_fn=<MulBackward0>)
    """

    STEM = STEM
    FORMAT_VERSION = FORMAT_VERSION
    CONFIG_KEYS = CONFIG_KEYS
    WHAT = "sequence user model"
    MAKE_IT = _MAKE_IT

    def __init__(self, dim: int, max_items: int = 50, heads: int = 2, layers: int = 1, ff_mult: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self._check_counts(dim=dim, max_items=max_items, heads=heads, layers=layers, ff_mult=ff_mult)
        if dim % heads:
            raise ValueError(f"dim={dim} is not a multiple of heads={heads}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        self.dim, self.max_items, self.heads, self.layers = int(dim), int(max_items), int(heads), int(layers)
        self.ff_mult, self.dropout = int(ff_mult), float(dropout)
        self.adaptor = nn.Linear(dim, dim, bias=False)  # item tower: a(e) = e + A e
        self.position = nn.Parameter(torch.zeros(max_items, dim))  # (max_items, dim), 0 = most recent
        self.encoder = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, ff_mult * dim, dropout, activation="gelu", batch_first=True,
                                       norm_first=True) for _ in range(layers - 1))
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))
        self.out_norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, dim)  # residual from the history mean
        with torch.no_grad():
            for p in (self.adaptor.weight, self.out.weight, self.out.bias):
                p.zero_()
        self._init_scale()

    def adapt_items(self, item_emb: torch.Tensor) -> torch.Tensor:
        """The item tower: ``(n, dim)`` -> ``(n, dim)`` adapted item vectors ``e + A e``."""
        return item_emb + self.adaptor(item_emb)

    def forward(self, item_emb: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Folded user vectors of packed histories.

        Args:
            item_emb: ``(n_items, dim)`` float item embeddings on the model's device.
            ids: ``(batch, L)`` int64 item ids, most recent first, ``-1`` = padding, ``L <= max_items``.

        Returns:
            ``(batch, dim)`` L2-normalised user vectors ``u`` with ``u . e_i`` proportional to the score of item
            ``i``; zero rows where ``ids`` has no item.
        """
        self._check_packed(item_emb, ids)
        z, has = self.state(item_emb, ids)  # (batch, dim), (batch, 1)
        folded = z + z @ self.adaptor.weight  # (A^T z) as a row: z . a(e) == (z + A^T z) . e
        return F.normalize(folded, dim=-1) * has

    def state(self, item_emb: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, has)``: the user-side state ``(batch, dim)`` (scores ``z . a(e_i)``) and ``(batch, 1)`` 1.0
        where the row has an item."""
        n_pos = ids.shape[1]
        mask = ids >= 0  # (b, L)
        has = mask.any(dim=1, keepdim=True)
        mask = mask | (~has & (torch.arange(n_pos, device=ids.device) == 0))  # empty rows read item 0, zeroed
        # (b, L, dim) frozen inputs; padding reads item 0, and nothing reads it back (mean and attention mask it)
        hist = item_emb.index_select(0, ids.clamp(min=0).reshape(-1)).view(*ids.shape, self.dim)
        w = mask.float() / mask.sum(dim=1, keepdim=True)  # (b, L) mean weights
        mean = self.adapt_items(torch.einsum("bl,bld->bd", w, hist))  # a is linear: a(mean e) = mean a(e)
        pos = self.position[:n_pos]  # (L, dim)
        if self.layers == 1:
            h = self._readout_items(hist, pos, mask)
        else:
            x = self.adapt_items(hist) + pos  # (b, L, dim)
            for layer in self.encoder:
                x = layer(x, src_key_padding_mask=~mask)
            h = self._readout(x, mask)
        h = h + F.dropout(self.ff(self.ff_norm(h)), self.dropout, self.training)  # (b, dim)
        return (mean + self.out(self.out_norm(h))) * has, has.float()

    def _readout(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention sub-layer at position 0 over token states ``x`` ``(b, L, dim)``: ``(b, dim)``."""
        b, n_pos, _ = x.shape
        heads, dh = self.heads, self.dim // self.heads
        q = self.q(x[:, 0]).view(b, heads, 1, dh)
        k, v = (f(x).view(b, n_pos, heads, dh).transpose(1, 2) for f in (self.k, self.v))  # (b, heads, L, dh)
        attn = self._softmax((q @ k.transpose(-1, -2)).squeeze(2), mask)  # (b, heads, L)
        out = (attn.unsqueeze(2) @ v).reshape(b, self.dim)
        return x[:, 0] + F.dropout(self.o(out), self.dropout, self.training)

    def _readout_items(self, hist: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """:meth:`_readout` of ``x = a(hist) + pos`` (one layer: the tokens are the adapted items), computed
        without projecting every token: ``k_j = K a(e_j) + K p_j`` and ``K a(e) = (K (I + A)) e``, so the query is
        taken into item space once per row (``(b, heads, dim)``) and dotted with the raw history, and the
        values are pooled raw then projected. The same numbers, with the ``dim x dim`` products on ``b`` rows
        instead of ``b * L`` tokens (about 10x less work on a CPU)."""
        b, n_pos, _ = hist.shape
        heads, dh = self.heads, self.dim // self.heads
        x0 = self.adapt_items(hist[:, 0]) + pos[0]  # (b, dim)
        q = self.q(x0).view(b, heads, dh)
        k_item = (self.k.weight + self.k.weight @ self.adaptor.weight).view(heads, dh, self.dim)  # K (I + A)
        v_item = (self.v.weight + self.v.weight @ self.adaptor.weight).view(heads, dh, self.dim)
        k_pos = (pos @ self.k.weight.T + self.k.bias).view(n_pos, heads, dh)  # (L, heads, dh)
        v_pos = (pos @ self.v.weight.T + self.v.bias).view(n_pos, heads, dh)
        q_item = torch.einsum("bhe,hed->bhd", q, k_item)  # (b, heads, dim)
        logits = torch.einsum("bhd,bld->bhl", q_item, hist) + torch.einsum("bhe,lhe->bhl", q, k_pos)
        attn = self._softmax(logits, mask)  # (b, heads, L)
        pooled = torch.einsum("bhl,bld->bhd", attn, hist)  # (b, heads, dim)
        out = torch.einsum("bhd,hed->bhe", pooled, v_item) + torch.einsum("bhl,lhe->bhe", attn, v_pos)
        return x0 + F.dropout(self.o(out.reshape(b, self.dim)), self.dropout, self.training)

    def _softmax(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scaled, masked softmax over positions of ``(b, heads, L)`` logits, attention dropout while training."""
        logits = logits.masked_fill(~mask[:, None, :], float("-inf")) / math.sqrt(self.dim // self.heads)
        return F.dropout(torch.softmax(logits, dim=-1), self.dropout, self.training)

    def config(self) -> dict[str, Any]:
        """The constructor arguments."""
        return {"dim": self.dim, "max_items": self.max_items, "heads": self.heads, "layers": self.layers,
                "ff_mult": self.ff_mult, "dropout": self.dropout}


@torch.inference_mode()
def encode_sequences(
    model: SequenceUserModel,
    item_emb: np.ndarray,
    histories: Sequence[np.ndarray],
    batch_size: int = 512,
    show_progress: bool = False,
) -> np.ndarray:
    """Folded user vectors from histories (oldest first): score items with ``item_emb @ u``.

    Args:
        model: a (trained or loaded) :class:`SequenceUserModel`; its device is used, eval mode while encoding.
        item_emb: ``(n_items, dim)`` float item embeddings (those trained on, plus any added later).
        histories: int item-id arrays, oldest first; only the last ``model.max_items`` are read.
        batch_size: users per forward pass.
        show_progress: tqdm bar over the batches.

    Returns:
        float32 C-contiguous ``(n_users, dim)``, unit rows; zero rows for empty histories.

    Raises:
        ValueError: ``item_emb`` of the wrong shape, or an item id ``>= len(item_emb)`` (row and id named).
    """
    return encode_in_batches(model, item_emb, histories,
                             lambda item_t, ids: model(item_t, torch.from_numpy(ids).to(item_t.device)),
                             "sequence", model.position.device, batch_size, show_progress)


@torch.inference_mode()
def adapted_items(model: SequenceUserModel, item_emb: np.ndarray) -> np.ndarray:
    """The item tower on every item: float32 ``(n_items, dim)`` ``e + A e``, not normalised.

    Serving does not need it (the user vector folds the adaptor in: ``adapted_items(E) @ z`` ranks like
    ``E @ u``); it is here to inspect the item side or to build an index of adapted items.
    """
    item_t = torch.from_numpy(item_matrix(item_emb, model.dim)).to(model.position.device)
    return np.ascontiguousarray(model.adapt_items(item_t).float().cpu().numpy())
