"""The headline of notebook 06 over several seeds: the whole chain (notebooks 01-06) once per seed, each in its
own run folder, then the mean and spread of what issue 11's targets read (README "Headline results").

Each seed runs `python -m conrec_lib run --profile PROFILE --run-dir RUN_ROOT/<PROFILE>-seed<N> -p SEED <N>`: a new
simulated world, new SIDs and new models, the same defaults otherwise. `--world paper` (or `misleading`; simulate.WORLDS)
runs the same chain in another simulated world (`-p WORLD <name>`, run folders `<world>-<PROFILE>-seed<N>`). Collected per seed, from the run folders'
metrics.json: CoNRec's FHR@20 on all test rows, the best baseline and its FHR@20, the paired ratio and its 95%
interval, the share of the most_disliked -> oracle gap closed, the warm-up model's (notebook 04) FHR@20, the
yardsticks (most_disliked, own_negatives, oracle), CoNRec's context gain and interval, valid-SID mass and per-item
loss against uniform, the chain's wall time, and two of the paper's findings as measured in that world: notebook 05's
dose (the warm-up model's FHR@20 with 0 / 5 / 10 / 20 positives in its prompt, each change with its paired interval)
and notebook 03's relative drop from adding positives to an LC-Rec-style prompt.

    .venv/bin/python benchmarks/headline_seeds.py                  # 3 seeds x ~50 min on a 2-core CPU
    .venv/bin/python benchmarks/headline_seeds.py --profile smoke  # ~3 min per seed: checks the plumbing only
    .venv/bin/python benchmarks/headline_seeds.py --collect-only   # re-read finished run folders
    .venv/bin/python benchmarks/headline_seeds.py --world misleading --seeds 0

Results: benchmarks/results/headline_seeds_<profile>.json, or headline_seeds_<world>_<profile>.json (per seed, and
mean / std over the seeds).
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


def run_chain(profile: str, run_dir: Path, seed: int, world: str = "default") -> float:
    """Notebooks 01-06 into `run_dir` with SEED = `seed` (and WORLD = `world`); the wall time in seconds (raises if a
    notebook fails)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "conrec_lib", "run", "--profile", profile, "--run-dir", str(run_dir),
                    "-p", "SEED", str(seed), *(["-p", "WORLD", world] if world != "default" else [])],
                   cwd=ROOT, check=True)
    return round(time.perf_counter() - start, 1)


def findings_in_world(run_dir: Path) -> dict:
    """Notebook 05's positives dose and notebook 03's relative drop, from their metrics.json (None where missing)."""
    def read(stage: str) -> dict:
        path = run_dir / stage / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else {}
    dose = read("05_progressive_grpo").get("positives_dose")
    bias = read("03_positivity_bias")
    drop = bias.get("relative_drop", {}).get("FHR@20")
    return {"positives_dose": [{k: r.get(k) for k in ("positives", "FHR@20", "fhr_vs_none_ci95", "n_rows")}
                               for r in dose] if dose else None,
            "lcrec_positives_fhr_drop": drop, "lcrec_positives_fhr_drop_ci95":
                bias.get("relative_drop_ci95", {}).get("FHR@20") if drop is not None else None}


def run_name(profile: str, seed: int, world: str) -> str:
    """A seed's run folder name: `tutorial-seed0`, or `misleading-tutorial-seed0` in another world."""
    return f"{profile}-seed{seed}" if world == "default" else f"{world}-{profile}-seed{seed}"


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
    return out | findings_in_world(run_dir)


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
    parser.add_argument("--world", default="default", help="simulated world (simulate.WORLDS): default, paper, ...")
    args = parser.parse_args(argv)
    from conrec_lib.data import simulate  # the world's name is checked before a chain starts
    if args.world not in simulate.WORLDS:
        parser.error(f"--world {args.world!r} is not known; use one of {list(simulate.WORLDS)}")
    root = args.run_root if args.run_root.is_absolute() else ROOT / args.run_root
    per_seed = {}
    for seed in args.seeds:
        run_dir = root / run_name(args.profile, seed, args.world)
        seconds = None if args.collect_only else run_chain(args.profile, run_dir, seed, args.world)
        per_seed[str(seed)] = collect(run_dir) | {"seconds": seconds}
        print(f"seed {seed}: CoNRec {per_seed[str(seed)]['conrec_fhr']:.3f}, best baseline "
              f"{per_seed[str(seed)]['best_baseline']} {per_seed[str(seed)]['best_baseline_fhr']:.3f}", flush=True)
    result = {"profile": args.profile, "world": args.world, "seeds": args.seeds, "per_seed": per_seed,
              "summary": summary(per_seed)}
    world = "" if args.world == "default" else f"{args.world}_"
    out = args.out or RESULTS / f"headline_seeds_{world}{args.profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
