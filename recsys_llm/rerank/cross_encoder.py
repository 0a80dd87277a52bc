"""Cross-encoder reranker: the backbone reads (user text, item text) as one sequence; a linear head scores it.

The backbone gets LoRA adapters (targets from the architecture table) and pools with the table's pooling
(mean for BERT-style, last token for GPT-style), so only LoRA weights and the ``(dim, 1)`` head train.
Truncation cuts the user side first: user text lists the newest items first, so cutting on the right drops
the oldest. An item text is cut only when it alone would leave the user less than half the token budget.

Example:
    >>> from recsys_llm.config import RerankConfig
    >>> ce = CrossEncoder.from_config("minilm", RerankConfig(), device="cpu")  # doctest: +SKIP
    >>> ce.score(["Alien; Star Wars"], ["Aliens (1986). Genres: Sci-Fi."]).shape  # doctest: +SKIP
    (1,)
    >>> ce.save("run/reranker"); CrossEncoder.load("run/reranker")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from recsys_llm.config import RerankConfig, section_from_dict
from recsys_llm.device import resolve_device
from recsys_llm.encoder.backbone import load_backbone, load_tokenizer, pool, resolve_pooling
from recsys_llm.encoder.lora import apply_lora
from recsys_llm.io_utils import atomic_dir, atomic_write_json, load_json
from recsys_llm.rerank.base import Reranker

logger = logging.getLogger(__name__)

_OWN_FILES = ("adapter", "head.safetensors", "reranker.json")
"""What :meth:`CrossEncoder.save` writes; other files in the folder (training logs) are kept."""


class CrossEncoder(nn.Module, Reranker):
    """Backbone + LoRA + linear scoring head over the pooled (user text, item text) pair."""

    def __init__(self, model: nn.Module, tokenizer, pooling: str, head: nn.Linear, cfg: RerankConfig,
                 backbone: str, model_type: str) -> None:
        super().__init__()
        self.model, self.tokenizer, self.pooling, self.head = model, tokenizer, pooling, head
        self.cfg, self.backbone, self.model_type = cfg, backbone, model_type

    @classmethod
    def from_config(cls, backbone: str, cfg: RerankConfig, device: str = "auto") -> CrossEncoder:
        """Fresh cross-encoder: pretrained backbone, LoRA (rank ``cfg.lora_r``, alpha ``2r``), random head."""
        base = load_backbone(backbone)
        model_type = base.config.model_type
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(cfg.seed)
            model = apply_lora(base, r=cfg.lora_r, alpha=2 * cfg.lora_r, dropout=0.05)
            head = nn.Linear(base.config.hidden_size, 1)
        pooling = resolve_pooling("auto", model_type)
        ce = cls(model, load_tokenizer(backbone), pooling, head, cfg, backbone, model_type)
        return ce.to(resolve_device(device))

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def _prepare(self, user_texts: Sequence[str], item_texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Cut over-long item texts; return them with each pair's token length after truncation.

        An item keeps ``min(len, max(budget // 2, budget - user_len))`` tokens, so the final tokenizer call
        (``longest_first``) only ever shortens the user side.
        """
        if len(user_texts) != len(item_texts):
            raise ValueError(f"{len(user_texts)} user texts for {len(item_texts)} item texts")
        tok = self.tokenizer
        n_special = tok.num_special_tokens_to_add(pair=True)
        budget = self.cfg.max_tokens - n_special
        if budget < 2:
            raise ValueError(f"rerank.max_tokens={self.cfg.max_tokens} leaves no room beside {n_special} "
                             "special tokens")
        uniq_u, uniq_i = list(dict.fromkeys(user_texts)), list(dict.fromkeys(item_texts))
        kw = {"add_special_tokens": False, "truncation": True, "max_length": budget}
        len_u = {t: len(ids) for t, ids in zip(uniq_u, tok(uniq_u, **kw)["input_ids"], strict=True)}
        enc_i = tok(uniq_i, return_offsets_mapping=tok.is_fast, **kw)
        where = {t: j for j, t in enumerate(uniq_i)}
        items, lengths = [], np.empty(len(user_texts), dtype=np.int64)
        for p, (u, it) in enumerate(zip(user_texts, item_texts, strict=True)):
            j = where[it]
            ids = enc_i["input_ids"][j]
            keep = min(len(ids), max(budget // 2, budget - len_u[u]))
            if keep < len(ids) or len(ids) == budget:  # cut (a text of exactly `budget` may be longer)
                it = it[: enc_i["offset_mapping"][j][keep - 1][1]] if tok.is_fast else tok.decode(ids[:keep])
            items.append(it)
            lengths[p] = min(budget, len_u[u] + keep) + n_special
        return items, lengths

    def _logits(self, user_texts: list[str], item_texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(user_texts, item_texts, truncation="longest_first", max_length=self.cfg.max_tokens,
                             padding=True, return_tensors="pt").to(self.device)
        hidden = self.model(**enc).last_hidden_state  # (batch, seq, dim)
        pooled = pool(hidden, enc["attention_mask"], self.pooling)  # (batch, dim)
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1)  # (batch,)

    def forward(self, user_texts: Sequence[str], item_texts: Sequence[str]) -> torch.Tensor:
        """Logits ``(batch,)`` for the pairs ``(user_texts[i], item_texts[i])``, in one padded batch."""
        items, _ = self._prepare(user_texts, item_texts)
        return self._logits(list(user_texts), items)

    def score(self, user_texts: Sequence[str], item_texts: Sequence[str]) -> np.ndarray:
        """float32 scores ``(n,)``: eval mode, batches of ``cfg.score_batch_size`` pairs of similar length."""
        n = len(user_texts)
        if n == 0:
            return np.empty(0, dtype=np.float32)
        items, lengths = self._prepare(user_texts, item_texts)
        out = np.empty(n, dtype=np.float32)
        order = np.argsort(-lengths, kind="stable")  # longest first: less padding, memory peak surfaces early
        bs = self.cfg.score_batch_size
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                for start in tqdm(range(0, n, bs), desc="rerank", unit="batch", disable=n <= 10 * bs):
                    idx = order[start : start + bs]
                    logits = self._logits([user_texts[i] for i in idx], [items[i] for i in idx])
                    out[idx] = logits.float().cpu().numpy()
        finally:
            self.train(was_training)
        return out

    def save(self, folder: str | Path) -> None:
        """Write ``adapter/`` (peft, safetensors), ``head.safetensors`` and ``reranker.json``, atomically.

        Everything is written to a temporary folder beside ``folder`` and swapped in by renames; files of
        an existing ``folder`` that are not ours (e.g. ``rerank_log.jsonl``) are carried over.
        """
        from safetensors.torch import save_file

        with atomic_dir(folder, owned=_OWN_FILES) as tmp:
            self.model.save_pretrained(str(tmp / "adapter"))
            save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                      str(tmp / "head.safetensors"))
            meta = {"rerank": dataclasses.asdict(self.cfg), "backbone": self.backbone,
                    "model_type": self.model_type, "pooling": self.pooling}
            atomic_write_json(tmp / "reranker.json", meta)
        logger.info("saved cross-encoder to %s", folder)

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto") -> CrossEncoder:
        """Rebuild a saved cross-encoder (the backbone is reloaded from ``reranker.json``'s ``backbone``)."""
        from peft import PeftModel
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / "reranker.json").is_file():
            raise FileNotFoundError(f"{folder}: no saved cross-encoder here (reranker.json missing); train "
                                    "one first (`recsys-llm rerank train` or CrossEncoder.save)")
        meta = load_json(folder / "reranker.json")
        cfg = section_from_dict(RerankConfig, meta["rerank"], "rerank")
        base = load_backbone(meta["backbone"])
        if base.config.model_type != meta["model_type"]:
            raise ValueError(f"{folder}: saved for a {meta['model_type']} backbone, but {meta['backbone']!r} "
                             f"is now {base.config.model_type}")
        model = PeftModel.from_pretrained(base, str(folder / "adapter"), is_trainable=True)
        head = nn.Linear(base.config.hidden_size, 1)
        head.load_state_dict(load_file(str(folder / "head.safetensors")))
        ce = cls(model, load_tokenizer(meta["backbone"]), meta["pooling"], head, cfg, meta["backbone"],
                 meta["model_type"])
        return ce.to(resolve_device(device))
