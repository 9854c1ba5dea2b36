"""The statistics: each a smooth function θ = f(F̄) of the mean per-network feature vector.

A statistic reads the columns of one feature array (layout in
:mod:`deltastats.stats.features`) and the constants of that array (its shift c, sizes). With
y = x − c and F = (p₁, p₂, p₃, p₄, q, r), p_k = mean_b yᵏ, q = p₁²:

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

Every function has the signature ``f(v, consts, M, B)`` with ``v`` of shape ``(..., S, k)``
(real, or complex for the complex-step gradient of :mod:`deltastats.stats.intervals`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .controls import CV_C, CV_CC, CV_Y, CV_YC
from .features import (
    MEAN,
    MEAN_SQ,
    MV_DELTA,
    MV_S,
    MV_U,
    P1,
    P1_SQ,
    P2,
    P3,
    P4,
    SQ_MEAN,
    ST_DELTA,
    ST_LOSS,
    ST_LOSS_Z,
    ST_Z,
    ST_Z_SQ,
    R,
)

__all__ = ["STATISTICS", "check_statistics"]


def _central(v):
    p1, p2, p3, p4 = v[..., P1], v[..., P2], v[..., P3], v[..., P4]
    m2 = p2 - p1 * p1
    m3 = p3 - 3 * p1 * p2 + 2 * p1**3
    m4 = p4 - 4 * p1 * p3 + 6 * p1 * p1 * p2 - 3 * p1**4
    return m2, m3, m4


def _s(c) -> float:
    """The scale s of a feature array (features are powers of (x − c)/s); 1 when unscaled."""
    return c.get("s", 1.0)


def _mean(v, c, M, B):
    # The first column is the shifted, scaled mean in every layout (P1 = MEAN = 0).
    return c["c"] + _s(c) * v[..., P1]


def _sq(v, c, M, B):
    s = _s(c)
    return c["c"] * c["c"] + 2 * c["c"] * (s * v[..., P1]) + (s * s) * v[..., P2]


def _norm_sq(v, c, M, B):
    # E‖δ⁽ˡ⁾‖² = n_l · E[δ_j²] pooled over the n_l units of the layer.
    return c["n"] * _sq(v, c, M, B)


def _var(v, c, M, B, q=P1_SQ):
    # (V): plug-in variance plus the unbiasing term for clustered sampling; column q holds the
    # per-network squared mean (P1_SQ in the power layout, SQ_MEAN in the scalar one).
    p1 = v[..., P1]
    s = _s(c)
    return (s * s) * (v[..., P2] - p1 * p1 + (v[..., q] - p1 * p1) / (M - 1))


def _skew(v, c, M, B):
    m2, m3, _ = _central(v)
    return m3 / m2**1.5


def _kurt(v, c, M, B):
    m2, _, m4 = _central(v)
    return m4 / (m2 * m2) - 3


def _anova_icc(mean, within, squared_mean, scale, M, B):
    """(ICC): one-way ANOVA variance components from the per-network mean x̄_m, the mean of x²
    within the network and x̄_m² (each averaged over networks):
    σ̂²_W = B/(B−1)(within − squared_mean), σ̂²_B = M/(M−1)(squared_mean − mean²) − σ̂²_W/B.
    ``scale`` (the mean square of x) sets what counts as no variation at all."""
    if B < 2:
        return np.full(np.shape(mean), np.nan)
    s_w = B / (B - 1) * (within - squared_mean)
    s_b = M / (M - 1) * (squared_mean - mean * mean) - s_w / B
    # A signal that does not vary (e.g. the unit average of softmax − y) has no icc: 0/0.
    total = s_b + s_w
    flat = np.real(total) <= 1e-12 * np.abs(np.real(scale))
    return np.where(flat, np.nan, s_b / np.where(flat, 1.0, total))


def _icc(v, c, M, B):
    # Power layout: the within-network second moment is R (shifted, like P1 and P1_SQ).
    return _anova_icc(v[..., P1], v[..., R], v[..., P1_SQ], v[..., P2], M, B)


def _deff(v, c, M, B):
    return 1 + (B - 1) * _icc(v, c, M, B)


def _var3(v, c, M, B):
    return _var(v, c, M, B, q=SQ_MEAN)


def _icc3(v, c, M, B):
    # Scalar layout, for a per-input scalar such as s = ‖δ‖²/n_l.
    return _anova_icc(v[..., MEAN], v[..., MEAN_SQ], v[..., SQ_MEAN], v[..., MEAN_SQ], M, B)


def _grad_sq(v, c, M, B):
    # E‖G‖² = N · E[G_ij²] (pooled over the N entries) with G = c + (G − c).
    s = _s(c)
    return c["N"] * (c["c"] * c["c"] + 2 * c["c"] * (s * v[..., MEAN]) + (s * s) * v[..., MEAN_SQ])


def _stein(v, c, M, B):
    # Integration by parts (Stein's lemma) for Gaussian z_j:
    # E[δ_j] ≈ E[L·(z_j − μ_j)]/σ_j² = Cov(L, z_j)/Var(z_j).
    # In scaled units the ratio is (s_ℓ s_z)/(s_z²) = s_ℓ/s_z times the plain one.
    ell, ellz, zm, z2 = v[..., ST_LOSS], v[..., ST_LOSS_Z], v[..., ST_Z], v[..., ST_Z_SQ]
    return c.get("ratio", 1.0) * ((ellz - ell * zm) / (z2 - zm * zm))


def _stein_gap(v, c, M, B):
    return _stein(v, c, M, B) - (c["c_d"] + c.get("s_d", 1.0) * v[..., ST_DELTA])


def _mv(v, c, M, B):
    return c["c_s"] + v[..., MV_S]


def _mv_gap(v, c, M, B):
    return c["c_s"] + v[..., MV_S] - c["c_d"] - c.get("s_d", 1.0) * v[..., MV_DELTA]


def _uv(v, c, M, B):
    return c["c_u"] + v[..., MV_U]


def _uv_gap(v, c, M, B):
    return c["c_u"] + v[..., MV_U] - c["c_d"] - c.get("s_d", 1.0) * v[..., MV_DELTA]


def _sq_cv(v, c, M, B):
    # Control-variate estimate of E[δ²] (deltastats.stats.controls): ȳ − β̂c̄ with E[c] = 0
    # exactly and β̂ = Cov(y, c)/Var(c) from the same networks; y is the dsq feature.
    y, k, yk, kk = v[..., CV_Y], v[..., CV_C], v[..., CV_YC], v[..., CV_CC]
    beta = (yk - y * k) / (kk - k * k)
    return c["c"] + _s(c) * (y - beta * k)


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
    "delta_norm_sq": _Stat("delta", _norm_sq, False, "E[‖δ⁽ˡ⁾‖²] = n_l · E[δ²] (squared norm)"),
    "log_delta_norm_sq_mean": _Stat("lognorm", _mean, False, "E[log(‖δ⁽ˡ⁾‖²/n_l)]"),
    "log_delta_norm_sq_var": _Stat("lognorm", _var3, False, "Var[log(‖δ⁽ˡ⁾‖²/n_l)]"),
    "grad_w_sq": _Stat("gradw", _grad_sq, False, "E[‖∂J/∂W⁽ˡ⁾‖²_F] (batch-mean gradient)"),
    "grad_w_mean": _Stat("gradw", _mean, False, "E[(∂J/∂W⁽ˡ⁾)_ik], pooled over entries"),
    "grad_w_var": _Stat("gradw", _var3, False, "Var[(∂J/∂W⁽ˡ⁾)_ik], pooled over entries"),
    "stein_delta_mean": _Stat(
        "stein", _stein, True, "Cov(L, z_j)/Var(z_j) (Stein / integration by parts)"
    ),
    "stein_gap": _Stat("stein", _stein_gap, True, "stein_delta_mean − delta_mean"),
    "icc": _Stat("delta", _icc, True, "share of Var[δ_j] between networks, eq. (ICC)"),
    "design_effect": _Stat("delta", _deff, True, "1 + (B − 1)·icc"),
    "delta_sq_icc": _Stat(
        "dsq", _icc3, False, "icc of s = ‖δ⁽ˡ⁾‖²/n_l, the per-input summary of E[δ²] (allocation)"
    ),
    "delta_sq_cv": _Stat(
        "cv", _sq_cv, False, "E[δ²] pooled, with a control variate of exact mean (lower SE)"
    ),
    "stein_mv_delta_mean": _Stat("steinmv", _mv, True, "E[Σ⁻¹(z − b)L], layer 1, conditional"),
    "stein_mv_gap": _Stat("steinmv", _mv_gap, True, "stein_mv_delta_mean − delta_mean"),
    "stein_uv_delta_mean": _Stat("steinmv", _uv, True, "E[(z_j − b_j)L/Σ_jj], layer 1"),
    "stein_uv_gap": _Stat("steinmv", _uv_gap, True, "stein_uv_delta_mean − delta_mean"),
}

#: Statistic names with a one-line description each.
STATISTICS: dict[str, str] = {k: s.doc for k, s in _REGISTRY.items()}


def check_statistics(statistics) -> list[str]:
    """Statistic names as a list (``None`` → all), each checked against :data:`STATISTICS`."""
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
