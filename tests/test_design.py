"""The sampling record: one validated Design, and every setting reaches the estimators."""

from __future__ import annotations

import numpy as np
import pytest

import deltastats as ds
from deltastats.stats.design import CHUNK_FLOATS, Design

NET = ds.MLP((6, 12, 12, 1), activation="tanh", mu_w=0.5)


def test_jackknife_groups_change_the_jackknife_standard_error():
    kw = dict(n_networks=120, batch=4, seed=3, method="jackknife")
    est = {G: ds.estimate(NET, jackknife_groups=G, **kw).per_layer("delta_sq") for G in (3, 30)}
    clt = ds.estimate(NET, n_networks=120, batch=4, seed=3).per_layer("delta_sq")
    # Same point estimate whatever G; different standard errors (different groupings) ...
    np.testing.assert_array_equal(est[3]["estimate"], est[30]["estimate"])
    assert not np.allclose(est[3]["std_error"], est[30]["std_error"], rtol=1e-6)
    # ... and the interval uses t with G − 1 degrees of freedom: wider at G = 3.
    half = {G: (t["ci_high"] - t["ci_low"]) / (2 * t["std_error"]) for G, t in est.items()}
    from scipy import stats

    np.testing.assert_allclose(half[3], stats.t.ppf(0.975, 2), rtol=1e-12)
    np.testing.assert_allclose(half[30], stats.t.ppf(0.975, 29), rtol=1e-12)
    # Both estimate the same sampling SD as the CLT (within the jackknife's own noise, G = 30).
    np.testing.assert_allclose(est[30]["std_error"], clt["std_error"], rtol=0.35)


def test_the_accumulator_gets_the_groups():
    acc = Design(NET, n_networks=10, batch=2, jackknife_groups=7).accumulator()
    assert acc.features.n_groups == 7


def test_default_chunk_is_about_the_float_budget():
    d = Design(NET, n_networks=10**6, batch=16)
    n_weights = 6 * 12 + 12 * 12 + 12
    per_net = 16 * (6 + 12 + 12 + 1 + 3) * 3 + 2 * n_weights
    assert d.chunk == CHUNK_FLOATS // per_net
    assert Design(NET, n_networks=5, batch=16).chunk == 5  # never more than the networks


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_networks=1), "n_networks must be an int >= 2"),
        (dict(batch=0), "batch must be a positive int"),
        (dict(batch=2.0), "batch must be a positive int"),
        (dict(chunk=0), "chunk must be a positive int"),
        (dict(method="exact"), "unknown method"),
        (dict(confidence=1.0), "confidence must be in"),
        (dict(jackknife_groups=1), "jackknife_groups must be an int >= 2"),
        (dict(weight_decay=-1.0), "weight_decay must be >= 0"),
        (dict(weight_decay="a"), "weight_decay must be a real number"),
        (dict(dtype="banana"), "dtype must be np.float32 or np.float64"),
        (dict(loss="hinge"), "hinge"),
        (dict(inputs=3), "inputs must be an input law"),
    ],
)
def test_bad_settings_fail_before_any_work_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Design(NET, **kwargs)
    with pytest.raises(ValueError, match=message):
        ds.stream(NET, **kwargs)  # at the call, not at the first next()


def test_designs_are_frozen_and_normalised():
    d = Design(NET, dtype=np.float32, weight_decay=0)
    assert d.dtype == np.dtype(np.float32) and isinstance(d.weight_decay, float)
    with pytest.raises(AttributeError):
        d.batch = 3  # type: ignore[misc]


def test_results_show_themselves_and_intervals_have_names():
    est = ds.estimate(NET, n_networks=100, batch=4, seed=1)
    text = repr(est)
    assert text.startswith("Estimates: 100 networks × 4 inputs; clt intervals at 95%")
    assert "delta_sq" in text and "±" in text and len(text.splitlines()) == 3 + NET.depth
    html = est._repr_html_()
    assert html.startswith("<p><b>Estimates:") and "<table" in html
    r = est.result("delta_sq", 1)
    lo, hi = r.confidence_interval
    assert (lo, hi) == (r.confidence_interval.low, r.confidence_interval.high)
    assert r.std_error == r.standard_error > 0
    row = est.per_layer("delta_sq").iloc[0]
    assert (row.ci_low, row.ci_high, row.std_error) == (lo, hi, r.std_error)
    assert str(r).startswith("delta_sq (layer 1): ")


def test_variance_components_are_absent_with_one_input_per_network():
    est = ds.estimate(NET, n_networks=100, batch=1, seed=2)
    present = set(est.table["statistic"])
    assert not present & {"icc", "design_effect", "delta_sq_icc"}
    assert "delta_sq" in present and np.isfinite(est.result("delta_sq", 1).std_error)
