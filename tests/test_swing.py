"""Swing on negative feedback: a hand-computed toy case, the threshold, symmetry, determinism, speed."""
import itertools
import time

import numpy as np
import pandas as pd
import pytest

from conrec_lib.baselines import swing

# u0..u3 disliked these items; |I(u)| = 2, 3, 3, 2
TOY = {0: {0, 1}, 1: {0, 1, 2}, 2: {1, 2, 3}, 3: {0, 1}}
W2, W3 = 7 ** -0.25, 8 ** -0.25  # (|I(u)| + alpha1)^-t with alpha1 = 5, t = 0.25
# (0, 1): co-dislikers u0, u1, u3; every pair of them shares {0, 1} -> 1 / (2 + alpha2) = 1/3
RAW_01 = (W2 * W3 + W2 * W2 + W3 * W2) / 3
# (1, 2): co-dislikers u1, u2, who share {1, 2}
RAW_12 = W3 * W3 / 3


def _cfg(**kw) -> swing.SwingConfig:
    return swing.SwingConfig(**{"min_co_users": 2, "popularity_damping": 0.0, "top_k": 100, **kw})


def test_toy_values_by_hand():
    S = swing.swing_scores(TOY, _cfg()).toarray()
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 0] = RAW_01
    expected[1, 2] = expected[2, 1] = RAW_12
    np.testing.assert_allclose(S, expected, rtol=1e-12)


def test_threshold_drops_pairs_with_too_few_co_dislikers():
    S = swing.swing_scores(TOY, _cfg(min_co_users=3)).toarray()  # (1, 2) has only 2 co-dislikers
    assert S[1, 2] == 0 and S[2, 1] == 0
    assert S[0, 1] == pytest.approx(RAW_01)
    assert swing.swing_scores(TOY, _cfg(min_co_users=4)).nnz == 0


def test_popularity_damping_divides_by_popularity_of_j():
    S = swing.swing_scores(TOY, _cfg(popularity_damping=1.0)).toarray()
    assert S[0, 1] == pytest.approx(RAW_01 / 4)  # 4 users disliked item 1
    assert S[1, 0] == pytest.approx(RAW_01 / 3)  # 3 users disliked item 0


def test_symmetric_without_damping_and_zero_diagonal():
    rng = np.random.default_rng(0)
    disliked = {u: set(rng.choice(25, 5, replace=False).tolist()) for u in range(40)}
    S = swing.swing_scores(disliked, _cfg())
    assert abs(S - S.T).max() == 0
    assert not S.diagonal().any()


def _brute_force(disliked, cfg, n_items):
    users_of = {i: {u for u, s in disliked.items() if i in s} for i in range(n_items)}
    out = np.zeros((n_items, n_items))
    for i, j in itertools.permutations(range(n_items), 2):
        co = users_of[i] & users_of[j]
        if len(co) < cfg.min_co_users:
            continue
        w = lambda u: (len(disliked[u]) + cfg.alpha1) ** -cfg.t  # noqa: E731
        raw = sum(w(u) * w(v) / (len(disliked[u] & disliked[v]) + cfg.alpha2)
                  for u, v in itertools.combinations(sorted(co), 2))
        out[i, j] = raw / len(users_of[j]) ** cfg.popularity_damping
    return out


def test_matches_brute_force_definition():
    rng = np.random.default_rng(1)
    disliked = {u: set(rng.choice(20, rng.integers(2, 8), replace=False).tolist()) for u in range(30)}
    cfg = swing.SwingConfig(min_co_users=3, popularity_damping=0.7, top_k=100, alpha1=2.0, t=0.4, alpha2=0.5)
    S = swing.swing_scores(disliked, cfg, n_items=20).toarray()
    np.testing.assert_allclose(S, _brute_force(disliked, cfg, 20), rtol=1e-10, atol=1e-15)


def test_top_k_keeps_the_strongest_neighbours():
    rng = np.random.default_rng(2)
    disliked = {u: set(rng.choice(15, 6, replace=False).tolist()) for u in range(30)}
    full = swing.swing_scores(disliked, _cfg()).toarray()
    top = swing.swing_scores(disliked, _cfg(top_k=2)).toarray()
    for i in range(15):
        kept = np.flatnonzero(top[i])
        assert len(kept) == min(2, np.count_nonzero(full[i]))
        if len(kept):
            assert top[i, kept].min() >= np.sort(full[i])[-len(kept)]


def test_dataframe_input_is_deterministic_and_order_free():
    df = pd.DataFrame([(u, i) for u, items in TOY.items() for i in items], columns=["user_id", "item_id"])
    shuffled = pd.concat([df, df.head(3)]).sample(frac=1.0, random_state=0)  # duplicates count once
    a = swing.swing_scores(df, _cfg()).toarray()
    b = swing.swing_scores(shuffled, _cfg()).toarray()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, swing.swing_scores(TOY, _cfg()).toarray())


def test_input_and_config_validation():
    bad = pd.DataFrame({"user_id": [0], "item_id": [1], "feedback": ["positive"]})
    with pytest.raises(ValueError, match="non-negative feedback"):
        swing.swing_scores(bad)
    with pytest.raises(ValueError, match="n_items"):
        swing.swing_scores(TOY, _cfg(), n_items=3)
    with pytest.raises(ValueError, match="min_co_users"):
        swing.SwingConfig(min_co_users=1)
    with pytest.raises(ValueError, match="alpha2"):
        swing.SwingConfig(alpha2=0.0)


def test_neighbours_and_gts_extension():
    S = swing.swing_scores(TOY, _cfg())
    assert swing.neighbours(S, {0}, k=5) == [1]
    assert swing.neighbours(S, {0, 1}, k=5) == [2]  # the given items never come back
    assert swing.neighbours(S, {3}, k=5) == []       # item 3 has no neighbour above the threshold
    assert swing.extend_with_neighbours([{0}, {2, 3}, set()], S, k=1) == [{0, 1}, {1, 2, 3}, set()]


def test_fast_on_a_tutorial_sized_input():
    rng = np.random.default_rng(3)
    disliked = {u: set(rng.choice(500, 15, replace=False).tolist()) for u in range(1000)}
    start = time.perf_counter()
    S = swing.swing_scores(disliked, swing.SwingConfig(min_co_users=2))
    assert time.perf_counter() - start < 10.0  # ~0.1 s measured on the shared CPU
    assert S.nnz > 0
