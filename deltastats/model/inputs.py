"""Input laws: where the inputs x = h⁽⁰⁾ come from.

An input law draws ``(B, n_0)`` inputs shared by all networks, or ``(M, B, n_0)`` inputs with
one independent batch per network (``n_networks=M``), deterministically from a seed. Per-network
batches come from network m's own stream (:mod:`deltastats.seeding`), so they do not depend on
chunking. Gaussian and spherical inputs are counter-based Gaussian numbers
(:func:`deltastats.model.philox.network_normal`, tensor 0 of stream ``inputs``, or of
``shared_inputs`` with the network index ``SHARED_NETWORK`` for a shared batch).

Laws: :func:`gaussian` (x ~ N(0, q₀·I)), :func:`sphere` (uniform on the sphere of radius
√(n₀ q₀)), :func:`uniform` (i.i.d. U(low, high) coordinates), :func:`from_array` (rows of a
user data set, drawn with replacement), :func:`from_arrays` (rows of a labelled data set with
their own labels: the targets of :func:`deltastats.targets.paired`), :func:`load_data` (a data
file: ``.npz``, ``.npy`` or ``.csv``).

Theory sees an input only through its coordinate mean and normalised squared norm,

    x̄ = (1/n₀) Σ_i x_i,     ρ = ‖x‖²/n₀,

because the first-layer pre-activation given x is exactly Gaussian,
z⁽¹⁾_j | x ~ N(μ_w x̄ + μ_b, σ_w² ρ + σ_b²), for Gaussian weights. Every law therefore exposes the
joint law of (x̄, ρ) as a quadrature rule, :meth:`InputLaw.summary_rule`, and theory averages
its per-input prediction over that rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import checks
from .philox import network_normal
from .seeding import SHARED_NETWORK, SeedLike, network_rngs, stream_key, stream_rng

#: Largest number of quadrature nodes per dimension :meth:`InputLaw.summary_rule` accepts.
MAX_RULE_DEGREE = 256


def _check_batch(batch: int) -> None:
    checks.positive_int("batch", batch)


def _standard_normal_batches(
    n0: int, batch: int, seed: SeedLike, n_networks: int | None, start: int, std: float, dtype
) -> np.ndarray:
    """``std``·N(0, 1) inputs, ``(batch, n0)`` shared or ``(M, batch, n0)`` per network, of the
    counter-based float64 law rounded to ``dtype`` (tensor 0 of the input stream)."""
    _check_batch(batch)
    n0 = _check_n0(n0)
    shared = n_networks is None
    if not shared:
        checks.positive_int("n_networks", n_networks)
        checks.integer("start", start, 0)
    out = np.empty((1 if shared else n_networks, batch, n0), dtype=dtype)
    key = stream_key(seed, "shared_inputs" if shared else "inputs")
    network_normal(out, key, 0, SHARED_NETWORK if shared else start, 0.0, std)
    return out[0] if shared else out


@dataclass(frozen=True)
class SummaryRule:
    """A quadrature rule for the joint law of (x̄, ρ) = (Σ_i x_i/n₀, ‖x‖²/n₀).

    Σ_k weights[k]·f(xbar[k], rho[k]) ≈ E_x f(x̄, ρ).

    Attributes
    ----------
    xbar, rho, weights : ndarray, shape (K,)
        Nodes and weights (weights ≥ 0, summing to 1; ρ ≥ 0).
    exact : bool
        ``True`` when the rule integrates the exact law of (x̄, ρ) (Gauss rules of that law,
        or the empirical rows); ``False`` for a documented approximation (uniform inputs).
    """

    xbar: np.ndarray
    rho: np.ndarray
    weights: np.ndarray
    exact: bool = True

    def __post_init__(self):
        arrs = [np.asarray(getattr(self, k), dtype=np.float64) for k in ("xbar", "rho", "weights")]
        if not (arrs[0].shape == arrs[1].shape == arrs[2].shape) or arrs[0].ndim != 1:
            raise ValueError("SummaryRule: xbar, rho and weights must be 1-D of one length")
        for k, a in zip(("xbar", "rho", "weights"), arrs, strict=True):
            a = a.copy()
            a.setflags(write=False)
            object.__setattr__(self, k, a)


def _check_degree(degree) -> tuple[int, int]:
    """``degree`` as (nodes in x̄, nodes in ρ − x̄²); an int d means (d, d)."""
    pair = tuple(degree) if isinstance(degree, (tuple, list)) else (degree, degree)
    if len(pair) != 2 or not all(checks.is_int(d) and 1 <= d <= MAX_RULE_DEGREE for d in pair):
        raise ValueError(
            f"degree must be an int or a pair of ints in [1, {MAX_RULE_DEGREE}], got {degree!r}"
        )
    return int(pair[0]), int(pair[1])


def _check_n0(n0) -> int:
    return checks.positive_int("n0", n0, " (the input width)")


def _golub_welsch(diag: np.ndarray, off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rule of a probability law from its Jacobi (three-term recurrence) matrix.

    The nodes are the eigenvalues of the symmetric tridiagonal matrix with ``diag`` and
    ``off``; the weights are the squared first components of the normalised eigenvectors
    (Golub & Welsch 1969), so they sum to 1 without any Γ-function normalisation (which
    overflows for the large shape parameters of wide inputs).
    """
    from scipy.linalg import eigh_tridiagonal

    if diag.size == 1:
        return diag.astype(np.float64), np.ones(1)
    nodes, vecs = eigh_tridiagonal(diag, off)
    w = vecs[0] ** 2
    return nodes, w / w.sum()


def _gamma_rule(shape: float, scale: float, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rule for Gamma(shape, scale): generalised Laguerre with α = shape − 1.

    Recurrence of the monic Laguerre polynomials L^{(α)}: a_j = 2j + α + 1 (j = 0, 1, …),
    b_j = j(j + α) (j = 1, 2, …).
    """
    j = np.arange(degree, dtype=np.float64)
    alpha = shape - 1.0
    diag = 2.0 * j + alpha + 1.0
    off = np.sqrt(j[1:] * (j[1:] + alpha))
    x, w = _golub_welsch(diag, off)
    return np.maximum(x, 0.0) * scale, w


def _hermite_rule(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rule of N(0, 1) (probabilists' Hermite: a_j = 0, b_j = j)."""
    j = np.arange(1, degree, dtype=np.float64)
    return _golub_welsch(np.zeros(degree), np.sqrt(j))


def _symmetric_beta_rule(k: float, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rule on [−1, 1] for the density ∝ (1 − s²)^{k−1}, k > 0 (Gegenbauer, i.e.
    Jacobi with α = β = k − 1): a_j = 0, b_1 = 1/(2α + 3) and
    b_j = j(j + 2α)/((2j + 2α + 1)(2j + 2α − 1)).
    """
    alpha = k - 1.0
    j = np.arange(1, degree, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        b = j * (j + 2 * alpha) / ((2 * j + 2 * alpha + 1) * (2 * j + 2 * alpha - 1))
    if b.size:
        b[0] = 1.0 / (2 * alpha + 3)  # = E s², also where the formula is 0/0 (α = −½)
    return _golub_welsch(np.zeros(degree), np.sqrt(b))


def _tensor(xbar_rule, r_rule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x̄, ρ = x̄² + r, w) of the product of a rule for x̄ and an independent rule for r."""
    (xb, wx), (r, wr) = xbar_rule, r_rule
    X, R = np.meshgrid(xb, r, indexing="ij")
    W = np.outer(wx, wr)
    return X.ravel(), (X * X + R).ravel(), W.ravel()


@dataclass(frozen=True)
class InputLaw:
    """Base class of input laws; subclasses implement :meth:`draw` and :meth:`moments`."""

    def draw(self, rng: np.random.Generator, batch: int, n0: int) -> np.ndarray:
        """Draw a ``(batch, n0)`` float64 array from ``rng``."""
        raise NotImplementedError

    def moments(self, n0: int) -> tuple[float, float]:
        """``(m, q)``: the mean of a coordinate, E x_i, and q = E‖x‖²/n₀ (mean-field inputs)."""
        raise NotImplementedError

    def summary_rule(
        self, n0: int, degree: int | tuple[int, int] = 8, *, with_mean: bool = True
    ) -> SummaryRule:
        """The joint law of (x̄, ρ) = (Σ_i x_i/n₀, ‖x‖²/n₀) as a quadrature rule.

        Parameters
        ----------
        n0 : int
            Input width n₀.
        degree : int or (int, int)
            Nodes per dimension of the Gauss rules, (nodes in x̄, nodes in ρ − x̄²); an int d
            means (d, d). The empirical rule and the sphere's fixed ρ ignore it. A Gauss rule
            of degree d integrates polynomials of degree < 2d in its variable exactly.
        with_mean : bool
            ``False`` when only ρ matters (μ_w = 0 in the first layer): a rule for the
            marginal law of ρ, with ``xbar`` set to E x̄.

        Returns
        -------
        SummaryRule

        Raises
        ------
        NotImplementedError
            For a law that does not know its (x̄, ρ) law (a user subclass); theory turns this
            into a ``ValueError`` naming ``inputs``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not define summary_rule(n0, degree): the law of "
            "(x̄, ρ) = (Σx_i/n₀, ‖x‖²/n₀) that theory averages over"
        )

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
        """A batch from a numpy generator (``sample`` draws counter-based numbers instead)."""
        return np.sqrt(self.q0) * rng.standard_normal((batch, n0))

    def sample(self, n0, batch, seed=0, *, n_networks=None, start=0, dtype=np.float64):
        """Counter-based x = √q₀·Z: network m's batch is tensor 0 of its ``inputs`` stream (see
        :meth:`InputLaw.sample` for the arguments)."""
        return _standard_normal_batches(n0, batch, seed, n_networks, start, np.sqrt(self.q0), dtype)

    def moments(self, n0):
        return 0.0, float(self.q0)

    def summary_rule(self, n0, degree=8, *, with_mean=True):
        """Exact: x̄ ~ N(0, q₀/n₀) and n₀ρ − n₀x̄² ~ q₀χ²_{n₀−1}, independent.

        (√n₀·x̄ is the coordinate of x along the unit vector 1/√n₀ and n₀(ρ − x̄²) the
        squared norm of the orthogonal complement: Cochran's theorem.) Equivalently, in polar
        form, x̄ = √ρ·s with n₀ρ/q₀ ~ χ²_{n₀} and s = cos∠(x, 1) of density
        ∝ (1 − s²)^{(n₀−3)/2}, independent (the direction of an isotropic Gaussian vector is
        uniform and independent of its norm). The rule is the product of generalised
        Gauss–Laguerre in ρ ~ Gamma(n₀/2, 2q₀/n₀) and Gauss–Jacobi in s: the polar form keeps
        the integrand analytic in x̄ (a rule in (x̄, ρ − x̄²) meets the singularity of
        v₁ = σ_w²ρ + σ_b² → 0 at imaginary x̄ close to the real axis and converges slowly for
        small n₀), and since the s-rule is symmetric, odd powers of √ρ cancel.
        ``degree`` = (nodes in s, nodes in ρ); with ``with_mean=False`` only the ρ-rule.
        """
        n0, (dx, dr) = _check_n0(n0), _check_degree(degree)
        q = float(self.q0)
        rho, w = _gamma_rule(n0 / 2.0, 2.0 * q / n0, dr)
        if not with_mean:
            return SummaryRule(np.zeros_like(rho), rho, w)
        if n0 == 1:  # x = ±√ρ
            s, ws = np.array([-1.0, 1.0]), np.full(2, 0.5)
        else:
            s, ws = _symmetric_beta_rule((n0 - 1) / 2.0, dx)
        S, R = np.meshgrid(s, rho, indexing="ij")
        return SummaryRule((S * np.sqrt(R)).ravel(), R.ravel(), np.outer(ws, w).ravel())


@dataclass(frozen=True)
class Sphere(InputLaw):
    """x uniform on the sphere of radius √(n₀ q₀), so ‖x‖²/n₀ = q₀ exactly."""

    q0: float = 1.0

    def __post_init__(self):
        if not (np.isfinite(self.q0) and self.q0 > 0):
            raise ValueError(f"inputs.sphere: q0 must be a positive finite number, got {self.q0}")

    def draw(self, rng, batch, n0):
        """A batch from a numpy generator (``sample`` draws counter-based numbers instead)."""
        x = rng.standard_normal((batch, n0))
        return x * (np.sqrt(n0 * self.q0) / np.linalg.norm(x, axis=-1, keepdims=True))

    def sample(self, n0, batch, seed=0, *, n_networks=None, start=0, dtype=np.float64):
        """x = √(n₀q₀)·Z/‖Z‖ for the counter-based Gaussian Z of :meth:`Gaussian.sample`
        (the same Z; normalised in float64, then rounded to ``dtype``)."""
        z = _standard_normal_batches(n0, batch, seed, n_networks, start, 1.0, np.float64)
        x = z * (np.sqrt(n0 * self.q0) / np.linalg.norm(z, axis=-1, keepdims=True))
        return x.astype(dtype, copy=False)

    def moments(self, n0):
        return 0.0, float(self.q0)

    def summary_rule(self, n0, degree=8, *, with_mean=True):
        """Exact: ρ = q₀, and x̄ = √q₀·s where s = cos∠(x, 1) has density ∝ (1 − s²)^{(n₀−3)/2}
        on [−1, 1] (Gauss–Jacobi); n₀ = 1 is x = ±√q₀."""
        n0, (dx, _) = _check_n0(n0), _check_degree(degree)
        q = float(self.q0)
        if not with_mean:
            return SummaryRule(np.zeros(1), np.full(1, q), np.ones(1))
        if n0 == 1:
            return SummaryRule(np.sqrt(q) * np.array([-1.0, 1.0]), np.full(2, q), np.full(2, 0.5))
        s, w = _symmetric_beta_rule((n0 - 1) / 2.0, dx)
        return SummaryRule(np.sqrt(q) * s, np.full(s.shape, q), w)


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

    def summary_rule(self, n0, degree=8, *, with_mean=True):
        """Exact for n₀ ≤ 2 (tensor Gauss–Legendre over the coordinates); for n₀ ≥ 3 an
        approximation that matches every first and second moment of (x̄, ρ) exactly.

        Write ρ = x̄² + r with r = (1/n₀) Σ_i (x_i − x̄)² ≥ 0. With c = (low + high)/2,
        σ² = (high − low)²/12 and μ₄ = (high − low)⁴/80 (so μ₄ = 1.8σ⁴), the rule takes

            x̄ ~ N(c, σ²/n₀),   r ~ Gamma with E r = σ²(n₀ − 1)/n₀,
            Var r = (μ₄ − σ⁴)/n₀ − 2σ⁴/n₀²,   x̄ and r independent.

        Then E x̄, E x̄², E ρ, Cov(x̄, ρ) = 2cσ²/n₀ and Var ρ = (4c²σ² + μ₄ − σ⁴)/n₀ take their
        exact values (Var ρ = Var(x_i²)/n₀; the law is symmetric about c, μ₃ = 0, so x̄ and r
        are uncorrelated), and for Gaussian coordinates (μ₄ = 3σ⁴) the same construction is
        the exact Gaussian rule. The higher cumulants of (x̄, ρ) are not matched, so
        E_x f(x̄, ρ) carries an error that falls with n₀: measured on E δ of a one-layer tanh
        network with μ_w = 1 against 4·10⁵ sampled inputs, 2.5 % at n₀ = 4, 0.9 % at 8,
        0.25 % at 16 and 0.1 % at 32 (E δ² and Var z: a third of that); at n₀ = 3 against
        the exact tensor rule, up to ≈ 10 %. Use ``from_array`` with sampled rows where that
        matters.
        """
        n0, (dx, dr) = _check_n0(n0), _check_degree(degree)
        lo, hi = float(self.low), float(self.high)
        if n0 <= 2:
            t, w = np.polynomial.legendre.leggauss(max(dx, dr, 8))
            x = lo + (hi - lo) * (t + 1.0) / 2.0
            w = w / 2.0
            if n0 == 1:
                return SummaryRule(x, x * x, w)
            X1, X2 = np.meshgrid(x, x, indexing="ij")
            W = np.outer(w, w).ravel()
            return SummaryRule(((X1 + X2) / 2).ravel(), ((X1**2 + X2**2) / 2).ravel(), W)
        c, s2 = 0.5 * (lo + hi), (hi - lo) ** 2 / 12.0
        mu4 = (hi - lo) ** 4 / 80.0
        if not with_mean:
            # ρ alone: Gamma with the exact E ρ = c² + σ² and Var ρ = Var(x_i²)/n₀.
            m, v = c * c + s2, (4 * c * c * s2 + mu4 - s2 * s2) / n0
            r, w = _gamma_rule(m * m / v, v / m, dr)
            return SummaryRule(np.full(r.shape, c), r, w, exact=False)
        m_r = s2 * (n0 - 1) / n0
        v_r = (mu4 - s2 * s2) / n0 - 2 * s2 * s2 / n0**2
        t, wt = _hermite_rule(dx)
        xb = (c + np.sqrt(s2 / n0) * t, wt)
        r_rule = _gamma_rule(m_r * m_r / v_r, v_r / m_r, dr)
        return SummaryRule(*_tensor(xb, r_rule), exact=False)


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

    def summary_rule(self, n0, degree=8, *, with_mean=True):
        """Exact: the (x̄, ρ) of every distinct row, weighted by its frequency (``degree`` is
        not used)."""
        n0 = _check_n0(n0)
        if n0 != self.X.shape[1]:
            raise ValueError(
                f"inputs.from_array: X has {self.X.shape[1]} columns but the network's n_0 is {n0}"
            )
        xb = self.X.mean(axis=1)
        rho = np.sum(self.X**2, axis=1) / n0
        if not with_mean:
            xb = np.full(rho.shape, float(self.X.mean()))
        pairs, counts = np.unique(np.stack([xb, rho], axis=1), axis=0, return_counts=True)
        return SummaryRule(pairs[:, 0], pairs[:, 1], counts / counts.sum())

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
