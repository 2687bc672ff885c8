"""Time-based splits: hand-checked examples, truncation at the test cutoff (no leakage), long-tail flags,
candidates, per-user mode on a MovieLens fixture, determinism, save/load, and bad configurations."""
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conrec_lib.data import dataset as data, loaders, splits

FIXTURES = Path(__file__).parent / "fixtures"
DAY = data.SECONDS_PER_DAY
T0 = 1_600_000_000  # any start
START = T0 + 9 * 3600  # the first interaction: days count from it, as data.reindex defines them
N, P, E = "negative", "positive", "exposure"

# (user, item, day, hour, feedback): user 0 is active every other day, user 1 has a negative on day 7 that
# a training window truncated at the test cutoff (day 7) must not see, user 2 never gives a negative.
HAND_ROWS = [
    (0, 0, 0, 9, N), (0, 1, 0, 10, P), (0, 2, 1, 9, E), (0, 3, 2, 9, N), (0, 4, 4, 9, N), (0, 5, 4, 10, E),
    (0, 6, 4, 11, P), (0, 7, 6, 9, N), (0, 8, 7, 9, E), (0, 9, 8, 9, N), (0, 1, 8, 10, E), (0, 2, 9, 9, N),
    (1, 3, 1, 9, P), (1, 3, 5, 9, N), (1, 5, 7, 9, N), (1, 6, 8, 9, P),
    (2, 0, 2, 9, P), (2, 1, 8, 9, P),
]
HAND_CFG = splits.SplitConfig(horizon_days=3, test_cutoff_day=7, train_cutoff_days=(3, 5), longtail_item_max_neg=2)


def make_dataset(rows, n_items: int = 10, name: str = "hand") -> data.Dataset:
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "day", "hour", "feedback"])
    inter["timestamp"] = T0 + inter["day"] * DAY + inter["hour"] * 3600
    inter["raw_label"] = inter["feedback"]
    inter = inter.sort_values("timestamp", kind="stable").reset_index(drop=True)
    inter = inter[list(data.INTERACTION_COLUMNS)].astype({c: np.int64 for c in ("user_id", "item_id", "timestamp",
                                                                                 "day")})
    items = pd.DataFrame({"item_id": np.arange(n_items), "raw_id": [str(i) for i in range(n_items)],
                          "title": [f"item {i}" for i in range(n_items)], "category": "c"})
    return data.Dataset(name, inter, items, licence="test", citation="test")


def random_dataset(seed: int, n_users: int = 25, n_items: int = 40, n_days: int = 14, n_rows: int = 900):
    rng = np.random.default_rng(seed)
    rows = [(int(u), int(i), int(d), int(h), str(f)) for u, i, d, h, f in zip(
        rng.integers(0, n_users, n_rows), rng.integers(0, n_items, n_rows), rng.integers(0, n_days, n_rows),
        rng.integers(0, 24, n_rows), rng.choice([N, P, E], n_rows, p=[0.15, 0.3, 0.55]))]
    return make_dataset(rows, n_items, name=f"random{seed}")


def _row(frame: pd.DataFrame, user: int, cutoff_day: int) -> dict:
    hit = frame[(frame["user_id"] == user) & (frame["cutoff_day"] == cutoff_day)]
    assert len(hit) == 1, (user, cutoff_day)
    return hit.iloc[0].to_dict()


# --- hand-checked global split ---------------------------------------------------------------------------

def test_hand_test_examples():
    split = splits.make_split(make_dataset(HAND_ROWS), HAND_CFG)
    assert sorted(split.test["user_id"]) == [0, 1]  # user 2 has no negative: no example
    u0 = _row(split.test, 0, 7)
    assert (u0["next_negative"], u0["future_negatives"], u0["future_positives"]) == (9, [9, 2], [])
    assert u0["next_negative_ts"] == START + 8 * DAY and u0["cutoff_ts"] == START + 7 * DAY
    assert sorted(u0["candidates"]) == [1, 9]  # what user 0 saw on day 8
    assert (u0["n_hist_neg"], u0["n_hist_pos"], u0["longtail_user"]) == (4, 2, False)
    u1 = _row(split.test, 1, 7)
    assert (u1["next_negative"], u1["future_negatives"], u1["future_positives"]) == (5, [5], [6])
    assert (u1["n_hist_neg"], u1["n_hist_pos"], u1["longtail_user"]) == (1, 1, True)


def test_hand_train_examples_are_truncated_at_the_test_cutoff():
    split = splits.make_split(make_dataset(HAND_ROWS), HAND_CFG)
    assert sorted(zip(split.train["user_id"], split.train["cutoff_day"])) == [(0, 3), (0, 5), (1, 3), (1, 5)]
    u0 = _row(split.train, 0, 3)
    assert (u0["next_negative"], u0["future_negatives"], u0["future_positives"]) == (4, [4], [6])
    assert sorted(u0["candidates"]) == [4, 5, 6] and (u0["n_hist_neg"], u0["longtail_user"]) == (2, True)
    assert _row(split.train, 0, 5)["n_hist_neg"] == 3 and not _row(split.train, 0, 5)["longtail_user"]
    u1 = _row(split.train, 1, 5)  # window days 5..7 cut to 5..6: the day-7 negative (item 5) is test data
    assert (u1["future_negatives"], u1["future_positives"], u1["window_end_ts"]) == ([3], [], START + 7 * DAY)


def test_hand_longtail_items_use_training_history_only():
    split = splits.make_split(make_dataset(HAND_ROWS), HAND_CFG)
    # negatives before day 7: items 0, 3 (twice), 4, 7; item 3 reaches longtail_item_max_neg=2.
    # Items 5, 9, 2 are disliked only at test time and stay long-tail.
    assert split.longtail_items.tolist() == [i != 3 for i in range(10)]
    strict = splits.make_split(make_dataset(HAND_ROWS), dataclasses.replace(HAND_CFG, longtail_item_max_neg=1))
    assert strict.longtail_items.tolist() == [i not in (0, 3, 4, 7) for i in range(10)]


def test_default_cutoffs():
    split = splits.make_split(make_dataset(HAND_ROWS), splits.SplitConfig(horizon_days=3))
    assert (split.config.test_cutoff_day, split.config.train_cutoff_days) == (7, (2, 4, 6))  # n_days 10 - 3
    assert splits.make_split(make_dataset(HAND_ROWS)).config.train_cutoff_days == (2,)  # H = 7: test day 3


def test_history_is_strictly_before_the_cutoff_and_time_ordered():
    split = splits.make_split(make_dataset(HAND_ROWS), HAND_CFG)
    at = T0 + 4 * DAY + 9 * 3600  # the moment user 0 dislikes item 4
    assert split.history(0, at)["item_id"].tolist() == [0, 1, 2, 3]
    assert split.history(0, at + 1)["item_id"].tolist() == [0, 1, 2, 3, 4]
    assert split.history(0, at, feedback="negative")["item_id"].tolist() == [0, 3]
    assert split.history(2, T0).empty
    with pytest.raises(ValueError, match="user_id=7 is outside 0..2"):
        split.history(7, at)


# --- invariants on random data ---------------------------------------------------------------------------

def _reference(ds: data.Dataset, user: int, start: int, end: int):
    """Recompute an example's lists with plain pandas, for comparison."""
    inter = ds.interactions[ds.interactions["user_id"] == user].sort_values("timestamp", kind="stable")
    window = inter[(inter["timestamp"] >= start) & (inter["timestamp"] < end)]
    negs = window[window["feedback"] == N]
    hist = inter[inter["timestamp"] < start]
    first = negs.iloc[0]
    day_items = set(window.loc[window["day"] == first["day"], "item_id"])
    return (int(first["item_id"]), list(dict.fromkeys(negs["item_id"])),
            list(dict.fromkeys(window.loc[window["feedback"] == P, "item_id"])), day_items,
            int((hist["feedback"] == N).sum()), int((hist["feedback"] == P).sum()))


@pytest.mark.parametrize("seed", [0, 1])
def test_no_leakage_and_examples_match_a_plain_recomputation(seed):
    ds = random_dataset(seed)
    split = splits.make_split(ds, splits.SplitConfig(seed=seed))
    test_ts = int(split.test["cutoff_ts"].iloc[0])
    assert (split.test["cutoff_ts"] == test_ts).all() and len(split.train) > 0
    assert (split.train["window_end_ts"] <= test_ts).all() and (split.train["next_negative_ts"] < test_ts).all()
    for frame in (split.train, split.test):
        for ex in frame.itertuples():
            nxt, negs, pos, day_items, n_neg, n_pos = _reference(ds, ex.user_id, ex.cutoff_ts, ex.window_end_ts)
            assert (ex.next_negative, ex.future_negatives, ex.future_positives) == (nxt, negs, pos)
            assert ex.next_negative in ex.candidates and set(ex.candidates) <= day_items
            assert len(ex.candidates) == min(20, len(day_items)) == len(set(ex.candidates))
            assert (ex.n_hist_neg, ex.n_hist_pos, ex.longtail_user) == (n_neg, n_pos, n_neg < 3)
            assert (split.history(ex.user_id, ex.cutoff_ts)["timestamp"] < ex.cutoff_ts).all()
    users_with_future_neg = ds.interactions[(ds.interactions["timestamp"] >= test_ts)
                                            & (ds.interactions["feedback"] == N)]["user_id"].nunique()
    assert len(split.test) == users_with_future_neg


@pytest.mark.filterwarnings("ignore:.*no training examples")
def test_candidates_are_capped_sampled_and_deterministic():
    rows = [(0, 0, 0, 9, N)] + [(0, i, 5, 10, E) for i in range(1, 50)] + [(0, 50, 5, 11, N)]
    ds = make_dataset(rows, n_items=51)  # on day 5 user 0 sees 49 items, then dislikes item 50
    cfg = splits.SplitConfig(horizon_days=3, test_cutoff_day=5, train_cutoff_days=(), n_candidates=20)
    (cands,) = splits.make_split(ds, cfg).test["candidates"]
    assert len(cands) == 20 == len(set(cands)) and 50 in cands and set(cands) <= set(range(1, 51))
    assert splits.make_split(ds, cfg).test["candidates"].iloc[0] == cands
    other = splits.make_split(ds, dataclasses.replace(cfg, seed=1)).test["candidates"].iloc[0]
    assert 50 in other and set(other) != set(cands)


def test_split_is_deterministic():
    ds = random_dataset(3)
    a, b = splits.make_split(ds), splits.make_split(ds)
    pd.testing.assert_frame_equal(a.train, b.train)
    pd.testing.assert_frame_equal(a.test, b.test)


# --- per-user mode (MovieLens) ---------------------------------------------------------------------------

def test_per_user_mode_on_the_movielens_fixture():
    ds = loaders.load("movielens", FIXTURES / "ml_latest_small")
    split = splits.make_split(ds, splits.SplitConfig(mode="per_user", longtail_item_max_neg=2))
    t = split.test.set_index("user_id")  # users in order of first rating: movielens users 1, 2, 3, 4 -> 0..3
    assert list(t.index) == [0, 1, 3]  # user 2 (movielens user 3) has no negative
    # movielens user 1 has 5 negatives: the test cutoff is at negative number int(0.8 * 5) = 4 (0-based), movie 11
    assert (t.loc[0, "next_negative"], t.loc[0, "future_negatives"], t.loc[0, "future_positives"]) == (10, [10], [11])
    assert t.loc[0, "cutoff_ts"] == t.loc[0, "next_negative_ts"] and sorted(t.loc[0, "candidates"]) == [10, 11]
    assert (t.loc[0, "n_hist_neg"], t.loc[0, "n_hist_pos"], t.loc[0, "longtail_user"]) == (4, 3, False)
    assert (t.loc[1, "next_negative"], t.loc[1, "n_hist_neg"], sorted(t.loc[1, "candidates"])) == (2, 0, [2, 4])
    assert (t.loc[3, "next_negative"], t.loc[3, "n_hist_neg"], t.loc[3, "n_hist_pos"]) == (6, 1, 3)
    # training cutoffs at every 2nd earlier negative: user 0's negatives 2 and 0 (movies 6 and 2)
    tr = split.train.sort_values("cutoff_ts")
    assert tr["user_id"].tolist() == [0, 0] and tr["next_negative"].tolist() == [1, 5]
    assert tr["future_negatives"].tolist() == [[1, 3, 5], [5]]  # movie 9 lies beyond the 7-day window
    assert tr["future_positives"].tolist() == [[4, 7], [7]]
    assert (tr["window_end_ts"] <= t.loc[0, "cutoff_ts"]).all()  # truncated at the user's own test cutoff
    # long tail: negatives before each user's test cutoff; only movie 2 (item 1) reaches 2
    assert split.longtail_items.tolist() == [i != 1 for i in range(ds.n_items)]
    strict = splits.make_split(ds, splits.SplitConfig(mode="per_user", longtail_item_max_neg=1))
    assert strict.longtail_items.tolist() == [i not in (1, 3, 5, 8) for i in range(ds.n_items)]  # not 2, 6, 10


def test_per_user_training_windows_stop_at_the_users_test_cutoff():
    ds = random_dataset(5)
    split = splits.make_split(ds, splits.SplitConfig(mode="per_user", horizon_days=30))
    test_ts = split.test.set_index("user_id")["cutoff_ts"]
    assert len(split.train) > 0
    assert (split.train["window_end_ts"].to_numpy() <= test_ts.loc[split.train["user_id"]].to_numpy()).all()


# --- save / load ------------------------------------------------------------------------------------------

def test_save_and_load_round_trip(tmp_path):
    ds = random_dataset(2)
    split = splits.make_split(ds)
    splits.save_split(split, tmp_path / "split")
    back = splits.load_split(tmp_path / "split", ds)
    assert back.config == split.config
    pd.testing.assert_frame_equal(back.train, split.train)
    pd.testing.assert_frame_equal(back.test, split.test)
    assert np.array_equal(back.longtail_items, split.longtail_items)
    with pytest.raises(ValueError, match="the split was made for dataset"):
        splits.load_split(tmp_path / "split", random_dataset(4))
    with pytest.raises(FileNotFoundError, match="no split.json"):
        splits.load_split(tmp_path, ds)


# --- bad configurations ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"horizon_days": 0}, "horizon_days=0 must be >= 1"),
    ({"mode": "weekly"}, "mode='weekly'"),
    ({"n_candidates": 0}, "n_candidates=0"),
    ({"per_user_fraction": 1.0}, "per_user_fraction=1.0 must be in"),
    ({"train_cutoff_days": (5, 3)}, "distinct increasing days"),
    ({"train_cutoff_days": (0, 2)}, "distinct increasing days >= 1"),
    ({"test_cutoff_day": 0}, "test_cutoff_day=0"),
    ({"test_cutoff_day": 5, "train_cutoff_days": (3, 5)}, "must all be < test_cutoff_day=5"),
    ({"mode": "per_user", "test_cutoff_day": 5}, "are for mode='global'"),
    ({"longtail_user_max_neg": 0}, "longtail_user_max_neg=0"),
])
def test_bad_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        splits.SplitConfig(**kwargs)


@pytest.mark.filterwarnings("ignore:.*no training examples")
def test_config_that_does_not_fit_the_dataset_raises():
    ds = make_dataset(HAND_ROWS)  # days 0..9
    with pytest.raises(ValueError, match="test_cutoff_day=10 does not fit a dataset with days 0..9"):
        splits.make_split(ds, splits.SplitConfig(test_cutoff_day=10))
    with pytest.raises(ValueError, match="test_cutoff_day=-10 does not fit"):
        splits.make_split(ds, splits.SplitConfig(horizon_days=20))
    quiet_end = make_dataset([(0, 0, 0, 9, N), (0, 1, 5, 9, E)], n_items=2)
    with pytest.raises(ValueError, match="no user has a negative in the test window"):
        splits.make_split(quiet_end, splits.SplitConfig(horizon_days=2))
    broken = make_dataset(HAND_ROWS)
    broken.interactions.loc[0, "day"] = 5
    with pytest.raises(ValueError, match="day is not whole days of timestamp"):
        splits.make_split(broken, HAND_CFG)
