"""Compiled kernel (numba) for one layer's unit moments (BW3) of the backward 1/n recursion.

At each of P kernels θ = (M, G), :func:`~deltastats.theory.backward_width._unit_moments`
integrates the 11 per-unit quantities X(z) = f(z)·E[z̃^p | z] against a quadrature rule in z
of Q nodes (weights w) and needs their mean and covariance:

    μ_i = Σ_q w_q X_i(z_q),
    Σ_ij = Σ_q w_q (X_i(z_q) − μ_i)(X_j(z_q) − μ_j) + Σ_q w_q f_i f_j Cov(z̃^{p_i}, z̃^{p_j} | z_q)

(the law of total covariance, both parts free of cancellation), with z̃ | z ~ N(m, v):
E[z̃ | z] = m, E[z̃² | z] = m² + v, Cov(z̃, z̃) = v, Cov(z̃, z̃²) = 2mv, Cov(z̃², z̃²) =
4m²v + 2v². In numpy this is a dozen passes over (P, 11, Q) temporaries; here each
kernel's 11 rows of Q values are built once and the first part of Σ is one small BLAS product
(:func:`unit_moments_kernel`). Fixed-order arithmetic without ``fastmath``: the same bits on
every call, in any thread. :func:`clenshaw_kernel` evaluates the Chebyshev interpolants of the
recursion. The compiled code is cached on disk (numba ``cache=True``).
"""

from __future__ import annotations

import numba
import numpy as np

from .._jit import JIT as _JIT

__all__ = ["clenshaw_kernel", "unit_moments_kernel"]


@numba.njit(**_JIT)
def unit_moments_kernel(h, d, m, w, v, want_cov, mean, cov):
    """Fill ``mean`` (P, 11) and, if ``want_cov``, ``cov`` (P, 11, 11) from φ(z) ``h``,
    φ'(z) ``d``, the conditional mean of z̃ ``m`` and the quadrature weights ``w`` (all
    (P, Q)) and the conditional variance ``v`` (P,). The quantities are, in order, u, a, c,
    e, t, p, q, d, k, v, g of (BW3): φ², φ'², φ'²φ², z̃φ'φ, z̃²φ'², φ'φ, φ, φ', φ'²φ, z̃φ',
    z̃φ'² (powers of z̃ replaced by their conditional moments)."""
    P, Q = h.shape
    X = np.empty((11, Q))
    Y = np.empty((11, Q))
    for p in range(P):
        vp = v[p]
        for q in range(Q):
            hq, dq, mq = h[p, q], d[p, q], m[p, q]
            h2, d2, dh = hq * hq, dq * dq, dq * hq
            X[0, q] = h2
            X[1, q] = d2
            X[2, q] = d2 * h2
            X[3, q] = dh * mq
            X[4, q] = d2 * (mq * mq + vp)
            X[5, q] = dh
            X[6, q] = hq
            X[7, q] = dq
            X[8, q] = d2 * hq
            X[9, q] = dq * mq
            X[10, q] = d2 * mq
        mu = X @ w[p]  # BLAS: blocked sums, closer to pairwise than one running sum
        for i in range(11):
            mean[p, i] = mu[i]
        if not want_cov:
            continue
        # the first part: the weighted centred second moments, one small matrix product
        for i in range(11):
            mi = mean[p, i]
            for q in range(Q):
                X[i, q] -= mi
                Y[i, q] = X[i, q] * w[p, q]
        c = Y @ X.T
        # the second part: f_i f_j Cov(z̃^{p_i}, z̃^{p_j} | z) for the quantities with a power
        # of z̃, e (f = φ'φ, p = 1), t (φ'², 2), v (φ', 1) and g (φ'², 1)
        for q in range(Q):
            dq, mq, wq = d[p, q], m[p, q], w[p, q]
            fe, fv, f2 = dq * h[p, q], dq, dq * dq
            c11 = wq * vp
            c12 = wq * 2.0 * mq * vp
            c22 = wq * vp * (4.0 * mq * mq + 2.0 * vp)
            c[3, 3] += c11 * fe * fe
            c[3, 9] += c11 * fe * fv
            c[3, 10] += c11 * fe * f2
            c[9, 9] += c11 * fv * fv
            c[9, 10] += c11 * fv * f2
            c[10, 10] += c11 * f2 * f2
            c[3, 4] += c12 * fe * f2
            c[4, 9] += c12 * f2 * fv
            c[4, 10] += c12 * f2 * f2
            c[4, 4] += c22 * f2 * f2
        # exactly symmetric (the product's two triangles round differently)
        for i in range(11):
            for j in range(i, 11):
                cov[p, i, j] = c[i, j]
                cov[p, j, i] = c[i, j]


@numba.njit(**_JIT)
def clenshaw_kernel(c, x, out):
    """Σ_n c[k, s, n] T_n(x[s]) into ``out`` (K, S) by Clenshaw's recurrence: the operations
    of numpy's ``chebval`` in its order (so the same bits), in one pass instead of 3N."""
    K, S, N = c.shape
    for k in range(K):
        for s in range(S):
            xs = x[s]
            if N == 1:
                out[k, s] = c[k, s, 0]
                continue
            if N == 2:
                out[k, s] = c[k, s, 0] + c[k, s, 1] * xs
                continue
            x2 = 2 * xs
            c0 = c[k, s, N - 2]
            c1 = c[k, s, N - 1]
            for i in range(3, N + 1):
                tmp = c0
                c0 = c[k, s, N - i] - c1
                c1 = tmp + c1 * x2
            out[k, s] = c0 + c1 * xs
