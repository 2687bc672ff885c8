"""Item embeddings: tfidf, collaborative and MiniLM encoders, unit rows, the on-disk cache, clear errors."""
import numpy as np
import pandas as pd
import pytest

from conrec_lib.sids import embeddings as emb
from conrec_lib.data.dataset import Dataset
from conrec_lib.sids.embeddings import EmbedConfig

TITLES = ["red leather hiking boots", "brown leather hiking boots", "wireless in-ear earphones",
          "wired in-ear earphones", "cotton summer dress", "linen summer dress"]


def make_dataset(titles=TITLES, rows=((0, 0, "positive"),)):
    """A Dataset with the given titles and (user_id, item_id, feedback) interaction rows."""
    n = len(titles)
    items = pd.DataFrame({"item_id": np.arange(n, dtype=np.int64), "raw_id": [f"i{i}" for i in range(n)],
                          "title": titles, "category": ["c"] * n})
    users, item_ids, feedback = zip(*rows)
    m = len(rows)
    inter = pd.DataFrame({"user_id": np.array(users, np.int64), "item_id": np.array(item_ids, np.int64),
                          "timestamp": np.arange(m, dtype=np.int64), "day": np.zeros(m, np.int64),
                          "feedback": list(feedback), "raw_label": ["test"] * m})
    return Dataset("toy", inter, items, licence="test", citation="test")


def cosine(a, b):
    return float(a @ b)  # rows are unit length


def test_tfidf_gives_unit_float32_rows_where_shared_words_mean_closer():
    x = emb.embed_items(make_dataset(), EmbedConfig(encoder="tfidf", dim=4))
    assert x.shape == (6, 4) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert cosine(x[0], x[1]) > cosine(x[0], x[2])  # boots vs boots > boots vs earphones


def test_collaborative_puts_co_disliked_items_together():
    rows = [(u, i, "negative") for u in (0, 1, 2) for i in (0, 1)]  # items 0, 1 disliked by users 0-2
    rows += [(u, i, "positive") for u in (3, 4, 5) for i in (2, 3)]  # items 2, 3 liked by users 3-5
    rows += [(6, 4, "positive"), (6, 5, "positive"), (7, 4, "negative"), (7, 5, "negative")]
    ds = make_dataset(rows=rows)
    x = emb.embed_items(ds, EmbedConfig(encoder="collaborative", dim=3), interactions=ds.interactions)
    assert x.shape == (6, 3) and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert cosine(x[0], x[1]) > 0.99 and cosine(x[2], x[3]) > 0.99
    assert abs(cosine(x[0], x[2])) < 0.1


def test_collaborative_warns_about_items_without_feedback():
    rows = [(0, 0, "positive"), (1, 1, "negative"), (1, 2, "positive"), (2, 3, "positive")]
    ds = make_dataset(rows=rows)
    with pytest.warns(UserWarning, match=r"2 items have no weighted feedback and \d+ more"):  # sklearn-version dependent
        x = emb.embed_items(ds, EmbedConfig(encoder="collaborative", dim=2), interactions=ds.interactions)
    assert np.isfinite(x).all() and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_cache_hit_returns_the_identical_array_without_encoding(tmp_path, monkeypatch):
    cfg = EmbedConfig(encoder="tfidf", dim=4)
    first = emb.embed_items(make_dataset(), cfg, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("tfidf_*.npy"))) == 1

    def fail(*args):
        raise AssertionError("the encoder ran despite a cached result")

    monkeypatch.setattr(emb, "_encode", fail)
    second = emb.embed_items(make_dataset(), cfg, cache_dir=tmp_path)
    assert np.array_equal(first, second) and second.dtype == np.float32


def test_cache_key_follows_the_inputs():
    ds, cfg = make_dataset(), EmbedConfig(encoder="tfidf", dim=4)
    key = emb.cache_key(ds, cfg)
    assert emb.cache_key(make_dataset(), EmbedConfig(encoder="tfidf", dim=4)) == key
    assert emb.cache_key(make_dataset(TITLES[:-1] + ["wool socks"]), cfg) != key
    assert emb.cache_key(ds, EmbedConfig(encoder="tfidf", dim=5)) != key
    assert emb.cache_key(ds, EmbedConfig(encoder="tfidf", dim=4, seed=1)) != key
    assert emb.cache_key(ds, EmbedConfig(encoder="minilm", dim=4)) != key
    # MiniLM ignores dim and seed, so they do not split its cache
    assert emb.cache_key(ds, EmbedConfig(dim=4)) == emb.cache_key(ds, EmbedConfig(dim=8, seed=3))


def test_collaborative_learns_from_the_interactions_given_and_keys_its_cache_on_them():
    rows = [(0, 0, "negative"), (0, 1, "negative"), (1, 2, "positive"), (1, 3, "positive"), (2, 4, "positive"),
            (2, 5, "positive"), (3, 0, "negative")]
    ds, cfg = make_dataset(rows=rows), EmbedConfig(encoder="collaborative", dim=3)
    first = ds.interactions.iloc[:6]  # the last row (user 3 dislikes item 0) left out, as a test row would be
    x = emb.embed_items(ds, cfg, interactions=first)
    other = make_dataset(rows=rows[:6] + [(3, 2, "positive")])  # another last row: the same embeddings
    assert np.array_equal(x, emb.embed_items(other, cfg, interactions=other.interactions.iloc[:6]))
    assert not np.allclose(x, emb.embed_items(ds, cfg, interactions=ds.interactions))
    assert emb.cache_key(ds, cfg, first) != emb.cache_key(ds, cfg, ds.interactions)
    assert emb.cache_key(ds, cfg, first) == emb.cache_key(ds, cfg, ds.interactions.iloc[:6].copy())


@pytest.mark.parametrize("interactions, words", [
    (None, "needs `interactions`.*training_interactions"),
    (pd.DataFrame({"user_id": [0], "item_id": [0]}), r"lack column\(s\) \['feedback'\]"),
    (pd.DataFrame({"user_id": [0], "item_id": [9], "feedback": ["negative"]}), r"item_id has ids outside 0..5"),
])
def test_collaborative_without_valid_interactions_says_what_to_pass(interactions, words):
    with pytest.raises(ValueError, match=words):
        emb.embed_items(make_dataset(), EmbedConfig(encoder="collaborative", dim=2), interactions=interactions)


def test_dim_too_large_for_the_data_says_what_to_use():
    with pytest.raises(ValueError, match="dim=64 is too large .* use dim <= 5"):
        emb.embed_items(make_dataset(), EmbedConfig(encoder="tfidf", dim=64))


def test_missing_text_column_is_named():
    with pytest.raises(ValueError, match="lacks text column.*'description'"):
        emb.embed_items(make_dataset(), EmbedConfig(encoder="tfidf", dim=4, text_columns=("description",)))


@pytest.mark.parametrize("kwargs, words", [
    ({"feedback_weights": {"click": 1.0}}, "unknown feedback"),
    ({"feedback_weights": {"positive": 0.0}}, "at least one must be > 0"),
    ({"dim": 1}, "dim=1"),
    ({"encoder": ""}, "empty"),
])
def test_bad_config_values_are_named(kwargs, words):
    with pytest.raises(ValueError, match=words):
        EmbedConfig(**kwargs)


def test_minilm_embeds_offline_and_an_unknown_model_gives_a_clear_error():
    titles = ["wireless in-ear earphones", "bluetooth earbuds", "leather hiking boots"]
    x = emb.embed_items(make_dataset(titles), EmbedConfig(encoder="minilm"))
    assert x.shape == (3, 384) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert cosine(x[0], x[1]) > cosine(x[0], x[2])
    with pytest.raises(FileNotFoundError, match="could not be found offline"):
        emb.embed_items(make_dataset(titles), EmbedConfig(encoder="no-such-org/no-such-model"))


def test_per_column_gives_each_column_its_own_block_of_the_vector(tmp_path):
    ds = make_dataset(["red leather boots", "red leather boots", "blue cotton dress"])
    ds.items["colour"] = ["red", "blue", "blue"]
    cfg = EmbedConfig(encoder="minilm", text_columns=("title", "colour"), per_column=True)
    x = emb.embed_items(ds, cfg, cache_dir=tmp_path)
    assert x.shape == (3, 2 * 384) and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    title, colour = x[:, :384] * np.sqrt(2), x[:, 384:] * np.sqrt(2)  # each block a unit vector of one column
    whole = emb.embed_items(ds, EmbedConfig(encoder="minilm", text_columns=("title",)))
    assert np.allclose(title, whole, atol=1e-5)
    assert np.allclose(colour[1], colour[2]) and not np.allclose(colour[0], colour[1])
    assert emb.cache_key(ds, cfg) != emb.cache_key(ds, EmbedConfig(encoder="minilm", text_columns=("title", "colour")))
    with pytest.raises(ValueError, match="per_column=True needs a sentence encoder"):
        EmbedConfig(encoder="tfidf", per_column=True)
