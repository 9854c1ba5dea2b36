"""Theory for the statistics of δ⁽ˡ⁾ = ∂L/∂z⁽ˡ⁾: mean field, Gaussian backward map, exact results.

Notation as in DESIGN.md: layers l = 1 … L, widths (n_0, …, n_L),
W⁽ˡ⁾_ij ~ N(μ_w/n_{l−1}, σ_w²/n_{l−1}), b⁽ˡ⁾_i ~ N(μ_b, σ_b²), loss L = ½‖g − y‖².

Contents
--------
* Mean-field forward maps (Poole et al. 2016; Schoenholz et al. 2017): :func:`q_map`,
  :func:`c_map`, :func:`chi1`, :func:`fixed_point`, :func:`depth_scales`,
  :func:`critical_sigma_w`, :func:`phase_diagram`, and :func:`forward_moments` for an MLP spec
  with μ_w, μ_b ≠ 0.
* The Gaussian-assumption backward map, :func:`backward_moments`, recursions (B0)–(B4), and
  its two-input version :func:`pair_moments` (P0)–(P3) for the batch-mean weight gradient.
* Exact finite-width results for deep linear networks (Wick / Wishart moments):
  :func:`linear_exact`, and the eigen-form for a tied diagonalizable W, :func:`tied_linear_deltas`.
* The finite-width log-normal fluctuation of ‖δ⁽ˡ⁾‖² for ReLU (Hanin 2018; Hanin & Nica 2019):
  :func:`relu_log_norm_var` (with the measured constants; see its docstring and
  :func:`hanin_rho`).
* :func:`predict`: all of the above as a tidy DataFrame ``layer, statistic, prediction,
  assumption`` that joins with the Monte Carlo estimates on (layer, statistic).

Everything that grows geometrically with depth (q⁽ˡ⁾ for unbounded φ, E[δ²]) is carried as a
logarithm, so a depth-200 chaotic network gives finite ``log_*`` predictions; the plain values
are exp of those and may be ``inf``, never NaN. Theory never imports the engine.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from .activations import Activation, get_activation
from .inputs import InputLaw
from .inputs import gaussian as _gaussian_inputs
from .losses import Loss, get_loss
from .networks import MLP
from .quadrature import MOMENT_KINDS, activation_moment, activation_moment2, expect2
from .targets import TargetLaw
from .targets import zeros as _zero_targets

__all__ = [
    "STATISTICS",
    "BackwardMoments",
    "DepthScales",
    "FixedPoint",
    "ForwardMoments",
    "LinearExact",
    "LogNormalFluctuation",
    "PairMoments",
    "backward_moments",
    "c_map",
    "chi1",
    "critical_sigma_w",
    "depth_scales",
    "fixed_point",
    "forward_moments",
    "hanin_rho",
    "linear_exact",
    "pair_moments",
    "phase_diagram",
    "predict",
    "q_map",
    "relu_log_norm_var",
    "tied_linear_deltas",
]

#: Statistic names shared with the estimators (plus the log-scale and cross-unit extras).
STATISTICS = (
    "z_mean",
    "z_var",
    "log_z_var",
    "delta_mean",
    "delta_sq",
    "log_delta_sq",
    "delta_var",
    "delta_cross",
    "delta_norm_sq",
    "grad_w_sq",
    "log_delta_norm_sq_var",
    "log_delta_norm_sq_mean",
)


# ---------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------


def _act(activation: str | Activation, argument: str = "activation") -> Activation:
    act = get_activation(activation, argument=argument)
    if not callable(getattr(act, "dphi", None)):
        raise ValueError(
            f"{argument} {act.name!r} has no derivative dphi; theory needs φ' — build it as "
            "Activation(name, phi, dphi)"
        )
    return act


def _nonneg(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if np.any(~np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name} must be finite and >= 0, got {x!r}")
    return a


def _positive_sigma_w(sigma_w) -> np.ndarray:
    a = np.asarray(sigma_w, dtype=np.float64)
    if np.any(~np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(
            f"sigma_w must be > 0 for a fixed point (σ_w = 0 makes every layer constant), got "
            f"{sigma_w!r}; pass a positive weight scale"
        )
    return a


def _homogeneous(act: Activation) -> bool:
    """φ(sx) = sφ(x) for s > 0: moments factor exactly through the scale of z."""
    return act.name in ("linear", "relu") or act.name.startswith("leaky_relu")


def _std_moment(act: Activation, kind: str, a, logv) -> np.ndarray:
    """E_{z~N(m, v)}[g]/s^d with s = √v, m = a·s, d the homogeneity degree of the kind.

    For positively homogeneous φ this is exactly E_{N(a, 1)}[g] whatever the scale, so huge
    scales (deep chaotic relu) never overflow; otherwise it is computed at (m, v) directly.
    """
    deg = MOMENT_KINDS[kind]
    if _homogeneous(act):
        return activation_moment(act, kind, a, 1.0)
    s = np.exp(0.5 * np.asarray(logv, dtype=np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        # Tolerance in the units of the standardised moment: an absolute error of 1e−11·s^deg
        # in E[g] is 1e−11 after dividing by s^deg (ddphi/phi_ddphi go through deg-1, 2 kinds).
        scale = float(np.max(np.maximum(s, 1.0))) ** max(deg, 1)
        return activation_moment(act, kind, a * s, s * s, atol=1e-11 * scale) / s**deg


# ---------------------------------------------------------------------------------------------
# mean-field forward maps
# ---------------------------------------------------------------------------------------------


def q_map(
    q,
    sigma_w,
    sigma_b,
    activation: str | Activation = "tanh",
    *,
    mean=0.0,
) -> np.ndarray:
    """The length map (Poole et al. 2016, eq. 3).

        q⁽ˡ⁺¹⁾ = σ_w² E_{z~N(m, q⁽ˡ⁾)}[φ(z)²] + σ_b²                                 (F1)

    Parameters
    ----------
    q : float or ndarray
        Variance of a pre-activation, q ≥ 0.
    sigma_w, sigma_b : float or ndarray
        Weight and bias scales (Var W_ij = σ_w²/n).
    activation : str or Activation
    mean : float or ndarray
        Mean m of z (0 in the classic setting; μ_w ≠ 0 or μ_b ≠ 0 makes it non-zero). With
        m ≠ 0 the result is the variance of the next layer, σ_w² E[φ²] + σ_b² (the mean part
        μ_w E[φ] + μ_b is in :func:`forward_moments`).

    Returns
    -------
    ndarray, broadcast shape of the arguments
    """
    act = _act(activation)
    q = np.asarray(q, dtype=np.float64)
    if np.any(~np.isfinite(q)) or np.any(q < 0):
        raise ValueError(f"q must be a variance: finite and >= 0, got {q!r}; pass q >= 0")
    sw, sb = _nonneg(sigma_w, "sigma_w"), _nonneg(sigma_b, "sigma_b")
    return sw**2 * activation_moment(act, "phi2", mean, q) + sb**2


def c_map(
    c,
    q,
    sigma_w,
    sigma_b,
    activation: str | Activation = "tanh",
) -> np.ndarray:
    """The correlation map for two inputs of equal length q (Poole et al. 2016, eq. 5).

        c⁽ˡ⁺¹⁾ = [σ_w² E[φ(u₁)φ(u₂)] + σ_b²] / q⁽ˡ⁺¹⁾,  (u₁, u₂) ~ N(0, q[[1, c], [c, 1]])   (F2)

    with q⁽ˡ⁺¹⁾ = :func:`q_map` (q). At the fixed point q = q* this is the map whose slope at
    c = 1 is χ₁. Zero means (μ_w = μ_b = 0) are assumed.

    Parameters
    ----------
    c : float or ndarray
        Correlation in [−1, 1].
    q : float or ndarray
        Common variance of the two pre-activations, > 0.

    Returns
    -------
    ndarray
    """
    act = _act(activation)
    c = np.asarray(c, dtype=np.float64)
    if np.any(~np.isfinite(c)) or np.any(np.abs(c) > 1):
        raise ValueError(f"c must be a correlation in [-1, 1], got {c!r}")
    q = np.asarray(q, dtype=np.float64)
    if np.any(~np.isfinite(q)) or np.any(q < 0):
        raise ValueError(f"q must be a variance: finite and >= 0, got {q!r}; pass q >= 0")
    sw, sb = _nonneg(sigma_w, "sigma_w"), _nonneg(sigma_b, "sigma_b")
    cross = sw**2 * activation_moment2(act, "phi_phi", q, q, c) + sb**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(cross / q_map(q, sw, sb, act), -1.0, 1.0)


@dataclass(frozen=True)
class FixedPoint:
    """Fixed point of the length and correlation maps.

    Attributes
    ----------
    q_star : ndarray
        q* = σ_w² E_{N(0,q*)}[φ²] + σ_b²; ``inf`` where q grows without bound (e.g. relu with
        σ_w² > 2), 0 where it collapses (relu σ_w² < 2, σ_b = 0).
    c_star : ndarray
        The stable fixed point of (F2) reached from c = 0.5 (1 in the ordered phase).
    chi1 : ndarray
        χ₁ = σ_w² E[φ'(z)²] at q*.
    converged : ndarray of bool
    """

    q_star: np.ndarray
    c_star: np.ndarray
    chi1: np.ndarray
    converged: np.ndarray


def _q_star(act, sw, sb, q0, tol, max_iter):
    """q* by fixed-point iteration of (F1), then Newton on F(q) − q (vectorized)."""
    sw, sb = np.broadcast_arrays(np.asarray(sw, float), np.asarray(sb, float))
    q = np.broadcast_to(np.asarray(q0, dtype=np.float64), sw.shape).copy()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(min(max_iter, 30)):
            q = np.where(
                np.isfinite(q) & (q < 1e100), q_map(np.minimum(q, 1e100), sw, sb, act), np.inf
            )
        for _ in range(200):
            live = np.isfinite(q) & (q > 0)
            if not live.any():
                break
            qq = np.where(live, q, 1.0)
            F = q_map(qq, sw, sb, act)
            # dF/dq = σ_w² E[(z)φφ']/q by Gaussian integration by parts (no φ'' needed).
            dF = sw**2 * activation_moment(act, "zc_phi_dphi", 0.0, qq) / qq
            newton = qq - (F - qq) / (dF - 1.0)
            # Newton only towards a stable fixed point (dF < 1): it must not jump to the
            # unstable root q = 0 of a map that grows (relu with σ_w² > 2).
            ok = np.isfinite(newton) & (newton > 0) & (dF < 1.0 - 1e-12)
            qn = np.where(ok, newton, F)
            qn = np.where(qn < 1e-12, 0.0, qn)
            conv = np.abs(F - qq) <= tol * np.maximum(1e-300, qq)
            q = np.where(live & ~conv, qn, q)
            q = np.where(live & (q > 1e100), np.inf, q)
            if np.all(conv | ~live):
                break
        # Still moving and growing after the Newton phase: no finite fixed point.
        grow = live & ~conv & (F > qq) & (dF >= 1.0)
        q = np.where(grow, np.inf, q)
    done = ~np.isnan(q)
    return q, done


def _c_star(act, q, sw, sb):
    """Stable fixed point of (F2) from c = 0.5: iteration, then Newton (dc'/dc = σ_w²E[φ'φ']/q)."""
    c = np.full(q.shape, 0.5)
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(30):
            c = c_map(c, q, sw, sb, act)
        for _ in range(100):
            F = c_map(c, q, sw, sb, act)
            dF = sw**2 * activation_moment2(act, "dphi_dphi", q, q, c) * q / q_map(q, sw, sb, act)
            newton = c - (F - c) / (dF - 1.0)
            ok = np.isfinite(newton) & (dF < 1.0 - 1e-12)
            cn = np.clip(np.where(ok, newton, F), -1.0, 1.0)
            conv = np.abs(F - c) <= 1e-13
            c = np.where(conv, c, cn)
            if np.all(conv):
                break
    return np.where(c > 1.0 - 1e-10, 1.0, c)


def fixed_point(
    sigma_w,
    sigma_b,
    activation: str | Activation = "tanh",
    *,
    q0: float = 1.0,
    tol: float = 1e-13,
    max_iter: int = 20000,
) -> FixedPoint:
    """q*, c* and χ₁ by iterating (F1) and (F2); vectorized over σ_w, σ_b grids.

    Parameters
    ----------
    sigma_w : float or ndarray
        > 0.
    sigma_b : float or ndarray
        ≥ 0.
    activation : str or Activation
    q0 : float
        Starting length (the relu map with σ_b = 0, σ_w² = 2 keeps every q: q* = q0 there).

    Returns
    -------
    FixedPoint
    """
    act = _act(activation)
    sw = _positive_sigma_w(sigma_w)
    sb = _nonneg(sigma_b, "sigma_b")
    sw, sb = np.broadcast_arrays(sw, sb)
    q, done = _q_star(act, sw, sb, q0, tol, max_iter)
    finite = np.isfinite(q) & (q > 0)
    c = np.ones(q.shape)
    if finite.any():
        c[finite] = _c_star(act, q[finite], sw[finite], sb[finite])
    # Where q* = ∞ (unbounded growth) χ₁ is the large-q limit; 1e12 stands in for it.
    qv = np.where(np.isfinite(q), q, 1e12)
    if _homogeneous(act):
        # E[φ'²] is scale-free: the q → 0⁺ and q → ∞ limits equal the value at q = 1.
        qv = np.ones_like(qv)
    chi = sw**2 * activation_moment(act, "dphi2", 0.0, qv)
    return FixedPoint(q_star=q, c_star=c, chi1=chi, converged=done)


def chi1(
    sigma_w,
    sigma_b,
    activation: str | Activation = "tanh",
    q=None,
) -> np.ndarray:
    """χ₁ = σ_w² E_{z~N(0, q)}[φ'(z)²], the slope of the c-map at c = 1 (Poole et al. eq. 7).

    χ₁ < 1: ordered phase, gradients vanish as χ₁^{L−l}; χ₁ > 1: chaotic, they explode.

    Parameters
    ----------
    sigma_w, sigma_b : float or ndarray
    activation : str or Activation
    q : float, ndarray or None
        Variance at which to evaluate; ``None`` uses the fixed point q* (then σ_w > 0).

    Returns
    -------
    ndarray
    """
    act = _act(activation)
    if q is None:
        return fixed_point(sigma_w, sigma_b, act).chi1
    sw = _nonneg(sigma_w, "sigma_w")
    _nonneg(sigma_b, "sigma_b")
    q = np.asarray(q, dtype=np.float64)
    if np.any(~np.isfinite(q)) or np.any(q < 0):
        raise ValueError(f"q must be a variance: finite and >= 0, got {q!r}; pass q >= 0")
    return sw**2 * activation_moment(act, "dphi2", 0.0, q)


@dataclass(frozen=True)
class DepthScales:
    """Depth scales of Schoenholz et al. (2017) at the fixed point.

    Attributes
    ----------
    q_star, c_star, chi1 : ndarray
        As in :class:`FixedPoint`.
    chi_q : ndarray
        Slope of the q-map at q*: σ_w² E[φ'² + φφ''] (their eq. 7, by Gaussian integration
        by parts σ_w² E[zφφ']/q*, so no φ'' is needed).
    chi_c : ndarray
        Slope of the c-map at c*: σ_w² E[φ'(u₁)φ'(u₂)] (equal to χ₁ where c* = 1).
    xi_q, xi_c : ndarray
        ξ_q = −1/log χ_q, ξ_c = −1/log χ_c (their eqs. 8, 9); ``inf`` at χ = 1.
    xi_grad : ndarray
        ξ_∇ = −1/log χ₁: E[δ²] ∝ e^{−(L−l)/ξ_∇}; negative in the chaotic phase (growth).
    """

    q_star: np.ndarray
    c_star: np.ndarray
    chi1: np.ndarray
    chi_q: np.ndarray
    chi_c: np.ndarray
    xi_q: np.ndarray
    xi_c: np.ndarray
    xi_grad: np.ndarray


def depth_scales(
    sigma_w,
    sigma_b,
    activation: str | Activation = "tanh",
) -> DepthScales:
    """ξ_q, ξ_c and ξ_∇ at the fixed point (Schoenholz et al. 2017, eqs. 8, 9, 15).

        ξ_q⁻¹ = −log(σ_w² E[φ'(z)² + φ(z)φ''(z)]),   z ~ N(0, q*)                     (D1)
        ξ_c⁻¹ = −log(σ_w² E[φ'(u₁)φ'(u₂)]),          corr(u₁, u₂) = c*                  (D2)
        ξ_∇⁻¹ = −log χ₁                                                                  (D3)

    Parameters
    ----------
    sigma_w : float or ndarray
        > 0.
    sigma_b : float or ndarray
    activation : str or Activation

    Returns
    -------
    DepthScales
    """
    act = _act(activation)
    fp = fixed_point(sigma_w, sigma_b, act)
    sw = np.broadcast_to(_positive_sigma_w(sigma_w), fp.q_star.shape)
    q = np.where(np.isfinite(fp.q_star) & (fp.q_star > 0), fp.q_star, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        chi_q = sw**2 * activation_moment(act, "zc_phi_dphi", 0.0, q) / q
        chi_c = sw**2 * activation_moment2(act, "dphi_dphi", q, q, fp.c_star)
        chi_c = np.where(fp.c_star >= 1.0, fp.chi1, chi_c)

        def xi(chi):
            return np.where(chi == 1.0, np.inf, -1.0 / np.log(chi))

        return DepthScales(
            q_star=fp.q_star,
            c_star=fp.c_star,
            chi1=fp.chi1,
            chi_q=chi_q,
            chi_c=chi_c,
            xi_q=xi(chi_q),
            xi_c=xi(chi_c),
            xi_grad=xi(fp.chi1),
        )


def critical_sigma_w(sigma_b, activation: str | Activation = "tanh") -> np.ndarray:
    """σ_w on the order-to-chaos line, χ₁(σ_w, σ_b; q*) = 1 (returns σ_w, not σ_w²).

    Closed forms: linear 1; leaky relu with slope α: √(2/(1+α²)) for every σ_b (E[φ'²] does
    not depend on q). Otherwise a root of χ₁ − 1 in σ_w ∈ [0.05, 20] (brentq).

    Parameters
    ----------
    sigma_b : float or ndarray
    activation : str or Activation

    Returns
    -------
    ndarray, shape of ``sigma_b``

    Examples
    --------
    >>> float(critical_sigma_w(np.sqrt(0.05), "tanh") ** 2)  # doctest: +ELLIPSIS
    1.76...
    """
    act = _act(activation)
    sb = _nonneg(sigma_b, "sigma_b")
    if act.name == "linear":
        return np.ones_like(sb)
    # Odd φ without bias: q* → 0 on the ordered side, so χ₁ → σ_w² φ'(0)² and the line
    # meets σ_b = 0 at σ_w = 1/|φ'(0)| (tanh: 1, erf: √π/2).
    odd = bool(np.allclose(act.phi(np.array([0.7, 1.9])), -act.phi(np.array([-0.7, -1.9]))))
    if act.name == "relu" or act.name.startswith("leaky_relu"):
        alpha = float(act.params.get("alpha", 0.0))
        return np.full_like(sb, np.sqrt(2.0 / (1.0 + alpha**2)))

    def excess(sw, b):
        q, _ = _q_star(act, np.asarray(sw), np.asarray(b), 1.0, 1e-13, 200)
        return float(chi1(sw, b, act, q=min(float(q), 1e12))) - 1.0

    out = np.empty_like(sb)
    for i, b in np.ndenumerate(sb):
        if b == 0 and odd:
            out[i] = 1.0 / abs(float(act.dphi(np.array(0.0))))
            continue
        lo, hi = 0.05, 20.0
        if excess(lo, b) * excess(hi, b) > 0:
            raise ValueError(
                f"no order-to-chaos transition for {act.name} at sigma_b={b} with sigma_w in "
                f"[{lo}, {hi}]; this activation may be ordered or chaotic everywhere"
            )
        out[i] = optimize.brentq(excess, lo, hi, args=(b,), xtol=1e-12)
    return out


def phase_diagram(
    activation: str | Activation,
    sigma_w: np.ndarray,
    sigma_b: np.ndarray,
) -> pd.DataFrame:
    """Fixed points and depth scales on a (σ_w, σ_b) grid, as a tidy DataFrame.

    Returns
    -------
    DataFrame
        One row per grid point: ``sigma_w, sigma_b, q_star, c_star, chi1, xi_q, xi_c,
        xi_grad, phase`` (``"ordered"`` if χ₁ < 1 else ``"chaotic"``).
    """
    sw, sb = np.meshgrid(np.asarray(sigma_w, float), np.asarray(sigma_b, float), indexing="ij")
    ds = depth_scales(sw, sb, activation)
    return pd.DataFrame(
        {
            "sigma_w": sw.ravel(),
            "sigma_b": sb.ravel(),
            "q_star": ds.q_star.ravel(),
            "c_star": ds.c_star.ravel(),
            "chi1": ds.chi1.ravel(),
            "xi_q": ds.xi_q.ravel(),
            "xi_c": ds.xi_c.ravel(),
            "xi_grad": ds.xi_grad.ravel(),
            "phase": np.where(ds.chi1.ravel() < 1.0, "ordered", "chaotic"),
        }
    )


# ---------------------------------------------------------------------------------------------
# forward moments of an MLP spec
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForwardMoments:
    """Mean-field law of the pre-activations, z⁽ˡ⁾_j ~ N(m_l, v_l), l = 1 … L.

    Attributes
    ----------
    a : ndarray, shape (L,)
        Standardised mean m_l/√v_l.
    log_var : ndarray, shape (L,)
        log v_l (finite even when v_l overflows).
    input_mean, input_q : float
        E x_i and q₀ = E‖x‖²/n₀ of the input law.
    """

    a: np.ndarray
    log_var: np.ndarray
    input_mean: float
    input_q: float

    @property
    def var(self) -> np.ndarray:
        """v_l (may be ``inf`` when it overflows; ``log_var`` stays finite)."""
        with np.errstate(over="ignore"):
            return np.exp(self.log_var)

    @property
    def mean(self) -> np.ndarray:
        """m_l."""
        with np.errstate(over="ignore", invalid="ignore"):
            return np.where(self.a == 0, 0.0, self.a * np.exp(0.5 * self.log_var))


def _check_net(net: MLP) -> tuple[Activation, Activation]:
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an MLP spec, got {type(net).__name__}")
    return _act(net.activation), _act(net.output_activation, "output_activation")


def forward_moments(net: MLP, inputs: InputLaw | None = None) -> ForwardMoments:
    """Mean-field forward recursion for the mean and variance of z⁽ˡ⁾ with μ_w, μ_b.

        m_1 = μ_w⁽¹⁾ m_x + μ_b⁽¹⁾,       v_1 = σ_w⁽¹⁾² q₀ + σ_b⁽¹⁾²                       (F3)
        m_l = μ_w⁽ˡ⁾ E[φ(z⁽ˡ⁻¹⁾)] + μ_b⁽ˡ⁾,  v_l = σ_w⁽ˡ⁾² E[φ(z⁽ˡ⁻¹⁾)²] + σ_b⁽ˡ⁾²            (F4)

    with z⁽ˡ⁻¹⁾ ~ N(m_{l−1}, v_{l−1}). Assumptions: infinite width (‖h‖²/n and the unit mean
    h̄ concentrate), so z⁽ˡ⁾ is Gaussian; the O(1/n) variance of μ_w h̄ is neglected. Carried
    as (m/√v, log v) so that growth over depth never overflows.

    Parameters
    ----------
    net : MLP
    inputs : InputLaw or None
        Default ``inputs.gaussian(1.0)``; only its ``moments(n0)`` are used.

    Returns
    -------
    ForwardMoments
    """
    phi, _ = _check_net(net)
    inputs = _gaussian_inputs(1.0) if inputs is None else inputs
    if not isinstance(inputs, InputLaw):
        raise ValueError("inputs must be an input law such as deltastats.inputs.gaussian(1.0)")
    m_x, q_x = (float(v) for v in inputs.moments(net.widths[0]))
    if q_x < 0:
        raise ValueError(f"the input law reports q = {q_x} < 0; q must be >= 0")
    sw, sb = np.array(net.layer_sigma_w), np.array(net.layer_sigma_b)
    mw, mb = np.array(net.layer_mu_w), np.array(net.layer_mu_b)
    L = net.depth
    a = np.empty(L)
    logv = np.empty(L)
    m1 = mw[0] * m_x + mb[0]
    v1 = sw[0] ** 2 * q_x + sb[0] ** 2
    with np.errstate(divide="ignore"):
        logv[0] = np.log(v1)
    a[0] = m1 / np.sqrt(v1) if v1 > 0 else 0.0
    for l in range(1, L):
        e1 = _std_moment(phi, "phi", a[l - 1], logv[l - 1])  # E[φ]/s
        e2 = _std_moment(phi, "phi2", a[l - 1], logv[l - 1])  # E[φ²]/s²
        # (F4) in logs: v_l = v_{l−1}(σ_w² e2 + σ_b²/v_{l−1}).
        with np.errstate(divide="ignore", over="ignore"):
            logv[l] = logv[l - 1] + np.log(sw[l] ** 2 * e2 + sb[l] ** 2 * np.exp(-logv[l - 1]))
            ratio = np.exp(0.5 * (logv[l - 1] - logv[l]))
            a[l] = mw[l] * e1 * ratio + mb[l] * np.exp(-0.5 * logv[l])
        if not np.isfinite(a[l]):
            a[l] = 0.0
    return ForwardMoments(a=a, log_var=logv, input_mean=m_x, input_q=q_x)


# ---------------------------------------------------------------------------------------------
# Gaussian backward map
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackwardMoments:
    """Per-layer moments of δ⁽ˡ⁾ under the Gaussian assumption, l = 1 … L (index l−1).

    Attributes
    ----------
    delta_mean : ndarray, shape (L,)
        D_l = E[δ_j] (may be ±inf only if it overflows).
    log_delta_sq : ndarray, shape (L,)
        log S_l = log E[δ_j²] (always finite).
    log_delta_cross : ndarray, shape (L,)
        log |C_l|, C_l = E[δ_j δ_k], j ≠ k (same sample); ``delta_cross`` has the sign.
    hessian : ndarray, shape (L,)
        H_l = E[∂δ_j/∂z_j] = E[∂²L/∂z_j²], the diagonal of the loss Hessian.
    """

    delta_mean: np.ndarray
    log_delta_sq: np.ndarray
    delta_cross: np.ndarray
    hessian: np.ndarray

    @property
    def delta_sq(self) -> np.ndarray:
        """S_l = E[δ_j²]."""
        with np.errstate(over="ignore"):
            return np.exp(self.log_delta_sq)

    @property
    def delta_var(self) -> np.ndarray:
        """Var δ_j = S_l − D_l², from the log scale (exact zero if δ is deterministic)."""
        with np.errstate(over="ignore", invalid="ignore"):
            rel = 1.0 - np.exp(2 * np.log(np.abs(self.delta_mean)) - self.log_delta_sq)
            out = np.exp(self.log_delta_sq) * np.maximum(rel, 0.0)
        return np.where(np.isnan(out), np.inf, out)


def _loss_and_targets(net: MLP, loss, targets) -> tuple[float, float]:
    lossf = get_loss(loss) if not isinstance(loss, Loss) else loss
    if lossf.name != "mse":
        raise ValueError(
            f"theory supports loss='mse' (½‖g − y‖²) only, got {lossf.name!r}; compare "
            "cross-entropy runs with Monte Carlo alone"
        )
    targets = _zero_targets() if targets is None else targets
    if not isinstance(targets, TargetLaw):
        raise ValueError("targets must be a target law such as deltastats.targets.zeros()")
    mom = targets.moments(net.widths[-1])
    if mom is None:
        raise ValueError(
            f"target law {type(targets).__name__} has no closed-form moments (a teacher's "
            "targets depend on the input); theory needs targets independent of the network, "
            "e.g. targets.constant(c) or targets.gaussian(s)"
        )
    return float(mom[0]), float(mom[1])


def backward_moments(
    net: MLP,
    inputs: InputLaw | None = None,
    targets: TargetLaw | None = None,
    loss: str | Loss = "mse",
    *,
    forward: ForwardMoments | None = None,
) -> BackwardMoments:
    """Gaussian-assumption backward recursion for E[δ], E[δ²], E[δ_jδ_k] and E[∂δ/∂z].

    Assumptions (state them when you quote a number):

    1. z⁽ˡ⁾_j ~ N(m_l, v_l) from :func:`forward_moments` (mean field, infinite width), and
       distinct units of a layer are independent given the layer's law;
    2. the gradient-independence assumption: W⁽ˡ⁺¹⁾ in the backward pass is independent of
       δ⁽ˡ⁺¹⁾ for second moments — except for the one Stein term below, which the
       assumption would lose and which is of the same order as the μ_w term in E[δ]
       (for Gaussian W, E[W_kj δ_k] = (μ_w/n_l)E[δ_k] + (σ_w²/n_l)E[h_j ∂δ_k/∂z_k] exactly);
    3. targets y independent of the inputs, with independent coordinates (mean μ_y,
       second moment s_y);
    4. the output width is small against the hidden widths: terms of relative order n_L/n_l
       in E[δ²] from the readout self-interaction WᵀW are only partly kept (a square
       readout n_L ≈ n_{L−1} needs :func:`linear_exact`-type corrections);
    5. the common mode μ_w h̄ is stable: μ_w E[φ'(z)] < 1. Otherwise its O(1/√n)
       fluctuations grow layer by layer (tanh with μ_w = 3 breaks the ±symmetry of the mean;
       relu with μ_w = 1.5 is ≈ 10 % off at width 512, depth 5) and mean field fails.

    Finite width: the recursions are the n → ∞ limit. For ReLU with the squared loss the
    backward product JᵀJ correlates with the output norm, and the Monte Carlo E[δ⁽ˡ⁾²] exceeds
    (B3) by a factor ≈ e^{3β_l}, β_l = Σ_{j=l}^{L−1} 1/n_j (measured at n = 64, L = 8, n_L = 4:
    c = 3.1, 3.1, 2.8 at β = 0.11, 0.06, 0.03) — about 2 % at width 512, depth 5. For
    linear networks :func:`linear_exact` gives the exact finite-width answer.

    With r = n_{l+1}/n_l, σ² = σ_w⁽ˡ⁺¹⁾², μ = μ_w⁽ˡ⁺¹⁾, expectations over z ~ N(m_l, v_l),
    D = E[δ⁽ˡ⁺¹⁾_k], H = E[∂δ⁽ˡ⁺¹⁾_k/∂z_k], S = E[(δ⁽ˡ⁺¹⁾_k)²], C = E[δ_kδ_k'] (k ≠ k'),
    T = C + (S − C)/n_{l+1} (so that μ²r²T = (μ/n_l)² E[(Σ_k δ_k)²]):

        D_l = r[μ E[φ'] D + σ² E[φφ'] H]                                                  (B1)
        H_l = r[μ E[φ''] D + σ² (E[φφ''] + E[φ'²]) H]                                      (B2)
        S_l = E[φ'²](rσ² S + μ²r² T) + 2r²μσ² D H E[φφ'²] + r²σ⁴ H² E[φ²φ'²]              (B3)
        C_l = E[φ']² μ²r² T + 2r²μσ² D H E[φ'] E[φφ'] + r²σ⁴ H² E[φφ']²                  (B4)

    (E[φ''] and E[φφ''] by Gaussian integration by parts, so kinks are handled.) At the
    output, δ⁽ᴸ⁾ = (φ_out(z) − y)φ_out'(z):

        D_L = E[φφ'] − μ_y E[φ'],   H_L = E[φ'²] + E[φφ''] − μ_y E[φ''],
        S_L = E[φ²φ'²] − 2μ_y E[φφ'²] + s_y E[φ'²],   C_L = D_L²                       (B0)

    Carried in log scale (the (D, H) pair and the (S, C) pair each renormalised per layer).

    Parameters
    ----------
    net : MLP
    inputs : InputLaw or None
        Default ``inputs.gaussian(1.0)``.
    targets : TargetLaw or None
        Default ``targets.zeros()``; must have ``moments``.
    loss : str or Loss
        ``"mse"`` only.
    forward : ForwardMoments or None
        Reuse a :func:`forward_moments` result.

    Returns
    -------
    BackwardMoments
    """
    phi, phi_out = _check_net(net)
    mu_y, s_y = _loss_and_targets(net, loss, targets)
    fw = forward_moments(net, inputs) if forward is None else forward
    L, n = net.depth, net.widths
    sw2 = np.array(net.layer_sigma_w) ** 2
    mw = np.array(net.layer_mu_w)

    def E(act, kind, l):  # standardised moment at layer l (1-based): E[g]/s_l^deg
        return float(_std_moment(act, kind, fw.a[l - 1], fw.log_var[l - 1]))

    # Output layer (B0), δ measured in units of λ = max(s_L, 1); H̃ = s·H.
    lam_log = max(0.5 * fw.log_var[L - 1], 0.0)
    rs = np.exp(0.5 * fw.log_var[L - 1] - lam_log)  # s_L/λ
    iy = np.exp(-lam_log)  # 1/λ
    D = rs * E(phi_out, "phi_dphi", L) - mu_y * iy * E(phi_out, "dphi", L)
    Ht = rs * (E(phi_out, "dphi2", L) + E(phi_out, "phi_ddphi", L)) - mu_y * iy * E(
        phi_out, "ddphi", L
    )
    S = (
        rs**2 * E(phi_out, "phi2_dphi2", L)
        - 2 * mu_y * iy * rs * E(phi_out, "phi_dphi2", L)
        + s_y * iy**2 * E(phi_out, "dphi2", L)
    )
    C = D * D
    log1, log2 = lam_log, 2 * lam_log  # δ-scale of (D, H̃) and of (S, C)
    Dm, logS, Cr, Hs = np.empty(L), np.empty(L), np.empty(L), np.empty(L)

    def store(l, D, Ht, S, C, log1, log2):
        with np.errstate(over="ignore", divide="ignore"):
            Dm[l - 1] = D * np.exp(log1) if D != 0 else 0.0
            Hs[l - 1] = Ht * np.exp(log1 - 0.5 * fw.log_var[l - 1]) if Ht != 0 else 0.0
            logS[l - 1] = np.log(S) + log2
            Cr[l - 1] = C * np.exp(log2) if C != 0 else 0.0

    store(L, D, Ht, S, C, log1, log2)
    for l in range(L - 1, 0, -1):
        r = n[l + 1] / n[l]
        s2, mu = sw2[l], mw[l]  # weights of layer l+1
        rho = np.exp(0.5 * (fw.log_var[l - 1] - fw.log_var[l]))  # s_l/s_{l+1}
        Hc = Ht * rho  # s_l · H_{l+1}, in δ-units of (D, H̃)
        d1, d2 = E(phi, "dphi", l), E(phi, "dphi2", l)
        pd1 = E(phi, "phi_dphi", l)
        dd, pdd = E(phi, "ddphi", l), E(phi, "phi_ddphi", l)
        pd2, p2d2 = E(phi, "phi_dphi2", l), E(phi, "phi2_dphi2", l)
        T = C + (S - C) / n[l + 1]
        mix = np.exp(2 * log1 - log2)  # (D, H̃)-scale² relative to (S, C)-scale
        D_new = r * (mu * d1 * D + s2 * pd1 * Hc)  # (B1)
        H_new = r * (mu * dd * D + s2 * (pdd + d2) * Hc)  # (B2), times s_l
        S_new = d2 * (r * s2 * S + mu**2 * r**2 * T) + mix * (
            2 * r**2 * mu * s2 * D * Hc * pd2 + r**2 * s2**2 * Hc**2 * p2d2
        )  # (B3)
        C_new = d1**2 * mu**2 * r**2 * T + mix * (
            2 * r**2 * mu * s2 * D * Hc * d1 * pd1 + r**2 * s2**2 * Hc**2 * pd1**2
        )  # (B4)
        # Renormalise: the recursions are linear in the δ-scale, so factor it out.
        k1 = max(abs(D_new), abs(H_new))
        k2 = max(abs(S_new), abs(C_new))
        k1 = k1 if k1 > 0 else 1.0
        k2 = k2 if k2 > 0 else 1.0
        D, Ht, log1 = D_new / k1, H_new / k1, log1 + np.log(k1)
        S, C, log2 = S_new / k2, C_new / k2, log2 + np.log(k2)
        store(l, D, Ht, S, C, log1, log2)
    return BackwardMoments(delta_mean=Dm, log_delta_sq=logS, delta_cross=Cr, hessian=Hs)


# ---------------------------------------------------------------------------------------------
# two inputs: cross-sample moments for the batch-mean gradient
# ---------------------------------------------------------------------------------------------


def _pair_expect(act: Activation, fn, a: float, logv: float, c: float) -> float:
    """E[fn(u, w, s)], (u, w) ~ N((m, m), v[[1, c], [c, 1]]), scaled as in :func:`_std_moment`.

    ``fn`` receives the pre-activations and the scale s by which it must divide each φ to be
    standardised; for positively homogeneous φ the pair is drawn standardised and s = 1.
    """
    c = float(np.clip(c, -1.0, 1.0))
    # Cross-sample moments only enter grad_w_sq with weight (B−1)/B: 1e−6 is ample and keeps
    # the 2-D rule (≤ 128 nodes per dimension and piece) cheap at depth 200.
    kw = {"kinks1": act.kinks, "kinks2": act.kinks, "rtol": 1e-6, "atol": 1e-9}
    kw["max_degree"] = 128
    if _homogeneous(act):
        return float(expect2(lambda u, w: fn(u, w, 1.0), a, a, 1.0, 1.0, c, **kw))
    s = float(np.exp(0.5 * logv))
    return float(expect2(lambda u, w: fn(u, w, s), a * s, a * s, s * s, s * s, c, **kw))


@dataclass(frozen=True)
class PairMoments:
    """Moments across two independent inputs a ≠ b of the same network, l = 1 … L.

    Attributes
    ----------
    z_corr : ndarray, shape (L,)
        corr(z⁽ˡ⁾_{a,j}, z⁽ˡ⁾_{b,j}) = κ_l/v_l.
    h_cross : ndarray, shape (L,)
        E[h⁽ˡ⁻¹⁾_{a,i} h⁽ˡ⁻¹⁾_{b,i}] (the input of layer l; m_x² for l = 1).
    delta_cross_sample : ndarray, shape (L,)
        S^{ab}_l = E[δ⁽ˡ⁾_{a,j} δ⁽ˡ⁾_{b,j}] (may be ±inf only on overflow).
    """

    z_corr: np.ndarray
    h_cross: np.ndarray
    delta_cross_sample: np.ndarray


def pair_moments(
    net: MLP,
    inputs: InputLaw | None = None,
    targets: TargetLaw | None = None,
    loss: str | Loss = "mse",
    *,
    forward: ForwardMoments | None = None,
    backward: BackwardMoments | None = None,
) -> PairMoments:
    """Cross-sample recursions for two independent inputs (the c-map of an MLP spec).

    Forward, κ_l = Cov(z_{a,j}, z_{b,j}) with (u_a, u_b) ~ N((m, m), [[v, κ], [κ, v]]) at
    layer l−1 (Poole et al.'s c-map with means):

        κ_1 = σ_w² m_x² + σ_b²,   κ_l = σ_w² E[φ(u_a)φ(u_b)] + σ_b²                        (P1)

    Backward, under the assumptions of :func:`backward_moments`, with
    T^{ab} = C^{ab} + (S^{ab} − C^{ab})/n_{l+1} and the Stein terms of (B3):

        S^{ab}_l = E[φ'_aφ'_b](rσ² S^{ab} + μ²r² T^{ab})
                   + 2r²μσ² D H E[φ'_aφ'_bφ_b] + r²σ⁴ H² E[φ'_aφ_aφ'_bφ_b]                 (P2)
        C^{ab}_l = E[φ']² μ²r² T^{ab} + 2r²μσ² D H E[φ'] E[φφ'] + r²σ⁴ H² E[φφ']²          (P3)
        S^{ab}_L = E[g(u_a)g(u_b)], g = (φ_out − μ_y)φ_out',   C^{ab}_L = D_L²            (P0)

    (P0) uses E[y_a y_b] = μ_y² (targets independent across samples, or constant). The 2-D
    quadrature here runs at rtol 1e−6 (it only enters grad_w_sq, with weight (B−1)/B); deep
    (≈ 200-layer) chaotic networks with kinked or non-saturating φ may still warn at that level.

    Returns
    -------
    PairMoments
    """
    phi, phi_out = _check_net(net)
    mu_y, s_y = _loss_and_targets(net, loss, targets)
    fw = forward_moments(net, inputs) if forward is None else forward
    bw = backward_moments(net, inputs, targets, loss, forward=fw) if backward is None else backward
    L, n = net.depth, net.widths
    sw2, sb2 = np.array(net.layer_sigma_w) ** 2, np.array(net.layer_sigma_b) ** 2
    mw = np.array(net.layer_mu_w)
    p, dp = phi.phi, phi.dphi

    # Forward (P1).
    corr = np.empty(L)
    hab = np.empty(L)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        hab[0] = fw.input_mean**2
        corr[0] = (sw2[0] * fw.input_mean**2 + sb2[0]) * np.exp(-fw.log_var[0])
        for l in range(1, L):
            pab = _pair_expect(
                phi,
                lambda u, w, sc: p(u) * p(w) / sc**2,
                fw.a[l - 1],
                fw.log_var[l - 1],
                corr[l - 1],
            )
            hab[l] = pab * np.exp(fw.log_var[l - 1]) if pab != 0 else 0.0
            corr[l] = sw2[l] * pab * np.exp(fw.log_var[l - 1] - fw.log_var[l]) + sb2[l] * np.exp(
                -fw.log_var[l]
            )
    corr = np.clip(corr, -1.0, 1.0)

    # Backward (P0)–(P3), in the units of backward_moments: λ = max(s_L, 1).
    lam_log = max(0.5 * fw.log_var[L - 1], 0.0)
    rs = np.exp(0.5 * fw.log_var[L - 1] - lam_log)
    iy = np.exp(-lam_log)
    po, dpo = phi_out.phi, phi_out.dphi

    def g_out(u, w, sc):
        return (rs * po(u) / sc - mu_y * iy) * dpo(u) * (rs * po(w) / sc - mu_y * iy) * dpo(w)

    Sab = _pair_expect(phi_out, g_out, fw.a[L - 1], fw.log_var[L - 1], corr[L - 1])
    log2 = 2 * lam_log
    D_L = bw.delta_mean[L - 1]
    Cab = (D_L * np.exp(-lam_log)) ** 2
    out = np.empty(L)
    out[L - 1] = Sab * np.exp(log2)
    for l in range(L - 1, 0, -1):
        r = n[l + 1] / n[l]
        s2, mu = sw2[l], mw[l]
        a, lv, c = fw.a[l - 1], fw.log_var[l - 1], corr[l - 1]
        s_l = np.exp(0.5 * lv)
        # D and s_l·H_{l+1} of the layer above, in the (S, C) units e^{log2/2}.
        with np.errstate(over="ignore", invalid="ignore"):
            D = bw.delta_mean[l] * np.exp(-0.5 * log2)
            Hc = bw.hessian[l] * s_l * np.exp(-0.5 * log2)
        dd = _pair_expect(phi, lambda u, w, sc: dp(u) * dp(w), a, lv, c)
        ddp = _pair_expect(phi, lambda u, w, sc: dp(u) * dp(w) * p(w) / sc, a, lv, c)
        pdpd = _pair_expect(phi, lambda u, w, sc: dp(u) * p(u) * dp(w) * p(w) / sc**2, a, lv, c)
        d1 = float(_std_moment(phi, "dphi", a, lv))
        pd1 = float(_std_moment(phi, "phi_dphi", a, lv))
        T_ = Cab + (Sab - Cab) / n[l + 1]
        S_new = dd * (r * s2 * Sab + mu**2 * r**2 * T_) + (
            2 * r**2 * mu * s2 * D * Hc * ddp + r**2 * s2**2 * Hc**2 * pdpd
        )  # (P2)
        C_new = d1**2 * mu**2 * r**2 * T_ + (
            2 * r**2 * mu * s2 * D * Hc * d1 * pd1 + r**2 * s2**2 * Hc**2 * pd1**2
        )  # (P3)
        k = max(abs(S_new), abs(C_new))
        k = k if (k > 0 and np.isfinite(k)) else 1.0
        Sab, Cab, log2 = S_new / k, C_new / k, log2 + np.log(k)
        with np.errstate(over="ignore"):
            out[l - 1] = Sab * np.exp(log2) if Sab != 0 else 0.0
    return PairMoments(z_corr=corr, h_cross=hab, delta_cross_sample=out)


# ---------------------------------------------------------------------------------------------
# exact results for deep linear networks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearExact:
    """Exact finite-width moments of δ⁽ˡ⁾ for a deep linear network, l = 1 … L (index l−1).

    Attributes
    ----------
    delta_mean : ndarray, shape (L,)
        E[δ⁽ˡ⁾_i] (the same for every unit i), exact for any weight law with the given first
        two moments, including μ_w ≠ 0.
    log_delta_norm_sq : ndarray or None, shape (L,)
        log E‖δ⁽ˡ⁾‖², exact for Gaussian weights with μ_w = 0 (``None`` when μ_w ≠ 0).
    trace_moments : ndarray or None, shape (L+1, 2)
        log E[(tr A_l)²] and log E[tr A_l²] for A_l = P_l P_lᵀ, P_l = W⁽ᴸ⁾⋯W⁽ˡ⁺¹⁾,
        l = 0 … L (``None`` when μ_w ≠ 0).
    """

    delta_mean: np.ndarray
    log_delta_norm_sq: np.ndarray | None
    trace_moments: np.ndarray | None

    @property
    def delta_norm_sq(self) -> np.ndarray | None:
        """E‖δ⁽ˡ⁾‖² (``inf`` if it overflows)."""
        if self.log_delta_norm_sq is None:
            return None
        with np.errstate(over="ignore"):
            return np.exp(self.log_delta_norm_sq)


def linear_exact(
    net: MLP,
    inputs: InputLaw | None = None,
    targets: TargetLaw | None = None,
    loss: str | Loss = "mse",
) -> LinearExact:
    """Exact E[δ⁽ˡ⁾] and E‖δ⁽ˡ⁾‖² of a deep linear network at any width (Wick's theorem).

    With φ = φ_out = identity, g = Σ_{k=0}^{L} P_k ξ_k where P_k = W⁽ᴸ⁾⋯W⁽ᵏ⁺¹⁾ (P_L = I)
    and the sources are ξ_0 = x, ξ_k = b⁽ᵏ⁾ (0 < k < L) and ξ_L = b⁽ᴸ⁾ − y; then
    δ⁽ˡ⁾ = P_lᵀ Σ_k P_k ξ_k.

    *Mean* (any μ_w): E[M_l] = α_l I + β_l 11ᵀ for M_l = P_lᵀP_l, with α_L = 1, β_L = 0 and

        α_{l−1} = σ_l² n_l (α_l + β_l)/n_{l−1},
        β_{l−1} = μ_l² n_l (α_l + β_l n_l)/n_{l−1}²                                        (X1)

    and, with γ_l = α_l + β_l n_l, m_0 = E x_i, m_k = μ_b⁽ᵏ⁾, m_L = μ_b⁽ᴸ⁾ − E y,

        E[δ⁽ˡ⁾_i] = γ_l Σ_{k<l} (Π_{j=k+1}^{l} μ_j) m_k
                    + Σ_{k≥l} (Π_{j=l+1}^{k} μ_j n_j/n_{j−1}) γ_k m_k                        (X2)

    (only first and second moments of W enter, so (X2) holds for uniform weights too).

    *Second moment* (Gaussian W, μ_w = 0): with a_l = E[(tr A_l)²], b_l = E[tr A_l²] for
    A_l = P_l P_lᵀ, a_L = n_L², b_L = n_L, the Wishart moments give the linear recursion

        a_{l−1} = σ_l⁴ [a_l + 2 b_l/n_{l−1}],
        b_{l−1} = σ_l⁴ [(1 + 1/n_{l−1}) b_l + a_l/n_{l−1}]                                 (X3)

    and, all cross terms between sources vanishing by Wick's theorem,

        E‖δ⁽ˡ⁾‖² = Σ_k (Π_{j=min(k,l)+1}^{max(k,l)} σ_j²) · b_{max(k,l)} · E‖ξ_k‖²/n_k          (X4)

    with E‖x‖²/n_0 = q_0, E‖b⁽ᵏ⁾‖²/n_k = σ_b² + μ_b², E‖ξ_L‖²/n_L = σ_b² + μ_b² − 2μ_bE y + E y².
    Mean field keeps only b_l ≈ n_L Π σ⁴-type leading terms and misses the 1/n corrections that
    dominate at small width. Everything is carried in logs (finite at depth 200).

    Parameters
    ----------
    net : MLP
        Both activations linear; ``init`` a Gaussian law (``gaussian``, ``glorot``, ``he``,
        ``lecun``; ``uniform`` is accepted for the mean only).
    inputs : InputLaw or None
    targets : TargetLaw or None
        Independent of x with independent coordinates.
    loss : ``"mse"``

    Returns
    -------
    LinearExact
    """
    phi, phi_out = _check_net(net)
    if phi.name != "linear" or phi_out.name != "linear":
        raise ValueError(
            "linear_exact needs activation='linear' and output_activation='linear', got "
            f"{phi.name!r} and {phi_out.name!r}; use predict() for nonlinear networks"
        )
    if net.init == "orthogonal":
        raise ValueError("linear_exact needs i.i.d. weights; use init='gaussian'")
    mu_y, s_y = _loss_and_targets(net, loss, targets)
    inputs = _gaussian_inputs(1.0) if inputs is None else inputs
    m_x, q_x = (float(v) for v in inputs.moments(net.widths[0]))
    L, n = net.depth, np.asarray(net.widths, dtype=np.float64)
    sw2 = np.array(net.layer_sigma_w) ** 2  # index j-1 ↔ layer j
    mw = np.array(net.layer_mu_w)
    sb2, mb = np.array(net.layer_sigma_b) ** 2, np.array(net.layer_mu_b)

    # (X1): α, β of E[M_l], l = L … 1, carried with a log scale.
    gamma_log = np.empty(L + 1)  # log γ_l (γ > 0), l = 0 … L
    al, be, lg = 1.0, 0.0, 0.0
    gamma_log[L] = 0.0
    for l in range(L, 0, -1):
        a_new = sw2[l - 1] * n[l] * (al + be) / n[l - 1]
        b_new = mw[l - 1] ** 2 * n[l] * (al + be * n[l]) / n[l - 1] ** 2
        k = max(a_new, b_new * n[l - 1], 1e-300)
        al, be, lg = a_new / k, b_new / k, lg + np.log(k)
        gamma_log[l - 1] = lg + np.log(al + be * n[l - 1])
    m = np.concatenate([[m_x], mb[:-1], [mb[-1] - mu_y]])  # m_k, k = 0 … L
    mean = np.zeros(L)
    with np.errstate(over="ignore", invalid="ignore"):
        for l in range(1, L + 1):
            tot = 0.0
            for k in range(l):  # sources below l: E[M_l] E[Q] E[ξ]
                tot += np.exp(gamma_log[l]) * np.prod(mw[k:l]) * m[k]
            for k in range(l, L + 1):  # sources at or above l: E[R]ᵀ E[M_k] E[ξ]
                ratio = np.prod(mw[l:k] * n[l + 1 : k + 1] / n[l:k])
                tot += ratio * np.exp(gamma_log[k]) * m[k]
            mean[l - 1] = tot

    if np.any(mw != 0) or net.init == "uniform":
        return LinearExact(delta_mean=mean, log_delta_norm_sq=None, trace_moments=None)

    # (X3) in logs: â, b̂ relative to Π σ⁴.
    logab = np.empty((L + 1, 2))
    a, b, lg = n[L] ** 2, n[L], 0.0
    logab[L] = np.log([a, b])
    for l in range(L, 0, -1):
        a, b = a + 2 * b / n[l - 1], (1 + 1 / n[l - 1]) * b + a / n[l - 1]
        k = max(a, b)
        a, b, lg = a / k, b / k, lg + np.log(k) + 2 * np.log(sw2[l - 1])
        logab[l - 1] = lg + np.log([a, b])
    src = np.concatenate(
        [[q_x], sb2[:-1] + mb[:-1] ** 2, [sb2[-1] + mb[-1] ** 2 - 2 * mb[-1] * mu_y + s_y]]
    )
    logsw2 = np.log(sw2)
    out = np.empty(L)
    with np.errstate(divide="ignore"):
        for l in range(1, L + 1):
            terms = []
            for k in range(L + 1):
                lo, hi = min(k, l), max(k, l)
                terms.append(logsw2[lo:hi].sum() + logab[hi, 1] + np.log(src[k]))
            out[l - 1] = special.logsumexp(terms)
    return LinearExact(delta_mean=mean, log_delta_norm_sq=out, trace_moments=logab)


def tied_linear_deltas(W: np.ndarray, delta_out: np.ndarray, n_layers: int) -> np.ndarray:
    """δ for a linear network whose layers all share one square diagonalizable W (eigen-form).

    With φ = identity and W⁽ˡ⁾ = W for every layer, δ⁽ᴸ⁻ᵏ⁾ = (Wᵀ)ᵏ δ⁽ᴸ⁾; writing
    W = V Λ V⁻¹, (Wᵀ)ᵏ = V⁻ᵀ Λᵏ Vᵀ, so

        δ⁽ᴸ⁻ᵏ⁾ = V⁻ᵀ Λᵏ Vᵀ δ⁽ᴸ⁾                                                         (X5)

    — the closed form of the recursion asked for in seed 003 (for symmetric W, V is orthogonal
    and V⁻ᵀ = V). ‖δ⁽ᴸ⁻ᵏ⁾‖ grows or decays like |λ_max|ᵏ.

    Parameters
    ----------
    W : ndarray, shape (n, n)
        Diagonalizable (real or complex eigenvalues).
    delta_out : ndarray, shape (..., n)
        δ⁽ᴸ⁾, one row per sample.
    n_layers : int
        k_max ≥ 0; returns k = 0 … k_max.

    Returns
    -------
    ndarray, shape (n_layers + 1, ..., n)
        Entry k is δ⁽ᴸ⁻ᵏ⁾ (real part; the imaginary part is round-off for real W).
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be a square matrix (n, n), got shape {W.shape}")
    d = np.asarray(delta_out, dtype=np.float64)
    if d.shape[-1] != W.shape[0]:
        raise ValueError(f"delta_out must end with n = {W.shape[0]}, got shape {d.shape}")
    if isinstance(n_layers, bool) or not isinstance(n_layers, numbers.Integral) or n_layers < 0:
        raise ValueError(f"n_layers must be an int >= 0, got {n_layers!r}")
    lam, V = np.linalg.eig(W)
    if np.linalg.cond(V) > 1e12:
        raise ValueError("W is not (numerically) diagonalizable; use repeated products instead")
    Vinv_T = np.linalg.inv(V).T
    coef = d @ V  # Vᵀδ as rows: (…, n)
    k = np.arange(n_layers + 1).reshape((-1,) + (1,) * d.ndim)
    return np.real((coef * lam**k) @ Vinv_T.T)


# ---------------------------------------------------------------------------------------------
# finite-width log-normal fluctuations (ReLU)
# ---------------------------------------------------------------------------------------------


def _logchi2_binom(n: int) -> tuple[float, float, float]:
    """For K ~ Bin(n, ½) (K > 0) and χ²_K: (Var log χ²_K, Var ψ(K/2), E log χ²_K)."""
    K = np.arange(1, n + 1)
    p = stats.binom.pmf(K, n, 0.5)
    p = p / p.sum()
    psi = special.digamma(K / 2)
    e = np.sum(p * psi)
    w = float(np.sum(p * (psi - e) ** 2))
    return float(np.sum(p * special.polygamma(1, K / 2))) + w, w, float(e + np.log(2.0))


@dataclass(frozen=True)
class LogNormalFluctuation:
    """Finite-width fluctuations of log‖δ⁽ˡ⁾‖² for a ReLU network, l = 1 … L (index l−1).

    Attributes
    ----------
    beta : ndarray, shape (L,)
        β_l = Σ_{j=l}^{L−1} 1/n_j (the hidden layers between l and the output).
    backward_var : ndarray, shape (L,)
        Var log(‖δ⁽ˡ⁾‖²/‖δ⁽ᴸ⁾‖²) = Σ_{j=l}^{L−1} v(n_j) ≈ 5β_l (Hanin 2018).
    log_var : ndarray, shape (L,)
        Var log‖δ⁽ˡ⁾‖² (total over networks and inputs) = V_L + (1 + 2ρ) backward_var.
    log_mean : ndarray or None, shape (L,)
        E log(‖δ⁽ˡ⁾‖²/n_l), (H3); ``None`` unless ``sigma_w`` and ``input_log_mean`` are given.
    """

    beta: np.ndarray
    backward_var: np.ndarray
    log_var: np.ndarray
    log_mean: np.ndarray | None = None


def hanin_rho(n_out: int) -> float:
    """Empirical correlation ρ of log(‖δ⁽ˡ⁾‖²/‖δ⁽ᴸ⁾‖²) with log‖δ⁽ᴸ⁾‖² (see (H2)).

    Fitted to our Monte Carlo: ρ = 1.03, 0.92, 0.84 at n_L = 1, 4, 16 (hidden width 128).
    """
    return float(np.clip(1.0 - 0.04 * np.log2(max(int(n_out), 1)), 0.0, 1.0))


def relu_log_norm_var(
    widths,
    *,
    input_log_var: float = 0.0,
    rho: float | None = None,
    sigma_w=None,
    input_log_mean: float | None = None,
) -> LogNormalFluctuation:
    """Log-normal approximation of ‖δ⁽ˡ⁾‖² for He-type ReLU networks (any σ_w, σ_b = 0, μ_w = 0).

    For ReLU without bias, the masks make every layer's norm ratio a scaled χ² with a
    Binomial(n, ½) number of degrees of freedom, independent of the direction of the signal
    (Hanin 2018; Hanin & Nica 2019). Per layer

        v(n) = Var log χ²_K = E ψ'(K/2) + Var ψ(K/2),  K ~ Bin(n, ½),  v(n) = 5/n + O(n⁻²)  (H1)

    so the backward product has Var log(‖δ⁽ˡ⁾‖²/‖δ⁽ᴸ⁾‖²) = Σ_{j=l}^{L−1} v(n_j) ≈ 5β_l — the
    literature's 5β. For the squared loss with zero targets, δ⁽ˡ⁾ = JᵀJz⁽ˡ⁾ (J = ∂g/∂z⁽ˡ⁾), so the
    backward product is strongly correlated with the output norm, and the total variance is

        Var log‖δ⁽ˡ⁾‖² = V_L + (1 + 2ρ) Σ_{j=l}^{L−1} v(n_j),                              (H2)
        V_L = V_x + Σ_{j=1}^{L−1} v(n_j) + ψ'(n_L/2)

    with V_x = Var log‖x‖² (ψ'(n_0/2) for Gaussian inputs, 0 on the sphere) and ρ the
    correlation of the backward product with log‖δ⁽ᴸ⁾‖². For n_L = 1, ρ = 1 in the
    large-width limit (‖δ⁽ˡ⁾‖² = ‖J‖⁴(ẑ·Ĵ)²‖z‖²), giving a total slope of 15β.

    Measured (Monte Carlo, hidden width 128, depth 9, 4000 networks × 4 Gaussian inputs, He
    init, zero targets): the backward product grows as 5.1β (n_L = 1), 4.8β (n_L = 4),
    4.1β (n_L = 16) — the literature's ≈ 5β, reduced when n_L/n is not small; the total
    Var log‖δ⁽ˡ⁾‖² grows as 15.6β, 13.6β and 11.0β, i.e. ρ ≈ 1.0, 0.92, 0.84. So **the
    statistic people measure, Var log‖δ⁽ˡ⁾‖², grows about three times faster than 5β**. We use
    the empirical ρ(n_L) = 1 − 0.04 log₂ n_L, which overestimates the total slope by ≈ 7 % at
    n_L = 4 (it inherits v(n) ≈ 5.15/n at n = 128 where the backward product shows 4.8/n).

    Means add whatever the correlations, so E log‖δ⁽ˡ⁾‖² is exact under the χ² model:

        E log‖δ⁽ˡ⁾‖² = E log‖x‖² + Σ_{j=1}^{L−1} [log(σ_j²/n_{j−1}) + e(n_j)]
                      + log(σ_L²/n_{L−1}) + ψ(n_L/2) + log 2
                      + Σ_{j=l}^{L−1} [log(σ_{j+1}²/n_j) + e(n_j) + ρ v(n_j)]             (H3)

    with e(n) = E log χ²_K. The ρ v(n_j) term is measured, not derived: the backward factors
    are not fresh χ²'s — ĝ = g/‖g‖ leans towards the large singular directions of J, so
    log‖Jᵀĝ‖² is shifted up by about the covariance ρ v(n_j) per layer (Monte Carlo at
    n = 64, L = 8, n_L = 4: +0.07 per layer, ρv = 0.076). Without it (H3) is 0.48 low at
    β = 0.11; with it, within 0.05. (The log-normal shortcut log E − Var/2 is worse still.)

    Parameters
    ----------
    widths : sequence of int
        (n_0, …, n_L), at least two positive ints.
    input_log_var : float
        V_x.
    sigma_w : float, sequence of float or None
        σ_w per weight layer (length L), needed for ``log_mean``.
    input_log_mean : float or None
        E log‖x‖² (log q₀ + ψ(n₀/2) + log 2 for Gaussian inputs, log(n₀q₀) on the sphere).
    rho : float or None
        ρ in (H2); ``None`` uses the empirical ρ(n_L) = 1 − 0.04 log₂ n_L.

    Returns
    -------
    LogNormalFluctuation
    """
    try:
        w = tuple(int(x) for x in widths)
    except (TypeError, ValueError):
        raise ValueError(f"widths must be a sequence of ints, got {widths!r}") from None
    if len(w) < 2 or any(x <= 0 for x in w) or any(int(x) != x for x in widths):
        raise ValueError(
            f"widths must list (n_0, …, n_L): at least two positive ints, got {widths!r}"
        )
    L = len(w) - 1
    rho = hanin_rho(w[-1]) if rho is None else float(rho)
    v = np.array([_logchi2_binom(w[j])[0] for j in range(1, L)] + [0.0])  # v(n_j), j = 1 … L
    beta = np.array([sum(1.0 / w[j] for j in range(l, L)) for l in range(1, L + 1)])
    back = np.array([v[l - 1 : L - 1].sum() for l in range(1, L + 1)])
    V_L = float(input_log_var) + v[: L - 1].sum() + special.polygamma(1, w[-1] / 2)
    log_mean = None
    if sigma_w is not None and input_log_mean is not None:
        sw2 = np.broadcast_to(np.asarray(sigma_w, dtype=np.float64) ** 2, (L,))
        e = np.array([_logchi2_binom(w[j])[2] for j in range(1, L)])  # e(n_j), j = 1 … L−1
        n_in = np.array(w[:-1], dtype=np.float64)
        fwd = float(input_log_mean) + np.sum(np.log(sw2[: L - 1] / n_in[: L - 1]) + e)
        top = fwd + np.log(sw2[L - 1] / n_in[L - 1]) + special.digamma(w[-1] / 2) + np.log(2.0)
        # backward factor j (δ⁽ʲ⁺¹⁾ → δ⁽ʲ⁾): log(σ_{j+1}²/n_j) + e(n_j), j = 1 … L−1
        bfac = np.log(sw2[1:] / np.array(w[1:L], dtype=np.float64)) + e + rho * v[: L - 1]
        log_mean = np.array([top + bfac[l - 1 :].sum() - np.log(w[l]) for l in range(1, L + 1)])
    return LogNormalFluctuation(
        beta=beta, backward_var=back, log_var=V_L + (1 + 2 * rho) * back, log_mean=log_mean
    )


# ---------------------------------------------------------------------------------------------
# predict: everything as a tidy DataFrame
# ---------------------------------------------------------------------------------------------


def _input_log_var(inputs: InputLaw, n0: int) -> float | None:
    from .inputs import Gaussian, Sphere

    if isinstance(inputs, Sphere):
        return 0.0
    if isinstance(inputs, Gaussian):
        return float(special.polygamma(1, n0 / 2))
    return None


def _input_log_mean(inputs: InputLaw, n0: int, q0: float) -> float | None:
    from .inputs import Gaussian, Sphere

    if isinstance(inputs, Sphere):
        return float(np.log(n0 * q0))
    if isinstance(inputs, Gaussian):
        return float(np.log(q0) + special.digamma(n0 / 2) + np.log(2.0))
    return None


def predict(
    net: MLP,
    inputs: InputLaw | None = None,
    targets: TargetLaw | None = None,
    loss: str | Loss = "mse",
    *,
    batch: int = 1,
) -> pd.DataFrame:
    """Theory predictions per layer, joinable with the Monte Carlo estimates.

    Statistics (pooled over the units of layer l, total over networks and inputs):

    ========================= ============================================================
    ``z_mean``, ``z_var``     E z⁽ˡ⁾_j and Var z⁽ˡ⁾_j — mean field (F3)–(F4)
    ``log_z_var``             log Var z⁽ˡ⁾_j (finite at any depth)
    ``delta_mean``            E δ⁽ˡ⁾_j — (B1) or exact-linear (X2)
    ``delta_sq``              E (δ⁽ˡ⁾_j)² — (B3) or exact-linear (X4)
    ``log_delta_sq``          log E (δ⁽ˡ⁾_j)² (finite at any depth)
    ``delta_var``             Var δ⁽ˡ⁾_j = delta_sq − delta_mean²
    ``delta_cross``           E δ⁽ˡ⁾_j δ⁽ˡ⁾_k, j ≠ k, same sample — (B4) (Gaussian only)
    ``delta_norm_sq``         E ‖δ⁽ˡ⁾‖²/n_l (= delta_sq by exchangeability of units)
    ``grad_w_sq``             E ‖∂J/∂W⁽ˡ⁾‖² of the batch-mean gradient of ``batch`` = B
                              inputs (λ = 0), the engine's ``grad_weights``:
                              n_l n_{l−1}[E[δ²]E[h²] + (B−1) S^{ab} E[h_a h_b]]/B, with
                              ‖δ‖² and ‖h‖² (and δ_a·δ_b, h_a·h_b) independent in mean
                              field and the cross-sample terms from :func:`pair_moments`
    ``log_delta_norm_sq_var`` Var log‖δ⁽ˡ⁾‖² — ReLU log-normal (H2), only for relu hidden
                              layers, linear output, σ_b = 0, μ_w = 0, zero targets and
                              Gaussian or sphere inputs
    ``log_delta_norm_sq_mean`` E log(‖δ⁽ˡ⁾‖²/n_l) — χ² model (H3), same conditions
    ========================= ============================================================

    ``assumption`` names the approximation: ``"mean-field"`` (forward), ``"gaussian"``
    (backward recursions (B0)–(B4), see :func:`backward_moments` for the assumptions),
    ``"exact-linear"`` (:func:`linear_exact`, φ = φ_out = identity, Gaussian weights) and
    ``"hanin-lognormal"`` (:func:`relu_log_norm_var`).

    Parameters
    ----------
    net : MLP
    inputs : InputLaw or None
        Default ``inputs.gaussian(1.0)``.
    targets : TargetLaw or None
        Default ``targets.zeros()``; needs closed-form ``moments`` (not a teacher).
    loss : ``"mse"``
        Cross-entropy is not supported by the theory (ValueError).
    batch : int
        B, the number of inputs per network the gradient is averaged over (default 1: the
        per-sample gradient). Only ``grad_w_sq`` depends on it.

    Returns
    -------
    DataFrame
        Columns ``layer`` (1 … L), ``statistic``, ``prediction``, ``assumption``.
    """
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
        raise ValueError(f"batch must be a positive int (inputs per network), got {batch!r}")
    phi, phi_out = _check_net(net)
    inputs = _gaussian_inputs(1.0) if inputs is None else inputs
    targets = _zero_targets() if targets is None else targets
    mu_y, s_y = _loss_and_targets(net, loss, targets)
    fw = forward_moments(net, inputs)
    bw = backward_moments(net, inputs, targets, loss, forward=fw)
    L, n = net.depth, net.widths
    rows: list[tuple[int, str, float, str]] = []

    def add(l, stat, value, how):
        rows.append((l, stat, float(value), how))

    # log E[h⁽ˡ⁻¹⁾²] per unit: q₀ for the input, σ-scaled E[φ²] for hidden layers.
    log_h2 = np.empty(L)
    log_h2[0] = np.log(fw.input_q) if fw.input_q > 0 else -np.inf
    for l in range(2, L + 1):
        e2 = _std_moment(phi, "phi2", fw.a[l - 2], fw.log_var[l - 2])
        with np.errstate(divide="ignore"):
            log_h2[l - 1] = fw.log_var[l - 2] + np.log(e2)

    pair = pair_moments(net, inputs, targets, loss, forward=fw, backward=bw) if batch > 1 else None
    exact = None
    if phi.name == "linear" and phi_out.name == "linear" and net.init != "orthogonal":
        exact = linear_exact(net, inputs, targets, loss)
    with np.errstate(over="ignore", invalid="ignore"):
        for l in range(1, L + 1):
            add(l, "z_mean", fw.mean[l - 1], "mean-field")
            add(l, "z_var", fw.var[l - 1], "mean-field")
            add(l, "log_z_var", fw.log_var[l - 1], "mean-field")
            if exact is not None:
                add(l, "delta_mean", exact.delta_mean[l - 1], "exact-linear")
            else:
                add(l, "delta_mean", bw.delta_mean[l - 1], "gaussian")
            if exact is not None and exact.log_delta_norm_sq is not None:
                log_sq = exact.log_delta_norm_sq[l - 1] - np.log(n[l])
                how = "exact-linear"
            else:
                log_sq, how = bw.log_delta_sq[l - 1], "gaussian"
            sq = np.exp(log_sq)
            mean = exact.delta_mean[l - 1] if exact is not None else bw.delta_mean[l - 1]
            rel = 1.0 - np.exp(2 * np.log(abs(mean)) - log_sq) if mean != 0 else 1.0
            add(l, "delta_sq", sq, how)
            add(l, "log_delta_sq", log_sq, how)
            add(l, "delta_var", sq * max(rel, 0.0), how)
            add(l, "delta_norm_sq", sq, how)
            add(l, "delta_cross", bw.delta_cross[l - 1], "gaussian")
            g1 = np.exp(log_sq + log_h2[l - 1])
            if batch > 1:
                cross = pair.delta_cross_sample[l - 1] * pair.h_cross[l - 1]
                g1 = (g1 + (batch - 1) * cross) / batch
            add(l, "grad_w_sq", n[l] * n[l - 1] * g1, "mean-field")

    vx = _input_log_var(inputs, n[0])
    ex_log = _input_log_mean(inputs, n[0], fw.input_q)
    relu_ok = (
        phi.name == "relu"
        and phi_out.name == "linear"
        and all(s == 0 for s in net.layer_sigma_b)
        and all(m == 0 for m in net.layer_mu_w)
        and all(m == 0 for m in net.layer_mu_b)
        and mu_y == 0
        and s_y == 0
        and net.init != "orthogonal"
        and vx is not None
    )
    if relu_ok:
        fl = relu_log_norm_var(
            n, input_log_var=vx, sigma_w=net.layer_sigma_w, input_log_mean=ex_log
        )
        for l in range(1, L + 1):
            add(l, "log_delta_norm_sq_var", fl.log_var[l - 1], "hanin-lognormal")
            add(l, "log_delta_norm_sq_mean", fl.log_mean[l - 1], "hanin-lognormal")
    df = pd.DataFrame(rows, columns=["layer", "statistic", "prediction", "assumption"])
    df["prediction"] = df["prediction"].replace(np.nan, np.inf)
    return df
