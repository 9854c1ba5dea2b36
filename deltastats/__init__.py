"""deltastats: Monte Carlo statistics of the backpropagated error signal δ⁽ˡ⁾ = ∂L/∂z⁽ˡ⁾."""

from . import accumulators, activations, inputs, losses, quadrature, targets, theory
from .accumulators import BackpropAccumulator, FeatureAccumulator, MomentSummary, merge
from .activations import Activation, get_activation
from .compare import compare
from .config import Experiment
from .engine import NumericalOverflowWarning, Trace, backprop, forward
from .estimators import (
    COLUMNS,
    METHODS,
    MIN_NETWORKS,
    STATISTICS,
    EstimateResult,
    Estimates,
    FewNetworksWarning,
    estimate,
    stein_check,
    stream,
    suggest_allocation,
    summarize,
)
from .losses import Loss, get_loss
from .networks import INITS, MLP, Params

__version__ = "0.1.0"

__all__ = [
    "COLUMNS",
    "METHODS",
    "MIN_NETWORKS",
    "STATISTICS",
    "BackpropAccumulator",
    "EstimateResult",
    "Estimates",
    "Experiment",
    "FeatureAccumulator",
    "FewNetworksWarning",
    "MomentSummary",
    "accumulators",
    "compare",
    "estimate",
    "merge",
    "quadrature",
    "stein_check",
    "stream",
    "suggest_allocation",
    "summarize",
    "theory",
    "INITS",
    "MLP",
    "Activation",
    "Loss",
    "NumericalOverflowWarning",
    "Params",
    "Trace",
    "activations",
    "backprop",
    "forward",
    "get_activation",
    "get_loss",
    "inputs",
    "losses",
    "targets",
]
