"""Reports: Monte Carlo beside theory, as ``report.md``, a self-contained ``report.html``,
figures (PNG + SVG) and LaTeX tables, from a results folder of ``deltastats run`` or
``deltastats sweep``.

The folder holds ``metadata.json`` and either ``per_layer.csv`` (a run) or ``results.parquet``
(a sweep): tidy rows (point, layer, statistic) with ``estimate, std_error, ci_low, ci_high`` and,
where theory covers the statistic, ``prediction, assumption, rel_error, z_score, p_adjusted,
verdict`` (see :func:`deltastats.compare`). Nothing is recomputed here except presentation
summaries (per-point log-growth, β = Σ 1/n_j), which are simple functions of the table.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import plots
from .compare import COLUMNS, summarize
from .latex import latex_table
from .report_layout import (
    Layout,
    caption,
    compact_table,
    config_text,
    figure_html,
    provenance,
    table_html,
)

#: Columns of a results table that are not sweep parameters.
TABLE_COLUMNS = {
    *COLUMNS,
    "point",
    "point_seed",
    "layer_width",
    "unit",
    "n_networks",
    "n_inputs",
    "n_overflow",
    "prediction_infinite_width",
    "numerical_error",
    "note",
}
#: Columns of the long table of a report, in order.
SHOWN = [
    "layer",
    "statistic",
    "estimate",
    "ci_low",
    "ci_high",
    "prediction",
    "assumption",
    "prediction_infinite_width",
    "rel_error",
    "z_score",
    "verdict",
]


@dataclass(frozen=True)
class Report:
    """Files written by :func:`write_report`."""

    markdown: Path
    html: Path
    figures: tuple[Path, ...]
    tables: tuple[Path, ...]
    summary: str


def load_results(folder: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read a results folder: the tidy table and ``metadata.json``.

    Raises
    ------
    ValueError
        If the folder holds neither ``results.parquet`` nor ``per_layer.csv``.
    """
    folder = Path(folder)
    meta_path = folder / "metadata.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if (folder / "results.parquet").exists():
        return pd.read_parquet(folder / "results.parquet"), meta
    if (folder / "per_layer.csv").exists():
        return pd.read_csv(folder / "per_layer.csv"), meta
    raise ValueError(
        f"{folder} holds no results.parquet (a sweep) or per_layer.csv (a run); "
        "run `deltastats run` or `deltastats sweep CONFIG` first"
    )


def parameters(table: pd.DataFrame) -> list[str]:
    """The sweep parameters in a table: the columns that are not standard result columns."""
    return [c for c in table.columns if c not in TABLE_COLUMNS]


def log_growth(table: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """Per point, the mean per-layer growth of log E[δ²] from layer L−1 back to layer 1.

    (log E[δ²⁽¹⁾] − log E[δ²⁽ᴸ⁻¹⁾]) / (L − 2): positive when gradients explode towards the input
    (chaotic phase), negative when they vanish (ordered phase); the output layer is left out
    because its width differs.
    """
    rows = table[(table["statistic"] == "delta_sq") & _pooled_mask(table)]
    out = []
    for key, g in rows.groupby(params or (lambda _: 0), sort=True):
        g = g.sort_values("layer")
        L = int(g["layer"].max())
        if L < 3:
            continue
        first = g.loc[g["layer"] == 1, "estimate"].iloc[0]
        last = g.loc[g["layer"] == L - 1, "estimate"].iloc[0]
        key = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(params, key)), "log_growth": np.log(first / last) / (L - 2)})
    return pd.DataFrame(out)


def _with_setting(rows: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """``rows`` with a ``setting`` column naming each combination of ``params`` (σ_w² = …);
    a parameter that the others determine (e.g. σ_w² set per activation) is left out."""
    from .plots import SYMBOLS

    params = list(params)
    for p in list(params):
        rest = [q for q in params if q != p]
        if rest and rows.groupby(rest)[p].nunique().max() <= 1:
            params = rest

    label = [", ".join(f"{SYMBOLS.get(p, p)} = {r[p]}" for p in params) for _, r in rows.iterrows()]
    return rows.assign(setting=label or "")


def _pooled_mask(table: pd.DataFrame) -> pd.Series:
    return table["unit"] == -1 if "unit" in table.columns else pd.Series(True, index=table.index)


def _figures(table: pd.DataFrame, params: list[str], meta: dict, folder: Path) -> list[Path]:
    figs: list[Path] = []
    pooled = table[_pooled_mask(table)]
    varying = [p for p in params if pooled[p].nunique() > 1]
    titles = {
        "delta_sq": "second moment of δ per layer (band: CI; dashed: theory)",
        "delta_mean": "mean of δ per hidden layer (band: CI; dashed: theory)",
        "stein_gap": "Stein minus pathwise estimate of E[δ_j], hidden layers (band: CI)",
    }
    # The output layer's δ = g − y is of another scale than the hidden layers' (the point of
    # the mean-δ question): the mean and Stein figures show the hidden layers only.
    last = pooled.groupby(params)["layer"].transform("max") if params else pooled["layer"].max()
    hidden = pooled[pooled["layer"] < last]
    for stat, title in titles.items():
        rows = pooled if stat == "delta_sq" or hidden.empty else hidden
        if (rows["statistic"] == stat).any():
            fig = _facets(rows, stat, varying)
            if fig is not None:
                fig.suptitle(title, fontsize="medium")
                figs += plots.save(fig.axes[0], folder / f"fig_{stat}")[:1]
    # A phase diagram needs a grid over (σ_w², σ_b²), not values set per activation.
    grid = {"sigma_w2", "sigma_b2"} <= set(params) and (
        len(pooled[["sigma_w2", "sigma_b2"]].drop_duplicates())
        == pooled["sigma_w2"].nunique() * pooled["sigma_b2"].nunique()
        >= 4
    )
    growth = log_growth(table, params) if grid else None
    if growth is not None and not growth.empty:
        # One diagram per swept activation, each with that activation's critical line.
        if "activation" in growth.columns and growth["activation"].nunique() > 1:
            panels = [(a, g, f"fig_phase_diagram_{a}") for a, g in growth.groupby("activation")]
        else:
            act = growth["activation"].iloc[0] if "activation" in growth else _activation_of(meta)
            panels = [(act, growth, "fig_phase_diagram")]
        for act, g, stem in panels:
            ax = plots.plot_phase_diagram(g, critical=_critical_line(act, g))
            ax.set_title(f"order to chaos ({act}): growth of E[δ²] per layer")
            figs += plots.save(ax, folder / stem)[:1]
    gaps = _width_gaps(pooled, params)
    if gaps is not None:
        figs += _finite_width_figure(*gaps, folder)
    samples_path = folder / "samples.parquet"
    if samples_path.exists():
        samples = pd.read_parquet(samples_path)
        for quantity, g in samples.groupby("quantity", sort=False):
            sym = "z" if quantity == "z" else "δ"
            ax = plots.plot_histogram(g)
            ax.set_title(f"distribution of standardised {sym}⁽ˡ⁾ against N(0, 1)")
            figs += plots.save(ax, folder / f"fig_{quantity}_histogram")[:1]
            ax = plots.plot_qq(_qq(g))
            ax.set_title(f"normal QQ plot of {sym}⁽ˡ⁾")
            figs += plots.save(ax, folder / f"fig_{quantity}_qq")[:1]
    lv = pooled[pooled["statistic"] == "log_delta_norm_sq_var"]
    lv_others = [p for p in varying if p not in ("width", "depth")]
    if not lv.empty and "layer_width" in lv and len(lv_others) > 1:
        # One line per combination of the other parameters, labelled by all of them.
        from .plots import SYMBOLS

        lv = lv.assign(
            setting=[
                ", ".join(f"{SYMBOLS.get(p, p)} = {r[p]}" for p in lv_others)
                for _, r in lv.iterrows()
            ]
        )
        lv_others = ["setting"] if lv["setting"].nunique() <= 10 else lv_others
    if not lv.empty and "layer_width" in lv and len(lv_others) <= 1:
        lv = lv.copy()
        L = lv.groupby(params or (lambda _: 0))["layer"].transform("max")
        lv = lv[lv["layer"] < L]
        # β⁽ˡ⁾ = Σ_{j=l}^{L−1} 1/n_j for equal hidden widths (the layers δ⁽ˡ⁾ passed through).
        lv["beta"] = (L[lv.index] - lv["layer"]) / lv["layer_width"]
        ax = plots.plot_vs_parameter(
            lv,
            x="beta",
            y="estimate",
            ylabel=r"$\mathrm{Var}[\log\|\delta^{(l)}\|^2]$",
            hue=lv_others[0] if lv_others else None,
            yerr="std_error",
            theory="prediction" if "prediction" in lv and lv["prediction"].notna().any() else None,
            xlabel=r"$\beta = \sum_j 1/n_j$",
        )
        ax.set_title("Var log‖δ⁽ˡ⁾‖² against β (hidden layers)", fontsize="medium")
        if lv_others and lv[lv_others[0]].nunique() > 3:  # room for a long legend
            ax.figure.set_size_inches(11, 4.8)
        figs += plots.save(ax, folder / "fig_log_norm_variance")[:1]
    return figs


def _width_gaps(pooled: pd.DataFrame, params: list[str]):
    """Rows of E[δ⁽¹⁾²] of a sweep over width with the measured gap to the infinite-width
    prediction (``gap``, ``err``) and the finite-width theory's (``theory_gap``), against
    ``inv_width`` = 1/width; and the parameter that makes the panels. ``None`` when width is
    not swept over more than two values."""
    if "width" not in params or pooled["width"].nunique() <= 2 or "rel_error" not in pooled:
        return None
    varying = [p for p in params if pooled[p].nunique() > 1]
    others = [p for p in varying if p != "width"]  # one line per value of these
    rows = pooled[(pooled["statistic"] == "delta_sq") & (pooled["layer"] == 1)]
    # One panel per activation when several are swept (their gaps differ by orders of
    # magnitude), one line per setting of the other parameters.
    panel = "activation" if "activation" in others else None
    rest = [p for p in others if p != panel]
    if panel is not None:  # a parameter set per activation (σ_w²) names no line
        rest = [p for p in rest if rows.groupby(panel)[p].nunique().max() > 1]
    rows = _with_setting(rows, rest).dropna(subset=["prediction"])
    if rows.empty or rows["setting"].nunique() > 10:
        return None
    inf = rows["prediction"]
    if "prediction_infinite_width" in rows:
        inf = rows["prediction_infinite_width"].fillna(rows["prediction"])
    rows = rows.assign(
        inv_width=1.0 / rows["width"],
        gap=rows["estimate"] / inf - 1,
        err=rows["std_error"] / inf.abs(),
        theory_gap=(rows["prediction"] / inf - 1).where(rows["prediction"] != inf),
    )
    return rows, panel


def _coefficients(rows: pd.DataFrame, panel: str | None) -> pd.DataFrame | None:
    """The 1/n coefficient c of gap ≈ c/n per line of the 1/width figure: measured (weighted
    least squares through the origin with weights 1/err², and its standard error) and
    predicted (the finite-width theory's gaps, same weights)."""
    out = []
    keys = [k for k in (panel, "setting") if k is not None]
    for key, g in rows.groupby(keys, sort=True):
        g = g[np.isfinite(g["gap"]) & (g["err"] > 0)]
        if len(g) < 2 or g["theory_gap"].isna().all():
            continue
        x, w = g["inv_width"].to_numpy(), 1.0 / g["err"].to_numpy() ** 2
        sxx = float(np.sum(w * x * x))
        measured = float(np.sum(w * x * g["gap"])) / sxx
        predicted = float(np.nansum(w * x * g["theory_gap"].to_numpy())) / sxx
        key = key if isinstance(key, tuple) else (key,)
        out.append(
            {
                **dict(zip(keys, key)),
                "predicted n·gap": predicted,
                "measured n·gap": measured,
                "± SE": 1.0 / np.sqrt(sxx),
                "z": (measured - predicted) * np.sqrt(sxx),
            }
        )
    return pd.DataFrame(out) if out else None


def _finite_width_figure(rows: pd.DataFrame, panel: str | None, folder: Path) -> list[Path]:
    """Relative gap of E[δ⁽¹⁾²] to infinite-width theory against 1/width, one panel per
    value of ``panel`` (or one panel), Monte Carlo with error bars, derived 1/n theory dashed."""
    values = [None] if panel is None else sorted(rows[panel].unique())
    fig, axes = _panel_grid(len(values), (4.2, 2.6), (3.4, 0.4))
    cols = min(len(values), 4)
    hue = "setting" if rows["setting"].nunique() > 1 else None
    for i, (ax, value) in enumerate(zip(axes, values)):
        sub = rows if panel is None else rows[rows[panel] == value]
        plots.plot_vs_parameter(
            sub,
            x="inv_width",
            y="gap",
            hue=hue,
            yerr="err",
            theory="theory_gap" if sub["theory_gap"].notna().any() else None,
            xlabel="1 / width",
            ylabel="E[δ⁽¹⁾²]: MC / infinite-width − 1" if i % cols == 0 else "",
            ax=ax,
        )
        if value is not None:
            ax.set_title(f"{panel} = {value}", fontsize="small")
        if i != len(values) - 1 and ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.suptitle("finite-width gap of E[δ²] at layer 1 against 1/width", fontsize="medium")
    return plots.save(axes[0], folder / "fig_finite_width")[:1]


def _panel_grid(n: int, width: tuple[float, float], height: tuple[float, float]):
    """A figure of n panels, at most 4 per row, (inches per panel, extra inches) wide and high;
    returns the figure and its n visible axes (the unused cells of the last row are hidden)."""
    import matplotlib.pyplot as plt

    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(width[0] * cols + width[1], height[0] * rows + height[1]),
        layout="constrained",
        squeeze=False,
    )
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, list(axes.ravel()[:n])


def _facets(pooled: pd.DataFrame, stat: str, varying: list[str]):
    """Per-layer plot of one statistic: one panel per value of the first swept parameter,
    one colour per value of the second; ``None`` when the sweep is too large to read."""

    if len(varying) > 2:
        return None
    # The parameter with fewer values makes the panels, the other the colours (ties: by name),
    # so the figure does not depend on the order of the keys in the TOML.
    ordered = sorted(varying, key=lambda p: (pooled[p].nunique(), p))
    panel = ordered[0] if len(ordered) == 2 else None
    hue = ordered[-1] if ordered else None
    panels = [None] if panel is None else sorted(pooled[panel].unique())
    if len(panels) > 12 or (hue is not None and pooled[hue].nunique() > 10):
        return None
    fig, axes = _panel_grid(len(panels), (4.6, 0.8), (3.6, 0.2))
    for ax, value in zip(axes, panels):
        sub = pooled if panel is None else pooled[pooled[panel] == value]
        positive = bool((sub.loc[sub["statistic"] == stat, "estimate"] > 0).all())
        plots.plot_layer_statistic(
            sub, stat, hue=hue, ax=ax, log=None if stat == "delta_sq" and positive else False
        )
        if panel is not None:
            ax.set_title(f"{panel} = {value}", fontsize="small")
    return fig


def _qq(samples: pd.DataFrame, n: int = 200) -> pd.DataFrame:
    """Sample quantiles at n normal plotting positions, per layer (for a QQ plot)."""
    from scipy import stats

    p = (np.arange(1, n + 1) - 0.5) / n
    rows = [
        pd.DataFrame(
            {"layer": l, "theoretical": stats.norm.ppf(p), "sample": np.quantile(g["value"], p)}
        )
        for l, g in samples.groupby("layer", sort=True)
    ]
    return pd.concat(rows, ignore_index=True)


def _critical_line(activation, growth: pd.DataFrame) -> pd.DataFrame | None:
    """The theoretical critical line σ_w²(σ_b²) of ``activation`` over the measured σ_b² range,
    or ``None`` where theory finds no order-to-chaos transition."""
    from .. import theory

    sb2 = np.linspace(growth["sigma_b2"].min(), growth["sigma_b2"].max(), 25)
    try:
        sw2 = np.asarray(theory.critical_sigma_w(np.sqrt(sb2), activation)) ** 2
    except ValueError:  # the activation has no order-to-chaos transition in the searched range
        return None
    return pd.DataFrame({"sigma_w2": sw2, "sigma_b2": sb2})


def _activation_of(meta: dict) -> str:
    """The activation of a run whose activation is not swept: the base config's, else the
    default :class:`~deltastats.workflow.config.Experiment`'s."""
    from .config import Experiment

    cfg = meta.get("config", {})
    base = cfg.get("base", cfg)
    return base.get("activation", Experiment().activation)


#: Readable names of the multiple-testing methods.
_CORRECTION_NAMES = {"holm": "Holm", "fdr_bh": "Benjamini–Hochberg", "bonferroni": "Bonferroni"}


def _analysis(meta: dict) -> dict:
    """The analysis settings the run recorded (defaults for folders written before they were)."""
    recorded = dict(meta.get("analysis") or {})
    defaults = {
        "confidence": 0.95,
        "method": "clt",
        "alpha": 0.01,
        "correction": "holm",
        "min_networks": 100,
    }
    return {**defaults, **recorded}


def excluded_networks(table: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """Per point with excluded networks: ``params…, excluded, networks`` (excluded of drawn).

    Networks whose trace overflowed (inf/NaN in z, δ or the loss) are left out of every
    statistic; the report says so wherever a reader looks, since the survivors are biased.
    """
    if "n_overflow" not in table.columns:
        return pd.DataFrame()
    rows = table[_pooled_mask(table) & (table["n_overflow"].fillna(0) > 0)]
    if rows.empty:
        return pd.DataFrame()
    out = (rows.groupby(params, sort=True) if params else rows.groupby(lambda _: 0)).agg(
        excluded=("n_overflow", "max"), used=("n_networks", "max")
    )
    out["networks"] = out["excluded"] + out["used"]
    return out.drop(columns="used").reset_index(drop=not params)


def exclusions_text(exclusions: pd.DataFrame) -> str:
    """One sentence per results folder: how many networks were excluded where, and why."""
    parts = []
    for _, r in exclusions.iterrows():
        where = ", ".join(f"{k} = {v}" for k, v in r.items() if k not in ("excluded", "networks"))
        parts.append(
            f"{int(r['excluded'])} of {int(r['networks'])}" + (f" at {where}" if where else "")
        )
    return (
        "Networks excluded for numerical overflow (inf/NaN in z, δ or the loss): "
        + "; ".join(parts)
        + ". Their rows carry no verdict: the surviving networks are a biased sample."
    )


def key_statistics(table: pd.DataFrame, params: list[str], max_points: int = 16) -> pd.DataFrame:
    """Per point: E[δ²] and E‖∂J/∂W‖² at the first and last layer, as "estimate ± se" text.

    A compact view of how the swept parameters move the gradient statistics (e.g. the ½ in
    the loss, the 1/B batch average and weight decay λ). Empty for more than ``max_points``.
    """
    pooled = table[_pooled_mask(table)]
    groups = list(pooled.groupby(params, sort=False)) if params else [((), pooled)]
    if len(groups) > max_points:
        return pd.DataFrame()
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(params, key))
        L = int(g["layer"].max())
        for stat, sym in (("delta_sq", "E[δ²]"), ("grad_w_sq", "E‖∂J/∂W‖²")):
            for layer in (1, L):
                r = g[(g["statistic"] == stat) & (g["layer"] == layer)]
                if not r.empty:
                    r = r.iloc[0]
                    row[f"{sym} l={layer}"] = f"{r['estimate']:.4g} ± {r['std_error']:.2g}"
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in out.columns:
        if c == "rel_error":
            out[c] = out[c].map(lambda v: "" if pd.isna(v) else f"{v:+.2%}")
        elif out[c].dtype.kind == "f":
            out[c] = out[c].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    return out


def _comparison_rows(table: pd.DataFrame) -> pd.DataFrame:
    if "verdict" not in table.columns:
        return table.iloc[0:0]
    comp = table[_pooled_mask(table) & table["verdict"].notna()]
    # delta_norm_sq = n_l · delta_sq (estimate, interval and prediction alike): the same
    # claim in other units, so the report shows it once, as delta_sq (per_layer.csv has both).
    return _exact_zeros(comp[comp["statistic"] != "delta_norm_sq"])


def _exact_zeros(rows: pd.DataFrame) -> pd.DataFrame:
    """A prediction that is zero by symmetry comes out of quadrature as rounding noise (e.g.
    −1.9e−21); below 10⁻⁹ of the row's standard error it is shown as the 0 it is."""
    if "prediction" not in rows.columns:
        return rows
    rows = rows.copy()
    for col in ("prediction", "prediction_infinite_width"):
        if col in rows.columns:
            pred = rows[col].astype(float)
            noise = pred.abs() <= 1e-9 * rows["std_error"].astype(float).abs()
            rows[col] = pred.where(~noise, 0.0)
    return rows


def write_report(folder: str | Path, *, max_rows: int = 80) -> Report:
    """Write ``report.md``, ``report.html``, figures and LaTeX tables into a results folder.

    Parameters
    ----------
    folder : path
        A results folder of ``deltastats run`` or ``deltastats sweep``.
    max_rows : int
        Longest MC-vs-theory table printed in the report; longer ones are summarised per point.
        The printed table is also written as ``comparison.csv`` and ``comparison.tex`` (LaTeX);
        every row is in the results table (``results.parquet`` / ``per_layer.csv``).

    Returns
    -------
    Report
    """
    folder = Path(folder)
    table, meta = load_results(folder)
    params = parameters(table)
    figs = _figures(table, params, meta, folder)
    comp = _comparison_rows(table)
    if not comp.empty:
        summary = summarize(comp)
    else:
        summary = "No statistic here has a theory prediction."
        notes = table["assumption"].dropna().unique() if "assumption" in table else []
        reasons = sorted({n for n in notes if str(n).startswith("no theory:")})
        if reasons:
            summary += " " + " ".join(r[0].upper() + r[1:] + "." for r in reasons)
    exclusions = excluded_networks(table, params)
    if not exclusions.empty:
        summary = exclusions_text(exclusions) + " " + summary
    analysis = _analysis(meta)
    min_networks = analysis["min_networks"]
    if "n_networks" in table and len(table) and table["n_networks"].min() < min_networks:
        summary = (
            f"Only {int(table['n_networks'].min())} networks per point: intervals for skewed "
            f"statistics (delta_sq, delta_var, kurtosis) need about {min_networks} or more, so "
            "treat the verdicts below as indicative. " + summary
        )
    kurt = table[(table["statistic"] == "z_kurt") & _pooled_mask(table)].dropna(subset=["estimate"])
    if not comp.empty and not kurt.empty and (comp["verdict"] == "disagrees").any():
        worst = kurt.loc[kurt["estimate"].abs().idxmax()]
        summary += (
            f" The largest excess kurtosis of z (non-Gaussianity) is {worst['estimate']:.2f}, "
            f"at layer {int(worst['layer'])}" + "".join(f", {p} = {worst[p]}" for p in params) + "."
        )
    tables: list[Path] = []
    shown = params + [c for c in SHOWN if c in comp.columns]
    if len(comp) <= max_rows or not params:
        body = comp[shown]
    else:
        # |z| over the judged rows only: a row without a verdict keeps its z for reference,
        # and its size says nothing about the theory (e.g. an underived cross-sample term).
        judged_z = comp["z_score"].where(comp["verdict"].isin(["agrees", "disagrees"]))
        body = (
            comp.assign(judged_z=judged_z)
            .groupby(params, sort=True)
            .agg(
                rows=("verdict", "size"),
                judged=("verdict", lambda v: int(v.isin(["agrees", "disagrees"]).sum())),
                agrees=("verdict", lambda v: int((v == "agrees").sum())),
                max_abs_z=("judged_z", lambda v: float(v.abs().max())),
            )
            .reset_index()
        )
    if not body.empty:
        # The table shown in the report, for papers; the full rows stay in the results table.
        body.to_csv(folder / "comparison.csv", index=False)
        (folder / "comparison.tex").write_text(
            latex_table(_fmt(body), caption=summary, label=f"tab:deltastats-{folder.name}")
        )
        tables += [folder / "comparison.csv", folder / "comparison.tex"]
    cfg = meta.get("config", {})
    name = meta.get("name") or cfg.get("name", folder.name)
    page = _layout(name, cfg, meta, table, params, comp, body, figs, summary, analysis)
    md_path = folder / "report.md"
    md_path.write_text(page.markdown())
    html_path = folder / "report.html"
    html_path.write_text(page.html())
    return Report(md_path, html_path, tuple(figs), tuple(tables), summary)


def _layout(name, cfg, meta, table, params, comp, body, figs, summary, analysis) -> Layout:
    """Summary, headline figure, compact table, long table, other figures, config,
    provenance (see :mod:`deltastats.workflow.report_layout`)."""
    # name and description come from the user's config: escaped, so that a "<script>" in
    # them stays text in every Markdown renderer that passes HTML through.
    page = Layout(f"deltastats report: {name}")
    if cfg.get("description"):
        page.add("", _md_text(" ".join(str(cfg["description"]).split())))
    if meta.get("quick"):
        text = (
            "**Quick run** (`--quick`: the config's [quick] sizes, few networks): a smoke "
            "test of the pipeline, not a result; run without --quick for the numbers."
        )
        page.add("", text, f'<div class="banner">{html.escape(text.replace("**", ""))}</div>')
    # The family is every judged row of the results table (a sweep adjusts all its points
    # together, see compare.family_verdicts).
    judged = int(table["verdict"].isin(["agrees", "disagrees"]).sum()) if "verdict" in table else 0
    family = f"all {judged} judged rows" + (" of the sweep" if meta.get("kind") == "sweep" else "")
    verdicts = (
        "Verdicts test H₀: E = prediction with the t law of the between-network standard error "
        "(with the prediction's numerical uncertainty added in quadrature where it has one); "
        f"p-values {_CORRECTION_NAMES.get(analysis['correction'], analysis['correction'])}"
        f"-adjusted across {family} (level {analysis['alpha']:g}); intervals: "
        f"{analysis['method']} at {analysis['confidence']:.0%}."
    )
    page.add("Summary", f"{summary}\n\n{verdicts}")
    assumptions = ", ".join(sorted({str(a) for a in comp.get("assumption", pd.Series()).dropna()}))
    caps = {p: caption(p.stem, analysis, assumptions) for p in figs}
    head = [p for p in figs if p.stem.startswith(("fig_phase_diagram", "fig_delta_sq"))][:1]
    head = head or [p for p in figs if p.stem == "fig_finite_width"]
    for p in head:
        page.add("", f"![{p.stem}]({p.name})\n\n*{caps[p]}*", figure_html(p, caps[p]))
    pooled = _exact_zeros(table[_pooled_mask(table)])
    if not params:
        compact = compact_table(pooled)
        if not compact.empty:
            page.add(
                "Per layer: Monte Carlo [interval] beside theory",
                compact.to_markdown(index=False),
                table_html(compact),
            )
    key = key_statistics(table, params) if params else pd.DataFrame()
    if not key.empty:
        page.add(
            "Key statistics per point (estimate ± standard error)",
            key.to_markdown(index=False),
            table_html(key),
        )
    if not body.empty:
        long = _fmt(body)
        page.add(
            "Monte Carlo vs theory, every compared row",
            long.to_markdown(index=False),
            f"<details open><summary>{len(long)} rows</summary>{table_html(long)}</details>",
        )
    else:
        page.add("Monte Carlo vs theory", "_no statistic has a theory prediction here_")
    gaps = _width_gaps(table[_pooled_mask(table)], params) if params else None
    coef = _coefficients(*gaps) if gaps is not None else None
    if coef is not None:
        shown = coef.rename(columns={"setting": "line"}).round(3)
        text = (
            "The slope of each line of the 1/width figure: c in E[δ⁽¹⁾²]/infinite-width − 1 "
            "≈ c/n, fitted through the origin by weighted least squares (weights 1/SE²), for "
            "the Monte Carlo and for the derived 1/n-corrected theory (not fitted: the same fit "
            "to its own predictions)."
        )
        page.add(
            "1/n coefficients of E[δ⁽¹⁾²]",
            f"{text}\n\n{shown.to_markdown(index=False)}",
            f"<p>{html.escape(text)}</p>{table_html(shown)}",
        )
    rest = [p for p in figs if p not in head]
    varying = [p for p in params if table[p].nunique() > 1]
    missing = ""
    if len(varying) > 2 and not any(p.stem == "fig_delta_sq" for p in figs):
        missing = (
            f"Per-layer figures (E[δ²], E[δ] per layer) are drawn for sweeps of at most two "
            f"varying parameters; this one varies {len(varying)} ({', '.join(varying)}): every "
            "row is in the tables and in results.parquet."
        )
    if rest or missing:
        page.add(
            "Figures",
            "\n\n".join([f"![{p.stem}]({p.name})\n\n*{caps[p]}*" for p in rest] + [missing]),
            "".join(figure_html(p, caps[p]) for p in rest)
            + (f"<p>{html.escape(missing)}</p>" if missing else ""),
        )
    conf = config_text(cfg)
    page.add(
        "Configuration", f"```toml\n{conf}\n```", f"<pre>{html.escape(conf, quote=False)}</pre>"
    )
    prov = provenance(meta)
    page.add(
        "Provenance",
        "\n".join(f"- {line}" for line in prov),
        "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in prov) + "</ul>",
    )
    return page


def _md_text(value) -> str:
    """``value`` as Markdown text: HTML special characters escaped (no raw HTML)."""
    return html.escape(str(value), quote=False)
