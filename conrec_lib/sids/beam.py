"""Constrained beam search over the prefix tree of SIDs, for any model that scores the next token.

Both SID generators of the tutorial search this one way: the LLMs (`llm.decoding.beam_search`, a transformer with a
KV cache) and TIGER (`baselines.tiger`, a SASRec over code tokens). The model's side is a `Stepper`: the
next-token logits of its alive rows, which rows to keep, one new token per row. The search's side (here) keeps each
prompt's `width` best prefixes, masks what the trie does not allow and what a prompt must never get (`banned`: the
user's past negatives, which the platform never shows again), and collects the finished SIDs.

Scores: `over_trie=True` ranks by the log-probability under the constrained policy (softmax over the tokens the trie
allows after the prefix); `over_trie=False` by the plain softmax over the vocabulary, masked afterwards. Under the
constrained policy a prefix with a single continuation costs nothing (log 1 = 0), so a beam one forced token away
from its SID is finished without another model step: the same top-k, fewer forward passes (most SIDs' last code is
forced: it only separates items whose first codes collide).
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Protocol, Sequence

import torch

from conrec_lib.sids.trie import Prefix, PrefixTrie

# Beams searched for a top-k list (at least k). With k = 20 beams the search drops items whose first SID code is
# unlikely although the whole SID is likely: measured on notebook 04's warm-up model, all 896 test rows, FHR@20
# 0.263 with 20 beams, 0.307 with 50, 0.301 with 100 (CoNRec: 0.234 / 0.259 / 0.261 with 200); 50 beams take
# 2.5x the time of 20. The paper returns the top-20 of its beam search without giving the width.
BEAM_WIDTH = 50


class Stepper(Protocol):
    """What the search needs of a model: next-token logits (R, V) of the alive rows, and two moves."""

    logits: torch.Tensor

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and repeat) the given rows, e.g. the parents of the surviving beams."""

    def advance(self, tokens: torch.Tensor) -> None:
        """Append one token per row; `logits` becomes the next-token logits of the new rows."""


class Candidates(NamedTuple):
    """Beam candidates: the row (beam) each extends, the token appended, the new cumulative score."""

    rows: torch.Tensor
    tokens: torch.Tensor
    scores: torch.Tensor


class Found(NamedTuple):
    """One finished SID of a search: its token ids and its summed log-probability."""

    tokens: Prefix
    score: float


Banned = dict[Prefix, list[int]]  # per prompt: prefix -> next tokens that lead only to excluded SIDs


def allowed_mask(trie: PrefixTrie, prefixes: Sequence[Prefix], vocab_size: int, device) -> torch.Tensor:
    """Additive mask (R, V): 0 where the trie allows the token after each prefix, -inf elsewhere.

    >>> allowed_mask(PrefixTrie([(1, 2)]), [(), (1,), (2,)], 3, "cpu")
    tensor([[-inf, 0., -inf],
            [-inf, -inf, 0.],
            [-inf, -inf, -inf]])
    """
    rows, cols = [], []
    for r, prefix in enumerate(prefixes):
        allowed = trie.allowed(prefix)
        rows.extend([r] * len(allowed))
        cols.extend(allowed)
    mask = torch.full((len(prefixes), vocab_size), float("-inf"), device=device)
    mask[torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)] = 0.0
    return mask


def banned_endings(sequences: Iterable[Sequence[int]], trie: PrefixTrie) -> Banned:
    """The excluded SIDs of one prompt (token sequences) as {prefix: [tokens]}: every token after which the trie
    holds nothing but excluded SIDs, at any level, so no beam is spent on a prefix that can only end in one.

    >>> banned_endings([(1, 2), (1, 3)], PrefixTrie([(1, 2), (1, 3), (4, 2)]))
    {(1,): [2, 3], (): [1]}
    """
    counts: dict[Prefix, int] = {}
    for seq in sorted(set(tuple(int(t) for t in s) for s in sequences)):
        for j in range(1, len(seq) + 1):
            counts[seq[:j]] = counts.get(seq[:j], 0) + 1
    out: Banned = {}
    for prefix, n in sorted(counts.items(), key=lambda kv: (-len(kv[0]), kv[0])):
        if n == trie.size(prefix):
            out.setdefault(prefix[:-1], []).append(prefix[-1])
    return out


def exclusion_mask(banned: Sequence[Banned], owners: Sequence[int], prefixes: Sequence[Prefix], vocab_size: int,
                   device) -> torch.Tensor:
    """Additive mask (R, V): -inf on the tokens that would complete one of the row's prompt's banned SIDs.

    >>> exclusion_mask([{(1,): [2]}], [0, 0], [(1,), (3,)], 4, "cpu")
    tensor([[0., 0., -inf, 0.],
            [0., 0., 0., 0.]])
    """
    mask = torch.zeros((len(prefixes), vocab_size), device=device)
    for r, (owner, prefix) in enumerate(zip(owners, prefixes)):
        last = banned[owner].get(prefix)
        if last:
            mask[r, last] = float("-inf")
    return mask


def top_candidates(scores: torch.Tensor, owner: torch.Tensor, num_prompts: int, width: int) -> Candidates:
    """Per prompt, the `width` best finite (row, token) candidates of `scores` (R, V): rows, tokens, scores.

    >>> s = torch.tensor([[0.0, -1.0], [-3.0, float("-inf")], [-2.0, -0.5]])
    >>> top_candidates(s, torch.tensor([0, 0, 1]), 2, 2)
    Candidates(rows=tensor([0, 0, 2, 2]), tokens=tensor([0, 1, 1, 0]), scores=tensor([ 0.0000, -1.0000, -0.5000, -2.0000]))
    """
    rows, tokens, values = [], [], []
    vocab = scores.shape[1]
    for b in range(num_prompts):
        members = torch.nonzero(owner == b).flatten()
        flat = scores[members].flatten()
        best = flat.topk(min(width, flat.numel()))
        keep = torch.isfinite(best.values)
        rows.append(members[best.indices[keep] // vocab])
        tokens.append(best.indices[keep] % vocab)
        values.append(best.values[keep])
    return Candidates(torch.cat(rows), torch.cat(tokens), torch.cat(values))


def forced_end(trie: PrefixTrie, prefix: Prefix, banned: Banned | None) -> Prefix | None:
    """The whole SID when `prefix` has exactly one continuation and it completes an SID not banned; else None.

    >>> trie = PrefixTrie([(1, 2, 5), (1, 3, 6), (1, 3, 7)])
    >>> forced_end(trie, (1, 2), None), forced_end(trie, (1, 3), None), forced_end(trie, (1, 2), {(1, 2): [5]})
    ((1, 2, 5), None, None)
    """
    allowed = trie.allowed(prefix)
    if len(allowed) != 1 or (banned is not None and allowed[0] in banned.get(prefix, ())):
        return None
    end = prefix + (allowed[0],)
    return end if trie.is_complete(end) else None


@torch.no_grad()
def search(step: Stepper, trie: PrefixTrie, num_prompts: int, width: int, banned: Sequence[Banned] | None = None,
           over_trie: bool = True) -> list[list[Found]]:
    """Beam search from `step`'s rows (one per prompt): per prompt, every SID finished, best first.

    `banned` (one per prompt, `banned_endings`): endings masked like invalid tokens, so the beams go to other items
    instead of being wasted. A prefix with no continuation simply ends (a trie built from SIDs has none).
    """
    device = step.logits.device
    owner = torch.arange(num_prompts, device=device)  # prompt of each alive beam
    prefixes: list[Prefix] = [()] * num_prompts
    scores = torch.zeros(num_prompts, device=device)
    finished: list[list[Found]] = [[] for _ in range(num_prompts)]
    while prefixes:
        vocab = step.logits.shape[1]
        mask = allowed_mask(trie, prefixes, vocab, device)
        if banned is not None:
            mask = mask + exclusion_mask(banned, owner.tolist(), prefixes, vocab, device)
        logits = step.logits.float()
        logp = torch.log_softmax(logits + mask, -1) if over_trie else torch.log_softmax(logits, -1) + mask
        rows, tokens, values = top_candidates(scores[:, None] + logp, owner, num_prompts, width)
        alive, owners = [], owner.tolist()
        for i, (row, token, value) in enumerate(zip(rows.tolist(), tokens.tolist(), values.tolist())):
            prefix = prefixes[row] + (token,)
            forced = forced_end(trie, prefix, None if banned is None else banned[owners[row]]) if over_trie else None
            if trie.is_complete(prefix) or forced is not None:
                finished[owners[row]].append(Found(forced or prefix, value))
            elif trie.allowed(prefix):
                alive.append(i)
        if not alive:
            break
        keep = torch.tensor(alive, device=device)
        prefixes = [prefixes[r] + (t,) for r, t in zip(rows[keep].tolist(), tokens[keep].tolist())]
        owner, scores = owner[rows[keep]], values[keep]
        step.select(rows[keep])
        step.advance(tokens[keep])
    return [sorted(f, key=lambda s: -s.score) for f in finished]
