"""Notebook 02's stage: collaborative embeddings learn from the training rows only (no test-window leak)."""
import numpy as np
import pandas as pd
import pytest

from conrec_lib import runs
from conrec_lib.data import dataset as data, dataprep, splits
from conrec_lib.sids import embeddings, item_tokenizer
from conrec_lib.sids.embeddings import EmbedConfig
from conrec_lib.sids.quantizer import SIDConfig

DAY = data.SECONDS_PER_DAY
N, P = "negative", "positive"
# training (days 1-6): users 0-3 dislike items 0, 1; users 4-7 like items 2, 3 and dislike item 4;
# user 0 dislikes item 5, users 1-3 like item 5 (so item 5 is not disliked by the 4-7 group)
TRAIN_ROWS = ([(u, i, 1 + i, N) for u in range(4) for i in (0, 1)]
              + [(u, i, 1 + i, P) for u in range(4, 8) for i in (2, 3)]
              + [(u, 4, 5, N) for u in range(4, 8)] + [(0, 5, 6, N)] + [(u, 5, 6, P) for u in (1, 2, 3)])
# test window (days 7-8): users 4-7 dislike item 0, the 0-3 group's item (a test negative of users 4-7)
TEST_ROWS = [(u, 0, 8, N) for u in range(4, 8)]
# test cutoff day 7: also the default cutoff of this 9-day log (days 0-8) with horizon_days=2
SPLIT = splits.SplitConfig(horizon_days=2, test_cutoff_day=7, train_cutoff_days=(3, 5))
CFG = EmbedConfig(encoder="collaborative", dim=3)


def make_dataset(rows, n_items: int = 6) -> data.Dataset:
    """(user, item, day, feedback) rows, one an hour from 9:00 of their day, as a Dataset."""
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "day", "feedback"])
    inter["timestamp"] = inter["day"] * DAY + 9 * 3600 + np.arange(len(inter))
    inter["raw_label"] = inter["feedback"]
    inter = inter.sort_values("timestamp", kind="stable").reset_index(drop=True)
    inter = inter[list(data.INTERACTION_COLUMNS)].astype({c: np.int64 for c in ("user_id", "item_id", "timestamp",
                                                                                 "day")})
    items = pd.DataFrame({"item_id": np.arange(n_items), "raw_id": [str(i) for i in range(n_items)],
                          "title": [f"video {i}" for i in range(n_items)], "category": "c"})
    return data.Dataset("hand", inter, items, licence="test", citation="test")


def embed_training(rows) -> np.ndarray:
    split = splits.make_split(make_dataset(rows), SPLIT)
    return embeddings.embed_items(split.dataset, CFG, interactions=item_tokenizer.training_interactions(split))


def test_training_interactions_stop_at_the_global_test_cutoff():
    split = splits.make_split(make_dataset(TRAIN_ROWS + TEST_ROWS), SPLIT)
    train = item_tokenizer.training_interactions(split)
    assert len(train) == len(TRAIN_ROWS) and train["day"].max() == 6


def test_training_interactions_stop_at_each_users_own_cutoff_in_per_user_mode():
    # user 0: negatives on days 1, 3, 5, 7, 9 -> test cutoff at the 5th (floor(0.8 * 5) = 4, 0-based): day 9;
    # user 1: negatives on days 2, 4 -> test cutoff at the 2nd (floor(0.8 * 2) = 1): day 4; user 2: no negative
    rows = ([(0, 0, d, N) for d in (1, 3, 5, 7, 9)] + [(0, 1, 8, P)] + [(1, 2, d, N) for d in (2, 4)]
            + [(1, 3, 3, P), (1, 3, 6, P), (2, 4, 9, P)])
    split = splits.make_split(make_dataset(rows), splits.SplitConfig(mode="per_user", horizon_days=3))
    train = item_tokenizer.training_interactions(split)
    kept = sorted(zip(train["user_id"], train["day"]))
    assert kept == [(0, 1), (0, 3), (0, 5), (0, 7), (0, 8), (1, 2), (1, 3), (2, 9)]
    negatives = split.training_rows("negative")  # the same rows, one feedback kind (baselines, Swing)
    assert sorted(zip(negatives["user_id"], negatives["day"])) == [(0, 1), (0, 3), (0, 5), (0, 7), (1, 2)]


def test_changing_only_the_test_window_leaves_collaborative_embeddings_unchanged():
    other_window = [(u, 1, 8, N) for u in range(4, 8)] + [(0, 2, 7, P)]
    with_test = embed_training(TRAIN_ROWS + TEST_ROWS)
    assert np.array_equal(with_test, embed_training(TRAIN_ROWS + other_window))


def test_the_whole_log_would_pull_a_test_negative_towards_its_users_history():
    x = embed_training(TRAIN_ROWS + TEST_ROWS)
    assert x[0] @ x[1] > 0.99  # items 0, 1: disliked by the same users in training
    assert abs(x[0] @ x[4]) < 0.1  # item 4: disliked by users 4-7, who dislike item 0 only in the test window
    ds = make_dataset(TRAIN_ROWS + TEST_ROWS)
    leaked = embeddings.embed_items(ds, CFG, interactions=ds.interactions)  # the old behaviour
    assert leaked[0] @ leaked[4] > 0.5  # 0.98: item 0 now looks like the 4-7 group's dislike


def test_items_seen_only_in_the_test_window_get_a_seeded_random_vector_and_a_warning():
    rows = TRAIN_ROWS + [(u, 6, 8, N) for u in range(4)]  # item 6 first appears on day 8
    split = splits.make_split(make_dataset(rows, n_items=7), SPLIT)
    with pytest.warns(UserWarning, match="1 items have no weighted feedback"):
        x = embeddings.embed_items(split.dataset, CFG, interactions=item_tokenizer.training_interactions(split))
    assert np.isclose(np.linalg.norm(x[6]), 1.0, atol=1e-5) and x[6] @ x[0] < 0.99


def test_tokenize_caches_under_the_training_rows_key(tmp_path, monkeypatch):
    ds = make_dataset(TRAIN_ROWS + TEST_ROWS)
    monkeypatch.setattr(dataprep, "load_dataset", lambda cfg: ds)
    run = runs.Run.at(tmp_path)
    prepared = dataprep.prepare(dataprep.DataConfig(horizon_days=2), run, progress=False)
    assert prepared.split.config.test_cutoff_day == 7
    cfg = item_tokenizer.TokenizerConfig(embed=CFG, sid=SIDConfig(quantizer="rqkmeans", levels=2, codebook_size=2),
                                         compare=False)
    tokenized = item_tokenizer.tokenize(cfg, run, progress=False)
    train = item_tokenizer.training_interactions(prepared.split)
    key = embeddings.cache_key(ds, CFG, train)[:20]
    assert [p.name for p in (tmp_path / "cache" / "embeddings").iterdir()] == [f"collaborative_{key}.npy"]
    assert key != embeddings.cache_key(ds, CFG, ds.interactions)[:20]
    assert np.array_equal(tokenized.item_embeddings, embeddings.embed_items(ds, CFG, interactions=train))
