"""GRPO, small enough to read in one sitting, with TRL's names (PAPER.md "Progressive GRPO").

One step: take `prompts_per_batch` prompts per micro-batch and `gradient_accumulation_steps` micro-batches (TRL's
generation batch); sample G = `num_generations` SIDs per prompt from the trie-constrained policy (`decoding.sample`:
only valid items); score the whole generation batch with every reward function, called as TRL calls them (by
keyword: `prompts=`, `completions=`, `completion_ids=`, `trainer_state=` and the dataset columns; a `None` reward
is NaN, "does not apply"), and sum them (optionally weighted) ignoring NaN; turn rewards into group advantages
over the generation batch; then minimise TRL's per-token objective (loss_type "dapo" by default, TRL's default):

    ratio_t  = exp(logp_t - old_logp_t)                     old = the sampling policy (detached)
    A_hat    = (r - mean_group(r)) / (std(r) + 1e-4)        unbiased std of the group, or of the whole generation
                                                            batch ("scale_rewards"); NaN rewards are left out, and
                                                            a completion no reward scored gets A_hat = 0, as TRL
    kl_t     = exp(ref_t - logp_t) - (ref_t - logp_t) - 1   the k3 estimator of KL(pi || pi_ref) >= 0,
               times ratio_t when `use_bias_correction_kl` (TRL's default: the samples come from pi_old)
    loss_t   = -min(ratio_t * A_hat, clip(ratio_t, 1 - eps, 1 + eps) * A_hat) + beta * kl_t
    loss     = sum_t loss_t * mask_t / (completion tokens of the whole optimizer step)      ("dapo")
               mean over sequences of the per-sequence token mean                          ("grpo")
               sum_t loss_t * mask_t / (this micro-batch's completion tokens)             ("bnpo")
               sum_t loss_t * mask_t / (completions x max SID length in tokens)         ("dr_grpo")
               ("grpo", "bnpo", "dr_grpo" then average the micro-batches, as TRL)

`num_iterations` (GRPO's mu) reuses one batch of rollouts for that many optimizer updates: only then do
ratios leave 1 and clipping act. The reference is frozen at the start of `train`: a deep copy of the model
("copy"), or, for a LoRA model, the same model with its adapter disabled ("disable_adapter", TRL's way, which
makes the *base* model the reference: its SID rows are untrained, so prefer "copy" when the adapter also
taught the SIDs); "auto" picks "disable_adapter" for LoRA and "copy" otherwise.

Speed: the prompt of a group is run once for its G completions: in sampling they share its KV cache
(`decoding.Stepper`, tree attention), in the training forward pass (`policy_logprobs`) the cache is repeated
for them, so a step costs about one prompt pass per prompt, not G.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from typing import Iterator, NamedTuple, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from conrec_lib.llm import decoding, sft
from conrec_lib.sids import beam
from conrec_lib.configs import check_types
from conrec_lib.llm.decoding import CACHE_KW, Rollouts, SIDTrie, TokenLogprobs
from conrec_lib.hardware import seeded
from conrec_lib.llm.model import ModelBundle, encode_completion

SCALE_REWARDS = ("group", "batch", "none")
LOSS_TYPES = ("dapo", "grpo", "bnpo", "dr_grpo")
REFERENCES = ("auto", "copy", "disable_adapter")


@dataclasses.dataclass
class GRPOConfig:
    """GRPO hyper-parameters, named as in TRL's GRPOConfig; defaults run the tiny model on a CPU in seconds."""

    # rollouts
    num_generations: int = 8  # G, completions per prompt; GPU: 16
    temperature: float = 1.0
    # objective
    beta: float = 0.04  # KL weight; 0 skips the reference entirely
    epsilon: float = 0.2  # clip range of the ratio
    scale_rewards: str = "group"  # divide advantages by the group's std ("group"), the batch's, or not ("none")
    loss_type: str = "dapo"
    num_iterations: int = 1  # optimizer updates per batch of rollouts (GRPO's mu)
    reward_weights: Optional[tuple[float, ...]] = None  # one weight per reward function (None: all 1)
    use_bias_correction_kl: bool = True  # weight kl_t by ratio_t, as TRL does by default
    reference: str = "auto"  # see the module docstring
    # optimisation (AdamW, constant learning rate)
    learning_rate: float = 1e-4  # GPU (smollm2-135m, LoRA): 1e-5
    prompts_per_batch: int = 8  # prompts per micro-batch, each with G rollouts; GPU: 32
    gradient_accumulation_steps: int = 1
    max_steps: int = 20  # generation rounds; each makes num_iterations optimizer updates; GPU: 1000
    max_grad_norm: float = 1.0  # 0 turns clipping off
    # bookkeeping
    log_every: int = 1
    seed: int = 0  # prompt order and sampling

    def __post_init__(self) -> None:
        check_types(self)
        for field in ("num_generations", "num_iterations", "prompts_per_batch", "gradient_accumulation_steps",
                      "max_steps", "log_every"):
            if getattr(self, field) < 1:
                raise ValueError(f"GRPOConfig.{field}={getattr(self, field)}: must be >= 1")
        if self.scale_rewards not in SCALE_REWARDS or self.loss_type not in LOSS_TYPES:
            raise ValueError(f"GRPOConfig: scale_rewards={self.scale_rewards!r} must be one of {SCALE_REWARDS} and "
                             f"loss_type={self.loss_type!r} one of {LOSS_TYPES}")
        if self.reference not in REFERENCES:
            raise ValueError(f"GRPOConfig.reference={self.reference!r}: use one of {REFERENCES}")
        if self.beta < 0 or self.epsilon <= 0 or self.temperature <= 0 or not 0 < self.learning_rate < 1:
            raise ValueError(f"GRPOConfig: need beta >= 0 (got {self.beta}), epsilon > 0 ({self.epsilon}), "
                             f"temperature > 0 ({self.temperature}), 0 < learning_rate < 1 ({self.learning_rate})")
        if self.num_generations < 2:
            raise ValueError(f"GRPOConfig.num_generations={self.num_generations}: a group needs >= 2 completions "
                             "to have an advantage; use 2 or more")


# --- the maths, on tensors -------------------------------------------------------------------------

def nanstd(x: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """Unbiased std leaving NaN out (TRL's `nanstd`; NaN with < 2 values); `torch.std` when there is no NaN.

    >>> nanstd(torch.tensor([1.0, float("nan"), 3.0]))
    tensor(1.4142)
    """
    if not torch.isnan(x).any():
        return x.std() if dim is None else x.std(dim)  # the same value, to the last bit of earlier runs
    dims = () if dim is None else (dim,)  # () reduces every dimension
    variance = torch.nanmean((x - torch.nanmean(x, dim=dims, keepdim=True)) ** 2, dim=dims)
    count = (~torch.isnan(x)).sum(dim=dims)
    variance = variance * (count / (count - 1))  # Bessel's correction, as TRL
    return torch.where(count > 1, variance, torch.full_like(variance, float("nan"))).sqrt()


def nanmean(x: torch.Tensor, dim: Optional[int] = None, keepdim: bool = False) -> torch.Tensor:
    """Mean leaving NaN out (`torch.nanmean`); `torch.mean` when there is no NaN."""
    fn = torch.nanmean if torch.isnan(x).any() else torch.mean
    return fn(x) if dim is None else fn(x, dim, keepdim=keepdim)


def group_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group") -> torch.Tensor:
    """(N,) advantages of rewards laid out group after group: (r - group mean) / (std + 1e-4), as TRL.

    The std is the unbiased one (TRL's `nanstd`), of the group ("group"), of all of `rewards` ("batch": pass the
    whole generation batch), or not used ("none"). NaN rewards (unscored completions) are left out of means and
    stds and get advantage 0.
    >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2)
    tensor([ 0.7070, -0.7070, -0.7070,  0.7070])
    >>> group_advantages(torch.tensor([3.0, 3.0]), 2)
    tensor([0., 0.])
    >>> group_advantages(torch.tensor([1.0, 0.0, 2.0, float("nan")]), 2, "none")
    tensor([ 0.5000, -0.5000,  0.0000,  0.0000])
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"group_advantages: scale_rewards={scale_rewards!r}; use one of {SCALE_REWARDS}")
    groups = rewards.view(-1, num_generations)  # (B, G)
    centred = (groups - nanmean(groups, 1, keepdim=True)).flatten()
    if scale_rewards != "none":
        std = nanstd(groups, 1).repeat_interleave(num_generations) if scale_rewards == "group" else nanstd(rewards)
        centred = centred / (std + 1e-4)
    return torch.nan_to_num(centred, nan=0.0)


def zero_std_fraction(rewards: torch.Tensor, num_generations: int) -> float:
    """Share of groups whose G rewards are all equal (no learning signal): TRL's `frac_reward_zero_std`.

    >>> zero_std_fraction(torch.tensor([1.0, 1.0, 0.0, 1.0]), 2)
    0.5
    """
    std = nanstd(rewards.view(-1, num_generations), 1)
    return float(torch.isclose(std, torch.zeros_like(std)).float().mean())


def per_token_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(pi || pi_ref) per token, exp(ref - logp) - (ref - logp) - 1 (zero iff equal).

    >>> per_token_kl(torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -2.0]))
    tensor([0., 0.])
    """
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


class LossParts(NamedTuple):
    """A micro-batch's loss (to backpropagate) and what TRL logs about it."""

    loss: torch.Tensor
    kl: float  # token mean of the k3 KL (nan when beta = 0)
    clip_ratio: float  # token share where clipping removed the gradient (TRL's clip_ratio/region_mean)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: Optional[torch.Tensor], advantages: torch.Tensor,
              mask: torch.Tensor, beta: float, epsilon: float, loss_type: str = "dapo",
              normalizer: Optional[float] = None, bias_correction_kl: bool = True) -> LossParts:
    """TRL's clipped objective + beta * k3 KL on (N, L) per-token log-probs (module docstring).

    `normalizer`: for "dapo", the completion tokens of the whole optimizer step (default: this micro-batch's);
    for "dr_grpo" (required), completions x max completion length. Unused by "grpo" and "bnpo".
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"grpo_loss: loss_type={loss_type!r} is not one of {LOSS_TYPES}")
    if loss_type == "dr_grpo" and normalizer is None:
        raise ValueError("grpo_loss: loss_type='dr_grpo' needs normalizer = completions x max completion length")
    mask = mask.float()
    adv = advantages[:, None]  # (N, 1)
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    per_token = -torch.min(ratio * adv, clipped * adv)  # (N, L)
    kl = per_token_kl(logp, ref_logp) if beta != 0 else None
    if kl is not None and bias_correction_kl:
        kl = kl * ratio
    if kl is not None:
        per_token = per_token + beta * kl
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo" or normalizer is None:  # "dapo" on one micro-batch is "bnpo"
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    else:  # "dapo": the step's token count; "dr_grpo": a constant, completions x max length
        loss = (per_token * mask).sum() / normalizer
    region = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon) & (adv > 0))
    tokens = mask.sum().clamp(min=1.0)
    kl_mean = float((kl.detach() * mask).sum() / tokens) if kl is not None else float("nan")
    return LossParts(loss, kl_mean, float((region.float() * mask).sum() / tokens))


# --- log-probs with the prompt computed once per group -------------------------------------------

def completion_tensors(tokenizer, completions: Sequence[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded completion ids (N, L) and their mask (N, L)."""
    ids = [encode_completion(tokenizer, c) for c in completions]
    width = max(len(i) for i in ids)
    out = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.bool)
    for n, seq in enumerate(ids):
        out[n, :len(seq)], mask[n, :len(seq)] = torch.tensor(seq, dtype=torch.long), True
    return out.to(device), mask.to(device)


def policy_logprobs(model, tokenizer, prompts: Sequence[str], prompt_index: torch.Tensor, completions: Sequence[str],
                    trie: SIDTrie, temperature: float = 1.0) -> TokenLogprobs:
    """Per-token log-probs (N, L) of completions under the constrained policy, with gradients.

    Equal to `decoding.token_logprobs(..., trie, temperature)` on the repeated prompts, but each prompt is
    run once: its KV cache is repeated for its completions (`prompt_index[n]` is completion n's prompt).
    """
    device = decoding.model_device(model)
    ids, prompt_mask = decoding.left_pad(tokenizer, prompts, device)  # (B, T)
    out = model(input_ids=ids, attention_mask=prompt_mask, position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True, logits_to_keep=1)
    rows = prompt_index.to(device)
    cache = getattr(out, CACHE_KW)
    cache.reorder_cache(rows)  # (N, ...): index_select keeps the graph back to the prompt pass
    targets, mask = completion_tensors(tokenizer, completions, device)  # (N, L)
    attention = torch.cat([prompt_mask[rows], mask.long()], dim=1)
    positions = prompt_mask[rows].sum(-1, keepdim=True) + torch.arange(targets.shape[1], device=device)
    tail = model(input_ids=targets, attention_mask=attention, position_ids=positions, use_cache=True,
                 **{CACHE_KW: cache})
    logits = torch.cat([out.logits[rows, -1:], tail.logits[:, :-1]], dim=1).float() / temperature  # (N, L, V)
    prefixes = [tuple(t[:j]) for t in targets.tolist() for j in range(targets.shape[1])]
    allowed = beam.allowed_mask(trie, prefixes, logits.shape[-1], device).view(*targets.shape, -1)
    logits = logits + allowed.masked_fill(~mask[..., None], 0.0)  # padding rows stay finite
    logp = torch.log_softmax(logits, -1).gather(2, targets[..., None]).squeeze(-1)
    return TokenLogprobs(torch.where(mask, logp, torch.zeros_like(logp)), mask)


@contextlib.contextmanager
def reference_model(bundle: ModelBundle, cfg: GRPOConfig) -> Iterator[Optional[torch.nn.Module]]:
    """The frozen reference for the run: a deep copy of the model now, or None ("adapter disabled", or beta = 0)."""
    lora = bool(getattr(bundle.config, "lora", False))
    kind = ("disable_adapter" if lora else "copy") if cfg.reference == "auto" else cfg.reference
    if kind == "disable_adapter" and not hasattr(bundle.model, "disable_adapter"):
        raise ValueError("GRPOConfig.reference='disable_adapter' needs a LoRA (peft) model; use 'copy'")
    frozen = None
    if cfg.beta != 0 and kind == "copy":
        frozen = copy.deepcopy(bundle.model).eval().requires_grad_(False)
    yield frozen
    del frozen


@torch.no_grad()
def reference_logprobs(bundle: ModelBundle, frozen, prompts, prompt_index, completions, trie, temperature):
    """Reference log-probs: from the frozen copy, or from the model with its adapter disabled."""
    if frozen is not None:
        return policy_logprobs(frozen, bundle.tokenizer, prompts, prompt_index, completions, trie, temperature)
    with decoding.eval_mode(bundle.model), bundle.model.disable_adapter():
        return policy_logprobs(bundle.model, bundle.tokenizer, prompts, prompt_index, completions, trie, temperature)


# --- one batch of rollouts -------------------------------------------------------------------------

class Batch(NamedTuple):
    """One micro-batch of scored rollouts, ready for the loss (no graph attached)."""

    prompts: list[str]  # (B,)
    rollouts: Rollouts
    completions: list[str]  # (N,) flat, group after group
    rewards: torch.Tensor  # (N,) weighted sum over reward functions, NaN where none scored
    per_func: dict[str, torch.Tensor]  # each function's rewards (N,), NaN where it returned None
    advantages: torch.Tensor  # (N,) from the whole generation batch's rewards
    ref_logp: Optional[torch.Tensor]  # (N, L)


class TrainerState(NamedTuple):
    """What a reward sees as `trainer_state` (TRL passes its TrainerState): optimizer updates done, and planned."""

    global_step: int
    max_steps: int


def reward_names(reward_funcs: Sequence) -> list[str]:
    """TRL's name of each reward function: its `__name__` (rewards/<name>/mean)."""
    return [getattr(f, "__name__", f"reward_{k}") for k, f in enumerate(reward_funcs)]


def score(reward_funcs: Sequence, weights: Sequence[float], prompts: list[str], completions: list[str],
          columns: dict[str, list], completion_ids: Optional[list[list[int]]] = None,
          trainer_state: Optional[TrainerState] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted rewards (N,) and each function's rewards {name: (N,)}, the functions called as TRL calls them.

    By keyword: prompts=, completions=, completion_ids=, trainer_state= and the columns (one entry per completion).
    A `None` reward becomes NaN; the weighted sum leaves NaN out (TRL's nansum) and is NaN where no function scored.
    """
    kwargs = {**columns, "prompts": prompts, "completions": completions, "completion_ids": completion_ids,
              "trainer_state": trainer_state}
    names, table = reward_names(reward_funcs), []
    for name, f in zip(names, reward_funcs):
        out = [float("nan") if x is None else float(x) for x in f(**kwargs)]
        if len(out) != len(completions):
            raise ValueError(f"reward function {name!r} returned {len(out)} rewards for {len(completions)} "
                             "completions; return one per completion (None where it does not apply)")
        table.append(out)
    table = torch.tensor(table)  # (F, N)
    weighted = torch.tensor(weights)[:, None] * table
    rewards = torch.where(torch.isnan(weighted), torch.zeros_like(weighted), weighted).sum(0)
    rewards[torch.isnan(table).all(0)] = float("nan")  # unscorable: out of the baseline, advantage 0
    return rewards, dict(zip(names, table))


def rollout(bundle: ModelBundle, prompts: list[str], trie: SIDTrie, cfg: GRPOConfig,
            generator: torch.Generator) -> Rollouts:
    """G valid SIDs per prompt from the constrained policy."""
    ro = decoding.sample(bundle.model, bundle.tokenizer, prompts, trie, cfg.num_generations, cfg.temperature,
                         generator)
    if any(len(c) != cfg.num_generations for c in ro.completions):
        raise ValueError("a prompt got fewer than num_generations valid SIDs: the trie has dead ends; build it "
                         "with SIDTrie.from_sids over the item table (recommend.sid_trie)")
    return ro


def generation_batch(bundle: ModelBundle, micro_rows: list[list[dict]], trie: SIDTrie, reward_funcs,
                     cfg: GRPOConfig, generator: torch.Generator, frozen,
                     trainer_state: Optional[TrainerState] = None) -> list[Batch]:
    """One optimizer step's micro-batches (TRL's generation batch): sampled one by one, then scored and given
    advantages together (so "batch" scaling uses the std of the whole step), with reference log-probs."""
    prompts = [[r["prompt"] for r in rows] for rows in micro_rows]
    sampled = [rollout(bundle, p, trie, cfg, generator) for p in prompts]
    owners = [micro_rows[a][b] for a, ro in enumerate(sampled) for b in ro.prompt_index.tolist()]  # (N_step,)
    completions = [c for ro in sampled for group in ro.completions for c in group]
    ids = [t[m].tolist() for ro in sampled for t, m in zip(ro.token_ids, ro.completion_mask)]
    columns = {k: [r[k] for r in owners] for k in owners[0] if k != "prompt"}  # repeated per completion
    weights = cfg.reward_weights or [1.0] * len(reward_funcs)
    rewards, per_func = score(reward_funcs, weights, [r["prompt"] for r in owners], completions, columns, ids,
                              trainer_state)
    advantages = group_advantages(rewards, cfg.num_generations, cfg.scale_rewards)
    batches, start = [], 0
    for p, ro in zip(prompts, sampled):
        part = slice(start, start + len(ro.prompt_index))
        start = part.stop
        ref = None
        if cfg.beta != 0:
            ref = reference_logprobs(bundle, frozen, p, ro.prompt_index, completions[part], trie,
                                     cfg.temperature).logprobs
        batches.append(Batch(p, ro, completions[part], rewards[part], {k: v[part] for k, v in per_func.items()},
                             advantages[part], ref))
    return batches


def make_batch(bundle: ModelBundle, rows: list[dict], trie: SIDTrie, reward_funcs, cfg: GRPOConfig,
               generator: torch.Generator, frozen) -> Batch:
    """Sample G SIDs per prompt, score them, compute advantages and reference log-probs (a one-micro-batch step)."""
    return generation_batch(bundle, [rows], trie, reward_funcs, cfg, generator, frozen)[0]


# --- the loop --------------------------------------------------------------------------------------

def update(bundle: ModelBundle, batches: list[Batch], trie: SIDTrie, cfg: GRPOConfig,
           optimizer: torch.optim.Optimizer) -> dict:
    """One optimizer update over the micro-batches (gradient accumulation); returns loss, kl, clip_ratio."""
    tokens = sum(float(b.rollouts.completion_mask.sum()) for b in batches)  # "dapo": the step's token count
    optimizer.zero_grad(set_to_none=True)
    bundle.model.train()
    logged = []
    for b in batches:
        lp = policy_logprobs(bundle.model, bundle.tokenizer, b.prompts, b.rollouts.prompt_index, b.completions, trie,
                             cfg.temperature)
        old = b.rollouts.logprobs.to(lp.logprobs.device)
        norm = {"dapo": tokens, "dr_grpo": float(len(b.completions) * trie.depth)}.get(cfg.loss_type)
        parts = grpo_loss(lp.logprobs, old, b.ref_logp, b.advantages.to(old.device), lp.mask, cfg.beta, cfg.epsilon,
                          cfg.loss_type, norm, cfg.use_bias_correction_kl)
        scale = 1.0 if cfg.loss_type == "dapo" else 1.0 / len(batches)  # the others average micro-batches
        (parts.loss * scale).backward()
        logged.append((parts.loss.item() * scale, parts.kl, parts.clip_ratio))
    if cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.max_grad_norm)
    optimizer.step()
    loss, kl, clip = zip(*logged)
    return {"loss": float(np.sum(loss)), "kl": float(np.mean(kl)), "clip_ratio": float(np.mean(clip))}


def batch_stats(batches: list[Batch], cfg: GRPOConfig) -> dict:
    """TRL's reward logs of one step: reward, reward_std, rewards/<fn>/mean, frac_reward_zero_std, invalid rate.

    Means and stds leave NaN (unscored) rewards out, as TRL's nanmean and nanstd.
    """
    rewards = torch.cat([b.rewards for b in batches])
    stats = {"reward": float(nanmean(rewards)), "reward_std": float(nanstd(rewards)) if len(rewards) > 1 else 0.0,
             "frac_reward_zero_std": float(np.mean([zero_std_fraction(b.rewards, cfg.num_generations)
                                                    for b in batches]))}
    for name in batches[0].per_func:
        stats[f"rewards/{name}/mean"] = float(nanmean(torch.cat([b.per_func[name] for b in batches])))
    return stats


def train_step(bundle, examples, trie, reward_funcs, cfg: GRPOConfig, step: int, optimizer, generator, frozen) -> dict:
    """One generation round: sample + score the micro-batches, then `num_iterations` updates on them."""
    micro_rows = []
    for a in range(cfg.gradient_accumulation_steps):
        picked = sft.batch_indices(len(examples), cfg.prompts_per_batch, cfg.seed,
                                   step * cfg.gradient_accumulation_steps + a)
        micro_rows.append([examples[i] for i in picked])
    state = TrainerState(step * cfg.num_iterations, cfg.max_steps * cfg.num_iterations)
    batches = generation_batch(bundle, micro_rows, trie, reward_funcs, cfg, generator, frozen, state)
    updates = [update(bundle, batches, trie, cfg, optimizer) for _ in range(cfg.num_iterations)]
    return {**batch_stats(batches, cfg), **{k: float(np.mean([u[k] for u in updates])) for k in updates[0]}}


@dataclasses.dataclass
class GRPOResult:
    """What a GRPO run did: one history row per `log_every` steps (TRL's metric names), timing."""

    history: pd.DataFrame  # step, loss, reward, reward_std, rewards/<fn>/mean, frac_reward_zero_std, kl, ...
    steps: int
    seconds: float
    seconds_per_step: float


def train(bundle: ModelBundle, examples: Sequence[dict], reward_funcs: Sequence, cfg: GRPOConfig, trie: SIDTrie,
          progress: bool = True) -> GRPOResult:
    """Train `bundle.model` in place with GRPO on TRL-style rows ({"prompt", reward columns...})."""
    started = time.perf_counter()
    if not examples or not reward_funcs:
        raise ValueError(f"grpo.train: {len(examples)} examples and {len(reward_funcs)} reward functions; need both")
    if cfg.reward_weights is not None and len(cfg.reward_weights) != len(reward_funcs):
        raise ValueError(f"GRPOConfig.reward_weights has {len(cfg.reward_weights)} weights for "
                         f"{len(reward_funcs)} reward functions; give one each")
    optimizer = torch.optim.AdamW(list(sft.trainable(bundle.model).values()), lr=cfg.learning_rate, weight_decay=0.0)
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
    examples, rows, pending = list(examples), [], []
    with seeded(cfg.seed), reference_model(bundle, cfg) as frozen:
        for step in tqdm(range(cfg.max_steps), disable=not progress, desc="grpo"):
            pending.append(train_step(bundle, examples, trie, reward_funcs, cfg, step, optimizer, generator,
                                      frozen))
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps:
                rows.append({"step": step + 1, **pd.DataFrame(pending).mean().to_dict()})
                pending = []
    seconds = time.perf_counter() - started
    return GRPOResult(pd.DataFrame(rows), cfg.max_steps, seconds, seconds / cfg.max_steps)
