"""Users' histories at a cutoff, read fast: the feedback index beside the split, and the example rows of a split.

Every model (the baselines, the LLM prompts, the candidate exclusion) reads a user's past through these
functions, so they all see the same history: the positives and negatives strictly before the cutoff.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import pandas as pd

from conrec_lib.data.dataprep import PreparedData

SPLITS = ("train", "test")


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
