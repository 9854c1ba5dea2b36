"""Activation functions φ with their derivatives φ', and a registry of them by name.

Every activation is an :class:`Activation`: a frozen record of the vectorized functions
``phi(x)`` and ``dphi(x)``, the points where φ is not smooth (``kinks``, which Gaussian
quadrature must not integrate across blindly), and, where cheaper, ``dphi_from_output(h)``,
the derivative written in terms of ``h = φ(z)`` (tanh: 1 − h²) so the engine need not keep z.

Anything in deltastats that takes an activation accepts either a name from :data:`ACTIVATIONS`
(``"tanh"``) or an :class:`Activation` object (``leaky_relu(0.2)``); :func:`get_activation`
does the lookup and raises ``ValueError`` listing the valid names for an unknown one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import special

#: An element-wise function of an array (φ, φ' or φ'').
ArrayFn = Callable[[np.ndarray], np.ndarray]

#: SELU scale λ (Klambauer et al. 2017): with SELU_ALPHA, the self-normalising fixed point
#: (mean 0, variance 1).
SELU_LAMBDA = 1.0507009873554804934193349852946
#: SELU negative-side amplitude α (Klambauer et al. 2017).
SELU_ALPHA = 1.6732632423543772848170429916717


#: Families of closed-form Gaussian moments (:attr:`Activation.closed_form`).
CLOSED_FORMS = (None, "linear", "leaky_relu", "erf", "sin")


@dataclass(frozen=True)
class Activation:
    """An element-wise activation φ with its derivative.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"tanh"`` or ``"leaky_relu(0.2)"``.
    phi : callable
        φ(x), vectorized over arrays of any shape.
    dphi : callable
        φ'(x), vectorized; at a kink the right derivative.
    kinks : tuple of float
        Points where φ or φ' is not smooth (relu: ``(0.0,)``). Quadrature splits there.
    dphi_from_output : callable or None
        φ'(z) expressed through h = φ(z), when that is exact (tanh, sigmoid, relu, linear).
    params : dict
        Shape parameters (``{"alpha": 0.2}`` for leaky relu), for display and theory.
    positively_homogeneous : bool
        φ(sx) = s·φ(x) for every s > 0 (linear, relu, leaky relu). Gaussian moments then
        factor exactly through the scale of z, which theory uses to stay finite at any depth.
    closed_form : str or None
        The family of closed-form Gaussian moments theory may use: ``"linear"``,
        ``"leaky_relu"`` (arc-cosine kernels, slope ``params["alpha"]``), ``"erf"`` (arcsine
        kernel) or ``"sin"``; ``None`` → numerical quadrature only.
    phi_and_dphi : callable or None
        (φ(x), φ'(x)) in one call that shares their common work (the normal CDF of GELU, the
        tanh of tanh), the same values as the two calls; used by :meth:`both`.
    """

    name: str
    phi: ArrayFn = field(repr=False)
    dphi: ArrayFn = field(repr=False)
    kinks: tuple[float, ...] = ()
    dphi_from_output: ArrayFn | None = field(default=None, repr=False)
    params: dict = field(default_factory=dict, compare=False)
    positively_homogeneous: bool = False
    closed_form: str | None = None
    phi_and_dphi: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = field(
        default=None, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.closed_form not in CLOSED_FORMS:
            raise ValueError(
                f"closed_form must be one of {', '.join(map(repr, CLOSED_FORMS))}, "
                f"got {self.closed_form!r}"
            )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.phi(x)

    def both(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(φ(x), φ'(x)), each the same values as :attr:`phi` and :attr:`dphi` give, in one
        call when :attr:`phi_and_dphi` shares their work (theory's quadratures need both)."""
        if self.phi_and_dphi is not None:
            return self.phi_and_dphi(x)
        return self.phi(x), self.dphi(x)

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Activation) and other.name == self.name


def leaky_relu(alpha: float = 0.01) -> Activation:
    """Leaky ReLU φ(x) = x for x > 0, αx otherwise; ``leaky_relu(0.0)`` is ReLU.

    Parameters
    ----------
    alpha : float
        Slope on the negative half-line; must be finite.
    """
    alpha = float(alpha)
    if not np.isfinite(alpha):
        raise ValueError(f"leaky_relu: alpha must be finite, got {alpha}")
    name = "relu" if alpha == 0.0 else f"leaky_relu({alpha:g})"

    def phi(x):
        return np.where(x > 0, x, alpha * x)

    def dphi(x):
        return np.where(x > 0, 1.0, alpha).astype(np.result_type(x, np.float32))

    def dphi_h(h):
        # h > 0 exactly when z > 0 (for alpha >= 0), so φ' is a function of h.
        return np.where(h > 0, 1.0, alpha).astype(np.result_type(h, np.float32))

    return Activation(
        name,
        phi,
        dphi,
        kinks=(0.0,),
        dphi_from_output=dphi_h if alpha >= 0 else None,
        params={"alpha": alpha},
        positively_homogeneous=True,
        closed_form="leaky_relu",
    )


def _linear_phi(x):
    return x


def _linear_dphi(x):
    return np.ones_like(x)


def _tanh_dphi(x):
    return 1.0 - np.tanh(x) ** 2


def _sigmoid_dphi(x):
    s = special.expit(x)
    return s * (1.0 - s)


def _erf_dphi(x):
    return (2.0 / np.sqrt(np.pi)) * np.exp(-np.square(x))


def _gelu_phi(x):
    # Exact GELU: x·Φ(x), Φ the standard normal CDF.
    return x * special.ndtr(x)


def _gelu_dphi(x):
    # d/dx [x Φ(x)] = Φ(x) + x φ_N(x), φ_N the standard normal density.
    return special.ndtr(x) + x * np.exp(-0.5 * np.square(x)) / np.sqrt(2.0 * np.pi)


def _gelu_both(x):
    # one Φ(x) for both (the same operations as _gelu_phi and _gelu_dphi)
    c = special.ndtr(x)
    return x * c, c + x * np.exp(-0.5 * np.square(x)) / np.sqrt(2.0 * np.pi)


def _tanh_both(x):
    t = np.tanh(x)
    return t, 1.0 - t**2


def _softplus_phi(x):
    return np.logaddexp(0.0, x)


def _silu_phi(x):
    return x * special.expit(x)


def _silu_dphi(x):
    s = special.expit(x)
    return s * (1.0 + x * (1.0 - s))


def _selu_phi(x):
    # expm1 on min(x, 0) so the unused branch never overflows.
    return SELU_LAMBDA * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0)))


def _selu_dphi(x):
    return SELU_LAMBDA * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(x, 0)))


#: φ(z) = z, φ' = 1 (deep linear networks; exact theory in :mod:`deltastats.theory.linear`).
linear = Activation(
    "linear",
    _linear_phi,
    _linear_dphi,
    dphi_from_output=None,
    positively_homogeneous=True,
    closed_form="linear",
)
#: φ(z) = max(z, 0), φ' = 1[z > 0]; positively homogeneous, arc-cosine closed forms.
relu = leaky_relu(0.0)
#: φ(z) = tanh z, φ' = 1 − φ² (computed from the output).
tanh = Activation(
    "tanh", np.tanh, _tanh_dphi, dphi_from_output=lambda h: 1.0 - h * h, phi_and_dphi=_tanh_both
)
#: φ(z) = 1/(1 + e^{−z}), φ' = φ(1 − φ).
sigmoid = Activation(
    "sigmoid", special.expit, _sigmoid_dphi, dphi_from_output=lambda h: h * (1.0 - h)
)
#: φ(z) = erf z, φ' = (2/√π) e^{−z²}; arcsine closed forms.
erf = Activation("erf", special.erf, _erf_dphi, closed_form="erf")
#: φ(z) = z Φ(z) (the exact GELU, Φ the standard normal CDF).
gelu = Activation("gelu", _gelu_phi, _gelu_dphi, phi_and_dphi=_gelu_both)
#: φ(z) = log(1 + e^z), φ' = the logistic sigmoid.
softplus = Activation("softplus", _softplus_phi, special.expit)
#: φ(z) = z/(1 + e^{−z}) (SiLU, also called swish).
silu = Activation("silu", _silu_phi, _silu_dphi)
#: φ(z) = λz for z > 0, λα(e^z − 1) otherwise (SELU_LAMBDA, SELU_ALPHA); a kink at 0.
selu = Activation("selu", _selu_phi, _selu_dphi, kinks=(0.0,))
#: φ(z) = sin z, φ' = cos z; closed-form Gaussian moments.
sin = Activation("sin", np.sin, np.cos, closed_form="sin")

#: Registry of activations by name. ``"swish"`` is an alias of ``"silu"``;
#: ``"leaky_relu"`` is :func:`leaky_relu` with its default α = 0.01.
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (linear, relu, leaky_relu(), tanh, sigmoid, erf, gelu, softplus, silu, selu, sin)
}
ACTIVATIONS["leaky_relu"] = ACTIVATIONS.pop("leaky_relu(0.01)")
ACTIVATIONS["swish"] = silu
ACTIVATIONS["identity"] = linear


def get_activation(activation: str | Activation, *, argument: str = "activation") -> Activation:
    """Return the :class:`Activation` for a registry name or pass an ``Activation`` through.

    ``"leaky_relu(0.2)"`` style names build a leaky ReLU with that slope.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid names.
    """
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        key = activation.strip().lower()
        if key in ACTIVATIONS:
            return ACTIVATIONS[key]
        if key.startswith("leaky_relu(") and key.endswith(")"):
            try:
                return leaky_relu(float(key[len("leaky_relu(") : -1]))
            except ValueError:
                pass
    valid = ", ".join(sorted(ACTIVATIONS))
    raise ValueError(
        f"unknown {argument} {activation!r}; valid names are: {valid} "
        "(or an Activation object, e.g. deltastats.activations.leaky_relu(0.2))"
    )
