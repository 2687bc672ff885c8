"""The paper's evaluation metrics as pure functions, and `evaluate_rankings`, the one path every model goes through.

PAPER.md "Evaluation in the paper": HR@K, FHR@K, LUF@K, LIF@K (K = 20) and candidate accuracy, plus
three diagnostics issue 4 asks for: coverage of a user's top-k negative interests, the invalid-SID rate
and positive leakage. The paper leaves most counting rules unstated; each docstring below states ours.

Shared conventions:
- `predictions[n]` is the ranked list of item ids a model returned for example n. Only its first `k`
  entries count. Entries are used as given: models are expected to return distinct items (constrained
  beam search does); a duplicate simply wastes a slot, it is never removed or refilled.
- A list shorter than `k` is allowed (fewer guesses, no padding).
- Rates are means over examples (macro), except `positive_leakage` which is micro-averaged.
- Empty inputs and examples without a target are errors, never silently skipped. Sub-population
  metrics (LUF, LIF) return NaN when the sub-population is empty, because "no such users" is a
  legitimate outcome of a small split, not a bug.
"""
from __future__ import annotations

import math
from typing import Collection, Optional, Sequence

import numpy as np
import pandas as pd

NO_NEXT_NEGATIVE = -1  # what a split stores when an example has no next negative item
TIE_TOL = 1e-9  # candidate scores within this of the best one count as tied
EXAMPLE_COLUMNS = ("next_negative", "future_negatives", "future_positives", "candidates", "longtail_user")


def _check_lengths(what: str, **seqs: Sequence) -> int:
    """Return the common length of `seqs`; raise if they differ or are empty."""
    lengths = {name: len(s) for name, s in seqs.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{what}: inputs must have one entry per example, got lengths {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError(f"{what}: no examples; pass at least one")
    return n


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}; K=20 is the paper's setting")


def hit_rate(predictions: Sequence[Sequence[int]], next_negatives: Sequence[int], k: int = 20) -> float:
    """HR@K: share of examples whose next negative item is among the first `k` predictions.

    An example whose next negative is -1 (none) raises ValueError: drop such examples in the split.

    >>> hit_rate([[3, 1, 2], [5, 6]], [2, 9], k=3)
    0.5
    >>> hit_rate([[3, 1, 2]], [2], k=2)
    0.0
    """
    _check_k(k)
    _check_lengths("hit_rate", predictions=predictions, next_negatives=next_negatives)
    missing = [n for n, item in enumerate(next_negatives) if int(item) == NO_NEXT_NEGATIVE]
    if missing:
        raise ValueError(f"hit_rate: examples {missing[:5]} have no next negative (-1); "
                         "the split must only emit examples with a next negative item")
    hits = [int(item) in set(pred[:k]) for pred, item in zip(predictions, next_negatives)]
    return float(np.mean(hits))


def _any_hit(pred: Sequence[int], targets: Collection[int], k: int) -> bool:
    return not set(pred[:k]).isdisjoint(targets)


def future_hit_rate(predictions: Sequence[Sequence[int]], future_negatives: Sequence[Collection[int]],
                    k: int = 20) -> float:
    """FHR@K: share of examples where at least one of the future negatives is in the first `k` predictions.

    One hit per example, however many future negatives are matched. An example with an empty
    future-negative set raises ValueError (it has no target; `evaluate_rankings` adds the next negative to it).

    >>> future_hit_rate([[1, 2], [3, 4]], [{2, 7}, {5}], k=2)
    0.5
    """
    _check_k(k)
    _check_lengths("future_hit_rate", predictions=predictions, future_negatives=future_negatives)
    empty = [n for n, fut in enumerate(future_negatives) if len(fut) == 0]
    if empty:
        raise ValueError(f"future_hit_rate: examples {empty[:5]} have no future negatives; "
                         "drop them or include the next negative in the future set")
    return float(np.mean([_any_hit(p, set(f), k) for p, f in zip(predictions, future_negatives)]))


def longtail_user_fhr(predictions: Sequence[Sequence[int]], future_negatives: Sequence[Collection[int]],
                      longtail_user: Sequence[bool], k: int = 20) -> float:
    """LUF@K: FHR@K over the examples of long-tail users only (the split decides who is long-tail).

    Returns NaN when no example belongs to a long-tail user.

    >>> longtail_user_fhr([[1], [2], [3]], [{1}, {9}, {3}], [True, True, False], k=1)
    0.5
    >>> math.isnan(longtail_user_fhr([[1]], [{1}], [False], k=1))
    True
    """
    _check_lengths("longtail_user_fhr", predictions=predictions, future_negatives=future_negatives,
                   longtail_user=longtail_user)
    keep = [n for n, flag in enumerate(longtail_user) if bool(flag)]
    if not keep:
        return math.nan
    return future_hit_rate([predictions[n] for n in keep], [future_negatives[n] for n in keep], k)


def longtail_item_fhr(predictions: Sequence[Sequence[int]], future_negatives: Sequence[Collection[int]],
                      longtail_items: np.ndarray, k: int = 20) -> float:
    """LIF@K: FHR@K on long-tail items.

    Our reading of the paper's one line: only examples whose future negatives include at least one
    long-tail item count, and a hit needs a *long-tail* future negative in the first `k` predictions
    (hitting a popular future negative does not count). `longtail_items[i]` is True for long-tail item i.
    Returns NaN when no example has a long-tail future negative.

    >>> lt = np.array([False, True, True, False])
    >>> longtail_item_fhr([[0, 1], [0, 3], [2]], [{0, 1}, {0, 2}, {3}], lt, k=2)
    0.5
    """
    _check_lengths("longtail_item_fhr", predictions=predictions, future_negatives=future_negatives)
    longtail_items = np.asarray(longtail_items, dtype=bool)
    targets = [{int(i) for i in fut if longtail_items[int(i)]} for fut in future_negatives]
    keep = [n for n, t in enumerate(targets) if t]
    if not keep:
        return math.nan
    return future_hit_rate([predictions[n] for n in keep], [targets[n] for n in keep], k)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1; an all-zero row stays zero (cosine 0 with everything)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def candidate_scores(pred_embeddings: np.ndarray, candidate_embeddings: np.ndarray, unit: bool = False) -> np.ndarray:
    """Score of each candidate: its max cosine similarity to the predicted set (the deployment rule).

    An empty predicted set scores every candidate -inf (all tied). `unit=True`: both are rows of `unit_rows`
    already (a catalogue normalised once for many predicted sets; the scores are the same to the last bit).

    >>> candidate_scores(np.array([[1.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 1.0]])).round(3).tolist()
    [1.0, 0.0]
    """
    scale = (lambda x: np.asarray(x, dtype=np.float64)) if unit else unit_rows
    cands = scale(np.atleast_2d(candidate_embeddings))  # (C, D)
    if len(pred_embeddings) == 0:
        return np.full(len(cands), -np.inf)
    preds = scale(np.atleast_2d(pred_embeddings))  # (P, D)
    return (cands @ preds.T).max(axis=1)  # (C,)


def candidate_accuracy(pred_embeddings: Sequence[np.ndarray], candidate_embeddings: Sequence[np.ndarray],
                       true_index: Sequence[int]) -> float:
    """CandAcc: share of examples where the top-scored candidate is the true negative.

    Each candidate is scored by `candidate_scores` (max cosine to the predicted set) and the argmax is
    picked. Ties (scores within TIE_TOL of the best) are broken by expected value: an example whose true
    candidate is one of m tied best candidates earns 1/m. This equals uniform random tie-breaking in
    expectation, stays deterministic, and does not depend on the order of the candidate list (a
    lowest-index rule would reward whichever position the split puts the true negative in).

    >>> p = [np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]])]
    >>> c = [np.array([[0.0, 1.0], [1.0, 0.1]]), np.array([[1.0, 0.0], [1.0, 0.0]])]
    >>> candidate_accuracy(p, c, [1, 0])  # example 2: two identical candidates tie -> 1/2
    0.75
    """
    n = _check_lengths("candidate_accuracy", pred_embeddings=pred_embeddings,
                       candidate_embeddings=candidate_embeddings, true_index=true_index)
    credit = np.zeros(n)
    for e, (preds, cands, true) in enumerate(zip(pred_embeddings, candidate_embeddings, true_index)):
        if not 0 <= int(true) < len(cands):
            raise ValueError(f"candidate_accuracy: example {e} has true_index {true} "
                             f"but only {len(cands)} candidates")
        scores = candidate_scores(preds, cands)
        best = scores >= scores.max() - TIE_TOL  # (C,) bool; -inf scores (no predictions) all tie
        credit[e] = best[int(true)] / best.sum()
    return float(credit.mean())


def interest_coverage(top_interests: Sequence[Sequence[str]], item_sets: Sequence[Collection[int]],
                      item_facets: Sequence[frozenset[str]]) -> float:
    """Mean over users of the share of their top negative interests carried by at least one item of their set.

    PAPER.md problem 3 (the 7% / 18% / 25% coverage numbers). An interest is a facet string
    "column=value" (see `data.item_facets`); item i carries the facets `item_facets[i]`. Duplicate
    interests of a user count once. A user with no interests raises ValueError; an empty item set
    covers nothing (0 for that user).

    >>> facets = [frozenset({"category=shoes", "color=red"}), frozenset({"category=bags"})]
    >>> interest_coverage([["color=red", "category=bags"], ["category=hats"]], [{0}, {0, 1}], facets)
    0.25
    """
    _check_lengths("interest_coverage", top_interests=top_interests, item_sets=item_sets)
    shares = []
    for u, (interests, items) in enumerate(zip(top_interests, item_sets)):
        wanted = set(interests)
        if not wanted:
            raise ValueError(f"interest_coverage: user {u} has no top interests; drop users without any")
        carried = set().union(*(item_facets[int(i)] for i in items)) if items else set()
        shares.append(len(wanted & carried) / len(wanted))
    return float(np.mean(shares))


def invalid_rate(completions_parsed: Sequence[Optional[int]]) -> float:
    """Share of completions that did not map to a real item (parsed as None).

    >>> invalid_rate([3, None, 7, None])
    0.5
    """
    _check_lengths("invalid_rate", completions_parsed=completions_parsed)
    return float(np.mean([c is None for c in completions_parsed]))


def positive_leakage(predictions: Sequence[Sequence[int]], future_positives: Sequence[Collection[int]],
                     k: int = 20) -> float:
    """Share of predicted items (first `k` of each list) that the user gave positive feedback to later.

    Micro-averaged: (predicted items found in that example's future positives, summed over examples)
    / (predicted items, summed over examples), so a short prediction list weighs less. Returns NaN when
    no example has any prediction.

    >>> positive_leakage([[1, 2, 3, 4], [5, 6]], [{2}, {5, 6}], k=4)
    0.5
    """
    _check_k(k)
    _check_lengths("positive_leakage", predictions=predictions, future_positives=future_positives)
    liked = [{int(i) for i in f} for f in future_positives]
    leaked = sum(sum(int(i) in pos for i in p[:k]) for p, pos in zip(predictions, liked))
    total = sum(len(p[:k]) for p in predictions)
    return leaked / total if total else math.nan


# --- evaluate_rankings: the one code path every model (LLM or baseline) is scored through ---------------

def _check_examples(predictions: Sequence[Sequence[int]], examples: pd.DataFrame, n_items: int) -> None:
    missing = [c for c in EXAMPLE_COLUMNS if c not in examples.columns]
    if missing:
        raise ValueError(f"evaluate_rankings: examples lack column(s) {missing}; build them with splits.py "
                         f"(it has {list(examples.columns)})")
    if len(predictions) != len(examples):
        raise ValueError(f"evaluate_rankings: {len(predictions)} prediction lists for {len(examples)} examples; "
                         "pass one list per example row, in row order")
    bad = [(n, i) for n, p in enumerate(predictions) for i in p if not 0 <= int(i) < n_items]
    if bad:
        raise ValueError(f"evaluate_rankings: predicted item ids outside 0..{n_items - 1}, e.g. (example, item) "
                         f"{bad[:3]}; map invalid completions out before scoring (see invalid_rate)")


def _candidate_inputs(predictions, examples: pd.DataFrame, item_embeddings: np.ndarray, k: int):
    """Per example: embeddings of the top-k predictions, of the candidates, and the true candidate's index."""
    preds, cands, true = [], [], []
    rows = zip(predictions, examples["candidates"], examples["next_negative"])
    for n, (pred, cand, nxt) in enumerate(rows):
        cand = [int(i) for i in cand]
        if int(nxt) not in cand:
            raise ValueError(f"evaluate_rankings: example row {n}: next_negative {nxt} is not among its candidates; "
                             "the split must include it")
        preds.append(item_embeddings[[int(i) for i in pred[:k]]])
        cands.append(item_embeddings[cand])
        true.append(cand.index(int(nxt)))
    return preds, cands, true


def evaluate_rankings(predictions: Sequence[Sequence[int]], examples: pd.DataFrame, item_embeddings: np.ndarray,
             longtail_items: np.ndarray, k: int = 20) -> dict[str, float]:
    """Score ranked item predictions on split examples: HR, FHR, LUF, LIF @k, CandAcc, positive leakage.

    `examples` has the split columns (`next_negative`, `future_negatives`, `future_positives`,
    `candidates`, `longtail_user`), one row per prediction list. Choices beyond the paper:
    - the FHR target of an example is its future negatives *plus* its next negative, so FHR >= HR always;
    - CandAcc uses the first `k` predictions as the predicted set and `item_embeddings` (pass the
      SID embeddings reconstructed from the codebooks, as the paper's deployment does) for both sides.
    Returns {"HR@k", "FHR@k", "LUF@k", "LIF@k", "CandAcc", "positive_leakage", "n_examples"}.
    """
    _check_k(k)
    item_embeddings = np.asarray(item_embeddings)
    _check_examples(predictions, examples, len(item_embeddings))
    predictions = [[int(i) for i in p] for p in predictions]
    nxt = [int(i) for i in examples["next_negative"]]
    future = [{int(i) for i in f} | {n} for f, n in zip(examples["future_negatives"], nxt)]
    preds_emb, cands_emb, true = _candidate_inputs(predictions, examples, item_embeddings, k)
    return {
        f"HR@{k}": hit_rate(predictions, nxt, k),
        f"FHR@{k}": future_hit_rate(predictions, future, k),
        f"LUF@{k}": longtail_user_fhr(predictions, future, list(examples["longtail_user"]), k),
        f"LIF@{k}": longtail_item_fhr(predictions, future, longtail_items, k),
        "CandAcc": candidate_accuracy(preds_emb, cands_emb, true),
        "positive_leakage": positive_leakage(predictions, list(examples["future_positives"]), k),
        "n_examples": len(examples),
    }


# --- intervals over test rows ------------------------------------------------------------------------

def _resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # (n_boot, n) row indices


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% interval of mean(a - b) over test rows resampled with replacement (a and b are paired by row).

    >>> paired_bootstrap([1.0, 0.0, 1.0], [1.0, 0.0, 1.0])
    (0.0, 0.0)
    >>> lo, hi = paired_bootstrap([1.0, 1.0, 0.0, 1.0], [0.0] * 4)
    >>> 0.0 <= lo <= 0.75 <= hi <= 1.0
    True
    """
    diff = np.asarray(a, float) - np.asarray(b, float)
    if diff.size == 0:
        return (float("nan"), float("nan"))
    means = diff[_resamples(diff.size, n_boot, seed)].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def paired_ratio_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 1000,
                           seed: int = 0) -> tuple[float, float]:
    """95% interval of mean(a) / mean(b) over paired test rows resampled with replacement.

    >>> paired_ratio_bootstrap([1.0, 1.0], [1.0, 1.0])
    (1.0, 1.0)
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    idx = _resamples(a.size, n_boot, seed)
    num, den = a[idx].mean(axis=1), b[idx].mean(axis=1)
    ratios = np.divide(num, den, out=np.full_like(num, np.nan), where=den > 0)
    return float(np.nanquantile(ratios, 0.025)), float(np.nanquantile(ratios, 0.975))


def row_hits(predictions: Sequence[Sequence[int]], examples: pd.DataFrame, k: int = 20) -> np.ndarray:
    """(N,) 1.0 where a top-k list holds a negative of the example's window or its next negative (FHR@k per row,
    the same target as `evaluate_rankings`)."""
    targets = [{int(i) for i in f} | {int(n)} for f, n in zip(examples["future_negatives"], examples["next_negative"])]
    return np.array([float(bool({int(i) for i in p[:k]} & t)) for p, t in zip(predictions, targets)])


def gap_closed(value: float, floor: float, ceiling: float) -> float:
    """Share of the floor -> ceiling gap that `value` closes: (value - floor) / (ceiling - floor).

    The yardstick of every comparison: floor = most_disliked, ceiling = the simulator's oracle; 0 = no better than
    the most-disliked list, 1 = as good as the ground truth, negative = below the list.

    >>> round(gap_closed(0.4, 0.3, 0.5), 6)
    0.5
    """
    return (value - floor) / (ceiling - floor) if ceiling != floor else float("nan")


def relative_gain(value: float, reference: float) -> float:
    """(value - reference) / reference, the paper's "+13.7% over the best baseline" (NaN when reference is 0).

    >>> round(relative_gain(0.55, 0.5), 6), relative_gain(1.0, 0.0)
    (0.1, nan)
    """
    return (value - reference) / reference if reference else float("nan")


# --- inequality of exposure over a catalogue (the A/B test's arms) ----------------------------------

def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 all equal, (n-1)/n all on one item.

    >>> gini(np.array([1, 1, 1, 1]))
    0.0
    >>> gini(np.array([0, 0, 0, 4]))
    0.75
    """
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if total == 0:
        return math.nan
    return float(((2 * np.arange(1, n + 1) - n - 1) * x).sum() / (n * total))


def normalised_entropy(counts: np.ndarray) -> float:
    """Shannon entropy of the exposure distribution divided by log(n): 1 uniform, 0 one item.

    >>> normalised_entropy(np.array([2, 2, 2, 2]))
    1.0
    >>> normalised_entropy(np.array([0, 5, 0, 0]))
    0.0
    """
    x = np.asarray(counts, dtype=np.float64)
    p = x[x > 0] / x.sum()
    return float(-(p * np.log(p)).sum() / math.log(len(x))) + 0.0  # + 0.0: no -0.0
