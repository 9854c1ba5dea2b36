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
from ..model.philox import times_matrix

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


def backward_scales(growth: np.ndarray) -> tuple[float, ...]:
    """The scales 1/√g_k of :func:`chain_growth`, one per weight layer: what
    ``MLP.sample(..., backward_scales=…)`` needs to compute this control's backward products
    while it draws the weights (``Params.backward_rows``)."""
    return tuple(float(v) for v in 1.0 / np.sqrt(growth))


@numba.njit(**_JIT)
def _backward_rows(weights, scales, rows):
    # rows[k][m] = scales[k] · rows[k + 1][m] W⁽ᵏ⁺¹⁾[m] for k = L−1 … 0, rows[L] the identity:
    # every row e_r of A_L = I carried down by a ← a W⁽ᵏ⁾/√g_k, so ‖a‖² stays O(1) at any
    # depth (the same products, in the same order, as the draw's fused ones).
    L = len(weights)
    for m in range(weights[0].shape[0]):
        for k in range(L - 1, -1, -1):
            times_matrix(weights[k][m], rows[k + 1][m], rows[k][m], scales[k])


@numba.njit(**_JIT)
def _norms(rows, n_out, out):
    # out[m, k] = Σ_r ‖rows[k][m, r]‖² / n_out = ‖A_k‖²_F / E‖A_k‖²_F; fixed summation order.
    for k in range(len(rows)):
        R = rows[k]
        for m in range(R.shape[0]):
            total = 0.0
            for r in range(R.shape[1]):
                s = 0.0
                for j in range(R.shape[2]):
                    s += R[m, r, j] * R[m, r, j]
                total += s / n_out
            out[m, k] = total


def control(net: MLP, weights, growth: np.ndarray, rows=None) -> np.ndarray:
    """c_m of (CV) for every layer: ``(M, L)``, column l − 1 for layer l.

    ``weights`` are the ``(M, n_l, n_{l−1})`` W⁽ˡ⁾ of M networks, ``growth`` is
    :func:`chain_growth`. ``rows``: the backward products ``Params.backward_rows`` drawn with
    the weights at :func:`backward_scales` (then the weights are not read again); otherwise
    they are computed here, n_L vector–matrix products per layer and network (small next to
    the engine's B for a narrow readout, but a second pass over all the weights). Either way
    the same bits."""
    ws = tuple(np.ascontiguousarray(w) for w in weights)
    if len({w.dtype for w in ws}) != 1:
        ws = tuple(w.astype(np.float64) for w in ws)
    M, L, n_out = ws[0].shape[0], len(ws), ws[-1].shape[1]
    if rows is None:
        top = np.zeros((M, n_out, n_out))
        top[:, np.arange(n_out), np.arange(n_out)] = 1.0
        rows = tuple(np.empty((M, n_out, w.shape[2])) for w in ws) + (top,)
        _backward_rows(ws, np.asarray(backward_scales(growth)), rows)
        rows = rows[:-1]
    norms = np.empty((M, L))
    _norms(tuple(rows), float(n_out), norms)
    # norms[:, k] is ‖A_k‖²/E for A_k = W⁽ᴸ⁾⋯W⁽ᵏ⁺¹⁾ (k = 0 … L−1); A_L = I is exact (term 0).
    rel = np.concatenate([norms[:, 1:], np.ones((M, 1))], axis=1) - 1.0  # layer l ← A_l
    return rel + (norms[:, :1] - 1.0)


def write_features(out: np.ndarray, y: np.ndarray, c: np.ndarray) -> None:
    """out ``(M, 1, N_CV)`` = (y, c, y·c, c²) per network."""
    out[:, 0, CV_Y] = y
    out[:, 0, CV_C] = c
    out[:, 0, CV_YC] = y * c
    out[:, 0, CV_CC] = c * c
