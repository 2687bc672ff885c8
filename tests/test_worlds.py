"""Named simulated worlds and the world-level SimConfig fields (issue 15; docs/calibration.md)."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from conrec_lib.data import simulate as sim, splits

TINY_INTERACTIONS = "6566ae719bb2a3d875e9505ac8ada6b137f595ef844995ef169d0068afc5d080"  # as in test_simulate.py


def _frame_hash(df: pd.DataFrame) -> str:
    payload = pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes()
    return hashlib.sha256(payload + str(list(df.dtypes)).encode() + str(list(df.columns)).encode()).hexdigest()


def _next_top1_coverage(ds) -> float:
    split = splits.make_split(ds, splits.SplitConfig(horizon_days=7))
    from conrec_lib.data import exploration
    return float(exploration.top1_coverage(ds, split).loc["top-1 interests", "next negative"])


def test_default_world_fields_resolve_to_the_old_simulator():
    cfg = sim.SimConfig(scale="tiny")
    assert (cfg.world, cfg.n_aversions, cfg.aversion_kinds) == ("default", (1, 4), "mixed")
    assert cfg.unrelated_dislike == 0.0 and cfg.target_negatives_per_user is None and cfg.neg_propensity == 0.3


def test_spelling_out_the_default_world_keeps_the_pinned_tiny_world():
    cfg = sim.SimConfig(scale="tiny", seed=0, world="default", n_aversions=(1, 4), aversion_kinds="mixed",
                        unrelated_dislike=0.0)
    assert _frame_hash(sim.simulate(cfg).interactions) == TINY_INTERACTIONS


@pytest.mark.parametrize("kwargs, field", [
    (dict(world="taobao"), "world"),
    (dict(n_aversions=(0, 3)), "n_aversions"),
    (dict(n_aversions=(5, 3)), "n_aversions"),
    (dict(n_aversions=(1, 40)), "n_aversions"),
    (dict(aversion_kinds="colours"), "aversion_kinds"),
    (dict(unrelated_dislike=-0.1), "unrelated_dislike"),
    (dict(target_negatives_per_user=0.0), "target_negatives_per_user"),
    (dict(target_negatives_per_user=1e6), "target_negatives_per_user"),
    (dict(aversion_scope="liked"), "aversion_scope"),
    (dict(aversion_scope="liked_categories"), "aversion_scope"),  # needs aversion_kinds="attributes"
])
def test_bad_world_fields_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"SimConfig\.{field}="):
        sim.SimConfig(**{"scale": "tiny", **kwargs})


def test_explicit_fields_override_the_world_preset():
    cfg = sim.SimConfig(scale="tiny", world="paper", n_aversions=(2, 3))
    assert cfg.n_aversions == (2, 3)
    assert cfg.target_negatives_per_user == sim.WORLDS["paper"]["target_negatives_per_user"]


def test_aversion_count_follows_n_aversions():
    gt = sim.simulate(sim.SimConfig(scale="tiny", seed=0, n_aversions=(6, 8))).ground_truth
    per_user = gt.groupby("user_id").size()
    assert per_user.min() >= 6 and per_user.max() <= 8


def test_attribute_aversions_leave_out_categories_and_tiers():
    gt = sim.simulate(sim.SimConfig(scale="tiny", seed=0, aversion_kinds="attributes")).ground_truth
    assert not gt["facet"].str.startswith(("category=", "tier=")).any()


def test_unrelated_dislike_adds_negatives_outside_every_aversion():
    base = sim.simulate(sim.SimConfig(scale="tiny", seed=0))
    noisy = sim.simulate(sim.SimConfig(scale="tiny", seed=0, unrelated_dislike=0.5))
    assert sim.negatives_per_user(noisy) > sim.negatives_per_user(base)
    dislike = sim.dislike_scores(noisy)
    neg = noisy.interactions[noisy.interactions["feedback"] == "negative"]
    assert (dislike[neg["user_id"], neg["item_id"]] == 0).mean() > 0.1  # hits no aversion at all


@pytest.mark.parametrize("target", [5.0, 15.0])
def test_propensity_tuning_hits_its_target(target):
    world = sim.simulate_world(sim.SimConfig(scale="tiny", seed=0, target_negatives_per_user=target))
    assert sim.negatives_per_user(world.dataset) == pytest.approx(target, rel=0.2)
    assert world.config.neg_propensity == sim.tuned_propensity(world.config)  # re-tunes to the same value


def test_paper_world_builds_with_lower_next_negative_coverage():
    default = sim.simulate(sim.SimConfig(scale="small", seed=0))
    paper = sim.simulate_world(sim.SimConfig(scale="small", seed=0, world="paper"))
    assert "world='paper'" in paper.dataset.citation
    assert _next_top1_coverage(paper.dataset) < _next_top1_coverage(default) - 0.15
    target = sim.WORLDS["paper"]["target_negatives_per_user"]
    assert sim.negatives_per_user(paper.dataset) == pytest.approx(target, rel=0.25)


def test_an_unreachable_target_warns():
    cfg = sim.SimConfig(scale="tiny", seed=0, n_users=20, n_days=3, target_negatives_per_user=25.0)
    with pytest.warns(UserWarning, match="out of reach"):
        sim.tuned_propensity(cfg)


def test_notebook_01_chooses_the_world_and_shows_both_side_by_side():
    from conrec_lib.data import dataprep

    with pytest.raises(ValueError, match="WORLD='nope' is not known"):
        dataprep.DataConfig(world="nope")
    with pytest.raises(ValueError, match="setting of the simulator"):
        dataprep.DataConfig(dataset="movielens", path="x", world="paper")
    table = dataprep.coverage_by_world(dataprep.DataConfig(scale="tiny"))
    assert list(table.index) == ["default world", "paper world", "misleading world", "paper (Taobao)"]
    assert table.loc["paper world", "top-1 (next negative)"] < table.loc["default world", "top-1 (next negative)"]
    assert table.loc["paper (Taobao)", "top-1 (next negative)"] == 0.07


def test_notebook_03_world_parameter_checks_the_world_notebook_01_prepared(tiny_run):
    from conrec_lib.data import dataprep as dp

    held = dp.load_config(tiny_run).world
    assert dp.require_world(tiny_run) == held == dp.require_world(tiny_run, held)
    other = next(w for w in sim.WORLDS if w != held)
    with pytest.raises(ValueError, match=f"WORLD='{other}', but .* holds the '{held}' world.*run notebook 01"):
        dp.require_world(tiny_run, other)
    with pytest.raises(ValueError, match="WORLD='nope' is not known"):
        dp.require_world(tiny_run, "nope")


def test_notebook_03_coverage_in_both_worlds_matches_part_1_on_the_runs_own_world(tiny_run):
    import conrec_lib.diagnosis.positivity_bias as pb
    from conrec_lib.data import dataprep as dp
    from conrec_lib.diagnosis import coverage

    cfg = pb.BiasConfig()
    table = pb.coverage_by_world(tiny_run, cfg)
    assert list(table.index.get_level_values(0).unique()) == ["default world", "paper world", "misleading world",
                                                              "paper (Taobao)"]
    own = coverage.interest_coverage(dp.load_prepared(tiny_run), cfg.swing, cfg.swing_neighbours, cfg.seed)
    assert table.loc[("default world", "7d"), "top-1"] == own.loc["7d", "top1"]
    for world in ("default world", "paper world", "misleading world"):  # a larger set never covers less
        col = table.loc[world, "top-1"]
        assert col["next"] <= col["7d"] <= col["7d_swing"]
    assert table.loc[("paper (Taobao)", "next"), "top-1"] == 0.07


def test_misleading_world_puts_every_aversion_inside_a_liked_category():
    world = sim.simulate_world(sim.SimConfig(scale="small", seed=0, world="misleading"))
    ds, users = world.dataset, world.users
    gt = ds.ground_truth
    assert "world='misleading'" in ds.citation and "scope" in gt.columns
    assert not gt["facet"].str.startswith(("category=", "tier=")).any()
    liked = users.likes[users.likes["facet"].str.startswith("category=")].groupby("user_id")["facet"].agg(
        lambda f: "|".join(sorted(x.split("=", 1)[1] for x in f)))
    assert (gt.groupby("user_id")["scope"].first() == liked.reindex(gt["user_id"].unique())).all()
    assert not set(zip(gt["user_id"], gt["facet"])) & set(zip(users.likes["user_id"], users.likes["facet"]))
    # the true dislike is zero outside the liked categories, and the log's negatives follow it
    dislike = sim.dislike_scores(ds)
    category = ds.items["category"].to_numpy()
    for u, scope in gt.groupby("user_id")["scope"].first().items():
        assert not dislike[u, ~pd.Series(category).isin(scope.split("|")).to_numpy()].any()
    neg = ds.interactions[ds.interactions["feedback"] == "negative"]
    assert (dislike[neg["user_id"], neg["item_id"]] > 0).all()  # no unrelated dislike in this world
    # the same facet outside the scope: an item with it, in a category the user does not like, is not disliked
    u, facet, scope = gt.iloc[0][["user_id", "facet", "scope"]]
    column, value = facet.split("=", 1)
    outside = ds.items[(ds.items[column] == value) & ~ds.items["category"].isin(scope.split("|"))]
    assert len(outside) and not dislike[u, outside["item_id"]].any()
    assert sim.negatives_per_user(ds) == pytest.approx(sim.WORLDS["misleading"]["target_negatives_per_user"], rel=0.25)


def test_the_response_model_agrees_with_dislike_scores_in_a_scoped_world():
    world = sim.simulate_world(sim.SimConfig(scale="tiny", seed=0, world="misleading"))
    n_users, n_items = world.config.n_users, world.config.n_items
    user, item = (a.ravel() for a in np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij"))
    resp = sim.response(user, item, world.users, world.catalogue, world.config, click_scale=1.0)
    dislike = sim.dislike_scores(world.dataset)[user, item]
    assert ((resp.p_neg > 0) == (dislike > 0)).all()


def test_run_p_world_reaches_notebooks_01_and_03_only():
    from conrec_lib import tutorial

    overrides = tutorial.cli_overrides([("WORLD", "paper")], tutorial.select(None))
    assert {stem for stem, values in overrides.items() if values} == {"01_data_exploration", "03_positivity_bias"}
    assert overrides["03_positivity_bias"] == {"WORLD": "paper"}
