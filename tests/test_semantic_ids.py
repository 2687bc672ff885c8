"""Semantic IDs: render/parse, de-duplication, the SID table, the quality report, build, save/load."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conrec_lib.sids import quantizer as quant
from conrec_lib.sids import semantic_ids as sids
from conrec_lib.sids.semantic_ids import SIDConfig, SIDTable

SMALL_VAE = dict(hidden_dims=(128,), latent_dim=32, lr=3e-3, warmup_epochs=5, epochs=10, batch_size=32)


def hierarchical(n=120, d=16, k=8, levels=3, seed=0):
    """Embeddings = one vector per level summed (scale halves per level) + noise; distinct true codes."""
    rng = np.random.default_rng(seed)
    books = [rng.standard_normal((k, d)) * 0.5 ** level for level in range(levels)]
    true = rng.choice(k ** levels, size=n, replace=False)
    digits = np.stack([(true // k ** (levels - 1 - level)) % k for level in range(levels)], axis=1)
    x = sum(book[digits[:, level]] for level, book in enumerate(books)) + 0.02 * rng.standard_normal((n, d))
    return x.astype(np.float32), digits[:, 0]


# --- render / parse ---------------------------------------------------------------------------

def test_render_and_parse_by_hand():
    assert sids.render((5, 2, 9, 0)) == "<a_5><b_2><c_9><d_0>"
    assert sids.parse("<a_5><b_2><c_9><d_0>") == (5, 2, 9, 0)
    assert sids.parse("<a_12>") == (12,)


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=8))
def test_render_parse_round_trip(codes):
    assert sids.parse(sids.render(codes)) == tuple(codes)


@pytest.mark.parametrize("bad, token", [
    ("<a_1><c_2>", "<c_2>"),  # skips level b
    ("<b_1>", "<b_1>"),  # does not start at level a
    ("<a_01>", "<a_01>"),  # leading zero: render never writes it
    ("<a_-1>", "<a_-1>"),
    ("<a_1>junk", "junk"),
    ("<A_1>", "<A_1>"),
    ("<a_1", "<"),
])
def test_parse_names_the_bad_token(bad, token):
    with pytest.raises(ValueError, match=f"bad SID token '{token}'"):
        sids.parse(bad)


def test_parse_rejects_empty_input():
    with pytest.raises(ValueError, match="not a SID"):
        sids.parse("")


# --- de-duplication and the table ---------------------------------------------------------------

def test_deduplicate_numbers_each_collision_group_in_item_order():
    codes = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 1]])
    assert sids.deduplicate(codes)[:, -1].tolist() == [0, 0, 1, 2, 0]


def test_every_sid_is_unique_after_dedup_even_when_all_items_collide():
    table = SIDTable(sids.deduplicate(np.zeros((5, 3), np.int64)), codebook_size=4, levels=3)
    assert len(set(table.strings)) == 5
    assert table.strings[4] == "<a_0><b_0><c_0><d_4>"


def test_table_maps_items_to_sids_and_back():
    table = SIDTable(sids.deduplicate(np.array([[1, 2], [0, 0], [1, 2]])), codebook_size=3, levels=2)
    assert table.strings == ["<a_1><b_2><c_0>", "<a_0><b_0><c_0>", "<a_1><b_2><c_1>"]
    assert [table.item_of(s) for s in table.strings] == [0, 1, 2]
    assert table.item_of((1, 2, 1)) == 2 and table.sid_of(1) == "<a_0><b_0><c_0>"
    with pytest.raises(KeyError, match="<a_2><b_2><c_0>"):
        table.item_of("<a_2><b_2><c_0>")
    with pytest.raises(ValueError, match="has 2 tokens; a full SID has 3"):
        table.item_of("<a_1><b_2>")
    with pytest.raises(KeyError, match="item_id 3"):
        table.sid_of(3)


def test_vocabulary_lists_every_token_once():
    table = SIDTable(sids.deduplicate(np.array([[1, 2], [0, 0], [1, 2]])), codebook_size=3, levels=2)
    assert table.vocabulary() == ["<a_0>", "<a_1>", "<a_2>", "<b_0>", "<b_1>", "<b_2>", "<c_0>", "<c_1>"]


def test_to_frame_has_item_codes_and_sid():
    table = SIDTable(sids.deduplicate(np.array([[1, 2], [0, 0]])), codebook_size=3, levels=2)
    frame = table.to_frame()
    assert list(frame.columns) == ["item_id", "code_a", "code_b", "code_c", "sid"]
    assert frame["sid"].tolist() == table.strings


def test_table_rejects_duplicates_and_codes_outside_the_codebook():
    with pytest.raises(ValueError, match="duplicate"):
        SIDTable(np.array([[1, 0], [1, 0]]), codebook_size=2, levels=1)
    with pytest.raises(ValueError, match="0..1"):
        SIDTable(np.array([[2, 0]]), codebook_size=2, levels=1)


# --- quality report ------------------------------------------------------------------------------

def test_quality_report_by_hand():
    rq = quant.RQKMeans(np.array([[[0.0, 0.0], [1.0, 1.0]]]))  # one level, codewords (0,0) and (1,1)
    x = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]], np.float32)
    table = SIDTable(sids.deduplicate(rq.encode(x)), codebook_size=2, levels=1)
    report = sids.quality_report(table, rq, x, categories=["toy", "shoe", "shoe"])
    assert report["collision_rate_before_dedup"] == pytest.approx(2 / 3)
    assert report["collision_rate"] == 0.0 and report["max_collision_group"] == 2
    assert report["codebook_utilization"] == [1.0]
    assert report["perplexity"][0] == pytest.approx(np.exp(-(1 / 3 * np.log(1 / 3) + 2 / 3 * np.log(2 / 3))))
    assert report["reconstruction_mse"] == 0.0
    assert report["prefix_category_purity"] == 1.0


def test_prefix_purity_weights_groups_by_size():
    out = sids.prefix_purity(np.array([0, 0, 0, 0, 1, 1]), ["x", "x", "x", "y", "x", "y"])
    assert out["prefix_category_purity"] == pytest.approx((3 + 1) / 6)


# --- build -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rqkmeans", "rqvae"])
def test_build_gives_unique_sids_and_a_complete_report(kind):
    x, category = hierarchical()
    result = sids.build(x, SIDConfig(quantizer=kind, codebook_size=8, **SMALL_VAE), categories=category)
    report = result.report
    assert len(set(result.table.strings)) == len(x)
    assert report["collision_rate"] == 0.0
    assert 0.0 <= report["collision_rate_before_dedup"] <= 1.0
    assert len(report["codebook_utilization"]) == 3 and len(report["perplexity"]) == 3
    assert np.isfinite(report["reconstruction_mse"])
    assert report["prefix_category_purity"] > report["prefix_category_purity_shuffled"]


def test_build_is_deterministic_for_a_seed():
    x, _ = hierarchical()
    cfg = SIDConfig(codebook_size=8, **SMALL_VAE)
    assert sids.build(x, cfg).table.strings == sids.build(x, cfg).table.strings


def test_build_rejects_a_codebook_larger_than_the_catalogue():
    x, _ = hierarchical(n=20)
    with pytest.raises(ValueError, match=r"codebook_size=32 .*\(20\)"):
        sids.build(x, SIDConfig(codebook_size=32))


def test_embed_turns_any_valid_sid_into_the_reconstruction():
    x, _ = hierarchical()
    result = sids.build(x, SIDConfig(quantizer="rqkmeans", codebook_size=8))
    first = result.table.strings[:3]
    expected = result.quantizer.reconstruct(result.table.quantized_codes[:3])
    assert np.array_equal(result.embed(first), expected)
    assert result.embed(["<a_7><b_7><c_7>"]).shape == (1, 16)  # no item needs to have it
    with pytest.raises(ValueError, match="0..7"):
        result.embed(["<a_8><b_0><c_0>"])
    with pytest.raises(ValueError, match="fewer than 3"):
        result.embed(["<a_1><b_0>"])


# --- save / load -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rqkmeans", "rqvae"])
def test_save_load_gives_back_the_same_table_and_quantizer(kind, tmp_path):
    x, _ = hierarchical()
    result = sids.build(x, SIDConfig(quantizer=kind, codebook_size=8, **SMALL_VAE))
    sids.save(result, tmp_path / "sids")
    again = sids.load(tmp_path / "sids")
    assert np.array_equal(again.table.codes, result.table.codes)
    assert again.table.strings == result.table.strings
    assert again.config == result.config
    assert again.report == result.report
    pd.testing.assert_frame_equal(again.history, result.history)
    codes = result.table.quantized_codes
    assert np.array_equal(again.quantizer.reconstruct(codes), result.quantizer.reconstruct(codes))
    assert np.array_equal(again.quantizer.encode(x), result.quantizer.encode(x))
    assert not list((tmp_path / "sids").glob("*.tmp"))


def test_load_of_an_unfinished_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="sid_meta.json"):
        sids.load(tmp_path)


def test_for_dataset_embeds_attribute_columns_on_their_own_where_the_catalogue_has_them():
    from conrec_lib.data import simulate
    from conrec_lib.sids import item_tokenizer
    ds = simulate.simulate(simulate.SimConfig(scale="tiny"))
    cfg = item_tokenizer.TokenizerConfig.for_dataset(ds)
    assert cfg.embed.per_column and cfg.embed.text_columns == ("category", *ds.attributes)
    assert not item_tokenizer.TokenizerConfig.for_dataset(ds, item_text="title").embed.per_column
    assert not item_tokenizer.TokenizerConfig.for_dataset(ds, "tfidf").embed.per_column  # not a sentence encoder
    with pytest.raises(ValueError, match="item_text='words'"):
        item_tokenizer.TokenizerConfig.for_dataset(ds, item_text="words")
