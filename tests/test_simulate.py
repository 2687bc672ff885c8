"""Tests of the simulated platform (conrec_lib.data.simulate), on the "tiny" scale (< 1 s per run)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conrec_lib.data import dataset as data
from conrec_lib.data import simulate as sim


@pytest.fixture(scope="module")
def tiny() -> data.Dataset:
    return sim.simulate(sim.SimConfig(scale="tiny", seed=0))


def _negatives(ds: data.Dataset) -> pd.DataFrame:
    return ds.interactions[ds.interactions["feedback"] == "negative"]


# --- config -----------------------------------------------------------------------------------------

def test_preset_fills_sizes_and_explicit_fields_override():
    cfg = sim.SimConfig(scale="tiny", n_users=10)
    assert (cfg.n_items, cfg.n_users, cfg.n_days) == (150, 10, 14)
    assert sim.SimConfig().n_items == 2000


@pytest.mark.parametrize("kwargs, field", [
    (dict(scale="huge"), "scale"),
    (dict(n_days=1), "n_days"),
    (dict(n_items=5), "n_items"),
    (dict(slate_size=0), "slate_size"),
    (dict(n_users=2.5), "n_users"),
    (dict(neg_propensity=0.0), "neg_propensity"),
    (dict(pos_neg_ratio=-1.0), "pos_neg_ratio"),
    (dict(cold_start_share=1.5), "cold_start_share"),
    (dict(suppression_days=-1), "suppression_days"),
    (dict(mix_popular=0.0, mix_personal=0.0, mix_explore=0.0), "mix_"),
])
def test_bad_config_raises_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        sim.SimConfig(**{"scale": "tiny", **kwargs})


# --- output format ----------------------------------------------------------------------------------

def test_dataset_follows_the_data_model(tiny):
    assert tiny.name == "simulated" and tiny.ground_truth is not None
    assert len(sim.CATEGORIES) >= 10 and tiny.items["category"].nunique() == len(sim.CATEGORIES)
    assert "release_day" in tiny.items.columns and "release_day" not in tiny.attributes
    assert tiny.items["release_day"].dtype == np.int64
    inter = tiny.interactions
    assert (inter["timestamp"] // data.SECONDS_PER_DAY == inter["day"]).all()
    assert set(inter["day"]) == set(range(14))
    assert tiny.n_users == 60 and tiny.n_items == 150
    labels = inter.groupby("feedback")["raw_label"].unique().map(set).to_dict()
    assert labels == {"positive": {"click", "purchase"}, "negative": {"not_interested"}, "exposure": {"exposure"}}


def test_events_of_a_user_within_a_day_are_strictly_ordered(tiny):
    gaps = tiny.interactions.sort_values(["user_id", "timestamp"]).groupby(["user_id", "day"])["timestamp"].diff()
    assert (gaps.dropna() > 0).all()


def test_titles_are_built_from_the_attributes(tiny):
    for row in tiny.items.head(20).itertuples():
        for word in (row.style, row.color, row.material, row.feature):
            assert word in row.title


def test_save_load_round_trip(tiny, tmp_path):
    back = data.load(data.save(tiny, tmp_path / "ds"))
    pd.testing.assert_frame_equal(back.interactions, tiny.interactions, check_dtype=False)
    pd.testing.assert_frame_equal(back.ground_truth, tiny.ground_truth, check_dtype=False)
    assert back.attributes == tiny.attributes


# --- determinism ------------------------------------------------------------------------------------

def test_same_seed_same_data_other_seed_other_data(tiny):
    again = sim.simulate(sim.SimConfig(scale="tiny", seed=0))
    pd.testing.assert_frame_equal(again.interactions, tiny.interactions)
    pd.testing.assert_frame_equal(again.items, tiny.items)
    pd.testing.assert_frame_equal(again.ground_truth, tiny.ground_truth)
    other = sim.simulate(sim.SimConfig(scale="tiny", seed=1))
    assert not other.interactions.equals(tiny.interactions)
    assert not other.ground_truth.equals(tiny.ground_truth)


# --- feedback ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [4.0, 2.0])
def test_positive_negative_ratio_is_met(ratio):
    counts = sim.simulate(sim.SimConfig(scale="tiny", seed=3, pos_neg_ratio=ratio)).counts()
    assert counts["negative"] > 100
    assert counts["positive"] / counts["negative"] == pytest.approx(ratio, rel=0.25)


def test_negatives_only_on_disliked_items_and_most_disliked_exposures_are_ignored(tiny):
    scores = sim.dislike_scores(tiny)
    inter = tiny.interactions
    dislike = scores[inter["user_id"], inter["item_id"]]
    assert (dislike[inter["feedback"] == "negative"] > 0).all()
    hit = dislike > 0
    assert (inter["feedback"][hit] == "negative").mean() < 0.5


def test_no_item_is_shown_again_after_not_interested(tiny):
    neg = _negatives(tiny)[["user_id", "item_id", "timestamp"]].rename(columns={"timestamp": "t_neg"})
    later = tiny.interactions.merge(neg, on=["user_id", "item_id"])
    assert len(neg) > 0
    assert (later["timestamp"] <= later["t_neg"]).all()


def _similar_exposures_after_negatives(ds: data.Dataset, window: int) -> int:
    """Exposures, in the `window` days after a negative, of other items of the same category that share
    at least one attribute value with the disliked item (the suppression rule, recomputed by hand)."""
    cols = ["item_id", "category", *sim.ATTRIBUTES]
    neg = _negatives(ds)[["user_id", "item_id", "day"]].merge(ds.items[cols], on="item_id")
    shown = ds.interactions[["user_id", "item_id", "day"]].merge(ds.items[cols], on="item_id")
    pairs = neg.merge(shown, on=["user_id", "category"], suffixes=("_neg", ""))
    in_window = (pairs["day"] > pairs["day_neg"]) & (pairs["day"] <= pairs["day_neg"] + window)
    shared = np.logical_or.reduce([pairs[a] == pairs[f"{a}_neg"] for a in sim.ATTRIBUTES])
    return int((in_window & shared & (pairs["item_id"] != pairs["item_id_neg"])).sum())


def test_similar_items_are_suppressed_after_a_negative():
    with_suppression = sim.simulate(sim.SimConfig(scale="tiny", seed=0, suppression_days=5))
    without = sim.simulate(sim.SimConfig(scale="tiny", seed=0, suppression_days=0))
    assert _similar_exposures_after_negatives(with_suppression, window=5) == 0
    assert _similar_exposures_after_negatives(without, window=5) > 20


def test_cold_start_items_appear_only_from_their_release_day(tiny):
    shown = tiny.interactions.merge(tiny.items[["item_id", "release_day"]], on="item_id")
    assert (shown["day"] >= shown["release_day"]).all()
    cold_shown = shown.loc[shown["release_day"] > 0, "item_id"].nunique()
    assert cold_shown >= 5


# --- ground truth -----------------------------------------------------------------------------------

def test_ground_truth_facets_are_item_facets_ranked_by_strength(tiny):
    gt = tiny.ground_truth
    assert set(gt["facet"]) <= set().union(*data.item_facets(tiny))
    assert set(gt["user_id"]) == set(range(tiny.n_users))
    for _, g in gt.groupby("user_id"):
        assert 1 <= len(g) <= 4 and list(g["rank"]) == list(range(len(g)))
        assert (g["strength"] > 0).all() and g["strength"].is_monotonic_decreasing


def test_aversions_are_shared_across_users():
    ds = sim.simulate(sim.SimConfig(scale="tiny", seed=0, n_users=200, n_days=2))
    assert ds.ground_truth["facet"].value_counts().iloc[0] >= 20


def test_likes_never_contradict_aversions():
    cfg = sim.SimConfig(scale="tiny", seed=0)
    rng = np.random.default_rng(0)
    users = sim.make_users(cfg, sim.make_catalogue(cfg, rng), rng)
    likes = users.likes.groupby("user_id")["facet"].apply(set)
    aversions = users.aversions.groupby("user_id")["facet"].apply(set)
    assert all(not (likes[u] & aversions[u]) for u in range(cfg.n_users))


def test_dislike_scores_match_a_hand_computation(tiny):
    scores = sim.dislike_scores(tiny)
    assert scores.shape == (tiny.n_users, tiny.n_items)
    user = int(tiny.ground_truth["user_id"].iloc[0])
    strength = dict(tiny.ground_truth.loc[tiny.ground_truth["user_id"] == user, ["facet", "strength"]].values)
    by_hand = [sum(s for f, s in strength.items() if f in fs) for fs in data.item_facets(tiny)]
    np.testing.assert_allclose(scores[user], by_hand)
    assert (scores[user] > 0).any() and (scores[user] == 0).any()


def test_top_interests_follow_the_ranks(tiny):
    top = sim.top_interests(tiny, 2)
    gt = tiny.ground_truth
    first = gt[gt["rank"] == 0].set_index("user_id")["facet"]
    assert all(top[u][0] == first[u] and len(top[u]) <= 2 for u in range(tiny.n_users))
    with pytest.raises(ValueError, match="k="):
        sim.top_interests(tiny, 0)


def test_ground_truth_helpers_refuse_datasets_without_it(tiny):
    real = data.Dataset(name="real", interactions=tiny.interactions, items=tiny.items, licence="", citation="")
    with pytest.raises(ValueError, match="no ground truth"):
        sim.dislike_scores(real)


# --- the world state behind the log (for the closed-loop A/B test) ------------------------------------

def _frame_hash(df: pd.DataFrame) -> str:
    """Content hash of a frame: values, index, dtypes and column names."""
    import hashlib
    payload = pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes()
    return hashlib.sha256(payload + str(list(df.dtypes)).encode() + str(list(df.columns)).encode()).hexdigest()


def test_tiny_dataset_is_byte_identical_to_the_pinned_one(tiny):
    """Committed notebooks and nbval depend on simulate() never changing its output for a config."""
    assert _frame_hash(tiny.interactions) == "6566ae719bb2a3d875e9505ac8ada6b137f595ef844995ef169d0068afc5d080"
    assert _frame_hash(tiny.items) == "4e0e3217030a0f72338b46b5785bf8724ba1fa6ed9a0d375a8307361c5835ac6"
    assert _frame_hash(tiny.ground_truth) == "d667d90feefd8c83446ed16510f40b09aeec0b2330803a2ce81b396f4ac6095f"


@pytest.mark.parametrize("start_day", [5, None])
def test_world_state_matches_the_log_before_its_start_day(tiny, start_day):
    world = sim.simulate_world(sim.SimConfig(scale="tiny", seed=0), start_day=start_day)
    pd.testing.assert_frame_equal(world.dataset.interactions, tiny.interactions)
    before = tiny.interactions[tiny.interactions["day"] < world.start_day]
    shown = np.zeros((tiny.n_users, tiny.n_items), np.int64)
    np.add.at(shown, (before["user_id"], before["item_id"]), 1)
    np.testing.assert_array_equal(world.state.shown, shown)
    neg = before[before["feedback"] == "negative"]
    assert (world.state.hidden_until[neg["user_id"], neg["item_id"]] == sim.HIDDEN_FOREVER).all()
    assert world.click_scale > 0
    with pytest.raises(ValueError, match="start_day"):
        sim.simulate_world(sim.SimConfig(scale="tiny", seed=0), start_day=0)
