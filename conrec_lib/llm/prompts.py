"""Prompts for next-negative-item prediction: separate, labelled feedback sections; the completion is one SID.

Issue 4 item 2; PAPER.md problem 2 (positive-context dominance) and "Progressive GRPO" (the curriculum
over what the prompt contains: last N days of negatives, all negatives, negatives + positives).

Exact layout (one item per line, each section oldest to newest, the prompt ends with a newline and
the completion is the SID alone):

>>> cfg = PromptConfig(include_positives=True)
>>> print(build_prompt(["<a_1><b_2>", "<a_3><b_0>"], ["<a_7><b_7>"], cfg), end="")
Items the user clicked or bought (oldest to newest):
<a_7><b_7>
<BLANKLINE>
Items the user marked not interested (oldest to newest):
<a_1><b_2>
<a_3><b_0>
<BLANKLINE>
Which item will the user mark not interested next? Answer with one item ID.

Choices the paper leaves open:
- Order: the positive section (when present) comes *first*, so the negative section always sits right
  above the question. If adding positives hurts, it cannot be because they pushed the negatives away
  from the question.
- With include_positives=False the positive section is absent entirely (no header, no "(none)"),
  so the two prompt variants differ only by that section.
- An empty negative history is written as the line "(none)".
- No end marker after the SID: SIDs have a fixed number of levels, so constrained decoding knows
  where an item ends, and `parse_completion` reads only the first SID.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Collection, NamedTuple, Optional, Sequence

import pandas as pd

from conrec_lib.configs import check_types

SECONDS_PER_DAY = 86_400
NEGATIVE_HEADER = "Items the user marked not interested (oldest to newest):"
POSITIVE_HEADER = "Items the user clicked or bought (oldest to newest):"
INSTRUCTION = "Which item will the user mark not interested next? Answer with one item ID."
POSITIVE_INSTRUCTION = "Which item will the user click or buy next? Answer with one item ID."  # next-positive task
EMPTY_SECTION = "(none)"
ITEM_FORMATS = ("sid", "sid+title")
_SID_RUN = re.compile(r"<a_\d+>(?:<[b-z]_\d+>)*")  # starts at level a; stops at the next <a_
_SID_TOKEN = re.compile(r"<([a-z])_(\d+)>")


@dataclasses.dataclass
class PromptConfig:
    """What the prompt shows and how items are written."""

    # which history: only the last N days before the cutoff (None = all), and positives or not
    window_days: Optional[int] = None
    include_positives: bool = False
    # caps per section; the most recent items are kept
    max_negatives: int = 20
    max_positives: int = 50
    # item text: "sid" or "sid+title" (the SID, a space, the title)
    item_format: str = "sid"
    # wrap the prompt in the tokenizer's chat template (instruct models such as SmolLM2-Instruct)
    chat_template: bool = False

    def __post_init__(self) -> None:
        check_types(self)
        if self.window_days is not None and self.window_days < 1:
            raise ValueError(f"PromptConfig.window_days must be >= 1 or None (all history), "
                             f"got {self.window_days}")
        if self.max_negatives < 1 or self.max_positives < 1:
            raise ValueError(f"PromptConfig: max_negatives and max_positives must be >= 1, got "
                             f"{self.max_negatives} and {self.max_positives}; use include_positives=False "
                             "to drop the positive section")
        if self.item_format not in ITEM_FORMATS:
            raise ValueError(f"PromptConfig.item_format must be one of {ITEM_FORMATS}, "
                             f"got {self.item_format!r}")


class RenderedHistory(NamedTuple):
    """A user's history as item strings, oldest to newest, already windowed and capped."""

    negatives: list[str]
    positives: list[str]


def _section(header: str, items: Sequence[str]) -> str:
    return "\n".join([header, *(items or [EMPTY_SECTION])]) + "\n"


def build_prompt(neg_history: Sequence[str], pos_history: Sequence[str], cfg: PromptConfig,
                 tokenizer=None, instruction: str = INSTRUCTION) -> str:
    """The prompt text for rendered item strings in time order (layout: module docstring).

    Caps are applied again here (most recent kept), so the prompt honours `cfg` whatever it is given.
    `pos_history` is ignored unless cfg.include_positives. With cfg.chat_template the text is wrapped
    by `apply_chat`, which needs `tokenizer`. `instruction` is the closing question (POSITIVE_INSTRUCTION
    for the next-positive task of `tasks.next_positive_examples`).
    """
    sections = []
    if cfg.include_positives:
        sections.append(_section(POSITIVE_HEADER, list(pos_history)[-cfg.max_positives:]))
    sections.append(_section(NEGATIVE_HEADER, list(neg_history)[-cfg.max_negatives:]))
    prompt = "\n".join([*sections, instruction + "\n"])
    if not cfg.chat_template:
        return prompt
    if tokenizer is None:
        raise ValueError("build_prompt: cfg.chat_template=True needs the model's tokenizer; pass tokenizer=")
    return apply_chat(tokenizer, prompt)


def render_item(item_id: int, sid_of: Callable[[int], str], title_of: Optional[Callable[[int], str]],
                cfg: PromptConfig) -> str:
    """One item as prompt text: its SID, or its SID, a space and its title (whitespace collapsed).

    >>> render_item(3, lambda i: f"<a_{i}>", lambda i: "Red\\nshoes", PromptConfig(item_format="sid+title"))
    '<a_3> Red shoes'
    """
    sid = sid_of(int(item_id))
    if cfg.item_format == "sid":
        return sid
    if title_of is None:
        raise ValueError("render_item: item_format='sid+title' needs title_of; "
                         "pass it or use item_format='sid'")
    return f"{sid} {' '.join(str(title_of(int(item_id))).split())}"


def _window(history: pd.DataFrame, cutoff_ts: int, cfg: PromptConfig) -> pd.DataFrame:
    """Rows strictly before the cutoff and, with window_days, no older than that many days, in time order."""
    missing = [c for c in ("item_id", "timestamp", "feedback") if c not in history.columns]
    if missing:
        raise ValueError(f"render_history: history lacks column(s) {missing}; pass interaction rows "
                         f"(data.INTERACTION_COLUMNS), it has {list(history.columns)}")
    keep = history["timestamp"] < cutoff_ts
    if cfg.window_days is not None:
        keep &= history["timestamp"] >= cutoff_ts - cfg.window_days * SECONDS_PER_DAY
    return history[keep].sort_values("timestamp", kind="stable")


def render_history(history: pd.DataFrame, cutoff_ts: int, sid_of: Callable[[int], str],
                   title_of: Optional[Callable[[int], str]], cfg: PromptConfig) -> RenderedHistory:
    """A user's interaction rows -> (negative, positive) item strings for `build_prompt`.

    Keeps rows with cutoff_ts - window_days * 86400 <= timestamp < cutoff_ts (all rows before the
    cutoff when window_days is None), ignores "exposure" rows, keeps the most recent max_negatives /
    max_positives per section, oldest first. Positives are not rendered at all unless include_positives.
    """
    rows = _window(history, cutoff_ts, cfg)
    neg = rows.loc[rows["feedback"] == "negative", "item_id"].tail(cfg.max_negatives)
    pos = rows.loc[rows["feedback"] == "positive", "item_id"].tail(cfg.max_positives)
    if not cfg.include_positives:
        pos = pos.iloc[:0]
    return RenderedHistory(negatives=[render_item(i, sid_of, title_of, cfg) for i in neg],
                           positives=[render_item(i, sid_of, title_of, cfg) for i in pos])


def _first_sid(text: str) -> Optional[str]:
    """The first run of SID tokens that starts at level a and goes up one level per token."""
    match = _SID_RUN.search(text)
    if match is None:
        return None
    tokens = _SID_TOKEN.findall(match.group())
    n = 1
    while n < len(tokens) and ord(tokens[n][0]) == ord(tokens[n - 1][0]) + 1:
        n += 1
    return "".join(f"<{level}_{code}>" for level, code in tokens[:n])


def completion(sid: str) -> str:
    """The target text of a training example: the SID itself (no end marker, see the module docstring).

    >>> completion("<a_5><b_2><c_9><d_0>")
    '<a_5><b_2><c_9><d_0>'
    """
    if _first_sid(sid) != sid:
        raise ValueError(f"completion: {sid!r} is not a SID like '<a_5><b_2><c_9><d_0>'")
    return sid


def parse_completion(text: str, valid: Optional[Collection[str]] = None) -> Optional[str]:
    """The first SID in generated text, or None if there is none or it is not in `valid`.

    >>> parse_completion(" <a_5><b_2><c_9><d_0><a_1><b_1>\\n")
    '<a_5><b_2><c_9><d_0>'
    >>> parse_completion("<a_5><b_2>", valid={"<a_5><b_2><c_9><d_0>"}) is None
    True
    >>> parse_completion("no item here") is None
    True
    """
    sid = _first_sid(text)
    if sid is None or (valid is not None and sid not in valid):
        return None
    return sid


def chat_tokenizer(tokenizer, cfg: PromptConfig):
    """The one switch for chat templates: the tokenizer `build_prompt` wraps prompts with when
    `cfg.chat_template` (an instruct model), else None (plain text, as the tiny model is trained).

    >>> chat_tokenizer("tok", PromptConfig()) is None, chat_tokenizer("tok", PromptConfig(chat_template=True))
    (True, 'tok')
    """
    return tokenizer if cfg.chat_template else None


def apply_chat(tokenizer, prompt: str) -> str:
    """Wrap `prompt` as one user turn with the tokenizer's chat template, ending with the assistant cue."""
    if getattr(tokenizer, "chat_template", "missing") is None:
        raise ValueError("apply_chat: this tokenizer has no chat template (a base model?); "
                         "set PromptConfig.chat_template=False")
    messages = [{"role": "user", "content": prompt.rstrip("\n")}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
