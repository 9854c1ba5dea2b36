"""Compiled per-network moment features of one layer (numba), for the trace accumulators.

:class:`deltastats.stats.accumulators.BackpropAccumulator` turns every network's δ⁽ˡ⁾ and z⁽ˡ⁾
``(B, n)`` into a few dozen per-network averages (power sums of shifted values, row norms,
Stein cross moments). In numpy that is some forty passes over each ``(M, B, n)`` array per layer,
as many temporaries, and about as much time as the backprop itself; here it is one sweep over δ
and z per network (each row read twice while it is in cache), accumulating in float64 whatever
the trace's dtype.

Sums run in a fixed order that depends only on the network's own data (never on how networks
are split into chunks or jobs), so the features are bit-for-bit reproducible. They agree with
the plain numpy definitions to rounding (≈ 1e-15 relative; the tests hold those definitions).
Every value is shifted before it enters a sum (per unit by c_j, pooled by the mean of the c_j),
so no feature loses digits to cancellation.
"""

from __future__ import annotations

import ctypes
import math
from typing import NamedTuple

import numba
import numpy as np
from numba.extending import get_cython_function_address

from .._jit import JIT as _JIT
from .._parallel import single_threaded_blas
from .stacked import FeatureStack

# ---- the feature layout ---------------------------------------------------------------------
# Every per-network feature array is (M, S, k): S slots (the n_l units, or 1 for the layer
# pooled) and k columns. The columns are named here once; the compiled writer below, the
# accumulators, the statistics and the tests all index with these names. Plain module-level
# ints, so numba reads them as compile-time constants.

#: Power-sum features of δ and z, eq. (1) of :mod:`deltastats.stats.accumulators`: with
#: y = x − c, p_k = mean_b yᵏ, P1_SQ = p₁² and R the within-network second moment (p₂ per unit;
#: mean_b ȳ_b² of the unit average ȳ_b for the pooled row).
P1, P2, P3, P4, P1_SQ, R = 0, 1, 2, 3, 4, 5
#: Number of power-sum features per unit (P1 … R).
N_POWER = 6
#: Scalar-per-input features (log-norm t, s = ‖δ‖²/n_l, weight-gradient entries): the mean of
#: u − c, the mean of (u − c)², and the squared mean.
MEAN, MEAN_SQ, SQ_MEAN = 0, 1, 2
#: Number of scalar-per-input features (MEAN, MEAN_SQ, SQ_MEAN).
N_SCALAR = 3
#: Stein cross moments: ℓ̄ (shifted loss), mean_b ℓ·ζ (ζ = z − c_z), p₁(z), p₂(z), p₁(δ).
ST_LOSS, ST_LOSS_Z, ST_Z, ST_Z_SQ, ST_DELTA = 0, 1, 2, 3, 4
#: Number of Stein cross moments per unit.
N_STEIN = 5
#: Conditional multivariate Stein features of layer 1: s − c_s, u − c_u, p₁(δ).
MV_S, MV_U, MV_DELTA = 0, 1, 2
#: Number of conditional multivariate Stein features per unit.
N_STEIN_MV = 3


class FeatureKey(NamedTuple):
    """Name of one feature array: ``(quantity, layer, kind)``, written ``"delta/3/unit"``.

    ``quantity`` is one of :data:`QUANTITIES`; ``kind`` is ``"unit"`` (S = n_l slots) or
    ``"pool"`` (S = 1, the layer pooled over its units).

    >>> str(FeatureKey("delta", 3, "unit"))
    'delta/3/unit'
    >>> FeatureKey.parse("z/1/pool")
    FeatureKey(quantity='z', layer=1, kind='pool')
    """

    quantity: str
    layer: int
    kind: str

    def __str__(self) -> str:
        return f"{self.quantity}/{self.layer}/{self.kind}"

    @classmethod
    def parse(cls, name: str) -> FeatureKey:
        """The key of a feature-array name ``"<quantity>/<layer>/<kind>"``."""
        quantity, layer, kind = name.split("/")
        return cls(quantity, int(layer), kind)


#: Feature quantities and their number of columns.
QUANTITIES: dict[str, int] = {
    "delta": N_POWER,
    "z": N_POWER,
    "lognorm": N_SCALAR,
    "dsq": N_SCALAR,
    "gradw": N_SCALAR,
    "stein": N_STEIN,
    "steinmv": N_STEIN_MV,
    "cv": 4,  # (y, c, yc, c²) of deltastats.stats.controls
}


@numba.njit(inline="always", **_JIT)
def _lane_sums(x, c, inv):
    """(Σ_i a_i, Σ_i a_i²) with a_i = (x_i − c)·inv, of a 1-D array in float64, in four
    interleaved partial sums (a fixed order: four short chains of dependent additions instead
    of one long one)."""
    N = x.size
    s0 = s1 = s2 = s3 = 0.0
    q0 = q1 = q2 = q3 = 0.0
    n4 = N - N % 4
    for i in range(0, n4, 4):
        a0 = (np.float64(x[i]) - c) * inv
        a1 = (np.float64(x[i + 1]) - c) * inv
        a2 = (np.float64(x[i + 2]) - c) * inv
        a3 = (np.float64(x[i + 3]) - c) * inv
        s0 += a0
        s1 += a1
        s2 += a2
        s3 += a3
        q0 += a0 * a0
        q1 += a1 * a1
        q2 += a2 * a2
        q3 += a3 * a3
    for i in range(n4, N):
        a = (np.float64(x[i]) - c) * inv
        s0 += a
        q0 += a * a
    return (s0 + s1) + (s2 + s3), (q0 + q1) + (q2 + q3)


@numba.njit(inline="always", **_JIT)
def _add_powers(acc, row, x, shifts, shift, inv):
    """acc[row + k − 1, j] += yᵏ, k = 1 … 4, with y = ((x_j − shifts[j]) − shift)·inv.

    A loop that writes only these four rows has few enough possible overlaps for the compiler
    to check them at run time and vectorize over j; one loop updating all seventeen sums stays
    scalar."""
    for j in range(x.size):
        y = ((np.float64(x[j]) - shifts[j]) - shift) * inv
        y2 = y * y
        acc[row, j] += y
        acc[row + 1, j] += y2
        acc[row + 2, j] += y2 * y
        acc[row + 3, j] += y2 * y2


@numba.njit(inline="always", **_JIT)
def _add_cross(acc, row, x, shifts, inv, e):
    """acc[row, j] += e · (x_j − shifts[j])·inv."""
    for j in range(x.size):
        acc[row, j] += e * ((np.float64(x[j]) - shifts[j]) * inv)


@numba.njit(inline="always", **_JIT)
def _add_powers4(acc, row, x0, x1, x2, x3, shifts, shift, inv):
    """:func:`_add_powers` of four rows x0 … x3 in one sweep: each sum adds the four rows'
    terms one at a time in row order, (((acc + y₀) + y₁) + y₂) + y₃ — exactly four calls of
    :func:`_add_powers` (the same bits), with the sums loaded and stored once per four rows
    instead of once per row."""
    for j in range(x0.size):
        c = shifts[j]
        y0 = ((np.float64(x0[j]) - c) - shift) * inv
        y1 = ((np.float64(x1[j]) - c) - shift) * inv
        y2 = ((np.float64(x2[j]) - c) - shift) * inv
        y3 = ((np.float64(x3[j]) - c) - shift) * inv
        q0, q1, q2, q3 = y0 * y0, y1 * y1, y2 * y2, y3 * y3
        acc[row, j] = (((acc[row, j] + y0) + y1) + y2) + y3
        acc[row + 1, j] = (((acc[row + 1, j] + q0) + q1) + q2) + q3
        acc[row + 2, j] = (((acc[row + 2, j] + q0 * y0) + q1 * y1) + q2 * y2) + q3 * y3
        acc[row + 3, j] = (((acc[row + 3, j] + q0 * q0) + q1 * q1) + q2 * q2) + q3 * q3


@numba.njit(inline="always", **_JIT)
def _add_cross4(acc, row, x0, x1, x2, x3, shifts, inv, e0, e1, e2, e3):
    """:func:`_add_cross` of four rows with their factors e0 … e3, in row order (the same
    bits as four calls)."""
    for j in range(x0.size):
        c = shifts[j]
        acc[row, j] = (
            (
                (acc[row, j] + e0 * ((np.float64(x0[j]) - c) * inv))
                + e1 * ((np.float64(x1[j]) - c) * inv)
            )
            + e2 * ((np.float64(x2[j]) - c) * inv)
        ) + e3 * ((np.float64(x3[j]) - c) * inv)


@numba.njit(inline="always", **_JIT)
def _write_powers(out, sums, B):
    """out = (p₁, p₂, p₃, p₄, p₁², p₂) from the sums of y¹ … y⁴ over the B inputs."""
    p1, p2 = sums[0] / B, sums[1] / B
    out[P1] = p1
    out[P2] = p2
    out[P3] = sums[2] / B
    out[P4] = sums[3] / B
    out[P1_SQ] = p1 * p1
    out[R] = p2


@numba.njit(**_JIT)
def _layer_features(
    d,
    z,
    cd,
    cz,
    cd_pool,
    cz_pool,
    inv_d,
    inv_z,
    log_s2,
    ell,
    c_lognorm,
    c_dsq,
    delta_unit,
    z_unit,
    stein_unit,
    delta_pool,
    z_pool,
    stein_pool,
    lognorm,
    dsq,
):
    # delta_unit, z_unit (M, n, N_POWER) and stein_unit (M, n, N_STEIN): per-unit features;
    # delta_pool, z_pool (M, N_POWER) and stein_pool (M, N_STEIN): the same pooled over the
    # layer; lognorm, dsq (M, N_SCALAR). Any strides (views of a FeatureStack). Values are in
    # units of the scales (inv_d = 1/s_δ, inv_z = 1/s_z, powers of two; log_s2 = log s_δ²);
    # ell arrives scaled.
    M, B, n = d.shape
    # Per-unit sums over the inputs b: rows 0-3 y_d¹…⁴, 4-7 y_z¹…⁴, 8 ℓ·y_z, and 9-16 the same
    # powers with the pooled (mean) shift.
    acc = np.empty((17, n))
    unit, pool = acc[:9], acc[9:]
    zeros = np.zeros(n)
    for m in range(M):
        acc[:] = 0.0
        ell_sum = r_d = r_z = ez = t1 = t2 = s1 = s2 = 0.0
        # The per-unit sums over b, four inputs per sweep (the same bits as one at a time).
        B4 = B - B % 4
        for b in range(0, B4, 4):
            d0, d1, d2, d3 = d[m, b], d[m, b + 1], d[m, b + 2], d[m, b + 3]
            z0, z1, z2, z3 = z[m, b], z[m, b + 1], z[m, b + 2], z[m, b + 3]
            e0, e1, e2, e3 = ell[m, b], ell[m, b + 1], ell[m, b + 2], ell[m, b + 3]
            _add_powers4(acc, 0, d0, d1, d2, d3, cd, 0.0, inv_d)
            _add_powers4(acc, 4, z0, z1, z2, z3, cz, 0.0, inv_z)
            _add_cross4(acc, 8, z0, z1, z2, z3, cz, inv_z, e0, e1, e2, e3)
            _add_powers4(acc, 9, d0, d1, d2, d3, zeros, cd_pool, inv_d)
            _add_powers4(acc, 13, z0, z1, z2, z3, zeros, cz_pool, inv_z)
        for b in range(B4, B):
            drow, zrow = d[m, b], z[m, b]
            _add_powers(acc, 0, drow, cd, 0.0, inv_d)
            _add_powers(acc, 4, zrow, cz, 0.0, inv_z)
            _add_cross(acc, 8, zrow, cz, inv_z, ell[m, b])
            _add_powers(acc, 9, drow, zeros, cd_pool, inv_d)
            _add_powers(acc, 13, zrow, zeros, cz_pool, inv_z)
        for b in range(B):
            e = ell[m, b]
            drow, zrow = d[m, b], z[m, b]
            # Row sums: shift first, then sum (no cancellation in the row means).
            row_d = _lane_sums(drow, cd_pool, inv_d)[0]
            row_z = _lane_sums(zrow, cz_pool, inv_z)[0]
            row_dd = _lane_sums(drow, 0.0, inv_d)[1]  # Σ_j (δ_bj/s_δ)²
            ybar = row_d / n  # unit-averaged shifted δ of this input
            r_d += ybar * ybar
            zbar = row_z / n  # unit-averaged shifted z of this input
            r_z += zbar * zbar
            ez += e * zbar
            ms = row_dd / n  # ‖δ_b‖² / (n s_δ²)
            # log(‖δ_b‖²/n) = log ms + log s_δ²; −inf when δ_b = 0 exactly (dead ReLU layer).
            t = (math.log(ms) + log_s2) - c_lognorm
            t1 += t
            t2 += t * t
            sq = ms - c_dsq * (inv_d * inv_d)  # (‖δ_b‖²/n − c_dsq) / s_δ²
            s1 += sq
            s2 += sq * sq
            ell_sum += e
        for j in range(n):
            # δ, z: p_k = mean_b y^k
            _write_powers(delta_unit[m, j], unit[0:4, j], B)
            _write_powers(z_unit[m, j], unit[4:8, j], B)
            stein_unit[m, j, ST_LOSS] = ell_sum / B
            stein_unit[m, j, ST_LOSS_Z] = unit[8, j] / B
            stein_unit[m, j, ST_Z] = z_unit[m, j, P1]
            stein_unit[m, j, ST_Z_SQ] = z_unit[m, j, P2]
            stein_unit[m, j, ST_DELTA] = delta_unit[m, j, P1]
        Bn = B * n
        for k in range(4):  # pooled P1 … P4 of δ (rows 0-3 of pool) and z (rows 4-7)
            total_d = total_z = 0.0
            for j in range(n):
                total_d += pool[k, j]
            for j in range(n):
                total_z += pool[4 + k, j]
            delta_pool[m, P1 + k] = total_d / Bn
            z_pool[m, P1 + k] = total_z / Bn
        delta_pool[m, P1_SQ] = delta_pool[m, P1] * delta_pool[m, P1]
        z_pool[m, P1_SQ] = z_pool[m, P1] * z_pool[m, P1]
        delta_pool[m, R] = r_d / B
        z_pool[m, R] = r_z / B
        stein_pool[m, ST_LOSS] = ell_sum / B
        stein_pool[m, ST_LOSS_Z] = ez / B
        stein_pool[m, ST_Z] = z_pool[m, P1]
        stein_pool[m, ST_Z_SQ] = z_pool[m, P2]
        stein_pool[m, ST_DELTA] = delta_pool[m, P1]
        for out, u1, u2 in ((lognorm, t1, t2), (dsq, s1, s2)):
            out[m, MEAN] = u1 / B
            out[m, MEAN_SQ] = u2 / B
            out[m, SQ_MEAN] = (u1 / B) * (u1 / B)


#: Below this largest |x − c| of the first network, features are not scaled (s = 1). The
#: between-network covariance of the features holds eighth powers: (2⁶⁴)⁸ = 2⁵¹² leaves a factor
#: 2⁶⁴ of headroom in x for the other networks in float64.
UNSCALED_MAX = 2.0**64


def power_of_two_scale(y: np.ndarray) -> float:
    """The scale s of a feature array, from the first network's shifted values ``y = x − c``.

    1 when max|y| < :data:`UNSCALED_MAX` (every ordinary run, whose features are then the
    plain ones bit for bit); otherwise the power of two nearest the root mean square of y, so
    that (y/s)⁸ (the covariance of the fourth powers) of networks up to 2¹²⁰ times larger
    still fits in float64. Non-finite or empty input gives 1.

    >>> power_of_two_scale(np.array([1e3, -2e3]))
    1.0
    >>> power_of_two_scale(np.array([1e90, -1e90])) == 2.0 ** round(np.log2(1e90))
    True
    """
    y = np.asarray(y, dtype=np.float64)
    y = y[np.isfinite(y)]
    if y.size == 0:
        return 1.0
    with np.errstate(over="ignore"):
        peak = float(np.max(np.abs(y)))
        if peak < UNSCALED_MAX:
            return 1.0
        rms = peak * float(np.sqrt(np.mean((y / peak) ** 2)))
    return float(2.0 ** round(math.log2(rms)))


def _check_scale(scale: float, name: str) -> float:
    s = float(scale)
    if not (s > 0 and np.isfinite(s) and math.frexp(s)[0] == 0.5):
        raise ValueError(f"{name} must be a positive power of two, got {scale!r}")
    return s


def supported(*arrays: np.ndarray) -> bool:
    """Whether :func:`layer_features` takes these trace arrays (C-contiguous float64/float32)."""
    return all(
        a.dtype in (np.float64, np.float32) and a.flags.c_contiguous and a.dtype == arrays[0].dtype
        for a in arrays
    )


def layer_features(
    delta: np.ndarray,
    z: np.ndarray,
    c_delta: np.ndarray,
    c_z: np.ndarray,
    ell: np.ndarray,
    c_lognorm: float,
    c_dsq: float,
    *,
    scale_delta: float = 1.0,
    scale_z: float = 1.0,
    out: dict | None = None,
) -> dict[str, np.ndarray]:
    """Every per-network feature of one layer in one pass (float64 results).

    Parameters
    ----------
    delta, z : ndarray, shape ``(M, B, n)``
        δ⁽ˡ⁾ and z⁽ˡ⁾ of M networks, C-contiguous, one dtype (float64 or float32).
    c_delta, c_z : ndarray, shape ``(n,)``
        Per-unit shifts; the pooled features use their means.
    ell : ndarray, shape ``(M, B)``
        Shifted per-sample loss ℓ = L − c_L.
    c_lognorm, c_dsq : float
        Shifts of log(‖δ_b‖²/n) and ‖δ_b‖²/n.
    scale_delta, scale_z : float
        Powers of two s (:func:`power_of_two_scale`): the δ and z features are powers of
        (x − c)/s (and the ‖δ‖² features are in units of s_δ²), so a finite trace whose fourth
        powers would overflow float64 stays finite. Dividing by a power of two is exact, so
        s = 1 gives the plain features bit for bit. ``ell`` must already be in its own units.
    out : dict, optional
        Arrays to write the features into (e.g. views of a
        :class:`~deltastats.stats.stacked.FeatureStack`), by the names below, each float64 of
        the shape below and any strides; names not given are allocated.

    Returns
    -------
    dict
        ``"delta/unit"``, ``"z/unit"`` ``(M, n, 6)`` = (p₁, p₂, p₃, p₄, p₁², p₂) with
        p_k = mean_b (x − c)ᵏ; ``"stein/unit"`` ``(M, n, 5)`` = (ℓ̄, mean_b ℓ·(z − c_z), p₁(z),
        p₂(z), p₁(δ)); ``"delta/pool"``, ``"z/pool"`` ``(M, 1, 6)`` = (P₁…P₄, P₁², R) over
        all (b, j) with the mean shift, R = mean_b ȳ_b²; ``"stein/pool"`` ``(M, 1, 5)``;
        ``"lognorm/pool"``, ``"dsq/pool"`` ``(M, 1, 3)`` = (mean t, mean t², (mean t)²).
    """
    if not supported(delta, z) or delta.shape != z.shape or delta.ndim != 3:
        raise ValueError("layer_features needs C-contiguous (M, B, n) float arrays of one dtype")
    M, B, n = delta.shape
    c_delta = np.ascontiguousarray(c_delta, dtype=np.float64)
    c_z = np.ascontiguousarray(c_z, dtype=np.float64)
    ell = np.ascontiguousarray(ell, dtype=np.float64)
    # The compiled loops do not check indices: every shape is checked here.
    if c_delta.shape != (n,) or c_z.shape != (n,):
        raise ValueError(
            f"shifts of shape {c_delta.shape} and {c_z.shape} do not match the layer width {n}"
        )
    if ell.shape != (M, B):
        raise ValueError(f"ell must have shape {(M, B)} (networks, inputs), got {ell.shape}")
    res = {}
    for name, S, k in LAYER_OUTPUTS:
        a = (out or {}).get(name)
        S = n if S is None else S
        if a is None:
            a = np.empty((M, S, k))
        elif a.shape != (M, S, k) or a.dtype != np.float64:
            raise ValueError(f"out[{name!r}] must be float64 of shape {(M, S, k)}")
        res[name] = a
    # The compiled loop writes every output of every network (no index checks: the shapes are
    # checked above).
    _layer_features(
        delta,
        z,
        c_delta,
        c_z,
        float(c_delta.mean()),
        float(c_z.mean()),
        1.0 / _check_scale(scale_delta, "scale_delta"),
        1.0 / _check_scale(scale_z, "scale_z"),
        2.0 * math.log(scale_delta),
        ell,
        float(c_lognorm),
        float(c_dsq),
        res["delta/unit"],
        res["z/unit"],
        res["stein/unit"],
        *(res[k][:, 0] for k in ("delta/pool", "z/pool", "stein/pool", "lognorm/pool", "dsq/pool")),
    )
    return res


#: The outputs of :func:`layer_features`: name, slots S (``None``: the layer width) and
#: columns, in the order the accumulators store them.
LAYER_OUTPUTS = (
    ("delta/unit", None, N_POWER),
    ("delta/pool", 1, N_POWER),
    ("z/unit", None, N_POWER),
    ("z/pool", 1, N_POWER),
    ("lognorm/pool", 1, N_SCALAR),
    ("dsq/pool", 1, N_SCALAR),
    ("stein/unit", None, N_STEIN),
    ("stein/pool", 1, N_STEIN),
)


#: Partial sums of :func:`_wide_sums`: enough independent chains of additions to keep the
#: vector units busy on a weight gradient (10⁴–10⁶ entries), where four chains
#: (:func:`_lane_sums`, sized for a row of δ) leave the sweep bound by the adds' latency.
_WIDE = 64


@numba.njit(**_JIT)
def _wide_sums(x, c, inv, s, q):
    """(Σ_i a_i, Σ_i a_i²) with a_i = (x_i − c)·inv, in float64, in :data:`_WIDE` partial sums
    (lane q sums the entries i ≡ q mod _WIDE in order; then a fixed pairwise tree over the
    lanes): a fixed order, whatever the machine's vector width. ``s``, ``q`` (_WIDE,) scratch
    (two arrays, not rows of one, so that the compiler sees they cannot overlap)."""
    N = x.size
    W = _WIDE
    s[:] = 0.0
    q[:] = 0.0
    nW = N - N % W
    for i in range(0, nW, W):
        for k in range(W):
            a = (np.float64(x[i + k]) - c) * inv
            s[k] += a
            q[k] += a * a
    for i in range(nW, N):
        a = (np.float64(x[i]) - c) * inv
        s[i - nW] += a
        q[i - nW] += a * a
    w = W
    while w > 1:
        w //= 2
        for k in range(w):
            s[k] += s[k + w]
            q[k] += q[k + w]
    return s[0], q[0]


@numba.njit(**_JIT)
def _weight_features(g, c, inv, out):
    N = g.shape[1]
    s, q = np.empty(_WIDE), np.empty(_WIDE)
    for m in range(g.shape[0]):
        total, squares = _wide_sums(g[m], c, inv, s, q)
        mean = total / N
        out[m, 0, MEAN] = mean
        out[m, 0, MEAN_SQ] = squares / N
        out[m, 0, SQ_MEAN] = mean * mean


def weight_features(
    grad: np.ndarray, c: float, scale: float = 1.0, out: np.ndarray | None = None
) -> np.ndarray:
    """Per-network (mean, mean of squares, squared mean) of ``(grad − c)/scale`` over all
    entries (``scale`` a power of two, as in :func:`layer_features`).

    Parameters
    ----------
    grad : ndarray, shape ``(M, …)``
        A layer's weight gradients (float64 or float32).
    c : float
        Shift.
    out : ndarray, shape ``(M, 1, 3)``, float64, optional
        Where to write the features (any strides); allocated if not given.

    Returns
    -------
    ndarray, shape ``(M, 1, 3)``, float64
    """
    dtype = np.float32 if grad.dtype == np.float32 else np.float64
    g = np.ascontiguousarray(grad, dtype=dtype).reshape(grad.shape[0], -1)
    if out is None:
        out = np.empty((g.shape[0], 1, N_SCALAR))
    elif out.shape != (g.shape[0], 1, N_SCALAR) or out.dtype != np.float64:
        raise ValueError(f"out must be float64 of shape {(g.shape[0], 1, N_SCALAR)}")
    _weight_features(g, float(c), 1.0 / _check_scale(scale, "scale"), out)
    return out


# The Gram matrices are symmetric, so from :data:`SYRK_MIN_ROWS` inputs on BLAS's symmetric
# rank-k update (dsyrk: one triangle, half the multiplications of a general product) forms
# them: 1.3× faster at B = 48 and 1.6× at B = 128 for rows of 128 (measured on an AVX-512
# Xeon); below that a general product is faster (its fixed cost per call is lower). dsyrk is
# scipy's BLAS routine (the library numba's own ``np.dot`` calls), reached from compiled code
# through its C address. The address is an argument of the kernels, not a constant in them, so
# they stay in numba's cache (a new process loads scipy elsewhere). Arguments are pointers, as
# in Fortran.
_PTR = ctypes.c_void_p
#: scipy's ``dsyrk(uplo, trans, n, k, alpha, a, lda, beta, c, ldc)``.
_DSYRK = ctypes.CFUNCTYPE(None, *([_PTR] * 10))(
    get_cython_function_address("scipy.linalg.cython_blas", "dsyrk")
)
#: ``uplo = "L"``, ``trans = "T"`` as the bytes dsyrk reads.
_SYRK_FLAGS = np.frombuffer(b"LT", dtype=np.uint8)
#: Inputs per network from which the Gram matrices are formed by dsyrk (a fixed rule of B, so
#: every network of a run takes the same path and the same bits).
SYRK_MIN_ROWS = 40


@numba.njit(inline="always", **_JIT)
def _gram(syrk, flags, a, x, s, g, ints, coef):
    """The Gram matrix (a_b·a_b') of one network's rows a ``(B, n)`` in float64, of which
    only the upper triangle (entries [b, b'] with b ≤ b') is to be read, and the rows' sums s
    ``(B,)``; x ``(B, n)`` float64 scratch, g ``(B, B)`` float64 for dsyrk's result. One BLAS
    call (the same shapes, hence the same bits, for every network in any chunk) from compiled
    code, so a layer of M networks costs one Python call, not M.

    From :data:`SYRK_MIN_ROWS` rows, dsyrk into g: x in C order is the Fortran matrix
    A = xᵀ ``(n, B)``, so the Gram matrix is AᵀA (trans = "T"), and dsyrk's Fortran lower
    triangle (uplo = "L") is the upper one in C order (``ints`` (4,) int32 and ``coef`` (2,)
    float64 hold the Fortran scalars). Below, the general product x·xᵀ."""
    B, n = a.shape
    for b in range(B):
        for j in range(n):
            x[b, j] = a[b, j]
        s[b] = _lane_sums(x[b], 0.0, 1.0)[0]
    if B >= SYRK_MIN_ROWS:
        ints[0], ints[1], ints[2], ints[3] = B, n, n, B  # n, k, lda, ldc of dsyrk
        coef[0], coef[1] = 1.0, 0.0  # alpha, beta
        syrk(
            flags[0:].ctypes, flags[1:].ctypes, ints[0:].ctypes, ints[1:].ctypes,
            coef[0:].ctypes, x.ctypes, ints[2:].ctypes, coef[1:].ctypes, g.ctypes,
            ints[3:].ctypes,
        )  # fmt: skip
        return g
    return np.dot(x, x.T)


@numba.njit(**_JIT)
def _gram_weight_features(d, h, c, inv, out, syrk, flags):
    # d (M, B, n_l): δ; h (M or 1, B, n_{l−1}): the layer's inputs, per network or shared.
    M, B = d.shape[0], d.shape[1]
    N = d.shape[2] * h.shape[2]
    xd, xh = np.empty((B, d.shape[2])), np.empty((B, h.shape[2]))
    sd, sh = np.empty(B), np.empty(B)
    ints, coef = np.empty(4, dtype=np.int32), np.empty(2)
    gd_out, gh_out = np.empty((B, B)), np.empty((B, B))
    gh = gh_out  # set for network 0 below (and per network when h is)
    for m in range(M):
        gd = _gram(syrk, flags, d[m], xd, sd, gd_out, ints, coef)
        if m == 0 or h.shape[0] == M:
            gh = _gram(syrk, flags, h[m if h.shape[0] == M else 0], xh, sh, gh_out, ints, coef)
        # G = (1/B) Σ_b δ_b h_bᵀ: ΣG = (1/B) Σ_b (1ᵀδ_b)(1ᵀh_b), ‖G‖²_F = (1/B²) Σ_bb' (δ_b·δ_b')
        # (h_b·h_b'), the off-diagonal pairs once (the upper triangles), doubled.
        s1 = 0.0
        diag = 0.0
        off = 0.0
        for b in range(B):
            s1 += sd[b] * sh[b]
            diag += gd[b, b] * gh[b, b]
            for b2 in range(b + 1, B):
                off += gd[b, b2] * gh[b, b2]
        s1 /= B
        s2 = (diag + 2.0 * off) / (B * B)
        # Σ(G − c) = ΣG − Nc and Σ(G − c)² = ΣG² − 2cΣG + Nc², in units of the scale.
        mean = (s1 - N * c) * inv / N
        out[m, 0, MEAN] = mean
        out[m, 0, MEAN_SQ] = ((s2 - 2.0 * c * s1) + N * c * c) * (inv * inv) / N
        out[m, 0, SQ_MEAN] = mean * mean


def gram_weight_features(
    delta: np.ndarray,
    h_prev: np.ndarray,
    c: float,
    scale: float = 1.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`weight_features` of the batch-mean weight gradient G = (1/B) Σ_b δ_b h_bᵀ
    (no weight decay) from δ and h directly, never forming G.

    With the B × B Gram matrices (δ_b·δ_b') and (h_b·h_b'), ‖G‖²_F = (1/B²) Σ_bb' (δ_b·δ_b')
    (h_b·h_b') and ΣG = (1/B) Σ_b (1ᵀδ_b)(1ᵀh_b): about B²(n_l + n_{l−1}) operations per
    network instead of the B·n_l·n_{l−1} of the gradient's product (and reading it back),
    for B ≪ n. The shift enters after the sums (Σ(G − c)² = ‖G‖² − 2cΣG + Nc²), so the
    features agree with :func:`weight_features` of the materialized gradient to rounding
    relative to ‖G‖²/N (≈ 1e-15 when c is not far above the entries' spread; c is network 0's
    entry mean, so it never is for a typical network).

    Parameters
    ----------
    delta : ndarray, shape ``(M, B, n_l)``
        δ⁽ˡ⁾ (float64 or float32).
    h_prev : ndarray, shape ``(M, B, n_{l−1})`` or ``(B, n_{l−1})``
        The layer's inputs h⁽ˡ⁻¹⁾ (x for layer 1), per network or shared.
    c, scale, out
        As in :func:`weight_features`.

    Returns
    -------
    ndarray, shape ``(M, 1, 3)``, float64
    """
    d = np.ascontiguousarray(delta)
    h = np.ascontiguousarray(h_prev)
    h = h[None] if h.ndim == 2 else h
    if d.ndim != 3 or h.ndim != 3 or h.shape[0] not in (1, d.shape[0]) or h.shape[1] != d.shape[1]:
        raise ValueError(
            f"delta (M, B, n_l) and h_prev (M, B, n) do not match: {d.shape}, {h.shape}"
        )
    if out is None:
        out = np.empty((d.shape[0], 1, N_SCALAR))
    elif out.shape != (d.shape[0], 1, N_SCALAR) or out.dtype != np.float64:
        raise ValueError(f"out must be float64 of shape {(d.shape[0], 1, N_SCALAR)}")
    with single_threaded_blas():  # the accumulator's threads run side by side
        _gram_weight_features(
            d, h, float(c), 1.0 / _check_scale(scale, "scale"), out, _DSYRK, _SYRK_FLAGS
        )
    return out


def block_moments(
    features: np.ndarray, rows: np.ndarray, groups: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, co-moment and jackknife group sums of the selected networks of one block.

    Parameters
    ----------
    features : ndarray, shape ``(K, S, k)``, float64
    rows : ndarray of int, shape ``(n,)``
        The networks (rows of ``features``) to include, in order.
    groups : ndarray of int, shape ``(n,)``
        Their jackknife groups, ``0 ≤ groups < n_groups``.
    n_groups : int

    Returns
    -------
    mean : ndarray ``(S, k)`` — F̄ (zeros when n = 0)
    comoment : ndarray ``(S, k, k)`` — Σ (F − F̄)(F − F̄)ᵀ (two passes)
    group_sum : ndarray ``(n_groups, S, k)`` — Σ F over each group
    """
    f = np.ascontiguousarray(features, dtype=np.float64)
    rows = np.asarray(rows, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    # The compiled loops do not check indices: every index is checked here.
    if f.ndim != 3 or rows.ndim != 1 or rows.shape != groups.shape:
        raise ValueError("block_moments needs features (K, S, k) and rows, groups of one length")
    if rows.size and (rows.min() < 0 or rows.max() >= f.shape[0]):
        raise ValueError(f"rows must index the {f.shape[0]} networks of the block")
    if groups.size and (groups.min() < 0 or groups.max() >= n_groups):
        raise ValueError(f"groups must lie in 0 … {n_groups - 1}")
    # One feature array is a stack of one array (the accumulators' compiled reduction).
    stack = FeatureStack.of({"f": f}, f.shape[0])
    mean, com, gsum = stack.layout.reduce(stack.data, rows, groups, n_groups)
    lay = stack.layout
    return lay.arrays(mean)["f"], lay.arrays(com, comoments=True)["f"], lay.arrays(gsum)["f"]


def _stein_mv_parts(params, x: np.ndarray, trace, q0: float):
    """Per-network conditional Stein estimates at layer 1 (Gaussian inputs x ~ N(0, q₀I)).

    Given W = W⁽¹⁾, b = b⁽¹⁾ of network m, z⁽¹⁾ = Wx + b ~ N(b, Σ) exactly with Σ = q₀WWᵀ, so
    Stein's lemma E[(z − μ)L] = Σ E[∇_z L] gives, per network,

        s_m = Σ⁻¹ · (1/B) Σ_b (z_b − b) L_b           (multivariate, exact identity)
        u_m = diag(Σ)⁻¹ · (1/B) Σ_b (z_b − b) L_b     (univariate form, ignores unit correlation)

    ``params`` is the networks' :class:`~deltastats.model.networks.Params`, ``trace`` their
    :class:`~deltastats.engine.passes.Trace`. Returns ``(s, u)``, each ``(M, n_1)``.
    """
    W = np.asarray(params.weights[0], dtype=np.float64)
    b = np.asarray(params.biases[0], dtype=np.float64)
    z = np.asarray(trace.z[0], dtype=np.float64)
    L = np.asarray(trace.loss, dtype=np.float64)
    cov_zl = np.mean((z - b[:, None, :]) * L[:, :, None], axis=1)  # (M, n1)
    sigma = q0 * np.matmul(W, W.swapaxes(-1, -2))  # (M, n1, n1)
    try:
        s = np.linalg.solve(sigma, cov_zl[..., None])[..., 0]
    except np.linalg.LinAlgError:  # a singular Σ (measure zero): least-squares solution
        s = np.matmul(np.linalg.pinv(sigma), cov_zl[..., None])[..., 0]
    u = cov_zl / np.diagonal(sigma, axis1=-2, axis2=-1)
    return s, u
