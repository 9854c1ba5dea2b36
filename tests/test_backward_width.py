"""The backward 1/n recursion (theory.backward_width): exact cases, the n → ∞ limit, Monte Carlo."""

import numpy as np
import pytest

import deltastats as ds
from deltastats import inputs, targets
from deltastats import theory as T
from deltastats.theory.backward_width import backward_corrections, backward_covered
from deltastats.theory.finite_width import relu_delta_sq, relu_grad_w_sq


@pytest.mark.parametrize("width", [16, 64])
def test_relu_without_bias_reproduces_the_exact_any_width_result(width):
    """For bias-free ReLU the exact (R1)–(R2) recursion of relu_delta_sq is an independent
    derivation; (BW2) must agree although it never uses homogeneity."""
    net = ds.MLP((16,) + (width,) * 6 + (1,), activation="relu", sigma_w=np.sqrt(2))
    bc = backward_corrections(net, inputs.sphere(1.0))
    exact = relu_delta_sq(net.widths, net.layer_sigma_w, 16.0)
    # exact up to the interpolation's rounding (about 3·10⁻⁴ at width 16, 4·10⁻⁶ at 64)
    np.testing.assert_allclose(bc.delta_sq, exact, rtol=1e-3 if width == 16 else 2e-5)
    # and mean field is far off at width 16 (the forward–backward correlation it drops)
    mf = T.predict(net, inputs.sphere(1.0), finite_width=False)
    mf = mf[mf.statistic == "delta_sq"].prediction.to_numpy()
    if width == 16:
        assert np.max(np.abs(mf / exact - 1)) > 0.3


def test_linear_networks_reproduce_wick():
    """φ = identity: theory.linear_exact (Wick's theorem, exact at any width)."""
    for width in (8, 32):
        net = ds.MLP((16,) + (width,) * 5, activation="linear", sigma_w=1.1)
        tg = targets.constant(0.3)
        bc = backward_corrections(net, inputs.sphere(1.0), tg)
        ex = T.linear_exact(net, inputs.sphere(1.0), tg, "mse")
        # exact up to the rounding the second differences amplify (1.5·10⁻⁶ at width 8)
        np.testing.assert_allclose(
            bc.delta_sq, ex.delta_norm_sq / np.array(net.widths[1:]), rtol=3e-6
        )
        # E δ = 0 below the top up to rounding (the second differences amplify it ~10⁴×)
        np.testing.assert_allclose(bc.delta_mean, ex.delta_mean, atol=1e-11)


def test_one_sample_weight_gradient_is_first_order_exact():
    """E‖∂L/∂W‖² against the exact ReLU result: the error is O(1/n²) (×16 width → ≈ ÷16²/16)."""
    errs = []
    for width in (64, 256):
        net = ds.MLP((16,) + (width,) * 5 + (1,), activation="relu", sigma_w=np.sqrt(2))
        bc = backward_corrections(net, inputs.gaussian(1.0))
        ex = relu_grad_w_sq(net.widths, net.layer_sigma_w, 16 * 18.0)  # E‖x‖⁴ = n₀(n₀ + 2)
        np.testing.assert_allclose(bc.grad_w_sq[:2], ex[:2], rtol=1e-6)  # K_1, K_2 exact
        errs.append(np.max(np.abs(bc.grad_w_sq / ex - 1)))
    assert errs[1] < 0.005 and errs[0] / errs[1] > 10


@pytest.mark.parametrize("act, n_out", [("gelu", "n"), ("tanh", 1), ("softplus", "n")])
def test_large_width_limit_is_the_gaussian_recursion(act, n_out):
    width = 100_000
    n_l = width if n_out == "n" else n_out
    net = ds.MLP(
        (16,) + (width,) * 4 + (n_l,), activation=act, sigma_w=1.5**0.5, sigma_b=0.05**0.5, mu_b=0.1
    )
    tg = targets.constant(0.5)
    bc = backward_corrections(net, inputs.gaussian(1.0), tg)
    p = T.predict(net, inputs.gaussian(1.0), tg, finite_width=False)
    gauss = p.set_index(["statistic", "layer"]).prediction
    np.testing.assert_allclose(bc.delta_sq, gauss["delta_sq"].to_numpy(), rtol=3e-4)
    np.testing.assert_allclose(bc.delta_mean, gauss["delta_mean"].to_numpy(), rtol=3e-4, atol=1e-8)


def _mc(net, law, M, seed=1):
    est = ds.estimate(net, law, n_networks=M, batch=4, seed=seed)
    return est.per_layer("delta_sq").set_index("layer"), est.per_layer("delta_mean").set_index(
        "layer"
    )


@pytest.mark.parametrize(
    "act, width, n_out, M",
    [("gelu", 128, "n", 1000), ("tanh", 32, 1, 1000)],
)
def test_monte_carlo_agrees_where_infinite_width_does_not(act, width, n_out, M):
    """gelu with a square readout at width 128: E[δ⁽¹⁾²] is ≈ 47 % above the Gaussian-assumption
    (infinite-width) value; the 1/n recursion is within 3 SE at every layer, E δ too."""
    n_l = width if n_out == "n" else n_out
    net = ds.MLP((16,) + (width,) * 6 + (n_l,), activation=act, sigma_w=1.5**0.5, sigma_b=0.05**0.5)
    law = inputs.sphere(1.0)
    bc = backward_corrections(net, law)
    sq, mean = _mc(net, law, M)
    z_sq = (sq.estimate.to_numpy() - bc.delta_sq) / sq.std_error.to_numpy()
    z_mean = (mean.estimate.to_numpy() - bc.delta_mean) / mean.std_error.to_numpy()
    assert np.max(np.abs(z_sq)) < 3, z_sq
    assert np.max(np.abs(z_mean)) < 3, z_mean
    if act == "gelu":
        inf = T.predict(net, law, finite_width=False)
        inf = inf[inf.statistic == "delta_sq"].prediction.to_numpy()
        assert (sq.estimate.to_numpy()[0] - inf[0]) / sq.std_error.to_numpy()[0] > 5


def test_linear_mean_with_mu_w_and_biases_is_exact():
    """μ_w ≠ 0 couples the units through h̄ (the M of θ = (M, G)): E δ of a linear network is
    still exact (Wick), and (BW2) reproduces it."""
    for width in (8, 32):
        net = ds.MLP(
            (16,) + (width,) * 5, activation="linear", sigma_w=1.1, mu_w=0.5, sigma_b=0.2, mu_b=0.1
        )
        tg = targets.constant(0.3)
        bc = backward_corrections(net, inputs.gaussian(1.0), tg)
        ex = T.linear_exact(net, inputs.gaussian(1.0), tg, "mse")
        np.testing.assert_allclose(bc.delta_mean, ex.delta_mean, rtol=1e-8)


@pytest.mark.parametrize(
    "act, width, n_out, mu_w",
    [("tanh", 64, "n", 1.0), ("gelu", 64, 1, 0.5)],
)
def test_monte_carlo_agrees_with_mu_w(act, width, n_out, mu_w):
    """tanh (μ_w = 1, square readout) and gelu (μ_w = 0.5, width-1 readout) at width 64: the
    infinite-width E[δ²] is 5 and 8 SE off (gelu: by a factor 2.6), the 1/n recursion is not."""
    n_l = width if n_out == "n" else n_out
    net = ds.MLP(
        (16,) + (width,) * 6 + (n_l,),
        activation=act,
        sigma_w=1.5**0.5,
        sigma_b=0.05**0.5,
        mu_w=mu_w,
    )
    law = inputs.sphere(1.0)
    bc = backward_corrections(net, law)
    sq, mean = _mc(net, law, 1000)
    z_sq = (sq.estimate.to_numpy() - bc.delta_sq) / sq.std_error.to_numpy()
    z_mean = (mean.estimate.to_numpy() - bc.delta_mean) / mean.std_error.to_numpy()
    assert np.max(np.abs(z_sq)) < 3, z_sq
    assert np.max(np.abs(z_mean)) < 3, z_mean
    inf = T.predict(net, law, finite_width=False)
    inf = inf[inf.statistic == "delta_sq"].prediction.to_numpy()
    assert (sq.estimate.to_numpy()[0] - inf[0]) / sq.std_error.to_numpy()[0] > 4


def test_coverage_is_stated():
    assert backward_covered(ds.MLP((4, 8, 1), mu_w=0.5), "mse", None) is None
    assert "orthogonal" in backward_covered(ds.MLP((4, 8, 1), init="orthogonal"), "mse", None)
    assert backward_covered(ds.MLP((4, 8, 1), output_activation="tanh"), "mse", None)
    assert backward_covered(ds.MLP((4, 8, 1)), "mse", targets.constant(1.0)) is None
    with pytest.raises(T.TheoryNotCovered, match="Gaussian weights"):
        backward_corrections(ds.MLP((4, 8, 1), init="uniform"), inputs.gaussian(1.0))


def test_wide_kernels_and_unresolved_settings():
    """Large σ_w (G ≫ 1: φ' is narrow on the scale of z) reaches the Gaussian recursion as
    n → ∞; a setting the expansion cannot resolve is refused, not answered with garbage."""
    for act, sw in (("tanh", 4.0), ("erf", 3.0), ("gelu", 3.0)):
        net = ds.MLP((16,) + (100_000,) * 4 + (1,), activation=act, sigma_w=sw)
        bc = backward_corrections(net, inputs.sphere(1.0))
        p = T.predict(net, inputs.sphere(1.0), finite_width=False)
        mf = p[p.statistic == "delta_sq"].prediction.to_numpy()
        np.testing.assert_allclose(bc.delta_sq, mf, rtol=3e-4)
    # ReLU, σ_b = 0, μ_w = 1 and n₀ = 2: at the input nodes with x̄ ≪ 0 almost every unit is
    # inactive (E φ² ≈ e⁻⁸⁴) and the 1/ū terms are not resolved
    dead = ds.MLP((2,) + (64,) * 4 + (1,), activation="relu", sigma_w=2**0.5, mu_w=1.0)
    with pytest.raises(T.TheoryNotCovered, match="not resolved"):
        backward_corrections(dead, inputs.gaussian(1.0))
    assert backward_covered(dead, "mse", targets.one_hot(3)) is None
    teacher = targets.teacher(ds.MLP((2, 4, 1)))
    assert "independent of the input" in backward_covered(dead, "mse", teacher)


def test_one_hot_targets_sum_to_one_over_the_units():
    """One-hot targets are correlated across output units (Σ_i y_i = 1): only E(1ᵀδ)² sees
    it, through the μ_w terms. Monte Carlo agrees with the one-hot recursion and is 2.5–3.4
    SE away from the same recursion with independent units of the same marginals."""
    from deltastats.theory import backward_width as bw

    net = ds.MLP((16, 24, 24, 24, 6), activation="tanh", sigma_w=1.2, sigma_b=0.2, mu_w=1.0)
    law, oh = inputs.sphere(1.0), targets.one_hot(6)
    assert backward_covered(net, "mse", oh) is None
    pred = backward_corrections(net, law, oh).delta_sq
    top = bw._top
    try:  # Var(Σ y_i)/n_L as for independent units, Var y_i
        bw._top = lambda M, G, n, sb2, ey, vary, f, vsum: top(M, G, n, sb2, ey, vary, f, vary)
        independent = backward_corrections(net, law, oh).delta_sq
    finally:
        bw._top = top
    mc = ds.estimate(net, law, oh, n_networks=20000, batch=4, seed=3).per_layer(["delta_sq"])
    z = (mc["estimate"].to_numpy() - pred) / mc["std_error"].to_numpy()
    z_ind = (mc["estimate"].to_numpy() - independent) / mc["std_error"].to_numpy()
    assert np.all(np.abs(z) < 3), z
    assert np.max(np.abs(z_ind[:2])) > 3, z_ind


def test_wide_kernel_boxes_are_resolved_in_log_g():
    """A wide kernel range (gelu, μ_w = 1, G over 0.15–8 at layer 5) is interpolated in log G,
    where the result does not depend on the number of Chebyshev nodes; in G it moved by 2 %
    between resolutions that the error control accepted. And n·(E δ / E δ|ₙ₌∞ − 1), the 1/n
    coefficient, is smooth in n."""
    from deltastats.theory import backward_width as bw

    def mean_at(width):
        net = ds.MLP(
            (512,) + (width,) * 6 + (width,),
            activation="gelu",
            sigma_w=1.5**0.5,
            sigma_b=0.05**0.5,
            mu_w=1.0,
        )
        return backward_corrections(net, inputs.sphere(1.0), targets.constant(0.5)).delta_mean

    base = mean_at(64)
    cheb = bw._CHEB_G, bw._CHEB_M
    try:
        bw._CHEB_G, bw._CHEB_M = 40, 24
        finer = mean_at(64)
    finally:
        bw._CHEB_G, bw._CHEB_M = cheb
    np.testing.assert_allclose(base, finer, rtol=1e-4)
    net = ds.MLP(
        (512,) + (64,) * 6 + (64,), activation="gelu", sigma_w=1.5**0.5, sigma_b=0.05**0.5, mu_w=1.0
    )
    p = T.predict(net, inputs.sphere(1.0), targets.constant(0.5), finite_width=False)
    inf = p[(p.statistic == "delta_mean") & (p.layer == 1)].prediction.iloc[0]
    coef = [w * (mean_at(w)[0] / inf - 1) for w in (48, 64, 96, 128)]
    assert np.ptp(coef) < 0.15 * np.mean(coef), coef


def test_threads_give_the_serial_bits(monkeypatch):
    """The unit moments and the two resolutions computed side by side on two threads give
    exactly the serial result, also where the log-G attempt fails and G is tried (ReLU with
    σ_w = 2, μ_w = 1: its moment cache is shared between the attempts)."""
    from deltastats import _parallel
    from deltastats._parallel import executor
    from deltastats.theory import backward_width as bw

    law, tg = inputs.gaussian(1.0), targets.constant(0.5)
    nets = {
        "log G": ds.MLP((16,) + (32,) * 4 + (32,), activation="gelu", sigma_w=1.2,
                        sigma_b=0.2, mu_w=1.0),
        "G after log G": ds.MLP((16,) + (32,) * 4 + (32,), activation="relu", sigma_w=2.0,
                                sigma_b=0.2, mu_w=1.0),
    }  # fmt: skip
    tables = bw._tables
    for name, net in nets.items():
        got, attempts = [], []
        for threads in (2, 1):
            monkeypatch.setattr(
                _parallel, "side_pool", lambda t=threads: executor(2) if t == 2 else None
            )
            calls = []
            monkeypatch.setattr(bw, "_tables", lambda *a, c=calls: c.append(a[6]) or tables(*a))
            r = backward_corrections(net, law, tg)
            got.append(np.concatenate([r.delta_sq, r.delta_mean, r.grad_w_sq, r.delta_sq_error]))
            attempts.append(calls[::2])
        assert attempts[0] == attempts[1] == ([True] if name == "log G" else [True, False])
        np.testing.assert_array_equal(got[0], got[1])


def test_numerical_error_is_carried_to_every_backward_row():
    """predict's numerical_error: the recursion's distance to its coarser resolution, and for
    the derived rows the first-order propagation of it."""
    net = ds.MLP((16,) + (32,) * 4 + (1,), activation="tanh", sigma_w=1.3, sigma_b=0.2, mu_w=0.5)
    law, tg = inputs.gaussian(1.0), targets.constant(0.5)
    bc = backward_corrections(net, law, tg)
    p = T.predict(net, law, tg, finite_width=True)
    fw = p[p.assumption == "finite-width"].set_index(["statistic", "layer"])["numerical_error"]
    layers = np.arange(1, net.depth + 1)
    e_sq, e_m = bc.delta_sq_error, bc.delta_mean_error
    assert np.all(e_sq >= 0) and np.any(e_sq > 0) and np.all(e_sq < 5e-3 * bc.delta_sq)
    np.testing.assert_array_equal(fw.loc["delta_sq"].loc[layers].to_numpy(), e_sq)
    np.testing.assert_array_equal(fw.loc["delta_mean"].loc[layers].to_numpy(), e_m)
    np.testing.assert_allclose(
        fw.loc["delta_var"].loc[layers].to_numpy(), e_sq + 2 * np.abs(bc.delta_mean) * e_m
    )
    np.testing.assert_allclose(fw.loc["log_delta_sq"].loc[layers].to_numpy(), e_sq / bc.delta_sq)
    np.testing.assert_allclose(
        fw.loc["delta_norm_sq"].loc[layers].to_numpy(), np.array(net.widths[1:]) * e_sq
    )
    np.testing.assert_array_equal(fw.loc["grad_w_sq"].loc[layers].to_numpy(), bc.grad_w_sq_error)
    assert (p.loc[p.assumption != "finite-width", "numerical_error"] == 0).all()


def test_g_attempt_skipped_when_it_would_repeat_the_failure(monkeypatch):
    """Layers above the highest log-G box have the same tables in G: where the error control
    fails there (gelu, μ_w = 1, Gaussian inputs, depth 10: layers 8–9, whose kernels span
    more than 10⁴), the G attempt is not run; the M-resolution check runs in log G only."""
    from deltastats.theory import backward_width as bw

    net = ds.MLP((16,) + (128,) * 9 + (128,), activation="gelu", sigma_w=1.2, sigma_b=0.2,
                 mu_w=1.0)  # fmt: skip
    tables, calls = bw._tables, []
    monkeypatch.setattr(bw, "_tables", lambda *a: calls.append((a[6], a[4])) or tables(*a))
    backward_corrections(net, inputs.gaussian(1.0))
    # the log-G attempt's two resolutions, then more nodes in M, all in log G
    assert calls == [(True, 9), (True, 12), (True, bw._CHEB_M_FINE)]


def test_more_nodes_in_m_resolve_what_two_resolutions_cannot(monkeypatch):
    """tanh, μ_w = 1, Gaussian inputs (n₀ = 16), depth 10: x̄ spreads M⁽¹⁾ over ±1.8 and 9
    or 12 nodes in M are not enough (E δ²⁽¹⁾ moves by 0.7 % between them), so neither the
    log-G nor the G attempt resolves; 16 nodes, checked against 12, do. The answer agrees
    with a run on 16 and 24 nodes in M to well within its stated numerical error. (Monte
    Carlo, 114,804 networks: |z| ≤ 0.6 on every layer's E δ², where the infinite-width
    prediction is up to 8.7 SE off.)"""
    from deltastats.theory import backward_width as bw

    net = ds.MLP((16,) + (128,) * 9 + (1,), activation="tanh", sigma_w=1.2, sigma_b=0.2,
                 mu_w=1.0)  # fmt: skip
    law = inputs.gaussian(1.0)
    tables, calls = bw._tables, []
    monkeypatch.setattr(bw, "_tables", lambda *a: calls.append(a[4]) or tables(*a))
    bc = backward_corrections(net, law)
    assert calls[-1] == bw._CHEB_M_FINE and calls.count(bw._CHEB_M) == 2  # both attempts ran
    monkeypatch.setattr(bw, "_COARSE", (bw._CHEB_G, 16))
    monkeypatch.setattr(bw, "_CHEB_M", 24)
    ref = backward_corrections(net, law)  # (24, 16) against (24, 24)
    gap = np.abs(bc.delta_sq / ref.delta_sq - 1)
    assert gap.max() < 1e-3
    assert np.all(np.abs(bc.delta_sq - ref.delta_sq) <= bc.delta_sq_error + 1e-12)
    # the stated error is the change from 12 to 16 nodes in M (0.29 % at layer 1), which
    # bounds the distance to the finer run here
    assert bc.delta_sq_error[0] / bc.delta_sq[0] > 1e-3


def test_compiled_unit_moments_match_the_quadrature_sums():
    """The compiled kernel against the sums it stands for, written out in numpy: the mean
    Σ_q w X and the total covariance Σ_q w (X − μ)(X − μ)ᵀ + Σ_q w f_i f_j Cov(z̃^p_i, z̃^p_j)."""
    from deltastats.theory._moment_kernels import unit_moments_kernel

    rng = np.random.default_rng(7)
    P, Q = 5, 37
    h, d, m = rng.standard_normal((3, P, Q))
    w = rng.random((P, Q))
    v = rng.random(P)
    mean, cov = np.empty((P, 11)), np.empty((P, 11, 11))
    unit_moments_kernel(h, d, m, w, v, True, mean, cov)
    vv = v[:, None]
    f = np.stack([h * h, d * d, d * d * h * h, d * h, d * d, d * h, h, d, d * d * h, d, d * d], 1)
    power = np.array([0, 0, 0, 1, 2, 0, 0, 0, 0, 1, 1])
    cond = np.stack([np.ones_like(m), m, m * m + vv])  # E[z̃^p | z]
    X = f * cond[power].transpose(1, 0, 2)  # (P, 11, Q)
    mu = np.einsum("piq,pq->pi", X, w)
    np.testing.assert_allclose(mean, mu, rtol=1e-13)
    Y = X - mu[:, :, None]
    ref = np.einsum("piq,pjq,pq->pij", Y, Y, w)
    ccov = {(1, 1): vv, (1, 2): 2 * m * vv, (2, 2): vv * (4 * m * m + 2 * vv)}
    for i in np.flatnonzero(power):
        for j in np.flatnonzero(power):
            a, b = sorted((power[i], power[j]))
            ref[:, i, j] += np.sum(w * f[:, i] * f[:, j] * ccov[a, b], axis=-1)
    np.testing.assert_allclose(cov, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    assert np.array_equal(cov, np.swapaxes(cov, 1, 2))
    # the mean alone, without the covariance pass
    mean2 = np.empty((P, 11))
    unit_moments_kernel(h, d, m, w, v, False, mean2, np.empty((0, 11, 11)))
    assert np.array_equal(mean, mean2)


def test_compiled_clenshaw_is_numpys_chebval_bit_for_bit():
    from numpy.polynomial import chebyshev as cheb

    from deltastats.theory._moment_kernels import clenshaw_kernel

    rng = np.random.default_rng(3)
    for N in (1, 2, 3, 24):
        c = rng.standard_normal((6, 50, N))
        x = rng.uniform(-1, 1, 50)
        out = np.empty((6, 50))
        clenshaw_kernel(c, x, out)
        assert np.array_equal(out, cheb.chebval(x, np.moveaxis(c, -1, 0), tensor=False))


@pytest.mark.parametrize("log_g", [False, True])
def test_interpolant_derivatives_in_one_evaluation_are_the_single_ones(log_g):
    from deltastats.theory.backward_width import _Fn

    rng = np.random.default_rng(5)
    fn = _Fn(((-1.0, 1.0), (0.2, 5.0)), rng.standard_normal((6, 9, 18)), log_g)
    M, G = rng.uniform(-1, 1, 40), rng.uniform(0.2, 5.0, 40)
    orders = ((2, 0), (1, 1), (0, 2), (1, 0), (0, 1), (0, 0))
    got = fn.orders(M, G, orders)
    for dm, dg in orders:
        assert np.array_equal(got[dm, dg], fn(M, G, dm, dg))
