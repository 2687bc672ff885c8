"""The tuning effort the trained baselines get (issue 11, item 5): SASRec and TIGER over a small grid of sizes, epochs
and learning rates, each scored like notebook 06 scores them (all test rows of a run folder, the one candidate rule,
`recommend.score`), beside the default each notebook uses.

    .venv/bin/python benchmarks/baseline_tuning.py                           # runs/tutorial, ~5 min on 2 cores
    .venv/bin/python benchmarks/baseline_tuning.py --run-dir runs/other --max-rows 300

Reads a run folder where notebooks 01 and 02 have finished. Results: benchmarks/results/baseline_tuning.json (one row
per setting: the changed fields, FHR@20, HR@20, CandAcc, training seconds). The grid is scored on the test rows, as
the LLM levers in the README were, so the best row is an optimistic choice for both.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from conrec_lib.baselines import sasrec, tiger  # noqa: E402
from conrec_lib.data import dataprep  # noqa: E402
from conrec_lib.data.histories import sample_positions, split_rows  # noqa: E402
from conrec_lib.llm import recommend  # noqa: E402
from conrec_lib.runs import Run  # noqa: E402
from conrec_lib.sids import item_tokenizer  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "baseline_tuning.json"
# the grid is around each model's config as it was when measured: SASRec's dropout was 0.2 then (the row
# {"dropout": 0.5} is today's default, chosen from this grid); TIGER's default is unchanged
BASE = {"sasrec": {"dropout": 0.2}, "tiger": {}}
# each entry: the fields changed from BASE applied to the model's default config
GRID = {
    "sasrec": [{}, {"epochs": 3}, {"epochs": 5}, {"epochs": 20}, {"lr": 3e-3}, {"dropout": 0.5},
               {"dim": 64, "num_layers": 2}, {"max_len": 50}, {"dim": 64, "num_layers": 2, "epochs": 30, "lr": 3e-3}],
    "tiger": [{}, {"epochs": 5}, {"epochs": 20}, {"lr": 1e-3, "epochs": 20}, {"num_layers": 2, "epochs": 20},
              {"max_items": 20}],
}
SMALL_GRID = {"sasrec": [{}, {"epochs": 1}], "tiger": [{}, {"epochs": 1}]}
CONFIGS = {"sasrec": (sasrec.SASRecConfig, sasrec.SASRecBaseline), "tiger": (tiger.TIGERConfig, tiger.TIGERBaseline)}


def score_setting(model: str, changes: dict, prepared, tokenized, rows) -> dict:
    """Fit one baseline with `BASE` and `changes` applied to its default config and score it on `rows`."""
    config, baseline = CONFIGS[model]
    cfg = dataclasses.replace(config(), **(BASE[model] | changes))
    started = time.perf_counter()
    fitted = baseline.fit(prepared, tokenized, cfg)
    seconds = time.perf_counter() - started
    m = recommend.score(fitted.recommend(rows), rows, prepared, tokenized)
    return {"model": model, "changes": changes, "FHR@20": m["FHR@20"], "HR@20": m["HR@20"], "CandAcc": m["CandAcc"],
            "fit_seconds": round(seconds, 1)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/tutorial"))
    parser.add_argument("--max-rows", type=int, default=0, help="test rows scored (0: all, as notebook 06)")
    parser.add_argument("--small", action="store_true", help="a two-setting grid per model (checks the plumbing)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    run = Run.at(args.run_dir if args.run_dir.is_absolute() else ROOT / args.run_dir)
    prepared, tokenized = dataprep.load_prepared(run), item_tokenizer.load_sids(run)
    frame = split_rows(prepared, "test")
    rows = frame.iloc[sample_positions(len(frame), args.max_rows or None, 0)].reset_index(drop=True)
    found = []
    for model, settings in (SMALL_GRID if args.small else GRID).items():
        for changes in settings:
            found.append(score_setting(model, changes, prepared, tokenized, rows))
            r = found[-1]
            print(f"{model:7} {json.dumps(changes):60} FHR@20 {r['FHR@20']:.3f}  ({r['fit_seconds']} s)", flush=True)
    best = {m: max((r for r in found if r["model"] == m), key=lambda r: r["FHR@20"]) for m in CONFIGS}
    result = {"run_dir": str(args.run_dir), "n_rows": len(rows), "base": BASE, "settings": found, "best": best}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
