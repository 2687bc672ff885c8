"""Training and test examples shared by notebooks 03-05: next-negative and next-positive item prediction.

An example is one row of the split (`splits.Split.train` or `.test`): a user at a cutoff. The prompt is
built from the user's history strictly before the cutoff (`prompts.render_history`), the completion is
one SID. Two tasks:

- next negative (the paper's LC-Rec style baseline, and the task of every later stage): the target is
  the split's `next_negative`, the first "not interested" at or after the cutoff;
- next positive (the standard generative-recommendation task that LC-Rec trains alongside the others):
  the target is the first positive (click / buy) in the example's window [cutoff_ts, window_end_ts).
  Training windows end at the test cutoff (splits.py), so a training target never comes from the test
  window. Only rows of the split count: a (user, cutoff) whose window holds positives but no negative
  has no row and so no next-positive example either.

Subsampling (`max_examples`) picks rows uniformly without replacement from `seed` and keeps them in
split order, so two calls with the same arguments (e.g. the negatives-only and the negatives +
positives prompt of one experiment) describe the same users at the same cutoffs.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Sequence

import numpy as np
import pandas as pd

from conrec_lib import prompts
from conrec_lib.dataprep import PreparedData
from conrec_lib.prompts import PromptConfig
from conrec_lib.semantic_ids import SIDTable

SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class Example:
    """One prompt / completion pair and where it comes from."""

    user_id: int
    cutoff_ts: int  # the prompt only shows interactions with timestamp < cutoff_ts
    prompt: str
    completion: str  # the target item's SID
    target_item: int
    row: int  # position (iloc) of the example's row in split.train / split.test


def pairs(examples: Sequence[Example]) -> list[tuple[str, str]]:
    """(prompt, completion) pairs, what `sft.train` takes.

    >>> pairs([Example(0, 10, "p", "<a_1>", 3, 0)])
    [('p', '<a_1>')]
    """
    return [(e.prompt, e.completion) for e in examples]


def sample_positions(n: int, max_examples: Optional[int], seed: int) -> np.ndarray:
    """Positions 0..n-1 to keep: all of them, or `max_examples` drawn with `seed`, in increasing order.

    >>> sample_positions(5, None, 0).tolist()
    [0, 1, 2, 3, 4]
    >>> len(sample_positions(100, 7, 0)), sample_positions(100, 7, 0).tolist() == sorted(sample_positions(100, 7, 0))
    (7, True)
    """
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples={max_examples}: use None (all examples) or a count >= 1")
    if max_examples is None or max_examples >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_examples, replace=False))


def split_rows(prepared: PreparedData, split: str) -> pd.DataFrame:
    """The example rows of `split` ("train" or "test") of notebook 01's split."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: use 'train' or 'test'")
    frame = getattr(prepared.split, split)
    if frame.empty:
        raise ValueError(f"the {split} split of {prepared.dataset.name!r} has no examples; see notebook 01 "
                         "(a split without earlier cutoff days has no training examples)")
    return frame


class FeedbackIndex(NamedTuple):
    """Every positive and negative interaction sorted by (user, time), with each user's first row.

    `Split.history` answers one look-up at a time through the whole interaction table; building the
    prompts of thousands of examples needs this faster slice (the rows are the same).
    """

    rows: pd.DataFrame  # user_id, item_id, timestamp, feedback; sorted by user, then time
    user_start: np.ndarray  # (n_users + 1,) first row of each user

    @classmethod
    def of(cls, prepared: PreparedData) -> "FeedbackIndex":
        inter = prepared.dataset.interactions
        rows = inter.loc[inter["feedback"] != "exposure", ["user_id", "item_id", "timestamp", "feedback"]]
        rows = rows.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
        starts = np.searchsorted(rows["user_id"].to_numpy(), np.arange(prepared.dataset.n_users + 1))
        return cls(rows, starts)

    def span(self, user_id: int, start_ts: Optional[int], end_ts: int) -> pd.DataFrame:
        """The user's rows with start_ts <= timestamp < end_ts (start_ts None: from the beginning)."""
        a, b = self.user_start[user_id], self.user_start[user_id + 1]
        ts = self.rows["timestamp"].to_numpy()[a:b]
        lo = 0 if start_ts is None else int(np.searchsorted(ts, start_ts, side="left"))
        return self.rows.iloc[a + lo:a + int(np.searchsorted(ts, end_ts, side="left"))]


def history_sequences(prepared: PreparedData, examples: pd.DataFrame, feedback: str = "negative"
                      ) -> list[list[int]]:
    """Per example row (user_id, cutoff_ts), the items the user gave `feedback` to before the cutoff, in time order."""
    index = FeedbackIndex.of(prepared)
    out = []
    for user, cutoff in zip(examples["user_id"], examples["cutoff_ts"]):
        rows = index.span(int(user), None, int(cutoff))
        out.append(rows.loc[rows["feedback"] == feedback, "item_id"].astype(int).tolist())
    return out


def history_items(prepared: PreparedData, examples: pd.DataFrame, feedback: str) -> list[set[int]]:
    """Per example row, the items the user gave `feedback` to before the cutoff (what every model excludes:
    the platform never shows a past negative again)."""
    return [set(seq) for seq in history_sequences(prepared, examples, feedback)]


def render_prompt(index: FeedbackIndex, prepared: PreparedData, table: SIDTable, prompt_cfg: PromptConfig,
                  user_id: int, cutoff_ts: int, tokenizer=None, instruction: str = prompts.INSTRUCTION) -> str:
    """The prompt of one user at one cutoff (history strictly before it), through `prompts`."""
    titles = prepared.dataset.items["title"]
    history = index.span(user_id, None, cutoff_ts)
    rendered = prompts.render_history(history, cutoff_ts, table.sid_of, titles.__getitem__, prompt_cfg)
    return prompts.build_prompt(rendered.negatives, rendered.positives, prompt_cfg, tokenizer, instruction)


def next_negative_examples(prepared: PreparedData, table: SIDTable, prompt_cfg: PromptConfig,
                           split: str = "train", max_examples: Optional[int] = None, seed: int = 0,
                           tokenizer=None) -> list[Example]:
    """Next-negative-item examples (target: the split's `next_negative`); `tokenizer` for chat templates."""
    frame = split_rows(prepared, split)
    index = FeedbackIndex.of(prepared)
    out = []
    for pos in sample_positions(len(frame), max_examples, seed):
        row = frame.iloc[int(pos)]
        user, cutoff, target = int(row["user_id"]), int(row["cutoff_ts"]), int(row["next_negative"])
        prompt = render_prompt(index, prepared, table, prompt_cfg, user, cutoff, tokenizer)
        out.append(Example(user, cutoff, prompt, prompts.completion(table.sid_of(target)), target, int(pos)))
    return out


def future_negative_examples(prepared: PreparedData, table: SIDTable, prompt_cfg: PromptConfig,
                             split: str = "train", max_targets: int = 5, max_examples: Optional[int] = None,
                             seed: int = 0, tokenizer=None) -> list[Example]:
    """Multi-target next-negative examples: per split row, one example for each of its first `max_targets`
    distinct negatives of the window (the next negative first, then the window's others in time order), all with
    the row's prompt. Learning p(item | history) over the whole window is what FHR@20 scores (paper: the reward's
    ground-truth set is the next 7 days); `max_examples` samples rows, not examples."""
    if max_targets < 1:
        raise ValueError(f"future_negative_examples: max_targets={max_targets}; use 1 (the next negative only) or more")
    frame = split_rows(prepared, split)
    index = FeedbackIndex.of(prepared)
    out = []
    for pos in sample_positions(len(frame), max_examples, seed):
        row = frame.iloc[int(pos)]
        user, cutoff, first = int(row["user_id"]), int(row["cutoff_ts"]), int(row["next_negative"])
        prompt = render_prompt(index, prepared, table, prompt_cfg, user, cutoff, tokenizer)
        targets = [first, *(int(i) for i in row["future_negatives"] if int(i) != first)][:max_targets]
        out.extend(Example(user, cutoff, prompt, prompts.completion(table.sid_of(t)), t, int(pos)) for t in targets)
    return out


def next_positive(index: FeedbackIndex, user_id: int, start_ts: int, end_ts: int) -> Optional[int]:
    """The first item the user gave positive feedback to in [start_ts, end_ts), or None."""
    window = index.span(user_id, start_ts, end_ts)
    liked = window.loc[window["feedback"] == "positive", "item_id"]
    return int(liked.iloc[0]) if len(liked) else None


def next_positive_examples(prepared: PreparedData, table: SIDTable, prompt_cfg: PromptConfig,
                           split: str = "train", max_examples: Optional[int] = None, seed: int = 0,
                           tokenizer=None) -> list[Example]:
    """Next-positive-item examples: the first positive in each row's window (rows without one are skipped).

    The prompt asks `prompts.POSITIVE_INSTRUCTION`; which sections it shows follows `prompt_cfg` as for
    the negative task (the generative-recommendation setting shows the positives: include_positives=True).
    """
    frame = split_rows(prepared, split)
    index = FeedbackIndex.of(prepared)
    targets = [next_positive(index, int(u), int(c), int(e))
               for u, c, e in zip(frame["user_id"], frame["cutoff_ts"], frame["window_end_ts"])]
    have = np.flatnonzero([t is not None for t in targets])
    out = []
    for pos in have[sample_positions(len(have), max_examples, seed)]:
        user, cutoff, target = int(frame["user_id"].iloc[pos]), int(frame["cutoff_ts"].iloc[pos]), targets[pos]
        prompt = render_prompt(index, prepared, table, prompt_cfg, user, cutoff, tokenizer,
                               prompts.POSITIVE_INSTRUCTION)
        out.append(Example(user, cutoff, prompt, prompts.completion(table.sid_of(target)), target, int(pos)))
    return out


def example_rows(prepared: PreparedData, examples: Sequence[Example], split: str = "test") -> pd.DataFrame:
    """The split rows the examples were built from, in example order (what `metrics.evaluate` scores)."""
    return split_rows(prepared, split).iloc[[e.row for e in examples]].reset_index(drop=True)
