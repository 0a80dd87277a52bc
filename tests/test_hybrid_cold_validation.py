"""The bridge's all-items-cold validation without the leak (issue 15): the collaborative part and the bridge's
text neighbours are refitted without any interaction of the items that validation treats as cold."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from recsys_llm.classic import ItemKNN
from recsys_llm.config import HybridConfig
from recsys_llm.hybrid import fit_collaborative, text_neighbours
from recsys_llm.hybrid.evidence import hide_beyond, refit, without_items
from recsys_llm.stages.hybrid import search_settings
from recsys_llm.stages.hybrid_cold import (
    Validation,
    cold_refit,
    few_shot_evidence,
    one_se_simplest,
    pseudo_cold_users,
)

GROUPS, PER_GROUP = 20, 10


def _twins(seed: int = 0, users_per_group: int = 12):
    """Users of group g buy items of group g. Item ``a_g = 10 g`` has a text twin ``b_g = 10 g + 1`` (the same
    embedding up to noise); every other embedding is random. Half the users of a group are validated on
    ``a_g``; the rest bought it in training. Validation treats ``b_g`` (and ``10 g + 5``) as cold as well."""
    rng = np.random.default_rng(seed)
    n_items = GROUPS * PER_GROUP
    emb = rng.normal(size=(n_items, 16)).astype(np.float32)
    emb[1::PER_GROUP] = emb[::PER_GROUP] + 0.01 * rng.normal(size=(GROUPS, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rows, vusers, hist, tg = [], [], [], []
    for u in range(GROUPS * users_per_group):
        g = u % GROUPS
        items = g * PER_GROUP + rng.permutation(np.arange(1, PER_GROUP))[:5]
        if u // GROUPS % 2:  # bought a_g in training
            items = np.append(items, g * PER_GROUP)
        else:
            vusers.append(u)
            hist.append(items)
            tg.append(np.array([g * PER_GROUP]))
        rows += [(u, int(i), t) for t, i in enumerate(items)]
    train = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    pool = np.concatenate([np.arange(1, n_items, PER_GROUP), np.arange(5, n_items, PER_GROUP)])
    cold_items = np.union1d(pool, np.concatenate(tg))
    excl = [
        np.union1d(h, np.setdiff1d(np.arange(n_items), np.union1d(pool, t)))
        for h, t in zip(hist, tg, strict=True)
    ]
    dense = rng.normal(size=(len(vusers), n_items)).astype(np.float32)  # text: a weak signal on the target
    dense[np.arange(len(vusers)), np.concatenate(tg)] += 1.0
    split = SimpleNamespace(train=train, n_users=GROUPS * users_per_group, n_items=n_items)
    return split, emb, Validation(np.array(vusers), hist, tg, excl, cold_items), dense


def test_refit_has_no_evidence_of_the_pseudo_cold_items():
    split, emb, val, _ = _twins()
    model = ItemKNN().fit(split.train, split.n_users, split.n_items)
    cf = fit_collaborative("itemknn", split.train, split.n_users, split.n_items, fitted=model)
    hc = HybridConfig(bridge_weights=[0.0, 0.5], bridge_neighbours=5)
    cold_val, record = cold_refit(hc, split, val, cf, model, emb)
    cold = val.cold_items
    assert record == {
        "pseudo_cold_items": len(cold),
        "train_interactions": len(split.train),
        "hidden_interactions": int(split.train["item"].isin(cold).sum()),
        "users": len(val.hist),
        "targets": len(val.hist),
    }
    m = cold_val.cold_cf.matrix.tocoo()
    assert m.nnz > 0 and not np.isin(m.row, cold).any() and not np.isin(m.col, cold).any()
    assert (cold_val.cold_cf.counts[cold] == 0).all() and (cf.counts[cold] > 0).all()
    assert not np.isin(cold_val.cold_neighbours.tocoo().col, cold).any()  # no pseudo-cold item lends evidence
    # the same tuned setting, fitted on what is left; the warm part is untouched
    alone = fit_collaborative("itemknn", without_items(split.train, cold), split.n_users, split.n_items)
    np.testing.assert_allclose(cold_val.cold_cf.matrix.toarray(), alone.matrix.toarray(), atol=1e-6)
    assert cold_val.cold_cf.name == cf.name and val.cold_cf is None


def test_leaky_validation_chooses_the_bridge_and_the_refit_does_not():
    split, emb, val, dense = _twins()
    model = ItemKNN().fit(split.train, split.n_users, split.n_items)
    cf = fit_collaborative("itemknn", split.train, split.n_users, split.n_items, fitted=model)
    hc = HybridConfig(
        weights=[0.0, 0.5],
        cf_halflives=[0.0],
        cf_confidences=[0.0],
        bridge_weights=[0.0, 0.5, 1.0],
        lexical_weights=[0.0],
        bridge_neighbours=5,
        search_candidates=20,
        fewshot_reveal=[],
    )
    neighbours = text_neighbours(emb, cf.counts, hc.bridge_neighbours, hc.bridge_temperature)
    _, _, leaky = search_settings(hc, split, "text", dense, cf, neighbours, val, {})
    fixed_val, _ = cold_refit(hc, split, val, cf, model, emb)
    _, cold, fixed = search_settings(hc, split, "text", dense, cf, neighbours, fixed_val, {})
    # before: a_g borrows its twin's collaborative score, which the twin has only because validation pretends
    # it is cold while the collaborative model was fitted on its interactions
    assert leaky["bridge"] > 0 and leaky["cold_ndcg@10"] > leaky["cold_text_only"] + 0.2
    # after: neither twin has evidence; the bridge borrows from unrelated neighbours and text alone wins
    assert fixed["bridge"] == 0.0 and fixed["cold_ndcg@10"] == fixed["cold_text_only"]
    assert cold["0.0"][(1.0, 0.0)] < cold["0.0"][(0.0, 0.0)]
    # the warm choice does not depend on the cold validation's refit
    assert (fixed["weight"], fixed["ndcg@10"]) == (leaky["weight"], leaky["ndcg@10"])


def test_evidence_validation_counts_come_from_the_cut_interactions():
    """The few-interaction validation already refits on the cut data: every pseudo-cold item keeps at least one
    interaction, so the bridge's donors are the same items and the counts are the cut ones."""
    split, _, val, _ = _twins()
    model = ItemKNN().fit(split.train, split.n_users, split.n_items)
    cf = fit_collaborative("itemknn", split.train, split.n_users, split.n_items, fitted=model)
    cut, reveal = hide_beyond(split.train, val.cold_items, (1, 3), seed=0)
    cf_r = refit(cf, model, cut, split.n_users, split.n_items)
    for item, r in reveal.items():
        assert cf_r.counts[item] == min(r, cf.counts[item]) >= 1
    assert ((cf_r.counts > 0) == (cf.counts > 0)).all()


def test_cold_parts_stay_off_unless_validation_tells_them_from_noise():
    """The one-standard-error rule of the cold choice: a part within noise of the best stays off, a part
    that clearly helps is kept."""

    rng = np.random.default_rng(0)
    base = rng.random(400)
    keys = [(0.0, 0.0), (0.5, 0.0), (0.0, 0.25), (0.5, 0.25)]
    noisy = [base, base + rng.normal(0.002, 0.05, 400), base - 0.01, base + rng.normal(0.001, 0.05, 400)]
    means = {k: float(v.mean()) for k, v in zip(keys, noisy, strict=True)}
    assert max(means, key=means.get) != (0.0, 0.0)  # a mixed setting has the best mean ...
    assert one_se_simplest(keys, noisy, means) == (0.0, 0.0)  # ... but not by more than noise: text alone
    clear = [base, base + 0.05 + rng.normal(0, 0.01, 400), base - 0.01, base + 0.02]
    means = {k: float(v.mean()) for k, v in zip(keys, clear, strict=True)}
    assert one_se_simplest(keys, clear, means) == (0.5, 0.0)  # a clear gain keeps the bridge


def test_pseudo_cold_users_mirror_the_cold_item_slice():
    """All-items-cold users: their histories lose the pseudo-cold items (order kept), every interaction with one
    is a target, and a user with nothing else (no history to rank from) is left out."""
    hist = [np.array([4, 1, 7, 2]), np.array([1, 7]), np.array([3, 5]), np.array([9, 1, 0])]
    users, cold_hist, cold_tg = pseudo_cold_users(hist, np.array([1, 7]), 0, seed=0)
    assert users.tolist() == [0, 3]  # user 1 has only pseudo-cold items, user 2 none
    assert [h.tolist() for h in cold_hist] == [[4, 2], [9, 0]]
    assert [t.tolist() for t in cold_tg] == [[1, 7], [1]]
    assert len(pseudo_cold_users(hist, np.array([1, 7]), 1, seed=0)[0]) == 1  # a seeded sample of n


def test_few_shot_evidence_reveals_the_first_interactions_and_targets_the_late_ones():
    """The few-shot validation: each pseudo-cold item keeps its first r interactions in the refit, the targets are
    the interactions from position max(reveal) on (never revealed), and every other known item is filtered."""
    n_users, n_items = 12, 6
    rows = [(u, 0, u) for u in range(n_users)]  # item 0: pseudo-cold, one interaction per user, in user order
    rows += [(u, 1 + u % 5, 100 + u) for u in range(n_users)]  # each user's warm item
    train = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    split = SimpleNamespace(train=train, n_users=n_users, n_items=n_items)
    train_hist = [np.array([0, 1 + u % 5]) for u in range(n_users)]
    users, cold_hist, cold_tg = pseudo_cold_users(train_hist, np.array([0]), 0, seed=0)
    val = Validation(np.arange(n_users), train_hist, [np.array([1])] * n_users,
                     [np.array([2, 3, 4, 5])] * len(users), np.array([0]), cold_hist=cold_hist, cold_targets=cold_tg,
                     cold_users=users)
    model = ItemKNN().fit(train, n_users, n_items)
    cf = fit_collaborative("itemknn", train, n_users, n_items, fitted=model)
    hc = HybridConfig(fewshot_reveal=[3], seed=0)
    ev = few_shot_evidence(hc, split, val, train_hist, cf, model)
    assert ev.reveal == {0: 3} and ev.cf.counts[0] == 3 and cf.counts[0] == n_users  # first 3 kept
    assert val.cold_users[ev.rows].tolist() == list(range(3, n_users))  # users 0-2 revealed it: no target
    assert all(t.tolist() == [0] for t in ev.targets)
    for ex, u in zip(ev.exclude, val.cold_users[ev.rows], strict=True):
        assert ex.tolist() == [1, 2, 3, 4, 5] and 0 not in ex and 1 + u % 5 in ex  # ranked among pseudo-cold only
    assert few_shot_evidence(HybridConfig(fewshot_reveal=[20]), split, val, train_hist, cf, model) is None


def test_cold_choice_scores_the_all_items_cold_users_not_the_warm_ones():
    """With its own users, the all-items-cold grid is computed from their dense scores and targets."""
    split, emb, val, dense = _twins()
    model = ItemKNN().fit(split.train, split.n_users, split.n_items)
    cf = fit_collaborative("itemknn", split.train, split.n_users, split.n_items, fitted=model)
    cold_tg = [np.setdiff1d(np.arange(split.n_items), ex)[-1:] for ex in val.cold_excl]  # a rankable item each
    cold_dense = np.zeros_like(dense)
    cold_dense[np.arange(len(cold_tg)), np.concatenate(cold_tg)] = 1.0  # a perfect text model on these targets
    own = Validation(val.users, val.hist, val.targets, val.cold_excl, val.cold_items, cold_hist=val.hist,
                     cold_targets=cold_tg, cold_users=val.users)
    hc = HybridConfig(weights=[0.0, 0.5], cf_halflives=[0.0], cf_confidences=[0.0], bridge_weights=[0.0, 0.5],
                      lexical_weights=[0.0], bridge_neighbours=5, search_candidates=20, fewshot_reveal=[])
    neighbours = text_neighbours(emb, cf.counts, hc.bridge_neighbours, hc.bridge_temperature)
    _, _, best = search_settings(hc, split, "text", dense, cf, neighbours, own, {}, cold_dense=cold_dense)
    assert best["cold_text_only"] == 1.0 and best["bridge"] == 0.0
    _, _, same = search_settings(hc, split, "text", dense, cf, neighbours, val, {})
    assert same["cold_text_only"] < 0.9 and same["ndcg@10"] == best["ndcg@10"]  # the warm choice is the same
