"""Gaussian expectations: the one primitive every theory function is built on.

:func:`expect` computes E_{z~N(μ, v)}[f(z)] and :func:`expect2` computes E[f(u, w)] for a
correlated Gaussian pair. Both

* use probabilists' Gauss–Hermite nodes (weight e^{−t²/2}) when f is smooth;
* split the integral at the kinks of f when it has any (relu, leaky relu, selu, steps φ'),
  integrating every smooth piece with Gauss–Legendre against the normal density on
  [−T, T] standard deviations (T = 12: the normal mass outside is 4e−33) — Gauss–Hermite on a
  kink converges only algebraically, Gauss–Legendre on a smooth piece converges exponentially;
* control their own error: the result at ``degree`` is compared with the result at
  ``degree // 2``; while they disagree beyond ``atol + rtol·|I|`` the degree is doubled up to
  ``max_degree``, after which a :class:`QuadratureWarning` is emitted (or
  :class:`QuadratureError` raised, with ``on_error="raise"``).

:func:`activation_moment` and :func:`activation_moment2` are the activation-level wrappers that
theory uses: E[φ(z)], E[φ(z)²], E[φ'(z)²], …, with closed forms where they exist (linear,
relu/leaky relu — the arc-cosine kernel —, erf — the arcsine kernel —, sin) and quadrature
otherwise. Closed forms are chosen by the activation's ``closed_form`` family and ``params`` so that
activations.py stays free of theory.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss
from scipy import special

from ..model.activations import Activation, get_activation

__all__ = [
    "MOMENT2_KINDS",
    "MOMENT_KINDS",
    "QuadratureError",
    "QuadratureWarning",
    "activation_moment",
    "activation_moment2",
    "expect",
    "expect2",
    "hermite_rule",
]

#: Half-width, in standard deviations, of the interval the kink-splitting rule integrates over.
TAIL = 12.0
_SQRT_2PI = np.sqrt(2.0 * np.pi)
#: Extra cut points (in z) used for wide Gaussians (√v > WIDE): activations vary on the scale
#: |z| ~ 1 (tanh has poles at ±iπ/2), where Gauss–Hermite converges slowly (1e−8 at degree 64
#: for tanh² at v ≈ 1) and piecewise Gauss–Legendre reaches 1e−16 with 32 nodes per piece.
SCALE_CUTS = (0.0, -1.0, 1.0, -3.0, 3.0, -9.0, 9.0)
#: 1-D rules go on geometrically (×3) so that e^{−|z|} tails of very wide Gaussians resolve.
SCALE_CUTS_1D = SCALE_CUTS + tuple(float(x) for k in range(3, 8) for x in (-(3**k), 3**k))
#: Standard deviation √v above which a Gaussian counts as wide: its expectations are also
#: split at the natural scales of the activations (SCALE_CUTS, SCALE_CUTS_1D).
WIDE = 0.3
_ON_ERROR = ("warn", "raise", "ignore")


class QuadratureWarning(RuntimeWarning):
    """Two quadrature degrees disagreed beyond tolerance even at ``max_degree``."""


class QuadratureError(ValueError):
    """Raised instead of :class:`QuadratureWarning` when ``on_error="raise"``."""


@lru_cache(maxsize=64)
def hermite_rule(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss–Hermite rule normalised to the standard normal.

    Returns
    -------
    nodes, weights : ndarray, shape ``(degree,)``
        Σ_i weights_i f(nodes_i) ≈ E_{t~N(0,1)}[f(t)], exact for polynomials of degree
        < 2·degree. Weights sum to 1.
    """
    t, w = hermegauss(int(degree))
    t.setflags(write=False)
    w = w / _SQRT_2PI
    w.setflags(write=False)
    return t, w


@lru_cache(maxsize=64)
def _legendre_rule(degree: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = leggauss(int(degree))
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


def _check_common(degree: int, max_degree: int | None, on_error: str) -> int:
    if isinstance(degree, bool) or not isinstance(degree, int | np.integer) or degree < 2:
        raise ValueError(f"degree must be an int >= 2, got {degree!r}")
    max_degree = max(int(degree), 256) if max_degree is None else int(max_degree)
    if max_degree < degree:
        raise ValueError(f"max_degree ({max_degree}) must be >= degree ({degree})")
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")
    return max_degree


def _check_var(var: np.ndarray, name: str = "var") -> None:
    if np.any(~np.isfinite(var)) or np.any(var < 0):
        raise ValueError(
            f"{name} must be finite and >= 0 (it is a variance q); got values such as "
            f"{var[~(np.isfinite(var) & (var >= 0))].ravel()[:3]}"
        )


def _piecewise_rule(cuts: np.ndarray, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre × normal density on [−T, T] split at ``cuts`` (standardised units).

    Parameters
    ----------
    cuts : ndarray, shape ``(..., K)``
        Cut points in standard deviations; clipped to [−T, T] (a cut outside is harmless).

    Returns
    -------
    t, w : ndarray, shape ``(..., (K+1)·degree)``
        Nodes and weights with Σ w g(t) ≈ E_{t~N(0,1)}[g(t)] for g smooth between cuts.
    """
    x, wx = _legendre_rule(degree)
    cuts = np.sort(np.clip(np.nan_to_num(cuts, nan=TAIL, posinf=TAIL, neginf=-TAIL), -TAIL, TAIL))
    # Cuts outside the window for every element only add empty pieces: drop them.
    if cuts.shape[-1]:
        keep = ~np.all(np.abs(cuts.reshape(-1, cuts.shape[-1])) >= TAIL, axis=0)
        cuts = cuts[..., keep]
    lo = np.full(cuts.shape[:-1] + (1,), -TAIL)
    hi = np.full(cuts.shape[:-1] + (1,), TAIL)
    edges = np.concatenate([lo, cuts, hi], axis=-1)
    a, b = edges[..., :-1, None], edges[..., 1:, None]
    half = 0.5 * (b - a)
    t = 0.5 * (a + b) + half * x
    w = half * wx * np.exp(-0.5 * t * t) / _SQRT_2PI
    shape = cuts.shape[:-1] + (-1,)
    return t.reshape(shape), w.reshape(shape)


def _controlled(
    evaluate: Callable[[int], np.ndarray],
    degree: int,
    max_degree: int,
    rtol: float,
    atol: float,
    on_error: str,
    what: str,
) -> np.ndarray:
    """Run ``evaluate`` at degree//2 and degree, doubling until they agree (error control)."""
    low = evaluate(max(degree // 2, 1))
    while True:
        high = evaluate(degree)
        with np.errstate(invalid="ignore"):
            err = np.abs(high - low)
            bad = ~(err <= atol + rtol * np.abs(high))
        # Infinite results that agree (overflowing integrands) are not a quadrature failure.
        bad &= ~((high == low) & np.isinf(high))
        if not np.any(bad) or degree >= max_degree:
            break
        low, degree = high, min(2 * degree, max_degree)
    if np.any(bad) and on_error != "ignore":
        msg = (
            f"{what}: Gauss quadrature at degree {degree} and {degree // 2} disagree by up to "
            f"{np.nanmax(np.where(bad, err, 0.0)):.3g} (rtol={rtol:g}, atol={atol:g}); raise "
            "max_degree, declare the kinks of f, or use a closed form"
        )
        if on_error == "raise":
            raise QuadratureError(msg)
        warnings.warn(msg, QuadratureWarning, stacklevel=3)
    return high


def expect(
    f: Callable[[np.ndarray], np.ndarray],
    mean: float | np.ndarray = 0.0,
    var: float | np.ndarray = 1.0,
    *,
    kinks: tuple[float, ...] = (),
    degree: int = 64,
    max_degree: int | None = None,
    rtol: float = 1e-9,
    atol: float = 1e-12,
    on_error: str = "warn",
) -> np.ndarray:
    """E_{z~N(μ, v)}[f(z)] by Gauss quadrature with error control.

    Parameters
    ----------
    f : callable
        Vectorized: called on an array of shape ``S + (N,)`` (S the broadcast shape of ``mean``
        and ``var``, N the number of nodes), returns the same shape, or ``(R,) + S + (N,)``
        for R integrands over the same Gaussian (the rule is then built once, and the result
        has shape ``(R,) + S``).
    mean, var : float or ndarray
        μ and v = q ≥ 0, broadcast together to shape S. v = 0 gives f(μ).
    kinks : tuple of float
        Points (in z) where f or f' is not smooth; the integral is split there.
    degree : int
        Nodes (per smooth piece); compared with ``degree // 2`` for the error estimate.
    max_degree : int or None
        Degree is doubled up to this while the two disagree (default max(degree, 256)).
    rtol, atol : float
        Tolerance of the agreement check.
    on_error : {"warn", "raise", "ignore"}
        What to do when the check still fails at ``max_degree``.

    Returns
    -------
    ndarray, shape S (a 0-d array for scalar inputs), or ``(R,) + S``
    """
    max_degree = _check_common(degree, max_degree, on_error)
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    _check_var(var)
    mean, var = np.broadcast_arrays(mean, var)
    s = np.sqrt(var)[..., None]
    m = mean[..., None]
    kinks = tuple(float(k) for k in kinks)

    # Activations vary on the scale |z| ~ 1: for a wide Gaussian cut at the natural scales too.
    wide = bool(np.any(s > WIDE))
    if wide:
        kinks = tuple(sorted(set(kinks) | set(SCALE_CUTS_1D)))

    def evaluate(n: int) -> np.ndarray:
        if kinks:
            with np.errstate(divide="ignore", invalid="ignore"):
                cuts = (np.asarray(kinks) - m) / s
            t, w = _piecewise_rule(cuts, max(n // 2, 1) if wide else n)
        else:
            t, w = hermite_rule(n)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.sum(w * f(m + s * t), axis=-1)

    return _controlled(evaluate, degree, max_degree, rtol, atol, on_error, "expect")


def expect2(
    f: Callable[[np.ndarray, np.ndarray], np.ndarray],
    mean1: float | np.ndarray = 0.0,
    mean2: float | np.ndarray = 0.0,
    var1: float | np.ndarray = 1.0,
    var2: float | np.ndarray = 1.0,
    corr: float | np.ndarray = 0.0,
    *,
    kinks1: tuple[float, ...] = (),
    kinks2: tuple[float, ...] = (),
    degree: int = 48,
    max_degree: int | None = None,
    rtol: float = 1e-9,
    atol: float = 1e-12,
    on_error: str = "warn",
) -> np.ndarray:
    """E[f(u, w)] for a Gaussian pair with means μ₁, μ₂, variances v₁, v₂, correlation c.

    Written as u = μ₁ + s₁t₁, w = μ₂ + s₂(c t₁ + √(1−c²) t₂), t₁, t₂ i.i.d. N(0, 1): a tensor
    Gauss–Hermite rule when f is smooth; with kinks, the outer t₁ integral is split at the
    kinks of u and, for every outer node, the inner t₂ integral at the kinks of w.

    Parameters
    ----------
    f : callable
        ``f(u, w)`` vectorized over arrays of shape ``S + (N,)``.
    mean1, mean2, var1, var2, corr : float or ndarray
        Broadcast to shape S; variances ≥ 0, correlation in [−1, 1].
    kinks1, kinks2 : tuple of float
        Non-smooth points of f in u and in w.
    degree, max_degree, rtol, atol, on_error
        As in :func:`expect` (degree per dimension and per piece).

    Returns
    -------
    ndarray, shape S
    """
    max_degree = _check_common(degree, max_degree, on_error)
    arrs = [np.asarray(a, dtype=np.float64) for a in (mean1, mean2, var1, var2, corr)]
    _check_var(arrs[2], "var1")
    _check_var(arrs[3], "var2")
    if np.any(~np.isfinite(arrs[4])) or np.any(np.abs(arrs[4]) > 1 + 1e-12):
        raise ValueError("corr must be a correlation in [-1, 1]")
    m1, m2, v1, v2, c = (a[..., None] for a in np.broadcast_arrays(*arrs))
    c = np.clip(c, -1.0, 1.0)
    s1, s2 = np.sqrt(v1), np.sqrt(v2)
    rho = np.sqrt(1.0 - c * c)
    kinks1 = tuple(float(k) for k in kinks1)
    kinks2 = tuple(float(k) for k in kinks2)
    # Wide Gaussians: cut at the natural scales of f too (see :func:`expect`).
    wide = bool(np.any(s1 > WIDE) or np.any(s2 > WIDE))
    if wide:
        kinks1 = tuple(sorted(set(kinks1) | set(SCALE_CUTS)))
        kinks2 = tuple(sorted(set(kinks2) | set(SCALE_CUTS)))

    def evaluate(n: int) -> np.ndarray:
        n = max(n // 2, 1) if wide else n
        if kinks1 or kinks2:
            with np.errstate(divide="ignore", invalid="ignore"):
                cut1 = (np.asarray(kinks1) - m1) / s1 if kinks1 else np.zeros(m1.shape[:-1] + (0,))
            t1, w1 = _piecewise_rule(cut1, n)  # S + (N1,)
            t1, w1 = t1[..., :, None], w1[..., :, None]
            if kinks2:
                base = (m2 + s2 * c * t1[..., 0])[..., None]  # S + (N1, 1)
                with np.errstate(divide="ignore", invalid="ignore"):
                    cut2 = (np.asarray(kinks2) - base) / (s2 * rho)[..., None]
                # Where the inner Gaussian is degenerate (s₂√(1−c²) = 0) put the cut at the
                # side that keeps every inner node on the correct side of the kink.
                cut2 = np.where(np.isnan(cut2), TAIL, cut2)
                t2, w2 = _piecewise_rule(cut2, n)  # S + (N1, N2)
            else:
                t2, w2 = hermite_rule(n)
        else:
            t1, w1 = hermite_rule(n)
            t1, w1 = t1[:, None], w1[:, None]
            t2, w2 = hermite_rule(n)
        u = m1[..., None] + s1[..., None] * t1
        w = m2[..., None] + s2[..., None] * (c[..., None] * t1 + rho[..., None] * t2)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.sum(w1 * w2 * f(u, w), axis=(-2, -1))

    return _controlled(evaluate, degree, max_degree, rtol, atol, on_error, "expect2")


# ---------------------------------------------------------------------------------------------
# Activation moments: closed forms where known, quadrature otherwise.
# ---------------------------------------------------------------------------------------------

#: Univariate moment kinds: name → (integrand g(φ, φ', z − μ), homogeneity degree in the scale
#: of z for a positively homogeneous φ such as relu). ``"ddphi"`` and ``"phi_ddphi"`` are the
#: Gaussian integration-by-parts forms E[φ''] = E[φ'·(z−μ)]/v and
#: E[φφ''] = E[φφ'·(z−μ)]/v − E[φ'²], which need no φ'' and are right for kinked φ.
MOMENT_KINDS: dict[str, int] = {
    "phi": 1,
    "phi2": 2,
    "dphi": 0,
    "dphi2": 0,
    "phi_dphi": 1,
    "phi2_dphi2": 2,
    "phi_dphi2": 1,
    "zc_phi_dphi": 2,
    "zc_dphi": 1,
    "ddphi": -1,
    "phi_ddphi": 0,
}
#: The two-input moments :func:`expect2` knows: E[φ(u₁)φ(u₂)] and E[φ'(u₁)φ'(u₂)].
MOMENT2_KINDS = ("phi_phi", "dphi_dphi")


def _integrand(act: Activation, kind: str, mean: np.ndarray) -> Callable:
    p, dp = act.phi, act.dphi
    table = {
        "phi": lambda z: p(z),
        "phi2": lambda z: p(z) ** 2,
        "dphi": lambda z: dp(z),
        "dphi2": lambda z: dp(z) ** 2,
        "phi_dphi": lambda z: p(z) * dp(z),
        "phi2_dphi2": lambda z: (p(z) * dp(z)) ** 2,
        "phi_dphi2": lambda z: p(z) * dp(z) ** 2,
        "zc_phi_dphi": lambda z: (z - mean) * p(z) * dp(z),
        "zc_dphi": lambda z: (z - mean) * dp(z),
    }
    return table[kind]


def _closed_form(act: Activation, kind: str, m: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    """Closed-form E_{N(m, v)}[…] for the activation, or None if not known."""
    family = act.closed_form
    if family == "linear":
        return {
            "phi": m,
            "phi2": m * m + v,
            "dphi": np.ones_like(m),
            "dphi2": np.ones_like(m),
            "phi_dphi": m,
            "phi2_dphi2": m * m + v,
            "phi_dphi2": m,
            "zc_phi_dphi": v,
            "zc_dphi": np.zeros_like(m),
        }.get(kind)
    if family == "leaky_relu":
        alpha = float(act.params.get("alpha", 0.0))
        s = np.sqrt(v)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(s > 0, m / s, np.copysign(np.inf, m))
        cdf, pdf = special.ndtr(a), np.where(np.isfinite(a), np.exp(-0.5 * a * a), 0.0)
        pdf = pdf / _SQRT_2PI
        # Truncated-normal moments: E[z; z>0] = mΦ + sφ, E[z²; z>0] = (m²+v)Φ + m s φ.
        pos1 = m * cdf + s * pdf
        pos2 = (m * m + v) * cdf + m * s * pdf
        neg1, neg2 = m - pos1, m * m + v - pos2
        out = {
            "phi": pos1 + alpha * neg1,
            "phi2": pos2 + alpha**2 * neg2,
            "dphi": cdf + alpha * (1.0 - cdf),
            "dphi2": cdf + alpha**2 * (1.0 - cdf),
            "phi_dphi": pos1 + alpha**2 * neg1,
            "phi2_dphi2": pos2 + alpha**4 * neg2,
            "phi_dphi2": pos1 + alpha**3 * neg1,
            # E[(z−m)·z; z>0] = vΦ + m s φ − m·0 … by E[(z−m) g] = v E[g'] (Stein).
            "zc_phi_dphi": v * (cdf + alpha**2 * (1.0 - cdf)),
            "zc_dphi": (1.0 - alpha) * s * pdf,
        }
        return out.get(kind)
    if family == "erf":
        # E erf(z) = erf(m/√(1+2v)); E e^{−k z²} = e^{−k m²/(1+2kv)}/√(1+2kv).
        if kind == "phi":
            return special.erf(m / np.sqrt(1.0 + 2.0 * v))
        if kind == "dphi":
            return 2.0 / np.sqrt(np.pi) * np.exp(-m * m / (1 + 2 * v)) / np.sqrt(1 + 2 * v)
        if kind == "dphi2":
            return 4.0 / np.pi * np.exp(-2 * m * m / (1 + 4 * v)) / np.sqrt(1 + 4 * v)
        if kind == "phi2" and np.all(m == 0):
            # Arcsine kernel at c = 1 (Williams 1997).
            return 2.0 / np.pi * np.arcsin(2.0 * v / (1.0 + 2.0 * v))
        return None
    if family == "sin":
        e1, e2 = np.exp(-0.5 * v), np.exp(-2.0 * v)
        return {
            "phi": np.sin(m) * e1,
            "phi2": 0.5 * (1.0 - np.cos(2 * m) * e2),
            "dphi": np.cos(m) * e1,
            "dphi2": 0.5 * (1.0 + np.cos(2 * m) * e2),
        }.get(kind)
    return None


def activation_moment(
    activation: str | Activation,
    kind: str,
    mean: float | np.ndarray = 0.0,
    var: float | np.ndarray = 1.0,
    *,
    closed_form: bool = True,
    **quad_kwargs,
) -> np.ndarray:
    """A Gaussian moment of an activation, E_{z~N(μ, v)}[g(φ(z), φ'(z), z)].

    Parameters
    ----------
    activation : str or Activation
    kind : str
        One of :data:`MOMENT_KINDS`: ``"phi"`` E[φ], ``"phi2"`` E[φ²], ``"dphi"`` E[φ'],
        ``"dphi2"`` E[φ'²], ``"phi_dphi"`` E[φφ'], ``"phi2_dphi2"`` E[φ²φ'²], ``"phi_dphi2"``
        E[φφ'²], ``"zc_phi_dphi"`` E[(z−μ)φφ'], ``"zc_dphi"`` E[(z−μ)φ'], ``"ddphi"`` E[φ'']
        and ``"phi_ddphi"`` E[φφ''] (by Gaussian integration by parts, valid for kinks).
    mean, var : float or ndarray
        μ and v ≥ 0, broadcast together.
    closed_form : bool
        Use a closed form when one is known (default); ``False`` forces quadrature.
    **quad_kwargs
        Passed to :func:`expect` (degree, rtol, on_error, …).

    Returns
    -------
    ndarray, the broadcast shape of ``mean`` and ``var``
    """
    act = get_activation(activation)
    if kind not in MOMENT_KINDS:
        raise ValueError(f"unknown moment kind {kind!r}; valid kinds: {', '.join(MOMENT_KINDS)}")
    m = np.asarray(mean, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    _check_var(v)
    m, v = np.broadcast_arrays(m, v)
    if kind == "ddphi":
        with np.errstate(divide="ignore", invalid="ignore"):
            zc = activation_moment(act, "zc_dphi", m, v, closed_form=closed_form, **quad_kwargs)
            return zc / v
    if kind == "phi_ddphi":
        zc = activation_moment(act, "zc_phi_dphi", m, v, closed_form=closed_form, **quad_kwargs)
        d2 = activation_moment(act, "dphi2", m, v, closed_form=closed_form, **quad_kwargs)
        with np.errstate(divide="ignore", invalid="ignore"):
            return zc / v - d2
    if closed_form:
        out = _closed_form(act, kind, m, v)
        if out is not None:
            return np.asarray(out, dtype=np.float64) + np.zeros_like(m)
    return expect(_integrand(act, kind, m[..., None]), m, v, kinks=act.kinks, **quad_kwargs)


def activation_moment2(
    activation: str | Activation,
    kind: str,
    var1: float | np.ndarray,
    var2: float | np.ndarray,
    corr: float | np.ndarray,
    mean1: float | np.ndarray = 0.0,
    mean2: float | np.ndarray = 0.0,
    *,
    closed_form: bool = True,
    **quad_kwargs,
) -> np.ndarray:
    """E[φ(u)φ(w)] (``"phi_phi"``) or E[φ'(u)φ'(w)] (``"dphi_dphi"``) for a Gaussian pair.

    Closed forms (zero means): linear c√(v₁v₂); relu/leaky relu the arc-cosine kernel
    (Cho & Saul 2009); erf the arcsine kernel (Williams 1997); sin
    e^{−(v₁+v₂)/2} sinh(c√(v₁v₂)). Otherwise :func:`expect2`.

    Returns
    -------
    ndarray, the broadcast shape of the arguments
    """
    act = get_activation(activation)
    if kind not in MOMENT2_KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid kinds: {', '.join(MOMENT2_KINDS)}")
    v1, v2, c, m1, m2 = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (var1, var2, corr, mean1, mean2))
    )
    _check_var(v1, "var1")
    _check_var(v2, "var2")
    family = act.closed_form
    if closed_form and np.all(m1 == 0) and np.all(m2 == 0):
        c = np.clip(c, -1.0, 1.0)
        k = np.sqrt(v1 * v2)
        theta = np.arccos(c)
        out = None
        if family == "linear":
            out = c * k if kind == "phi_phi" else np.ones_like(c)
        elif family == "leaky_relu":
            alpha = float(act.params.get("alpha", 0.0))
            # φ = (1−α) relu + α·id; arc-cosine kernels of degree 1 and 0.
            if kind == "phi_phi":
                j1 = k / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * c)
                cross = 0.5 * c * k  # E[relu(u)·w] = E[u·w; u>0] = c k / 2
                out = (1 - alpha) ** 2 * j1 + 2 * alpha * (1 - alpha) * cross + alpha**2 * c * k
            else:
                j0 = (np.pi - theta) / (2 * np.pi)
                # φ' = α + (1−α)1{z>0}
                out = alpha**2 + alpha * (1 - alpha) + (1 - alpha) ** 2 * j0
        elif family == "erf" and kind == "phi_phi":
            out = 2 / np.pi * np.arcsin(2 * c * k / np.sqrt((1 + 2 * v1) * (1 + 2 * v2)))
        elif family == "erf" and kind == "dphi_dphi":
            # (4/π) E e^{−u²−w²} = (4/π)/√det(I + 2Σ)
            det = (1 + 2 * v1) * (1 + 2 * v2) - 4 * c * c * v1 * v2
            out = 4 / np.pi / np.sqrt(det)
        elif family == "sin":
            e = np.exp(-0.5 * (v1 + v2))
            out = e * (np.sinh(c * k) if kind == "phi_phi" else np.cosh(c * k))
        if out is not None:
            return np.asarray(out, dtype=np.float64)
    g = act.phi if kind == "phi_phi" else act.dphi
    return expect2(
        lambda u, w: g(u) * g(w),
        m1,
        m2,
        v1,
        v2,
        c,
        kinks1=act.kinks,
        kinks2=act.kinks,
        **quad_kwargs,
    )
