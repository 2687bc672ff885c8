"""Notebook 06's comparison: every baseline (and, through a hook, every LLM) on three datasets x seeds.

PAPER.md "Evaluation in the paper" reports one private dataset and one run. Here each (dataset, seed) gets its
own sub-run folder, `RUN_DIR/06_evaluation/<dataset>_seed<seed>/`, prepared by the stage functions that
notebooks 01 and 02 call (`dataprep.prepare`, `item_tokenizer.tokenize`). The seed drives the split's
candidate sampling, the simulated platform itself (simulator only: each seed is another simulated world),
the SID quantizer, the sampled test rows and the models' weights. Every model is scored by
`recommend.score` on the same test rows of its sub-run, so all numbers of one sub-run are comparable.

Item embeddings are shared through one cache (`RUN_DIR/cache/embeddings`, linked from each sub-run), so a
sentence encoder runs once per dataset, not once per seed; the embedding itself does not depend on the seed.

KuaiRand has no item text, so it is embedded with "collaborative" embeddings (an SVD of the item x user
feedback matrix). These once saw the whole interaction log, *test window included*: items a user dislikes in
the test window got SIDs close to that user's history, which inflated every SID-based model and CandAcc
(measured: TIGER HR@20 0.42 on KuaiRand against <= 0.002 for every item-id baseline). Notebook 02's stage now
fits them on the training rows only (`item_tokenizer.training_interactions`: each user's rows before the test
cutoff); items first seen in the test window get seeded random vectors (a warning says how many: 3,915 of
9,359, and 96% of the test rows' next negatives are such items). After the fix TIGER scores HR@20 0.000,
FHR@20 0.007 on KuaiRand (most-disliked: 0.003, 0.017; 300 test rows, seed 0).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from conrec_lib import metrics as metrics_core, runs
from conrec_lib.baselines import heuristics as baselines, sasrec, tiger
from conrec_lib.data import dataprep, loaders
from conrec_lib.sids import item_tokenizer
from conrec_lib.llm import recommend, tasks
from conrec_lib.baselines.heuristics import BaselineConfig
from conrec_lib.configs import check_types
from conrec_lib.data.dataprep import PreparedData
from conrec_lib.sids.embeddings import EmbedConfig
from conrec_lib.sids.item_tokenizer import Tokenized
from conrec_lib.llm.prompts import PromptConfig
from conrec_lib.sids.quantizer import SIDConfig
from conrec_lib.baselines.sasrec import SASRecConfig
from conrec_lib.baselines.tiger import TIGERConfig

STAGE = "06_evaluation"
# Views of the one dataset registry (loaders.REGISTRY), by the names this notebook's tables use.
COMPARED = [entry for entry in loaders.REGISTRY.values() if entry.compared]
DATASETS = tuple(entry.label for entry in COMPARED)
LOADER = {entry.label: entry.name for entry in COMPARED}  # notebook 01's names
FOLDERS = {entry.label: entry.bundled for entry in COMPARED if entry.bundled}  # the real datasets' folders
BASELINES = ("most_disliked", "swing", "item_knn", "category_block", "sasrec", "tiger")
# Yardsticks, reported beside the baselines but never "the best baseline": the simulator's ceiling (it reads the
# hidden ground truth) and the personal non-LLM ranking of the user's own negatives.
YARDSTICKS = ("oracle", "own_negatives")
METRICS = ("HR@20", "FHR@20", "LUF@20", "LIF@20", "CandAcc")


def _embedders() -> dict[str, str]:
    return {entry.label: entry.embedder for entry in COMPARED}


@dataclasses.dataclass
class EvaluationConfig:
    """Which datasets, seeds and baselines, and the settings of every sub-run (module docstring).

    Defaults: about 2 minutes for the three datasets on a 2-core CPU. The full settings are in the trailing
    comments (`EvaluationConfig.full()` sets them).
    """

    # what to compare
    datasets: tuple[str, ...] = DATASETS
    seeds: tuple[int, ...] = (0,)  # full: (0, 1, 2)
    baselines: tuple[str, ...] = BASELINES
    data_dir: str = "data"  # parent of the real datasets' folders (FOLDERS), relative to the project: the bundled copies
    simulator_scale: str = "default"
    # SIDs of each sub-run (notebook 02's stage). tfidf: no sentence encoder run; full: MiniLM on the
    # simulator's and MovieLens' titles; KuaiRand (no item text): collaborative, fit on training rows only
    embedders: dict[str, str] = dataclasses.field(default_factory=_embedders)
    quantizer: str = "rqkmeans"  # full: "rqvae" (the paper's; ~20 s more per sub-run on the CPU)
    codebook_size: int = 64
    # scoring
    k: int = 20  # paper: 20
    max_test_examples: Optional[int] = 300  # sampled test rows per sub-run; full: None (all, 466-904)
    # the baselines
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)
    sasrec: SASRecConfig = dataclasses.field(default_factory=SASRecConfig)
    tiger: TIGERConfig = dataclasses.field(default_factory=TIGERConfig)

    def __post_init__(self) -> None:
        check_types(self)
        self.datasets, self.seeds, self.baselines = tuple(self.datasets), tuple(self.seeds), tuple(self.baselines)
        for field, allowed in (("datasets", DATASETS), ("baselines", BASELINES)):
            bad = sorted(set(getattr(self, field)) - set(allowed))
            if bad:
                raise ValueError(f"EvaluationConfig.{field} has unknown {bad}; choose from {allowed}")
        if not self.datasets or not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"EvaluationConfig: give at least one dataset and distinct seeds, got datasets="
                             f"{self.datasets}, seeds={self.seeds}")
        missing = [d for d in self.datasets if d not in self.embedders]
        if missing:
            raise ValueError(f"EvaluationConfig.embedders lacks {missing}; map every dataset to an encoder "
                             "('tfidf', 'minilm', 'collaborative')")
        if self.max_test_examples is not None and self.max_test_examples < 1:
            raise ValueError(f"EvaluationConfig.max_test_examples={self.max_test_examples}: use None (all) or >= 1")

    @classmethod
    def full(cls, **fields) -> "EvaluationConfig":
        """The full settings of the trailing comments (all seeds and test rows, RQ-VAE, MiniLM, larger models)."""
        full = dict(seeds=(0, 1, 2), quantizer="rqvae", max_test_examples=None,
                    embedders={"simulator": "minilm", "kuairand": "collaborative", "movielens": "minilm"},
                    sasrec=SASRecConfig(max_len=50, dim=64, num_layers=2, epochs=30, lr=3e-3),
                    tiger=TIGERConfig(num_layers=2, epochs=20))  # GPU: max_items=20, dim=128, epochs=40
        # (measured, 2-core CPU: the GPU-size TIGER takes ~330 s per simulator sub-run, mostly beam search)
        return cls(**{**full, **fields})

    def data_config(self, dataset: str, seed: int) -> dataprep.DataConfig:
        """Notebook 01's settings of one sub-run (the real data folder checked here, with a fix in the error)."""
        if dataset not in FOLDERS:  # generated, not read: the simulator
            return dataprep.DataConfig(dataset=LOADER[dataset], scale=self.simulator_scale, seed=seed)
        folder = runs.resolve(self.data_dir) / FOLDERS[dataset]
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: the {dataset} data is not there; set EvaluationConfig.data_dir "
                                    f"(now {self.data_dir!r}) to the folder holding {FOLDERS[dataset]!r}, or "
                                    f"leave {dataset!r} out of datasets")
        return dataprep.DataConfig(dataset=LOADER[dataset], path=str(folder), seed=seed)

    def tokenizer_config(self, dataset: str, seed: int) -> item_tokenizer.TokenizerConfig:
        """Notebook 02's settings of one sub-run; the embedding seed stays 0 so the cache is shared."""
        return item_tokenizer.TokenizerConfig(
            embed=EmbedConfig(encoder=self.embedders[dataset]),
            sid=SIDConfig(quantizer=self.quantizer, codebook_size=self.codebook_size, seed=seed), compare=False)


@dataclasses.dataclass
class SubRun:
    """One prepared (dataset, seed): what the baselines and the `extra_models` hook are given."""

    dataset: str
    seed: int
    run: runs.Run  # RUN_DIR/06_evaluation/<dataset>_seed<seed>, with stages 01 and 02 done
    prepared: PreparedData
    tokenized: Tokenized
    examples: pd.DataFrame  # the test rows every model is scored on, in order
    max_test_examples: Optional[int]


# The hook for the LLMs: given a prepared sub-run, return {model name: one ranked item list per row of
# sub.examples}. It may train in sub.run (e.g. the stages of notebooks 03-05); the lists are scored here.
ExtraModels = Callable[[SubRun], Mapping[str, Sequence[Sequence[int]]]]


@dataclasses.dataclass
class SubRunResult:
    """The scores of every model on one (dataset, seed)."""

    dataset: str
    seed: int
    metrics: dict[str, dict]  # model -> recommend.score's dict
    seconds: dict[str, float]  # "prepare", "tokenize", and per model: fit + recommend
    folder: Path


@dataclasses.dataclass
class EvaluationResult:
    """Every sub-run's scores; `tidy` is the long table the summaries start from."""

    config: EvaluationConfig
    runs: list[SubRunResult]
    tidy: pd.DataFrame  # dataset, model, seed, metric, value


# --- one sub-run -------------------------------------------------------------------------------------

def share_cache(parent: runs.Run, sub: runs.Run) -> None:
    """Point the sub-run's `cache` folder at the parent run's, so embeddings are computed once."""
    (parent.root / "cache").mkdir(parents=True, exist_ok=True)
    link = sub.root / "cache"
    if not link.exists() and not link.is_symlink():
        sub.root.mkdir(parents=True, exist_ok=True)
        # relative to the link's folder (a relative run root would otherwise give a dangling link), so the
        # run folder can also be moved as a whole
        target = os.path.relpath((parent.root / "cache").resolve(), sub.root.resolve())
        link.symlink_to(target, target_is_directory=True)


def prepare_sub_run(cfg: EvaluationConfig, parent: runs.Run, dataset: str, seed: int, seconds: dict) -> SubRun:
    """Stages 01 and 02 in the sub-run folder, then the test rows (sampled with the seed)."""
    sub = runs.Run(parent.stage_dir(STAGE) / f"{dataset}_seed{seed}")
    share_cache(parent, sub)
    start = time.perf_counter()
    prepared = dataprep.prepare(cfg.data_config(dataset, seed), sub, progress=False)
    seconds["prepare"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    tokenized = item_tokenizer.tokenize(cfg.tokenizer_config(dataset, seed), sub, progress=False)
    seconds["tokenize"] = round(time.perf_counter() - start, 2)
    examples = recommend.eval_examples(prepared, tokenized.sids.table, PromptConfig(), cfg.max_test_examples, seed)
    rows = tasks.example_rows(prepared, examples, "test")
    return SubRun(dataset, seed, sub, prepared, tokenized, rows, cfg.max_test_examples)


def fit_baseline(name: str, sub: SubRun, cfg: EvaluationConfig) -> baselines.Baseline:
    """Train one baseline of BASELINES on the sub-run's training period (its seed replaces the config's)."""
    p, t = sub.prepared, sub.tokenized
    if name == "most_disliked":
        return baselines.MostDisliked.fit(p, t, cfg.baseline)
    if name in ("swing", "item_knn"):
        return baselines.ItemNeighbours.fit(p, t, cfg.baseline, "swing" if name == "swing" else "cosine")
    if name == "category_block":
        return baselines.CategoryBlock.fit(p, t, cfg.baseline)
    if name == "sasrec":
        return sasrec.SASRecBaseline.fit(p, t, dataclasses.replace(cfg.sasrec, seed=sub.seed))
    if name == "tiger":
        return tiger.TIGERBaseline.fit(p, t, dataclasses.replace(cfg.tiger, seed=sub.seed))
    if name == "own_negatives":
        return baselines.OwnNegatives.fit(p, t, cfg.baseline)
    if name == "oracle":
        return baselines.Oracle.fit(p, t, cfg.baseline)
    raise ValueError(f"fit_baseline: unknown baseline {name!r}; choose from {BASELINES + YARDSTICKS}")


def baseline_predictions(sub: SubRun, cfg: EvaluationConfig, seconds: dict) -> dict[str, list[list[int]]]:
    """Every configured baseline's top-k lists for the sub-run's test rows (timed into `seconds`)."""
    out = {}
    yardsticks = [y for y in YARDSTICKS if y != "oracle" or sub.prepared.dataset.ground_truth is not None]
    for name in [*yardsticks, *cfg.baselines]:
        start = time.perf_counter()
        out[name] = fit_baseline(name, sub, cfg).recommend(sub.examples, cfg.k)
        seconds[name] = round(time.perf_counter() - start, 2)
    return out


def extra_predictions(sub: SubRun, hook: ExtraModels, seconds: dict) -> dict[str, list[list[int]]]:
    """The hook's predictions, checked to hold one list per test row and no baseline's name."""
    start = time.perf_counter()
    found = {str(name): [list(map(int, p)) for p in preds] for name, preds in hook(sub).items()}
    seconds["extra_models"] = round(time.perf_counter() - start, 2)
    for name, preds in found.items():
        if name in BASELINES + YARDSTICKS or len(preds) != len(sub.examples):
            raise ValueError(f"extra_models returned {name!r} with {len(preds)} lists for {len(sub.examples)} "
                             f"test rows; return one list per row of sub.examples, under a name not in "
                             f"{BASELINES + YARDSTICKS}")
    return found


@contextlib.contextmanager
def recorded_warnings(notes: list[str]) -> Iterator[None]:
    """Warnings raised inside the block are appended to `notes` as text instead of being printed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    notes.extend(f"{w.category.__name__}: {w.message}" for w in caught)


def evaluate_sub_run(cfg: EvaluationConfig, parent: runs.Run, dataset: str, seed: int,
                     extra_models: Optional[ExtraModels] = None) -> SubRunResult:
    """Prepare one (dataset, seed), run every baseline (and the hook), score all through `recommend.score`.
    The loaders' warnings (e.g. KuaiRand's duplicate rows) go to the sub-run's `scores.json`, not to stderr."""
    seconds: dict[str, float] = {}
    notes: list[str] = []
    with recorded_warnings(notes):
        sub = prepare_sub_run(cfg, parent, dataset, seed, seconds)
    predictions = baseline_predictions(sub, cfg, seconds)
    if extra_models is not None:
        predictions.update(extra_predictions(sub, extra_models, seconds))
    scored = {name: recommend.score(preds, sub.examples, sub.prepared, sub.tokenized, cfg.k)
              for name, preds in predictions.items()}
    runs.write_json(sub.run.root / "scores.json", {"metrics": scored, "seconds": seconds, "warnings": notes})
    return SubRunResult(dataset, seed, scored, seconds, sub.run.root)


def evaluate_datasets(cfg: EvaluationConfig, run: runs.Run, extra_models: Optional[ExtraModels] = None,
             progress: bool = True) -> EvaluationResult:
    """Every (dataset, seed) of the config; writes `06_evaluation/baselines.csv` (the tidy table)."""
    results = [evaluate_sub_run(cfg, run, d, s, extra_models)
               for d, s in tqdm(sub_runs(cfg), desc="datasets x seeds", disable=not progress)]
    return collect_datasets(cfg, run, results)


def sub_runs(cfg: EvaluationConfig) -> list[tuple[str, int]]:
    """The (dataset, seed) pairs of the config, in the order of the tables."""
    return [(d, s) for d in cfg.datasets for s in cfg.seeds]


def collect_datasets(cfg: EvaluationConfig, run: runs.Run, results: list[SubRunResult]) -> EvaluationResult:
    """The sub-runs' results as one EvaluationResult; writes `06_evaluation/baselines.csv` (the tidy table)."""
    table = tidy(results)
    with runs.atomic_path(run.stage_dir(STAGE) / "baselines.csv") as tmp:
        table.to_csv(tmp, index=False)
    return EvaluationResult(cfg, results, table)


# --- summaries -------------------------------------------------------------------------------------

def tidy(results: Sequence[SubRunResult], metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """One row per (dataset, model, seed, metric) with its value."""
    rows = [(r.dataset, model, r.seed, m, float(scores[m]))
            for r in results for model, scores in r.metrics.items() for m in metrics]
    return pd.DataFrame(rows, columns=["dataset", "model", "seed", "metric", "value"])


def summary_table(table: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Rows: models; columns: (metric, mean / std / n) over the seeds of one dataset (std: ddof=1, NaN for n=1)."""
    part = table[table["dataset"] == dataset]
    if part.empty:
        raise ValueError(f"summary_table: no rows for dataset {dataset!r}; the table has "
                         f"{sorted(table['dataset'].unique())}")
    stats = part.groupby(["model", "metric"], sort=False)["value"].agg(["mean", "std", "count"])
    wide = stats.rename(columns={"count": "n"}).unstack("metric").swaplevel(axis=1)
    metrics = [m for m in METRICS if m in part["metric"].unique()]
    return wide[[(m, s) for m in metrics for s in ("mean", "std", "n")]]


def mean_pm_std(table: pd.DataFrame, dataset: str, digits: int = 4) -> pd.DataFrame:
    """`summary_table` as "mean ± std" strings, one column per metric (for display)."""
    wide = summary_table(table, dataset)
    metrics = list(dict.fromkeys(m for m, _ in wide.columns))
    return pd.DataFrame({m: [f"{a:.{digits}f} ± {b:.{digits}f}" if np.isfinite(b) else f"{a:.{digits}f}"
                             for a, b in zip(wide[(m, "mean")], wide[(m, "std")])] for m in metrics},
                        index=wide.index)


def relative_improvement(table: pd.DataFrame, model: str, reference: Sequence[str] = BASELINES) -> pd.DataFrame:
    """Per dataset and metric: `model`'s mean, the best reference model's mean and name, and
    (model - best) / best, the paper's "+13.7% over the best baseline" (NaN when the best is 0)."""
    means = table.groupby(["dataset", "metric", "model"])["value"].mean()
    rows = []
    for (dataset, metric), group in means.groupby(level=["dataset", "metric"]):
        group = group.droplevel(["dataset", "metric"])
        ref = group[group.index.isin(reference) & (group.index != model)].dropna()
        if model not in group.index or ref.empty:
            continue
        best, ours = ref.idxmax(), float(group[model])
        rel = metrics_core.relative_gain(ours, float(ref[best]))
        rows.append((dataset, metric, ours, best, float(ref[best]), rel))
    return pd.DataFrame(rows, columns=["dataset", "metric", model, "best_baseline", "best_value", "relative"])



def nested_means(table: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """dataset -> model -> metric -> mean over seeds: the `results` block of notebook 06's metrics.json.

    >>> t = pd.DataFrame({"dataset": ["d", "d"], "model": ["m", "m"], "seed": [0, 1], "metric": ["HR@20"] * 2,
    ...                   "value": [0.1, 0.3]})
    >>> nested_means(t)
    {'d': {'m': {'HR@20': 0.2}}}
    """
    means = table.groupby(["dataset", "model", "metric"], sort=False)["value"].mean()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (dataset, model, metric), value in means.items():
        out.setdefault(dataset, {}).setdefault(model, {})[metric] = round(float(value), 6)
    return out
