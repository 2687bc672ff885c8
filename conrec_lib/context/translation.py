"""SID <-> title translation: the first context-understanding task, its examples and its accuracy.

PAPER.md "Context understanding": before any user history is involved, the LLM learns what the semantic
IDs *mean* by translating between an item's SID and its title, in both directions. Exact templates
(the prompt ends with a newline; the completion is the title or the SID alone, EOS is added by `sft`):

>>> print(SID_TO_TITLE.format(sid="<a_5><b_2><c_9><d_0>"), end="")
What is the title of the item <a_5><b_2><c_9><d_0>? Answer with the title.
>>> print(TITLE_TO_SID.format(title="slim black leather phone case"), end="")
Which item has the title "slim black leather phone case"? Answer with one item ID.

Titles are written with their whitespace collapsed (`clean_title`). Each example is a `tasks.Example`
with user_id = cutoff_ts = row = -1 (no user, no time) and target_item = the item translated.

Accuracy (`translation_accuracy`): title -> SID is an exact SID match of the top constrained beam
(`decoding.beam_search`, so only real SIDs come out); SID -> title is an exact match of the greedy
(unconstrained) generation with the title, after collapsing whitespace. Translation is memorisation of
the catalogue (there are no held-out items to generalise to), so `context_discerning` measures it on a
seeded sample of catalogue items whose examples are in the training pool.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import torch
from conrec_lib.progress import tqdm

from conrec_lib.llm import decoding, prompts, tasks
from conrec_lib.data.dataprep import PreparedData
from conrec_lib.llm.model import ModelBundle, encode_completion
from conrec_lib.sids.semantic_ids import SIDTable

SID_TO_TITLE = "What is the title of the item {sid}? Answer with the title.\n"
TITLE_TO_SID = 'Which item has the title "{title}"? Answer with one item ID.\n'
DIRECTIONS = ("sid_to_title", "title_to_sid")
NO_USER = -1  # user_id, cutoff_ts and row of examples that involve no user


def clean_title(title: str) -> str:
    """A title on one line with single spaces (how titles appear in prompts and completions).

    >>> clean_title("  Red\\n running   shoes ")
    'Red running shoes'
    """
    return " ".join(str(title).split())


def translation_example(item_id: int, title: str, sid: str, direction: str, tokenizer=None) -> tasks.Example:
    """One translation example of one item in one direction (templates: module docstring)."""
    if direction == "sid_to_title":
        prompt, completion = SID_TO_TITLE.format(sid=sid), clean_title(title)
    elif direction == "title_to_sid":
        prompt, completion = TITLE_TO_SID.format(title=clean_title(title)), prompts.completion(sid)
    else:
        raise ValueError(f"direction={direction!r}: use one of {DIRECTIONS}")
    if tokenizer is not None:
        prompt = prompts.apply_chat(tokenizer, prompt)
    return tasks.Example(NO_USER, NO_USER, prompt, completion, int(item_id), NO_USER)


def translation_examples(prepared: PreparedData, table: SIDTable, directions: Sequence[str] = DIRECTIONS,
                         item_ids: Optional[Sequence[int]] = None, tokenizer=None) -> list[tasks.Example]:
    """Translation examples over the catalogue (or `item_ids`): per item, one example per direction.

    `tokenizer` wraps the prompts in its chat template (instruct models), as `PromptConfig.chat_template` does.
    """
    titles = prepared.dataset.items["title"]
    if len(table.strings) != len(titles):
        raise ValueError(f"the SID table has {len(table.strings)} items, the dataset {len(titles)}; load both from "
                         "the same run (notebooks 01 and 02)")
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad or not directions:
        raise ValueError(f"directions={list(directions)}: use a non-empty subset of {DIRECTIONS}")
    items = range(len(titles)) if item_ids is None else [int(i) for i in item_ids]
    return [translation_example(i, titles.iloc[i], table.sid_of(i), d, tokenizer) for i in items for d in directions]


def direction_of(example: tasks.Example) -> str:
    """Which direction an example translates, read from its prompt.

    >>> direction_of(tasks.Example(-1, -1, TITLE_TO_SID.format(title="mug"), "<a_1>", 0, -1))
    'title_to_sid'
    """
    for direction, template in zip(DIRECTIONS, (SID_TO_TITLE, TITLE_TO_SID)):
        if template.split("{")[0] in example.prompt:
            return direction
    raise ValueError(f"example for item {example.target_item} is not a translation example (prompt "
                     f"{example.prompt[:60]!r}); build it with translation_examples")


@dataclasses.dataclass
class TranslationAccuracy:
    """Exact-match accuracy per direction (NaN when a direction has no examples) and over all examples."""

    title_to_sid: float
    sid_to_title: float
    overall: float
    n_title_to_sid: int
    n_sid_to_title: int


@torch.no_grad()
def greedy_generate(bundle: ModelBundle, prompt_texts: Sequence[str], max_new_tokens: int, batch_size: int = 16,
                    progress: bool = False) -> list[str]:
    """Greedy (unconstrained) generation per prompt, decoded up to EOS without special tokens."""
    tok, texts = bundle.tokenizer, []
    with decoding.eval_mode(bundle.model):
        for start in tqdm(range(0, len(prompt_texts), batch_size), disable=not progress, desc="greedy"):
            enc = decoding.left_pad(tok, list(prompt_texts[start:start + batch_size]), bundle.device)
            out = bundle.model.generate(input_ids=enc.ids, attention_mask=enc.mask, max_new_tokens=max_new_tokens,
                                        do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            texts.extend(tok.batch_decode(out[:, enc.ids.shape[1]:], skip_special_tokens=True))
    return texts


def title_hits(bundle: ModelBundle, examples: Sequence[tasks.Example], batch_size: int = 16,
               progress: bool = False) -> list[bool]:
    """SID -> title: whether greedy generation reproduces each example's title exactly."""
    longest = max(len(encode_completion(bundle.tokenizer, e.completion)) for e in examples)
    texts = greedy_generate(bundle, [e.prompt for e in examples], longest + 1, batch_size, progress)
    return [clean_title(t) == e.completion for t, e in zip(texts, examples)]


def sid_hits(bundle: ModelBundle, examples: Sequence[tasks.Example], trie: decoding.SIDTrie, num_beams: int = 1,
             batch_size: int = 16, progress: bool = False) -> list[bool]:
    """Title -> SID: whether the top constrained beam is each example's SID."""
    found = decoding.beam_search(bundle.model, bundle.tokenizer, [e.prompt for e in examples], trie,
                                 num_beams=num_beams, top_k=1, batch_size=batch_size, progress=progress)
    return [bool(f) and f[0].sid == e.completion for f, e in zip(found, examples)]


def translation_accuracy(bundle: ModelBundle, examples: Sequence[tasks.Example], table: SIDTable,
                         num_beams: int = 1, batch_size: int = 16, progress: bool = False) -> TranslationAccuracy:
    """Exact-match translation accuracy in both directions (rules: module docstring); deterministic."""
    if not examples:
        raise ValueError("translation_accuracy: no examples; pass translation_examples(...)")
    groups = {d: [e for e in examples if direction_of(e) == d] for d in DIRECTIONS}
    hits = {"sid_to_title": title_hits(bundle, groups["sid_to_title"], batch_size, progress)
            if groups["sid_to_title"] else []}
    if groups["title_to_sid"]:
        trie = decoding.SIDTrie.from_sids(bundle.tokenizer, table.strings)
        hits["title_to_sid"] = sid_hits(bundle, groups["title_to_sid"], trie, num_beams, batch_size, progress)
    else:
        hits["title_to_sid"] = []
    rate = {d: float(np.mean(h)) if h else float("nan") for d, h in hits.items()}
    every = hits["sid_to_title"] + hits["title_to_sid"]
    return TranslationAccuracy(rate["title_to_sid"], rate["sid_to_title"], float(np.mean(every)),
                               len(hits["title_to_sid"]), len(hits["sid_to_title"]))
