"""deltastats: Monte Carlo statistics of the backpropagated error signal δ⁽ˡ⁾ = ∂L/∂z⁽ˡ⁾.

The package is the pipeline, one subpackage per stage:

- :mod:`deltastats.model` — what is sampled: activations, losses, the MLP spec, input and
  target laws, random streams;
- :mod:`deltastats.engine` — the batched forward/backward pass → :class:`Trace`;
- :mod:`deltastats.stats` — per-network features, streaming accumulators, statistics with
  intervals valid for networks × inputs, sampling drivers, allocation advice;
- :mod:`deltastats.theory` — mean field, the Gaussian backward map, exact and finite-width
  results, :func:`deltastats.theory.predict`;
- :mod:`deltastats.workflow` — configs, runs, sweeps, comparison with verdicts, figures and
  reports.

Optional: :mod:`deltastats.torch` (the extra ``torch``) estimates δ of any PyTorch model
through :func:`deltastats.estimate_arrays`; it is not imported here.

The most used names are available here (``ds.MLP``, ``ds.backprop``, ``ds.estimate``, …). They
are imported on first use, so ``import deltastats.theory`` loads neither the engine nor the
compiled kernels.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import TYPE_CHECKING

try:
    __version__ = _version("deltastats")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

#: Public name → the module that defines it (``None``: the name is that module itself).
_EXPORTS: dict[str, tuple[str, str | None]] = {
    # subpackages and modules
    "checks": ("deltastats.checks", None),
    "engine": ("deltastats.engine", None),
    "model": ("deltastats.model", None),
    "stats": ("deltastats.stats", None),
    "theory": ("deltastats.theory", None),
    "workflow": ("deltastats.workflow", None),
    "activations": ("deltastats.model.activations", None),
    "inputs": ("deltastats.model.inputs", None),
    "losses": ("deltastats.model.losses", None),
    "targets": ("deltastats.model.targets", None),
    "accumulators": ("deltastats.stats.accumulators", None),
    "quadrature": ("deltastats.theory.quadrature", None),
    # model
    "INITS": ("deltastats.model.networks", "INITS"),
    "MLP": ("deltastats.model.networks", "MLP"),
    "Params": ("deltastats.model.networks", "Params"),
    "Activation": ("deltastats.model.activations", "Activation"),
    "get_activation": ("deltastats.model.activations", "get_activation"),
    "Loss": ("deltastats.model.losses", "Loss"),
    "get_loss": ("deltastats.model.losses", "get_loss"),
    # engine
    "NumericalOverflowWarning": ("deltastats.engine.passes", "NumericalOverflowWarning"),
    "Trace": ("deltastats.engine.passes", "Trace"),
    "backprop": ("deltastats.engine.passes", "backprop"),
    "forward": ("deltastats.model.networks", "forward"),
    # stats
    "COLUMNS": ("deltastats.stats.results", "COLUMNS"),
    "MIN_NETWORKS": ("deltastats.stats.results", "MIN_NETWORKS"),
    "EstimateResult": ("deltastats.stats.results", "EstimateResult"),
    "Estimates": ("deltastats.stats.results", "Estimates"),
    "FewNetworksWarning": ("deltastats.stats.results", "FewNetworksWarning"),
    "STATISTICS": ("deltastats.stats.statistics", "STATISTICS"),
    "METHODS": ("deltastats.stats.intervals", "METHODS"),
    "summarize": ("deltastats.stats.intervals", "summarize"),
    "BackpropAccumulator": ("deltastats.stats.accumulators", "BackpropAccumulator"),
    "FeatureAccumulator": ("deltastats.stats.accumulators", "FeatureAccumulator"),
    "MomentSummary": ("deltastats.stats.accumulators", "MomentSummary"),
    "merge": ("deltastats.stats.accumulators", "merge"),
    "Design": ("deltastats.stats.design", "Design"),
    "ArrayAccumulator": ("deltastats.stats.arrays", "ArrayAccumulator"),
    "estimate_arrays": ("deltastats.stats.arrays", "estimate_arrays"),
    "estimate": ("deltastats.stats.sampling", "estimate"),
    "stein_check": ("deltastats.stats.sampling", "stein_check"),
    "stream": ("deltastats.stats.sampling", "stream"),
    "suggest_allocation": ("deltastats.stats.allocation", "suggest_allocation"),
    # workflow
    "compare": ("deltastats.workflow.compare", "compare"),
    "Experiment": ("deltastats.workflow.config", "Experiment"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'deltastats' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static analysers and IDEs see the names
    from . import checks, engine, model, stats, theory, workflow  # noqa: F401
    from .engine.passes import NumericalOverflowWarning, Trace, backprop  # noqa: F401
    from .model import activations, inputs, losses, targets  # noqa: F401
    from .model.activations import Activation, get_activation  # noqa: F401
    from .model.losses import Loss, get_loss  # noqa: F401
    from .model.networks import INITS, MLP, Params, forward  # noqa: F401
    from .stats import accumulators  # noqa: F401
    from .stats.accumulators import (  # noqa: F401
        BackpropAccumulator,
        FeatureAccumulator,
        MomentSummary,
        merge,
    )
    from .stats.allocation import suggest_allocation  # noqa: F401
    from .stats.arrays import ArrayAccumulator, estimate_arrays  # noqa: F401
    from .stats.design import Design  # noqa: F401
    from .stats.intervals import METHODS, summarize  # noqa: F401
    from .stats.results import (  # noqa: F401
        COLUMNS,
        MIN_NETWORKS,
        EstimateResult,
        Estimates,
        FewNetworksWarning,
    )
    from .stats.sampling import estimate, stein_check, stream  # noqa: F401
    from .stats.statistics import STATISTICS  # noqa: F401
    from .theory import quadrature  # noqa: F401
    from .workflow.compare import compare  # noqa: F401
    from .workflow.config import Experiment  # noqa: F401
