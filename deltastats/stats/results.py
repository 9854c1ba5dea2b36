"""Result objects of the estimators: :class:`Estimates` (a tidy table with intervals) and
:class:`EstimateResult` (one row).

Pooled rows (``unit`` = −1) describe a uniformly random unit of the layer (so
``delta_norm_sq`` = E‖δ⁽ˡ⁾‖² = n_l · pooled ``delta_sq``); the pooled ``icc``/``design_effect``
are those of the layer-mean signal (1/n_l) Σ_j δ_j.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from .statistics import check_statistics

#: Networks below which an interval should not be trusted (skewed statistics such as E[δ²]).
MIN_NETWORKS = 100
#: Columns of :meth:`Estimates.per_layer` / :meth:`Estimates.per_unit`.
COLUMNS = (
    "layer",
    "unit",
    "statistic",
    "estimate",
    "std_error",
    "ci_low",
    "ci_high",
    "n_networks",
    "n_inputs",
)


class FewNetworksWarning(UserWarning):
    """Fewer than :data:`MIN_NETWORKS` networks: intervals of skewed statistics are unreliable."""


class ConfidenceInterval(NamedTuple):
    """A confidence interval ``(low, high)``; unpacks as ``lo, hi = ci`` (as scipy's)."""

    low: float
    high: float


@dataclass(frozen=True)
class EstimateResult:
    """One estimate with its interval; ``lo, hi = res.confidence_interval``.

    ``std_error`` is the column name of the tables; ``standard_error`` is the same number.
    """

    statistic: str
    layer: int
    unit: int
    estimate: float
    standard_error: float
    confidence_interval: ConfidenceInterval
    n_networks: int
    n_inputs: int

    @property
    def std_error(self) -> float:
        """The standard error (the tables' ``std_error`` column)."""
        return self.standard_error

    def __str__(self) -> str:
        lo, hi = self.confidence_interval
        where = f"layer {self.layer}" + ("" if self.unit < 0 else f", unit {self.unit}")
        return (
            f"{self.statistic} ({where}): {self.estimate:.6g} ± {self.standard_error:.3g} "
            f"[{lo:.6g}, {hi:.6g}] from {self.n_networks} networks × {self.n_inputs} inputs"
        )


@dataclass(frozen=True, eq=False)
class Estimates:
    """Estimates with confidence intervals for every layer (and unit) of a network family.

    Attributes
    ----------
    table : pandas.DataFrame
        All rows, columns :data:`COLUMNS`; ``unit`` = −1 for rows pooled over a layer's units.
    n_networks : int
        Networks used (overflowed ones excluded).
    n_inputs : int
        B, inputs per network (total samples per unit: n_networks × n_inputs).
    n_overflow : int
        Networks that produced inf/NaN and were excluded (they are counted, never dropped
        silently; statistics are then conditional on no overflow).
    overflow_layers : dict
        Layer of first overflow → number of networks.
    confidence : float
    method : str
    zero_delta : dict
        Layer l → networks where δ⁽ˡ⁾ = 0 exactly for some input (e.g. all units of a ReLU
        layer dead): log(‖δ⁽ˡ⁾‖²/n_l) = −∞ there, so the ``log_delta_norm_sq_*`` rows are
        −inf or NaN.
    layer_names : dict
        Layer number → name when the layers were named (a mapping given to
        :func:`deltastats.estimate_arrays`); the tables then have a ``name`` column beside
        ``layer``. Empty otherwise.
    """

    table: pd.DataFrame = field(repr=False)
    n_networks: int
    n_inputs: int
    n_overflow: int
    confidence: float
    method: str
    overflow_layers: dict = field(default_factory=dict)
    zero_delta: dict = field(default_factory=dict)
    layer_names: dict = field(default_factory=dict)

    #: Statistics of the notebook/terminal summary (pooled rows, a column each).
    SUMMARY = ("delta_mean", "delta_sq", "z_var", "z_kurt")

    def summary_table(self, statistics: Sequence[str] = SUMMARY) -> pd.DataFrame:
        """One row per layer, ``estimate ± std_error`` per statistic (the repr's table)."""
        t = self.per_layer([s for s in statistics if s in set(self.table["statistic"])])
        cells = t.assign(
            text=[
                f"{e:.4g} ± {s:.2g}" if np.isfinite(s) else f"{e:.4g}"
                for e, s in zip(t["estimate"], t["std_error"])
            ]
        )
        wide = cells.pivot(index="layer", columns="statistic", values="text")
        wide.columns.name = None
        return wide[[s for s in statistics if s in wide.columns]]

    def _header(self) -> str:
        excluded = f", {self.n_overflow} excluded (overflow)" if self.n_overflow else ""
        return (
            f"Estimates: {self.n_networks} networks × {self.n_inputs} inputs{excluded}; "
            f"{self.method} intervals at {self.confidence:.0%}; "
            f"{self.table['statistic'].nunique()} statistics, {len(self.table)} rows"
        )

    def __repr__(self) -> str:
        with pd.option_context("display.width", 120, "display.max_columns", 8):
            return f"{self._header()}\n{self.summary_table().to_string()}"

    def _repr_html_(self) -> str:
        import html

        return (
            f"<p><b>{html.escape(self._header())}</b></p>"
            + self.summary_table().to_html(border=0)
            + "<p>Full tables: <code>.per_layer()</code>, <code>.per_unit()</code>.</p>"
        )

    @property
    def trusted(self) -> bool:
        """True when ``n_networks >= MIN_NETWORKS``."""
        return self.n_networks >= MIN_NETWORKS

    def per_layer(self, statistics: str | Sequence[str] | None = None) -> pd.DataFrame:
        """Tidy rows pooled over each layer's units (``unit == -1``).

        Parameters
        ----------
        statistics : str or sequence of str, optional
            Keep only these statistics (default: all present).
        """
        return self._select(statistics, pooled=True)

    def per_unit(self, statistics: str | Sequence[str] | None = None) -> pd.DataFrame:
        """Tidy rows per unit j = 0 … n_l − 1 (statistics that have per-unit rows)."""
        return self._select(statistics, pooled=False)

    def _select(self, statistics, pooled: bool) -> pd.DataFrame:
        names = check_statistics(statistics)
        t = self.table
        mask = (t["unit"] == -1) if pooled else (t["unit"] >= 0)
        mask &= t["statistic"].isin(names)
        columns = list(COLUMNS)
        if "name" in t.columns:
            columns.insert(1, "name")
        return t.loc[mask, columns].reset_index(drop=True)

    def result(self, statistic: str, layer: int | str, unit: int = -1) -> EstimateResult:
        """The :class:`EstimateResult` of one row; ``layer`` is a layer number, or a layer's
        name when the layers were named."""
        (name,) = check_statistics(statistic)
        if isinstance(layer, str):
            numbers = {v: k for k, v in self.layer_names.items()}
            if layer not in numbers:
                raise ValueError(
                    f"no layer named {layer!r}; the names are {list(self.layer_names.values())}"
                )
            layer = numbers[layer]
        t = self.table
        row = t[(t["statistic"] == name) & (t["layer"] == layer) & (t["unit"] == unit)]
        if len(row) != 1:
            raise ValueError(
                f"no row for statistic={name!r}, layer={layer}, unit={unit}; layers are "
                f"{sorted(t['layer'].unique())}, unit = -1 for pooled rows"
            )
        r = row.iloc[0]
        return EstimateResult(
            name,
            int(layer),
            int(unit),
            float(r.estimate),
            float(r.std_error),
            ConfidenceInterval(float(r.ci_low), float(r.ci_high)),
            int(r.n_networks),
            int(r.n_inputs),
        )

    def rel_error(self, statistics: str | Sequence[str] = ("delta_sq",)) -> float:
        """max over the pooled layer rows of (CI half-width)/|estimate| (inf if undefined)."""
        t = self.per_layer(statistics)
        half = 0.5 * (t["ci_high"] - t["ci_low"])
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.abs(half / t["estimate"]).to_numpy()
        if rel.size == 0 or not np.all(np.isfinite(rel)):
            return float("inf")
        return float(rel.max())
