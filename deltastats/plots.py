"""Seaborn figures: a tidy DataFrame in, a matplotlib Axes out; no statistics computed here.

Every function takes the tidy tables that :mod:`deltastats.estimators` and
:mod:`deltastats.theory` produce (columns ``layer, statistic, estimate, ci_low, ci_high`` and
``prediction``) and draws them; call :func:`save` to write PNG and SVG.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless by default: plots are written to files, never shown

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

STAT_LABELS = {
    "delta_sq": r"$\mathrm{E}[\delta_j^{(l)\,2}]$",
    "delta_mean": r"$\mathrm{E}[\delta_j^{(l)}]$",
    "delta_var": r"$\mathrm{Var}[\delta_j^{(l)}]$",
    "delta_norm_sq": r"$\mathrm{E}\,\|\delta^{(l)}\|^2/n_l$",
}


def _axes(ax: Axes | None) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    return ax


def plot_layer_statistic(
    df: pd.DataFrame,
    statistic: str = "delta_sq",
    *,
    hue: str | None = None,
    theory: pd.DataFrame | None = None,
    log: bool | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Per-layer Monte Carlo estimate with its CI band, and theory as a dashed line.

    Parameters
    ----------
    df : DataFrame
        Columns ``layer, statistic, estimate`` and optionally ``ci_low, ci_high`` and ``hue``.
        Only rows with ``statistic == statistic`` (and ``unit == -1`` if present) are drawn.
    statistic : str
        Which statistic to draw, e.g. ``"delta_sq"``.
    hue : str or None
        Column that separates settings (one colour each).
    theory : DataFrame or None
        Columns ``layer, statistic, prediction`` (and ``hue``), drawn as dashed lines.
    log : bool or None
        Log y axis; default True for second moments.
    ax : Axes or None

    Returns
    -------
    Axes
    """
    ax = _axes(ax)
    rows = df[df["statistic"] == statistic]
    if "unit" in rows:
        rows = rows[rows["unit"] == -1]
    if rows.empty:
        raise ValueError(f"no rows with statistic {statistic!r} to plot")
    groups = [(None, rows)] if hue is None else list(rows.groupby(hue, sort=True))
    palette = sns.color_palette("viridis" if len(groups) > 3 else "deep", len(groups))
    for color, (key, g) in zip(palette, groups):
        g = g.sort_values("layer")
        label = "Monte Carlo" if key is None else f"{hue} = {key}"
        ax.plot(g["layer"], g["estimate"], "o-", color=color, ms=3.5, lw=1.2, label=label)
        if {"ci_low", "ci_high"} <= set(g.columns):
            ax.fill_between(g["layer"], g["ci_low"], g["ci_high"], color=color, alpha=0.25, lw=0)
        if theory is not None:
            t = theory[theory["statistic"] == statistic]
            if key is not None and hue in t:
                t = t[t[hue] == key]
            if not t.empty:
                t = t.sort_values("layer")
                ax.plot(
                    t["layer"],
                    t["prediction"],
                    "--",
                    color=color,
                    lw=1.2,
                    label="theory" if key is None else None,
                )
    if log is None:
        log = statistic in ("delta_sq", "delta_var", "delta_norm_sq", "z_var", "grad_w_sq")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("layer $l$")
    ax.set_ylabel(STAT_LABELS.get(statistic, statistic))
    ax.legend(frameon=False, fontsize="small")
    return ax


def save(ax: Axes, path: str | Path) -> list[Path]:
    """Save the figure of ``ax`` as ``path.png`` and ``path.svg``; returns the two paths."""
    path = Path(path)
    out = []
    for ext in ("png", "svg"):
        p = path.with_suffix("." + ext)
        ax.figure.savefig(p, dpi=150)
        out.append(p)
    plt.close(ax.figure)
    return out
