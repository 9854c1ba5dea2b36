"""Streaming, mergeable accumulators of per-network summaries (Chan/Welford style).

The sampling design is nested: M independent networks, B inputs through each. The network is
the independent unit, so everything here is organised around **per-network feature vectors**:
for network m a small vector F_m ∈ R^k per *slot* (a unit j of a layer, or the whole layer),
each entry a mean over that network's B inputs, e.g. for δ_j with a fixed shift c_j

    y_b = δ_bj − c_j,   F_m = (p₁, p₂, p₃, p₄, q, r),   p_k = (1/B) Σ_b y_bᵏ,   q = p₁²,   (1)

(r is defined per feature set below). A statistic is then a smooth function θ = f(E[F]) of the
mean feature vector, estimated by f(F̄) with F̄ = (1/M) Σ_m F_m; its uncertainty comes from the
between-network covariance of F_m (:mod:`deltastats.stats.intervals`). The accumulators keep, per
feature array of shape ``(S, k)``:

* the count M, the mean F̄ ``(S, k)`` and the co-moment matrix Σ_m (F_m − F̄)(F_m − F̄)ᵀ
  ``(S, k, k)``, merged with Chan et al.'s pairwise formulas

      n = n_a + n_b,  d = F̄_b − F̄_a,  F̄ = F̄_a + d·n_b/n,  C = C_a + C_b + d dᵀ·n_a n_b/n;  (2)

* per *jackknife group* g (network index mod G) the count and the feature sum ``(G, S, k)``;
* optionally (``keep_networks=True``, for the bootstrap) every F_m: memory O(M·S·k).

Memory is otherwise O(Σ_l n_l · k²) per node, independent of M (plus O(log M) tree nodes).

**Numerical stability.** Raw powers of data offset by 10⁸ lose every digit (10³² − 10³²). Each
feature is therefore a power of ``x − c`` with a fixed shift c taken from the first network fed
(its per-unit batch mean): the classic shifted-data algorithm, stable whenever c is within a
few standard deviations of the mean. Within a block, means and co-moments are two-pass; blocks
merge with (2). Accumulation is float64 whatever the engine dtype.

**Exact chunk invariance.** Floating-point merges are not associative, so results would depend
on chunk sizes. Instead networks are reduced in fixed *blocks* of ``block`` consecutive global
network indices [kK, (k+1)K) (two-pass within the block), and blocks are combined along a fixed
binary tree over block indices: node (level h, index i) covers blocks [i·2ʰ, (i+1)·2ʰ) and is
always formed as combine(node(h−1, 2i), node(h−1, 2i+1)). A binary-counter stack keeps the
O(log M) open nodes. Chunks of any size, and :meth:`FeatureAccumulator.merge` of contiguous
network ranges in any order and any tree, therefore give **bit-for-bit** the same summary as
one pass (partial blocks at the ends are kept as raw per-network buffers until completed).
"""

from __future__ import annotations

import copy
from collections.abc import Container
from dataclasses import dataclass
from functools import partial

import numpy as np

from .. import checks
from .._parallel import side_by_side
from ..engine import Trace
from ..model.networks import MLP, Params
from . import controls
from .features import (
    LAYER_OUTPUTS,
    MEAN,
    N_SCALAR,
    N_STEIN_MV,
    P1,
    FeatureKey,
    _stein_mv_parts,
    gram_weight_features,
    layer_features,
    weight_features,
)
from .shifts import (
    _finite_or_zero,
    _scale,
    _trace_arrays,
    layer_consts,
    network_shifts,
)
from .source import MomentSummary, SummarySource
from .stacked import (
    FeatureLayout,
    FeatureStack,
    combine_moments,
    first_nonfinite_key,
)

#: Default number of networks per reduction block.
DEFAULT_BLOCK = 32
#: Default number of delete-a-group jackknife groups (network index mod G).
DEFAULT_GROUPS = 20


# ---------------------------------------------------------------------------------------------
# Generic feature accumulator
# ---------------------------------------------------------------------------------------------
@dataclass
class _Stats:
    """Reduced statistics of a set of networks: count, means, co-moments, jackknife sums,
    every feature array's side by side (:class:`~deltastats.stats.stacked.FeatureLayout`)."""

    count: int
    mean: np.ndarray  # (F,)
    comoment: np.ndarray  # (C,): each array's (S, k, k) co-moments, flattened
    group_count: np.ndarray  # (G,)
    group_sum: np.ndarray  # (G, F)


@dataclass
class _Node:
    level: int
    index: int
    stats: _Stats


@dataclass
class _Buffer:
    start: int
    features: np.ndarray  # (n, F) float64: the stacked rows of the networks
    valid: np.ndarray  # (n,) bool

    @property
    def end(self) -> int:
        return self.start + self.valid.shape[0]


def _reduce_block(buf: _Buffer, layout: FeatureLayout, n_groups: int) -> _Stats:
    """Two-pass reduction of the networks in one buffer (one block, or a partial block), all
    feature arrays in one compiled call (non-finite features propagate as NaN)."""
    rows = np.flatnonzero(buf.valid)
    groups = (buf.start + rows) % n_groups  # global network index mod G
    group_count = np.bincount(groups, minlength=n_groups).astype(np.int64)
    mean, com, gsum = layout.reduce(buf.features, rows, groups, n_groups)
    return _Stats(rows.size, mean, com, group_count, gsum)


def _combine(a: _Stats, b: _Stats, layout: FeatureLayout, consume: bool = False) -> _Stats:
    """Chan et al.'s pairwise merge (2) of two disjoint sets of networks. ``consume``: ``a`` is
    not used afterwards, so its co-moment and group-sum arrays take the result (each entry
    depends only on the same entry of both inputs and on the means): the same bits without
    allocating and paging in a few MB per merge."""
    gc = a.group_count + b.group_count
    gsum = np.add(a.group_sum, b.group_sum, out=a.group_sum if consume else None)
    if b.count == 0 or a.count == 0:
        src = a if b.count == 0 else b
        return _Stats(src.count, src.mean.copy(), src.comoment.copy(), gc, gsum)
    mean = np.empty_like(a.mean)
    com = a.comoment if consume else np.empty_like(a.comoment)
    combine_moments(
        a.count, b.count, a.mean, b.mean, a.comoment, b.comoment, layout.offsets,
        layout.shape_array, layout.com_offsets, mean, com, np.empty_like(mean),
    )  # fmt: skip
    return _Stats(a.count + b.count, mean, com, gc, gsum)


class FeatureAccumulator:
    """Streaming, mergeable mean/co-moment accumulator of per-network feature arrays.

    Parameters
    ----------
    start : int
        Global index of the first network this accumulator will see. Chunks must arrive in
        order: networks ``start, start+1, …``.
    block : int
        Networks per reduction block K (see the module docstring). Accumulators can only be
        merged if they use the same K.
    n_groups : int
        G, number of delete-a-group jackknife groups (network index mod G), ≥ 2.
    keep_networks : bool
        Also keep every per-network feature vector (needed for the bootstrap; memory O(M)).

    Examples
    --------
    >>> acc = FeatureAccumulator()
    >>> acc.update({"x": np.ones((5, 1, 2))})
    >>> acc.summary().mean["x"]
    array([[1., 1.]])
    """

    def __init__(
        self,
        start: int = 0,
        *,
        block: int = DEFAULT_BLOCK,
        n_groups: int = DEFAULT_GROUPS,
        keep_networks: bool = False,
    ) -> None:
        self.start = checks.integer("start", start, 0)
        self.block = checks.positive_int("block", block)
        self.n_groups = checks.integer("n_groups", n_groups, 2)
        self.keep_networks = bool(keep_networks)
        self.end = self.start
        self._pieces: list = []  # _Buffer (partial blocks at the ends) and _Node, in order
        self._kept: list = []  # stacked per-network features (n, F) in order, if kept
        self._layout: FeatureLayout | None = None

    # -- feeding ---------------------------------------------------------------------------
    def update(self, features: dict, valid: np.ndarray | None = None) -> None:
        """Add the next chunk of networks ``end … end+M-1``.

        Parameters
        ----------
        features : dict of str → ndarray, shape ``(M, S, k)``
            Per-network feature arrays (any float dtype; stored as float64). Every call must
            use the same names and ``(S, k)`` shapes. A
            :class:`~deltastats.stats.stacked.FeatureStack` of this accumulator's layout is
            taken without a copy.
        valid : ndarray of bool, shape ``(M,)``, optional
            False for networks to exclude (e.g. overflowed); they keep their index (so the
            blocks and groups of the others do not move) but contribute nothing.
        """
        stack = self._stack(features)
        M = stack.data.shape[0]
        if M == 0:
            return
        valid = np.ones(M, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
        if valid.shape != (M,):
            raise ValueError(f"valid must have shape ({M},), got {valid.shape}")
        if self.keep_networks:
            self._kept.append(stack.data[valid])
        self._append(_Buffer(self.end, stack.data, valid.copy()))

    def _stack(self, features) -> FeatureStack:
        """The chunk's features as a stack of this accumulator's layout (set by the first)."""
        if isinstance(features, FeatureStack) and (
            self._layout is None or features.layout.same(self._layout)
        ):
            self._layout = features.layout
            return features
        if not features:
            raise ValueError("features must be a non-empty dict of (M, S, k) arrays")
        feats = {k: np.asarray(v) for k, v in features.items()}
        Ms = {v.shape[0] for v in feats.values() if v.ndim == 3}
        if any(v.ndim != 3 for v in feats.values()) or len(Ms) != 1:
            raise ValueError("every feature array must have shape (M, S, k) with the same M")
        shapes = {k: v.shape[1:] for k, v in feats.items()}
        if self._layout is None:
            self._layout = FeatureLayout.of(shapes)
        elif shapes != self._layout.shape_dict():
            raise ValueError(
                f"feature names/shapes changed between chunks: {self._layout.shape_dict()} "
                f"then {shapes}"
            )
        stack = FeatureStack.empty(self._layout, Ms.pop())
        for k, v in feats.items():  # in the layout's order, whatever the dict's
            stack[k][...] = v
        return stack

    def _append(self, buf: _Buffer) -> None:
        """Append raw networks at the end; complete blocks become tree nodes."""
        if buf.start != self.end:
            raise ValueError(
                "internal: buffer does not continue the accumulator"
            )  # pragma: no cover
        if self._pieces and isinstance(self._pieces[-1], _Buffer):
            last = self._pieces.pop()
            buf = _Buffer(
                last.start,
                np.concatenate([last.features, buf.features]),
                np.concatenate([last.valid, buf.valid]),
            )
        self.end = buf.end
        K = self.block
        first = -(-buf.start // K) * K  # first block boundary ≥ start
        last_b = (buf.end // K) * K  # last block boundary ≤ end
        if last_b <= first:  # no complete block inside
            self._pieces.append(buf)
            return
        if first > buf.start:  # head: the rest of a block that began before this accumulator
            self._pieces.append(self._slice(buf, buf.start, first))
        for s in range(first, last_b, K):
            stats = _reduce_block(self._slice(buf, s, s + K), self._layout, self.n_groups)
            node = _Node(0, s // K, stats)
            self._push(node)
        if last_b < buf.end:
            self._pieces.append(self._slice(buf, last_b, buf.end))

    @staticmethod
    def _slice(buf: _Buffer, s: int, e: int) -> _Buffer:
        i, j = s - buf.start, e - buf.start
        return _Buffer(s, buf.features[i:j], buf.valid[i:j])

    def _push(self, node: _Node) -> None:
        """Binary-counter push: combine with the left sibling while there is one."""
        while self._pieces:
            top = self._pieces[-1]
            if not (
                isinstance(top, _Node)
                and top.level == node.level
                and top.index % 2 == 0
                and top.index + 1 == node.index
            ):
                break
            self._pieces.pop()
            stats = _combine(top.stats, node.stats, self._layout, consume=True)
            node = _Node(node.level + 1, top.index // 2, stats)
        self._pieces.append(node)

    # -- merging ---------------------------------------------------------------------------
    def merge(self, other: FeatureAccumulator) -> FeatureAccumulator:
        """A new accumulator holding the networks of both (neither input is modified).

        The two must cover contiguous network ranges (``self.end == other.start`` or
        ``other.end == self.start``; the order of the arguments does not matter) and use the
        same ``block``, ``n_groups`` and ``keep_networks``. The result is bit-for-bit the one
        a single accumulator fed all networks in order would give.
        """
        if not isinstance(other, FeatureAccumulator):
            raise ValueError(f"can only merge with a FeatureAccumulator, got {type(other)}")
        if (self.block, self.n_groups, self.keep_networks) != (
            other.block,
            other.n_groups,
            other.keep_networks,
        ):
            raise ValueError(
                "accumulators differ in block, n_groups or keep_networks; create both with "
                "the same settings"
            )
        if self.end == self.start:
            return copy.deepcopy(other)
        if other.end == other.start:
            return copy.deepcopy(self)
        if not self._layout.same(other._layout):
            raise ValueError("accumulators hold different feature names/shapes (or orders)")
        if self.end == other.start:
            left, right = self, other
        elif other.end == self.start:
            left, right = other, self
        else:
            raise ValueError(
                f"merge needs contiguous network ranges: one covers [{self.start}, {self.end}), "
                f"the other [{other.start}, {other.end}); give the second start=<end of the "
                "first> (or accumulate the networks in between too)"
            )
        out = copy.deepcopy(left)
        for piece in right._pieces:
            if isinstance(piece, _Buffer):
                out._append(copy.deepcopy(piece))
            else:  # a complete aligned node; out.end is its first network
                out._push(copy.deepcopy(piece))
                out.end = (piece.index + 1) * 2**piece.level * out.block
        out.end = right.end
        out._kept = left._kept + right._kept
        return out

    # -- result ----------------------------------------------------------------------------
    @property
    def n_seen(self) -> int:
        """Networks fed so far (valid or not)."""
        return self.end - self.start

    def _fold(self) -> _Stats | None:
        total = None
        for piece in self._pieces:
            if isinstance(piece, _Node):
                s = piece.stats
            else:
                s = _reduce_block(piece, self._layout, self.n_groups)
            total = s if total is None else _combine(total, s, self._layout)
        return total

    def summary(self, names: Container[str] | None = None) -> MomentSummary:
        """Fold the tree (left to right, a fixed order) into a :class:`MomentSummary`;
        ``names``: of these feature arrays only (a container of names; default all)."""
        total = self._fold()
        if total is None:
            raise ValueError("the accumulator is empty: feed at least one chunk with update()")
        n = total.count
        lay = self._layout
        cov = total.comoment / (n - 1) if n >= 2 else np.full_like(total.comoment, np.nan)
        per_net = None
        if self.keep_networks:
            per_net = lay.arrays(np.concatenate(self._kept), names=names)
        return MomentSummary(
            n,
            self.n_seen,
            lay.arrays(total.mean, names=names),
            lay.arrays(cov, comoments=True, names=names),
            total.group_count.copy(),
            lay.arrays(total.group_sum, names=names),
            per_net,
        )


def merge(a: FeatureAccumulator | BackpropAccumulator, b):
    """Merge two accumulators of contiguous network ranges; same as ``a.merge(b)``."""
    return a.merge(b)


# ---------------------------------------------------------------------------------------------
# Features of a backprop trace
# ---------------------------------------------------------------------------------------------
def _check_trace(trace: Trace, x) -> None:
    """What :class:`BackpropAccumulator` needs of a trace: all layers; gradients, or else the
    inputs x and no weight decay (the gradient features then come from δ and h)."""
    if not isinstance(trace, Trace):
        raise ValueError("trace must be the Trace returned by deltastats.backprop")
    if any(z is None for z in trace.z) or any(h is None for h in trace.h):
        raise ValueError("the trace needs keep_layers=None (all layers)")
    if trace.grad_weights is None and (trace.weight_decay or x is None):
        raise ValueError(
            "a trace without gradients (grads=False) needs x=… and no weight decay; "
            "or pass a trace with grads=True"
        )


class BackpropAccumulator(SummarySource):
    """Streaming, mergeable summaries of backprop traces, per layer and per unit.

    For every layer l = 1 … L it accumulates the per-network features (see the module
    docstring) of δ⁽ˡ⁾ and z⁽ˡ⁾ (per unit and layer-pooled), of t = log(‖δ⁽ˡ⁾‖²/n_l) and
    s = ‖δ⁽ˡ⁾‖²/n_l (the per-input quantity whose network mean is the pooled E[δ²]; its
    within-network variance involves the covariances between units, which the pooled δ features
    do not hold: :func:`deltastats.suggest_allocation` needs it), of the
    batch-mean weight gradient G = ∂J/∂W⁽ˡ⁾, and of the products needed by the Stein estimator
    E[δ_j] ≈ Cov(L, z_j)/Var(z_j). Optionally (``stein_q0``) the conditional multivariate
    Stein estimates of layer 1. :func:`deltastats.stats.intervals.summarize` turns it into
    :class:`~deltastats.stats.results.Estimates`.

    Feature arrays (names ``"<quantity>/<l>/unit"`` with S = n_l, ``".../pool"`` with S = 1):

    ========== ================================================ ======================
    quantity   features (all means over the network's B inputs) shift
    ========== ================================================ ======================
    delta, z   (p₁, p₂, p₃, p₄, q, r) of y = x − c, eq. (1)      c_j (unit), c̄ (pool)
    lognorm    (t₁, t₂, t₁²) of t − c_t                          c_t
    dsq        (s₁, s₂, s₁²) of s − c_s, s = ‖δ⁽ˡ⁾‖²/n_l          c_s
    gradw      (g₁, g₂, g₁²) entry-means of (G − c_G)ᵏ           c_G
    stein      (ℓ, ℓ·ζ, ζ, ζ², d): ℓ = L − c_L, ζ = z − c_z,    c_L, c_z, c_δ
               d = δ − c_δ (pool: ζ, d unit-averaged)
    steinmv    (s − c_s, u − c_u, d) of :func:`_stein_mv_parts`  c_s, c_u, c_δ
    cv         (y, c, yc, c²): y the dsq mean s₁, c the control  c_s (y); c has mean 0
               of :mod:`deltastats.stats.controls`
    ========== ================================================ ======================

    Parameters
    ----------
    net : MLP
    batch : int
        B, inputs per network (every chunk must use the same B).
    start : int
        Global index of the first network.
    shifts : dict or None
        The shifts c; ``None`` takes them from the first network fed (its batch means; 0 where
        not finite). Accumulators to be merged must share shifts: pass ``shifts=first.shifts``
        to the others (e.g. parallel jobs) — :meth:`merge` checks this.
    block, n_groups, keep_networks
        As in :class:`FeatureAccumulator`.
    stein_q0 : float or None
        If given, inputs are N(0, q₀·I) and layer-1 conditional Stein features are kept
        (needs ``params`` and ``x`` in :meth:`update`).
    control_variate : bool
        Also keep the control-variate features of ``delta_sq_cv`` (needs ``params`` in
        :meth:`update`; a net without a known control mean, e.g. orthogonal weights, is an error).
    """

    def __init__(
        self,
        net: MLP,
        batch: int,
        *,
        start: int = 0,
        shifts: dict | None = None,
        block: int = DEFAULT_BLOCK,
        n_groups: int = DEFAULT_GROUPS,
        keep_networks: bool = False,
        stein_q0: float | None = None,
        control_variate: bool = False,
    ) -> None:
        if not isinstance(net, MLP):
            raise ValueError(f"net must be an MLP, got {type(net).__name__}")
        self._growth = controls.chain_growth(net) if control_variate else None
        if control_variate and self._growth is None:
            raise ValueError(
                "control_variate needs weights with independent entries and nonzero moments "
                f"(the control's mean is then exact); init={net.init!r} has none"
            )
        self.control_variate = bool(control_variate)
        self.net = net
        self.batch = checks.positive_int("batch", batch)
        self.shifts = None if shifts is None else {k: np.array(v) for k, v in shifts.items()}
        self.stein_q0 = None if stein_q0 is None else float(stein_q0)
        self.features = FeatureAccumulator(
            start, block=block, n_groups=n_groups, keep_networks=keep_networks
        )
        self.n_overflow = 0
        self.overflow_layers: dict[int, int] = {}
        #: layer → valid networks with δ⁽ˡ⁾ = 0 exactly for some input (log-norm is −inf).
        self.zero_delta: dict[int, int] = {}
        self._layout: FeatureLayout | None = None  # of the feature stack (_feature_layout)

    # -- shifts and features ---------------------------------------------------------------
    def compute_shifts(self, trace: Trace, *, params: Params | None = None, x=None) -> dict:
        """The shifts c that this accumulator would take from ``trace``'s first network.

        For parallel accumulation: run network 0 alone, ``shifts = BackpropAccumulator(net,
        B).compute_shifts(trace0, x=x0)``, and create every job's accumulator with
        ``shifts=shifts`` (and ``control_variate=True``, feeding ``params``, for
        ``delta_sq_cv``); the merged result is then bit-for-bit that of
        :func:`deltastats.estimate`, whose shifts come from network 0 too, when the traces are
        made as it makes them (:meth:`Design.backprop
        <deltastats.stats.design.Design.backprop>`: without weight decay ``grads=False``, and
        ``x`` given to :meth:`update`; traces with gradients give the weight-gradient
        statistics to rounding, ≈ 1e-15 relative).
        """
        _check_trace(trace, x)
        s = u = None
        if self.stein_q0 is not None:
            if params is None or x is None or np.ndim(x) != 3:
                raise ValueError("stein_q0 needs params=… and x=… (M, B, n_0) too")
            with np.errstate(all="ignore"):
                s, u = _stein_mv_parts(params, x, trace, self.stein_q0)
        return self._initial_shifts(trace, x, s, u)

    def _layer_inputs(self, trace: Trace, x, l: int) -> np.ndarray:
        """h⁽ˡ⁻¹⁾ of the trace's networks (x for the first layer, in the trace's dtype: the
        engine multiplies that), ``(M, B, n)`` or ``(B, n)``."""
        if l > 0:
            return trace.h[l - 1]
        return np.asarray(x, dtype=trace.delta[0].dtype)

    def _grad0(self, trace: Trace, x, l: int) -> np.ndarray:
        """Network 0's weight gradient of layer l + 1: the trace's, or formed as the engine
        forms it, (δᵀh)/B (the same product, so the shift has the same bits)."""
        if trace.grad_weights is not None:
            return trace.grad_weights[l][0]
        h = self._layer_inputs(trace, x, l)
        h0 = h[0] if h.ndim == 3 else h
        g = np.matmul(trace.delta[l][0].T, h0)
        g /= h0.shape[0]
        return g

    def _initial_shifts(self, trace: Trace, x=None, s=None, u=None) -> dict:
        """Shifts c and scales s from the first network of the chunk (:func:`network_shifts`)."""
        sh = {}
        for l in range(self.net.depth):
            network_shifts(
                sh,
                l + 1,
                trace.delta[l][0],
                trace.z[l][0],
                self._grad0(trace, x, l),
                trace.loss[0] if l == 0 else None,
            )
        with np.errstate(all="ignore"):
            if s is not None:
                sh["steinmv/s"] = _finite_or_zero(s[0])
                sh["steinmv/u"] = _finite_or_zero(u[0])
        return sh

    def _feature_layout(self) -> FeatureLayout:
        """The feature arrays of a trace and their shapes, in the order they have always been
        stored (per layer the kernel's, with the weight-gradient features after the sixth)."""
        if self._layout is None:
            shapes = {}
            for l in range(1, self.net.depth + 1):
                n = self.net.widths[l]
                for a, (name, S, k) in enumerate(LAYER_OUTPUTS):
                    if a == 6:
                        shapes[f"gradw/{l}/pool"] = (1, N_SCALAR)
                    q, kind = name.split("/")
                    shapes[str(FeatureKey(q, l, kind))] = (n if S is None else S, k)
            if self.stein_q0 is not None:
                shapes["steinmv/1/unit"] = (self.net.widths[1], N_STEIN_MV)
                shapes["steinmv/1/pool"] = (1, N_STEIN_MV)
            for l in range(1, self.net.depth + 1) if self.control_variate else ():
                shapes[f"cv/{l}/pool"] = (1, controls.N_CV)
            self._layout = FeatureLayout.of(shapes)
            # Per column, the layer whose overflow check it enters (0: log-norm, exempt).
            keys = np.zeros(self._layout.width, dtype=np.int64)
            for a, name in enumerate(self._layout.names):
                key = FeatureKey.parse(name)
                if key.quantity != "lognorm":
                    keys[self._layout.offsets[a] : self._layout.offsets[a + 1]] = key.layer
            self._check_keys = keys
        return self._layout

    def _trace_features(self, trace: Trace, x=None, s=None, u=None, params=None) -> FeatureStack:
        sh = self.shifts
        # Every kernel writes straight into its columns of one (M, F) stack: no copies.
        feats = FeatureStack.empty(self._feature_layout(), trace.loss.shape[0])
        L = np.asarray(trace.loss, dtype=np.float64)
        ell = (L - sh["loss"]) / _scale(sh, "loss/scale")  # (M, B), in units of s_ℓ

        def layer(l: int) -> None:
            key = l + 1
            with np.errstate(all="ignore"):  # per thread: numpy's error state is thread-local
                # δ and z features in one compiled pass (feature_kernels.py): unit and pooled
                # power sums (1), log-norm and ‖δ‖² rows, Stein cross moments.
                out = {}
                for name, _, _ in LAYER_OUTPUTS:
                    q, kind = name.split("/")
                    out[name] = feats[str(FeatureKey(q, key, kind))]
                layer_features(
                    *_trace_arrays(trace.delta[l], trace.z[l]),
                    sh[f"delta/{key}"],
                    sh[f"z/{key}"],
                    ell,
                    sh[f"lognorm/{key}"],
                    sh[f"dsq/{key}"],
                    scale_delta=_scale(sh, f"delta/{key}/scale"),
                    scale_z=_scale(sh, f"z/{key}/scale"),
                    out=out,
                )
                # Without materialized gradients, from δ and h while the Gram matrices are
                # cheap (B ≪ n): the same features to rounding (gram_weight_features).
                grad_args = (
                    (trace.grad_weights[l],)
                    if trace.grad_weights is not None
                    else (trace.delta[l], self._layer_inputs(trace, x, l))
                )
                (weight_features if len(grad_args) == 1 else gram_weight_features)(
                    *grad_args,
                    sh[f"gradw/{key}"],
                    _scale(sh, f"gradw/{key}/scale"),
                    out=feats[f"gradw/{key}/pool"],
                )

        def chain() -> np.ndarray:
            with np.errstate(all="ignore"):
                # The backward products drawn with the weights, when they were drawn for this
                # control (Design.draw): then the weights are not read a second time.
                fused = params.backward_scales == controls.backward_scales(self._growth)
                rows = params.backward_rows if fused else None
                return controls.control(self.net, params.weights, self._growth, rows)

        # The layers (and the control variate's weight products) write disjoint columns of
        # the stack with compiled kernels that release the GIL: on two free cores they run
        # side by side, each column computed exactly as in one thread (the same bits).
        calls = [chain] if self.control_variate else []
        calls += [partial(layer, l) for l in range(self.net.depth)]
        done = side_by_side(calls)
        c = done[0] if self.control_variate else None
        with np.errstate(all="ignore"):
            if s is not None:
                ds = s - sh["steinmv/s"]
                du = u - sh["steinmv/u"]
                dd = feats["delta/1/unit"][..., P1]
                feats["steinmv/1/unit"][...] = np.stack([ds, du, dd], axis=-1)
                # Pool: unit averages of the per-unit shifted values (linear statistics only),
                # in the units of the δ features.
                dd_pool = (
                    (np.asarray(trace.delta[0], dtype=np.float64) - sh["delta/1"])
                    / _scale(sh, "delta/1/scale")
                ).mean(axis=(1, 2))
                feats["steinmv/1/pool"][...] = np.stack(
                    [ds.mean(axis=1), du.mean(axis=1), dd_pool], axis=-1
                )[:, None, :]
            if self.control_variate:
                for l in range(1, self.net.depth + 1):
                    y = feats[f"dsq/{l}/pool"][:, 0, MEAN]
                    controls.write_features(feats[f"cv/{l}/pool"], y, c[:, l - 1])
        return feats

    def consts(self) -> dict:
        """Per-feature-array constants (shifts, scales, sizes) the statistics need, by name."""
        sh = self.shifts
        out = {}
        for l in range(1, self.net.depth + 1):
            n_in, n_out = self.net.widths[l - 1], self.net.widths[l]
            out.update(layer_consts(sh, l, z=True, grad_size=n_in * n_out, stein=True))
            if self.control_variate:  # y is the dsq feature: its shift and scale
                out[f"cv/{l}/pool"] = out[f"dsq/{l}/pool"]
        if self.stein_q0 is not None:
            cd = sh["delta/1"]
            s_d = _scale(sh, "delta/1/scale")
            out["steinmv/1/unit"] = {
                "c_s": sh["steinmv/s"],
                "c_u": sh["steinmv/u"],
                "c_d": cd,
                "s_d": s_d,
            }
            out["steinmv/1/pool"] = {
                "c_s": np.atleast_1d(sh["steinmv/s"].mean()),
                "c_u": np.atleast_1d(sh["steinmv/u"].mean()),
                "c_d": np.atleast_1d(cd.mean()),
                "s_d": s_d,
            }
        return out

    # -- feeding ---------------------------------------------------------------------------
    def update(self, trace: Trace, *, params: Params | None = None, x=None) -> None:
        """Add the networks of one backprop trace (the next ones in global order).

        Parameters
        ----------
        trace : Trace
            From :func:`deltastats.backprop` with all layers kept; δ, z ``(M, B, n_l)``.
            Networks with ``trace.overflow`` are counted and excluded. Without gradients
            (``grads=False``, allowed only without weight decay) the gradient features are
            computed from δ and h (and ``x`` for layer 1).
        params, x
            The parameters and inputs ``(M, B, n_0)`` (or shared ``(B, n_0)``) of the trace;
            needed with ``stein_q0`` and, for ``x``, with a trace without gradients.
        """
        _check_trace(trace, x)
        B = trace.loss.shape[1]
        if B != self.batch:
            raise ValueError(
                f"trace has {B} inputs per network but the accumulator B = {self.batch}"
            )
        s = u = None
        if self.control_variate and params is None:
            raise ValueError("control_variate needs update(trace, params=…)")
        if self.stein_q0 is not None:
            if params is None or x is None or np.ndim(x) != 3:
                raise ValueError("stein_q0 needs update(trace, params=…, x=…) with x (M, B, n_0)")
            with np.errstate(all="ignore"):
                s, u = _stein_mv_parts(params, x, trace, self.stein_q0)
        if self.shifts is None:
            self.shifts = self._initial_shifts(trace, x, s, u)
        valid = ~np.asarray(trace.overflow, dtype=bool)
        self.n_overflow += int((~valid).sum())
        for layer in np.asarray(trace.overflow_layer)[~valid]:
            self.overflow_layers[int(layer)] = self.overflow_layers.get(int(layer), 0) + 1
        with np.errstate(over="ignore", invalid="ignore"):
            feats = self._trace_features(trace, x, s, u, params)
        # A finite δ can still overflow in the power sums (δ⁴ beyond ~1e308): such networks are
        # overflowed too — excluded, counted and warned about, never a silent NaN in a table.
        # (log-norm features may be −inf legitimately: a dead ReLU layer, counted below.)
        none = np.iinfo(np.int64).max
        first_bad = first_nonfinite_key(feats.data, self._check_keys, none)  # (M,) layers
        newly = valid & (first_bad < none)
        if newly.any():
            valid = valid & ~newly
            self.n_overflow += int(newly.sum())
            for layer in first_bad[newly]:
                self.overflow_layers[int(layer)] = self.overflow_layers.get(int(layer), 0) + 1
        for l in range(1, self.net.depth + 1):
            bad = int((~np.isfinite(feats[f"lognorm/{l}/pool"][:, 0, MEAN]) & valid).sum())
            if bad:
                self.zero_delta[l] = self.zero_delta.get(l, 0) + bad
        self.features.update(feats, valid)

    def merge(self, other: BackpropAccumulator) -> BackpropAccumulator:
        """Merge with an accumulator of a contiguous network range (see
        :meth:`FeatureAccumulator.merge`); both must share ``net``, ``batch`` and shifts."""
        if not isinstance(other, BackpropAccumulator):
            raise ValueError(f"can only merge with a BackpropAccumulator, got {type(other)}")
        if (other.net, other.batch, other.stein_q0, other.control_variate) != (
            self.net, self.batch, self.stein_q0, self.control_variate
        ):  # fmt: skip
            raise ValueError("accumulators differ in net, batch, stein_q0 or control_variate")
        return self._merged(other)
