"""Each validation chooses what it measures (issue 15): the few-shot validation sets the trust of items with at
most ``max(fewshot_reveal)`` interactions (the few-shot curve), warm validation the curve of every other item and
the half-life, which stays at the collaborative baseline's tuned value unless another beats it by more than one
standard error."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

from recsys_llm.config import HybridConfig
from recsys_llm.hybrid import CollaborativeScorer, HybridModel, item_trust
from recsys_llm.stages.hybrid import _evidence_choice, _grader, _keep_tuned_halflife, _parts
from recsys_llm.stages.hybrid_cold import Evidence

N_WARM, N_PSEUDO = 20, 20
N_ITEMS = N_WARM + N_PSEUDO


def test_few_shot_curve_applies_up_to_its_horizon_only():
    counts = np.array([0, 1, 5, 20, 21, 100])
    main, few = (5.0, 1.0), (50.0, 4.0, 20)
    t = item_trust(counts, *main[:1], 7, main[1], few)
    one = item_trust(counts, 5.0, 7)
    steep = item_trust(counts, 50.0, 7, power=4.0)
    np.testing.assert_allclose(t[1:4], steep[1:4])  # 1..20 interactions: the few-shot curve
    np.testing.assert_allclose(t[4:6], one[4:6])  # above the horizon: the main curve
    assert t[0] == t[6] == 0.0  # no interactions, or added after fitting: no trust either way
    np.testing.assert_array_equal(item_trust(counts, 5.0, 7, few=None), one)


def test_few_shot_curve_round_trips_and_is_used(tmp_path):
    counts = np.array([3, 3, 100, 100, 0, 10])
    cf = CollaborativeScorer(sp.csr_matrix(np.ones((6, 6), dtype=np.float32) - np.eye(6, dtype=np.float32)),
                             counts, "x")
    cf.matrix[0, 1] = 5.0  # the collaborative part likes item 1 after item 0
    model = HybridModel(cf, 1.0, 0.0, few_trust=(200.0, 4.0, 20.0))
    model.save(tmp_path)
    back = HybridModel.load(tmp_path)
    assert back.few_trust == (200.0, 4.0, 20.0)
    dense = np.array([[0.0, 0.0, 0.1, 0.0, 0.0, 0.9]], dtype=np.float32)
    np.testing.assert_array_equal(back.score(dense, [np.array([0])]), model.score(dense, [np.array([0])]))
    one = HybridModel(cf, 1.0, 0.0).score(dense, [np.array([0])])
    assert int(np.argmax(np.where(np.arange(6) == 0, -np.inf, one[0]))) == 1  # one curve: trusts item 1 fully
    two = model.score(dense, [np.array([0])])[0]
    assert int(np.argmax(np.where(np.arange(6) == 0, -np.inf, two))) == 5  # few-shot items (<= 20) lean on text


def _scorer(pairs: dict[int, int], counts: np.ndarray) -> CollaborativeScorer:
    """A collaborative part whose row ``h`` points at ``pairs[h]`` only."""
    s = sp.lil_matrix((N_ITEMS, N_ITEMS), dtype=np.float32)
    for h, i in pairs.items():
        s[h, i] = 1.0
    return CollaborativeScorer(s.tocsr(), counts, "x")


def test_few_shot_validation_sets_the_curve_below_the_horizon_and_leaves_warm_alone():
    """Warm users' targets are popular items the collaborative part predicts; the few-shot users' targets are
    pseudo-cold items its few-shot refit gets wrong, and text gets right. One curve would have to choose; two
    curves give each regime what it wants, and warm validation keeps its setting."""
    rng = np.random.default_rng(0)
    counts = np.full(N_ITEMS, 100)  # every item is warm in the full training data
    cf = _scorer({h: (h + 1) % N_WARM for h in range(N_WARM)}, counts)
    warm_hist = [np.array([h]) for h in range(N_WARM)]
    warm_tg = [np.array([(h + 1) % N_WARM]) for h in range(N_WARM)]
    warm_dense = rng.normal(size=(N_WARM, N_ITEMS)).astype(np.float32)
    hc = HybridConfig(weights=[0.0, 0.5, 1.0], cf_confidences=[0.0, 200.0], cf_trust_powers=[1.0, 4.0],
                      fewshot_reveal=[3, 20], search_candidates=10)
    warm_grade = _grader(hc, warm_dense, _parts(cf, None, warm_hist, 0.0, None), warm_tg, warm_hist, {})
    best = {"ndcg@10": 1.0, "halflife": 0.0, "weight": 1.0, "confidence": 0.0, "trust_power": 1.0,
            "few_trust": None, "bridge": 0.0, "lexical_weight": 0.0}
    cut = counts.copy()
    cut[N_WARM:] = 3  # the few-shot refit: pseudo-cold items keep 3 interactions
    ev_cf = _scorer({h: N_WARM + (h + 5) % N_PSEUDO for h in range(N_WARM)}, cut)  # a wrong pseudo-cold item
    ev_tg = [np.array([N_WARM + h]) for h in range(N_WARM)]
    cold_dense = np.zeros((N_WARM, N_ITEMS), dtype=np.float32)
    cold_dense[np.arange(N_WARM), N_WARM + np.arange(N_WARM)] = 1.0  # text knows the target
    ev = Evidence(ev_cf, np.arange(N_WARM), warm_hist, ev_tg,
                  [np.union1d(np.arange(N_WARM), h) for h in warm_hist], {})
    split = SimpleNamespace(n_items=N_ITEMS)
    chosen = _evidence_choice(hc, split, cold_dense, best, ev, None, None, {}, warm_grade, cf.counts)
    assert chosen["few_trust"][0] == 200.0 and chosen["few_trust"][2] == 20.0
    assert (chosen["weight"], chosen["confidence"], chosen["halflife"]) == (1.0, 0.0, 0.0)  # warm's setting
    assert chosen["ndcg@10"] == 1.0 and chosen["fewshot_ndcg@10"] == 1.0
    assert chosen["fewshot_by_confidence"]["0.0"] < 0.5  # full trust follows the wrong refit
    # the same curve on every item (before) costs warm users: c = 200 distrusts items with 100 interactions
    single = warm_grade(item_trust(counts, 200.0, N_ITEMS, 4.0), [(1.0, 0.0, 0.0)])[0]
    assert single < 0.5


def test_few_shot_curve_may_cost_warm_validation_a_negligible_share():
    """Two of 400 warm users lose a little: the paired test calls it real, the tolerance lets the few-shot
    curve through; a loss above the tolerance and the standard error still keeps the warm curve."""
    from recsys_llm.hybrid.evidence import choose_confidence, within_one_se

    base = np.full(400, 0.2)
    small = base.copy()
    small[:2] -= 0.01  # a 0.025% loss
    assert not within_one_se(base, small)
    few = {"warm": 0.10, "few": 0.25}
    assert choose_confidence({"warm": base, "few": small}, few) == "warm"
    assert choose_confidence({"warm": base, "few": small}, few, tolerance=0.005) == "few"
    large = base - 0.01  # 5% for everyone
    assert choose_confidence({"warm": base, "few": large}, few, tolerance=0.005) == "warm"


def test_tuned_halflife_is_kept_unless_another_is_clearly_better():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.0, 1.0, 400)
    values = {5.0: base, 20.0: base + rng.normal(0.002, 0.05, 400)}  # a gain validation cannot tell from noise

    def grader(hl):
        return lambda trust, settings, per_user=False: [values[hl]]

    by_hl = {hl: {"ndcg@10": float(v.mean()), "halflife": hl, "weight": 0.5, "confidence": 0.0,
                  "trust_power": 1.0, "bridge": 0.0, "lexical_weight": 0.0} for hl, v in values.items()}
    graders = {hl: grader(hl) for hl in values}
    assert by_hl[20.0]["ndcg@10"] > by_hl[5.0]["ndcg@10"]
    kept = _keep_tuned_halflife(by_hl, graders, 5.0, np.ones(3), 3)
    assert (kept["halflife"], kept["halflife_tuned"], kept["halflife_best"]) == (5.0, 5.0, 20.0)
    assert _keep_tuned_halflife(by_hl, graders, None, np.ones(3), 3)["halflife"] == 20.0  # no tuned value
    values[20.0] = base + 0.05  # a clear gain
    by_hl[20.0]["ndcg@10"] = float(values[20.0].mean())
    moved = _keep_tuned_halflife(by_hl, graders, 5.0, np.ones(3), 3)
    assert (moved["halflife"], moved["halflife_best"]) == (20.0, 20.0)
