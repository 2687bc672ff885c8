"""Notebook 06's stage: CoNRec against the baselines, on three datasets, and as a filter in front of a platform.

Four parts, one call each (`assess` runs them in order and writes `RUN_DIR/06_evaluation/metrics.json` last):

1. `compare_on_run`: on the tutorial run itself (the simulated world, split and SIDs notebooks 03-05 trained
   on), every baseline of `evaluation.BASELINES` and the tutorial's LLMs (`llm_models.TUTORIAL_LLMS`) on the
   same sampled test rows, scored by `recommend.score`. This is the like-for-like CoNRec comparison.
2. `evaluation.evaluate`: the baselines on the simulator (another world per seed), KuaiRand and MovieLens,
   with seeds; with `llm_on_datasets` the LLMs are trained on each of them too (`llm_models.Pipeline`).
3. The deployment filter's trade-off on logged data (`deployment.tradeoff_curve`) from CoNRec's predictions
   on the part-1 rows, and the `theta` that filters the most negatives while filtering at most
   `max_positives_filtered` of the positives (`deployment.pick_theta`).
4. The closed-loop A/B test (`ab_test`): the same simulated world run on for a few days with no filter,
   with CoNRec's filter at that theta, with the same filter fed by the best model-free baseline's
   predictions (most-disliked items), and with the category-blocking rule.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Optional

import numpy as np
import pandas as pd

from conrec_lib import findings as findings_, hardware, metrics as m_, paper, runs
from conrec_lib.evaluation import ab_test, deployment, comparisons as evaluation, filters, llm_models
from conrec_lib.baselines import heuristics
from conrec_lib.data import dataprep
from conrec_lib.sids import item_tokenizer
from conrec_lib.llm import diagnostics as llm_diagnostics, recommend, tasks
from conrec_lib.data import simulate as sim
from conrec_lib.evaluation.ab_test import ABConfig
from conrec_lib.configs import check_types
from conrec_lib.evaluation.comparisons import EvaluationConfig, SubRun
from conrec_lib.evaluation.llm_models import PipelineConfig
from conrec_lib.llm.prompts import PromptConfig

STAGE = evaluation.STAGE
TUTORIAL = "simulator (tutorial run)"
METRICS = evaluation.METRICS
# "The best baseline" of the headline: the model-free and sequential baselines and the LC-Rec-style LLMs of
# notebook 03; never the yardsticks (oracle, own_negatives), which are reported beside it.
BEST_OF = (*evaluation.BASELINES, "lc-rec (neg)", "lc-rec (neg + pos)")


@dataclasses.dataclass
class AssessmentConfig:
    """Notebook 06: what is compared where, and how the filter is deployed in the A/B test."""

    # part 1: the tutorial run
    max_test_examples: Optional[int] = None  # test rows every model is scored on (None: all 896)
    llms: tuple[str, ...] = llm_models.TUTORIAL_LLMS
    # part 2: datasets x seeds (EvaluationConfig.full(): 3 seeds, RQ-VAE, MiniLM, all rows)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    llm_on_datasets: bool = False  # train the LLMs on every (dataset, seed) too; full: True (~2 min each on CPU)
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
    # parts 3 and 4: the deployment filter
    max_positives_filtered: float = 0.05  # theta: the most negatives filtered at <= this share of positives
    ab: ABConfig = dataclasses.field(default_factory=ABConfig)
    # runtime
    num_threads: Optional[int] = 1
    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self)
        if not 0 < self.max_positives_filtered < 1:
            raise ValueError(f"AssessmentConfig.max_positives_filtered={self.max_positives_filtered}: use a share "
                             "in (0, 1), e.g. 0.05")
        if "conrec" not in self.llms:
            raise ValueError(f"AssessmentConfig.llms={self.llms} must include 'conrec' (the filter uses it)")
        if self.max_test_examples is not None and self.max_test_examples < 1:
            raise ValueError(f"AssessmentConfig.max_test_examples={self.max_test_examples}: use None or >= 1")


@dataclasses.dataclass
class RunComparison:
    """Part 1: every model's predictions and scores on the same test rows of the tutorial run, and CoNRec's
    diagnostics (`llm_diagnostics`)."""

    sub: SubRun
    predictions: dict[str, list[list[int]]]
    metrics: dict[str, dict]
    diagnostics: Optional[llm_diagnostics.Diagnostics] = None

    def table(self) -> pd.DataFrame:
        """Every model's metrics, and its share of the most_disliked -> oracle gap closed on FHR@20."""
        table = pd.DataFrame(self.metrics).T[list(METRICS)].astype(float)
        if "oracle" in table.index:
            floor, ceiling = table.loc["most_disliked", "FHR@20"], table.loc["oracle", "FHR@20"]
            table["gap closed"] = [m_.gap_closed(v, floor, ceiling) for v in table["FHR@20"]]
        return table


def tutorial_sub_run(cfg: AssessmentConfig, run: runs.Run) -> SubRun:
    """The tutorial run as an `evaluation.SubRun`: its data, SIDs and sampled test rows."""
    prepared, tokenized = dataprep.load_prepared(run), item_tokenizer.load_sids(run)
    examples = recommend.eval_examples(prepared, tokenized.sids.table, PromptConfig(), cfg.max_test_examples,
                                       cfg.seed)
    rows = tasks.example_rows(prepared, examples, "test")
    return SubRun(TUTORIAL, cfg.seed, run, prepared, tokenized, rows, cfg.max_test_examples)


def compare_on_run(cfg: AssessmentConfig, run: runs.Run, progress: bool = False) -> RunComparison:
    """Part 1 (module docstring): baselines and the tutorial's LLMs on the same rows of the tutorial run."""
    sub = tutorial_sub_run(cfg, run)
    predictions = evaluation.baseline_predictions(sub, cfg.evaluation, {})
    for name, llm in llm_models.tutorial_models(run, cfg.llms).items():
        predictions[name] = llm_models.predict_rows(llm, sub.prepared, sub.tokenized, sub.max_test_examples,
                                                    sub.seed, cfg.evaluation.k, progress)
    metrics = {name: recommend.score(p, sub.examples, sub.prepared, sub.tokenized, cfg.evaluation.k)
               for name, p in predictions.items()}
    return RunComparison(sub, predictions, metrics, conrec_diagnostics(sub, run, predictions["conrec"], cfg))


def conrec_diagnostics(sub: SubRun, run: runs.Run, predictions: list[list[int]],
                       cfg: AssessmentConfig) -> llm_diagnostics.Diagnostics:
    """`llm_diagnostics.diagnose` of CoNRec on the part-1 rows (its own prompts, its predictions)."""
    llm = llm_models.tutorial_models(run, ("conrec",))["conrec"]
    bundle = llm.load()
    prompts, _ = llm_models.test_prompts(llm, bundle, sub.prepared, sub.tokenized.sids.table, sub.max_test_examples,
                                         sub.seed)
    result = recommend.EvalResult({}, predictions, sub.examples, prompts)
    return llm_diagnostics.diagnose(bundle, sub.prepared, sub.tokenized, result, cfg.evaluation.k, seed=cfg.seed)


def headline(comparison: RunComparison, k: int = 20, seed: int = 0) -> dict:
    """The headline of notebook 06 (metrics.json `headline`): CoNRec against the best baseline on FHR@k, with
    paired bootstrap intervals over the test rows, next to the oracle and CoNRec's diagnostics."""
    rows = comparison.sub.examples
    hit = {name: m_.row_hits(p, rows, k) for name, p in comparison.predictions.items()}
    best = max((b for b in BEST_OF if b in hit), key=lambda b: hit[b].mean())
    ours, ref, d = hit["conrec"], hit[best], comparison.diagnostics
    out = {"n_rows": len(rows), "best_baseline": best, "best_baseline_fhr": float(ref.mean()),
           "conrec_fhr": float(ours.mean()), "ratio": float(ours.mean() / ref.mean()) if ref.mean() else None,
           "ratio_ci95": list(m_.paired_ratio_bootstrap(ours, ref, seed=seed)),
           "difference_ci95": list(m_.paired_bootstrap(ours, ref, seed=seed)),
           "most_disliked_fhr": float(hit["most_disliked"].mean())}
    if "oracle" in hit:
        out["oracle_fhr"] = float(hit["oracle"].mean())
        out["gap_closed"] = m_.gap_closed(out["conrec_fhr"], out["most_disliked_fhr"], out["oracle_fhr"])
    if "own_negatives" in hit:
        out["own_negatives_fhr"] = float(hit["own_negatives"].mean())
    if d is not None:
        out.update(context_gain=d.context_gain, context_gain_ci95=list(d.context_gain_ci95),
                   valid_sid_mass=d.valid_sid_mass, nll_per_item=d.nll_per_item, nll_uniform=d.nll_uniform,
                   distinct_items=d.distinct_items, diagnostics_pass=not d.verdict())
    return out


def filter_curve(comparison: RunComparison, model: str = "conrec") -> pd.DataFrame:
    """Part 3: the trade-off curve of the filter fed by `model`'s predictions on the part-1 rows."""
    emb = recommend.reconstructed_embeddings(comparison.sub.tokenized)
    return deployment.tradeoff_curve(comparison.predictions[model], comparison.sub.examples, emb)


def world_of(sub: SubRun) -> sim.World:
    """The simulated world of the tutorial run, from notebook 01's config, with its state at the log's end."""
    run, prepared = sub.run, sub.prepared
    saved = dataprep.load_config(run)
    if saved.dataset != "simulated":
        raise ValueError(f"{run.root}: the A/B test needs the simulator, but notebook 01 loaded "
                         f"{saved.dataset!r}; run the notebooks with DATASET='simulated'")
    world = sim.simulate_world(sim.SimConfig(seed=saved.seed, scale=saved.scale, world=saved.world))
    if (prepared.dataset.n_users, prepared.dataset.n_items) != (world.config.n_users, world.config.n_items):
        raise ValueError(f"{run.root}: the re-simulated world has {world.config.n_users} users and "
                         f"{world.config.n_items} items, the run {prepared.dataset.n_users} and "
                         f"{prepared.dataset.n_items}; re-run notebook 01")
    return world


def most_disliked(log: pd.DataFrame, n_items: int, k: int) -> list[int]:
    """The k items with the most "not interested" answers in `log` (ties: lower id first).

    >>> most_disliked(pd.DataFrame({"item_id": [2, 2, 1, 0], "feedback": ["negative"] * 3 + ["positive"]}), 3, 2)
    [2, 1]
    """
    counts = np.bincount(log.loc[log["feedback"] == "negative", "item_id"], minlength=n_items)
    return heuristics.ranked(counts.astype(float), set(), k)  # the most_disliked baseline's ranking rule


def ab_arms(sub: SubRun, world: sim.World, theta: float, progress: bool) -> dict:
    """Part 4's arms: control, CoNRec's filter, the same filter on most-disliked items, the category rule.

    Predictions are made once, from the log before the A/B period (what a deployment knows then)."""
    tokenized, log = sub.tokenized, filters.start_log(world)
    llm = llm_models.tutorial_models(sub.run, ("conrec",))["conrec"]
    users = np.arange(world.config.n_users)
    cutoff = int(log["timestamp"].max()) + 1
    sets = deployment.predict_sets(llm.load(), sub.prepared, tokenized.sids.table, llm.prompt, users, cutoff,
                                   progress=progress)
    popular = most_disliked(log, world.config.n_items, deployment.FilterConfig().k)
    emb, filt = recommend.reconstructed_embeddings(tokenized), deployment.FilterConfig(theta=theta)
    return {"control": None,
            "conrec filter": filters.embedding_filter(filters.Fixed(sets), emb, filt),
            "most-disliked filter": filters.embedding_filter(filters.Fixed([popular] * len(users)), emb, filt),
            "category rule": filters.category_rule(world)}


@dataclasses.dataclass
class AssessmentResult:
    """What notebook 06 shows: metrics.json's content and the tables behind it."""

    metrics: dict
    comparison: RunComparison
    datasets: evaluation.EvaluationResult
    curve: pd.DataFrame
    ab: ab_test.ABResult


def assess_job(part, cfg: AssessmentConfig, run: runs.Run, hook, progress: bool):
    """One independent part of `assess`: part 1 (`part` = TUTORIAL) or one (dataset, seed) of part 2."""
    if part == TUTORIAL:
        return compare_on_run(cfg, run, progress)
    dataset, seed = part
    return evaluation.evaluate_sub_run(cfg.evaluation, run, dataset, seed, hook)


def assess(cfg: AssessmentConfig, run: runs.Run, progress: bool = True) -> AssessmentResult:
    """The four parts of the module docstring; writes metrics.json last (`results`, `ab_test`, ...)."""
    started = time.perf_counter()
    with run.building(STAGE, cfg):
        hook = llm_models.Pipeline(cfg.pipeline) if cfg.llm_on_datasets else None
        # part 1 and every (dataset, seed) of part 2 are independent (each seeded): side by side on a multi-core
        # CPU (`hardware.run_jobs`), the same numbers; part 1, the longest, first
        parts = [TUTORIAL, *evaluation.sub_runs(cfg.evaluation)]
        workers = hardware.job_workers(len(parts))  # 1 on a GPU
        jobs = [(part, cfg, run, hook, progress and (n == 0 or workers == 1)) for n, part in enumerate(parts)]
        comparison, *subs = hardware.run_jobs(assess_job, jobs, cfg.num_threads, workers)
        datasets = evaluation.collect_datasets(cfg.evaluation, run, subs)
        with hardware.cpu_threads(cfg.num_threads):
            curve = filter_curve(comparison)
            theta = deployment.pick_theta(curve, cfg.max_positives_filtered)
            world = world_of(comparison.sub)
            ab = ab_test.run_ab_test(world, ab_arms(comparison.sub, world, theta, progress), cfg.ab, progress)
        results = {TUTORIAL: comparison.metrics} | evaluation.nested_means(datasets.tidy)
        metrics = {"headline": headline(comparison, cfg.evaluation.k, cfg.seed),
                   "results": {d: {m: {k: s[k] for k in METRICS} for m, s in models.items()}
                               for d, models in results.items()},
                   "relative_to_best_baseline": relative_to_best(comparison),
                   "conrec_diagnostics": comparison.diagnostics.as_dict(),
                   "theta": theta, "tradeoff_curve": curve.to_dict(orient="records"), "ab_test": ab.to_json(),
                   "seconds": round(time.perf_counter() - started, 1)}
        run.finish(STAGE, metrics)
    return AssessmentResult(metrics, comparison, datasets, curve, ab)


# --- what notebook 06 shows ---------------------------------------------------------------------------

# The paper's main result (PAPER.md): CoNRec vs the best baseline, relative improvement per metric
PAPER_RELATIVE = paper.RELATIVE_TO_BEST


def relative_to_best(comparison: RunComparison, model: str = "conrec") -> dict:
    """Per metric on the tutorial run: `model`, the best baseline (name, value) and (model - best) / best."""
    table = comparison.table()
    base = table.loc[[b for b in BEST_OF if b in table.index]]
    out = {}
    for metric in METRICS:
        best = base[metric].idxmax()
        ours, ref = float(table.loc[model, metric]), float(base.loc[best, metric])
        out[metric] = {model: ours, "best_baseline": best, "best_value": ref,
                       "relative": m_.relative_gain(ours, ref) if ref else None,  # None: JSON has no NaN
                       "paper_relative": PAPER_RELATIVE[metric]}
    return out


def relative_table(m: dict) -> pd.DataFrame:
    """`relative_to_best_baseline` of metrics.json as a table (numbers rounded to 3 places)."""
    table = pd.DataFrame(m["relative_to_best_baseline"]).T
    numeric = [c for c in table.columns if c != "best_baseline"]
    return table.assign(**{c: pd.to_numeric(table[c]).round(3) for c in numeric})


def headline_table(m: dict, digits: int = 3) -> pd.Series:
    """metrics.json's `headline`, one line per key, numbers and intervals rounded to `digits` places.

    >>> headline_table({"headline": {"best_baseline": "swing", "ratio": 0.98412, "ratio_ci95": [0.921926, 1.052005]}})
    best_baseline             swing
    ratio                     0.984
    ratio_ci95       [0.922, 1.052]
    dtype: object
    """
    def rounded(v):
        if isinstance(v, float):
            return round(v, digits)
        return [rounded(x) for x in v] if isinstance(v, list) else v
    return pd.Series({k: rounded(v) for k, v in m["headline"].items()}, dtype=object)


def datasets_table(result: AssessmentResult, digits: int = 3) -> pd.DataFrame:
    """Part 2: "mean +- std" over seeds of every model, one block of rows per dataset."""
    tidy = result.datasets.tidy
    blocks = {d: evaluation.mean_pm_std(tidy, d, digits) for d in dict.fromkeys(tidy["dataset"])}
    return pd.concat(blocks, names=["dataset", "model"])


AB_COLUMNS = ("negative_rate", "positive_rate", "filter_rate", "false_filter_rate", "filtered_negative_rate",
              "exposure_gini")


def ab_table(result: AssessmentResult) -> pd.DataFrame:
    """Part 4 per arm: the mean over seeds of each rate, with its std, and the change of the negative rate
    against control."""
    summary = result.ab.summary()
    summary = summary[summary["metric"].isin(AB_COLUMNS)]
    wide = summary.pivot(index="arm", columns="metric", values="mean")[list(AB_COLUMNS)]
    wide["negative_rate_std"] = summary.pivot(index="arm", columns="metric", values="std")["negative_rate"]
    wide["negatives_vs_control"] = wide["negative_rate"] / wide.loc["control", "negative_rate"] - 1
    wide.columns.name = None
    return wide.reindex(list(dict.fromkeys(result.ab.table["arm"])))


def findings(m: dict, cfg: AssessmentConfig) -> findings_.Findings:
    """Notebook 06's conclusions from its metrics.json, each with a margin that survives another machine."""
    h = m["headline"]
    fhr = {d: {model: s["FHR@20"] for model, s in models.items()} for d, models in m["results"].items()}
    curve = {round(r["theta"], 2): r for r in m["tradeoff_curve"]}
    arms = m["ab_test"]
    pairs = [
        ("Does CoNRec beat the best baseline on FHR@20, the paired ratio interval above 1?",  # which one is best
         # depends on the machine when two baselines are close (sasrec / most_disliked): the headline table names it
         findings_.entirely_above(h["ratio_ci95"], 1.0)),
        ("Is CoNRec's FHR@20 within 0.05 of the best baseline's (level with it)?",
         abs(h["conrec_fhr"] - h["best_baseline_fhr"]) <= 0.05),
        ("Does the simulator's ceiling (oracle) lie above the best baseline by more than 0.15?",
         findings_.above(h["oracle_fhr"], h["best_baseline_fhr"], 0.15)),
        ("Does the personal non-LLM ranking (own_negatives) beat the best baseline by more than 0.05?",
         findings_.above(h["own_negatives_fhr"], h["best_baseline_fhr"], 0.05)),
        ("Does CoNRec put more than half of its probability on real SIDs?", h["valid_sid_mass"] > 0.5),
        ("Does CoNRec still pay more per item than a uniform guess over the items?",
         findings_.above(h["nll_per_item"], h["nll_uniform"], 0.3)),
    ]
    if "simulator" in fhr:
        others = [v for model, v in fhr["simulator"].items() if model not in ("own_negatives", "oracle")]
        pairs.append(("Three datasets: does own_negatives lead every other model on the simulator by more than 0.05?",
                      findings_.above(fhr["simulator"]["own_negatives"], max(others), 0.05)))
    if "kuairand" in fhr:
        pairs.append(("Is every model's FHR@20 on KuaiRand below 0.05 (a cold-start window)?",
                      all(v < 0.05 for v in fhr["kuairand"].values())))
    if "movielens" in fhr:
        pairs.append(("On MovieLens, is own_negatives below most_disliked?",
                      findings_.below(fhr["movielens"]["own_negatives"], fhr["movielens"]["most_disliked"])))
    if 0.9 in curve:
        pairs.append(("Filter: at theta 0.9, does it remove more of the negatives than of the liked items (by 0.02+)?",
                      findings_.above(curve[0.9]["negatives_filtered"], curve[0.9]["positives_filtered"], 0.02)))
    pairs.append((f"Does a {cfg.max_positives_filtered:.0%} budget of liked items filtered force theta to 1 "
                  "(a filter that filters nothing)?", m["theta"] >= 1.0))
    if "category rule" in arms:
        pairs.append(("A/B: does the category rule cut 'not interested' answers by more than 20% against control?",
                      findings_.below(arms["category rule"]["negative_rate"], 0.8 * arms["control"]["negative_rate"])))
    return findings_.Findings.of(*pairs)
