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

The most used names are re-exported here (``ds.MLP``, ``ds.backprop``, ``ds.estimate``, …).
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from . import checks, engine, model, stats, theory
from .engine import NumericalOverflowWarning, Trace, backprop, forward
from .model import (
    INITS,
    MLP,
    Activation,
    Loss,
    Params,
    activations,
    get_activation,
    get_loss,
    inputs,
    losses,
    targets,
)
from .stats import (
    COLUMNS,
    METHODS,
    MIN_NETWORKS,
    STATISTICS,
    ArrayAccumulator,
    BackpropAccumulator,
    Design,
    EstimateResult,
    Estimates,
    FeatureAccumulator,
    FewNetworksWarning,
    MomentSummary,
    accumulators,
    estimate,
    estimate_arrays,
    merge,
    stein_check,
    stream,
    suggest_allocation,
    summarize,
)
from .theory import quadrature
from .workflow.compare import compare
from .workflow.config import Experiment

try:
    __version__ = _version("deltastats")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "COLUMNS",
    "INITS",
    "METHODS",
    "MIN_NETWORKS",
    "MLP",
    "STATISTICS",
    "Activation",
    "ArrayAccumulator",
    "BackpropAccumulator",
    "Design",
    "EstimateResult",
    "Estimates",
    "Experiment",
    "FeatureAccumulator",
    "FewNetworksWarning",
    "Loss",
    "MomentSummary",
    "NumericalOverflowWarning",
    "Params",
    "Trace",
    "accumulators",
    "activations",
    "backprop",
    "checks",
    "compare",
    "engine",
    "estimate",
    "estimate_arrays",
    "forward",
    "get_activation",
    "get_loss",
    "inputs",
    "losses",
    "merge",
    "model",
    "quadrature",
    "stats",
    "stein_check",
    "stream",
    "suggest_allocation",
    "summarize",
    "targets",
    "theory",
]
