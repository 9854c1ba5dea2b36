"""Counter-based Gaussian numbers: Philox4x32-10 and a vectorized Box–Muller transform.

Every Gaussian draw of deltastats (weights, biases, Gaussian and spherical inputs, Gaussian
targets) is a *pure function of its coordinates*: value i of tensor t of network m in stream
s of seed σ is

    Z = BoxMuller(Philox4x32-10_key(σ, s)(block(i), t, m_lo, m_hi))[slot(i)],

so a network's numbers do not depend on how many networks are drawn at once, in which
chunks, by how many threads or processes, or on which CPU: there is no generator state to
carry from one draw to the next.

**The bits.** Philox4x32-10 (Salmon et al. 2011) maps a 128-bit counter (c₀, c₁, c₂, c₃) and
a 64-bit key (k₀, k₁) to four 32-bit words by ten rounds of

    (c₀, c₁, c₂, c₃) ← (hi(M₁c₂) ⊕ c₁ ⊕ k₀, lo(M₁c₂), hi(M₀c₀) ⊕ c₃ ⊕ k₁, lo(M₀c₀)),
    (k₀, k₁) ← (k₀ + W₀, k₁ + W₁) mod 2³²  (between rounds),

with M₀ = 0xD2511F53, M₁ = 0xCD9E8D57, W₀ = 0x9E3779B9, W₁ = 0xBB67AE85; hi/lo are the upper
and lower 32 bits of the 64-bit product. It passes BigCrush for every key, and distinct
counters give independent-looking blocks. Here c₀ is the block index within a tensor, c₁
the tensor index and (c₂, c₃) the low and high words of the network index.

**The normal transform (float64 law).** Block j gives values 2j and 2j + 1. Two 53-bit
integers a = (c₀′ ≫ 6)·2²⁷ + (c₁′ ≫ 5) and b (likewise from c₂′, c₃′) define

    u = (a + 1)·2⁻⁵³ ∈ (0, 1],     θ = 2π (b + ½)·2⁻⁵³ ∈ (0, 2π),
    Z₂ⱼ = R cos θ,   Z₂ⱼ₊₁ = R sin θ,   R = √(−2 ln u)                      (Box–Muller)

which are exactly independent N(0, 1) for uniform u, θ; the 53-bit lattice truncates R at
√(106 ln 2) ≈ 8.57 (a tail of probability 2⁻⁵³). **The float32 law** uses the four words as
two 32-bit pairs (u = (c′ + 1)·2⁻³², θ from the next word), four values per block, R ≤ 6.66
(tail 2⁻³²), computed in float64 and rounded once to float32; its values are not the
float64 law's values rounded.

ln, sin and cos are computed here rather than by the C library so that the compiler can
vectorize them (8 float64 lanes with AVX-512) and so that the bits do not depend on the
machine: only IEEE additions, multiplications, one division and one square root in a fixed
order (no ``fastmath``, so no fused multiply-adds that one CPU has and another lacks), plus
exact integer work on the bits:

    ln u = E ln 2 + ln m,   m ∈ [√½, √2),   ln m = 2 atanh s = 2s Σₖ s²ᵏ/(2k + 1),
    s = (m − 1)/(m + 1),  |s| ≤ 0.1716 (terms to s²⁰: truncation < 10⁻¹⁸),

with ln 2 split so that E·LN2_HI is exact (Cody–Waite); the angle is reduced exactly in the
integers to a quadrant q and x = θ − qπ/2 ∈ [−π/4, π/4], where the Taylor polynomials of
sin x (to x¹⁷) and cos x (to x¹⁶) are below 10⁻¹⁸ from the truth. The values are within a
few units in the last place of the exact Box–Muller value of (u, θ).

References
----------
J. K. Salmon, M. A. Moraes, R. O. Dror and D. E. Shaw, "Parallel random numbers: as easy as
1, 2, 3", Proc. SC11 (2011), doi:10.1145/2063384.2063405.
G. E. P. Box and M. E. Muller, "A note on the generation of random normal deviates",
Ann. Math. Statist. 29 (1958) 610–611.
"""

from __future__ import annotations

import math
import threading

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from .._jit import JIT as _JIT
from .._parallel import default_threads, executor

__all__ = [
    "times_matrix",
    "philox4x32",
    "philox_normal",
    "network_normal",
]


_U32 = 2**32
#: Values per 128-bit block in the float64 and float32 laws.
_PER_BLOCK = {np.dtype(np.float64): 2, np.dtype(np.float32): 4}
#: Below this many values a draw runs on the calling thread: waking a pool thread (≈ 50 µs
#: round trip) costs about what it saves, and more when the other core is busy (measured on
#: 2 shared cores: 164k float64 values take 2.4 ns each on one thread, 2.6–2.9 on two).
_PARALLEL_VALUES = 1 << 20
#: A parallel draw is cut into about this many pieces per thread, each of at least
#: _PIECE_VALUES values (≈ 0.1 ms: the hand-out and the call cost a few µs per piece).
_PIECES_PER_THREAD = 8
_PIECE_VALUES = 1 << 15

# Constants are module globals: numba freezes them at compile time and can cache the code.
_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_MASK32, _SH32 = np.uint64(0xFFFFFFFF), np.uint64(32)
_SH5, _SH6, _SH27 = np.uint64(5), np.uint64(6), np.int64(27)


def _bitcast(source, target):
    """A compiled reinterpretation of a number's bits as another type of the same width."""

    @intrinsic
    def cast(typingctx, value):
        if value != source:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen

    return cast


_float64_bits = _bitcast(types.float64, types.int64)
_bits_float64 = _bitcast(types.int64, types.float64)


# -- Philox4x32-10 --------------------------------------------------------------------------
# Words are held in uint64 lanes below 2³², so the 32 × 32 → 64-bit products are exact and
# the compiler emits one unsigned 32-bit multiply per lane (vpmuludq).
@numba.njit(inline="always", **_JIT)
def _round(x0, x1, x2, x3, k0, k1):
    p0 = _M0 * x0
    p1 = _M1 * x2
    return (p1 >> _SH32) ^ x1 ^ k0, p1 & _MASK32, (p0 >> _SH32) ^ x3 ^ k1, p0 & _MASK32


@numba.njit(inline="always", **_JIT)
def _bump(k0, k1):
    return (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32


@numba.njit(inline="always", **_JIT)
def _philox(x0, x1, x2, x3, k0, k1):
    # Ten rounds written out: a loop carrying a tuple would stop the vectorizer.
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    return _round(x0, x1, x2, x3, k0, k1)


@numba.njit(**_JIT)
def _philox_blocks(ctr, k0, k1, out):
    for j in range(ctr.shape[0]):
        x0, x1, x2, x3 = _philox(
            np.uint64(ctr[j, 0]),
            np.uint64(ctr[j, 1]),
            np.uint64(ctr[j, 2]),
            np.uint64(ctr[j, 3]),
            k0,
            k1,
        )
        out[j, 0], out[j, 1], out[j, 2], out[j, 3] = x0, x1, x2, x3


# -- ln, sin, cos on the lattice ------------------------------------------------------------
def _truncated(value: float, bits: int) -> np.float64:
    a = np.array([value])
    a.view(np.int64)[0] &= ~((1 << bits) - 1)
    return a[0]


_LN2 = math.log(2.0)
_LN2_HI = _truncated(_LN2, 21)  # 32 significant bits: E·LN2_HI is exact for |E| < 2²¹
_LN2_LO = np.float64(_LN2 - float(_LN2_HI))
_SQRT2 = np.float64(math.sqrt(2.0))
_MANTISSA, _ONE_BITS = np.int64((1 << 52) - 1), np.int64(1023 << 52)
# 2 atanh s = 2s (1 + t/3 + t²/5 + … + t¹⁰/21), t = s².
(_A1, _A2, _A3, _A4, _A5, _A6, _A7, _A8, _A9, _A10) = (
    np.float64(1.0 / (2 * k + 1)) for k in range(1, 11)
)
# sin x = x + x·t·(S1 + S2 t + … + S8 t⁷), cos x = 1 + t·(C1 + C2 t + … + C8 t⁷), t = x².
(_S1, _S2, _S3, _S4, _S5, _S6, _S7, _S8) = (
    np.float64((-1) ** k / math.factorial(2 * k + 1)) for k in range(1, 9)
)
(_C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8) = (
    np.float64((-1) ** k / math.factorial(2 * k)) for k in range(1, 9)
)
_TWO_PI_53 = np.float64(2.0 * math.pi / 2.0**53)
_TWO_PI_32 = np.float64(2.0 * math.pi / 2.0**32)
_HALF, _ONE, _TWO = np.float64(0.5), np.float64(1.0), np.float64(2.0)


@numba.njit(inline="always", **_JIT)
def _minus_two_log(a, bits):
    """−2 ln u for u = (a + 1)·2^−bits, a an integer in [0, 2^bits), bits ≤ 53."""
    x = np.float64(a + np.int64(1))  # exact: an integer ≤ 2⁵³
    b = _float64_bits(x)
    e = (b >> np.int64(52)) - np.int64(1023) - bits
    m = _bits_float64((b & _MANTISSA) | _ONE_BITS)  # x = m·2^(e+bits), m ∈ [1, 2)
    big = m > _SQRT2
    m = m * _HALF if big else m  # exact; now m ∈ [√½, √2)
    e = e + np.int64(1) if big else e
    f = m - _ONE  # exact (Sterbenz)
    s = f / (_TWO + f)
    t = s * s
    t2 = t * t
    t4 = t2 * t2
    t8 = t4 * t4
    # Estrin's scheme: short dependency chains, so the vector lanes' latencies overlap.
    p = (
        (_ONE + _A1 * t)
        + t2 * (_A2 + _A3 * t)
        + t4 * ((_A4 + _A5 * t) + t2 * (_A6 + _A7 * t))
        + t8 * ((_A8 + _A9 * t) + t2 * _A10)
    )
    ln_m = (s + s) * p
    E = np.float64(e)
    return -_TWO * (E * _LN2_HI + (ln_m + E * _LN2_LO))


@numba.njit(inline="always", **_JIT)
def _cos_sin(b, bits, scale):
    """(cos θ, sin θ) for θ = 2π (b + ½)·2^−bits, b an integer in [0, 2^bits);
    ``scale`` = 2π·2^−bits."""
    # θ = qπ/2 + x: q = round(4θ/2π) mod 4 and the remainder in the integers, exactly.
    quarter = bits - np.int64(2)
    qb = (b + (np.int64(1) << (quarter - np.int64(1)))) >> quarter
    d = b - (qb << quarter)  # ∈ [−2^(bits−3), 2^(bits−3))
    q = qb & np.int64(3)
    x = (np.float64(d) + _HALF) * scale  # |x| < π/4; d + ½ is exact
    t = x * x
    t2 = t * t
    t4 = t2 * t2
    s = x + x * (
        t * ((_S1 + _S2 * t) + t2 * (_S3 + _S4 * t) + t4 * ((_S5 + _S6 * t) + t2 * (_S7 + _S8 * t)))
    )
    c = _ONE + t * (
        (_C1 + _C2 * t) + t2 * (_C3 + _C4 * t) + t4 * ((_C5 + _C6 * t) + t2 * (_C7 + _C8 * t))
    )
    # (cos θ, sin θ) = (c, s), (−s, c), (−c, −s), (s, −c) for q = 0, 1, 2, 3.
    odd = (q & np.int64(1)) != 0
    cos_t = s if odd else c
    sin_t = c if odd else s
    cos_t = -cos_t if ((q + np.int64(1)) & np.int64(2)) != 0 else cos_t
    sin_t = -sin_t if (q & np.int64(2)) != 0 else sin_t
    return cos_t, sin_t


@numba.njit(inline="always", **_JIT)
def _pair53(j, k0, k1, c1, c2, c3):
    """Values 2j and 2j + 1 of the float64 law (block j)."""
    x0, x1, x2, x3 = _philox(np.uint64(j), c1, c2, c3, k0, k1)
    a = (np.int64(x0 >> _SH6) << _SH27) | np.int64(x1 >> _SH5)
    b = (np.int64(x2 >> _SH6) << _SH27) | np.int64(x3 >> _SH5)
    r = np.sqrt(_minus_two_log(a, np.int64(53)))
    c, s = _cos_sin(b, np.int64(53), _TWO_PI_53)
    return r * c, r * s


@numba.njit(inline="always", **_JIT)
def _quad32(j, k0, k1, c1, c2, c3):
    """Values 4j … 4j + 3 of the float32 law (block j), in float64 before rounding."""
    x0, x1, x2, x3 = _philox(np.uint64(j), c1, c2, c3, k0, k1)
    r0 = np.sqrt(_minus_two_log(np.int64(x0), np.int64(32)))
    c0, s0 = _cos_sin(np.int64(x1), np.int64(32), _TWO_PI_32)
    r1 = np.sqrt(_minus_two_log(np.int64(x2), np.int64(32)))
    c1_, s1 = _cos_sin(np.int64(x3), np.int64(32), _TWO_PI_32)
    return r0 * c0, r0 * s0, r1 * c1_, r1 * s1


# -- kernels: rows of a stack, one network per row ------------------------------------------
# The whole blocks of a row are done a tile at a time, in two loops: Philox words into a small
# buffer (in L1), then the transform from it. Fused, each vector of blocks is one dependency
# chain of ~250 instructions (ten multiply rounds, then a division, a square root and the
# polynomials), too long for the out-of-order window to overlap consecutive vectors much;
# split, each loop's chain is shorter (measured 10–15% faster on AMD Zen 4, float64 law).
# The arithmetic, and so every bit, is the same.
_TILE = 256  # blocks per tile: 4 or 8 KiB of words


@numba.njit(inline="always", **_JIT)
def _tile53(dst, j0, m, words, k0, k1, c1, c2, c3, mean, std):
    """dst[2t], dst[2t + 1] = mean + std·(values of block j0 + t), t < m ≤ _TILE."""
    wa, wb = words[0], words[1]
    for t in range(m):
        x0, x1, x2, x3 = _philox(np.uint64(j0 + t), c1, c2, c3, k0, k1)
        wa[t] = (np.int64(x0 >> _SH6) << _SH27) | np.int64(x1 >> _SH5)
        wb[t] = (np.int64(x2 >> _SH6) << _SH27) | np.int64(x3 >> _SH5)
    for t in range(m):
        r = np.sqrt(_minus_two_log(wa[t], np.int64(53)))
        c, s = _cos_sin(wb[t], np.int64(53), _TWO_PI_53)
        dst[2 * t] = r * c * std + mean
        dst[2 * t + 1] = r * s * std + mean


@numba.njit(inline="always", **_JIT)
def _tile32(dst, j0, m, words, k0, k1, c1, c2, c3, mean, std):
    """dst[4t] … dst[4t + 3] = mean + std·(values of block j0 + t), t < m ≤ _TILE."""
    w0, w1, w2, w3 = words[0], words[1], words[2], words[3]
    for t in range(m):
        x0, x1, x2, x3 = _philox(np.uint64(j0 + t), c1, c2, c3, k0, k1)
        w0[t], w1[t], w2[t], w3[t] = np.int64(x0), np.int64(x1), np.int64(x2), np.int64(x3)
    for t in range(m):
        r0 = np.sqrt(_minus_two_log(w0[t], np.int64(32)))
        c0, s0 = _cos_sin(w1[t], np.int64(32), _TWO_PI_32)
        r1 = np.sqrt(_minus_two_log(w2[t], np.int64(32)))
        c1_, s1 = _cos_sin(w3[t], np.int64(32), _TWO_PI_32)
        dst[4 * t] = r0 * c0 * std + mean
        dst[4 * t + 1] = r0 * s0 * std + mean
        dst[4 * t + 2] = r1 * c1_ * std + mean
        dst[4 * t + 3] = r1 * s1 * std + mean


@numba.njit(inline="always", **_JIT)
def _row53(row, words, k0, k1, c1, c2, c3, v0, mean, std):
    """row[i] = mean + std·Z[v0 + i] (float64 law), rounded to the row's dtype."""
    n = row.size
    i = 0
    if n > 0 and (v0 & 1) != 0:  # starts inside a block
        _, z1 = _pair53(v0 >> 1, k0, k1, c1, c2, c3)
        row[0] = z1 * std + mean
        i = 1
    j0 = (v0 + i) >> 1
    full = (n - i) >> 1
    for t0 in range(0, full, _TILE):
        # A view, so that the stores' indices are visibly ≥ 0: numba's negative-index
        # wraparound on row[i + 2t] would stop the vectorizer.
        dst = row[i + 2 * t0 :]
        _tile53(dst, j0 + t0, min(_TILE, full - t0), words, k0, k1, c1, c2, c3, mean, std)
    i += 2 * full
    if i < n:  # ends inside a block
        z0, _ = _pair53(j0 + full, k0, k1, c1, c2, c3)
        row[i] = z0 * std + mean


@numba.njit(inline="always", **_JIT)
def _value32(v, k0, k1, c1, c2, c3):
    """Value v of the float32 law alone (the ends of a row that cut a block)."""
    z0, z1, z2, z3 = _quad32(v >> 2, k0, k1, c1, c2, c3)
    slot = v & 3
    return z0 if slot == 0 else (z1 if slot == 1 else (z2 if slot == 2 else z3))


@numba.njit(inline="always", **_JIT)
def _row32(row, words, k0, k1, c1, c2, c3, v0, mean, std):
    """row[i] = mean + std·Z[v0 + i] (float32 law), rounded to the row's dtype."""
    n = row.size
    head = min(n, (4 - (v0 & 3)) & 3)  # values before the first whole block
    for i in range(head):
        row[i] = _value32(v0 + i, k0, k1, c1, c2, c3) * std + mean
    j0 = (v0 + head) >> 2
    full = (n - head) >> 2
    for t0 in range(0, full, _TILE):
        dst = row[head + 4 * t0 :]  # a view, as in _row53
        _tile32(dst, j0 + t0, min(_TILE, full - t0), words, k0, k1, c1, c2, c3, mean, std)
    for i in range(head + 4 * full, n):
        row[i] = _value32(v0 + i, k0, k1, c1, c2, c3) * std + mean


@numba.njit(**_JIT)
def _fill53(out, k0, k1, c1, net0, v0, mean, std):
    # out (R, n): row r is network net0 + r, values v0 … v0 + n − 1 of its tensor c1.
    words = np.empty((2, _TILE), dtype=np.int64)
    for r in range(out.shape[0]):
        net = net0 + np.uint64(r)
        _row53(out[r], words, k0, k1, c1, net & _MASK32, net >> _SH32, v0, mean, std)


@numba.njit(**_JIT)
def _fill32(out, k0, k1, c1, net0, v0, mean, std):
    words = np.empty((4, _TILE), dtype=np.int64)
    for r in range(out.shape[0]):
        net = net0 + np.uint64(r)
        _row32(out[r], words, k0, k1, c1, net & _MASK32, net >> _SH32, v0, mean, std)


@numba.njit(inline="always", **_JIT)
def times_matrix(W, a_in, a_out, scale):
    """a_out[q] = scale · a_in[q] W for every row q: a_in ``(Q, n_out)``, W ``(n_out, n_in)``
    (float64 or float32, read as float64), a_out ``(Q, n_in)`` float64. A fixed order (rows
    i of W in turn, a_out[q] += (a_in[q, i]·scale)·W[i] over the unit-stride j), the same
    wherever it is called from."""
    n_out, n_in = W.shape
    for q in range(a_in.shape[0]):
        a_out[q, :] = 0.0
        for i in range(n_out):
            ai = a_in[q, i] * scale
            for j in range(n_in):
                a_out[q, j] += ai * np.float64(W[i, j])


@numba.njit(**_JIT)
def _fill53_times(out, k0, k1, c1, net0, v0, mean, std, n_out, a_in, a_out, scale):
    # As _fill53 with whole rows (v0 = 0), each row then read as its (n_out, n_in) matrix W
    # while it is in cache: a_out[r] = scale · a_in[r] W (times_matrix).
    words = np.empty((2, _TILE), dtype=np.int64)
    n_in = out.shape[1] // n_out
    for r in range(out.shape[0]):
        net = net0 + np.uint64(r)
        _row53(out[r], words, k0, k1, c1, net & _MASK32, net >> _SH32, v0, mean, std)
        times_matrix(out[r].reshape((n_out, n_in)), a_in[r], a_out[r], scale)


# -- Python API -----------------------------------------------------------------------------
def _word(name: str, value, limit: int = _U32) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < limit:
        raise ValueError(f"{name} must be an int in [0, {limit}), got {value!r}")
    return int(value)


def _key_words(key) -> tuple[np.uint64, np.uint64]:
    key = _word("key", key, 2**64)
    return np.uint64(key & 0xFFFFFFFF), np.uint64(key >> 32)


def philox4x32(counters: np.ndarray, key: int) -> np.ndarray:
    """The raw Philox4x32-10 bijection: four 32-bit words per 128-bit counter.

    Parameters
    ----------
    counters : array_like of uint32, shape ``(N, 4)``
        Counter words (c₀, c₁, c₂, c₃).
    key : int
        64-bit key; its low 32 bits are k₀, its high 32 bits k₁.

    Returns
    -------
    ndarray of uint32, shape ``(N, 4)``

    Examples
    --------
    >>> [hex(w) for w in philox4x32([[0, 0, 0, 0]], 0)[0]]  # Random123's known answer
    ['0x6627e8d5', '0xe169c58d', '0xbc57ac4c', '0x9b00dbd8']
    """
    ctr = np.asarray(counters)
    if ctr.ndim != 2 or ctr.shape[1] != 4:
        raise ValueError(f"counters must have shape (N, 4), got {ctr.shape}")
    if ctr.size and (np.any(ctr < 0) or np.any(ctr >= _U32)):
        raise ValueError("counter words must be in [0, 2**32)")
    ctr = np.ascontiguousarray(ctr, dtype=np.uint64)
    out = np.empty(ctr.shape, dtype=np.uint64)
    _philox_blocks(ctr, *_key_words(key), out)
    return out.astype(np.uint32)


def _law(dtype) -> np.dtype:
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved not in _PER_BLOCK:
        raise ValueError(f"dtype must be np.float32 or np.float64, got {dtype!r}")
    return resolved


def _pieces(R: int, n: int, threads: int) -> list[tuple[int, int, int, int]]:
    """Cut the (R, n) output into sub-blocks ``(r0, r1, a, b)``: whole rows when a row is
    smaller than a piece, else equal segments of one row (starting on block boundaries)."""
    size = max(_PIECE_VALUES, -(-R * n // (_PIECES_PER_THREAD * threads)))
    if n < size:
        rows = size // n
        return [(r, min(r + rows, R), 0, n) for r in range(0, R, rows)]
    seg = -(-n // -(-n // size))  # the row in equal segments of at most ``size``…
    seg = -(-seg // 4) * 4  # …rounded up to whole float32-law blocks
    return [(r, r + 1, a, min(a + seg, n)) for r in range(R) for a in range(0, n, seg)]


def _run(out2, law, k0, k1, c1, net0, v0, mean, std, threads, times=None) -> None:
    """Fill the rows of ``out2`` (R, n), split over ``threads`` (rows, or values of a row).
    ``times`` = (n_out, a_in, a_out, scale): also a_out[r] = scale · a_in[r] W_r for each row
    read as a matrix W_r (n_out, n / n_out) (:func:`_fill53_times`; pieces of whole rows)."""
    R, n = out2.shape
    extra = ()
    if times is None:
        kernel = _fill53 if law == np.float64 else _fill32
    else:
        kernel = _fill53_times
        extra = (np.int64(times[0]), times[1], times[2], float(times[3]))
    args = (k0, k1, np.uint64(c1))
    mean, std = float(mean), float(std)
    if threads is None:
        threads = default_threads() if out2.size >= _PARALLEL_VALUES else 1
    threads = max(1, min(int(threads), out2.size))
    pieces = _pieces(R, n, threads) if threads > 1 else []
    if times is not None and any(b - a < n for _, _, a, b in pieces):
        pieces = [(r, r + 1, 0, n) for r in range(R)]  # whole rows: one matrix per piece
    if len(pieces) < 2:
        kernel(out2, *args, np.uint64(net0), np.int64(v0), mean, std, *extra)
        return
    # Any split gives the same bits (each value depends only on its coordinates), so the
    # pieces are handed out on demand, to the calling thread and threads − 1 pool workers:
    # on a shared machine a worker that is descheduled (or slow to wake) takes fewer pieces
    # instead of holding up an equal half, and the call never waits for a worker that has
    # not started (so it is also safe from inside a pool thread).
    queue = iter(pieces)
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                piece = next(queue, None)
            if piece is None:
                return
            r0, r1, a, b = piece
            rows = (*extra[:1], *(x[r0:r1] for x in extra[1:3]), *extra[3:])
            kernel(
                out2[r0:r1, a:b], *args, np.uint64(net0 + r0), np.int64(v0 + a), mean, std, *rows
            )

    pool = executor(threads)
    helpers = [pool.submit(work) for _ in range(threads - 1)]
    try:
        work()
    finally:
        for helper in helpers:
            if not helper.cancel():  # started: it finishes its last piece
                helper.result()


def _check_capacity(law, v0: int, n: int) -> None:
    blocks = -(-(v0 + n) // _PER_BLOCK[law])
    if blocks > _U32:
        raise ValueError(
            f"a tensor holds at most {_U32 * _PER_BLOCK[law]} values of this law "
            f"(2**32 blocks), asked for values up to {v0 + n}"
        )


def philox_normal(
    key: int,
    counter_hi: tuple[int, int, int],
    n: int,
    dtype=np.float64,
    out: np.ndarray | None = None,
    *,
    start: int = 0,
    threads: int | None = None,
) -> np.ndarray:
    """Values ``start … start+n−1`` of the standard normal sequence of one counter.

    Value i comes from block ⌊i/2⌋ (float64 law) or ⌊i/4⌋ (float32 law) of Philox4x32-10 with
    counter (block, *counter_hi*) and *key*: a pure function of (key, counter_hi, i, dtype),
    whatever ``n``, ``start`` and ``threads``.

    Parameters
    ----------
    key : int
        64-bit key.
    counter_hi : (int, int, int)
        Counter words c₁, c₂, c₃ (each in [0, 2³²)); c₀ is the block index.
    n : int
        Number of values.
    dtype : np.float64 or np.float32
        The law: float64 (53-bit uniforms, 2 values per block) or float32 (32-bit uniforms,
        4 values per block, computed in float64 and rounded).
    out : ndarray or None
        C-contiguous array of ``n`` elements and of ``dtype`` to fill.
    start : int
        Index of the first value.
    threads : int or None
        Threads to use; ``None``: the engine's default for large draws, one for small ones.
        The bits do not depend on it.

    Returns
    -------
    ndarray, shape ``(n,)`` (or ``out``'s shape)
    """
    law = _law(dtype)
    n = _word("n", n, 2**63)
    start = _word("start", start, 2**63)
    if len(counter_hi) != 3:
        raise ValueError(f"counter_hi must be three 32-bit words, got {counter_hi!r}")
    c1, c2, c3 = (_word("counter_hi word", c) for c in counter_hi)
    _check_capacity(law, start, n)
    if out is None:
        out = np.empty(n, dtype=law)
    elif out.dtype != law or out.size != n or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {law} array of {n} elements")
    k0, k1 = _key_words(key)
    _run(out.reshape(1, n), law, k0, k1, c1, c2 + (c3 << 32), start, 0.0, 1.0, threads)
    return out


def network_normal(
    out: np.ndarray,
    key: int,
    tensor: int,
    start: int,
    mean: float = 0.0,
    std: float = 1.0,
    *,
    threads: int | None = None,
    times: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> np.ndarray:
    """Fill a stack of tensors, one per network, with mean + std·N(0, 1) (float64 law).

    ``out[i]`` (flattened in C order, value index v) becomes ``mean + std·Z`` with Z the
    float64-law value v of counter (block, tensor, network start + i), computed in float64
    and rounded once to ``out``'s dtype: a float32 stack is the float64 stack rounded. Each
    network's slice depends only on (key, tensor, its index), never on ``out.shape[0]``.

    Parameters
    ----------
    out : ndarray, shape ``(M, …)``, float64 or float32, C-contiguous
        Filled in place.
    key : int
        64-bit key of the stream (:func:`deltastats.model.seeding.stream_key`).
    tensor : int
        Tensor index c₁ within a network (e.g. 2(l−1) for W⁽ˡ⁾, 2(l−1)+1 for b⁽ˡ⁾).
    start : int
        Global index of the network of ``out[0]``; ``start + M ≤ 2⁶⁴``.
    mean, std : float
    threads : int or None
        As in :func:`philox_normal`; the bits do not depend on it.
    times : (a_in, a_out, scale) or None
        For a stack of matrices ``out`` ``(M, n_out, n_in)``: also a_out[m] = scale · a_in[m]
        W_m, with a_in ``(M, Q, n_out)`` and a_out ``(M, Q, n_in)`` float64, each product
        computed right after W_m is drawn, while it is in cache (no second pass over the
        weights: the control variate's backward products of
        :mod:`deltastats.stats.controls`). The same bits as :func:`times_matrix` on the
        drawn stack.

    Returns
    -------
    ndarray
        ``out``.
    """
    if out.dtype not in _PER_BLOCK or not out.flags.c_contiguous or out.ndim < 1:
        raise ValueError("out must be a C-contiguous float64 or float32 array (M, …)")
    tensor = _word("tensor", tensor)
    start = _word("start", start, 2**64)
    M = out.shape[0]
    if start + M > 2**64:
        raise ValueError(f"network indices must be below 2**64, got start={start}, M={M}")
    if out.size == 0:
        return out
    flat = out.reshape(M, -1)
    _check_capacity(np.dtype(np.float64), 0, flat.shape[1])
    k0, k1 = _key_words(key)
    if times is not None:
        a_in, a_out, scale = times
        _, n_out, n_in = out.shape if out.ndim == 3 else (None, None, None)
        if (
            out.ndim != 3
            or a_in.shape[::2] != (M, n_out)
            or a_out.shape != (M, a_in.shape[1], n_in)
            or a_in.dtype != np.float64
            or a_out.dtype != np.float64
            or not a_out.flags.c_contiguous
        ):
            raise ValueError(
                "times needs out (M, n_out, n_in), a_in (M, Q, n_out) and a C-contiguous "
                "a_out (M, Q, n_in), both float64"
            )
        times = (n_out, a_in, a_out, scale)
    _run(flat, np.dtype(np.float64), k0, k1, tensor, start, 0, mean, std, threads, times)
    return out
