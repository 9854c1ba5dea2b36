"""Compiled element-wise kernels (numba) for the engine's tanh layers.

numpy's float64 ``tanh`` calls the C library once per element unless the CPU has AVX-512
(without it, the tanh of a width-128 layer costs more than its matmuls; the benchmarks in
``experiments/benchmarks`` measure it), and every separate ufunc pass (bias, φ', overflow
check, product) streams the layer through memory again. The kernels here do a layer's
element-wise work in one pass (:func:`tanh_layer` forward; :func:`scale_layer` or, when h is
kept, :func:`tanh_scale_layer` backward, which recomputes φ' = 1 − h² rather than reading a
stored one), with a tanh the compiler can vectorize:

    tanh x = sign(x) · u / (u + 2),   u = e^{2|x|} − 1                                   (T1)
    e^y − 1 = 2^k (e^r − 1) + (2^k − 1),   k = round(y / ln 2),   r = y − k ln 2          (T2)

with |r| ≤ ln2 / 2, ``ln 2`` split in two parts so that ``k · LN2_HI`` is exact (Cody–Waite),
e^r − 1 by its Taylor polynomial (degree 13 in float64, 7 in float32: the truncation error is
below one unit in the last place), 2^k written straight into the exponent bits, the rounding
error of u + 2 folded back into the quotient (Fast2Sum), and tanh x = ±1 once |x| is large
enough that the result rounds to 1. For small |x|, u ≈ 2|x| without cancellation, so (T1)
keeps full relative accuracy down to the subnormals. Measured error against a 40-digit
reference: at most 3 units in the last place in float64 (the C library's tanh: at most 2) and
2 in float32. It is odd and exact at ±0, ±inf and NaN, but not monotone at the level of single
ulps.

Only IEEE additions, multiplications and divisions in a fixed order (plus exact integer work on
the bits of 2^k), with no ``fastmath`` (so no fused multiply-adds): the result is bit-for-bit
the same on every machine and in the vectorized and the scalar remainder parts of a loop, so it
does not depend on how arrays are split into chunks. The compiled code is cached on disk
(numba ``cache=True``) after a process's first call.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

from .._jit import JIT as _JIT

__all__ = ["tanh", "tanh_layer", "scale_layer", "tanh_scale_layer"]


def _truncate(value: float, dtype, bits: int):
    """``value`` in ``dtype`` with its last ``bits`` mantissa bits cleared."""
    a = np.array([value], dtype=dtype)
    ints = a.view(np.int64 if a.itemsize == 8 else np.int32)
    ints &= ~((1 << bits) - 1)
    return a[0]


# Constants are module globals (numba freezes them at compile time) rather than closure cells,
# so the compiled functions can be cached on disk between processes.
_LN2 = math.log(2.0)
#: ln 2 split as LN2_HI + LN2_LO for the range reduction x = k·ln 2 + r; LN2_HI keeps 32
#: (float64) / 12 (float32) significant bits, so k·LN2_HI is exact for every k used.
LN2_HI_64 = _truncate(_LN2, np.float64, 21)
#: The rest ln 2 − LN2_HI_64, in float64.
LN2_LO_64 = np.float64(_LN2 - float(LN2_HI_64))
#: 1/ln 2 in float64 (k = round(x/ln 2)).
INV_LN2_64 = np.float64(1.0 / _LN2)
CAP_64, ONE_ABOVE_64 = np.float64(40.0), np.float64(19.5)  # tanh x rounds to 1 beyond 19.06
ONE_64, HALF_64 = np.float64(1.0), np.float64(0.5)
#: LN2_HI_64 for float32 (12 significant bits).
LN2_HI_32 = _truncate(_LN2, np.float32, 12)
#: The rest ln 2 − LN2_HI_32, in float32.
LN2_LO_32 = np.float32(_LN2 - float(LN2_HI_32))
#: 1/ln 2 in float32.
INV_LN2_32 = np.float32(1.0 / _LN2)
CAP_32, ONE_ABOVE_32 = np.float32(20.0), np.float32(9.5)  # float32: rounds to 1 beyond 9.01
ONE_32, HALF_32 = np.float32(1.0), np.float32(0.5)
# Taylor coefficients 1/j! of e^r − 1 = r + r²/2! + … (degree 13 in float64, 7 in float32).
(C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13) = (
    np.float64(1.0 / math.factorial(j)) for j in range(2, 14)
)
(F2, F3, F4, F5, F6, F7) = (np.float32(1.0 / math.factorial(j)) for j in range(2, 8))
# 1.5·2⁵² (float32: 1.5·2²³): adding a small integer k stores k in the lowest mantissa bits.
MAGIC_64, MAGIC_32 = np.float64(1.5 * 2.0**52), np.float32(1.5 * 2.0**23)
#: The bits of MAGIC_64 as an int64 (k is read back from the low mantissa bits).
MAGIC_BITS_64 = np.array([MAGIC_64]).view(np.int64)[0]
#: The bits of MAGIC_32 as an int32.
MAGIC_BITS_32 = np.array([MAGIC_32]).view(np.int32)[0]


@numba.njit(inline="always", **_JIT)
def _expm1_reduced_64(r):
    # Estrin's scheme: short dependency chains, so the vector lanes' latencies overlap.
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    a = C2 + C3 * r
    b = (C4 + C5 * r) + r2 * (C6 + C7 * r)
    d = (C8 + C9 * r) + r2 * (C10 + C11 * r) + r4 * (C12 + C13 * r)
    return r + r2 * a + r4 * b + r8 * d


@numba.njit(inline="always", **_JIT)
def _expm1_reduced_32(r):
    r2 = r * r
    r4 = r2 * r2
    return r + r2 * (F2 + F3 * r) + r4 * ((F4 + F5 * r) + r2 * (F6 + F7 * r))


@numba.njit(inline="always", **_JIT)
def _reduce(x, ln2_hi, ln2_lo, inv_ln2, cap, half):
    """(T2)'s k and r for y = 2|x| (capped): y = k ln2 + r, |r| ≤ ln2/2; all in x's type."""
    y = min(abs(x) + abs(x), cap)  # NaN stays NaN
    k = np.floor(y * inv_ln2 + half)
    r = (y - k * ln2_hi) - k * ln2_lo
    return k, r


def _bitcast(source, target):
    """A compiled reinterpretation of a number's bits as another type of the same width (free)."""

    @intrinsic
    def cast(typingctx, value):
        if value != source:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen

    return cast


_float64_bits, _bits_float64 = (
    _bitcast(types.float64, types.int64),
    _bitcast(types.int64, types.float64),
)
_float32_bits, _bits_float32 = (
    _bitcast(types.float32, types.int32),
    _bitcast(types.int32, types.float32),
)


@numba.njit(inline="always", **_JIT)
def _power_of_two_64(k):
    """2^k for an integral float64 k in [0, 1023): k + 1.5·2⁵² holds k in its low mantissa
    bits, which are moved into the exponent field. Integer adds and shifts only, all of which
    AVX2 vectorizes (float → int64 conversion has no AVX2 instruction and ran lane by lane).
    A NaN k gives some finite or non-finite s; the result is NaN anyway (p is NaN)."""
    k_bits = _float64_bits(k + MAGIC_64) - MAGIC_BITS_64
    return _bits_float64((k_bits + np.int64(1023)) << np.int64(52))


@numba.njit(inline="always", **_JIT)
def _power_of_two_32(k):
    """float32 version of :func:`_power_of_two_64`, k in [0, 127)."""
    k_bits = _float32_bits(k + MAGIC_32) - MAGIC_BITS_32
    return _bits_float32(np.int32((k_bits + np.int32(127)) << np.int32(23)))


@numba.njit(inline="always", **_JIT)
def _finish(x, s, p, one, one_above):
    """tanh x from s = 2^k and p = e^r − 1 by (T2) then (T1), the sum u + 2 corrected."""
    two = one + one
    u = s * p + (s - one)  # e^{2|x|} − 1, (T2)
    # (T1) with the rounding error e of d = u + 2 folded back in (Fast2Sum: d + e = u + 2
    # exactly): u/(d + e) = q·(1 − e/d) to first order, q = u/d.
    d = u + two
    e = (max(u, two) - d) + min(u, two)
    q = u / d
    t = q - q * (e / d)
    t = one if abs(x) > one_above else t
    return math.copysign(t, x)  # NaN stays NaN (so are r, p, u and t)


@numba.njit(inline="always", **_JIT)
def _tanh64(x):
    k, r = _reduce(x, LN2_HI_64, LN2_LO_64, INV_LN2_64, CAP_64, HALF_64)
    s = _power_of_two_64(k)  # 0 ≤ k ≤ 58
    return _finish(x, s, _expm1_reduced_64(r), ONE_64, ONE_ABOVE_64)


@numba.njit(inline="always", **_JIT)
def _tanh32(x):
    k, r = _reduce(x, LN2_HI_32, LN2_LO_32, INV_LN2_32, CAP_32, HALF_32)
    s = _power_of_two_32(k)  # 0 ≤ k ≤ 29
    return _finish(x, s, _expm1_reduced_32(r), ONE_32, ONE_ABOVE_32)


def _tanh_any(x):  # pragma: no cover - replaced by the overload inside compiled code
    raise NotImplementedError


@overload(_tanh_any, inline="always")
def _tanh_any_typed(x):
    """Compile-time choice of the float32 or float64 tanh by the argument's type."""
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: _tanh32(x)
    return lambda x: _tanh64(x)


@numba.njit(**_JIT)
def _tanh_flat(x, out):
    for i in range(x.size):
        out[i] = _tanh_any(x[i])


@numba.njit(**_JIT)
def _tanh_layer(z, bias, h, dphi, bad, store_z, store_dphi, one, inf):
    # one, inf: scalars of the arrays' type, so float32 arithmetic stays float32.
    c, B, n = z.shape
    for m in range(c):
        # An integer OR-reduction vectorizes (a float one would need fastmath) and cannot
        # overflow; int32, not numba's default int64, so float32 loops run 8 lanes wide.
        count = np.int32(0)
        for b in range(B):
            for j in range(n):
                v = z[m, b, j] + bias[m, j]
                if store_z:
                    z[m, b, j] = v
                count = np.int32(count | (0 if abs(v) < inf else 1))
                t = _tanh_any(v)
                h[m, b, j] = t
                if store_dphi:
                    dphi[m, b, j] = one - t * t
        bad[m] = count > 0


@numba.njit(**_JIT)
def _tanh_scale_layer(d, back, h, bad, one, inf):
    # The same operations in the same order as _tanh_layer's φ' then _scale_layer's product,
    # so the bits equal those of the two-pass route.
    c, B, n = d.shape
    for m in range(c):
        count = np.int32(0)
        for b in range(B):
            for j in range(n):
                t = h[m, b, j]
                v = (one - t * t) * back[m, b, j]
                d[m, b, j] = v
                count = np.int32(count | (0 if abs(v) < inf else 1))
        bad[m] = count > 0


@numba.njit(**_JIT)
def _scale_layer(d, back, bad, inf):
    c, B, n = d.shape
    for m in range(c):
        count = np.int32(0)
        for b in range(B):
            for j in range(n):
                v = d[m, b, j] * back[m, b, j]
                d[m, b, j] = v
                count = np.int32(count | (0 if abs(v) < inf else 1))
        bad[m] = count > 0


_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def supported(*arrays: np.ndarray) -> bool:
    """Whether the kernels take these arrays: one float64/float32 dtype, C-contiguous."""
    dtype = arrays[0].dtype
    return dtype in _DTYPES and all(a.dtype == dtype and a.flags.c_contiguous for a in arrays)


def _check(*arrays: np.ndarray) -> None:
    if not supported(*arrays):
        raise ValueError("the kernels need C-contiguous float64 or float32 arrays of one dtype")


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
    _tanh_flat(x.reshape(-1), out.reshape(-1))
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
    _check(z, bias, h, dphi)
    return _tanh_layer_unchecked(z, bias, h, dphi, store_z)


def _tanh_layer_unchecked(z, bias, h, dphi, store_z: bool, store_dphi: bool = True) -> np.ndarray:
    """:func:`tanh_layer` for callers that have checked the arrays (the engine, per chunk);
    ``store_dphi=False`` skips φ' (``dphi`` is then not written; the engine recomputes φ'
    from a kept h in :func:`tanh_scale_layer`)."""
    f = z.dtype.type
    bad = np.empty(z.shape[0], dtype=bool)
    _tanh_layer(z, bias, h, dphi, bad, bool(store_z), bool(store_dphi), f(1.0), f(np.inf))
    return bad


def tanh_scale_layer(d: np.ndarray, back: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``d = (1 − h²) ⊙ back`` (δ⁽ˡ⁾ of a tanh layer from its output h) in one pass, and which
    networks' δ is non-finite.

    Bit for bit :func:`tanh_layer`'s ``dphi`` followed by :func:`scale_layer`, without
    writing φ' in the forward pass and reading it back: when h⁽ˡ⁾ is kept anyway, that saves
    a stream of the layer's size through memory.

    Parameters
    ----------
    d : ndarray, shape ``(c, B, n)``
        Output δ⁽ˡ⁾ (its contents are not read).
    back, h : ndarray, shape ``(c, B, n)``
        δ⁽ˡ⁺¹⁾W⁽ˡ⁺¹⁾ and h⁽ˡ⁾ = tanh z⁽ˡ⁾.

    Returns
    -------
    ndarray of bool, shape ``(c,)``
    """
    _check(d, back, h)
    return _tanh_scale_layer_unchecked(d, back, h)


def _tanh_scale_layer_unchecked(d, back, h) -> np.ndarray:
    """:func:`tanh_scale_layer` for callers that have checked the arrays."""
    f = d.dtype.type
    bad = np.empty(d.shape[0], dtype=bool)
    _tanh_scale_layer(d, back, h, bad, f(1.0), f(np.inf))
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
    _check(d, back)
    return _scale_layer_unchecked(d, back)


def _scale_layer_unchecked(d, back) -> np.ndarray:
    """:func:`scale_layer` for callers that have checked the arrays (the engine, per chunk)."""
    bad = np.empty(d.shape[0], dtype=bool)
    _scale_layer(d, back, bad, d.dtype.type(np.inf))
    return bad


def numpy_vectorizes_tanh() -> bool:
    """Whether numpy's own float64 tanh is a SIMD loop here: its wheels dispatch one only
    for AVX-512 (Skylake-X level) CPUs; elsewhere it calls the C library per element."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return bool(__cpu_features__.get("AVX512_SKX", False))
