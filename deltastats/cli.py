"""Command line: ``deltastats run [CONFIG]`` (also ``python -m deltastats``)."""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

EXAMPLES = """examples:
  deltastats run                      # built-in default experiment → results/default/
  deltastats run my_experiment.toml   # a flat TOML of Experiment fields
  deltastats run --out /tmp/res --quiet
  deltastats sweep experiments/order_chaos.toml          # on every core
  deltastats sweep experiments/order_chaos.toml --jobs 1 # on one core
  deltastats sweep experiments/order_chaos.toml --quick --out /tmp/oc --resume
  deltastats report results/order_chaos
  deltastats list
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deltastats",
        description="Monte Carlo statistics of the backpropagated error δ = ∂L/∂z.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    common = dict(epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    run = sub.add_parser("run", help="run one experiment (default: the built-in one)", **common)
    run.add_argument("config", nargs="?", help="TOML file of Experiment fields (optional)")
    run.add_argument("--out", default="results", help="parent results folder (default: results)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    sw = sub.add_parser("sweep", help="run a parameter sweep from a TOML config", **common)
    sw.add_argument("config", help="sweep TOML (see deltastats.sweeps)")
    sw.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="CPU cores to use (default: all): up to this many worker processes, one point "
        "each, sharing the cores (single-threaded when there are at least as many points); "
        "--jobs 1 runs on one core",
    )
    sw.add_argument("--resume", action="store_true", help="skip points already finished")
    sw.add_argument("--overwrite", action="store_true", help="discard finished points")
    sw.add_argument("--out", default=None, help="results folder (default results/<name>/)")
    sw.add_argument("--quick", action="store_true", help="apply the config's [quick] sizes")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.add_argument(
        "--max-points",
        type=int,
        default=None,
        help="run sweeps larger than the default limit of 10000 points (up to this many)",
    )
    sw.add_argument(
        "--scheduler",
        default=None,
        help="Dask scheduler address (tcp://HOST:PORT) to run the points on a cluster",
    )
    rep = sub.add_parser("report", help="write report.md/.html for a results folder", **common)
    rep.add_argument("results_dir", help="folder written by `deltastats run` or `sweep`")
    sub.add_parser("list", help="list activations, inits, losses, input/target laws")
    return p


def _cmd_run(args: argparse.Namespace) -> int:
    from .workflow.config import Experiment
    from .workflow.runner import print_table, run_experiment

    exp = Experiment() if args.config is None else Experiment.from_toml(args.config)
    res = run_experiment(exp, args.out, progress=not args.quiet)
    print_table(res.table)
    if res.out_dir is not None:
        print(f"\nwrote {len(res.files)} files to {res.out_dir}/ (open report.html)")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .workflow.sweeps import MAX_POINTS, SweepInterrupted, run_sweep

    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite exclude each other; pass one")
    try:
        res = run_sweep(
            args.config,
            out=args.out,
            jobs=args.jobs,
            resume=args.resume,
            overwrite=args.overwrite,
            quick=args.quick,
            progress=not args.quiet,
            scheduler=args.scheduler,
            max_points=MAX_POINTS if args.max_points is None else args.max_points,
        )
    except SweepInterrupted as stop:
        print(f"\ndeltastats: interrupted: {stop}", file=sys.stderr)
        return 130
    done = res.table["point"].nunique() if not res.table.empty else 0
    print(
        f"{done} of {res.n_points} points finished ({len(res.ran)} run now), "
        f"{len(res.failed)} failed"
    )
    for pid, why in res.rerun.items():
        print(f"  rerun {pid}: its file was not trusted ({why})")
    for pid, err in res.failed.items():
        print(f"  failed {pid}: {err}")
    if not res.table.empty and "n_overflow" in res.table.columns:
        per_point = res.table.groupby("point").agg(k=("n_overflow", "max"), m=("n_networks", "max"))
        for pid, row in per_point[per_point["k"] > 0].iterrows():
            print(
                f"  point {pid}: {int(row.k)} of {int(row.k + row.m)} networks excluded "
                "(numerical overflow); its rows carry no verdict"
            )
    if res.table_path is not None:
        print(f"table: {res.table_path}")
    else:
        print("no table written (no point finished)")
    return 1 if res.failed or done < res.n_points else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .workflow.report import write_report

    rep = write_report(args.results_dir)
    print(rep.summary)
    print(f"wrote {rep.markdown} and {rep.html} ({len(rep.figures)} figures)")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .model import inputs, targets
    from .model.activations import ACTIVATIONS
    from .model.losses import LOSSES
    from .model.networks import INITS

    print("activations:", ", ".join(sorted(ACTIVATIONS)), "(and leaky_relu(α))")
    print("inits:      ", ", ".join(INITS))
    print("losses:     ", ", ".join(LOSSES))
    print("inputs:     ", ", ".join(inputs.INPUT_LAWS))
    print("targets:    ", ", ".join(targets.TARGET_LAWS))
    folder = Path(__file__).resolve().parents[1] / "experiments"
    configs = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    if configs:
        print(f"experiments (deltastats sweep {folder.name}/NAME.toml):")
        for path in configs:
            with open(path, "rb") as f:
                about = " ".join(str(tomllib.load(f).get("description", "")).split())
            print(f"  {path.stem:24s} {about[:90]}{'…' if len(about) > 90 else ''}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``deltastats`` command."""
    args = _parser().parse_args(argv)
    try:
        return {
            "run": _cmd_run,
            "sweep": _cmd_sweep,
            "report": _cmd_report,
            "list": _cmd_list,
        }[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        print(f"deltastats: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndeltastats: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
