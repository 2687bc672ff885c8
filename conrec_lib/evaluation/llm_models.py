"""The tutorial's LLMs as recommenders for notebook 06: loaded from the run's stages, or trained on a sub-run.

On the tutorial run (the simulated world notebooks 03-05 trained on) each LLM is loaded from its stage and
asked with the prompt it was trained on (`tutorial_models`):

    lc-rec (neg)         notebook 03's neg_only: next-negative SFT, negatives in the prompt
    lc-rec (neg + pos)   notebook 03's neg_pos: the same with the positive section (LC-Rec style)
    warm-up (04)         notebook 04's with_alignment after its warm-up (recent negatives only)
    conrec               notebook 05's CoNRec (negatives + positives)

On any other (dataset, seed) (`evaluation.SubRun`), `Pipeline` trains notebook 04's and 05's stages inside
the sub-run's folder at reduced settings (`PipelineConfig`) and returns two rows:

    llm-sft (04)         04's translation_only variant after its warm-up: an LC-Rec-style model (SID
                         indexing task + next-negative SFT, negatives only), no item-level alignment
    conrec               05's CoNRec arm (alignment, warm-up, progressive GRPO with the paper's reward)

Every model is scored by `recommend.score` on the same test rows as the baselines (`comparisons.py`).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Optional, Sequence

import pandas as pd

from conrec_lib import runs
from conrec_lib.context import context_discerning
from conrec_lib.diagnosis import positivity_bias
from conrec_lib.sids import item_tokenizer
from conrec_lib.llm import model, recommend, tasks
from conrec_lib.rl import progressive
from conrec_lib.configs import check_types
from conrec_lib.data.dataprep import PreparedData
from conrec_lib.sids.item_tokenizer import Tokenized
from conrec_lib.llm.model import ModelBundle
from conrec_lib.sids.semantic_ids import SIDTable
from conrec_lib.llm.prompts import PromptConfig, chat_tokenizer

TUTORIAL_LLMS = ("lc-rec (neg)", "lc-rec (neg + pos)", "warm-up (04)", "conrec")


class LLM(NamedTuple):
    """A saved model and the prompt it answers (what `predict_rows` needs)."""

    load: Callable[[], ModelBundle]
    prompt: PromptConfig


def bias_variant(run: runs.Run, variant: str) -> LLM:
    """Notebook 03's fine-tuned variant ("neg_only" or "neg_pos") with its prompt."""
    stage = run.require(positivity_bias.STAGE)
    prompt = dataclasses.replace(positivity_bias.load_config(run).prompt, include_positives=variant == "neg_pos")
    vocabulary = item_tokenizer.load_sids(run).sids.table.vocabulary()
    return LLM(lambda: model.load_saved(stage / variant / "adapter", vocabulary), prompt)


def last_prompt(run: runs.Run) -> PromptConfig:
    """The stage-3 prompt notebook 05 trained CoNRec to its end with (`progressive.load_config`)."""
    return progressive.load_config(run).prompts()[-1]


def tutorial_models(run: runs.Run, names: Sequence[str] = TUTORIAL_LLMS) -> dict[str, LLM]:
    """The named LLMs of notebooks 03-05 (module docstring); a missing stage names its notebook."""
    unknown = sorted(set(names) - set(TUTORIAL_LLMS))
    if unknown:
        raise ValueError(f"tutorial_models: unknown LLM(s) {unknown}; choose from {TUTORIAL_LLMS}")
    warmup_prompt = context_discerning.load_config(run).rec_prompt()
    makers = {"lc-rec (neg)": lambda: bias_variant(run, "neg_only"),
              "lc-rec (neg + pos)": lambda: bias_variant(run, "neg_pos"),
              "warm-up (04)": lambda: LLM(lambda: context_discerning.load_bundle(run), warmup_prompt),
              "conrec": lambda: LLM(lambda: progressive.load_bundle(run), last_prompt(run))}
    return {name: makers[name]() for name in names}


def test_prompts(llm: LLM, bundle: ModelBundle, prepared: PreparedData, table: SIDTable, max_examples: Optional[int],
                 seed: int) -> tuple[list[str], pd.DataFrame]:
    """The LLM's own prompts for the test rows `recommend.eval_examples(max_examples, seed)` picks (the rows every
    model of a comparison is scored on), and those rows."""
    tokenizer = chat_tokenizer(bundle.tokenizer, llm.prompt)
    examples = recommend.eval_examples(prepared, table, llm.prompt, max_examples, seed, tokenizer)
    return [e.prompt for e in examples], tasks.example_rows(prepared, examples, "test")


def predict_rows(llm: LLM, prepared: PreparedData, tokenized: Tokenized, max_examples: Optional[int], seed: int,
                 k: int = 20, progress: bool = False) -> list[list[int]]:
    """The LLM's top-k items for the test rows of `test_prompts`, each asked with the LLM's own prompt."""
    bundle = llm.load()
    table = tokenized.sids.table
    prompts, rows = test_prompts(llm, bundle, prepared, table, max_examples, seed)
    return recommend.predict(bundle, prompts, recommend.sid_trie(bundle, table), table, k,
                             progress=progress, exclude=recommend.excluded_items(prepared, rows))


@dataclasses.dataclass
class PipelineConfig:
    """Reduced notebook-04 and -05 settings for training the LLMs on another dataset (`Pipeline`)."""

    context_steps: int = 600  # context SFT steps per variant (notebook 04: 1500; GPU: 5000)
    warmup_steps: int = 150  # (notebook 04: 200; GPU: 2000)
    n_train: int = 9600  # mixed context examples (notebook 04: 24000)
    stage_steps: int = 15  # GRPO steps per curriculum stage (notebook 05: 15; GPU: 1000)
    n_eval: int = 50  # test rows the stages evaluate themselves on (the comparison scores its own rows)

    def __post_init__(self) -> None:
        check_types(self)

    def context(self, seed: int) -> context_discerning.ContextConfig:
        return context_discerning.ContextConfig(
            n_train=self.n_train, n_align_eval=self.n_eval, n_translation_eval=20, n_rec_eval=self.n_eval,
            seed=seed).with_steps(self.context_steps, self.warmup_steps)

    def grpo(self, seed: int) -> progressive.ProgressiveConfig:
        return progressive.ProgressiveConfig(stage_steps=(self.stage_steps,) * 3, reward_variants=(),
                                             plain_grpo=False, n_rec_eval=self.n_eval, seed=seed)


@dataclasses.dataclass
class Pipeline:
    """The `evaluation.ExtraModels` hook: notebooks 04 and 05 in the sub-run, then both LLMs on its test rows."""

    cfg: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
    progress: bool = False

    def __call__(self, sub) -> dict[str, list[list[int]]]:
        context_discerning.train_context(self.cfg.context(sub.seed), sub.run, progress=self.progress)
        progressive.train_progressive(self.cfg.grpo(sub.seed), sub.run, progress=self.progress)
        warmup_prompt = context_discerning.load_config(sub.run).rec_prompt()
        vocabulary = sub.tokenized.sids.table.vocabulary()
        models = {"llm-sft (04)": LLM(lambda: model.load_saved(
                      context_discerning.adapter_dir(sub.run, "translation_only"), vocabulary), warmup_prompt),
                  "conrec": LLM(lambda: progressive.load_bundle(sub.run), last_prompt(sub.run))}
        return {name: predict_rows(llm, sub.prepared, sub.tokenized, sub.max_test_examples, sub.seed)
                for name, llm in models.items()}
