"""The batched backprop engine: forward and backward for M networks × B inputs at once.

For every network m and input b (δ = ∂L/∂z, no minus sign):

    z⁽ˡ⁾ = W⁽ˡ⁾ h⁽ˡ⁻¹⁾ + b⁽ˡ⁾,   h⁽ˡ⁾ = φ(z⁽ˡ⁾),   h⁽⁰⁾ = x,   g = φ_out(z⁽ᴸ⁾)      (1)
    δ⁽ᴸ⁾ = ∂L/∂g ⊙ φ_out'(z⁽ᴸ⁾)                                                       (2)
    δ⁽ˡ⁾ = φ'(z⁽ˡ⁾) ⊙ (W⁽ˡ⁺¹⁾ᵀ δ⁽ˡ⁺¹⁾)                                                  (3)
    ∂J/∂W⁽ˡ⁾ = (1/B) Σ_b δ⁽ˡ⁾ h⁽ˡ⁻¹⁾ᵀ + λ W⁽ˡ⁾,   ∂J/∂b⁽ˡ⁾ = (1/B) Σ_b δ⁽ˡ⁾                (4)

where J = (1/B) Σ_b L_b + (λ/2) Σ_l ‖W⁽ˡ⁾‖² is the batch objective (mean loss plus weight
decay). Haykin's textbook derivation calls δ_Haykin = −∂E/∂v the *local gradient*; it is −δ here.

Rows are samples: with arrays ``(M, B, n)``, (1) is ``h @ Wᵀ`` and (3) is ``δ @ W``, one stacked
``matmul`` per layer over all networks and inputs.
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import numpy as np

from .. import checks
from .._parallel import blas_is_avx512, default_threads, executor, single_threaded_blas
from ..model.activations import tanh as _tanh
from ..model.losses import Loss, get_loss
from ..model.networks import MLP, Params
from . import kernels
from .workspace import allocate

_TANH_DPHI = _tanh.dphi_from_output


def _compiled_kernels_on() -> bool:
    """The switch :data:`deltastats.engine.USE_COMPILED_KERNELS`, read on every call so that
    setting the package attribute takes effect."""
    return bool(sys.modules[__package__].USE_COMPILED_KERNELS)


class NumericalOverflowWarning(RuntimeWarning):
    """Some networks produced inf/NaN in z or δ (e.g. a deep chaotic network)."""


@dataclass(frozen=True)
class Trace:
    """Everything one forward/backward pass recorded.

    Attributes
    ----------
    z, h : tuple of (ndarray or None)
        Entry l−1 is z⁽ˡ⁾ / h⁽ˡ⁾, shape ``(M, B, n_l)``, l = 1 … L; ``None`` for layers not kept.
        ``h[L-1]`` is the network output g.
    delta : tuple of ndarray
        Entry l−1 is δ⁽ˡ⁾ = ∂L/∂z⁽ˡ⁾, shape ``(M, B, n_l)``.
    loss : ndarray
        Per-sample loss, shape ``(M, B)``.
    grad_weights, grad_biases : tuple of ndarray or None
        Batch-mean gradients (4), shapes ``(M, n_l, n_{l-1})`` and ``(M, n_l)``; ``None`` when
        ``grads=False``.
    overflow : ndarray of bool
        ``(M,)``: True for networks where some z, δ or loss was not finite.
    overflow_layer : ndarray of int
        ``(M,)``: first layer (1 … L) with a non-finite z on the way forward, or, if the forward
        pass was finite, first layer with a non-finite δ counting down from L; 0 when finite.
    weight_decay : float
        The λ of the pass (it enters the weight gradients only), so that whoever forms
        gradient statistics from δ and h of a trace without gradients knows whether it may.
    """

    z: tuple
    h: tuple
    delta: tuple
    loss: np.ndarray
    grad_weights: tuple | None
    grad_biases: tuple | None
    overflow: np.ndarray
    overflow_layer: np.ndarray
    weight_decay: float = 0.0

    @property
    def output(self) -> np.ndarray | None:
        """The network output g, shape ``(M, B, n_L)`` (``None`` if layer L was not kept)."""
        return self.h[-1]


def _check_array(name: str, a, M: int, width: int, batch: int | None = None) -> np.ndarray:
    try:
        a = np.asarray(a)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a numeric array (e.g. shape (B, n)), got {a!r:.80}"
        ) from None
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a numeric array, got dtype {a.dtype}")
    ok = (a.ndim == 2) or (a.ndim == 3 and a.shape[0] == M)
    if not ok or a.shape[-1] != width or (batch is not None and a.shape[-2] != batch):
        want = (
            f"(B, {width}) or ({M}, B, {width})"
            if batch is None
            else (f"({batch}, {width}) or ({M}, {batch}, {width})")
        )
        raise ValueError(f"{name} has shape {a.shape}; expected {want}")
    if a.shape[-2] == 0:
        # B = 0 would divide by zero in the batch mean (4): there is nothing to average.
        raise ValueError(f"{name} has no inputs (B = 0, shape {a.shape}); B must be >= 1")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def backprop(
    net: MLP,
    params: Params,
    x: np.ndarray,
    y: np.ndarray,
    loss: str | Loss = "mse",
    weight_decay: float = 0.0,
    *,
    grads: bool = True,
    keep_layers: Iterable[int] | None = None,
    warn: bool = True,
    threads: int | None = None,
    chunk_size: int | None = None,
    out: Trace | None = None,
) -> Trace:
    """Forward and backward pass of M networks on B inputs each, fully vectorized.

    Parameters
    ----------
    net : MLP
        The spec (activations, widths).
    params : Params
        ``net.sample(M, seed)``; weights ``(M, n_l, n_{l-1})``.
    x : ndarray, shape ``(B, n_0)`` or ``(M, B, n_0)``
        Inputs, shared by all networks or one batch per network.
    y : ndarray, shape ``(B, n_L)`` or ``(M, B, n_L)``
        Targets. For ``"cross_entropy"`` rows must be probability vectors (one-hot or soft).
    loss : str or Loss
        ``"mse"`` (½‖g − y‖², default) or ``"cross_entropy"``.
    weight_decay : float
        λ ≥ 0; adds λW⁽ˡ⁾ to the weight gradients (4). δ itself does not depend on λ.
    grads : bool
        Compute ``grad_weights``/``grad_biases`` (one more matmul per layer). Default True.
    keep_layers : iterable of int or None
        Layers l (1 … L) whose z and h are kept in the trace; ``None`` keeps all. δ is always
        kept for every layer. Layers not kept are never stored for all M networks: they live
        in small per-thread buffers, so ``keep_layers=()`` with ``grads=False`` needs memory
        for δ only.
    warn : bool
        Emit a :class:`NumericalOverflowWarning` when some network overflowed.
    threads : int or None
        Worker threads; the M networks are split into chunks of ``chunk_size`` consecutive
        networks that the threads take in turn, each with single-threaded BLAS. ``None``
        (default) uses as many threads as BLAS is currently allowed (so inside a worker whose
        BLAS is limited to one thread, e.g. a joblib job, the engine stays single-threaded),
        at most the number of usable CPUs, and one thread for small problems.
    chunk_size : int or None
        Networks per task; ``None`` picks one from the layer sizes (a few MFLOP per matmul).
    out : Trace or None
        A trace from an earlier call with the same shapes, dtype, ``grads`` and
        ``keep_layers``: its arrays are overwritten and reused instead of allocating new
        ones (a streaming loop then touches the same memory every chunk). Arrays that do not
        fit are allocated afresh. The earlier trace must not be used afterwards.

    Returns
    -------
    Trace
        Its arrays are C-contiguous views of one memory block (unless reused from ``out``):
        keeping any one of them alive keeps the block alive, so copy what you keep. Once no
        array of a trace is referenced any more, the block may serve the next call (see
        :data:`WORKSPACE_CACHE_BYTES`).

    Notes
    -----
    The result is bit-for-bit the same for every ``threads`` and ``chunk_size``: each network
    is computed by the same sequence of per-network BLAS calls (numpy's stacked ``matmul``
    calls GEMM once per stack entry) and element-wise ufuncs that act on each element alone,
    and BLAS always runs single-threaded here, so no arithmetic depends on how the networks
    are split; the tests check it.
    """
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an MLP, got {type(net).__name__}")
    lossf = get_loss(loss)
    if not isinstance(params, Params):
        raise ValueError("params must be the Params returned by net.sample(...)")
    M = params.n_networks
    shapes = [w.shape[1:] for w in params.weights]
    expected = [(b, a) for a, b in zip(net.widths[:-1], net.widths[1:])]
    if shapes != expected:
        raise ValueError(f"params do not match net.widths {net.widths}: weight shapes {shapes}")
    x = _check_array("x", x, M, net.widths[0])
    y = _check_array("y", y, M, net.widths[-1])
    if x.shape[-2] != y.shape[-2]:
        raise ValueError(f"x has {x.shape[-2]} inputs per network but y has {y.shape[-2]}")
    weight_decay = checks.nonnegative_real("weight_decay", weight_decay)
    if lossf.name == "cross_entropy" and (
        np.any(y < 0) or not np.allclose(y.sum(axis=-1), 1.0, atol=1e-6)
    ):
        raise ValueError(
            "cross_entropy needs targets y whose rows are probability vectors (one-hot or soft "
            "labels: entries >= 0 summing to 1); use targets.one_hot(n_classes)"
        )
    L = net.depth
    if keep_layers is not None and (
        isinstance(keep_layers, str | bytes) or not isinstance(keep_layers, Iterable)
    ):
        raise checks.ArgumentTypeError(
            f"keep_layers must be an iterable of layers in 1 … {L} or None, got {keep_layers!r}"
        )
    keep = (
        set(range(1, L + 1))
        if keep_layers is None
        else {checks.integer("keep_layers entries", k) for k in keep_layers}
    )
    if not keep <= set(range(1, L + 1)):
        raise ValueError(f"keep_layers must be layers in 1 … {L}, got {sorted(keep)}")
    if threads is not None:
        threads = checks.positive_int("threads", threads, " or None")
    if chunk_size is not None:
        chunk_size = checks.positive_int("chunk_size", chunk_size, " or None")
    if out is not None and not isinstance(out, Trace):
        raise ValueError("out must be a Trace returned by an earlier backprop call, or None")
    dtype = params.weights[0].dtype
    x = np.ascontiguousarray(x, dtype=dtype)
    y = np.ascontiguousarray(y, dtype=dtype)

    # ---- storage: outputs for all M networks; everything else lives in per-thread buffers.
    B = x.shape[-2]
    widths = net.widths

    # Fresh outputs are carved from one block: one allocation (huge pages, one round of page
    # faults) costs far less than dozens of separate ones; arrays from `out` are reused as is.
    def old(field: str, l: int):
        seq = getattr(out, field, None) if out is not None else None
        return seq[l] if seq is not None and l < len(seq) else None

    requests: dict = {}
    requests["loss"] = ((M, B), out.loss if out is not None else None)
    for l in range(L):
        n_l = widths[l + 1]
        requests[("delta", l)] = ((M, B, n_l), old("delta", l))
        if l + 1 in keep:
            requests[("z", l)] = ((M, B, n_l), old("z", l))
        # h⁽ˡ⁾ is an input of the weight gradient (4), so grads=True stores the hidden h's.
        if l + 1 in keep or (grads and l < L - 1):
            requests[("h", l)] = ((M, B, n_l), old("h", l))
        if grads:
            requests[("gw", l)] = ((M, n_l, widths[l]), old("grad_weights", l))
            requests[("gb", l)] = ((M, n_l), old("grad_biases", l))
    arrays = allocate(requests, dtype)
    deltas = [arrays[("delta", l)] for l in range(L)]
    zk = [arrays.get(("z", l)) for l in range(L)]
    hk = [arrays.get(("h", l)) for l in range(L)]
    loss_value = arrays["loss"]
    gw = gb = None
    if grads:
        gw = [arrays[("gw", l)] for l in range(L)]
        gb = [arrays[("gb", l)] for l in range(L)]
    zbad = np.zeros((M, L), dtype=bool)
    dbad = np.zeros((M, L), dtype=bool)
    lossbad = np.zeros(M, dtype=bool)

    # Biases in the weights' dtype and C order (a copy only if they are not), so that every
    # layout takes the same arithmetic path.
    biases = tuple(np.ascontiguousarray(b, dtype=dtype) for b in params.biases)

    # ---- work split: chunks of consecutive networks, taken in turn by the threads.
    chunk_size, n_threads = _plan(M, B, widths, threads, chunk_size, dtype.itemsize)
    tasks = [slice(m0, min(m0 + chunk_size, M)) for m0 in range(0, M, chunk_size)]

    ctx = _Context(
        net=net,
        acts=[net.layer_activation(l + 1) for l in range(L)],
        lossf=lossf,
        weights=params.weights,
        biases=biases,
        x=x,
        y=y,
        weight_decay=float(weight_decay),
        chunk=chunk_size,
        deltas=deltas,
        zk=zk,
        hk=hk,
        loss_value=loss_value,
        gw=gw,
        gb=gb,
        zbad=zbad,
        dbad=dbad,
        lossbad=lossbad,
        local=threading.local(),
        # Every trace array and buffer is C-contiguous by construction, and so are the
        # biases after the conversion above: the choice of path depends on the setting only.
        compiled=_compiled_kernels_on() and kernels.supported(x, *biases),
    )
    # Hidden tanh layers whose h is kept: the compiled backward recomputes φ' = 1 − h² from
    # it (the output layer's φ' stays parked in δ⁽ᴸ⁾, which the loss gradient multiplies).
    ctx.dphi_from_h = [
        ctx.compiled and ctx.acts[l] is _tanh and hk[l] is not None and l < L - 1 for l in range(L)
    ]
    ctx.forward = [_forward_layout(B, *params.weights[l].shape[1:], dtype) for l in range(L)]
    with single_threaded_blas():
        if n_threads <= 1:
            for s in tasks:
                _run_chunk(ctx, s)
        else:
            # map() submits every task at once; idle threads take the next one, so a slow
            # core (other jobs on the machine) does not hold the others back.
            for _ in executor(n_threads).map(partial(_run_chunk, ctx), tasks):
                pass

    first = np.zeros(M, dtype=np.int64)
    for l in range(L):
        first[(first == 0) & zbad[:, l]] = l + 1
    for l in range(L - 1, -1, -1):
        first[(first == 0) & dbad[:, l]] = l + 1
    first[(first == 0) & lossbad] = L
    overflow = first > 0
    if warn and overflow.any():
        warnings.warn(
            f"numerical overflow (inf/NaN) in {int(overflow.sum())} of {M} networks, first at "
            f"layer {int(first[overflow].min())}; trace.overflow marks them (reduce sigma_w "
            + ("or depth, or use float64)" if dtype == np.float32 else "or depth)"),
            NumericalOverflowWarning,
            stacklevel=2,
        )
    z_kept = tuple(zk[l] if l + 1 in keep else None for l in range(L))
    h_kept = tuple(hk[l] if l + 1 in keep else None for l in range(L))
    return Trace(
        z_kept,
        h_kept,
        tuple(deltas),
        loss_value,
        None if gw is None else tuple(gw),
        None if gb is None else tuple(gb),
        overflow,
        first,
        float(weight_decay),
    )


# ---- the per-chunk kernel ------------------------------------------------------------------

#: Target size in bytes of one task's widest layer array (c·B·n elements): large enough that
#: the per-call overhead of Python, numpy and numba (a few µs per call, with the GIL held, so
#: it also limits how well two threads scale) is small, small enough that a chunk's
#: activations stay in the core's cache between the calls of a layer. At B = 64 that is 8
#: networks at width 128 in float64 and 16 in float32, 2 and 4 at width 512, 32 and 64 at
#: width 32. Measured on 2 cores of a Zen 4 (B = 64, depth 10, interleaved medians): float32
#: at width 32 ran 16.5 / 14.1 / 13.1 ms per pass of 256 networks with 32 / 64 / 128
#: networks per task, at width 128 119.7 / 111.1 / 118.4 ms with 8 / 16 / 32; float64 was
#: best at the sizes this gives (8 at width 128: 237 ms, against 248 with 16).
_TASK_BYTES = 1 << 19
#: OpenBLAS's small-matrix kernel bound (m·n·k) on AVX-512 CPUs.
_SMALL_GEMM = 1_000_000
#: Below this many FLOPs for the whole pass, threads cost more than they save.
_PARALLEL_FLOPS = 20_000_000


def _plan(
    M: int, B: int, widths: tuple, threads: int | None, chunk_size: int | None, itemsize: int = 8
) -> tuple[int, int]:
    """Networks per task and number of threads for a pass (any choice gives the same bits);
    ``itemsize``: bytes per element of the pass's dtype."""
    layer_flops = 2 * B * max(a * b for a, b in zip(widths[:-1], widths[1:]))
    if chunk_size is None:
        # ≈ _TASK_BYTES per layer array, and ≥ 4 tasks when M allows (load balance).
        per_network = B * max(widths[1:]) * itemsize
        chunk_size = max(1, min(-(-_TASK_BYTES // per_network), -(-M // 4)))
    chunk_size = min(int(chunk_size), M)
    if threads is None:
        total = 2 * (len(widths) - 1) * M * layer_flops
        threads = 1 if total < _PARALLEL_FLOPS else default_threads()
    n_tasks = -(-M // chunk_size)
    return chunk_size, max(1, min(int(threads), n_tasks))


@dataclass
class _Context:
    """Everything a worker needs to run one chunk of networks (shared, read-only but outputs)."""

    net: MLP
    acts: list
    lossf: Loss
    weights: tuple
    biases: tuple
    x: np.ndarray
    y: np.ndarray
    weight_decay: float
    chunk: int
    deltas: list
    zk: list
    hk: list
    loss_value: np.ndarray
    gw: list | None
    gb: list | None
    zbad: np.ndarray
    dbad: np.ndarray
    lossbad: np.ndarray
    local: threading.local
    compiled: bool
    dphi_from_h: list = None  # per layer: φ' recomputed from the kept h in the backward pass
    forward: list = None  # per layer: (layout, row blocks) of the forward product


def _buffer(ctx: _Context, role: str, width: int, c: int) -> np.ndarray:
    """A per-thread work array ``(c, B, width)``, reused across the chunks of one call."""
    return _work(ctx, (role, width), (ctx.x.shape[-2], width), c)


def _work(ctx: _Context, key, shape: tuple, c: int) -> np.ndarray:
    """A per-thread work array ``(c, *shape)`` under ``key``, reused across the chunks of one
    call."""
    bufs = ctx.local.__dict__.setdefault("bufs", {})
    buf = bufs.get(key)
    if buf is None:
        buf = bufs[key] = np.empty((ctx.chunk, *shape), dtype=ctx.weights[0].dtype)
    return buf[:c]


def _run_chunk(ctx: _Context, s: slice) -> None:
    """Forward (1), δ (2)-(3) and gradients (4) of the networks ``s``, written into ctx."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        _run_chunk_inner(ctx, s)


def _run_chunk_inner(ctx: _Context, s: slice) -> None:
    L = len(ctx.weights)
    c = s.stop - s.start
    x = ctx.x if ctx.x.ndim == 2 else ctx.x[s]
    y = ctx.y if ctx.y.ndim == 2 else ctx.y[s]

    # Forward (1). φ'⁽ˡ⁾ is computed as soon as h⁽ˡ⁾ exists (while it is in cache) and parked
    # in the δ⁽ˡ⁾ output, which the backward pass then multiplies in place by Wᵀδ: z⁽ˡ⁾ and
    # h⁽ˡ⁾ are not needed after layer l+1, so unless kept they live in reused buffers.
    h = x
    for l in range(L):
        act = ctx.acts[l]
        width = ctx.weights[l].shape[1]
        z = ctx.zk[l][s] if ctx.zk[l] is not None else _buffer(ctx, f"z{l % 2}", width, c)
        _forward_product(ctx.forward[l], h, ctx.weights[l][s], z, partial(_work, ctx, c=c))
        d = ctx.deltas[l][s]
        bias = ctx.biases[l][s]
        if act is _tanh and ctx.compiled:
            # One compiled pass: z += b, h = tanh z, φ' = 1 − h², overflow flags (kernels.py).
            # h alternates between two buffers: h⁽ˡ⁻¹⁾ is still the matmul's input here.
            # A kept h serves the backward pass to recompute φ' (same bits), so φ' is not
            # written here and read back there: one stream of the layer's size less.
            h = ctx.hk[l][s] if ctx.hk[l] is not None else _buffer(ctx, f"h{l % 2}", width, c)
            ctx.zbad[s, l] = kernels._tanh_layer_unchecked(
                z, bias, h, d, ctx.zk[l] is not None, not ctx.dphi_from_h[l]
            )
            continue
        z += bias[:, None, :]
        ctx.zbad[s, l] = _nonfinite(z)
        from_h = act.dphi_from_output is not None
        if ctx.hk[l] is not None:
            h = _apply(act.phi, z, ctx.hk[l][s])
        elif isinstance(act.phi, np.ufunc):
            # In place over z when neither z is kept nor φ' needs z.
            target = z if (ctx.zk[l] is None and from_h) else _buffer(ctx, f"h{l % 2}", width, c)
            h = _apply(act.phi, z, target)
        else:
            h = act.phi(z)  # may return z itself (linear); never written to below
        if from_h:
            _dphi_from_output(act, h, d)
        else:
            d[...] = act.dphi(z)

    # Output layer (2): δ⁽ᴸ⁾ = ∂L/∂g ⊙ φ_out'(z⁽ᴸ⁾); d holds φ_out' already.
    g = h
    ctx.loss_value[s] = ctx.lossf.value(g, y)
    ctx.lossbad[s] = ~np.isfinite(ctx.loss_value[s]).all(axis=-1)
    d = ctx.deltas[L - 1][s]
    np.multiply(d, ctx.lossf.grad(g, y), out=d)
    ctx.dbad[s, L - 1] = _nonfinite(d)

    # Backward (3): δ⁽ˡ⁾ = φ'(z⁽ˡ⁾) ⊙ (δ⁽ˡ⁺¹⁾ W⁽ˡ⁺¹⁾) with samples as rows.
    for l in range(L - 2, -1, -1):
        back = _buffer(ctx, "back", ctx.weights[l].shape[1], c)
        w = ctx.weights[l + 1][s]
        _matmul_rows(ctx.deltas[l + 1][s], w, back, _row_blocks(*back.shape[1:], w.shape[1]))
        d = ctx.deltas[l][s]
        if ctx.dphi_from_h[l]:  # d = (1 − h²) ⊙ back, one pass
            ctx.dbad[s, l] = kernels._tanh_scale_layer_unchecked(d, back, ctx.hk[l][s])
        elif ctx.compiled:
            ctx.dbad[s, l] = kernels._scale_layer_unchecked(d, back)  # d *= back, one pass
        else:
            np.multiply(d, back, out=d)
            ctx.dbad[s, l] = _nonfinite(d)

    # Gradients (4): batch means over the B samples, plus weight decay.
    if ctx.gw is not None:
        B = x.shape[-2]
        for l in range(L):
            h_prev = x if l == 0 else ctx.hk[l - 1][s]
            gw = ctx.gw[l][s]
            np.matmul(ctx.deltas[l][s].swapaxes(-1, -2), h_prev, out=gw)
            gw /= B
            if ctx.weight_decay:
                gw += ctx.weight_decay * ctx.weights[l][s]
            np.mean(ctx.deltas[l][s], axis=-2, out=ctx.gb[l][s])


def _matmul_rows(a: np.ndarray, b: np.ndarray, out: np.ndarray, k: int) -> None:
    """``out = a @ b`` for stacks of matrices, as ``k`` row blocks of every product when k > 1
    (see :func:`_row_blocks`); ``a`` may be one 2-D matrix shared by the stack."""
    if k == 1:
        np.matmul(a, b, out=out)
        return
    rows = out.shape[-2] // k
    np.matmul(
        a.reshape(*a.shape[:-2], k, rows, a.shape[-1]),
        b[..., None, :, :],
        out=out.reshape(*out.shape[:-2], k, rows, out.shape[-1]),
    )


#: How the forward product z = h Wᵀ is called (:func:`_forward_layout`).
_DIRECT, _COPY, _SWAP = "direct", "copy", "swap"


def _forward_layout(B: int, n_out: int, n_in: int, dtype) -> tuple[str, int]:
    """The call for a layer's forward product z = h Wᵀ (rows are samples) and its row blocks.

    The weights are stored W (n_out × n_in, C order), so numpy hands OpenBLAS the product with
    a transposed operand; the backward product δ W is the untransposed one. On OpenBLAS's
    AVX-512 kernels (measured on Zen 4, single-threaded, B = 64) that costs:

    * small products (m·n·k ≤ 10⁶, after the row split of :func:`_row_blocks`): the
      untransposed product goes through the small-matrix kernel without packing and runs
      1.3–2× faster than the transposed one, so ``_COPY`` writes Wᵀ into a per-thread buffer
      (n_in·n_out elements, 1/B of the product's multiply-adds) and multiplies h (Wᵀ);
    * larger float32 products: sgemm computes zᵀ = W hᵀ (the weights as the operand OpenBLAS
      packs untransposed) 15–20 % faster than h Wᵀ, so ``_SWAP`` does that into a buffer and
      copies zᵀ into z (B·n_out elements, in cache); dgemm shows no such gain.

    The choice depends only on the layer's shape, the dtype and the BLAS build, never on the
    networks' split, so results stay the same for every thread count and chunk size; it does
    select OpenBLAS kernels that may sum the n_in terms of z in another order than the direct
    call (the last bits of z then differ from ``_DIRECT``'s).
    """
    if not blas_is_avx512():
        return _DIRECT, 1
    k = _row_blocks(B, n_out, n_in)
    if (B // k) * n_in * n_out <= _SMALL_GEMM:
        return _COPY, k
    if np.dtype(dtype) == np.float32:
        return _SWAP, 1
    return _DIRECT, 1


def _forward_product(plan: tuple, h: np.ndarray, w: np.ndarray, z: np.ndarray, work) -> None:
    """z = h Wᵀ for a stack ``w`` of W⁽ˡ⁾ by the call ``plan`` from :func:`_forward_layout`;
    ``work(key, shape)`` returns a scratch array ``(len(w), *shape)``."""
    layout, k = plan
    n_out, n_in = w.shape[-2:]
    if layout == _COPY:
        wt = work(("wt", n_in, n_out), (n_in, n_out))
        np.copyto(wt, w.swapaxes(-1, -2))
        _matmul_rows(h, wt, z, k)
    elif layout == _SWAP:
        zt = work(("zt", n_out), (n_out, z.shape[-2]))
        np.matmul(w, h.swapaxes(-1, -2), out=zt)
        np.copyto(z, zt.swapaxes(-1, -2))
    else:
        np.matmul(h, w.swapaxes(-1, -2), out=z)


def _row_blocks(B: int, n_out: int, n_in: int) -> int:
    """Row blocks for a ``(B, n_in) @ (n_in, n_out)`` GEMM: 2 when that brings it to ≤ 10⁶ m·n·k.

    OpenBLAS's AVX-512 builds compute GEMMs with m·n·k ≤ 10⁶ by a small-matrix kernel
    without packing, so a 64 × 128 × 128 product (B = 64, width 128) is faster as two 32-row
    halves; its AVX2 (Haswell/Zen) kernels have no such path and the split only adds calls
    there, so it is used only with an AVX-512 kernel. The choice depends only on
    the layer shapes, B and the BLAS build, never on how the networks are split, so it cannot
    make results depend on threads or chunks.
    """
    gemm = B * n_in * n_out
    if blas_is_avx512() and B % 2 == 0 and gemm > _SMALL_GEMM >= (B // 2) * n_in * n_out:
        return 2
    return 1


def _apply(fn, src: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = fn(src)``, without a temporary when fn is a numpy ufunc."""
    if isinstance(fn, np.ufunc) and fn.nin == 1 and fn.nout == 1:
        fn(src, out=out)
    else:
        out[...] = fn(src)
    return out


def _dphi_from_output(act, h: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = φ'`` from h; tanh's 1 − h² in two in-place passes (same bits as the lambda)."""
    if act.dphi_from_output is _TANH_DPHI:
        np.multiply(h, h, out=out)
        np.subtract(1.0, out, out=out)
    else:
        out[...] = act.dphi_from_output(h)


def _nonfinite(a: np.ndarray) -> np.ndarray:
    """Per network (axis 0): does the ``(c, B, n)`` block contain inf or NaN?

    One fast pass: a sum is non-finite whenever a term is (inf and NaN propagate); a finite
    block can still overflow its sum, so suspects are re-checked element by element.
    """
    bad = ~np.isfinite(np.add.reduce(a.reshape(a.shape[0], -1), axis=1))
    if bad.any():
        bad[bad] = ~np.isfinite(a[bad]).all(axis=(-2, -1))
    return bad
