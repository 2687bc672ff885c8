"""Notebook 01's stage: load a dataset, split it by time, and save both in the run folder.

Later notebooks call `load_prepared(run)` and so see exactly the dataset and split that 01 wrote.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, Optional

import pandas as pd

from conrec_lib import paper, runs
from conrec_lib.data import dataset as data, exploration, loaders, simulate, splits
from conrec_lib import configs
from conrec_lib.configs import check_types

STAGE = "01_data"
DATASETS = loaders.NAMES  # the registry: loaders.REGISTRY


@dataclasses.dataclass
class DataConfig:
    """Which data to load and how to split it."""

    # source
    dataset: str = "simulated"  # one of DATASETS
    path: Optional[str] = None  # folder of a real dataset (layout detected from its files)
    scale: str = "default"  # simulator only: tiny | small | default | large (GPU: large)
    world: str = "default"  # simulator only: default | paper (towards the paper's coverage; docs/calibration.md)
    seed: int = 0
    # split
    horizon_days: int = 7  # "next 7 days" of the paper
    split_mode: str = "auto"  # global | per_user | auto (per_user for MovieLens, whose users rate in one session)

    def __post_init__(self) -> None:
        check_types(self)
        if self.dataset not in DATASETS:
            raise ValueError(f"DATASET={self.dataset!r} is not known; use one of {DATASETS}")
        if self.dataset != "simulated" and not self.path:
            raise ValueError(f"DATASET={self.dataset!r} needs DATA_PATH, the folder holding its files "
                             "(e.g. 'data/movielens-ml-latest-small', the bundled copy, or a folder made by "
                             "download.download)")
        if self.world not in simulate.WORLDS:
            raise ValueError(f"WORLD={self.world!r} is not known; use one of {list(simulate.WORLDS)}")
        if self.world != "default" and self.dataset != "simulated":
            raise ValueError(f"WORLD={self.world!r} is a setting of the simulator; DATASET={self.dataset!r} is read "
                             "from files: leave WORLD='default'")
        if self.split_mode not in ("auto", "global", "per_user"):
            raise ValueError(f"split_mode={self.split_mode!r}; use 'auto', 'global' or 'per_user'")

    def split_config(self) -> splits.SplitConfig:
        mode = self.split_mode
        if mode == "auto":
            mode = loaders.REGISTRY[self.dataset].split_mode
        return splits.SplitConfig(horizon_days=self.horizon_days, mode=mode, seed=self.seed)


@dataclasses.dataclass
class PreparedData:
    """What notebook 01 hands to the rest of the tutorial."""

    dataset: data.Dataset
    split: splits.Split
    metrics: dict


def load_dataset(cfg: DataConfig) -> data.Dataset:
    """Load the configured dataset (the simulator gets `scale`, `seed` and `world`)."""
    if cfg.dataset == "simulated":
        return loaders.load("simulated", seed=cfg.seed, scale=cfg.scale, world=cfg.world)
    return loaders.load(cfg.dataset, Path(cfg.path))


def prepare(cfg: DataConfig, run: runs.Run, progress: bool = True) -> PreparedData:
    """Load, split, save dataset + split, and write the summary `metrics.json` (last)."""
    with run.building(STAGE, cfg) as stage:
        ds = load_dataset(cfg)
        split = splits.make_split(ds, cfg.split_config())
        data.save(ds, stage / "dataset")
        splits.save_split(split, stage / "split")
        metrics = exploration.summary(ds, split)
        run.finish(STAGE, metrics)
    return PreparedData(ds, split, metrics)


def load_config(run: runs.Run) -> DataConfig:
    """The DataConfig notebook 01 ran with (what later stages read instead of its config.json keys)."""
    return configs.read(DataConfig, run.require(STAGE) / "config.json")


def require_world(run: runs.Run, world: str = "") -> str:
    """The simulated world notebook 01 wrote into `run` ("" for a real dataset). With `world` named, stop unless `run`
    holds that world: a later notebook cannot change the world, only notebook 01 can."""
    cfg = load_config(run)
    found = cfg.world if cfg.dataset == "simulated" else ""
    if world and world not in simulate.WORLDS:
        raise ValueError(f"WORLD={world!r} is not known; use one of {list(simulate.WORLDS)}, or '' for the world "
                         f"that notebook 01 prepared")
    if world and world != found:
        held = f"the {found!r} world" if found else f"the {cfg.dataset!r} dataset, not a simulated world"
        raise ValueError(f"WORLD={world!r}, but {runs.shown(run.root)} holds {held} (notebook 01's config.json); "
                         f"run notebook 01 with WORLD={world!r} into this RUN_DIR first, or leave WORLD=''")
    return found


def load_prepared(run: runs.Run) -> PreparedData:
    """The dataset and split that notebook 01 wrote into `run` (errors name the notebook to run)."""
    stage = run.require(STAGE)
    ds = data.load(stage / "dataset")
    return PreparedData(ds, splits.load_split(stage / "split", ds), run.metrics(STAGE))


def simulated_worlds(cfg: DataConfig) -> Iterator[tuple[str, PreparedData]]:
    """Every simulated world (`simulate.WORLDS`) at `cfg`'s scale, seed and horizon, built in memory as `prepare`
    builds it (nothing written; `metrics` empty): what the notebooks' both-worlds tables read."""
    for world in simulate.WORLDS:
        world_cfg = dataclasses.replace(cfg, dataset="simulated", path=None, world=world)
        ds = load_dataset(world_cfg)
        yield world, PreparedData(ds, splits.make_split(ds, world_cfg.split_config()), {})


def coverage_by_world(cfg: DataConfig) -> pd.DataFrame:
    """Notebook 01's coverage table (`exploration.top1_coverage`) for every simulated world at `cfg`'s scale, seed
    and horizon, beside the paper's Taobao numbers: how often the next negative, or the next H days' negatives,
    touch a user's top aversions."""
    rows = {}
    for world, prepared in simulated_worlds(cfg):
        table = exploration.top1_coverage(prepared.dataset, prepared.split)
        rows[f"{world} world"] = {f"{k} ({target})": table.loc[f"top-{k[-1]} interests", target]
                                  for k in ("top-1", "top-4") for target in table.columns}
    days = f"negatives of next {cfg.horizon_days} days"
    # The paper's top-4 numbers count a user as covered when any of the four is hit (notebook 03's "top4_any"),
    # not the share of the four this table shows: they are left out here rather than compared with the wrong thing.
    rows["paper (Taobao)"] = {"top-1 (next negative)": paper.COVERAGE_TOP1["next"],
                              f"top-1 ({days})": paper.COVERAGE_TOP1["7d"] if cfg.horizon_days == 7 else None}
    return pd.DataFrame(rows).T.astype(float)

