"""The hybrid's cold validations are blind: the pseudo-cold items they rank over are hidden from fine-tuning and
from the history user models (`hybrid.blind_cold_validation`), and the hybrid says when the encoder was not."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd

from recsys_llm.config import PipelineConfig
from recsys_llm.data.splits import Split, histories
from recsys_llm.io_utils import load_json
from recsys_llm.protocol import blind_histories, hidden_record, pseudo_cold_items
from recsys_llm.run import Context


def _split(n_items: int = 40, n_cold: int = 3) -> Split:
    rng = np.random.default_rng(0)
    cold = np.arange(n_items - n_cold, n_items)
    rows = [(u, int(i), t) for u in range(30) for t, i in enumerate(rng.choice(n_items - n_cold, 8, replace=False))]
    train = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    empty = train.iloc[:0]
    return Split(kind="leave_last_out", train=train, valid=empty, test=empty, cold=empty, cold_items=cold, n_users=30,
                 n_items=n_items)


def test_pseudo_cold_items_are_a_seeded_tenth_of_the_warm_items_at_least_as_many_as_the_cold_ones():
    split = _split()
    warm = np.unique(split.train["item"])
    pseudo = pseudo_cold_items(split, seed=0)
    assert len(pseudo) == 4 and np.isin(pseudo, warm).all()  # round(0.1 * 37) = 4 > 3 cold items
    assert np.array_equal(pseudo, pseudo_cold_items(split, seed=0)) and not np.array_equal(
        pseudo, pseudo_cold_items(split, seed=1))
    many_cold = _split(n_cold=8)
    assert len(pseudo_cold_items(many_cold, seed=0)) == 8  # as many as the test's cold items
    one = Split(kind=split.kind, train=split.train[split.train["item"] == pseudo[0]], valid=split.valid, test=split.test,
                cold=split.cold, cold_items=split.cold_items, n_users=30, n_items=40)
    assert len(pseudo_cold_items(one, seed=0)) == 0  # a single warm item is never made cold


def test_blind_histories_drop_exactly_the_pseudo_cold_items_and_only_when_asked():
    split = _split()
    hist = histories(split.train, split.n_users)
    cfg = PipelineConfig()
    blind, hidden = blind_histories(cfg, split, hist)
    assert np.array_equal(hidden, pseudo_cold_items(split, cfg.hybrid.seed))
    for h, b in zip(hist, blind, strict=True):
        assert np.array_equal(b, h[~np.isin(h, hidden)])  # the order of what is left is kept
    assert sum(map(len, hist)) - sum(map(len, blind)) == int(np.isin(split.train["item"], hidden).sum())
    for switch in ("blind_cold_validation", "enabled"):
        cfg_off = PipelineConfig()
        setattr(cfg_off.hybrid, switch, False)
        same, none = blind_histories(cfg_off, split, hist)
        assert same is hist and len(none) == 0


def test_tiny_run_fine_tunes_and_fits_the_user_models_blind(tiny_run):
    ctx = Context.load(tiny_run)
    hidden = pseudo_cold_items(ctx.split, ctx.cfg.hybrid.seed)
    assert len(hidden) > 0
    assert load_json(tiny_run / "encoder" / "blind.json") == hidden_record(hidden)
    record = json.loads((tiny_run / "hybrid" / "hybrid.json").read_text())["cold_validation"]
    assert record["blind_items"] == len(hidden) and record["encoder_blind"] and record["user_models_blind"]
    assert record["pseudo_cold_items"] == len(hidden)  # the validation ranks over the items hidden from training


def test_history_models_never_see_the_hidden_items(tiny_run, tmp_path, monkeypatch):
    import recsys_llm.stages.hybrid as stage

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("coldstart"))
    ctx = Context.load(run)
    hidden = pseudo_cold_items(ctx.split, ctx.cfg.hybrid.seed)
    seen: dict[str, tuple] = {}
    for name in ("fit_pooling", "fit_sequence"):
        real = getattr(stage, name)

        def spy(item_emb, hist, *, _real=real, _name=name, **kw):
            seen[_name] = (list(hist), kw["allowed_items"])
            return _real(item_emb, hist, **kw)
        monkeypatch.setattr(stage, name, spy)
    stage.fit_hybrid(run)
    assert set(seen) == {"fit_pooling", "fit_sequence"}
    for hist, allowed in seen.values():
        assert not any(np.isin(h, hidden).any() for h in hist)
        assert not np.isin(allowed, hidden).any() and len(allowed) > 0


def test_an_encoder_that_saw_the_pseudo_cold_items_is_recorded_and_warned_about(tiny_run, tmp_path, caplog):
    from recsys_llm.artifacts import load_embeddings
    from recsys_llm.stages.hybrid import _blindness

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("coldstart"))
    (run / "encoder" / "blind.json").unlink()  # fine-tuned by an older version, or with the option off
    ctx = Context.load(run)
    hidden = pseudo_cold_items(ctx.split, ctx.cfg.hybrid.seed)
    meta = load_embeddings(ctx.run)[2]
    with caplog.at_level(logging.WARNING):
        record = _blindness(ctx, meta, hidden)
    assert record == {"blind_items": len(hidden), "encoder_blind": False, "user_models_blind": True}
    assert "rerun `recsys-llm finetune`" in caplog.text
    assert _blindness(ctx, {**meta, "zero_shot": True}, hidden)["encoder_blind"]  # the untuned backbone saw nothing
