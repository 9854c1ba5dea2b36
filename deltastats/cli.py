"""Command line: ``deltastats run [CONFIG]`` (also ``python -m deltastats``)."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

EXAMPLES = """examples:
  deltastats run                      # built-in default experiment → results/default/
  deltastats run my_experiment.toml   # a flat TOML of Experiment fields
  deltastats run --out /tmp/res --quiet
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deltastats",
        description="Monte Carlo statistics of the backpropagated error δ = ∂L/∂z.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run one experiment (default: the built-in one)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("config", nargs="?", help="TOML file of Experiment fields (optional)")
    run.add_argument("--out", default="results", help="parent results folder (default: results)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import Experiment
    from .runner import run_experiment

    exp = Experiment() if args.config is None else Experiment.from_toml(args.config)
    res = run_experiment(exp, args.out, progress=not args.quiet)
    wide = res.table.pivot_table(
        index=["layer", "width"], columns="statistic", values=["estimate", "std_error"]
    )
    wide.columns = [f"{s} ({'se' if v == 'std_error' else 'est'})" for v, s in wide.columns]
    with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 120):
        print(wide.reset_index().to_string(index=False))
    print(f"\nwrote {len(res.files)} files to {res.out_dir}/")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``deltastats`` command."""
    args = _parser().parse_args(argv)
    try:
        return {"run": _cmd_run}[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        print(f"deltastats: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
