"""Tutorial: the quickstart's Python part end to end (explained in docs/tutorials/quickstart.md).

Estimates of δ statistics with intervals for a random tanh MLP, theory beside them with
verdicts, the variance components and allocation advice, then a small experiment written to a
results folder with its report.

    python docs/tutorials/quickstart.py                   # → quickstart/ (report.md, …)
    python docs/tutorials/quickstart.py --out /tmp/qs --networks 100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

import deltastats as ds
from deltastats import theory
from deltastats.workflow.report import write_report
from deltastats.workflow.runner import run_experiment


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="quickstart", help="results folder (quickstart)")
    p.add_argument("--networks", type=int, default=200, help="networks M (200)")
    args = p.parse_args(argv)
    pd.set_option("display.width", 120)

    # 1. A network spec and the Monte Carlo estimate: M networks × B inputs each.
    net = ds.MLP((32, 64, 64, 64, 1), activation="tanh", sigma_w=np.sqrt(1.5))
    est = ds.estimate(net, n_networks=args.networks, batch=16, seed=0)
    print(est.per_layer(["delta_mean", "delta_sq"]).round(6).to_string(index=False))

    r = est.result("delta_sq", layer=1)
    lo, hi = r.confidence_interval
    print(f"\nE[δ²] at layer 1: {r.estimate:.4e}, 95 % interval [{lo:.4e}, {hi:.4e}]")

    # 2. Theory beside it, one verdict per row (the most complete prediction per row).
    predictions = theory.for_verdicts(theory.predict(net, batch=16, finite_width=True))
    table = ds.compare(est, predictions)
    shown = ["layer", "statistic", "estimate", "prediction", "assumption", "z_score", "verdict"]
    rows = table[table["statistic"].isin(["delta_sq", "z_var"])][shown]
    print("\nMonte Carlo vs theory")
    print(rows.round(5).to_string(index=False))

    # 3. How much of the spread is between networks, and how many inputs per network to draw.
    print("\nICC of s = ‖δ‖²/n_l per layer")
    print(est.per_layer("delta_sq_icc")[["layer", "estimate"]].round(3).to_string(index=False))
    advice = ds.suggest_allocation(est, cost_per_network=1.0, cost_per_input=0.1)
    print("\nAllocation advice (a network costs 10 inputs)")
    print(advice[["layer", "icc", "inputs_per_network", "n_networks"]].to_string(index=False))

    # 4. The same as `deltastats run`, small: a results folder with tables, figures, report.
    exp = ds.Experiment(name="quickstart", width=32, depth=4, n_networks=100, batch=8)
    result = run_experiment(exp, folder=Path(args.out), progress=False)
    print(f"\nwrote {len(result.files)} files to {result.out_dir}:")
    print(" ", " ".join(sorted(f.name for f in result.files if f.suffix != ".svg")))
    report = write_report(result.out_dir)  # what `deltastats report DIR` does
    print(f"\n{report.summary}")


if __name__ == "__main__":
    main()
