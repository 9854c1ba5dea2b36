"""E[δ⁽ˡ⁾] and E[δ⁽ˡ⁾²] to first order in 1/n for any activation: an exact backward recursion.

With Gaussian weights and μ_w = 0 the backward pass has an exact recursion in conditional
expectations of the scalar kernel K_l (the variance of z⁽ˡ⁾ given layer l − 1); the only
approximation made here is the expansion of one layer's empirical averages to second order,
which is exact to O(1/n). The recursion and its derivation are in :func:`backward_corrections`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev as cheb

from ..model.activations import Activation
from ..model.inputs import InputLaw
from ..model.losses import Loss, get_loss
from ..model.networks import MLP
from ..model.targets import TargetLaw
from ._common import TheoryNotCovered
from .input_law import first_layer, input_rule
from .meanfield import _check_net
from .quadrature import _legendre_rule

__all__ = ["BackwardCorrections", "backward_corrections", "backward_covered"]

# Per-unit quantities X = (u, a, c, e, t, p) of one layer given its kernel K (see (BW3)).
_U, _A, _C, _E, _T, _P = range(6)
_NODES = 96  # Gauss–Legendre nodes per smooth piece of φ on [−_TAIL, _TAIL] standard deviations
_TAIL = 12.0
# Chebyshev nodes of each conditional expectation as a function of K. More is not better:
# the interpolant's second derivative amplifies the rounding of the tabulated values (about
# as N⁴); 16, 24, 32 and 48 nodes agree to 10⁻⁷ relative on gelu with Gaussian inputs, and
# bias-free ReLU (where the recursion is exact) is reproduced to 10⁻⁶.
_CHEB = 24
_NEGLIGIBLE = 1e-12  # input nodes of smaller weight are evaluated at the range's edge


@dataclass(frozen=True)
class BackwardCorrections:
    """E[δ⁽ˡ⁾_j], E[δ⁽ˡ⁾_j²] and E‖∂L/∂W⁽ˡ⁾‖² to first order in 1/n (:func:`backward_corrections`).

    Attributes
    ----------
    delta_sq, delta_mean : ndarray, shape (L,)
        Per unit, pooled over the input law, layers 1 … L.
    grad_w_sq : ndarray, shape (L,)
        E‖∂L/∂W⁽ˡ⁾‖²_F of one sample's gradient (B = 1, no weight decay).
    """

    delta_sq: np.ndarray
    delta_mean: np.ndarray
    grad_w_sq: np.ndarray


def backward_covered(net: MLP, loss: str | Loss, targets: TargetLaw | None) -> str | None:
    """Why :func:`backward_corrections` does not cover a setting, or ``None`` if it does."""
    phi, phi_out = _check_net(net)
    if net.init in ("orthogonal", "uniform"):
        return f"init={net.init!r}: the recursion needs Gaussian weights"
    if any(m != 0 for m in net.layer_mu_w):
        return "mu_w ≠ 0: the mean of W couples the units; the 1/n term is not derived"
    if phi_out.closed_form != "linear":
        return f"output activation {phi_out.name!r}: derived for a linear output only"
    name = loss.name if isinstance(loss, Loss) else get_loss(loss).name
    if name not in ("mse", "sum_squares"):
        return f"loss={name!r}: derived for squared-error losses only"
    if targets is not None and targets.moments(net.widths[-1]) is None:
        return "targets depend on the input: the recursion needs independent targets"
    del phi
    return None


def _unit_rule(phi: Activation, K: float, mu_b: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes z and weights of z ~ N(μ_b, K), split at the kinks of φ."""
    x, wx = _legendre_rule(_NODES)
    sd = np.sqrt(K)
    cuts = sorted({(k - mu_b) / sd for k in phi.kinks if abs(k - mu_b) < _TAIL * sd})
    edges = [-_TAIL, *cuts, _TAIL]
    t, w = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        half = 0.5 * (hi - lo)
        tt = 0.5 * (lo + hi) + half * x
        t.append(tt)
        w.append(half * wx * np.exp(-0.5 * tt * tt) / np.sqrt(2 * np.pi))
    t, w = np.concatenate(t), np.concatenate(w)
    return mu_b + sd * t, w


def _unit_moments(phi: Activation, K: float, sb2: float, mu_b: float):
    """Mean vector and covariance (one unit) of X = (u, a, c, e, t, p), (BW3).

    z = z̃ + b with z̃ ~ N(0, K − σ_b²) and b ~ N(μ_b, σ_b²) independent; given z, z̃ is
    N(r(z − μ_b), rσ_b²) with r = (K − σ_b²)/K, so powers of z̃ are integrated in closed form
    and one quadrature in z remains."""
    z, w = _unit_rule(phi, K, mu_b)
    h, d = phi.phi(z), phi.dphi(z)
    r = (K - sb2) / K if K > 0 else 0.0
    m, v = r * (z - mu_b), r * sb2
    zt = [np.ones_like(z), m, m * m + v, m**3 + 3 * m * v, m**4 + 6 * m * m * v + 3 * v * v]
    h2, d2 = h * h, d * d
    # Each X_k = (z̃ power) × (function of z): (power, function).
    parts = [(0, h2), (0, d2), (0, d2 * h2), (1, d * h), (2, d2), (0, d * h)]
    mean = np.array([w @ (zt[p] * f) for p, f in parts])
    cov = np.empty((6, 6))
    for i, (pi, fi) in enumerate(parts):
        for j, (pj, fj) in enumerate(parts[: i + 1]):
            cov[i, j] = cov[j, i] = w @ (zt[pi + pj] * fi * fj) - mean[i] * mean[j]
    return mean, cov


def _chebyshev_nodes(N: int) -> np.ndarray:
    return np.cos(np.pi * (np.arange(N) + 0.5) / N)


class _Fn:
    """A smooth function of K as the Chebyshev interpolant of its values at the N Chebyshev
    nodes of [lo, hi] (``values`` in the order of :func:`_chebyshev_nodes`)."""

    def __init__(self, lo: float, hi: float, values: np.ndarray):
        self.lo, self.hi = lo, hi
        self.coef = cheb.chebfit(_chebyshev_nodes(values.size), values, values.size - 1)

    def _x(self, K):
        # Clipped: an interpolant is never extrapolated (the ranges are built to contain
        # every point the recursion evaluates, up to rounding).
        return np.clip((2 * np.asarray(K) - self.hi - self.lo) / (self.hi - self.lo), -1, 1)

    def __call__(self, K):
        x = self._x(K)
        return cheb.chebval(x, self.coef)

    def d1(self, K):
        x = self._x(K)
        return cheb.chebval(x, cheb.chebder(self.coef, 1)) * (2 / (self.hi - self.lo))

    def d2(self, K):
        x = self._x(K)
        return cheb.chebval(x, cheb.chebder(self.coef, 2)) * (2 / (self.hi - self.lo)) ** 2


def backward_corrections(
    net: MLP,
    inputs: InputLaw,
    targets: TargetLaw | None = None,
    loss: str | Loss = "mse",
    *,
    degree: int | tuple[int, int] = (8, 12),
) -> BackwardCorrections:
    r"""E[δ⁽ˡ⁾_j] and E[δ⁽ˡ⁾_j²] to first order in 1/n, any activation.

    Setting: Gaussian weights W⁽ˡ⁺¹⁾_ij ~ N(0, σ²/n_l) (μ_w = 0), biases N(μ_b, σ_b²), a
    linear output, squared-error loss with targets independent of the network (δ⁽ᴸ⁾ = g − y).

    Derivation. Given h = h⁽ˡ⁾ write W = W⁽ˡ⁺¹⁾ = W P⊥ + z̃ hᵀ/‖h‖², with z̃ = Wh and
    P⊥ = I − hhᵀ/‖h‖². For i.i.d. Gaussian entries W P⊥ and z̃ are independent, and
    everything above layer l (z⁽ˡ⁺¹⁾ = z̃ + b, the deeper weights, δ⁽ˡ⁺¹⁾) sees W only
    through z̃, whose law given h depends on h only through K_{l+1} = σ²‖h‖²/n_l + σ_b².
    So, with ξ ~ N(0, I) independent of the rest,

        Wᵀδ⁽ˡ⁺¹⁾ = (σ‖δ⁽ˡ⁺¹⁾‖/√n_l) P⊥ξ + h (z̃·δ⁽ˡ⁺¹⁾)/‖h‖²,                        (BW1)

    exactly. With δ⁽ˡ⁾ = φ'(z⁽ˡ⁾) ⊙ Wᵀδ⁽ˡ⁺¹⁾, averaging over ξ, and writing
    G_l(K) = E[‖δ⁽ˡ⁾‖² | K_l = K], F_l(K) = E[(z̃⁽ˡ⁾·δ⁽ˡ⁾)² | K_l = K],
    m_l(K) = E[z̃⁽ˡ⁾·δ⁽ˡ⁾ | K_l = K], S_l(K) = E[Σ_j δ⁽ˡ⁾_j | K_l = K]:

        G_l = E[σ² ā G' − (σ²/n) (c̄/ū) G' + (c̄/(n ū²)) F'],
        F_l = E[σ² (t̄ − ē²/ū) G' + (ē/ū)² F'],
        m_l = E[(ē/ū) m'],    S_l = E[(p̄/ū) m'],                                     (BW2)

    where ′ means evaluated at K' = σ²ū + σ_b² (layer l + 1) and the bars are averages over
    the n = n_l i.i.d. units of layer l given K_l of

        u = φ(z)², a = φ'(z)², c = φ'(z)²φ(z)², e = z̃φ'(z)φ(z), t = z̃²φ'(z)², p = φ'(z)φ(z)  (BW3)

    (z = z̃ + b, z̃ ~ N(0, K − σ_b²), b ~ N(μ_b, σ_b²)). (BW1)–(BW3) are exact; the top is
    G_L = n_L(K + E(b − y)²) (up to the loss's factor), F_L = n_L(2s² + sE(b − y)²) + n_L²s²
    and m_L = n_L s with s = K − σ_b², S_L = n_L(μ_b − E y). The one approximation: each
    expectation in (BW2) is a smooth function Φ of the averages X̄, and
    E Φ(X̄) = Φ(μ) + (1/2n) tr(∇²Φ(μ) Σ) + O(n⁻²), μ and Σ the mean and covariance of one
    unit's X. The Hessian term is computed by second differences along the eigenvectors of Σ.
    The terms c̄/(nū²)F' and (ē/ū)²F' carry the forward–backward correlation that gradient
    independence drops (with a square readout F ~ n², so they are O(1), not O(1/n)); the
    rest of the 1/n terms come from the fluctuation of K' and its correlation with ā, c̄,
    ē, t̄. At n = ∞ (BW2) is the Gaussian-assumption recursion. Given x, K_l is the forward
    kernel, whose 1/n mean shift δK and variance V are those of
    :func:`~deltastats.theory.forward_corrections`, so E[‖δ⁽ˡ⁾‖² | x] =
    G_l(K̄ + δK) + ½ G_l''(K̄) V + O(n⁻²); the input law is integrated by its rule. The
    one-sample weight gradient ∂L/∂W⁽ˡ⁾ = δ⁽ˡ⁾h⁽ˡ⁻¹⁾ᵀ has ‖·‖²_F = ‖δ⁽ˡ⁾‖²‖h⁽ˡ⁻¹⁾‖² with
    ‖h⁽ˡ⁻¹⁾‖² = n_{l−1}(K_l − σ_b²)/σ², a function of K_l, so its mean is E H(K_l) with
    H(K) = G_l(K) n_{l−1}(K − σ_b²)/σ², expanded the same way.

    Each G_l, F_l, m_l is represented by its Chebyshev interpolant on the range of K_l that
    occurs (±6 standard deviations of the kernel around every input's mean field).

    Parameters
    ----------
    net : MLP
    inputs : InputLaw
    targets : TargetLaw or None
        Default zeros.
    loss : str or Loss
        ``"mse"`` or ``"sum_squares"``.
    degree : int or (int, int)
        Input-law rule (see :meth:`~deltastats.model.inputs.InputLaw.summary_rule`).

    Returns
    -------
    BackwardCorrections

    Raises
    ------
    TheoryNotCovered
        Outside the setting above (:func:`backward_covered` says why).

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
    L = net.depth
    sw2 = np.array(net.layer_sigma_w, float) ** 2
    sb2 = np.array(net.layer_sigma_b, float) ** 2
    mb = np.array(net.layer_mu_b, float)
    if targets is None:
        ey, ey2 = 0.0, 0.0
    else:
        ey, ey2 = (float(v) for v in targets.moments(n[-1]))  # E y, E y² per unit

    rule = input_rule(net, inputs, degree)
    wts = rule.weights
    m1, v1 = first_layer(net, rule)
    _, G, _, dG, C = _corrections_at_nodes(net, phi, m1, v1)  # G, dG: (K, L); C: (K, L, 2, 2)
    V = C[:, :, 1, 1]
    if not np.all(np.isfinite(G)) or not np.all(np.isfinite(dG)):
        raise TheoryNotCovered("the kernel overflows: the 1/n terms are not defined")

    # K ranges per layer. G_l is needed at every input node's K_l (and its 1/n shift), and
    # (BW2) needs G_{l+1} on the image of layer l's range under K ↦ σ²E φ² + σ_b² (plus the
    # small steps of the second differences). So the range of layer 1 holds every input
    # node of non-negligible weight, each next range the image of the one below, each with a
    # margin of 5 % and half a standard deviation of the kernel's fluctuation; nodes of
    # weight < 1e-12 are clipped to the range. Narrow ranges keep the interpolants accurate.
    keep = wts >= _NEGLIGIBLE * wts.max()
    ranges = []
    for l in range(1, L + 1):
        Kl = G[keep, l - 1]
        lo, hi = (
            np.min(Kl + np.minimum(dG[keep, l - 1], 0)),
            np.max(Kl + np.maximum(dG[keep, l - 1], 0)),
        )
        if ranges:
            below = np.linspace(*ranges[-1], 17)
            u = np.array([_unit_moments(phi, K, sb2[l - 2], mb[l - 2])[0][_U] for K in below])
            image = sw2[l - 1] * u + sb2[l - 1]
            lo, hi = min(lo, image.min()), max(hi, image.max())
        pad = 0.05 * hi + 0.5 * np.sqrt(np.max(np.maximum(V[keep, l - 1], 0.0)))
        ranges.append((max(lo - pad, sb2[l - 1] + 1e-12 * hi, 1e-300), hi + pad))

    b_y = sb2[-1] + mb[-1] ** 2 - 2 * mb[-1] * ey + ey2  # E(b⁽ᴸ⁾ − y)² per output unit

    def top(K):
        # δ⁽ᴸ⁾ = c(z̃ + b − y), c the loss's factor: G_L, F_L, m_L, S_L of (BW2).
        s, nl = K - sb2[-1], n[-1]
        return np.array(
            np.broadcast_arrays(
                factor**2 * nl * (s + b_y),
                factor**2 * (nl * (2 * s * s + s * b_y) + nl * nl * s * s),
                factor * nl * s,
                factor * nl * (mb[-1] - ey) + 0 * K,
            )
        )

    def recursion(N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sq, mean, grad = np.empty(L), np.empty(L), np.empty(L)
        fns = None
        for l in range(L, 0, -1):
            lo, hi = ranges[l - 1]
            Ks = 0.5 * (hi + lo) + 0.5 * (hi - lo) * _chebyshev_nodes(N)
            if l == L:
                table = top(Ks)
            else:
                G_up, F_up, m_up, _ = fns  # layer l + 1, whose weights have fan-in n_l
                table = np.empty((4, N))
                for i, K in enumerate(Ks):
                    mu, cov = _unit_moments(phi, float(K), sb2[l - 1], mb[l - 1])
                    table[:, i] = _layer_expect(mu, cov, n[l], sw2[l], sb2[l], G_up, F_up, m_up)
            fns = [_Fn(lo, hi, table[i]) for i in range(4)]
            G_fn, _, _, S_fn = fns
            # Per input: E[G_l(K_l) | x] = G_l(K̄ + δK) + ½ G_l''(K̄) V (exact to O(1/n)).
            Kbar = np.clip(G[:, l - 1], lo, hi)
            Km = np.clip(G[:, l - 1] + dG[:, l - 1], lo, hi)
            Vl = V[:, l - 1]
            sq[l - 1] = wts @ (G_fn(Km) + 0.5 * G_fn.d2(Kbar) * Vl) / n[l]
            mean[l - 1] = wts @ (S_fn(Km) + 0.5 * S_fn.d2(Kbar) * Vl) / n[l]
            # One sample: ‖∂L/∂W⁽ˡ⁾‖² = ‖δ⁽ˡ⁾‖²‖h⁽ˡ⁻¹⁾‖², and ‖h⁽ˡ⁻¹⁾‖² = n_{l−1}(K_l − σ_b²)/σ²
            # is a function of K_l: E = E H(K_l), H(K) = G_l(K)·n_{l−1}(K − σ_b²)/σ².
            c = n[l - 1] / sw2[l - 1]
            H = G_fn(Km) * (Km - sb2[l - 1]) * c
            H2 = (G_fn.d2(Kbar) * (Kbar - sb2[l - 1]) + 2 * G_fn.d1(Kbar)) * c
            grad[l - 1] = wts @ (H + 0.5 * H2 * Vl)
        return sq, mean, grad

    # Past overflow (e.g. a deep exploding network) the values are inf/nan: no 1/n terms there.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        sq, mean, grad = recursion(_CHEB)
    return BackwardCorrections(delta_sq=sq, delta_mean=mean, grad_w_sq=grad)


def _layer_expect(mu, cov, n, s2, b2, Gp, Fp, mp):
    """(G_l, F_l, m_l, S_l) at one K: E Φ(X̄) for the four Φ of (BW2)."""

    def phis(x):
        u, a, c, e, t, p = x
        Kp = s2 * u + b2
        g, f, m = Gp(Kp), Fp(Kp), mp(Kp)
        return np.array(
            [
                s2 * a * g - (s2 / n) * (c / u) * g + (c / (n * u * u)) * f,
                s2 * (t - e * e / u) * g + (e / u) ** 2 * f,
                (e / u) * m,
                (p / u) * m,
            ]
        )

    base = phis(mu)
    # ½ tr(∇²Φ Σ)/n by second differences along the eigenvectors of Σ (scaled to ε·√λ/√n).
    lam, vec = np.linalg.eigh(cov)
    corr = np.zeros(4)
    eps = 0.05
    for j in range(6):
        if lam[j] <= 1e-14 * max(lam.max(), 1e-300):
            continue
        step = eps * np.sqrt(lam[j] / n) * vec[:, j]
        corr += (phis(mu + step) - 2 * base + phis(mu - step)) / (2 * eps * eps)
    return base + corr
