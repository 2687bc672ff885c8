"""Notebook 03's attention probe: where the last prompt position looks (negative items, positive items, the rest).

Averaged over layers and heads of an eager-attention forward pass; a model that drifts toward the positives
(the paper's positive-context dominance) puts more of its attention on the positive section.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch

from conrec_lib.llm.decoding import eval_mode
from conrec_lib.llm.model import ModelBundle
from conrec_lib.llm.prompts import NEGATIVE_HEADER, POSITIVE_HEADER


def section_spans(prompt: str) -> dict[str, tuple[int, int]]:
    """Character spans of the item lines of each section present (headers excluded).

    >>> from conrec_lib.llm.prompts import PromptConfig, build_prompt
    >>> p = build_prompt(["<a_2>"], ["<a_1>"], PromptConfig(include_positives=True))
    >>> {k: p[a:b] for k, (a, b) in section_spans(p).items()}
    {'positive': '<a_1>\\n', 'negative': '<a_2>\\n'}
    """
    spans = {}
    starts = {"positive": prompt.find(POSITIVE_HEADER), "negative": prompt.find(NEGATIVE_HEADER)}
    for name, header in (("positive", POSITIVE_HEADER), ("negative", NEGATIVE_HEADER)):
        if starts[name] < 0:
            continue
        begin = starts[name] + len(header) + 1  # after the header's newline
        end = prompt.find("\n\n", begin)  # sections end with a blank line (prompts module docstring)
        spans[name] = (begin, len(prompt) if end < 0 else end + 1)
    return spans


@contextlib.contextmanager
def eager_attention(bundle: ModelBundle) -> Iterator[None]:
    """Switch the backbone to eager attention (the only kind that returns attention weights), then back."""
    base = bundle.model.get_base_model() if hasattr(bundle.model, "get_base_model") else bundle.model
    old = base.config._attn_implementation
    base.set_attn_implementation("eager")
    try:
        yield
    finally:
        base.set_attn_implementation(old)


def token_sections(bundle: ModelBundle, prompt: str) -> tuple[list[int], np.ndarray]:
    """The prompt's token ids and, per token, 0 other / 1 negative items / 2 positive items (by char offsets)."""
    enc = bundle.tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True,
                           return_special_tokens_mask=True)
    labels = np.zeros(len(enc["input_ids"]), dtype=np.int64)
    for code, name in ((1, "negative"), (2, "positive")):
        a, b = section_spans(prompt).get(name, (0, 0))
        for t, ((s, e), special) in enumerate(zip(enc["offset_mapping"], enc["special_tokens_mask"])):
            labels[t] = code if not special and e > s and a <= s < b else labels[t]
    return list(enc["input_ids"]), labels


@torch.no_grad()
def attention_share(bundle: ModelBundle, prompt: str) -> dict[str, float]:
    """Share of the last prompt position's attention (mean over layers and heads) on each section's items.

    Keys: negative, positive, other (headers, question, BOS; the three sum to 1) and the share of the
    prompt's *tokens* in each section, negative_tokens / positive_tokens, to compare attention against.
    """
    ids, labels = token_sections(bundle, prompt)
    with eager_attention(bundle), eval_mode(bundle.model):
        out = bundle.model(input_ids=torch.tensor([ids], device=bundle.device), output_attentions=True)
    last = torch.stack([a[0, :, -1, :].float() for a in out.attentions]).mean(dim=(0, 1)).cpu().numpy()  # (T,)
    share = {name: float(last[labels == code].sum()) for code, name in ((1, "negative"), (2, "positive"))}
    share["other"] = float(last[labels == 0].sum())
    share.update({f"{name}_tokens": float((labels == code).mean()) for code, name in ((1, "negative"),
                                                                                   (2, "positive"))})
    return share


def mean_attention_share(bundle: ModelBundle, prompts: Sequence[str]) -> dict[str, float]:
    """`attention_share` averaged over prompts (each prompt weighs the same)."""
    if not prompts:
        raise ValueError("mean_attention_share: no prompts; pass at least one")
    shares = [attention_share(bundle, p) for p in prompts]
    return {key: float(np.mean([s[key] for s in shares])) for key in shares[0]}
