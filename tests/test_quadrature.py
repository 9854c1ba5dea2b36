"""Quadrature: closed forms, kink splitting, error control, bad input."""

import numpy as np
import pytest

from deltastats.quadrature import (
    QuadratureError,
    QuadratureWarning,
    activation_moment,
    activation_moment2,
    expect,
    expect2,
    hermite_rule,
)

CLOSED = ["linear", "relu", "leaky_relu(0.2)", "erf", "sin"]
KINDS = ["phi", "phi2", "dphi", "dphi2", "phi_dphi", "zc_phi_dphi", "zc_dphi"]
POINTS = [(0.0, 1.3), (0.7, 0.4), (-1.2, 2.5), (0.3, 9.0)]


def test_hermite_rule_integrates_normal_moments():
    t, w = hermite_rule(20)
    for k, exact in [(0, 1.0), (2, 1.0), (4, 3.0), (6, 15.0), (3, 0.0)]:
        assert np.sum(w * t**k) == pytest.approx(exact, abs=1e-12)


@pytest.mark.parametrize("act", CLOSED)
@pytest.mark.parametrize("kind", KINDS)
def test_quadrature_matches_closed_forms(act, kind):
    """Closed forms (arc-cosine for relu, arcsine/Gaussian for erf, sin, linear) to 1e-10."""
    for m, v in POINTS:
        if act == "erf" and kind == "phi2" and m != 0:
            continue  # the arcsine closed form is for zero mean
        if act == "sin" and v > 5:
            continue  # oscillatory beyond any fixed degree: closed form only
        closed = activation_moment(act, kind, m, v)
        quad = activation_moment(act, kind, m, v, closed_form=False)
        assert quad == pytest.approx(closed, abs=1e-10, rel=1e-10), (act, kind, m, v)


def test_erf_arcsine_kernel_at_zero_mean():
    v = np.array([0.1, 1.0, 4.0])
    quad = activation_moment("erf", "phi2", 0.0, v, closed_form=False)
    np.testing.assert_allclose(quad, 2 / np.pi * np.arcsin(2 * v / (1 + 2 * v)), atol=1e-10)


@pytest.mark.parametrize("act", CLOSED)
@pytest.mark.parametrize("kind", ["phi_phi", "dphi_dphi"])
def test_bivariate_quadrature_matches_kernels(act, kind):
    for c in [-0.9, 0.0, 0.5, 0.99, 1.0]:
        closed = activation_moment2(act, kind, 1.3, 0.7, c)
        quad = activation_moment2(act, kind, 1.3, 0.7, c, closed_form=False)
        assert quad == pytest.approx(closed, abs=1e-10), (act, kind, c)


def test_bivariate_with_means_against_monte_carlo():
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.4], [0.4, 2.0]])
    uw = rng.multivariate_normal([0.3, -0.5], cov, size=400_000)
    f = np.tanh(uw[:, 0]) * np.tanh(uw[:, 1])
    val = expect2(lambda u, w: np.tanh(u) * np.tanh(w), 0.3, -0.5, 1.0, 2.0, 0.4 / np.sqrt(2.0))
    assert val == pytest.approx(f.mean(), abs=4 * f.std() / np.sqrt(f.size))


def test_kink_splitting_is_accurate_where_plain_hermite_is_not():
    """|z| has a kink at 0: split quadrature is exact to 1e-12, plain Gauss–Hermite is not."""
    m, v = 0.1, 0.04  # narrow enough that, without declared kinks, plain Gauss–Hermite runs
    s = np.sqrt(v)
    from scipy import special

    a = m / s
    exact = m * (2 * special.ndtr(a) - 1) + 2 * s * np.exp(-0.5 * a * a) / np.sqrt(2 * np.pi)
    split = expect(np.abs, m, v, kinks=(0.0,))
    assert split == pytest.approx(exact, abs=1e-12)
    plain = expect(np.abs, m, v, degree=16, max_degree=16, on_error="ignore")
    assert abs(plain - exact) > 1e-6


def test_error_control_fires_when_degree_is_too_low():
    # Gauss–Hermite (narrow Gaussian) on an oscillation it cannot resolve with 8 nodes.
    with pytest.raises(QuadratureError, match="disagree"):
        expect(lambda z: np.cos(40 * z), 0.0, 0.09, degree=8, max_degree=8, on_error="raise")
    with pytest.warns(QuadratureWarning):
        expect(lambda z: np.cos(40 * z), 0.0, 0.09, degree=8, max_degree=8)
    # Piecewise rule (wide Gaussian) too.
    with pytest.raises(QuadratureError, match="disagree"):
        expect(lambda z: np.cos(25 * z), 0.0, 4.0, degree=8, max_degree=8, on_error="raise")
    # …and silent, doubling the degree, when allowed to reach enough nodes.
    val = expect(lambda z: np.cos(10 * z), 0.0, 0.09, degree=8, on_error="raise")
    assert val == pytest.approx(np.exp(-4.5), abs=1e-12)


def test_vectorized_and_degenerate_variance():
    m = np.array([0.0, 1.0, -2.0])
    out = expect(lambda z: z**2, m[:, None], np.array([[0.0, 1.0]]))
    np.testing.assert_allclose(out, m[:, None] ** 2 + np.array([[0.0, 1.0]]), atol=1e-12)


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="variance"):
        expect(np.tanh, 0.0, -1.0)
    with pytest.raises(ValueError, match="correlation"):
        expect2(lambda u, w: u * w, corr=1.5)
    with pytest.raises(ValueError, match="degree"):
        expect(np.tanh, degree=1)
    with pytest.raises(ValueError, match="on_error"):
        expect(np.tanh, on_error="shout")
    with pytest.raises(ValueError, match="kind"):
        activation_moment("tanh", "phi3")
