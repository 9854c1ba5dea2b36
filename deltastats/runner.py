"""The main job: run one :class:`~deltastats.config.Experiment` and write its results folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import plots
from .config import Experiment
from .engine import backprop
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


def per_network_summaries(exp: Experiment, *, progress: bool = False) -> dict[str, np.ndarray]:
    """Per-network, per-layer means of δ and δ² over inputs and units.

    Returns
    -------
    dict of str → ndarray ``(M, L)``
        ``delta_mean`` and ``delta_sq``: network m's average of δ_j⁽ˡ⁾ and δ_j⁽ˡ⁾² over its B
        inputs and the n_l units. Networks are the independent unit of the design.
    """
    net, xlaw, ylaw = exp.net(), exp.input_law(), exp.target_law()
    out = {"delta_mean": [], "delta_sq": []}
    starts = range(0, exp.n_networks, exp.chunk)
    for start in tqdm(starts, disable=not progress, desc=exp.name, unit="chunk"):
        m = min(exp.chunk, exp.n_networks - start)
        params = net.sample(m, exp.seed, start=start, dtype=exp.np_dtype)
        x = xlaw.sample(net.widths[0], exp.batch, exp.seed, n_networks=m, start=start)
        y = ylaw.sample(x, net.widths[-1], exp.seed, start=start)
        trace = backprop(net, params, x, y, loss=exp.loss, grads=False, keep_layers=())
        d = [np.asarray(dl, dtype=np.float64) for dl in trace.delta]
        out["delta_mean"].append(np.stack([dl.mean(axis=(1, 2)) for dl in d], axis=1))
        out["delta_sq"].append(np.stack([np.square(dl).mean(axis=(1, 2)) for dl in d], axis=1))
    return {k: np.concatenate(v) for k, v in out.items()}


def analyse(exp: Experiment, *, progress: bool = False, confidence: float = 0.95) -> pd.DataFrame:
    """Per-layer Monte Carlo table of one experiment (the unit of work of a sweep point).

    Returns
    -------
    DataFrame
        Columns ``layer, layer_width, statistic, estimate, std_error, ci_low, ci_high, n_networks,
        n_inputs``; t-intervals across networks (the independent unit).
    """
    from scipy import stats

    s = per_network_summaries(exp, progress=progress)
    net = exp.net()
    M = exp.n_networks
    tq = stats.t.ppf(0.5 + confidence / 2, M - 1)
    rows = []
    for name, arr in s.items():
        est = arr.mean(axis=0)
        se = arr.std(axis=0, ddof=1) / np.sqrt(M)
        for l in range(net.depth):
            rows.append(
                dict(
                    layer=l + 1,
                    layer_width=net.widths[l + 1],
                    statistic=name,
                    estimate=est[l],
                    std_error=se[l],
                    ci_low=est[l] - tq * se[l],
                    ci_high=est[l] + tq * se[l],
                    n_networks=M,
                    n_inputs=exp.batch,
                )
            )
    return pd.DataFrame(rows)


def run_experiment(
    exp: Experiment | None = None,
    out_dir: str | Path | None = "results",
    *,
    progress: bool = True,
    confidence: float = 0.95,
) -> RunResult:
    """Run an experiment and write ``<out_dir>/<name>/`` (table CSV, plot, metadata).

    Parameters
    ----------
    exp : Experiment or None
        ``None`` runs the built-in default (tanh, depth 10, width 128, σ_w² = 1.5, 256 × 64).
    out_dir : path or None
        Parent folder; ``None`` writes nothing.
    progress : bool
        Show a progress bar.
    confidence : float
        Level of the t-intervals across networks.

    Returns
    -------
    RunResult
    """
    exp = Experiment() if exp is None else exp
    started = now()
    table = analyse(exp, progress=progress, confidence=confidence)
    files: list[Path] = []
    folder = None
    if out_dir is not None:
        folder = Path(out_dir) / exp.name
        folder.mkdir(parents=True, exist_ok=True)
        csv = folder / "per_layer.csv"
        table.to_csv(csv, index=False)
        files.append(csv)
        ax = plots.plot_layer_statistic(table, "delta_sq")
        ax.set_title(f"{exp.activation}, width {exp.width}, $\\sigma_w^2$ = {exp.sigma_w**2:.3g}")
        files += plots.save(ax, folder / "delta_sq")
        files.append(
            write_json_atomic(
                folder / "metadata.json",
                metadata(exp.to_dict(), seed=exp.seed, started=started, finished=now()),
            )
        )
    return RunResult(table, folder, tuple(files))
