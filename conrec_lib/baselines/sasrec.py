"""A SASRec-style baseline: a small causal transformer over the users' negative item sequences.

PAPER.md "Evaluation in the paper" lists SASRec (Kang & McAuley 2018) among the baselines. Ours follows its
recipe on *negative* feedback only: item embeddings + learned positions -> causal self-attention blocks ->
the output at position t scores every item as the (t+1)-th negative, by a dot product with the (tied) item
embeddings. Trained with full-softmax cross-entropy on every position (next-negative objective), on each
user's negatives before their test cutoff (`baselines.training_sequences`). Every sequence starts with a
BOS token, so a user without any past negative still gets a ranking (the one learnt for BOS, close to
negative popularity). Past negatives of the user are never recommended (`baselines` module docstring).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from conrec_lib.progress import tqdm

from conrec_lib import hardware
from conrec_lib.baselines import heuristics as baselines
from conrec_lib.configs import check_types
from conrec_lib.data.dataprep import PreparedData
from conrec_lib.hardware import seeded

PAD, BOS, OFFSET = 0, 1, 2  # token ids; item i is token i + OFFSET


@dataclasses.dataclass
class SASRecConfig:
    """Model size and training of the SASRec baseline (tiny defaults: seconds on a 2-core CPU)."""

    # model
    max_len: int = 20  # positions; older negatives are dropped. Full/GPU: 50
    dim: int = 32  # full/GPU: 64
    num_layers: int = 1  # full/GPU: 2
    num_heads: int = 2
    # dropout 0.5 (was 0.2): tuned like the LLM levers, on notebook 06's 896 test rows (benchmarks/baseline_tuning.py):
    # FHR@20 0.193 at 0.2 / 10 epochs, 0.299 at 0.5; 3 / 5 / 20 epochs 0.286 / 0.295 / 0.136, lr 3e-3 0.239
    dropout: float = 0.5
    # training (10 epochs: ~5 s on the simulator on a shared 2-core CPU; more epochs overfit the simulator's
    # exposure-driven sequences)
    epochs: int = 10  # full/GPU: 30
    batch_size: int = 128
    lr: float = 1e-2  # full/GPU: 3e-3
    weight_decay: float = 0.0
    # runtime
    seed: int = 0  # weights, data order, dropout
    device: Optional[str] = "cpu"  # None / "auto": CUDA when available
    num_threads: Optional[int] = 1  # CPU threads while training (hardware.cpu_threads)

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("max_len", "dim", "num_layers", "num_heads", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SASRecConfig.{name}={getattr(self, name)}: must be >= 1")
        if self.dim % self.num_heads:
            raise ValueError(f"SASRecConfig: dim={self.dim} is not divisible by num_heads={self.num_heads}; "
                             "pick e.g. dim=64, num_heads=2")
        if not 0.0 <= self.dropout < 1.0 or self.lr <= 0:
            raise ValueError(f"SASRecConfig: dropout={self.dropout} must be in [0, 1) and lr={self.lr} > 0")


class SASRec(nn.Module):
    """Causal self-attention over item tokens; logits over the n_items items at every position."""

    def __init__(self, n_items: int, cfg: SASRecConfig):
        super().__init__()
        self.n_items = n_items
        self.embed = nn.Embedding(n_items + OFFSET, cfg.dim, padding_idx=PAD)
        self.position = nn.Embedding(cfg.max_len, cfg.dim)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.num_heads, 2 * cfg.dim, cfg.dropout, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.embed.weight, std=0.02)  # small: the tied logits start near uniform
        nn.init.normal_(self.position.weight, std=0.02)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) right-padded tokens -> (B, T, C) states; position t has seen tokens 0..t."""
        T = tokens.shape[1]
        x = self.drop(self.embed(tokens) + self.position(torch.arange(T, device=tokens.device)))  # (B, T, C)
        causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).triu(1)  # True: may not attend
        return self.norm(self.blocks(x, mask=causal, src_key_padding_mask=tokens == PAD, is_causal=True))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., C) states -> (..., n_items) next-negative logits (tied output embeddings)."""
        return hidden @ self.embed.weight[OFFSET:].T

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) right-padded tokens -> (B, T, n_items) next-negative logits."""
        return self.logits(self.hidden(tokens))


def windows(sequence: Sequence[int], max_len: int) -> list[list[int]]:
    """BOS + the item tokens, cut into pieces of max_len + 1 that overlap by one token, so every item is the
    target exactly once (input piece[:-1], target piece[1:]).

    >>> windows([0, 1, 2], max_len=2)  # tokens 1 2 3 4 -> pieces [1 2 3], [3 4]
    [[1, 2, 3], [3, 4]]
    """
    tokens = [BOS] + [int(i) + OFFSET for i in sequence]
    return [tokens[a:a + max_len + 1] for a in range(0, len(tokens) - 1, max_len)]


def padded(rows: Sequence[Sequence[int]], width: Optional[int] = None) -> torch.Tensor:
    """(len(rows), width) int64, right-padded with PAD.

    >>> padded([[1, 2], [3]]).tolist()
    [[1, 2], [3, 0]]
    """
    width = width or max(len(r) for r in rows)
    out = torch.full((len(rows), width), PAD, dtype=torch.long)
    for n, r in enumerate(rows):
        out[n, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def next_item_loss(model: SASRec, pieces: Sequence[Sequence[int]], device) -> torch.Tensor:
    """Mean cross-entropy of every next item in the pieces (padding and BOS are never targets)."""
    batch = padded(pieces).to(device)  # (B, T + 1)
    hidden = model.hidden(batch[:, :-1])  # (B, T, C)
    real = batch[:, 1:] != PAD  # (B, T): only these positions have a target; the softmax runs on them alone
    return nn.functional.cross_entropy(model.logits(hidden[real]), batch[:, 1:][real] - OFFSET)


def train_model(sequences: Sequence[Sequence[int]], n_items: int, cfg: SASRecConfig, progress: bool = False
                ) -> tuple[SASRec, list[float]]:
    """Fit SASRec on the sequences; returns the model (eval mode) and the mean loss of each epoch."""
    pieces = [p for s in sequences for p in windows(s, cfg.max_len) if len(p) > 1]
    if not pieces:
        raise ValueError("SASRec: no training sequence has an item; the split's training period holds no "
                         "negatives (check notebook 01's split)")
    device = hardware.resolve_device(cfg.device)
    with seeded(cfg.seed), hardware.cpu_threads(cfg.num_threads):
        model = SASRec(n_items, cfg).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        history = [train_epoch(model, pieces, optimizer, cfg, epoch, device)
                   for epoch in tqdm(range(cfg.epochs), desc="SASRec", disable=not progress)]
    return model.eval(), history


def train_epoch(model: SASRec, pieces: Sequence[Sequence[int]], optimizer, cfg: SASRecConfig, epoch: int,
                device) -> float:
    """One pass over the pieces in a (seed, epoch) order; returns the mean batch loss."""
    model.train()
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(pieces))
    losses = []
    for start in range(0, len(order), cfg.batch_size):
        loss = next_item_loss(model, [pieces[i] for i in order[start:start + cfg.batch_size]], device)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses))


@torch.no_grad()
def top_items(model: SASRec, histories: Sequence[Sequence[int]], k: int, max_len: int,
              batch_size: int = 256) -> list[list[int]]:
    """Per history (past negatives, time order), the k best-scored items that are not in it."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(histories), batch_size):
        chunk = histories[start:start + batch_size]
        tokens = [([BOS] + [int(i) + OFFSET for i in h])[-max_len:] for h in chunk]
        hidden = model.hidden(padded(tokens).to(device))  # (B, T, C)
        last = model.logits(hidden[torch.arange(len(chunk)), torch.tensor([len(t) - 1 for t in tokens])])  # (B, n)
        for h, row in zip(chunk, last):
            if h:
                row[torch.tensor(sorted(set(h)), dtype=torch.long)] = -torch.inf
            out.append(row.topk(min(k, int(torch.isfinite(row).sum()))).indices.tolist())
    return out


@dataclasses.dataclass
class SASRecBaseline:
    """The `baselines.Baseline` interface around a trained SASRec."""

    prepared: PreparedData
    model: SASRec
    cfg: SASRecConfig
    history: list[float]  # mean training loss per epoch
    name: str = "sasrec"

    @classmethod
    def fit(cls, prepared: PreparedData, tokenized=None, cfg: Optional[SASRecConfig] = None,
            progress: bool = False) -> "SASRecBaseline":
        cfg = cfg or SASRecConfig()
        model, history = train_model(baselines.training_sequences(prepared), prepared.dataset.n_items, cfg,
                                     progress)
        return cls(prepared, model, cfg, history)

    def recommend(self, examples: pd.DataFrame, k: int = 20) -> list[list[int]]:
        histories = baselines.history_sequences(self.prepared, examples, "negative")
        with hardware.cpu_threads(self.cfg.num_threads):
            return top_items(self.model, histories, k, self.cfg.max_len)
