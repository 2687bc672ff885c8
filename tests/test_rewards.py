"""Rewards on hand-made items, and GRPO training rows built from the training period only."""
import numpy as np
import pytest

from conrec_lib.data import dataprep, loaders, splits
from conrec_lib.baselines import heuristics
from conrec_lib.rl import rewards
from conrec_lib.llm import tasks
from conrec_lib.llm.prompts import PromptConfig
from conrec_lib.sids.semantic_ids import SIDTable

# three items: SIDs <a_0><b_0><c_0><d_0>, <a_0><b_1><c_0><d_0>, <a_1><b_1><c_1><d_0>
TABLE = SIDTable(np.array([[0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 1, 0]]), codebook_size=2, levels=3)
# unit vectors: cos(0, 1) = 0.8, cos(0, 2) = 0, cos(1, 2) = 0.6
SPACE = rewards.RewardSpace(TABLE, np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]))
SID = TABLE.strings
COLUMNS = {"ground_truth": [[0], [0], [1]], "future_positives": [[2], [], [2]], "next_negative": [0, 1, 1]}


def scores(name, **kw):
    return rewards.make_reward(name, SPACE, **kw)(prompts=[""] * 3, completions=SID, **COLUMNS)


def test_paper_reward_is_max_cosine_to_gts_minus_gamma_max_cosine_to_positives():
    # item 0 vs GTS {0}: 1 - 0.5 * cos(0, 2) = 1; item 1 vs {0}: 0.8 (no positives); item 2 vs {1}: 0.6 - 0.5 * 1
    assert scores("conrec", gamma=0.5) == pytest.approx([1.0, 0.8, 0.1])
    assert scores("negatives_only") == pytest.approx([1.0, 0.8, 0.6])


def test_truncated_variants_zero_similarities_at_or_below_the_threshold():
    assert scores("truncated", threshold=0.6) == pytest.approx([1.0, 0.8, 0.0])
    assert scores("double_truncated", gamma=0.5, threshold=0.6) == pytest.approx([1.0, 0.8, -0.5])
    assert scores("double_truncated", gamma=0.5, threshold=0.5) == pytest.approx([1.0, 0.8, 0.1])


def test_hit_reward_pays_by_matched_sid_levels_and_next_negative_hit_by_identity():
    assert scores("hit") == pytest.approx([1.0, 0.01, 0.0])  # 3 levels; 1 level (<a_0>); none (<a_1> vs <a_0>)
    assert rewards.HitReward(SPACE)(completions=[SID[1]], ground_truth=[[0, 1]]) == [1.0]
    assert rewards.HitReward(SPACE)(completions=[SID[0]], ground_truth=[[2, 1]]) == [0.01]  # best: item 1, 1 level
    table = SIDTable(np.array([[0, 0, 0, 0], [0, 0, 1, 0]]), codebook_size=2, levels=3)
    two_levels = rewards.HitReward(rewards.RewardSpace(table, np.eye(2)))
    assert two_levels(completions=[table.sid_of(0)], ground_truth=[[1]]) == [0.1]  # <a_0><b_0> shared
    assert scores("next_negative_hit") == [1.0, 1.0, 0.0]


def test_rewards_are_called_by_keyword_as_trl_calls_them():
    # TRL passes prompts=, completions=, completion_ids=, trainer_state=, log_extra=, log_metric= and the columns
    extra = {"completion_ids": [[1, 2, 3]] * 3, "trainer_state": None, "log_extra": None, "log_metric": None}
    for name in rewards.VARIANTS:
        assert rewards.make_reward(name, SPACE)(prompts=[""] * 3, completions=SID, **COLUMNS, **extra) == scores(name)
    assert rewards.make_reward("hit", SPACE)(completions=SID, **COLUMNS) == scores("hit")  # prompts not needed
    with pytest.raises(TypeError):  # positional calls are refused: TRL never makes them
        rewards.make_reward("conrec", SPACE)([""] * 3, SID, **COLUMNS)


def test_rewards_carry_their_names_and_bad_names_are_refused():
    assert [rewards.make_reward(n, SPACE).__name__ for n in rewards.VARIANTS] == list(rewards.VARIANTS)
    with pytest.raises(ValueError, match="unknown reward"):
        rewards.make_reward("ndcg", SPACE)
    with pytest.raises(ValueError, match="gamma"):
        rewards.make_reward("conrec", SPACE, gamma=-1)


def test_training_rows_use_only_the_training_period_and_extend_the_gts():
    ds = loaders.load("simulated", seed=0, scale="tiny")
    prepared = dataprep.PreparedData(ds, splits.make_split(ds), {})
    table = SIDTable(np.array([[i // 40, i % 40, 0, 0] for i in range(ds.n_items)]), codebook_size=40, levels=3)
    scores_ = rewards.train_swing(prepared)
    rows = rewards.grpo_examples(prepared, table, PromptConfig(include_positives=True), scores_, 5, 30, seed=0)
    cutoff = int(prepared.split.test["cutoff_ts"].min())
    inter = ds.interactions
    assert len(rows) == 30 and set(rows[0]) == {"prompt", *rewards.COLUMNS}
    examples = tasks.next_negative_examples(prepared, table, PromptConfig(include_positives=True), "train", 30, 0)
    for r, e, (_, row) in zip(rows, examples, tasks.example_rows(prepared, examples, "train").iterrows()):
        assert r["prompt"] == e.prompt and r["next_negative"] == row["next_negative"]
        assert set(row["future_negatives"]) | {r["next_negative"]} <= set(r["ground_truth"])
        assert r["future_positives"] == list(row["future_positives"])
        seen = inter[(inter["user_id"] == e.user_id) & inter["item_id"].isin(row["future_negatives"])
                     & (inter["feedback"] == "negative") & (inter["timestamp"] >= e.cutoff_ts)]
        assert (seen["timestamp"].min() < cutoff) and (row["window_end_ts"] <= cutoff)  # never the test window
    late = inter[(inter["timestamp"] >= cutoff) & (inter["feedback"] == "negative")]
    assert heuristics.training_negatives(prepared)["item_id"].size == (inter["feedback"] == "negative").sum() - len(late)
    no_swing = rewards.grpo_examples(prepared, table, PromptConfig(), scores_, 0, 30, seed=0)
    assert all(set(a["ground_truth"]) <= set(b["ground_truth"]) for a, b in zip(no_swing, rows))
    train = prepared.split.train
    assert (train["window_end_ts"] <= cutoff).all()  # the split truncates training windows at the test cutoff
