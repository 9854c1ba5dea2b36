"""Command line: ``deltastats run [CONFIG]`` (also ``python -m deltastats``)."""

from __future__ import annotations

import argparse
import signal
import sys
import tomllib

#: The examples at the end of ``deltastats --help``.
EXAMPLES = """examples:
  deltastats run                      # built-in default experiment → results/default/
  deltastats run my_experiment.toml   # a flat TOML of Experiment fields → results/my_experiment/
  deltastats run --out /tmp/res --quiet --confidence 0.99 --method jackknife
  deltastats sweep order_chaos                      # a shipped experiment, on every core
  deltastats sweep my_sweep.toml --jobs 1           # your own config, on one core
  deltastats sweep order_chaos --quick --resume     # tiny version → results/order_chaos-quick/
  deltastats report results/order_chaos --open
  deltastats list
"""


def _analysis_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--confidence", type=float, default=None, help="interval level (0.95)")
    p.add_argument(
        "--method", default=None, help="interval method: clt, jackknife or bootstrap (clt)"
    )
    p.add_argument("--alpha", type=float, default=None, help="level of the verdicts (0.01)")
    p.add_argument(
        "--correction", default=None, help="multiple-testing method: holm, fdr_bh, … (holm)"
    )


def _analysis_from(args: argparse.Namespace, table: dict) -> dict:
    """The config's [analysis] table with the flags given on the command line on top."""
    given = {k: getattr(args, k) for k in ("confidence", "method", "alpha", "correction")}
    return {**table, **{k: v for k, v in given.items() if v is not None}}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deltastats",
        description="Monte Carlo statistics of the backpropagated error δ = ∂L/∂z.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    p.add_argument("--version", action="version", version=f"deltastats {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    common = dict(epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    run = sub.add_parser("run", help="run one experiment (default: the built-in one)", **common)
    run.add_argument("config", nargs="?", help="TOML file of Experiment fields (optional)")
    run.add_argument(
        "--out", default=None, help="results folder (default results/<name>/, as for sweep)"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    _analysis_flags(run)
    sw = sub.add_parser("sweep", help="run a parameter sweep from a TOML config", **common)
    sw.add_argument(
        "config", help="sweep TOML, or the name of a shipped experiment (deltastats list)"
    )
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
    _analysis_flags(sw)
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
    rep.add_argument("--open", action="store_true", help="open report.html in a browser")
    sub.add_parser("list", help="list activations, inits, losses, input/target laws")
    return p


def _cmd_run(args: argparse.Namespace) -> int:
    from .workflow.config import Experiment, load_run
    from .workflow.runner import print_table, run_experiment

    exp, table = (Experiment(), {}) if args.config is None else load_run(args.config)
    res = run_experiment(
        exp,
        "results",
        folder=args.out,
        progress=not args.quiet,
        **_analysis_from(args, table),
    )
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
            analysis=_analysis_from(args, {}),
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
    link = rep.html.resolve().as_uri()
    print(f"wrote {rep.markdown} and {rep.html} ({len(rep.figures)} figures)\n{link}")
    if args.open:
        import webbrowser

        webbrowser.open(link)
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
    from . import configs as shipped

    paths = [shipped.path(n) for n in shipped.names()]
    if paths:
        print("experiments (deltastats sweep NAME):")
        for path in paths:
            with open(path, "rb") as f:
                about = " ".join(str(tomllib.load(f).get("description", "")).split())
            print(f"  {path.stem:24s} {about[:90]}{'…' if len(about) > 90 else ''}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``deltastats`` command."""
    args = _parser().parse_args(argv)
    code = _dispatch(args)
    if argv is None and code == 130:
        # Run as a program and interrupted, the finished points saved and the lock released:
        # a further Ctrl-C while the interpreter shuts down (threads and workers joined) must
        # not turn this exit into a death by signal, which a caller cannot tell from a crash.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def _dispatch(args: argparse.Namespace) -> int:
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
