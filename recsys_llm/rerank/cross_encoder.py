"""Cross-encoder reranker: the backbone reads (user text, item text) as one sequence; a linear head scores it.

The backbone gets LoRA adapters (targets from the architecture table) and pools with the table's pooling
(mean for BERT-style, last token for GPT-style), so only LoRA weights and the ``(dim, 1)`` head train.
Truncation cuts the user side first: user text lists the newest items first, so cutting on the right drops
the oldest. An item text is cut only when it alone would leave the user less than half the token budget
(:mod:`recsys_llm.rerank.pair_tokens` turns the pairs into model inputs).

Scoring speed (``eval/bench_rerank.py`` measures each; MiniLM, 64 tokens, 2 CPU cores with AMX, float32
LoRA model: 144 pairs/s, 55% of the machine's float32 GEMM peak):

* **item token cache** (on by default, ``item_cache_size`` texts, LRU): item texts recur across users, so
  :meth:`CrossEncoder.score` keeps their token ids and builds each pair from cached ids with the
  tokenizer's own pair template (:class:`~recsys_llm.rerank.pair_tokens.PairTokenizer`; checked against the
  tokenizer once, a mismatch turns the cache off);
  only user texts are tokenised per call. The inputs are exactly the tokenizer's (same truncation), so the
  scores are identical; ``item_cache_size = 0`` turns it off. Tokenising drops from 0.23 to 0.05 ms a
  pair, which matters next to a fast forward pass (bf16: 1.4 ms a pair), not next to float32 (7 ms).
* :meth:`CrossEncoder.for_scoring`: a scoring-only copy with LoRA merged into the backbone: the same
  scores up to float rounding (6e-6) and 1.2-1.3x faster; ``bf16`` (bfloat16 weights): 3.6-4.6x faster
  than the float32 LoRA model on AMX, Spearman >= 0.998 per user against it; ``int8`` (dynamic int8
  ``nn.Linear``, CPU): 2x faster but Spearman 0.83-0.91, top-10 overlap 0.67-0.86: not the same ranking.
* ``bf16_autocast = True``: on CUDA, :meth:`CrossEncoder.score` runs the backbone under
  ``torch.autocast("cuda", dtype=torch.bfloat16)`` (off by default: it changes the scores slightly).

Example:
    >>> from recsys_llm.config import RerankConfig
    >>> ce = CrossEncoder.from_config("minilm", RerankConfig(), device="cpu")  # doctest: +SKIP
    >>> ce.score(["Alien; Star Wars"], ["Aliens (1986). Genres: Sci-Fi."]).shape  # doctest: +SKIP
    (1,)
    >>> ce.save("run/reranker"); CrossEncoder.load("run/reranker")  # doctest: +SKIP
    >>> fast = CrossEncoder.load("run/reranker").for_scoring()  # LoRA merged  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import nn
from torch.ao.quantization import per_channel_dynamic_qconfig
from tqdm.auto import tqdm
from transformers.pytorch_utils import Conv1D

from recsys_llm.config import RerankConfig, section_from_dict
from recsys_llm.device import bf16_native, resolve_device
from recsys_llm.encoder.backbone import load_backbone, load_tokenizer, pool, resolve_pooling
from recsys_llm.encoder.lora import apply_lora
from recsys_llm.io_utils import atomic_dir, atomic_write_json, load_json
from recsys_llm.rerank.base import Reranker
from recsys_llm.rerank.pair_tokens import DEFAULT_ITEM_CACHE, Encoded, PairTokenizer, longest_first

__all__ = ["DEFAULT_ITEM_CACHE", "SCORING_MODES", "CrossEncoder", "longest_first"]

logger = logging.getLogger(__name__)

_OWN_FILES = ("adapter", "head.safetensors", "reranker.json")
"""What :meth:`CrossEncoder.save` writes; other files in the folder (training logs) are kept."""

SCORING_MODES = ("none", "int8", "bf16", "auto")
"""``quantize`` values of :meth:`CrossEncoder.for_scoring` (``none``: LoRA merged, float32; ``auto``: ``bf16``
where the device computes it natively, else ``none``)."""


class CrossEncoder(nn.Module, Reranker):
    """Backbone + LoRA + linear scoring head over the pooled (user text, item text) pair.

    ``pairs`` (:class:`~recsys_llm.rerank.pair_tokens.PairTokenizer`) turns text pairs into model inputs,
    with the item token cache; ``item_cache_size`` sets its size.
    """

    def __init__(self, model: nn.Module, tokenizer, pooling: str, head: nn.Linear, cfg: RerankConfig,
                 backbone: str, model_type: str, item_cache_size: int = DEFAULT_ITEM_CACHE) -> None:
        super().__init__()
        self.model, self.tokenizer, self.pooling, self.head = model, tokenizer, pooling, head
        self.cfg, self.backbone, self.model_type = cfg, backbone, model_type
        self.pairs = PairTokenizer(tokenizer, cfg, item_cache_size)
        self.bf16_autocast = False
        """On CUDA, run :meth:`score`'s forward passes under bfloat16 autocast."""
        self.scoring_only: str | None = None
        """Set by :meth:`for_scoring` (its ``quantize``): such a copy scores, never trains or saves."""

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

    @property
    def item_cache_size(self) -> int:
        """Item texts whose token ids are kept between :meth:`score` calls (0 = tokenise every call)."""
        return self.pairs.cache_size

    @item_cache_size.setter
    def item_cache_size(self, size: int) -> None:
        self.pairs.cache_size = size

    # ---------------------------------------------------------------------------------------- scoring
    def _batches(self, user_texts: Sequence[str], item_texts: Sequence[str]
                 ) -> Iterator[tuple[np.ndarray, Encoded]]:
        """``(pair positions, model inputs on this device)`` per batch of ``cfg.score_batch_size`` pairs."""
        for idx, enc in self.pairs.batches(user_texts, item_texts, self.cfg.score_batch_size):
            yield idx, {k: v.to(self.device) for k, v in enc.items()}

    def _run(self, enc: Encoded, amp: bool = False) -> torch.Tensor:
        """Logits ``(batch,)`` of tokenised pairs; ``amp``: the backbone under CUDA bfloat16 autocast."""
        with torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
            hidden = self.model(**enc).last_hidden_state  # (batch, seq, dim)
        pooled = pool(hidden.to(self.head.weight.dtype), enc["attention_mask"], self.pooling)  # (batch, dim)
        return self.head(pooled).squeeze(-1)  # (batch,)

    def forward(self, user_texts: Sequence[str], item_texts: Sequence[str]) -> torch.Tensor:
        """Logits ``(batch,)`` for the pairs ``(user_texts[i], item_texts[i])``, in one padded batch."""
        items, _ = self.pairs.prepare(user_texts, item_texts)
        enc = self.pairs.tokenize(list(user_texts), items)
        return self._run({k: v.to(self.device) for k, v in enc.items()})

    def score(self, user_texts: Sequence[str], item_texts: Sequence[str]) -> np.ndarray:
        """float32 scores ``(n,)``: eval mode, batches of ``cfg.score_batch_size`` pairs of similar length."""
        n = len(user_texts)
        if n == 0:
            return np.empty(0, dtype=np.float32)
        out = np.empty(n, dtype=np.float32)
        bs = self.cfg.score_batch_size
        amp = self.bf16_autocast and self.device.type == "cuda"
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                batches = self._batches(user_texts, item_texts)
                for idx, enc in tqdm(batches, total=-(-n // bs), desc="rerank", unit="batch",
                                     disable=n <= 10 * bs):
                    out[idx] = self._run(enc, amp).float().cpu().numpy()
        finally:
            self.train(was_training)
        return out

    # --------------------------------------------------------------------------- scoring-only copies
    def for_scoring(self, quantize: str = "none") -> CrossEncoder:
        """A scoring-only copy: LoRA merged into the backbone, optionally quantised.

        Args:
            quantize: ``none`` (float32; the same scores up to float rounding, without the LoRA branches),
                ``int8`` (every ``nn.Linear`` of the backbone dynamically quantised to int8 weights with
                ``torch.ao.quantization.quantize_dynamic``; CPU only; lossy on MiniLM (see the module
                docstring); activations are quantised per batch, so a pair's score moves slightly with its
                batch) or ``bf16`` (backbone weights in bfloat16; fast on GPUs and on CPUs with
                AMX/AVX512-BF16, slow without). The head stays float32.

        Returns:
            A new :class:`CrossEncoder` on the same device with the same tokenizer, a copy of ``cfg`` and
            the same cache size and ``bf16_autocast``; ``train()`` and :meth:`save` raise on it (train and
            save the original).
        """
        if quantize not in SCORING_MODES:
            raise ValueError(f"quantize={quantize!r}; choose one of {', '.join(SCORING_MODES)}")
        if quantize == "auto":  # emulated bf16 (an AVX2-only CPU) is ~20x slower than float32, not faster
            quantize = "bf16" if bf16_native(self.device) else "none"
        if self.scoring_only is not None:
            raise ValueError(f"this CrossEncoder is already a scoring-only copy ({self.scoring_only}); "
                             "call for_scoring on the original")
        if quantize == "int8" and self.device.type != "cpu":
            raise ValueError(f"quantize='int8' (dynamic int8) runs on CPU only, the model is on "
                             f"{self.device}; on GPU use quantize='bf16' or bf16_autocast=True")
        model: Any = copy.deepcopy(self.model)  # a peft model or a plain transformers one
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model.eval().requires_grad_(False)
        if quantize == "int8":
            model = _quantize_int8(model)
        elif quantize == "bf16":
            model = model.to(torch.bfloat16)
        head = copy.deepcopy(self.head).eval().requires_grad_(False)
        ce = CrossEncoder(model, self.tokenizer, self.pooling, head, dataclasses.replace(self.cfg),
                          self.backbone, self.model_type, item_cache_size=self.item_cache_size)
        ce.bf16_autocast = self.bf16_autocast
        ce.scoring_only = quantize
        return ce.eval()

    def train(self, mode: bool = True) -> CrossEncoder:
        if mode and self.scoring_only is not None:
            raise RuntimeError(f"this CrossEncoder is a scoring-only copy (for_scoring"
                               f"({self.scoring_only!r}): LoRA merged into the backbone); train the original "
                               "model and call for_scoring() again")
        return super().train(mode)

    # ------------------------------------------------------------------------------------- persistence
    def save(self, folder: str | Path) -> None:
        """Write ``adapter/`` (peft, safetensors), ``head.safetensors`` and ``reranker.json``, atomically.

        Everything is written to a temporary folder beside ``folder`` and swapped in by renames; files of
        an existing ``folder`` that are not ours (e.g. ``rerank_log.jsonl``) are carried over.
        """
        if self.scoring_only is not None:
            raise RuntimeError(f"a scoring-only copy (for_scoring({self.scoring_only!r})) has no LoRA "
                               "adapter to save; save the original model and call for_scoring() after "
                               "loading it")
        with atomic_dir(folder, owned=_OWN_FILES) as tmp:
            cast(PeftModel, self.model).save_pretrained(str(tmp / "adapter"))  # not a scoring copy: peft
            save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                      str(tmp / "head.safetensors"))
            meta = {"rerank": dataclasses.asdict(self.cfg), "backbone": self.backbone,
                    "model_type": self.model_type, "pooling": self.pooling}
            atomic_write_json(tmp / "reranker.json", meta)
        logger.info("saved cross-encoder to %s", folder)

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto") -> CrossEncoder:
        """Rebuild a saved cross-encoder (the backbone is reloaded from ``reranker.json``'s ``backbone``)."""
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


def _quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 ``nn.Linear`` (GPT-2's ``Conv1D`` layers become ``nn.Linear`` first), in place.

    Weights are quantised per output channel (a trained MiniLM reranker, 16 users x 50 candidates: Spearman
    0.936 against float32 per user, vs 0.914 per tensor, at the same speed); activations per tensor, per
    batch, at run time. Keeping the FFN layers in float32 reached 0.988 but no speed-up; SmoothQuant-style
    input scaling (alpha 0.8) 0.988 at a third of the speed-up.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):  # y = x @ W + b with W (in, out)
                lin = nn.Linear(child.weight.shape[0], child.weight.shape[1])
                lin.weight.data = child.weight.data.t().contiguous()
                lin.bias.data = child.bias.data.clone()
                setattr(parent, name, lin)
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    if n_linear == 0:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layers to quantise")
    with warnings.catch_warnings():  # torch.ao's eager quantisation is deprecated in favour of torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*", category=UserWarning)
        model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig},
                                                       dtype=torch.qint8, inplace=True)
    logger.info("quantised %d linear layers to dynamic int8", n_linear)
    return model
