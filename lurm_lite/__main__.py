"""Command line: ``python -m lurm_lite run ...`` executes the notebook chain.

Example::

    python -m lurm_lite run --dataset synthetic --scale default --run-dir runs/demo
    python -m lurm_lite run --dataset movielens --scale tiny --run-dir runs/ml -p EPOCHS 2

A rerun skips every stage whose parameters, inputs and outputs are unchanged and says why
it runs the others (see lurm_lite.chain). One run at a time per run folder. Exit status:
0 done, 1 a notebook failed (the message names its executed copy), 2 a bad request
(unknown or mistyped -p, a run dir that is a file, a run folder in use or read-only),
reported in one line before anything runs.
"""

from __future__ import annotations

import argparse
import sys

from lurm_lite.config import SCALES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lurm_lite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute the notebook chain into a run folder")
    run.add_argument("--dataset", required=True,
                     help="'synthetic', 'movielens' or the path of a dataset folder (see data_prep)")
    run.add_argument("--scale", choices=SCALES, default="default")
    run.add_argument("--run-dir", required=True, help="run folder; created when missing")
    run.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, ...")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="a notebook parameter, as in papermill; repeatable")
    run.add_argument("--force", action="store_true", help="rerun stages whose outputs are complete")
    run.add_argument("--only", nargs="+", metavar="NN",
                     help="run only the notebooks whose names start with these prefixes, e.g. 01 02")
    readme = commands.add_parser("readme", help="rewrite README.md's results block from a run folder")
    readme.add_argument("--run-dir", required=True)
    readme.add_argument("--readme", default="README.md")
    readme.add_argument("--figure-dir", default="docs/figures")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "readme":
        from lurm_lite.report import update_readme

        print(f"updated {update_readme(args.run_dir, args.readme, args.figure_dir)}")
        return 0
    from lurm_lite.chain import ChainError, StageFailed, parse_value, run_chain

    extra = {name: parse_value(value) for name, value in args.parameter}
    try:
        run_chain(args.dataset, args.scale, args.run_dir, device=args.device, seed=args.seed,
                  extra=extra, force=args.force, only=args.only)
    except ChainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StageFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
