"""Estimators for the nested design (networks × inputs): features, accumulators, statistics,
intervals, results, sampling drivers and allocation advice.

Data flow: a trace (or a researcher's own arrays) → per-network features
(:mod:`~deltastats.stats.features`) → streaming, mergeable accumulators
(:mod:`~deltastats.stats.accumulators`) → statistics θ = f(F̄)
(:mod:`~deltastats.stats.statistics`) with intervals (:mod:`~deltastats.stats.intervals`) →
:class:`~deltastats.stats.results.Estimates`. :mod:`~deltastats.stats.sampling` drives it
from a :class:`~deltastats.stats.design.Design`; :mod:`~deltastats.stats.arrays`
(:func:`estimate_arrays`, :class:`ArrayAccumulator`) takes a researcher's own arrays of δ (any
model, any framework) through the same features and statistics;
:mod:`~deltastats.stats.allocation` advises how many networks and inputs to draw.
"""

from __future__ import annotations

from .accumulators import (
    DEFAULT_BLOCK,
    DEFAULT_GROUPS,
    BackpropAccumulator,
    FeatureAccumulator,
    MomentSummary,
    merge,
)
from .allocation import MAX_INPUTS_PER_NETWORK, suggest_allocation
from .arrays import ArrayAccumulator, ArrayLayout, estimate_arrays
from .design import Design
from .features import FeatureKey
from .intervals import METHODS, summarize
from .results import COLUMNS, MIN_NETWORKS, EstimateResult, Estimates, FewNetworksWarning
from .sampling import StoppingRule, estimate, stein_check, stream
from .statistics import STATISTICS

__all__ = [
    "COLUMNS",
    "DEFAULT_BLOCK",
    "DEFAULT_GROUPS",
    "MAX_INPUTS_PER_NETWORK",
    "METHODS",
    "MIN_NETWORKS",
    "STATISTICS",
    "ArrayAccumulator",
    "ArrayLayout",
    "BackpropAccumulator",
    "Design",
    "EstimateResult",
    "Estimates",
    "FeatureAccumulator",
    "FeatureKey",
    "FewNetworksWarning",
    "MomentSummary",
    "StoppingRule",
    "estimate",
    "estimate_arrays",
    "merge",
    "stein_check",
    "stream",
    "suggest_allocation",
    "summarize",
]
