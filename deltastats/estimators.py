"""Former import path of the estimators, now :mod:`deltastats.stats` (split into
``statistics``, ``results``, ``intervals``, ``design``, ``sampling`` and ``allocation``);
kept so existing imports work."""

from .stats.allocation import MAX_INPUTS_PER_NETWORK, suggest_allocation
from .stats.design import Design
from .stats.intervals import METHODS, summarize
from .stats.results import COLUMNS, MIN_NETWORKS, EstimateResult, Estimates, FewNetworksWarning
from .stats.sampling import StoppingRule, estimate, stein_check, stream
from .stats.statistics import STATISTICS

__all__ = [
    "COLUMNS",
    "MAX_INPUTS_PER_NETWORK",
    "METHODS",
    "MIN_NETWORKS",
    "STATISTICS",
    "Design",
    "EstimateResult",
    "Estimates",
    "FewNetworksWarning",
    "StoppingRule",
    "estimate",
    "stein_check",
    "stream",
    "suggest_allocation",
    "summarize",
]
