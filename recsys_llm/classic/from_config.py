"""The baselines of a report, from the eval config: tuned on validation (`tune`) or with their defaults.

`fit_baseline` is what the comparison calls once per name in ``eval.baselines``; `BaselineScorer` wraps the
fitted model as the report's score function (users -> dense scores from their test-time histories) and
carries the row note naming the chosen hyper-parameters. Each search is written to
``<out_dir>/<name>.json`` (chosen setting, the whole validation grid, the budget, wall time).

Example:
    >>> scorer = baseline_scorer("ease", split, cfg.eval, texts, known_histories, run / "baselines")  # doctest: +SKIP
    >>> scorer(np.array([0, 1])).shape, scorer.note                                                # doctest: +SKIP
    ((2, 1682), 'tuned on 943 validation users, 7 settings: l2=300')
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys_llm.classic import SASRec, Validation, make_baseline
from recsys_llm.classic.tuning import DEFAULT_GRIDS, TuneResult, grid_product, tune
from recsys_llm.config import EvalConfig
from recsys_llm.data.splits import Split
from recsys_llm.io_utils import atomic_write_json

__all__ = ["BaselineScorer", "baseline_scorer", "fit_baseline"]

logger = logging.getLogger(__name__)


def fit_baseline(
    name: str, split: Split, cfg: EvalConfig, item_texts: Sequence[str] | None = None
) -> TuneResult:
    """Fit baseline ``name`` on ``split.train`` as the report evaluates it.

    With ``cfg.tune_baselines`` the grid is ``DEFAULT_GRIDS[name]`` (SASRec: ``sasrec_hidden x sasrec_dropout
    x sasrec_lr`` from the config) held to ``cfg.tune_budget`` settings, chosen by NDCG@10 on the validation
    users (``cfg.tune_valid_users``, 0 = all); otherwise the library defaults (one setting). SASRec stops
    early on the same validation users either way. The model is trained on ``split.train`` only.

    Args:
        name: a `recsys_llm.classic.BASELINES` name.
        split: the run's split (``train`` fits, ``valid`` validates).
        cfg: the eval config.
        item_texts: one text per item (BM25).

    Returns:
        The `TuneResult` (model, chosen setting, grid).
    """
    base = make_baseline(name, seed=cfg.seed)
    if isinstance(base, SASRec):
        base = base.with_params(
            epochs=cfg.sasrec_epochs,
            patience=cfg.sasrec_patience,
            max_len=cfg.sasrec_max_len,
            loss=cfg.sasrec_loss,
        )
    grid: list[dict[str, Any]] = [{}]
    if cfg.tune_baselines:
        grid = DEFAULT_GRIDS.get(name, [{}])
        if name == "sasrec":
            grid = grid_product(hidden=cfg.sasrec_hidden, dropout=cfg.sasrec_dropout, lr=cfg.sasrec_lr)
    valid = Validation.from_frames(split.train, split.valid, split.n_users, cfg.tune_valid_users, cfg.seed)
    return tune(
        name,
        base,
        split.train,
        split.n_users,
        split.n_items,
        valid,
        grid=grid,
        budget=cfg.tune_budget,
        item_texts=item_texts,
        seed=cfg.seed,
    )


class BaselineScorer:
    """A fitted baseline as a report score function: ``users (b,) -> float32 (b, n_items)``.

    Attributes:
        result: the `TuneResult`.
        histories: every user's test-time query history (train + valid, oldest first).
        note: the report row's note, e.g. ``tuned on 943 validation users, 7 settings: l2=300``.
    """

    def __init__(self, result: TuneResult, histories: Sequence[np.ndarray]) -> None:
        self.result, self.histories = result, histories
        self.note = result.note()

    def __call__(self, users: np.ndarray) -> np.ndarray:
        return self.result.model.score(users, [self.histories[u] for u in users])


def baseline_scorer(
    name: str,
    split: Split,
    cfg: EvalConfig,
    item_texts: Sequence[str] | None,
    histories: Sequence[np.ndarray],
    out_dir: str | Path | None = None,
) -> BaselineScorer:
    """`fit_baseline`, wrapped as a `BaselineScorer`; the search is saved to ``out_dir/<name>.json``.

    Args:
        name, split, cfg, item_texts: as in `fit_baseline`.
        histories: every user's test-time query history (what the model may use at test time).
        out_dir: where the search record goes (``None``: not written).
    """
    result = fit_baseline(name, split, cfg, item_texts)
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / f"{name}.json", result.to_dict())
    return BaselineScorer(result, histories)
