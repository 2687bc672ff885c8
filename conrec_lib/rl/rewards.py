"""GRPO rewards for next-negative generation, and the training examples (prompt + reward columns) they read.

PAPER.md "Progressive GRPO" (reward). Every reward has TRL's signature `(prompts, completions, **columns) ->
list[float]` and is called as TRL calls it, by keyword (`reward(prompts=..., completions=..., ground_truth=...)`;
extra keywords such as `completion_ids` or `trainer_state` are ignored): one float per completion, the columns
aligned with the completions (a prompt's columns repeated for each of its G completions). A completion is one
SID string (constrained decoding only yields valid ones).
Notation, with e(x) an item's embedding *reconstructed from its SID's codewords* (`recommend.reconstructed_
embeddings`, as the paper's reward and deployment filter use) and cos the cosine similarity:

    GTS      ground-truth set: the user's negatives of the next H days (the split's window, H = 7 on the
             simulator) plus the next negative, extended with their Swing neighbours on negative feedback
    FPS      future positive set: what the user clicks or buys in the same window
    s_neg(o) = max_{i in GTS} cos(e(o), e(i))
    s_pos(o) = max_{t in FPS} cos(e(o), e(t))       (0 when FPS is empty: nothing to avoid)
    T(s)     = s if s > threshold else 0            (truncation, paper: 0.6)

    conrec            s_neg - gamma * s_pos                      (the paper's choice)
    negatives_only    s_neg
    truncated         T(s_neg)
    double_truncated  T(s_neg) - gamma * T(s_pos)
    hit               1 / 0.1 / 0.01 / 0 when the completion's SID shares 3 / 2 / 1 / 0 leading quantized
                      levels with some GTS item (the de-duplication token is ignored)
    next_negative_hit 1 if the completion is the next negative item, else 0 (the "traditional" reward)

Columns of an example (`grpo_examples`): "ground_truth" (GTS item ids), "future_positives" (item ids),
"next_negative" (an item id). They come from training rows only: training windows end at the test cutoff
(splits.py) and Swing is computed on negatives before it, so no reward looks into the test period.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import scipy.sparse as sp

from conrec_lib import metrics
from conrec_lib.llm import recommend, tasks
from conrec_lib.baselines import heuristics, swing
from conrec_lib.data.dataprep import PreparedData
from conrec_lib.sids.item_tokenizer import Tokenized
from conrec_lib.llm.prompts import PromptConfig
from conrec_lib.sids.semantic_ids import SIDTable, parse
from conrec_lib.baselines.swing import SwingConfig

RewardFunc = Callable[..., list]
VARIANTS = ("conrec", "negatives_only", "truncated", "double_truncated", "hit", "next_negative_hit")
HIT_REWARD = {3: 1.0, 2: 0.1, 1: 0.01, 0: 0.0}  # matched leading SID levels -> reward (paper's hit-based variant)
COLUMNS = ("ground_truth", "future_positives", "next_negative")


# --- the item space rewards are computed in -------------------------------------------------------

class RewardSpace(NamedTuple):
    """What a reward needs to read a completion: SID -> item id, and the reconstructed item embeddings."""

    table: SIDTable
    embeddings: np.ndarray  # (n_items, d) reconstructed from the SID codebooks

    @classmethod
    def of(cls, tokenized: Tokenized) -> "RewardSpace":
        return cls(tokenized.sids.table, recommend.reconstructed_embeddings(tokenized))


def max_cosine(space: RewardSpace, completion: str, items: Sequence[int]) -> float:
    """max_{i in items} cos(e(completion), e(i)) on reconstructed embeddings; 0.0 for an empty set."""
    if len(items) == 0:
        return 0.0
    out = space.embeddings[[space.table.item_of(completion)]]  # (1, d)
    return float(metrics.candidate_scores(space.embeddings[[int(i) for i in items]], out)[0])


def truncate(similarity: float, threshold: float) -> float:
    """T(s): the similarity when it exceeds `threshold`, else 0 (weak resemblance earns nothing).

    >>> truncate(0.7, 0.6), truncate(0.5, 0.6)
    (0.7, 0.0)
    """
    return similarity if similarity > threshold else 0.0


def matched_levels(sid: str, other: str, levels: int) -> int:
    """How many leading quantized levels two SIDs share (the de-duplication token is not compared).

    >>> matched_levels("<a_1><b_2><c_3><d_0>", "<a_1><b_2><c_9><d_1>", 3)
    2
    """
    n = 0
    for x, y in zip(parse(sid)[:levels], parse(other)[:levels]):
        if x != y:
            break
        n += 1
    return n


# --- reward callables (TRL signature, keyword arguments only) ---------------------------------------

class Named:
    """TRL logs a reward function as rewards/<__name__>/mean; a reward object answers with its `name` field."""

    name: str

    @property
    def __name__(self) -> str:
        return self.name


@dataclasses.dataclass
class SimilarityReward(Named):
    """The similarity rewards of the module docstring: s_neg (optionally truncated) - gamma * s_pos."""

    space: RewardSpace
    gamma: float = 0.0  # weight of the positive penalty (0: negatives only)
    threshold: Optional[float] = None  # truncate s_neg (and s_pos) at this similarity; None: no truncation
    truncate_positive: bool = False
    name: str = "similarity"

    def score(self, completion: str, ground_truth: Sequence[int], future_positives: Sequence[int]) -> float:
        s_neg = max_cosine(self.space, completion, ground_truth)
        s_pos = max_cosine(self.space, completion, future_positives) if self.gamma else 0.0
        if self.threshold is not None:
            s_neg = truncate(s_neg, self.threshold)
            s_pos = truncate(s_pos, self.threshold) if self.truncate_positive else s_pos
        return s_neg - self.gamma * s_pos

    def __call__(self, *, prompts=None, completions, ground_truth, future_positives=None, **_) -> list[float]:
        future_positives = future_positives if future_positives is not None else [[]] * len(completions)
        return [self.score(c, g, f) for c, g, f in zip(completions, ground_truth, future_positives)]


@dataclasses.dataclass
class HitReward(Named):
    """Paper's hit-based variant: HIT_REWARD[most leading SID levels matched with any GTS item]."""

    space: RewardSpace
    name: str = "hit"

    def score(self, completion: str, ground_truth: Sequence[int]) -> float:
        levels = self.space.table.levels
        best = max((matched_levels(completion, self.space.table.sid_of(int(i)), levels) for i in ground_truth),
                   default=0)
        return HIT_REWARD[min(best, 3)] if levels >= 3 else float(best == levels)

    def __call__(self, *, prompts=None, completions, ground_truth, **_) -> list[float]:
        return [self.score(c, g) for c, g in zip(completions, ground_truth)]


@dataclasses.dataclass
class NextNegativeHit(Named):
    """The traditional reward: 1 if the completion is the next negative item, else 0."""

    space: RewardSpace
    name: str = "next_negative_hit"

    def __call__(self, *, prompts=None, completions, next_negative, **_) -> list[float]:
        return [float(self.space.table.item_of(c) == int(n)) for c, n in zip(completions, next_negative)]


def make_reward(name: str, space: RewardSpace, gamma: float = 0.5, threshold: float = 0.6) -> RewardFunc:
    """The reward called `name` (one of VARIANTS); its `__name__` is `name` (TRL logs rewards/<name>/mean)."""
    if name not in VARIANTS:
        raise ValueError(f"make_reward: unknown reward {name!r}; use one of {VARIANTS}")
    if gamma < 0 or not 0 <= threshold < 1:
        raise ValueError(f"make_reward: gamma={gamma} must be >= 0 and threshold={threshold} in [0, 1)")
    if name == "hit":
        return HitReward(space, name)
    if name == "next_negative_hit":
        return NextNegativeHit(space, name)
    return SimilarityReward(space, gamma=gamma if name in ("conrec", "double_truncated") else 0.0,
                            threshold=threshold if "truncated" in name else None,
                            truncate_positive=name == "double_truncated", name=name)


# --- training examples: prompts + reward columns, training period only ---------------------------

def train_swing(prepared: PreparedData, cfg: Optional[SwingConfig] = None) -> sp.csr_matrix:
    """Swing scores on the training period's negatives (`swing.swing_scores` on `heuristics.training_negatives`,
    the rows every baseline learns from)."""
    return swing.swing_scores(heuristics.training_negatives(prepared)[["user_id", "item_id"]], cfg,
                              n_items=prepared.dataset.n_items)


def grpo_examples(prepared: PreparedData, table: SIDTable, prompt_cfg: PromptConfig, swing_scores: sp.csr_matrix,
                  n_neighbours: int = 10, max_examples: Optional[int] = None, seed: int = 0,
                  tokenizer=None) -> list[dict]:
    """TRL-style rows {"prompt", "ground_truth", "future_positives", "next_negative"} from *training* rows.

    ground_truth = the row's future negatives + next negative, extended with `n_neighbours` Swing neighbours
    (`swing.extend_with_neighbours`; 0: none). Rows are sampled as `tasks.next_negative_examples` samples them.
    """
    examples = tasks.next_negative_examples(prepared, table, prompt_cfg, "train", max_examples, seed, tokenizer)
    rows = tasks.example_rows(prepared, examples, "train")
    future = [[int(i) for i in f] + [int(n)] for f, n in zip(rows["future_negatives"], rows["next_negative"])]
    gts = swing.extend_with_neighbours(future, swing_scores, n_neighbours) if n_neighbours else map(set, future)
    return [{"prompt": e.prompt, "ground_truth": sorted(g), "future_positives": [int(i) for i in pos],
             "next_negative": int(n)}
            for e, g, pos, n in zip(examples, gts, rows["future_positives"], rows["next_negative"])]
