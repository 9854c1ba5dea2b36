"""What every theory module shares: the coverage exception, argument checks and the
standardised-moment helper."""

from __future__ import annotations

import numpy as np

from ..model.activations import Activation, get_activation
from .quadrature import MOMENT_KINDS, activation_moment, expect


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


#: Nodes per quadrature call in :func:`_std_moments` (memory stays bounded for big rules).
NODE_CHUNK = 256

#: Integrands of the base moment kinds from φ(z), φ'(z) and z − μ (one evaluation of φ, φ').
_BASE = {
    "phi": lambda p, d, zc: p,
    "phi2": lambda p, d, zc: p * p,
    "dphi": lambda p, d, zc: d,
    "dphi2": lambda p, d, zc: d * d,
    "phi_dphi": lambda p, d, zc: p * d,
    "phi2_dphi2": lambda p, d, zc: (p * d) ** 2,
    "phi_dphi2": lambda p, d, zc: p * d * d,
    "zc_phi_dphi": lambda p, d, zc: zc * p * d,
    "zc_dphi": lambda p, d, zc: zc * d,
}


def _std_moments(act: Activation, kinds, a, logv) -> dict[str, np.ndarray]:
    """:func:`_std_moment` for several kinds at once (same a, log v), one quadrature.

    Activations with a closed form or positive homogeneity go kind by kind (cheap); the
    others integrate every kind on one rule, evaluating φ and φ' once per node, with each
    integrand standardised by s^d inside (so one absolute tolerance fits every kind), and
    φ'' by Gaussian integration by parts, as :func:`activation_moment` does:
    E φ''·s = E[(z − μ)φ']/s and E[φφ''] = E[(z − μ)φφ']/s² − E[φ'²].
    """
    if act.positively_homogeneous or act.closed_form is not None:
        return {k: _std_moment(act, k, a, logv) for k in kinds}
    a, logv = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(logv, np.float64))
    if a.ndim == 1 and a.size > NODE_CHUNK:
        # bounded memory for big rules (e.g. many empirical rows): the quadrature holds
        # (kinds × nodes × points) values at once
        parts = [
            _std_moments(act, kinds, a[i : i + NODE_CHUNK], logv[i : i + NODE_CHUNK])
            for i in range(0, a.size, NODE_CHUNK)
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in kinds}
    base = []
    for k in kinds:
        for b in {"ddphi": ("zc_dphi",), "phi_ddphi": ("zc_phi_dphi", "dphi2")}.get(k, (k,)):
            if b not in base:
                base.append(b)
    a = np.asarray(a, dtype=np.float64)
    s = np.exp(0.5 * np.asarray(logv, dtype=np.float64))
    a, s = np.broadcast_arrays(a, s)
    m, v = a * s, s * s
    P = len(base)
    deg = np.array([MOMENT_KINDS[b] for b in base], dtype=np.float64)
    sc = s[..., None]
    mm = m[..., None]

    def f(z):
        # the P integrands share the Gaussian: φ is evaluated once per node
        p, d = act.both(z)
        zc = z - mm
        out = np.empty((P,) + z.shape)
        for i, b in enumerate(base):
            out[i] = _BASE[b](p, d, zc) / sc ** deg[i]
        return out

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        vals = expect(f, m, v, kinks=act.kinks, atol=1e-11)
    got = dict(zip(base, vals, strict=True))
    out = {}
    for k in kinds:
        if k == "ddphi":
            out[k] = got["zc_dphi"]
        elif k == "phi_ddphi":
            out[k] = got["zc_phi_dphi"] - got["dphi2"]
        else:
            out[k] = got[k]
    return out
