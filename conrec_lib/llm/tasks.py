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
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from conrec_lib.llm import prompts
from conrec_lib.data.dataprep import PreparedData
from conrec_lib.data.histories import FeedbackIndex, sample_positions, split_rows
from conrec_lib.llm.prompts import PromptConfig
from conrec_lib.sids.semantic_ids import SIDTable

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
    """Next-negative-item examples (target: the split's `next_negative`); `tokenizer` for chat templates.
    `future_negative_examples` with one target per row."""
    return future_negative_examples(prepared, table, prompt_cfg, split, 1, max_examples, seed, tokenizer)


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
    """The split rows the examples were built from, in example order (what `metrics.evaluate_rankings` scores)."""
    return split_rows(prepared, split).iloc[[e.row for e in examples]].reset_index(drop=True)
