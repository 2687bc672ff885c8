"""Notebook 03's stage: the two failures CoNRec starts from, measured (PAPER.md "Three problems", 2 and 3).

Part 1, target misalignment (problem 3): how much of a user's top-1 / top-4 negative interests a training target
covers (`diagnosis.coverage`: the next negative, the next 7 days' negatives, and those plus Swing neighbours).

Part 2, positive-context dominance (problem 2). One model is first taught the item vocabulary (for the
tiny, randomly initialised model: `prior_steps` of next-negative SFT on empty-history prompts, which
teaches which SIDs exist and which get disliked; a pretrained LLM skips it), then copied and fine-tuned
(a) on next-negative prediction with only the negative section in the prompt, (b) with the negative and
the (longer) positive section, and (c) the way generative recommenders are usually trained, with the
next-positive task mixed in (`positive_task_share`); (c) is then asked for negatives with and without
the positive section. Every model and baseline is scored on the same test rows by `recommend`.

Diagnostics beyond the paper's metrics, to explain what the models do:
- positive_leakage: share of predicted items the user liked in the test window (metrics.py);
- history_positive_share: share of predicted items that the user liked *before* the cutoff (the prompt's
  positive section): copying from the positives;
- aversion_share (simulator only): share of predicted items that carry one of the user's true aversion
  facets, a hit-free measure of "are these things this user dislikes";
- context_overlap: share of the top-k that the same model also returns for an empty history; 1.0 means
  the model ignores the user's history entirely;
- attention_share: where the last prompt position looks (negative items, positive items, the rest;
  `diagnosis.attention`);
- two reference rankings: items sharing their first SID code (~ category) with the user's past
  negatives, and with the past positives: what a model that drifts toward the positives would lose.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import pandas as pd

from conrec_lib.data import histories
from conrec_lib.diagnosis.attention import mean_attention_share
from conrec_lib.diagnosis.coverage import COVERAGE_COLUMNS, SETS, interest_coverage
from conrec_lib.diagnosis import coverage
from conrec_lib import artifacts, hardware, metrics, paper, runs
from conrec_lib import findings as findings_
from conrec_lib.data import dataset as data, dataprep, simulate
from conrec_lib.sids import item_tokenizer, semantic_ids
from conrec_lib.llm import diagnostics as llm_diagnostics, model, recommend, sft, tasks
from conrec_lib.baselines.heuristics import history_items, like_history_predictions, popularity_predictions
from conrec_lib import configs
from conrec_lib.configs import check_types
from conrec_lib.data.dataprep import PreparedData
from conrec_lib.llm.model import ModelBundle, ModelConfig
from conrec_lib.llm.prompts import PromptConfig, apply_chat, build_prompt
from conrec_lib.llm.recommend import EvalResult
from conrec_lib.llm.sft import SFTConfig
from conrec_lib.baselines.swing import SwingConfig

STAGE = "03_positivity_bias"
VARIANTS = ("neg_only", "neg_pos", "genrec")  # the three fine-tuned models
# Each fine-tuned model is asked for negatives with (True) and/or without (False) the positive section.
EVALUATIONS = {"neg_only": (("neg_only", False),), "neg_pos": (("neg_pos", True),),
               "genrec": (("genrec_neg_only", False), ("genrec_neg_pos", True))}
BASELINES = ("popularity", "like_past_negatives", "like_past_positives")
REPORTED = ("HR@20", "FHR@20", "CandAcc", "positive_leakage", "history_positive_share", "aversion_share",
            "context_overlap")
# The paper's numbers, for the plots and the summary (PAPER.md problems 2 and 3).
# (top-4 coverage rises above top-1: it fits our "_any" reading)
PAPER = {"coverage_top1": paper.COVERAGE_TOP1, "coverage_top4": paper.COVERAGE_TOP4, **paper.POSITIVITY_BIAS}


def _sft_default() -> SFTConfig:
    """Per variant. 150 steps keep notebook 03 near 4 minutes on a 2-core CPU; the tiny model only starts to
    use the history after ~1000 (context_overlap 0.8 -> 0.5). GPU (smollm2-135m, LoRA): 2000 steps, lr 2e-4."""
    return SFTConfig(max_steps=150, batch_size=16, lr=3e-3, warmup_steps=10, log_every=15, checkpoint_every=10_000)


@dataclasses.dataclass
class BiasConfig:
    """Notebook 03's settings: one model recipe for every variant, the example counts, Part 1's Swing."""

    # the backbone: tiny (random init, so full fine-tuning: LoRA on frozen random weights only limits it);
    # GPU: BiasConfig.for_model("smollm2-135m") (LoRA, lr 2e-4, chat template, no prior warm-up)
    model: ModelConfig = dataclasses.field(default_factory=lambda: ModelConfig(lora=False))
    sft: SFTConfig = dataclasses.field(default_factory=_sft_default)  # per variant; GPU: max_steps=2000
    prior_steps: int = 1500  # tiny: empty-history next-negative SFT shared by every variant; pretrained: 0
    prompt: PromptConfig = dataclasses.field(default_factory=PromptConfig)  # include_positives is set per variant
    # examples: the same rows for every variant
    max_train_examples: Optional[int] = 4000  # GPU: None (all ~8k)
    max_test_examples: Optional[int] = 300  # GPU: None (all 896)
    positive_task_share: float = 0.5  # genrec variant: share of next-positive examples in its training mix
    # evaluation
    k: int = 20  # paper: top-20
    beam_batch_size: int = 32
    attention_prompts: int = 32  # test prompts averaged by attention_share
    diagnose_models: bool = True  # llm_diagnostics of the LC-Rec variants (one more beam search each, shuffled histories)
    diagnostics_prompts: int = 10  # prompts whose valid-SID mass is summed exactly over every SID
    # Part 1
    swing: SwingConfig = dataclasses.field(default_factory=SwingConfig)
    swing_neighbours: int = 10  # Swing neighbours added per user (the paper does not say how many)
    # runtime
    # torch CPU threads; None: torch's default. Measured (tiny, 2 cores): quiet box 2 threads 1.6x faster than 1;
    # box shared with other jobs 1 thread 3-8x faster than 2. 1 keeps the run time predictable.
    num_threads: Optional[int] = 1
    seed: int = 0

    @classmethod
    def for_model(cls, name: str, **fields) -> "BiasConfig":
        """The defaults for a backbone: "tiny" as above; a pretrained model (e.g. "smollm2-135m") gets LoRA,
        lr 2e-4, its chat template and no prior warm-up (it learns the SIDs from the task itself)."""
        if name == model.TINY:
            return cls(**fields)
        pretrained = dict(model=ModelConfig(name=name, lora=True), sft=dataclasses.replace(_sft_default(), lr=2e-4),
                          prompt=PromptConfig(chat_template=True), prior_steps=0)
        return cls(**{**pretrained, **fields})

    def with_steps(self, sft_steps: int, prior_steps: Optional[int] = None) -> "BiasConfig":
        """A copy training `sft_steps` per variant (warm-up shortened as `sft.with_steps`) and, when given,
        `prior_steps` of the shared empty-history warm-up; validated like any new config."""
        prior = self.prior_steps if prior_steps is None else prior_steps
        return dataclasses.replace(self, sft=sft.with_steps(self.sft, sft_steps), prior_steps=prior)

    def __post_init__(self) -> None:
        check_types(self)
        if not 0 <= self.positive_task_share < 1:
            raise ValueError(f"BiasConfig.positive_task_share={self.positive_task_share}: use a share in [0, 1), "
                             "e.g. 0.5 (half next-positive, half next-negative examples)")
        if self.prior_steps < 0:
            raise ValueError(f"BiasConfig.prior_steps={self.prior_steps}: use 0 (no warm-up) or more steps")
        for name in ("k", "beam_batch_size", "attention_prompts", "swing_neighbours"):
            if getattr(self, name) < 1:
                raise ValueError(f"BiasConfig.{name}={getattr(self, name)}: must be >= 1")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"BiasConfig.num_threads={self.num_threads}: use None (torch's default) or >= 1")
        if self.model.name != model.TINY and self.model.lora is False and self.sft.lr > 1e-3:
            raise ValueError(f"BiasConfig: full fine-tuning of the pretrained {self.model.name!r} with lr="
                             f"{self.sft.lr} would wreck it; set model.lora=True and sft.lr=2e-4")


# --- Part 2: the training data of each variant -----------------------------------------------------------

class ExampleSets(NamedTuple):
    """Training examples of the three variants (same rows for neg_only / neg_pos) and the tokenizer corpus."""

    neg_only: list[tasks.Example]
    neg_pos: list[tasks.Example]
    genrec: list[tasks.Example]
    corpus: list[str]  # trains the tiny model's tokenizer once, for every variant


def with_positives(prompt_cfg: PromptConfig, include: bool) -> PromptConfig:
    """The prompt settings with the positive section switched on or off (and no chat wrapper yet)."""
    return dataclasses.replace(prompt_cfg, include_positives=include, chat_template=False)


def genrec_mix(neg_only: Sequence[tasks.Example], neg_pos: Sequence[tasks.Example],
               positives: Sequence[tasks.Example], seed: int) -> list[tasks.Example]:
    """The generative-recommender training mix: next-positive examples plus next-negative ones, each of the
    latter shown with or without the positive section (a fair coin from `seed`), so that asking the model
    for negatives either way stays within what it was trained on."""
    coin = np.random.default_rng([seed, 1]).random(len(neg_pos)) < 0.5
    negatives = [p if c else n for n, p, c in zip(neg_only, neg_pos, coin)]
    return negatives + list(positives)


def build_examples(prepared: PreparedData, table, cfg: BiasConfig) -> ExampleSets:
    """The training examples of every variant, from the split's training rows (no test-window data)."""
    build, n = tasks.next_negative_examples, cfg.max_train_examples
    neg_only = build(prepared, table, with_positives(cfg.prompt, False), "train", n, cfg.seed)
    neg_pos = build(prepared, table, with_positives(cfg.prompt, True), "train", n, cfg.seed)
    n_pos = round(len(neg_pos) * cfg.positive_task_share / (1 - cfg.positive_task_share))
    positives = tasks.next_positive_examples(prepared, table, with_positives(cfg.prompt, True), "train",
                                             n_pos, cfg.seed) if n_pos else []
    corpus = [e.prompt for e in neg_pos[::20]] + [e.prompt for e in positives[:1]]
    corpus += prepared.dataset.items["title"].astype(str).tolist()
    return ExampleSets(neg_only, neg_pos, genrec_mix(neg_only, neg_pos, positives, cfg.seed), corpus)


def empty_prompt(bundle: ModelBundle, prompt_cfg: PromptConfig) -> str:
    """The next-negative prompt of a user with no history (what the prior warm-up trains on)."""
    text = build_prompt([], [], with_positives(prompt_cfg, False))
    return apply_chat(bundle.tokenizer, text) if prompt_cfg.chat_template else text


def chat_wrapped(bundle: ModelBundle, examples: Sequence[tasks.Example], chat_template: bool
                 ) -> list[tuple[str, str]]:
    """(prompt, completion) pairs, the prompts wrapped in the model's chat template when asked."""
    if not chat_template:
        return tasks.pairs(examples)
    return [(apply_chat(bundle.tokenizer, e.prompt), e.completion) for e in examples]


# --- Part 2: train and evaluate ------------------------------------------------------------------------

def train_base(prepared: PreparedData, sets: ExampleSets, tokenized, cfg: BiasConfig, stage, progress: bool
               ) -> tuple[ModelBundle, Optional[sft.SFTResult]]:
    """The model every variant starts from: loaded, then (prior_steps > 0) taught the item vocabulary and
    the popularity of negatives: next-negative SFT on every training row's target with an empty history
    (short prompts, so these steps are cheap). The SID rows start from the items' codewords."""
    table, token_vectors = tokenized.sids.table, semantic_ids.token_vectors(tokenized.sids)
    bundle = model.load_model(cfg.model, table.vocabulary(), sets.corpus, token_vectors)
    if cfg.prior_steps == 0:
        return bundle, None
    prior = dataclasses.replace(cfg.sft, max_steps=cfg.prior_steps,
                                warmup_steps=min(cfg.sft.warmup_steps, cfg.prior_steps - 1))
    empty = empty_prompt(bundle, cfg.prompt)
    pairs = [(empty, table.sid_of(int(i))) for i in histories.split_rows(prepared, "train")["next_negative"]]
    return bundle, sft.train(bundle, pairs, prior, out_dir=stage / "prior", progress=progress, resume=False)


def train_variant(base: ModelBundle, examples: Sequence[tasks.Example], cfg: BiasConfig, out_dir,
                  progress: bool) -> tuple[ModelBundle, sft.SFTResult]:
    """A copy of the base model fine-tuned on one variant's examples (the base stays as it was)."""
    bundle = copy.deepcopy(base)
    pairs = chat_wrapped(bundle, examples, cfg.prompt.chat_template)
    return bundle, sft.train(bundle, pairs, cfg.sft, out_dir=out_dir, progress=progress, resume=False)


def evaluate_variant(bundle: ModelBundle, prepared: PreparedData, tokenized, cfg: BiasConfig, positives: bool,
                     progress: bool, diagnose: bool = False) -> EvalResult:
    """`recommend.evaluate_model` on the test rows, with or without the positive section, plus diagnostics."""
    prompt_cfg = dataclasses.replace(cfg.prompt, include_positives=positives)
    result = recommend.evaluate_model(bundle, prepared, tokenized, prompt_cfg, cfg.k, cfg.max_test_examples,
                                      cfg.seed, cfg.beam_batch_size, progress)
    result.metrics.update(diagnostics(result.predictions, result.examples, prepared, cfg.k))
    context_free = recommend.predict(bundle, [empty_prompt(bundle, cfg.prompt)],
                                     recommend.sid_trie(bundle, tokenized.sids.table), tokenized.sids.table, cfg.k)
    result.metrics["context_overlap"] = overlap(result.predictions, context_free[0], cfg.k)
    if diagnose:
        result.metrics["diagnostics"] = llm_diagnostics.diagnose(
            bundle, prepared, tokenized, result, cfg.k, cfg.diagnostics_prompts, cfg.beam_batch_size, cfg.seed).as_dict()
    return result


def overlap(predictions: Sequence[Sequence[int]], reference: Sequence[int], k: int) -> float:
    """Mean share of each top-k list that is also in `reference`'s top-k.

    >>> overlap([[1, 2], [3, 4]], [1, 3], k=2)
    0.5
    """
    ref = set(reference[:k])
    return float(np.mean([len(set(p[:k]) & ref) / k for p in predictions]))


def diagnostics(predictions: Sequence[Sequence[int]], examples: pd.DataFrame, prepared: PreparedData,
                k: int) -> dict[str, float]:
    """history_positive_share and, on the simulator, aversion_share (module docstring), micro-averaged."""
    out = {"history_positive_share": metrics.positive_leakage(
        predictions, history_items(prepared, examples, "positive"), k)}
    if prepared.dataset.ground_truth is not None:
        averse = simulate.dislike_scores(prepared.dataset) > 0  # (n_users, n_items)
        hits = [averse[u, [int(i) for i in p[:k]]].sum() for u, p in zip(examples["user_id"], predictions)]
        out["aversion_share"] = float(np.sum(hits) / max(sum(len(p[:k]) for p in predictions), 1))
    return out


# --- reference rankings (no model; the rankings live in baselines/heuristics.py), scored by the same path ---------

def baselines(prepared: PreparedData, tokenized, cfg: BiasConfig) -> dict[str, EvalResult]:
    """The reference rankings of BASELINES on the models' test rows, through `recommend.score`."""
    table = tokenized.sids.table
    rows = tasks.example_rows(prepared, recommend.eval_examples(prepared, table, with_positives(cfg.prompt, False),
                                                                cfg.max_test_examples, cfg.seed), "test")
    codes = table.codes[:, 0]
    predictions = {"popularity": popularity_predictions(prepared, rows, cfg.k),
                   "like_past_negatives": like_history_predictions(prepared, codes, rows, "negative", cfg.k),
                   "like_past_positives": like_history_predictions(prepared, codes, rows, "positive", cfg.k)}
    out = {}
    for name, preds in predictions.items():
        scored = recommend.score(preds, rows, prepared, tokenized, cfg.k)
        out[name] = EvalResult({**scored, **diagnostics(preds, rows, prepared, cfg.k)}, preds, rows, [])
    return out


# --- one user's predictions ---------------------------------------------------------------------------

class UserView(NamedTuple):
    """One test user: the history the prompts showed, and each model's top predictions."""

    history: pd.DataFrame  # feedback, day, title, category (most recent first)
    predictions: pd.DataFrame  # model, rank, title, category, disliked_later, liked_later, in_positive_history


def pick_row(examples: pd.DataFrame, min_negatives: int = 5) -> int:
    """A deterministic example to show: the first with at least `min_negatives` past negatives."""
    eligible = np.flatnonzero(examples["n_hist_neg"].to_numpy() >= min_negatives)
    return int(eligible[0]) if len(eligible) else int(examples["n_hist_neg"].to_numpy().argmax())


def user_view(prepared: PreparedData, results: dict[str, EvalResult], row: Optional[int] = None, top: int = 5,
              recent: int = 10) -> UserView:
    """History (last `recent` of each kind) and the top predictions of each model for one test example."""
    examples = next(iter(results.values())).examples
    row = pick_row(examples) if row is None else row
    ex, items = examples.iloc[row], prepared.dataset.items
    full = histories.FeedbackIndex.of(prepared).span(int(ex["user_id"]), None, int(ex["cutoff_ts"]))
    liked_before = set(full.loc[full["feedback"] == "positive", "item_id"])
    past = full.groupby("feedback", group_keys=False).tail(recent).iloc[::-1]
    history = past.assign(day=past["timestamp"] // data.SECONDS_PER_DAY,
                          title=items["title"].to_numpy()[past["item_id"]],
                          category=items["category"].to_numpy()[past["item_id"]])
    disliked = set(ex["future_negatives"]) | {int(ex["next_negative"])}
    rows = [{"model": name, "rank": r + 1, "title": items["title"].iloc[i], "category": items["category"].iloc[i],
             "disliked_later": i in disliked, "liked_later": i in set(ex["future_positives"]),
             "in_positive_history": i in liked_before}
            for name, res in results.items() for r, i in enumerate(res.predictions[row][:top])]
    return UserView(history[["feedback", "day", "title", "category"]].reset_index(drop=True), pd.DataFrame(rows))


# --- the stage -----------------------------------------------------------------------------------------

@dataclasses.dataclass
class BiasResult:
    """What notebook 03 measured; `evaluations` (with prompts and test rows) exists only in the session
    that ran `diagnose`, `load_result` restores the rest."""

    metrics: dict
    coverage: pd.DataFrame  # interest_coverage's table
    predictions: pd.DataFrame  # evaluation, row, user_id, rank, item_id
    histories: dict[str, pd.DataFrame]  # SFT loss history per variant (and "prior")
    user: Optional[UserView]
    evaluations: dict[str, EvalResult] = dataclasses.field(default_factory=dict)


def timed(timings: dict, name: str, fn: Callable, *args, **kwargs):
    """Call fn(*args, **kwargs) and record its wall time in seconds under `name`."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    timings[name] = round(time.perf_counter() - start, 2)
    return out


def variant_job(name: str, base: ModelBundle, examples: Sequence[tasks.Example], prepared: PreparedData, tokenized,
                cfg: BiasConfig, out_dir, progress: bool) -> tuple[pd.DataFrame, dict[str, EvalResult], Optional[dict],
                                                                   dict]:
    """One variant from the base: its SFT, its evaluations (EVALUATIONS) and, but for neg_only, the attention on
    the positives. Returns (loss history, evaluations, attention, timings): a pure function of its arguments, so
    `run_variants` may run the variants in worker processes."""
    timings: dict[str, float] = {}
    bundle, fit = timed(timings, f"{name}_sft", train_variant, base, examples, cfg, out_dir, progress)
    evaluations = {label: timed(timings, f"{label}_eval", evaluate_variant, bundle, prepared, tokenized, cfg,
                                positives, progress, cfg.diagnose_models and name != "genrec")
                   for label, positives in EVALUATIONS[name]}
    attention = None
    if name != "neg_only":
        shown = evaluations[f"{name}_neg_pos" if name == "genrec" else name].prompts[:cfg.attention_prompts]
        attention = timed(timings, f"{name}_attention", mean_attention_share, bundle, shown)
    return fit.history, evaluations, attention, timings


# The longest variant first: it runs in the calling process while a worker takes the other two (measured at the
# tutorial's defaults: neg_pos 132 s, genrec 120 s, neg_only 47 s).
JOB_ORDER = ("neg_pos", "neg_only", "genrec")


def run_variants(prepared: PreparedData, tokenized, sets: ExampleSets, cfg: BiasConfig, stage, timings: dict,
                 progress: bool) -> tuple[dict[str, EvalResult], dict[str, pd.DataFrame], dict[str, dict]]:
    """Train the base, then each variant from it (side by side on a multi-core CPU: `hardware.run_jobs`, the same
    numbers); evaluate (EVALUATIONS) and measure attention on positives."""
    histories = {}
    base, prior = timed(timings, "prior_sft", train_base, prepared, sets, tokenized, cfg, stage, progress)
    if prior is not None:
        histories["prior"] = prior.history
    workers = hardware.job_workers(len(JOB_ORDER), cfg.model.device)
    jobs = [(name, base, getattr(sets, name), prepared, tokenized, cfg, stage / name,
             progress and (n == 0 or workers == 1)) for n, name in enumerate(JOB_ORDER)]  # bars: calling process
    done = dict(zip(JOB_ORDER, hardware.run_jobs(variant_job, jobs, cfg.num_threads, workers)))
    evaluations, attention = {}, {}
    for name in VARIANTS:  # the order of metrics.json and predictions.parquet, whatever order the jobs ran in
        history, evals, att, took = done[name]
        histories[name] = history
        evaluations.update(evals)
        timings.update(took)
        if att is not None:
            attention[name] = att
    return evaluations, histories, attention


def relative_drop(before: dict, after: dict, keys: Sequence[str] = ("HR@20", "FHR@20", "CandAcc")) -> dict:
    """(before - after) / before per metric (NaN when before is 0): the paper's "cut HR@20 by about 45%".

    >>> relative_drop({"HR@20": 0.0296}, {"HR@20": 0.0159}, ["HR@20"])
    {'HR@20': 0.4628}
    """
    return {k: round((before[k] - after[k]) / before[k], 4) if before[k] else float("nan") for k in keys}


def per_example_scores(result: EvalResult, prepared: PreparedData, tokenized, k: int = 20) -> pd.DataFrame:
    """Per test row, its HR@k, FHR@k and CandAcc alone (what `recommend.score` computes, one row at a time)."""
    embedded = recommend.reconstructed_embeddings(tokenized)  # once, not once per row
    rows = [metrics.evaluate_rankings([p], result.examples.iloc[[n]], embedded, prepared.split.longtail_items, k)
            for n, p in enumerate(result.predictions)]
    return pd.DataFrame(rows)[[f"HR@{k}", f"FHR@{k}", "CandAcc"]]


def drop_interval(before: pd.DataFrame, after: pd.DataFrame, n_boot: int = 1000, seed: int = 0
                  ) -> dict[str, list[float]]:
    """95% paired-bootstrap interval of the relative drop (mean before - mean after) / mean before, per column.

    The same resampled test rows score both models, so the interval reflects how much the drop could move
    with another draw of test users. An interval that contains 0 is no evidence of a drop.
    """
    idx = np.random.default_rng(seed).integers(0, len(before), size=(n_boot, len(before)))  # (B, n)
    b, a = before.to_numpy()[idx].mean(axis=1), after.to_numpy()[idx].mean(axis=1)  # (B, metrics)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(b > 0, (b - a) / b, np.nan)  # resamples without a hit before have no relative drop
    out = {}
    for j, column in enumerate(before.columns):
        finite = rel[np.isfinite(rel[:, j]), j]
        low, high = np.percentile(finite, [2.5, 97.5]) if len(finite) else (np.nan, np.nan)
        out[column] = [round(float(low), 4), round(float(high), 4)]
    return out


def drop_intervals(evaluations: dict[str, EvalResult], prepared: PreparedData, tokenized, cfg: BiasConfig) -> dict:
    """Bootstrap intervals of the two relative drops the stage reports (neg_pos vs neg_only, and genrec's)."""
    scores = {name: per_example_scores(evaluations[name], prepared, tokenized, cfg.k)
              for name in ("neg_only", "neg_pos", "genrec_neg_only", "genrec_neg_pos")}
    return {"relative_drop_ci95": drop_interval(scores["neg_only"], scores["neg_pos"], seed=cfg.seed),
            "genrec_relative_drop_ci95": drop_interval(scores["genrec_neg_only"], scores["genrec_neg_pos"],
                                                       seed=cfg.seed)}


def summary(coverage: pd.DataFrame, evaluations: dict[str, EvalResult], attention: dict, histories: dict,
            sets: ExampleSets, cfg: BiasConfig, interests: str) -> dict:
    """The stage's metrics.json: coverage, every evaluation's metrics, relative drops, attention, sizes."""
    out = {f"coverage_{column}": {s: float(coverage.loc[s, column]) for s in SETS}
           for column in COVERAGE_COLUMNS if column != "mean_items"}
    out["coverage_mean_items"] = {s: float(coverage.loc[s, "mean_items"]) for s in SETS}
    out["coverage_interests"] = interests
    out.update({name: dict(res.metrics) for name, res in evaluations.items()})
    keys = (f"HR@{cfg.k}", f"FHR@{cfg.k}", "CandAcc")
    out["relative_drop"] = relative_drop(out["neg_only"], out["neg_pos"], keys)
    out["genrec_relative_drop"] = relative_drop(out["genrec_neg_only"], out["genrec_neg_pos"], keys)
    out["paper"] = {**PAPER, "relative_drop": relative_drop(PAPER["neg_only"], PAPER["neg_pos"], ("HR@20", "CandAcc"))}
    out["attention"] = attention
    out["sft_final_loss"] = {v: float(h["loss"].iloc[-1]) for v, h in histories.items()}
    out["n_train_examples"] = {v: len(getattr(sets, v)) for v in VARIANTS}
    out["n_test_examples"] = int(evaluations["neg_only"].metrics["n_examples"])
    return out


def predictions_frame(evaluations: dict[str, EvalResult]) -> pd.DataFrame:
    """All predictions in one long table: evaluation, row, user_id, rank (1 = best), item_id."""
    rows = [(name, n, int(uid), r + 1, int(i)) for name, res in evaluations.items()
            for n, (uid, pred) in enumerate(zip(res.examples["user_id"], res.predictions)) for r, i in enumerate(pred)]
    return pd.DataFrame(rows, columns=["evaluation", "row", "user_id", "rank", "item_id"])


def save(result: BiasResult, stage) -> None:
    """Write the tables of a result into the stage folder (metrics.json is written by `diagnose`, last)."""
    tables = {"coverage.csv": result.coverage, "user_history.csv": result.user.history,
              "user_predictions.csv": result.user.predictions}
    for name, frame in tables.items():
        with runs.atomic_path(stage / name) as tmp:
            frame.to_csv(tmp, index=name == "coverage.csv")  # coverage's index names the sets
    with runs.atomic_path(stage / "predictions.parquet") as tmp:
        result.predictions.to_parquet(tmp, index=False)


def interests_label(prepared: PreparedData) -> str:
    if prepared.dataset.ground_truth is not None:
        return "simulator ground truth (simulate.top_interests)"
    return "proxy: the user's most-disliked categories over the whole log (history and test window)"


def diagnose(cfg: BiasConfig, run: runs.Run, progress: bool = True) -> BiasResult:
    """Notebook 03: Part 1 (coverage), Part 2 (fine-tuned variants and reference rankings); metrics.json last."""
    prepared, tokenized = dataprep.load_prepared(run), item_tokenizer.load_sids(run)
    with run.building(STAGE, cfg) as stage:
        timings: dict[str, float] = {}
        with hardware.cpu_threads(cfg.num_threads):
            coverage = timed(timings, "coverage", interest_coverage, prepared, cfg.swing, cfg.swing_neighbours,
                             cfg.seed)
            sets = timed(timings, "examples", build_examples, prepared, tokenized.sids.table, cfg)
            reference = timed(timings, "baselines", baselines, prepared, tokenized, cfg)
            evaluations, histories, attention = run_variants(prepared, tokenized, sets, cfg, stage, timings, progress)
        user = user_view(prepared, evaluations)
        evaluations = {**reference, **evaluations}
        metrics_ = summary(coverage, evaluations, attention, histories, sets, cfg, interests_label(prepared))
        metrics_.update(timed(timings, "intervals", drop_intervals, evaluations, prepared, tokenized, cfg))
        metrics_["timings"] = {**timings, "total": round(sum(timings.values()), 2)}
        result = BiasResult(metrics_, coverage, predictions_frame(evaluations), histories, user, evaluations)
        save(result, stage)
        run.finish(STAGE, metrics_)
    return result


def load_config(run: runs.Run) -> BiasConfig:
    """The BiasConfig notebook 03 ran with (what later stages read instead of its config.json keys)."""
    return configs.read(BiasConfig, run.require(STAGE) / "config.json")


def load_result(run: runs.Run) -> BiasResult:
    """Read back what `diagnose` wrote (an error names notebook 03 if it has not finished)."""
    stage = run.require(STAGE)
    histories = {v: artifacts.read(pd.read_csv, stage / v / sft.HISTORY) for v in ("prior", *VARIANTS)
                 if (stage / v / sft.HISTORY).is_file()}
    user = UserView(artifacts.read(pd.read_csv, stage / "user_history.csv"),
                    artifacts.read(pd.read_csv, stage / "user_predictions.csv"))
    return BiasResult(run.metrics(STAGE), artifacts.read(pd.read_csv, stage / "coverage.csv", index_col=0),
                      artifacts.read(pd.read_parquet, stage / "predictions.parquet"), histories, user)


def diagnostics_table(metrics_: dict) -> pd.DataFrame:
    """The LLM diagnostics of every variant (`llm_diagnostics.table`) from metrics.json."""
    names = ("neg_only", "neg_pos", "genrec_neg_only", "genrec_neg_pos")
    return llm_diagnostics.table({n: metrics_.get(n, {}).get("diagnostics") for n in names})


def results_table(metrics_: dict, columns: Sequence[str] = REPORTED) -> pd.DataFrame:
    """One row per evaluation (baselines, then the models) from metrics.json, for display."""
    names = [*BASELINES, "neg_only", "neg_pos", "genrec_neg_only", "genrec_neg_pos"]
    rows = {n: {c: metrics_[n].get(c, float("nan")) for c in columns} for n in names if n in metrics_}
    return pd.DataFrame(rows).T


def findings(metrics_: dict) -> findings_.Findings:
    """Notebook 03's conclusions from its metrics.json, each with a margin that survives another machine."""
    cover = [metrics_[f"coverage_{t}"] for t in ("top1", "top4")]
    models = [metrics_[n] for n in ("neg_only", "neg_pos")]
    diag = [m["diagnostics"] for m in models]
    drop_ci, paper_drop = metrics_["relative_drop_ci95"], metrics_["paper"]["relative_drop"]["HR@20"]
    attention = metrics_["attention"]["neg_pos"]
    return findings_.Findings.of(
        ("Part 1: does coverage rise from the next negative to 7 days to 7 days + Swing (top-1 and top-4)?",
         all(c["next"] < c["7d"] < c["7d_swing"] for c in cover)),
        ("Do both next-negative models pay more per item than a uniform guess over the items?",
         all(d["nll_per_item"] > d["nll_uniform"] for d in diag)),
        ("Do both put less than 10% of their probability on real SIDs?", all(d["valid_sid_mass"] < 0.1 for d in diag)),
        ("Does the 95% interval of both models' context gain include 0 (they do not read the user)?",
         all(findings_.includes(d["context_gain_ci95"], 0.0) for d in diag)),
        # relative drops on notebook 03's test rows; HR@20 rests on a handful of hits there, so FHR@20 is compared
        ("Part 2: does the 95% interval of the FHR@20 drop from adding positives start below 5% (no clear drop)?",
         drop_ci["FHR@20"][0] < 0.05),
        (f"Does the paper's HR@20 drop ({paper_drop:.0%}) lie above our FHR@20 drop's interval?",
         findings_.entirely_below(drop_ci["FHR@20"], paper_drop)),
        ("Do both stay below the most-disliked list's FHR@20 by more than 0.05?",
         all(findings_.below(m["FHR@20"], metrics_["popularity"]["FHR@20"], 0.05) for m in models)),
        # which section takes more of the attention differs between CPUs (positive 0.30 vs negative 0.17 on one,
        # 0.13 vs 0.37 on another, same seed): only the comparison with the token shares holds on both
        ("Does the positive section take less of the last position's attention than its share of the tokens?",
         findings_.below(attention["positive"], attention["positive_tokens"], 0.05)))


# --- what notebook 03 displays ---------------------------------------------------------------------------

def example_prompt(run: runs.Run, cfg: BiasConfig, include_positives: bool = True) -> str:
    """The prompt and completion of the first test example, exactly as a variant sees them."""
    prepared, tokenized = dataprep.load_prepared(run), item_tokenizer.load_sids(run)
    example = tasks.next_negative_examples(prepared, tokenized.sids.table, with_positives(cfg.prompt, include_positives),
                                           "test", 1, cfg.seed)[0]
    return example.prompt + example.completion


def coverage_vs_paper(metrics_: dict) -> pd.DataFrame:
    """Rows next / 7d / 7d_swing; ours (top-1, top-4 "at least one") beside the paper's numbers."""
    return pd.DataFrame({
        "ours, top-1": metrics_["coverage_top1"], "paper, top-1": PAPER["coverage_top1"],
        "ours, top-4 (any)": metrics_["coverage_top4_any"], "paper, top-4": PAPER["coverage_top4"],
    }).loc[list(SETS)]


def loss_frame(histories: dict[str, pd.DataFrame], variants: Sequence[str] = VARIANTS) -> pd.DataFrame:
    """The SFT loss of each variant by step, one column per variant (for `plots.loss_curves`)."""
    frames = [histories[v].set_index("step")["loss"].rename(v) for v in variants if v in histories]
    return pd.concat(frames, axis=1).reset_index()


def coverage_by_world(run: runs.Run, cfg: BiasConfig) -> Optional[pd.DataFrame]:
    """Part 1's coverage in both simulated worlds (`coverage.coverage_by_world`) at the scale, seed and horizon
    notebook 01 used; None when the run's data is not the simulator."""
    data_cfg = dataprep.load_config(run)
    if data_cfg.dataset != "simulated":
        return None
    return coverage.coverage_by_world(data_cfg, cfg.swing, cfg.swing_neighbours, cfg.seed)
