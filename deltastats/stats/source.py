"""What :func:`~deltastats.stats.intervals.summarize` reads: a :class:`MomentSummary`, from a
:class:`SummarySource`, the base of the engine's
:class:`~deltastats.stats.accumulators.BackpropAccumulator` and of the
:class:`~deltastats.stats.arrays.ArrayAccumulator` of a researcher's own arrays."""

from __future__ import annotations

import copy
from collections.abc import Container
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MomentSummary", "SummarySource"]


@dataclass(frozen=True)
class MomentSummary:
    """Finalized summary of a :class:`~deltastats.stats.accumulators.FeatureAccumulator`.

    Attributes
    ----------
    count : int
        M, the number of valid (included) networks.
    n_seen : int
        Networks fed, valid or not.
    mean : dict of ndarray
        F̄ per feature array, shape ``(S, k)``.
    cov : dict of ndarray
        Between-network sample covariance C/(M−1), shape ``(S, k, k)`` (NaN if M < 2).
    group_count : ndarray of int, shape ``(G,)``
        Valid networks per jackknife group (global network index mod G).
    group_sum : dict of ndarray
        Σ F_m over each group, shape ``(G, S, k)``.
    per_network : dict of ndarray or None
        Every valid F_m in network order, shape ``(M, S, k)``, when ``keep_networks=True``.
    """

    count: int
    n_seen: int
    mean: dict
    cov: dict
    group_count: np.ndarray
    group_sum: dict
    per_network: dict | None = field(default=None, repr=False)


class SummarySource:
    """Base of the accumulators that :func:`deltastats.stats.intervals.summarize` reads.

    A subclass provides ``features`` (a
    :class:`~deltastats.stats.accumulators.FeatureAccumulator`), ``batch`` (B), ``n_overflow``,
    ``overflow_layers`` and ``zero_delta``, :meth:`summary` and :meth:`consts` (per feature
    array the constants its statistics need), and :attr:`layer_names`.
    """

    @property
    def layer_names(self) -> dict[int, str]:
        """Layer number → name, for a ``name`` column beside ``layer`` (empty: no names)."""
        return {}

    @property
    def n_seen(self) -> int:
        """Networks fed so far, excluded ones included."""
        return self.features.n_seen

    @property
    def n_valid(self) -> int:
        """Networks included (fed and not excluded)."""
        return self.n_seen - self.n_overflow

    def summary(self, names: Container[str] | None = None) -> MomentSummary:
        """The :class:`MomentSummary` of the feature arrays (``names``: of these only)."""
        return self.features.summary(names)

    def _merged(self, other: SummarySource):
        """A copy holding both accumulators' networks: shifts checked equal (when both have
        them), features merged, exclusion counts added. Subclasses check the rest."""
        if self.shifts is not None and other.shifts is not None:
            same = self.shifts.keys() == other.shifts.keys() and all(
                np.array_equal(self.shifts[k], other.shifts[k]) for k in self.shifts
            )
            if not same:
                raise ValueError(
                    "accumulators have different shifts; create the later ones with "
                    "shifts=first.shifts so their summaries can be combined exactly"
                )
        out = copy.copy(self)
        out.shifts = self.shifts if self.shifts is not None else other.shifts
        out.features = self.features.merge(other.features)
        out.n_overflow = self.n_overflow + other.n_overflow
        out.overflow_layers = _add_counts(self.overflow_layers, other.overflow_layers)
        out.zero_delta = _add_counts(self.zero_delta, other.zero_delta)
        return out


def _add_counts(a: dict, b: dict) -> dict:
    """Per-key sums of two count dicts (layer → networks), keys in order of first appearance."""
    return {k: a.get(k, 0) + b.get(k, 0) for k in {**a, **b}}
