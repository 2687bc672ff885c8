"""Item-level alignment: hand-checked questions, no history in the prompt, seeded shuffles, scoring, forgetting."""
import re

import numpy as np
import pandas as pd
import pytest
import torch

from conrec_lib.data import histories
from conrec_lib import hardware
from conrec_lib.context import alignment
from conrec_lib.data import dataset as data, dataprep, loaders, splits
from conrec_lib.llm import decoding, model, sft, tasks
from conrec_lib.context.alignment import AlignmentConfig
from conrec_lib.sids.semantic_ids import SIDTable

DAY = data.SECONDS_PER_DAY
SID = re.compile(r"<a_\d+><b_\d+><c_\d+>")
# (user, day, item, feedback). Test cutoff: day 3.
ROWS = [
    (0, 0, 1, "positive"), (0, 0, 2, "positive"), (0, 0, 3, "positive"), (0, 0, 0, "negative"),
    (0, 1, 4, "positive"), (0, 1, 5, "negative"), (0, 1, 5, "positive"),  # 5 liked and disliked: never used
    (0, 3, 6, "negative"), (0, 3, 1, "positive"), (0, 3, 2, "positive"), (0, 3, 7, "positive"),
    (1, 0, 7, "negative"), (1, 0, 0, "positive"),  # one positive before the cutoff: too few distractors
    (1, 3, 2, "negative"), (1, 3, 3, "positive"), (1, 3, 4, "positive"), (1, 4, 5, "positive"),
    (2, 0, 3, "negative"), (2, 1, 3, "negative"), (2, 1, 4, "negative"),  # 3 disliked twice
    (2, 1, 0, "positive"), (2, 2, 1, "positive"), (2, 2, 2, "positive"), (2, 2, 6, "exposure"),
]


@pytest.fixture(autouse=True)
def one_cpu_thread():
    """Small matrices: one torch thread is far faster than two on a shared CPU (hardware.cpu_threads)."""
    with hardware.cpu_threads(1):
        yield


def hand_prepared() -> dataprep.PreparedData:
    inter = pd.DataFrame(ROWS, columns=["user_id", "day", "item_id", "feedback"])
    inter["timestamp"] = inter["day"] * DAY + np.arange(len(inter)) * 60
    inter["raw_label"] = inter["feedback"]
    items = pd.DataFrame({"item_id": np.arange(8), "raw_id": [str(i) for i in range(8)],
                          "title": [f"item number {i}" for i in range(8)], "category": ["c"] * 8})
    ds = data.Dataset("hand", inter[list(data.INTERACTION_COLUMNS)], items, "none", "none")
    cfg = splits.SplitConfig(test_cutoff_day=3, horizon_days=2, train_cutoff_days=(1, 2))
    return dataprep.PreparedData(ds, splits.make_split(ds, cfg), {})


def hand_table(n_items: int = 8) -> SIDTable:
    codes = np.array([[i // 4, i % 4, 0] for i in range(n_items)])
    return SIDTable(codes, codebook_size=max(4, n_items // 4 + 1), levels=2)


@pytest.fixture(scope="module")
def hand():
    return hand_prepared(), hand_table()


@pytest.fixture(scope="module")
def simulated():
    ds = loaders.load("simulated", seed=0, scale="tiny")
    prepared = dataprep.PreparedData(ds, splits.make_split(ds), {})
    return prepared, hand_table(ds.n_items)


def test_training_questions_follow_the_rules_by_hand(hand):
    prepared, table = hand
    examples = alignment.alignment_examples(prepared, table, period="train")
    # user 0: answer 0 (5 was also liked); distractors from {1, 2, 3, 4}; user 1: 1 positive; user 2: 3 and 4
    assert [(e.user_id, e.target_item) for e in examples] == [(0, 0), (2, 3), (2, 4)]
    assert set(examples[0].options) - {0} <= {1, 2, 3, 4} and len(set(examples[0].options)) == 4
    assert set(examples[1].options) == {3, 0, 1, 2}  # user 2's only three positives
    cutoff = int(prepared.split.test["cutoff_ts"].iloc[0])
    assert all(e.cutoff_ts == cutoff and e.row == -1 for e in examples)
    twice = alignment.alignment_examples(prepared, table, period="train", cfg=AlignmentConfig(min_dislikes=2))
    assert [(e.user_id, e.target_item) for e in twice] == [(2, 3)]


def test_evaluation_questions_use_only_the_test_period_and_the_given_users(hand):
    prepared, table = hand
    examples = alignment.alignment_examples(prepared, table, users=[0, 1], period="test")
    assert [(e.user_id, set(e.options)) for e in examples] == [(0, {6, 1, 2, 7}), (1, {2, 3, 4, 5})]
    assert [e.target_item for e in examples] == [6, 2]


def test_no_user_history_leaks_into_the_prompt(hand):
    prepared, table = hand
    for period in alignment.PERIODS:
        for e in alignment.alignment_examples(prepared, table, period=period):
            assert SID.findall(e.prompt) == [table.sid_of(i) for i in e.options]
            assert e.prompt == alignment.alignment_prompt([table.sid_of(i) for i in e.options])
            assert "item number" not in e.prompt  # no titles either


def test_answer_is_an_option_and_distractors_are_the_same_users_positives(simulated):
    prepared, table = simulated
    index, cutoffs = histories.FeedbackIndex.of(prepared), prepared.split.test_cutoffs()
    examples = alignment.alignment_examples(prepared, table, period="train")
    assert len(examples) > 50
    for e in examples:
        rows = index.span(e.user_id, None, int(cutoffs[e.user_id]))
        liked = set(rows.loc[rows["feedback"] == "positive", "item_id"])
        disliked = set(rows.loc[rows["feedback"] == "negative", "item_id"])
        assert e.target_item in e.options and e.completion == table.sid_of(e.target_item)
        assert e.target_item in disliked - liked
        distractors = set(e.options) - {e.target_item}
        assert len(distractors) == 3 and distractors <= liked and not distractors & disliked


def test_shuffles_are_deterministic_per_seed_and_differ_across_seeds(simulated):
    prepared, table = simulated
    users = range(20)
    first = alignment.alignment_examples(prepared, table, users, seed=0)
    assert first == alignment.alignment_examples(prepared, table, users, seed=0)
    other = alignment.alignment_examples(prepared, table, users, seed=1)
    assert [e.target_item for e in first] == [e.target_item for e in other]  # the same questions...
    assert [e.options for e in first] != [e.options for e in other]  # ...with other draws and orders
    positions = np.bincount([e.answer_index for e in alignment.alignment_examples(prepared, table)], minlength=4)
    assert positions.min() > 0.15 * positions.sum()  # the answer is not stuck in one position


def test_letter_answers_and_config_errors(hand):
    prepared, table = hand
    cfg = AlignmentConfig(answer="letter")
    e = alignment.alignment_examples(prepared, table, users=[0], period="test", cfg=cfg)[0]
    assert e.choices == ("A", "B", "C", "D") and e.completion == "ABCD"[e.options.index(6)]
    assert e.prompt.endswith("Answer with its letter.\n")
    with pytest.raises(ValueError, match="answer"):
        AlignmentConfig(answer="word")
    with pytest.raises(ValueError, match="n_distractors"):
        AlignmentConfig(n_distractors=0)
    with pytest.raises(ValueError, match="period"):
        alignment.alignment_examples(prepared, table, period="valid")


def test_split_users_is_a_deterministic_partition():
    split = alignment.split_users(50, 0.2, seed=3)
    assert len(split.eval) == 10 and not set(split.eval) & set(split.train)
    assert sorted([*split.train, *split.eval]) == list(range(50))
    assert np.array_equal(split.eval, alignment.split_users(50, 0.2, seed=3).eval)
    assert not np.array_equal(split.eval, alignment.split_users(50, 0.2, seed=4).eval)
    with pytest.raises(ValueError, match="eval_fraction"):
        alignment.split_users(50, 1.0)


def test_choice_accuracy_and_forgetting_rate_by_hand():
    scores = np.array([[0.0, -1.0, -2.0, -3.0], [-1.0, 0.0, -1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    assert alignment.choice_accuracy(scores, [0, 0, 3]) == pytest.approx((1 + 0 + 0.25) / 3)
    assert alignment.forgetting_rate(0.5, 0.25) == 0.5
    assert alignment.forgetting_rate(0.4, 0.5) == pytest.approx(-0.25)  # later training helped
    assert alignment.forgetting_rate(0.755, 0.518) == pytest.approx(0.3139, abs=1e-4)
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="acc_after_alignment"):
            alignment.forgetting_rate(bad, 0.3)


def test_option_scores_are_summed_token_logprobs_and_training_picks_the_answer(hand):
    prepared, table = hand
    examples = alignment.alignment_examples(prepared, table, period="train")
    corpus = [e.prompt for e in examples]
    bundle = model.load_model(model.ModelConfig(device="cpu", lora=False, sid_init="mean"), table.vocabulary(), corpus)
    scores = alignment.option_scores(bundle, examples, batch_size=2)
    assert scores.shape == (3, 4)
    e = examples[1]
    with torch.no_grad():
        lp = decoding.token_logprobs(bundle.model, bundle.tokenizer, [e.prompt] * 4, list(e.choices))
    assert np.allclose(scores[1], lp.logprobs.sum(1).numpy(), atol=1e-4)
    one = examples[:1]  # a single question: training must make its answer the best-scored option
    cfg = sft.SFTConfig(max_steps=15, batch_size=1, warmup_steps=2, lr=3e-3, log_every=15)
    sft.train(bundle, tasks.pairs(one), cfg, progress=False)
    assert alignment.alignment_accuracy(bundle, one) == 1.0


def test_dislike_rate_reference_by_hand(hand):
    prepared, table = hand
    rates = alignment.dislike_rates(prepared)  # (neg + 1) / (neg + pos + 2) before day 3
    assert rates.tolist() == pytest.approx([2 / 5, 1 / 4, 1 / 4, 3 / 5, 2 / 4, 2 / 4, 1 / 2, 2 / 3])
    examples = alignment.alignment_examples(prepared, table, period="test")
    assert alignment.dislike_rate_accuracy(prepared, examples) == 0.0  # 7 beats 6, 3 beats 2
    assert alignment.dislike_rate_accuracy(prepared, alignment.alignment_examples(prepared, table)) == 2 / 3
