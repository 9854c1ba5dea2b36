"""Compiled element-wise kernels (numba) for the engine's tanh layers.

numpy's float64 ``tanh`` calls the C library once per element unless the CPU has AVX-512
(measured 15–19 ns per element on an AVX2 machine, more than the matmuls of a width-128
layer), and every separate ufunc pass (bias, φ', overflow check, product) streams the
layer through memory again. The kernels here do a layer's element-wise work in one pass, with
a tanh the compiler can vectorize:

    tanh x = sign(x) · u / (u + 2),   u = e^{2|x|} − 1                                   (T1)
    e^y − 1 = 2^k (e^r − 1) + (2^k − 1),   k = round(y / ln 2),   r = y − k ln 2          (T2)

with |r| ≤ ln2 / 2, ``ln 2`` split in two parts so that ``k · LN2_HI`` is exact (Cody–Waite),
e^r − 1 by its Taylor polynomial (degree 13 in float64, 7 in float32: the truncation error is
below one unit in the last place), 2^k from integer shifts, and tanh x = ±1 once |x| is large
enough that the result rounds to 1. For small |x|, u ≈ 2|x| without cancellation, so (T1) keeps
full relative accuracy down to the subnormals. Measured error: at most 3 units in the last place
against a 40-digit reference (the C library's tanh: at most 2), in float64 and in float32.

Only IEEE additions, multiplications and one division per element, in a fixed order, with no
``fastmath``: the result is bit-for-bit the same on every machine and in the vectorized and the
scalar remainder parts of a loop, so it does not depend on how arrays are split into chunks.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["tanh", "tanh_layer", "scale_layer"]

_JIT = dict(nogil=True, cache=True, error_model="numpy")


def _truncate(value: float, dtype, bits: int) -> float:
    """``value`` in ``dtype`` with its last ``bits`` mantissa bits cleared."""
    a = np.array([value], dtype=dtype)
    ints = a.view(np.int64 if a.itemsize == 8 else np.int32)
    ints &= ~((1 << bits) - 1)
    return float(a[0])


def _make_tanh(dtype):
    """The scalar tanh (T1)-(T2) for float64 or float32 arguments (inlined into the loops)."""
    f = np.dtype(dtype).type
    ln2 = math.log(2.0)
    if f is np.float64:
        # LN2_HI keeps 32 significant bits, so k·LN2_HI is exact for the k ≤ 58 used here.
        hi = _truncate(ln2, np.float64, 21)
        degree, cap, one_above = 13, 40.0, 19.5  # tanh x rounds to 1 for |x| > 19.06
    else:
        hi = _truncate(ln2, np.float32, 12)
        degree, cap, one_above = 7, 20.0, 9.5  # float32: rounds to 1 for |x| > 9.01
    lo = ln2 - hi
    LN2_HI, LN2_LO, INV_LN2 = f(hi), f(lo), f(1.0 / ln2)
    CAP, ONE_ABOVE, HALF, ONE, TWO = f(cap), f(one_above), f(0.5), f(1.0), f(2.0)
    # Taylor coefficients 1/j! of e^r − 1 = r + r²/2! + … + r^degree/degree!, evaluated by
    # Estrin's scheme (short dependency chains, so vector lanes overlap) on |r| ≤ ln2/2.
    c = [f(1.0 / math.factorial(j)) for j in range(degree + 1)]
    c2, c3, c4, c5, c6, c7 = c[2:8]
    if degree == 13:
        c8, c9, c10, c11, c12, c13 = c[8:14]

        @numba.njit(inline="always", **_JIT)
        def expm1_reduced(r):
            r2 = r * r
            r4 = r2 * r2
            r8 = r4 * r4
            a = c2 + c3 * r
            b = (c4 + c5 * r) + r2 * (c6 + c7 * r)
            d = (c8 + c9 * r) + r2 * (c10 + c11 * r) + r4 * (c12 + c13 * r)
            return r + r2 * a + r4 * b + r8 * d
    else:

        @numba.njit(inline="always", **_JIT)
        def expm1_reduced(r):
            r2 = r * r
            r4 = r2 * r2
            return r + r2 * (c2 + c3 * r) + r4 * ((c4 + c5 * r) + r2 * (c6 + c7 * r))

    K_SPLIT = np.int32(30)
    ONE_I = np.int32(1)

    @numba.njit(inline="always", **_JIT)
    def tanh_scalar(x):
        y = min(TWO * abs(x), CAP)  # NaN → CAP: the index below stays in range
        k = np.floor(y * INV_LN2 + HALF)
        r = (y - k * LN2_HI) - k * LN2_LO
        p = expm1_reduced(r)
        # 2^k, 0 ≤ k ≤ 58, as a product of two int32 powers of two (vectorizes on AVX2).
        ki = np.int32(k)
        k1 = min(ki, K_SPLIT)
        s = f(ONE_I << k1) * f(ONE_I << np.int32(ki - k1))
        u = s * p + (s - ONE)  # (T2)
        t = u / (u + TWO)  # (T1)
        t = ONE if abs(x) > ONE_ABOVE else t
        return math.copysign(t, x)  # NaN stays NaN (so do y, r, u and t)

    return tanh_scalar


_TANH64 = _make_tanh(np.float64)
_TANH32 = _make_tanh(np.float32)


def _make_kernels(tanh_scalar, f):
    ONE = f(1.0)
    INF = f(np.inf)

    @numba.njit(**_JIT)
    def tanh_flat(x, out):
        for i in range(x.size):
            out[i] = tanh_scalar(x[i])

    @numba.njit(**_JIT)
    def tanh_layer_kernel(z, bias, h, dphi, bad, store_z):
        c, B, n = z.shape
        for m in range(c):
            count = 0  # an integer sum vectorizes; a float one would need fastmath
            for b in range(B):
                for j in range(n):
                    v = z[m, b, j] + bias[m, j]
                    if store_z:
                        z[m, b, j] = v
                    count += 0 if abs(v) < INF else 1
                    t = tanh_scalar(v)
                    h[m, b, j] = t
                    dphi[m, b, j] = ONE - t * t
            bad[m] = count > 0

    @numba.njit(**_JIT)
    def scale_layer_kernel(d, back, bad):
        c, B, n = d.shape
        for m in range(c):
            count = 0
            for b in range(B):
                for j in range(n):
                    v = d[m, b, j] * back[m, b, j]
                    d[m, b, j] = v
                    count += 0 if abs(v) < INF else 1
            bad[m] = count > 0

    return tanh_flat, tanh_layer_kernel, scale_layer_kernel


_KERNELS = {
    np.dtype(np.float64): _make_kernels(_TANH64, np.float64),
    np.dtype(np.float32): _make_kernels(_TANH32, np.float32),
}


def _kernels(dtype) -> tuple:
    try:
        return _KERNELS[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"the compiled kernels need float64 or float32, got {dtype}") from None


def supported(*arrays: np.ndarray) -> bool:
    """Whether the kernels take these arrays: one float64/float32 dtype, C-contiguous."""
    dtype = arrays[0].dtype
    return dtype in _KERNELS and all(a.dtype == dtype and a.flags.c_contiguous for a in arrays)


def tanh(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """tanh of a float64 or float32 array by (T1)-(T2): ≤ 3 ulp, same bits on every machine.

    Parameters
    ----------
    x : ndarray, any shape, float64 or float32
    out : ndarray or None
        Same shape and dtype as ``x``, C-contiguous; may be ``x`` itself.

    Returns
    -------
    ndarray
        ``out`` (or a new array) holding tanh x.
    """
    x = np.ascontiguousarray(x)
    if out is None:
        out = np.empty_like(x)
    if out.shape != x.shape or not supported(x, out):
        raise ValueError("tanh needs float64/float32 x and a C-contiguous out of x's shape/dtype")
    _kernels(x.dtype)[0](x.reshape(-1), out.reshape(-1))
    return out


def tanh_layer(
    z: np.ndarray,
    bias: np.ndarray,
    h: np.ndarray,
    dphi: np.ndarray,
    *,
    store_z: bool = True,
) -> np.ndarray:
    """One tanh layer's element-wise forward work in a single pass over memory.

    ``z += bias``; ``h = tanh(z)``; ``dphi = 1 − h²`` (φ' from the output, so z need not be
    kept); and which networks have a non-finite z. All arrays C-contiguous, one dtype
    (float64 or float32).

    Parameters
    ----------
    z : ndarray, shape ``(c, B, n)``
        Pre-activations without bias (W h⁽ˡ⁻¹⁾); overwritten with z⁽ˡ⁾ if ``store_z``.
    bias : ndarray, shape ``(c, n)``
    h, dphi : ndarray, shape ``(c, B, n)``
        Outputs; must not overlap ``z`` or each other.
    store_z : bool
        Write z⁽ˡ⁾ back (False saves a pass over memory when z is not kept).

    Returns
    -------
    ndarray of bool, shape ``(c,)``
        True where the network's z⁽ˡ⁾ holds inf or NaN.
    """
    bad = np.empty(z.shape[0], dtype=bool)
    _kernels(z.dtype)[1](z, bias, h, dphi, bad, bool(store_z))
    return bad


def scale_layer(d: np.ndarray, back: np.ndarray) -> np.ndarray:
    """``d *= back`` (δ⁽ˡ⁾ = φ'(z⁽ˡ⁾) ⊙ δ⁽ˡ⁺¹⁾W⁽ˡ⁺¹⁾) and which networks' δ is non-finite.

    Parameters
    ----------
    d, back : ndarray, shape ``(c, B, n)``
        ``d`` holds φ'(z⁽ˡ⁾) and is overwritten with δ⁽ˡ⁾.

    Returns
    -------
    ndarray of bool, shape ``(c,)``
    """
    bad = np.empty(d.shape[0], dtype=bool)
    _kernels(d.dtype)[2](d, back, bad)
    return bad
