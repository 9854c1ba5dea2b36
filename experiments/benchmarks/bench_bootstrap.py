"""Time of ``method="bootstrap"`` against ``method="clt"`` for the README's estimate.

Run (from the repository root)::

    python experiments/benchmarks/bench_bootstrap.py          # M = 500 and 1000 networks
    python experiments/benchmarks/bench_bootstrap.py --quick  # M = 200

Workload: ``ds.estimate`` of a tanh MLP ``(64, 256, 256, 256, 10)`` with σ_w = 1.2, μ_w = 0.5,
Gaussian inputs, constant targets 0.5, B = 16 inputs per network, 1999 bootstrap resamples
(the default). Both methods draw the same networks; the bootstrap resamples whole networks
(BCa, vectorized over resamples: one matrix product of resample counts by per-network
features per feature array). Timed in the same run, interleaved, after a warm-up; the target
is a bootstrap at most 10 times the CLT time at 500–1000 networks. Writes
``results/benchmarks_bootstrap.md`` and prints it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
import warnings
from pathlib import Path

import deltastats as ds

sys.path.insert(0, str(Path(__file__).parent))
from bench_arrays import cpu_model  # noqa: E402  (the benchmarks' one CPU probe)

ROOT = Path(__file__).resolve().parents[2]


def run(M: int, method: str) -> float:
    net = ds.MLP((64, 256, 256, 256, 10), activation="tanh", sigma_w=1.2, mu_w=0.5)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.estimate(
            net,
            ds.inputs.gaussian(),
            ds.targets.constant(0.5),
            n_networks=M,
            batch=16,
            seed=0,
            method=method,
        )
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    """Time both methods at each M and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="M = 200 only")
    parser.add_argument("--output", default=str(ROOT / "results" / "benchmarks_bootstrap.md"))
    args = parser.parse_args(argv)
    sizes = (200,) if args.quick else (500, 1000)
    run(50, "clt"), run(50, "bootstrap")  # warm-up: compiled kernels, imports
    rows = []
    for M in sizes:
        t_clt, t_boot = run(M, "clt"), run(M, "bootstrap")
        rows.append(f"| {M} | {t_clt:.2f} | {t_boot:.2f} | {t_boot / t_clt:.2f} |")
    text = "\n".join(
        [
            "# Bootstrap vs CLT intervals (`ds.estimate`, README example)",
            "",
            f"CPU: {cpu_model()}; {_dt.date.today().isoformat()}; deltastats {ds.__version__}.",
            "Networks (64, 256, 256, 256, 10) tanh, B = 16, 1999 resamples; one run, "
            "interleaved. Target: bootstrap / CLT ≤ 10 at 500–1000 networks.",
            "",
            "| networks | CLT (s) | bootstrap (s) | bootstrap / CLT |",
            "|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
