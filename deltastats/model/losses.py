"""Per-sample losses L(g, y) and their gradients ∂L/∂g.

* ``"mse"``: L = ½‖g − y‖², the textbook squared error (the ½ cancels the 2 of the
  derivative), ∂L/∂g = g − y.
* ``"sum_squares"``: L = ‖g − y‖², the same loss without the ½ (∂L/∂g = 2(g − y)), to show
  what the ½ changes: δ doubles, E[δ²] is four times larger.
* ``"cross_entropy"``: softmax cross-entropy on the network output g (with the default linear
  output activation, g is the output pre-activation z⁽ᴸ⁾): L = logsumexp(g) − Σ_k y_k g_k,
  ∂L/∂g = softmax(g)·Σ_k y_k − y (= softmax(g) − y for one-hot or probability targets).

Losses are looked up by name with :func:`get_loss`; an unknown name raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import special


@dataclass(frozen=True)
class Loss:
    """A per-sample loss.

    Parameters
    ----------
    name : str
    value : callable
        ``value(g, y)`` → loss per sample, shape ``g.shape[:-1]`` (e.g. ``(M, B)``).
    grad : callable
        ``grad(g, y)`` → ∂L/∂g, shape of ``g`` (e.g. ``(M, B, n_L)``).
    """

    name: str
    value: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(repr=False)
    grad: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(repr=False)


def _mse_value(g, y):
    return 0.5 * np.sum(np.square(g - y), axis=-1)


def _mse_grad(g, y):
    return g - y


def _sse_value(g, y):
    return np.sum(np.square(g - y), axis=-1)


def _sse_grad(g, y):
    return 2.0 * (g - y)


def _ce_value(g, y):
    # Stable: logsumexp subtracts the max before exponentiating.
    return special.logsumexp(g, axis=-1) * np.sum(y, axis=-1) - np.sum(y * g, axis=-1)


def _ce_grad(g, y):
    return special.softmax(g, axis=-1) * np.sum(y, axis=-1, keepdims=True) - y


#: L = ½‖g − y‖², ∂L/∂g = g − y (the default).
mse = Loss("mse", _mse_value, _mse_grad)
#: L = ‖g − y‖², ∂L/∂g = 2(g − y).
sum_squares = Loss("sum_squares", _sse_value, _sse_grad)
#: Softmax cross-entropy with a stable log-sum-exp: L = (Σ_k y_k) log Σ_k e^{g_k} − Σ_k y_k g_k,
#: ∂L/∂g = softmax(g)·Σ_k y_k − y.
cross_entropy = Loss("cross_entropy", _ce_value, _ce_grad)

#: Registry of losses by name.
LOSSES: dict[str, Loss] = {"mse": mse, "sum_squares": sum_squares, "cross_entropy": cross_entropy}


def get_loss(loss: str | Loss) -> Loss:
    """Return the :class:`Loss` for a name (``"mse"``, ``"cross_entropy"``) or pass one through.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid names.
    """
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss.strip().lower() in LOSSES:
        return LOSSES[loss.strip().lower()]
    raise ValueError(f"unknown loss {loss!r}; valid names are: {', '.join(sorted(LOSSES))}")
