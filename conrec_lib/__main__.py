"""Command line: run the notebooks in order with papermill, list them, or refresh the committed ones.

    python -m conrec_lib run --profile tutorial --run-dir runs/tutorial
    python -m conrec_lib run --only 03 04 -p SFT_STEPS 10 -p MODEL smollm2-135m
    python -m conrec_lib list
"""
from __future__ import annotations

import argparse
import sys
import time

from conrec_lib import tutorial


def parser() -> argparse.ArgumentParser:
    """The `run`, `list` and `refresh` sub-commands."""
    top = argparse.ArgumentParser(prog="python -m conrec_lib", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebooks in order with papermill")
    run.add_argument("--profile", default="tutorial", choices=sorted(tutorial.PROFILES))
    run.add_argument("--run-dir", default="runs/tutorial", help="where stages and executed notebooks go")
    run.add_argument("--only", nargs="*", help="notebooks to run, by stem or number, e.g. 01_data_exploration or 03")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="set a parameter in every selected notebook that defines it, e.g. -p SFT_STEPS 10 "
                          "(converted to the type of the notebook's default)")
    sub.add_parser("list", help="list the notebooks and their parameters")
    refresh = sub.add_parser("refresh", help="re-execute the committed notebooks in place at their defaults")
    refresh.add_argument("--only", nargs="*", help="notebooks to refresh, by stem or number")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "list":
        for path in tutorial.notebooks():
            print(path.name, tutorial.notebook_parameters(path))
        return 0
    start = time.perf_counter()
    if args.command == "refresh":
        tutorial.refresh(only=args.only)
        return 0
    try:
        extra = tutorial.cli_overrides(args.parameter, tutorial.select(args.only))
    except ValueError as err:
        print(f"python -m conrec_lib run: {err}", file=sys.stderr)
        return 2
    tutorial.run_all(args.profile, args.run_dir, only=args.only, extra=extra)
    print(f"all notebooks done in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
