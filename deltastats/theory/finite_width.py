"""Finite-width theory: the forward kernel's fluctuation and shift to first order in 1/n for
any activation (:func:`forward_corrections`), E[δ⁽ˡ⁾²] exactly at any width for bias-free ReLU
networks (:func:`relu_delta_sq`), and the log-normal law of ‖δ⁽ˡ⁾‖² in deep ReLU networks
(:func:`relu_log_norm_var`).

At finite width log‖δ⁽ˡ⁾‖² is a sum of independent log-χ² terms, one per layer, so its
variance grows linearly in β = Σ_j 1/n_j (Hanin 2018; Hanin & Nica 2019).

References
----------
Hanin, B. (2018). Which neural net architectures give rise to exploding and vanishing
gradients? *NeurIPS*.
Hanin, B. & Nica, M. (2019). Products of many large random matrices and gradients in deep
neural networks. *Communications in Mathematical Physics*.
Roberts, D. A., Yaida, S. & Hanin, B. (2022). *The Principles of Deep Learning Theory*.
Cambridge University Press, ch. 4–5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from ..model.activations import Activation
from ..model.inputs import InputLaw
from ..model.inputs import gaussian as _gaussian_inputs
from ..model.networks import MLP
from ._common import NODE_CHUNK
from .input_law import first_layer, input_rule
from .meanfield import (
    ForwardMoments,
    _check_net,
    _forward_nodes,
    _input_moments,
    forward_moments,
)
from .quadrature import expect


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
        E log(‖δ⁽ˡ⁾‖²/n_l), (H3), an empirical fit (its per-layer shift is measured);
        ``None`` unless ``sigma_w`` and ``input_log_mean`` are given.
    """

    beta: np.ndarray
    backward_var: np.ndarray
    log_var: np.ndarray
    log_mean: np.ndarray | None = None


def hanin_rho(n_out: int) -> float:
    """Empirical fit ρ(n_L) = 1 − 0.04 log₂ n_L — **not a prediction**.

    A fit to this package's own Monte Carlo (ρ = 1.03, 0.92, 0.84 at n_L = 1, 4, 16, hidden
    width 128) of the coefficient in (H2) and (H3). :func:`relu_log_norm_var` does not use
    it for the variance (there ρ = 1 is derived, see (H2)); it scales only the measured
    per-layer shift of E log‖δ‖² in (H3), whose rows :func:`~deltastats.theory.predict`
    labels ``assumption="empirical"`` and :func:`~deltastats.compare` gives no verdict.
    """
    return float(np.clip(1.0 - 0.04 * np.log2(max(int(n_out), 1)), 0.0, 1.0))


def relu_log_norm_var(
    widths,
    *,
    input_log_var: float = 0.0,
    rho: float | None = None,
    sigma_w=None,
    input_log_mean: float | None = None,
    mean_shift: float | None = None,
) -> LogNormalFluctuation:
    """Log-normal approximation of ‖δ⁽ˡ⁾‖² for He-type ReLU networks (any σ_w, σ_b = 0, μ_w = 0).

    For ReLU without bias, the masks make every layer's norm ratio a scaled χ² with a
    Binomial(n, ½) number of degrees of freedom, independent of the direction of the signal
    (Hanin 2018; Hanin & Nica 2019). Per layer

        v(n) = Var log χ²_K = E ψ'(K/2) + Var ψ(K/2),  K ~ Bin(n, ½),  v(n) = 5/n + O(n⁻²)  (H1)

    so the backward product has Var log(‖δ⁽ˡ⁾‖²/‖δ⁽ᴸ⁾‖²) = Σ_{j=l}^{L−1} v(n_j) ≈ 5β_l — the
    literature's 5β. For the squared loss with zero targets the total variance is

        Var log‖δ⁽ˡ⁾‖² = V_L + (1 + 2ρ) Σ_{j=l}^{L−1} v(n_j),                              (H2)
        V_L = V_x + Σ_{j=1}^{L−1} v(n_j) + ψ'(n_L/2)

    with V_x = Var log‖x‖² (ψ'(n_0/2) for Gaussian inputs, 0 on the sphere) and ρ = 1 to
    leading order in 1/n, for every n_L. Derivation: ReLU without bias is positively
    homogeneous, so g = J z⁽ˡ⁾ with J = ∂g/∂z⁽ˡ⁾ (n_L × n_l) and δ⁽ˡ⁾ = Jᵀg. Write
    M = JJᵀ and g = M^{1/2}ξ·‖z⁽ˡ⁾‖/√n_l with ξ ~ N(0, I_{n_L}) independent of M and of
    ‖z⁽ˡ⁾‖ (the direction of z⁽ˡ⁾ is isotropic relative to J at leading order). Then

        ‖δ⁽ᴸ⁾‖² = ‖g‖² = (‖z⁽ˡ⁾‖²/n_l) ξᵀMξ,     ‖δ⁽ˡ⁾‖² = gᵀMg = (‖z⁽ˡ⁾‖²/n_l) ξᵀM²ξ.

    M is a product of independent factors (σ²/n_j)·Wishart(K_j) close to c·(I + A) with A
    small (O(√β)); with ξ̂ = ξ/‖ξ‖ and e = ξ̂ᵀAξ̂, to first order log ξᵀMξ = log c + log‖ξ‖² + e
    and log ξᵀM²ξ = 2 log c + log‖ξ‖² + 2e. The backward product is b = log c + e, with
    variance Σ_j v(n_j) (each Wishart factor's quadratic form in a direction independent of
    it is a scaled χ²_{K_j}: 4/n_j, and the mask count K_j ~ Bin(n_j, ½) adds 1/n_j), and
    log‖δ⁽ˡ⁾‖² = log‖δ⁽ᴸ⁾‖² + b with Cov(log‖δ⁽ᴸ⁾‖², b) = Var b: hence 1 + 2ρ = 3, a total
    slope of 15β. (Monte Carlo at hidden width 128 gives 15.6β, 13.6β, 11.0β at n_L = 1, 4,
    16: the second-order terms, of relative order n_L/n, are not derived.)

    The mean, (H3), adds the per-layer expectations of the forward and backward χ² factors:

        E log‖δ⁽ˡ⁾‖² = E log‖x‖² + Σ_{j=1}^{L−1} [log(σ_j²/n_{j−1}) + e(n_j)]
                      + log(σ_L²/n_{L−1}) + ψ(n_L/2) + log 2
                      + Σ_{j=l}^{L−1} [log(σ_{j+1}²/n_j) + e(n_j) + ρ_m v(n_j)]            (H3)

    with e(n) = E log χ²_K. The shift ρ_m v(n_j) per backward layer is **measured, not
    derived**: the backward factors are not fresh χ²'s (ĝ = g/‖g‖ leans towards the large
    singular directions of J), and the Monte Carlo shift (n = 64, L = 8, n_L = 4: +0.07 per
    layer) is modelled with the empirical ρ_m = :func:`hanin_rho` (n_L). ``log_mean`` is
    therefore an empirical fit, and :func:`~deltastats.theory.predict` labels its rows
    ``assumption="empirical"`` (no verdict).

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
        ρ in (H2); ``None`` uses the derived leading-order value ρ = 1.
    mean_shift : float or None
        ρ_m in (H3); ``None`` uses the empirical :func:`hanin_rho` (n_L).

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
    rho = 1.0 if rho is None else float(rho)
    rho_m = hanin_rho(w[-1]) if mean_shift is None else float(mean_shift)
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
        bfac = np.log(sw2[1:] / np.array(w[1:L], dtype=np.float64)) + e + rho_m * v[: L - 1]
        log_mean = np.array([top + bfac[l - 1 :].sum() - np.log(w[l]) for l in range(1, L + 1)])
    return LogNormalFluctuation(
        beta=beta, backward_var=back, log_var=V_L + (1 + 2 * rho) * back, log_mean=log_mean
    )


@dataclass(frozen=True)
class ForwardCorrections:
    """Forward moments of z⁽ˡ⁾ to first order in 1/n, pooled over the input law, l = 1 … L.

    Attributes
    ----------
    z_mean, z_var : ndarray, shape (L,)
        E z⁽ˡ⁾_j and Var z⁽ˡ⁾_j including the 1/n terms (mean field plus ``shift_*``).
    shift_mean, shift_var : ndarray, shape (L,)
        The 1/n parts: E_x[δM_l] and E_x[δK_l + V^{MM}_l] plus the change of Var_x(m_l).
    vertex : ndarray, shape (L,)
        E_x V_l = E_x Var(Ĝ_l | x), the variance of the conditional kernel (the one-input
        four-point vertex divided by n: Cov(z_i², z_k² | x) for i ≠ k at μ_w = 0).
    z_kurt : ndarray, shape (L,)
        Excess kurtosis of z⁽ˡ⁾_j pooled over networks, inputs and units, to first order in
        1/n: the Gaussian mixture over the kernel's fluctuation (3V/K² at μ_w = 0 for one
        input) and over the input law.
    z_kurt_mean_field : ndarray, shape (L,)
        The same at n = ∞: only the input-law mixture (0 for sphere inputs at μ_w = 0).

    ``z_kurt`` is first order in 1/n: it holds while the kernel's relative fluctuation
    3V/K² is small; where the accumulated 1/n terms are of order one (ReLU or gelu at depth
    ~ n/5, excess kurtosis ≈ 1) the neglected O(n⁻²) terms of (FW2) matter (for ReLU without
    bias E Ĝ² grows by exactly (1 + 5/n) per layer, against 1 + 5/n summed to first order).
    """

    z_mean: np.ndarray
    z_var: np.ndarray
    shift_mean: np.ndarray
    shift_var: np.ndarray
    vertex: np.ndarray
    z_kurt: np.ndarray
    z_kurt_mean_field: np.ndarray


def _pooled_kurt(w, M, G, dM=0.0, dG=0.0, C=None):
    """Pooled excess kurtosis of z over the input rule (weights w, arrays (K, L)) when
    z | θ̂ ~ N(M̂, Ĝ) and θ̂ = (M, G) + Δ with E Δ = (dM, dG), Cov Δ = C (to first order):

        E[(z − μ)⁴ | θ̂] = u⁴ + 6u²Ĝ + 3Ĝ²,  u = M̂ − μ,

    averaged with E u⁴ = u₀⁴ + 4u₀³δM + 6u₀²C_MM, E[u²Ĝ] = u₀²(G + δG) + 2u₀GδM + G C_MM
    + 2u₀C_MG, E Ĝ² = G² + 2GδG + C_GG (u₀ = M − μ), and the variance likewise.
    """
    if C is None:
        C = np.zeros(M.shape + (2, 2))
    cmm, cmg, cgg = C[..., 0, 0], C[..., 0, 1], C[..., 1, 1]
    mu = w @ (M + dM)
    u0 = M - mu
    e4 = u0**4 + 4 * u0**3 * dM + 6 * u0**2 * cmm
    e2g = u0**2 * (G + dG) + 2 * u0 * G * dM + G * cmm + 2 * u0 * cmg
    eg2 = G * G + 2 * G * dG + cgg
    m4 = w @ (e4 + 6 * e2g + 3 * eg2)
    m2 = w @ (u0**2 + 2 * u0 * dM + cmm + G + dG)
    with np.errstate(divide="ignore", invalid="ignore"):
        return m4 / (m2 * m2) - 3.0


def _hermite(t: np.ndarray) -> tuple:
    """Hermite polynomials He_1 … He_4 (probabilists') at t, for derivatives of Gaussian
    expectations: t, t² − 1, t³ − 3t, t⁴ − 6t² + 3 (products, not powers: this runs at every
    quadrature node)."""
    t2 = t * t
    return t, t2 - 1.0, t * (t2 - 3.0), t2 * (t2 - 6.0) + 3.0


def _layer_functionals(phi: Activation, M: np.ndarray, G: np.ndarray) -> np.ndarray:
    """E over z ~ N(M, G) of φ, φ², φ³, φ⁴, φ·He_k(ξ), φ²·He_k(ξ) (k = 1 … 4), ξ = (z − M)/√G.

    One error-controlled quadrature for all twelve (stacked on a leading axis). The Hermite
    moments are the derivatives of Gaussian expectations without any derivative of φ:
    ∂_M^a ∂_G^b E f(z) = E[f(z) He_{a+2b}(ξ)] / (2^b G^{(a+2b)/2}) (the heat equation
    ∂_G E f = ½ ∂_M² E f and E f^{(k)} = E[f He_k(ξ)]/G^{k/2}, Gaussian integration by parts).

    Returns
    -------
    ndarray, shape (12, K)
    """
    if M.size > NODE_CHUNK:  # bounded memory for big rules
        return np.concatenate(
            [
                _layer_functionals(phi, M[i : i + NODE_CHUNK], G[i : i + NODE_CHUNK])
                for i in range(0, M.size, NODE_CHUNK)
            ],
            axis=1,
        )
    s = np.sqrt(G)[:, None]
    m = M[:, None]

    def f(z):
        # the twelve integrands share the Gaussian: φ is evaluated once per node
        p = phi.phi(z)
        xi = (z - m) / s
        p2 = p * p
        out = np.empty((12,) + z.shape)
        out[0], out[1], out[2], out[3] = p, p2, p2 * p, p2 * p2
        for k, h in enumerate(_hermite(xi), start=1):
            out[3 + k] = p * h
            out[7 + k] = p2 * h
        return out

    scale = float(np.max(np.maximum(np.abs(M), np.sqrt(G)))) if M.size else 1.0
    atol = 1e-10 * max(1.0, scale) ** 4  # scale ≤ √_G_MAX: finite
    # the 1/n terms need far less precision than the mean-field part: 1e−8 relative
    return expect(f, M, G, kinks=phi.kinks, degree=32, rtol=1e-8, atol=atol)


#: Largest kernel for which the 1/n terms are computed (they are carried in plain units, and
#: fourth powers of √G must stay finite); beyond it the finite-width rows are left out.
_G_MAX = 1e60


def _derivatives(g, h1, h2, h3, h4):
    """Gradient (2, K) and Hessian (2, 2, K) in (M, G) of E f from its Hermite moments h_k."""
    sq = np.sqrt(g)
    d_m, d_g = h1 / sq, h2 / (2 * g)
    d_mm, d_mg, d_gg = h2 / g, h3 / (2 * g * sq), h4 / (4 * g * g)
    return np.array([d_m, d_g]), np.array([[d_mm, d_mg], [d_mg, d_gg]])


def _corrections_at_nodes(net: MLP, phi: Activation, m1: np.ndarray, v1: np.ndarray):
    """Per-input (M̄, Ḡ) of mean field and the 1/n mean shift δθ and covariance C, (K, L)."""
    a, logv = _forward_nodes(net, phi, m1, v1)
    with np.errstate(over="ignore", invalid="ignore"):
        G = np.exp(logv)
        M = np.where(a == 0, 0.0, a * np.sqrt(G))
    L, K = net.depth, m1.size
    sw2 = np.array(net.layer_sigma_w) ** 2
    mw = np.array(net.layer_mu_w)
    dM, dG = np.zeros((K, L)), np.zeros((K, L))
    C = np.zeros((K, L, 2, 2))  # Cov of (M̂_l, Ĝ_l) given x
    for l in range(1, L):
        if not (np.all(np.isfinite(G[:, l - 1])) and np.max(G[:, l - 1]) < _G_MAX):
            # the 1/n terms are carried in plain units: past overflow they are not defined
            dM[:, l:], dG[:, l:], C[:, l:] = np.nan, np.nan, np.nan
            break
        E = _layer_functionals(phi, M[:, l - 1], G[:, l - 1])
        e1, e2, e3, e4 = E[0], E[1], E[2], E[3]
        g = G[:, l - 1]
        j1, H1 = _derivatives(g, *E[4:8])  # of f1 = E φ
        j2, H2 = _derivatives(g, *E[8:12])  # of f2 = E φ²
        mu, s2, n = mw[l], sw2[l], net.widths[l]
        # F(θ) = (μ f1 + μ_b, σ² f2 + σ_b²): Jacobian J (K, 2, 2), Hessians μH1, σ²H2.
        J = np.stack([mu * j1.T, s2 * j2.T], axis=1)
        Cl = C[:, l - 1]
        # δθ_{l+1} = J δθ_l + ½ (μ tr(H1 C_l), σ² tr(H2 C_l))
        d = np.stack([dM[:, l - 1], dG[:, l - 1]], axis=1)
        hess = 0.5 * np.stack(
            [
                mu * np.einsum("abk,kab->k", H1, Cl),
                s2 * np.einsum("abk,kab->k", H2, Cl),
            ],
            axis=1,
        )
        dn = np.einsum("kab,kb->ka", J, d) + hess
        dM[:, l], dG[:, l] = dn[:, 0], dn[:, 1]
        # C_{l+1} = J C_l Jᵀ + Σ/n_l, Σ the covariance of (μφ, σ²φ²) for one unit
        var1, var2, cov = e2 - e1 * e1, e4 - e2 * e2, e3 - e1 * e2
        Sig = np.empty((K, 2, 2))
        Sig[:, 0, 0], Sig[:, 1, 1] = mu * mu * var1, s2 * s2 * var2
        Sig[:, 0, 1] = Sig[:, 1, 0] = mu * s2 * cov
        C[:, l] = np.einsum("kab,kbc,kdc->kad", J, Cl, J) + Sig / n
    return M, G, dM, dG, C


def forward_corrections(
    net: MLP,
    inputs: InputLaw | None = None,
    *,
    degree: int | tuple[int, int] = (4, 5),
    forward: ForwardMoments | None = None,
) -> ForwardCorrections:
    """Mean and variance of z⁽ˡ⁾ to first order in 1/n: the kernel's fluctuation and shift.

    Derivation (one input, Gaussian weights). Given layer l, the pre-activations of layer
    l + 1 are exactly i.i.d. Gaussian, z⁽ˡ⁺¹⁾_i | h⁽ˡ⁾ ~ N(M̂_{l+1}, Ĝ_{l+1}) with the
    empirical averages over the n = n_l units of layer l

        M̂_{l+1} = μ_w (1/n) Σ_j φ(z⁽ˡ⁾_j) + μ_b,    Ĝ_{l+1} = σ_w² (1/n) Σ_j φ(z⁽ˡ⁾_j)² + σ_b²,

    and given θ̂_l = (M̂_l, Ĝ_l) the z⁽ˡ⁾_j are i.i.d. N(M̂_l, Ĝ_l). So θ̂ is a Markov chain:
    E[θ̂_{l+1} | θ̂_l] = F(θ̂_l) with F(M, G) = (μ_w f₁ + μ_b, σ_w² f₂ + σ_b²),
    f_k(M, G) = E φ(M + √G ξ)^k (f₂ is the g(K) of Roberts, Yaida & Hanin), and
    Cov[θ̂_{l+1} | θ̂_l] = Σ(θ̂_l)/n_l with

        Σ = [[μ_w² Var φ, μ_wσ_w² Cov(φ, φ²)], [μ_wσ_w² Cov(φ, φ²), σ_w⁴ Var φ²]].

    At n = ∞, θ̂_l = θ̄_l, the mean-field (m_l, v_l). Write θ̂_l = θ̄_l + Δ_l with E Δ_l = δθ_l
    and Cov Δ_l = C_l, both O(1/n), and expand F to second order (E[Δ_aΔ_b] = C_ab + O(n⁻²)):

        δθ_{l+1} = J_l δθ_l + ½ (μ_w tr(∇²f₁ C_l), σ_w² tr(∇²f₂ C_l)),                  (FW1)
        C_{l+1}  = J_l C_l J_lᵀ + Σ(θ̄_l)/n_l,                                           (FW2)

    J_l the Jacobian of F at θ̄_l, and δθ_1 = 0, C_1 = 0 (z⁽¹⁾ | x is exactly Gaussian).
    With μ_w = μ_b = 0 only the G-components are alive and these are the book's one-input
    recursions, V_{l+1} = σ_w⁴(⟨φ⁴⟩ − ⟨φ²⟩²)/n_l + (σ_w² g′)² V_l and
    δK_{l+1} = σ_w² g′ δK_l + ½ σ_w² g″ V_l, with V = C_GG, δK = δG and g′ = ∂_G f₂,
    g″ = ∂²_G f₂. The derivatives of the Gaussian expectations come from Hermite moments of
    φ (no derivative of φ is needed, so kinks are fine). Given x, z⁽ˡ⁾_j is the mixture
    N(M̂_l, Ĝ_l) over θ̂_l, so

        E[z | x] = M̄_l + δM_l,    E[z² | x] = Ḡ_l + δG_l + (M̄_l + δM_l)² + C^{MM}_l,

    and pooled over the input law Var z = E_x[E(z² | x)] − (E_x E(z | x))² (the O(n⁻²) terms
    dropped). ReLU and linear networks without bias and with μ_w = 0 have f₂ linear in G,
    so δK = 0: their mean field Var z is exact at any width.

    The 1/n terms are averaged over a coarse rule of the input law (``degree``): they are
    small and smooth, and the infinite-width part comes from :func:`forward_moments`.

    Parameters
    ----------
    net : MLP
    inputs : InputLaw or None
        Default ``inputs.gaussian(1.0)``.
    degree : int or (int, int)
        Input-law rule for the 1/n terms (a 1/n term with a relative quadrature error of
        10⁻³ is an absolute error of 10⁻³/n).
    forward : ForwardMoments or None
        Reuse a :func:`forward_moments` result of the same net and inputs.

    Returns
    -------
    ForwardCorrections
    """
    phi, _ = _check_net(net)
    inputs = _gaussian_inputs(1.0) if inputs is None else inputs
    _input_moments(net, inputs)
    rule = input_rule(net, inputs, degree)
    w = rule.weights
    m1, v1 = first_layer(net, rule)
    M, G, dM, dG, C = _corrections_at_nodes(net, phi, m1, v1)
    with np.errstate(over="ignore", invalid="ignore"):
        mean0 = w @ M
        var0 = w @ (G + M * M) - mean0**2
        mean1 = w @ (M + dM)
        var1 = w @ (G + dG + (M + dM) ** 2 + C[:, :, 0, 0]) - mean1**2
    fw = forward_moments(net, inputs) if forward is None else forward
    shift_mean, shift_var = mean1 - mean0, var1 - var0
    # Kurtosis: the infinite-width mixture on the fine rule of ``fw``, the 1/n change on the
    # coarse rule of the corrections.
    na, nlv, wf, _ = fw.nodes()
    with np.errstate(over="ignore", invalid="ignore"):
        Gf = np.exp(nlv)
        kurt_mf = _pooled_kurt(wf, na * np.sqrt(Gf), Gf)
        shift_kurt = _pooled_kurt(w, M, G, dM, dG, C) - _pooled_kurt(w, M, G)
    return ForwardCorrections(
        z_mean=fw.mean + shift_mean,
        z_var=fw.var + shift_var,
        shift_mean=shift_mean,
        shift_var=shift_var,
        vertex=w @ C[:, :, 1, 1],
        z_kurt=kurt_mf + shift_kurt,
        z_kurt_mean_field=kurt_mf,
    )


def relu_delta_sq(widths, sigma_w, input_norm_sq: float) -> np.ndarray:
    """Exact E[δ⁽ˡ⁾_j²] at any width for ReLU without bias, μ_w = 0, zero targets, linear output.

    Derivation. g(z⁽ˡ⁾) is positively homogeneous of degree 1 (no biases), so g = J z with
    J = ∂g/∂z⁽ˡ⁾ and δ⁽ˡ⁾ = Jᵀg. One layer down, J_l = J_{l+1} W D_l with D_l the ReLU mask of
    layer l and W = W⁽ˡ⁺¹⁾. Split W = W P⊥ + (Wĥ)ĥᵀ with ĥ = h⁽ˡ⁾/‖h⁽ˡ⁾‖ and P⊥ = I − ĥĥᵀ.
    For Gaussian W the parts W P⊥ and Wĥ are independent, and everything above layer l sees W
    only through z⁽ˡ⁺¹⁾ = ‖h‖Wĥ; homogeneity gives J_{l+1}Wĥ = g/‖h‖. Since ĥ lies in the
    active coordinates, with P_A the projector on the active coordinates orthogonal to ĥ
    (rank K − 1, K the number of active units),

        δ⁽ˡ⁾ = P_A (W P⊥)ᵀ δ⁽ˡ⁺¹⁾ + ĥ ‖g‖²/‖h‖,
        ‖δ⁽ˡ⁾‖² = (σ²/n_l) χ²_{K−1} ‖δ⁽ˡ⁺¹⁾‖² + ‖g‖⁴/‖h‖²                              (R1)

    with the χ² independent of the rest. The second term is what gradient independence
    drops: it is the forward–backward correlation that makes E‖δ‖² grow faster than mean field.
    By homogeneity ‖δ⁽ˡ⁾‖² = ‖h⁽ˡ⁻¹⁾‖² (σ_l²/n_{l−1}) A_l(u) with u ~ N(0, I_{n_l}) independent
    of ‖h⁽ˡ⁻¹⁾‖; write a_l = E A_l and b_l = E‖G_l(u)‖⁴ for the sub-network G_l from layer l.
    With E‖h‖² = n/2, E[(K − 1)‖h‖²] = n(n − 1)/4 and E‖h‖⁴ = n(n + 5)/4 for h = relu(u),
    (R1) gives the closed recursion (c_l = (σ_{l+1}²/n_l)²)

        a_l = c_l (n_l/4) [(n_l − 1) a_{l+1} + 2 b_{l+1}],   b_l = c_l (n_l(n_l + 5)/4) b_{l+1},
        a_L = n_L,  b_L = n_L(n_L + 2),                                                    (R2)

    and E‖δ⁽ˡ⁾‖² = E‖h⁽ˡ⁻¹⁾‖² (σ_l²/n_{l−1}) a_l with E‖h⁽ʲ⁾‖² = (n_j/2)(σ_j²/n_{j−1}) E‖h⁽ʲ⁻¹⁾‖²
    and E‖h⁽⁰⁾‖² = E‖x‖² (any input law). Mean field (B3) is the n → ∞ limit; at finite width
    the ratio grows per layer by about 1 + 3/n_l, the e^{3β} of the Monte Carlo.

    Parameters
    ----------
    widths : sequence of int
        (n_0, …, n_L).
    sigma_w : float or sequence of float
        σ_w per weight layer.
    input_norm_sq : float
        E‖x‖².

    Returns
    -------
    ndarray, shape (L,)
        E[δ⁽ˡ⁾_j²] = E‖δ⁽ˡ⁾‖²/n_l, l = 1 … L (``inf`` only on overflow).
    """
    w, sw2, log_a = _relu_a(widths, sigma_w)
    L = len(w) - 1
    log_h = np.empty(L)  # log E‖h⁽ˡ⁻¹⁾‖², l = 1 … L
    log_h[0] = np.log(input_norm_sq) if input_norm_sq > 0 else -np.inf
    for l in range(2, L + 1):
        log_h[l - 1] = log_h[l - 2] + np.log(w[l - 1] / 2.0 * sw2[l - 2] / w[l - 2])
    out = log_h + np.log(sw2 / np.array(w[:-1], float)) + log_a[1:] - np.log(w[1:])
    with np.errstate(over="ignore"):
        return np.exp(out)


def _relu_a(widths, sigma_w):
    """(widths, σ_w², log a_l for l = 0 … L) of the recursion (R2) (a_0 unused)."""
    w = tuple(int(x) for x in widths)
    L = len(w) - 1
    sw2 = np.broadcast_to(np.asarray(sigma_w, dtype=np.float64) ** 2, (L,)).copy()
    log_a, log_b = np.zeros(L + 1), np.zeros(L + 1)
    log_a[L], log_b[L] = np.log(w[L]), np.log(w[L] * (w[L] + 2.0))
    for l in range(L - 1, 0, -1):
        n, lc = w[l], 2 * np.log(sw2[l] / w[l])
        ratio = np.exp(log_b[l + 1] - log_a[l + 1])
        log_a[l] = lc + np.log(n / 4.0) + log_a[l + 1] + np.log((n - 1) + 2 * ratio)
        log_b[l] = lc + np.log(n * (n + 5) / 4.0) + log_b[l + 1]
    return w, sw2, log_a


def relu_grad_w_sq(widths, sigma_w, input_norm_4th: float) -> np.ndarray:
    """Exact E‖∂L/∂W⁽ˡ⁾‖² of one input at any width, in the setting of :func:`relu_delta_sq`.

    ∂L/∂W⁽ˡ⁾ = δ⁽ˡ⁾h⁽ˡ⁻¹⁾ᵀ, so ‖∂L/∂W⁽ˡ⁾‖² = ‖δ⁽ˡ⁾‖²‖h⁽ˡ⁻¹⁾‖² = ‖h⁽ˡ⁻¹⁾‖⁴ (σ_l²/n_{l−1}) A_l(u)
    with u independent of ‖h⁽ˡ⁻¹⁾‖ (homogeneity, as in (R1)): E = E‖h⁽ˡ⁻¹⁾‖⁴ (σ_l²/n_{l−1}) a_l,
    and E‖h⁽ʲ⁾‖⁴ = E‖h⁽ʲ⁻¹⁾‖⁴ (σ_j²/n_{j−1})² n_j(n_j + 5)/4 from E‖x‖⁴ (E‖relu(u)‖⁴ for
    u ~ N(0, I_n) is n(n + 5)/4). This is the per-sample gradient (B = 1, λ = 0).

    Parameters
    ----------
    widths : sequence of int
    sigma_w : float or sequence of float
    input_norm_4th : float
        E‖x‖⁴ (n₀²E ρ² over the input law).

    Returns
    -------
    ndarray, shape (L,)
    """
    w, sw2, log_a = _relu_a(widths, sigma_w)
    L = len(w) - 1
    log_h4 = np.empty(L)
    log_h4[0] = np.log(input_norm_4th) if input_norm_4th > 0 else -np.inf
    for l in range(2, L + 1):
        n = w[l - 1]
        log_h4[l - 1] = log_h4[l - 2] + 2 * np.log(sw2[l - 2] / w[l - 2]) + np.log(n * (n + 5) / 4)
    out = log_h4 + np.log(sw2 / np.array(w[:-1], float)) + log_a[1:]
    with np.errstate(over="ignore"):
        return np.exp(out)
