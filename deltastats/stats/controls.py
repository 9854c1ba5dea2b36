"""A control variate with an exactly known mean for the pooled E[δ⁽ˡ⁾²] (``delta_sq_cv``).

Per network m, y_m = (1/B) Σ_b ‖δ_b⁽ˡ⁾‖²/n_l has mean E[δ⁽ˡ⁾²] (the ``dsq`` feature). Most of
its spread between networks comes from the weights alone, through the backward products

    A_l = W⁽ᴸ⁾ W⁽ᴸ⁻¹⁾ ⋯ W⁽ˡ⁺¹⁾   (n_L × n_l, A_L = I),

since in a linear net δ⁽ˡ⁾ = A_lᵀ δ⁽ᴸ⁾ and δ⁽ᴸ⁾ = A_0 x + … : y_m ∝ ‖A_l‖²_F · ‖A_0‖²_F to first
order (exactly so for n_L = 1 and no biases). The control is the linearisation of that product
around its mean,

    c_m = (‖A_l‖²_F / E‖A_l‖²_F − 1) + (‖A_0‖²_F / E‖A_0‖²_F − 1),      E[c_m] = 0 exactly,  (CV)

(for l = L the first term is 0). Its mean is exact because E‖A_l‖²_F follows from the first two
moments of independent entries alone: a row a of A_k maps to a' = W⁽ᵏ⁾ᵀa with, for
W_ij = μ/n_{k−1} + (σ/√n_{k−1})Z_ij independent of a,

    E[‖a'‖² | a] = σ²‖a‖² + μ²(1ᵀa)²/n_{k−1},   E[(1ᵀa')² | a] = σ²‖a‖² + μ²(1ᵀa)²,          (R)

a linear recursion in (N, S) = (E‖A‖²_F, E Σ_rows (1ᵀa)²) from N = S = n_L at l = L. (R) needs
independent entries with those two moments: every init but ``"orthogonal"`` (Gaussian, its
presets, uniform); orthogonal weights get no control (the statistic is absent). It does not
depend on φ, the inputs or the targets, which only change how well c_m predicts y_m.

The statistic is the regression (control-variate) estimate with β̂ from the same networks,

    θ̂ = ȳ − β̂ c̄,   β̂ = (mean(yc) − ȳc̄)/(mean(c²) − c̄²),

a smooth function of the network means of F_m = (y, c, yc, c²), so the accumulators merge it
like every other statistic (bit for bit across chunks and jobs) and the delta method gives
SE² → Var(y − βc)/M = Var(y)(1 − ρ²)/M: the efficiency gain over ``delta_sq`` is 1/(1 − ρ²).
Its bias is O(1/M) (from β̂), below the SE at any M where the CLT interval is trusted.
"""

from __future__ import annotations

import numba
import numpy as np

from .._jit import JIT as _JIT
from ..model.networks import MLP

#: Columns of the ``cv`` feature array: y (the shifted ``dsq`` mean), c (CV), y·c and c².
CV_Y, CV_C, CV_YC, CV_CC = 0, 1, 2, 3
#: Number of control-variate features.
N_CV = 4


def enabled(net: MLP, batch: int) -> bool:
    """Whether :func:`deltastats.estimate` / :func:`~deltastats.stream` report ``delta_sq_cv``:
    the control's mean is known (:func:`chain_growth`) and it is cheap. It propagates the n_L
    rows of the backward products, about n_L/(2B) of the engine's work, so it is kept for
    n_L ≤ max(1, B/4)."""
    return chain_growth(net) is not None and net.widths[-1] <= max(1, batch // 4)


def chain_growth(net: MLP) -> np.ndarray | None:
    """Per weight layer k = 1 … L the exact factor g_k = E‖A_{k−1}‖²_F / E‖A_k‖²_F of (R), or
    ``None`` when the control has no known mean (orthogonal weights, or a layer with no weight
    variance nor mean, where the factor is 0)."""
    if net.init == "orthogonal":
        return None
    sig2 = np.square(net.layer_sigma_w)
    mu2 = np.square(net.layer_mu_w)
    g = np.empty(net.depth)
    t = 1.0  # S/N, the share of the row sums: 1 at A_L = I
    for k in range(net.depth, 0, -1):  # (R) normalised by N at every step (no overflow)
        n_in = net.widths[k - 1]
        g[k - 1] = sig2[k - 1] + mu2[k - 1] * t / n_in
        if not g[k - 1] > 0:
            return None
        t = (sig2[k - 1] + mu2[k - 1] * t) / g[k - 1]
    return g


@numba.njit(**_JIT)
def _chain_norms(weights, inv_sqrt_g, out):
    # out[m, k] = ‖A_k‖²_F / E‖A_k‖²_F for k = 0 … L−1: every row e_r of A_L = I is carried
    # down by a ← W⁽ᵏ⁾ᵀa/√g_k, so ‖a‖² stays O(1) at any depth; fixed summation order.
    L = len(weights)
    M, n_out = weights[L - 1].shape[0], weights[L - 1].shape[1]
    width = 0
    for k in range(L):
        width = max(width, weights[k].shape[2])
    a = np.empty(max(width, n_out))
    b = np.empty(max(width, n_out))
    for m in range(M):
        out[m, :] = 0.0
        for r in range(n_out):
            a[:n_out] = 0.0
            a[r] = 1.0
            for k in range(L - 1, -1, -1):
                W = weights[k]
                n_o, n_i = W.shape[1], W.shape[2]
                b[:n_i] = 0.0
                for i in range(n_o):
                    ai = a[i] * inv_sqrt_g[k]
                    for j in range(n_i):
                        b[j] += ai * np.float64(W[m, i, j])
                s = 0.0
                for j in range(n_i):
                    s += b[j] * b[j]
                    a[j] = b[j]
                out[m, k] += s / n_out


def control(net: MLP, weights, growth: np.ndarray) -> np.ndarray:
    """c_m of (CV) for every layer: ``(M, L)``, column l − 1 for layer l.

    ``weights`` are the ``(M, n_l, n_{l−1})`` W⁽ˡ⁾ of M networks, ``growth`` is
    :func:`chain_growth`. Costs n_L vector–matrix products per layer and network (small next
    to the engine's B for a narrow readout)."""
    ws = tuple(np.ascontiguousarray(w) for w in weights)
    if len({w.dtype for w in ws}) != 1:
        ws = tuple(w.astype(np.float64) for w in ws)
    M, L = ws[0].shape[0], len(ws)
    norms = np.empty((M, L))
    _chain_norms(ws, 1.0 / np.sqrt(growth), norms)
    # norms[:, k] is ‖A_k‖²/E for A_k = W⁽ᴸ⁾⋯W⁽ᵏ⁺¹⁾ (k = 0 … L−1); A_L = I is exact (term 0).
    rel = np.concatenate([norms[:, 1:], np.ones((M, 1))], axis=1) - 1.0  # layer l ← A_l
    return rel + (norms[:, :1] - 1.0)


def write_features(out: np.ndarray, y: np.ndarray, c: np.ndarray) -> None:
    """out ``(M, 1, N_CV)`` = (y, c, y·c, c²) per network."""
    out[:, 0, CV_Y] = y
    out[:, 0, CV_C] = c
    out[:, 0, CV_YC] = y * c
    out[:, 0, CV_CC] = c * c
