"""Explanations: the history item most similar to each recommendation, hand-checked and through the CLI."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from recsys_llm.cli import main
from recsys_llm.rerank import explain
from recsys_llm.rerank.explain import because


def test_because_picks_the_most_similar_history_item():
    v = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0], [0, 0.28, 0.96]], dtype=np.float32)
    ids, sim = because(v, history=np.array([0, 1, 2]), rec_ids=np.array([3, 4, -1]))
    assert ids.tolist() == [1, 2, -1]  # 3 is closest to 1 (0.8 > 0.6), 4 to 2 (0.96)
    np.testing.assert_allclose(sim[:2], [0.8, 0.96], rtol=1e-6)
    assert np.isnan(sim[2])
    ids, sim = because(v, history=np.array([], dtype=np.int64), rec_ids=np.array([3]))
    assert ids.tolist() == [-1] and np.isnan(sim).all()
    with pytest.raises(ValueError, match=r"history: item ids must lie in \[0, 5\)"):
        because(v, history=np.array([7]), rec_ids=np.array([3]))
    assert doctest.testmod(explain).failed == 0


def test_recommend_says_because_you_liked(tiny_run, capsys):
    from recsys_llm.serve.recommender import recommend

    recs = recommend(tiny_run, "u0", k=5, rerank=False)
    assert (recs["because"] != "").all() and recs["because_similarity"].between(-1.0001, 1.0001).all()
    from recsys_llm.run import Context

    ctx = Context.load(tiny_run)
    hist_titles = {ctx.titles[i] for i in ctx.known_histories()[0]}
    assert set(recs["because"]) <= hist_titles  # explanations come from the user's own history
    assert main(["recommend", "--run-dir", str(tiny_run), "--user", "u0", "-k", "3", "--no-rerank"]) == 0
    assert capsys.readouterr().out.count("because you liked ") == 3
