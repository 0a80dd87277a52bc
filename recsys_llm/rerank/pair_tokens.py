"""Cross-encoder inputs: (user text, item text) pairs as the tokenizer's own pair call makes them, fast.

The budget is ``max_tokens`` minus the pair's special tokens. An item keeps
``min(len, max(budget // 2, budget - user_len))`` tokens, so the final ``longest_first`` cut only ever
shortens the user side (user text lists the newest items first: cutting on the right drops the oldest).

Item texts recur across users, so :class:`PairTokenizer` keeps their token ids in an LRU cache and builds
each pair from cached ids with the tokenizer's own pair template (:func:`pair_template`, checked against the
tokenizer once; a mismatch turns the cache off). Only user texts are tokenised per call. The inputs are
exactly the tokenizer's (same truncation), so the scores are identical.

Example:
    >>> pairs = PairTokenizer(tokenizer, RerankConfig(max_tokens=64))  # doctest: +SKIP
    >>> for rows, enc in pairs.batches(["Alien; Heat"], ["Aliens (1986)."], batch_size=32):  # doctest: +SKIP
    ...     enc["input_ids"].shape
    torch.Size([1, 12])
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from recsys_llm.config import RerankConfig

__all__ = ["DEFAULT_ITEM_CACHE", "PairTemplate", "PairTokenizer", "longest_first", "pair_template"]

logger = logging.getLogger(__name__)

DEFAULT_ITEM_CACHE = 50_000
"""Item texts whose token ids a :class:`PairTokenizer` keeps (about 0.5 kB each at 64 tokens)."""

Encoded = dict[str, torch.Tensor]
"""Model inputs of a batch of pairs: ``input_ids``, ``attention_mask`` (+ ``token_type_ids``), on CPU."""


@dataclasses.dataclass(frozen=True)
class PairTemplate:
    """A tokenizer's pair layout: ``prefix + user + mid + item + suffix``, with each part's token type."""

    prefix: tuple[int, ...]
    mid: tuple[int, ...]
    suffix: tuple[int, ...]
    types: tuple[int, int, int, int, int]
    """Token type of prefix, user, mid, item, suffix."""


def pair_template(tok) -> PairTemplate | None:
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
    return PairTemplate(tuple(ids[:u0]), tuple(ids[u1:i0]), tuple(ids[i1:]),
                        tuple(kinds))  # type: ignore[arg-type]


def longest_first(n_user: int, n_item: int, budget: int) -> tuple[int, int]:
    """Tokens kept of a (user, item) pair by a fast tokenizer's ``longest_first`` cut to ``budget``.

    The shorter side is kept whole when it leaves the longer side room; otherwise both get half the budget,
    the odd token going to the longer side (the first on a tie). ``tests/test_rerank_speed.py`` checks this
    against the tokenizer for every pair of lengths.

    Example:
        >>> longest_first(3, 20, 10), longest_first(20, 30, 9)
        ((3, 7), (4, 5))
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


class PairTokenizer:
    """(user text, item text) pairs -> model inputs, cut to ``cfg.max_tokens``, item tokens cached.

    Args:
        tokenizer: a transformers tokenizer (the cache needs a fast one).
        cfg: read at every call (``max_tokens``), so a changed budget applies at once (the cache is emptied).
        cache_size: item texts whose token ids are kept between calls (0 = tokenise every call).
    """

    def __init__(self, tokenizer, cfg: RerankConfig, cache_size: int = DEFAULT_ITEM_CACHE) -> None:
        self.tokenizer, self.cfg, self.cache_size = tokenizer, cfg, cache_size
        self._template: PairTemplate | None | bool = False  # False: not read yet
        self._item_tokens: OrderedDict[str, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        self._cut_tokens: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._cache_budget = -1

    @property
    def cached_items(self) -> int:
        """How many item texts' token ids are cached now."""
        return len(self._item_tokens)

    def clear_cache(self) -> None:
        self._item_tokens.clear()
        self._cut_tokens.clear()

    def budget(self) -> tuple[int, int]:
        """(tokens left for the two texts, special tokens of a pair)."""
        n_special = self.tokenizer.num_special_tokens_to_add(pair=True)
        budget = self.cfg.max_tokens - n_special
        if budget < 2:
            raise ValueError(f"rerank.max_tokens={self.cfg.max_tokens} leaves no room beside {n_special} "
                             "special tokens")
        return budget, n_special

    def prepare(self, user_texts: Sequence[str], item_texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Cut over-long item texts; return them with each pair's token length after truncation.

        An item keeps ``min(len, max(budget // 2, budget - user_len))`` tokens, so the final tokenizer call
        (``longest_first``) only ever shortens the user side.
        """
        if len(user_texts) != len(item_texts):
            raise ValueError(f"{len(user_texts)} user texts for {len(item_texts)} item texts")
        tok = self.tokenizer
        budget, n_special = self.budget()
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

    def tokenize(self, user_texts: list[str], item_texts: list[str]) -> Encoded:
        """The tokenizer's own pair call (``longest_first`` to ``max_tokens``, padded), on CPU."""
        enc = self.tokenizer(user_texts, item_texts, truncation="longest_first",
                             max_length=self.cfg.max_tokens, padding=True, return_tensors="pt")
        return dict(enc)

    def batches(self, user_texts: Sequence[str], item_texts: Sequence[str], batch_size: int
                ) -> Iterator[tuple[np.ndarray, Encoded]]:
        """``(pair positions, model inputs)`` per batch of ``batch_size`` pairs, longest first.

        Pairs come from the item token cache when it is on and the tokenizer's pair layout is known,
        otherwise from one tokenizer call per batch; both give the same inputs.
        """
        tpl = self.layout() if self.cache_size > 0 else None
        if tpl is not None:
            pairs, lengths = self.encode_pairs(user_texts, item_texts)
        else:
            items, lengths = self.prepare(user_texts, item_texts)
        order = np.argsort(-lengths, kind="stable")  # longest first: less padding, memory peak surfaces early
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if tpl is not None:
                yield idx, self.collate([pairs[i] for i in idx], tpl)
            else:
                yield idx, self.tokenize([user_texts[i] for i in idx], [items[i] for i in idx])

    # ------------------------------------------------------------------------------ cached item tokens
    def layout(self) -> PairTemplate | None:
        """The tokenizer's pair template, read once and checked against the tokenizer on probe pairs."""
        if self._template is False:
            tpl = pair_template(self.tokenizer)
            if tpl is not None:  # cut user, cut item, empty user: the cached path must give the same inputs
                users = ["probe user text " * 40, "probe user", ""]
                items = ["probe item", "probe item " * 40, "x"]
                kept = self._item_tokens, self._cut_tokens, self._cache_budget
                self._item_tokens, self._cut_tokens = OrderedDict(), OrderedDict()  # probes stay out of it
                try:
                    cached = self.collate(self.encode_pairs(users, items)[0], tpl)
                finally:
                    self._item_tokens, self._cut_tokens, self._cache_budget = kept
                plain = self.tokenize(users, self.prepare(users, items)[0])
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
            self.clear_cache()
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
        _remember(cache, fresh, self.cache_size)
        return out

    def encode_pairs(self, user_texts: Sequence[str], item_texts: Sequence[str]
                     ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
        """Token ids of every pair as the tokenizer would make them, items from the cache.

        Returns:
            per pair ``(user ids, item ids)`` already cut to what the pair keeps, and each pair's total
            length with special tokens.
        """
        if len(user_texts) != len(item_texts):
            raise ValueError(f"{len(user_texts)} user texts for {len(item_texts)} item texts")
        tok = self.tokenizer
        budget, n_special = self.budget()
        uniq_u = list(dict.fromkeys(user_texts))
        # budget + 1 tokens tell "fits" from "too long"; the exact length matters only in a corner (below)
        enc_u = tok(uniq_u, add_special_tokens=False, truncation=True, max_length=budget + 1)["input_ids"]
        u_ids = {t: np.array(ids, dtype=np.int32) for t, ids in zip(uniq_u, enc_u, strict=True)}
        finals = self._item_ids(user_texts, item_texts, u_ids, budget)
        out, lengths = [], np.empty(len(finals), dtype=np.int64)
        for p, (u, ids) in enumerate(zip(user_texts, finals, strict=True)):
            uid = u_ids[u]
            if len(uid) > budget and len(ids) > budget:  # both too long: who is longer decides the odd token
                uid = u_ids[u] = np.array(tok(u, add_special_tokens=False)["input_ids"], dtype=np.int32)
            nu, ni = longest_first(len(uid), len(ids), budget)
            out.append((uid[:nu], ids[:ni]))
            lengths[p] = nu + ni + n_special
        return out, lengths

    def _item_ids(self, user_texts: Sequence[str], item_texts: Sequence[str], u_ids: dict[str, np.ndarray],
                  budget: int) -> list[np.ndarray]:
        """Each pair's item ids after :meth:`prepare`'s cut, cut items re-tokenised (and cached) as text."""
        items = self._cached_items(list(item_texts), budget)
        half = budget // 2
        plan: list[np.ndarray | tuple[str, int]] = []  # final item ids, or the (text, keep) of a cut
        cuts: dict[tuple[str, int], str] = {}  # cuts to tokenise: (text, keep) -> text up to token `keep`
        for u, it, (ids, ends) in zip(user_texts, item_texts, items, strict=True):
            keep = min(len(ids), max(half, budget - min(len(u_ids[u]), budget)))
            if keep < len(ids) or len(ids) == budget:  # the same cut as prepare (`ends` exist for these)
                key = (it, keep)
                if key not in self._cut_tokens and key not in cuts:
                    cuts[key] = it[: int(ends[keep - 1])]  # type: ignore[index]
                plan.append(key)
            else:
                plan.append(ids)
        fresh: dict[tuple[str, int], np.ndarray] = {}
        if cuts:
            enc = self.tokenizer(list(cuts.values()), add_special_tokens=False)["input_ids"]
            fresh = {k: np.array(ids, dtype=np.int32) for k, ids in zip(cuts, enc, strict=True)}
        finals = [x if isinstance(x, np.ndarray) else fresh[x] if x in fresh else self._cut_tokens[x]
                  for x in plan]
        _remember(self._cut_tokens, fresh, self.cache_size)
        return finals

    def collate(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], tpl: PairTemplate) -> Encoded:
        """One right-padded batch of cut pair ids: what ``tokenizer(users, items, padding=True)`` gives."""
        tok = self.tokenizer
        parts = [np.array(p, dtype=np.int32) for p in (tpl.prefix, tpl.mid, tpl.suffix)]
        rows = [np.concatenate([parts[0], u, parts[1], i, parts[2]]) for u, i in pairs]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), tok.pad_token_id, dtype=np.int64)
        types = np.full((len(rows), width), tok.pad_token_type_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, (row, (u, i)) in enumerate(zip(rows, pairs, strict=True)):
            ids[r, : len(row)] = row
            types[r, : len(row)] = np.repeat(tpl.types, (len(parts[0]), len(u), len(parts[1]), len(i),
                                                         len(parts[2])))
            mask[r, : len(row)] = 1
        enc = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if "token_type_ids" in tok.model_input_names:
            enc["token_type_ids"] = torch.from_numpy(types)
        return enc


def _remember(cache: OrderedDict, fresh: dict, size: int) -> None:
    """Add ``fresh`` entries, then drop the least recently used beyond ``size``."""
    cache.update(fresh)
    while len(cache) > max(size, 0):
        cache.popitem(last=False)
