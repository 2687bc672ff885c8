"""The A/B test's arms: filters that hide items from a user's slates (none, random, by facets, by embedding
similarity to a model's predicted negatives, the category rule), each a `Filter` the runner in `ab_test` calls.

Plugging in a model: predict each user's negative items once from `start_log(world)` (what a deployment knows at
the start) and wrap them in `Fixed`, then `embedding_filter` (the paper's rule, `deployment.item_mask`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
import pandas as pd

from conrec_lib.baselines import heuristics as baselines
from conrec_lib.data import dataset as data
from conrec_lib.data import simulate as sim
from conrec_lib.evaluation import deployment


class Filter(Protocol):
    """What an arm puts in front of the platform's recommender.

    `start` is called once per arm run with every user and the log before the A/B period (the same for
    every arm and seed); `blocked` then answers, each day, which items each visiting user must not see.
    `log` is the data-model interactions table so far (the logged days before the start, then this
    arm's A/B days).
    """

    def start(self, user_ids: np.ndarray, day: int, log: pd.DataFrame) -> None: ...

    def blocked(self, user_ids: np.ndarray, day: int, log: pd.DataFrame) -> np.ndarray: ...  # (U, I) bool


@dataclasses.dataclass(eq=False)
class NoFilter:
    """Blocks nothing (an arm with it must equal the control arm exactly)."""

    n_items: int

    def start(self, user_ids: np.ndarray, day: int, log: pd.DataFrame) -> None:
        pass

    def blocked(self, user_ids: np.ndarray, day: int, log: pd.DataFrame) -> np.ndarray:
        return np.zeros((len(user_ids), self.n_items), bool)


@dataclasses.dataclass(eq=False)
class RandomFilter:
    """Blocks each (user, item) with probability `share`, fresh each day; needs no ground truth (for tests).

    Its false-filter rate estimates the platform's plain positive rate on the candidates it hits.
    """

    n_items: int
    share: float
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.share <= 1:
            raise ValueError(f"RandomFilter.share={self.share}: use a probability in [0, 1]")

    def start(self, user_ids: np.ndarray, day: int, log: pd.DataFrame) -> None:
        pass

    def blocked(self, user_ids: np.ndarray, day: int, log: pd.DataFrame) -> np.ndarray:
        rows = [np.random.default_rng([self.seed, day, int(u)]).random(self.n_items) for u in user_ids]
        return np.array(rows).reshape(len(user_ids), self.n_items) < self.share


@dataclasses.dataclass(eq=False)
class MaskFilter:
    """Blocks per user the items of a mask built from `source`'s per-user output (item sets or facets).

    `source(user_ids, day, log)` runs for every user at `start`; with `refresh_days` > 0 it runs again for
    a visiting user whose output is that many days old (a deployment's periodic offline refresh). The
    start masks depend only on the start state, so they are computed once and reused by every arm run
    (keyed by the start day and log length: use one filter object per world). `start` gets every user id.
    """

    source: Callable[[np.ndarray, int, pd.DataFrame], Sequence]
    to_mask: Callable[[Sequence], np.ndarray]  # per-user outputs -> (U, n_items) bool
    refresh_days: int = 0  # 0: only at the start of the A/B period (GPU: 1, daily)
    # state: the start masks (cached per start day and log length), this run's masks and their age
    _start_key: tuple = dataclasses.field(default=(), init=False, repr=False)
    _start_mask: Optional[np.ndarray] = dataclasses.field(default=None, init=False, repr=False)
    _mask: Optional[np.ndarray] = dataclasses.field(default=None, init=False, repr=False)
    _made_on: Optional[np.ndarray] = dataclasses.field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.refresh_days < 0:
            raise ValueError(f"MaskFilter.refresh_days={self.refresh_days}: use 0 (start only) or n >= 1 days")

    def start(self, user_ids: np.ndarray, day: int, log: pd.DataFrame) -> None:
        key = (day, len(log), len(user_ids))
        if key != self._start_key:
            self._start_mask = self.to_mask(self.source(user_ids, day, log))
            self._start_key = key
        self._mask = self._start_mask.copy()
        self._made_on = np.full(len(user_ids), day)

    def blocked(self, user_ids: np.ndarray, day: int, log: pd.DataFrame) -> np.ndarray:
        if self._mask is None:
            raise RuntimeError("MaskFilter.blocked before start(); run it through ab_test.run_ab_test")
        if self.refresh_days > 0:
            stale = user_ids[day - self._made_on[user_ids] >= self.refresh_days]
            if len(stale):
                self._mask[stale] = self.to_mask(self.source(stale, day, log))
                self._made_on[stale] = day
        return self._mask[user_ids]


@dataclasses.dataclass
class Fixed:
    """A source that returns precomputed per-user outputs (e.g. the model's predicted sets for every user)."""

    per_user: Sequence  # indexed by user id

    def __call__(self, user_ids: np.ndarray, day: int, log: pd.DataFrame) -> list:
        return [self.per_user[int(u)] for u in user_ids]


@dataclasses.dataclass
class BlockRule:
    """The category-blocking baseline as a source: `baselines.blocked_from_history` on the log's negatives.

    A facet of `columns` is blocked once the user said "not interested" to `min_negatives` items carrying
    it (the same rule, and defaults, as `baselines.CategoryBlock`).
    """

    item_facets: Sequence[frozenset[str]]
    columns: tuple[str, ...] = ("category",)
    min_negatives: int = 2

    def __call__(self, user_ids: np.ndarray, day: int, log: pd.DataFrame) -> list[frozenset[str]]:
        neg = log.loc[(log["feedback"] == "negative") & log["user_id"].isin(user_ids), ["user_id", "item_id"]]
        by_user = neg.groupby("user_id")["item_id"].agg(list).to_dict()
        histories = [by_user.get(int(u), []) for u in user_ids]
        return baselines.blocked_from_history(histories, self.item_facets, self.columns, self.min_negatives)


def facet_mask(blocked_facets: Sequence[set[str]], item_facets: Sequence[frozenset[str]]) -> np.ndarray:
    """(U, n_items) bool: an item is blocked for a user when it carries any of the user's blocked facets.

    >>> facet_mask([{"color=red"}, set()], [frozenset({"color=red"}), frozenset({"color=blue"})]).tolist()
    [[True, False], [False, False]]
    """
    mask = np.zeros((len(blocked_facets), len(item_facets)), bool)
    for u, facets in enumerate(blocked_facets):
        if facets:
            mask[u] = [not facets.isdisjoint(f) for f in item_facets]
    return mask


def embedding_filter(predict: Callable[[np.ndarray, int, pd.DataFrame], Sequence[Sequence[int]]],
                     embeddings: np.ndarray, cfg: deployment.FilterConfig, refresh_days: int = 0) -> MaskFilter:
    """The CoNRec deployment filter: `predict` gives each user's predicted negative items (best first);
    an item is blocked when its max cosine to them exceeds cfg.theta (`deployment.item_mask`).

    Predictions computed once before the test: `embedding_filter(Fixed(sets), emb, cfg)` with
    `sets[u]` predicted from `start_log(world)`.
    """
    return MaskFilter(predict, functools.partial(deployment.item_mask, embeddings=embeddings, cfg=cfg),
                      refresh_days)


def facet_filter(facets: Callable[[np.ndarray, int, pd.DataFrame], Sequence[set[str]]], world: sim.World,
                 refresh_days: int = 0) -> MaskFilter:
    """Blocks every item carrying one of the user's blocked facets ("category=mugs", "material=leather")."""
    item_facets = data.item_facets(world.dataset)
    return MaskFilter(facets, functools.partial(facet_mask, item_facets=item_facets), refresh_days)


def category_rule(world: sim.World, columns: Sequence[str] = ("category",), min_negatives: int = 2) -> MaskFilter:
    """The category-blocking baseline in front of the platform, recomputed daily from the log (no ground truth)."""
    rule = BlockRule(data.item_facets(world.dataset), tuple(columns), min_negatives)
    return facet_filter(rule, world, refresh_days=1)


def true_aversions(world: sim.World, top_k: Optional[int] = None) -> list[set[str]]:
    """Per user id: the simulator's ground-truth aversion facets (the `top_k` strongest; None: all)."""
    gt = world.users.aversions
    gt = gt if top_k is None else gt[gt["rank"] < top_k]
    by_user = gt.groupby("user_id")["facet"].agg(set).to_dict()
    return [by_user.get(u, set()) for u in range(world.config.n_users)]


def oracle_filter(world: sim.World, top_k: Optional[int] = None) -> MaskFilter:
    """Blocks each user's true aversion facets: what a perfect negative recommender could achieve."""
    return facet_filter(Fixed(true_aversions(world, top_k)), world)


def start_log(world: sim.World) -> pd.DataFrame:
    """The interactions a deployment knows at the start of the A/B period (days before `world.start_day`)."""
    inter = world.dataset.interactions
    return inter[inter["day"] < world.start_day].reset_index(drop=True)
