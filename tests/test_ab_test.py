"""The closed-loop A/B test (conrec_lib.evaluation.ab_test) on the "tiny" simulator: exact equalities from the shared
random stream, an oracle that removes every negative, and the counterfactual false-filter count."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conrec_lib.evaluation import ab_test as ab, filters
from conrec_lib.data import dataset as data
from conrec_lib.evaluation import deployment
from conrec_lib.data import simulate as sim

CFG = ab.ABConfig(n_days=2, seeds=(0,))


@pytest.fixture(scope="module")
def world() -> sim.World:
    return sim.simulate_world(sim.SimConfig(scale="tiny", seed=0))


def _facet_embeddings(world: sim.World) -> np.ndarray:
    return world.catalogue.facet_matrix.astype(float)


def test_config_validates():
    with pytest.raises(ValueError, match="n_days"):
        ab.ABConfig(n_days=0)
    with pytest.raises(ValueError, match="seeds"):
        ab.ABConfig(seeds=(1, 1))


def test_a_filter_that_blocks_nothing_equals_control_exactly(world):
    control = ab.run_arm(world, None, 0, CFG, "x")
    for nothing in (filters.NoFilter(world.config.n_items),
                    filters.embedding_filter(filters.Fixed([[0, 1]] * world.config.n_users), _facet_embeddings(world),
                                        deployment.FilterConfig(theta=1.01))):
        arm = ab.run_arm(world, nothing, 0, CFG, "x")
        pd.testing.assert_frame_equal(arm.log, control.log)
        assert arm.result == control.result and arm.result.n_filtered == 0


def test_same_seed_same_run_other_seed_other_run(world):
    first, again = (ab.run_arm(world, filters.category_rule(world), 3, CFG) for _ in range(2))
    pd.testing.assert_frame_equal(first.log, again.log)
    other = ab.run_arm(world, filters.category_rule(world), 4, CFG)
    assert not other.log.equals(first.log)


def test_the_run_continues_the_log_without_touching_the_world(world):
    shown_before = world.state.shown.copy()
    out = ab.run_arm(world, None, 0, CFG)
    np.testing.assert_array_equal(world.state.shown, shown_before)  # each arm works on its own copy
    assert list(out.log.columns) == list(data.INTERACTION_COLUMNS)
    assert set(out.log["day"]) == {world.start_day, world.start_day + 1}
    assert out.log.groupby(["user_id", "day"]).size().max() == world.config.slate_size
    negatives_before = filters.start_log(world).query("feedback == 'negative'")[["user_id", "item_id"]]
    assert negatives_before.merge(out.log, on=["user_id", "item_id"]).empty  # never shown again


def test_blocking_every_true_aversion_removes_every_negative(world):
    control = ab.run_arm(world, None, 0, CFG).result
    top1 = ab.run_arm(world, filters.oracle_filter(world, top_k=1), 0, CFG).result
    oracle = ab.run_arm(world, filters.oracle_filter(world), 0, CFG).result
    assert control.negative_rate > 0.02
    assert oracle.negative_rate == 0.0  # a negative needs an aversion facet, and every such item is blocked
    assert 0 < top1.negative_rate < control.negative_rate
    assert oracle.positive_rate > control.positive_rate  # the freed slots go to items users may like
    assert oracle.filtered_negative_rate > 5 * control.negative_rate  # the oracle filters the right items
    assert oracle.n_exposures == control.n_exposures  # slates keep their size


def test_false_filter_count_is_the_answers_control_got_for_the_filtered_items(world):
    """Day 1 starts from the same state in both arms, so what the oracle filters is exactly what the control
    showed and the user answered, with the same random numbers."""
    one_day = ab.ABConfig(n_days=1, seeds=(0,))
    control = ab.run_arm(world, None, 0, one_day).log
    oracle = ab.run_arm(world, filters.oracle_filter(world), 0, one_day).result
    mask = filters.facet_mask(filters.true_aversions(world), data.item_facets(world.dataset))
    hit = control[mask[control["user_id"], control["item_id"]]]
    assert oracle.n_filtered == len(hit) > 0
    assert oracle.false_filter_rate == pytest.approx((hit["feedback"] == "positive").mean())
    assert oracle.filtered_negative_rate == pytest.approx((hit["feedback"] == "negative").mean())
    assert oracle.filter_rate == pytest.approx(len(hit) / len(control))


def test_a_random_filter_filters_its_share_and_false_filters_at_the_base_rate(world):
    cfg = ab.ABConfig(n_days=3, seeds=(0,))
    control = ab.run_arm(world, None, 0, cfg).result
    rand = ab.run_arm(world, filters.RandomFilter(world.config.n_items, share=0.3), 0, cfg).result
    assert rand.filter_rate == pytest.approx(0.3, abs=0.03)
    assert rand.false_filter_rate == pytest.approx(control.positive_rate, abs=0.05)
    assert rand.n_exposures == control.n_exposures


def test_a_fixed_source_is_asked_once_and_refreshes_follow_refresh_days(world):
    calls = []

    def source(user_ids, day, log):
        calls.append((len(user_ids), day))
        return [set() for _ in user_ids]

    once = filters.facet_filter(source, world)
    result = ab.run_ab_test(world, {"control": None, "once": once}, ab.ABConfig(n_days=2, seeds=(0, 1)))
    assert calls == [(world.config.n_users, world.start_day)]  # at the start only, reused by the second seed
    assert len(result.table) == 4
    calls.clear()
    ab.run_arm(world, filters.facet_filter(source, world, refresh_days=1), 0, CFG)
    assert calls[0] == (world.config.n_users, world.start_day)
    assert {day for _, day in calls[1:]} == {world.start_day + 1}


def test_embedding_filter_on_past_negatives_lowers_negatives(world):
    log = filters.start_log(world)
    past = log[log["feedback"] == "negative"].groupby("user_id")["item_id"].agg(list).to_dict()
    sets = [past.get(u, [])[-20:] for u in range(world.config.n_users)]
    arms = {"control": None,
            "conrec": filters.embedding_filter(filters.Fixed(sets), _facet_embeddings(world), deployment.FilterConfig(0.6))}
    summary = ab.run_ab_test(world, arms, ab.ABConfig(n_days=3, seeds=(0, 1))).summary()
    rate = summary[summary["metric"] == "negative_rate"].set_index("arm")["mean"]
    assert rate["conrec"] < rate["control"]


def test_summary_and_json(world):
    result = ab.run_ab_test(world, {"control": None, "oracle": filters.oracle_filter(world)}, CFG)
    summary = result.summary()
    assert list(summary.columns) == ["arm", "metric", "mean", "std", "n_seeds"]
    assert len(summary) == 2 * len(ab.METRICS) and (summary["n_seeds"] == 1).all()
    js = result.to_json()
    assert js["oracle"]["negative_rate"] == 0.0 and js["oracle"]["negative_rate_std"] is None  # one seed
    assert js["control"]["false_filter_rate"] is None  # nothing filtered
    with pytest.raises(ValueError, match="arms is empty"):
        ab.run_ab_test(world, {}, CFG)
    with pytest.raises(RuntimeError, match="before start"):
        filters.oracle_filter(world).blocked(np.array([0]), world.start_day, filters.start_log(world))


def test_start_from_an_earlier_day(world):
    early = sim.simulate_world(sim.SimConfig(scale="tiny", seed=0), start_day=7)
    out = ab.run_arm(early, None, 0, CFG)
    assert set(out.log["day"]) == {7, 8} and filters.start_log(early)["day"].max() == 6
