"""The headline of notebook 06 over several seeds: the whole chain (notebooks 01-06) once per seed, each in its
own run folder, then the mean and spread of what issue 11's targets read (README "Headline results").

Each seed runs `python -m conrec_lib run --profile PROFILE --run-dir RUN_ROOT/seed<N> -p SEED <N>`: a new simulated
world, new SIDs and new models, the same defaults otherwise. Collected per seed, from the run folders'
metrics.json: CoNRec's FHR@20 on all test rows, the best baseline and its FHR@20, the paired ratio and its 95%
interval, the share of the most_disliked -> oracle gap closed, the warm-up model's (notebook 04) FHR@20, the
yardsticks (most_disliked, own_negatives, oracle), CoNRec's context gain and interval, valid-SID mass and per-item
loss against uniform, and the chain's wall time.

    .venv/bin/python benchmarks/headline_seeds.py                  # 3 seeds x ~50 min on a 2-core CPU
    .venv/bin/python benchmarks/headline_seeds.py --profile smoke  # ~3 min per seed: checks the plumbing only
    .venv/bin/python benchmarks/headline_seeds.py --collect-only   # re-read finished run folders

Results: benchmarks/results/headline_seeds_<profile>.json (per seed, and mean / std over the seeds).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[1]
RESULTS = Path(__file__).parent / "results"
TUTORIAL_ROWS = "simulator (tutorial run)"  # notebook 06's part-1 results key
SUMMARISED = ("conrec_fhr", "best_baseline_fhr", "ratio", "gap_closed", "warmup_fhr", "most_disliked_fhr",
              "own_negatives_fhr", "oracle_fhr", "context_gain", "valid_sid_mass", "nll_per_item", "seconds")


def run_chain(profile: str, run_dir: Path, seed: int) -> float:
    """Notebooks 01-06 into `run_dir` with SEED = `seed`; the wall time in seconds (raises if a notebook fails)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "conrec_lib", "run", "--profile", profile, "--run-dir", str(run_dir),
                    "-p", "SEED", str(seed)], cwd=ROOT, check=True)
    return round(time.perf_counter() - start, 1)


def collect(run_dir: Path) -> dict:
    """One seed's numbers from its run folder (notebook 06's headline and part-1 table)."""
    path = run_dir / "06_evaluation" / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: notebook 06 has not finished in {run_dir}; run this script without "
                                "--collect-only first")
    m = json.loads(path.read_text())
    head, rows = m["headline"], m["results"][TUTORIAL_ROWS]
    keys = ("n_rows", "best_baseline", "best_baseline_fhr", "conrec_fhr", "ratio", "ratio_ci95", "difference_ci95",
            "most_disliked_fhr", "oracle_fhr", "gap_closed", "own_negatives_fhr", "context_gain",
            "context_gain_ci95", "valid_sid_mass", "nll_per_item", "nll_uniform")
    out = {k: head.get(k) for k in keys}
    out["warmup_fhr"] = rows.get("warm-up (04)", {}).get("FHR@20")
    return out


def summary(per_seed: dict[str, dict]) -> dict:
    """Mean and standard deviation over the seeds of every number in SUMMARISED (None where a seed lacks it)."""
    out = {}
    for key in SUMMARISED:
        values = [s[key] for s in per_seed.values() if s.get(key) is not None]
        out[key] = ({"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
                    if len(values) == len(per_seed) else None)
    out["beats_best_baseline"] = sum(s["ratio_ci95"][0] > 1 for s in per_seed.values())
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--profile", choices=("tutorial", "smoke"), default="tutorial")
    parser.add_argument("--run-root", type=Path, default=Path("runs/bench"))
    parser.add_argument("--collect-only", action="store_true", help="read finished run folders, run nothing")
    parser.add_argument("--out", type=Path, default=None, help="results file (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    root = args.run_root if args.run_root.is_absolute() else ROOT / args.run_root
    per_seed = {}
    for seed in args.seeds:
        run_dir = root / f"{args.profile}-seed{seed}"
        seconds = None if args.collect_only else run_chain(args.profile, run_dir, seed)
        per_seed[str(seed)] = collect(run_dir) | {"seconds": seconds}
        print(f"seed {seed}: CoNRec {per_seed[str(seed)]['conrec_fhr']:.3f}, best baseline "
              f"{per_seed[str(seed)]['best_baseline']} {per_seed[str(seed)]['best_baseline_fhr']:.3f}", flush=True)
    result = {"profile": args.profile, "seeds": args.seeds, "per_seed": per_seed, "summary": summary(per_seed)}
    out = args.out or RESULTS / f"headline_seeds_{args.profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
