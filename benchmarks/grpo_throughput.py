"""GRPO step throughput, ours vs TRL's GRPOTrainer, and rollouts with vs without a shared prompt KV cache.

A script, not a test: `python benchmarks/grpo_throughput.py [--steps 5 --prompts 8 --generations 8]`.
Both trainers get the same tiny Llama (the tutorial's `tiny` ModelConfig), the same prompts (~`--prompt-items`
SIDs of history each), G, number of prompts per step, beta, and a trivial reward, so the numbers compare the
GRPO machinery: sampling, scoring, reference pass, loss and update. Differences that remain: our sampling is
constrained to valid SIDs (a trie mask per token), TRL's `generate` is not; we run the prompt once per group
(shared KV cache), TRL runs each of the G copies. Step times are medians over `--steps` steps after one warm-up
step; each of our steps is a `grpo.train` call of one step, so it also pays for copying the reference model and
building the optimizer (TRL does both once): our numbers are pessimistic. The second part times `decoding.sample` on B prompts x G samples sharing each prompt's KV cache, against
B * G copies of the prompts with one sample each. Results go to benchmarks/results/grpo_throughput.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from conrec_lib.llm import decoding
from conrec_lib.rl import grpo
from conrec_lib.llm.model import ModelConfig, load_model
from conrec_lib.llm.prompts import PromptConfig, build_prompt
from conrec_lib.sids.semantic_ids import SIDTable

RESULTS = Path(__file__).resolve().parent / "results" / "grpo_throughput.json"


def setup(n_items: int, prompt_items: int, n_prompts: int, seed: int = 0):
    """A random SID table, the tiny model with its SID tokens, and history prompts of random SIDs."""
    rng = np.random.default_rng(seed)
    codes = np.unique(rng.integers(0, 32, size=(n_items, 3)), axis=0)
    table = SIDTable(np.c_[codes, np.zeros(len(codes), dtype=np.int64)], codebook_size=32, levels=3)
    prompts = [build_prompt([table.strings[i] for i in rng.integers(0, len(codes), prompt_items)], [],
                            PromptConfig(max_negatives=prompt_items)) for _ in range(n_prompts)]
    bundle = load_model(ModelConfig(device="cpu", lora=False, sid_init="mean"), table.vocabulary(), prompts)
    return table, prompts, bundle


def length_reward(prompts, completions, **_):
    """A reward that costs nothing: varies with the completion, so groups have an advantage."""
    return [float(len(c) % 7) / 7 for c in completions]


def time_ours(bundle, table, prompts, args) -> list[float]:
    trie = decoding.SIDTrie.from_sids(bundle.tokenizer, table.strings)
    cfg = grpo.GRPOConfig(num_generations=args.generations, prompts_per_batch=args.prompts, beta=0.04,
                          max_steps=1, learning_rate=1e-5)
    rows = [{"prompt": p} for p in prompts]
    times = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        grpo.train(bundle, rows, [length_reward], cfg, trie, progress=False)
        times.append(time.perf_counter() - start)
    return times[1:]


def time_trl(bundle, prompts, args) -> list[float]:
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self):
            self.ticks = []

        def on_step_end(self, *_, **__):
            self.ticks.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        bundle.model.save_pretrained(tmp + "/model")  # TRL builds the reference from a path when beta > 0
        cfg = trl.GRPOConfig(output_dir=tmp + "/out", use_cpu=True, report_to=[], num_generations=args.generations,
                             per_device_train_batch_size=args.prompts * args.generations, beta=0.04,
                             max_completion_length=4, max_steps=args.steps + 1, learning_rate=1e-5,
                             logging_steps=10_000, save_strategy="no", temperature=1.0, disable_tqdm=True)
        clock = Clock()
        trainer = trl.GRPOTrainer(model=tmp + "/model", reward_funcs=length_reward, args=cfg,
                                  train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
                                  processing_class=bundle.tokenizer, callbacks=[clock])
        start = time.perf_counter()
        trainer.train()
    ticks = [start] + clock.ticks
    return [b - a for a, b in zip(ticks, ticks[1:])][1:]


def time_rollouts(bundle, table, prompts, args) -> dict:
    trie = decoding.SIDTrie.from_sids(bundle.tokenizer, table.strings)
    batch, g = prompts[:args.prompts], args.generations
    shared, copies = [], []
    for rep in range(args.steps):
        gen = torch.Generator().manual_seed(rep)
        start = time.perf_counter()
        decoding.sample(bundle.model, bundle.tokenizer, batch, trie, g, 1.0, gen)
        shared.append(time.perf_counter() - start)
        start = time.perf_counter()
        decoding.sample(bundle.model, bundle.tokenizer, [p for p in batch for _ in range(g)], trie, 1, 1.0, gen)
        copies.append(time.perf_counter() - start)
    n = len(batch) * g
    return {"rollouts_per_s_shared_kv": n / statistics.median(shared),
            "rollouts_per_s_reencoded": n / statistics.median(copies),
            "speedup": statistics.median(copies) / statistics.median(shared)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--prompt-items", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table, prompts, bundle = setup(2000, args.prompt_items, 64)
    ours = time_ours(copy.deepcopy(bundle), table, prompts, args)
    theirs = time_trl(copy.deepcopy(bundle), prompts, args)
    step_ours, step_trl = statistics.median(ours), statistics.median(theirs)
    n_rollouts = args.prompts * args.generations
    results = {
        "settings": vars(args) | {"torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                                  "note": "CPU shared with other jobs: absolute numbers are inflated"},
        "ours": {"seconds_per_step": step_ours, "prompts_per_s": args.prompts / step_ours,
                 "rollouts_per_s": n_rollouts / step_ours},
        "trl": {"seconds_per_step": step_trl, "prompts_per_s": args.prompts / step_trl,
                "rollouts_per_s": n_rollouts / step_trl},
        "speedup_ours_over_trl": step_trl / step_ours,
        "rollout_generation": time_rollouts(bundle, table, prompts, args),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
