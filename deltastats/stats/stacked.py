"""Per-network feature arrays stacked into one ``(M, F)`` array, and their compiled reduction.

:class:`~deltastats.stats.accumulators.FeatureAccumulator` keeps, per feature array of shape
``(S, k)``, a mean, a co-moment per slot and jackknife group sums (its module docstring). A
backprop trace of depth 10 has about ninety such arrays, so reducing them one by one costs
ninety rounds of Python and numpy overhead per block and per merge — more than the arithmetic.
Here every network's arrays sit side by side in one row of an ``(M, F)`` float64 array
(F = Σ S·k), described once by a :class:`FeatureLayout`; a block is reduced and two blocks are
merged by one compiled call each.

Each array's entries are stored feature-major, ``(k, S)`` (all slots of feature 0, then of
feature 1, …), and its co-moments ``(k, k, S)``: the co-moment loop runs over the slots s
(the units of a layer, unit-stride) for each pair of features, so its deviations are read
contiguously from a row. :meth:`FeatureLayout.split` gives the usual ``(S, k)`` and
``(S, k, k)`` views.

The arithmetic is that of the per-array loops, operation for operation and in the same order
(sums over the networks in network order, then the division; co-moments two-pass; Chan's
merge as ``(C_a + C_b) + (d_i·d_j)·(n_a·n_b/n)``), so the results are bit for bit those of the
per-array reduction, and as before depend on nothing but the networks of the block.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from functools import partial

import numba
import numpy as np

from .._jit import JIT as _JIT
from .._parallel import side_by_side


@dataclass(frozen=True, eq=False)
class FeatureLayout:
    """Names and ``(S, k)`` shapes of the feature arrays, and where each sits in a row.

    ``offsets[a]`` is the first column of array a in a stacked row (``offsets[-1]`` = F),
    entry (s, i) of the array at column ``offsets[a] + i·S + s``; ``com_offsets[a]`` the first
    entry of its co-moments in the flat co-moment vector (``com_offsets[-1]`` = C = Σ S·k²),
    entry (s, i, j) at ``com_offsets[a] + (i·k + j)·S + s``. ``shape_array`` ``(A, 2)`` int64:
    the ``(S, k)`` of every array, the compiled kernels' form of ``shapes``.
    """

    names: tuple
    shapes: tuple
    offsets: np.ndarray = field(repr=False)
    com_offsets: np.ndarray = field(repr=False)
    shape_array: np.ndarray = field(repr=False)

    @classmethod
    def of(cls, shapes: Mapping) -> FeatureLayout:
        """The layout of arrays ``name → (S, k)``, in the mapping's order."""
        names = tuple(shapes)
        dims = tuple((int(shapes[n][0]), int(shapes[n][1])) for n in names)
        size = np.array([S * k for S, k in dims], dtype=np.int64)
        com = np.array([S * k * k for S, k in dims], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(size)]).astype(np.int64)
        com_offsets = np.concatenate([[0], np.cumsum(com)]).astype(np.int64)
        shape_array = np.array(dims, dtype=np.int64).reshape(-1, 2)
        return cls(names, dims, offsets, com_offsets, shape_array)

    @property
    def width(self) -> int:
        """F, the columns of a stacked row."""
        return int(self.offsets[-1])

    @property
    def n_comoments(self) -> int:
        """C, the entries of the flat co-moment vector."""
        return int(self.com_offsets[-1])

    def same(self, other: FeatureLayout | None) -> bool:
        """Whether ``other`` has the same arrays, shapes and order."""
        return other is not None and (self.names, self.shapes) == (other.names, other.shapes)

    def shape_dict(self) -> dict:
        """``name → (S, k)``, in order."""
        return dict(zip(self.names, self.shapes))

    def split(
        self, flat: np.ndarray, *, comoments: bool = False, names: Container[str] | None = None
    ) -> dict:
        """Per-array ``(…, S, k)`` views of a stacked ``(…, F)`` array (or ``(S, k, k)`` views
        of a flat co-moment vector ``(C,)``), strided: the storage is feature-major.
        ``names``: only these arrays (a container of names; default all)."""
        out = {}
        offsets = self.com_offsets if comoments else self.offsets
        for a, (name, (S, k)) in enumerate(zip(self.names, self.shapes)):
            if names is not None and name not in names:
                continue
            piece = flat[..., offsets[a] : offsets[a + 1]]
            lead = piece.shape[:-1]
            if comoments:
                out[name] = np.moveaxis(piece.reshape(lead + (k, k, S)), -1, -3)
            else:
                out[name] = np.swapaxes(piece.reshape(lead + (k, S)), -1, -2)
        return out

    def arrays(
        self, flat: np.ndarray, *, comoments: bool = False, names: Container[str] | None = None
    ) -> dict:
        """Like :meth:`split`, as C-contiguous copies."""
        views = self.split(flat, comoments=comoments, names=names)
        return {k: np.ascontiguousarray(v) for k, v in views.items()}

    def reduce(self, data: np.ndarray, rows: np.ndarray, groups: np.ndarray, n_groups: int):
        """Flat mean ``(F,)``, co-moments ``(C,)`` and group sums ``(n_groups, F)`` of the rows
        ``rows`` (in groups ``groups``) of a stacked block ``data`` (:func:`reduce_rows`)."""
        mean = np.empty(self.width)
        com = np.empty(self.n_comoments)
        gsum = np.empty((n_groups, self.width))
        shapes = self.shape_array
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        groups = np.ascontiguousarray(groups, dtype=np.int64)
        args = (data, rows, groups, self.offsets, shapes, self.com_offsets, mean, com, gsum)
        # Both array bounds are always passed: numba calls that leave out a default argument
        # take a slow path (≈ 0.1 ms per call, measured), more than the reduction of a block.
        A = len(self.names)
        if A < 2:
            reduce_rows(*args, 0, A)
        else:
            # Two halves of the arrays (of about equal work) side by side: disjoint columns
            # and co-moments, each computed as in one call (the same bits).
            half = self._half()
            side_by_side(
                [partial(reduce_rows, *args, 0, half), partial(reduce_rows, *args, half, A)]
            )
        return mean, com, gsum

    def _half(self) -> int:
        """The array index that splits the reduction's work (S·k + S·k² per array) in two."""
        if not hasattr(self, "_split"):
            shapes = self.shape_array
            work = np.cumsum(shapes[:, 0] * shapes[:, 1] * (1 + shapes[:, 1]))
            split = int(np.searchsorted(work, work[-1] / 2)) + 1
            object.__setattr__(self, "_split", min(max(split, 1), len(self.names) - 1))
        return self._split


class FeatureStack(Mapping):
    """Per-network feature arrays of M networks stacked in one ``(M, F)`` float64 array.

    A mapping ``name → (M, S, k)`` view, so it can be filled in place (the feature kernels'
    ``out=``) and given to :meth:`FeatureAccumulator.update
    <deltastats.stats.accumulators.FeatureAccumulator.update>` without a copy.
    """

    def __init__(self, layout: FeatureLayout, data: np.ndarray) -> None:
        if data.ndim != 2 or data.shape[1] != layout.width or data.dtype != np.float64:
            raise ValueError(f"a stack of this layout is (M, {layout.width}) float64")
        self.layout, self.data = layout, data
        self._views = layout.split(data)

    @classmethod
    def empty(cls, layout: FeatureLayout, M: int) -> FeatureStack:
        """An uninitialised stack of M networks."""
        return cls(layout, np.empty((M, layout.width)))

    @classmethod
    def of(cls, features: Mapping, M: int) -> FeatureStack:
        """The arrays ``name → (M, S, k)`` (any float dtype) copied into one stack."""
        layout = FeatureLayout.of({k: v.shape[1:] for k, v in features.items()})
        stack = cls.empty(layout, M)
        for k, v in features.items():
            stack[k][...] = v
        return stack

    def __getitem__(self, name: str) -> np.ndarray:
        return self._views[name]

    def __iter__(self):
        return iter(self.layout.names)

    def __len__(self) -> int:
        return len(self.layout.names)


#: Rows whose products one pass over the co-moments adds (see :func:`reduce_rows`).
_ROWS_PER_PASS = 4


@numba.njit(**_JIT)
def reduce_rows(
    f, rows, groups, offsets, shapes, com_offsets, mean, comoment, group_sum, a_lo=0, a_hi=-1
):
    """Mean ``(F,)``, co-moments ``(C,)`` and group sums ``(G, F)`` of rows ``rows`` of a
    stacked block ``f`` (K, F), the rows in ``groups``; ``shapes`` (A, 2) the (S, k) of each
    array. Zeros when no row is selected. Only arrays ``a_lo … a_hi − 1`` (default all): their
    columns and co-moments are written, each exactly as in a call over all arrays."""
    if a_hi < 0:
        a_hi = shapes.shape[0]
    n = rows.size
    c_lo, c_hi = offsets[a_lo], offsets[a_hi]
    mean[c_lo:c_hi] = 0.0
    comoment[com_offsets[a_lo] : com_offsets[a_hi]] = 0.0
    group_sum[:, c_lo:c_hi] = 0.0
    if n == 0:
        return
    # Loops run over views with indices from 0: numba's wraparound of a negative index
    # (c_lo + c, i·S + s) would make every access a branch and stop the vectorizer.
    mu = mean[c_lo:c_hi]
    for r in range(n):  # in network order, so the sums do not depend on anything else
        row = f[rows[r], c_lo:c_hi]
        gsum = group_sum[groups[r], c_lo:c_hi]
        for c in range(c_hi - c_lo):
            mu[c] += row[c]
            gsum[c] += row[c]
    for c in range(c_hi - c_lo):
        mu[c] /= n
    P = _ROWS_PER_PASS
    for a in range(a_lo, a_hi):
        off, S, k = offsets[a], shapes[a, 0], shapes[a, 1]
        base = com_offsets[a]
        com = comoment[base : base + k * k * S].reshape((k, k, S))
        # Deviations F_r − F̄ of P rows at a time, feature-major (k, S): contiguous in the row.
        dev = np.empty((P, k, S))
        for r0 in range(0, n, P):
            p = min(P, n - r0)
            for q in range(p):
                for i in range(k):
                    lo = off + i * S
                    src, mu_i, dst = f[rows[r0 + q], lo : lo + S], mean[lo : lo + S], dev[q, i]
                    for s in range(S):
                        dst[s] = src[s] - mu_i[s]
            # C_ij += dev_i·dev_j over the slots s (unit-stride, so the loop vectorizes), j ≥ i
            # only (the matrix is symmetric, and dev_i·dev_j = dev_j·dev_i exactly). Each entry
            # adds its rows' products one at a time in network order, (((C + p₁) + p₂) + …),
            # exactly the plain loop Σ_r (F_r − F̄)(F_r − F̄)ᵀ, but C is loaded and stored once
            # per P rows.
            for i in range(k):
                for j in range(i, k):
                    c = com[i, j]
                    if p == P:
                        d0i, d0j, d1i, d1j = dev[0, i], dev[0, j], dev[1, i], dev[1, j]
                        d2i, d2j, d3i, d3j = dev[2, i], dev[2, j], dev[3, i], dev[3, j]
                        for s in range(S):
                            c[s] = (
                                ((c[s] + d0i[s] * d0j[s]) + d1i[s] * d1j[s]) + d2i[s] * d2j[s]
                            ) + d3i[s] * d3j[s]
                    else:
                        for q in range(p):
                            di, dj = dev[q, i], dev[q, j]
                            for s in range(S):
                                c[s] += di[s] * dj[s]
        for i in range(k):
            for j in range(i + 1, k):
                com[j, i, :] = com[i, j, :]


@numba.njit(**_JIT)
def combine_moments(
    n_a, n_b, mean_a, mean_b, com_a, com_b, offsets, shapes, com_offsets, mean, comoment, diff
):
    """Chan et al.'s merge of two disjoint sets of networks (both non-empty): with
    d = F̄_b − F̄_a, F̄ = F̄_a + d·n_b/n and C = (C_a + C_b) + (d_i·d_j)·(n_a·n_b/n).

    ``offsets``, ``shapes``, ``com_offsets`` as in :func:`reduce_rows`; ``diff`` (F,) scratch
    for d. The co-moments are visited array by array, pair (i, j) by pair, over the slots s:
    both deviations and the co-moments are then read contiguously (the loop vectorizes), and
    each entry is the same expression as an entry-by-entry loop (the same bits)."""
    wb = n_b / (n_a + n_b)
    w = n_a * wb
    for c in range(mean.size):
        diff[c] = mean_b[c] - mean_a[c]
        mean[c] = mean_a[c] + diff[c] * wb
    for a in range(shapes.shape[0]):
        off, S, k = offsets[a], shapes[a, 0], shapes[a, 1]
        base = com_offsets[a]
        for i in range(k):
            di = diff[off + i * S : off + (i + 1) * S]
            for j in range(k):
                dj = diff[off + j * S : off + (j + 1) * S]
                e0 = base + (i * k + j) * S
                ca, cb, out = com_a[e0 : e0 + S], com_b[e0 : e0 + S], comoment[e0 : e0 + S]
                for s in range(S):
                    out[s] = (ca[s] + cb[s]) + (di[s] * dj[s]) * w


@numba.njit(**_JIT)
def first_nonfinite_key(f, keys, none):
    """Per row of ``f`` (M, F): the smallest ``keys[c]`` over the columns c where the row is
    not finite, ignoring columns with key ≤ 0; ``none`` for a row without any."""
    out = np.full(f.shape[0], none)
    for m in range(f.shape[0]):
        row = f[m]
        # x − x is 0 for a finite x and NaN (≠ 0) otherwise: an integer count over the row
        # alone (every column: reading the keys too would double the memory traffic), which
        # vectorizes, finds the rare rows to search column by column with the keys.
        bad = 0
        for c in range(row.size):
            bad += row[c] - row[c] != 0.0
        if bad == 0:
            continue
        for c in range(row.size):
            if keys[c] > 0 and keys[c] < out[m] and not np.isfinite(row[c]):
                out[m] = keys[c]
    return out
