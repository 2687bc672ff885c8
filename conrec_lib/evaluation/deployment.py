"""The paper's deployment filter: a user's predicted negative set screens the candidates the platform would show.

PAPER.md "The task" (the paper's Fig. 4): offline, the model generates each user's top-k SIDs; each SID is
turned back into an embedding by summing its codewords (`recommend.reconstructed_embeddings`); online, a
candidate item is filtered out when its max cosine similarity to that set exceeds `theta`
(`metrics.candidate_scores`, strictly greater). The paper states no `theta`; `tradeoff_curve` measures,
on a split's test period, what each `theta` costs: the share of the user's true negatives it filters
against the share of the items the user liked that it filters. A filter that drops items at random
filters both shares equally, so a useful filter's curve lies below the diagonal (positives < negatives).
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from conrec_lib.data import histories
from conrec_lib import metrics
from conrec_lib.llm import recommend, tasks
from conrec_lib.configs import check_types
from conrec_lib.data.dataprep import PreparedData
from conrec_lib.llm.model import ModelBundle
from conrec_lib.llm.prompts import PromptConfig, chat_tokenizer
from conrec_lib.sids.semantic_ids import SIDTable

DEFAULT_THETAS = tuple(round(t, 2) for t in np.arange(0.0, 1.0001, 0.05))  # the trade-off curve's grid


@dataclasses.dataclass
class FilterConfig:
    """How the deployment filter screens candidates."""

    theta: float = 0.9  # filter when max cosine to the predicted set > theta (paper: unstated; read the curve)
    k: int = 20  # the first k predicted items form the set (paper: top-20 SIDs of beam search)

    def __post_init__(self) -> None:
        check_types(self)
        if not math.isfinite(self.theta):
            raise ValueError(f"FilterConfig.theta={self.theta}: use a finite number (cosines lie in [-1, 1]; "
                             "theta >= 1 filters nothing, theta < -1 filters every candidate)")
        if self.k < 1:
            raise ValueError(f"FilterConfig.k={self.k}: use k >= 1 (the paper uses the top 20 predictions)")


class Filtered(NamedTuple):
    """One user's candidate list split by the filter, each part in the original candidate order."""

    kept: list[int]
    filtered: list[int]


def max_cosine(predicted_embeddings: np.ndarray, candidate_embeddings: np.ndarray, unit: bool = False) -> np.ndarray:
    """`metrics.candidate_scores` clipped to [-1, 1], so rounding never lifts an identical item above theta = 1.

    >>> max_cosine(np.array([[0.1, 0.3]]), np.array([[0.1, 0.3], [0.3, -0.1]])).round(6).tolist()
    [1.0, 0.0]
    """
    return np.clip(metrics.candidate_scores(predicted_embeddings, candidate_embeddings, unit), -1.0, 1.0)


def filtered_flags(predicted: Sequence[int], candidates: Sequence[int], embeddings: np.ndarray,
                   theta: float) -> np.ndarray:
    """(C,) bool: candidate c is filtered when its max cosine to the predicted items' embeddings > theta.

    An empty predicted set filters nothing.

    >>> e = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    >>> filtered_flags([0], [0, 1, 2], e, theta=0.5).tolist()
    [True, True, False]
    >>> filtered_flags([], [0, 1, 2], e, theta=0.5).tolist()
    [False, False, False]
    """
    return max_cosine(embeddings[list(predicted)], embeddings[list(candidates)]) > theta


def filter_candidates(predicted: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]],
                      embeddings: np.ndarray, cfg: FilterConfig) -> list[Filtered]:
    """Per user: its candidate list split into kept and filtered items (the first cfg.k predictions count).

    >>> e = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    >>> filter_candidates([[0]], [[2, 1, 0]], e, FilterConfig(theta=0.9))
    [Filtered(kept=[2, 1], filtered=[0])]
    """
    if len(predicted) != len(candidates):
        raise ValueError(f"filter_candidates: {len(predicted)} predicted sets for {len(candidates)} candidate "
                         "lists; pass one predicted set per user, in the same order")
    out = []
    for pred, cands in zip(predicted, candidates):
        cands = [int(c) for c in cands]
        flags = filtered_flags([int(i) for i in pred[:cfg.k]], cands, embeddings, cfg.theta)
        out.append(Filtered([c for c, f in zip(cands, flags) if not f], [c for c, f in zip(cands, flags) if f]))
    return out


def item_mask(predicted: Sequence[Sequence[int]], embeddings: np.ndarray, cfg: FilterConfig) -> np.ndarray:
    """(U, n_items) bool: for each user's predicted set, which items of the whole catalogue it filters.

    What a deployment precomputes once per refresh of the predictions (conrec_lib.evaluation.ab_test uses it).

    >>> e = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    >>> item_mask([[0], [], [2]], e, FilterConfig(theta=0.5)).astype(int).tolist()
    [[1, 1, 0], [0, 0, 0], [0, 1, 1]]
    """
    mask = np.zeros((len(predicted), len(embeddings)), bool)
    unit = metrics.unit_rows(embeddings)  # the catalogue normalised once, not once per user
    for u, pred in enumerate(predicted):
        pred = [int(i) for i in pred[:cfg.k]]
        if pred:
            mask[u] = max_cosine(unit[pred], unit, unit=True) > cfg.theta  # (I,): the one rule, filtered_flags's
    return mask


# --- offline: each user's predicted negative set ---------------------------------------------------------

def predict_sets(bundle: ModelBundle, prepared: PreparedData, table: SIDTable, prompt_cfg: PromptConfig,
                 user_ids: Sequence[int], cutoff_ts: int, k: int = 20, batch_size: int = 16,
                 progress: bool = False) -> list[list[int]]:
    """Per user, the model's top-k items (constrained beam search) from its history strictly before `cutoff_ts`.

    The paper's offline step: each user's SID set is generated once, then screens candidates online until the
    next refresh. Users without any feedback before the cutoff still get a prompt (empty sections).
    """
    index = histories.FeedbackIndex.of(prepared)
    tokenizer = chat_tokenizer(bundle.tokenizer, prompt_cfg)
    prompts_ = [tasks.render_prompt(index, prepared, table, prompt_cfg, int(u), int(cutoff_ts), tokenizer)
                for u in user_ids]
    rows = pd.DataFrame({"user_id": list(user_ids), "cutoff_ts": int(cutoff_ts)})
    return recommend.predict(bundle, prompts_, recommend.sid_trie(bundle, table), table, k, batch_size, progress,
                             exclude=recommend.excluded_items(prepared, rows))


# --- the trade-off curve on logged data ----------------------------------------------------------------

def _max_cosines(predicted: Sequence[Sequence[int]], item_sets: Sequence[set], embeddings: np.ndarray,
                 k: int) -> np.ndarray:
    """Pooled over users: each item of the user's set scored by its max cosine to the user's predictions."""
    scores = [max_cosine(embeddings[[int(i) for i in pred[:k]]], embeddings[sorted(items)])
              for pred, items in zip(predicted, item_sets) if items]
    return np.concatenate(scores) if scores else np.empty(0)


def _share_above(scores: np.ndarray, theta: float) -> float:
    """Share of scores strictly above theta (NaN when there are none).

    >>> _share_above(np.array([0.2, 0.5, 0.9, -np.inf]), 0.5)
    0.25
    """
    return float((scores > theta).mean()) if len(scores) else math.nan


class _TestSets(NamedTuple):
    negatives: list[set]  # per example: test-period negatives (future negatives + the next negative)
    positives: list[set]  # per example: test-period positives


def _test_sets(examples: pd.DataFrame) -> _TestSets:
    missing = [c for c in ("next_negative", "future_negatives", "future_positives") if c not in examples.columns]
    if missing:
        raise ValueError(f"tradeoff_curve: examples lack column(s) {missing}; pass a splits.Split's test frame")
    negatives = [{int(i) for i in f} | ({int(n)} if int(n) >= 0 else set())
                 for f, n in zip(examples["future_negatives"], examples["next_negative"])]
    return _TestSets(negatives, [{int(i) for i in f} for f in examples["future_positives"]])


def tradeoff_curve(predicted: Sequence[Sequence[int]], examples: pd.DataFrame, embeddings: np.ndarray,
                   thetas: Sequence[float] = DEFAULT_THETAS, k: int = 20) -> pd.DataFrame:
    """At each theta: the share of test-period negatives and of test-period positives the filter removes.

    `predicted[n]` is the ranked prediction list for row n of `examples` (a split's test frame: its
    `future_negatives` plus `next_negative` are the true negatives, `future_positives` the liked items).
    Shares are pooled over users (micro): filtered items / all such items. One row per theta with columns
    theta, negatives_filtered, positives_filtered, n_negatives, n_positives.
    """
    if len(predicted) != len(examples):
        raise ValueError(f"tradeoff_curve: {len(predicted)} prediction lists for {len(examples)} example rows; "
                         "pass one list per row, in row order")
    negatives, positives = _test_sets(examples)
    neg_scores = _max_cosines(predicted, negatives, embeddings, k)
    pos_scores = _max_cosines(predicted, positives, embeddings, k)
    rows = [{"theta": float(t), "negatives_filtered": _share_above(neg_scores, t),
             "positives_filtered": _share_above(pos_scores, t), "n_negatives": len(neg_scores),
             "n_positives": len(pos_scores)} for t in thetas]
    return pd.DataFrame(rows)


def pick_theta(curve: pd.DataFrame, max_positives_filtered: float) -> float:
    """The theta of the curve that filters the most negatives while filtering at most the given share of positives.

    Raises when no theta of the curve stays within the budget (extend the grid towards 1).

    >>> curve = pd.DataFrame({"theta": [0.5, 0.7, 0.9], "negatives_filtered": [0.8, 0.5, 0.2],
    ...                       "positives_filtered": [0.3, 0.08, 0.01]})
    >>> pick_theta(curve, 0.1)
    0.7
    """
    ok = curve[curve["positives_filtered"] <= max_positives_filtered]
    if ok.empty:
        raise ValueError(f"pick_theta: no theta filters at most {max_positives_filtered} of the positives "
                         f"(smallest: {curve['positives_filtered'].min():.3f}); add thetas closer to 1")
    best = ok.sort_values(["negatives_filtered", "theta"], ascending=[False, True], kind="stable")
    return float(best["theta"].iloc[0])
