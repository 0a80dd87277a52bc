"""A learned pooling user model over frozen item embeddings: the user is a weighted mean of their history.

Encoding a user's history as text costs one transformer pass per user; this model reads the (frozen, fine-tuned)
item embeddings of the history instead and learns only a few thousand parameters: a recency weight per
position, a content-attention query, a ``dim x dim`` projection and a temperature.

``user = normalize(proj(sum_j w_j e_j))`` with ``w = softmax_j(recency[j] + e_j . query)`` over the real
history items, position 0 = the most recent. At the zero initialisation (recency = query = 0, proj = identity)
the user is exactly the normalised mean of the history embeddings, the usual strong baseline; training moves
away from it only where the next-item loss says so, and :func:`fit_pooling` keeps the mean model when the
trained one validates worse.

Histories are int64 item-id arrays, oldest first (as the library stores them). :func:`pack_histories` turns
them into a most-recent-first ``(n, L)`` id matrix with ``-1`` padding.

Artifact (``save``/``load``): ``user_pooling.safetensors`` (weights) + ``user_pooling.json`` (dim, max_items,
format version, sha256 of the weights file and the caller's ``metadata``, e.g. the item embeddings'
fingerprint). No pickle anywhere.

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

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from recsys_llm.device import resolve_device
from recsys_llm.io_utils import atomic_path, atomic_write_json, load_json

__all__ = ["FORMAT_VERSION", "PoolingUserModel", "encode_histories", "fit_pooling", "pack_histories"]

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "user_pooling.safetensors"
META_FILE = "user_pooling.json"
FORMAT_VERSION = 1
INIT_TEMPERATURE = 0.05
MAX_LOGIT_SCALE = 100.0  # 1 / temperature is clamped to [1, 100] (CLIP's bound)
_MAKE_IT = "make it with `recsys-llm hybrid --run-dir RUN`"


class PoolingUserModel(nn.Module):
    """Attention pooling of history item embeddings with learned recency and content weights.

    Args:
        dim: item embedding dimension.
        max_items: most recent history items read; position ``j`` (0 = most recent) has its own recency logit.

    Example:
        >>> m = PoolingUserModel(dim=4, max_items=3)
        >>> hist = torch.eye(4)[None, :3]                      # (1, 3, 4): three unit items
        >>> m(hist, torch.tensor([[True, True, False]]))       # mean of the first two, normalised
        tensor([[0.7071, 0.7071, 0.0000, 0.0000]], grad_fn=<MulBackward0>)
    """

    def __init__(self, dim: int, max_items: int = 50) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("max_items", max_items)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        self.dim = int(dim)
        self.max_items = int(max_items)
        self.recency = nn.Parameter(torch.zeros(self.max_items))  # (max_items,) logits, 0 = most recent
        self.query = nn.Parameter(torch.zeros(self.dim))  # (dim,) content attention
        self.proj = nn.Linear(self.dim, self.dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(self.dim))
            self.proj.bias.zero_()
        # log(1 / temperature) of the training softmax; not used by forward
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / INIT_TEMPERATURE)))
        self.metadata: dict[str, Any] = {}
        """The ``metadata`` saved with the model (filled by :meth:`load`)."""

    def scale(self) -> torch.Tensor:
        """``1 / temperature`` of the training softmax, ``exp(logit_scale)`` clamped to ``[1, 100]``."""
        return self.logit_scale.exp().clamp(1.0, MAX_LOGIT_SCALE)

    def forward(self, hist_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool history embeddings into user embeddings.

        Args:
            hist_emb: ``(batch, L, dim)`` item embeddings, position 0 = most recent, ``L <= max_items``.
            mask: ``(batch, L)`` bool, True = a real item (padding may hold anything).

        Returns:
            ``(batch, dim)`` L2-normalised user embeddings; all-zero rows where ``mask`` has no True.
        """
        if hist_emb.ndim != 3 or hist_emb.shape[-1] != self.dim:
            raise ValueError(f"hist_emb must be (batch, L, {self.dim}); got shape {tuple(hist_emb.shape)}")
        if mask.shape != hist_emb.shape[:2]:
            raise ValueError(f"mask shape {tuple(mask.shape)} != hist_emb (batch, L) {tuple(hist_emb.shape[:2])}")
        n_pos = hist_emb.shape[1]
        if n_pos > self.max_items:
            raise ValueError(f"hist_emb has L={n_pos} positions but max_items={self.max_items}; pack with "
                             "pack_histories(histories, model.max_items)")
        mask = mask.bool()
        hist_emb = hist_emb.masked_fill(~mask[..., None], 0.0)  # (batch, L, dim)
        weights = self._weights(hist_emb @ self.query, mask)  # (batch, L)
        pooled = torch.einsum("bl,bld->bd", weights, hist_emb)  # (batch, dim)
        return self._finish(pooled, mask)

    def pool_ids(self, item_emb: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Same as ``forward(item_emb[ids], ids >= 0)``, without building the ``(batch, L, dim)`` tensor.

        The content logits are read off ``item_emb @ query`` and the weighted sum is one ``embedding_bag``
        (forward + backward 4x faster than ``forward`` on a (256, 50, 384) batch, measured; used by training and
        :func:`encode_histories`).

        Args:
            item_emb: ``(n_items, dim)`` float item embeddings on the model's device.
            ids: ``(batch, L)`` int64 item ids, most recent first, ``-1`` = padding, ``L <= max_items``.

        Returns:
            ``(batch, dim)`` L2-normalised user embeddings; zero rows where ``ids`` has no item.
        """
        if ids.ndim != 2 or ids.shape[1] > self.max_items:
            raise ValueError(f"ids must be (batch, L) with L <= max_items={self.max_items}; got shape "
                             f"{tuple(ids.shape)}; pack with pack_histories(histories, model.max_items)")
        if item_emb.ndim != 2 or item_emb.shape[1] != self.dim:
            raise ValueError(f"item_emb must be (n_items, {self.dim}); got shape {tuple(item_emb.shape)}")
        mask = ids >= 0  # (batch, L)
        safe = ids.clamp(min=0)
        weights = self._weights((item_emb @ self.query)[safe], mask)  # (batch, L)
        pooled = F.embedding_bag(safe, item_emb, per_sample_weights=weights, mode="sum")  # (batch, dim)
        return self._finish(pooled, mask)

    def _weights(self, content: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Softmax of ``recency[pos] + content`` over the real items; all-zero rows without items."""
        logits = (self.recency[: mask.shape[1]] + content).masked_fill(~mask, float("-inf"))  # (batch, L)
        logits = torch.where(mask.any(dim=1, keepdim=True), logits, torch.zeros_like(logits))  # no NaN rows
        return torch.softmax(logits, dim=1) * mask

    def _finish(self, pooled: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(pooled), dim=-1) * mask.any(dim=1, keepdim=True)  # (batch, dim)

    def config(self) -> dict[str, int]:
        """The constructor arguments: ``{"dim": ..., "max_items": ...}``."""
        return {"dim": self.dim, "max_items": self.max_items}

    def save(self, folder: str | Path, metadata: dict[str, Any] | None = None) -> None:
        """Write ``user_pooling.safetensors`` then ``user_pooling.json`` into ``folder``, each atomically.

        Args:
            folder: created if missing; other files in it are left alone.
            metadata: free JSON-serialisable dict stored as ``metadata`` (e.g. the item embeddings'
                fingerprint and the fit info).
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(folder / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp))
            sha = _sha256(tmp)
        # the json names the weights' sha256: a crash between the two renames cannot pass as a valid pair
        meta = {**self.config(), "format_version": FORMAT_VERSION, "weights_sha256": sha,
                "metadata": dict(metadata or {})}
        atomic_write_json(folder / META_FILE, meta)
        logger.info("saved user pooling model to %s", folder)

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> PoolingUserModel:
        """Rebuild a saved model (safetensors only, never pickle), in eval mode on ``device``.

        The caller's ``metadata`` is available as ``model.metadata`` afterwards.

        Raises:
            FileNotFoundError: ``folder/user_pooling.json`` or ``folder/user_pooling.safetensors`` missing.
            ValueError: unknown format version, bad dim/max_items, weights that do not match the json
                (sha256, names or shapes).
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in (META_FILE, WEIGHTS_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} not found: no saved user pooling model in {folder}; "
                                        f"{_MAKE_IT}")
        meta = load_json(folder / META_FILE)
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            found = meta.get("format_version") if isinstance(meta, dict) else None
            raise ValueError(f"{folder / META_FILE}: format_version {found!r}, this version reads "
                             f"{FORMAT_VERSION}; {_MAKE_IT} again")
        dim, max_items = meta.get("dim"), meta.get("max_items")
        try:
            model = cls(dim, max_items)  # type: ignore[arg-type]
        except ValueError as e:
            raise ValueError(f"{folder / META_FILE}: {e}") from None
        if _sha256(folder / WEIGHTS_FILE) != meta.get("weights_sha256"):
            raise ValueError(f"{folder / WEIGHTS_FILE} does not match the sha256 recorded in {META_FILE} "
                             f"(corrupt, edited or from another save); {_MAKE_IT} again")
        tensors = load_file(str(folder / WEIGHTS_FILE))
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        found_shapes = {k: tuple(v.shape) for k, v in tensors.items()}
        if found_shapes != expected:
            raise ValueError(f"{folder / WEIGHTS_FILE}: tensors {found_shapes} do not fit dim={dim}, "
                             f"max_items={max_items} from {META_FILE} (expected {expected})")
        model.load_state_dict(tensors)
        model.metadata = dict(meta.get("metadata") or {})
        return model.to(resolve_device(device)).eval()


def pack_histories(histories: Sequence[np.ndarray], max_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Most-recent-first id matrix of the last ``max_items`` items of each history.

    Args:
        histories: int item-id arrays (ids ``>= 0``), OLDEST FIRST.
        max_items: most recent items kept per history, ``>= 1``.

    Returns:
        ``(ids, mask)``: int64 ``(n, L)`` with ``-1`` padding and bool ``(n, L)`` (True = real item), column 0
        = the most recent item, ``L = max(1, min(max_items, longest history))``.

    Raises:
        ValueError: a history that is not 1-D, not integer, or holds a negative id (the row is named).

    Example:
        >>> ids, mask = pack_histories([np.array([7, 8, 9]), np.array([], np.int64)], max_items=2)
        >>> ids
        array([[ 9,  8],
               [-1, -1]])
        >>> mask
        array([[ True,  True],
               [False, False]])
    """
    if isinstance(max_items, bool) or not isinstance(max_items, (int, np.integer)) or max_items < 1:
        raise ValueError(f"max_items must be an integer >= 1; got {max_items!r}")
    flat, starts, lens = _flatten(histories, None, "histories")
    return _pack(flat, starts + lens, lens, int(max_items))


@torch.inference_mode()
def encode_histories(
    model: PoolingUserModel,
    item_emb: np.ndarray,
    histories: Sequence[np.ndarray],
    batch_size: int = 1024,
    show_progress: bool = False,
) -> np.ndarray:
    """User embeddings from histories (oldest first) through ``model``.

    Args:
        model: a (trained or loaded) :class:`PoolingUserModel`; its device is used.
        item_emb: ``(n_items, dim)`` float item embeddings (the ones the model was trained on).
        histories: int item-id arrays, oldest first; only the last ``model.max_items`` are read.
        batch_size: users per forward pass.
        show_progress: tqdm bar over the batches.

    Returns:
        float32 C-contiguous ``(n_users, dim)``, unit rows; zero rows for empty histories.

    Raises:
        ValueError: ``item_emb`` of the wrong shape, or an item id ``>= len(item_emb)`` (row and id named).
    """
    item_t = _item_tensor(item_emb, model.dim, model.recency.device)  # (n_items, dim)
    flat, starts, lens = _flatten(histories, item_t.shape[0], "histories")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    out = np.zeros((len(lens), model.dim), dtype=np.float32)  # (n_users, dim)
    was_training = model.training
    model.eval()
    try:
        for lo in tqdm(range(0, len(lens), batch_size), desc="encode users (pooling)", unit="batch",
                       disable=not show_progress):
            hi = min(lo + batch_size, len(lens))
            ids, _ = _pack(flat, starts[lo:hi] + lens[lo:hi], lens[lo:hi], model.max_items)
            out[lo:hi] = _encode_ids(model, item_t, ids).float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


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
    valid: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
    show_progress: bool = True,
) -> tuple[PoolingUserModel, dict[str, Any]]:
    """Train a :class:`PoolingUserModel` on next-item prediction over frozen item embeddings.

    Examples are every ``(prefix h[:c] -> positive h[c])``, ``1 <= c < len(h)``, stored as indices (never
    as dense prefixes); each step draws ``batch_size`` of them uniformly (seeded numpy Generator) and packs
    the last ``max_items`` items of each prefix. Loss: full softmax cross-entropy over ``allowed_items``,
    logits ``scale * user @ item_emb[allowed].T``, the positive's column as label, the prefix's other items
    masked out. AdamW (torch default weight decay 0.01), nothing random on the torch side (the start is
    deterministic), torch seeded with ``seed`` anyway.

    Speed (measured once: random unit items, 943 users x 1682 items x 384 dims, ML-100k-like history lengths
    20-737 (mean 108, 101k examples), 400 steps at batch 256, max_items 50, on 2 CPU cores that another job
    kept ~1.2 busy, two Recall@10 passes over 300 validation users included): 6.5-7.2 s with 2 torch threads
    and ``OMP_WAIT_POLICY=PASSIVE`` (as ``tests/conftest.py`` sets), 5.8-8.3 s with 1 thread; but 86 s with
    2 threads and OpenMP's default active wait, which spins against the other job on these small ops.

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
    for name, value, low in (("steps", steps, 0), ("batch_size", batch_size, 1), ("max_items", max_items, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0; got {lr!r}")
    dev = resolve_device(device)
    item_np = _item_array(item_emb, None)
    n_items, dim = item_np.shape
    allowed = _allowed(allowed_items, n_items)
    col_of = np.full(n_items, -1, dtype=np.int64)  # item id -> softmax column, -1 = not allowed
    col_of[allowed] = np.arange(len(allowed))

    flat, starts, lens = _flatten(histories, n_items, "histories")
    n_cuts = np.maximum(lens - 1, 0)  # examples per user
    n_examples = int(n_cuts.sum())
    if n_examples == 0:
        raise ValueError(f"no training examples: all {len(lens)} histories are shorter than 2 items "
                         "(each example is a prefix of >= 1 item and the next item)")
    # example e: positive flat[pos[e]], prefix flat[start[e]:pos[e]]
    ex_start = np.repeat(starts, n_cuts)  # (n_examples,)
    pos = ex_start + 1 + np.arange(n_examples) - np.repeat(np.cumsum(n_cuts) - n_cuts, n_cuts)
    label_col = col_of[flat[pos]]
    if (label_col < 0).any():
        bad = int(np.flatnonzero(label_col < 0)[0])
        row = int(np.searchsorted(starts + lens, pos[bad], side="right"))
        raise ValueError(f"histories[{row}] has item {int(flat[pos[bad]])} at position "
                         f"{int(pos[bad] - starts[row])}, a training positive outside allowed_items; pass "
                         "allowed_items that cover every history item, or drop those items from the histories")
    if valid is not None:
        v_hist, v_targets = valid
        if len(v_hist) != len(v_targets):
            raise ValueError(f"valid has {len(v_hist)} histories but {len(v_targets)} target arrays; "
                             "need one target array per history")
        _flatten(v_hist, n_items, "valid histories")
        _flatten(v_targets, n_items, "valid targets")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PoolingUserModel(dim, max_items).to(dev)
    item_t = torch.from_numpy(item_np).to(dev)  # (n_items, dim)
    allowed_t = item_t[torch.from_numpy(allowed).to(dev)]  # (n_allowed, dim)
    info: dict[str, Any] = {"steps": int(steps), "train_examples": n_examples}
    if valid is not None:
        info["valid_recall@10_mean"] = _valid_recall(model, item_np, allowed, *valid)

    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses: list[float] = []
    model.train()
    with tqdm(range(steps), desc="fit user pooling", unit="step", disable=not show_progress) as bar:
        for step in bar:
            batch = rng.integers(0, n_examples, size=batch_size)  # (b,)
            b_pos, b_start = pos[batch], ex_start[batch]
            ids, _ = _pack(flat, b_pos, b_pos - b_start, max_items)  # (b, L)
            user = _encode_ids(model, item_t, ids)  # (b, dim)
            logits = model.scale() * (user @ allowed_t.T)  # (b, n_allowed)
            labels = torch.from_numpy(label_col[batch]).to(dev)  # (b,)
            rows, cols = _seen_cells(flat, b_start, b_pos, col_of, label_col[batch])
            if rows.size:
                logits = logits.index_put(
                    (torch.from_numpy(rows).to(dev), torch.from_numpy(cols).to(dev)),
                    torch.tensor(float("-inf"), device=dev))
            loss = F.cross_entropy(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if step % 10 == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.eval()
    tail = losses[-max(1, len(losses) // 10):]
    info["final_loss"] = float(np.mean(tail)) if tail else float("nan")
    info["kept"] = "trained" if steps > 0 else "mean"

    if valid is not None:
        start_recall = info["valid_recall@10_mean"]
        info["valid_recall@10"] = _valid_recall(model, item_np, allowed, *valid) if steps else start_recall
        if steps and info["valid_recall@10"] < start_recall:
            logger.warning("user pooling: trained Recall@10 %.4f < mean pooling %.4f on %d validation users; "
                           "keeping mean pooling", info["valid_recall@10"], start_recall, len(valid[0]))
            model = PoolingUserModel(dim, max_items).to(dev).eval()
            info["kept"] = "mean"
    info["seconds"] = time.perf_counter() - t0
    logger.info("user pooling: %d steps on %d examples in %.1fs, final loss %.4f, kept %s%s", steps, n_examples,
                info["seconds"], info["final_loss"], info["kept"],
                "" if valid is None else f", valid Recall@10 mean {info['valid_recall@10_mean']:.4f} -> "
                                         f"trained {info['valid_recall@10']:.4f}")
    return model, info


# --------------------------------------------------------------------------------------------- helpers
def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _item_array(item_emb: np.ndarray, dim: int | None) -> np.ndarray:
    """``item_emb`` as float32 C-contiguous ``(n_items, dim)``; ValueError with the actual shape/dtype."""
    arr = np.asarray(item_emb)
    if arr.ndim != 2 or arr.shape[0] < 1 or (dim is not None and arr.shape[1] != dim):
        want = f"(n_items, {dim})" if dim is not None else "(n_items, dim)"
        raise ValueError(f"item_emb must be {want} with n_items >= 1; got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"item_emb must be a float array; got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _item_tensor(item_emb: np.ndarray, dim: int, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(_item_array(item_emb, dim)).to(device)


def _allowed(allowed_items: np.ndarray | None, n_items: int) -> np.ndarray:
    if allowed_items is None:
        return np.arange(n_items, dtype=np.int64)
    arr = np.asarray(allowed_items)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"allowed_items must be a non-empty 1-D integer array; got shape {arr.shape}, "
                         f"dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n_items:
        raise ValueError(f"allowed_items must hold ids in [0, {n_items}) (rows of item_emb); got "
                         f"{int(arr.min())}..{int(arr.max())}")
    return np.unique(arr.astype(np.int64))


def _flatten(
    histories: Sequence[np.ndarray], n_items: int | None, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate histories: ``(flat, starts, lens)``, history ``u`` = ``flat[starts[u]:starts[u] + lens[u]]``."""
    arrays = []
    for u, h in enumerate(histories):
        a = np.asarray(h)
        if a.size == 0:
            arrays.append(np.empty(0, np.int64))
            continue
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name}[{u}] must be a 1-D integer item-id array; got shape {a.shape}, "
                             f"dtype {a.dtype}")
        arrays.append(a.astype(np.int64, copy=False))
    lens = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    flat = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    starts = np.cumsum(lens) - lens
    if flat.size:
        bad = flat < 0 if n_items is None else (flat < 0) | (flat >= n_items)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            u = int(np.searchsorted(starts + lens, i, side="right"))
            rule = ">= 0" if n_items is None else f"in [0, {n_items}) (rows of item_emb)"
            raise ValueError(f"{name}[{u}] holds item id {int(flat[i])}; ids must be {rule}")
    return flat, starts, lens


def _pack(flat: np.ndarray, ends: np.ndarray, lens: np.ndarray, max_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``flat[ends[i] - lens[i]:ends[i]]`` reversed, truncated to ``max_items``, ``-1`` padded."""
    keep = np.minimum(lens, max_items)  # (n,)
    width = max(1, int(keep.max()) if keep.size else 1)
    j = np.arange(width)
    mask = j[None, :] < keep[:, None]  # (n, L)
    idx = np.where(mask, ends[:, None] - 1 - j[None, :], 0)
    ids = np.where(mask, flat[idx] if flat.size else -1, -1).astype(np.int64)  # (n, L)
    return ids, mask


def _encode_ids(model: PoolingUserModel, item_t: torch.Tensor, ids: np.ndarray) -> torch.Tensor:
    return model.pool_ids(item_t, torch.from_numpy(ids).to(item_t.device))  # (b, L) -> (b, dim)


def _seen_cells(
    flat: np.ndarray, starts: np.ndarray, ends: np.ndarray, col_of: np.ndarray, label_col: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) logit cells of each row's prefix items ``flat[starts:ends]``, the positive's column excepted."""
    lens = ends - starts
    rows = np.repeat(np.arange(len(lens)), lens)
    offsets = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
    cols = col_of[flat[offsets]]
    keep = (cols >= 0) & (cols != label_col[rows])
    return rows[keep], cols[keep]


def _valid_recall(
    model: PoolingUserModel,
    item_np: np.ndarray,
    allowed: np.ndarray,
    histories: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    chunk: int = 1024,
) -> float:
    """Mean Recall@10 over users with targets: full ranking over ``allowed``, history items excluded."""
    from recsys_llm.baselines import rank_items
    from recsys_llm.metrics import hit_matrix, recall_at_k

    users = encode_histories(model, item_np, histories)  # (n, dim)
    recalls = []
    for lo in range(0, len(users), chunk):
        hi = min(lo + chunk, len(users))
        scores = users[lo:hi] @ item_np.T  # (chunk, n_items)
        seen = [np.asarray(h, dtype=np.int64) for h in histories[lo:hi]]
        _, ranked = rank_items(scores, 10, seen=seen, candidates=allowed)
        hits, n_rel = hit_matrix(ranked, [np.asarray(t, dtype=np.int64) for t in targets[lo:hi]])
        recalls.append(recall_at_k(hits, n_rel, 10))
    values = np.concatenate(recalls) if recalls else np.empty(0)
    if not np.isfinite(values).any():
        raise ValueError("valid has no user with a held-out target; pass non-empty targets or valid=None")
    return float(np.nanmean(values))
