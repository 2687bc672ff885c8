"""A TIGER-style baseline: a small generative model trained from scratch to emit the next negative's SID.

PAPER.md "Evaluation in the paper" lists TIGER (Rajput et al. 2023): items are semantic IDs and a transformer
generates the next item's SID token by token, decoding constrained to valid SIDs. TIGER is an
encoder-decoder; ours is the decoder-only variant (one causal transformer reads the history's SID tokens and
continues with the next SID), which keeps the code small and lets it reuse `sasrec.SASRec` as the network:
SASRec over *code tokens* instead of items. The SIDs are notebook 02's (`Tokenized.sids.table`), including
the de-duplication token, so every generated SID is exactly one item.

Token layout: level d code c -> token offsets[d] + c (offsets: cumulative level sizes), plus sasrec's PAD and
BOS. A user's sequence is BOS then the SID tokens of their negatives in time order, cut into pieces whose
length is a multiple of the SID length, so a position always holds the same SID level. Decoding: beam search
over `sids.trie.PrefixTrie` of the item token sequences, the LLMs' search (`sids.beam.search`, as wide:
`BEAM_WIDTH` beams), ranking by the summed log-probability under the softmax over all code tokens; the user's
past negatives are masked inside the search, as for every model (`recommend.excluded_items`).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from conrec_lib import hardware
from conrec_lib.baselines import heuristics as baselines, sasrec
from conrec_lib.configs import check_types
from conrec_lib.data.dataprep import PreparedData
from conrec_lib.sids import beam
from conrec_lib.sids.trie import PrefixTrie
from conrec_lib.sids.item_tokenizer import Tokenized
from conrec_lib.baselines.sasrec import BOS, OFFSET, SASRec, SASRecConfig


@dataclasses.dataclass
class TIGERConfig:
    """Network, training and decoding of the TIGER baseline (tiny defaults: seconds on a 2-core CPU)."""

    # network (sasrec.SASRec over code tokens); max_items negatives of history fit in the context
    max_items: int = 10  # GPU: 20
    dim: int = 64  # GPU: 128
    num_layers: int = 1  # full: 2
    num_heads: int = 2
    dropout: float = 0.1
    # training
    epochs: int = 10  # full: 20, GPU: 40
    batch_size: int = 64
    lr: float = 5e-3  # GPU: 1e-3
    # decoding
    # beams searched for a top-k (at least k): as wide as the LLMs' search, so TIGER is not held to a narrower beam
    num_beams: int = beam.BEAM_WIDTH
    # runtime
    seed: int = 0
    device: Optional[str] = "cpu"
    num_threads: Optional[int] = 1

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("max_items", "dim", "num_layers", "num_heads", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TIGERConfig.{name}={getattr(self, name)}: must be >= 1")
        if self.num_beams < 1:
            raise ValueError(f"TIGERConfig.num_beams={self.num_beams}: must be >= 1 (a top-k searches "
                             "max(k, num_beams) beams)")

    def network(self, sid_length: int) -> SASRecConfig:
        """The SASRec settings of the network: context = max_items + 1 SIDs (history + the one generated)."""
        return SASRecConfig(max_len=(self.max_items + 1) * sid_length, dim=self.dim, num_layers=self.num_layers,
                            num_heads=self.num_heads, dropout=self.dropout, epochs=self.epochs,
                            batch_size=self.batch_size, lr=self.lr, seed=self.seed, device=self.device,
                            num_threads=self.num_threads)


def code_tokens(codes: np.ndarray) -> np.ndarray:
    """(n_items, L) SID codes -> (n_items, L) token ids 0.. (before sasrec's OFFSET): level d's codes follow
    level d-1's.

    >>> code_tokens(np.array([[0, 1, 0], [2, 0, 1]])).tolist()  # level sizes 3, 2, 2
    [[0, 4, 5], [2, 3, 6]]
    """
    sizes = codes.max(axis=0) + 1  # (L,)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return codes + offsets


def flatten(items: Sequence[int], tokens: np.ndarray) -> list[int]:
    """The code tokens of the items, one SID after another.

    >>> flatten([1, 0], np.array([[0, 4], [2, 3]]))
    [2, 3, 0, 4]
    """
    return [int(t) for i in items for t in tokens[int(i)]]


def context(history: Sequence[int], tokens: np.ndarray, max_items: int) -> list[int]:
    """The model input of a history: the last max_items SIDs, preceded by BOS or the token before them
    (the same layout as a training piece), in sasrec's token ids."""
    full = [BOS] + [t + OFFSET for t in flatten(history, tokens)]
    return full[-(1 + max_items * tokens.shape[1]):]


@torch.no_grad()
def next_token_logprobs(model: SASRec, rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """(len(rows), V) log-probabilities of the token after each row (rows of sasrec token ids)."""
    device = next(model.parameters()).device
    hidden = model.hidden(sasrec.padded(rows).to(device))  # (N, T, C)
    last = hidden[torch.arange(len(rows)), torch.tensor([len(r) - 1 for r in rows])]  # (N, C)
    return torch.log_softmax(model.logits(last), dim=-1).cpu()  # (N, V)


class CodeStepper:
    """`sids.beam.Stepper` over SASRec: each row is a token sequence; a step re-reads the whole row (no cache)."""

    def __init__(self, model: SASRec, prefixes: Sequence[list[int]]):
        self.model, self.rows = model, [list(p) for p in prefixes]
        self.logits = next_token_logprobs(model, self.rows)

    def select(self, rows: torch.Tensor) -> None:
        self.rows = [self.rows[r] for r in rows.tolist()]

    def advance(self, tokens: torch.Tensor) -> None:
        self.rows = [r + [t + OFFSET] for r, t in zip(self.rows, tokens.tolist())]
        self.logits = next_token_logprobs(self.model, self.rows)


def beam_search(model: SASRec, trie: PrefixTrie, prefixes: Sequence[list[int]], width: int,
                exclude: Optional[Sequence[Sequence[Sequence[int]]]] = None, batch_size: int = 64
                ) -> list[list[tuple[int, ...]]]:
    """Per prefix, up to `width` complete valid token sequences (SIDs), best first; `exclude` (per prefix, SIDs as
    code sequences) are never returned."""
    out = []
    for start in range(0, len(prefixes), batch_size):
        chunk = list(prefixes[start:start + batch_size])
        banned = None if exclude is None else [beam.banned_endings(e, trie)
                                               for e in exclude[start:start + batch_size]]
        found = beam.search(CodeStepper(model, chunk), trie, len(chunk), width, banned, over_trie=False)
        out.extend([[f.tokens for f in per_prefix[:width]] for per_prefix in found])
    return out


@dataclasses.dataclass
class TIGERBaseline:
    """The `baselines.Baseline` interface around the SID generator."""

    prepared: PreparedData
    model: SASRec
    tokens: np.ndarray  # (n_items, L) code tokens of every item
    cfg: TIGERConfig
    history: list[float]  # mean training loss per epoch
    name: str = "tiger"

    @classmethod
    def fit(cls, prepared: PreparedData, tokenized: Tokenized, cfg: Optional[TIGERConfig] = None,
            progress: bool = False) -> "TIGERBaseline":
        cfg = cfg or TIGERConfig()
        tokens = code_tokens(tokenized.sids.table.codes)
        sequences = [flatten(s, tokens) for s in baselines.training_sequences(prepared)]
        model, history = sasrec.train_model(sequences, int(tokens.max()) + 1, cfg.network(tokens.shape[1]), progress)
        return cls(prepared, model, tokens, cfg, history)

    @property
    def trie(self) -> PrefixTrie:
        return PrefixTrie(self.tokens.tolist())

    @property
    def items_by_sid(self) -> dict[tuple[int, ...], int]:
        return {tuple(row): i for i, row in enumerate(self.tokens.tolist())}

    def recommend(self, examples: pd.DataFrame, k: int = 20) -> list[list[int]]:
        histories = baselines.history_sequences(self.prepared, examples, "negative")
        prefixes = [context(h, self.tokens, self.cfg.max_items) for h in histories]
        exclude = [[self.tokens[i].tolist() for i in set(h)] for h in histories]  # the user's past negatives
        with hardware.cpu_threads(self.cfg.num_threads):
            found = beam_search(self.model, self.trie, prefixes, max(k, self.cfg.num_beams), exclude)
        item_of = self.items_by_sid
        return [[item_of[s] for s in seqs[:k]] for seqs in found]
