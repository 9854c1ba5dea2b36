"""Mean-field forward theory: the q- and c-maps, fixed points, χ₁, depth scales, the
order-to-chaos line, and the forward moments of an MLP spec.

At infinite width z⁽ˡ⁾_j is Gaussian given the input law, with mean m_l and variance v_l:

    m_{l+1} = μ_w E[φ(z⁽ˡ⁾)] + μ_b,   v_{l+1} = σ_w² E[φ(z⁽ˡ⁾)²] + σ_b²              (F1)–(F2)

(q-map, Poole et al. 2016), and two inputs have correlation c⁽ˡ⁾ with the c-map; χ₁ =
σ_w² E[φ'(z)²] at the fixed point q* decides order (χ₁ < 1) from chaos (χ₁ > 1), and the
depth scales ξ_q, ξ_c follow (Schoenholz et al. 2017).

References
----------
Poole, B. et al. (2016). Exponential expressivity in deep neural networks through transient
chaos. *NeurIPS*.
Schoenholz, S. S. et al. (2017). Deep information propagation. *ICLR*.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize

from ..model.activations import Activation
from ..model.inputs import InputLaw
from ..model.inputs import gaussian as _gaussian_inputs
from ..model.networks import MLP
from ._common import _act, _nonneg, _positive_sigma_w, _std_moments
from .input_law import adaptive, first_layer, pool_forward
from .quadrature import activation_moment, activation_moment2


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
    if act.positively_homogeneous:
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
    if act.closed_form == "linear":
        return np.ones_like(sb)
    # Odd φ without bias: q* → 0 on the ordered side, so χ₁ → σ_w² φ'(0)² and the line
    # meets σ_b = 0 at σ_w = 1/|φ'(0)| (tanh: 1, erf: √π/2).
    odd = bool(np.allclose(act.phi(np.array([0.7, 1.9])), -act.phi(np.array([-0.7, -1.9]))))
    if act.closed_form == "leaky_relu":
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


@dataclass(frozen=True)
class ForwardMoments:
    """Law of the pre-activations z⁽ˡ⁾_j, l = 1 … L: pooled over the input law, and per input.

    Given the input x, z⁽ˡ⁾_j ~ N(m_l(x), v_l(x)) in mean field; pooled over x (what the
    estimators measure) it has mean E_x m_l and variance E_x[v_l] + Var_x(m_l)
    (:mod:`~deltastats.theory.input_law`, (I2)).

    Attributes
    ----------
    a : ndarray, shape (L,)
        Pooled standardised mean E z/√Var z.
    log_var : ndarray, shape (L,)
        log Var z, pooled (finite even when the variance overflows).
    input_mean, input_q : float
        E x_i and q₀ = E‖x‖²/n₀ of the input law.
    node_a, node_log_var : ndarray or None, shape (K, L)
        m_l/√v_l and log v_l given the input at each node of the input-law rule.
    node_weights, node_rho : ndarray or None, shape (K,)
        The rule's weights and ρ = ‖x‖²/n₀ at its nodes. ``None`` for the four node fields
        means a single input law N(m_l, v_l) given by ``a`` and ``log_var``.
    """

    a: np.ndarray
    log_var: np.ndarray
    input_mean: float
    input_q: float
    node_a: np.ndarray | None = None
    node_log_var: np.ndarray | None = None
    node_weights: np.ndarray | None = None
    node_rho: np.ndarray | None = None

    @property
    def var(self) -> np.ndarray:
        """Pooled Var z⁽ˡ⁾_j (may be ``inf`` when it overflows; ``log_var`` stays finite)."""
        with np.errstate(over="ignore"):
            return np.exp(self.log_var)

    @property
    def mean(self) -> np.ndarray:
        """Pooled E z⁽ˡ⁾_j."""
        with np.errstate(over="ignore", invalid="ignore"):
            return np.where(self.a == 0, 0.0, self.a * np.exp(0.5 * self.log_var))

    def nodes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(node_a, node_log_var, node_weights, node_rho), one node when none were stored."""
        if self.node_a is None:
            return self.a[None], self.log_var[None], np.ones(1), np.full(1, self.input_q)
        return self.node_a, self.node_log_var, self.node_weights, self.node_rho


def _check_net(net: MLP) -> tuple[Activation, Activation]:
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an MLP spec, got {type(net).__name__}")
    return _act(net.activation), _act(net.output_activation, "output_activation")


def _forward_nodes(net: MLP, phi: Activation, m1: np.ndarray, v1: np.ndarray):
    """(F3)–(F4) for K first-layer laws at once: (a, log v), shapes (K, L)."""
    sw, sb = np.array(net.layer_sigma_w), np.array(net.layer_sigma_b)
    mw, mb = np.array(net.layer_mu_w), np.array(net.layer_mu_b)
    L, K = net.depth, m1.size
    a = np.empty((K, L))
    logv = np.empty((K, L))
    with np.errstate(divide="ignore", invalid="ignore"):
        logv[:, 0] = np.log(v1)
        a[:, 0] = np.where(v1 > 0, m1 / np.sqrt(np.where(v1 > 0, v1, 1.0)), 0.0)
    for l in range(1, L):
        mo = _std_moments(phi, ("phi", "phi2"), a[:, l - 1], logv[:, l - 1])
        e1, e2 = mo["phi"], mo["phi2"]  # E[φ]/s, E[φ²]/s²
        # (F4) in logs: v_l = v_{l−1}(σ_w² e2 + σ_b²/v_{l−1}).
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            logv[:, l] = logv[:, l - 1] + np.log(
                sw[l] ** 2 * e2 + sb[l] ** 2 * np.exp(-logv[:, l - 1])
            )
            ratio = np.exp(0.5 * (logv[:, l - 1] - logv[:, l]))
            al = mw[l] * e1 * ratio + mb[l] * np.exp(-0.5 * logv[:, l])
        a[:, l] = np.where(np.isfinite(al), al, 0.0)
    return a, logv


def _forward_at(net: MLP, phi: Activation, rule, m_x: float, q_x: float) -> ForwardMoments:
    m1, v1 = first_layer(net, rule)
    na, nlv = _forward_nodes(net, phi, m1, v1)
    a, logv = pool_forward(na, nlv, rule.weights)
    return ForwardMoments(
        a=a,
        log_var=logv,
        input_mean=m_x,
        input_q=q_x,
        node_a=na,
        node_log_var=nlv,
        node_weights=rule.weights,
        node_rho=rule.rho,
    )


def _input_moments(net: MLP, inputs: InputLaw) -> tuple[float, float]:
    if not isinstance(inputs, InputLaw):
        raise ValueError("inputs must be an input law such as deltastats.inputs.gaussian(1.0)")
    m_x, q_x = (float(v) for v in inputs.moments(net.widths[0]))
    if q_x < 0:
        raise ValueError(f"the input law reports q = {q_x} < 0; q must be >= 0")
    return m_x, q_x


def forward_moments(
    net: MLP, inputs: InputLaw | None = None, *, degree: int | tuple[int, int] | None = None
) -> ForwardMoments:
    """Mean-field forward recursion for the mean and variance of z⁽ˡ⁾, averaged over the input.

    Given the input x (through x̄ = Σx_i/n₀ and ρ = ‖x‖²/n₀ only):

        m_1 = μ_w⁽¹⁾ x̄ + μ_b⁽¹⁾,       v_1 = σ_w⁽¹⁾² ρ + σ_b⁽¹⁾²                         (F3)
        m_l = μ_w⁽ˡ⁾ E[φ(z⁽ˡ⁻¹⁾)] + μ_b⁽ˡ⁾,  v_l = σ_w⁽ˡ⁾² E[φ(z⁽ˡ⁻¹⁾)²] + σ_b⁽ˡ⁾²            (F4)

    with z⁽ˡ⁻¹⁾ ~ N(m_{l−1}, v_{l−1}); then pooled over the input law, E z = E_x m_l and
    Var z = E_x[v_l + m_l²] − (E_x m_l)² (:mod:`~deltastats.theory.input_law`). (F3) is exact
    for Gaussian weights; (F4) assumes infinite width (‖h‖²/n and the unit mean h̄
    concentrate given x), so z⁽ˡ⁾ is Gaussian given x and the O(1/n) variance of μ_w h̄ is
    neglected. Carried as (m/√v, log v) so that growth over depth never overflows.

    Parameters
    ----------
    net : MLP
    inputs : InputLaw or None
        Default ``inputs.gaussian(1.0)``; its ``summary_rule`` (the law of (x̄, ρ)) is
        averaged over.
    degree : int, (int, int) or None
        Nodes per dimension of the input-law rule; ``None`` chooses it with error control.

    Returns
    -------
    ForwardMoments
    """
    phi, _ = _check_net(net)
    inputs = _gaussian_inputs(1.0) if inputs is None else inputs
    m_x, q_x = _input_moments(net, inputs)

    def evaluate(rule):
        fw = _forward_at(net, phi, rule, m_x, q_x)
        return fw, np.concatenate([fw.a, fw.log_var])

    return adaptive(evaluate, net, inputs, degree)
