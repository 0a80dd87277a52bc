"""The two-tower encoder: one shared (siamese) backbone + LoRA, with asymmetric names for the two sides.

Users (history text) and items (item text) go through the same weights; ``encode_users`` and
``encode_items`` differ only in name and token budget, so a caller can never mix up which side it encodes.
Embeddings are pooled (mean for BERT-style, last real token for GPT-style, from the architecture table)
and L2-normalised, so inner product = cosine.

Artifact (``save``/``load``): ``adapter_config.json`` + ``adapter_model.safetensors`` (peft) and
``encoder.json`` (the :class:`EncoderConfig` fields, resolved pooling, model type, backbone and the
adapter's sha256).

Example:
    >>> enc = TwoTowerEncoder.from_config(EncoderConfig(backbone="minilm"), device="cpu")  # doctest: +SKIP
    >>> items = enc.encode_items(["Toy Story (1995). Genres: Animation."], max_tokens=48)  # (1, 384) float32
    >>> users = enc.encode_users(["Heat (1995); Casino (1995)"], max_tokens=96)  # (1, 384)
    >>> scores = users @ items.T  # (1, 1) cosine similarities
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model_state_dict
from torch import nn
from tqdm.auto import tqdm

from recsys_llm.config import EncoderConfig, section_from_dict
from recsys_llm.device import autocast, resolve_device
from recsys_llm.encoder.backbone import load_backbone, load_tokenizer, pool, resolve_pooling
from recsys_llm.encoder.lora import apply_lora
from recsys_llm.io_utils import atomic_dir, atomic_write_json, load_json

logger = logging.getLogger(__name__)

META_FILE = "encoder.json"
_OWNED_FILES = (META_FILE, "adapter_config.json", "adapter_model.safetensors", "README.md")


class TwoTowerEncoder(nn.Module):
    """Shared (siamese) backbone + LoRA; users and items are encoded by the same weights.

    Args:
        model: the transformers backbone, usually wrapped in a ``peft.PeftModel``.
        tokenizer: its tokenizer (right padding).
        pooling: ``mean``, ``cls`` or ``last`` (already resolved, not ``auto``).
        config: the :class:`EncoderConfig` it was built from (saved with the adapter).
        model_type: ``model.config.model_type`` of the backbone.
    """

    model: Any
    """A ``peft.PeftModel`` or a plain transformers model."""

    def __init__(self, model: nn.Module, tokenizer, pooling: str, config: EncoderConfig, model_type: str):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.config = config
        self.model_type = model_type
        self.dim: int = int(self.model.config.hidden_size)
        # Tokenizers that add no special tokens would give an empty sequence for "": use EOS/pad instead.
        self._empty_text = (
            "" if len(tokenizer("")["input_ids"]) else (tokenizer.eos_token or tokenizer.pad_token)
        )

    @classmethod
    def from_config(
        cls, cfg: EncoderConfig, lora: bool = True, device: str = "auto", seed: int = 0
    ) -> TwoTowerEncoder:
        """Load the backbone named by ``cfg`` and (``lora=True``) wrap it with a fresh LoRA adapter.

        ``seed`` fixes the LoRA initialisation without touching the global RNG. Returned in eval mode.
        """
        tokenizer = load_tokenizer(cfg.backbone)
        model: Any = load_backbone(cfg.backbone)
        model_type = model.config.model_type
        if lora:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules)
        pooling = resolve_pooling(cfg.pooling, model_type)
        return cls(model, tokenizer, pooling, cfg, model_type).to(resolve_device(device)).eval()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_adapter(self) -> bool:
        return hasattr(self.model, "disable_adapter")

    def tokenize(self, texts: Sequence[str], max_tokens: int) -> dict[str, torch.Tensor]:
        """Right-padded, truncated ``input_ids`` and ``attention_mask``, each ``(batch, seq)``, on CPU."""
        texts = [t if t else self._empty_text for t in texts]
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, *batches: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Encode tokenised batches with the shared backbone in one call (one DDP forward for both towers).

        Returns:
            One ``(batch_i, dim)`` L2-normalised float32 tensor per input batch.
        """
        out = []
        for batch in batches:
            ids = batch["input_ids"].to(self.device)
            mask = batch["attention_mask"].to(self.device)  # (batch, seq)
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (batch, seq, dim)
            out.append(F.normalize(pool(hidden, mask, self.pooling).float(), dim=-1))  # (batch, dim)
        return tuple(out)

    def embed(self, texts: Sequence[str], max_tokens: int) -> torch.Tensor:
        """``(batch, dim)`` L2-normalised embeddings with gradients (for training)."""
        return self(self.tokenize(texts, max_tokens))[0]

    def _encode(
        self, texts: Sequence[str], max_tokens: int, batch_size: int, show_progress: bool, desc: str
    ) -> np.ndarray:
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)  # (n, dim)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # longest first: less padding per batch
        was_training = self.training
        self.eval()
        try:
            with (
                torch.inference_mode(),
                autocast(self.device, getattr(self.config, "inference_precision", "auto")),
                tqdm(total=len(texts), desc=desc, unit="text", disable=not show_progress) as bar,
            ):
                for start in range(0, len(texts), batch_size):
                    idx = order[start : start + batch_size]
                    emb = self(self.tokenize([texts[i] for i in idx], max_tokens))[0]  # (b, dim)
                    out[idx] = emb.cpu().numpy()
                    bar.update(len(idx))
        finally:
            self.train(was_training)
        return out

    def encode_items(
        self, texts: Sequence[str], max_tokens: int, batch_size: int = 128, show_progress: bool = True
    ) -> np.ndarray:
        """Item texts -> ``(n, dim)`` float32 C-contiguous unit vectors, in input order."""
        return self._encode(texts, max_tokens, batch_size, show_progress, "encode items")

    def encode_users(
        self, texts: Sequence[str], max_tokens: int, batch_size: int = 128, show_progress: bool = True
    ) -> np.ndarray:
        """User (history) texts -> ``(n, dim)`` float32 C-contiguous unit vectors, in input order."""
        return self._encode(texts, max_tokens, batch_size, show_progress, "encode users")

    @contextmanager
    def zero_shot(self) -> Iterator[TwoTowerEncoder]:
        """Temporarily disable the LoRA adapter: encodings inside are the untuned backbone's."""
        if not self.has_adapter:
            yield self
            return
        with self.model.disable_adapter():
            yield self

    def adapter_sha256(self) -> str | None:
        """sha256 over the adapter tensors (names, dtypes, shapes, bytes); None without an adapter."""
        if not self.has_adapter:
            return None
        h = hashlib.sha256()
        for name, t in sorted(get_peft_model_state_dict(self.model).items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def fingerprint(self) -> dict:
        """Identity for embedding/index metadata: equal fingerprint, equal embeddings."""
        return {
            "backbone": self.config.backbone,
            "adapter_sha256": self.adapter_sha256(),
            "pooling": self.pooling,
            "dim": self.dim,
        }

    def save(self, folder: str | Path) -> None:
        """Write the adapter + ``encoder.json``: built in a temp folder beside ``folder``, then swapped in.

        Files in an existing ``folder`` that this method does not write (e.g. ``train_log.jsonl``) are kept.
        """
        with atomic_dir(folder, owned=_OWNED_FILES) as tmp:
            if self.has_adapter:
                self.model.save_pretrained(tmp, safe_serialization=True)
            meta = {
                **dataclasses.asdict(self.config),
                "resolved_pooling": self.pooling,
                "model_type": self.model_type,
                "dim": self.dim,
                "adapter_sha256": self.adapter_sha256(),
            }
            atomic_write_json(tmp / META_FILE, meta)
        logger.info("saved encoder to %s", folder)

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto") -> TwoTowerEncoder:
        """Rebuild a saved encoder (backbone from ``encoder.json`` + the saved adapter) for encoding.

        Raises:
            FileNotFoundError: ``folder/encoder.json`` is missing.
            ValueError: the loaded adapter's sha256 differs from the recorded one (corrupt or edited files).
        """
        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            raise FileNotFoundError(
                f"{folder / META_FILE} not found: {folder} is not a saved TwoTowerEncoder "
                "(run `recsys-llm finetune` first, or pass the encoder folder)"
            )
        meta = load_json(folder / META_FILE)
        fields = {f.name for f in dataclasses.fields(EncoderConfig)}
        cfg = section_from_dict(EncoderConfig, {k: v for k, v in meta.items() if k in fields}, "encoder")
        model: Any = load_backbone(cfg.backbone)
        if meta.get("adapter_sha256"):
            model = PeftModel.from_pretrained(model, str(folder))
        enc = cls(model, load_tokenizer(cfg.backbone), meta["resolved_pooling"], cfg, meta["model_type"])
        if enc.adapter_sha256() != meta.get("adapter_sha256"):
            raise ValueError(f"adapter in {folder} does not match the sha256 recorded in {META_FILE}")
        return enc.to(resolve_device(device)).eval()
