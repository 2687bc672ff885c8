"""SID <-> title translation: exact templates, both directions, round trip, and exact-match accuracy."""
import re

import numpy as np
import pandas as pd
import pytest

from conrec_lib import hardware
from conrec_lib.data import dataset as data, dataprep
from conrec_lib.llm import decoding, model, sft, tasks
from conrec_lib.context import translation
from conrec_lib.sids.semantic_ids import SIDTable


@pytest.fixture(autouse=True)
def one_cpu_thread():
    """Small matrices: one torch thread is far faster than two on a shared CPU (hardware.cpu_threads)."""
    with hardware.cpu_threads(1):
        yield


def hand_table(n_items: int = 8) -> SIDTable:
    return SIDTable(np.array([[i // 4, i % 4, 0] for i in range(n_items)]), codebook_size=4, levels=2)


@pytest.fixture(scope="module")
def hand():
    """Eight items titled "item number i"; translation needs no interactions beyond a valid table."""
    items = pd.DataFrame({"item_id": np.arange(8), "raw_id": [str(i) for i in range(8)],
                          "title": [f"item number {i}" for i in range(8)], "category": ["c"] * 8})
    inter = pd.DataFrame({"user_id": [0], "item_id": [0], "timestamp": [0], "day": [0], "feedback": ["positive"],
                          "raw_label": ["click"]})
    return dataprep.PreparedData(data.Dataset("hand", inter, items, "none", "none"), None, {}), hand_table()


def test_templates_by_hand(hand):
    prepared, table = hand
    to_title, to_sid = translation.translation_examples(prepared, table, item_ids=[6])
    assert to_title.prompt == "What is the title of the item <a_1><b_2><c_0>? Answer with the title.\n"
    assert to_title.completion == "item number 6"
    assert to_sid.prompt == 'Which item has the title "item number 6"? Answer with one item ID.\n'
    assert to_sid.completion == "<a_1><b_2><c_0>"
    assert (to_sid.user_id, to_sid.cutoff_ts, to_sid.row, to_sid.target_item) == (-1, -1, -1, 6)


def test_both_directions_cover_the_catalogue_and_round_trip(hand):
    prepared, table = hand
    examples = translation.translation_examples(prepared, table)
    assert len(examples) == 2 * 8
    by_direction = {d: [e for e in examples if translation.direction_of(e) == d] for d in translation.DIRECTIONS}
    assert [e.target_item for e in by_direction["sid_to_title"]] == list(range(8))
    assert [e.target_item for e in by_direction["title_to_sid"]] == list(range(8))
    title_of_sid = {re.search(r"<a_.*?>(?=\?)", e.prompt).group(): e.completion for e in by_direction["sid_to_title"]}
    sid_of_title = {re.search(r'"(.*)"', e.prompt).group(1): e.completion for e in by_direction["title_to_sid"]}
    for item, sid in enumerate(table.strings):
        assert sid_of_title[title_of_sid[sid]] == sid  # SID -> title -> SID
        assert title_of_sid[sid] == prepared.dataset.items["title"].iloc[item]


def test_titles_are_cleaned_and_bad_inputs_are_errors(hand):
    prepared, table = hand
    e = translation.translation_example(3, " red\n  shoes ", "<a_0><b_3><c_0>", "title_to_sid")
    assert '"red shoes"' in e.prompt and "\n" not in e.prompt[:-1]
    with pytest.raises(ValueError, match="direction"):
        translation.translation_examples(prepared, table, directions=["sideways"])
    with pytest.raises(ValueError, match="SID table has 4 items"):
        translation.translation_examples(prepared, hand_table(4))
    with pytest.raises(ValueError, match="not a translation example"):
        translation.direction_of(tasks.Example(0, 0, "Which item will the user...", "<a_1>", 1, 0))


def test_accuracy_is_exact_match_and_greedy_batches_agree(hand):
    prepared, table = hand
    examples = translation.translation_examples(prepared, table, item_ids=[0, 5, 6])
    corpus = [e.prompt + e.completion for e in examples]
    bundle = model.load_model(model.ModelConfig(device="cpu", lora=False, sid_init="mean"), table.vocabulary(), corpus)
    cfg = sft.SFTConfig(max_steps=300, batch_size=6, warmup_steps=2, lr=1e-2, log_every=50)
    sft.train(bundle, tasks.pairs(examples), cfg, progress=False)
    acc = translation.translation_accuracy(bundle, examples, table, batch_size=4)
    assert (acc.n_title_to_sid, acc.n_sid_to_title) == (3, 3)
    # exact match of the constrained greedy SID, computed here independently (how far 300 steps get differs by
    # machine: 3/3 on one, 2/3 on another, so the test checks the rule, not the training)
    to_sid = [e for e in examples if translation.direction_of(e) == "title_to_sid"]
    trie = decoding.SIDTrie.from_sids(bundle.tokenizer, table.strings)
    top = decoding.beam_search(bundle.model, bundle.tokenizer, [e.prompt for e in to_sid], trie, num_beams=1, top_k=1)
    assert acc.title_to_sid == pytest.approx(sum(t[0].sid == e.completion for t, e in zip(top, to_sid)) / 3)
    assert acc.title_to_sid >= 2 / 3  # and training did work
    to_title = [e for e in examples if translation.direction_of(e) == "sid_to_title"]
    one = translation.greedy_generate(bundle, [e.prompt for e in to_title], 12, batch_size=1)
    assert one == translation.greedy_generate(bundle, [e.prompt for e in to_title], 12, batch_size=3)
    expected = sum(translation.clean_title(t) == e.completion for t, e in zip(one, to_title)) / 3
    assert acc.sid_to_title == pytest.approx(expected) and acc.overall == pytest.approx((acc.title_to_sid + expected) / 2)
