"""Cross-encoder reranker: the backbone reads (user text, item text) as one sequence; a linear head scores it.

The backbone gets LoRA adapters (targets from the architecture table) and pools with the table's pooling
(mean for BERT-style, last token for GPT-style), so only LoRA weights and the ``(dim, 1)`` head train.
Truncation cuts the user side first: user text lists the newest items first, so cutting on the right drops
the oldest. An item text is cut only when it alone would leave the user less than half the token budget.

Scoring speed (``eval/bench_rerank.py`` measures each; MiniLM, 64 tokens, 2 CPU cores with AMX, float32
LoRA model: 144 pairs/s, 55% of the machine's float32 GEMM peak):

* **item token cache** (on by default, ``item_cache_size`` texts, LRU): item texts recur across users, so
  :meth:`CrossEncoder.score` keeps their token ids and builds each pair from cached ids with the
  tokenizer's own pair template (checked against the tokenizer once; a mismatch turns the cache off);
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
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

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

DEFAULT_ITEM_CACHE = 50_000
"""Item texts whose token ids :meth:`CrossEncoder.score` keeps (about 0.5 kB each at 64 tokens)."""

SCORING_MODES = ("none", "int8", "bf16")
"""``quantize`` values of :meth:`CrossEncoder.for_scoring` (``none``: LoRA merged, float32)."""


@dataclasses.dataclass(frozen=True)
class _PairTemplate:
    """A tokenizer's pair layout: ``prefix + user + mid + item + suffix``, with each part's token type."""

    prefix: tuple[int, ...]
    mid: tuple[int, ...]
    suffix: tuple[int, ...]
    types: tuple[int, int, int, int, int]
    """Token type of prefix, user, mid, item, suffix."""


def _pair_template(tok) -> _PairTemplate | None:
    """Read the pair layout off one real tokenizer call; None if it is not the simple five-part one."""
    if not tok.is_fast:
        return None
    enc = tok(["probe user text"], ["probe item text"])
    ids, seq = enc["input_ids"][0], enc.sequence_ids(0)
    types = enc["token_type_ids"][0] if "token_type_ids" in enc else [0] * len(ids)
    runs: list[tuple[int | None, int, int]] = []  # (sequence id, start, end)
    for p, s in enumerate(seq):
        if runs and runs[-1][0] == s:
            runs[-1] = (s, runs[-1][1], p + 1)
        else:
            runs.append((s, p, p + 1))
    if [r[0] for r in runs if r[0] is not None] != [0, 1]:
        return None
    pos = {s: (a, b) for s, a, b in runs if s is not None}
    (u0, u1), (i0, i1) = pos[0], pos[1]
    parts = [(0, u0), (u0, u1), (u1, i0), (i0, i1), (i1, len(ids))]
    kinds = []
    for a, b in parts:
        if len(set(types[a:b])) > 1:
            return None
        kinds.append(types[a] if b > a else 0)
    return _PairTemplate(tuple(ids[:u0]), tuple(ids[u1:i0]), tuple(ids[i1:]),
                         tuple(kinds))  # type: ignore[arg-type]


def longest_first(n_user: int, n_item: int, budget: int) -> tuple[int, int]:
    """Tokens kept of a (user, item) pair by a fast tokenizer's ``longest_first`` cut to ``budget``.

    The shorter side is kept whole when it leaves the longer side room; otherwise both get half the budget,
    the odd token going to the longer side (the first on a tie). ``tests/test_rerank_speed.py`` checks this
    against the tokenizer for every pair of lengths.
    """
    if n_user + n_item <= budget:
        return n_user, n_item
    swap = n_user > n_item
    short, long_ = (n_item, n_user) if swap else (n_user, n_item)
    long_ = short if short > budget else max(short, budget - short)
    if short + long_ > budget:
        short = budget // 2
        long_ = short + budget % 2
    return (long_, short) if swap else (short, long_)


class CrossEncoder(nn.Module, Reranker):
    """Backbone + LoRA + linear scoring head over the pooled (user text, item text) pair."""

    def __init__(self, model: nn.Module, tokenizer, pooling: str, head: nn.Linear, cfg: RerankConfig,
                 backbone: str, model_type: str, item_cache_size: int = DEFAULT_ITEM_CACHE) -> None:
        super().__init__()
        self.model, self.tokenizer, self.pooling, self.head = model, tokenizer, pooling, head
        self.cfg, self.backbone, self.model_type = cfg, backbone, model_type
        self.item_cache_size = item_cache_size
        """Item texts whose token ids are kept between :meth:`score` calls (0 = tokenise every call)."""
        self.bf16_autocast = False
        """On CUDA, run :meth:`score`'s forward passes under bfloat16 autocast."""
        self.scoring_only: str | None = None
        """Set by :meth:`for_scoring` (its ``quantize``): such a copy scores, never trains or saves."""
        self._template: _PairTemplate | None | bool = False  # False: not read yet
        self._item_tokens: OrderedDict[str, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        self._cut_tokens: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._cache_budget = -1

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

    def _budget(self) -> tuple[int, int]:
        """(tokens left for the two texts, special tokens of a pair)."""
        n_special = self.tokenizer.num_special_tokens_to_add(pair=True)
        budget = self.cfg.max_tokens - n_special
        if budget < 2:
            raise ValueError(f"rerank.max_tokens={self.cfg.max_tokens} leaves no room beside {n_special} "
                             "special tokens")
        return budget, n_special

    def _prepare(self, user_texts: Sequence[str], item_texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Cut over-long item texts; return them with each pair's token length after truncation.

        An item keeps ``min(len, max(budget // 2, budget - user_len))`` tokens, so the final tokenizer call
        (``longest_first``) only ever shortens the user side.
        """
        if len(user_texts) != len(item_texts):
            raise ValueError(f"{len(user_texts)} user texts for {len(item_texts)} item texts")
        tok = self.tokenizer
        budget, n_special = self._budget()
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

    # ------------------------------------------------------------------------------ cached item tokens
    def _pair_layout(self) -> _PairTemplate | None:
        """The tokenizer's pair template, read once and checked against the tokenizer on probe pairs."""
        if self._template is False:
            tpl = _pair_template(self.tokenizer)
            if tpl is not None:  # cut user, cut item, empty user: the cached path must give the same inputs
                users = ["probe user text " * 40, "probe user", ""]
                items = ["probe item", "probe item " * 40, "x"]
                kept = self._item_tokens, self._cut_tokens, self._cache_budget
                self._item_tokens, self._cut_tokens = OrderedDict(), OrderedDict()  # probes stay out of it
                try:
                    cached = self._collate(self._encode_pairs(users, items)[0], tpl)
                finally:
                    self._item_tokens, self._cut_tokens, self._cache_budget = kept
                plain = self._tokenize(users, self._prepare(users, items)[0])
                if cached.keys() != plain.keys() or any(not torch.equal(cached[k], plain[k]) for k in plain):
                    tpl = None
            if tpl is None:
                logger.warning("tokenizer %s: pairs cannot be built from cached item tokens; item token "
                               "cache off", type(self.tokenizer).__name__)
            self._template = tpl
        return self._template  # type: ignore[return-value]

    def _cached_items(self, texts: list[str], budget: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(ids cut at ``budget``, character end of each token or None) per text, from the LRU cache."""
        if self._cache_budget != budget:  # max_tokens changed: cached cuts no longer apply
            self._item_tokens.clear()
            self._cut_tokens.clear()
            self._cache_budget = budget
        cache = self._item_tokens
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        fresh = {}
        if missing:
            enc = self.tokenizer(missing, add_special_tokens=False, truncation=True, max_length=budget,
                                 return_offsets_mapping=True)
            for t, ids, offs in zip(missing, enc["input_ids"], enc["offset_mapping"], strict=True):
                ends = np.array([e for _, e in offs], dtype=np.int32) if 2 * len(ids) > budget else None
                fresh[t] = (np.array(ids, dtype=np.int32), ends)  # ends only where a cut can happen
        out = []
        for t in texts:
            hit = fresh.get(t)
            if hit is None:
                hit = cache[t]
                cache.move_to_end(t)
            out.append(hit)
        _remember(cache, fresh, self.item_cache_size)
        return out

    def _encode_pairs(self, user_texts: Sequence[str], item_texts: Sequence[str]
                      ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
        """Token ids of every pair as the tokenizer would make them, items from the cache.

        Returns:
            per pair ``(user ids, item ids)`` already cut to what the pair keeps, and each pair's total
            length with special tokens.
        """
        if len(user_texts) != len(item_texts):
            raise ValueError(f"{len(user_texts)} user texts for {len(item_texts)} item texts")
        tok = self.tokenizer
        budget, n_special = self._budget()
        uniq_u = list(dict.fromkeys(user_texts))
        # budget + 1 tokens tell "fits" from "too long"; the exact length matters only in a corner (below)
        enc_u = tok(uniq_u, add_special_tokens=False, truncation=True, max_length=budget + 1)["input_ids"]
        u_ids = {t: np.array(ids, dtype=np.int32) for t, ids in zip(uniq_u, enc_u, strict=True)}
        items = self._cached_items(list(item_texts), budget)
        half = budget // 2
        plan: list[np.ndarray | tuple[str, int]] = []  # final item ids, or the (text, keep) of a cut
        cuts: dict[tuple[str, int], str] = {}  # cuts to tokenise: (text, keep) -> text up to token `keep`
        for u, it, (ids, ends) in zip(user_texts, item_texts, items, strict=True):
            keep = min(len(ids), max(half, budget - min(len(u_ids[u]), budget)))
            if keep < len(ids) or len(ids) == budget:  # the same cut as _prepare (`ends` exist for these)
                key = (it, keep)
                if key not in self._cut_tokens and key not in cuts:
                    cuts[key] = it[: int(ends[keep - 1])]  # type: ignore[index]
                plan.append(key)
            else:
                plan.append(ids)
        fresh: dict[tuple[str, int], np.ndarray] = {}
        if cuts:
            enc = tok(list(cuts.values()), add_special_tokens=False)["input_ids"]
            fresh = {k: np.array(ids, dtype=np.int32) for k, ids in zip(cuts, enc, strict=True)}
        finals = [x if isinstance(x, np.ndarray) else fresh[x] if x in fresh else self._cut_tokens[x]
                  for x in plan]
        _remember(self._cut_tokens, fresh, self.item_cache_size)
        out, lengths = [], np.empty(len(plan), dtype=np.int64)
        for p, (u, ids) in enumerate(zip(user_texts, finals, strict=True)):
            uid = u_ids[u]
            if len(uid) > budget and len(ids) > budget:  # both too long: who is longer decides the odd token
                uid = u_ids[u] = np.array(tok(u, add_special_tokens=False)["input_ids"], dtype=np.int32)
            nu, ni = longest_first(len(uid), len(ids), budget)
            out.append((uid[:nu], ids[:ni]))
            lengths[p] = nu + ni + n_special
        return out, lengths

    def _collate(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], tpl: _PairTemplate
                 ) -> dict[str, torch.Tensor]:
        """One right-padded batch of cut pair ids: what ``tokenizer(users, items, padding=True)`` gives."""
        parts = [np.array(p, dtype=np.int32) for p in (tpl.prefix, tpl.mid, tpl.suffix)]
        rows = [np.concatenate([parts[0], u, parts[1], i, parts[2]]) for u, i in pairs]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.tokenizer.pad_token_id, dtype=np.int64)
        types = np.full((len(rows), width), self.tokenizer.pad_token_type_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, (row, (u, i)) in enumerate(zip(rows, pairs, strict=True)):
            ids[r, : len(row)] = row
            types[r, : len(row)] = np.repeat(tpl.types, (len(parts[0]), len(u), len(parts[1]), len(i),
                                                         len(parts[2])))
            mask[r, : len(row)] = 1
        enc = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if "token_type_ids" in self.tokenizer.model_input_names:
            enc["token_type_ids"] = torch.from_numpy(types)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _tokenize(self, user_texts: list[str], item_texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(user_texts, item_texts, truncation="longest_first",
                             max_length=self.cfg.max_tokens, padding=True, return_tensors="pt")
        return dict(enc.to(self.device))

    def _batches(self, user_texts: Sequence[str], item_texts: Sequence[str]
                 ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """``(pair positions, model inputs)`` per batch of ``cfg.score_batch_size`` pairs, longest first.

        Pairs come from the item token cache when it is on and the tokenizer's pair layout is known,
        otherwise from one tokenizer call per batch; both give the same inputs.
        """
        tpl = self._pair_layout() if self.item_cache_size > 0 else None
        if tpl is not None:
            pairs, lengths = self._encode_pairs(user_texts, item_texts)
        else:
            items, lengths = self._prepare(user_texts, item_texts)
        order = np.argsort(-lengths, kind="stable")  # longest first: less padding, memory peak surfaces early
        bs = self.cfg.score_batch_size
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            if tpl is not None:
                yield idx, self._collate([pairs[i] for i in idx], tpl)
            else:
                yield idx, self._tokenize([user_texts[i] for i in idx], [items[i] for i in idx])

    def _run(self, enc: dict[str, torch.Tensor], amp: bool = False) -> torch.Tensor:
        """Logits ``(batch,)`` of tokenised pairs; ``amp``: the backbone under CUDA bfloat16 autocast."""
        with torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
            hidden = self.model(**enc).last_hidden_state  # (batch, seq, dim)
        pooled = pool(hidden.to(self.head.weight.dtype), enc["attention_mask"], self.pooling)  # (batch, dim)
        return self.head(pooled).squeeze(-1)  # (batch,)

    def forward(self, user_texts: Sequence[str], item_texts: Sequence[str]) -> torch.Tensor:
        """Logits ``(batch,)`` for the pairs ``(user_texts[i], item_texts[i])``, in one padded batch."""
        items, _ = self._prepare(user_texts, item_texts)
        return self._run(self._tokenize(list(user_texts), items))

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
        from safetensors.torch import save_file

        if self.scoring_only is not None:
            raise RuntimeError(f"a scoring-only copy (for_scoring({self.scoring_only!r})) has no LoRA "
                               "adapter to save; save the original model and call for_scoring() after "
                               "loading it")
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


def _remember(cache: OrderedDict, fresh: dict, size: int) -> None:
    """Add ``fresh`` entries, then drop the least recently used beyond ``size``."""
    cache.update(fresh)
    while len(cache) > max(size, 0):
        cache.popitem(last=False)


def _quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 ``nn.Linear`` (GPT-2's ``Conv1D`` layers become ``nn.Linear`` first), in place.

    Weights are quantised per output channel (a trained MiniLM reranker, 16 users x 50 candidates: Spearman
    0.936 against float32 per user, vs 0.914 per tensor, at the same speed); activations per tensor, per
    batch, at run time. Keeping the FFN layers in float32 reached 0.988 but no speed-up; SmoothQuant-style
    input scaling (alpha 0.8) 0.988 at a third of the speed-up.
    """
    from transformers.pytorch_utils import Conv1D

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
        from torch.ao.quantization import per_channel_dynamic_qconfig

        model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig},
                                                       dtype=torch.qint8, inplace=True)
    logger.info("quantised %d linear layers to dynamic int8", n_linear)
    return model
