"""Exact finite-width results for deep linear networks (φ = φ_out = identity, Gaussian
weights), by Wick's theorem / Wishart moments: valid at every width, no mean-field limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from .. import checks
from ..model.inputs import InputLaw
from ..model.inputs import gaussian as _gaussian_inputs
from ..model.losses import Loss
from ..model.networks import MLP
from ..model.targets import TargetLaw
from ._common import TheoryNotCovered
from .gaussian import _loss_and_targets
from .meanfield import _check_net


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
    if phi.closed_form != "linear" or phi_out.closed_form != "linear":
        raise TheoryNotCovered(
            "linear_exact needs activation='linear' and output_activation='linear', got "
            f"{phi.name!r} and {phi_out.name!r}; use predict() for nonlinear networks"
        )
    if net.init == "orthogonal":
        raise TheoryNotCovered("linear_exact needs i.i.d. weights; use init='gaussian'")
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

    — the closed form of the tied linear recursion δ⁽ˡ⁾ = Wᵀδ⁽ˡ⁺¹⁾ (for symmetric W, V is orthogonal
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
    checks.integer("n_layers", n_layers, 0)
    lam, V = np.linalg.eig(W)
    if np.linalg.cond(V) > 1e12:
        raise ValueError("W is not (numerically) diagonalizable; use repeated products instead")
    Vinv_T = np.linalg.inv(V).T
    coef = d @ V  # Vᵀδ as rows: (…, n)
    k = np.arange(n_layers + 1).reshape((-1,) + (1,) * d.ndim)
    return np.real((coef * lam**k) @ Vinv_T.T)
