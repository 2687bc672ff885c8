"""Did the LLM learn anything? The diagnostics every LLM result carries (notebooks 03, 04, 05 and 06).

Constrained beam search always returns valid items, so a model that never learnt which SIDs exist, or that
ignores the user, still produces a plausible-looking top-20. Four numbers tell:

- **per-item NLL vs uniform**: the mean of -log p(SID | prompt) over the test targets, p the plain softmax over
  the whole vocabulary (no trie), next to log(n_items), what a uniform guess over the real items pays;
- **valid-SID mass**: sum over every real SID of p(SID | prompt), computed exactly by walking the SID trie level
  by level (`valid_mass`), and per level the share of probability that stays on valid continuations;
- **distinct items**: how many different items the users' top-20 lists hold together (one list for everyone: 20);
- **context test**: FHR@20 with each user's own history against the same prompts given to other users
  (histories shuffled across the test rows), the gain with a paired 95% bootstrap interval (`diagnose`).

`check` turns them into the stage's verdict: a model passes when its NLL is below uniform, its valid mass is at
least 0.9 and the interval of its context gain lies above 0.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from conrec_lib.llm import decoding, recommend
from conrec_lib.metrics import paired_bootstrap, row_hits
from conrec_lib.llm.decoding import SIDTrie, Stepper
from conrec_lib.data.dataprep import PreparedData
from conrec_lib.sids.item_tokenizer import Tokenized
from conrec_lib.llm.model import ModelBundle, encode_completion, encode_prompt
from conrec_lib.llm.recommend import EvalResult

MIN_VALID_MASS = 0.9  # the bar: at least 90% of the probability on real items


@dataclasses.dataclass
class Diagnostics:
    """What `diagnose` measures for one model on one set of test prompts (module docstring)."""

    nll_per_item: float  # nats, mean over the test targets
    nll_uniform: float  # log(n_items)
    valid_sid_mass: float  # mean over the measured prompts
    valid_share_by_level: list[float]  # level a, b, c, ...: share of mass kept on valid continuations
    distinct_items: int  # across all users' top-k
    fhr_own: float
    fhr_shuffled: float
    context_gain: float  # fhr_own - fhr_shuffled
    context_gain_ci95: tuple[float, float]
    n_rows: int

    def verdict(self) -> list[str]:
        """The failed checks, in words (empty: the model passes)."""
        out = []
        if not self.nll_per_item < self.nll_uniform:
            out.append(f"per-item NLL {self.nll_per_item:.2f} nats is not below a uniform guess "
                       f"({self.nll_uniform:.2f}): the model has not learnt the items")
        if self.valid_sid_mass < MIN_VALID_MASS:
            out.append(f"only {self.valid_sid_mass:.0%} of its probability is on real SIDs (bar: "
                       f"{MIN_VALID_MASS:.0%})")
        if not self.context_gain_ci95[0] > 0:
            out.append(f"its own history does not help: FHR@20 gain over shuffled histories "
                       f"{self.context_gain:+.3f}, 95% interval [{self.context_gain_ci95[0]:+.3f}, "
                       f"{self.context_gain_ci95[1]:+.3f}] includes 0")
        return out

    @classmethod
    def from_dict(cls, saved: dict) -> "Diagnostics":
        """The inverse of `as_dict` (what a stage's metrics.json holds)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in saved.items() if k in fields}
        return cls(**{**values, "context_gain_ci95": tuple(values["context_gain_ci95"])})

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["context_gain_ci95"] = list(self.context_gain_ci95)
        out["passes"] = not self.verdict()
        return out


# --- probabilities ------------------------------------------------------------------------------------

@torch.no_grad()
def item_nll(bundle: ModelBundle, prompts: Sequence[str], sids: Sequence[str], batch_size: int = 32,
             temperature: float = 1.0) -> np.ndarray:
    """(N,) -log p(sid | prompt) in nats under the plain softmax over the vocabulary (no trie, no EOS), of the
    logits divided by `temperature` (1: the model as it is; a calibration check fits it on held-out examples)."""
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r}: must be > 0")
    tok, out = bundle.tokenizer, []
    with decoding.eval_mode(bundle.model):
        for start in range(0, len(prompts), batch_size):
            p = [encode_prompt(tok, x) for x in prompts[start:start + batch_size]]
            c = [encode_completion(tok, s) for s in sids[start:start + batch_size]]
            logits = decoding.completion_logits(bundle.model, p, c)
            logp = torch.log_softmax(logits.logits / temperature, -1).gather(2, logits.targets[..., None]).squeeze(-1)
            out.append((-(logp * logits.mask).sum(1)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


@torch.no_grad()
def valid_mass(bundle: ModelBundle, prompt: str, trie: SIDTrie) -> tuple[float, list[float]]:
    """Exact sum of p(SID | prompt) over every SID in `trie`, and per level the share of the mass that reaches it
    which stays on valid tokens (level a: p(valid first code); level b: given a valid a, weighted by p(a); ...)."""
    with decoding.eval_mode(bundle.model):
        step = Stepper(bundle.model, bundle.tokenizer, [prompt], trie)
        prefixes, logmass = [()], torch.zeros(1)
        total, shares = 0.0, []
        while prefixes:
            logp = torch.log_softmax(step.logits, -1).cpu()  # (R, V)
            children = [trie.allowed(p) for p in prefixes]
            kept = torch.stack([torch.logsumexp(logp[r, c], 0) for r, c in enumerate(children)])  # (R,)
            shares.append(float(torch.exp(torch.logsumexp(logmass + kept, 0) - torch.logsumexp(logmass, 0))))
            rows, tokens, new_prefixes, new_mass = [], [], [], []
            for r, (prefix, allowed) in enumerate(zip(prefixes, children)):
                for t in allowed:
                    mass = logmass[r] + logp[r, t]
                    if trie.is_complete(prefix + (t,)):
                        total += float(torch.exp(mass))
                    else:
                        rows.append(r), tokens.append(t), new_prefixes.append(prefix + (t,)), new_mass.append(mass)
            if not new_prefixes:
                break
            step.select(torch.tensor(rows))
            step.advance(torch.tensor(tokens))
            prefixes, logmass = new_prefixes, torch.stack(new_mass)
    return total, shares


# --- does the user's own history matter? ---------------------------------------------------------------

def shuffled(prompts: Sequence[str], seed: int = 0) -> list[str]:
    """The prompts permuted across rows (a derangement when possible): each user gets someone else's history."""
    n = len(prompts)
    order = np.random.default_rng(seed).permutation(n)
    if n > 1:
        order = np.roll(order, 1)[np.argsort(order)]  # i -> the next element of the cycle: never itself
    return [prompts[int(j)] for j in order]


# --- all of it, for one evaluated model -----------------------------------------------------------------

def diagnose(bundle: ModelBundle, prepared: PreparedData, tokenized: Tokenized, result: EvalResult, k: int = 20,
             n_mass_prompts: int = 10, batch_size: int = 16, seed: int = 0) -> Diagnostics:
    """The four diagnostics of a model already scored by `recommend.evaluate_model` (its prompts, test rows and
    predictions); the context test runs one more beam search, on the shuffled prompts, with each row's own
    exclusions (the candidate rule belongs to the user, only the prompt changes)."""
    table = tokenized.sids.table
    prompts, rows = list(result.prompts), result.examples
    nll = item_nll(bundle, prompts, [table.sid_of(int(i)) for i in rows["next_negative"]])
    trie = recommend.sid_trie(bundle, table)
    masses = [valid_mass(bundle, p, trie) for p in prompts[:n_mass_prompts]]
    other = recommend.predict(bundle, shuffled(prompts, seed), trie, table, k, batch_size,
                              exclude=recommend.excluded_items(prepared, rows))
    own_hits, other_hits = row_hits(result.predictions, rows, k), row_hits(other, rows, k)
    return Diagnostics(
        nll_per_item=float(nll.mean()), nll_uniform=math.log(table.codes.shape[0]),
        valid_sid_mass=float(np.mean([m for m, _ in masses])),
        valid_share_by_level=[float(x) for x in np.mean([s for _, s in masses], axis=0)],
        distinct_items=len({int(i) for p in result.predictions for i in p[:k]}),
        fhr_own=float(own_hits.mean()), fhr_shuffled=float(other_hits.mean()),
        context_gain=float(own_hits.mean() - other_hits.mean()),
        context_gain_ci95=paired_bootstrap(own_hits, other_hits, seed=seed), n_rows=len(rows))


def table(diagnostics: dict[str, "Diagnostics | dict | None"]) -> pd.DataFrame:
    """One row per model: the diagnostics rounded for display, and the verdict.

    Values may be `Diagnostics` or their `as_dict()` form as metrics.json holds it; None (not measured) is left out.
    """
    rows = {}
    for name, d in diagnostics.items():
        if d is None:
            continue
        d = Diagnostics.from_dict(d) if isinstance(d, dict) else d
        lo, hi = d.context_gain_ci95
        rows[name] = {"NLL/item (nats)": round(d.nll_per_item, 2), "uniform": round(d.nll_uniform, 2),
                      "valid-SID mass": round(d.valid_sid_mass, 3),
                      "by level": " / ".join(f"{x:.2f}" for x in d.valid_share_by_level),
                      "distinct items": d.distinct_items, "FHR own": round(d.fhr_own, 3),
                      "FHR shuffled": round(d.fhr_shuffled, 3), "context gain": round(d.context_gain, 3),
                      "gain 95% CI": f"[{lo:+.3f}, {hi:+.3f}]", "passes": "yes" if not d.verdict() else "NO"}
    return pd.DataFrame(rows).T
