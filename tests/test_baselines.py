"""The model-free baselines on a hand-made log, and every baseline through recommend.score on a tiny simulator."""
import numpy as np
import pandas as pd
import pytest

from conrec_lib.baselines import heuristics as baselines
from conrec_lib.data import dataset as data, dataprep, splits
from conrec_lib.llm import recommend
from conrec_lib.baselines.heuristics import BaselineConfig
from conrec_lib.baselines.swing import SwingConfig

DAY = data.SECONDS_PER_DAY
TEST_DAY = 7  # 14 days of log: the test window is days 7..13


def hand_made() -> dataprep.PreparedData:
    """Items 0, 1, 3 in category A, 2 in B, 4, 5 in C. Training negatives (before day 7):
    user 0: 0, 1; user 1: 0, 2, 1; user 2: 0, 2; user 3: 1; users 4-7: 4. So item 4 is disliked most (4),
    then 0 and 1 (3), then 2 (2). Swing (min 2 co-dislikers) links 0-1 (users 0, 1) and 0-2 (users 1, 2).
    Test window: user 0 dislikes 2 on day 8, user 3 dislikes 5 on day 9 (never a training negative)."""
    train = {0: [0, 1], 1: [0, 2, 1], 2: [0, 2], 3: [1], 4: [4], 5: [4], 6: [4], 7: [4]}
    rows = [(u, i, (1 + n) * DAY + u, "negative") for u, items in train.items() for n, i in enumerate(items)]
    rows += [(0, 2, 8 * DAY, "negative"), (3, 5, 9 * DAY, "negative"), (1, 5, 13 * DAY, "positive")]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "feedback"])
    inter = inter.assign(day=inter["timestamp"] // DAY, raw_label="x").sort_values("timestamp", kind="stable")
    items = pd.DataFrame({"item_id": range(6), "raw_id": list("012345"), "title": list("uvwxyz"),
                          "category": list("AABACC")})
    ds = data.Dataset("hand", inter.reset_index(drop=True)[list(data.INTERACTION_COLUMNS)], items, "", "")
    return dataprep.PreparedData(ds, splits.make_split(ds, splits.SplitConfig()), {})


def test_the_hand_made_split_tests_users_0_and_3_at_day_7():
    test = hand_made().split.test
    assert test["user_id"].tolist() == [0, 3] and set(test["cutoff_day"]) == {TEST_DAY}
    assert baselines.negative_popularity(hand_made()).tolist() == [3, 3, 2, 0, 4, 0]  # test window unseen


def test_most_disliked_returns_the_most_disliked_training_items_minus_the_users_own():
    prepared = hand_made()
    model = baselines.MostDisliked.fit(prepared)
    assert model.recommend(prepared.split.test, k=3) == [[4, 2, 3], [4, 0, 2]]  # user 0 saw 0, 1; user 3 saw 1


def test_swing_recommends_neighbours_of_the_recent_negatives_then_backfills():
    prepared = hand_made()
    cfg = BaselineConfig(swing=SwingConfig(min_co_users=2))
    model = baselines.ItemNeighbours.fit(prepared, None, cfg, "swing")
    # user 0 (negatives 0, 1): 2 is 0's neighbour; user 3 (negative 1): 0 is 1's neighbour; then popularity
    assert model.recommend(prepared.split.test, k=3) == [[2, 4, 3], [0, 4, 2]]
    short = baselines.ItemNeighbours.fit(prepared, None, BaselineConfig(backfill=False), "swing")
    assert short.recommend(prepared.split.test, k=3) == [[2], [0]]
    knn = baselines.ItemNeighbours.fit(prepared, None, BaselineConfig(backfill=False), "cosine")
    assert knn.name == "item_knn" and knn.recommend(prepared.split.test, k=3)[1][0] == 0  # 1 shares users with 0


def test_category_block_blocks_exactly_the_facets_disliked_often_enough():
    prepared = hand_made()
    day7 = [TEST_DAY * DAY] * 3
    assert baselines.blocked_facets(prepared, [0, 3, 1], day7) == [
        frozenset({"category=A"}), frozenset(), frozenset({"category=A"})]  # user 1: A twice, B once
    once = BaselineConfig(block_min_negatives=1)
    assert baselines.blocked_facets(prepared, [1], day7[:1], once) == [frozenset({"category=A", "category=B"})]
    assert baselines.blocked_facets(prepared, [0], [1 * DAY]) == [frozenset()]  # nothing before day 1
    facets = data.item_facets(prepared.dataset)
    assert baselines.is_blocked(range(6), frozenset({"category=A"}), facets).tolist() == [
        True, True, False, True, False, False]


def test_category_block_recommends_the_blocked_categories_first():
    prepared = hand_made()
    model = baselines.CategoryBlock.fit(prepared)
    # user 0 blocks A: its unseen item 3 first, then popularity; user 3 blocks nothing: popularity only
    assert model.recommend(prepared.split.test, k=3) == [[3, 4, 2], [4, 0, 2]]
    short = baselines.CategoryBlock.fit(prepared, None, BaselineConfig(backfill=False))
    assert short.recommend(prepared.split.test, k=3) == [[3], []]


@pytest.fixture
def tiny(tiny_prepared):
    return tiny_prepared


@pytest.mark.parametrize("name", ["most_disliked", "swing", "item_knn", "category_block"])
def test_every_model_free_baseline_goes_through_recommend_score(tiny, name):
    prepared, tokenized = tiny
    rows = prepared.split.test
    fit = {"most_disliked": baselines.MostDisliked.fit, "category_block": baselines.CategoryBlock.fit,
           "swing": lambda p, t: baselines.ItemNeighbours.fit(p, t, None, "swing"),
           "item_knn": lambda p, t: baselines.ItemNeighbours.fit(p, t, None, "cosine")}[name]
    model = fit(prepared, tokenized)
    predictions = model.recommend(rows, k=20)
    seen = baselines.history_items(prepared, rows, "negative")
    assert model.name == name and len(predictions) == len(rows)
    assert all(len(p) == 20 == len(set(p)) and not set(p) & s for p, s in zip(predictions, seen))
    scores = recommend.score(predictions, rows, prepared, tokenized)
    assert 0.0 <= scores["HR@20"] <= scores["FHR@20"] <= 1.0 and 0.0 <= scores["CandAcc"] <= 1.0


def test_training_data_never_reaches_the_test_window(tiny):
    prepared, _ = tiny
    rows = baselines.training_negatives(prepared)
    assert (rows["timestamp"].to_numpy() < prepared.split.test_cutoffs()[rows["user_id"].to_numpy()]).all()
    sequences = baselines.training_sequences(prepared)
    assert sum(map(len, sequences)) == len(rows)
    order = rows.sort_values(["user_id", "timestamp"], kind="stable").index
    assert (order == rows.index).all() and sequences[0] == rows.loc[rows["user_id"] == rows["user_id"].min(),
                                                                    "item_id"].tolist()


def test_config_errors_say_how_to_fix():
    with pytest.raises(ValueError, match="recent_negatives"):
        BaselineConfig(recent_negatives=0)
    with pytest.raises(ValueError, match="block_columns"):
        BaselineConfig(block_columns=())
    with pytest.raises(ValueError, match="similarity"):
        baselines.ItemNeighbours.fit(hand_made(), None, None, "jaccard")


def test_own_negatives_follows_the_users_facets_and_oracle_reads_the_ground_truth(tiny_prepared):
    from conrec_lib.baselines import heuristics as b
    from conrec_lib.llm import recommend as r
    from conrec_lib.data import simulate
    prepared, tokenized = tiny_prepared
    rows = prepared.split.test
    own = b.OwnNegatives.fit(prepared, tokenized)
    flat = b.OwnNegatives.fit(prepared, tokenized, b.BaselineConfig(own_strength=0.0))
    most = b.MostDisliked.fit(prepared)
    # strength 0 is the most-disliked list (popularity + 1 keeps the order)
    assert flat.recommend(rows) == most.recommend(rows)
    past = r.excluded_items(prepared, rows)
    oracle = b.Oracle.fit(prepared)
    for name, preds in (("own", own.recommend(rows)), ("oracle", oracle.recommend(rows))):
        assert all(len(p) == 20 and not set(p) & s for p, s in zip(preds, past)), name
    averse = simulate.dislike_scores(prepared.dataset) > 0
    share = lambda preds: np.mean([averse[u, p].mean() for u, p in zip(rows["user_id"], preds)])
    assert share(oracle.recommend(rows)) > share(own.recommend(rows)) > share(most.recommend(rows))


def test_oracle_refuses_data_without_ground_truth(tiny_prepared):
    import dataclasses
    from conrec_lib.baselines import heuristics as b
    prepared, _ = tiny_prepared
    blind = dataclasses.replace(prepared, dataset=dataclasses.replace(prepared.dataset, ground_truth=None))
    with pytest.raises(ValueError, match="only on the simulator"):
        b.Oracle.fit(blind)
