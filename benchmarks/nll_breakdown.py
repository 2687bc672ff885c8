"""Where notebook 04's warm-up model pays its per-item loss (issue 11: "per-item NLL below uniform" is missed).

The diagnostics report one number, the mean of -log p(next negative's SID | prompt) over the test rows, against
log(n_items), a uniform guess. This script splits that mean on all test rows of a finished run:

- test targets that were **never a negative in the training period** (a generative model has had no example to
  give them mass; many were released late) against the rest;
- the same split for a popularity prior over the training negatives (add-one smoothed: every item keeps some mass);
- the model's loss on a sample of its own **training** examples, early and late windows, to tell memorisation from
  a shift between the training windows and the test window, beside the popularity prior's on the same examples;
- a **calibration** check: the softmax temperature that minimises the loss on the latest training windows (a grid),
  and the test loss at it. A best temperature near 1 says the loss is not over-confidence but missing knowledge.

    .venv/bin/python benchmarks/nll_breakdown.py                    # runs/tutorial, ~1 min on a 2-core CPU
    .venv/bin/python benchmarks/nll_breakdown.py --run-dir runs/bench/tutorial-seed1

Results: benchmarks/results/nll_breakdown.json (for the default run folder).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results" / "nll_breakdown.json"
N_TRAIN_SAMPLE = 600  # training examples whose loss is measured
TEMPERATURES = (0.8, 0.9, 1.0, 1.1, 1.2, 1.5, 2.0)  # the calibration grid


def popularity_nll(prepared, targets: np.ndarray, before_ts: int) -> np.ndarray:
    """-log p(target) under the add-one smoothed share of each item among the negatives logged before `before_ts`."""
    inter = prepared.dataset.interactions
    counts = inter.loc[(inter["feedback"] == "negative") & (inter["timestamp"] < before_ts), "item_id"].value_counts()
    mass = np.ones(prepared.dataset.n_items)
    mass[counts.index.to_numpy()] += counts.to_numpy()
    return -np.log(mass[targets] / mass.sum())


def breakdown(nll: np.ndarray, rows: pd.DataFrame, prepared) -> dict:
    """Split the per-row loss `nll` of the test `rows` (their next negatives) by whether the target was ever a
    negative before the earliest test cutoff, beside a popularity prior's loss on the same rows."""
    targets = rows["next_negative"].astype(int).to_numpy()
    cutoff = int(rows["cutoff_ts"].min())
    inter = prepared.dataset.interactions
    seen_items = inter.loc[(inter["feedback"] == "negative") & (inter["timestamp"] < cutoff), "item_id"].unique()
    seen = np.isin(targets, seen_items)
    prior = popularity_nll(prepared, targets, cutoff)

    def mean(values: np.ndarray, where: np.ndarray):
        return round(float(values[where].mean()), 3) if where.any() else None

    everyone = np.ones(len(targets), bool)
    return {"n_rows": len(targets), "uniform": round(float(np.log(prepared.dataset.n_items)), 3),
            "model": mean(nll, everyone), "popularity_prior": mean(prior, everyone),
            "share_never_a_training_negative": round(float(1 - seen.mean()), 4),
            "model_never_a_training_negative": mean(nll, ~seen), "model_seen": mean(nll, seen),
            "popularity_prior_seen": mean(prior, seen),
            # what the unseen targets add to the mean, over what they would cost at the seen targets' mean loss
            "unseen_targets_add": round(float((nll[~seen] - nll[seen].mean()).sum() / len(nll)), 3)
            if (~seen).any() and seen.any() else None,
            "model_quantiles_10_50_90": [round(float(q), 2) for q in np.quantile(nll, [0.1, 0.5, 0.9])]}


def calibration(bundle, held_out, examples, rows, table) -> dict:
    """The loss at every temperature of TEMPERATURES on the `held_out` training examples (the latest windows, the
    nearest the test window) and on the test rows; the temperature the held-out examples pick, and its test loss."""
    from conrec_lib.llm import diagnostics

    prompts, sids = [e.prompt for e in examples], [table.sid_of(int(i)) for i in rows["next_negative"]]
    held = {t: float(diagnostics.item_nll(bundle, [e.prompt for e in held_out], [e.completion for e in held_out],
                                          temperature=t).mean()) for t in TEMPERATURES}
    test = {t: float(diagnostics.item_nll(bundle, prompts, sids, temperature=t).mean()) for t in TEMPERATURES}
    best = min(held, key=held.get)
    return {"n_held_out": len(held_out), "held_out_by_temperature": {str(t): round(v, 3) for t, v in held.items()},
            "test_by_temperature": {str(t): round(v, 3) for t, v in test.items()},
            "best_temperature": best, "test_at_best_temperature": round(test[best], 3)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/tutorial")
    parser.add_argument("--out", type=Path, default=None, help="results file (default: benchmarks/results/... for "
                                                                 "runs/tutorial, else print only)")
    args = parser.parse_args(argv)
    import torch

    from conrec_lib.context import context_discerning as cd
    from conrec_lib.data import dataprep
    from conrec_lib.llm import diagnostics, recommend, tasks
    from conrec_lib.runs import Run
    from conrec_lib.sids import item_tokenizer

    torch.set_num_threads(1)  # the tiny model: one thread is the fastest (ContextConfig.num_threads)
    run = Run.at(args.run_dir)
    cfg = cd.load_config(run)
    prepared, tokenized = dataprep.load_prepared(run), item_tokenizer.load_sids(run)
    table = tokenized.sids.table
    bundle = cd.load_bundle(run)
    examples = recommend.eval_examples(prepared, table, cfg.rec_prompt(), None, cfg.seed)
    rows = tasks.example_rows(prepared, examples, "test")
    nll = diagnostics.item_nll(bundle, [e.prompt for e in examples], [table.sid_of(int(i)) for i in
                                                                       rows["next_negative"]])
    result = {"run_dir": args.run_dir, "test": breakdown(nll, rows, prepared)}
    warmup = cd.build_tasks(cfg, prepared, table).warmup
    sample = [warmup[int(i)] for i in np.random.default_rng(cfg.seed).choice(len(warmup), N_TRAIN_SAMPLE, False)]
    train_nll = diagnostics.item_nll(bundle, [e.prompt for e in sample], [e.completion for e in sample])
    cut = np.array([e.cutoff_ts for e in sample])
    late = cut >= np.quantile(cut, 0.75)
    prior = np.concatenate([popularity_nll(prepared, np.array([e.target_item]), e.cutoff_ts) for e in sample])
    result["train"] = {"n_examples": N_TRAIN_SAMPLE, "of": len(warmup), "model": round(float(train_nll.mean()), 3),
                       "latest_quarter_of_windows": round(float(train_nll[late].mean()), 3),
                       "earlier_windows": round(float(train_nll[~late].mean()), 3),
                       "popularity_prior": round(float(prior.mean()), 3)}
    result["calibration"] = calibration(bundle, [e for e, is_late in zip(sample, late) if is_late], examples, rows,
                                        table)
    print(json.dumps(result, indent=1))
    out = args.out or (RESULTS if args.run_dir == "runs/tutorial" else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
