"""Item-level alignment: a multiple choice *without user history*, its accuracy, and the forgetting rate.

PAPER.md "Context understanding" (the paper's new task, which raised candidate accuracy 0.276 -> 0.509):
"a user marked one of these items not interested and bought the other three: which one?". It teaches
what makes an item *disliked*, not merely "not liked", before any history is shown. Exact template
(one option per line, lettered; the prompt ends with a newline):

>>> print(alignment_prompt(["<a_1><b_2>", "<a_3><b_0>", "<a_7><b_7>", "<a_2><b_2>"], "sid"), end="")
A user marked one of these items not interested and clicked or bought all the others:
A. <a_1><b_2>
B. <a_3><b_0>
C. <a_7><b_7>
D. <a_2><b_2>
Which item did the user mark not interested? Answer with one item ID.

Rules (ours where the paper is silent or does not fit our data):
- The answer is an item the user marked not interested at least `min_dislikes` times within the period.
  The paper asks for more than 3 dislikes; on the simulator and KuaiRand a user almost never dislikes the
  same item twice (the platform stops showing it), so the default is 1: "an item the user marked not
  interested". An item the user also clicked or bought in the period is never an answer.
- The distractors are `n_distractors` distinct items drawn at random from the same user's positives of the
  same period, never one the user also marked not interested there; a user with fewer positives than that
  gets no question.
- Every disliked item gives `questions_per_item` questions; options are shuffled by a generator seeded with
  (seed, user, item, question), so a question does not depend on which other users are built.
- Periods: "train" uses only interactions before the user's test cutoff (training questions); "test" only
  those at or after it (evaluation questions: never seen by any training stage). Held-out users come from
  `split_users`.
- Answer format: the answer's SID (default), or its letter ("letter"). The SID is the default because it
  teaches the output rows of the SID tokens which items are disliked, the very rows next-negative
  generation uses; a letter answer needs a pointer from letter to line and transfers nothing to them.
- Scoring (`alignment_accuracy`): each option's completion (its SID, or its letter) is scored by its
  summed log-likelihood after the prompt, and the best option is the model's answer: deterministic,
  and the same as constrained generation over the options. Ties earn 1 / (number tied).
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from conrec_lib.data import histories
from conrec_lib.progress import tqdm

from conrec_lib.llm import decoding, prompts, tasks
from conrec_lib.configs import check_types
from conrec_lib.data.dataprep import PreparedData
from conrec_lib.llm.model import ModelBundle, encode_completion, encode_prompt
from conrec_lib.sids.semantic_ids import SIDTable

HEADER = "A user marked one of these items not interested and clicked or bought all the others:"
QUESTION = {"sid": "Which item did the user mark not interested? Answer with one item ID.",
            "letter": "Which item did the user mark not interested? Answer with its letter."}
LETTERS = "ABCDEFGHIJ"
PERIODS = ("train", "test")
NO_ROW = -1
TIE_TOL = 1e-9


@dataclasses.dataclass
class AlignmentConfig:
    """Which questions the item-level alignment task asks (rules: module docstring)."""

    # which items are answers and distractors
    min_dislikes: int = 1  # paper: > 3 dislikes by the user; our data almost never repeats one
    n_distractors: int = 3  # paper: 3 (a 4-way multiple choice)
    questions_per_item: int = 1  # distractor draws per disliked item
    # what the model answers: "sid" (the answer's SID) or "letter" (A, B, C, D)
    answer: str = "sid"

    def __post_init__(self) -> None:
        check_types(self)
        if self.min_dislikes < 1 or self.questions_per_item < 1:
            raise ValueError(f"AlignmentConfig: min_dislikes={self.min_dislikes} and questions_per_item="
                             f"{self.questions_per_item} must be >= 1")
        if not 1 <= self.n_distractors < len(LETTERS):
            raise ValueError(f"AlignmentConfig.n_distractors={self.n_distractors}: use 1..{len(LETTERS) - 1} "
                             "(paper: 3)")
        if self.answer not in QUESTION:
            raise ValueError(f"AlignmentConfig.answer={self.answer!r}: use one of {sorted(QUESTION)}")


@dataclasses.dataclass(frozen=True)
class AlignmentExample(tasks.Example):
    """A `tasks.Example` (completion = the answer's SID or letter) plus the options, in prompt order."""

    options: tuple[int, ...]  # item ids, the answer (target_item) among them
    choices: tuple[str, ...]  # the completion text of each option (what `option_scores` scores)

    @property
    def answer_index(self) -> int:
        return self.options.index(self.target_item)


class UserSplit(NamedTuple):
    """Users whose questions train the model, and held-out users whose questions evaluate it (both sorted)."""

    train: np.ndarray
    eval: np.ndarray


def split_users(n_users: int, eval_fraction: float = 0.2, seed: int = 0) -> UserSplit:
    """A deterministic random split of users 0..n_users-1: round(eval_fraction * n_users) are held out.

    >>> s = split_users(10, 0.2, seed=0)
    >>> len(s.eval), len(s.train), sorted([*s.train, *s.eval]) == list(range(10))
    (2, 8, True)
    """
    if not 0 < eval_fraction < 1:
        raise ValueError(f"split_users: eval_fraction={eval_fraction} must be in (0, 1), e.g. 0.2")
    order = np.random.default_rng(seed).permutation(n_users)
    n_eval = int(round(eval_fraction * n_users))
    return UserSplit(np.sort(order[n_eval:]), np.sort(order[:n_eval]))


class Pool(NamedTuple):
    """One user's answer items (disliked, in order of first dislike) and distractor items (liked, sorted)."""

    answers: list[int]
    distractors: list[int]


def answer_pool(rows: pd.DataFrame, min_dislikes: int = 1) -> Pool:
    """Answers and distractors from one user's feedback rows (columns item_id, feedback; time order).

    >>> rows = pd.DataFrame({"item_id": [5, 1, 2, 5, 3, 2], "feedback": ["negative", "positive", "positive",
    ...                                                                   "negative", "positive", "negative"]})
    >>> answer_pool(rows, 1)  # 2 was liked and disliked: neither answer nor distractor
    Pool(answers=[5], distractors=[1, 3])
    >>> answer_pool(rows, 2).answers
    [5]
    """
    neg = rows.loc[rows["feedback"] == "negative", "item_id"].astype(int)
    liked = set(rows.loc[rows["feedback"] == "positive", "item_id"].astype(int))
    counts = neg.value_counts()
    answers = [i for i in dict.fromkeys(neg.tolist()) if counts[i] >= min_dislikes and i not in liked]
    return Pool(answers, sorted(liked - set(neg.tolist())))


def alignment_prompt(option_sids: Sequence[str], answer: str = "sid") -> str:
    """The prompt of one question for its options' SIDs, in option order (layout: module docstring)."""
    if answer not in QUESTION:
        raise ValueError(f"answer={answer!r}: use one of {sorted(QUESTION)}")
    lines = [HEADER, *(f"{LETTERS[k]}. {sid}" for k, sid in enumerate(option_sids)), QUESTION[answer]]
    return "\n".join(lines) + "\n"


def shuffled_options(user: int, item: int, question: int, distractors: Sequence[int], n: int, seed: int
                     ) -> tuple[int, ...]:
    """The answer `item` and `n` distractors drawn from `distractors`, in an order shuffled with the seed.

    >>> opts = shuffled_options(3, 7, 0, [1, 2, 4, 5, 6], 3, seed=0)
    >>> len(opts), 7 in opts, opts == shuffled_options(3, 7, 0, [1, 2, 4, 5, 6], 3, seed=0)
    (4, True, True)
    """
    rng = np.random.default_rng([seed, user, item, question])
    picked = rng.choice(np.asarray(distractors, dtype=np.int64), size=n, replace=False)
    return tuple(int(i) for i in rng.permutation([item, *picked]))


def make_example(user: int, cutoff_ts: int, options: tuple[int, ...], item: int, table: SIDTable,
                 cfg: AlignmentConfig, tokenizer=None) -> AlignmentExample:
    """One question as an `AlignmentExample`; `tokenizer` wraps the prompt in its chat template."""
    sids = [table.sid_of(i) for i in options]
    prompt = alignment_prompt(sids, cfg.answer)
    if tokenizer is not None:
        prompt = prompts.apply_chat(tokenizer, prompt)
    choices = tuple(sids) if cfg.answer == "sid" else tuple(LETTERS[:len(options)])
    return AlignmentExample(user, cutoff_ts, prompt, choices[options.index(item)], item, NO_ROW, options, choices)


def user_examples(rows: pd.DataFrame, user: int, cutoff_ts: int, table: SIDTable, cfg: AlignmentConfig,
                  seed: int, tokenizer=None) -> list[AlignmentExample]:
    """Every question of one user from their feedback rows of one period (none if too few positives)."""
    pool = answer_pool(rows, cfg.min_dislikes)
    if len(pool.distractors) < cfg.n_distractors:
        return []
    return [make_example(user, cutoff_ts, shuffled_options(user, item, q, pool.distractors, cfg.n_distractors, seed),
                         item, table, cfg, tokenizer)
            for item in pool.answers for q in range(cfg.questions_per_item)]


def alignment_examples(prepared: PreparedData, table: SIDTable, users: Optional[Sequence[int]] = None,
                       period: str = "train", cfg: Optional[AlignmentConfig] = None, seed: int = 0,
                       max_examples: Optional[int] = None, tokenizer=None) -> list[AlignmentExample]:
    """Item-level alignment questions of `users` (all when None) from one period (rules: module docstring).

    cutoff_ts of an example: "train" the user's test cutoff (all its data lies before it); "test" one past
    the last timestamp of the dataset. `max_examples` keeps a seeded subset, in user order.
    """
    cfg = cfg or AlignmentConfig()
    if period not in PERIODS:
        raise ValueError(f"period={period!r}: use 'train' (before each user's test cutoff) or 'test' (after it)")
    index, cutoffs = histories.FeedbackIndex.of(prepared), prepared.split.test_cutoffs()
    end = int(prepared.dataset.interactions["timestamp"].max()) + 1
    users = range(prepared.dataset.n_users) if users is None else [int(u) for u in users]
    out: list[AlignmentExample] = []
    for user in users:
        cut = int(cutoffs[user])
        rows = index.span(user, None, cut) if period == "train" else index.span(user, cut, end)
        out.extend(user_examples(rows, user, cut if period == "train" else end, table, cfg, seed, tokenizer))
    return [out[int(p)] for p in histories.sample_positions(len(out), max_examples, seed)]


# --- evaluation --------------------------------------------------------------------------------------

@torch.no_grad()
def option_scores(bundle: ModelBundle, examples: Sequence[AlignmentExample], batch_size: int = 16,
                  progress: bool = False) -> np.ndarray:
    """(N, n_options): the summed log-likelihood of each option's completion after the example's prompt."""
    widths = {len(e.choices) for e in examples}
    if len(widths) != 1:
        raise ValueError(f"option_scores: examples have {sorted(widths)} options; score one question size at a time")
    tok, rows = bundle.tokenizer, []
    with decoding.eval_mode(bundle.model):
        for start in tqdm(range(0, len(examples), batch_size), disable=not progress, desc="alignment"):
            batch = examples[start:start + batch_size]
            prompt_ids = [encode_prompt(tok, e.prompt) for e in batch for _ in e.choices]
            choice_ids = [encode_completion(tok, c) for e in batch for c in e.choices]
            out = decoding.completion_logits(bundle.model, prompt_ids, choice_ids)
            logp = torch.log_softmax(out.logits, -1).gather(2, out.targets[..., None]).squeeze(-1)  # (B*O, L)
            rows.append((logp * out.mask).sum(1).view(len(batch), -1).cpu().numpy())
    return np.concatenate(rows)


def choice_accuracy(scores: np.ndarray, answers: Sequence[int]) -> float:
    """Share of rows whose best-scored option is the answer; m tied best options earn 1/m each.

    >>> choice_accuracy(np.array([[0.1, 0.5, 0.2, 0.0], [1.0, 1.0, 0.0, 0.0]]), [1, 0])
    0.75
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0 or len(scores) != len(answers):
        raise ValueError(f"choice_accuracy: {len(scores)} score rows for {len(answers)} answers; need one per row")
    best = scores >= scores.max(axis=1, keepdims=True) - TIE_TOL  # (N, O)
    return float(np.mean(best[np.arange(len(scores)), list(answers)] / best.sum(axis=1)))


def alignment_accuracy(bundle: ModelBundle, examples: Sequence[AlignmentExample], batch_size: int = 16,
                       progress: bool = False) -> float:
    """Accuracy on alignment questions (chance: 1 / number of options); deterministic."""
    if not examples:
        raise ValueError("alignment_accuracy: no examples; build them with alignment_examples(...)")
    scores = option_scores(bundle, list(examples), batch_size, progress)
    return choice_accuracy(scores, [e.answer_index for e in examples])


def forgetting_rate(acc_after_alignment: float, acc_later: float) -> float:
    """Share of the alignment accuracy lost by later training, (a - b) / a (PAPER.md "Forgetting", Table 3).

    Negative when the later stage improved the accuracy.
    >>> round(forgetting_rate(0.755, 0.518), 3)  # paper: next-item SFT forgets 31.4%
    0.314
    """
    if not acc_after_alignment > 0 or math.isnan(acc_later):
        raise ValueError(f"forgetting_rate: acc_after_alignment={acc_after_alignment} must be > 0 and acc_later="
                         f"{acc_later} a number; measure the alignment accuracy right after the alignment stage")
    return (acc_after_alignment - acc_later) / acc_after_alignment


def dislike_rates(prepared: PreparedData) -> np.ndarray:
    """(n_items,) (negatives + 1) / (negatives + positives + 2) of each item, before each user's test cutoff."""
    inter = prepared.dataset.interactions
    before = inter["timestamp"].to_numpy() < prepared.split.test_cutoffs()[inter["user_id"].to_numpy()]
    items, n = inter["item_id"].to_numpy(), prepared.dataset.n_items
    neg = np.bincount(items[before & (inter["feedback"] == "negative").to_numpy()], minlength=n)
    pos = np.bincount(items[before & (inter["feedback"] == "positive").to_numpy()], minlength=n)
    return (neg + 1) / (neg + pos + 2)


def dislike_rate_accuracy(prepared: PreparedData, examples: Sequence[AlignmentExample]) -> float:
    """A reference without a model: pick the option that all users disliked most often (training period).

    History-free questions can only be answered from what makes items disliked *in general*; this shows how
    far that signal goes on a dataset, the yardstick for `alignment_accuracy` besides chance.
    """
    rates = dislike_rates(prepared)
    return choice_accuracy(np.array([rates[list(e.options)] for e in examples]), [e.answer_index for e in examples])
