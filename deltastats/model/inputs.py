"""Input laws: where the inputs x = h⁽⁰⁾ come from.

An input law draws ``(B, n_0)`` inputs shared by all networks, or ``(M, B, n_0)`` inputs with
one independent batch per network (``n_networks=M``), deterministically from a seed. Per-network
batches come from network m's own stream (:mod:`deltastats.seeding`), so they do not depend on
chunking.

Laws: :func:`gaussian` (x ~ N(0, q₀·I)), :func:`sphere` (uniform on the sphere of radius
√(n₀ q₀)), :func:`uniform` (i.i.d. U(low, high) coordinates), :func:`from_array` (rows of a
user data set, drawn with replacement).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from .seeding import SeedLike, network_rngs, stream_rng


def _check_batch(batch: int) -> None:
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")


@dataclass(frozen=True)
class InputLaw:
    """Base class of input laws; subclasses implement :meth:`draw` and :meth:`moments`."""

    def draw(self, rng: np.random.Generator, batch: int, n0: int) -> np.ndarray:
        """Draw a ``(batch, n0)`` float64 array from ``rng``."""
        raise NotImplementedError

    def moments(self, n0: int) -> tuple[float, float]:
        """``(m, q)``: the mean of a coordinate, E x_i, and q = E‖x‖²/n₀ (mean-field inputs)."""
        raise NotImplementedError

    def sample(
        self,
        n0: int,
        batch: int,
        seed: SeedLike = 0,
        *,
        n_networks: int | None = None,
        start: int = 0,
        dtype=np.float64,
    ) -> np.ndarray:
        """Draw inputs.

        Parameters
        ----------
        n0 : int
            Input width n₀.
        batch : int
            B, inputs per network.
        seed : int or SeedSequence
        n_networks : int or None
            ``None``: one batch shared by all networks, shape ``(B, n0)``. An int M: one
            independent batch per network, shape ``(M, B, n0)``, networks ``start … start+M-1``.
        dtype : numpy float dtype

        Returns
        -------
        ndarray, shape ``(B, n0)`` or ``(M, B, n0)``
        """
        _check_batch(batch)
        if n_networks is None:
            return self.draw(stream_rng(seed, "shared_inputs"), batch, n0).astype(dtype, copy=False)
        rngs = network_rngs(seed, "inputs", start, n_networks)
        return np.stack([self.draw(r, batch, n0) for r in rngs]).astype(dtype, copy=False)


@dataclass(frozen=True)
class Gaussian(InputLaw):
    """x ~ N(0, q₀·I): coordinates i.i.d. N(0, q₀), so E‖x‖²/n₀ = q₀."""

    q0: float = 1.0

    def __post_init__(self):
        if not (np.isfinite(self.q0) and self.q0 > 0):
            raise ValueError(f"inputs.gaussian: q0 must be a positive finite number, got {self.q0}")

    def draw(self, rng, batch, n0):
        return np.sqrt(self.q0) * rng.standard_normal((batch, n0))

    def moments(self, n0):
        return 0.0, float(self.q0)


@dataclass(frozen=True)
class Sphere(InputLaw):
    """x uniform on the sphere of radius √(n₀ q₀), so ‖x‖²/n₀ = q₀ exactly."""

    q0: float = 1.0

    def __post_init__(self):
        if not (np.isfinite(self.q0) and self.q0 > 0):
            raise ValueError(f"inputs.sphere: q0 must be a positive finite number, got {self.q0}")

    def draw(self, rng, batch, n0):
        x = rng.standard_normal((batch, n0))
        return x * (np.sqrt(n0 * self.q0) / np.linalg.norm(x, axis=-1, keepdims=True))

    def moments(self, n0):
        return 0.0, float(self.q0)


@dataclass(frozen=True)
class Uniform(InputLaw):
    """Coordinates i.i.d. U(low, high)."""

    low: float = -1.0
    high: float = 1.0

    def __post_init__(self):
        if not (np.isfinite(self.low) and np.isfinite(self.high) and self.low < self.high):
            raise ValueError(
                f"inputs.uniform: need finite low < high, got low={self.low}, high={self.high}"
            )

    def draw(self, rng, batch, n0):
        return rng.uniform(self.low, self.high, size=(batch, n0))

    def moments(self, n0):
        lo, hi = self.low, self.high
        return 0.5 * (lo + hi), (lo * lo + lo * hi + hi * hi) / 3.0


@dataclass(frozen=True)
class FromArray(InputLaw):
    """Rows of a user data set ``X`` of shape ``(N, n0)``, drawn uniformly with replacement."""

    X: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self):
        X = np.asarray(self.X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 1:
            raise ValueError(f"inputs.from_array: X must have shape (N, n0), got {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("inputs.from_array: X contains NaN or inf")
        X.setflags(write=False)
        object.__setattr__(self, "X", X)

    def draw(self, rng, batch, n0):
        if n0 != self.X.shape[1]:
            raise ValueError(
                f"inputs.from_array: X has {self.X.shape[1]} columns but the network's n_0 is {n0}"
            )
        return self.X[rng.integers(0, self.X.shape[0], size=batch)]

    def moments(self, n0):
        return float(self.X.mean()), float(np.mean(np.sum(self.X**2, axis=1)) / self.X.shape[1])

    def __hash__(self):
        return hash(self.X.tobytes())

    def __eq__(self, other):
        return isinstance(other, FromArray) and np.array_equal(self.X, other.X)


def gaussian(q0: float = 1.0) -> Gaussian:
    """Inputs x ~ N(0, q₀·I)."""
    return Gaussian(float(q0))


def sphere(q0: float = 1.0) -> Sphere:
    """Inputs uniform on the sphere of radius √(n₀ q₀)."""
    return Sphere(float(q0))


def uniform(low: float = -1.0, high: float = 1.0) -> Uniform:
    """Inputs with i.i.d. U(low, high) coordinates."""
    return Uniform(float(low), float(high))


def from_array(X: np.ndarray) -> FromArray:
    """Inputs drawn (with replacement) from the rows of ``X``, shape ``(N, n0)``."""
    return FromArray(X)


#: Input laws by name, for configs: ``{"law": "gaussian", "q0": 1.0}``.
INPUT_LAWS = {"gaussian": gaussian, "sphere": sphere, "uniform": uniform}
