"""A closed-loop A/B test in the simulator: the platform runs on for a few days with a filter in front of it.

PAPER.md "The task" says CoNRec is deployed as a filter of candidates; the paper reports no online numbers
(the reviews asked for filter rate, false-filter rate and diversity). A simulator can measure them.

From one simulated state (`simulate.simulate_world`: the end of the log or the start of a given day) each
arm runs the platform for `ABConfig.n_days` more days. Each day, for every active user, the platform
ranks the whole catalogue by exponential-race keys (its usual weighted sampling, `simulate.race_keys`);
the filter's blocked items get key 0, so the platform's next-best candidates take their places and the
slate keeps its size (unless the filter blocks nearly everything the user may still see: then it is shorter).
The users answer with the simulator's response model; the platform learns from the
answers exactly as in the log (`simulate.update_state`).

Common random numbers: for a seed, every arm draws the same numbers: who visits on day d, the race draw of
each (user, item) and the uniform number that decides the user's response to each (user, item). So two
arms differ only through their filters (and what the filters changed later), an arm whose filter blocks
nothing reproduces the control arm exactly, and the response the user *would* have given to a filtered
item is known: the same uniform number against the same probabilities. Click probabilities use the
click calibration of the last logged days (`World.click_scale`), frozen, so a filter that removes
negatives does not change how often users click the rest (the log recalibrates it each day; that
would hide the effect we measure).

Plugging in a model: predict each user's negative items once from `start_log(world)` (what a deployment
knows when the A/B period starts), then `filters.embedding_filter(filters.Fixed(sets), embeddings,
FilterConfig(theta))`;
any object with the `Filter` methods works as an arm (`None` is the control).

Per arm and seed (`ArmResult`), over all A/B days:
- negative_rate, positive_rate: negatives / exposures, positives / exposures;
- filter_rate: filtered candidates / candidates, where the candidates are the slate the platform would
  have shown that day, in that arm's state, without the filter (its top slate_size keys);
- false_filter_rate: of those filtered candidates, the share the user would have answered positively
  (clicked / bought) had they been shown: same uniform number, same response probabilities;
  filtered_negative_rate: the share they would have answered "not interested" (the filter's precision);
- coverage: distinct items shown / catalogue size; exposure_gini and exposure_entropy (normalised to
  [0, 1] by log(n_items)) of the exposure counts over the whole catalogue.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional

import numpy as np
import pandas as pd
from conrec_lib import metrics
from conrec_lib.progress import tqdm

from conrec_lib.data import dataset as data
from conrec_lib.evaluation.filters import Filter, start_log
from conrec_lib.data import simulate as sim
from conrec_lib.configs import check_types

METRICS = ("negative_rate", "positive_rate", "filter_rate", "false_filter_rate", "filtered_negative_rate",
           "coverage", "exposure_gini", "exposure_entropy", "n_exposures", "n_filtered")
RAW_LABELS = ("click", "not_interested", "exposure")  # raw_label of A/B rows, by feedback code


@dataclasses.dataclass
class ABConfig:
    """How long the A/B test runs and how many random streams it averages over."""

    n_days: int = 3  # days simulated after the start state (GPU: 14)
    seeds: tuple[int, ...] = (0, 1, 2)  # one random stream per seed, shared by every arm (GPU: range(10))

    def __post_init__(self) -> None:
        check_types(self)
        self.seeds = tuple(int(s) for s in self.seeds)
        if self.n_days < 1:
            raise ValueError(f"ABConfig.n_days={self.n_days}: run at least one day (e.g. 3)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"ABConfig.seeds={self.seeds}: give at least one seed, without repeats")


# --- running one arm -----------------------------------------------------------------------------------

@dataclasses.dataclass
class _Tally:
    """Counts accumulated over an arm's days."""

    exposure: np.ndarray  # (n_items,) int64 times each item was shown
    negatives: int = 0
    positives: int = 0
    candidates: int = 0
    filtered: int = 0
    filtered_positive: int = 0
    filtered_negative: int = 0


@dataclasses.dataclass
class ArmResult:
    """One arm under one seed: the rates of the module docstring."""

    arm: str
    seed: int
    negative_rate: float
    positive_rate: float
    filter_rate: float
    false_filter_rate: float  # NaN when nothing was filtered
    filtered_negative_rate: float  # NaN when nothing was filtered
    coverage: float
    exposure_gini: float
    exposure_entropy: float
    n_exposures: int
    n_filtered: int


class _Draws(NamedTuple):
    """One block of users' random numbers for a day, identical in every arm of a seed."""

    race: np.ndarray  # (U, I) float32 Exp(1): the platform's ranking draw
    uniform: np.ndarray  # (U, I) float32 U(0, 1): decides the user's answer to each item


class _Shown(NamedTuple):
    """One block of users on one day: what was shown and answered, and what filtered candidates would get."""

    user: np.ndarray  # (E,) int64
    item: np.ndarray  # (E,) int64
    position: np.ndarray  # (E,) int64
    feedback: np.ndarray  # (E,) int8 codes (simulate.feedback_codes: 0 positive, 1 negative, 2 exposure)
    n_candidates: int  # items of the slates the platform would have shown without the filter
    filtered_feedback: np.ndarray  # (N,) int8 the answers the filtered candidates would have got


def _draws(seed: int, day: int, block: int, shape: tuple[int, int]) -> _Draws:
    rng = np.random.default_rng([seed, day, block + 1])
    return _Draws(rng.standard_exponential(shape, dtype=np.float32), rng.random(shape, dtype=np.float32))


def _answers(world: sim.World, users: np.ndarray, rows: np.ndarray, items: np.ndarray, uniform: np.ndarray
             ) -> np.ndarray:
    """(E,) feedback codes of users[rows] to items, from the frozen response model and the shared uniforms."""
    resp = sim.response(users[rows], items, world.users, world.catalogue, world.config, world.click_scale)
    return sim.feedback_codes(resp, uniform[rows, items])


def _show(world: sim.World, state: sim.PlatformState, users: np.ndarray, day: int, draws: _Draws,
          blocked: Optional[np.ndarray]) -> _Shown:
    """The platform's slates for `users`, blocked items replaced by its next-best candidates, and the answers."""
    k = world.config.slate_size
    keys = sim.race_keys(sim.slate_weights(users, day, state, world.catalogue, world.config), draws.race)
    plain = sim.top_slates(keys, k)  # (U, k) what the platform would show without a filter
    slate, hit = plain, np.zeros(plain.shape, bool)
    if blocked is not None:
        hit = (plain >= 0) & np.take_along_axis(blocked, np.maximum(plain, 0), axis=1)  # (U, k)
        keys[blocked] = 0
        slate = sim.top_slates(keys, k)
    rows, position = np.nonzero(slate >= 0)
    items = slate[rows, position]
    hit_rows, hit_pos = np.nonzero(hit)
    return _Shown(users[rows].astype(np.int64), items.astype(np.int64), position.astype(np.int64),
                  _answers(world, users, rows, items, draws.uniform), int((plain >= 0).sum()),
                  _answers(world, users, hit_rows, plain[hit_rows, hit_pos], draws.uniform))


@dataclasses.dataclass(eq=False)
class _ArmRun:
    """One arm under one seed: its own copy of the platform state, its log and its counts."""

    world: sim.World
    filt: Optional[Filter]
    seed: int
    state: sim.PlatformState
    tally: _Tally
    frames: list  # data-model interaction frames: the start log, then one per A/B day
    _log: Optional[pd.DataFrame] = None

    def log(self) -> pd.DataFrame:
        if self._log is None:
            self._log = pd.concat(self.frames, ignore_index=True)
        return self._log


def _log_rows(day: int, shown: _Shown) -> pd.DataFrame:
    """A/B exposures in the data model; a user's session starts at 06:00 and items are a minute apart."""
    order = np.lexsort((shown.user, shown.position))  # by time (position), then user
    codes = shown.feedback[order]
    return pd.DataFrame({"user_id": shown.user[order], "item_id": shown.item[order],
                         "timestamp": day * data.SECONDS_PER_DAY + 6 * 3600 + 60 * shown.position[order],
                         "day": np.full(len(order), day, np.int64),
                         "feedback": np.asarray(data.FEEDBACK)[codes], "raw_label": np.asarray(RAW_LABELS)[codes]})


def _concat(parts: list[_Shown]) -> _Shown:
    return _Shown(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("user", "item", "position", "feedback")),
                  sum(p.n_candidates for p in parts), np.concatenate([p.filtered_feedback for p in parts]))


def _run_day(run: _ArmRun, day: int) -> None:
    """One A/B day of one arm: slates for the visiting users, block by block, then the platform update."""
    world = run.world
    n_users, n_items = world.config.n_users, world.config.n_items
    visit = np.random.default_rng([run.seed, day, 0]).random(n_users) < world.users.activity
    chunk = max(1, 4_000_000 // n_items)  # bounds the (U, I) working matrices, as the simulator does
    parts = []
    for b, first in enumerate(range(0, n_users, chunk)):
        block = np.arange(first, min(first + chunk, n_users))
        draws, here = _draws(run.seed, day, b, (len(block), n_items)), visit[block]
        users = block[here]
        blocked = None if run.filt is None else run.filt.blocked(users, day, run.log())
        parts.append(_show(world, run.state, users, day, _Draws(draws.race[here], draws.uniform[here]), blocked))
    shown = _concat(parts)
    sim.update_state(day, sim.DayLog(shown.user, shown.item, shown.position, shown.feedback), run.state,
                     world.catalogue, world.config)
    _count(run.tally, shown)
    run.frames.append(_log_rows(day, shown))
    run._log = None


def _count(tally: _Tally, shown: _Shown) -> None:
    np.add.at(tally.exposure, shown.item, 1)
    tally.negatives += int((shown.feedback == 1).sum())
    tally.positives += int((shown.feedback == 0).sum())
    tally.candidates += shown.n_candidates
    tally.filtered += len(shown.filtered_feedback)
    tally.filtered_positive += int((shown.filtered_feedback == 0).sum())
    tally.filtered_negative += int((shown.filtered_feedback == 1).sum())


# --- metrics of an arm ---------------------------------------------------------------------------------

def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


def _result(name: str, seed: int, t: _Tally) -> ArmResult:
    exposures = int(t.exposure.sum())
    return ArmResult(name, seed, _ratio(t.negatives, exposures), _ratio(t.positives, exposures),
                     _ratio(t.filtered, t.candidates), _ratio(t.filtered_positive, t.filtered),
                     _ratio(t.filtered_negative, t.filtered), float((t.exposure > 0).mean()), metrics.gini(t.exposure),
                     metrics.normalised_entropy(t.exposure), exposures, t.filtered)


# --- the experiment ------------------------------------------------------------------------------------

class ArmOutcome(NamedTuple):
    """One arm under one seed: its metrics and the interactions of its A/B days."""

    result: ArmResult
    log: pd.DataFrame  # data-model interaction rows of the A/B days only


def run_arm(world: sim.World, filt: Optional[Filter], seed: int, cfg: ABConfig, name: str = "arm") -> ArmOutcome:
    """Run the platform `cfg.n_days` days from `world`'s state with `filt` in front (None: control)."""
    start = start_log(world)
    run = _ArmRun(world, filt, seed, sim.PlatformState(*(a.copy() for a in world.state)),
                  _Tally(np.zeros(world.config.n_items, np.int64)), [start])
    if filt is not None:
        filt.start(np.arange(world.config.n_users), world.start_day, start)
    for day in range(world.start_day, world.start_day + cfg.n_days):
        _run_day(run, day)
    return ArmOutcome(_result(name, seed, run.tally), pd.concat(run.frames[1:], ignore_index=True))


@dataclasses.dataclass
class ABResult:
    """Every arm under every seed (`table`, one row per arm and seed), with the config that produced it."""

    table: pd.DataFrame  # columns: the ArmResult fields
    config: ABConfig

    def summary(self) -> pd.DataFrame:
        """Tidy: one row per (arm, metric) with the mean and the sample std over seeds (NaN with one seed)."""
        long = self.table.melt(id_vars=["arm", "seed"], value_vars=list(METRICS), var_name="metric")
        out = long.groupby(["arm", "metric"], sort=False)["value"].agg(["mean", "std", "size"]).reset_index()
        return out.rename(columns={"size": "n_seeds"})

    def to_json(self) -> dict:
        """{arm: {metric: mean, metric + "_std": std}} for metrics.json (NaN becomes None)."""
        out: dict = {}
        for row in self.summary().itertuples():
            clean = [None if pd.isna(v) else float(v) for v in (row.mean, row.std)]
            out.setdefault(row.arm, {}).update({row.metric: clean[0], f"{row.metric}_std": clean[1]})
        return out


def run_ab_test(world: sim.World, arms: dict[str, Optional[Filter]], cfg: ABConfig,
                progress: bool = False) -> ABResult:
    """Every arm under every seed of `cfg`, all from `world`'s state (module docstring); None is the control."""
    if not arms:
        raise ValueError("run_ab_test: arms is empty; pass e.g. {'control': None, 'conrec': embedding_filter(...)}")
    jobs = [(seed, name) for seed in cfg.seeds for name in arms]
    rows = [dataclasses.asdict(run_arm(world, arms[name], seed, cfg, name).result)
            for seed, name in tqdm(jobs, desc="A/B arms", disable=not progress)]
    return ABResult(pd.DataFrame(rows), cfg)
