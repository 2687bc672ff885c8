"""Notebook 06's stage: config checks and the tables it shows, on hand-made results (the whole stage runs in
the notebook chain test, tests/test_notebooks.py)."""
import dataclasses

import pandas as pd
import pytest

from conrec_lib.evaluation import assessment
from conrec_lib.evaluation.ab_test import ABConfig, ABResult, ArmResult

METRICS = dict.fromkeys(assessment.METRICS, 0.0)


def test_config_checks():
    with pytest.raises(ValueError, match="max_positives_filtered"):
        assessment.AssessmentConfig(max_positives_filtered=0)
    with pytest.raises(ValueError, match="include 'conrec'"):
        assessment.AssessmentConfig(llms=("warm-up (04)",))
    with pytest.raises(ValueError, match="max_test_examples"):
        assessment.AssessmentConfig(max_test_examples=0)


def test_relative_to_best_picks_the_best_baseline_per_metric():
    scores = {"most_disliked": METRICS | {"FHR@20": 0.20, "HR@20": 0.05},
              "swing": METRICS | {"FHR@20": 0.25, "HR@20": 0.04},
              "conrec": METRICS | {"FHR@20": 0.30, "HR@20": 0.04},
              "warm-up (04)": METRICS | {"FHR@20": 0.90}}  # an LLM: never "the best baseline"
    comparison = assessment.RunComparison(None, {}, scores)
    rel = assessment.relative_to_best(comparison)
    assert rel["FHR@20"]["best_baseline"] == "swing" and rel["FHR@20"]["relative"] == pytest.approx(0.2)
    assert rel["HR@20"]["best_baseline"] == "most_disliked" and rel["HR@20"]["relative"] == pytest.approx(-0.2)
    assert rel["LUF@20"]["relative"] is None  # best baseline scores 0: no ratio
    assert rel["FHR@20"]["paper_relative"] == 0.137
    table = assessment.relative_table({"relative_to_best_baseline": rel})
    assert table.loc["FHR@20", "relative"] == 0.2 and table.loc["FHR@20", "best_baseline"] == "swing"


def test_ab_table_is_the_mean_over_seeds_with_the_change_against_control():
    def arm(name, seed, neg):
        return dataclasses.asdict(ArmResult(name, seed, neg, 0.2, 0.1, 0.1, 0.1, 1.0, 0.3, 0.9, 100, 10))

    rows = [arm("control", 0, 0.04), arm("control", 1, 0.06), arm("filter", 0, 0.03), arm("filter", 1, 0.03)]
    result = assessment.AssessmentResult({}, None, None, pd.DataFrame(), ABResult(pd.DataFrame(rows), ABConfig()))
    table = assessment.ab_table(result)
    assert list(table.index) == ["control", "filter"]
    assert table.loc["control", "negative_rate"] == pytest.approx(0.05)
    assert table.loc["filter", "negatives_vs_control"] == pytest.approx(-0.4)
    assert table.loc["filter", "negative_rate_std"] == pytest.approx(0.0)
