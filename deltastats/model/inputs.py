"""Input laws: where the inputs x = h⁽⁰⁾ come from.

An input law draws ``(B, n_0)`` inputs shared by all networks, or ``(M, B, n_0)`` inputs with
one independent batch per network (``n_networks=M``), deterministically from a seed. Per-network
batches come from network m's own stream (:mod:`deltastats.seeding`), so they do not depend on
chunking.

Laws: :func:`gaussian` (x ~ N(0, q₀·I)), :func:`sphere` (uniform on the sphere of radius
√(n₀ q₀)), :func:`uniform` (i.i.d. U(low, high) coordinates), :func:`from_array` (rows of a
user data set, drawn with replacement), :func:`from_arrays` (rows of a labelled data set with
their own labels: the targets of :func:`deltastats.targets.paired`), :func:`load_data` (a data
file: ``.npz``, ``.npy`` or ``.csv``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import checks
from .seeding import SeedLike, network_rngs, stream_rng


def _check_batch(batch: int) -> None:
    checks.positive_int("batch", batch)


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


@dataclass(frozen=True, eq=False)
class FromArrays(InputLaw):
    """Rows of a labelled data set: x = X[i], drawn uniformly with replacement, with its own
    label Y[i] (the targets of :func:`deltastats.targets.paired`).

    The rows drawn for network m come from network m's input stream, exactly as in
    :class:`FromArray` (so ``from_arrays(X, Y)`` and ``from_array(X)`` draw the same x); the
    paired target law draws the same indices again from that stream, so every x keeps its
    label whatever the chunking.

    Labels ``Y``: ``(N, n_L)`` (used as they are), ``(N,)`` of floats for n_L = 1, or ``(N,)``
    of class indices 0 … n_L − 1 for n_L > 1 (one-hot encoded, for cross-entropy).
    """

    X: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    Y: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self):
        X = _data_array("X", self.X)
        if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"inputs.from_arrays: X must have shape (N, n0), got {X.shape}")
        Y = _data_array("Y", self.Y)
        if Y.ndim not in (1, 2) or Y.shape[0] != X.shape[0] or 0 in Y.shape:
            raise ValueError(
                f"inputs.from_arrays: Y must have shape (N,) or (N, n_L) with the N = "
                f"{X.shape[0]} rows of X, got {Y.shape}"
            )
        for a in (X, Y):
            a.setflags(write=False)
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "Y", Y)

    @property
    def is_classes(self) -> bool:
        """Whether ``Y`` is one class index 0, 1, … per row (1-D of whole numbers ≥ 0)."""
        Y = self.Y
        return bool(Y.ndim == 1 and np.all(Y >= 0) and np.all(Y == np.round(Y)))

    def indices(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """The rows of one batch, drawn from ``rng`` (uniform with replacement)."""
        return rng.integers(0, self.X.shape[0], size=batch)

    def draw(self, rng, batch, n0):
        if n0 != self.X.shape[1]:
            raise ValueError(
                f"inputs.from_arrays: X has {self.X.shape[1]} columns but the network's n_0 is {n0}"
            )
        return self.X[self.indices(rng, batch)]

    def labels(self, rows: np.ndarray, n_out: int) -> np.ndarray:
        """The targets ``(len(rows), n_out)`` of these rows."""
        self.check_labels(n_out)
        Y = self.Y
        if Y.ndim == 2:
            return Y[rows]
        if n_out == 1:
            return Y[rows, None]
        y = np.zeros((rows.size, n_out))
        y[np.arange(rows.size), Y[rows].astype(np.int64)] = 1.0
        return y

    def check_labels(self, n_out: int) -> None:
        """``ValueError`` unless the labels fit an output width n_L = ``n_out``."""
        Y = self.Y
        if Y.ndim == 2 and Y.shape[1] != n_out:
            raise ValueError(
                f"inputs.from_arrays: Y has {Y.shape[1]} columns but the network's n_L is {n_out}"
            )
        if Y.ndim == 1 and n_out > 1 and not (self.is_classes and Y.max() < n_out):
            raise ValueError(
                f"inputs.from_arrays: Y of shape (N,) must hold class indices 0 … {n_out - 1} "
                f"for n_L = {n_out} (or give Y of shape (N, {n_out}))"
            )

    def moments(self, n0):
        return float(self.X.mean()), float(np.mean(np.sum(self.X**2, axis=1)) / self.X.shape[1])

    def __hash__(self):
        return hash((self.X.tobytes(), self.Y.tobytes()))

    def __eq__(self, other):
        return (
            isinstance(other, FromArrays)
            and np.array_equal(self.X, other.X)
            and np.array_equal(self.Y, other.Y)
        )


def _data_array(name: str, value) -> np.ndarray:
    """A finite float64 copy of a data array; one-line errors naming it."""
    if value is None:
        raise ValueError(f"inputs.from_arrays: {name} is missing")
    try:
        a = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"inputs.from_arrays: {name} must be a numeric array") from None
    if not np.all(np.isfinite(a)):
        raise ValueError(f"inputs.from_arrays: {name} contains NaN or inf")
    return a


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


def from_arrays(X: np.ndarray, Y: np.ndarray) -> FromArrays:
    """Inputs drawn (with replacement) from the rows of ``X`` ``(N, n0)``, each with its own
    label in ``Y`` (``(N, n_L)``, or ``(N,)``: floats for n_L = 1, class indices for
    n_L > 1); use ``targets.paired(law)`` (or leave ``targets`` unset in
    :func:`deltastats.estimate`) for the labels as targets.

    Examples
    --------
    >>> import numpy as np, deltastats as ds
    >>> law = ds.inputs.from_arrays(np.arange(6.0).reshape(3, 2), np.array([0, 1, 2]))
    >>> x = law.sample(2, 4, seed=0, n_networks=2)
    >>> y = ds.targets.paired(law).sample(x, 3, seed=0)
    >>> bool(np.all(y.argmax(-1) == x[..., 0] / 2))  # row i = (2i, 2i + 1) has class i
    True
    """
    return FromArrays(X, Y)


def load_data(path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(X, Y)`` from a data file (``Y`` is ``None`` when the file has no labels).

    ``.npz``: arrays ``X`` and optionally ``Y`` (or ``x``/``y``). ``.npy``: one ``(N, k)``
    array, ``.csv``: a ``(N, k)`` table of numbers (one header line allowed); for these the
    caller splits the columns (the first n₀ are X, the rest the labels).

    Raises
    ------
    ValueError
        One line naming the file when it is missing, unreadable or not numeric.
    """
    from pathlib import Path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy", ".csv"):
        raise ValueError(f"data file {path.name!r} must be .npz, .npy or .csv")
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                keys = {k.lower(): k for k in f.files}
                if "x" not in keys:
                    raise ValueError(f"data file {path.name!r} has no array 'X' ({f.files})")
                X = f[keys["x"]]
                Y = f[keys["y"]] if "y" in keys else None
        elif suffix == ".npy":
            X, Y = np.load(path, allow_pickle=False), None
        else:
            with open(path) as fh:
                first = fh.readline()
            try:
                [float(v) for v in first.strip().split(",")]
                skip = 0
            except ValueError:
                skip = 1  # a header line
            X, Y = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2), None
    except ValueError as err:
        if str(err).startswith("data file"):
            raise
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"data file {path.name!r} is not numeric: {first}") from None
    except OSError as err:
        raise ValueError(f"data file {path.name!r} cannot be read: {err}") from None
    X = np.asarray(X)
    if X.dtype.kind not in "fiu" or X.ndim != 2:
        raise ValueError(
            f"data file {path.name!r}: X must be a numeric (N, k) table, got {X.shape}"
        )
    return X, Y


#: Input laws by name, for configs: ``{"law": "gaussian", "q0": 1.0}``.
INPUT_LAWS = {"gaussian": gaussian, "sphere": sphere, "uniform": uniform}
