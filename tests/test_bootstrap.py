"""The networks bootstrap (BCa, vectorized over resamples) against scipy's BCa bootstrap."""

from __future__ import annotations

import numpy as np
from scipy import stats

import deltastats as ds


def test_bca_interval_matches_scipy_on_a_skewed_statistic():
    """E[x²] of a network effect × log-normal noise: skewed across networks, so BCa moves the
    interval; ours and scipy's (independent resamples) agree to within resampling noise."""
    rng = np.random.default_rng(8)
    M, B = 300, 4
    net = rng.lognormal(0.0, 0.8, size=(M, 1, 1))
    x = net * (1 + 0.3 * rng.standard_normal((M, B, 1)))
    ours = ds.estimate_arrays([x], method="bootstrap", statistics="delta_sq").result("delta_sq", 1)
    per_net = (x**2).mean(axis=(1, 2))
    ref = stats.bootstrap(
        (per_net,), np.mean, n_resamples=9999, method="BCa", rng=np.random.default_rng(1)
    )
    lo, hi = ref.confidence_interval
    width = hi - lo
    assert ours.estimate == per_net.mean() or abs(ours.estimate / per_net.mean() - 1) < 1e-12
    assert abs(ours.confidence_interval.low - lo) < 0.08 * width
    assert abs(ours.confidence_interval.high - hi) < 0.08 * width
    assert ours.std_error == np.float64(ours.std_error)
    assert abs(ours.std_error / ref.standard_error - 1) < 0.08
    # skewed: the upper arm is longer than the lower one, as for scipy's interval
    assert (
        ours.confidence_interval.high - ours.estimate > ours.estimate - ours.confidence_interval.low
    )


def test_bootstrap_is_reproducible_from_the_seed():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((150, 3, 4)) + rng.standard_normal((150, 1, 4))
    a = ds.estimate_arrays([x], method="bootstrap").per_layer()
    b = ds.estimate_arrays([x], method="bootstrap").per_layer()
    np.testing.assert_array_equal(
        a[["ci_low", "ci_high", "std_error"]], b[["ci_low", "ci_high", "std_error"]]
    )
