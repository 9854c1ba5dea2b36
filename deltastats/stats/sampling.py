"""Estimates of the moments of δ⁽ˡ⁾ (and z⁽ˡ⁾, ∂J/∂W⁽ˡ⁾) with intervals valid for networks × inputs.

Design and notation
-------------------
M independent networks m, B inputs b through each (inputs drawn independently per network).
Samples inside one network share its weights and are correlated, and so are the units of a
layer; an interval that treats the M·B·n_l numbers as independent is far too narrow. The
**network is the independent unit**: every statistic is a smooth function θ = f(μ_F) of the
mean μ_F = E[F_m] of a per-network feature vector F_m (means over the network's B inputs, see
:mod:`deltastats.accumulators`), estimated by θ̂ = f(F̄), F̄ = (1/M) Σ_m F_m. With y = x − c
(fixed shift c, F = (p₁, p₂, p₃, p₄, q, r), p_k = mean_b yᵏ, q = p₁²):

    E[x]   = c + p̄₁,       E[x²] = c² + 2c·p̄₁ + p̄₂
    Var[x] = p̄₂ − p̄₁² + (q̄ − p̄₁²)/(M − 1)                                          (V)
    μ₂ = p̄₂ − p̄₁²,  μ₃ = p̄₃ − 3p̄₁p̄₂ + 2p̄₁³,  μ₄ = p̄₄ − 4p̄₁p̄₃ + 6p̄₁²p̄₂ − 3p̄₁⁴
    skew = μ₃/μ₂^{3/2},  excess kurtosis = μ₄/μ₂² − 3

The last term of (V) removes the O(1/M) bias of p̄₁² under clustering: E[p̄₁²] = (E y)² +
Var(p₁)/M and (M/(M−1))(q̄ − p̄₁²) is unbiased for Var(p₁), so (V) is unbiased for the
variance over networks and inputs. Skewness and kurtosis are plug-in (bias O(1/(MB))).

Variance components (one-way random effects, balanced, ANOVA estimators): σ²_W = E_m Var(x|m)
(within networks), σ²_B = Var_m E(x|m) (between):

    σ̂²_W = B/(B−1) · (r̄ − q̄),   σ̂²_B = M/(M−1) · (q̄ − p̄₁²) − σ̂²_W/B,
    icc = σ̂²_B / (σ̂²_B + σ̂²_W),   design_effect = 1 + (B − 1)·icc                     (ICC)

(r = p₂ per unit; for the pooled layer row r = mean_b ȳ_b² with ȳ_b the unit average, so the
pooled icc is that of the layer-mean signal (1/n_l) Σ_j δ_j). The design effect is
Var(mean δ_j over M·B samples) / (Var δ_j/(M·B)): the factor by which naive i.i.d. intervals
understate the variance. The icc is an unbiased-ratio estimate and may fall outside [0, 1].
``delta_sq_icc`` (pooled rows) is the same ANOVA for s = ‖δ⁽ˡ⁾‖²/n_l, the per-input quantity
whose network mean is the pooled E[δ²] (its within-network variance includes the covariances
between units): the icc that :func:`suggest_allocation` needs for ``delta_sq``.

Intervals
---------
``method="clt"`` (default): delta method on the between-network covariance Σ̂_F of F_m,

    SE² = ∇fᵀ Σ̂_F ∇f / M,      θ̂ ± t_{M−1, (1+γ)/2} · SE,

with ∇f by complex-step differentiation (exact to rounding: ∂f/∂v_i = Im f(v + ih·e_i)/h).
``method="jackknife"``: delete-a-group jackknife over G groups of networks (network index mod
G), for unequal group sizes m_g the weighted form of Busing, Meijer & van der Leeden (1999):
h_g = M/m_g, pseudo-values θ̃_g = h_g θ̂ − (h_g − 1) θ̂_(g), θ̂_J = Gθ̂ − Σ_g (1 − m_g/M) θ̂_(g),
SE² = (1/G) Σ_g (θ̃_g − θ̂_J)²/(h_g − 1), interval θ̂ ± t_{G−1}·SE.
``method="bootstrap"``: BCa bootstrap resampling whole networks, :func:`scipy.stats.bootstrap`
with the feature columns as paired samples; keeps every F_m (memory O(M·Σ_l n_l)).
All methods report the same point estimate θ̂.

How many networks? Means of δ are close to normal quickly, but E[δ²], Var[δ] and higher
moments of a product of many Gaussian weights are right-skewed across networks: their
intervals need on the order of 100 networks (:data:`MIN_NETWORKS`) before the CLT holds, and
kurtosis-type statistics more. :func:`estimate` warns (:class:`FewNetworksWarning`) below that.
On the exactly solvable linear case of ``tests/test_estimators.py`` (M = 100, B = 16, 400
replications, icc ≈ 0.19, design effect ≈ 3.8) the 95% intervals of delta_mean, delta_sq and
delta_var covered the truth 93.5–96.5% (CLT) and 93.75–96.75% (jackknife) of the time; naive
i.i.d. intervals for delta_mean covered 69%.

Statistics (``layer`` l = 1 … L; ``unit`` j, or −1 for the row pooled over the layer's units):
see :data:`STATISTICS`. Pooled rows describe a uniformly random unit of the layer (so
``delta_norm_sq`` = pooled ``delta_sq`` = E‖δ⁽ˡ⁾‖²/n_l); the pooled ``icc``/``design_effect``
are those of the layer-mean signal. ``stein_delta_mean`` = Cov(L, z_j)/Var(z_j) is the seed
document's integration by parts with the unconditional μ_j, σ_j² (pooled row: mean_j Cov(L,
z_j) over the variance of a random unit's z, equal to the unit average when the units are
exchangeable); ``stein_gap``
is its difference to the pathwise ``delta_mean``, with the interval of the difference (both
from the same networks, so the covariance is accounted for). :func:`stein_check` adds the
exact conditional multivariate form at layer 1.

Overflow: networks whose trace has inf/NaN are excluded from every statistic, counted in
:attr:`Estimates.n_overflow` and reported by a warning (results are then conditional on not
overflowing).
"""

from __future__ import annotations

import numbers
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from . import inputs as _inputs
from . import targets as _targets
from .accumulators import BackpropAccumulator
from .engine import NumericalOverflowWarning, backprop, usable_cpus
from .networks import MLP
from .seeding import as_seed_sequence

#: Spawn-key number of the bootstrap's random stream (after those of :mod:`deltastats.seeding`).
_BOOTSTRAP_STREAM = 1000

#: Networks below which an interval should not be trusted (skewed statistics such as E[δ²]).
MIN_NETWORKS = 100
#: Interval methods.
METHODS = ("clt", "jackknife", "bootstrap")
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


# ---------------------------------------------------------------------------------------------
# Statistics as functions of the mean feature vector v = F̄ (shape (..., S, k))
# ---------------------------------------------------------------------------------------------
def _central(v):
    p1, p2, p3, p4 = v[..., 0], v[..., 1], v[..., 2], v[..., 3]
    m2 = p2 - p1 * p1
    m3 = p3 - 3 * p1 * p2 + 2 * p1**3
    m4 = p4 - 4 * p1 * p3 + 6 * p1 * p1 * p2 - 3 * p1**4
    return m2, m3, m4


def _mean(v, c, M, B):
    return c["c"] + v[..., 0]


def _sq(v, c, M, B):
    return c["c"] * c["c"] + 2 * c["c"] * v[..., 0] + v[..., 1]


def _var(v, c, M, B, q=4):
    # (V): plug-in variance plus the unbiasing term for clustered sampling.
    p1 = v[..., 0]
    return v[..., 1] - p1 * p1 + (v[..., q] - p1 * p1) / (M - 1)


def _skew(v, c, M, B):
    m2, m3, _ = _central(v)
    return m3 / m2**1.5


def _kurt(v, c, M, B):
    m2, _, m4 = _central(v)
    return m4 / (m2 * m2) - 3


def _icc(v, c, M, B):
    # (ICC): one-way ANOVA variance components from per-network means and within variances.
    if B < 2:
        return np.full(v.shape[:-1], np.nan)
    p1, q, r = v[..., 0], v[..., 4], v[..., 5]
    s_w = B / (B - 1) * (r - q)
    s_b = M / (M - 1) * (q - p1 * p1) - s_w / B
    # A signal that does not vary (e.g. the unit average of softmax − y) has no icc: 0/0.
    total = s_b + s_w
    flat = np.real(total) <= 1e-12 * np.abs(np.real(v[..., 1]))
    return np.where(flat, np.nan, s_b / np.where(flat, 1.0, total))


def _deff(v, c, M, B):
    return 1 + (B - 1) * _icc(v, c, M, B)


def _var3(v, c, M, B):
    return _var(v, c, M, B, q=2)


def _icc3(v, c, M, B):
    # (ICC) for the (x₁, x₂, x₁²) feature layout of a per-input scalar (here s = ‖δ‖²/n_l):
    # σ̂²_W = B/(B−1)(x̄₂ − q̄), σ̂²_B = M/(M−1)(q̄ − x̄₁²) − σ̂²_W/B.
    if B < 2:
        return np.full(v.shape[:-1], np.nan)
    p1, r, q = v[..., 0], v[..., 1], v[..., 2]
    s_w = B / (B - 1) * (r - q)
    s_b = M / (M - 1) * (q - p1 * p1) - s_w / B
    total = s_b + s_w
    flat = np.real(total) <= 1e-12 * np.abs(np.real(r))
    return np.where(flat, np.nan, s_b / np.where(flat, 1.0, total))


def _grad_sq(v, c, M, B):
    # E‖G‖² = N · E[G_ij²] (pooled over the N entries) with G = c + (G − c).
    return c["N"] * (c["c"] * c["c"] + 2 * c["c"] * v[..., 0] + v[..., 1])


def _stein(v, c, M, B):
    # Seed document: E[δ_j] ≈ E[L·(z_j − μ_j)]/σ_j² = Cov(L, z_j)/Var(z_j) (Gaussian z_j).
    ell, ellz, zm, z2 = v[..., 0], v[..., 1], v[..., 2], v[..., 3]
    return (ellz - ell * zm) / (z2 - zm * zm)


def _stein_gap(v, c, M, B):
    return _stein(v, c, M, B) - (c["c_d"] + v[..., 4])


def _mv(v, c, M, B):
    return c["c_s"] + v[..., 0]


def _mv_gap(v, c, M, B):
    return c["c_s"] + v[..., 0] - c["c_d"] - v[..., 2]


def _uv(v, c, M, B):
    return c["c_u"] + v[..., 1]


def _uv_gap(v, c, M, B):
    return c["c_u"] + v[..., 1] - c["c_d"] - v[..., 2]


@dataclass(frozen=True)
class _Stat:
    quantity: str  # feature-array prefix in the accumulator
    fn: Callable = field(repr=False)
    per_unit: bool  # also has per-unit rows (else only the pooled layer row)
    doc: str


_REGISTRY: dict[str, _Stat] = {
    "delta_mean": _Stat("delta", _mean, True, "E[δ_j]"),
    "delta_sq": _Stat("delta", _sq, True, "E[δ_j²]"),
    "delta_var": _Stat("delta", _var, True, "Var[δ_j] over networks and inputs, eq. (V)"),
    "delta_skew": _Stat("delta", _skew, True, "skewness of δ_j"),
    "delta_kurt": _Stat("delta", _kurt, True, "excess kurtosis of δ_j"),
    "z_mean": _Stat("z", _mean, True, "E[z_j]"),
    "z_var": _Stat("z", _var, True, "Var[z_j]"),
    "z_skew": _Stat("z", _skew, True, "skewness of z_j"),
    "z_kurt": _Stat("z", _kurt, True, "excess kurtosis of z_j (0 if Gaussian)"),
    "delta_norm_sq": _Stat("delta", _sq, False, "E[‖δ⁽ˡ⁾‖²/n_l]"),
    "log_delta_norm_sq_mean": _Stat("lognorm", _mean, False, "E[log(‖δ⁽ˡ⁾‖²/n_l)]"),
    "log_delta_norm_sq_var": _Stat("lognorm", _var3, False, "Var[log(‖δ⁽ˡ⁾‖²/n_l)]"),
    "grad_w_sq": _Stat("gradw", _grad_sq, False, "E[‖∂J/∂W⁽ˡ⁾‖²_F] (batch-mean gradient)"),
    "grad_w_mean": _Stat("gradw", _mean, False, "E[(∂J/∂W⁽ˡ⁾)_ik], pooled over entries"),
    "grad_w_var": _Stat("gradw", _var3, False, "Var[(∂J/∂W⁽ˡ⁾)_ik], pooled over entries"),
    "stein_delta_mean": _Stat("stein", _stein, True, "Cov(L, z_j)/Var(z_j) (seed's Stein form)"),
    "stein_gap": _Stat("stein", _stein_gap, True, "stein_delta_mean − delta_mean"),
    "icc": _Stat("delta", _icc, True, "share of Var[δ_j] between networks, eq. (ICC)"),
    "design_effect": _Stat("delta", _deff, True, "1 + (B − 1)·icc"),
    "delta_sq_icc": _Stat(
        "dsq", _icc3, False, "icc of s = ‖δ⁽ˡ⁾‖²/n_l, the per-input summary of E[δ²] (allocation)"
    ),
    "stein_mv_delta_mean": _Stat("steinmv", _mv, True, "E[Σ⁻¹(z − b)L], layer 1, conditional"),
    "stein_mv_gap": _Stat("steinmv", _mv_gap, True, "stein_mv_delta_mean − delta_mean"),
    "stein_uv_delta_mean": _Stat("steinmv", _uv, True, "E[(z_j − b_j)L/Σ_jj], layer 1"),
    "stein_uv_gap": _Stat("steinmv", _uv_gap, True, "stein_uv_delta_mean − delta_mean"),
}

#: Statistic names with a one-line description each.
STATISTICS: dict[str, str] = {k: s.doc for k, s in _REGISTRY.items()}


def _check_statistics(statistics) -> list[str]:
    if statistics is None:
        return list(_REGISTRY)
    if isinstance(statistics, str):
        statistics = [statistics]
    out = []
    for s in statistics:
        if s not in _REGISTRY:
            raise ValueError(f"unknown statistic {s!r}; valid names are: {', '.join(_REGISTRY)}")
        out.append(s)
    return out


# ---------------------------------------------------------------------------------------------
# Result objects
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EstimateResult:
    """One estimate with its interval; ``lo, hi = res.confidence_interval``."""

    statistic: str
    layer: int
    unit: int
    estimate: float
    standard_error: float
    confidence_interval: tuple[float, float]
    n_networks: int
    n_inputs: int


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
    """

    table: pd.DataFrame = field(repr=False)
    n_networks: int
    n_inputs: int
    n_overflow: int
    confidence: float
    method: str
    overflow_layers: dict = field(default_factory=dict)
    zero_delta: dict = field(default_factory=dict)

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
        names = _check_statistics(statistics)
        t = self.table
        mask = (t["unit"] == -1) if pooled else (t["unit"] >= 0)
        mask &= t["statistic"].isin(names)
        return t.loc[mask, list(COLUMNS)].reset_index(drop=True)

    def result(self, statistic: str, layer: int, unit: int = -1) -> EstimateResult:
        """The :class:`EstimateResult` of one row."""
        (name,) = _check_statistics(statistic)
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
            (float(r.ci_low), float(r.ci_high)),
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


# ---------------------------------------------------------------------------------------------
# Summaries → estimates
# ---------------------------------------------------------------------------------------------
def _complex_step_grad(fn, v, consts, M, B):
    """∇f at v (S, k) by complex steps: ∂f/∂v_i = Im f(v + i·h·e_i)/h, exact to rounding."""
    S, k = v.shape
    grad = np.empty((S, k))
    scale = np.abs(v) + 1.0
    for i in range(k):
        h = 1e-30 * scale[:, i]
        vc = v.astype(np.complex128)
        vc[:, i] += 1j * h
        grad[:, i] = np.imag(fn(vc, consts, M, B)) / h
    return grad


def _jackknife_se(fn, summ, name, consts, B, theta):
    """Weighted delete-a-group jackknife SE (Busing et al. 1999) and its number of groups."""
    m_g = summ.group_count.astype(float)
    keep = m_g > 0
    G = int(keep.sum())
    M = float(summ.count)
    if G < 2 or np.any(M - m_g[keep] < 2):
        return np.full_like(theta, np.nan), G
    sums = summ.group_sum[name][keep]  # (G, S, k)
    total = sums.sum(axis=0)
    mg = m_g[keep][:, None]  # (G, 1)
    v_del = (total[None] - sums) / (M - mg)[..., None]
    with np.errstate(all="ignore"):
        th_del = np.real(fn(v_del, consts, M - mg, B))  # (G, S)
    h = M / mg
    pseudo = h * theta[None] - (h - 1) * th_del
    th_j = G * theta - np.sum((1 - mg / M) * th_del, axis=0)
    var = np.sum((pseudo - th_j[None]) ** 2 / (h - 1), axis=0) / G
    return np.sqrt(var), G


def _bootstrap(fn, per_net, consts, M, B, confidence, n_resamples, rng):
    """BCa bootstrap over networks: the k feature columns are paired samples of size M."""
    S, k = per_net.shape[1:]
    data = tuple(np.ascontiguousarray(per_net[:, :, i]) for i in range(k))  # each (M, S)

    def statistic(*cols, axis):
        v = np.stack([c.mean(axis=axis) for c in cols], axis=-1)  # (S, …, k)
        v = np.moveaxis(v, 0, -2)  # (…, S, k)
        out = np.real(fn(v, consts, M, B))
        return np.moveaxis(out, -1, 0)

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        res = stats.bootstrap(
            data,
            statistic,
            n_resamples=n_resamples,
            paired=True,
            vectorized=True,
            axis=0,
            confidence_level=confidence,
            method="BCa",
            batch=max(1, min(n_resamples, 2**22 // max(1, M * S * k))),
            rng=rng,
        )
    lo, hi = res.confidence_interval
    return np.asarray(res.standard_error), np.asarray(lo), np.asarray(hi)


def summarize(
    accumulator: BackpropAccumulator,
    *,
    method: str = "clt",
    confidence: float = 0.95,
    n_resamples: int = 1999,
    seed: int | np.random.SeedSequence | None = 0,
    statistics: str | Sequence[str] | None = None,
) -> Estimates:
    """Turn a :class:`~deltastats.accumulators.BackpropAccumulator` into :class:`Estimates`.

    Parameters
    ----------
    accumulator : BackpropAccumulator
        Holds ``keep_networks=True`` for ``method="bootstrap"``.
    method : {"clt", "jackknife", "bootstrap"}
        Interval method (module docstring).
    confidence : float
        γ in (0, 1).
    n_resamples : int
        Bootstrap resamples.
    seed : int or SeedSequence
        Seed of the bootstrap resampling.
    statistics : str or sequence of str, optional
        Compute only these statistics (default: all).
    """
    _check_method_confidence(method, confidence)
    wanted = set(_check_statistics(statistics))
    if not isinstance(accumulator, BackpropAccumulator):
        raise ValueError("accumulator must be a BackpropAccumulator")
    if method == "bootstrap" and not accumulator.features.keep_networks:
        raise ValueError(
            "method='bootstrap' needs the per-network summaries: create the accumulator with "
            "keep_networks=True"
        )
    summ = accumulator.summary()
    consts = accumulator.consts()
    B = accumulator.batch
    M = summ.count
    rng = None
    if method == "bootstrap":
        # A child key of its own (not a spawn, which would mutate a caller's SeedSequence).
        root = as_seed_sequence(seed)
        child = np.random.SeedSequence(
            root.entropy, spawn_key=(*root.spawn_key, _BOOTSTRAP_STREAM), pool_size=root.pool_size
        )
        rng = np.random.default_rng(child)
    alpha = 0.5 * (1 + confidence)
    t_clt = stats.t.ppf(alpha, M - 1) if M >= 2 else np.nan
    order = {s: i for i, s in enumerate(_REGISTRY)}
    cols: dict[str, list] = {k: [] for k in ("layer", "unit", "stat", *COLUMNS[3:7])}
    for name in summ.mean:
        quantity, layer, kind = name.split("/")
        v = summ.mean[name]
        cst = consts[name]
        for stat, spec in _REGISTRY.items():
            if spec.quantity != quantity or (kind == "unit" and not spec.per_unit):
                continue
            if stat not in wanted:
                continue
            with np.errstate(all="ignore"):
                theta = np.real(spec.fn(v, cst, M, B)) if M >= 2 else np.full(v.shape[0], np.nan)
            se = lo = hi = np.full_like(theta, np.nan)
            if M >= 2 and method == "clt":
                with np.errstate(all="ignore"):
                    g = _complex_step_grad(spec.fn, v, cst, M, B)
                    se = np.sqrt(np.einsum("si,sij,sj->s", g, summ.cov[name], g) / M)
                lo, hi = theta - t_clt * se, theta + t_clt * se
            elif M >= 2 and method == "jackknife":
                se, G = _jackknife_se(spec.fn, summ, name, cst, B, theta)
                t = stats.t.ppf(alpha, G - 1) if G >= 2 else np.nan
                lo, hi = theta - t * se, theta + t * se
            elif M >= 2 and method == "bootstrap":
                se, lo, hi = _bootstrap(
                    spec.fn, summ.per_network[name], cst, M, B, confidence, n_resamples, rng
                )
            se = np.where(np.isfinite(theta), se, np.nan)  # no SE for an undefined estimate
            S = theta.shape[0]
            cols["layer"].append(np.full(S, int(layer)))
            cols["unit"].append(np.arange(S) if kind == "unit" else np.full(S, -1))
            cols["stat"].append(np.full(S, order[stat]))
            for key, val in zip(COLUMNS[3:7], (theta, se, lo, hi)):
                cols[key].append(np.broadcast_to(np.asarray(val, dtype=float), (S,)))
    arr = {k: np.concatenate(v) for k, v in cols.items()}
    idx = np.lexsort((arr["unit"], arr["stat"], arr["layer"]))
    names = np.array(list(_REGISTRY), dtype=object)
    table = pd.DataFrame(
        {
            "layer": arr["layer"][idx],
            "unit": arr["unit"][idx],
            "statistic": names[arr["stat"][idx]],
            **{k: arr[k][idx] for k in COLUMNS[3:7]},
            "n_networks": np.full(idx.size, M),
            "n_inputs": np.full(idx.size, B),
        }
    )
    return Estimates(
        table,
        M,
        B,
        accumulator.n_overflow,
        float(confidence),
        method,
        dict(accumulator.overflow_layers),
        dict(accumulator.zero_delta),
    )


# ---------------------------------------------------------------------------------------------
# Sampling driver
# ---------------------------------------------------------------------------------------------
def _check_method_confidence(method, confidence) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are: {', '.join(METHODS)}")
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, numbers.Real)
        or not 0 < confidence < 1
    ):
        raise ValueError(
            f"confidence must be a number strictly between 0 and 1, got {confidence!r}"
        )


def _check_int(name, value, minimum, hint=""):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{hint}, got {value!r}")
    return int(value)


def stream(
    net: MLP,
    inputs: _inputs.InputLaw | None = None,
    targets: _targets.TargetLaw | None = None,
    loss: str = "mse",
    *,
    n_networks: int = 1000,
    batch: int = 16,
    seed: int | np.random.SeedSequence = 0,
    chunk: int | None = None,
    confidence: float = 0.95,
    method: str = "clt",
    weight_decay: float = 0.0,
    dtype=np.float64,
    until_rel_error: float | None = None,
    until_statistics: str | Sequence[str] = ("delta_sq",),
    min_networks: int = MIN_NETWORKS,
    n_resamples: int = 1999,
    jackknife_groups: int = 20,
    progress: bool = False,
    n_jobs: int = 1,
    _stein_q0: float | None = None,
    _warn_overflow: bool = True,
    _final_only: bool = False,
) -> Iterator[Estimates]:
    """Sample networks chunk by chunk and yield the running :class:`Estimates` after each.

    Network m (global index 0 … n_networks − 1) gets its parameters, its own batch of B
    inputs and targets from its own random streams, so the estimates after all networks are
    bit-for-bit the same for every ``chunk`` (see :mod:`deltastats.accumulators`).

    Parameters
    ----------
    net : MLP
    inputs : InputLaw, optional
        Input law (default ``inputs.gaussian(1.0)``). Every network gets its own independent
        batch of B inputs (shared inputs would make the networks dependent samples).
    targets : TargetLaw, optional
        Target law (default ``targets.zeros()``).
    loss : str
        ``"mse"`` or ``"cross_entropy"``.
    n_networks : int
        M ≥ 2, the number of networks (the maximum when ``until_rel_error`` is given).
    batch : int
        B ≥ 1, inputs per network.
    seed : int or SeedSequence
    chunk : int, optional
        Networks per engine pass (default: about 2²² floats of traces, parameters and
        gradients per pass). Results do not depend on it.
    confidence : float
        γ ∈ (0, 1).
    method : {"clt", "jackknife", "bootstrap"}
    weight_decay : float
        λ ≥ 0 in ∂J/∂W = mean_b δhᵀ + λW (affects the grad_w_* statistics only).
    dtype : np.float32 or np.float64
        Engine precision; accumulation is float64 either way.
    until_rel_error : float, optional
        Stop once (CI half-width)/|estimate| ≤ this for every pooled layer row of
        ``until_statistics`` and at least ``min_networks`` networks were used.
    until_statistics : str or sequence of str
        Statistics of the stopping rule (default ``delta_sq``; a mean may be 0).
    min_networks : int
        Minimum networks before the stopping rule applies.
    n_resamples : int
        Bootstrap resamples (``method="bootstrap"``; recomputed at every yield).
    jackknife_groups : int
        G ≥ 2 delete-a-group jackknife groups (network index mod G); the jackknife interval
        uses t with G − 1 degrees of freedom.
    progress : bool
        Show a tqdm bar.
    n_jobs : int
        Worker processes (joblib, loky). Each round gives every worker a contiguous range of
        ``chunk`` networks (BLAS threads per worker limited so workers do not oversubscribe
        the cores); their accumulators are merged in network order, so the estimates are
        bit-for-bit those of ``n_jobs=1``. With ``n_jobs > 1`` an estimate is yielded per round
        of ``n_jobs × chunk`` networks.

    Yields
    ------
    Estimates
        After each chunk (each round with ``n_jobs > 1``).
    """
    n_networks = _check_int(
        "n_networks", n_networks, 2, " (an interval needs the spread of at least 2 networks)"
    )
    batch = _check_int("batch", batch, 1)
    _check_method_confidence(method, confidence)
    if chunk is not None:
        chunk = _check_int("chunk", chunk, 1)
    if until_rel_error is not None and not (
        isinstance(until_rel_error, numbers.Real) and until_rel_error > 0
    ):
        raise ValueError(f"until_rel_error must be a positive number, got {until_rel_error!r}")
    until_statistics = _check_statistics(until_statistics)
    min_networks = _check_int("min_networks", min_networks, 2)
    n_resamples = _check_int("n_resamples", n_resamples, 10)
    jackknife_groups = _check_int("jackknife_groups", jackknife_groups, 2)
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an MLP, got {type(net).__name__}")
    inputs = _inputs.gaussian(1.0) if inputs is None else inputs
    targets = _targets.zeros() if targets is None else targets
    if not isinstance(inputs, _inputs.InputLaw):
        raise ValueError("inputs must be an input law such as deltastats.inputs.gaussian(1.0)")
    if not isinstance(targets, _targets.TargetLaw):
        raise ValueError("targets must be a target law such as deltastats.targets.zeros()")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be np.float32 or np.float64, got {dtype}")
    if chunk is None:
        # Floats held per network in one pass: z, h, δ per sample, plus parameters and weight
        # gradients (n_l·n_{l−1} each); aim at ~2²² floats (32 MB in float64) per chunk.
        n_weights = sum(a * b for a, b in zip(net.widths[:-1], net.widths[1:]))
        per_net = batch * (sum(net.widths) + net.depth) * 3 + 2 * n_weights
        chunk = int(max(1, min(n_networks, 2**22 // per_net)))

    n_jobs = _check_int("n_jobs", n_jobs, 1)
    job = _Job(
        net,
        inputs,
        targets,
        loss,
        batch,
        seed,
        chunk,
        weight_decay,
        np.dtype(dtype),
        method == "bootstrap",
        _stein_q0,
    )
    warned = False
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_networks, unit="net", desc="deltastats")
    try:
        total = 0
        for acc, done in _accumulate(job, n_networks, n_jobs):
            total += done
            if _warn_overflow and acc.n_overflow and not warned:
                warned = True
                warnings.warn(
                    f"numerical overflow in {acc.n_overflow} of {acc.n_seen} networks so far; "
                    "they are excluded and counted in Estimates.n_overflow",
                    NumericalOverflowWarning,
                    stacklevel=2,
                )
            if bar is not None:
                bar.update(done)
            if _final_only and until_rel_error is None and total < n_networks:
                continue  # estimate() needs only the last summary: skip the running ones
            if (
                _final_only
                and until_rel_error is not None
                and method != "bootstrap"
                and total < n_networks
            ):
                # Test the stopping rule on the rule's statistics only (a full summary costs
                # as much as several chunks); clt and jackknife give each statistic the same
                # interval alone as in the full table, so the stop is where stream() stops.
                probe = summarize(
                    acc,
                    method=method,
                    confidence=confidence,
                    seed=seed,
                    statistics=until_statistics,
                )
                if not (
                    probe.n_networks >= min_networks
                    and probe.rel_error(until_statistics) <= until_rel_error
                ):
                    continue
            est = summarize(
                acc, method=method, confidence=confidence, n_resamples=n_resamples, seed=seed
            )
            yield est
            if (
                until_rel_error is not None
                and est.n_networks >= min_networks
                and est.rel_error(until_statistics) <= until_rel_error
            ):
                return
    finally:
        if bar is not None:
            bar.close()


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs to accumulate a range of networks (picklable)."""

    net: MLP
    inputs: _inputs.InputLaw
    targets: _targets.TargetLaw
    loss: str
    batch: int
    seed: int | np.random.SeedSequence
    chunk: int
    weight_decay: float
    dtype: np.dtype
    keep_networks: bool
    stein_q0: float | None

    def trace(self, start: int, M: int):
        """Parameters, inputs and backprop trace of networks ``start … start+M−1``."""
        n0, nL = self.net.widths[0], self.net.widths[-1]
        params = self.net.sample(M, self.seed, start=start, dtype=self.dtype)
        x = self.inputs.sample(
            n0, self.batch, self.seed, n_networks=M, start=start, dtype=self.dtype
        )
        y = self.targets.sample(x, nL, self.seed, start=start, dtype=self.dtype)
        trace = backprop(
            self.net, params, x, y, loss=self.loss, weight_decay=self.weight_decay, warn=False
        )
        return params, x, trace

    def accumulator(self, start: int = 0, shifts: dict | None = None) -> BackpropAccumulator:
        return BackpropAccumulator(
            self.net,
            self.batch,
            start=start,
            shifts=shifts,
            keep_networks=self.keep_networks,
            stein_q0=self.stein_q0,
        )


def _accumulate_range(job: _Job, start: int, stop: int, shifts: dict, blas_threads: int):
    """Worker: accumulate networks ``start … stop−1`` chunk by chunk."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas_threads):
        acc = job.accumulator(start, shifts)
        for a in range(start, stop, job.chunk):
            params, x, trace = job.trace(a, min(job.chunk, stop - a))
            acc.update(trace, params=params, x=x)
    return acc


def _accumulate(job: _Job, n_networks: int, n_jobs: int):
    """Yield ``(accumulator so far, networks added)`` after each chunk (or round of chunks).

    In parallel, every worker's accumulator uses the shifts of network 0 (as the serial one
    does) and covers a contiguous network range; merging them in network order gives the
    serial result bit for bit (:mod:`deltastats.accumulators`).
    """
    if n_jobs == 1:
        acc = job.accumulator()
        for start in range(0, n_networks, job.chunk):
            M = min(job.chunk, n_networks - start)
            params, x, trace = job.trace(start, M)
            acc.update(trace, params=params, x=x)
            yield acc, M
        return

    from joblib import Parallel, delayed

    params, x, trace = job.trace(0, 1)
    shifts = job.accumulator().compute_shifts(trace, params=params, x=x)
    blas = max(1, usable_cpus() // n_jobs)
    acc = None
    with Parallel(n_jobs=n_jobs, backend="loky") as pool:
        for start in range(0, n_networks, job.chunk * n_jobs):
            stop = min(start + job.chunk * n_jobs, n_networks)
            edges = list(range(start, stop, job.chunk)) + [stop]
            parts = pool(
                delayed(_accumulate_range)(job, a, b, shifts, blas)
                for a, b in zip(edges[:-1], edges[1:])
            )
            for part in parts:
                acc = part if acc is None else acc.merge(part)
            yield acc, stop - start


def estimate(
    net: MLP,
    inputs: _inputs.InputLaw | None = None,
    targets: _targets.TargetLaw | None = None,
    loss: str = "mse",
    *,
    n_networks: int = 1000,
    batch: int = 16,
    seed: int | np.random.SeedSequence = 0,
    chunk: int | None = None,
    confidence: float = 0.95,
    method: str = "clt",
    weight_decay: float = 0.0,
    dtype=np.float64,
    until_rel_error: float | None = None,
    until_statistics: str | Sequence[str] = ("delta_sq",),
    n_resamples: int = 1999,
    jackknife_groups: int = 20,
    progress: bool = False,
    n_jobs: int = 1,
) -> Estimates:
    """Monte Carlo estimates of the statistics of δ⁽ˡ⁾ with network-level confidence intervals.

    Draws ``n_networks`` networks from ``net`` and ``batch`` inputs per network, runs the
    batched backprop engine chunk by chunk, and returns :class:`Estimates` (drains
    :func:`stream`; same parameters, including ``n_jobs`` worker processes). Memory does not
    grow with ``n_networks``: chunks stream through mergeable accumulators. Networks that
    overflow are excluded and counted, with a :class:`~deltastats.NumericalOverflowWarning`
    that says how many. Warns
    (:class:`FewNetworksWarning`) below :data:`MIN_NETWORKS` networks.

    Examples
    --------
    >>> import deltastats as ds
    >>> net = ds.MLP((8, 16, 1), activation="tanh", mu_w=0.5)
    >>> est = estimate(net, n_networks=200, batch=8, seed=0)
    >>> est.per_layer("delta_mean").columns.tolist()[:4]
    ['layer', 'unit', 'statistic', 'estimate']
    """
    last = _drain(
        stream(
            net,
            inputs,
            targets,
            loss,
            n_networks=n_networks,
            batch=batch,
            seed=seed,
            chunk=chunk,
            confidence=confidence,
            method=method,
            weight_decay=weight_decay,
            dtype=dtype,
            until_rel_error=until_rel_error,
            until_statistics=until_statistics,
            n_resamples=n_resamples,
            jackknife_groups=jackknife_groups,
            progress=progress,
            n_jobs=n_jobs,
            _warn_overflow=False,
            _final_only=True,
        )
    )
    _final_warnings(last)
    return last


def _drain(generator) -> Estimates:
    """The last item of a generator (``run()`` drains ``stream()``)."""
    return deque(generator, maxlen=1)[0]


def _final_warnings(est: Estimates) -> None:
    if est.n_overflow:
        warnings.warn(
            f"numerical overflow (inf/NaN) in {est.n_overflow} of "
            f"{est.n_overflow + est.n_networks} networks (first layer → count: "
            f"{est.overflow_layers}); they are excluded from every statistic and counted in "
            "Estimates.n_overflow (reduce sigma_w or depth, or use float64)",
            NumericalOverflowWarning,
            stacklevel=3,
        )
    if est.zero_delta:
        warnings.warn(
            f"δ⁽ˡ⁾ = 0 exactly for some inputs (layer → networks: {est.zero_delta}), e.g. dead "
            "ReLU units: log(‖δ‖²/n) = −inf there and log_delta_norm_sq_* are −inf or NaN",
            RuntimeWarning,
            stacklevel=3,
        )
    t = est.table
    no_se = t[np.isfinite(t["estimate"]) & ~np.isfinite(t["std_error"])]
    if not no_se.empty:
        warnings.warn(
            f"{len(no_se)} rows have a finite estimate but no standard error (their interval is "
            f"NaN): {', '.join(sorted(no_se['statistic'].unique()))}. Either the statistic is "
            "undefined there (e.g. no variance) or its higher moments overflow float64 "
            f"(largest |estimate| {np.abs(no_se['estimate']).max():.3g}); for exploding "
            "networks use the log_delta_norm_sq_* statistics or fewer layers",
            RuntimeWarning,
            stacklevel=3,
        )
    if est.n_networks < MIN_NETWORKS:
        warnings.warn(
            f"only {est.n_networks} networks: intervals for skewed statistics (delta_sq, "
            f"delta_var, kurtosis) need about {MIN_NETWORKS} or more; increase n_networks",
            FewNetworksWarning,
            stacklevel=3,
        )


def stein_check(
    net: MLP,
    inputs: _inputs.Gaussian | None = None,
    targets: _targets.TargetLaw | None = None,
    loss: str = "mse",
    *,
    n_networks: int = 1000,
    batch: int = 16,
    seed: int | np.random.SeedSequence = 0,
    chunk: int | None = None,
    confidence: float = 0.95,
    method: str = "clt",
    dtype=np.float64,
    progress: bool = False,
) -> Estimates:
    """Stein / integration-by-parts estimators of E[δ⁽¹⁾] against the pathwise mean.

    With Gaussian inputs x ~ N(0, q₀I), z⁽¹⁾ = Wx + b is, given the network, exactly
    N(b, Σ) with Σ = q₀WWᵀ, and Stein's lemma E[(z − μ)L] = Σ·E[∇_z L] holds exactly (when L
    depends on x only through z⁽¹⁾, i.e. targets independent of x). Returned rows (layer 1):

    * ``delta_mean``: the pathwise E[δ_j] (mean of backprop's δ);
    * ``stein_mv_delta_mean``: E_m[Σ_m⁻¹ mean_b (z_b − b)L_b], unbiased for E[δ⁽¹⁾]; its gap
      ``stein_mv_gap`` to the pathwise mean has expectation exactly 0;
    * ``stein_uv_delta_mean``/``stein_uv_gap``: the univariate form with the exact per-network
      μ_j = b_j and σ_j² = Σ_jj; biased by Σ_{k≠j} Σ_jk E[δ_k]/Σ_jj whenever units are
      correlated (μ_w ≠ 0 makes rows of W correlated);
    * ``stein_delta_mean``/``stein_gap``: the seed document's form Cov(L, z_j)/Var(z_j) with
      the unconditional mean and variance of z_j (approximate: z_j is not Gaussian across
      networks, and the units are correlated).

    Parameters are those of :func:`estimate`; ``inputs`` must be ``inputs.gaussian(q0)``,
    ``targets`` must not depend on x (not ``teacher``), and n_1 ≤ n_0 (Σ invertible).
    """
    inputs = _inputs.gaussian(1.0) if inputs is None else inputs
    if not isinstance(inputs, _inputs.Gaussian):
        raise ValueError(
            "stein_check needs Gaussian inputs (inputs.gaussian(q0)): only then is z⁽¹⁾ exactly "
            "Gaussian given the weights"
        )
    if isinstance(targets, _targets.Teacher):
        raise ValueError(
            "stein_check needs targets independent of x (zeros, constant, gaussian, one_hot): "
            "with teacher targets L depends on x other than through z⁽¹⁾"
        )
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an MLP, got {type(net).__name__}")
    if net.widths[1] > net.widths[0]:
        raise ValueError(
            f"stein_check needs n_1 <= n_0 so that Σ = q₀WWᵀ is invertible; got n_0 = "
            f"{net.widths[0]}, n_1 = {net.widths[1]} (use a wider input or narrower layer 1)"
        )
    last = _drain(
        stream(
            net,
            inputs,
            targets,
            loss,
            n_networks=n_networks,
            batch=batch,
            seed=seed,
            chunk=chunk,
            confidence=confidence,
            method=method,
            dtype=dtype,
            progress=progress,
            _stein_q0=inputs.q0,
            _warn_overflow=False,
        )
    )
    _final_warnings(last)
    keep = [
        "delta_mean",
        "stein_mv_delta_mean",
        "stein_mv_gap",
        "stein_uv_delta_mean",
        "stein_uv_gap",
        "stein_delta_mean",
        "stein_gap",
    ]
    t = last.table
    t = t[(t["layer"] == 1) & t["statistic"].isin(keep)].reset_index(drop=True)
    return Estimates(
        t,
        last.n_networks,
        last.n_inputs,
        last.n_overflow,
        last.confidence,
        last.method,
        last.overflow_layers,
        last.zero_delta,
    )


# ---------------------------------------------------------------------------------------------
# Allocation
# ---------------------------------------------------------------------------------------------
#: Default cap on the suggested inputs per network (:func:`suggest_allocation`).
MAX_INPUTS_PER_NETWORK = 4096

#: Statistic → table row giving the intraclass correlation ρ of its per-network summary
#: exactly (unbiased ANOVA variance components from the accumulated features).
_ALLOCATION_ICC = {
    "delta_mean": "icc",  # summary mean_b ȳ_b, ȳ_b = mean_j δ_bj: the pooled icc row
    "delta_sq": "delta_sq_icc",  # summary mean_b s_b, s_b = ‖δ_b‖²/n_l
    "delta_norm_sq": "delta_sq_icc",
    "log_delta_norm_sq_mean": "log_delta_norm_sq_var",  # from (T, V), see suggest_allocation
}
#: Statistics whose estimand itself depends on B: B is not a free design parameter for them.
_FIXED_BATCH = ("grad_w_sq", "grad_w_var", "design_effect")


def _networks_for(k: float, confidence: float) -> int:
    """Smallest m ≥ 2 with t_{m−1,(1+γ)/2}·k/√m ≤ 1 (k = per-network SD / target half-width).

    t_{m−1}/√m decreases in m, so start at the normal bound ⌈(z·k)²⌉ and search upward
    (doubling, then bisection); −1 if k is not finite.
    """
    if not np.isfinite(k):
        return -1
    alpha = 0.5 * (1 + confidence)

    def ok(m):
        return stats.t.ppf(alpha, m - 1) * k <= np.sqrt(m)

    lo = max(2, int(np.ceil((stats.norm.ppf(alpha) * k) ** 2)))
    if ok(lo):
        return lo
    hi = 2 * lo
    while not ok(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # invariant: not ok(lo), ok(hi)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def _allocation_icc(grp: pd.DataFrame, statistic: str, M: int, B: int):
    """(ρ, source, exact, note) for one layer's pooled rows ``grp`` (see suggest_allocation)."""
    rows = grp.set_index("statistic")
    if statistic in _FIXED_BATCH:
        return (
            np.nan,
            "none",
            False,
            f"the estimand of {statistic} depends on B itself: B kept at the pilot's {B}",
        )
    src = _ALLOCATION_ICC.get(statistic)
    if src == "log_delta_norm_sq_var" and src in rows.index and B >= 2:
        # T = total variance of t (unbiased, eq. (V)); V = M·SE² the between-network variance
        # of the per-network mean of t: E T = σ²_B + σ²_W, E V = σ²_B + σ²_W/B.
        T = float(rows.loc[src, "estimate"])
        V = M * float(rows.loc[statistic, "std_error"]) ** 2
        s_w = B / (B - 1) * (T - V)
        s_b = V - s_w / B
        rho = s_b / (s_b + s_w) if s_b + s_w > 0 else np.nan
        return rho, "log_delta_norm_sq_var", True, ""
    if src is not None and src != "log_delta_norm_sq_var" and src in rows.index:
        return float(rows.loc[src, "estimate"]), src, True, ""
    rho = float(rows.loc["icc", "estimate"]) if "icc" in rows.index else np.nan
    why = (
        f"row {src!r} not in the estimates"
        if src is not None and B >= 2
        else "no exact variance components for this statistic"
    )
    return (
        rho,
        "icc (of δ, approximate)",
        False,
        f"{why}: ρ of the layer-mean δ used instead (approximate; can be far off)",
    )


def suggest_allocation(
    estimates: Estimates,
    cost_per_network: float,
    cost_per_input: float,
    *,
    rel_half_width: float = 0.05,
    statistic: str = "delta_sq",
    max_inputs_per_network: int = MAX_INPUTS_PER_NETWORK,
    min_networks: int = MIN_NETWORKS,
) -> pd.DataFrame:
    """Two-stage sampling advice: inputs per network and networks for a target precision.

    Model. θ̂ = (1/M) Σ_m θ̂_m with θ̂_m the per-network summary of the statistic (a mean over
    the network's B inputs of a per-input quantity Y_b) and

        Var(θ̂_m) = σ²_B + σ²_W/B,   σ²_B = Var_m E[Y|m],   σ²_W = E_m Var(Y|m),

    ρ = σ²_B/(σ²_B + σ²_W). With cost C = M·(c_net + B·c_in) the optimum (Cochran 1977, §10) is

        B* = √( (c_net/c_in) · σ²_W/σ²_B ) = √( (c_net/c_in) · (1 − ρ)/ρ ).

    ρ must be that of the statistic's **own** per-input quantity Y (``icc_source`` column):

    * ``delta_sq``, ``delta_norm_sq`` (pooled): Y = s = ‖δ⁽ˡ⁾‖²/n_l, the ``delta_sq_icc`` row
      (ANOVA on the per-network features (s̄, mean_b s², s̄²): σ̂²_W = B/(B−1)·E_m[mean_b s² −
      s̄²], σ̂²_B = sample variance of s̄_m − σ̂²_W/B). The within part is the variance over
      inputs of the *unit average* s, so it includes the covariances between units;
    * ``delta_mean`` (pooled): Y = ȳ = mean_j δ_j, the ``icc`` row;
    * ``log_delta_norm_sq_mean``: Y = t = log s, from the table: σ̂²_W = B/(B−1)·(T − V),
      σ̂²_B = V − σ̂²_W/B, with T = ``log_delta_norm_sq_var`` (unbiased total variance) and
      V = M·SE² (the between-network variance of the per-network means);
    * ``grad_w_sq``, ``grad_w_var``, ``design_effect``: the estimand depends on B, so B is
      kept at the pilot's value and only M is advised;
    * any other statistic: no exact components are available; ρ of the layer-mean δ is used
      (the old rule), ``exact`` is False and ``note`` says so. E.g. ``delta_var`` when E[δ]
      = 0 behaves like ``delta_sq``, whose row then gives the better advice.

    B* is rounded and clipped to [1, ``max_inputs_per_network``] (``clipped`` True, with a note;
    an estimated ρ ≤ 0 gives B* = ∞). Networks: with the measured per-network variance
    M·SE² at the pilot's B, Var(θ̂_m) at b inputs is M·SE²·V(b)/V(B), V(b) = ρ + (1 − ρ)/b (ρ
    clipped to [0, 1]), and M* is the smallest M with t_{M−1}·√(Var(θ̂_m)/M) ≤ r·|θ̂|. If that
    is below ``min_networks`` (intervals of skewed statistics need about
    :data:`MIN_NETWORKS`), M = ``min_networks`` and B is lowered to the smallest b meeting the
    target with them: the cheapest allocation subject to M ≥ ``min_networks`` (noted).
    ``n_networks_at_current`` is the M* at the pilot's B (no minimum applied).

    Parameters
    ----------
    estimates : Estimates
        A pilot run (all statistics; ``batch`` ≥ 2 so that σ²_B and σ²_W are identifiable).
    cost_per_network, cost_per_input : float
        c_net (drawing a network) and c_in (one input through it), any common unit.
    rel_half_width : float
        r, target CI half-width relative to |θ̂| (at the pilot's confidence level).
    statistic : str
        The statistic whose pooled layer rows set the precision target.
    max_inputs_per_network : int
        Upper limit of the advised B.
    min_networks : int
        Lower limit of the advised M.

    Returns
    -------
    DataFrame
        One row per layer: ``layer, statistic, icc`` (ρ used), ``inputs_per_network`` (B),
        ``n_networks`` (M), ``cost`` (M·(c_net + B·c_in)), ``current_inputs``,
        ``n_networks_at_current``, ``icc_source`` (row ρ came from), ``exact`` (ρ is that of
        the statistic's own summary), ``optimum_inputs`` (unrounded, unclipped B*),
        ``clipped`` (B* > ``max_inputs_per_network``), ``note``.
    """
    if not isinstance(estimates, Estimates):
        raise ValueError("estimates must be the Estimates returned by deltastats.estimate")
    for name, value in (("cost_per_network", cost_per_network), ("cost_per_input", cost_per_input)):
        if not (isinstance(value, numbers.Real) and np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not (isinstance(rel_half_width, numbers.Real) and rel_half_width > 0):
        raise ValueError(f"rel_half_width must be a positive number, got {rel_half_width!r}")
    (statistic,) = _check_statistics(statistic)
    max_inputs = _check_int("max_inputs_per_network", max_inputs_per_network, 1)
    min_networks = _check_int("min_networks", min_networks, 2)
    t = estimates.table[estimates.table["unit"] == -1]
    if (t["statistic"] == statistic).sum() == 0:
        raise ValueError(f"estimates hold no per-layer rows of {statistic!r}")
    B = estimates.n_inputs
    M = estimates.n_networks
    conf = estimates.confidence
    ratio = cost_per_network / cost_per_input
    rows = []
    for layer, grp in t.groupby("layer"):
        if (grp["statistic"] == statistic).sum() == 0:
            continue
        r = grp[grp["statistic"] == statistic].iloc[0]
        rho, source, exact, note = _allocation_icc(grp, statistic, M, B)
        notes = [note] if note else []
        if statistic in _FIXED_BATCH or not np.isfinite(rho):
            b_raw = np.nan
            if statistic not in _FIXED_BATCH:
                notes.append(f"ρ undefined (no variation, or pilot B < 2): B kept at {B}")
        elif rho <= 0:
            b_raw = np.inf
            notes.append(f"estimated ρ = {rho:.3g} ≤ 0: between-network variance not resolved")
        else:
            b_raw = float(np.sqrt(ratio * max(1 - rho, 0.0) / rho))
        clipped = bool(b_raw == np.inf or (np.isfinite(b_raw) and round(b_raw) > max_inputs))
        if np.isnan(b_raw):
            b_opt = B
        elif clipped:
            b_opt = max_inputs
            notes.append(f"B* = {b_raw:.3g} clipped to max_inputs_per_network = {max_inputs}")
        else:
            b_opt = int(max(1, round(b_raw)))
        rho_c = float(np.clip(rho, 0.0, 1.0)) if np.isfinite(rho) else 1.0

        def var_ratio(b, rho_c=rho_c):  # Var(θ̂_m) at b inputs over that at the pilot's B
            return (rho_c + (1 - rho_c) / b) / (rho_c + (1 - rho_c) / B)

        with np.errstate(all="ignore"):
            target = rel_half_width * abs(float(r.estimate))
            sd2 = M * float(r.std_error) ** 2  # per-network variance at the pilot's B
            k_cur = np.sqrt(sd2) / target if target > 0 else np.inf
        m_cur = _networks_for(k_cur, conf)
        m_opt = _networks_for(k_cur * np.sqrt(var_ratio(b_opt)), conf)
        if 0 < m_opt < min_networks:
            # Cheapest allocation with M = min_networks: the smallest b with
            # t·√(sd2·var_ratio(b)/M) ≤ target, i.e. var_ratio(b) ≤ v_max.
            tq = stats.t.ppf(0.5 * (1 + conf), min_networks - 1)
            v_max = min_networks / (tq * k_cur) ** 2 * (rho_c + (1 - rho_c) / B)
            b_new = b_opt
            if v_max >= 1.0:
                b_new = 1
            elif v_max > rho_c:
                b_new = int(min(b_opt, max(1, np.ceil((1 - rho_c) / (v_max - rho_c) - 1e-9))))
            if statistic in _FIXED_BATCH or not np.isfinite(rho):
                b_new = b_opt
            notes.append(
                f"M* = {m_opt} < min_networks: M = {min_networks}, B = {b_new} (cheapest with "
                "that many networks)"
            )
            m_opt, b_opt = min_networks, b_new
        rows.append(
            {
                "layer": int(layer),
                "statistic": statistic,
                "icc": rho,
                "inputs_per_network": int(b_opt),
                "n_networks": m_opt,
                "cost": m_opt * (cost_per_network + b_opt * cost_per_input)
                if m_opt > 0
                else np.nan,
                "current_inputs": B,
                "n_networks_at_current": m_cur,
                "icc_source": source,
                "exact": exact,
                "optimum_inputs": b_raw,
                "clipped": clipped,
                "note": "; ".join(notes),
            }
        )
    return pd.DataFrame(rows)
