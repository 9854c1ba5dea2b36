"""Target laws: the y in L(g, y).

A target law turns a batch of inputs ``x`` (``(B, n_0)`` shared, or ``(M, B, n_0)`` one batch
per network) into targets ``y`` of the same leading shape and width n_L. Random targets use
the same sharing as the inputs: one shared stream for shared inputs, network m's own stream
for per-network inputs (:mod:`deltastats.seeding`). Gaussian targets are counter-based
(:func:`deltastats.model.philox.network_normal`, tensor 0 of stream ``targets``; a shared batch
uses the network index ``SHARED_NETWORK``).

Laws: :func:`zeros`, :func:`constant`, :func:`gaussian`, :func:`teacher` (a fixed teacher
network's output), :func:`one_hot` (uniform random classes, for cross-entropy),
:func:`paired` (each input's own label, for :func:`deltastats.inputs.from_arrays`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import checks
from .inputs import FromArrays
from .networks import MLP, forward
from .philox import network_normal
from .seeding import SHARED_NETWORK, SeedLike, network_rngs, stream_key, stream_rng


@dataclass(frozen=True)
class TargetLaw:
    """Base class of target laws; subclasses implement :meth:`draw` (and :meth:`moments`)."""

    def draw(self, rng: np.random.Generator, x: np.ndarray, n_out: int) -> np.ndarray:
        """Targets ``(B, n_out)`` for one batch ``x`` of shape ``(B, n_0)``."""
        raise NotImplementedError

    def moments(self, n_out: int) -> tuple[float, float] | None:
        """``(E y_k, E y_k²)`` averaged over output units; ``None`` if not known in closed form."""
        return None

    def sample(
        self, x: np.ndarray, n_out: int, seed: SeedLike = 0, *, start: int = 0, dtype=None
    ) -> np.ndarray:
        """Targets for inputs ``x``.

        Parameters
        ----------
        x : ndarray, shape ``(B, n_0)`` or ``(M, B, n_0)``
        n_out : int
            Output width n_L.
        seed : int or SeedSequence
        start : int
            Global index of the first network (for per-network inputs).

        Returns
        -------
        ndarray, shape ``(B, n_out)`` or ``(M, B, n_out)``
        """
        x = np.asarray(x)
        dtype = x.dtype if dtype is None else dtype
        if x.ndim == 2:
            return self.draw(stream_rng(seed, "targets"), x, n_out).astype(dtype, copy=False)
        if x.ndim != 3:
            raise ValueError(f"x must have shape (B, n0) or (M, B, n0), got {x.shape}")
        rngs = network_rngs(seed, "targets", start, x.shape[0])
        return np.stack([self.draw(r, xm, n_out) for r, xm in zip(rngs, x)]).astype(
            dtype, copy=False
        )


@dataclass(frozen=True)
class Constant(TargetLaw):
    """y = c for every sample and output unit (``zeros()`` is c = 0)."""

    c: float = 0.0

    def __post_init__(self):
        if not np.isfinite(self.c):
            raise ValueError(f"targets.constant: c must be finite, got {self.c}")

    def draw(self, rng, x, n_out):
        return np.full((x.shape[0], n_out), self.c, dtype=np.float64)

    def moments(self, n_out):
        return float(self.c), float(self.c) ** 2


@dataclass(frozen=True)
class Gaussian(TargetLaw):
    """y ~ N(0, σ²·I), independent of x."""

    sigma: float = 1.0

    def __post_init__(self):
        if not (np.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"targets.gaussian: sigma must be finite and >= 0, got {self.sigma}")

    def draw(self, rng, x, n_out):
        """Targets from a numpy generator (``sample`` draws counter-based numbers instead)."""
        return self.sigma * rng.standard_normal((x.shape[0], n_out))

    def sample(self, x, n_out, seed=0, *, start=0, dtype=None):
        """Counter-based y = σ·Z, ``(B, n_out)`` or ``(M, B, n_out)`` like ``x``: network m's
        targets are tensor 0 of its ``targets`` stream (see :meth:`TargetLaw.sample`)."""
        x = np.asarray(x)
        dtype = x.dtype if dtype is None else dtype
        if x.ndim not in (2, 3):
            raise ValueError(f"x must have shape (B, n0) or (M, B, n0), got {x.shape}")
        checks.positive_int("n_out", n_out)
        shared = x.ndim == 2
        if not shared:
            checks.integer("start", start, 0)
        shape = ((1, x.shape[0]) if shared else x.shape[:2]) + (n_out,)
        direct = np.dtype(dtype) in (np.float32, np.float64)
        out = np.empty(shape, dtype=dtype if direct else np.float64)
        first = SHARED_NETWORK if shared else start
        network_normal(out, stream_key(seed, "targets"), 0, first, 0.0, float(self.sigma))
        out = out if direct else out.astype(dtype)
        return out[0] if shared else out

    def moments(self, n_out):
        return 0.0, float(self.sigma) ** 2


@dataclass(frozen=True)
class Teacher(TargetLaw):
    """y = g_teacher(x), the output of one fixed network drawn from ``mlp`` with ``seed``."""

    mlp: MLP = None  # type: ignore[assignment]
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.mlp, MLP):
            raise ValueError("targets.teacher: mlp must be an MLP spec")

    def draw(self, rng, x, n_out):
        if self.mlp.widths[0] != x.shape[-1] or self.mlp.widths[-1] != n_out:
            raise ValueError(
                f"targets.teacher: teacher widths {self.mlp.widths} must start with n_0 = "
                f"{x.shape[-1]} and end with n_L = {n_out} of the student"
            )
        params = self.mlp.sample(1, self.seed)
        return forward(self.mlp, params, np.asarray(x, dtype=np.float64))[0]


@dataclass(frozen=True)
class OneHot(TargetLaw):
    """y = e_k with k uniform over ``n_classes`` classes, independent of x (cross-entropy)."""

    n_classes: int = 2

    def __post_init__(self):
        checks.integer("targets.one_hot: n_classes", self.n_classes, 2)

    def draw(self, rng, x, n_out):
        if n_out != self.n_classes:
            raise ValueError(
                f"targets.one_hot: n_classes = {self.n_classes} but the network has n_L = {n_out}"
            )
        y = np.zeros((x.shape[0], n_out))
        y[np.arange(x.shape[0]), rng.integers(0, n_out, size=x.shape[0])] = 1.0
        return y

    def moments(self, n_out):
        return 1.0 / self.n_classes, 1.0 / self.n_classes


@dataclass(frozen=True)
class Paired(TargetLaw):
    """y = Y[i] for the row i that ``source`` (:func:`deltastats.inputs.from_arrays`) drew as x.

    The rows are drawn again from the same input stream of each network (``seed``, ``start``
    as given to the inputs), so nothing but the seed passes between the laws and chunking
    does not matter. The batch ``x`` is checked against those rows: targets drawn for inputs
    from another law, seed or network range are refused.
    """

    source: FromArrays = None  # type: ignore[assignment]

    def __post_init__(self):
        if not isinstance(self.source, FromArrays):
            raise ValueError(
                "targets.paired: source must be the input law inputs.from_arrays(X, Y), got "
                f"{type(self.source).__name__}"
            )

    def draw(self, rng, x, n_out):
        raise ValueError(
            "targets.paired reads the rows drawn by its input law: call sample(x, n_out, seed, "
            "start=…) with the seed and start of the inputs"
        )

    def sample(self, x, n_out, seed=0, *, start=0, dtype=None):
        x = np.asarray(x)
        dtype = x.dtype if dtype is None else dtype
        self.source.check_labels(n_out)
        if x.ndim == 2:
            rngs, batches = [stream_rng(seed, "shared_inputs")], [x]
        elif x.ndim == 3:
            rngs, batches = network_rngs(seed, "inputs", start, x.shape[0]), list(x)
        else:
            raise ValueError(f"x must have shape (B, n0) or (M, B, n0), got {x.shape}")
        out = []
        for rng, xm in zip(rngs, batches):
            rows = self.source.indices(rng, xm.shape[0])
            if not np.array_equal(self.source.X[rows].astype(xm.dtype), xm):
                raise ValueError(
                    "targets.paired: x is not the batch that its inputs.from_arrays law drew "
                    "with this seed and start; give the targets the inputs' seed and start"
                )
            out.append(self.source.labels(rows, n_out))
        y = out[0] if x.ndim == 2 else np.stack(out)
        return y.astype(dtype, copy=False)

    def moments(self, n_out):
        return None  # the labels depend on x: no closed form independent of the network


def zeros() -> Constant:
    """Targets y = 0."""
    return Constant(0.0)


def constant(c: float) -> Constant:
    """Targets y = c (every unit)."""
    return Constant(float(c))


def gaussian(sigma: float = 1.0) -> Gaussian:
    """Targets y ~ N(0, σ²·I)."""
    return Gaussian(float(sigma))


def teacher(mlp: MLP, seed: int = 0) -> Teacher:
    """Targets from a fixed teacher network ``mlp`` drawn with ``seed``."""
    return Teacher(mlp, int(seed))


def one_hot(n_classes: int) -> OneHot:
    """One-hot targets with uniform random classes."""
    return OneHot(n_classes)


def paired(source: FromArrays) -> Paired:
    """Each input's own label: targets Y[i] for the rows X[i] that ``source`` =
    ``inputs.from_arrays(X, Y)`` draws."""
    return Paired(source)


#: Target laws by name, for configs.
TARGET_LAWS = {"zeros": zeros, "constant": constant, "gaussian": gaussian, "one_hot": one_hot}
