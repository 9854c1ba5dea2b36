"""The sampling design of a Monte Carlo run, as one frozen, validated record.

M independent networks m, B inputs b through each (inputs drawn independently per network).
Network m (global index 0 … M − 1) gets its parameters, its batch of inputs and its targets
from its own random streams (:mod:`deltastats.model.seeding`), so a network's numbers depend
only on (seed, m): never on ``chunk``, on how many networks are drawn at once, or on jobs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import checks
from ..engine import Trace, backprop
from ..model import inputs as _inputs
from ..model import targets as _targets
from ..model.losses import get_loss
from ..model.networks import MLP, Params
from . import controls
from .accumulators import BackpropAccumulator
from .intervals import check_method_confidence

#: Floats of traces, parameters and gradients per engine pass when ``chunk`` is not given
#: (2²² floats = 32 MB in float64).
CHUNK_FLOATS = 2**22


def pass_bytes(net: MLP, batch: int, chunk: int, dtype=np.float64) -> int:
    """Bytes one engine pass of ``chunk`` networks holds at its peak (an estimate).

    Per network: parameters and weight gradients (n_w + n_b each, n_w = Σ_l n_l·n_{l−1},
    n_b = Σ_l n_l), inputs and targets B·(n_0 + n_L), and the trace z, h, δ of every layer
    (3·B·Σ_{l≥1} n_l); the parameters are drawn in float64 before a cast to float32.
    """
    widths = net.widths
    n_w = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    n_b = sum(widths[1:])
    item = np.dtype(dtype).itemsize
    per_net = (
        2 * (n_w + n_b) * item
        + batch * (widths[0] + widths[-1] + 3 * n_b + 1) * item
        + (8 * max(a * b for a, b in zip(widths[:-1], widths[1:])) if item < 8 else 0)
    )
    return int(chunk) * int(per_net)


#: (time.monotonic() of the reading, bytes): validating 10⁴ sweep points reads it once a second.
_MEMORY_READING: list = [-1.0, None]


def available_memory() -> int | None:
    """Bytes of memory this process may still allocate: ``MemAvailable`` of the system,
    capped by a cgroup (container) limit minus its usage; ``None`` when unknown. Read at most
    once a second."""
    if time.monotonic() - _MEMORY_READING[0] < 1.0:
        return _MEMORY_READING[1]
    value = _read_available_memory()
    _MEMORY_READING[:] = [time.monotonic(), value]
    return value


def _read_available_memory() -> int | None:
    candidates = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max" or a huge number: no limit
            candidates.append(max(0, int(limit) - usage))
        break
    return min(candidates) if candidates else None


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_memory(
    net: MLP, batch: int, chunk: int, dtype=np.float64, *, available: int | None = None
) -> None:
    """Refuse, before any work, an engine pass that cannot fit in memory.

    Raises
    ------
    ValueError
        Naming the knob to lower: ``chunk`` (networks per pass, or ``n_networks`` when the
        chunk defaults to it) when a smaller chunk would fit, else the layer sizes (``width``,
        ``depth``, ``batch``), since one network alone does not fit.
    """
    available = available_memory() if available is None else available
    if available is None:
        return
    need = pass_bytes(net, batch, chunk, dtype)
    if need <= available:
        return
    one = pass_bytes(net, batch, 1, dtype)
    if one > available:
        raise ValueError(
            f"one network of widths {_short(net.widths)} with batch {batch} needs about "
            f"{_gb(one)} per engine pass but about {_gb(available)} of memory is available; "
            "lower width, depth or batch"
        )
    fits = max(1, available // max(one, 1))
    raise ValueError(
        f"chunk = {chunk} networks per engine pass needs about {_gb(need)} but about "
        f"{_gb(available)} of memory is available; lower chunk (or n_networks) to at most "
        f"{fits}"
    )


def _short(widths: tuple[int, ...]) -> str:
    if len(widths) <= 6:
        return str(widths)
    return f"({widths[0]}, {widths[1]}, …, {widths[-1]}) (depth {len(widths) - 1})"


@dataclass(frozen=True)
class Design:
    """What is sampled and how it is summarized: everything :func:`~deltastats.stream`,
    :func:`~deltastats.estimate` and :func:`~deltastats.stein_check` hand on, checked once.

    Parameters
    ----------
    net : MLP
        The network family.
    inputs : InputLaw, optional
        Law of the inputs (default ``inputs.gaussian(1.0)``); every network gets its own batch.
    targets : TargetLaw, optional
        Law of the targets (default ``targets.zeros()``; for labelled inputs
        ``inputs.from_arrays(X, Y)``, ``targets.paired(inputs)``: each row's own label).
    loss : str
        ``"mse"`` or ``"cross_entropy"``.
    n_networks : int
        M ≥ 2 (an interval needs the spread of at least two networks).
    batch : int
        B ≥ 1, inputs per network.
    seed : int or SeedSequence
    chunk : int, optional
        Networks per engine pass (default: about :data:`CHUNK_FLOATS` floats per pass). Results
        do not depend on it.
    weight_decay : float
        λ ≥ 0 in ∂J/∂W = mean_b δhᵀ + λW.
    dtype : np.float32 or np.float64
        Engine precision; accumulation is float64 either way.
    confidence : float
        γ ∈ (0, 1).
    method : {"clt", "jackknife", "bootstrap"}
    n_resamples : int
        Bootstrap resamples (≥ 10).
    jackknife_groups : int
        G ≥ 2 delete-a-group jackknife groups (network index mod G).
    stein_q0 : float or None
        With Gaussian inputs N(0, q₀I): also accumulate the exact conditional Stein features of
        layer 1 (:func:`~deltastats.stein_check` sets it).

    Examples
    --------
    >>> import deltastats as ds
    >>> d = Design(ds.MLP((4, 8, 1)), n_networks=100, batch=4)
    >>> d.chunk, d.keep_networks
    (100, False)
    >>> Design(ds.MLP((4, 8, 1)), batch=0)
    Traceback (most recent call last):
    ValueError: batch must be a positive int, got 0
    """

    net: MLP
    inputs: _inputs.InputLaw | None = None
    targets: _targets.TargetLaw | None = None
    loss: str = "mse"
    n_networks: int = 1000
    batch: int = 16
    seed: int | np.random.SeedSequence = 0
    chunk: int | None = None
    weight_decay: float = 0.0
    dtype: np.dtype = field(default=np.dtype(np.float64))
    confidence: float = 0.95
    method: str = "clt"
    n_resamples: int = 1999
    jackknife_groups: int = 20
    stein_q0: float | None = None

    def __post_init__(self) -> None:
        def put(name, value):
            object.__setattr__(self, name, value)

        if not isinstance(self.net, MLP):
            raise ValueError(f"net must be an MLP, got {type(self.net).__name__}")
        put(
            "n_networks",
            checks.integer(
                "n_networks",
                self.n_networks,
                2,
                " (an interval needs the spread of at least 2 networks)",
            ),
        )
        put("batch", checks.positive_int("batch", self.batch))
        check_method_confidence(self.method, self.confidence)
        put("confidence", float(self.confidence))
        put("n_resamples", checks.integer("n_resamples", self.n_resamples, 10))
        put("jackknife_groups", checks.integer("jackknife_groups", self.jackknife_groups, 2))
        put("weight_decay", checks.nonnegative_real("weight_decay", self.weight_decay))
        get_loss(self.loss)
        inputs = _inputs.gaussian(1.0) if self.inputs is None else self.inputs
        if self.targets is not None:
            targets = self.targets
        elif isinstance(inputs, _inputs.FromArrays):
            targets = _targets.paired(inputs)  # labelled data: each row's own label
        else:
            targets = _targets.zeros()
        if not isinstance(inputs, _inputs.InputLaw):
            raise ValueError("inputs must be an input law such as deltastats.inputs.gaussian(1.0)")
        if not isinstance(targets, _targets.TargetLaw):
            raise ValueError("targets must be a target law such as deltastats.targets.zeros()")
        put("inputs", inputs)
        put("targets", targets)
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            dtype = None
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be np.float32 or np.float64, got {self.dtype!r}")
        put("dtype", dtype)
        if self.stein_q0 is not None:
            put("stein_q0", checks.positive_real("stein_q0", self.stein_q0))
        if self.chunk is None:
            # Floats held per network in one pass: z, h, δ per sample, plus parameters and
            # weight gradients (n_l·n_{l−1} each).
            widths = self.net.widths
            n_weights = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
            per_net = self.batch * (sum(widths) + self.net.depth) * 3 + 2 * n_weights
            put("chunk", int(max(1, min(self.n_networks, CHUNK_FLOATS // per_net))))
        else:
            put("chunk", checks.positive_int("chunk", self.chunk))
        check_memory(self.net, self.batch, min(self.chunk, self.n_networks), dtype)

    @property
    def keep_networks(self) -> bool:
        """Whether every per-network feature vector is kept (the bootstrap resamples them)."""
        return self.method == "bootstrap"

    def trace(self, start: int, M: int) -> tuple[Params, np.ndarray, Trace]:
        """Parameters, inputs ``(M, B, n_0)`` and backprop trace of networks
        ``start … start+M−1``."""
        params, x, y = self.draw(start, M)
        return params, x, self.backprop(params, x, y)

    @property
    def _control_variate(self) -> bool:
        """Whether this design's accumulators report ``delta_sq_cv`` (:func:`controls.enabled`)."""
        return controls.enabled(self.net, self.batch)

    def draw(
        self, start: int, M: int, out: Params | None = None
    ) -> tuple[Params, np.ndarray, np.ndarray]:
        """Parameters, inputs ``(M, B, n_0)`` and targets of networks ``start … start+M−1``:
        a pure function of (seed, network index), so it may run ahead of the engine in another
        thread. ``out``: the Params of an earlier chunk to overwrite (:meth:`MLP.sample`)."""
        n0, nL = self.net.widths[0], self.net.widths[-1]
        # With the control variate, its backward weight products are computed as the weights
        # are drawn (each matrix while it is in cache), not in a second pass over them.
        growth = controls.chain_growth(self.net) if self._control_variate else None
        scales = None if growth is None else controls.backward_scales(growth)
        params = self.net.sample(
            M, self.seed, start=start, dtype=self.dtype, out=out, backward_scales=scales
        )
        x = self.inputs.sample(
            n0, self.batch, self.seed, n_networks=M, start=start, dtype=self.dtype
        )
        y = self.targets.sample(x, nL, self.seed, start=start, dtype=self.dtype)
        return params, x, y

    def backprop(self, params: Params, x: np.ndarray, y: np.ndarray) -> Trace:
        """The engine pass of one chunk, as the accumulators need it (all layers kept).

        Without weight decay, and when B is small next to the widths, the weight gradients are
        not formed: the accumulator computes their features from δ and h
        (:func:`~deltastats.stats.features.gram_weight_features`, B²(n_l + n_{l−1}) operations
        per network and layer instead of the gradient's B·n_l·n_{l−1} and its write). With
        λ > 0 (the gradients then include λW) or a large B they are materialized."""
        w = self.net.widths
        gram = sum(self.batch * (a + b) for a, b in zip(w[1:], w[:-1]))
        product = sum(a * b for a, b in zip(w[1:], w[:-1]))
        return backprop(
            self.net,
            params,
            x,
            y,
            loss=self.loss,
            weight_decay=self.weight_decay,
            grads=bool(self.weight_decay) or gram > product,
            warn=False,
        )

    def accumulator(self, start: int = 0, shifts: dict | None = None) -> BackpropAccumulator:
        """An empty accumulator for networks from ``start`` on, with this design's settings."""
        return BackpropAccumulator(
            self.net,
            self.batch,
            start=start,
            shifts=shifts,
            n_groups=self.jackknife_groups,
            keep_networks=self.keep_networks,
            stein_q0=self.stein_q0,
            # delta_sq_cv where its control has an exactly known mean and is cheap
            control_variate=self._control_variate,
        )
