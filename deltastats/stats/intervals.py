"""Confidence intervals valid for the nested design (networks × inputs), and
:func:`summarize`, which turns an accumulator into :class:`~deltastats.stats.results.Estimates`.

The **network is the independent unit**: every statistic is θ = f(μ_F) of the mean μ_F =
E[F_m] of a per-network feature vector F_m (:mod:`deltastats.stats.statistics`), estimated
by θ̂ = f(F̄).

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

References
----------
Busing, F. M. T. A., Meijer, E. & van der Leeden, R. (1999). Delete-m jackknife for unequal m.
*Statistics and Computing* 9, 3–8.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .. import checks
from ..model.seeding import as_seed_sequence
from .accumulators import SummarySource
from .features import FeatureKey
from .results import COLUMNS, Estimates
from .statistics import _REGISTRY, check_statistics

#: Interval methods.
METHODS = ("clt", "jackknife", "bootstrap")
#: Statistics that split the variance within and between networks: they need B ≥ 2.
_NEEDS_TWO_INPUTS = ("icc", "design_effect", "delta_sq_icc")
#: Spawn-key number of the bootstrap's random stream (after those of
#: :mod:`deltastats.model.seeding`).
_BOOTSTRAP_STREAM = 1000


def check_method_confidence(method, confidence) -> None:
    """``ValueError`` unless ``method`` is one of :data:`METHODS` and 0 < ``confidence`` < 1."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are: {', '.join(METHODS)}")
    checks.probability("confidence", confidence)


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
    dev = pseudo - th_j[None]  # (G, S)
    with np.errstate(all="ignore"):
        var = np.sum(dev**2 / (h - 1), axis=0) / G
        se = np.sqrt(var)
        redo = ~np.isfinite(se) & np.isfinite(dev).all(axis=0)
        if redo.any():  # squares beyond float64: the same sum in units of a power of two
            k = _pow2_exponent(np.max(np.abs(dev[:, redo]), axis=0))
            scaled = np.ldexp(dev[:, redo], -k)
            se[redo] = np.ldexp(np.sqrt(np.sum(scaled**2 / (h - 1), axis=0) / G), k)
    return se, G


def _pow2_exponent(peak: np.ndarray) -> np.ndarray:
    """Per entry the k with peak·2⁻ᵏ in [0.5, 1) (0 where peak is 0 or not finite)."""
    k = np.frexp(np.where(np.isfinite(peak) & (peak > 0), peak, 1.0))[1]
    return np.where(np.isfinite(peak) & (peak > 0), k, 0)


def _delta_method_se(g: np.ndarray, cov: np.ndarray, M: int) -> np.ndarray:
    """√(gᵀ Σ g / M) per slot, g ``(S, k)`` and Σ ``(S, k, k)``.

    Where the quadratic form overflows float64 (a huge statistic, e.g. E[δ²] ≈ 10¹⁸⁰ of a deep
    exploding network) it is recomputed with g in units of a power of two 2ᵏ: scaling by a
    power of two is exact, so the result is the same number, just not overflowed.
    """
    with np.errstate(all="ignore"):
        se = np.sqrt(np.einsum("si,sij,sj->s", g, cov, g) / M)
        redo = ~np.isfinite(se) & np.isfinite(g).all(axis=1) & np.isfinite(cov).all(axis=(1, 2))
        if redo.any():
            k = _pow2_exponent(np.max(np.abs(g[redo]), axis=1))
            gs = np.ldexp(g[redo], -k[:, None])
            se[redo] = np.ldexp(np.sqrt(np.einsum("si,sij,sj->s", gs, cov[redo], gs) / M), k)
    return se


def _resample_counts(rng: np.random.Generator, M: int, n_resamples: int) -> np.ndarray:
    """Counts ``(R, M)`` of each network in each resample: c_r ~ Multinomial(M, 1/M). One
    set serves every feature array and statistic, so all bootstrap rows share resamples."""
    if M < 2:
        return np.zeros((n_resamples, M))
    return rng.multinomial(M, np.full(M, 1.0 / M), size=n_resamples).astype(np.float64)


def _bootstrap(fn, per_net, means_star, consts, M, B, confidence, theta):
    """BCa bootstrap over networks (Efron 1987): SE and interval of θ = f(F̄) per slot.

    Resample r has counts c_r ~ Multinomial(M, 1/M) over the networks, so its mean feature
    vector is F̄*_r = (1/M) Σ_m c_rm F_m (``means_star``, one matrix product for all resamples,
    see :func:`_resample_counts`). The bias correction is z₀ = Φ⁻¹(#{θ*_r < θ̂}/R +
    ½#{θ*_r = θ̂}/R); the acceleration a = Σ dᵢ³ / (6 (Σ dᵢ²)^{3/2}), dᵢ = θ̄₍.₎ − θ₍ᵢ₎, from the
    leave-one-network-out values θ₍ᵢ₎ = f((M F̄ − Fᵢ)/(M − 1)); the interval is the (α₁, α₂)
    quantiles of θ* with α = Φ(z₀ + (z₀ + z_γ)/(1 − a(z₀ + z_γ))), z_γ = Φ⁻¹((1 ∓ γ)/2).

    References
    ----------
    Efron, B. (1987). Better bootstrap confidence intervals. *JASA* 82, 171–185.
    """
    S = per_net.shape[1]
    with np.errstate(all="ignore"):
        out = np.real(fn(means_star, consts, M, B))  # (R, S)
        total = per_net.sum(axis=0)
        loo = np.real(fn((total[None] - per_net) / (M - 1), consts, M - 1, B))  # (M, S)
        d = np.nanmean(loo, axis=0) - loo
        a = np.nansum(d**3, axis=0) / (6 * np.nansum(d**2, axis=0) ** 1.5)
        a = np.where(np.isfinite(a), a, 0.0)
        below = np.mean(out < theta, axis=0) + 0.5 * np.mean(out == theta, axis=0)
        z0 = stats.norm.ppf(np.clip(below, 1e-12, 1 - 1e-12))
        qs = [
            stats.norm.cdf(z0 + (z0 + zg) / (1 - a * (z0 + zg)))
            for zg in stats.norm.ppf([(1 - confidence) / 2, (1 + confidence) / 2])
        ]
        se = np.nanstd(out, axis=0, ddof=1)
        lo, hi = (
            np.array(
                [np.nanquantile(out[:, s], q[s]) if np.isfinite(q[s]) else np.nan for s in range(S)]
            )
            for q in qs
        )
    return se, lo, hi


class _Wanted:
    """The feature arrays a summary needs: those of the wanted statistics' quantities (and
    per-unit arrays only with ``units``), as a container of feature names."""

    def __init__(self, statistics: set, units: bool):
        self.quantities = {spec.quantity for stat, spec in _REGISTRY.items() if stat in statistics}
        self.units = units
        self._seen: dict = {}

    def __contains__(self, name: str) -> bool:
        if name not in self._seen:
            quantity, _, kind = FeatureKey.parse(name)
            self._seen[name] = quantity in self.quantities and (self.units or kind != "unit")
        return self._seen[name]


def summarize(
    accumulator: SummarySource,
    *,
    method: str = "clt",
    confidence: float = 0.95,
    n_resamples: int = 1999,
    seed: int | np.random.SeedSequence | None = 0,
    statistics: str | Sequence[str] | None = None,
    progress: bool = False,
    units: bool = True,
) -> Estimates:
    """Turn an accumulator into :class:`Estimates`.

    Parameters
    ----------
    accumulator : BackpropAccumulator or ArrayAccumulator
        A :class:`~deltastats.stats.accumulators.BackpropAccumulator` (the engine's traces) or
        a :class:`~deltastats.stats.arrays.ArrayAccumulator` (a researcher's own arrays; its
        layer names become a ``name`` column beside ``layer``). Holds
        ``keep_networks=True`` for ``method="bootstrap"``.
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
    progress : bool
        Show a progress bar over the bootstrap resamples (``method="bootstrap"``).
    units : bool
        Include the per-unit rows (default); ``False``: the pooled layer rows only, which is
        all a stopping rule reads (:meth:`Estimates.rel_error`) and much less work.
    """
    check_method_confidence(method, confidence)
    wanted = set(check_statistics(statistics))
    if not isinstance(accumulator, SummarySource):
        raise ValueError(
            "accumulator must be a BackpropAccumulator or an ArrayAccumulator; for arrays of δ "
            "(M, B, n_l) use deltastats.estimate_arrays"
        )
    if method == "bootstrap" and not accumulator.features.keep_networks:
        raise ValueError(
            "method='bootstrap' needs the per-network summaries: create the accumulator with "
            "keep_networks=True"
        )
    summ = accumulator.summary(_Wanted(wanted, units))
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
        counts = _resample_counts(rng, M, n_resamples)
    alpha = 0.5 * (1 + confidence)
    t_clt = stats.t.ppf(alpha, M - 1) if M >= 2 else np.nan
    order = {s: i for i, s in enumerate(_REGISTRY)}
    cols: dict[str, list] = {k: [] for k in ("layer", "unit", "stat", *COLUMNS[3:7])}
    names = list(summ.mean)
    if progress and method == "bootstrap":
        from tqdm.auto import tqdm

        names = tqdm(names, desc="bootstrap", unit="array", leave=False)
    for name in names:
        quantity, layer, kind = FeatureKey.parse(name)
        v = summ.mean[name]
        cst = consts[name]
        if method == "bootstrap" and M >= 2:
            kept = summ.per_network[name]  # (M, S, k)
            means_star = (counts @ kept.reshape(M, -1) / M).reshape(-1, *kept.shape[1:])
        for stat, spec in _REGISTRY.items():
            if spec.quantity != quantity or (kind == "unit" and not spec.per_unit):
                continue
            if stat not in wanted or (B < 2 and stat in _NEEDS_TWO_INPUTS):
                continue  # variance components need B ≥ 2 inputs per network: absent, not NaN
            with np.errstate(all="ignore"):
                theta = np.real(spec.fn(v, cst, M, B)) if M >= 2 else np.full(v.shape[0], np.nan)
            se = lo = hi = np.full_like(theta, np.nan)
            if M >= 2 and method == "clt":
                with np.errstate(all="ignore"):
                    g = _complex_step_grad(spec.fn, v, cst, M, B)
                    se = _delta_method_se(g, summ.cov[name], M)
                lo, hi = theta - t_clt * se, theta + t_clt * se
            elif M >= 2 and method == "jackknife":
                se, G = _jackknife_se(spec.fn, summ, name, cst, B, theta)
                t = stats.t.ppf(alpha, G - 1) if G >= 2 else np.nan
                lo, hi = theta - t * se, theta + t * se
            elif M >= 2 and method == "bootstrap":
                se, lo, hi = _bootstrap(spec.fn, kept, means_star, cst, M, B, confidence, theta)
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
    names_of = accumulator.layer_names
    layer_col = arr["layer"][idx]
    named = {"name": np.array([names_of[l] for l in layer_col], dtype=object)} if names_of else {}
    table = pd.DataFrame(
        {
            "layer": layer_col,
            **named,
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
        dict(names_of),
    )
