"""The MLP spec and its random parameters.

Notation: layers l = 0 … L, widths ``(n_0, …, n_L)``,
z⁽ˡ⁾ = W⁽ˡ⁾ h⁽ˡ⁻¹⁾ + b⁽ˡ⁾, h⁽ˡ⁾ = φ(z⁽ˡ⁾), h⁽⁰⁾ = x, g = φ_out(z⁽ᴸ⁾).
Default weight law W⁽ˡ⁾_ij ~ N(μ_w/n_{l−1}, σ_w²/n_{l−1}), b⁽ˡ⁾_i ~ N(μ_b, σ_b²).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import checks
from .._parallel import default_threads, executor
from .activations import Activation, get_activation
from .philox import network_normal, times_matrix
from .seeding import SeedLike, network_rngs, param_tensor, stream_key

#: Weight initialisations. ``glorot``/``he``/``lecun`` are Gaussian with σ_w set by the preset.
INITS: tuple[str, ...] = ("gaussian", "uniform", "orthogonal", "glorot", "he", "lecun")

#: One value for every layer, or a sequence of L values (one per layer).
FloatOrSeq = float | Sequence[float]


def _per_layer(value: FloatOrSeq, n_layers: int, name: str, *, positive: bool) -> tuple:
    """One float per weight layer from a number or a sequence of numbers.

    Strings are never parsed (``"12"`` is not the sequence ``(1.0, 2.0)`` nor the number 12)
    and ``bool`` is not a number, so a config typo is an error instead of a silent value.
    """
    if isinstance(value, str | bytes) or not (
        isinstance(value, numbers.Real | Sequence | np.ndarray)
    ):
        raise checks.ArgumentTypeError(
            f"{name} must be a number or a sequence of numbers, got {value!r}"
        )
    if isinstance(value, numbers.Real):
        values = (checks.real(name, value),) * n_layers
    else:
        items = list(np.asarray(value, dtype=object).ravel()) if np.ndim(value) else [value]
        if np.ndim(value) > 1:
            raise ValueError(f"{name} given per layer must be a flat sequence, got {value!r}")
        values = []
        for v in items:
            if isinstance(v, str | bytes) or not checks.is_real(v):
                raise checks.ArgumentTypeError(
                    f"{name} must be a number or a sequence of numbers, got {value!r}"
                )
            values.append(float(v))
        values = tuple(values)
        if len(values) != n_layers:
            raise ValueError(
                f"{name} given per layer needs one value per weight layer ({n_layers} for "
                f"widths of length {n_layers + 1}), got {len(values)}"
            )
    for v in values:
        if not np.isfinite(v):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if positive and v < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    return values


@dataclass(frozen=True)
class Params:
    """Sampled parameters of M networks.

    Attributes
    ----------
    weights : tuple of ndarray
        ``weights[l-1]`` is W⁽ˡ⁾, shape ``(M, n_l, n_{l-1})``, l = 1 … L.
    biases : tuple of ndarray
        ``biases[l-1]`` is b⁽ˡ⁾, shape ``(M, n_l)``.
    start : int
        Global index of the first network (networks are ``start … start+M-1``).
    backward_rows : tuple of ndarray or None
        Only from ``MLP.sample(..., backward_scales=s)``: ``backward_rows[k]``, shape
        ``(M, n_L, n_k)`` float64 for k = 0 … L−1, holds the rows of the scaled backward
        products (s_L W⁽ᴸ⁾)(s_{L−1} W⁽ᴸ⁻¹⁾) ⋯ (s_{k+1} W⁽ᵏ⁺¹⁾), computed while the weights were
        drawn (the control variate of :mod:`deltastats.stats.controls` reads them).
    backward_scales : tuple of float or None
        The scales s_1 … s_L those rows were computed with.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    start: int = 0
    backward_rows: tuple[np.ndarray, ...] | None = None
    backward_scales: tuple[float, ...] | None = None

    @property
    def n_networks(self) -> int:
        """M, the number of networks."""
        return self.weights[0].shape[0]


@dataclass(frozen=True)
class MLP:
    """Spec of a random fully connected network; ``sample`` draws its parameters.

    Parameters
    ----------
    widths : sequence of int
        ``(n_0, n_1, …, n_L)``, at least two entries, all positive integers.
    activation : str or Activation
        Hidden activation φ (layers 1 … L−1).
    output_activation : str or Activation
        φ_out at layer L.
    sigma_w, sigma_b : float or sequence of float
        Weight and bias scales, one value or one per weight layer (length L).
        Var W⁽ˡ⁾_ij = σ_w²/n_{l−1}, Var b⁽ˡ⁾_i = σ_b².
    mu_w, mu_b : float or sequence of float
        E W⁽ˡ⁾_ij = μ_w/n_{l−1}, E b⁽ˡ⁾_i = μ_b. μ_w ≠ 0 is what makes E[δ] non-zero.
    init : str
        ``"gaussian"`` (default); ``"uniform"`` (same mean and variance, uniform law);
        ``"orthogonal"`` (Haar-orthogonal scaled so entries have variance σ_w²/n_{l−1}; needs
        μ_w = 0); presets ``"glorot"`` (σ_w² = 2n_{l−1}/(n_{l−1}+n_l)), ``"he"`` (σ_w² = 2),
        ``"lecun"`` (σ_w² = 1), which replace ``sigma_w``.

    Examples
    --------
    >>> net = MLP((32, 64, 64, 1), activation="tanh", sigma_w=1.2)
    >>> params = net.sample(100, seed=0)
    >>> params.weights[0].shape
    (100, 64, 32)
    """

    widths: tuple[int, ...]
    activation: str | Activation = "tanh"
    output_activation: str | Activation = "linear"
    sigma_w: FloatOrSeq = 1.0
    sigma_b: FloatOrSeq = 0.0
    mu_w: FloatOrSeq = 0.0
    mu_b: FloatOrSeq = 0.0
    init: str = "gaussian"

    def __post_init__(self) -> None:
        try:
            widths = tuple(self.widths)
        except TypeError:
            raise ValueError(f"widths must be a sequence of ints, got {self.widths!r}") from None
        if len(widths) < 2:
            raise ValueError(
                f"widths needs at least two entries (n_0 input, n_L output), got {widths!r}"
            )
        if not all(checks.is_int(w) and w > 0 for w in widths):
            raise ValueError(f"widths must be positive integers, got {widths!r}")
        object.__setattr__(self, "widths", tuple(int(w) for w in widths))
        get_activation(self.activation)
        get_activation(self.output_activation, argument="output_activation")
        n = len(widths) - 1
        for name, positive in (
            ("sigma_w", True),
            ("sigma_b", True),
            ("mu_w", False),
            ("mu_b", False),
        ):
            value = getattr(self, name)
            _per_layer(value, n, name, positive=positive)
            if not isinstance(value, numbers.Real):
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; valid inits are: {', '.join(INITS)}")
        if self.init == "orthogonal" and any(m != 0 for m in self.layer_mu_w):
            raise ValueError("init='orthogonal' needs mu_w = 0 (a mean shift breaks orthogonality)")

    # -- resolved per-layer values -------------------------------------------------------
    @property
    def depth(self) -> int:
        """L, the number of weight layers."""
        return len(self.widths) - 1

    @property
    def phi(self) -> Activation:
        """The hidden activation as an :class:`Activation`."""
        return get_activation(self.activation)

    @property
    def phi_out(self) -> Activation:
        """The output activation as an :class:`Activation`."""
        return get_activation(self.output_activation)

    def layer_activation(self, layer: int) -> Activation:
        """Activation of layer l (1 … L): φ for hidden layers, φ_out for l = L."""
        return self.phi_out if layer == self.depth else self.phi

    @property
    def layer_sigma_w(self) -> tuple[float, ...]:
        """Effective σ_w per weight layer l = 1 … L (after an init preset)."""
        n_in, n_out = self.widths[:-1], self.widths[1:]
        if self.init == "he":
            return (float(np.sqrt(2.0)),) * self.depth
        if self.init == "lecun":
            return (1.0,) * self.depth
        if self.init == "glorot":
            return tuple(float(np.sqrt(2.0 * a / (a + b))) for a, b in zip(n_in, n_out))
        return _per_layer(self.sigma_w, self.depth, "sigma_w", positive=True)

    @property
    def layer_sigma_b(self) -> tuple[float, ...]:
        """σ_b per layer l = 1 … L."""
        return _per_layer(self.sigma_b, self.depth, "sigma_b", positive=True)

    @property
    def layer_mu_w(self) -> tuple[float, ...]:
        """μ_w per layer l = 1 … L (E W_ij = μ_w / n_{l−1})."""
        return _per_layer(self.mu_w, self.depth, "mu_w", positive=False)

    @property
    def layer_mu_b(self) -> tuple[float, ...]:
        """μ_b per layer l = 1 … L."""
        return _per_layer(self.mu_b, self.depth, "mu_b", positive=False)

    # -- sampling ------------------------------------------------------------------------
    def sample(
        self,
        n_networks: int,
        seed: SeedLike = 0,
        *,
        start: int = 0,
        dtype=np.float64,
        out: Params | None = None,
        backward_scales: Sequence[float] | None = None,
    ) -> Params:
        """Draw the parameters of ``n_networks`` independent networks.

        Network m (global index ``start + i``) has its own random numbers, so a network's
        parameters do not depend on how many are drawn at once (see :mod:`deltastats.seeding`).
        Gaussian weights and all biases are mean + sd·Z with Z of the counter-based float64
        law (:func:`deltastats.model.philox.network_normal`, tensor
        :func:`~deltastats.model.seeding.param_tensor`), computed in float64 and rounded to
        ``dtype``, so float32 parameters are the float64 ones rounded. Uniform weights come
        from network m's numpy generator; orthogonal ones are the QR factor of a counter-based
        Gaussian matrix.

        Parameters
        ----------
        n_networks : int
            M ≥ 1.
        seed : int or SeedSequence
        start : int
            Global index of the first network.
        dtype : numpy float dtype
            ``np.float64`` (default) or ``np.float32``.
        out : Params or None
            Parameters of an earlier draw with these shapes and dtype (C-contiguous): their
            arrays are overwritten instead of allocating new ones (a streaming loop then
            writes the same memory every chunk instead of paging in fresh memory), and the
            returned Params view them. The earlier Params must not be used afterwards. Arrays
            that do not fit are ignored (fresh ones are allocated); the values are the same
            either way.
        backward_scales : sequence of L floats, or None
            Also compute the backward products of the scaled weights (``Params.backward_rows``):
            starting from the identity rows of the output layer, a ← s_l · a W⁽ˡ⁾ for
            l = L … 1. Gaussian weights are drawn from the top layer down and each network's
            W⁽ˡ⁾ is multiplied while it is in cache, so this costs no second pass over the
            weights; other inits multiply after the draw. The values drawn are the same.

        Returns
        -------
        Params
            ``weights[l-1]`` shape ``(M, n_l, n_{l-1})``, ``biases[l-1]`` shape ``(M, n_l)``.
        """
        checks.positive_int("n_networks", n_networks)
        checks.integer("start", start, 0)
        try:
            resolved = np.dtype(dtype)
        except TypeError:
            resolved = None
        if resolved not in (np.float32, np.float64):
            raise ValueError(f"dtype must be np.float32 or np.float64, got {dtype!r}")
        dtype = resolved
        if out is not None and not isinstance(out, Params):
            raise ValueError("out must be the Params of an earlier net.sample(...) or None")
        chain_scales = None
        if backward_scales is not None:
            chain_scales = tuple(float(v) for v in np.ravel(backward_scales))
            if len(chain_scales) != self.depth or not all(np.isfinite(chain_scales)):
                raise ValueError(
                    f"backward_scales must be {self.depth} finite numbers (one per weight "
                    f"layer), got {backward_scales!r}"
                )
        pairs = list(zip(self.widths[:-1], self.widths[1:]))
        if out is not None and _fits(out, n_networks, pairs, dtype):
            weights, biases = tuple(out.weights), tuple(out.biases)
        else:
            weights = tuple(np.empty((n_networks, b, a), dtype=dtype) for a, b in pairs)
            biases = tuple(np.empty((n_networks, b), dtype=dtype) for b in self.widths[1:])
        layers = self._layer_laws()
        n_params = sum(w[0].size for w in weights)
        threads = _sampling_threads(n_networks * n_params)
        key = stream_key(seed, "params")
        gaussian = self.init not in ("uniform", "orthogonal")
        # The counter-based draws give the same bits with any number of threads; below the
        # per-network threshold they pick their own (threads only for draws large enough).
        normal_threads = None if threads == 1 else threads
        chain = self._backward_chain(n_networks, backward_scales)
        for l in range(self.depth, 0, -1):  # top down: the backward products' order
            _, _, mean, std, mb, sb = layers[l - 1]
            if gaussian:
                times = None if chain is None else (chain[l], chain[l - 1], chain_scales[l - 1])
                network_normal(weights[l - 1], key, param_tensor(l, "weight"), start, mean, std,
                               threads=normal_threads, times=times)  # fmt: skip
            network_normal(biases[l - 1], key, param_tensor(l, "bias"), start, mb, sb,
                           threads=normal_threads)  # fmt: skip
        if gaussian:
            return self._params(weights, biases, start, chain, chain_scales)

        def draw(i: int, rng: np.random.Generator) -> None:
            self._draw_weights(rng, key, start + i, layers, [w[i] for w in weights])

        rngs = network_rngs(seed, "params", start, n_networks)
        if threads == 1:
            for i, rng in enumerate(rngs):
                draw(i, rng)
        else:
            # numpy's generators and QR release the GIL, and each network has its own stream
            # and slot, so threads give the same bits as the loop above.
            for _ in executor(threads).map(draw, range(n_networks), rngs):
                pass
        if chain is not None:
            for l in range(self.depth, 0, -1):
                for i in range(n_networks):
                    times_matrix(weights[l - 1][i], chain[l][i], chain[l - 1][i],
                                 chain_scales[l - 1])  # fmt: skip
        return self._params(weights, biases, start, chain, chain_scales)

    def _backward_chain(self, M: int, scales) -> list | None:
        """The arrays ``(M, n_L, n_k)``, k = 0 … L, of the backward products (k = L: the
        identity rows), or None without ``backward_scales``."""
        if scales is None:
            return None
        n_L = self.widths[-1]
        chain = [np.empty((M, n_L, n)) for n in self.widths[:-1]]
        top = np.zeros((M, n_L, n_L))
        top[:, np.arange(n_L), np.arange(n_L)] = 1.0
        return chain + [top]

    @staticmethod
    def _params(weights, biases, start, chain, scales) -> Params:
        if chain is None:
            return Params(weights, biases, start=int(start))
        return Params(weights, biases, start=int(start), backward_rows=tuple(chain[:-1]),
                      backward_scales=scales)  # fmt: skip

    def _layer_laws(self) -> list[tuple]:
        """Per weight layer: (n_in, n_out, E W_ij, sd W_ij, μ_b, σ_b), computed once per draw."""
        laws = []
        for l, (n_in, n_out) in enumerate(zip(self.widths[:-1], self.widths[1:])):
            mean = self.layer_mu_w[l] / n_in
            std = self.layer_sigma_w[l] / np.sqrt(n_in)
            laws.append((n_in, n_out, mean, std, self.layer_mu_b[l], self.layer_sigma_b[l]))
        return laws

    def _draw_weights(
        self, rng: np.random.Generator, key: int, network: int, laws: list, weights: list
    ) -> None:
        """One network's uniform or orthogonal weights, layer by layer, into the given
        ``(n_l, n_{l-1})`` arrays (drawn in float64, then rounded to their dtype)."""
        for l, ((n_in, n_out, mean, std, _, _), w_out) in enumerate(zip(laws, weights), 1):
            if self.init == "uniform":
                # U(mean − a, mean + a) has variance a²/3, so a = √3·std.
                half = np.sqrt(3.0) * std
                w_out[...] = rng.uniform(mean - half, mean + half, size=(n_out, n_in))
            else:
                a = np.empty((1, max(n_in, n_out), min(n_in, n_out)))
                network_normal(a, key, param_tensor(l, "weight"), network, threads=1)
                q = _haar_orthogonal(a[0], n_out, n_in)
                w_out[...] = std * np.sqrt(max(n_in, n_out)) * q


def _fits(out: Params, n_networks: int, pairs: list, dtype) -> bool:
    """Whether ``out``'s arrays can take a draw of these shapes and dtype as they are."""
    arrays = (*out.weights, *out.biases)
    shapes = [(n_networks, b, a) for a, b in pairs] + [(n_networks, b) for _, b in pairs]
    return len(arrays) == len(shapes) and all(
        isinstance(a, np.ndarray)
        and a.shape == shape
        and a.dtype == dtype
        and a.flags.c_contiguous
        and a.flags.writeable
        for a, shape in zip(arrays, shapes)
    )


#: Below this many parameters in one draw, threads cost more than they save.
_PARALLEL_PARAMETERS = 1_000_000


def _sampling_threads(n_parameters: int) -> int:
    """Threads for drawing parameters: the engine's default (as many as BLAS may use now, so
    one inside a BLAS-limited worker process), or one for small draws."""
    if n_parameters < _PARALLEL_PARAMETERS:
        return 1
    return default_threads()


def _haar_orthogonal(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A (rows, cols) matrix with orthonormal rows or columns, Haar-distributed, from a
    ``(max(rows, cols), min(rows, cols))`` matrix ``a`` of i.i.d. N(0, 1).

    QR of the Gaussian matrix with the signs of diag(R) folded into Q (Mezzadri 2007). Each
    entry has variance 1/max(rows, cols); the caller rescales to σ_w²/n_in.
    """
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    return q if rows >= cols else q.T


def forward(net: MLP, params: Params, x: np.ndarray) -> np.ndarray:
    """Network output g for inputs x (no validation, no trace, no δ; teacher targets use it).

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
