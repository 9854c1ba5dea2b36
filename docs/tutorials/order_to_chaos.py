"""Tutorial: order to chaos in a few seconds (explained in docs/tutorials/order_to_chaos.md).

A small version of the shipped ``order_chaos`` sweep: tanh networks over a 4 × 2 grid of
(σ_w², σ_b²), the measured per-layer growth of log E[δ²] beside log χ₁ of mean-field theory,
and the report with its phase diagram.

    python docs/tutorials/order_to_chaos.py                 # → order_to_chaos/ (report.md …)
    python docs/tutorials/order_to_chaos.py --out /tmp/oc --networks 60
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

import deltastats as ds
from deltastats import theory
from deltastats.workflow.report import load_results, log_growth, write_report
from deltastats.workflow.sweeps import run_sweep


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="order_to_chaos", help="results folder (order_to_chaos)")
    p.add_argument("--networks", type=int, default=100, help="networks per point (100)")
    args = p.parse_args(argv)

    # 1. Theory alone: the critical line χ₁ = 1 and χ₁ at a few points.
    for sb2 in (0.0, 0.05, 0.1, 0.3):
        sw2 = float(theory.critical_sigma_w(np.sqrt(sb2), "tanh") ** 2)
        print(f"critical line: σ_b² = {sb2:<4}  σ_w² = {sw2:.3f}")

    # 2. The sweep: the shipped config's [base] and [grid], made small. A dict works as well
    #    as a TOML file (deltastats.configs.path("order_chaos") is the shipped one).
    config = {
        "name": "order_to_chaos",
        "seed": 12,
        "description": "Order to chaos, small: growth of E[δ²] for tanh against χ₁ = 1.",
        "base": {
            "activation": "tanh",
            "depth": 12,
            "width": 48,
            "n_networks": args.networks,
            "batch": 8,
        },
        "grid": {"sigma_w2": [0.8, 1.4, 2.2, 3.0], "sigma_b2": [0.0, 0.1]},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ds.FewNetworksWarning)  # a tutorial-sized run
        result = run_sweep(config, out=args.out, jobs=1, overwrite=True, progress=False)
    print(f"\n{result.n_points} points, {len(result.failed)} failed → {result.out_dir}")

    # 3. Measured growth per layer, (log E[δ²⁽¹⁾] − log E[δ²⁽ᴸ⁻¹⁾])/(L − 2), beside the
    #    growth of the Gaussian recursion at this depth and log χ₁ (its limit at the fixed point).
    table, _ = load_results(result.out_dir)
    params = ["sigma_w2", "sigma_b2"]
    growth = log_growth(table, params)
    # The same growth of the Gaussian recursion's own E[δ²] (theory at this finite depth).
    predicted = table.drop(columns="estimate").rename(columns={"prediction": "estimate"})
    growth["theory_growth"] = log_growth(predicted, params)["log_growth"]
    growth["log_chi1"] = np.log(
        theory.chi1(np.sqrt(growth["sigma_w2"]), np.sqrt(growth["sigma_b2"]), "tanh")
    )
    growth["phase"] = np.where(growth["log_chi1"] < 0, "ordered", "chaotic")
    growth["measured"] = np.where(growth["log_growth"] < 0, "vanishing", "exploding")
    print("\nPer-layer growth of log E[δ²] towards the input, Monte Carlo vs mean field")
    print(growth.round(4).to_string(index=False))

    # 4. E[δ²] per layer at one chaotic point, with its interval, beside the Gaussian recursion.
    rows = table[
        (table["statistic"] == "delta_sq")
        & (table["unit"] == -1)
        & np.isclose(table["sigma_w2"], 3.0)
        & np.isclose(table["sigma_b2"], 0.1)
    ]
    print("\nE[δ²] at σ_w² = 3.0, σ_b² = 0.1 (95 % interval) and the Gaussian prediction")
    for r in rows.itertuples():
        print(
            f"  layer {r.layer:>2}  {r.estimate:.4e} [{r.ci_low:.4e}, {r.ci_high:.4e}]"
            f"  theory {r.prediction:.4e}  ({r.verdict})"
        )

    # 5. The report: report.md, report.html, the phase diagram and the other figures.
    report = write_report(result.out_dir)
    print(f"\n{report.summary}")
    print("report:", report.markdown.name, report.html.name)
    print("figures:", ", ".join(f.name for f in report.figures if f.suffix == ".png"))


if __name__ == "__main__":
    main()
