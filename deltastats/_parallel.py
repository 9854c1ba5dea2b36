"""CPU cores, BLAS threads and thread pools shared by the engine and the parameter draws.

Everything here is process-wide state: the BLAS thread count (numpy's OpenBLAS is one library
per process), the pools of worker threads (one per process: a forked child gets fresh ones),
and the CPU count this process may use (affinity mask and container quota).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from typing import TypeVar

from threadpoolctl import ThreadpoolController

#: Guards the BLAS state, the pools and the engine's workspace cache.
LOCK = threading.Lock()
_BLAS: dict = {"controller": None, "depth": 0, "saved": ()}
_POOLS: dict = {}
_POOL_PREFIX = "deltastats-engine"
T = TypeVar("T")


def blas_libraries() -> list:
    if _BLAS["controller"] is None:
        _BLAS["controller"] = ThreadpoolController().select(user_api="blas")
    return _BLAS["controller"].lib_controllers


@contextmanager
def single_threaded_blas():
    """Run BLAS with one thread inside; re-entrant and shared by concurrent backprop calls.

    The BLAS thread count is process-wide, so concurrent calls count themselves in and the
    last one out restores the previous setting.
    """
    with LOCK:
        if _BLAS["depth"] == 0:
            libs = blas_libraries()
            _BLAS["saved"] = tuple(lib.num_threads for lib in libs)
            for lib in libs:
                lib.set_num_threads(1)
        _BLAS["depth"] += 1
    try:
        yield
    finally:
        with LOCK:
            _BLAS["depth"] -= 1
            if _BLAS["depth"] == 0:
                for lib, n in zip(blas_libraries(), _BLAS["saved"]):
                    lib.set_num_threads(n)


@lru_cache(maxsize=1)
def _cpu_quota() -> int:
    """CPUs joblib counts for this process, cgroup quota included. It reads files, and every
    backprop and parameter draw asks, so it is read once per process."""
    from joblib import cpu_count

    return cpu_count()


def usable_cpus() -> int:
    """Number of CPU cores this process may use: its affinity mask and any cgroup CPU quota
    (a container limited to 2 CPUs counts 2), as joblib counts them."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count() or 1
    return max(1, min(affinity, _cpu_quota()))


def default_threads() -> int:
    """As many threads as BLAS may use now (1 inside a BLAS-limited worker), ≤ usable CPUs."""
    cpus = usable_cpus()
    with LOCK:
        if _BLAS["depth"] > 0:
            return 1  # called from inside a running backprop (already parallel)
        libs = blas_libraries()
        blas = max((lib.num_threads for lib in libs), default=cpus)
    return max(1, min(cpus, blas))


def executor(n: int) -> ThreadPoolExecutor:
    """A cached pool of n threads (one per process: a forked child gets a fresh one)."""
    key = (os.getpid(), n)
    with LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = ThreadPoolExecutor(n, thread_name_prefix=_POOL_PREFIX)
    return pool


def side_pool() -> ThreadPoolExecutor | None:
    """Two threads for independent side-by-side work (theory's resolutions, the per-layer
    accumulator kernels), or ``None`` to run it in the calling thread: when fewer than two
    threads are free (a BLAS-limited worker) or when called from a pool thread, which must
    not wait on tasks queued behind it in its own pool."""
    if threading.current_thread().name.startswith(_POOL_PREFIX) or default_threads() < 2:
        return None
    return executor(2)


def side_by_side(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run independent calls, on two threads when :func:`side_pool` gives them, else one after
    the other; the results in the order of ``calls``.

    The calling thread and one pool thread take the calls in order, each the next one not yet
    taken when it is free (so two threads share the work whatever the calls' sizes, and no
    third thread competes for two cores). Each call must set its own numpy error state (it is
    per thread) and write only memory no other call touches, so the results are the same bits
    however the calls fall to the threads. The first exception is raised once both threads
    have stopped (no call starts after it).

    BLAS runs single-threaded for the whole run (two threads of our own are already busy),
    set and restored here on the calling thread: the calls' own :func:`single_threaded_blas`
    then only count themselves in, so no thread restores the BLAS setting while another still
    relies on it (with each call setting and restoring it, the last one out could save and
    restore another call's 1, leaving BLAS single-threaded for the rest of the process)."""
    pool = side_pool() if len(calls) > 1 else None
    if pool is None:
        return [call() for call in calls]
    results: list = [None] * len(calls)
    order = iter(range(len(calls)))
    take = threading.Lock()
    failed = threading.Event()

    def work() -> None:
        while not failed.is_set():
            with take:
                i = next(order, None)
            if i is None:
                return
            try:
                results[i] = calls[i]()
            except BaseException:
                failed.set()
                raise

    with single_threaded_blas():
        helper = pool.submit(work)
        try:
            work()
        finally:
            error = helper.exception()  # waits for the pool thread
    if error is not None:
        raise error
    return results


def blas_is_avx512() -> bool:
    """Whether numpy's BLAS runs an OpenBLAS AVX-512 kernel (cached after the first call)."""
    if "avx512" not in _BLAS:
        archs = {
            str(getattr(lib, "architecture", "")).lower()
            for lib in blas_libraries()
            if "numpy" in str(getattr(lib, "filepath", ""))
        }
        _BLAS["avx512"] = bool(archs & _AVX512_KERNELS)
    return _BLAS["avx512"]


#: OpenBLAS kernel families (threadpoolctl's ``architecture``) with the AVX-512 small-GEMM path.
_AVX512_KERNELS = frozenset({"skylakex", "cooperlake", "sapphirerapids"})
