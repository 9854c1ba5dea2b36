"""The nested-design estimators for a researcher's own arrays: δ of any model, any framework.

:func:`estimate_arrays` and the streaming :class:`ArrayAccumulator` take the error signals
δ⁽ˡ⁾ = ∂L/∂z⁽ˡ⁾ that a user computed (PyTorch, JAX, residual blocks, convolutions, trained
weights …) for M independent networks × B inputs each, and give the same
:class:`~deltastats.stats.results.Estimates` as :func:`deltastats.estimate`: the same
statistic names and columns, intervals valid for networks × inputs, ICC and design effect,
usable by :func:`~deltastats.suggest_allocation` and :func:`~deltastats.compare`.

What is given decides what is estimated (a statistic whose piece is missing is absent from
the table, never NaN):

=============== ============================ ==================================================
argument        shape                        statistics it enables
=============== ============================ ==================================================
``delta``       ``(M, B, n_l)`` per layer    delta_mean, delta_sq, delta_var, delta_skew,
                                             delta_kurt, icc, design_effect, delta_norm_sq,
                                             log_delta_norm_sq_mean/var, delta_sq_icc
``z``           as ``delta``                 z_mean, z_var, z_skew, z_kurt
``z`` + ``loss`` ``loss``: ``(M, B)``          stein_delta_mean = Cov(L, z_j)/Var(z_j), stein_gap
``grads``       ``(M, …)`` per layer         grad_w_sq = E‖G‖² (N = the entries of one
                                             network's G), grad_w_mean, grad_w_var (pooled
                                             over the N entries)
=============== ============================ ==================================================

Trailing axes beyond ``(M, B)`` are flattened to units in C order, so a feature map
``(M, B, C, H, W)`` has n_l = C·H·W units, channel-major (unit j = c·HW + h·W + w). The
gradient G of a layer may have any shape (a convolution kernel, a LayerNorm gain): nothing
assumes a dense n_l × n_{l−1} matrix.

Each network's features go through the same compiled kernels
(:mod:`deltastats.stats.features`) and the same fixed reduction tree
(:class:`~deltastats.stats.accumulators.FeatureAccumulator`) as the engine's traces, so the
results are bit-for-bit the same for any chunking of the networks and any merge order, and,
on the engine's own trace, bit-for-bit those of :func:`deltastats.estimate`.

**Non-finite values.** A network with inf or NaN anywhere in its δ, z, loss or gradients (or
whose power sums overflow float64) is excluded from every statistic, counted in
:attr:`Estimates.n_overflow` (by the first layer where it happened; 0 when only the loss was
not finite) and reported by a :class:`~deltastats.NumericalOverflowWarning`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .. import checks
from .accumulators import (
    DEFAULT_BLOCK,
    DEFAULT_GROUPS,
    FeatureAccumulator,
    SummarySource,
    _scale,
    layer_consts,
    network_shifts,
)
from .design import CHUNK_FLOATS
from .features import MEAN, FeatureKey, layer_features, weight_features
from .intervals import check_method_confidence, summarize
from .results import Estimates
from .sampling import _final_warnings
from .statistics import check_statistics

__all__ = ["ArrayAccumulator", "ArrayLayout", "estimate_arrays"]

#: dtypes accepted for δ, z, loss and gradients (accumulated in float64 whatever they are).
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
#: Per-network features of one layer, floats per unit (δ, z, Stein: 6 + 6 + 5, with margin).
_FEATURE_FLOATS_PER_UNIT = 18


@dataclass(frozen=True)
class ArrayLayout:
    """What an :class:`ArrayAccumulator` is fed, fixed by its first chunk.

    Attributes
    ----------
    names : tuple of str or None
        Layer names (``delta`` given as a mapping), or ``None`` (a sequence; layers 1 … L).
    widths : tuple of int
        n_l per layer, after flattening the axes beyond ``(M, B)``.
    batch : int
        B, inputs per network.
    has_z, has_loss : bool
        Whether ``z`` / ``loss`` are given.
    grad_sizes : tuple of (int or None)
        Entries N of one network's gradient per layer (``None``: no gradient for that layer).
    """

    names: tuple[str, ...] | None
    widths: tuple[int, ...]
    batch: int
    has_z: bool
    has_loss: bool
    grad_sizes: tuple[int | None, ...]

    @property
    def depth(self) -> int:
        """Number of layers L."""
        return len(self.widths)


@dataclass(frozen=True)
class _Arrays:
    """One checked chunk: δ, z ``(M, B, n_l)``, loss ``(M, B)``, gradients ``(M, N_l)``."""

    layout: ArrayLayout
    delta: tuple[np.ndarray, ...]
    z: tuple[np.ndarray, ...] | None
    loss: np.ndarray | None
    grads: tuple[np.ndarray | None, ...]
    M: int

    def rows(self, a: int, b: int) -> _Arrays:
        """Networks a … b − 1."""

        def cut(arrays):
            return None if arrays is None else tuple(None if x is None else x[a:b] for x in arrays)

        loss = None if self.loss is None else self.loss[a:b]
        return _Arrays(
            self.layout, cut(self.delta), cut(self.z), loss, cut(self.grads), min(b, self.M) - a
        )


# ---- argument checks --------------------------------------------------------------------------
def _float_array(name: str, value) -> np.ndarray:
    """``value`` as a float16/32/64 ndarray (no copy); one-line errors naming ``name``."""
    if value is None:
        raise ValueError(f"{name} is None; give an array")
    try:
        a = np.asarray(value)
    except (ValueError, TypeError, RuntimeError) as err:  # ragged lists, tensors with grad
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{name} cannot be read as a rectangular array ({first})") from None
    if a.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"{name} must be a float16, float32 or float64 array, got dtype {a.dtype}"
            + (" (convert with .astype(np.float64))" if a.dtype.kind in "iub" else "")
        )
    return a


def _layers(name: str, value, names: tuple[str, ...] | None, depth: int | None):
    """The per-layer entries of ``value`` (a sequence, or a mapping keyed like ``delta``)."""
    if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
        raise ValueError(
            f"{name} must be a sequence over layers of arrays (or a mapping name → array), got "
            f"one array of shape {np.shape(value)}; for a single layer pass [{name}]"
        )
    if isinstance(value, Mapping):
        if names is None and depth is not None:
            raise ValueError(f"{name} is a mapping but delta is a sequence; give both alike")
        keys = tuple(value)
        if not keys or not all(isinstance(k, str) for k in keys):
            raise ValueError(f"{name} must map layer names (str) to arrays, got keys {keys!r}")
        return keys, [value[k] for k in keys]
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(
            f"{name} must be a sequence over layers of arrays or a mapping name → array, got "
            f"{type(value).__name__}"
        )
    if names is not None:
        raise ValueError(f"{name} is a sequence but delta is a mapping; give both alike")
    if len(value) == 0:
        raise ValueError(f"{name} is empty; give at least one layer")
    return None, list(value)


def _parse(delta, z, loss, grads, layout: ArrayLayout | None = None) -> _Arrays:
    """Check every argument (shapes, dtypes, agreement between layers and with ``layout``)
    before any work; return the arrays reshaped to ``(M, B, n_l)``, ``(M, B)``, ``(M, N_l)``."""
    names, entries = _layers("delta", delta, None, None)
    L = len(entries)

    def label(i):
        return f"[{names[i]!r}]" if names is not None else f"[{i}]"

    deltas, shape = [], None
    for i, value in enumerate(entries):
        a = _float_array(f"delta{label(i)}", value)
        if a.ndim < 3 or 0 in a.shape:
            raise ValueError(
                f"delta{label(i)} must have shape (M, B, n_l) (networks, inputs, units), got "
                f"{a.shape}"
            )
        if shape is None:
            shape = a.shape[:2]
        elif a.shape[:2] != shape:
            raise ValueError(
                f"delta{label(i)} has (M, B) = {a.shape[:2]} but delta{label(0)} has {shape}: "
                "every layer needs the same networks and inputs"
            )
        deltas.append(a.reshape(a.shape[0], a.shape[1], -1))
    M, B = shape
    zs = None
    if z is not None:
        znames, zentries = _layers("z", z, names, L)
        if (znames != names) or len(zentries) != L:
            want = list(names) if names is not None else f"{L} layers"
            got = list(znames) if znames is not None else f"{len(zentries)} layers"
            raise ValueError(f"z must have the layers of delta ({want}), got {got}")
        zs = []
        for i, value in enumerate(zentries):
            a = _float_array(f"z{label(i)}", value)
            if a.shape[:2] != (M, B) or a.reshape(M, B, -1).shape != deltas[i].shape:
                raise ValueError(
                    f"z{label(i)} has shape {a.shape} but delta{label(i)} has "
                    f"{np.shape(entries[i])}; they must match"
                )
            zs.append(a.reshape(M, B, -1))
    ell = None
    if loss is not None:
        ell = _float_array("loss", loss)
        if ell.shape != (M, B):
            raise ValueError(
                f"loss must have shape (M, B) = {(M, B)} (one loss per network and input), got "
                f"{ell.shape}"
            )
    gs: list = [None] * L
    if grads is not None:
        gnames, gentries = _layers("grads", grads, names, L)
        if names is not None:
            unknown = [k for k in gnames if k not in names]
            if unknown:
                raise ValueError(f"grads has layers {unknown} that delta does not have {names}")
            index = {k: names.index(k) for k in gnames}
        elif len(gentries) != L:
            raise ValueError(
                f"grads must have one entry per layer of delta ({L}; None for a layer without a "
                f"gradient), got {len(gentries)}"
            )
        else:
            index = {i: i for i in range(L)}
        for key, value in zip(gnames if names is not None else range(L), gentries):
            i = index[key]
            if value is None:
                continue
            a = _float_array(f"grads{label(i)}", value)
            if a.ndim < 1 or a.shape[0] != M or a.size == 0:
                raise ValueError(
                    f"grads{label(i)} must have shape (M, …) with M = {M} networks, got {a.shape}"
                )
            gs[i] = a.reshape(M, -1)
    new = ArrayLayout(
        names,
        tuple(d.shape[2] for d in deltas),
        B,
        zs is not None,
        ell is not None,
        tuple(None if g is None else g.shape[1] for g in gs),
    )
    if layout is not None and new != layout:
        raise ValueError(_layout_change(layout, new))
    return _Arrays(new, tuple(deltas), None if zs is None else tuple(zs), ell, tuple(gs), int(M))


def _layout_change(old: ArrayLayout, new: ArrayLayout) -> str:
    """One line saying which argument differs from the first chunk."""
    if old.names != new.names or old.widths != new.widths:
        return (
            f"delta has layers {new.names or new.depth} of widths {new.widths} but the first "
            f"chunk had {old.names or old.depth} of widths {old.widths}"
        )
    if old.batch != new.batch:
        return f"delta has B = {new.batch} inputs per network but the first chunk had {old.batch}"
    if old.has_z != new.has_z:
        return "z must be given in every chunk or in none (as in the first chunk)"
    if old.has_loss != new.has_loss:
        return "loss must be given in every chunk or in none (as in the first chunk)"
    return (
        f"grads has {new.grad_sizes} entries per network and layer but the first chunk had "
        f"{old.grad_sizes}"
    )


def _kernel_dtype(*arrays: np.ndarray) -> type:
    """float32 when no array is float64 (float16 → float32 is exact), else float64: the
    kernels sum in float64 either way."""
    return np.float64 if any(a.dtype == np.float64 for a in arrays) else np.float32


# ---- the accumulator --------------------------------------------------------------------------
class ArrayAccumulator(SummarySource):
    """Streaming, mergeable summaries of a researcher's own arrays, chunk by chunk of networks.

    Feed consecutive chunks of networks with :meth:`update` (``delta``, and optionally ``z``,
    ``loss``, ``grads``, as in :func:`estimate_arrays`; every chunk with the same layers,
    widths, B and pieces), then :meth:`result`. Memory does not grow with the number of
    networks (unless ``keep_networks``); any chunking gives bit-for-bit the same estimates.

    Parameters
    ----------
    start : int
        Global index of the first network (for :meth:`merge` of accumulators of contiguous
        network ranges, e.g. parallel jobs).
    shifts : dict or None
        The shifts c of the shifted power sums (module :mod:`~deltastats.stats.accumulators`);
        ``None`` takes them from the first network fed (0 where not finite). Accumulators to be
        merged must share them: create the later ones with ``shifts=first.shifts`` (or
        :meth:`compute_shifts` on network 0).
    block : int
        Networks per reduction block.
    jackknife_groups : int
        G ≥ 2 delete-a-group jackknife groups (network index mod G).
    keep_networks : bool
        Keep every per-network feature vector (needed for ``method="bootstrap"``).

    Examples
    --------
    >>> import numpy as np, deltastats as ds
    >>> rng = np.random.default_rng(0)
    >>> acc = ds.ArrayAccumulator()
    >>> for _ in range(3):  # three chunks of 100 networks, B = 8 inputs, 5 units
    ...     acc = acc.update(delta=[rng.standard_normal((100, 8, 5))])
    >>> est = acc.result()
    >>> est.n_networks, round(est.result("delta_sq", 1).estimate, 2)
    (300, 1.0)
    """

    def __init__(
        self,
        *,
        start: int = 0,
        shifts: dict | None = None,
        block: int = DEFAULT_BLOCK,
        jackknife_groups: int = DEFAULT_GROUPS,
        keep_networks: bool = False,
    ) -> None:
        if shifts is not None and not isinstance(shifts, Mapping):
            raise ValueError(f"shifts must be a dict (an accumulator's .shifts), got {shifts!r}")
        self.shifts = None if shifts is None else {k: np.array(v) for k, v in shifts.items()}
        self.features = FeatureAccumulator(
            start,
            block=block,
            n_groups=checks.integer("jackknife_groups", jackknife_groups, 2),
            keep_networks=keep_networks,
        )
        self.layout: ArrayLayout | None = None
        self.n_overflow = 0
        self.overflow_layers: dict[int, int] = {}
        self.zero_delta: dict[int, int] = {}

    # -- what summarize reads --------------------------------------------------------------
    @property
    def batch(self) -> int:
        """B, inputs per network (0 before the first chunk)."""
        return 0 if self.layout is None else self.layout.batch

    @property
    def layer_names(self) -> dict[int, str]:
        """Layer number → name (``delta`` given as a mapping), else empty."""
        if self.layout is None or self.layout.names is None:
            return {}
        return {i + 1: name for i, name in enumerate(self.layout.names)}

    def consts(self) -> dict:
        """Per-feature-array constants (shifts, scales, gradient sizes N) of the statistics."""
        lay = self.layout
        out = {}
        for l in range(1, lay.depth + 1):
            out.update(
                layer_consts(
                    self.shifts,
                    l,
                    z=lay.has_z,
                    grad_size=lay.grad_sizes[l - 1],
                    stein=lay.has_z and lay.has_loss,
                )
            )
        return out

    # -- feeding ---------------------------------------------------------------------------
    def compute_shifts(self, delta, *, z=None, loss=None, grads=None) -> dict:
        """The shifts this accumulator would take from the first network of these arrays (for
        parallel accumulators: ``shifts=acc.compute_shifts(...)`` on network 0)."""
        return self._shifts_of(_parse(delta, z, loss, grads, self.layout))

    @staticmethod
    def _shifts_of(arr: _Arrays) -> dict:
        # BackpropAccumulator's shifts and scales (network_shifts), so the engine's own trace
        # gets the same shifts and hence the same bits.
        sh = {}
        if arr.loss is None:
            sh["loss"] = np.array(0.0)
        for l in range(arr.layout.depth):
            network_shifts(
                sh,
                l + 1,
                arr.delta[l][0],
                arr.z[l][0] if arr.z is not None else None,
                arr.grads[l][0] if arr.grads[l] is not None else None,
                arr.loss[0] if (l == 0 and arr.loss is not None) else None,
            )
        return sh

    def _features(self, arr: _Arrays) -> dict:
        sh, lay = self.shifts, arr.layout
        M, B = arr.M, lay.batch
        if arr.loss is not None:
            ell = (np.asarray(arr.loss, dtype=np.float64) - sh["loss"]) / _scale(sh, "loss/scale")
        else:
            ell = np.zeros((M, B))
        stein = lay.has_z and lay.has_loss
        feats = {}
        with np.errstate(all="ignore"):
            for l in range(lay.depth):
                key = l + 1
                d = arr.delta[l]
                # Without z, δ stands in for z in the kernel and the z and Stein features are
                # dropped (one kernel for every case).
                z = arr.z[l] if arr.z is not None else d
                dtype = _kernel_dtype(d, z)
                layer = layer_features(
                    np.ascontiguousarray(d, dtype=dtype),
                    np.ascontiguousarray(z, dtype=dtype),
                    sh[f"delta/{key}"],
                    sh[f"z/{key}"] if arr.z is not None else np.zeros(d.shape[2]),
                    ell,
                    sh[f"lognorm/{key}"],
                    sh[f"dsq/{key}"],
                    scale_delta=_scale(sh, f"delta/{key}/scale"),
                    scale_z=_scale(sh, f"z/{key}/scale"),
                )
                kept = ["delta/unit", "delta/pool", "lognorm/pool", "dsq/pool"]
                if arr.z is not None:
                    kept += ["z/unit", "z/pool"]
                if stein:
                    kept += ["stein/unit", "stein/pool"]
                for name in kept:
                    q, kind = name.split("/")
                    feats[str(FeatureKey(q, key, kind))] = layer[name]
                g = arr.grads[l]
                if g is not None:
                    g = g if g.dtype != np.float16 else g.astype(np.float32)
                    feats[f"gradw/{key}/pool"] = weight_features(
                        g, sh[f"gradw/{key}"], _scale(sh, f"gradw/{key}/scale")
                    )
        return feats

    def update(self, delta, *, z=None, loss=None, grads=None) -> ArrayAccumulator:
        """Add the next chunk of networks (global order), checked before any work.

        Parameters
        ----------
        delta : sequence or mapping of ndarray, each ``(M, B, n_l)``
        z : sequence or mapping of ndarray, optional
            Pre-activations, the shapes of ``delta``.
        loss : ndarray ``(M, B)``, optional
            Per-sample losses.
        grads : sequence or mapping of ndarray ``(M, …)``, optional
            Per-network gradients of each layer's parameters, any shape.

        Returns
        -------
        ArrayAccumulator
            ``self``, so that calls chain.
        """
        self._feed(_parse(delta, z, loss, grads, self.layout))
        return self

    def _feed(self, arr: _Arrays) -> None:
        if self.shifts is None:
            self.shifts = self._shifts_of(arr)
        elif not self._shifts_fit(self.shifts, arr.layout):
            raise ValueError(
                "shifts do not fit these arrays (other layers, widths or pieces); pass the "
                "shifts of an accumulator fed the same kind of arrays"
            )
        if self.layout is None:
            self.layout = arr.layout
        feats = self._features(arr)
        M = arr.M
        # First layer (1 … L) with a non-finite value or power sum; 0 when only the loss is
        # not finite. log-norm features may be −inf legitimately (δ⁽ˡ⁾ = 0: counted below).
        none = np.iinfo(np.int64).max
        first_bad = np.full(M, none)
        if arr.loss is not None:
            bad = ~np.isfinite(arr.loss).all(axis=1)
            first_bad = np.where(bad, 0, first_bad)
        for key, f in feats.items():
            if key.startswith("lognorm/"):
                continue
            bad = ~np.isfinite(f.reshape(M, -1)).all(axis=1)
            layer = FeatureKey.parse(key).layer
            first_bad = np.where(bad, np.minimum(first_bad, layer), first_bad)
        valid = first_bad == none
        self.n_overflow += int((~valid).sum())
        for layer in first_bad[~valid]:
            self.overflow_layers[int(layer)] = self.overflow_layers.get(int(layer), 0) + 1
        for l in range(1, arr.layout.depth + 1):
            bad = int((~np.isfinite(feats[f"lognorm/{l}/pool"][:, 0, MEAN]) & valid).sum())
            if bad:
                self.zero_delta[l] = self.zero_delta.get(l, 0) + bad
        self.features.update(feats, valid)

    @staticmethod
    def _shifts_fit(shifts: dict, layout: ArrayLayout) -> bool:
        for l, n in enumerate(layout.widths, start=1):
            if np.shape(shifts.get(f"delta/{l}")) != (n,):
                return False
            if layout.has_z and np.shape(shifts.get(f"z/{l}")) != (n,):
                return False
            if layout.grad_sizes[l - 1] is not None and f"gradw/{l}" not in shifts:
                return False
        return "loss" in shifts

    def merge(self, other: ArrayAccumulator) -> ArrayAccumulator:
        """Merge with an accumulator of a contiguous network range (either order); both must
        be fed the same kind of arrays and share shifts. Bit-for-bit one accumulator fed all
        networks in order."""
        if not isinstance(other, ArrayAccumulator):
            raise ValueError(f"can only merge with an ArrayAccumulator, got {type(other).__name__}")
        if self.layout is not None and other.layout is not None:
            if self.layout != other.layout:
                raise ValueError(
                    "accumulators were fed different arrays: "
                    + _layout_change(self.layout, other.layout)
                )
        out = self._merged(other)
        out.layout = self.layout if self.layout is not None else other.layout
        return out

    # -- result ----------------------------------------------------------------------------
    def result(
        self,
        *,
        method: str = "clt",
        confidence: float = 0.95,
        n_resamples: int = 1999,
        seed: int | np.random.SeedSequence = 0,
        statistics: str | Sequence[str] | None = None,
    ) -> Estimates:
        """:class:`Estimates` of everything fed so far (arguments as in
        :func:`estimate_arrays`), with the warnings of :func:`deltastats.estimate`."""
        check_method_confidence(method, confidence)
        checks.integer("n_resamples", n_resamples, 10)
        check_statistics(statistics)
        if self.layout is None:
            raise ValueError("the accumulator is empty: feed networks with update(delta=…) first")
        if self.n_valid < 2:
            raise ValueError(
                f"only {self.n_valid} of {self.n_seen} networks have finite values "
                f"({self.n_overflow} excluded for inf/NaN); an interval needs at least 2"
            )
        est = summarize(
            self,
            method=method,
            confidence=confidence,
            n_resamples=n_resamples,
            seed=seed,
            statistics=statistics,
        )
        _final_warnings(est, what="non-finite values (inf/NaN)", advice="")
        return est


def estimate_arrays(
    delta: Sequence[np.ndarray] | Mapping[str, np.ndarray],
    *,
    z: Sequence[np.ndarray] | Mapping[str, np.ndarray] | None = None,
    loss: np.ndarray | None = None,
    grads: Sequence[np.ndarray | None] | Mapping[str, np.ndarray] | None = None,
    method: str = "clt",
    confidence: float = 0.95,
    jackknife_groups: int = 20,
    n_resamples: int = 1999,
    seed: int | np.random.SeedSequence = 0,
    statistics: str | Sequence[str] | None = None,
) -> Estimates:
    """Estimates with network-level intervals from arrays of δ (and z, loss, gradients).

    The networks m = 0 … M − 1 must be independent draws (fresh random weights, or
    independent training runs) and the B inputs of each network drawn independently given the
    network: the design of :func:`deltastats.estimate`, whose statistics, columns and
    interval methods this returns (module docstring: which argument enables which
    statistic).

    Parameters
    ----------
    delta : sequence of ndarray ``(M, B, n_l)``, or mapping name → ndarray
        δ⁽ˡ⁾ = ∂L_b/∂z⁽ˡ⁾ per network m, input b and unit j (float16, float32 or float64);
        layers are numbered 1 … L in the order given. With a mapping, the names become a
        ``name`` column beside ``layer``. Axes beyond the third are flattened to units.
    z : like ``delta``, optional
        The pre-activations z⁽ˡ⁾ the δ's are taken with respect to, the shapes of ``delta``.
    loss : ndarray ``(M, B)``, optional
        Per-sample losses L_b (with ``z``: the Stein estimators).
    grads : sequence of ndarray ``(M, …)`` (``None`` for a layer without one), or mapping
        name → ndarray (a subset of ``delta``'s names), optional
        Each network's gradient of a layer's parameters, any shape; ``grad_w_sq`` = E‖G‖²
        with N the entries of one network's G.
    method : {"clt", "jackknife", "bootstrap"}
    confidence : float
        γ ∈ (0, 1).
    jackknife_groups : int
        G ≥ 2 delete-a-group jackknife groups (network index mod G).
    n_resamples : int
        Bootstrap resamples.
    seed : int or SeedSequence
        Seed of the bootstrap resampling.
    statistics : str or sequence of str, optional
        Only these statistics (default: every one the arrays allow).

    Returns
    -------
    Estimates
        ``per_layer()``, ``per_unit()``; networks with non-finite values are excluded and
        counted in ``n_overflow`` (with a :class:`~deltastats.NumericalOverflowWarning`).

    Examples
    --------
    >>> import numpy as np, deltastats as ds
    >>> rng = np.random.default_rng(0)
    >>> a = rng.standard_normal((200, 1, 1))  # a network effect …
    >>> d = a + rng.standard_normal((200, 16, 4))  # … and an input effect: icc = 1/2
    >>> est = ds.estimate_arrays({"block1": d})
    >>> est.per_layer("icc")[["layer", "name", "statistic"]].values.tolist()
    [[1, 'block1', 'icc']]
    """
    check_method_confidence(method, confidence)
    groups = checks.integer("jackknife_groups", jackknife_groups, 2)
    checks.integer("n_resamples", n_resamples, 10)
    check_statistics(statistics)
    arr = _parse(delta, z, loss, grads)
    if arr.M < 2:
        raise ValueError(
            f"delta holds M = {arr.M} network; an interval needs the spread of at least 2 "
            "networks (M >= 2)"
        )
    lay = arr.layout
    per_net = lay.batch * sum(lay.widths) * (2 if lay.has_z else 1) + sum(
        n for n in lay.grad_sizes if n is not None
    )
    per_net += _FEATURE_FLOATS_PER_UNIT * sum(lay.widths)
    chunk = max(1, CHUNK_FLOATS // per_net)
    acc = ArrayAccumulator(jackknife_groups=groups, keep_networks=method == "bootstrap")
    for a in range(0, arr.M, chunk):
        acc._feed(arr.rows(a, a + chunk))
    return acc.result(
        method=method,
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
        statistics=statistics,
    )
