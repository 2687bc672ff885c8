"""Swing item-item similarity on negative feedback, used to extend a user's future negatives (the GTS).

PAPER.md "Progressive GRPO" (reward) and problem 3 (coverage). With I(u) the set of items user u
disliked and U(i) the users who disliked item i:

    raw(i, j) = sum over unordered user pairs {u, v}, u != v, both in U(i) & U(j), of
                (|I(u)| + alpha1)^-t * (|I(v)| + alpha1)^-t / (|I(u) & I(v)| + alpha2)
    score(i, j) = raw(i, j) / |U(j)|^popularity_damping      if |U(i) & U(j)| >= min_co_users, else 0

Two users who share few dislikes are strong evidence that i and j belong together; two users who
dislike everything alike are weak evidence. Unordered pairs: summing ordered pairs would double every
score and change no ranking. `raw` is symmetric; the damping by j's popularity makes `score` not.

Computation: users x items matrix B; user pairs with >= 2 shared dislikes (only those can link two
distinct items); Z = rows B[u] * B[v] (the items u and v share); raw = Z^T diag(c_uv) Z. One sparse
product, no Python loop over item pairs.
"""
from __future__ import annotations

import dataclasses
from typing import Collection, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
import scipy.sparse as sp

from conrec_lib.configs import check_types

Disliked = Union[Mapping[int, Collection[int]], pd.DataFrame]


@dataclasses.dataclass
class SwingConfig:
    """Swing on negative feedback. Defaults: alpha1 = 5.0 is the user-activity smoothing ("userAlpha")
    of Alibaba's Alink/PAI Swing; alpha2 = 1.0 is the pair smoothing ("alpha") of Alink and of the
    original Swing paper (Yang et al. 2020, arXiv 2010.05525); t = 0.25 has no single canonical source
    (Alink uses 0.35, the original paper 0.5 as 1/sqrt|I(u)|), it is this tutorial's pick."""

    # user weight (|I(u)| + alpha1)^-t: users who dislike a lot count less
    alpha1: float = 5.0
    t: float = 0.25
    # pair weight 1 / (|I(u) & I(v)| + alpha2): users who dislike alike count less
    alpha2: float = 1.0
    # a pair (i, j) is scored only if at least this many users disliked both (inclusive).
    # The paper's "more than 5 users disliked both" is min_co_users = 6.
    min_co_users: int = 6
    # score(i, j) is divided by |U(j)|^popularity_damping (0 = no damping; 0.5 = the j side of cosine)
    popularity_damping: float = 0.5
    # neighbours kept per item (row of the score matrix)
    top_k: int = 50

    def __post_init__(self) -> None:
        check_types(self)
        if self.alpha1 < 0 or self.alpha2 <= 0:
            raise ValueError(f"SwingConfig: alpha1 must be >= 0 and alpha2 > 0 (it divides), got "
                             f"alpha1={self.alpha1}, alpha2={self.alpha2}; the defaults are 5.0 and 1.0")
        if self.t < 0 or self.popularity_damping < 0:
            raise ValueError(f"SwingConfig: t and popularity_damping must be >= 0, got t={self.t}, "
                             f"popularity_damping={self.popularity_damping}; use 0 to switch a term off")
        if self.min_co_users < 2:
            raise ValueError(f"SwingConfig.min_co_users must be >= 2 (Swing needs a pair of users who both "
                             f"disliked i and j), got {self.min_co_users}; the paper's rule is 6")
        if self.top_k < 1:
            raise ValueError(f"SwingConfig.top_k must be >= 1, got {self.top_k}")


def _pairs(disliked: Disliked) -> tuple[np.ndarray, np.ndarray]:
    """Unique (user, item) negative pairs as two int arrays, from a mapping or a DataFrame."""
    if isinstance(disliked, pd.DataFrame):
        missing = [c for c in ("user_id", "item_id") if c not in disliked.columns]
        if missing:
            raise ValueError(f"swing_scores: the DataFrame lacks column(s) {missing}; "
                             "pass the negatives as (user_id, item_id) rows")
        if "feedback" in disliked.columns and (disliked["feedback"] != "negative").any():
            raise ValueError("swing_scores: the DataFrame has non-negative feedback rows; "
                             "filter it to feedback == 'negative' first")
        df = disliked[["user_id", "item_id"]].drop_duplicates()
    else:
        df = pd.DataFrame([(u, i) for u, items in disliked.items() for i in set(items)],
                          columns=["user_id", "item_id"])
    users, items = df["user_id"].to_numpy(np.int64), df["item_id"].to_numpy(np.int64)
    if len(items) and items.min() < 0:
        raise ValueError(f"swing_scores: item ids must be >= 0, found {items.min()}")
    return users, items


def _user_item_matrix(users: np.ndarray, items: np.ndarray, n_items: int) -> sp.csr_matrix:
    """Binary (n_users, n_items) matrix; users renumbered 0.. in sorted order."""
    _, rows = np.unique(users, return_inverse=True)
    n_users = int(rows.max()) + 1 if len(rows) else 0
    data = np.ones(len(rows), dtype=np.float64)
    return sp.csr_matrix((data, (rows, items)), shape=(n_users, n_items))


def _raw_swing(B: sp.csr_matrix, cfg: SwingConfig) -> sp.csr_matrix:
    """raw(i, j) of the module docstring, diagonal included; (n_items, n_items)."""
    weight = (np.asarray(B.sum(axis=1)).ravel() + cfg.alpha1) ** -cfg.t  # (n_users,)
    overlap = sp.triu(B @ B.T, k=1).tocoo()  # |I(u) & I(v)| for u < v
    keep = overlap.data >= 2  # one shared item links no distinct pair (i, j)
    u, v, shared = overlap.row[keep], overlap.col[keep], overlap.data[keep]
    c = weight[u] * weight[v] / (shared + cfg.alpha2)  # (P,)
    Z = B[u].multiply(B[v]).tocsr()  # (P, n_items): the items each user pair shares
    return (Z.T @ sp.diags(c) @ Z).tocsr()


def _top_k_rows(M: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the k largest entries of each row; ties go to the lower column id."""
    M = M.tocsr()
    M.sort_indices()
    keep = np.zeros(M.nnz, dtype=bool)
    for i in range(M.shape[0]):
        start, end = M.indptr[i], M.indptr[i + 1]
        order = np.lexsort((M.indices[start:end], -M.data[start:end]))[:k]
        keep[start + order] = True
    coo = M.tocoo()  # same entry order as the csr data
    return sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=M.shape)


def swing_scores(disliked: Disliked, cfg: Optional[SwingConfig] = None,
                 n_items: Optional[int] = None) -> sp.csr_matrix:
    """Swing scores on negative feedback, a sparse (n_items, n_items) matrix; row i: i's top_k neighbours.

    `disliked` is {user_id: disliked item ids} or a DataFrame of negatives with `user_id`, `item_id`.
    A user's repeated dislike of one item counts once (I(u) is a set). `n_items` defaults to max id + 1.
    The diagonal is zero; entries below the co-disliker threshold are absent. cfg=None: SwingConfig().
    """
    cfg = SwingConfig() if cfg is None else cfg
    users, items = _pairs(disliked)
    if n_items is None:
        n_items = int(items.max()) + 1 if len(items) else 0
    if len(items) and items.max() >= n_items:
        raise ValueError(f"swing_scores: item id {items.max()} >= n_items={n_items}; pass the catalogue size")
    B = _user_item_matrix(users, items, n_items)
    co = (B.T @ B).tocsr()  # (n_items, n_items): users who disliked both
    raw = _raw_swing(B, cfg)
    raw = raw.multiply(co >= cfg.min_co_users).tocsr()
    raw = (raw - sp.diags(raw.diagonal())).tocsr()  # no self-neighbours
    popularity = co.diagonal()  # |U(j)|
    damp = np.zeros(n_items)
    damp[popularity > 0] = popularity[popularity > 0] ** -cfg.popularity_damping
    scores = (raw @ sp.diags(damp)).tocsr()
    scores.eliminate_zeros()
    return _top_k_rows(scores, cfg.top_k)


def neighbours(scores: sp.csr_matrix, items: Collection[int], k: int) -> list[int]:
    """The k items with the highest summed Swing score to `items`, excluding `items` themselves.

    Summing (not max) favours items linked to several of the given items. Only positive scores count,
    so fewer than k may come back. Ties go to the lower item id.

    >>> S = sp.csr_matrix(np.array([[0, 2, 1, 0], [2, 0, 0, 1], [1, 0, 0, 3], [0, 1, 3, 0]], float))
    >>> neighbours(S, {0, 1}, k=5)  # item 2: 1; item 3: 1 (tie -> lower id first)
    [2, 3]
    """
    if k < 1:
        raise ValueError(f"neighbours: k must be >= 1, got {k}")
    items = sorted({int(i) for i in items})
    if not items:
        return []
    total = np.asarray(scores[items].sum(axis=0)).ravel()  # (n_items,)
    total[items] = 0.0
    candidates = np.flatnonzero(total > 0)
    order = np.lexsort((candidates, -total[candidates]))
    return [int(j) for j in candidates[order][:k]]


def extend_with_neighbours(future_negatives: Sequence[Collection[int]], scores: sp.csr_matrix,
                           k: int) -> list[set[int]]:
    """The paper's GTS per example: its future negatives plus their k strongest Swing neighbours."""
    return [{int(i) for i in fut} | set(neighbours(scores, fut, k)) for fut in future_negatives]
