"""Tutorial: the statistics of δ = ∂L/∂z in your own PyTorch model.

A residual network with LayerNorm is not an MLP, so the built-in engine cannot sample it, but
the nested-design estimators of deltastats take δ from any model. This script

1. defines a small pre-norm residual model and a way to draw a fresh random copy of it,
2. records δ at the output of each residual block for M random networks × B inputs each
   with ``deltastats.torch.estimate``,
3. prints E[δ²] per block with its 95 % confidence interval and plots it,
4. prints the intraclass correlation (ICC) and design effect of each block and what
   ``deltastats.suggest_allocation`` advises: how many inputs per network are worth drawing.

Run it (it takes a few seconds with the defaults)::

    python docs/tutorials/own_model.py                    # 200 networks, own_model_delta_sq.png
    python docs/tutorials/own_model.py --networks 40 --out fig.png

Needs the PyTorch extra (``pip install "deltastats[torch]"``); matplotlib comes with deltastats.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write the figure to a file; no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import deltastats as ds  # noqa: E402
import deltastats.torch as dst  # noqa: E402

# ---- the model -------------------------------------------------------------------------------
# Input dimension, width of the residual stream, number of blocks and inputs per network.
N_IN, WIDTH, N_BLOCKS, BATCH = 16, 32, 3, 16


class Block(torch.nn.Module):
    """One pre-norm residual block: x ↦ x + W₂ φ(W₁ LayerNorm(x)), φ = tanh.

    The output z = x + F(x) is what we hook: δ = ∂L/∂z is the error signal of the residual
    stream after this block.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(width)
        self.fc1 = torch.nn.Linear(width, width)
        self.fc2 = torch.nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.tanh(self.fc1(self.norm(x))))


class ResidualNet(torch.nn.Module):
    """16 → Linear → 3 residual blocks of width 32 → Linear head → 1 output."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(N_IN, WIDTH)
        # A ModuleList names its entries "blocks.0", "blocks.1", …: these are the names that
        # ``modules=`` refers to (see ``model.named_modules()``).
        self.blocks = torch.nn.ModuleList(Block(WIDTH) for _ in range(N_BLOCKS))
        self.head = torch.nn.Linear(WIDTH, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


# ---- how to draw one network, one batch, and the loss -----------------------------------------
# deltastats treats every network as one independent draw from a distribution over networks
# (here: PyTorch's default initialisation) and every input as an independent draw given the
# network. It calls these two functions with a different seed for each network m, derived
# from m and the root seed, so network m's numbers do not depend on how many networks are
# drawn.


def model_fn(seed: int) -> torch.nn.Module:
    """A fresh random network: PyTorch's default initialisation under ``seed``."""
    torch.manual_seed(seed)
    return ResidualNet()


# A fixed teacher, the same for every network: y = (x₁ + … + x₁₆)/4, unit variance.
TEACHER = torch.full((N_IN,), 0.25)


def data_fn(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One network's batch: B Gaussian inputs x ~ N(0, I) and their targets."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, N_IN, generator=gen)
    return x, x @ TEACHER


def loss_fn(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample loss L_b = ½ (g_b − y_b)², shape (B,): deltastats needs one loss per sample,
    not the batch mean, because δ_b = ∂L_b/∂z_b is a per-sample quantity."""
    return 0.5 * (output[:, 0] - y) ** 2


# ---- printing helpers ------------------------------------------------------------------------
def print_delta_sq(est: ds.Estimates) -> pd.DataFrame:
    """Print and return the pooled E[δ²] row of each block."""
    t = est.per_layer("delta_sq")
    print(f"E[δ²] per block ({est.n_networks} networks × {est.n_inputs} inputs, 95 % CI):")
    print(f"  {'block':<10} {'E[δ²]':>11} {'95 % interval':>27} {'rel. SE':>8}")
    for r in t.itertuples():
        rel = r.std_error / abs(r.estimate)
        print(f"  {r.name:<10} {r.estimate:11.4e} [{r.ci_low:11.4e}, {r.ci_high:11.4e}] {rel:8.1%}")
    return t


def plot_delta_sq(t: pd.DataFrame, est: ds.Estimates, out: Path) -> None:
    """E[δ²] per block with its confidence interval as (asymmetric) error bars."""
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(len(t))
    yerr = np.vstack([t["estimate"] - t["ci_low"], t["ci_high"] - t["estimate"]])
    ax.errorbar(
        x, t["estimate"], yerr=yerr, fmt="o", capsize=6, color="C0", label="estimate, 95 % CI"
    )
    ax.set_xticks(x, [f"{name}\n(layer {layer})" for name, layer in zip(t["name"], t["layer"])])
    ax.set_xlabel("residual block (δ taken at its output)")
    ax.set_ylabel(r"$\mathrm{E}[\delta^2]$,  $\delta = \partial L/\partial z$")
    ax.set_title(
        f"E[δ²] per residual block: {est.n_networks} networks × {est.n_inputs} inputs\n"
        "(mean over units, inputs and networks; 95 % network-level intervals)",
        fontsize=10,
    )
    ax.margins(x=0.2)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def print_icc(est: ds.Estimates) -> None:
    """ICC of δ and of δ², and the design effects 1 + (B − 1)·ICC, of each block."""
    t = est.per_layer(["icc", "delta_sq_icc", "design_effect"])
    wide = t.pivot(index="name", columns="statistic", values="estimate")
    B = est.n_inputs
    print("\nHow much of the spread is between networks (ICC) and what it costs (design effect):")
    print(f"  {'block':<10} {'ICC of δ':>9} {'ICC of δ²':>10} {'deff of δ':>10} {'deff of δ²':>11}")
    for name, r in wide.iterrows():
        # design_effect is that of δ; the same formula with the ICC of δ² gives E[δ²]'s.
        deff_sq = 1 + (B - 1) * r["delta_sq_icc"]
        print(
            f"  {name:<10} {r['icc']:9.3f} {r['delta_sq_icc']:10.3f} "
            f"{r['design_effect']:10.2f} {deff_sq:11.2f}"
        )
    print(
        "  The ICC is the share of the variance of δ that comes from which network was drawn "
        "rather\n  than which input: near 1, the B inputs of one network repeat each other and "
        "the network is\n  the unit of information; near 0, each input is almost an independent "
        "draw. The design\n  effect 1 + (B − 1)·ICC is how much larger the variance of the mean "
        "is than if all M·B\n  values were independent (so M·B/design effect values' worth of "
        "information)."
    )
    print(
        "  (The ICC of δ is the same in every block: LayerNorm's backward pass has zero mean "
        "over the\n  units, so the unit-mean of δ crosses each block unchanged. The ICC of δ² "
        "is that of the\n  per-input ‖δ‖²/n, whose mean is E[δ²]: the one the allocation below "
        "uses.)"
    )


def print_allocation(est: ds.Estimates, cost_per_network: float, cost_per_input: float) -> None:
    """What suggest_allocation advises for E[δ²] at 5 % relative half-width."""
    adv = ds.suggest_allocation(
        est, cost_per_network=cost_per_network, cost_per_input=cost_per_input
    )
    names = est.layer_names
    print(
        f"\nAllocation advice for E[δ²] (5 % relative half-width; cost per network "
        f"{cost_per_network:g}, per input {cost_per_input:g}):"
    )
    print(f"  {'block':<10} {'ICC used':>9} {'inputs/network':>15} {'networks':>9} {'cost':>9}")
    for r in adv.itertuples():
        print(
            f"  {names[r.layer]:<10} {r.icc:9.3f} {r.inputs_per_network:15d} "
            f"{r.n_networks:9d} {r.cost:9.1f}"
        )
    worst = adv.loc[adv["n_networks"].idxmax()]
    b = int(worst["inputs_per_network"])
    print(
        f"  Advice: draw about {b} inputs per network (this run drew {est.n_inputs}) and "
        f"{int(worst['n_networks'])} networks,\n  enough for the hardest block "
        f"({names[int(worst['layer'])]})."
    )
    print(
        "  The optimum B* = √((c_net/c_in)·(1 − ρ)/ρ) grows as ρ falls: when networks differ "
        "little\n  (small ρ), extra inputs of the same network are cheap information; when ρ "
        "is large, only\n  new networks reduce the error and extra inputs are mostly wasted."
    )


# ---- the run ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, estimate, print, plot."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", type=int, default=200, help="networks M (default 200)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("own_model_delta_sq.png"),
        help="where to save the figure (default: own_model_delta_sq.png)",
    )
    parser.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    # The costs only matter through their ratio. For this small model on a CPU, one network
    # (building it, the hooks, one forward and backward pass) costs about 20 ms almost
    # whatever B is, and each extra input only about 10–20 µs: a ratio of about 1000.
    # Measure your own model's costs and pass them here.
    parser.add_argument("--cost-per-network", type=float, default=1.0)
    parser.add_argument("--cost-per-input", type=float, default=0.001)
    args = parser.parse_args(argv)

    # One call does the whole Monte Carlo: for m = 0 … M − 1 it builds model_fn(seed_m), draws
    # data_fn(seed_m'), runs one forward and one backward pass of Σ_b L_b with hooks on the
    # named modules, and hands the per-sample δ_b (plus z, the losses and the weight
    # gradients) to a streaming accumulator. Because the samples of a batch do not interact
    # (LayerNorm normalises each sample on its own), ∂(Σ_c L_c)/∂z_b = ∂L_b/∂z_b: one backward
    # pass gives every sample's δ.
    modules = [f"blocks.{k}" for k in range(N_BLOCKS)]
    est = dst.estimate(
        model_fn,
        data_fn,
        loss_fn,
        n_networks=args.networks,
        modules=modules,
        seed=args.seed,
        progress=sys.stderr.isatty(),
    )
    # The intervals are built from per-network summaries: the network, not the single
    # (input, unit) value, is the independent unit, so the interval accounts for inputs of
    # one network being correlated.
    t = print_delta_sq(est)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_delta_sq(t, est, args.out)
    print(f"  figure: {args.out}")
    # In a residual stream δ_in = δ_out + (∂F/∂x)ᵀ δ_out: the identity path hands δ_out
    # back unchanged and each block's branch adds its own term, so E[δ²] typically grows
    # from the last block towards the first.
    print_icc(est)
    print_allocation(est, args.cost_per_network, args.cost_per_input)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
