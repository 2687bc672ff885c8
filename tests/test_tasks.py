"""Task builders on the tiny simulator: no data from after the cutoff, the positive switch, deterministic subsets."""
import re

import numpy as np
import pytest

from conrec_lib.data import histories
from conrec_lib.llm import prompts, tasks
from conrec_lib.llm.prompts import PromptConfig

SID = re.compile(r"<a_\d+><b_\d+><c_\d+><d_\d+>")


@pytest.fixture
def prepared_and_table(tiny_prepared):
    prepared, tokenized = tiny_prepared
    return prepared, tokenized.sids.table


def prompt_items(prompt: str, table) -> list[int]:
    return [table.item_of(s) for s in SID.findall(prompt)]


def rows_of(prepared, user: int, feedback: str, lo: int, hi: int) -> set[int]:
    inter = prepared.dataset.interactions
    keep = (inter["user_id"] == user) & (inter["feedback"] == feedback) & (inter["timestamp"] >= lo) & (
        inter["timestamp"] < hi)
    return set(inter.loc[keep, "item_id"])


@pytest.mark.parametrize("builder", [tasks.next_negative_examples, tasks.next_positive_examples])
def test_training_examples_use_nothing_from_after_the_cutoff(prepared_and_table, builder):
    prepared, table = prepared_and_table
    test_cutoff = int(prepared.split.test["cutoff_ts"].min())
    examples = builder(prepared, table, PromptConfig(include_positives=True), "train")
    assert len(examples) > 20
    feedback = "negative" if builder is tasks.next_negative_examples else "positive"
    for e in examples:
        row = prepared.split.train.iloc[e.row]
        assert (row["user_id"], row["cutoff_ts"]) == (e.user_id, e.cutoff_ts)
        assert e.cutoff_ts < test_cutoff and row["window_end_ts"] <= test_cutoff
        assert e.target_item in rows_of(prepared, e.user_id, feedback, e.cutoff_ts, row["window_end_ts"])
        assert e.completion == table.sid_of(e.target_item)
        before = rows_of(prepared, e.user_id, "negative", 0, e.cutoff_ts) | rows_of(
            prepared, e.user_id, "positive", 0, e.cutoff_ts)
        assert set(prompt_items(e.prompt, table)) <= before


def test_next_positive_target_is_the_first_positive_of_the_window(prepared_and_table):
    prepared, table = prepared_and_table
    inter = prepared.dataset.interactions
    for e in tasks.next_positive_examples(prepared, table, PromptConfig(include_positives=True), "train")[:15]:
        end = prepared.split.train.iloc[e.row]["window_end_ts"]
        window = inter[(inter["user_id"] == e.user_id) & (inter["feedback"] == "positive")
                       & (inter["timestamp"] >= e.cutoff_ts) & (inter["timestamp"] < end)]
        assert e.target_item == window.sort_values("timestamp", kind="stable")["item_id"].iloc[0]
        assert e.prompt.endswith(prompts.POSITIVE_INSTRUCTION + "\n")


def test_prompts_without_positives_show_only_past_negatives(prepared_and_table):
    prepared, table = prepared_and_table
    for split in ("train", "test"):
        for e in tasks.next_negative_examples(prepared, table, PromptConfig(include_positives=False), split):
            assert prompts.POSITIVE_HEADER not in e.prompt
            assert set(prompt_items(e.prompt, table)) <= rows_of(prepared, e.user_id, "negative", 0, e.cutoff_ts)
            assert e.prompt.endswith(prompts.INSTRUCTION + "\n")


def test_with_positives_the_positive_section_holds_the_last_positives(prepared_and_table):
    prepared, table = prepared_and_table
    cfg = PromptConfig(include_positives=True, max_positives=3)
    e = next(e for e in tasks.next_negative_examples(prepared, table, cfg, "test")
             if prepared.split.test.iloc[e.row]["n_hist_pos"] > 3)
    inter = prepared.dataset.interactions
    liked = inter[(inter["user_id"] == e.user_id) & (inter["feedback"] == "positive")
                  & (inter["timestamp"] < e.cutoff_ts)].sort_values("timestamp", kind="stable")
    section = e.prompt.split(prompts.NEGATIVE_HEADER)[0]
    assert prompt_items(section, table) == liked["item_id"].tolist()[-3:]


def test_subsampling_is_deterministic_and_shared_between_prompt_variants(prepared_and_table):
    prepared, table = prepared_and_table
    a = tasks.next_negative_examples(prepared, table, PromptConfig(), "train", max_examples=10, seed=3)
    b = tasks.next_negative_examples(prepared, table, PromptConfig(include_positives=True), "train",
                                     max_examples=10, seed=3)
    c = tasks.next_negative_examples(prepared, table, PromptConfig(), "train", max_examples=10, seed=4)
    assert len(a) == 10 and [e.row for e in a] == [e.row for e in b]
    assert [e.row for e in a] == sorted(e.row for e in a)
    assert [e.row for e in a] != [e.row for e in c]
    assert [e.target_item for e in a] == [e.target_item for e in b]


def test_test_examples_use_the_test_cutoff_and_rows_round_trip(prepared_and_table):
    prepared, table = prepared_and_table
    examples = tasks.next_negative_examples(prepared, table, PromptConfig(), "test", max_examples=5)
    rows = tasks.example_rows(prepared, examples, "test")
    assert rows["user_id"].tolist() == [e.user_id for e in examples]
    assert rows["next_negative"].tolist() == [e.target_item for e in examples]
    assert set(rows["cutoff_ts"]) == {int(prepared.split.test["cutoff_ts"].min())}
    assert tasks.pairs(examples)[0] == (examples[0].prompt, examples[0].completion)


def test_bad_arguments_say_what_to_use(prepared_and_table):
    prepared, table = prepared_and_table
    with pytest.raises(ValueError, match="'train' or 'test'"):
        tasks.next_negative_examples(prepared, table, PromptConfig(), "valid")
    with pytest.raises(ValueError, match="max_examples=0"):
        tasks.next_negative_examples(prepared, table, PromptConfig(), "train", max_examples=0)
    assert np.array_equal(histories.sample_positions(3, 10, 0), [0, 1, 2])
