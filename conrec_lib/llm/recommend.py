"""From a fine-tuned model to scored recommendations: constrained beam search -> item ids -> the paper's metrics.

Every model of the tutorial (and every baseline, through `score`) is evaluated here, on the same test
examples and with the same item embeddings: the ones *reconstructed from the SID codebooks*
(`SIDResult.embed`), as the paper's deployment filter and reward use them (PAPER.md "Context
compression"), so CandAcc measures what a deployed SID model could actually compute.
"""
from __future__ import annotations

import dataclasses
from typing import Collection, Optional, Sequence

import numpy as np
import pandas as pd

from conrec_lib.data import histories
from conrec_lib import metrics
from conrec_lib.llm import decoding, tasks
from conrec_lib.sids import beam
from conrec_lib.data.dataprep import PreparedData
from conrec_lib.llm.decoding import SIDTrie
from conrec_lib.sids.item_tokenizer import Tokenized
from conrec_lib.llm.model import ModelBundle
from conrec_lib.llm.prompts import PromptConfig, chat_tokenizer
from conrec_lib.sids.semantic_ids import SIDTable


@dataclasses.dataclass
class EvalResult:
    """The metrics of one model on the test examples, with what produced them."""

    metrics: dict  # metrics.evaluate_rankings's keys: HR@k, FHR@k, LUF@k, LIF@k, CandAcc, positive_leakage, n_examples
    predictions: list[list[int]]  # per example, item ids best first
    examples: pd.DataFrame  # the split's test rows, one per prediction list
    prompts: list[str]  # the prompts the model saw (empty for baselines)


def sid_trie(bundle: ModelBundle, table: SIDTable) -> SIDTrie:
    """The prefix tree of every item's SID in the bundle's vocabulary (constrained decoding's only source)."""
    return SIDTrie.from_sids(bundle.tokenizer, table.strings)


# Beams searched for a top-k list: `sids.beam.BEAM_WIDTH` (50; why, measured, beside it), the same for TIGER.
BEAM_WIDTH = beam.BEAM_WIDTH


def predict(bundle: ModelBundle, prompts: Sequence[str], trie: SIDTrie, table: SIDTable, k: int = 20,
            batch_size: int = 16, progress: bool = False,
            exclude: Optional[Sequence[Collection[int]]] = None, num_beams: Optional[int] = None) -> list[list[int]]:
    """Per prompt, the top-k distinct items of a constrained beam search (`num_beams`, default max(k,
    BEAM_WIDTH)), best first.

    `exclude` (item ids, one collection per prompt; `excluded_items` gives the rule every model follows) are
    never returned: their SIDs are masked inside the beam search, so k real candidates remain.
    """
    banned = None if exclude is None else [[table.sid_of(i) for i in items] for items in exclude]
    beams = max(k, BEAM_WIDTH) if num_beams is None else num_beams
    found = decoding.beam_search(bundle.model, bundle.tokenizer, list(prompts), trie, num_beams=beams, top_k=k,
                                 batch_size=batch_size, progress=progress, exclude=banned)
    return [[table.item_of(s.sid) for s in scored] for scored in found]


def excluded_items(prepared: PreparedData, examples: pd.DataFrame) -> list[set[int]]:
    """The one candidate rule of every model, LLM or baseline: never a past negative of the user (the platform
    does not show it again, so it is a sure miss)."""
    return histories.history_items(prepared, examples, "negative")


def reconstructed_embeddings(tokenized: Tokenized) -> np.ndarray:
    """(n_items, d): every item's embedding decoded from its SID's codewords (what CandAcc scores with)."""
    return tokenized.sids.embed(tokenized.sids.table.strings)


def score(predictions: Sequence[Sequence[int]], examples: pd.DataFrame, prepared: PreparedData,
          tokenized: Tokenized, k: int = 20) -> dict:
    """`metrics.evaluate_rankings` with the reconstructed SID embeddings: the one scoring path for models and baselines."""
    return metrics.evaluate_rankings(predictions, examples, reconstructed_embeddings(tokenized),
                            prepared.split.longtail_items, k)


def eval_examples(prepared: PreparedData, table: SIDTable, prompt_cfg: PromptConfig,
                  max_examples: Optional[int] = None, seed: int = 0, tokenizer=None) -> list[tasks.Example]:
    """The next-negative test examples every model is scored on (same rows for the same max_examples, seed)."""
    return tasks.next_negative_examples(prepared, table, prompt_cfg, "test", max_examples, seed, tokenizer)


def evaluate_model(bundle: ModelBundle, prepared: PreparedData, tokenized: Tokenized, prompt_cfg: PromptConfig,
                   k: int = 20, max_examples: Optional[int] = None, seed: int = 0, batch_size: int = 16,
                   progress: bool = False) -> EvalResult:
    """Ask the model for the top-k next negatives of each test example and score them (module docstring)."""
    table = tokenized.sids.table
    tokenizer = chat_tokenizer(bundle.tokenizer, prompt_cfg)
    examples = eval_examples(prepared, table, prompt_cfg, max_examples, seed, tokenizer)
    prompts = [e.prompt for e in examples]
    rows = tasks.example_rows(prepared, examples, "test")
    predictions = predict(bundle, prompts, sid_trie(bundle, table), table, k, batch_size, progress,
                          excluded_items(prepared, rows))
    return EvalResult(score(predictions, rows, prepared, tokenized, k), predictions, rows, prompts)
