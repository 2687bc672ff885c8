"""Notebook 01's stage: load a dataset, split it by time, and save both in the run folder.

Later notebooks call `load_prepared(run)` and so see exactly the dataset and split that 01 wrote.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from conrec_lib import runs
from conrec_lib.data import dataset as data, exploration, loaders, splits
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
                             f"(e.g. 'data/movielens-ml-latest-small', the bundled copy, or a folder made by download.download)")
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
    """Load the configured dataset (the simulator gets `scale` and `seed`)."""
    if cfg.dataset == "simulated":
        return loaders.load("simulated", seed=cfg.seed, scale=cfg.scale)
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


def load_prepared(run: runs.Run) -> PreparedData:
    """The dataset and split that notebook 01 wrote into `run` (errors name the notebook to run)."""
    stage = run.require(STAGE)
    ds = data.load(stage / "dataset")
    return PreparedData(ds, splits.load_split(stage / "split", ds), run.metrics(STAGE))
