"""E[δ⁽ˡ⁾], E[δ⁽ˡ⁾²] and E‖∂L/∂W⁽ˡ⁾‖² to first order in 1/n for any activation.

With Gaussian weights the backward pass has an exact recursion in conditional expectations
given the layer's kernel θ_l = (M_l, G_l) (the mean and variance of z⁽ˡ⁾ given layer l − 1);
the only approximation is the expansion of one layer's empirical averages to second order,
which is exact to O(1/n). The recursion and its derivation are in :func:`backward_corrections`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
from numpy.polynomial import chebyshev as cheb

from .._parallel import side_by_side, single_threaded_blas
from ..model.activations import Activation
from ..model.inputs import InputLaw
from ..model.losses import Loss, get_loss
from ..model.networks import MLP
from ..model.targets import Constant, Gaussian, OneHot, TargetLaw
from ._common import TheoryNotCovered
from ._moment_kernels import clenshaw_kernel, unit_moments_kernel
from .input_law import first_layer, input_rule
from .meanfield import _check_net
from .quadrature import SCALE_CUTS_1D, WIDE, _legendre_rule

__all__ = ["BackwardCorrections", "backward_corrections", "backward_covered"]

# Per-unit quantities X of one layer given θ = (M, G), (BW3); the powers of z̃ they carry
# (0, 0, 0, 1, 2, 0, 0, 0, 0, 1, 1) are integrated in :mod:`._moment_kernels`.
_U, _A, _C, _E, _T, _P, _Q, _D, _K, _V, _G2 = range(11)
# Conditional expectations carried down the layers, (BW2): E of ‖δ‖², τ², στ, σ², σ, τ with
# σ = 1ᵀδ and τ = z̃·δ.
_N, _TT, _ST, _SS, _S, _TAU = range(6)
_NODES = 96  # Gauss–Legendre nodes per smooth piece of φ on [−_TAIL, _TAIL] standard deviations
_NODES_PIECE = 40  # per piece when the rule is split at the activation's natural scales
_TAIL = 12.0
# Chebyshev nodes of each conditional expectation in G (and in M when μ_w ≠ 0). More is not
# better: the interpolant's second derivative amplifies the rounding of the tabulated values
# (about as N⁴); 16, 24, 32 and 48 nodes in G agree to 10⁻⁷ relative on gelu with Gaussian
# inputs, and bias-free ReLU (where the recursion is exact) is reproduced to 10⁻⁶.
_CHEB_G = 24
_CHEB_M = 12
# Nodes in M of the last check where neither attempt resolves and M varies (see
# :func:`backward_corrections`).
_CHEB_M_FINE = 16
# The error control runs the recursion also at a coarser (G, M) resolution on the input rule
# of half the degree, and returns the finer one if they agree.
_COARSE = (18, 9)
_RTOL = 5e-3  # agreement required of the two resolutions (relative; E δ relative to √E δ²)
_NEGLIGIBLE = 1e-12  # input nodes of smaller weight are evaluated at the range's edge
_LOG_SPAN = 10.0  # a box's G axis spanning more than this factor is interpolated in log G
_EPS = 0.05  # second-difference step, in standard deviations of the layer's averages


@dataclass(frozen=True)
class BackwardCorrections:
    """E[δ⁽ˡ⁾_j], E[δ⁽ˡ⁾_j²] and E‖∂L/∂W⁽ˡ⁾‖² to first order in 1/n (:func:`backward_corrections`).

    Attributes
    ----------
    delta_sq, delta_mean : ndarray, shape (L,)
        Per unit, pooled over the input law, layers 1 … L.
    grad_w_sq : ndarray, shape (L,)
        E‖∂L/∂W⁽ˡ⁾‖²_F of one sample's gradient (B = 1, no weight decay).
    delta_sq_error, delta_mean_error, grad_w_sq_error : ndarray, shape (L,), or None
        An estimate of each value's numerical uncertainty: its distance to the coarser
        resolution of the error control (an estimate, not a bound: interpolants that
        oscillate with the number of nodes can agree more closely than either is right,
        which is why wide kernel ranges are interpolated in log G first).
    """

    delta_sq: np.ndarray
    delta_mean: np.ndarray
    grad_w_sq: np.ndarray
    delta_sq_error: np.ndarray | None = None
    delta_mean_error: np.ndarray | None = None
    grad_w_sq_error: np.ndarray | None = None


def backward_covered(net: MLP, loss: str | Loss, targets: TargetLaw | None) -> str | None:
    """Why :func:`backward_corrections` does not cover a setting, or ``None`` if it does.

    Parameters
    ----------
    net : MLP
    loss : str or Loss
    targets : TargetLaw or None

    Returns
    -------
    str or None
        The reason, naming what to change; ``None`` when the setting is covered.
    """
    _, phi_out = _check_net(net)
    if net.init in ("orthogonal", "uniform"):
        return f"init={net.init!r}: the recursion needs Gaussian weights"
    if phi_out.closed_form != "linear":
        return f"output activation {phi_out.name!r}: derived for a linear output only"
    name = loss.name if isinstance(loss, Loss) else get_loss(loss).name
    if name not in ("mse", "sum_squares"):
        return f"loss={name!r}: derived for squared-error losses only"
    if targets is not None and not isinstance(targets, (Constant, Gaussian, OneHot)):
        # a teacher's or a data set's targets depend on the input
        return (
            f"targets {type(targets).__name__}: the recursion needs targets independent of the "
            "input and the network (targets.constant, targets.gaussian, targets.one_hot)"
        )
    return None


def _unit_moments(phi: Activation, M: np.ndarray, G: np.ndarray, sb2: float, cov: bool = True):
    """Mean ``(P, 11)`` and covariance ``(P, 11, 11)`` of one unit's X, (BW3), at P kernels.

    z ~ N(M, G) is M + z̃ + (b − μ_b) with z̃ ~ N(0, G − σ_b²) and b ~ N(μ_b, σ_b²); given
    z, z̃ is N(r(z − M), rσ_b²) with r = (G − σ_b²)/G, so powers of z̃ are integrated in
    closed form and one quadrature in z remains (split at the kinks of φ). ``cov=False``
    returns the mean only (and ``None``)."""
    # φ varies on the scale |z| ~ 1: for a wide Gaussian (√G > 0.3) the rule is also split at
    # z = 0, ±1, ±3, ±9, … (else 96 nodes on ±12 standard deviations miss φ' of width 1/√G).
    points = set(phi.kinks)
    if np.max(G) > WIDE**2:
        points |= set(SCALE_CUTS_1D)
    x, wx = _legendre_rule(_NODES if len(points) <= 2 else _NODES_PIECE)
    sd = np.sqrt(G)[:, None]
    cuts = [np.clip((k - M) / np.sqrt(G), -_TAIL, _TAIL) for k in sorted(points)]
    edges = np.stack(
        [np.full(M.shape, -_TAIL), *sorted(cuts, key=np.mean), np.full(M.shape, _TAIL)]
    )
    edges = np.sort(edges, axis=0)
    # A piece of zero width at every kernel (a cut beyond ±_TAIL standard deviations) adds
    # nothing: drop it rather than evaluate φ at its nodes.
    live = np.any(edges[1:] > edges[:-1], axis=1)
    lo_e, hi_e = edges[:-1][live], edges[1:][live]  # (pieces, P)
    half = 0.5 * (hi_e - lo_e)
    t = (0.5 * (lo_e + hi_e))[:, :, None] + half[:, :, None] * x  # (pieces, P, nodes)
    w = half[:, :, None] * wx * np.exp(-0.5 * t * t) / np.sqrt(2 * np.pi)
    t = np.moveaxis(t, 0, 1).reshape(M.size, -1)
    w = np.moveaxis(w, 0, 1).reshape(M.size, -1)
    z = M[:, None] + sd * t
    h, d = phi.both(z)
    r = np.where(G > 0, (G - sb2) / np.where(G > 0, G, 1.0), 0.0)
    # E[X | z] = f(z)·E[z̃^p | z] with z̃ | z ~ N(r·sd·t, rσ_b²); mean and covariance (law of
    # total covariance) in one compiled pass per kernel (:mod:`._moment_kernels`).
    m = r[:, None] * sd * t
    mean = np.empty((M.size, 11))
    out = np.empty((M.size, 11, 11)) if cov else np.empty((0, 11, 11))
    unit_moments_kernel(
        np.ascontiguousarray(h, float),
        np.ascontiguousarray(d, float),
        m,
        np.ascontiguousarray(w),
        np.ascontiguousarray(r * sb2, float),
        cov,
        mean,
        out,
    )
    return mean, (out if cov else None)


def _chebyshev_nodes(N: int) -> np.ndarray:
    return np.cos(np.pi * (np.arange(N) + 0.5) / N)


def _log_g(box) -> bool:
    """Whether a box's G axis is interpolated in log G: when it spans a factor between
    _LOG_SPAN and 10⁴ (a kernel that grows or shrinks over the layers, or a wide input law),
    where the conditional expectations are far smoother in log G than in G. Not beyond
    (a floor at σ_b² under a kernel that explodes, where log G puts most nodes near the
    floor) and not at the output, whose (BW2) expectations are polynomials in G."""
    lo, hi = box[1]
    return lo > 0 and _LOG_SPAN * lo < hi < 1e4 * lo


def _g_nodes(box, ng: int, log: bool) -> np.ndarray:
    """The G of the ``ng`` Chebyshev nodes of a box, in G or in log G."""
    lo, hi = box[1]
    if log:
        lo, hi = np.log(lo), np.log(hi)
    g = 0.5 * (hi + lo) + 0.5 * (hi - lo) * _chebyshev_nodes(ng)
    return np.exp(g) if log else g


class _Fn:
    """Smooth functions of θ = (M, G): Chebyshev interpolants of values tabulated at the
    tensor grid of Chebyshev nodes of [lo_M, hi_M] × [lo_G, hi_G] (one node in M when M is
    fixed: the functions are then constant in M; the G axis in log G when the box spans a
    wide range, ``log_g``: :func:`_log_g`). ``values`` has shape (k, N_M, N_G)."""

    def __init__(self, box, values: np.ndarray, log_g: bool = False):
        (self.lo_m, self.hi_m), (self.lo_g, self.hi_g) = box
        self.log_g = log_g
        if self.log_g:
            self.lo_g, self.hi_g = np.log(self.lo_g), np.log(self.hi_g)
        k, nm, ng = values.shape
        self.nm = nm
        # Tensor-product interpolation is separable: coef = Vm⁻¹ · values · Vg⁻ᵀ with V the
        # 1-D Chebyshev–Vandermonde matrices at the nodes.
        inv_g = np.linalg.inv(cheb.chebvander(_chebyshev_nodes(ng), ng - 1))
        inv_m = np.linalg.inv(cheb.chebvander(_chebyshev_nodes(nm), nm - 1))
        self.coef = np.einsum("ai,kij,bj->kab", inv_m, values, inv_g)
        self._derivatives: dict = {}

    def _xm(self, M):
        if self.nm == 1:
            return np.zeros_like(np.asarray(M, float))
        span = self.hi_m - self.lo_m
        return np.clip((2 * np.asarray(M, float) - self.hi_m - self.lo_m) / span, -1, 1)

    def _xg(self, G):
        g = np.asarray(G, float)
        if self.log_g:
            g = np.log(np.maximum(g, np.exp(self.lo_g)))
        span = self.hi_g - self.lo_g
        # Clipped: an interpolant is never extrapolated (the ranges are built to contain
        # every point the recursion evaluates, up to rounding).
        return np.clip((2 * g - self.hi_g - self.lo_g) / span, -1, 1)

    def __call__(self, M, G, dm: int = 0, dg: int = 0) -> np.ndarray:
        """Values (or the derivative ∂ᵈᵐ_M ∂ᵈᵍ_G, dg ≤ 2) at points M, G of one shape S:
        (k,) + S."""
        if not self.log_g or dg == 0:
            return self._eval(self._derivative(dm, dg), M, G)
        # in u = log G: ∂_G F = F_u / G, ∂²_G F = (F_uu − F_u) / G²
        g = np.asarray(G, float)
        f_u = self._eval(self._derivative(dm, 1), M, G)
        if dg == 1:
            return f_u / g
        if dg == 2:
            return (self._eval(self._derivative(dm, 2), M, G) - f_u) / (g * g)
        raise ValueError(f"dg must be 0, 1 or 2, got {dg}")

    def orders(self, M, G, orders) -> dict:
        """Several derivatives ∂ᵈᵐ_M ∂ᵈᵍ_G (dg ≤ 2) at the same points in one evaluation:
        ``{(dm, dg): (k,) + S}``, each the same bits as ``self(M, G, dm, dg)``."""
        raw = set(orders)
        if self.log_g:  # in u = log G: ∂_G F = F_u / G, ∂²_G F = (F_uu − F_u) / G²
            raw |= {(dm, 1) for dm, dg in orders if dg == 2}
        raw = sorted(raw)
        k = self.coef.shape[0]
        # differentiation shortens the coefficient axes: pad with zero coefficients (which
        # leave Clenshaw's recurrence and the M-sums unchanged) to stack them
        shape = self.coef.shape
        stacked = np.zeros((k * len(raw),) + shape[1:])
        for i, (dm, dg) in enumerate(raw):
            c = self._derivative(dm, dg)
            stacked[i * k : (i + 1) * k, : c.shape[1], : c.shape[2]] = c
        vals = self._eval(stacked, M, G)
        got = {o: vals[i * k : (i + 1) * k] for i, o in enumerate(raw)}
        if not self.log_g:
            return {o: got[o] for o in orders}
        g = np.asarray(G, float)
        out = {}
        for dm, dg in orders:
            if dg == 0:
                out[dm, dg] = got[dm, dg]
            elif dg == 1:
                out[dm, dg] = got[dm, 1] / g
            else:
                out[dm, dg] = (got[dm, 2] - got[dm, 1]) / (g * g)
        return out

    def _eval(self, c: np.ndarray, M, G) -> np.ndarray:
        shape = np.broadcast_shapes(np.shape(M), np.shape(G))
        xm = np.broadcast_to(self._xm(M), shape).ravel()
        xg = np.broadcast_to(self._xg(G), shape).ravel()
        # In M, a product with the Chebyshev–Vandermonde rows (degree ≤ 11); in G, Clenshaw's
        # recurrence, whose rounding is smooth in G and so cancels in the second differences
        # of (BW2) (summing Vandermonde rows there loses up to a decimal digit).
        inner = np.matmul(cheb.chebvander(xm, c.shape[1] - 1), c)  # (k, S, N_G)
        out = np.empty(inner.shape[:2])
        clenshaw_kernel(inner, xg, out)
        return out.reshape((c.shape[0],) + shape)

    def _derivative(self, dm: int, dg: int) -> np.ndarray:
        """Coefficients of ∂ᵈᵐ_M ∂ᵈᵍ (in the interpolation coordinates), (k, N_M, N_G),
        computed once per order."""
        key = (dm, dg)
        if key not in self._derivatives:
            c = self.coef
            if dm:
                if self.nm == 1:
                    c = np.zeros_like(c)
                else:
                    c = cheb.chebder(c, dm, scl=2 / (self.hi_m - self.lo_m), axis=1)
            if dg:
                c = cheb.chebder(c, dg, scl=2 / (self.hi_g - self.lo_g), axis=2)
            self._derivatives[key] = c
        return self._derivatives[key]


def _top(M, G, n_out, sb2, ey, vary, factor, vsum):
    """(BW2) at the output, δ⁽ᴸ⁾ = c(z − y): E of ‖δ‖², τ², στ, σ², σ, τ given θ_L.

    Only σ² = (1ᵀδ)² sees how the targets co-vary across units: E σ² = n(s + σ_b²) + n²ω²
    + Var(Σ_i y_i), with ``vsum`` = Var(Σ_i y_i)/n (Var y_i for independent units, 0 for
    one-hot targets, whose sum is 1)."""
    s = G - sb2
    om = M - ey  # E(z_i − y_i)
    ew2 = sb2 + vary + om * om  # E w², w = z − z̃ − y
    n = n_out
    out = np.array(
        np.broadcast_arrays(
            n * (s + ew2),
            n * (2 * s * s + s * ew2) + n * n * s * s,
            n * (n + 1) * s * om,
            n * (s + sb2 + vsum) + n * n * om * om,
            n * om,
            n * s,
        )
    )
    scale = np.array([2, 2, 2, 2, 1, 1], float)[(slice(None),) + (None,) * np.ndim(G)]
    return out * factor**scale


def _phis(X, deeper, n, s2, mu, b2, mb):
    """The functions Φ of (BW2): ``X`` (..., 11) → (6, ...), with the deeper layer's F' at
    θ' = (μq̄ + μ_b, σ²ū + σ_b²)."""
    u, a, c, e, t, p, q, d, k, vv, g2 = np.moveaxis(X, -1, 0)
    N, TT, ST, SS, S, TAU = deeper(mu * q + mb, s2 * u + b2)
    P, Ep = p / u, e / u
    return np.array(
        [
            s2 * a * N
            - (s2 / n) * (c / u) * N
            + TT * c / (n * u * u)
            + 2 * mu * ST * k / (n * u)
            + mu * mu * SS * a / n,
            s2 * N * (t - e * e / u)
            + TT * Ep * Ep
            + 2 * mu * Ep * vv * ST
            + mu * mu * vv * vv * SS,
            s2 * N * (g2 - p * e / u)
            + TT * P * Ep
            + mu * ST * (P * vv + d * Ep)
            + mu * mu * SS * d * vv,
            s2 * N * (a - p * p / u) + TT * P * P + 2 * mu * P * d * ST + mu * mu * d * d * SS,
            TAU * P + mu * S * d,
            TAU * Ep + mu * S * vv,
        ]
    )


def _layer_expect(mean, cov, deeper, n, s2, mu, b2, mb):
    """E Φ(X̄) = Φ(μ) + (1/2n) tr(∇²Φ Σ) at P kernels: (6, P), by second differences along
    the eigenvectors of Σ."""
    lam, vec = np.linalg.eigh(cov)  # (P, 11), (P, 11, 11)
    tiny = 1e-14 * np.maximum(lam.max(axis=1), 1e-300)
    ok = lam > tiny[:, None]  # (P, 11)
    # steps along every eigenvector, (11, P, 11); Φ at X̄ and X̄ ± step in one evaluation
    step = _EPS * np.sqrt(np.where(ok, lam, 0.0) / n)[:, None, :] * vec
    step = np.moveaxis(step, 2, 0)
    vals = _phis(np.concatenate([mean[None], mean + step, mean - step]), deeper, n, s2, mu, b2, mb)
    base, plus, minus = vals[:, 0], vals[:, 1:12], vals[:, 12:]
    d2 = plus - 2 * base[:, None] + minus  # (6, 11, P)
    corr = np.sum(np.where(ok.T, d2, 0.0), axis=1) / (2 * _EPS * _EPS)
    return base + corr


def backward_corrections(
    net: MLP,
    inputs: InputLaw,
    targets: TargetLaw | None = None,
    loss: str | Loss = "mse",
    *,
    degree: int | tuple[int, int] = (8, 12),
) -> BackwardCorrections:
    r"""E[δ⁽ˡ⁾_j], E[δ⁽ˡ⁾_j²] and E‖∂L/∂W⁽ˡ⁾‖² to first order in 1/n, any activation.

    Setting: Gaussian weights W⁽ˡ⁺¹⁾_ij ~ N(μ/n_l, σ²/n_l), biases N(μ_b, σ_b²), a linear
    output, squared-error loss with targets independent of the input and the network
    (δ⁽ᴸ⁾ = c(g − y)): constant, Gaussian, or one-hot (whose units sum to 1, :func:`_top`).

    Derivation. Given h = h⁽ˡ⁾ write W = W⁽ˡ⁺¹⁾ = (μ/n)11ᵀ + W₀ and split W₀ = W₀P⊥ + z̃hᵀ/‖h‖²
    with z̃ = W₀h and P⊥ = I − hhᵀ/‖h‖². For i.i.d. Gaussian W₀ the parts W₀P⊥ and z̃ are
    independent, and everything above layer l (z⁽ˡ⁺¹⁾ = μh̄1 + z̃ + b, the deeper weights,
    δ⁽ˡ⁺¹⁾) sees W only through z̃ and h̄ = 1ᵀh/n, whose law given h depends on h only through
    θ_{l+1} = (M, G) = (μh̄ + μ_b, σ²‖h‖²/n + σ_b²). So, with ξ ~ N(0, I) independent of the
    rest, σ = 1ᵀδ⁽ˡ⁺¹⁾ and τ = z̃·δ⁽ˡ⁺¹⁾,

        Wᵀδ⁽ˡ⁺¹⁾ = (σ_w‖δ⁽ˡ⁺¹⁾‖/√n) P⊥ξ + h τ/‖h‖² + (μσ/n) 1                            (BW1)

    exactly, and δ⁽ˡ⁾ = φ'(z⁽ˡ⁾) ⊙ Wᵀδ⁽ˡ⁺¹⁾. Averaging over ξ, the six conditional
    expectations F = E[(‖δ‖², τ², στ, σ², σ, τ) | θ] of layer l are expectations of functions
    of layer l's unit averages X̄ and of the F' of layer l + 1 at θ' = (μq̄ + μ_b, σ²ū + σ_b²):

        E‖δ‖²  = σ²āN' − (σ²/n)(c̄/ū)N' + c̄T'/(nū²) + 2μ k̄ C'/(nū) + μ²āS'/n
        E τ²   = σ²(t̄ − ē²/ū)N' + (ē/ū)²T' + 2μ(ē/ū)v̄C' + μ²v̄²S'
        E στ   = σ²(ḡ − p̄ē/ū)N' + (p̄/ū)(ē/ū)T' + μ(p̄v̄/ū + d̄ē/ū)C' + μ²d̄v̄S'
        E σ²   = σ²(ā − p̄²/ū)N' + (p̄/ū)²T' + 2μ(p̄/ū)d̄C' + μ²d̄²S'
        E σ    = (p̄/ū)τ' + μd̄σ',    E τ = (ē/ū)τ' + μv̄σ'                                (BW2)

    (N', T', C', S', σ', τ' the F' of ‖δ‖², τ², στ, σ², σ, τ), with the bars averages over the
    n = n_l i.i.d. units of layer l given θ_l of

        u = φ², a = φ'², c = φ'²φ², e = z̃φ'φ, t = z̃²φ'², p = φ'φ,
        q = φ, d = φ', k = φ'²φ, v = z̃φ', g = z̃φ'²                                       (BW3)

    (φ = φ(z), z = z̃ + μh̄ + b, z̃ ~ N(0, G − σ_b²)). The top is closed form (δ⁽ᴸ⁾ = c(z − y)
    with independent units). (BW1)–(BW3) are exact; the one approximation: each expectation
    in (BW2) is a smooth Φ of X̄, and E Φ(X̄) = Φ(μ_X) + (1/2n) tr(∇²Φ Σ_X) + O(n⁻²), computed
    by second differences along the eigenvectors of Σ_X. The terms in T' and C' carry the
    forward–backward correlation that gradient independence drops (with a square readout T'
    ~ n², so they are O(1)); the other 1/n terms come from the fluctuation of θ' and its
    correlation with the layer's averages. At n = ∞ with μ = 0, (BW2) is the Gaussian-
    assumption recursion (B3). Given x, θ_l is the forward kernel, whose 1/n mean shift δθ
    and covariance C are those of :func:`~deltastats.theory.forward_corrections`, so
    E[F_l(θ_l) | x] = F_l(θ̄ + δθ) + ½ tr(∇²F_l(θ̄) C) + O(n⁻²); the input law is integrated
    by its rule. The one-sample weight gradient has ‖δ⁽ˡ⁾h⁽ˡ⁻¹⁾ᵀ‖² = ‖δ⁽ˡ⁾‖²‖h⁽ˡ⁻¹⁾‖² with
    ‖h⁽ˡ⁻¹⁾‖² = n_{l−1}(G_l − σ_b²)/σ², a function of θ_l, expanded the same way.

    Each F_l is represented by its Chebyshev interpolant on the box of θ_l that occurs (every
    input node's kernel and the image of the box below, with margins).

    Parameters
    ----------
    net : MLP
    inputs : InputLaw
    targets : TargetLaw or None
        Default zeros.
    loss : str or Loss
        ``"mse"`` or ``"sum_squares"``.
    degree : int or (int, int)
        Input-law rule (see :meth:`~deltastats.model.inputs.InputLaw.summary_rule`); the
        result is checked against a rule of three quarters of the degree and a coarser
        interpolation (they must agree to 0.5 %: E δ² and E‖∂L/∂W‖² relative, E δ relative
        to √(E δ²)). The conditional expectations are
        interpolated in log G on the layers whose kernel spans a factor of more than 10 (a
        kernel that grows or shrinks over the layers, or a wide input law), in G elsewhere;
        where that is not resolved, in G throughout (unless it failed in the layers above
        every log-G box, whose tables are the same in G). Where neither resolves and M varies
        (μ_w ≠ 0), each attempt's finer run is checked against one with 16 nodes in M, which
        is returned if they agree (the error is then their distance).

    Returns
    -------
    BackwardCorrections

    Raises
    ------
    TheoryNotCovered
        Outside the setting above (:func:`backward_covered` says why), when the kernel
        overflows, or when the two resolutions of the error control disagree (e.g. a layer
        whose units are nearly all inactive, where the 1/ū terms are not resolved).

    References
    ----------
    Hanin, B. (2018). Which neural net architectures give rise to exploding and vanishing
    gradients? NeurIPS. (The projection (BW1), there for ReLU.)
    Roberts, D. A., Yaida, S. & Hanin, B. (2022). *The Principles of Deep Learning Theory*,
    ch. 4–5 (the 1/n expansion of the kernel).
    """
    from .finite_width import _corrections_at_nodes

    why = backward_covered(net, loss, targets)
    if why is not None:
        raise TheoryNotCovered(f"backward 1/n corrections not derived here: {why}")
    phi, _ = _check_net(net)
    lossf = get_loss(loss) if not isinstance(loss, Loss) else loss
    factor = 2.0 if lossf.name == "sum_squares" else 1.0
    n = net.widths
    sw2 = np.array(net.layer_sigma_w, float) ** 2
    sb2 = np.array(net.layer_sigma_b, float) ** 2
    mw = np.array(net.layer_mu_w, float)
    mb = np.array(net.layer_mu_b, float)
    ey, ey2 = (0.0, 0.0) if targets is None else map(float, targets.moments(n[-1]))
    vary = max(ey2 - ey * ey, 0.0)

    # Error control: the recursion on two Chebyshev resolutions and two input-law rules
    # (``degree`` and three quarters of it); they must agree, else the setting is not
    # resolved. (More Chebyshev nodes are not always better: the interpolants' second
    # derivatives amplify the rounding of the tables roughly as N⁴.)
    dx, dr = (degree, degree) if isinstance(degree, int) else degree
    rules = []
    for deg in ((max(3 * dx // 4, 2), max(3 * dr // 4, 2)), (dx, dr)):
        rule = input_rule(net, inputs, deg)
        nodes = _corrections_at_nodes(net, phi, *first_layer(net, rule))  # (K, L), C (K, L, 2, 2)
        if not all(np.all(np.isfinite(a)) for a in nodes[:4]):
            raise TheoryNotCovered("the kernel overflows: the 1/n terms are not defined")
        rules.append((rule, nodes))
    # the boxes hold the nodes of the finer rule (a superset of the coarser one's range)
    boxes = _boxes(phi, net, rules[1][0].weights, *rules[1][1], sw2, sb2, mw, mb)
    vsum = 0.0 if isinstance(targets, OneHot) else vary  # Var(Σ_i y_i) / n_L
    top = (n[-1], sb2[-1], ey, vary, factor, vsum)
    # Interpolation in log G first on the boxes that span a wide range (:func:`_log_g`),
    # then in G throughout. Log G comes first because in G a wide box's interpolants can
    # oscillate with the number of nodes while two resolutions still agree: gelu, μ_w = 1,
    # width 64, a square readout, G spanning 0.15–8 at layer 5: E δ⁽¹⁾ was 10.86, 10.94,
    # 10.70 and 11.16 at (18, 9), (24, 12), (40, 24) and (24, 16) nodes in G, and 10.691 at
    # all of them in log G (Monte Carlo: 10.737 ± 0.018). Each result is only returned if
    # its own two resolutions agree.
    gaps = []
    order = (True, False) if any(_log_g(b) for b in boxes[:-1]) else (False,)

    def run(rule_nodes, cheb, log):
        (rule, nodes), (ng, nm) = rule_nodes, cheb
        # single-threaded BLAS inside: the runs may share the two cores
        with single_threaded_blas(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            fns = _tables(phi, net, boxes, ng, nm, top, log, moments)
            return _evaluate(fns, rule.weights, *nodes, n, sw2, sb2)

    # The two resolutions are independent: on two free cores they run side by side (numpy
    # releases the GIL in its loops; each run's arithmetic is the same either way). The unit
    # moments (BW3) of every layer do not depend on the layers above: both resolutions'
    # tables first, shared out over the threads, then the two top-down recursions.
    moments: dict = {}  # unit moments at a layer's nodes, shared by the log-G and G attempts
    fine_runs = {}  # the finer run of each attempt, by log
    for log in order:
        jobs = list(zip(rules, (_COARSE, (_CHEB_G, _CHEB_M))))
        _unit_moments_into(moments, phi, net, boxes, jobs, log)
        coarse, fine = side_by_side([partial(run, *job, log) for job in jobs])
        fine_runs[log] = fine
        per_layer = _disagreement(coarse, fine)
        gap = float(per_layer.max())
        if np.isfinite(gap) and gap <= _RTOL:
            return _corrections(fine, coarse)
        gaps.append(gap)
        if log:
            # Layers above the highest log-G box have the same tables, hence the same values,
            # in G: if the error control fails there, the G attempt would fail the same way.
            top_log = max(l for l in range(1, net.depth) if _log_g(boxes[l - 1]))
            if np.any(per_layer[top_log:] > _RTOL):
                break
    # Neither attempt resolved. Where M varies (μ_w ≠ 0), the M axis may be the one short of
    # nodes: tanh, μ_w = 1, Gaussian inputs (n₀ = 16), depth 10, where x̄ spreads M⁽¹⁾ over
    # ±1.8: E δ²⁽¹⁾ is off by +0.40 %, −0.33 %, −0.039 % and −0.0007 % at 9, 12, 16 and 24
    # nodes in M (any number in G). One more run with _CHEB_M_FINE nodes in M, checked
    # against the finer run of the same attempt, returned only if the two agree.
    if any(lo_m < hi_m for (lo_m, hi_m), _ in boxes[:-1]):
        for log, fine in fine_runs.items():
            job = (rules[1], (_CHEB_G, _CHEB_M_FINE))
            _unit_moments_into(moments, phi, net, boxes, [job], log)
            finer = run(*job, log)
            gap = float(_disagreement(fine, finer).max())
            if np.isfinite(gap) and gap <= _RTOL:
                return _corrections(finer, fine)
            gaps.append(gap)
    raise TheoryNotCovered(
        "the backward 1/n recursion is not resolved here (two resolutions disagree by "
        f"{min(gaps):.2g} relative): e.g. a layer whose units are nearly all inactive"
    )


def _disagreement(coarse, fine) -> np.ndarray:
    """Per layer, how far two resolutions' (E δ², E δ, E‖∂L/∂W‖²) lie apart: (L,), relative
    (E δ on the scale of its spread √(E δ²) ≥ |E δ|: relative to itself it would refuse the
    small means of μ_w = 0, known to 1.5 % where Monte Carlo resolves 10 %); inf where not
    finite."""
    (sq0, mean0, grad0), (sq, mean, grad) = coarse, fine
    with np.errstate(invalid="ignore", divide="ignore"):
        per_layer = np.max(
            [
                np.abs(sq - sq0) / np.abs(sq),
                np.abs(grad - grad0) / np.abs(grad),
                np.abs(mean - mean0) / np.sqrt(np.abs(sq)),
            ],
            axis=0,
        )
    return np.where(np.isnan(per_layer), np.inf, per_layer)


def _corrections(fine, coarse) -> BackwardCorrections:
    """The finer run, with its distance to the coarser one as the numerical error."""
    (sq, mean, grad), (sq0, mean0, grad0) = fine, coarse
    return BackwardCorrections(
        delta_sq=sq,
        delta_mean=mean,
        grad_w_sq=grad,
        delta_sq_error=np.abs(sq - sq0),
        delta_mean_error=np.abs(mean - mean0),
        grad_w_sq_error=np.abs(grad - grad0),
    )


def _tables(phi, net, boxes, ng, nm_max, top, log: bool = False, cache=None) -> list:
    """The interpolants of F_l, l = 1 … L (list index l − 1), from the top down, (BW2);
    ``log``: in log G on the boxes :func:`_log_g` accepts. ``cache``: a dict that keeps the
    unit moments (BW3) of each layer's nodes (they do not depend on the layers above)."""
    n, L = net.widths, net.depth
    sw2 = np.array(net.layer_sigma_w, float) ** 2
    sb2 = np.array(net.layer_sigma_b, float) ** 2
    mw = np.array(net.layer_mu_w, float)
    mb = np.array(net.layer_mu_b, float)
    fns = [None] * L
    for l in range(L, 0, -1):
        key, Mg, Gg = _layer_nodes(boxes, l, L, ng, nm_max, log)
        _, nm, _, log_g = key
        if l == L:
            table = _top(Mg, Gg, *top)
        else:
            if cache is not None and key in cache:
                mean_x, cov_x = cache[key]
            else:
                mean_x, cov_x = _unit_moments(phi, Mg, Gg, sb2[l - 1])
                if cache is not None:
                    cache[key] = (mean_x, cov_x)
            table = _layer_expect(mean_x, cov_x, fns[l], n[l], sw2[l], mw[l], sb2[l], mb[l])
        fns[l - 1] = _Fn(boxes[l - 1], table.reshape(6, nm, ng), log_g)
    return fns


def _unit_moments_into(cache: dict, phi, net, boxes, jobs, log: bool) -> None:
    """Fill ``cache`` with the unit moments of every layer below the top for the
    resolutions of ``jobs`` (``(rule, (N_G, N_M))`` pairs), side by side."""
    L = net.depth
    sb2 = np.array(net.layer_sigma_b, float) ** 2
    tasks = {}
    for _, (ng, nm) in jobs:
        for l in range(L - 1, 0, -1):
            key, Mg, Gg = _layer_nodes(boxes, l, L, ng, nm, log)
            if key not in cache and key not in tasks:
                tasks[key] = partial(_quiet_unit_moments, phi, Mg, Gg, sb2[l - 1])
    cache.update(zip(tasks, side_by_side(list(tasks.values()))))


def _quiet_unit_moments(phi, M, G, sb2):
    """:func:`_unit_moments` under the error state of the recursion (numpy's error state is
    per thread: a pool thread does not inherit the caller's), with single-threaded BLAS."""
    with single_threaded_blas(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _unit_moments(phi, M, G, sb2)


def _layer_nodes(boxes, l: int, L: int, ng: int, nm_max: int, log: bool):
    """The tensor grid of layer l's interpolation nodes: ``(key, M, G)`` with key =
    (l, N_M, N_G, in log G), which names the layer's unit moments (BW3) at these nodes."""
    (lo_m, hi_m), _ = boxes[l - 1]
    nm = 1 if lo_m == hi_m else nm_max
    gm = 0.5 * (hi_m + lo_m) + 0.5 * (hi_m - lo_m) * _chebyshev_nodes(nm)
    log_g = log and l < L and _log_g(boxes[l - 1])
    gg = _g_nodes(boxes[l - 1], ng, log_g)
    Mg, Gg = (a.ravel() for a in np.meshgrid(gm, gg, indexing="ij"))
    return (l, nm, ng, log_g), Mg, Gg


def _evaluate(fns, wts, Mn, G, dM, dG, C, n, sw2, sb2):
    """Per-unit E δ², E δ and the one-sample E‖∂L/∂W‖² per layer, pooled over the input rule:
    E[F(θ_l) | x] = F(θ̄ + δθ) + ½ tr(∇²F(θ̄) C), exact to O(1/n)."""
    L = len(fns)
    sq, mean, grad = np.empty(L), np.empty(L), np.empty(L)
    for l in range(1, L + 1):
        fn = fns[l - 1]
        Mb, Gb = Mn[:, l - 1], G[:, l - 1]
        Mm, Gm = Mb + dM[:, l - 1], Gb + dG[:, l - 1]
        Cl = C[:, l - 1]

        # F and its derivatives, each evaluated once: F at the shifted kernel, the Hessian
        # (and the first derivatives H needs) at the unshifted one
        val = fn(Mm, Gm)
        der = fn.orders(Mb, Gb, ((2, 0), (1, 1), (0, 2), (1, 0), (0, 1)))
        c00, c01, c11 = Cl[:, 0, 0], Cl[:, 0, 1], Cl[:, 1, 1]
        hess = der[2, 0] * c00 + 2 * der[1, 1] * c01 + der[0, 2] * c11
        F = wts @ (val + 0.5 * hess).T
        sq[l - 1], mean[l - 1] = F[_N] / n[l], F[_S] / n[l]
        # ‖h⁽ˡ⁻¹⁾‖² = n_{l−1}(G − σ_b²)/σ²: H(θ) = E[‖δ‖² | θ]·n_{l−1}(G − σ_b²)/σ², whose
        # derivatives are ∂ᵈᵐ_M ∂ᵈᵍ_G H = cst·(F_N^(dm,dg) g + dg·F_N^(dm,dg−1)), g = G − σ_b².
        # First order in 1/n: the forward covariance C is linear in β = Σ 1/n_j, so deep
        # narrow networks lose the (1 + c/n)^l growth beyond its first term.
        cst = n[l - 1] / sw2[l - 1]
        gm, gb = Gm - sb2[l - 1], Gb - sb2[l - 1]
        h_hess = (
            der[2, 0][_N] * gb * c00
            + 2 * (der[1, 1][_N] * gb + der[1, 0][_N]) * c01
            + (der[0, 2][_N] * gb + 2 * der[0, 1][_N]) * c11
        )
        grad[l - 1] = wts @ (cst * (val[_N] * gm + 0.5 * h_hess))
    return sq, mean, grad


def _boxes(phi, net, wts, Mn, G, dM, dG, C, sw2, sb2, mw, mb):
    """The box of θ_l = (M, G) per layer: every input node of non-negligible weight (with its
    1/n shift) and the image of the box below under θ ↦ (μ E φ + μ_b, σ² E φ² + σ_b²), with
    margins of 5 % and a tenth of a standard deviation of the kernel's fluctuation (the second
    differences of (BW2) step a twentieth of one). M is fixed (a box of width 0) in a layer
    whose μ_w is 0. Narrow boxes keep the interpolants accurate; nodes of weight < 1e-12 are
    clipped into the box."""
    keep = wts >= _NEGLIGIBLE * wts.max()
    boxes = []
    for l in range(1, net.depth + 1):
        box = []
        for j, (c, d) in enumerate(((Mn, dM), (G, dG))):
            v = c[keep, l - 1]
            s = d[keep, l - 1]
            lo, hi = np.min(v + np.minimum(s, 0)), np.max(v + np.maximum(s, 0))
            if boxes:
                (pm, qm), (pg, qg) = boxes[-1]
                gm = np.linspace(pm, qm, 5 if qm > pm else 1)
                gg = np.linspace(pg, qg, 9)
                Mg, Gg = (a.ravel() for a in np.meshgrid(gm, gg, indexing="ij"))
                mean, _ = _unit_moments(phi, Mg, Gg, sb2[l - 2], cov=False)
                image = (
                    mw[l - 1] * mean[:, _Q] + mb[l - 1]
                    if j == 0
                    else sw2[l - 1] * mean[:, _U] + sb2[l - 1]
                )
                lo, hi = min(lo, image.min()), max(hi, image.max())
            sd = np.sqrt(np.max(np.maximum(C[keep, l - 1, j, j], 0.0)))
            if j == 0 and mw[l - 1] == 0:
                box.append((float(mb[l - 1]), float(mb[l - 1])))
                continue
            if j == 1:  # G > σ_b² ≥ 0: margins relative to each end
                lo = max(lo - 0.05 * lo - 0.1 * sd, sb2[l - 1] + 1e-12 * hi, 1e-300)
                hi = hi + 0.05 * hi + 0.1 * sd
            else:
                pad = 0.05 * max(hi - lo, np.sqrt(np.max(G[keep, l - 1]))) + 0.1 * sd
                lo, hi = lo - pad, hi + pad
            box.append((float(lo), float(hi)))
        boxes.append(tuple(box))
    return boxes
