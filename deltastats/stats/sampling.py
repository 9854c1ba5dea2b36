"""Sampling drivers: :func:`stream`, :func:`estimate` and :func:`stein_check`.

They draw networks chunk by chunk (:class:`~deltastats.stats.design.Design`), run the engine,
feed the streaming accumulators and summarize them with intervals valid for the nested design
(:mod:`deltastats.stats.intervals`).

How many networks? Means of δ are close to normal quickly, but E[δ²], Var[δ] and higher
moments of a product of many Gaussian weights are right-skewed across networks: their
intervals need on the order of 100 networks (:data:`MIN_NETWORKS`) before the CLT holds, and
kurtosis-type statistics more. :func:`estimate` warns (:class:`FewNetworksWarning`) below that.
On an exactly solvable linear case (M = 100, B = 16, 400 replications, icc ≈ 0.19, design
effect ≈ 3.8) the 95% intervals of delta_mean, delta_sq and delta_var covered the truth
93.5–96.5% (CLT) and 93.75–96.75% (jackknife) of the time; naive i.i.d. intervals for
delta_mean covered 69% (the tests check it).

Overflow: networks whose trace has inf/NaN are excluded from every statistic, counted in
:attr:`Estimates.n_overflow` and reported by a warning (results are then conditional on not
overflowing).
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .. import checks
from .._parallel import usable_cpus
from ..engine import NumericalOverflowWarning
from ..model import inputs as _inputs
from ..model import targets as _targets
from ..model.networks import MLP
from .design import Design
from .intervals import summarize
from .results import MIN_NETWORKS, Estimates, FewNetworksWarning
from .statistics import check_statistics


def stream(
    net: MLP,
    inputs: _inputs.InputLaw | None = None,
    targets: _targets.TargetLaw | None = None,
    loss: str = "mse",
    *,
    n_networks: int = 1000,
    batch: int = 16,
    seed: int | np.random.SeedSequence = 0,
    chunk: int | None = None,
    confidence: float = 0.95,
    method: str = "clt",
    weight_decay: float = 0.0,
    dtype=np.float64,
    until_rel_error: float | None = None,
    until_statistics: str | Sequence[str] = ("delta_sq",),
    min_networks: int = MIN_NETWORKS,
    n_resamples: int = 1999,
    jackknife_groups: int = 20,
    progress: bool = False,
    n_jobs: int = 1,
) -> Iterator[Estimates]:
    """Sample networks chunk by chunk and yield the running :class:`Estimates` after each.

    Network m (global index 0 … n_networks − 1) gets its parameters, its own batch of B
    inputs and targets from its own random streams, so the estimates after all networks are
    bit-for-bit the same for every ``chunk`` (see :mod:`deltastats.stats.accumulators`).
    All arguments are checked before any network is drawn (:class:`Design`).

    Parameters
    ----------
    net : MLP
    inputs : InputLaw, optional
        Input law (default ``inputs.gaussian(1.0)``). Every network gets its own independent
        batch of B inputs (shared inputs would make the networks dependent samples).
    targets : TargetLaw, optional
        Target law (default ``targets.zeros()``; for labelled inputs
        ``inputs.from_arrays(X, Y)``, each row's own label, ``targets.paired(inputs)``).
    loss : str
        ``"mse"`` or ``"cross_entropy"``.
    n_networks : int
        M ≥ 2, the number of networks (the maximum when ``until_rel_error`` is given).
    batch : int
        B ≥ 1, inputs per network.
    seed : int or SeedSequence
    chunk : int, optional
        Networks per engine pass (default: about 2²² floats of traces, parameters and
        gradients per pass). Results do not depend on it.
    confidence : float
        γ ∈ (0, 1).
    method : {"clt", "jackknife", "bootstrap"}
    weight_decay : float
        λ ≥ 0 in ∂J/∂W = mean_b δhᵀ + λW (affects the grad_w_* statistics only).
    dtype : np.float32 or np.float64
        Engine precision; accumulation is float64 either way.
    until_rel_error : float, optional
        Stop once (CI half-width)/|estimate| ≤ this for every pooled layer row of
        ``until_statistics`` and at least ``min_networks`` networks were used.
    until_statistics : str or sequence of str
        Statistics of the stopping rule (default ``delta_sq``; a mean may be 0).
    min_networks : int
        Minimum networks before the stopping rule applies.
    n_resamples : int
        Bootstrap resamples (``method="bootstrap"``; recomputed at every yield).
    jackknife_groups : int
        G ≥ 2 delete-a-group jackknife groups (network index mod G); the jackknife interval
        uses t with G − 1 degrees of freedom.
    progress : bool
        Show a tqdm bar.
    n_jobs : int
        Worker processes (joblib, loky). Each round gives every worker a contiguous range of
        ``chunk`` networks (BLAS threads per worker limited so workers do not oversubscribe
        the cores); their accumulators are merged in network order, so the estimates are
        bit-for-bit those of ``n_jobs=1``. With ``n_jobs > 1`` an estimate is yielded per round
        of ``n_jobs × chunk`` networks.

    Yields
    ------
    Estimates
        After each chunk (each round with ``n_jobs > 1``).
    """
    design = Design(
        net,
        inputs,
        targets,
        loss,
        n_networks=n_networks,
        batch=batch,
        seed=seed,
        chunk=chunk,
        weight_decay=weight_decay,
        dtype=dtype,
        confidence=confidence,
        method=method,
        n_resamples=n_resamples,
        jackknife_groups=jackknife_groups,
    )
    rule = StoppingRule.checked(until_rel_error, until_statistics, min_networks)
    n_jobs = checks.positive_int("n_jobs", n_jobs)
    return _run(design, rule, progress=progress, n_jobs=n_jobs)


@dataclass(frozen=True)
class StoppingRule:
    """Stop once (CI half-width)/|estimate| ≤ ``rel_error`` on every pooled layer row of
    ``statistics``, with at least ``min_networks`` networks; ``rel_error=None`` never stops."""

    rel_error: float | None = None
    statistics: tuple[str, ...] = ("delta_sq",)
    min_networks: int = MIN_NETWORKS

    @classmethod
    def checked(cls, rel_error, statistics, min_networks) -> StoppingRule:
        """The rule with every argument checked (names as in :func:`stream`)."""
        if rel_error is not None:
            rel_error = checks.positive_real("until_rel_error", rel_error)
        return cls(
            rel_error,
            tuple(check_statistics(statistics)),
            checks.integer("min_networks", min_networks, 2),
        )

    def met(self, est: Estimates) -> bool:
        """Whether ``est`` is precise enough to stop."""
        return (
            self.rel_error is not None
            and est.n_networks >= self.min_networks
            and est.rel_error(self.statistics) <= self.rel_error
        )


def _run(
    design: Design,
    rule: StoppingRule,
    *,
    progress: bool = False,
    n_jobs: int = 1,
    warn_overflow: bool = True,
    final_only: bool = False,
) -> Iterator[Estimates]:
    """The sampling loop of :func:`stream`: yields running estimates (only the last one, and
    those where the stopping rule may be met, with ``final_only``)."""
    n_networks, method = design.n_networks, design.method
    warned = False
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_networks, unit="net", desc="deltastats")
    try:
        total = 0
        for acc, done in _accumulate(design, n_networks, n_jobs):
            total += done
            if warn_overflow and acc.n_overflow and not warned:
                warned = True
                warnings.warn(
                    f"numerical overflow in {acc.n_overflow} of {acc.n_seen} networks so far; "
                    "they are excluded and counted in Estimates.n_overflow",
                    NumericalOverflowWarning,
                    stacklevel=2,
                )
            if bar is not None:
                bar.update(done)
            if acc.n_valid == 0:
                if total < n_networks:
                    continue  # nothing to summarize yet; later chunks may be finite
                raise ValueError(
                    f"all {n_networks} networks overflowed (inf/NaN in z, δ or the loss; first "
                    f"layer → count: {acc.overflow_layers}): there is nothing to estimate; "
                    + overflow_advice(design.dtype).strip(" ()")
                )
            if final_only and rule.rel_error is None and total < n_networks:
                continue  # estimate() needs only the last summary: skip the running ones
            if (
                final_only
                and rule.rel_error is not None
                and method != "bootstrap"
                and total < n_networks
            ):
                # Test the stopping rule on the rule's statistics only (a full summary costs
                # as much as several chunks); clt and jackknife give each statistic the same
                # interval alone as in the full table, so the stop is where stream() stops.
                probe = summarize(
                    acc,
                    method=method,
                    confidence=design.confidence,
                    seed=design.seed,
                    statistics=rule.statistics,
                    units=False,
                )
                if not rule.met(probe):
                    continue
            est = summarize(
                acc,
                method=method,
                confidence=design.confidence,
                n_resamples=design.n_resamples,
                seed=design.seed,
                progress=progress and method == "bootstrap",
            )
            yield est
            if rule.met(est):
                return
    finally:
        if bar is not None:
            bar.close()


def _accumulate_range(design: Design, start: int, stop: int, shifts: dict, blas_threads: int):
    """Worker: accumulate networks ``start … stop−1`` chunk by chunk."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas_threads):
        acc = design.accumulator(start, shifts)
        for a in range(start, stop, design.chunk):
            params, x, trace = design.trace(a, min(design.chunk, stop - a))
            acc.update(trace, params=params, x=x)
    return acc


def _accumulate(design: Design, n_networks: int, n_jobs: int):
    """Yield ``(accumulator so far, networks added)`` after each chunk (or round of chunks).

    In parallel, every worker's accumulator uses the shifts of network 0 (as the serial one
    does) and covers a contiguous network range; merging them in network order gives the
    serial result bit for bit (:mod:`deltastats.stats.accumulators`).
    """
    if n_jobs == 1:
        yield from _pipelined(design, n_networks)
        return

    from joblib import Parallel, delayed

    params, x, trace = design.trace(0, 1)
    shifts = design.accumulator().compute_shifts(trace, params=params, x=x)
    blas = max(1, usable_cpus() // n_jobs)
    acc = None
    with Parallel(n_jobs=n_jobs, backend="loky") as pool:
        for start in range(0, n_networks, design.chunk * n_jobs):
            stop = min(start + design.chunk * n_jobs, n_networks)
            edges = list(range(start, stop, design.chunk)) + [stop]
            parts = pool(
                delayed(_accumulate_range)(design, a, b, shifts, blas)
                for a, b in zip(edges[:-1], edges[1:])
            )
            for part in parts:
                acc = part if acc is None else acc.merge(part)
            yield acc, stop - start


def _pipelined(design: Design, n_networks: int):
    """The serial chunk loop of :func:`_accumulate`, with the next chunk's draws running ahead.

    While the engine and the accumulators work on chunk k, one background thread draws the
    parameters, inputs and targets of chunk k + 1 (numba and numpy kernels that release the
    GIL), so the draws, a third of a chunk's work, need not leave a core idle. A network's
    draws are a pure function of (seed, network index), so the results are bit for bit
    those of drawing chunk by chunk. Two parameter buffers alternate: chunk k + 1 is drawn
    into the memory of chunk k − 1, which is done with (no fresh memory to page in, no copies).
    """
    starts = list(range(0, n_networks, design.chunk))
    sizes = [min(design.chunk, n_networks - a) for a in starts]
    spare: list = [None, None]  # the two parameter buffers (Params of earlier chunks)

    def draw(k: int):
        return design.draw(starts[k], sizes[k], out=spare[k % 2])

    acc = design.accumulator()
    pool = _draw_executor()
    ahead = pool.submit(draw, 0)
    try:
        for k in range(len(starts)):
            params, x, y = ahead.result()
            spare[k % 2] = params
            ahead = pool.submit(draw, k + 1) if k + 1 < len(starts) else None
            trace = design.backprop(params, x, y)
            acc.update(trace, params=params, x=x)
            del trace
            yield acc, sizes[k]
    finally:
        # Stopped early (the stopping rule was met) or failed: do not leave a draw running.
        if ahead is not None and not ahead.cancel():
            try:
                ahead.result()
            except Exception:  # noqa: BLE001 - the chunk is discarded anyway
                pass


def _draw_executor():
    """The one thread that draws chunks ahead of the engine (one per process)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    key = os.getpid()
    pool = _DRAW_POOLS.get(key)
    if pool is None:
        pool = _DRAW_POOLS[key] = ThreadPoolExecutor(1, thread_name_prefix="deltastats-draws")
    return pool


_DRAW_POOLS: dict = {}


def estimate(
    net: MLP,
    inputs: _inputs.InputLaw | None = None,
    targets: _targets.TargetLaw | None = None,
    loss: str = "mse",
    *,
    n_networks: int = 1000,
    batch: int = 16,
    seed: int | np.random.SeedSequence = 0,
    chunk: int | None = None,
    confidence: float = 0.95,
    method: str = "clt",
    weight_decay: float = 0.0,
    dtype=np.float64,
    until_rel_error: float | None = None,
    until_statistics: str | Sequence[str] = ("delta_sq",),
    n_resamples: int = 1999,
    jackknife_groups: int = 20,
    progress: bool = False,
    n_jobs: int = 1,
) -> Estimates:
    """Monte Carlo estimates of the statistics of δ⁽ˡ⁾ with network-level confidence intervals.

    Draws ``n_networks`` networks from ``net`` and ``batch`` inputs per network, runs the
    batched backprop engine chunk by chunk, and returns :class:`Estimates` (drains
    :func:`stream`; same parameters, including ``n_jobs`` worker processes). Memory does not
    grow with ``n_networks``: chunks stream through mergeable accumulators. Networks that
    overflow are excluded and counted, with a :class:`~deltastats.NumericalOverflowWarning`
    that says how many. Warns
    (:class:`FewNetworksWarning`) below :data:`MIN_NETWORKS` networks.

    Examples
    --------
    >>> import deltastats as ds
    >>> net = ds.MLP((8, 16, 1), activation="tanh", mu_w=0.5)
    >>> est = estimate(net, n_networks=200, batch=8, seed=0)
    >>> est.per_layer("delta_mean").columns.tolist()[:4]
    ['layer', 'unit', 'statistic', 'estimate']
    """
    design = Design(
        net,
        inputs,
        targets,
        loss,
        n_networks=n_networks,
        batch=batch,
        seed=seed,
        chunk=chunk,
        weight_decay=weight_decay,
        dtype=dtype,
        confidence=confidence,
        method=method,
        n_resamples=n_resamples,
        jackknife_groups=jackknife_groups,
    )
    rule = StoppingRule.checked(until_rel_error, until_statistics, MIN_NETWORKS)
    n_jobs = checks.positive_int("n_jobs", n_jobs)
    last = _drain(
        _run(design, rule, progress=progress, n_jobs=n_jobs, warn_overflow=False, final_only=True)
    )
    _final_warnings(last, advice=overflow_advice(design.dtype))
    return last


def _drain(generator) -> Estimates:
    """The last item of a generator."""
    return deque(generator, maxlen=1)[0]


def overflow_advice(dtype) -> str:
    """What to change when networks overflow, for a run in ``dtype``: float64 is advised only
    to a float32 run (a float64 run that overflows has left the range of any float)."""
    if np.dtype(dtype) == np.float32:
        return " (reduce sigma_w or depth, or use float64)"
    return " (reduce sigma_w or depth; the log_delta_norm_sq_* statistics track the growth)"


def _final_warnings(
    est: Estimates,
    *,
    what: str = "numerical overflow (inf/NaN)",
    advice: str = " (reduce sigma_w or depth, or use float64)",
) -> None:
    """The warnings every estimate ends with: excluded networks (``what`` they had, and the
    ``advice``), dead layers, rows without a standard error, too few networks."""
    if est.n_overflow:
        warnings.warn(
            f"{what} in {est.n_overflow} of "
            f"{est.n_overflow + est.n_networks} networks (first layer → count: "
            f"{est.overflow_layers}); they are excluded from every statistic and counted in "
            f"Estimates.n_overflow{advice}",
            NumericalOverflowWarning,
            stacklevel=3,
        )
    if est.zero_delta:
        warnings.warn(
            f"δ⁽ˡ⁾ = 0 exactly for some inputs (layer → networks: {est.zero_delta}), e.g. dead "
            "ReLU units: log(‖δ‖²/n) = −inf there and log_delta_norm_sq_* are −inf or NaN",
            RuntimeWarning,
            stacklevel=3,
        )
    t = est.table
    no_se = t[np.isfinite(t["estimate"]) & ~np.isfinite(t["std_error"])]
    if not no_se.empty:
        warnings.warn(
            f"{len(no_se)} rows have a finite estimate but no standard error (their interval is "
            f"NaN): {', '.join(sorted(no_se['statistic'].unique()))}. Either the statistic is "
            "undefined there (e.g. no variance) or its higher moments overflow float64 "
            f"(largest |estimate| {np.abs(no_se['estimate']).max():.3g}); for exploding "
            "networks use the log_delta_norm_sq_* statistics or fewer layers",
            RuntimeWarning,
            stacklevel=3,
        )
    if est.n_networks < MIN_NETWORKS:
        warnings.warn(
            f"only {est.n_networks} networks: intervals for skewed statistics (delta_sq, "
            f"delta_var, kurtosis) need about {MIN_NETWORKS} or more; increase n_networks",
            FewNetworksWarning,
            stacklevel=3,
        )


def stein_check(
    net: MLP,
    inputs: _inputs.Gaussian | None = None,
    targets: _targets.TargetLaw | None = None,
    loss: str = "mse",
    *,
    n_networks: int = 1000,
    batch: int = 16,
    seed: int | np.random.SeedSequence = 0,
    chunk: int | None = None,
    confidence: float = 0.95,
    method: str = "clt",
    dtype=np.float64,
    progress: bool = False,
) -> Estimates:
    """Stein / integration-by-parts estimators of E[δ⁽¹⁾] against the pathwise mean.

    With Gaussian inputs x ~ N(0, q₀I), z⁽¹⁾ = Wx + b is, given the network, exactly
    N(b, Σ) with Σ = q₀WWᵀ, and Stein's lemma E[(z − μ)L] = Σ·E[∇_z L] holds exactly (when L
    depends on x only through z⁽¹⁾, i.e. targets independent of x). Returned rows (layer 1):

    * ``delta_mean``: the pathwise E[δ_j] (mean of backprop's δ);
    * ``stein_mv_delta_mean``: E_m[Σ_m⁻¹ mean_b (z_b − b)L_b], unbiased for E[δ⁽¹⁾]; its gap
      ``stein_mv_gap`` to the pathwise mean has expectation exactly 0;
    * ``stein_uv_delta_mean``/``stein_uv_gap``: the univariate form with the exact per-network
      μ_j = b_j and σ_j² = Σ_jj; biased by Σ_{k≠j} Σ_jk E[δ_k]/Σ_jj whenever units are
      correlated (μ_w ≠ 0 makes rows of W correlated);
    * ``stein_delta_mean``/``stein_gap``: the integration-by-parts form Cov(L, z_j)/Var(z_j) with
      the unconditional mean and variance of z_j (approximate: z_j is not Gaussian across
      networks, and the units are correlated).

    Parameters are those of :func:`estimate`; ``inputs`` must be ``inputs.gaussian(q0)``,
    ``targets`` must not depend on x (not ``teacher``), and n_1 ≤ n_0 (Σ invertible).
    """
    inputs = _inputs.gaussian(1.0) if inputs is None else inputs
    if not isinstance(inputs, _inputs.Gaussian):
        raise ValueError(
            "stein_check needs Gaussian inputs (inputs.gaussian(q0)): only then is z⁽¹⁾ exactly "
            "Gaussian given the weights"
        )
    if isinstance(targets, _targets.Teacher):
        raise ValueError(
            "stein_check needs targets independent of x (zeros, constant, gaussian, one_hot): "
            "with teacher targets L depends on x other than through z⁽¹⁾"
        )
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an MLP, got {type(net).__name__}")
    if net.widths[1] > net.widths[0]:
        raise ValueError(
            f"stein_check needs n_1 <= n_0 so that Σ = q₀WWᵀ is invertible; got n_0 = "
            f"{net.widths[0]}, n_1 = {net.widths[1]} (use a wider input or narrower layer 1)"
        )
    design = Design(
        net,
        inputs,
        targets,
        loss,
        n_networks=n_networks,
        batch=batch,
        seed=seed,
        chunk=chunk,
        dtype=dtype,
        confidence=confidence,
        method=method,
        stein_q0=inputs.q0,
    )
    last = _drain(_run(design, StoppingRule(), progress=progress, warn_overflow=False))
    _final_warnings(last, advice=overflow_advice(design.dtype))
    keep = [
        "delta_mean",
        "stein_mv_delta_mean",
        "stein_mv_gap",
        "stein_uv_delta_mean",
        "stein_uv_gap",
        "stein_delta_mean",
        "stein_gap",
    ]
    t = last.table
    t = t[(t["layer"] == 1) & t["statistic"].isin(keep)].reset_index(drop=True)
    return Estimates(
        t,
        last.n_networks,
        last.n_inputs,
        last.n_overflow,
        last.confidence,
        last.method,
        last.overflow_layers,
        last.zero_delta,
    )
