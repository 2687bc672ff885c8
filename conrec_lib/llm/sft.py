"""Supervised fine-tuning on (prompt, completion) pairs, with the loss on the completion only.

The paper's "Context understanding" stage: SID <-> title translation, item-level alignment and a warm-up on
the recommendation task, all as LoRA SFT of the backbone (`model.load_model`; `ModelConfig.lora=False` trains
every weight). The loop reads top to bottom: encode -> optimizer -> (resume) -> steps -> checkpoint -> result.

Reproducibility: the data order is a pure function of (seed, epoch), the learning-rate schedule a pure function
of the step, and a checkpoint holds the trainable weights, the optimizer state, the RNG state, the step and the
loss history, so an interrupted run that resumes ends with the same weights as one that never stopped.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from conrec_lib.progress import tqdm

from conrec_lib import artifacts, runs
from conrec_lib.configs import check_types
from conrec_lib.llm.decoding import (CompletionLogits, SIDTrie, completion_logits, eval_mode, gather_completion,
                                     model_device, pack)
from conrec_lib.hardware import seeded
from conrec_lib.llm.model import ModelBundle, encode_completion, encode_prompt, save_adapter
from conrec_lib.llm import prompts

CHECKPOINT = "checkpoint.pt"
HISTORY = "loss_history.csv"
ADAPTER = "adapter"
LOSS_OVER = ("vocabulary", "trie")
# Fields that may change between a run and its resumption without changing the result.
RESUMABLE_CHANGES = ("log_every", "checkpoint_every", "eval_every", "eval_batch_size")


@dataclasses.dataclass
class SFTConfig:
    """How to fine-tune; the defaults train the tiny model on a 2-core CPU in about a minute."""

    # optimisation (AdamW, linear warm-up then cosine decay to zero)
    max_steps: int = 200  # GPU: 2000
    batch_size: int = 16  # examples per micro-batch; GPU: 64
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 5e-3  # tiny model with LoRA; GPU (smollm2-135m, LoRA): 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 10  # GPU: 100
    max_grad_norm: float = 1.0  # gradient clipping; 0 turns it off
    # loss: "vocabulary" = softmax over every token; "trie" = each SID token's softmax over the codes the SID
    # trie allows after its prefix (`summed_loss`), as constrained decoding scores them. Measured (tiny, warm-up
    # recipe of notebook 04, 1000 steps, 200 test rows): "trie" fits faster (loss 1.50 vs 2.11) but leans on the
    # items' popularity: FHR@20 0.195 with no gain from the user's history, against 0.23 (+0.025) for "vocabulary"
    loss_over: str = "vocabulary"
    # weight of a second loss on the SID tokens inside the prompt: each item of the user's history predicted from
    # the text and items before it (as SASRec trains on every position of a sequence), so one forward pass teaches
    # ~16 next items and which codes exist instead of one; 0 = the loss on the completion only. Measured: notebook
    # 04's warm-up (ContextConfig.warmup), where it raised the valid-SID mass from 0.11 to 0.73. Only the SIDs of
    # the negative section count (after the last `prompts.NEGATIVE_HEADER`; the whole prompt when it has none): a
    # prompt's positives are context, and training them as next items teaches the model to name liked items
    history_loss: float = 0.0
    # data
    max_length: int = 512  # prompt + completion tokens; longer prompts lose their oldest (leftmost) tokens
    seed: int = 0  # data order and dropout
    # bookkeeping
    log_every: int = 10  # one history row per this many steps (mean training loss over them)
    checkpoint_every: int = 100  # also written at the end; GPU: 500
    eval_every: int = 0  # evaluation loss on `eval_examples` every this many steps (0: only at the end)
    eval_batch_size: int = 32

    def __post_init__(self):
        check_types(self)
        for field in ("max_steps", "batch_size", "grad_accum", "max_length", "log_every", "checkpoint_every",
                      "eval_batch_size"):
            if getattr(self, field) < 1:
                raise ValueError(f"SFTConfig.{field}={getattr(self, field)}: must be >= 1")
        for field in ("warmup_steps", "eval_every", "weight_decay", "max_grad_norm"):
            if getattr(self, field) < 0:
                raise ValueError(f"SFTConfig.{field}={getattr(self, field)}: must be >= 0")
        if not 0 < self.lr < 1:
            raise ValueError(f"SFTConfig.lr={self.lr}: must be in (0, 1); try 5e-3 (tiny) or 2e-4 (pretrained)")
        if not 0 <= self.history_loss <= 10:
            raise ValueError(f"SFTConfig.history_loss={self.history_loss}: must be in [0, 10]; 0 turns it off")
        if self.loss_over not in LOSS_OVER:
            raise ValueError(f"SFTConfig.loss_over={self.loss_over!r}: use one of {LOSS_OVER}")
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"SFTConfig.warmup_steps={self.warmup_steps} must be < max_steps={self.max_steps}")


def with_steps(cfg: SFTConfig, max_steps: int) -> SFTConfig:
    """A copy that trains `max_steps` steps; the learning-rate warm-up shortened to at most a tenth of the run.

    >>> with_steps(SFTConfig(warmup_steps=10), 4).warmup_steps
    0
    """
    return dataclasses.replace(cfg, max_steps=max_steps, warmup_steps=min(cfg.warmup_steps, max_steps // 10))


@dataclasses.dataclass
class SFTResult:
    """What a training call did: the loss history (step, loss, lr, eval_loss), steps done, timing."""

    history: pd.DataFrame
    steps: int  # optimizer steps completed in total, resumed ones included
    seconds: float  # wall time of this call
    seconds_per_step: float  # mean over the steps run in this call (nan if none ran)
    truncated: int  # examples whose prompt was cut to fit max_length


class EncodedExample(NamedTuple):
    """One encoded training pair."""

    prompt: list[int]
    completion: list[int]  # ends with the EOS token when the tokenizer has one
    history_from: int = 0  # first prompt position whose SID tokens the history loss predicts (`negatives_start`)


class EncodedExamples(NamedTuple):
    """Encoded pairs and how many prompts were cut to fit."""

    examples: list[EncodedExample]
    truncated: int


class LossSum(NamedTuple):
    """Summed completion-token loss of a micro-batch and the number of tokens it covers."""

    loss: torch.Tensor
    tokens: int


def lr_factor(step: int, warmup_steps: int, max_steps: int) -> float:
    """Learning-rate multiplier at optimizer step `step` (0-based): linear warm-up, then cosine to zero.

    >>> [round(lr_factor(s, 2, 6), 3) for s in range(6)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of one epoch, a pure function of (seed, epoch).

    >>> epoch_order(5, seed=0, epoch=0).tolist() == epoch_order(5, seed=0, epoch=0).tolist()
    True
    >>> sorted(epoch_order(5, seed=0, epoch=3).tolist())
    [0, 1, 2, 3, 4]
    """
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(n: int, batch_size: int, seed: int, index: int) -> list[int]:
    """Example indices of micro-batch `index` in the endless stream of shuffled epochs.

    >>> batch_indices(4, 3, seed=0, index=0) + batch_indices(4, 3, seed=0, index=1)[:1] == epoch_order(4, 0, 0).tolist()
    True
    """
    positions = range(index * batch_size, (index + 1) * batch_size)
    orders: dict[int, np.ndarray] = {}
    picked = []
    for pos in positions:
        epoch, offset = divmod(pos, n)
        if epoch not in orders:
            orders[epoch] = epoch_order(n, seed, epoch)
        picked.append(int(orders[epoch][offset]))
    return picked


def encode_examples(tokenizer, examples: Sequence[tuple[str, str]], max_length: int) -> EncodedExamples:
    """Tokenize (prompt, completion) pairs; a prompt too long for `max_length` keeps its last tokens."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    encoded, truncated = [], 0
    for i, (prompt, completion) in enumerate(examples):
        target = encode_completion(tokenizer, completion) + eos
        room = max_length - len(target)
        if room < 1:
            raise ValueError(f"examples[{i}]: completion has {len(target)} tokens, max_length={max_length} leaves "
                             "no room for the prompt; raise SFTConfig.max_length")
        ids = encode_prompt(tokenizer, prompt)
        truncated += len(ids) > room
        cut = max(0, len(ids) - room)
        encoded.append(EncodedExample(ids[-room:], target, max(0, negatives_start(tokenizer, prompt) - cut)))
    return EncodedExamples(encoded, truncated)


def negatives_start(tokenizer, prompt: str) -> int:
    """The token position where the prompt's negative section begins: the length of the encoded text before the
    last `prompts.NEGATIVE_HEADER` (0 when the prompt has no such header, or nothing before it)."""
    at = prompt.rfind(prompts.NEGATIVE_HEADER)
    return len(encode_prompt(tokenizer, prompt[:at])) if at > 0 else 0


def trie_mask(trie: SIDTrie, completions: Sequence[Sequence[int]], depth: int, vocab_size: int,
              device) -> torch.Tensor:
    """Additive mask (N, depth, V): at every completion token that continues a valid SID, -inf on the tokens the
    SID trie does not allow there; 0 elsewhere (titles, EOS, padding are left alone).

    >>> trie_mask(SIDTrie([(1, 2), (1, 3)]), [[1, 2, 0]], 3, 4, "cpu")[0]
    tensor([[-inf, 0., -inf, -inf],
            [-inf, -inf, 0., 0.],
            [0., 0., 0., 0.]])
    """
    mask = torch.zeros((len(completions), depth, vocab_size), device=device)
    for n, c in enumerate(completions):
        for j, token in enumerate(c[:depth]):
            allowed = trie.allowed(tuple(c[:j]))
            if token in allowed:
                mask[n, j] = float("-inf")
                mask[n, j, allowed] = 0.0
    return mask


def completion_loss(out: CompletionLogits, batch: Sequence[EncodedExample], trie: Optional[SIDTrie] = None) -> LossSum:
    """Summed cross-entropy of the completion tokens in `out` (over the trie's allowed codes with `trie`)."""
    logits = out.logits
    if trie is not None:
        logits = logits + trie_mask(trie, [e.completion for e in batch], logits.shape[1], logits.shape[2],
                                    logits.device)
    loss = torch.nn.functional.cross_entropy(logits[out.mask], out.targets[out.mask], reduction="sum")
    return LossSum(loss, int(out.mask.sum()))


def summed_loss(model, batch: Sequence[EncodedExample], trie: Optional[SIDTrie] = None) -> LossSum:
    """Sum of the completion tokens' cross-entropy over a micro-batch, and how many tokens it covers.

    With `trie` (`SFTConfig.loss_over == "trie"`), each SID token's softmax runs over the tokens the trie allows
    after its prefix only: the model spends no capacity on memorising which codes exist (decoding is constrained
    to the trie anyway) and all of it on ranking the real items.
    """
    return completion_loss(completion_logits(model, [e.prompt for e in batch], [e.completion for e in batch]),
                           batch, trie)


class Losses(NamedTuple):
    """The completion loss and the prompt's SID-token loss of one micro-batch, from one forward pass."""

    completion: LossSum
    history: LossSum


def history_positions(example: EncodedExample, sid_ids: frozenset[int]) -> int:
    """How many prompt tokens the history loss predicts: SID tokens after the first token and from the negative
    section on (the rule of the mask in `summed_losses`; counted before the forward passes, as the step's per-token
    mean needs the total)."""
    return sum(t in sid_ids for t in example.prompt[max(1, example.history_from):])


def summed_losses(model, batch: Sequence[EncodedExample], sid_ids: frozenset[int],
                  trie: Optional[SIDTrie] = None) -> Losses:
    """`summed_loss` plus the summed cross-entropy of every SID token inside the prompts (`SFTConfig.history_loss`),
    from one forward pass that keeps the logits of every position."""
    device = model_device(model)
    packed = pack([e.prompt for e in batch], [e.completion for e in batch])
    out = model(input_ids=packed.ids.to(device), attention_mask=packed.attention.to(device),
                position_ids=packed.positions.to(device))
    completion = completion_loss(gather_completion(out.logits[:, -(packed.where.shape[1] + 1):], packed), batch, trie)
    width = packed.ids.shape[1]
    starts = torch.tensor([width - len(e.prompt) - len(e.completion) for e in batch])
    first = starts + torch.tensor([max(1, e.history_from) for e in batch])  # never the first token: nothing before it
    column = torch.arange(1, width)[None, :]
    in_prompt = (column >= first[:, None]) & (column < (starts + torch.tensor(packed.prompt_lengths))[:, None])
    is_sid = torch.isin(packed.ids[:, 1:], torch.tensor(sorted(sid_ids), dtype=torch.long))
    where = (in_prompt & is_sid).to(device)
    history = torch.nn.functional.cross_entropy(out.logits[:, :-1][where].float(), packed.ids[:, 1:].to(device)[where],
                                                reduction="sum")
    return Losses(completion, LossSum(history, int(where.sum())))


def train_step(bundle: ModelBundle, data: list[EncodedExample], cfg: SFTConfig, step: int,
               optimizer: torch.optim.Optimizer, trie: Optional[SIDTrie] = None) -> float:
    """One optimizer step over `grad_accum` micro-batches; returns the mean completion-token loss (with
    `cfg.history_loss`, the prompt's SID tokens add their own per-token mean, weighted, to what is minimised)."""
    micro = [[data[i] for i in batch_indices(len(data), cfg.batch_size, cfg.seed, step * cfg.grad_accum + a)]
             for a in range(cfg.grad_accum)]
    n_tokens = sum(len(e.completion) for batch in micro for e in batch)  # the step's loss is a per-token mean
    sid_ids = frozenset(bundle.sid_token_ids) if cfg.history_loss > 0 else frozenset()
    n_history = sum(history_positions(e, sid_ids) for batch in micro for e in batch) if sid_ids else 0
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * lr_factor(step, cfg.warmup_steps, cfg.max_steps)
    bundle.model.train()
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for batch in micro:
        if n_history:
            (loss, _), (history, _) = summed_losses(bundle.model, batch, sid_ids, trie)
            (loss / n_tokens + cfg.history_loss * history / n_history).backward()
        else:
            loss, _ = summed_loss(bundle.model, batch, trie)
            (loss / n_tokens).backward()
        total += loss.item()
    if cfg.max_grad_norm > 0:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    return total / n_tokens


@torch.no_grad()
def eval_loss(bundle: ModelBundle, data: Sequence[EncodedExample], batch_size: int = 32) -> float:
    """Mean completion-token cross-entropy over `data` (no gradients, eval mode)."""
    total, count = 0.0, 0
    with eval_mode(bundle.model):
        for start in range(0, len(data), batch_size):
            loss, n = summed_loss(bundle.model, data[start:start + batch_size])
            total, count = total + loss.item(), count + n
    return total / max(count, 1)


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters that train, by name (LoRA + SID rows, or everything for full fine-tuning)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@dataclasses.dataclass
class TrainState:
    """Everything a checkpoint restores besides the weights and the optimizer."""

    step: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)
    pending: list[float] = dataclasses.field(default_factory=list)  # losses since the last history row


def save_checkpoint(path: Path, bundle: ModelBundle, optimizer, state: TrainState, cfg: SFTConfig) -> None:
    """Write weights, optimizer, RNG state, step and history to one file, atomically."""
    payload = {
        "weights": {n: p.detach().cpu().clone() for n, p in trainable(bundle.model).items()},
        "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "state": dataclasses.asdict(state), "config": dataclasses.asdict(cfg),
    }
    with runs.atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, bundle: ModelBundle, optimizer, cfg: SFTConfig) -> TrainState:
    """Restore a checkpoint written by `save_checkpoint` into `bundle` and `optimizer`."""
    payload = artifacts.read(torch.load, path, map_location="cpu", weights_only=True)
    changed = [k for k, v in payload["config"].items() if k not in RESUMABLE_CHANGES and getattr(cfg, k) != v]
    if changed:
        raise ValueError(f"{path}: written with a different SFTConfig ({', '.join(changed)}); restore those "
                         "values, or delete the checkpoint (or pass resume=False) to start over")
    params = trainable(bundle.model)
    if set(params) != set(payload["weights"]):
        raise ValueError(f"{path}: its trainable weights do not match the model's; load the same ModelConfig")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(payload["weights"][name])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["rng"])
    if payload["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return TrainState(**payload["state"])


def log_step(state: TrainState, loss: float, lr: float, cfg: SFTConfig, evaluate) -> None:
    """Record one step's loss; every `log_every` steps (and on evaluation steps) append a history row."""
    state.step += 1
    state.pending.append(loss)
    do_eval = evaluate is not None and cfg.eval_every > 0 and state.step % cfg.eval_every == 0
    if state.step % cfg.log_every == 0 or state.step == cfg.max_steps or do_eval:
        row = {"step": state.step, "loss": float(np.mean(state.pending)), "lr": lr, "eval_loss": float("nan")}
        if do_eval or (evaluate is not None and state.step == cfg.max_steps):
            row["eval_loss"] = evaluate()
        state.history.append(row)
        state.pending = []


def train(bundle: ModelBundle, examples: Sequence[tuple[str, str]], cfg: SFTConfig, out_dir: str | Path | None = None,
          progress: bool = True, resume: bool = True, stop_after: int | None = None,
          eval_examples: Sequence[tuple[str, str]] = (), trie: Optional[SIDTrie] = None) -> SFTResult:
    """Fine-tune `bundle.model` in place on (prompt, completion) pairs, the loss on the completion only.

    With `out_dir`, a checkpoint is written every `checkpoint_every` steps and at the end, plus the loss history
    (CSV) and the adapter (`model.save_adapter`); with `resume`, a checkpoint found there is continued.
    `stop_after=k` stops after step k (checkpointed): a later call with `resume=True` finishes the run.
    """
    started = time.perf_counter()
    if not examples:
        raise ValueError("sft.train: examples is empty; pass (prompt, completion) pairs")
    if cfg.loss_over == "trie" and trie is None:
        raise ValueError("sft.train: SFTConfig.loss_over='trie' needs the SID trie: pass "
                         "trie=recommend.sid_trie(bundle, table), or set loss_over='vocabulary'")
    data = encode_examples(bundle.tokenizer, examples, cfg.max_length)
    held_out = encode_examples(bundle.tokenizer, eval_examples, cfg.max_length).examples if eval_examples else []
    evaluate = (lambda: eval_loss(bundle, held_out, cfg.eval_batch_size)) if held_out else None
    params = list(trainable(bundle.model).values())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    checkpoint = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    with seeded(cfg.seed):  # dropout draws from here; the caller's global RNG is left as it was
        state = TrainState()
        if resume and checkpoint is not None and checkpoint.is_file():
            state = load_checkpoint(checkpoint, bundle, optimizer, cfg)
        first, last = state.step, min(cfg.max_steps, stop_after if stop_after is not None else cfg.max_steps)
        run_steps(bundle, data.examples, cfg, optimizer, state, last, checkpoint, progress, evaluate,
                  trie if cfg.loss_over == "trie" else None)
    if out_dir is not None:
        write_outputs(Path(out_dir), bundle, optimizer, state, cfg)
    ran = state.step - first
    seconds = time.perf_counter() - started
    return SFTResult(history_frame(state.history), state.step, seconds, seconds / ran if ran else float("nan"),
                     data.truncated)


def run_steps(bundle, data, cfg, optimizer, state: TrainState, last: int, checkpoint: Path | None,
              progress: bool, evaluate, trie: Optional[SIDTrie] = None) -> None:
    """The training loop proper: steps `state.step` .. `last` - 1, checkpointing on the way."""
    bar = tqdm(total=last, initial=state.step, disable=not progress, desc="sft")
    while state.step < last:
        loss = train_step(bundle, data, cfg, state.step, optimizer, trie)
        log_step(state, loss, optimizer.param_groups[0]["lr"], cfg, evaluate)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        if checkpoint is not None and state.step % cfg.checkpoint_every == 0:
            save_checkpoint(checkpoint, bundle, optimizer, state, cfg)
    bar.close()


def write_outputs(out_dir: Path, bundle: ModelBundle, optimizer, state: TrainState, cfg: SFTConfig) -> None:
    """The end-of-call artifacts: the checkpoint, the loss history and the adapter."""
    save_checkpoint(out_dir / CHECKPOINT, bundle, optimizer, state, cfg)
    with runs.atomic_path(out_dir / HISTORY) as tmp:
        history_frame(state.history).to_csv(tmp, index=False)
    save_adapter(bundle, out_dir / ADAPTER)


def history_frame(rows: list[dict]) -> pd.DataFrame:
    """The loss history as a DataFrame with columns step, loss, lr, eval_loss."""
    return pd.DataFrame(rows, columns=["step", "loss", "lr", "eval_loss"])
