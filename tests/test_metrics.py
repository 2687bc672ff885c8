"""Hand-checked cases for every metric and for `evaluate_rankings`, the one scoring path."""
import math

import numpy as np
import pandas as pd
import pytest

from conrec_lib import metrics


# --- HR / FHR / LUF / LIF ---------------------------------------------------------------------

def test_hit_rate_counts_only_the_first_k():
    preds = [[5, 6, 7], [1, 2, 3], [9]]
    assert metrics.hit_rate(preds, [7, 1, 4], k=3) == pytest.approx(2 / 3)
    assert metrics.hit_rate(preds, [7, 1, 4], k=2) == pytest.approx(1 / 3)  # 7 is third


def test_hit_rate_rejects_missing_next_negative_and_bad_lengths():
    with pytest.raises(ValueError, match="no next negative"):
        metrics.hit_rate([[1]], [-1])
    with pytest.raises(ValueError, match="one entry per example"):
        metrics.hit_rate([[1], [2]], [1])
    with pytest.raises(ValueError, match="no examples"):
        metrics.hit_rate([], [])
    with pytest.raises(ValueError, match="k must be"):
        metrics.hit_rate([[1]], [1], k=0)


def test_future_hit_rate_one_hit_per_example():
    preds = [[1, 2, 3], [4, 5], [6]]
    future = [{1, 2}, {9}, {6, 7}]  # example 0 matches twice but counts once
    assert metrics.future_hit_rate(preds, future, k=3) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no future negatives"):
        metrics.future_hit_rate([[1]], [set()])


def test_longtail_user_fhr_uses_only_longtail_examples():
    preds = [[1], [2], [3], [4]]
    future = [{1}, {0}, {3}, {0}]
    assert metrics.longtail_user_fhr(preds, future, [True, True, False, False], k=1) == 0.5
    assert metrics.longtail_user_fhr(preds, future, [False, False, True, False], k=1) == 1.0
    assert math.isnan(metrics.longtail_user_fhr(preds, future, [False] * 4, k=1))


def test_longtail_item_fhr_needs_a_hit_on_a_longtail_item():
    longtail = np.array([False, False, True, True])
    preds = [[0], [2], [1]]
    future = [{0, 2},  # counted (has item 2); hit only on popular 0 -> miss
              {2},     # counted; hit on long-tail 2
              {1}]     # no long-tail future negative -> not counted
    assert metrics.longtail_item_fhr(preds, future, longtail, k=1) == 0.5
    assert math.isnan(metrics.longtail_item_fhr([[0]], [{0, 1}], longtail, k=1))


# --- candidate accuracy -----------------------------------------------------------------------

def test_candidate_accuracy_picks_max_cosine_to_predicted_set():
    preds = [np.array([[1.0, 0.0], [0.0, 1.0]])]  # predicted set: both axes
    cands = [np.array([[1.0, 1.0], [3.0, 0.1], [-1.0, 0.0]])]  # cosines: .707, .9994, 0
    assert metrics.candidate_accuracy(preds, cands, [1]) == 1.0
    assert metrics.candidate_accuracy(preds, cands, [0]) == 0.0


def test_candidate_accuracy_ties_get_fractional_credit_independent_of_order():
    preds = [np.array([[1.0, 0.0]])]
    cands = np.array([[2.0, 0.0], [0.0, 1.0], [5.0, 0.0]])  # 0 and 2 tie at cosine 1
    assert metrics.candidate_accuracy(preds, [cands], [0]) == 0.5
    assert metrics.candidate_accuracy(preds, [cands[::-1]], [2]) == 0.5  # same item, other position
    assert metrics.candidate_accuracy(preds, [cands], [1]) == 0.0


def test_candidate_accuracy_empty_prediction_set_is_a_uniform_guess():
    cands = [np.eye(4)]
    assert metrics.candidate_accuracy([np.zeros((0, 4))], cands, [2]) == 0.25


def test_candidate_accuracy_rejects_out_of_range_true_index():
    with pytest.raises(ValueError, match="true_index 3"):
        metrics.candidate_accuracy([np.eye(2)], [np.eye(2)], [3])


# --- coverage, invalid rate, leakage ------------------------------------------------------------

def test_interest_coverage_by_hand():
    facets = [frozenset({"category=shoes", "color=red"}),
              frozenset({"category=bags", "color=red"}),
              frozenset({"category=hats"})]
    top = [["color=red", "category=hats", "category=bags", "category=cars"],  # {0}: 1 of 4
           ["category=hats"],                                                 # {2}: 1 of 1
           ["category=shoes", "category=shoes"]]                              # {}: 0 of 1 (dupes once)
    assert metrics.interest_coverage(top, [{0}, {2}, set()], facets) == pytest.approx((0.25 + 1 + 0) / 3)
    assert metrics.interest_coverage(top[:1], [{0, 1, 2}], facets) == 0.75
    with pytest.raises(ValueError, match="no top interests"):
        metrics.interest_coverage([[]], [{0}], facets)


def test_invalid_rate_and_positive_leakage():
    assert metrics.invalid_rate([None, 1, 2, None, None]) == 0.6
    # micro average: 1 of 3 + 2 of 2 + 0 of 0 -> 3 / 5; item 9 is beyond k
    leak = metrics.positive_leakage([[1, 2, 3, 9], [4, 5], []], [{3, 9}, {4, 5}, {1}], k=3)
    assert leak == pytest.approx(3 / 5)
    assert math.isnan(metrics.positive_leakage([[], []], [{1}, {2}]))


# --- evaluate -----------------------------------------------------------------------------------

EMB = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [1.0, 0.1]])
LONGTAIL = np.array([False, False, False, True, True])


def _examples() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [0, 1, 2],
        "next_negative": [0, 1, 2],
        "future_negatives": [[3], [], [4]],
        "future_positives": [[1], [], [0]],
        "candidates": [[1, 0, 3], [1, 3], [2, 3]],
        "longtail_user": [True, False, True],
    })


def test_evaluate_by_hand():
    preds = [[4, 0], [3], [0, 4, 2]]  # item 2 of example 2 lies beyond k=2
    out = metrics.evaluate_rankings(preds, _examples(), EMB, LONGTAIL, k=2)
    assert out == pytest.approx({
        "HR@2": 1 / 3,        # only example 0 has its next negative in the top 2
        "FHR@2": 2 / 3,       # example 0 via next negative 0, example 2 via future 4
        "LUF@2": 1.0,         # long-tail users 0 and 2 both hit
        "LIF@2": 0.5,         # examples 0 (target {3}: miss) and 2 (target {4}: hit)
        "CandAcc": 2 / 3,     # example 1 picks item 3 (cosine 1 with the prediction) over true item 1
        "positive_leakage": 1 / 5,  # item 0 of example 2, out of 2 + 1 + 2 predicted items
        "n_examples": 3,
    })


def test_evaluate_rejects_inconsistent_inputs():
    ex = _examples()
    with pytest.raises(ValueError, match="prediction lists"):
        metrics.evaluate_rankings([[0]], ex, EMB, LONGTAIL)
    with pytest.raises(ValueError, match="outside"):
        metrics.evaluate_rankings([[0], [7], [1]], ex, EMB, LONGTAIL)
    with pytest.raises(ValueError, match="lack column"):
        metrics.evaluate_rankings([[0]] * 3, ex.drop(columns="candidates"), EMB, LONGTAIL)
    bad = ex.assign(candidates=[[1, 3], [1, 3], [2, 3]])  # next negative 0 not among row 0's candidates
    with pytest.raises(ValueError, match="not among its candidates"):
        metrics.evaluate_rankings([[0]] * 3, bad, EMB, LONGTAIL)
