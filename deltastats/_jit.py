"""Settings shared by every compiled (numba) kernel of deltastats.

:data:`JIT` holds the ``numba.njit`` options of all kernels: ``nogil`` (the accumulators and
the generator run kernels on several threads at once), ``cache`` (compiled once per machine),
and numpy's error model (a division by zero gives inf or NaN, as in numpy, instead of
raising). None of them allows ``fastmath``: every sum runs in the order written, so the bits
do not depend on the vector width the compiler picks.

**Vector width.** LLVM tunes several Intel CPUs with AVX-512 (Skylake-SP to Emerald Rapids and
later) to *prefer 256-bit vectors* (the ``prefer-256-bit`` tuning, a guard against the clock
slowdown of early AVX-512 parts), so loops compiled for them use half the lanes the CPU has;
AMD's Zen 4 and 5 get 512-bit vectors. On first import this module lifts that preference for
the process's numba code generator when the CPU has AVX-512F, which makes the counter-based
generator 1.3–1.6× faster on those CPUs (measured on an Emerald Rapids Xeon). Only the tuning
changes, never the values: without ``fastmath`` the compiler may not reorder floating-point
operations, so every kernel gives the same bits at either width
(``tests/test_vector_width.py`` compares the generator, the engine and an estimate with those
of an interpreter that keeps LLVM's choice).

The setting applies to the process's numba code generator, so other numba code compiled in
the same process gets the same preference. It is not applied when the user has chosen the
CPU name or features themselves (``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES``), when the code
generator already exists (numba code compiled or loaded before deltastats was imported), or
when the environment sets ``DELTASTATS_VECTOR_WIDTH=native`` (keep LLVM's choice).
"""

from __future__ import annotations

import os

import numba
from numba.core import config as _numba_config

#: ``numba.njit`` options of every deltastats kernel (see the module docstring).
JIT = dict(nogil=True, cache=True, error_model="numpy")

#: The LLVM feature string suffix that lifts the 256-bit preference.
WIDE_VECTORS = "-prefer-256-bit"


def _codegen_exists() -> bool:
    """Whether numba's CPU code generator was already created (its target machine, hence its
    tuning, is then fixed for the process)."""
    try:
        from numba.core.registry import cpu_target

        # The target context (which owns the code generator) is a cached property: it is in
        # the instance's __dict__ once created.
        return "_toplevel_target_context" in vars(cpu_target)
    except Exception:  # a numba laid out otherwise: assume not yet created
        return False


def prefer_wide_vectors() -> bool:
    """Let numba's code generator use the CPU's 512-bit vectors (see the module docstring).

    Returns
    -------
    bool
        Whether the preference was set by this call (False: not AVX-512, the user's own
        numba CPU settings, ``DELTASTATS_VECTOR_WIDTH=native``, or a code generator that
        already exists).
    """
    if os.environ.get("DELTASTATS_VECTOR_WIDTH", "").lower() == "native":
        return False
    if _numba_config.CPU_NAME is not None or _numba_config.CPU_FEATURES is not None:
        return False
    if _codegen_exists():
        return False
    try:
        import llvmlite.binding as ll

        features = ll.get_host_cpu_features()
    except Exception:  # no feature map on this platform: keep numba's defaults
        return False
    if not features.get("avx512f", False) or not _numba_config.ENABLE_AVX:
        return False
    _numba_config.CPU_FEATURES = features.flatten() + "," + WIDE_VECTORS
    return True


#: Whether :func:`prefer_wide_vectors` took effect at import (for diagnostics: the bits do not
#: depend on it).
WIDE_VECTORS_SET = prefer_wide_vectors()

__all__ = ["JIT", "WIDE_VECTORS", "WIDE_VECTORS_SET", "numba", "prefer_wide_vectors"]
