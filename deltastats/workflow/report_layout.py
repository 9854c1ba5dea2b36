"""The report's reading order and words: sections rendered to Markdown and HTML from one list,
figure captions that say what is plotted and under which assumption, the compact per-layer
table, and a readable configuration.

A reader meets, in order: what was run (and a banner for ``--quick`` runs), the summary with
its verdicts, the headline figure, a compact table (a row per layer; Monte Carlo with its
interval beside theory and the verdict, per key statistic), the long table, the other figures,
the configuration and the provenance. Nothing here computes a statistic; it only arranges what
the run recorded.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

#: Statistics of the compact table, with the symbol a reader knows them by.
KEY_STATISTICS = {
    "delta_mean": "E[δ]",
    "delta_sq": "E[δ²]",
    "z_var": "Var z",
    "log_delta_norm_sq_var": "Var log‖δ‖²",
}


@dataclass
class Section:
    """One part of the report: a heading, Markdown text and its HTML (same content)."""

    heading: str
    markdown: str
    html: str
    level: int = 2


@dataclass
class Layout:
    """The sections of a report, rendered to both formats."""

    title: str
    sections: list[Section] = field(default_factory=list)

    def add(self, heading: str, markdown: str, html_text: str | None = None, level: int = 2):
        """Append a section; ``html_text`` defaults to the escaped Markdown as paragraphs."""
        if html_text is None:
            html_text = "".join(
                f"<p>{html.escape(p)}</p>" for p in markdown.split("\n\n") if p.strip()
            )
        self.sections.append(Section(heading, markdown, html_text, level))

    def markdown(self) -> str:
        """The report as Markdown: the title as ``#``, each section under its heading."""
        out = [f"# {html.escape(self.title, quote=False)}", ""]
        for s in self.sections:
            if s.heading:
                out += [f"{'#' * s.level} {s.heading}", ""]
            out += [s.markdown, ""]
        return "\n".join(out)

    def html(self) -> str:
        """The report as one self-contained HTML page (inline style, figures embedded)."""
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
            "padding:0 1em;line-height:1.45;color:#222}"
            "table.t{border-collapse:collapse;font-size:13px;margin:.5em 0 1em}"
            "table.t td,table.t th{padding:3px 9px;border-bottom:1px solid #ddd;text-align:right}"
            "table.t th{background:#f4f4f4}td.disagrees{color:#b00020;font-weight:600}"
            "figure{margin:1.2em 0}figure img{width:100%;max-width:900px;display:block}"
            "figcaption{font-size:14px;color:#444;max-width:900px}"
            ".banner{background:#fff3cd;border:1px solid #e0c060;padding:.6em 1em;margin:1em 0}"
            "pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:13px}"
            "details summary{cursor:pointer;font-weight:600;margin:.5em 0}"
        )
        body = "".join(
            (f"<h{s.level}>{html.escape(s.heading)}</h{s.level}>" if s.heading else "") + s.html
            for s in self.sections
        )
        t = html.escape(self.title)
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{t}</title>"
            f"<style>{style}</style></head><body><h1>{t}</h1>{body}</body></html>"
        )


def caption(stem: str, analysis: dict, assumptions: str) -> str:
    """What figure ``fig_<…>.png`` shows, in words (interval level and theory named)."""
    ci = f"{analysis['confidence']:.0%} {analysis['method']} interval across networks"
    theory = f"theory dashed ({assumptions})" if assumptions else "no theory"
    if stem.startswith("fig_phase_diagram"):
        act = stem.removeprefix("fig_phase_diagram").lstrip("_")
        return (
            "Order to chaos" + (f" ({act})" if act else "") + ": the measured per-layer growth "
            "of log E[δ²] from the last hidden layer back to the first over (σ_w², σ_b²) "
            "(red: gradients explode towards the input); dashed: where the measured growth "
            "changes sign; black line: the mean-field critical line χ₁ = 1 of the same "
            "activation."
        )
    captions = {
        "fig_delta_sq": f"Second moment E[δ²] of the error signal per layer: Monte Carlo "
        f"(points, band: {ci}), {theory}.",
        "fig_delta_mean": f"Mean E[δ_j] of the error signal per hidden layer: Monte Carlo "
        f"(band: {ci}), {theory}; the output layer, whose spread is of another scale, is "
        "left out of the axis range.",
        "fig_stein_gap": f"Stein (integration-by-parts) estimate of E[δ_j] minus the pathwise "
        f"mean, per hidden layer (band: {ci}); 0 is what the Gaussian assumption predicts.",
        "fig_finite_width": "Relative gap of Monte Carlo E[δ²] at layer 1 to the theory row "
        "it is compared with, against 1/width (error bars: the estimate's standard error): an "
        "underived finite-width term shows as a slope.",
        "fig_log_norm_variance": "Variance of log(‖δ⁽ˡ⁾‖²/n_l) across networks and inputs at "
        "each hidden layer against β = Σ_j 1/n_j over the layers δ⁽ˡ⁾ passed through (error "
        "bars: standard error); theory dashed where derived (ReLU log-normal law). A narrow "
        "output (n_L = 1) adds a width-independent log-χ² part to every layer.",
        "fig_z_histogram": "Histogram of the standardised pre-activations z at the first, "
        "middle and last hidden layers (first 16 networks), against the standard normal.",
        "fig_delta_histogram": "Histogram of the standardised error signal δ at the first, "
        "middle and last hidden layers (first 16 networks), against the standard normal.",
        "fig_z_qq": "Normal QQ plot of the standardised z at the first, middle and last hidden "
        "layers: a straight line means Gaussian, as the theory assumes.",
        "fig_delta_qq": "Normal QQ plot of the standardised δ at the first, middle and last "
        "hidden layers.",
    }
    return captions.get(stem, stem.removeprefix("fig_").replace("_", " "))


def figure_html(path: Path, text: str) -> str:
    """An HTML ``<figure>`` with the PNG at ``path`` embedded (base64) and ``text`` as caption."""
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"/>'
        f"<figcaption>{html.escape(text)}</figcaption></figure>"
    )


def _cell(r: pd.Series) -> str:
    if not np.isfinite(r["estimate"]):
        return f"{r['estimate']:.4g}"
    lo, hi = r.get("ci_low"), r.get("ci_high")
    if lo is not None and np.isfinite(lo) and np.isfinite(hi):
        return f"{r['estimate']:.4g} [{lo:.3g}, {hi:.3g}]"
    return f"{r['estimate']:.4g}"


def compact_table(pooled: pd.DataFrame) -> pd.DataFrame:
    """A row per layer: Monte Carlo (estimate [interval]) per key statistic, and where theory
    has a prediction, the prediction and the verdict beside it."""
    rows = []
    for layer, g in pooled.groupby("layer", sort=True):
        row: dict = {"layer": int(layer)}
        if "layer_width" in g:
            row["width"] = int(g["layer_width"].iloc[0])
        for stat, sym in KEY_STATISTICS.items():
            r = g[g["statistic"] == stat]
            if r.empty:
                continue
            r = r.iloc[0]
            row[f"{sym} MC"] = _cell(r)
            pred = r.get("prediction")
            if pred is not None and pd.notna(pred):
                row[f"{sym} theory"] = f"{pred:.4g}"
                row[f"{sym} verdict"] = str(r.get("verdict", ""))
        rows.append(row)
    out = pd.DataFrame(rows)
    # A column is kept only where some layer has it (theory may cover a statistic partly).
    return out.dropna(axis=1, how="all").fillna("")


def table_html(df: pd.DataFrame) -> str:
    """An HTML table with the verdict cells marked (a disagreement stands out)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for _, r in df.iterrows():
        cells = []
        for c in df.columns:
            v = "" if pd.isna(r[c]) else str(r[c])
            cls = ' class="disagrees"' if v == "disagrees" else ""
            cells.append(f"<td{cls}>{html.escape(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="t"><tr>{head}</tr>{"".join(body)}</table>'


def config_text(cfg: dict) -> str:
    """The config as TOML-like ``key = value`` lines (tables for base, grid, points, quick)."""
    lines, tables = [], []
    for k, v in cfg.items():
        (tables if isinstance(v, dict | list) and k != "widths" else lines).append((k, v))
    out = [f"{k} = {_value(v)}" for k, v in lines]
    for k, v in tables:
        if isinstance(v, list) and all(isinstance(p, dict) for p in v):
            for p in v:
                out += ["", f"[[{k}]]"] + [f"{a} = {_value(b)}" for a, b in p.items()]
        elif isinstance(v, dict):
            out += ["", f"[{k}]"] + [f"{a} = {_value(b)}" for a, b in v.items()]
        else:
            out.append(f"{k} = {_value(v)}")
    return "\n".join(out)


def _value(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return '""'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return str(v)


def provenance(meta: dict) -> list[str]:
    """Provenance lines: versions, platform, commit, times, seeds (counted, not listed)."""
    lines = [
        "versions: " + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()),
        f"platform: {meta.get('platform', '?')}, python {meta.get('python', '?')}",
        f"numerics: {meta.get('numerics', {})}",
        f"git commit: {meta.get('git_commit')}",
        f"started {meta.get('started', '?')}, finished {meta.get('finished', '?')}",
    ]
    if "point_seeds" in meta:
        seeds = meta["point_seeds"] or {}
        lines.append(
            f"seeds: sweep seed {meta.get('sweep_seed')}; one derived seed per point "
            f"({len(seeds)} points, listed in points.csv and metadata.json)"
        )
    elif "seed" in meta:
        lines.append(f"seed: {meta['seed']}")
    return lines
