"""Deterministic random streams indexed by network.

Every random draw in deltastats belongs to one network m and one *stream* (parameters,
inputs, targets, …), so network m sees the same numbers whether it is sampled alone, in a
chunk of 64 or of 10 000, by one job or by eight. This is what makes results independent of
chunk sizes and of ``n_jobs``.

Gaussian draws (weights, biases, Gaussian and spherical inputs, Gaussian targets) are
counter-based (:mod:`deltastats.model.philox`): Philox4x32-10 keyed by
:func:`stream_key` ``(seed, s)``, with the counter (block, tensor, m mod 2³², ⌊m/2³²⌋). The
tensor index is :func:`param_tensor` for parameters and 0 for inputs and targets; draws shared
by all networks (inputs and targets of shared batches) use the network index
:data:`SHARED_NETWORK`. Other laws (uniform weights and inputs, data rows, one-hot classes)
draw from network m's numpy generator, built from ``SeedSequence(seed, spawn_key=(s, m))``
(:func:`network_rngs`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np

#: A root seed: an int, a ``SeedSequence``, or ``None`` (fresh entropy).
SeedLike = int | np.random.SeedSequence | None

#: Stream numbers: a fixed, documented layout so that adding a stream never shifts another.
STREAMS: dict[str, int] = {"params": 0, "inputs": 1, "targets": 2, "shared_inputs": 3}

#: The name of one of the :data:`STREAMS`.
StreamName = Literal["params", "inputs", "targets", "shared_inputs"]


def as_seed_sequence(seed: SeedLike) -> np.random.SeedSequence:
    """Turn an int (or ``None`` for fresh entropy) into a ``SeedSequence``."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if seed is None:
        return np.random.SeedSequence()
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int or a SeedSequence, got {seed!r}")
    return np.random.SeedSequence(int(seed))


#: Network index of draws shared by all networks (2⁶⁴ − 1: above any network's index).
SHARED_NETWORK = 2**64 - 1


def stream_key(seed: SeedLike, stream: StreamName) -> int:
    """The 64-bit Philox key of a stream: the first word of ``SeedSequence(seed,
    spawn_key=(s,))``'s state, so distinct (seed, stream) pairs get unrelated keys."""
    root = as_seed_sequence(seed)
    child = np.random.SeedSequence(
        root.entropy, spawn_key=(*root.spawn_key, STREAMS[stream]), pool_size=root.pool_size
    )
    return int(child.generate_state(1, np.uint64)[0])


def param_tensor(layer: int, kind: Literal["weight", "bias"]) -> int:
    """Counter word c₁ of W⁽ˡ⁾ (``2(l−1)``) or b⁽ˡ⁾ (``2(l−1) + 1``), l = 1 … L."""
    return 2 * (layer - 1) + (1 if kind == "bias" else 0)


def network_rngs(
    seed: SeedLike, stream: StreamName, start: int, count: int
) -> Iterator[np.random.Generator]:
    """Generators of networks ``start … start+count-1`` for one stream.

    Parameters
    ----------
    seed : int or SeedSequence
        Root seed of the experiment.
    stream : str
        One of :data:`STREAMS`.
    start, count : int
        Global index of the first network and how many.
    """
    root = as_seed_sequence(seed)
    s = STREAMS[stream]
    for m in range(start, start + count):
        child = np.random.SeedSequence(
            root.entropy, spawn_key=(*root.spawn_key, s, m), pool_size=root.pool_size
        )
        yield np.random.Generator(np.random.PCG64(child))


def stream_rng(seed: SeedLike, stream: StreamName) -> np.random.Generator:
    """One generator for a stream not tied to a network (e.g. inputs shared by all networks)."""
    root = as_seed_sequence(seed)
    child = np.random.SeedSequence(
        root.entropy, spawn_key=(*root.spawn_key, STREAMS[stream]), pool_size=root.pool_size
    )
    return np.random.Generator(np.random.PCG64(child))
