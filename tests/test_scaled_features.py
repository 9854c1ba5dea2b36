"""Finite traces are never excluded: features of huge values are accumulated in units of a
power-of-two scale, exactly (so ordinary runs keep their bits)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import deltastats as ds
from deltastats.stats.features import UNSCALED_MAX, power_of_two_scale


def test_scale_is_one_for_ordinary_values_and_a_power_of_two_otherwise():
    assert power_of_two_scale(np.array([1e18, -3.0])) == 1.0
    assert power_of_two_scale(np.array([np.inf, np.nan])) == 1.0
    s = power_of_two_scale(np.array([3e90, -1e90, 2e90]))
    assert np.log2(s) == round(np.log2(s)) and 1e89 < s < 1e91
    assert power_of_two_scale(np.array([UNSCALED_MAX])) == UNSCALED_MAX


def _random_delta(rng, M=120, B=6, n=5):
    net = rng.standard_normal((M, 1, n))
    return [net + 0.5 * rng.standard_normal((M, B, n)) + 0.3]


def test_a_power_of_two_multiple_gives_the_same_statistics_exactly_scaled():
    """δ·2³⁰⁰ has δ⁴ ≈ 10³⁶¹ (overflow without scaling); its estimates are the plain ones
    times 2³⁰⁰ (mean), 2⁶⁰⁰ (second moments), with skewness, kurtosis and icc unchanged."""
    rng = np.random.default_rng(5)
    delta = _random_delta(rng)
    big = [d * 2.0**300 for d in delta]
    a = ds.estimate_arrays(delta).per_layer().set_index("statistic")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no network may be excluded
        b = ds.estimate_arrays(big).per_layer().set_index("statistic")
    factor = {"delta_mean": 2.0**300, "delta_sq": 2.0**600, "delta_var": 2.0**600}
    factor |= {"delta_norm_sq": 2.0**600, "delta_skew": 1.0, "delta_kurt": 1.0, "icc": 1.0}
    for stat, f in factor.items():
        assert b.loc[stat, "estimate"] == pytest.approx(f * a.loc[stat, "estimate"], rel=1e-14)
        assert b.loc[stat, "std_error"] == pytest.approx(f * a.loc[stat, "std_error"], rel=1e-10)
    # log(‖δ‖²/n) shifts by log 2⁶⁰⁰; its variance is unchanged.
    shift = 600 * np.log(2.0)
    assert b.loc["log_delta_norm_sq_mean", "estimate"] == pytest.approx(
        a.loc["log_delta_norm_sq_mean", "estimate"] + shift, rel=1e-13
    )
    assert b.loc["log_delta_norm_sq_var", "estimate"] == pytest.approx(
        a.loc["log_delta_norm_sq_var", "estimate"], rel=1e-9
    )


def test_deep_relu_float64_trace_is_never_excluded():
    """relu, width 64, depth 300, σ_w = 2: δ⁽¹⁾ reaches ~1e90, finite in float64, so every
    network counts and the log-norm statistics are finite."""
    net = ds.MLP((64,) * 300 + (1,), activation="relu", sigma_w=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ds.FewNetworksWarning)
        warnings.simplefilter("error", RuntimeWarning)  # every row has its standard error
        est = ds.estimate(net, ds.inputs.sphere(), ds.targets.constant(1.0), n_networks=12, batch=2)
    assert est.n_overflow == 0 and est.n_networks == 12
    t = est.per_layer().set_index(["layer", "statistic"])["estimate"]
    assert np.isfinite(t[(1, "log_delta_norm_sq_mean")]) and t[(1, "log_delta_norm_sq_mean")] > 300
    assert np.isfinite(t[(1, "delta_sq")]) and t[(1, "delta_sq")] > 1e150
    assert np.isfinite(t[(1, "delta_kurt")])


def test_all_networks_excluded_is_a_clear_error_and_float64_advice_only_for_float32():
    # Linear, so no network can escape by a dead layer (a width-8 ReLU layer is all zero
    # with probability ≈ 2⁻⁸, so at depth 80 about a quarter of ReLU networks die instead).
    net = ds.MLP((8,) * 80 + (1,), activation="linear", sigma_w=6.0)
    with pytest.raises(ValueError, match="all 6 networks overflowed.*use float64"):
        ds.estimate(net, n_networks=6, batch=2, dtype=np.float32)
    x = np.ones((2, 8))
    with pytest.warns(ds.NumericalOverflowWarning) as rec:
        deep = ds.MLP((8,) * 400 + (1,), activation="linear", sigma_w=9.0)  # 9⁴⁰⁰ > 10³⁰⁸
        ds.backprop(deep, deep.sample(2, 0), x, x[:, :1])
    assert "float64" not in str(rec[0].message)
