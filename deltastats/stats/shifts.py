"""Shifts and scales of the per-network features of a trace, and the constants the statistics
need (split from :mod:`deltastats.stats.accumulators`, which uses them).

Every feature is a power of (x − c)/s with a fixed shift c and a power-of-two scale s taken
from network 0 (:func:`network_shifts`): the shifted-data algorithm that keeps the features'
digits, see :mod:`deltastats.stats.accumulators` and :mod:`deltastats.stats.features`.
"""

from __future__ import annotations

import numpy as np

from .features import power_of_two_scale


def _finite_or_zero(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a[~np.isfinite(a)] = 0.0
    return a


def network_shifts(
    sh: dict, layer: int, delta0: np.ndarray, z0=None, grad0=None, loss0=None
) -> None:
    """Fill ``sh`` with the shifts c and scales s of layer ``layer`` from network 0's values.

    Shifts are network 0's batch means (non-finite → 0), scales the powers of two of
    :func:`~deltastats.stats.features.power_of_two_scale` (1 for every ordinary run). Both
    accumulators use this, so the engine's trace and the same arrays given by hand get the
    same shifts and hence the same bits.

    Parameters
    ----------
    delta0, z0 : ndarray ``(B, n_l)``
        Network 0's δ⁽ˡ⁾ and z⁽ˡ⁾ (``z0`` optional).
    grad0 : ndarray or None
        Network 0's gradient of the layer's weights, any shape.
    loss0 : ndarray ``(B,)`` or None
        Network 0's per-sample losses (sets the loss shift and scale once, with layer 1).
    """
    with np.errstate(all="ignore"):
        if loss0 is not None:
            sh["loss"] = _finite_or_zero(np.mean(loss0, dtype=np.float64))
            sh["loss/scale"] = power_of_two_scale(np.asarray(loss0, np.float64) - sh["loss"])
        d = np.asarray(delta0, dtype=np.float64)
        sh[f"delta/{layer}"] = c = _finite_or_zero(d.mean(axis=0))
        sh[f"delta/{layer}/scale"] = power_of_two_scale(d - c)
        if z0 is not None:
            z = np.asarray(z0, dtype=np.float64)
            sh[f"z/{layer}"] = c = _finite_or_zero(z.mean(axis=0))
            sh[f"z/{layer}/scale"] = power_of_two_scale(z - c)
        sh[f"lognorm/{layer}"] = _finite_or_zero(_log_norm(d[None])[0].mean())
        sh[f"dsq/{layer}"] = _finite_or_zero(np.mean(d * d))
        if grad0 is not None:
            g = np.asarray(grad0, dtype=np.float64)
            sh[f"gradw/{layer}"] = c = _finite_or_zero(g.mean())
            sh[f"gradw/{layer}/scale"] = power_of_two_scale(g - c)


def _scale(sh: dict, key: str) -> float:
    """A scale of the shifts (1 for shifts made before scales existed, e.g. given by hand)."""
    return float(sh.get(key, 1.0))


def layer_consts(sh: dict, layer: int, *, z: bool, grad_size: int | None, stein: bool) -> dict:
    """The statistics' constants of layer ``layer``'s feature arrays: shifts ``c``, scales
    ``s`` (the features are in units of s, see :mod:`deltastats.stats.features`), gradient
    sizes ``N``, and for Stein the ratio s_ℓ/s_z of the scaled covariance to the scaled
    variance."""
    l = layer
    out = {}
    s_d = _scale(sh, f"delta/{l}/scale")
    for q in ("delta", "z") if z else ("delta",):
        c, s_q = sh[f"{q}/{l}"], _scale(sh, f"{q}/{l}/scale")
        out[f"{q}/{l}/unit"] = {"c": c, "s": s_q}
        out[f"{q}/{l}/pool"] = {"c": np.atleast_1d(c.mean()), "s": s_q, "n": float(np.size(c))}
    out[f"lognorm/{l}/pool"] = {"c": np.atleast_1d(sh[f"lognorm/{l}"])}
    out[f"dsq/{l}/pool"] = {"c": np.atleast_1d(sh[f"dsq/{l}"]), "s": s_d * s_d}
    if grad_size is not None:
        # E‖G‖² = N·E[G_i²], N the number of entries of the layer's gradient.
        out[f"gradw/{l}/pool"] = {
            "c": np.atleast_1d(sh[f"gradw/{l}"]),
            "N": np.array([float(grad_size)]),
            "s": _scale(sh, f"gradw/{l}/scale"),
        }
    if stein:
        ratio = _scale(sh, "loss/scale") / _scale(sh, f"z/{l}/scale")
        c_d = sh[f"delta/{l}"]
        out[f"stein/{l}/unit"] = {"c_d": c_d, "s_d": s_d, "ratio": ratio}
        out[f"stein/{l}/pool"] = {"c_d": np.atleast_1d(c_d.mean()), "s_d": s_d, "ratio": ratio}
    return out


def _trace_arrays(*arrays: np.ndarray) -> list[np.ndarray]:
    """Trace arrays as the feature kernel takes them: C-contiguous, all float32 if all are
    float32 (the engine's float32 traces, not copied), else all float64."""
    dtype = np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64
    return [np.ascontiguousarray(a, dtype=dtype) for a in arrays]


def _log_norm(delta: np.ndarray) -> np.ndarray:
    """t = log(‖δ⁽ˡ⁾‖²/n_l) per sample ``(M, B)`` (−inf where δ⁽ˡ⁾ = 0 exactly)."""
    with np.errstate(divide="ignore"):
        return np.log(np.mean(delta * delta, axis=-1))
