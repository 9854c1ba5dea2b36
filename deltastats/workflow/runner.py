"""The main job: run one :class:`~deltastats.workflow.config.Experiment` and write its results
folder."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import theory
from ..engine import backprop
from ..stats.sampling import FewNetworksWarning, estimate
from .compare import compare
from .config import Experiment, analysis_settings
from .metadata import metadata, now, write_json_atomic


@dataclass(frozen=True)
class RunResult:
    """What :func:`run_experiment` produced.

    Attributes
    ----------
    table : DataFrame
        Per-layer table: ``layer, layer_width, statistic, estimate, std_error, ci_low, ci_high, …``.
    out_dir : Path or None
        The results folder (``None`` if nothing was written).
    files : tuple of Path
        Files written.
    """

    table: pd.DataFrame
    out_dir: Path | None
    files: tuple[Path, ...]


def analyse(
    exp: Experiment,
    *,
    progress: bool = False,
    confidence: float = 0.95,
    alpha: float = 0.01,
    method: str = "clt",
    correction: str = "holm",
    finite_width: bool = True,
) -> pd.DataFrame:
    """Monte Carlo estimates of one experiment beside theory: the unit of work of a sweep point.

    Runs :func:`deltastats.estimate` (intervals from the spread between networks, ``method``
    at level ``confidence``), predicts with :func:`deltastats.theory.predict` where theory
    covers the setting (theory says what it leaves out: :class:`~deltastats.theory.
    TheoryNotCovered` for the whole setting, :func:`deltastats.theory.not_covered` for single
    statistics), and joins them with :func:`deltastats.compare` (verdicts at level ``alpha``
    with the multiple-testing ``correction`` across the rows). With ``finite_width`` (the
    default) theory adds its 1/n terms, each verdict is held against the most complete
    prediction (:func:`deltastats.theory.for_verdicts`, the infinite-width one beside it in
    ``prediction_infinite_width``), and an infinite-width prediction whose 1/n term is not
    derived is shown with the verdict ``no verdict`` and a ``note``.

    Returns
    -------
    DataFrame
        Pooled per-layer rows: ``layer, layer_width, statistic, estimate, std_error, ci_low,
        ci_high, n_networks, n_inputs, n_overflow, prediction, assumption,
        prediction_infinite_width, note, numerical_error, rel_error, z_score, p_value,
        p_adjusted, verdict`` (the theory columns are empty where no prediction
        exists; ``assumption`` then says why when theory declined the whole setting).
    """
    net = exp.net()
    with warnings.catch_warnings():
        # Few networks is the user's explicit choice here (e.g. --quick); the table says n.
        warnings.simplefilter("ignore", FewNetworksWarning)
        est = estimate(
            net,
            exp.input_law(),
            exp.target_law(),
            exp.loss,
            n_networks=exp.n_networks,
            batch=exp.batch,
            seed=exp.seed,
            chunk=exp.chunk,
            confidence=confidence,
            method=method,
            weight_decay=exp.weight_decay,
            dtype=exp.np_dtype,
            progress=progress,
        )
    table = est.per_layer()
    table.insert(1, "layer_width", [net.widths[l] for l in table["layer"]])
    table["n_overflow"] = est.n_overflow
    setting = dict(
        inputs=exp.input_law(),
        targets=exp.target_law(),
        loss=exp.loss,
        batch=exp.batch,
        weight_decay=exp.weight_decay,
    )
    try:
        pred = theory.predict(net, finite_width=finite_width, **setting)
        skipped = theory.not_covered(net, **setting)
        pred = theory.for_verdicts(pred, finite_width=finite_width)
    except theory.TheoryNotCovered as err:
        table["assumption"] = f"no theory: {err}"
        return table
    # Rows theory does not cover well enough are shown with their prediction and the reason,
    # without a verdict.
    uncovered = pred["statistic"].isin(list(skipped))
    pred.loc[uncovered, "testable"] = False
    pred.loc[uncovered, "note"] = pred.loc[uncovered, "statistic"].map(skipped)
    comp = compare(est, pred, alpha=alpha, correction=correction)
    extra = ["prediction", "assumption", "prediction_infinite_width", "note"]
    extra += ["numerical_error", "rel_error", "z_score", "p_value", "p_adjusted"]
    return table.merge(
        comp[["layer", "statistic", *extra, "verdict"]], on=["layer", "statistic"], how="left"
    )


@dataclass(frozen=True)
class Analyse:
    """:func:`analyse` bound to analysis settings: a sweep's point function for a config with
    an ``[analysis]`` table (picklable, with a repr that names the settings, which enters the
    points' hashes)."""

    confidence: float = 0.95
    method: str = "clt"
    alpha: float = 0.01
    correction: str = "holm"

    def __post_init__(self) -> None:
        analysis_settings(self.confidence, self.method, self.alpha, self.correction)

    def __call__(self, exp: Experiment) -> pd.DataFrame:
        return analyse(
            exp,
            confidence=self.confidence,
            method=self.method,
            alpha=self.alpha,
            correction=self.correction,
        )

    def settings(self) -> dict:
        """The settings as :func:`analysis_settings` records them."""
        return analysis_settings(self.confidence, self.method, self.alpha, self.correction)


def gaussianity_samples(
    exp: Experiment, *, n_networks: int = 16, max_values: int = 5_000
) -> pd.DataFrame:
    """Standardised samples of z⁽ˡ⁾ and δ⁽ˡ⁾ at the first, middle and last hidden layers.

    Drawn from the first ``n_networks`` networks of the experiment (the same random streams as
    the estimates), standardised per layer by their own mean and standard deviation, and
    thinned deterministically to at most ``max_values`` per (quantity, layer).

    Returns
    -------
    DataFrame
        Columns ``quantity`` (``"z"`` or ``"delta"``), ``layer``, ``value``.
    """
    net = exp.net()
    L = net.depth
    layers = sorted({1, max(1, L // 2), max(1, L - 1)})
    m = min(n_networks, exp.n_networks)
    params = net.sample(m, exp.seed, dtype=exp.np_dtype)
    x = exp.input_law().sample(net.widths[0], exp.batch, exp.seed, n_networks=m)
    y = exp.target_law().sample(x, net.widths[-1], exp.seed)
    trace = backprop(net, params, x, y, loss=exp.loss, grads=False, keep_layers=layers, warn=False)
    rng = np.random.default_rng(exp.seed)
    frames = []
    for quantity, arrays in (("z", trace.z), ("delta", trace.delta)):
        for l in layers:
            v = np.asarray(arrays[l - 1], dtype=np.float64).ravel()
            v = v[np.isfinite(v)]
            if v.size < 2 or v.std() == 0:
                continue
            if v.size > max_values:
                v = v[np.sort(rng.choice(v.size, max_values, replace=False))]
            frames.append(
                pd.DataFrame({"quantity": quantity, "layer": l, "value": (v - v.mean()) / v.std()})
            )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_experiment(
    exp: Experiment | None = None,
    out_dir: str | Path | None = "results",
    *,
    folder: str | Path | None = None,
    progress: bool = True,
    confidence: float = 0.95,
    method: str = "clt",
    alpha: float = 0.01,
    correction: str = "holm",
) -> RunResult:
    """Run an experiment and write ``<out_dir>/<name>/``: per-layer table (CSV), theory beside
    Monte Carlo, Gaussianity samples, ``metadata.json`` and the report (md, html, figures).

    Parameters
    ----------
    exp : Experiment or None
        ``None`` runs the built-in default (tanh, depth 10, width 128, σ_w² = 1.5, 256 × 64).
    out_dir : path or None
        Parent folder; ``None`` writes nothing.
    folder : path or None
        The results folder itself (instead of ``<out_dir>/<name>/``), as ``--out`` on the
        command line.
    progress : bool
        Show a progress bar.
    confidence : float
        Level of the intervals across networks.
    method : {"clt", "jackknife", "bootstrap"}
        Interval method.
    alpha, correction
        Level and multiple-testing method of the verdicts (:func:`deltastats.compare`).
        ``confidence``, ``method``, ``alpha`` and ``correction`` are recorded in
        ``metadata.json`` under ``analysis``, where the report reads them.

    Returns
    -------
    RunResult
    """
    exp = Experiment() if exp is None else exp
    if not isinstance(exp, Experiment):
        raise ValueError(f"exp must be an Experiment or None, got {type(exp).__name__}")
    if folder is not None:
        folder = _writable_folder(Path(folder))
    elif out_dir is not None:
        folder = _writable_folder(Path(out_dir) / exp.name)
    started = now()
    settings = analysis_settings(confidence, method, alpha, correction)
    table = analyse(
        exp,
        progress=progress,
        confidence=confidence,
        method=method,
        alpha=alpha,
        correction=correction,
    )
    files: list[Path] = []
    if folder is not None:
        from .report import write_report

        csv = folder / "per_layer.csv"
        table.to_csv(csv, index=False)
        samples = gaussianity_samples(exp)
        if not samples.empty:
            samples.to_parquet(folder / "samples.parquet", index=False)
            files.append(folder / "samples.parquet")
        meta = metadata(
            exp.to_dict(),
            name=exp.name,
            seed=exp.seed,
            analysis=settings,
            started=started,
            finished=now(),
        )
        files += [csv, write_json_atomic(folder / "metadata.json", meta)]
        rep = write_report(folder)
        files += [rep.markdown, rep.html, *rep.figures, *rep.tables]
    return RunResult(table, folder, tuple(files))


def _writable_folder(folder: Path) -> Path:
    """Create ``folder`` and check that files can be written there, before any work; remove
    the temporaries an earlier run killed mid-write left behind."""
    import tempfile

    from .folder import clean_temporaries

    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=folder, delete=True).close()
    except OSError as err:
        raise ValueError(f"cannot write to the output folder {str(folder)!r}: {err}") from None
    clean_temporaries(folder, ("metadata.json", "per_layer.csv", "samples.parquet"))
    return folder


def print_table(table: pd.DataFrame, statistics=("delta_mean", "delta_sq", "z_kurt")) -> None:
    """Print a compact per-layer view: estimate [CI] per statistic, theory and verdict."""
    rows = []
    for (layer, width), g in table.groupby(["layer", "layer_width"], sort=True):
        row = {"layer": layer, "width": width}
        for stat in statistics:
            r = g[g["statistic"] == stat]
            if r.empty:
                continue
            r = r.iloc[0]
            row[stat] = f"{r.estimate:.4g} [{r.ci_low:.3g}, {r.ci_high:.3g}]"
            if "prediction" in r and pd.notna(r.get("prediction")):
                # zero by symmetry, printed as the 0 it is (quadrature noise below 1e-9 SE)
                pred = 0.0 if abs(r.prediction) <= 1e-9 * abs(r.std_error) else r.prediction
                row[f"{stat} theory"] = f"{pred:.4g} ({r.verdict})"
        rows.append(row)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(pd.DataFrame(rows).to_string(index=False))
    if "n_overflow" in table.columns and table["n_overflow"].max() > 0:
        k = int(table["n_overflow"].max())
        m = int(table["n_networks"].max()) + k
        print(
            f"\n{k} of {m} networks excluded for numerical overflow (inf/NaN in z, δ or the "
            "loss): the verdicts above are undefined, the survivors are a biased sample"
        )
