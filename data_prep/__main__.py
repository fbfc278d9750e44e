"""Command line: ``python -m data_prep {synthetic,movielens,amazon,tabular,validate} ...``.

Every preparing subcommand writes a contract folder (docs/architecture.md, section 1) and
prints its summary; ``validate`` prints the summary of an existing folder or, for a broken
one, the error on stderr with exit code 1.
"""

from __future__ import annotations

import argparse
import sys
import time

from data_prep.schema import DatasetError, format_summary, summarize, validate


def _separator(text: str) -> str:
    """``--sep``: one character; ``tab`` and ``\\t`` (as typed in a shell) mean a tab."""
    sep = "\t" if text in ("tab", "\\t") else text
    if len(sep) != 1:
        raise argparse.ArgumentTypeError(f"expected one character such as ';' or 'tab', got {text!r}")
    return sep


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synthetic", help="generate the synthetic dataset with ground truth")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--scale", choices=("tiny", "default", "paper"), default="default")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("movielens", help="MovieLens-100k from the recbole 1.2.1 wheel on PyPI")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--cache", default=None, help="download cache (default $LURM_LITE_CACHE or ~/.cache/lurm_lite)")

    p = sub.add_parser("amazon", help="Amazon review data raw files, 2014, 2018 or 2023 release (reviews + meta)")
    p.add_argument("--reviews", nargs="+", required=True, help="<Category>.json(.gz) or <Category>_5.json(.gz) files")
    p.add_argument("--meta", nargs="+", required=True, help="meta_<Category>.json(.gz) files")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--history-end", default=None,
                   help="end of the history window (YYYY-MM-DD, exclusive; default: 10 months before --label-end, "
                        "2018-01-01 on the 2018 release)")
    p.add_argument("--label-end", default=None,
                   help="end of the label window (YYYY-MM-DD, exclusive; default: the month after the last review)")
    p.add_argument("--target-category", nargs="+", default=None,
                   help="categories of the future_<cat> tasks (default: the 4 most frequent)")

    p = sub.add_parser("tabular", help="bring-your-own CSV/Parquet behaviour log")
    p.add_argument("--behaviors", required=True, help="behaviour log (.csv, .tsv, .csv.gz or .parquet)")
    p.add_argument("--items", default=None, help="optional items table")
    p.add_argument("--users", default=None, help="optional users table; its other columns become profile tasks")
    p.add_argument("--user-col", required=True)
    p.add_argument("--item-col", required=True)
    p.add_argument("--time-col", required=True,
                   help="unix s/ms/us/ns (by magnitude), yyyymmdd, ISO dates/datetimes or a Parquet timestamp")
    p.add_argument("--title-col", default=None, help="item title column (items table, else behaviour log)")
    p.add_argument("--category-col", default=None,
                   help="item category column (items table, else behaviour log); may hold several values")
    p.add_argument("--category-sep", default="|",
                   help="separator of several values in one category cell (default '|', as in 'Action|Comedy'); "
                        "JSON/Python list literals are read as lists")
    p.add_argument("--sep", default=None, type=_separator,
                   help="CSV separator of every input, e.g. ',', ';', 'tab' or '\\t' (default: sniffed among "
                        "comma, tab, semicolon and pipe)")
    p.add_argument("--history-end", default=None, help="YYYY-MM-DD (default: leave the last 10%% of the span)")
    p.add_argument("--label-end", default=None, help="YYYY-MM-DD (default: the day after the last behaviour)")
    p.add_argument("--out", required=True, help="output dataset folder")

    p = sub.add_parser("validate", help="check a dataset folder against the contract")
    p.add_argument("dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        if args.command == "validate":
            print(format_summary(summarize(validate(args.dir))))
            return 0
        if args.command == "synthetic":
            from data_prep.synthetic import generate

            generate(args.out, scale=args.scale, seed=args.seed, quiet=False)
        elif args.command == "movielens":
            from data_prep.movielens import prepare

            prepare(args.out, cache=args.cache, quiet=False)
        elif args.command == "amazon":
            from data_prep.amazon import prepare

            prepare(args.reviews, args.meta, args.out, history_end=args.history_end, label_end=args.label_end,
                    target_categories=args.target_category, quiet=False)
        elif args.command == "tabular":
            from data_prep.tabular import prepare

            prepare(args.behaviors, args.out, items=args.items, users=args.users, user_col=args.user_col,
                    item_col=args.item_col, time_col=args.time_col, title_col=args.title_col,
                    category_col=args.category_col, history_end=args.history_end, label_end=args.label_end,
                    sep=args.sep, category_sep=args.category_sep, quiet=False)
    except (DatasetError, ValueError, OSError) as exc:  # OSError: missing files, no network to PyPI
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
