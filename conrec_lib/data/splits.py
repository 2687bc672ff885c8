"""Time-based splits: per (user, cutoff), the history before the cutoff and the negatives that follow it.

Every later notebook trains and evaluates on these examples (PAPER.md, "Evaluation in the paper").
An example is one (user, cutoff) with at least one negative in the future window
[cutoff, cutoff + horizon_days); users without one get no example at that cutoff (users with no
negatives at all get none, but their rows are still history). Columns:

    user_id, cutoff_day, cutoff_ts   the cutoff: history is every interaction with timestamp < cutoff_ts
    window_end_ts                    the future window is [cutoff_ts, window_end_ts)
    next_negative, next_negative_ts  the first negative at or after the cutoff (HR@K's target)
    future_negatives                 distinct negative items of the window, in time order (FHR@K's target)
    future_positives                 distinct positive items of the window (the reward's penalty set)
    candidates                       up to n_candidates distinct items shown to the user in the window on the
                                     day of the next negative, always including it (CandAcc); when more were
                                     shown, the others are sampled with the seed. Order shuffled; other
                                     negatives of that day may be among them
    n_hist_neg, n_hist_pos           negatives / positives in the history
    longtail_user                    n_hist_neg < longtail_user_max_neg (paper: fewer than 3 negatives)

Two modes:
- "global" (simulator, KuaiRand): one test cutoff day for everyone, by default `n_days - horizon_days`, so
  the test window is the last `horizon_days` days. Training examples come from earlier cutoff days and their
  windows are TRUNCATED at the test cutoff: nothing at or after the test cutoff is ever used for training.
- "per_user" (MovieLens, whose users mostly rate in one session across 22 years): each user's test cutoff
  is the timestamp of their negative number floor(per_user_fraction * n_neg) (0-based, at most the last
  one), so about 80% of their negatives are history. Training cutoffs sit at every `train_cutoff_every`-th
  earlier negative, windows truncated at the user's own test cutoff. Users' timelines are not aligned,
  so one user's training window may lie after another user's test cutoff: only per-user leakage is ruled out.

Long-tail items (`Split.longtail_items`) have fewer than `longtail_item_max_neg` negatives in the training
history: before the test cutoff (per_user: before each user's own test cutoff).
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from pathlib import Path
from typing import Iterable, NamedTuple, Optional

import numpy as np
import pandas as pd

from conrec_lib import artifacts, runs
from conrec_lib.data import dataset as data
from conrec_lib.configs import check_types

MODES = ("global", "per_user")
LIST_COLUMNS = ("future_negatives", "future_positives", "candidates")
EXAMPLE_COLUMNS = ("user_id", "cutoff_day", "cutoff_ts", "window_end_ts", "next_negative", "next_negative_ts",
                   *LIST_COLUMNS, "n_hist_neg", "n_hist_pos", "longtail_user")
DAY = data.SECONDS_PER_DAY


@dataclasses.dataclass
class SplitConfig:
    """How to cut a dataset's timeline into training and test examples (see the module docstring)."""

    # where the cutoffs go
    mode: str = "global"  # "global": one cutoff day for everyone; "per_user": each user's own timeline
    horizon_days: int = 7  # future window length (paper: the next 7 days)
    test_cutoff_day: Optional[int] = None  # global: default n_days - horizon_days (test window = last H days)
    train_cutoff_days: Optional[tuple[int, ...]] = None  # global: default every `train_cutoff_every` days
    #                                                      back from test_cutoff_day - 1, down to day 1
    train_cutoff_every: int = 2  # days between default training cutoffs (per_user: negatives between them)
    per_user_fraction: float = 0.8  # per_user: share of a user's negatives that lies before the test cutoff
    # examples
    n_candidates: int = 20  # paper: the negative among 20 items exposed that day
    # long tail (paper: users with < 3 negatives, items with < 5)
    longtail_user_max_neg: int = 3  # long-tail user: n_hist_neg < this
    longtail_item_max_neg: int = 5  # long-tail item: fewer negatives than this in the training history
    seed: int = 0  # candidate sampling

    def __post_init__(self) -> None:
        check_types(self)
        if self.train_cutoff_days is not None:
            self.train_cutoff_days = tuple(int(d) for d in self.train_cutoff_days)
        if self.mode not in MODES:
            raise ValueError(f"SplitConfig.mode={self.mode!r}; use one of {MODES}")
        for name in ("horizon_days", "train_cutoff_every", "n_candidates", "longtail_user_max_neg",
                     "longtail_item_max_neg"):
            if getattr(self, name) < 1:
                raise ValueError(f"SplitConfig.{name}={getattr(self, name)} must be >= 1")
        if not 0 < self.per_user_fraction < 1:
            raise ValueError(f"SplitConfig.per_user_fraction={self.per_user_fraction} must be in (0, 1), e.g. 0.8")
        if self.mode == "per_user" and (self.test_cutoff_day is not None or self.train_cutoff_days is not None):
            raise ValueError("SplitConfig: test_cutoff_day / train_cutoff_days are for mode='global'; per_user "
                             "places cutoffs with per_user_fraction and train_cutoff_every")
        if self.test_cutoff_day is not None and self.test_cutoff_day < 1:
            raise ValueError(f"SplitConfig.test_cutoff_day={self.test_cutoff_day}; it must be >= 1 (day 0 is "
                             "history)")
        days = self.train_cutoff_days
        if days is not None and (list(days) != sorted(set(days)) or (days and days[0] < 1)):
            raise ValueError(f"SplitConfig.train_cutoff_days={days}; give distinct increasing days >= 1")
        if days and self.test_cutoff_day is not None and days[-1] >= self.test_cutoff_day:
            raise ValueError(f"SplitConfig.train_cutoff_days={days} must all be < test_cutoff_day="
                             f"{self.test_cutoff_day}, or training would see the test window")


class _Timeline(NamedTuple):
    """Interactions sorted by (user, timestamp, original row), with prefix sums for fast window counts."""

    order: np.ndarray  # row positions in ds.interactions
    user: np.ndarray
    ts: np.ndarray
    item: np.ndarray
    day: np.ndarray
    is_neg: np.ndarray
    is_pos: np.ndarray
    cum_neg: np.ndarray  # (n + 1,) cum_neg[i] = negatives among rows < i
    cum_pos: np.ndarray
    user_start: np.ndarray  # (n_users + 1,) first row of each user
    t_min: int
    span: int  # key = user * span + (ts - t_min)
    origin: int  # timestamp where day 0 starts (cutoff_ts of day c = origin + c * DAY)

    def index(self, users: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Per (user, time): the first row of that user with ts >= time (or the end of the user's rows)."""
        t = np.clip(np.asarray(times, dtype=np.int64), self.t_min, self.t_min + self.span - 1)
        keys = self.user * self.span + (self.ts - self.t_min)
        return np.searchsorted(keys, np.asarray(users, dtype=np.int64) * self.span + (t - self.t_min), side="left")


def _timeline(ds: data.Dataset) -> _Timeline:
    inter = ds.interactions
    user, ts = inter["user_id"].to_numpy(np.int64), inter["timestamp"].to_numpy(np.int64)
    day = inter["day"].to_numpy(np.int64)
    order = np.lexsort((np.arange(len(inter)), ts, user))
    fb = inter["feedback"].to_numpy()[order]
    is_neg, is_pos = fb == "negative", fb == "positive"
    return _Timeline(order, user[order], ts[order], inter["item_id"].to_numpy(np.int64)[order], day[order],
                     is_neg, is_pos, np.concatenate([[0], np.cumsum(is_neg)]),
                     np.concatenate([[0], np.cumsum(is_pos)]),
                     np.searchsorted(user[order], np.arange(ds.n_users + 1)), int(ts.min()),
                     int(ts.max() - ts.min()) + 2, _day_origin(ts, day, ds.name))


def _day_origin(ts: np.ndarray, day: np.ndarray, name: str) -> int:
    """The timestamp where day 0 starts, so that day == (ts - origin) // 86400 on every row.

    The first timestamp when it fits (data.reindex's days), else the latest whole hour that fits (calendar
    days of a time zone, as loaders.calendar_days makes them), else the latest value that fits.
    >>> _day_origin(np.array([100, 86_500]), np.array([0, 1]), "x")
    100
    >>> _day_origin(np.array([7_300, 90_010]), np.array([0, 1]), "x")  # 90_010 is already day 1
    3600
    """
    offset = ts - day * DAY  # on consistent days these all lie within one day
    low, high = int(offset.max()) - DAY + 1, int(offset.min())
    if low > high:
        raise ValueError(f"{name}: interactions.day is not whole days of timestamp (timestamp - day * 86400 "
                         "spans more than a day); derive day from timestamp (data.reindex / loaders.calendar_days)")
    if int(ts.min()) == high:
        return high
    hour = high // 3600 * 3600
    return hour if hour >= low else high


@dataclasses.dataclass(eq=False)
class Split:
    """Training and test examples of one dataset, the long-tail item flags, and history look-ups."""

    config: SplitConfig
    train: pd.DataFrame
    test: pd.DataFrame
    longtail_items: np.ndarray  # (n_items,) bool
    dataset: data.Dataset = dataclasses.field(repr=False, compare=False)

    @functools.cached_property
    def _timeline(self) -> _Timeline:
        return _timeline(self.dataset)

    def training_rows(self, feedback: Optional[str] = None) -> pd.DataFrame:
        """The log rows a model may learn from: each user's interactions strictly before their test cutoff
        (`test_cutoffs`), optionally of one feedback kind, in the log's order with its index."""
        inter = self.dataset.interactions
        keep = inter["timestamp"].to_numpy(np.int64) < self.test_cutoffs()[inter["user_id"].to_numpy(np.int64)]
        if feedback is not None:
            keep &= (inter["feedback"] == feedback).to_numpy()
        return inter[keep]

    def test_cutoffs(self) -> np.ndarray:
        """(n_users,) each user's test cutoff_ts: everything before it may train a model.

        Global split: one cutoff for every user. Per-user split: the user's own, and +inf for users without a
        test example (none of their data is tested, so all of it may train).
        """
        test = self.test
        out = np.full(self.dataset.n_users, np.iinfo(np.int64).max, dtype=np.int64)
        if self.config.mode == "global":
            out[:] = int(test["cutoff_ts"].min())
        else:
            out[test["user_id"].to_numpy(np.int64)] = test["cutoff_ts"].to_numpy(np.int64)
        return out

    def history(self, user_id: int, cutoff_ts: int, feedback: Optional[str | Iterable[str]] = None) -> pd.DataFrame:
        """The user's interactions strictly before `cutoff_ts`, in time order (optionally of some feedback)."""
        if not 0 <= int(user_id) < self.dataset.n_users:
            raise ValueError(f"history: user_id={user_id} is outside 0..{self.dataset.n_users - 1}")
        tl = self._timeline
        stop = int(tl.index(np.array([user_id]), np.array([cutoff_ts]))[0])
        rows = self.dataset.interactions.iloc[tl.order[tl.user_start[int(user_id)]:stop]]
        if feedback is not None:
            kinds = [feedback] if isinstance(feedback, str) else list(feedback)
            bad = set(kinds) - set(data.FEEDBACK)
            if bad:
                raise ValueError(f"history: feedback {sorted(bad)} unknown; use values from {data.FEEDBACK}")
            rows = rows[rows["feedback"].isin(kinds)]
        return rows.reset_index(drop=True)


# --- make_split --------------------------------------------------------------------------------------

def make_split(ds: data.Dataset, cfg: Optional[SplitConfig] = None) -> Split:
    """Training and test examples of `ds` cut by time (module docstring), with long-tail item flags."""
    cfg = cfg or SplitConfig()
    tl = _timeline(ds)
    if cfg.mode == "global":
        cfg = _resolve_global(cfg, ds.n_days)
        test_specs, train_specs, train_end = _global_specs(tl, ds.n_users, cfg)
    else:
        test_specs, train_specs, train_end = _per_user_specs(tl, ds.n_users, cfg)
    longtail_items = _longtail_items(tl, train_end, ds.n_items, cfg.longtail_item_max_neg)
    test = _examples(tl, test_specs, cfg)
    if test.empty:
        raise ValueError(f"{ds.name}: no user has a negative in the test window ({cfg}); for data whose users "
                         "are active at different times use SplitConfig(mode='per_user'), or move test_cutoff_day")
    train = _examples(tl, train_specs, cfg)
    if train.empty:
        warnings.warn(f"{ds.name}: the split has no training examples; add earlier train_cutoff_days",
                      stacklevel=2)
    return Split(cfg, train, test, longtail_items, ds)


def _resolve_global(cfg: SplitConfig, n_days: int) -> SplitConfig:
    """Fill in the default cutoff days and check them against the dataset's `n_days`."""
    test_day = cfg.test_cutoff_day if cfg.test_cutoff_day is not None else n_days - cfg.horizon_days
    if not 1 <= test_day < n_days:
        raise ValueError(f"test_cutoff_day={test_day} does not fit a dataset with days 0..{n_days - 1} "
                         f"(horizon_days={cfg.horizon_days}); lower horizon_days or set test_cutoff_day in "
                         f"1..{n_days - 1}, or use mode='per_user'")
    train_days = cfg.train_cutoff_days
    if train_days is None:
        train_days = tuple(range(test_day - 1, 0, -cfg.train_cutoff_every))[::-1]
    if train_days and train_days[-1] >= test_day:
        raise ValueError(f"train_cutoff_days={train_days} must all be < the test cutoff day {test_day}")
    return dataclasses.replace(cfg, test_cutoff_day=test_day, train_cutoff_days=train_days)


def _specs(users: np.ndarray, cutoffs: np.ndarray, horizon_days: int, limit: Optional[np.ndarray] = None
           ) -> pd.DataFrame:
    """Candidate examples (user, cutoff_ts, window_end_ts); the window is cut at `limit` when given."""
    end = cutoffs + horizon_days * DAY
    if limit is not None:
        end = np.minimum(end, limit)
    return pd.DataFrame({"user_id": users, "cutoff_ts": cutoffs, "window_end_ts": end}, dtype=np.int64)


def _global_specs(tl: _Timeline, n_users: int, cfg: SplitConfig) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Every user at every cutoff day: (test specs, train specs truncated at the test cutoff, test cutoff_ts)."""
    users = np.arange(n_users)
    test_ts = np.full(n_users, tl.origin + cfg.test_cutoff_day * DAY)
    train = [_specs(users, np.full(n_users, tl.origin + c * DAY), cfg.horizon_days, limit=test_ts)
             for c in cfg.train_cutoff_days]
    train = pd.concat(train, ignore_index=True) if train else _specs(users[:0], users[:0], cfg.horizon_days)
    return _specs(users, test_ts, cfg.horizon_days), train, test_ts


def _per_user_specs(tl: _Timeline, n_users: int, cfg: SplitConfig) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Per-user cutoffs at the user's own negatives: (test specs, train specs, per-user test cutoff_ts)."""
    neg_rows = np.flatnonzero(tl.is_neg)
    neg_user = tl.user[neg_rows]
    n_neg = np.bincount(neg_user, minlength=n_users)
    first = np.concatenate([[0], np.cumsum(n_neg)])[:-1]  # position of each user's first negative in neg_rows
    rank = np.arange(len(neg_rows)) - first[neg_user]
    k = np.minimum((cfg.per_user_fraction * n_neg).astype(np.int64), n_neg - 1)  # test negative per user
    has = np.flatnonzero(n_neg > 0)
    test_ts_by_user = np.full(n_users, np.iinfo(np.int64).max)  # users without negatives: no test cutoff
    test_ts_by_user[has] = tl.ts[neg_rows[first[has] + k[has]]]
    test = _specs(has, test_ts_by_user[has], cfg.horizon_days)
    back = k[neg_user] - rank  # how many negatives before the test one
    is_train = (back > 0) & (back % cfg.train_cutoff_every == 0)
    train_users = neg_user[is_train]
    train = _specs(train_users, tl.ts[neg_rows[is_train]], cfg.horizon_days, limit=test_ts_by_user[train_users])
    return test, train, test_ts_by_user


def _longtail_items(tl: _Timeline, train_end_by_user: np.ndarray, n_items: int, max_neg: int) -> np.ndarray:
    """True for items with fewer than `max_neg` negatives before the (per-user) test cutoff."""
    seen = tl.is_neg & (tl.ts < train_end_by_user[tl.user])
    return np.bincount(tl.item[seen], minlength=n_items) < max_neg


def _examples(tl: _Timeline, specs: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    """One row per spec whose window holds a negative (columns: EXAMPLE_COLUMNS)."""
    users, cut, end = (specs[c].to_numpy(np.int64) for c in ("user_id", "cutoff_ts", "window_end_ts"))
    start, stop, hist = tl.index(users, cut), tl.index(users, end), tl.user_start[users]
    keep = tl.cum_neg[stop] - tl.cum_neg[start] > 0
    rows = [_example_lists(tl, int(u), int(c), int(a), int(b), cfg)
            for u, c, a, b in zip(users[keep], cut[keep], start[keep], stop[keep])]
    n_hist_neg = tl.cum_neg[start[keep]] - tl.cum_neg[hist[keep]]
    out = pd.DataFrame({
        "user_id": users[keep], "cutoff_day": (cut[keep] - tl.origin) // DAY, "cutoff_ts": cut[keep],
        "window_end_ts": end[keep],
        "next_negative": np.array([r.next_negative for r in rows], dtype=np.int64),
        "next_negative_ts": np.array([r.next_negative_ts for r in rows], dtype=np.int64),
        **{col: pd.Series([getattr(r, col) for r in rows], dtype=object) for col in LIST_COLUMNS},
        "n_hist_neg": n_hist_neg, "n_hist_pos": tl.cum_pos[start[keep]] - tl.cum_pos[hist[keep]],
        "longtail_user": n_hist_neg < cfg.longtail_user_max_neg,
    })
    return out.astype({c: np.int64 for c in EXAMPLE_COLUMNS if c not in LIST_COLUMNS and c != "longtail_user"})


def _distinct(values: np.ndarray) -> list[int]:
    """Distinct values in order of first appearance.

    >>> _distinct(np.array([3, 1, 3, 2, 1]))
    [3, 1, 2]
    """
    return list(dict.fromkeys(values.tolist()))


class _Lists(NamedTuple):
    next_negative: int
    next_negative_ts: int
    future_negatives: list[int]
    future_positives: list[int]
    candidates: list[int]


def _example_lists(tl: _Timeline, user: int, cutoff: int, a: int, b: int, cfg: SplitConfig) -> _Lists:
    """The per-example lists of the window rows a:b (sorted by time) of `user`."""
    window = slice(a, b)
    negs = a + np.flatnonzero(tl.is_neg[window])
    first = negs[0]
    day_rows = a + np.flatnonzero(tl.day[window] == tl.day[first])
    pool = [i for i in _distinct(tl.item[day_rows]) if i != tl.item[first]]
    rng = np.random.default_rng([cfg.seed, user, cutoff - tl.t_min])  # per example: order-independent
    if len(pool) > cfg.n_candidates - 1:
        pool = rng.choice(pool, size=cfg.n_candidates - 1, replace=False).tolist()
    candidates = rng.permutation([int(tl.item[first]), *pool]).tolist()
    return _Lists(int(tl.item[first]), int(tl.ts[first]), _distinct(tl.item[negs]),
                  _distinct(tl.item[window][tl.is_pos[window]]), candidates)


# --- save / load -------------------------------------------------------------------------------------

def _fingerprint(ds: data.Dataset) -> dict:
    return {"name": ds.name, "n_users": ds.n_users, "n_items": ds.n_items, "n_interactions": len(ds.interactions)}


def save_split(split: Split, folder: str | Path) -> Path:
    """Write train/test/long-tail flags as parquet and `split.json` (last, marks the folder complete)."""
    folder = Path(folder)
    (folder / "split.json").unlink(missing_ok=True)
    for name, frame in (("train", split.train), ("test", split.test),
                        ("longtail_items", pd.DataFrame({"longtail": split.longtail_items}))):
        with runs.atomic_path(folder / f"{name}.parquet") as tmp:
            frame.to_parquet(tmp, index=False)
    runs.write_json(folder / "split.json", {"config": split.config, "dataset": _fingerprint(split.dataset),
                                             "n_train": len(split.train), "n_test": len(split.test)})
    return folder


def load_split(folder: str | Path, ds: data.Dataset) -> Split:
    """Read a split written by `save_split`, checking it was made for `ds`."""
    folder = Path(folder)
    if not (folder / "split.json").is_file():
        raise FileNotFoundError(f"{folder}: no split.json; this folder was not written (completely) by "
                                "splits.save_split()")
    meta = runs.read_json(folder / "split.json")
    if meta["dataset"] != _fingerprint(ds):
        raise ValueError(f"{folder}: the split was made for dataset {meta['dataset']}, not {_fingerprint(ds)}; "
                         "load the dataset saved beside it, or make the split again")
    frames = {}
    for name in ("train", "test"):
        frame = artifacts.read(pd.read_parquet, folder / f"{name}.parquet")
        for col in LIST_COLUMNS:
            frame[col] = pd.Series([[int(i) for i in v] for v in frame[col]], index=frame.index, dtype=object)
        frames[name] = frame
    longtail = artifacts.read(pd.read_parquet, folder / "longtail_items.parquet")["longtail"].to_numpy(bool)
    return Split(SplitConfig(**meta["config"]), frames["train"], frames["test"], longtail, ds)
