"""Non-LLM baselines of notebook 06, trained on the split's training period and scored by `recommend.score`.

PAPER.md "Evaluation in the paper" compares CoNRec with sequential recommenders (SASRec, TIGER: see
`sasrec.py`, `tiger.py`) and LC-Rec style LLMs. This module holds the baselines without a neural network:

- `MostDisliked`: the items disliked most often before the test cutoff (negative popularity);
- `ItemNeighbours`: Swing (`swing.py`) or item-KNN (cosine) neighbours of the user's most recent negatives;
- `OwnNegatives`: the personal yardstick: the most-disliked list re-weighted by the facets (category,
  attributes; on real data genres or SID prefixes) of the user's *own* past negatives;
- `Oracle` (simulator only): the ceiling: the simulator's true dislike of each item times how often the
  platform exposed the item in the week before the test cutoff (what a model could at best know);
- `CategoryBlock`: the rule a platform would write by hand: block whole categories (facets) the user
  disliked; as a recommender it ranks the items of those categories. `blocked_facets` exposes the
  blocked set per user, so the A/B test can put the same rule in front of a recommender as a filter.

Every baseline learns only from negatives *before each user's test cutoff* (`training_negatives`), so none
sees the test window. Shared rules, stated once:
- a user's own past negatives are never recommended (the platform does not show them again); this is the
  rule of the reference rankings of notebook 03 as well;
- `backfill=True`: a list shorter than k (few neighbours, no disliked category) is topped up with the
  most-disliked items. Off, the list stays short (metrics.py allows it) and the baseline loses slots.

Common interface: `Baseline.fit(prepared, tokenized, cfg) -> Baseline`, then `.recommend(examples, k)`
with `examples` the split's test rows (user_id, cutoff_ts, ...), returning one ranked item list per row.
"""
from __future__ import annotations

import dataclasses
from typing import Collection, Optional, Protocol, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from conrec_lib.data import dataset as data
from conrec_lib.baselines import swing
from conrec_lib.configs import check_types
from conrec_lib.data.histories import history_items, history_sequences  # the users' histories, one home
from conrec_lib.data.dataprep import PreparedData
from conrec_lib.baselines.swing import SwingConfig

SIMILARITIES = ("swing", "cosine")


@dataclasses.dataclass
class BaselineConfig:
    """Settings of the model-free baselines (SASRec and TIGER have their own configs)."""

    # ItemNeighbours
    recent_negatives: int = 5  # neighbours of the user's last n negatives are recommended
    # Swing on the training negatives. The paper's rule is min_co_users=6 (more than 5 co-dislikers); on the
    # sparse real logs (KuaiRand: ~1 negative per item) that leaves almost no pair, so the baseline uses 2.
    swing: SwingConfig = dataclasses.field(default_factory=lambda: SwingConfig(min_co_users=2))
    knn_top_k: int = 50  # item-KNN: neighbours kept per item
    # CategoryBlock
    block_columns: tuple[str, ...] = ("category",)  # facet columns a rule may block (data.item_facets)
    block_min_negatives: int = 2  # a facet is blocked once the user disliked this many items carrying it
    # OwnNegatives: how far the user's own facet shares tilt the most-disliked list
    own_strength: float = 20.0  # 0: most_disliked itself
    own_smoothing: float = 2.0  # pseudo-negatives: users with few negatives stay near most_disliked
    # all
    backfill: bool = True  # top up short lists with the most-disliked items (module docstring)

    def __post_init__(self) -> None:
        check_types(self)
        self.block_columns = tuple(self.block_columns)
        for name in ("recent_negatives", "knn_top_k", "block_min_negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"BaselineConfig.{name}={getattr(self, name)}: must be >= 1")
        if not self.block_columns:
            raise ValueError("BaselineConfig.block_columns is empty; name at least one facet column, e.g. "
                             "('category',)")


class Baseline(Protocol):
    """What every baseline (here, in sasrec.py and tiger.py) offers after `fit`."""

    name: str

    def recommend(self, examples: pd.DataFrame, k: int = 20) -> list[list[int]]:
        """Per example row (user_id, cutoff_ts), up to k distinct item ids, best first."""
        ...


# --- the training period and the users' histories ------------------------------------------------------

def training_negatives(prepared: PreparedData) -> pd.DataFrame:
    """Negative rows (user_id, item_id, timestamp) from before each user's test cutoff, sorted by user and time.

    What every baseline (and Swing in notebook 03) may learn from.
    """
    rows = prepared.split.training_rows("negative")[["user_id", "item_id", "timestamp"]]
    return rows.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)


def training_sequences(prepared: PreparedData) -> list[list[int]]:
    """Per user with training negatives, their disliked item ids in time order (sequence models' data)."""
    rows = training_negatives(prepared)
    return [g.tolist() for _, g in rows.groupby("user_id", sort=True)["item_id"]]


def ranked(scores: np.ndarray, exclude: Collection[int], k: int) -> list[int]:
    """The k items of highest score (ties: lower id), never one of `exclude`.

    >>> ranked(np.array([0.0, 3.0, 3.0, 1.0]), {2}, k=2)
    [1, 3]
    """
    exclude = set(exclude)
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in order[:k + len(exclude)] if int(i) not in exclude][:k]


def negative_popularity(prepared: PreparedData) -> np.ndarray:
    """(n_items,) how often each item was disliked before the test cutoff."""
    return np.bincount(training_negatives(prepared)["item_id"], minlength=prepared.dataset.n_items).astype(float)


def backfilled(ranking: Sequence[int], popularity: np.ndarray, exclude: Collection[int], k: int) -> list[int]:
    """`ranking` cut to k, topped up with the most popular items not yet in it nor excluded.

    >>> backfilled([4], np.array([1.0, 5.0, 3.0, 0.0, 0.0]), {1}, k=3)
    [4, 2, 0]
    """
    head = [int(i) for i in ranking[:k]]
    return head + ranked(popularity, set(exclude) | set(head), k - len(head))


# --- notebook 03's reference rankings (kept here so every baseline lives in one module) -----------------

def popularity_predictions(prepared: PreparedData, examples: pd.DataFrame, k: int = 20) -> list[list[int]]:
    """The k most-disliked items before the test cutoff, minus the user's own past negatives (the platform
    never shows those again): `MostDisliked`, as a function."""
    return MostDisliked.fit(prepared).recommend(examples, k)


def like_history_predictions(prepared: PreparedData, first_codes: np.ndarray, examples: pd.DataFrame,
                             feedback: str, k: int = 20) -> list[list[int]]:
    """Items ranked by how many of the user's past `feedback` items share their first SID code (~ category),
    then by negative popularity; never a past negative."""
    pop = negative_popularity(prepared)
    tie = pop / (pop.max() + 1.0)  # < 1: only breaks ties between equal code counts
    out = []
    for seen, past in zip(history_items(prepared, examples, "negative"), history_items(prepared, examples, feedback)):
        counts = np.bincount(first_codes[sorted(past)], minlength=int(first_codes.max()) + 1)  # (n_codes,)
        out.append(ranked(counts[first_codes] + tie, seen, k))
    return out


# --- most disliked -------------------------------------------------------------------------------------

@dataclasses.dataclass
class MostDisliked:
    """The items disliked most often in the training period, the same list for everyone (minus their own)."""

    prepared: PreparedData
    popularity: np.ndarray  # (n_items,) training negatives per item
    name: str = "most_disliked"

    @classmethod
    def fit(cls, prepared: PreparedData, tokenized=None, cfg: Optional[BaselineConfig] = None) -> "MostDisliked":
        return cls(prepared, negative_popularity(prepared))

    def recommend(self, examples: pd.DataFrame, k: int = 20) -> list[list[int]]:
        return [ranked(self.popularity, seen, k) for seen in history_items(self.prepared, examples, "negative")]


# --- neighbours of the recent negatives ----------------------------------------------------------------

def cosine_neighbours(rows: pd.DataFrame, n_items: int, top_k: int) -> sp.csr_matrix:
    """Item-KNN: cosine similarity of items' disliker sets, top_k per row, no self-similarity.

    >>> S = cosine_neighbours(pd.DataFrame({"user_id": [0, 0, 1, 1], "item_id": [0, 1, 0, 2]}), 3, 5)
    >>> S.toarray().round(2).tolist()
    [[0.0, 0.71, 0.71], [0.71, 0.0, 0.0], [0.71, 0.0, 0.0]]
    """
    pairs = rows[["user_id", "item_id"]].drop_duplicates()
    B = sp.csr_matrix((np.ones(len(pairs)), (pairs["user_id"], pairs["item_id"])),
                      shape=(int(pairs["user_id"].max()) + 1, n_items))  # (users, items)
    norms = np.sqrt(np.asarray(B.sum(axis=0)).ravel())  # (items,)
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    sim = (sp.diags(inv) @ (B.T @ B) @ sp.diags(inv)).tocsr()
    sim.setdiag(0.0)
    sim.eliminate_zeros()
    return swing._top_k_rows(sim, top_k)


@dataclasses.dataclass
class ItemNeighbours:
    """Items most similar (summed score) to the user's `recent` last negatives: Swing or item-KNN (cosine)."""

    prepared: PreparedData
    scores: sp.csr_matrix  # (n_items, n_items) item -> neighbour similarity
    popularity: np.ndarray
    recent: int
    backfill: bool
    name: str = "swing"

    @classmethod
    def fit(cls, prepared: PreparedData, tokenized=None, cfg: Optional[BaselineConfig] = None,
            similarity: str = "swing") -> "ItemNeighbours":
        cfg = cfg or BaselineConfig()
        if similarity not in SIMILARITIES:
            raise ValueError(f"ItemNeighbours: similarity={similarity!r}; use one of {SIMILARITIES}")
        rows, n_items = training_negatives(prepared), prepared.dataset.n_items
        scores = (swing.swing_scores(rows, cfg.swing, n_items) if similarity == "swing"
                  else cosine_neighbours(rows, n_items, cfg.knn_top_k))
        name = "swing" if similarity == "swing" else "item_knn"
        return cls(prepared, scores, negative_popularity(prepared), cfg.recent_negatives, cfg.backfill, name)

    def recommend(self, examples: pd.DataFrame, k: int = 20) -> list[list[int]]:
        out = []
        for seq in history_sequences(self.prepared, examples, "negative"):
            seen = set(seq)
            recent = list(dict.fromkeys(reversed(seq)))[:self.recent]  # distinct, most recent first
            found = [i for i in swing.neighbours(self.scores, recent, k + len(seen)) if i not in seen][:k] \
                if recent else []
            out.append(backfilled(found, self.popularity, seen, k) if self.backfill else found)
        return out


# --- the category-block rule ---------------------------------------------------------------------------

def facet_counts(disliked: Sequence[int], item_facets: Sequence[frozenset[str]],
                 columns: Sequence[str]) -> dict[str, int]:
    """How many of the disliked items carry each facet of the given columns ("column=value").

    >>> f = [frozenset({"category=a", "color=red"}), frozenset({"category=a"}), frozenset({"category=b"})]
    >>> facet_counts([0, 1, 2, 1], f, ["category"])
    {'category=a': 3, 'category=b': 1}
    """
    prefixes = tuple(f"{c}=" for c in columns)
    counts: dict[str, int] = {}
    for item in disliked:
        for facet in item_facets[int(item)]:
            if facet.startswith(prefixes):
                counts[facet] = counts.get(facet, 0) + 1
    return dict(sorted(counts.items()))


def blocked_from_history(histories: Sequence[Sequence[int]], item_facets: Sequence[frozenset[str]],
                         columns: Sequence[str] = ("category",), min_negatives: int = 2) -> list[frozenset[str]]:
    """Per history (disliked item ids), the facets of `columns` carried by at least `min_negatives` of them.

    Repeated dislikes of one item count each time. The pure core of `blocked_facets`, for callers (the A/B
    test) that keep their own histories.

    >>> f = [frozenset({"category=a"}), frozenset({"category=a"}), frozenset({"category=b"})]
    >>> blocked_from_history([[0, 1, 2], [2]], f, min_negatives=2)
    [frozenset({'category=a'}), frozenset()]
    """
    if min_negatives < 1:
        raise ValueError(f"blocked_from_history: min_negatives={min_negatives}; use 1 or more")
    return [frozenset(f for f, n in facet_counts(h, item_facets, columns).items() if n >= min_negatives)
            for h in histories]


def blocked_facets(prepared: PreparedData, user_ids: Sequence[int], cutoff_ts: Sequence[int],
                   cfg: Optional[BaselineConfig] = None) -> list[frozenset[str]]:
    """Per (user, cutoff), the facets the category-block rule blocks: those of `cfg.block_columns` that at
    least `cfg.block_min_negatives` of the user's negatives before the cutoff carry.

    Use with `data.item_facets(ds)`: an item is blocked when its facets meet the set (`is_blocked`).
    """
    cfg = cfg or BaselineConfig()
    rows = pd.DataFrame({"user_id": list(user_ids), "cutoff_ts": list(cutoff_ts)})
    histories = history_sequences(prepared, rows, "negative")
    return blocked_from_history(histories, data.item_facets(prepared.dataset), cfg.block_columns,
                                cfg.block_min_negatives)


def is_blocked(item_ids: Sequence[int], blocked: frozenset[str], item_facets: Sequence[frozenset[str]]) -> np.ndarray:
    """(len(item_ids),) bool: which items carry a blocked facet (what the filter removes).

    >>> is_blocked([0, 1], frozenset({"category=a"}), [frozenset({"category=a"}), frozenset({"category=b"})])
    array([ True, False])
    """
    return np.array([not blocked.isdisjoint(item_facets[int(i)]) for i in item_ids], dtype=bool)


def facet_matrix(item_facets: Sequence[frozenset[str]], columns: Sequence[str]) -> tuple[sp.csr_matrix, list[str]]:
    """(n_items, n_facets) 0/1 matrix of the items' facets of `columns`, and the facet names (sorted).

    >>> M, names = facet_matrix([frozenset({"category=b", "color=red"}), frozenset({"category=a"})], ["category"])
    >>> M.toarray().tolist(), names
    ([[0.0, 1.0], [1.0, 0.0]], ['category=a', 'category=b'])
    """
    prefixes = tuple(f"{c}=" for c in columns)
    names = sorted({f for fs in item_facets for f in fs if f.startswith(prefixes)})
    col = {f: j for j, f in enumerate(names)}
    pairs = [(i, col[f]) for i, fs in enumerate(item_facets) for f in fs if f in col]
    rows, cols = (np.array(x, dtype=np.int64) for x in zip(*pairs)) if pairs else (np.zeros(0, int),) * 2
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(item_facets), len(names))), names


@dataclasses.dataclass
class CategoryBlock:
    """As a recommender: the items of the user's blocked facets, by the user's dislike count of the facet
    (the largest one an item carries), then by negative popularity."""

    prepared: PreparedData
    facets: sp.csr_matrix  # (n_items, n_facets) facet_matrix of cfg.block_columns
    popularity: np.ndarray
    cfg: BaselineConfig
    name: str = "category_block"

    @classmethod
    def fit(cls, prepared: PreparedData, tokenized=None, cfg: Optional[BaselineConfig] = None) -> "CategoryBlock":
        cfg = cfg or BaselineConfig()
        matrix, _ = facet_matrix(data.item_facets(prepared.dataset), cfg.block_columns)
        return cls(prepared, matrix, negative_popularity(prepared), cfg)

    def item_scores(self, disliked: Sequence[int]) -> np.ndarray:
        """(n_items,) per item: the user's dislike count of the blocked facets it carries (max; 0: none)."""
        counts = np.asarray(self.facets[list(disliked)].sum(axis=0)).ravel()  # (n_facets,) repeats count
        counts[counts < self.cfg.block_min_negatives] = 0.0  # only blocked facets score
        return self.facets.multiply(counts[None, :]).tocsr().max(axis=1).toarray().ravel()

    def recommend(self, examples: pd.DataFrame, k: int = 20) -> list[list[int]]:
        tie = self.popularity / (self.popularity.max() + 1.0)  # < 1: orders items within a count
        out = []
        for seq in history_sequences(self.prepared, examples, "negative"):
            scores = self.item_scores(seq)
            found = [i for i in ranked(scores + tie, seq, k) if scores[i] > 0]  # items of blocked facets only
            out.append(backfilled(found, self.popularity, seq, k) if self.cfg.backfill else found)
        return out


# --- the user's own negatives: the personal non-LLM yardstick ------------------------------------------

def user_facets(prepared: PreparedData, tokenized=None) -> list[frozenset[str]]:
    """Per item, the facets a personal baseline may match: `data.item_facets` (category and attributes; real
    data: its category/genres) plus, with `tokenized`, the SID prefixes "sid_a=5", "sid_ab=5_2"."""
    facets = data.item_facets(prepared.dataset)
    if tokenized is None:
        return facets
    codes = tokenized.sids.table.codes
    return [f | {f"sid_a={c[0]}", f"sid_ab={c[0]}_{c[1]}"} for f, c in zip(facets, codes)]


def facet_affinity(matrix: sp.csr_matrix, disliked: Sequence[int], smoothing: float) -> np.ndarray:
    """(n_facets,) share of the user's disliked items carrying each facet, shrunk towards 0 by `smoothing`.

    >>> m = sp.csr_matrix(np.array([[1.0, 0.0], [1.0, 1.0]]))
    >>> facet_affinity(m, [0, 1], smoothing=2.0).tolist()
    [0.5, 0.25]
    """
    counts = np.asarray(matrix[list(disliked)].sum(axis=0)).ravel() if len(disliked) else np.zeros(matrix.shape[1])
    return counts / (len(disliked) + smoothing)


@dataclasses.dataclass
class OwnNegatives:
    """score(i) = pop(i) * (1 + strength * sum over the facets f of i of affinity_u(f)): the most-disliked list
    tilted towards what this user disliked before (`facet_affinity`); never a past negative."""

    prepared: PreparedData
    facets: sp.csr_matrix  # (n_items, n_facets)
    popularity: np.ndarray
    cfg: BaselineConfig
    name: str = "own_negatives"

    @classmethod
    def fit(cls, prepared: PreparedData, tokenized=None, cfg: Optional[BaselineConfig] = None) -> "OwnNegatives":
        cfg = cfg or BaselineConfig()
        item_facets = user_facets(prepared, tokenized)
        matrix, _ = facet_matrix(item_facets, sorted({f.split("=")[0] for fs in item_facets for f in fs}))
        return cls(prepared, matrix, negative_popularity(prepared) + 1.0, cfg)

    def item_scores(self, disliked: Sequence[int]) -> np.ndarray:
        affinity = facet_affinity(self.facets, disliked, self.cfg.own_smoothing)  # (n_facets,)
        return self.popularity * (1.0 + self.cfg.own_strength * (self.facets @ affinity))  # (n_items,)

    def recommend(self, examples: pd.DataFrame, k: int = 20) -> list[list[int]]:
        return [ranked(self.item_scores(seq), seq, k)
                for seq in history_sequences(self.prepared, examples, "negative")]


# --- the simulator's ceiling ---------------------------------------------------------------------------

def recent_exposure(prepared: PreparedData, days: int = 7) -> np.ndarray:
    """(n_items,) how often each item was shown (any feedback) in the `days` before the test cutoff, + 1."""
    inter = prepared.dataset.interactions
    cutoff = int(prepared.split.test_cutoffs().min())
    recent = inter[(inter["timestamp"] < cutoff) & (inter["timestamp"] >= cutoff - days * data.SECONDS_PER_DAY)]
    return np.bincount(recent["item_id"], minlength=prepared.dataset.n_items).astype(float) + 1.0


@dataclasses.dataclass
class Oracle:
    """The ceiling of the simulator: true dislike (`simulate.dislike_scores`, which "not interested" is
    proportional to) times the item's exposure in the week before the cutoff, minus the user's past negatives.

    It reads the hidden ground truth, so it is a yardstick, never a competitor (the issue's measured ceiling:
    FHR@20 0.54 on the default world)."""

    prepared: PreparedData
    scores: np.ndarray  # (n_users, n_items)
    name: str = "oracle"

    @classmethod
    def fit(cls, prepared: PreparedData, tokenized=None, cfg: Optional[BaselineConfig] = None) -> "Oracle":
        from conrec_lib.data import simulate

        if prepared.dataset.ground_truth is None:
            raise ValueError(f"Oracle: dataset {prepared.dataset.name!r} has no ground truth; the oracle exists "
                             "only on the simulator (leave 'oracle' out on real data)")
        return cls(prepared, simulate.dislike_scores(prepared.dataset) * recent_exposure(prepared)[None, :])

    def recommend(self, examples: pd.DataFrame, k: int = 20) -> list[list[int]]:
        seen = history_items(self.prepared, examples, "negative")
        return [ranked(self.scores[int(u)], s, k) for u, s in zip(examples["user_id"], seen)]
