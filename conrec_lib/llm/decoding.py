"""Constrained decoding over semantic IDs: a prefix tree of valid SIDs, beam search, and sampling.

The paper generates the top-20 SIDs of a user by beam search, and samples G completions per prompt for GRPO.
Both only ever produce real items here: at every step the logits are masked to the continuations that the
prefix tree (`SIDTrie`) allows. The beam search itself is `sids.beam.search`, which TIGER shares; this module
gives it the LLM's side (`Stepper`: the beams share their prompt's KV cache, tree attention). There is no
fallback to unconstrained generation: a beam or sample whose prefix has no valid continuation ends and is
dropped, so an empty trie yields no SIDs at all.

Scores. Beam search ranks SIDs by their log-probability under the *constrained* policy, sum_t log p(token_t |
prompt, prefix) with p the softmax over the tokens the trie allows after the prefix: the distribution over real
items that sampling (GRPO's rollouts) draws from and that `sft` trains with `loss_over="trie"`. `over_trie=False`
gives the plain softmax over the whole vocabulary, masked afterwards (transformers' `prefix_allowed_tokens_fn`).
How much mass a model puts on invalid SIDs is measured, not hidden: `llm_diagnostics.valid_mass`. Sampling reports
the constrained log-probabilities, the ones GRPO's importance ratio needs; `token_logprobs` recomputes them with
gradients.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterable, Iterator, NamedTuple, Sequence

import torch
from tqdm.auto import tqdm
from transformers.modeling_outputs import CausalLMOutputWithPast

from conrec_lib.llm.model import encode_completion, encode_prompt
from conrec_lib.sids import beam
from conrec_lib.sids.beam import Banned, allowed_mask
from conrec_lib.sids.trie import PrefixTrie

# transformers 5 renamed `past_key_values` to `cache` (in the forward arguments and the output).
CACHE_KW = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class SIDTrie(PrefixTrie):
    """The prefix tree of an item table's SIDs in an LLM's token ids (`sids.trie.PrefixTrie`)."""

    @classmethod
    def from_sids(cls, tokenizer, sids: Sequence[str]) -> "SIDTrie":
        """Build the trie from SID strings; each SID token must be one vocabulary entry (see `model.load_model`)."""
        sequences, added = [], set(tokenizer.get_added_vocab().values())
        for sid in sids:
            ids = encode_completion(tokenizer, sid)
            if sid_string(tokenizer, ids) != sid or not added.issuperset(ids):
                raise ValueError(f"SID {sid!r} does not encode to whole SID tokens (got "
                                 f"{tokenizer.convert_ids_to_tokens(ids)}); add the SID vocabulary to the "
                                 "tokenizer first (model.load_model(cfg, sid_tokens=table.vocabulary()))")
            sequences.append(ids)
        return cls(sequences)


class ScoredSID(NamedTuple):
    """One beam-search result: an SID string and its log-probability under the model."""

    sid: str
    score: float


class Encoded(NamedTuple):
    """Left-padded prompt batch."""

    ids: torch.Tensor  # (B, T) token ids, pad id on the left
    mask: torch.Tensor  # (B, T) 1 on prompt tokens


class TokenLogprobs(NamedTuple):
    """Per-token log-probs of completions and the mask of real (non-padding) completion tokens."""

    logprobs: torch.Tensor  # (N, L), 0 on padding
    mask: torch.Tensor  # (N, L) bool


class Sampled(NamedTuple):
    """Raw samples before padding: token ids and their log-probs, one list per sample."""

    tokens: list[list[int]]
    logprobs: list[list[float]]


@dataclasses.dataclass
class Rollouts:
    """Sampled completions for GRPO, one tensor row per completion, grouped by prompt in prompt order."""

    completions: list[list[str]]  # [prompt][generation] SID strings, all valid
    prompt_index: torch.Tensor  # (N,) the prompt of each row
    token_ids: torch.Tensor  # (N, L) sampled token ids, pad id after a completion ends
    completion_mask: torch.Tensor  # (N, L) True on sampled tokens
    logprobs: torch.Tensor  # (N, L) log-prob of each sampled token under the constrained policy, 0 on padding


def sid_string(tokenizer, ids: Sequence[int]) -> str:
    """Concatenate the SID tokens of `ids` back into an SID string (no spaces, unlike `decode`)."""
    return "".join(tokenizer.convert_ids_to_tokens(list(ids)))


def left_pad(tokenizer, prompts: Sequence[str], device) -> Encoded:
    """Encode and left-pad prompts so that every row's last token is its last prompt token: ids, mask (B, T)."""
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, width - len(e):] = torch.tensor(e, dtype=torch.long)
        mask[i, width - len(e):] = 1
    return Encoded(ids.to(device), mask.to(device))


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run a block with the model in eval mode (no dropout), restoring the caller's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class Stepper:
    """Incremental decoding over a changing set of rows (beams or samples) that share their prompt's KV cache.

    Tree attention: the prompts are encoded once (B rows of cache); a row is a path of generated tokens below
    its prompt, so keeping or repeating rows (`select`) copies no cache at all. Each `advance` appends one slot
    per row to its prompt's cache and lets the new token attend, through a 4D mask, to its prompt, to the
    tokens of its own path and to itself; its position is the prompt length plus its depth, as in plain
    decoding. The same logits as a cache copied per row (checked: notebook 06's top-20 lists of every LLM
    are identical on all 896 test rows), 2-4x faster, since copying the prompt cache for 50 beams took most of
    the time. Needs an attention implementation that takes a custom 4D mask ("sdpa", "eager").
    """

    ATTENTION = ("sdpa", "eager")

    def __init__(self, model, tokenizer, prompts: Sequence[str], trie: SIDTrie):
        self.model, self.device = model, model_device(model)
        attention = getattr(model.config, "_attn_implementation", "eager")
        if attention not in self.ATTENTION:
            raise ValueError(f"decoding needs a custom 4D attention mask, which attn_implementation={attention!r} "
                             f"does not take; load the model with attn_implementation one of {self.ATTENTION}")
        ids, mask = left_pad(tokenizer, prompts, self.device)
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and ids.shape[1] + trie.depth > limit:
            raise ValueError(f"a prompt has {ids.shape[1]} tokens, too long for max_position_embeddings={limit} "
                             "with the SID after it; shorten the prompt (prompts history caps)")
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                    logits_to_keep=1)
        self.cache, self.logits = getattr(out, CACHE_KW), out.logits[:, -1].float()  # (B, V)
        self.dtype = model.get_input_embeddings().weight.dtype  # the attention's dtype, which the mask must have
        self.prompt_slots = mask.bool()  # (B, S): the cache slots holding prompt tokens (not left padding)
        self.lengths = mask.sum(-1)  # (B,) prompt lengths
        self.owner = torch.arange(len(prompts), device=self.device)  # (R,) the prompt of each row
        self.path = torch.zeros((len(prompts), 0), dtype=torch.long, device=self.device)  # (R, depth) its slots

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and repeat) the given rows, e.g. the parents of the surviving beams."""
        rows = rows.to(self.device)
        self.owner, self.path, self.logits = self.owner[rows], self.path[rows], self.logits[rows]

    def advance(self, tokens: torch.Tensor) -> None:
        """Feed one new token per row; `self.logits` becomes the next-token logits (R, V)."""
        tokens = tokens.to(self.device)
        num_prompts, slots = self.prompt_slots.shape
        column = self.column_of_rows()  # each row's query column among its prompt's new slots
        width = int(column.max()) + 1 if len(tokens) else 1
        ids = torch.zeros((num_prompts, width), dtype=torch.long, device=self.device)  # unused columns: padding
        ids[self.owner, column] = tokens
        positions = (self.lengths + self.path.shape[1])[:, None].expand(num_prompts, width)
        sees = torch.zeros((num_prompts, width, slots + width), dtype=torch.bool, device=self.device)
        sees[self.owner, column, :slots] = self.prompt_slots[self.owner]
        if self.path.shape[1]:
            sees[self.owner[:, None], column[:, None], self.path] = True
        new = torch.arange(width, device=self.device)
        sees[:, new, slots + new] = True  # every new token sees itself (padding columns: only that)
        mask = torch.zeros(sees.shape, dtype=self.dtype, device=self.device).masked_fill_(
            ~sees, torch.finfo(self.dtype).min)
        out = self.model(input_ids=ids, attention_mask=mask[:, None], position_ids=positions, use_cache=True,
                         **{CACHE_KW: self.cache})
        self.cache, self.logits = getattr(out, CACHE_KW), out.logits[self.owner, column].float()
        self.prompt_slots = torch.cat([self.prompt_slots, self.prompt_slots.new_zeros((num_prompts, width))], 1)
        self.path = torch.cat([self.path, (slots + column)[:, None]], 1)

    def column_of_rows(self) -> torch.Tensor:
        """(R,) the rank of each row among the rows of its prompt (0, 1, ... in row order)."""
        order = torch.argsort(self.owner, stable=True)
        counts = torch.bincount(self.owner, minlength=len(self.lengths))
        first = torch.cumsum(counts, 0) - counts
        column = torch.empty_like(self.owner)
        column[order] = torch.arange(len(self.owner), device=self.device) - first[self.owner[order]]
        return column


@torch.no_grad()
def beam_batch(model, tokenizer, prompts: Sequence[str], trie: SIDTrie, num_beams: int,
               banned: Sequence[Banned] | None = None, over_trie: bool = True) -> list[list[ScoredSID]]:
    """Constrained beam search (`sids.beam.search`) for one batch of prompts; all finished SIDs per prompt, best
    first. `banned` (one per prompt): SIDs that prompt must never get (e.g. the user's past negatives)."""
    found = beam.search(Stepper(model, tokenizer, prompts, trie), trie, len(prompts), num_beams, banned, over_trie)
    return [[ScoredSID(sid_string(tokenizer, f.tokens), f.score) for f in per_prompt] for per_prompt in found]


def beam_search(model, tokenizer, prompts: Sequence[str], trie: SIDTrie, num_beams: int = 20, top_k: int = 20,
                batch_size: int = 16, progress: bool = False,
                exclude: Sequence[Iterable[str]] | None = None, over_trie: bool = True) -> list[list[ScoredSID]]:
    """Per prompt, the top-`top_k` distinct valid SIDs with log-prob scores, best first (paper: top-20 SIDs).

    `exclude` (one collection of SID strings per prompt) are never returned (`beam_batch`). Fewer than `top_k`
    come back only when the trie holds fewer SIDs; an empty trie gives empty lists.
    """
    if exclude is not None and len(exclude) != len(prompts):
        raise ValueError(f"beam_search: exclude has {len(exclude)} entries for {len(prompts)} prompts; pass one "
                         "collection of SIDs per prompt (empty for none)")
    if not 1 <= top_k <= num_beams:
        raise ValueError(f"beam_search: top_k={top_k} must be in [1, num_beams={num_beams}]; raise num_beams")
    if batch_size < 1:
        raise ValueError(f"beam_search: batch_size={batch_size} must be >= 1")
    if len(trie) == 0:
        return [[] for _ in prompts]
    results: list[list[ScoredSID]] = []
    with eval_mode(model):
        for start in tqdm(range(0, len(prompts), batch_size), disable=not progress, desc="beam search"):
            batch = list(prompts[start:start + batch_size])
            banned = None if exclude is None else [
                beam.banned_endings((encode_completion(tokenizer, sid) for sid in e), trie)
                for e in exclude[start:start + batch_size]]
            results.extend(r[:top_k] for r in beam_batch(model, tokenizer, batch, trie, num_beams, banned, over_trie))
    return results


@torch.no_grad()
def sample(model, tokenizer, prompts: Sequence[str], trie: SIDTrie, num_generations: int, temperature: float,
           generator: torch.Generator) -> Rollouts:
    """Sample `num_generations` valid SIDs per prompt from the trie-constrained policy (GRPO rollouts).

    A sample whose prefix has no valid continuation (impossible with a trie built by `from_sids`, every node of
    which leads to an SID) ends there and is dropped, so a prompt may then get fewer completions.
    """
    if num_generations < 1 or temperature <= 0:
        raise ValueError(f"sample: num_generations={num_generations} must be >= 1 and temperature={temperature} > 0")
    if len(trie) == 0 or not prompts:
        empty = torch.zeros((0, 0), dtype=torch.long)
        return Rollouts([[] for _ in prompts], torch.zeros(0, dtype=torch.long), empty, empty.bool(), empty.float())
    with eval_mode(model):
        tokens, logprobs = sample_tokens(model, tokenizer, prompts, trie, num_generations, temperature, generator)
    return pack_rollouts(tokenizer, trie, tokens, logprobs, len(prompts), num_generations)


def sample_tokens(model, tokenizer, prompts: Sequence[str], trie: SIDTrie, num_generations: int,
                  temperature: float, generator: torch.Generator) -> Sampled:
    """The sampling loop of `sample`: token ids and their constrained log-probs, one list per sample."""
    step = Stepper(model, tokenizer, prompts, trie)
    rows = torch.arange(len(prompts)).repeat_interleave(num_generations)  # (N,) prompt of each sample
    step.select(rows)
    active = list(range(len(rows)))  # samples still generating, in the row order of `step`
    tokens: list[list[int]] = [[] for _ in rows]
    logprobs: list[list[float]] = [[] for _ in rows]
    while active:
        prefixes = [tuple(tokens[n]) for n in active]
        logits = step.logits / temperature + allowed_mask(trie, prefixes, step.logits.shape[1], step.device)
        logp = torch.log_softmax(logits, -1)  # rows with no allowed token are all -inf (nan) and end below
        ok = [i for i, p in enumerate(prefixes) if trie.allowed(p)]
        if not ok:
            break
        picked = torch.multinomial(logp[ok].exp().to(generator.device), 1, generator=generator)  # (R, 1)
        chosen = logp[ok].gather(1, picked.to(step.device)).flatten().tolist()
        for i, token, value in zip(ok, picked.flatten().tolist(), chosen):
            tokens[active[i]].append(token)
            logprobs[active[i]].append(value)
        going = [i for i in ok if trie.allowed(tuple(tokens[active[i]]))]
        active = [active[i] for i in going]
        if active:
            step.select(torch.tensor(going))
            step.advance(torch.tensor([tokens[n][-1] for n in active]))
    return Sampled(tokens, logprobs)


def pack_rollouts(tokenizer, trie: SIDTrie, tokens: list[list[int]], logprobs: list[list[float]],
                  num_prompts: int, num_generations: int) -> Rollouts:
    """Pad the samples that reached a whole SID into tensors (the others ended at a dead end: dropped)."""
    kept = [n for n, seq in enumerate(tokens) if trie.is_complete(tuple(seq))]
    owner = torch.tensor([n // num_generations for n in kept], dtype=torch.long)
    tokens, logprobs = [tokens[n] for n in kept], [logprobs[n] for n in kept]
    width = max((len(s) for s in tokens), default=0)
    ids = torch.full((len(tokens), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(tokens), width), dtype=torch.bool)
    lp = torch.zeros((len(tokens), width))
    for n, (seq, logp) in enumerate(zip(tokens, logprobs)):
        ids[n, :len(seq)], mask[n, :len(seq)], lp[n, :len(seq)] = torch.tensor(seq), True, torch.tensor(logp)
    grouped: list[list[str]] = [[] for _ in range(num_prompts)]
    for b, seq in zip(owner.tolist(), tokens):
        grouped[b].append(sid_string(tokenizer, seq))
    return Rollouts(grouped, owner, ids, mask, lp)


class CompletionLogits(NamedTuple):
    """The logits that predict each completion token, left-aligned: row n, column k is completion token k."""

    logits: torch.Tensor  # (N, L, V)
    targets: torch.Tensor  # (N, L) completion token ids, 0 on padding
    mask: torch.Tensor  # (N, L) True on real completion tokens


class Packed(NamedTuple):
    """Prompt + completion rows left-padded so every completion ends at the right edge (`pack`)."""

    ids: torch.Tensor  # (N, T)
    attention: torch.Tensor  # (N, T) 1 on real tokens
    positions: torch.Tensor  # (N, T)
    where: torch.Tensor  # (N, L) window column (of the last L + 1) predicting each completion token
    targets: torch.Tensor  # (N, L) completion token ids, 0 on padding
    mask: torch.Tensor  # (N, L) True on real completion tokens
    prompt_lengths: list[int]


def pack(prompt_ids: Sequence[list[int]], completion_ids: Sequence[list[int]]) -> Packed:
    """Left-pad prompt + completion pairs into one batch (what `completion_logits` and the SFT history loss feed)."""
    width = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
    depth = max(len(c) for c in completion_ids)
    ids = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    attention = torch.zeros_like(ids)
    where = torch.zeros((len(prompt_ids), depth), dtype=torch.long)
    targets, mask = torch.zeros_like(where), torch.zeros((len(prompt_ids), depth), dtype=torch.bool)
    for n, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        ids[n, width - len(p) - len(c):] = torch.tensor(list(p) + list(c), dtype=torch.long)
        attention[n, width - len(p) - len(c):] = 1
        where[n, :len(c)] = torch.arange(depth - len(c), depth)
        targets[n, :len(c)], mask[n, :len(c)] = torch.tensor(list(c), dtype=torch.long), True
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return Packed(ids, attention, positions, where, targets, mask, [len(p) for p in prompt_ids])


def gather_completion(window: torch.Tensor, packed: Packed) -> CompletionLogits:
    """The completion part of the last L + 1 positions' logits `window` (N, L + 1, V), as `CompletionLogits`."""
    device = window.device
    window = window[:, :-1].float()  # (N, L, V): column j predicts the token at window column j + 1
    logits = window.gather(1, packed.where.to(device)[..., None].expand(-1, -1, window.shape[-1]))
    return CompletionLogits(logits, packed.targets.to(device), packed.mask.to(device))


def completion_logits(model, prompt_ids: Sequence[list[int]], completion_ids: Sequence[list[int]]) -> CompletionLogits:
    """One forward pass over prompt + completion, keeping only the logits that predict completion tokens.

    Sequences are left-padded so every completion ends at the right edge; `logits_to_keep` then computes the
    LM head on the last L + 1 positions only, not on the whole prompt (the (N, T, V) tensor would dominate memory).
    """
    device = model_device(model)
    packed = pack(prompt_ids, completion_ids)
    out = model(input_ids=packed.ids.to(device), attention_mask=packed.attention.to(device),
                position_ids=packed.positions.to(device), logits_to_keep=packed.where.shape[1] + 1)
    return gather_completion(out.logits, packed)


def token_logprobs(model, tokenizer, prompts: Sequence[str], completions: Sequence[str], trie: SIDTrie | None = None,
                   temperature: float = 1.0) -> TokenLogprobs:
    """Per-token log-probs (N, L) of `completions` after `prompts`, with gradients, and their mask (N, L).

    With `trie`, under the constrained policy that `sample` draws from (softmax over the allowed tokens of
    logits / temperature); without, under the plain softmax over the vocabulary. Rows align with `Rollouts`.
    """
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    completion_ids = [encode_completion(tokenizer, c) for c in completions]
    out = completion_logits(model, prompt_ids, completion_ids)
    logits = out.logits / temperature
    if trie is not None:
        depth = out.mask.shape[1]
        prefixes = [tuple(c[:j]) for c in completion_ids for j in range(depth)]
        allowed = allowed_mask(trie, prefixes, logits.shape[-1], logits.device).view(len(prompts), depth, -1)
        logits = logits + allowed.masked_fill(~out.mask[..., None], 0.0)  # no all--inf rows: no NaN gradients
    logp = torch.log_softmax(logits, -1).gather(2, out.targets[..., None]).squeeze(-1)
    return TokenLogprobs(torch.where(out.mask, logp, torch.zeros_like(logp)), out.mask)
