"""The deployment filter (conrec_lib.evaluation.deployment): hand-checked cosines, the theta extremes, the trade-off curve."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conrec_lib import metrics
from conrec_lib.evaluation import deployment as dep
from conrec_lib.data import simulate as sim
from conrec_lib.data import splits

# Four items in 2-D: 0 and 1 are 36.87 degrees apart (cos 0.8), 2 is orthogonal to 0, 3 is opposite to 2.
EMB = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.0, -2.0]])


def _random_embeddings(n: int = 30, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def test_theta_above_one_filters_nothing_and_below_minus_one_everything():
    emb = _random_embeddings()
    preds, cands = [[0, 1, 2], [5]], [list(range(30)), list(range(30))]
    assert all(not f.filtered for f in dep.filter_candidates(preds, cands, emb, dep.FilterConfig(theta=1.01)))
    everything = dep.filter_candidates(preds, cands, emb, dep.FilterConfig(theta=-1.01))
    assert all(f.filtered == list(range(30)) and not f.kept for f in everything)
    # theta = -1: a cosine must *exceed* theta; random vectors are never exactly opposite, so all go
    assert dep.filtered_flags([0, 1, 2], range(30), emb, theta=-1.0).all()


def test_a_candidate_identical_to_a_predicted_item_is_filtered_at_0_99():
    emb = _random_embeddings()
    flags = dep.filtered_flags([7], [7, 3, 11], emb, theta=0.99)
    assert flags.tolist()[0] is True
    assert not flags[1:].any()  # random 8-d vectors are far from cosine 0.99


def test_hand_computed_cosines_and_the_strict_threshold():
    # cosines to item 0: [1, 0.8, 0, 0]; to item 2: [0, 0.6, 1, -1]
    assert dep.filtered_flags([0], [0, 1, 2, 3], EMB, theta=0.79).tolist() == [True, True, False, False]
    assert dep.filtered_flags([0], [1], EMB, theta=0.8).tolist() == [False]  # equal is not "exceeds"
    assert dep.filtered_flags([2], [0, 1, 2, 3], EMB, theta=0.5).tolist() == [False, True, True, False]
    out = dep.filter_candidates([[3, 0]], [[2, 1, 0]], EMB, dep.FilterConfig(theta=0.7, k=1))
    assert out == [dep.Filtered(kept=[2, 1, 0], filtered=[])]  # k=1: only item 3 counts (cosines -1, -0.6, 0)
    out = dep.filter_candidates([[3, 0]], [[2, 1, 0]], EMB, dep.FilterConfig(theta=0.7, k=2))
    assert out == [dep.Filtered(kept=[2], filtered=[1, 0])]  # order of the candidate list is kept


def test_item_mask_agrees_with_the_per_candidate_rule():
    emb = _random_embeddings()
    preds = [[0, 4, 9], [], [12]]
    mask = dep.item_mask(preds, emb, dep.FilterConfig(theta=0.3))
    assert mask.shape == (3, 30) and not mask[1].any()
    for u, pred in enumerate(preds):
        np.testing.assert_array_equal(mask[u], dep.filtered_flags(pred, range(30), emb, 0.3))
    # the catalogue normalised once gives the scores of normalising per call, to the last bit
    unit = metrics.unit_rows(emb)
    for pred in preds[::2]:
        assert np.array_equal(dep.max_cosine(unit[pred], unit, unit=True), dep.max_cosine(emb[pred], emb))


def test_curve_on_a_hand_example():
    examples = pd.DataFrame({"next_negative": [1, 2], "future_negatives": [[1], [2]],
                             "future_positives": [[2], [0, 1]]})
    curve = dep.tradeoff_curve([[0], [0]], examples, EMB, thetas=[-0.5, 0.5, 0.9])
    # user 0: negative 1 (cos 0.8), positive 2 (0); user 1: negative 2 (0), positives 0 (1) and 1 (0.8)
    assert curve["negatives_filtered"].tolist() == [1.0, 0.5, 0.0]
    assert curve["positives_filtered"].tolist() == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert curve[["n_negatives", "n_positives"]].iloc[0].tolist() == [2, 3]


@pytest.fixture(scope="module")
def tiny_split() -> splits.Split:
    return splits.make_split(sim.simulate(sim.SimConfig(scale="tiny", seed=0)), splits.SplitConfig(horizon_days=7))


def _history_negatives(split: splits.Split) -> list[list[int]]:
    """A model-free predictor: each test user's own past negatives, most recent first."""
    return [list(split.history(u, t, "negative")["item_id"][::-1]) for u, t in
            zip(split.test["user_id"], split.test["cutoff_ts"])]


def test_curve_is_monotone_and_separates_negatives_on_the_simulator(tiny_split):
    ds = tiny_split.dataset
    facets = sorted(set().union(*(f for f in sim.data.item_facets(ds))))
    emb = np.array([[f in fs for f in facets] for fs in sim.data.item_facets(ds)], float)  # facet one-hots
    curve = dep.tradeoff_curve(_history_negatives(tiny_split), tiny_split.test, emb)
    assert list(curve.columns) == ["theta", "negatives_filtered", "positives_filtered", "n_negatives", "n_positives"]
    for col in ("negatives_filtered", "positives_filtered"):
        assert (np.diff(curve[col].to_numpy()) <= 0).all()  # a higher theta never filters more
    mid = curve[curve["theta"] == 0.5].iloc[0]
    assert mid["negatives_filtered"] > 1.5 * mid["positives_filtered"] > 0  # better than a random filter
    theta = dep.pick_theta(curve, max_positives_filtered=0.1)
    assert curve.loc[curve["theta"] == theta, "positives_filtered"].iloc[0] <= 0.1


def test_bad_inputs_raise_with_the_fix():
    with pytest.raises(ValueError, match="theta"):
        dep.FilterConfig(theta=math.nan)
    with pytest.raises(ValueError, match="k=0"):
        dep.FilterConfig(k=0)
    with pytest.raises(ValueError, match="one predicted set per user"):
        dep.filter_candidates([[0]], [[1], [2]], EMB, dep.FilterConfig())
    with pytest.raises(ValueError, match="future_positives"):
        dep.tradeoff_curve([[0]], pd.DataFrame({"next_negative": [1], "future_negatives": [[1]]}), EMB)
    with pytest.raises(ValueError, match="one list per row"):
        dep.tradeoff_curve([[0], [1]], pd.DataFrame({"next_negative": [1], "future_negatives": [[1]],
                                                     "future_positives": [[2]]}), EMB)
    curve = pd.DataFrame({"theta": [0.5], "negatives_filtered": [0.9], "positives_filtered": [0.4]})
    with pytest.raises(ValueError, match="closer to 1"):
        dep.pick_theta(curve, 0.1)


def test_theta_one_filters_nothing_even_for_an_item_in_the_predicted_set():
    emb = np.array([[0.1, 0.3], [0.7, 0.2], [0.3, 0.9]])  # cosines of a row with itself round to 1 + 1e-16
    assert not dep.filtered_flags([0, 1, 2], [0, 1, 2], emb, theta=1.0).any()
    assert not dep.item_mask([[0, 1, 2]], emb, dep.FilterConfig(theta=1.0)).any()
