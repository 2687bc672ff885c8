"""What a notebook concludes, as yes/no findings that nbval can check on any machine.

Why not check the tables themselves: trained numbers differ between CPUs in their last bits (float kernels differ
between instruction sets and BLAS builds), and a few hundred training steps turn last bits into different models.
Measured: notebook 02's SIDs, and every model trained on them, differ between two x86 machines running the same
pinned packages about as much as between two seeds (03's FHR@20 for `neg_only` 0.190 on one, 0.140 on the other).
nbval compares stored outputs exactly, so the cells it checks state the notebook's conclusions, each decided with a
margin wider than that spread, and the tables of numbers sit beside them unchecked. A finding that reads
differently on your machine is a real change of conclusion, not noise.

    >>> f = Findings.of(("Is 0.3 above 0.2 by more than 0.05?", above(0.3, 0.2, margin=0.05)),
    ...                 ("Does [-0.1, 0.2] include 0?", includes([-0.1, 0.2], 0.0)))
    >>> print(f)
    Is 0.3 above 0.2 by more than 0.05?  yes
    Does [-0.1, 0.2] include 0?          yes
    >>> f["Does [-0.1, 0.2] include 0?"]
    True
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class Finding:
    question: str  # a yes/no question, with its threshold in words
    answer: bool


@dataclasses.dataclass(frozen=True)
class Findings:
    """A notebook's findings in reading order; its text (one `question  yes|no` line each) is what nbval checks."""

    items: tuple[Finding, ...]

    @classmethod
    def of(cls, *pairs: tuple[str, bool]) -> "Findings":
        found = tuple(Finding(q, bool(a)) for q, a in pairs)
        questions = [f.question for f in found]
        if len(set(questions)) != len(questions):
            raise ValueError(f"Findings: a question is asked twice in {questions}")
        return cls(found)

    def __getitem__(self, question: str) -> bool:
        for f in self.items:
            if f.question == question:
                return f.answer
        raise KeyError(f"no finding {question!r}; the findings are {[f.question for f in self.items]}")

    def as_dict(self) -> dict[str, bool]:
        return {f.question: f.answer for f in self.items}

    def __str__(self) -> str:
        width = max((len(f.question) for f in self.items), default=0)
        return "\n".join(f"{f.question:<{width}}  {'yes' if f.answer else 'no'}" for f in self.items)

    __repr__ = __str__  # what a notebook cell shows: plain text, no HTML table to compare


def _finite(*values: float) -> bool:
    return all(v is not None and math.isfinite(float(v)) for v in values)


def above(value: float, reference: float, margin: float = 0.0) -> bool:
    """`value` exceeds `reference` by more than `margin` (False when either is missing).

    >>> above(0.26, 0.25, margin=0.02), above(0.30, 0.25, margin=0.02), above(float("nan"), 0.1)
    (False, True, False)
    """
    return _finite(value, reference) and float(value) > float(reference) + margin


def below(value: float, reference: float, margin: float = 0.0) -> bool:
    """`value` is under `reference` by more than `margin` (False when either is missing).

    >>> below(0.20, 0.25, margin=0.02), below(0.24, 0.25, margin=0.02)
    (True, False)
    """
    return _finite(value, reference) and float(value) < float(reference) - margin


def includes(interval: Sequence[float], value: float) -> bool:
    """The closed interval `[low, high]` contains `value`.

    >>> includes([-0.02, 0.01], 0.0), includes([0.01, 0.05], 0.0)
    (True, False)
    """
    low, high = interval
    return _finite(low, high, value) and float(low) <= float(value) <= float(high)


def entirely_above(interval: Sequence[float], value: float) -> bool:
    """The whole interval lies above `value` (e.g. a gain significantly above 0).

    >>> entirely_above([0.003, 0.04], 0.0), entirely_above([-0.001, 0.04], 0.0)
    (True, False)
    """
    low, high = interval
    return _finite(low, high, value) and float(low) > float(value)


def entirely_below(interval: Sequence[float], value: float) -> bool:
    """The whole interval lies below `value` (e.g. a ratio significantly under 1).

    >>> entirely_below([0.73, 0.89], 1.0), entirely_below([0.9, 1.02], 1.0)
    (True, False)
    """
    low, high = interval
    return _finite(low, high, value) and float(high) < float(value)
