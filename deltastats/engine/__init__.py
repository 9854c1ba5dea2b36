"""The batched backprop engine: M networks × B inputs forward and backward in stacked matmuls.

- :mod:`~deltastats.engine.passes` — :func:`backprop` → :class:`Trace` (z, h, δ, gradients,
  overflow flags), the recursion δ⁽ˡ⁾ = φ'(z⁽ˡ⁾) ⊙ (W⁽ˡ⁺¹⁾ᵀ δ⁽ˡ⁺¹⁾);
- :mod:`~deltastats.engine.workspace` — the trace memory reused across calls;
- :mod:`~deltastats.engine.kernels` — compiled (numba) one-pass tanh layers.

The engine reads parameters and inputs from :mod:`deltastats.model` and knows nothing of
statistics or theory.
"""

from __future__ import annotations

from .._parallel import usable_cpus
from . import kernels

#: Use the compiled one-pass kernels of :mod:`deltastats.engine.kernels` for tanh layers and
#: the backward product. On by default on every CPU: where numpy's float64 tanh is scalar
#: (x86 without AVX-512, non-x86) the kernels' vectorized tanh is several times faster, and
#: where numpy's tanh is a SIMD loop (AVX-512) one fused pass (bias, tanh, φ', overflow
#: check; φ'⊙(Wᵀδ)) still beats numpy's four to five separate passes over the layer
#: (``experiments/benchmarks/bench_engine.py`` times both settings in one run). The two
#: tanh's differ by a few units in the last place, which the network then carries forward
#: (grown by the layers' gains: ~10⁻¹⁵ relative at depth 4 and σ_w = 1, ~10⁻¹⁴ at depth 12 and
#: σ_w = 2.5); for one setting, results are bit-for-bit reproducible, and with the kernels on
#: they are the same on every machine whose BLAS gives the same products. Set it before a
#: run, not during one; every ``metadata.json`` records it.
USE_COMPILED_KERNELS: bool = True

from ..model.networks import forward  # noqa: E402
from .passes import NumericalOverflowWarning, Trace, backprop  # noqa: E402
from .workspace import WORKSPACE_CACHE_BYTES, clear_cache  # noqa: E402

__all__ = [
    "USE_COMPILED_KERNELS",
    "WORKSPACE_CACHE_BYTES",
    "NumericalOverflowWarning",
    "Trace",
    "backprop",
    "clear_cache",
    "forward",
    "kernels",
    "usable_cpus",
]
