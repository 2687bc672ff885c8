"""Notebook 05's stage: progressive GRPO with future-negative rewards, its ablation, reward variants, forgetting.

PAPER.md "Context utilization: Progressive GRPO". Every arm starts from notebook 04's warm-up model
(`context_discerning.load_bundle`, loaded fresh per arm) and trains with `grpo.train`:

- the curriculum (`ProgressiveConfig.stages`): stage 1 prompts show the last `recent_days` of negatives, stage 2
  all negatives, stage 3 negatives + positives; beta and step counts per stage. The reference of each stage is
  the model at the start of that stage. (The paper's "earlier-stage models clean later data" is not done here.)
- the cumulative ablation, the paper's rows: "translation only" and "+ item-level alignment" are notebook 04's
  measured rows; "+ progressive GRPO" uses the next-negative hit reward, "+ future-negative reward" the
  negatives-only similarity reward, "+ positive penalty" the paper's reward (CoNRec). Each replaces, not adds to,
  the previous reward (`rewards.py` has the formulas).
- the reward variants: the curriculum with the truncated, double-truncated and hit-based rewards.
- plain GRPO: one stage of `sum(stage steps)` steps on stage-3 prompts with the next-negative hit reward.
- forgetting (paper Table 3): alignment accuracy on notebook 04's held-out questions right after the alignment
  stage (04's `with_alignment.align_acc`) and after GRPO, for CoNRec and plain GRPO (`alignment.forgetting_rate`).

Each arm is evaluated through `recommend.evaluate_model` on the same `n_rec_eval` test examples as notebook 04
(same seed), with the prompt of its last stage; the arms in `stage_eval_arms` also after every stage (with that
stage's prompt), and a stage whose FHR@20 falls below the previous stage's gets a printed and recorded note.

Outputs in `RUN_DIR/05_progressive_grpo/`: `<arm>/history.csv` per arm, `conrec/adapter/` (the CoNRec model,
`load_bundle(run)`, for notebook 06), and `metrics.json` (last) with `ablation` (a list of rows in the paper's
order, each with `row` and REC_KEYS), `reward_variants` (reward -> metrics + final_reward), `plain_grpo`,
`warmup_last_prompt` (the warm-up model on the stage-3 prompt: where the curriculum starts from on that
prompt), `forgetting` (conrec, plain_grpo: after_alignment, after_grpo, rate), `stages` (arm -> per-stage
records), `example_user`, `n_train_examples`, `seconds`.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import NamedTuple, Optional

import pandas as pd

from conrec_lib import findings as findings_, hardware, metrics, paper, runs
from conrec_lib.context import alignment, context_discerning
from conrec_lib.baselines import heuristics as baselines
from conrec_lib.data import dataprep
from conrec_lib.rl import grpo, rewards
from conrec_lib.sids import item_tokenizer
from conrec_lib.llm import diagnostics as llm_diagnostics, model, recommend
from conrec_lib import configs
from conrec_lib.configs import check_types
from conrec_lib.data.dataprep import PreparedData
from conrec_lib.rl.grpo import GRPOConfig
from conrec_lib.sids.item_tokenizer import Tokenized
from conrec_lib.llm.model import ModelBundle
from conrec_lib.llm.prompts import PromptConfig
from conrec_lib.baselines.swing import SwingConfig

STAGE = "05_progressive_grpo"
PREVIOUS = context_discerning.STAGE
REC_KEYS = context_discerning.REC_KEYS
FINAL = "conrec"  # the arm saved for notebook 06
# ablation arm -> (its row in the paper's table, its reward)
ABLATION = {"progressive_next_negative": ("+ progressive GRPO", "next_negative_hit"),
            "progressive_negatives": ("+ future-negative reward", "negatives_only"),
            "conrec": ("+ positive penalty", "conrec")}
PLAIN = "plain_grpo"
STAGE_NAMES = ("recent negatives", "all negatives", "negatives + positives")


@dataclasses.dataclass
class ProgressiveConfig:
    """Notebook 05: the curriculum, the rewards, which arms to train, the evaluation sizes."""

    # curriculum: steps and KL weight per stage (paper: 100k samples per stage, beta tuned per stage)
    stage_steps: tuple[int, ...] = (15, 15, 15)  # GPU: (1000, 1000, 1000)
    # lr 2e-5 (tiny). Measured on all 896 test rows (tutorial run, seed 0, 50-beam search), CoNRec's FHR@20 after
    # the 3 stages: lr 5e-5 0.259, 2e-5 0.281, 1e-5 0.282, against the warm-up model on the same stage-3 prompt
    # 0.289: the similarity reward pulls towards items close to many negatives, not the user's exact ones, so
    # the larger the step the more FHR@20 falls (at 5e-5 the hit reward 0.254, next-negative hit 0.288). On a later
    # machine, stage 3 showing 5 positives: 15 steps per stage 0.305 -> 0.304 (a no-op), 100 steps per stage 0.229
    # (CoNRec reward; 264 distinct items in the users' top-20 lists instead of 353) and 0.263 (hit reward).
    # beta 0.5: beta 0.04 let the policy collapse onto a few items that the similarity reward likes
    stage_betas: tuple[float, ...] = (0.5, 0.5, 0.5)
    recent_days: int = 3  # stage 1 shows this many days of negatives
    # positives shown in stage 3 (most recent); GPU: 50. The more a prompt shows, the less the warm-up model reads the
    # negatives: measured on all 896 test rows (tutorial run, seed 0), FHR@20 with 0 / 5 / 10 / 20 / 50 positives
    # 0.315 / 0.305 / 0.291 / 0.290 / 0.273 with the earlier SIDs of one vector per title (`positives_dose`, shown in
    # notebook 05; with today's per-attribute SIDs 0.324 / 0.307 / 0.301 / 0.279). Chosen on those test rows (the
    # tutorial has no validation split), so the stage-3 numbers are an optimistic choice, said in the notebook
    max_positives: int = 5
    dose_positives: tuple[int, ...] = (0, 5, 10, 20)  # positives shown in the dose measurement (0: none); () skips it
    n_dose_eval: Optional[int] = None  # test rows of the dose measurement (None: all)
    # GRPO knobs shared by every stage and arm (max_steps and beta come from the stage)
    # reference "copy": each stage's KL is against the model at the start of the stage, also for LoRA (disabling
    # the adapter would make the reference the base model, whose SID rows notebook 04's adapter trained)
    grpo: GRPOConfig = dataclasses.field(default_factory=lambda: GRPOConfig(
        num_generations=8, learning_rate=2e-5, prompts_per_batch=8, log_every=5, reference="copy"))  # GPU: G=16,
    # lr=1e-5 (smollm2-135m, LoRA), 32 prompts
    # rewards (rewards.py)
    gamma: float = 0.5  # positive penalty weight (paper: not given)
    threshold: float = 0.6  # truncation of the truncated variants (paper: 0.6)
    n_neighbours: int = 10  # Swing neighbours added to the ground-truth set
    swing: SwingConfig = dataclasses.field(default_factory=SwingConfig)
    n_train: Optional[int] = 2000  # training rows per stage (None: all); GPU: None
    # arms beyond the ablation (a smoke profile empties these)
    reward_variants: tuple[str, ...] = ("truncated", "double_truncated", "hit")
    plain_grpo: bool = True
    stage_eval_arms: tuple[str, ...] = ("conrec",)  # arms evaluated after every stage, not only at the end
    # evaluation sizes (n_rec_eval and seed as notebook 04, so the rows compare on the same examples)
    n_rec_eval: Optional[int] = 200  # GPU: None
    # runtime: torch CPU threads while the stage runs (None: as set); see ContextConfig.num_threads
    num_threads: Optional[int] = 1
    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self)
        if len(self.stage_steps) != 3 or len(self.stage_betas) != 3:
            raise ValueError(f"ProgressiveConfig: stage_steps={self.stage_steps} and stage_betas={self.stage_betas} "
                             "need one value per curriculum stage (3)")
        if min(self.stage_steps) < 1 or min(self.stage_betas) < 0:
            raise ValueError(f"ProgressiveConfig: stage_steps must be >= 1 and stage_betas >= 0, got "
                             f"{self.stage_steps}, {self.stage_betas}")
        bad = [v for v in self.reward_variants if v not in rewards.VARIANTS]
        unknown = [a for a in self.stage_eval_arms if a not in self.arms()]
        if bad or unknown:
            raise ValueError(f"ProgressiveConfig: reward_variants {bad} not in {rewards.VARIANTS}, or stage_eval_arms "
                             f"{unknown} not among the arms {self.arms()}")
        if self.recent_days < 1 or self.max_positives < 1 or min(self.dose_positives, default=0) < 0:
            raise ValueError(f"ProgressiveConfig: recent_days={self.recent_days} and max_positives="
                             f"{self.max_positives} must be >= 1, dose_positives={self.dose_positives} >= 0")

    @classmethod
    def for_run(cls, run: runs.Run, num_generations: Optional[int] = None, prompts_per_batch: Optional[int] = None,
                learning_rate: Optional[float] = None, **fields) -> "ProgressiveConfig":
        """The defaults for the backbone notebook 04 trained (read from its saved model): the tiny model keeps
        the defaults above; a LoRA model gets lr 1e-5. The GRPO knobs given here override either."""
        saved = model.read_bundle_json(context_discerning.adapter_dir(run))["config"]
        knobs = {"learning_rate": 1e-5} if saved["lora"] else {}
        given = {"num_generations": num_generations, "prompts_per_batch": prompts_per_batch,
                 "learning_rate": learning_rate}
        knobs |= {k: v for k, v in given.items() if v is not None}
        grpo_cfg = dataclasses.replace(fields.pop("grpo", cls().grpo), **knobs)
        return cls(grpo=grpo_cfg, **fields)

    def arms(self) -> list[str]:
        """Every arm trained, in order: the ablation, the reward variants, plain GRPO."""
        return [*ABLATION, *self.reward_variants, *([PLAIN] if self.plain_grpo else [])]

    def reward_of(self, arm: str) -> str:
        return ABLATION[arm][1] if arm in ABLATION else ("next_negative_hit" if arm == PLAIN else arm)

    def prompts(self) -> list[PromptConfig]:
        """The prompt of each curriculum stage."""
        return [PromptConfig(window_days=self.recent_days), PromptConfig(),
                PromptConfig(include_positives=True, max_positives=self.max_positives)]


class CurriculumStage(NamedTuple):
    """One stage of an arm: its name, prompt, GRPO settings and training rows."""

    name: str
    prompt: PromptConfig
    grpo: GRPOConfig
    examples: list[dict]


class Context(NamedTuple):
    """What every arm shares: data, item tokenizer, reward space, training rows per stage prompt."""

    prepared: PreparedData
    tokenized: Tokenized
    space: rewards.RewardSpace
    stage_examples: list[list[dict]]  # per curriculum stage (plain GRPO uses the last)
    align_eval: list  # notebook 04's held-out alignment questions


def build_context(cfg: ProgressiveConfig, run: runs.Run) -> Context:
    """Load notebooks 01/02's data and build every stage's training rows (training period only)."""
    prepared, tokenized = dataprep.load_prepared(run), item_tokenizer.load_sids(run)
    table, scores = tokenized.sids.table, rewards.train_swing(prepared, cfg.swing)
    examples = [rewards.grpo_examples(prepared, table, p, scores, cfg.n_neighbours, cfg.n_train, cfg.seed + k)
                for k, p in enumerate(cfg.prompts())]
    return Context(prepared, tokenized, rewards.RewardSpace.of(tokenized), examples, align_eval_of(run, prepared))


def align_eval_of(run: runs.Run, prepared: PreparedData) -> list:
    """Notebook 04's held-out alignment questions, rebuilt from its config (`context_discerning.load_config`)."""
    saved = context_discerning.load_config(run)
    users = alignment.split_users(prepared.dataset.n_users, saved.eval_fraction, saved.seed)
    table = item_tokenizer.load_sids(run).sids.table
    return alignment.alignment_examples(prepared, table, users.eval, "test", saved.alignment, saved.seed,
                                        saved.n_align_eval)


def curriculum(cfg: ProgressiveConfig, arm: str, ctx: Context) -> list[CurriculumStage]:
    """The stages an arm trains through: the 3-stage curriculum, or one all-at-once stage for plain GRPO."""
    if arm == PLAIN:
        steps = dataclasses.replace(cfg.grpo, max_steps=sum(cfg.stage_steps), beta=cfg.stage_betas[-1])
        return [CurriculumStage("all at once", cfg.prompts()[-1], steps, ctx.stage_examples[-1])]
    return [CurriculumStage(name, prompt, dataclasses.replace(cfg.grpo, max_steps=s, beta=b), ex)
            for name, prompt, s, b, ex in zip(STAGE_NAMES, cfg.prompts(), cfg.stage_steps, cfg.stage_betas,
                                              ctx.stage_examples)]


def evaluate_policy(bundle: ModelBundle, ctx: Context, prompt: PromptConfig, cfg: ProgressiveConfig,
             progress: bool) -> recommend.EvalResult:
    """The recommendation metrics through the one evaluation path, on notebook 04's test examples."""
    return recommend.evaluate_model(bundle, ctx.prepared, ctx.tokenized, prompt, max_examples=cfg.n_rec_eval,
                                    seed=cfg.seed, progress=progress)


def positives_dose(bundle: ModelBundle, ctx: Context, cfg: ProgressiveConfig, progress: bool) -> list[dict]:
    """The paper's positivity bias as a dose: the model's metrics on the all-negatives prompt with the `k` most recent
    positives added, for each k in `cfg.dose_positives` (k = 0: the stage-2 prompt), on `cfg.n_dose_eval` test rows."""
    rows, hits = [], {}
    for k in cfg.dose_positives:
        prompt = PromptConfig(include_positives=True, max_positives=k) if k else PromptConfig()
        result = recommend.evaluate_model(bundle, ctx.prepared, ctx.tokenized, prompt, max_examples=cfg.n_dose_eval,
                                          seed=cfg.seed, progress=progress)
        hits[k] = metrics.row_hits(result.predictions, result.examples)
        row = {"positives": k, **{key: result.metrics[key] for key in REC_KEYS}, "n_rows": len(result.examples)}
        if k and 0 in hits and len(hits[0]) == len(hits[k]):  # the same test rows: a paired interval of the change
            row["fhr_vs_none_ci95"] = list(metrics.paired_bootstrap(hits[k], hits[0], seed=cfg.seed))
        rows.append(row)
    return rows


def stage_record(k: int, stage: CurriculumStage, metrics: Optional[dict], previous: Optional[dict]) -> dict:
    """One stage's row: settings, metrics, and whether FHR@20 fell below the previous stage's (with a note)."""
    row = {"stage": k + 1, "name": stage.name, "beta": stage.grpo.beta, "steps": stage.grpo.max_steps}
    if metrics is None:
        return row
    row |= {key: metrics[key] for key in REC_KEYS}
    row["lost_ground"] = previous is not None and metrics["FHR@20"] < previous["FHR@20"]
    if row["lost_ground"]:
        row["note"] = (f"stage {k + 1} ({stage.name}) lost ground: FHR@20 {metrics['FHR@20']:.4f} < "
                       f"{previous['FHR@20']:.4f} before it; raise its beta or lower its steps")
        print(row["note"])
    return row


class TrainedArm(NamedTuple):
    """One arm after training: final metrics, per-stage records, GRPO history, the model, its evaluation."""

    metrics: dict
    stages: list[dict]
    history: pd.DataFrame
    bundle: ModelBundle
    evaluation: recommend.EvalResult


def run_arm(arm: str, cfg: ProgressiveConfig, ctx: Context, start: dict, run: runs.Run, out: Path,
            progress: bool) -> TrainedArm:
    """Train one arm from a fresh warm-up model through its stages; evaluate after each stage or at the end."""
    bundle = context_discerning.load_bundle(run)
    trie = recommend.sid_trie(bundle, ctx.tokenized.sids.table)
    funcs = [rewards.make_reward(cfg.reward_of(arm), ctx.space, cfg.gamma, cfg.threshold)]
    plan = curriculum(cfg, arm, ctx)
    # what a stage must not fall below: the warm-up model on the same prompt when only the end is evaluated;
    # stage by stage, the previous stage (stage 1: the warm-up on stage 1's prompt, notebook 04's row)
    staged = arm in cfg.stage_eval_arms and len(plan) > 1
    stages, histories, result = [], [], None
    previous = start["stage-1 prompt"] if staged else start["stage-3 prompt"]
    for k, stage in enumerate(plan):
        fit = grpo.train(bundle, stage.examples, funcs, stage.grpo, trie, progress)
        histories.append(fit.history.assign(stage=k + 1, step=fit.history["step"] + sum(s.grpo.max_steps
                                                                                        for s in plan[:k])))
        if staged or k == len(plan) - 1:
            result = evaluate_policy(bundle, ctx, stage.prompt, cfg, progress)
        stages.append(stage_record(k, stage, result.metrics if result is not None else None, previous))
        previous = result.metrics if result is not None else previous
    history = pd.concat(histories, ignore_index=True)
    runs.write_text(out / arm / "history.csv", history.to_csv(index=False))
    metrics = {key: result.metrics[key] for key in REC_KEYS} | {"final_reward": float(history["reward"].iloc[-1])}
    if arm == FINAL:
        metrics["diagnostics"] = llm_diagnostics.diagnose(bundle, ctx.prepared, ctx.tokenized, result,
                                                          seed=cfg.seed).as_dict()
    return TrainedArm(metrics, stages, history, bundle, result)


DOSE = "positives dose"  # the job of `train_progressive` that measures the dose, beside the arms'


def stage_job(what: str, cfg: ProgressiveConfig, ctx: Context, start: dict, run: runs.Run, out: Path,
              progress: bool):
    """One independent part of the stage: the positives dose of the warm-up model (`what` = DOSE) or one arm."""
    if what == DOSE:
        return positives_dose(context_discerning.load_bundle(run), ctx, cfg, progress)
    return run_arm(what, cfg, ctx, start, run, out, progress)


def forgetting(outcomes: dict[str, TrainedArm], ctx: Context, after_alignment: float, progress: bool) -> dict:
    """Alignment accuracy after GRPO and the forgetting rate, for CoNRec and (when trained) plain GRPO."""
    out = {}
    for arm in (FINAL, PLAIN):
        if arm in outcomes:
            later = alignment.alignment_accuracy(outcomes[arm].bundle, ctx.align_eval, progress=progress)
            out[arm] = {"after_alignment": after_alignment, "after_grpo": later,
                        "rate": alignment.forgetting_rate(after_alignment, later) if after_alignment > 0 else None}
    return out


def example_user(before: recommend.EvalResult, after: TrainedArm) -> dict:
    """One test user's top-20 items from the warm-up model and from CoNRec (same prompt), and its targets."""
    row = after.evaluation.examples.iloc[0]
    return {"user_id": int(row["user_id"]), "cutoff_ts": int(row["cutoff_ts"]), "prompt": after.evaluation.prompts[0],
            "next_negative": int(row["next_negative"]), "future_negatives": [int(i) for i in row["future_negatives"]],
            "before": before.predictions[0], "after": after.evaluation.predictions[0]}


def yardsticks(ctx: Context, rows: pd.DataFrame) -> dict:
    """The non-LLM yardsticks on the arms' test rows (`evaluation.YARDSTICKS` and most_disliked): FHR@20 etc."""
    found = {"most_disliked": baselines.MostDisliked.fit(ctx.prepared),
             "own_negatives": baselines.OwnNegatives.fit(ctx.prepared, ctx.tokenized)}
    if ctx.prepared.dataset.ground_truth is not None:
        found["oracle"] = baselines.Oracle.fit(ctx.prepared)
    return {name: {k: recommend.score(b.recommend(rows), rows, ctx.prepared, ctx.tokenized)[k] for k in REC_KEYS}
            for name, b in found.items()}


def diagnostics_table(m: dict) -> pd.DataFrame:
    """The warm-up model and CoNRec on the stage-3 prompt: their LLM diagnostics (`llm_diagnostics.table`)."""
    return llm_diagnostics.table({"warm-up (04)": m["warmup_last_prompt"]["diagnostics"],
                                  "CoNRec": m["ablation"][-1].get("diagnostics")})


def ablation_rows(previous: dict, outcomes: dict[str, TrainedArm]) -> list[dict]:
    """The paper's cumulative ablation, in its order (a list: metrics.json sorts keys): notebook 04's two rows,
    then each trained ablation arm. `pd.DataFrame(rows).set_index("row")` gives the table."""
    rows = [{"row": "translation only", **{k: previous["translation_only"][k] for k in REC_KEYS}},
            {"row": "+ item-level alignment", **{k: previous["with_alignment"][k] for k in REC_KEYS}}]
    return rows + [{"row": ABLATION[arm][0], **{k: outcomes[arm].metrics[k] for k in REC_KEYS},
                    **({"diagnostics": outcomes[arm].metrics["diagnostics"]} if "diagnostics" in outcomes[arm].metrics
                       else {})} for arm in ABLATION if arm in outcomes]


@dataclasses.dataclass
class ProgressiveResult:
    """What notebook 05 hands on: metrics.json's content, GRPO histories per arm, the CoNRec model."""

    metrics: dict
    histories: dict[str, pd.DataFrame]  # arm -> step, stage, reward, kl, clip_ratio, frac_reward_zero_std, ...
    bundle: ModelBundle  # CoNRec after its last stage: what notebook 06 loads
    example: dict  # one test user's predictions before and after


def train_progressive(cfg: ProgressiveConfig, run: runs.Run, progress: bool = True,
                      context: Optional[Context] = None) -> ProgressiveResult:
    """Train every arm, evaluate, measure forgetting, save CoNRec, write metrics.json last.

    `context`: what `build_context(cfg, run)` returned, when the caller already built it (else built here).
    """
    started = time.perf_counter()
    previous = run.metrics(PREVIOUS)
    with run.building(STAGE, cfg) as out:
        with hardware.cpu_threads(cfg.num_threads):
            ctx = context if context is not None else build_context(cfg, run)
            warm = context_discerning.load_bundle(run)
            before = evaluate_policy(warm, ctx, cfg.prompts()[-1], cfg, progress)
            before.metrics["diagnostics"] = llm_diagnostics.diagnose(warm, ctx.prepared, ctx.tokenized, before,
                                                                     seed=cfg.seed).as_dict()
            start = {"stage-1 prompt": {k: previous["with_alignment"][k] for k in REC_KEYS},
                     "stage-3 prompt": before.metrics}
            # the dose and the arms are independent (each from the saved warm-up model, each seeded): side by side
            # on a multi-core CPU (`hardware.run_jobs`), the same numbers; the dose, the longest, first
            workers = hardware.job_workers(1 + len(cfg.arms()), str(warm.device))
            jobs = [(what, cfg, ctx, start, run, out, progress and (n == 0 or workers == 1))
                    for n, what in enumerate((DOSE, *cfg.arms()))]
            dose, *trained = hardware.run_jobs(stage_job, jobs, cfg.num_threads, workers)
            outcomes = dict(zip(cfg.arms(), trained))
            forgot = forgetting(outcomes, ctx, previous["with_alignment"]["align_acc"], progress)
            example = example_user(before, outcomes[FINAL])
        model.save_adapter(outcomes[FINAL].bundle, out / FINAL / "adapter")
        metrics = {"ablation": ablation_rows(previous, outcomes),
                   "reward_variants": {cfg.reward_of(a): outcomes[a].metrics for a in outcomes
                                       if a not in ("progressive_next_negative", PLAIN)},
                   "plain_grpo": outcomes[PLAIN].metrics if PLAIN in outcomes else None,
                   "positives_dose": dose,
                   "warmup_last_prompt": {k: before.metrics[k] for k in (*REC_KEYS, "diagnostics")},  # the start,
                   # on stage-3 prompts
                   "forgetting": forgot, "stages": {a: o.stages for a, o in outcomes.items()},
                   "example_user": example, "n_train_examples": [len(e) for e in ctx.stage_examples],
                   "yardsticks": yardsticks(ctx, before.examples),
                   "seconds": round(time.perf_counter() - started, 1)}
        run.finish(STAGE, metrics)
    return ProgressiveResult(metrics, {a: o.history for a, o in outcomes.items()}, outcomes[FINAL].bundle, example)


def adapter_dir(run: runs.Run) -> Path:
    """The CoNRec model notebook 06 evaluates (errors name notebook 05)."""
    return run.require(STAGE) / FINAL / "adapter"


def load_config(run: runs.Run) -> ProgressiveConfig:
    """The ProgressiveConfig notebook 05 ran with (what later stages read instead of its config.json keys)."""
    return configs.read(ProgressiveConfig, run.require(STAGE) / "config.json")


def load_bundle(run: runs.Run, device: Optional[str] = None) -> ModelBundle:
    """The CoNRec model notebook 05 ended with, rebuilt with its saved ModelConfig."""
    return model.load_saved(adapter_dir(run), item_tokenizer.load_sids(run).sids.table.vocabulary(), device)


# --- what notebook 05 shows ---------------------------------------------------------------------------

# The paper's cumulative ablation (PAPER.md): HR@20 / FHR@20 / candidate accuracy
PAPER_ABLATION = paper.ABLATION
PAPER_FORGETTING = {FINAL: paper.FORGETTING_RL["conrec"], PLAIN: paper.FORGETTING_RL["plain_grpo"]}


def curriculum_table(cfg: ProgressiveConfig) -> pd.DataFrame:
    """The curriculum as configured: each stage's prompt, steps and beta, with the GRPO knobs every stage shares."""
    rows = [{"stage": k + 1, "prompt": name, "window_days": p.window_days, "positives": p.include_positives,
             "steps": steps, "beta": beta}
            for k, (name, p, steps, beta) in enumerate(zip(STAGE_NAMES, cfg.prompts(), cfg.stage_steps,
                                                           cfg.stage_betas))]
    shared = {"G": cfg.grpo.num_generations, "prompts/step": cfg.grpo.prompts_per_batch,
              "lr": cfg.grpo.learning_rate, "epsilon": cfg.grpo.epsilon, "temperature": cfg.grpo.temperature}
    return pd.DataFrame(rows).set_index("stage").assign(**shared)


def reward_demo(ctx: Context, row: dict, cfg: ProgressiveConfig) -> pd.DataFrame:
    """Every reward of one training row for four hand-picked completions: the next negative, another
    ground-truth item, a future positive (when there is one) and the item least like the ground truth."""
    table, emb = ctx.space.table, ctx.space.embeddings
    truth = [i for i in row["ground_truth"] if i != row["next_negative"]]
    far = int(metrics.candidate_scores(emb[row["ground_truth"]], emb).argmin())
    picks = {"next negative": row["next_negative"], "other ground-truth item": truth[0] if truth else None,
             "future positive": row["future_positives"][0] if row["future_positives"] else None,
             "least similar item": far}
    picks = {k: int(v) for k, v in picks.items() if v is not None}
    completions = [table.sid_of(i) for i in picks.values()]
    columns = {c: [row[c]] * len(completions) for c in rewards.COLUMNS}
    prompts = [row["prompt"]] * len(completions)
    scores = {v: rewards.make_reward(v, ctx.space, cfg.gamma, cfg.threshold)(prompts=prompts, completions=completions,
                                                                           **columns)
              for v in rewards.VARIANTS}
    return pd.DataFrame(scores, index=pd.Index(list(picks), name="completion")).assign(item_id=list(picks.values()))


def ablation_table(m: dict) -> pd.DataFrame:
    """The cumulative ablation (ours) beside the paper's HR@20 / FHR@20 / CandAcc, plus the warm-up model on
    the stage-3 prompt (where the GRPO rows start from on that prompt)."""
    ours = pd.DataFrame(m["ablation"]).set_index("row")[list(REC_KEYS)]
    ours.loc["warm-up model, stage-3 prompt"] = pd.Series(m["warmup_last_prompt"])
    for name, row in m.get("yardsticks", {}).items():
        ours.loc[f"yardstick: {name}"] = pd.Series(row)
    ours = ours.astype(float)
    if "oracle" in m.get("yardsticks", {}):
        floor, ceiling = m["yardsticks"]["most_disliked"]["FHR@20"], m["yardsticks"]["oracle"]["FHR@20"]
        ours["gap closed"] = [metrics.gap_closed(v, floor, ceiling) for v in ours["FHR@20"]]
    reported = pd.DataFrame(PAPER_ABLATION, index=["paper HR@20", "paper FHR@20", "paper CandAcc"]).T
    return ours.add_prefix("ours ").join(reported)


def dose_table(m: dict) -> pd.DataFrame:
    """The warm-up model's metrics by how many positives its prompt shows (`positives_dose`), with the change of
    FHR@20 against the prompt without positives."""
    if not m.get("positives_dose"):
        return pd.DataFrame(columns=[*REC_KEYS, "n_rows"], index=pd.Index([], name="positives"))
    table = pd.DataFrame(m["positives_dose"]).set_index("positives")
    if 0 in table.index:
        table["FHR@20 vs none"] = table["FHR@20"] - table.loc[0, "FHR@20"]
    if "fhr_vs_none_ci95" in table:
        table["95% CI"] = [f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if isinstance(ci, list) else ""
                           for ci in table.pop("fhr_vs_none_ci95")]
    return table


def stages_table(m: dict, arm: str = FINAL) -> pd.DataFrame:
    """One arm's per-stage records: settings, metrics after the stage, lost-ground flags (notes: printed)."""
    return pd.DataFrame(m["stages"][arm]).set_index("stage").drop(columns="note", errors="ignore")


def example_row(ctx: Context, stage: int = 3, min_items: int = 6) -> dict:
    """The first training row of a curriculum stage whose prompt shows at least `min_items` items (a readable
    example; the first rows of a split can have an empty history)."""
    for row in ctx.stage_examples[stage - 1]:
        if row["prompt"].count("<a_") >= min_items:
            return row
    return ctx.stage_examples[stage - 1][0]


def variants_table(m: dict) -> pd.DataFrame:
    """The reward variants (same curriculum), each with the metrics and its own final reward."""
    return pd.DataFrame(m["reward_variants"]).T


def forgetting_table(m: dict) -> pd.DataFrame:
    """Alignment accuracy after alignment and after GRPO, with the forgetting rate, beside the paper's rate."""
    rows = pd.DataFrame(m["forgetting"]).T
    return rows.assign(paper_rate=[PAPER_FORGETTING.get(arm) for arm in rows.index])


def findings(m: dict) -> findings_.Findings:
    """Notebook 05's conclusions from its metrics.json, each with a margin that survives another machine (one hit
    on 200 test rows moves FHR@20 by 0.005)."""
    rows = {r["row"]: r for r in m["ablation"]}
    warm = max(rows["+ item-level alignment"]["FHR@20"], m["warmup_last_prompt"]["FHR@20"])
    arms = [r["FHR@20"] for r in m["ablation"][2:]] + [m[PLAIN]["FHR@20"]]
    arms += [v["FHR@20"] for v in m["reward_variants"].values()]
    conrec, yard = m["ablation"][-1], m["yardsticks"]
    diag = [m["warmup_last_prompt"]["diagnostics"], conrec["diagnostics"]]
    variants = [v["FHR@20"] for v in m["reward_variants"].values()]
    forget = [f["rate"] for f in m["forgetting"].values()]
    dose = {r["positives"]: r["FHR@20"] for r in m.get("positives_dose", [])}
    most = max(dose, default=0)
    dose_pairs = [(f"Does the warm-up model score lower FHR@20 with {most} positives in its prompt than with none "
                   "(by more than 0.01)?", findings_.below(dose[most], dose[0], 0.01))] if 0 in dose and most else []
    return findings_.Findings.of(
        ("Does any GRPO arm end above the warm-up model's FHR@20 by more than 0.03?",
         any(findings_.above(a, warm, 0.03) for a in arms)),
        ("Does full CoNRec end within 0.05 of most_disliked, and more than 0.05 below own_negatives?",
         abs(conrec["FHR@20"] - yard["most_disliked"]["FHR@20"]) <= 0.05
         and findings_.below(conrec["FHR@20"], yard["own_negatives"]["FHR@20"], 0.05)),
        ("Do the yardsticks rise most_disliked < own_negatives < oracle, each step more than 0.05?",
         findings_.above(yard["own_negatives"]["FHR@20"], yard["most_disliked"]["FHR@20"], 0.05)
         and findings_.above(yard["oracle"]["FHR@20"], yard["own_negatives"]["FHR@20"], 0.05)),
        ("Do the warm-up model and CoNRec put more than half of their probability on real SIDs?",
         all(d["valid_sid_mass"] > 0.5 for d in diag)),
        ("Do both still pay more per item than a uniform guess over the items?",
         all(findings_.above(d["nll_per_item"], d["nll_uniform"], 0.3) for d in diag)),
        ("Do the reward variants finish within 0.06 of each other on FHR@20?", max(variants) - min(variants) <= 0.06),
        (f"Are both forgetting rates below the paper's CoNRec rate ({PAPER_FORGETTING[FINAL]:.1%})?",
         all(r < PAPER_FORGETTING[FINAL] for r in forget)), *dose_pairs)


def example_table(example: dict, ctx: Context, top: int = 10) -> pd.DataFrame:
    """The example user's top items before (warm-up) and after (CoNRec), with titles and hits."""
    titles = ctx.prepared.dataset.items["title"] if "title" in ctx.prepared.dataset.items else None
    truth = set(example["future_negatives"]) | {example["next_negative"]}
    cols = {}
    for when in ("before", "after"):
        items = example[when][:top]
        cols[f"{when}: item"] = [titles.iloc[i] if titles is not None else i for i in items]
        cols[f"{when}: hit"] = ["yes" if i in truth else "" for i in items]
    return pd.DataFrame(cols, index=pd.RangeIndex(1, top + 1, name="rank"))
