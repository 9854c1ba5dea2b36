"""What every theory module shares: the coverage exception, argument checks and the
standardised-moment helper."""

from __future__ import annotations

import numpy as np

from ..model.activations import Activation, get_activation
from .quadrature import MOMENT_KINDS, activation_moment


class TheoryNotCovered(ValueError):
    """Theory has no derived prediction for this setting (e.g. cross-entropy, teacher targets).

    A ``ValueError`` subclass, distinct from bad input: a run or sweep that meets it skips the
    theory column with the message as its note, instead of failing; bad arguments still raise
    plain ``ValueError``.
    """


def _act(activation: str | Activation, argument: str = "activation") -> Activation:
    act = get_activation(activation, argument=argument)
    if not callable(getattr(act, "dphi", None)):
        raise ValueError(
            f"{argument} {act.name!r} has no derivative dphi; theory needs φ' — build it as "
            "Activation(name, phi, dphi)"
        )
    return act


def _nonneg(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if np.any(~np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name} must be finite and >= 0, got {x!r}")
    return a


def _positive_sigma_w(sigma_w) -> np.ndarray:
    a = np.asarray(sigma_w, dtype=np.float64)
    if np.any(~np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(
            f"sigma_w must be > 0 for a fixed point (σ_w = 0 makes every layer constant), got "
            f"{sigma_w!r}; pass a positive weight scale"
        )
    return a


def _std_moment(act: Activation, kind: str, a, logv) -> np.ndarray:
    """E_{z~N(m, v)}[g]/s^d with s = √v, m = a·s, d the homogeneity degree of the kind.

    For positively homogeneous φ this is exactly E_{N(a, 1)}[g] whatever the scale, so huge
    scales (deep chaotic relu) never overflow; otherwise it is computed at (m, v) directly.
    """
    deg = MOMENT_KINDS[kind]
    if act.positively_homogeneous:
        return activation_moment(act, kind, a, 1.0)
    s = np.exp(0.5 * np.asarray(logv, dtype=np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        # Tolerance in the units of the standardised moment: an absolute error of 1e−11·s^deg
        # in E[g] is 1e−11 after dividing by s^deg (ddphi/phi_ddphi go through deg-1, 2 kinds).
        scale = float(np.max(np.maximum(s, 1.0))) ** max(deg, 1)
        return activation_moment(act, kind, a * s, s * s, atol=1e-11 * scale) / s**deg
