"""The batched backprop engine: forward and backward for M networks × B inputs at once.

For every network m and input b (DESIGN.md notation, δ = ∂L/∂z, no minus sign):

    z⁽ˡ⁾ = W⁽ˡ⁾ h⁽ˡ⁻¹⁾ + b⁽ˡ⁾,   h⁽ˡ⁾ = φ(z⁽ˡ⁾),   h⁽⁰⁾ = x,   g = φ_out(z⁽ᴸ⁾)      (1)
    δ⁽ᴸ⁾ = ∂L/∂g ⊙ φ_out'(z⁽ᴸ⁾)                                                       (2)
    δ⁽ˡ⁾ = φ'(z⁽ˡ⁾) ⊙ (W⁽ˡ⁺¹⁾ᵀ δ⁽ˡ⁺¹⁾)                                                  (3)
    ∂J/∂W⁽ˡ⁾ = (1/B) Σ_b δ⁽ˡ⁾ h⁽ˡ⁻¹⁾ᵀ + λ W⁽ˡ⁾,   ∂J/∂b⁽ˡ⁾ = (1/B) Σ_b δ⁽ˡ⁾                (4)

where J = (1/B) Σ_b L_b + (λ/2) Σ_l ‖W⁽ˡ⁾‖² is the batch objective of the second seed document.
The Haykin-style derivation (``001_…txt``) defines δ_Haykin = −∂E/∂v = −δ here.

Rows are samples: with arrays ``(M, B, n)``, (1) is ``h @ Wᵀ`` and (3) is ``δ @ W``, one stacked
``matmul`` per layer over all networks and inputs.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .losses import Loss, get_loss
from .networks import MLP, Params


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
    """

    z: tuple
    h: tuple
    delta: tuple
    loss: np.ndarray
    grad_weights: tuple | None
    grad_biases: tuple | None
    overflow: np.ndarray
    overflow_layer: np.ndarray

    @property
    def output(self) -> np.ndarray | None:
        """The network output g, shape ``(M, B, n_L)`` (``None`` if layer L was not kept)."""
        return self.h[-1]


def _check_array(name: str, a, M: int, width: int, batch: int | None = None) -> np.ndarray:
    a = np.asarray(a)
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
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def forward(net: MLP, params: Params, x: np.ndarray) -> np.ndarray:
    """Network output g for inputs x (no validation, no trace; used by teacher targets).

    Parameters
    ----------
    x : ndarray, shape ``(B, n_0)`` or ``(M, B, n_0)``

    Returns
    -------
    ndarray, shape ``(M, B, n_L)``
    """
    h = x
    for l in range(net.depth):
        z = np.matmul(h, params.weights[l].swapaxes(-1, -2)) + params.biases[l][:, None, :]
        h = net.layer_activation(l + 1).phi(z)
    return h


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
        kept for every layer.
    warn : bool
        Emit a :class:`NumericalOverflowWarning` when some network overflowed.

    Returns
    -------
    Trace
    """
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
    if not (np.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay}")
    if lossf.name == "cross_entropy" and (
        np.any(y < 0) or not np.allclose(y.sum(axis=-1), 1.0, atol=1e-6)
    ):
        raise ValueError(
            "cross_entropy needs targets y whose rows are probability vectors (one-hot or soft "
            "labels: entries >= 0 summing to 1); use targets.one_hot(n_classes)"
        )
    L = net.depth
    keep = set(range(1, L + 1)) if keep_layers is None else {int(k) for k in keep_layers}
    if not keep <= set(range(1, L + 1)):
        raise ValueError(f"keep_layers must be layers in 1 … {L}, got {sorted(keep)}")
    dtype = params.weights[0].dtype
    x = x.astype(dtype, copy=False)
    y = y.astype(dtype, copy=False)

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # Forward (1). z of every layer is needed for φ'(z) in (3); h⁽ˡ⁻¹⁾ for the gradients (4).
        zs, hs = [], []
        h = x
        for l in range(L):
            z = np.matmul(h, params.weights[l].swapaxes(-1, -2))
            z += params.biases[l][:, None, :]
            h = net.layer_activation(l + 1).phi(z)
            zs.append(z)
            hs.append(h)
        g = hs[-1]
        loss_value = lossf.value(g, y)
        # Backward (2)-(3).
        deltas = [None] * L
        d = lossf.grad(g, y) * net.phi_out.dphi(zs[-1])
        deltas[L - 1] = d
        for l in range(L - 2, -1, -1):
            d = np.matmul(d, params.weights[l + 1]) * _dphi(net, l + 1, zs[l], hs[l])
            deltas[l] = d
        gw = gb = None
        if grads:
            B = x.shape[-2]
            gw, gb = [], []
            for l in range(L):
                h_prev = x if l == 0 else hs[l - 1]
                gw_l = np.matmul(deltas[l].swapaxes(-1, -2), h_prev) / B
                if weight_decay:
                    gw_l += weight_decay * params.weights[l]
                gw.append(gw_l)
                gb.append(deltas[l].mean(axis=-2))
            gw, gb = tuple(gw), tuple(gb)

    overflow, first = _overflow(zs, deltas, loss_value)
    if warn and overflow.any():
        warnings.warn(
            f"numerical overflow (inf/NaN) in {int(overflow.sum())} of {M} networks, first at "
            f"layer {int(first[overflow].min())}; trace.overflow marks them (reduce sigma_w, "
            "depth, or use float64)",
            NumericalOverflowWarning,
            stacklevel=2,
        )
    z_kept = tuple(z if l + 1 in keep else None for l, z in enumerate(zs))
    h_kept = tuple(h if l + 1 in keep else None for l, h in enumerate(hs))
    return Trace(z_kept, h_kept, tuple(deltas), loss_value, gw, gb, overflow, first)


def _dphi(net: MLP, layer: int, z: np.ndarray, h: np.ndarray) -> np.ndarray:
    """φ'(z⁽ˡ⁾), from h when the activation allows (tanh: 1 − h², cheaper than from z)."""
    act = net.layer_activation(layer)
    if act.dphi_from_output is not None:
        return act.dphi_from_output(h)
    return act.dphi(z)


def _overflow(zs, deltas, loss_value) -> tuple[np.ndarray, np.ndarray]:
    """Per-network overflow mask and the first layer where it appears (0 if none)."""
    M = loss_value.shape[0]
    first = np.zeros(M, dtype=np.int64)
    for l, z in enumerate(zs):
        bad = ~np.isfinite(z).all(axis=(-2, -1))
        first[(first == 0) & bad] = l + 1
    bad_loss = ~np.isfinite(loss_value).all(axis=-1)
    for l in range(len(deltas) - 1, -1, -1):
        bad = ~np.isfinite(deltas[l]).all(axis=(-2, -1))
        first[(first == 0) & bad] = l + 1
    first[(first == 0) & bad_loss] = len(zs)
    return first > 0, first
