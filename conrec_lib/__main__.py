"""Command line: `python -m conrec_lib run --profile tutorial|smoke --run-dir runs/tutorial`."""
from __future__ import annotations

import argparse
import sys
import time

from conrec_lib import tutorial


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conrec_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebooks in order with papermill")
    run.add_argument("--profile", default="tutorial", choices=sorted(tutorial.PROFILES))
    run.add_argument("--run-dir", default="runs/tutorial", help="where stages and executed notebooks go")
    run.add_argument("--only", nargs="*", help="notebook stems to run, e.g. 01_data_exploration")
    sub.add_parser("list", help="list the notebooks and their parameters")
    refresh = sub.add_parser("refresh", help="re-execute the committed notebooks in place at their defaults")
    refresh.add_argument("--only", nargs="*", help="notebook stems to refresh")
    args = parser.parse_args(argv)
    if args.command == "list":
        for path in tutorial.notebooks():
            print(path.name, tutorial.notebook_parameters(path))
        return 0
    start = time.perf_counter()
    if args.command == "refresh":
        tutorial.refresh(only=args.only)
        return 0
    tutorial.run_all(args.profile, args.run_dir, only=args.only)
    print(f"all notebooks done in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
