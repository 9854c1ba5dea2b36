"""Seaborn figures: a tidy DataFrame in, a matplotlib Axes out; no statistics computed here.

The functions take the tidy tables that :mod:`deltastats.estimators`, :mod:`deltastats.theory`,
:func:`deltastats.compare` and :mod:`deltastats.sweeps` produce (columns ``layer, statistic,
estimate, ci_low, ci_high, prediction`` and sweep parameters) and draw them. :func:`save` writes
PNG and SVG. The backend is Agg: figures go to files, nothing needs a screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from scipy import stats  # noqa: E402

#: Axis labels (mathtext) of the statistics.
STAT_LABELS = {
    "delta_sq": r"$\mathrm{E}[\delta_j^{(l)2}]$",
    "delta_mean": r"$\mathrm{E}[\delta_j^{(l)}]$",
    "stein_delta_mean": r"Stein $\mathrm{E}[L(z_j-\mu_j)]/\sigma_j^2$",
    "stein_gap": r"Stein $-$ pathwise $\mathrm{E}[\delta_j^{(l)}]$",
    "delta_var": r"$\mathrm{Var}[\delta_j^{(l)}]$",
    "delta_norm_sq": r"$\mathrm{E}\,\|\delta^{(l)}\|^2$",
    "z_var": r"$\mathrm{Var}[z_j^{(l)}]$",
    "z_kurt": r"excess kurtosis of $z_j^{(l)}$",
    "delta_kurt": r"excess kurtosis of $\delta_j^{(l)}$",
    "grad_w_sq": r"$\mathrm{E}\,\|\partial J/\partial W^{(l)}\|^2$",
    "log_delta_norm_sq_var": r"$\mathrm{Var}[\log\|\delta^{(l)}\|^2]$",
}
#: Statistics that are second moments (positive, growing geometrically): plotted on a log axis.
SECOND_MOMENTS = {"delta_sq", "delta_var", "delta_norm_sq", "z_var", "grad_w_sq"}


def _axes(ax: Axes | None, size=(5.5, 3.8)) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=size, layout="constrained")
    return ax


def _pooled(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["unit"] == -1] if "unit" in df.columns else df


def plot_layer_statistic(
    df: pd.DataFrame,
    statistic: str | Sequence[str] = "delta_sq",
    *,
    hue: str | None = None,
    theory: pd.DataFrame | None = None,
    log: bool | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Per-layer Monte Carlo estimates with CI bands, theory as dashed lines.

    Parameters
    ----------
    df : DataFrame
        Columns ``layer, statistic, estimate`` and optionally ``ci_low, ci_high``, ``unit``
        (only pooled rows, ``unit == -1``, are drawn), ``prediction`` and the ``hue`` column.
    statistic : str or sequence of str
        Statistic(s) to draw; several statistics get one colour each (e.g. ``["delta_mean",
        "stein_delta_mean"]`` for pathwise vs Stein).
    hue : str or None
        Column separating settings (one colour each), e.g. ``"sigma_w2"``.
    theory : DataFrame or None
        ``layer, statistic, prediction`` rows drawn as dashed lines; default: the
        ``prediction`` column of ``df`` when it has one.
    log : bool or None
        Log y axis; default True for second moments.
    ax : Axes or None

    Returns
    -------
    Axes
    """
    ax = _axes(ax)
    stats_ = [statistic] if isinstance(statistic, str) else list(statistic)
    rows = _pooled(df[df["statistic"].isin(stats_)])
    if rows.empty:
        raise ValueError(f"no rows with statistic in {stats_} to plot")
    if theory is None and "prediction" in rows.columns:
        theory = rows[["layer", "statistic", "prediction"] + ([hue] if hue else [])].dropna()
    by = [c for c in (["statistic"] if len(stats_) > 1 else []) + ([hue] if hue else [])]
    groups = [((), rows)] if not by else list(rows.groupby(by, sort=True))
    palette = sns.color_palette("viridis" if len(groups) > 4 else "deep", len(groups))
    theory_labelled = band_labelled = False
    for color, (key, g) in zip(palette, groups):
        key = key if isinstance(key, tuple) else (key,)
        g = g.sort_values("layer")
        label = _label(by, key)
        ax.plot(g["layer"], g["estimate"], "o-", color=color, ms=3.5, lw=1.2, label=label)
        if {"ci_low", "ci_high"} <= set(g.columns):
            ax.fill_between(
                g["layer"],
                g["ci_low"],
                g["ci_high"],
                color=color,
                alpha=0.3,
                lw=0,
                label=None if band_labelled else "interval across networks",
            )
            band_labelled = True
        if theory is not None:
            t = theory
            for b, k in zip(by, key):
                if b in t.columns:
                    t = t[t[b] == k]
            stat = key[by.index("statistic")] if "statistic" in by else stats_[0]
            t = t[t["statistic"] == stat]
            if not t.empty:
                t = t.sort_values("layer")
                ax.plot(
                    t["layer"],
                    t["prediction"],
                    "--",
                    color=color,
                    lw=1.2,
                    label=None if theory_labelled else "theory (dashed)",
                )
                theory_labelled = True
    if log is None:
        log = set(stats_) <= SECOND_MOMENTS and bool((rows["estimate"] > 0).all())
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("layer $l$")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(STAT_LABELS.get(stats_[0], stats_[0]) if len(stats_) == 1 else "estimate")
    ax.axhline(0, color="0.7", lw=0.6, zorder=0) if not log else None
    # Beside the axes, never over the data.
    ax.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


#: How sweep parameters are written in legends.
SYMBOLS = {
    "sigma_w2": "σ_w²",
    "sigma_b2": "σ_b²",
    "sigma_w": "σ_w",
    "sigma_b": "σ_b",
    "mu_w": "μ_w",
    "mu_b": "μ_b",
    "width": "n",
    "depth": "L",
    "batch": "B",
    "weight_decay": "λ",
    "q0": "q₀",
}


def _label(by: list[str], key: tuple) -> str:
    parts = []
    for b, k in zip(by, key):
        if b in ("statistic", "setting"):  # values that name themselves
            parts.append(str(k))
        else:
            name = SYMBOLS.get(b, b)
            parts.append(f"{name} = {k:g}" if isinstance(k, float) else f"{name} = {k}")
    return ", ".join(parts) or "Monte Carlo"


def plot_phase_diagram(
    df: pd.DataFrame,
    *,
    x: str = "sigma_w2",
    y: str = "sigma_b2",
    value: str = "log_growth",
    critical: pd.DataFrame | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Heatmap of a per-point value over two parameters, with the critical line overlaid.

    Parameters
    ----------
    df : DataFrame
        One row per (x, y) point with a ``value`` column, e.g. the measured per-layer
        log-growth of E[δ²] (positive: gradients explode towards the input, chaos).
    critical : DataFrame or None
        Columns ``x`` and ``y``: the theoretical order-to-chaos line, drawn in black.

    Returns
    -------
    Axes
    """
    ax = _axes(ax, (5.8, 4.2))
    grid = df.pivot_table(index=y, columns=x, values=value, aggfunc="mean").sort_index()
    xs, ys = grid.columns.to_numpy(float), grid.index.to_numpy(float)
    lim = np.nanmax(np.abs(grid.to_numpy())) or 1.0
    mesh = ax.pcolormesh(
        _edges(xs), _edges(ys), grid.to_numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, shading="flat"
    )
    ax.figure.colorbar(mesh, ax=ax, label=r"per-layer growth of $\log \mathrm{E}[\delta^2]$")
    values = grid.to_numpy(float)
    if len(xs) > 1 and len(ys) > 1 and np.nanmin(values) < 0 < np.nanmax(values):
        # Where the measured growth changes sign (linear interpolation between grid points).
        ax.contour(xs, ys, values, levels=[0.0], colors="0.25", linestyles="--", linewidths=1.4)
        ax.plot([], [], "--", color="0.25", lw=1.4, label="measured: zero growth")
    if critical is not None and not critical.empty:
        c = critical.sort_values(y)
        ax.plot(c[x], c[y], "k-", lw=1.6, label="theory: critical line $\\chi_1 = 1$")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="lower right", framealpha=0.85)
    ax.set_xlim(_edges(xs)[0], _edges(xs)[-1])
    ax.set_ylim(_edges(ys)[0], _edges(ys)[-1])
    ax.set_xlabel(r"$\sigma_w^2$" if x == "sigma_w2" else x)
    ax.set_ylabel(r"$\sigma_b^2$" if y == "sigma_b2" else y)
    return ax


def _edges(c: np.ndarray) -> np.ndarray:
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])


def plot_histogram(df: pd.DataFrame, *, hue: str = "layer", ax: Axes | None = None) -> Axes:
    """Standardised samples (column ``value``) against the N(0, 1) density, one hue per layer.

    Parameters
    ----------
    df : DataFrame
        Columns ``value`` (samples standardised by the caller) and ``hue``.
    """
    ax = _axes(ax)
    sns.histplot(
        df,
        x="value",
        hue=hue,
        stat="density",
        element="step",
        fill=False,
        common_norm=False,
        bins=60,
        ax=ax,
        palette="deep",
    )
    t = np.linspace(-4.5, 4.5, 300)
    ax.plot(t, stats.norm.pdf(t), "k--", lw=1.2, label="N(0, 1)")
    ax.set_xlim(-5, 5)
    ax.set_xlabel("standardised value")
    return ax


def plot_qq(df: pd.DataFrame, *, hue: str = "layer", ax: Axes | None = None) -> Axes:
    """Normal QQ plot of the sample quantiles in ``df`` (columns ``theoretical, sample, hue``)."""
    ax = _axes(ax, (4.2, 4.0))
    for color, (key, g) in zip(sns.color_palette("deep"), df.groupby(hue, sort=True)):
        ax.plot(g["theoretical"], g["sample"], ".", ms=2.5, color=color, label=f"{hue} {key}")
    lim = np.nanmax(np.abs(df[["theoretical", "sample"]].to_numpy()))
    ax.plot([-lim, lim], [-lim, lim], "k--", lw=1)
    ax.set_xlabel("normal quantile")
    ax.set_ylabel("sample quantile (standardised)")
    ax.legend(frameon=False, fontsize="small", markerscale=3)
    return ax


def plot_vs_parameter(
    df: pd.DataFrame,
    *,
    x: str,
    y: str = "rel_error",
    hue: str | None = None,
    yerr: str | None = None,
    theory: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """A quantity against a parameter, e.g. theory error vs 1/width or Var log‖δ‖² vs β.

    Parameters
    ----------
    df : DataFrame
        Columns ``x``, ``y`` and optionally ``hue``, ``yerr`` (error-bar half-widths) and
        ``theory`` (a prediction drawn as a dashed line).
    """
    ax = _axes(ax)
    groups = [(None, df)] if hue is None else list(df.groupby(hue, sort=True))
    for color, (key, g) in zip(sns.color_palette("deep", len(groups)), groups):
        g = g.sort_values(x)
        label = None if key is None else _label([hue], (key,))
        ax.errorbar(
            g[x],
            g[y],
            yerr=None if yerr is None else g[yerr],
            fmt="o-",
            ms=3.5,
            lw=1.1,
            capsize=2,
            color=color,
            label=label,
        )
        if theory is not None:
            ax.plot(g[x], g[theory], "--", color=color, lw=1.1)
    ax.axhline(0, color="0.7", lw=0.6, zorder=0)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(STAT_LABELS.get(y, y) if ylabel is None else ylabel)
    if hue is not None or theory is not None:
        handles, labels = ax.get_legend_handles_labels()
        if theory is not None:
            handles.append(plt.Line2D([], [], ls="--", color="0.3"))
            labels.append("theory")
        ax.legend(
            handles,
            labels,
            frameon=False,
            fontsize="small",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
        )
    return ax


def save(ax: Axes, path: str | Path, *, close: bool = True) -> list[Path]:
    """Save the figure of ``ax`` as ``path.png`` and ``path.svg``; returns the two paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "svg"):
        p = path.with_suffix("." + ext)
        ax.figure.savefig(p, dpi=110)
        out.append(p)
    if close:
        plt.close(ax.figure)
    return out
