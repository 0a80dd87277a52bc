"""Hyper-parameters of every baseline chosen on validation users, under one budget rule.

Protocol (the one the hybrid, the reranker and fine-tuning are selected on): each validation user's training
history is the query, their validation item(s) the target, training items filtered, full ranking over the
catalog, NDCG@10 (`recsys_llm.classic.base.Validation`). Models are fitted on the training interactions only,
and the chosen model is the one that was validated: it is **not** refitted on train + valid. At test time it
is queried with the user's train + valid history, like every model of the report, so baselines and our
models are trained and queried the same way.

Budget rule, the same for every model: at most ``budget`` settings per model (default 16), the model's grid
in a fixed order; a grid larger than the budget is cut to a seeded random subset of ``budget`` settings
(random search), never extended. The default grids (`DEFAULT_GRIDS`) stay within 16: EASE 7, recency EASE
16, ItemKNN 12, BM25 12, SASRec 2 (the report takes SASRec's grid from ``eval.sasrec_*``, 1 setting by
default, since each costs a training run), so by default every grid is searched in full. For comparison, the
hybrid is chosen over ~1,650 validation settings (user model x half-life x confidence x weight x bridge): the
rule gives each baseline far fewer, so the search still favours our models, never the baselines. SASRec's
epochs are chosen by early stopping on the same validation users within each setting.

Ties go to the earlier setting of the grid. Random and most popular have nothing to tune (one setting).

Example:
    >>> valid = Validation.from_frames(split.train, split.valid, split.n_users)            # doctest: +SKIP
    >>> result = tune("ease", EASE(), split.train, split.n_users, split.n_items, valid)     # doctest: +SKIP
    >>> result.params, result.note()                                                         # doctest: +SKIP
    ({'l2': 100.0}, 'tuned on 943 validation users, 7 settings: l2=100')
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsys_llm.classic.base import Recommender, Validation

__all__ = ["DEFAULT_BUDGET", "DEFAULT_GRIDS", "TuneResult", "grid_product", "tune"]

logger = logging.getLogger(__name__)

DEFAULT_BUDGET = 16


def grid_product(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    """Every combination of the axes, the first axis slowest (so settings sharing a fit are consecutive).

    Example:
        >>> grid_product(l2=[1.0, 2.0], halflife=[5.0])
        [{'l2': 1.0, 'halflife': 5.0}, {'l2': 2.0, 'halflife': 5.0}]
    """
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]


DEFAULT_GRIDS: dict[str, list[dict[str, Any]]] = {
    "random": [{}],
    "popularity": [{}],
    "ease": grid_product(l2=[10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0]),
    "ease_recency": grid_product(l2=[30.0, 100.0, 300.0, 1000.0], halflife=[2.0, 3.0, 5.0, 10.0]),
    "itemknn": grid_product(shrink=[0.0, 20.0, 100.0], k_neighbors=[10, 30, 100, 300]),
    "bm25": grid_product(k1=[1.2, 2.0], b=[0.5, 0.75], query_items=[3, 10, 30]),
    "sasrec": grid_product(dropout=[0.2, 0.5]),
}
"""Default settings per baseline, each within `DEFAULT_BUDGET`; fit-sharing parameters vary slowest. Ranges
were set from validation sweeps on ml-100k and ml-latest-small (never test numbers) so that the chosen values
fall inside: EASE l2 100 / 30, recency EASE (l2, half-life) (300, 5) / (30, 5), ItemKNN wanders (k 10-300)."""


@dataclasses.dataclass
class TuneResult:
    """The outcome of `tune`.

    Attributes:
        name: the baseline (`Recommender.name`).
        model: the chosen model, fitted on the training interactions (the one that was validated).
        params: the chosen setting (only the tuned names; fixed ones are in ``fixed``).
        valid_ndcg: its validation NDCG@k.
        grid: every setting tried, in order, as ``{"params": ..., "valid_ndcg": ...}``.
        fixed: settings applied to every point of the grid (not tuned).
        budget: the budget the grid was held to; ``grid_size``: the grid's size before the budget.
        valid_users: validation users; ``k``: the NDCG cut-off; ``seconds``: wall time of the search.
    """

    name: str
    model: Recommender
    params: dict[str, Any]
    valid_ndcg: float
    grid: list[dict[str, Any]]
    fixed: dict[str, Any]
    budget: int
    grid_size: int
    valid_users: int
    k: int
    seconds: float

    def note(self) -> str:
        """One line for a report row, e.g. ``tuned on 943 validation users, 7 settings: l2=300``; empty for a
        model with nothing to choose (random, most popular)."""
        epoch = getattr(self.model, "best_epoch_", None)
        epochs = f"epochs={epoch}" if epoch is not None else ""
        if self.grid_size <= 1 and not self.params:
            return f"defaults, {epochs} by validation" if epochs and self.valid_users else ""
        if self.valid_users == 0:
            return "defaults (no validation users to tune on)"
        chosen = ", ".join(
            [*(f"{k}={_fmt(v)}" for k, v in self.params.items()), *([epochs] if epochs else [])]
        )
        cut = f" (of {self.grid_size})" if self.grid_size > len(self.grid) else ""
        return f"tuned on {self.valid_users} validation users, {len(self.grid)} settings{cut}: {chosen}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (everything but the model)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        return {**out, "model": repr(self.model), "note": self.note()}


def tune(
    name: str,
    base: Recommender,
    train: pd.DataFrame,
    n_users: int,
    n_items: int,
    valid: Validation,
    grid: Sequence[Mapping[str, Any]] | None = None,
    budget: int = DEFAULT_BUDGET,
    item_texts: Sequence[str] | None = None,
    seed: int = 0,
) -> TuneResult:
    """Choose ``base``'s hyper-parameters on validation users (see the module docstring for the rule).

    Args:
        name: the baseline's name, for logs and the grid default (``DEFAULT_GRIDS[name]``).
        base: the unfitted model whose other settings (the fixed ones) every grid point keeps.
        train: canonical training interactions; every setting is fitted on them.
        n_users, n_items: id-space sizes.
        valid: the validation protocol (users, training-history queries, validation targets).
        grid: settings to try; default ``DEFAULT_GRIDS[name]`` (``[{}]`` if none).
        budget: at most this many settings are tried (a seeded random subset of a larger grid).
        item_texts: one text per item (BM25).
        seed: seeds the subset of an over-budget grid.

    Returns:
        A `TuneResult` holding the chosen, fitted model; with no validation user, the first setting fitted
        without validation (``valid_users == 0``).

    Raises:
        ValueError: ``budget < 1`` or an empty grid.
    """
    t0 = time.perf_counter()
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"budget must be an integer >= 1; got {budget!r}")
    settings = [dict(p) for p in (DEFAULT_GRIDS.get(name, [{}]) if grid is None else grid)]
    if not settings:
        raise ValueError(f"{name}: empty grid; give at least one setting ({{}} = the model's defaults)")
    size = len(settings)
    if size > budget:
        keep = np.sort(np.random.default_rng([seed, size]).choice(size, budget, replace=False))
        settings = [settings[i] for i in keep]
        logger.info("%s: grid of %d settings cut to a seeded subset of %d (budget)", name, size, budget)
    n_valid = len(valid.users)
    fixed = {k: v for k, v in base._params().items() if not any(k in s for s in settings)}
    if n_valid == 0:
        logger.warning("%s: no validation users; fitted with %s", name, settings[0])
        model = base.with_params(**settings[0]).fit(train, n_users, n_items, item_texts)
        return TuneResult(
            name,
            model,
            settings[0],
            float("nan"),
            [],
            fixed,
            budget,
            size,
            0,
            valid.k,
            time.perf_counter() - t0,
        )
    tried: list[dict[str, Any]] = []
    best_ndcg, best_params, best_model = -np.inf, settings[0], base
    variants = base.fit_variants(settings, train, n_users, n_items, item_texts, valid)
    bar = tqdm(variants, total=len(settings), desc=f"tune {name}", unit="setting", disable=len(settings) < 4)
    for params, model in bar:
        ndcg = valid.ndcg(model)
        tried.append({"params": params, "valid_ndcg": ndcg})
        if ndcg > best_ndcg:  # strict: ties keep the earlier setting
            best_ndcg, best_params, best_model = ndcg, params, model
    seconds = time.perf_counter() - t0
    result = TuneResult(
        name, best_model, best_params, float(best_ndcg), tried, fixed, budget, size, n_valid, valid.k, seconds
    )
    logger.info(
        "%s: %s (validation NDCG@%d %.4f) in %.1f s", name, result.note(), valid.k, best_ndcg, seconds
    )
    return result


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
