"""Theory averaged over the exact input law: the (x̄, ρ) rules of the input laws, hand cases
(one layer by direct quadrature, linear networks through E[xxᵀ] only) and Monte Carlo.

x̄ = Σ_i x_i/n₀ and ρ = ‖x‖²/n₀; given x, z⁽¹⁾ ~ N(μ_w x̄ + μ_b, σ_w²ρ + σ_b²) exactly.
"""

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy import integrate, special, stats

import deltastats as ds
from deltastats import inputs, targets
from deltastats import theory as T
from deltastats.model.inputs import InputLaw

# ---------------------------------------------------------------------------------------------
# the rules
# ---------------------------------------------------------------------------------------------


def _E(rule, f):
    return float(np.sum(rule.weights * f(rule.xbar, rule.rho)))


@pytest.mark.parametrize("n0", [1, 2, 5, 16, 512])
def test_gaussian_rule_has_the_exact_moments(n0):
    q = 1.7
    r = inputs.gaussian(q).summary_rule(n0, 8)
    assert r.exact and np.isclose(r.weights.sum(), 1.0)
    s2 = q / n0  # Var x̄
    assert _E(r, lambda a, b: a) == pytest.approx(0.0, abs=1e-14)
    assert _E(r, lambda a, b: a * a) == pytest.approx(s2, rel=1e-12)
    assert _E(r, lambda a, b: a**4) == pytest.approx(3 * s2**2, rel=1e-12)
    assert _E(r, lambda a, b: b) == pytest.approx(q, rel=1e-12)
    # n₀ρ/q ~ χ²_{n₀}: Var ρ = 2q²/n₀, E ρ³ = q³(n₀+2)(n₀+4)/n₀².
    assert _E(r, lambda a, b: (b - q) ** 2) == pytest.approx(2 * q * q / n0, rel=1e-10)
    assert _E(r, lambda a, b: b**3) == pytest.approx(q**3 * (n0 + 2) * (n0 + 4) / n0**2, rel=1e-10)
    # x̄² and r = ρ − x̄² independent: E[x̄² ρ] = 3s2² + s2·q(n₀ − 1)/n₀.
    assert _E(r, lambda a, b: a * a * b) == pytest.approx(
        3 * s2**2 + s2 * q * (n0 - 1) / n0, rel=1e-10
    )
    marg = inputs.gaussian(q).summary_rule(n0, 8, with_mean=False)
    assert _E(marg, lambda a, b: b**3) == pytest.approx(_E(r, lambda a, b: b**3), rel=1e-10)


@pytest.mark.parametrize("n0", [1, 2, 3, 16, 512])
def test_sphere_rule_has_the_exact_moments(n0):
    q = 0.6
    r = inputs.sphere(q).summary_rule(n0, 8)
    np.testing.assert_allclose(r.rho, q)
    # x̄ = √q·s, s = cos∠(x, 1): E s² = 1/n₀, E s⁴ = 3/(n₀(n₀ + 2)).
    assert _E(r, lambda a, b: a * a) == pytest.approx(q / n0, rel=1e-12)
    assert _E(r, lambda a, b: a**4) == pytest.approx(3 * q * q / (n0 * (n0 + 2)), rel=1e-10)
    assert _E(r, lambda a, b: a) == pytest.approx(0.0, abs=1e-14)


def test_uniform_rule_matches_first_and_second_moments_and_is_exact_for_one_coordinate():
    lo, hi, n0 = -0.5, 1.5, 16
    r = inputs.uniform(lo, hi).summary_rule(n0, 8)
    assert not r.exact
    c, s2 = 0.5, (hi - lo) ** 2 / 12
    m2, m4 = c * c + s2, (hi**5 - lo**5) / (5 * (hi - lo))  # E x², E x⁴ of U(lo, hi)
    m3 = (hi**4 - lo**4) / (4 * (hi - lo))
    assert _E(r, lambda a, b: a) == pytest.approx(c, rel=1e-12)
    assert _E(r, lambda a, b: a * a) == pytest.approx(c * c + s2 / n0, rel=1e-12)
    assert _E(r, lambda a, b: b) == pytest.approx(m2, rel=1e-12)
    assert _E(r, lambda a, b: (b - m2) ** 2) == pytest.approx((m4 - m2 * m2) / n0, rel=1e-10)
    assert _E(r, lambda a, b: (a - c) * (b - m2)) == pytest.approx((m3 - c * m2) / n0, rel=1e-10)
    one = inputs.uniform(lo, hi).summary_rule(1, 8)
    assert one.exact
    assert _E(one, lambda a, b: np.cos(a)) == pytest.approx(
        (np.sin(hi) - np.sin(lo)) / (hi - lo), rel=1e-12
    )


def test_uniform_rule_against_sampling_of_a_smooth_function():
    """The moment-matched rule's O(n₀⁻²) error is far below the sampling error here."""
    law, n0 = inputs.uniform(0.0, 1.0), 16
    x = law.sample(n0, 400_000, seed=2)
    xb, rho = x.mean(1), (x**2).mean(1)

    def f(a, b):
        return np.tanh(1.5 * a + 2.0 * b) ** 2

    v = f(xb, rho)
    se = v.std() / np.sqrt(v.size)
    assert abs(_E(law.summary_rule(n0, 12), f) - v.mean()) < 4 * se


def test_uniform_rule_on_a_one_layer_network_is_within_its_documented_error():
    """n₀ = 16, μ_w = 1: the moment-matched rule is within 0.5 % of E δ and E δ² sampled
    over 4·10⁵ inputs (the per-input expectation is exact: no weights are drawn)."""
    n0, mw, sw, sb, y = 16, 1.0, 1.5, 0.2, 0.3
    law = inputs.uniform(-0.75, 1.25)
    x = law.sample(n0, 400_000, seed=4)
    xb, rho = x.mean(1), (x**2).mean(1)
    t, w = hermegauss(80)
    w = w / w.sum()
    g = np.tanh(mw * xb[:, None] + np.sqrt(sw**2 * rho + sb**2)[:, None] * t)
    d = (g - y) * (1 - g * g)
    net = ds.MLP(
        (n0, 2), activation="tanh", output_activation="tanh", sigma_w=sw, sigma_b=sb, mu_w=mw
    )
    p = T.predict(net, law, targets.constant(y)).set_index("statistic").prediction
    for stat, v in (("delta_mean", d @ w), ("delta_sq", (d * d) @ w)):
        se = v.std() / np.sqrt(v.size)
        assert abs(p[stat] - v.mean()) < 3 * se + 0.005 * abs(v.mean()), stat


def test_from_array_rule_is_the_empirical_rows():
    X = np.random.default_rng(0).normal(size=(40, 6))
    X = np.vstack([X, X[:5]])  # repeated rows get their frequency
    r = inputs.from_array(X).summary_rule(6)
    assert r.exact and r.xbar.size == 40
    f = lambda a, b: np.exp(a) * np.sin(b)  # noqa: E731
    assert _E(r, f) == pytest.approx(np.mean(f(X.mean(1), (X**2).mean(1))), rel=1e-13)


def test_a_law_without_its_summary_rule_is_a_clear_error_naming_inputs():
    class Custom(InputLaw):
        def draw(self, rng, batch, n0):
            return rng.standard_normal((batch, n0))

        def moments(self, n0):
            return 0.0, 1.0

    net = ds.MLP((4, 8, 1))
    with pytest.raises(ValueError, match=r"^inputs: Custom has no \(x̄, ρ\) law"):
        T.predict(net, Custom())
    with pytest.raises(ValueError, match="^inputs must be an input law"):
        T.forward_moments(net, "gaussian")
    with pytest.raises(ValueError, match="^degree must be"):
        inputs.gaussian().summary_rule(4, 0)
    with pytest.raises(ValueError, match="^n0 must be"):
        inputs.sphere().summary_rule(0)


# ---------------------------------------------------------------------------------------------
# hand cases
# ---------------------------------------------------------------------------------------------


def test_pooled_first_layer_variance_is_the_law_of_total_variance():
    """Var z⁽¹⁾ = σ_w²q₀ + σ_b² + μ_w² Var x̄ exactly, Var x̄ = q₀/n₀ (Gaussian and sphere)."""
    n0, q = 16, 1.3
    net = ds.MLP((n0, 64, 1), activation="tanh", sigma_w=1.2, sigma_b=0.3, mu_w=1.0, mu_b=0.2)
    for law in (inputs.gaussian(q), inputs.sphere(q)):
        fw = T.forward_moments(net, law)
        assert fw.var[0] == pytest.approx(1.44 * q + 0.09 + q / n0, rel=1e-12)
        assert fw.mean[0] == pytest.approx(0.2, rel=1e-12)
    X = np.random.default_rng(1).normal(0.3, 1.0, size=(50, n0))
    fw = T.forward_moments(net, inputs.from_array(X))
    xb, rho = X.mean(1), (X**2).mean(1)
    assert fw.var[0] == pytest.approx(1.44 * rho.mean() + 0.09 + xb.var(), rel=1e-12)
    assert fw.mean[0] == pytest.approx(xb.mean() + 0.2, rel=1e-12)


def _one_layer_exact(n0, law_pdf, mw, mb, sw, sb, y):
    """E over (x̄, ρ) by scipy.integrate of the exact Gaussian expectation given x."""
    t, w = hermegauss(120)
    w = w / w.sum()

    def given(xb, rho):
        m, s = mw * xb + mb, np.sqrt(sw**2 * rho + sb**2)
        z = m + s * t
        g = np.tanh(z)
        d = (g - y) * (1 - g * g)  # δ = (φ(z) − y)φ'(z)
        return np.array([w @ d, w @ d**2])

    return law_pdf(given)


@pytest.mark.slow
def test_one_layer_network_by_direct_quadrature_gaussian_and_sphere():
    """δ⁽¹⁾ = (tanh z − y) tanh' z with z | x Gaussian: exact at any width; theory must equal
    the two-dimensional integral over the law of (x̄, ρ)."""
    n0, q, mw, mb, sw, sb, y = 5, 1.5, 1.5, 0.1, 1.3, 0.2, 0.4

    def gaussian_pdf(given):
        # x̄ ~ N(0, q/n₀), r = ρ − x̄² ~ Gamma((n₀−1)/2, 2q/n₀)
        def comp(k):
            return integrate.dblquad(
                lambda r, xb: (
                    given(xb, xb * xb + r)[k]
                    * stats.norm.pdf(xb, 0, np.sqrt(q / n0))
                    * stats.gamma.pdf(r, (n0 - 1) / 2, scale=2 * q / n0)
                ),
                -8 * np.sqrt(q / n0),
                8 * np.sqrt(q / n0),
                0,
                40 * q / n0,
                epsabs=1e-10,
                epsrel=1e-9,
            )[0]

        return np.array([comp(k) for k in range(2)])

    def sphere_pdf(given):
        norm = special.beta(0.5, (n0 - 1) / 2)  # ∫(1 − s²)^{(n₀−3)/2} ds

        def comp(k):
            return integrate.quad(
                lambda s: given(np.sqrt(q) * s, q)[k] * (1 - s * s) ** ((n0 - 3) / 2) / norm,
                -1,
                1,
                epsabs=1e-12,
            )[0]

        return np.array([comp(k) for k in range(2)])

    net = ds.MLP(
        (n0, 3),
        activation="tanh",
        output_activation="tanh",
        sigma_w=sw,
        sigma_b=sb,
        mu_w=mw,
        mu_b=mb,
    )
    for law, pdf in ((inputs.gaussian(q), gaussian_pdf), (inputs.sphere(q), sphere_pdf)):
        d1, d2 = _one_layer_exact(n0, pdf, mw, mb, sw, sb, y)
        p = T.predict(net, law, targets.constant(y)).set_index("statistic")["prediction"]
        # n₀ = 5 is the hard case of the rule (mass of ρ near 0): error control to 1e−4
        assert p["delta_mean"] == pytest.approx(d1, rel=1e-4)
        assert p["delta_sq"] == pytest.approx(d2, rel=1e-4)
        assert p["z_var"] == pytest.approx(sw**2 * q + sb**2 + mw**2 * q / n0, rel=1e-12)


def test_one_layer_network_by_brute_force_monte_carlo_over_the_inputs():
    """Gaussian inputs drawn, the exact per-input Gaussian expectation averaged (no weights are
    drawn, so the only error is the input sampling: a tight, known standard error)."""
    n0, q, mw, mb, sw, sb, y = 16, 1.0, 0.8, 0.0, 1.5, 0.1, 0.5
    x = inputs.gaussian(q).sample(n0, 200_000, seed=4)
    xb, rho = x.mean(1), (x**2).mean(1)
    t, w = hermegauss(80)
    w = w / w.sum()
    m, s = mw * xb + mb, np.sqrt(sw**2 * rho + sb**2)
    g = np.tanh(m[:, None] + s[:, None] * t)
    d2 = (((g - y) * (1 - g * g)) ** 2) @ w
    kw = dict(activation="tanh", output_activation="tanh", sigma_w=sw, sigma_b=sb)
    net = ds.MLP((n0, 2), mu_w=mw, mu_b=mb, **kw)
    p = T.predict(net, inputs.gaussian(q), targets.constant(y)).set_index("statistic")
    se = d2.std() / np.sqrt(d2.size)
    assert abs(p.loc["delta_sq", "prediction"] - d2.mean()) < 3 * se
    # ρ fixed at q₀ (the law reduced to its mean) is off by many standard errors here.
    q_only = ds.MLP((n0, 2), **kw)
    off = T.predict(q_only, inputs.sphere(q), targets.constant(y)).set_index("statistic")
    d2_mu0 = (((np.tanh(s[:, None] * t) - y) * (1 - np.tanh(s[:, None] * t) ** 2)) ** 2) @ w
    se0 = d2_mu0.std() / np.sqrt(d2.size)
    assert abs(off.loc["delta_sq", "prediction"] - d2_mu0.mean()) > 10 * se0


def test_linear_network_depends_on_second_moments_of_the_inputs_only():
    """φ = identity: E δ², E δ, Var z are affine in (x̄, x̄², ρ), so any two input laws with the
    same E x, E[xxᵀ] give the same predictions; tanh tells them apart."""
    n0 = 6
    X = np.random.default_rng(3).normal(size=(64, n0))
    X -= X.mean(0)  # mean 0 exactly
    X2 = np.vstack([np.sqrt(2.0) * X, np.zeros_like(X)])  # same E[xxᵀ], bimodal ρ
    kw = dict(sigma_w=1.1, sigma_b=0.3, mu_w=0.7, mu_b=0.1)
    tg = targets.constant(0.5)
    lin = ds.MLP((n0, 8, 8, 3), activation="linear", **kw)
    cols = ["layer", "statistic"]

    # (grad_w_sq = E[δ²h²] is quadratic in ρ: it sees the fourth moments, so it is left out)
    def pr(net, law):
        p = T.predict(net, law, tg)
        return p[p.statistic != "grad_w_sq"].set_index(cols).prediction

    a, b = pr(lin, inputs.from_array(X)), pr(lin, inputs.from_array(X2))
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-11, atol=1e-14)
    g, s = pr(lin, inputs.gaussian(1.0)), pr(lin, inputs.sphere(1.0))
    np.testing.assert_allclose(g.to_numpy(), s.to_numpy(), rtol=1e-11, atol=1e-14)
    # first layer by hand: Var z⁽¹⁾ = σ_w² E ρ + σ_b² + μ_w² Var x̄
    xb, rho = X.mean(1), (X**2).mean(1)
    assert a[(1, "z_var")] == pytest.approx(1.21 * rho.mean() + 0.09 + 0.49 * xb.var())
    th = ds.MLP((n0, 8, 8, 3), activation="tanh", **kw)
    ta, tb = pr(th, inputs.from_array(X)), pr(th, inputs.from_array(X2))
    assert abs(ta[(1, "delta_sq")] / tb[(1, "delta_sq")] - 1) > 0.01


def test_rule_degree_is_converged():
    net = ds.MLP((16,) + (128,) * 6 + (1,), activation="tanh", sigma_w=1.3, sigma_b=0.2, mu_w=0.5)
    tg = targets.constant(0.5)
    auto = T.backward_moments(net, inputs.gaussian(), tg)
    fine = T.backward_moments(net, inputs.gaussian(), tg, degree=40)
    np.testing.assert_allclose(auto.log_delta_sq, fine.log_delta_sq, atol=1e-5)
    np.testing.assert_allclose(auto.delta_mean, fine.delta_mean, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Monte Carlo
# ---------------------------------------------------------------------------------------------


def _mc(net, law, tg, M, B, seed):
    est = ds.estimate(net, law, tg, n_networks=M, batch=B, seed=seed)
    t = est.per_layer()
    return t[t.unit == -1].set_index(["layer", "statistic"])


@pytest.mark.parametrize("act", ["erf", "tanh"])
def test_gaussian_inputs_at_n0_16_match_monte_carlo_where_the_mean_input_does_not(act):
    """Width 512, depth 3, n₀ = 16: ‖x‖²/n₀ ~ χ²₁₆/16 and the q-map is nonlinear. The input-law
    average is within 3 SE at every layer; ρ frozen at q₀ (the sphere's law) is not."""
    net = ds.MLP((16, 512, 512, 512), activation=act, sigma_w=np.sqrt(1.5), sigma_b=np.sqrt(0.05))
    tg = targets.constant(0.5)
    mc = _mc(net, inputs.gaussian(), tg, 128, 32, 3)
    p = T.predict(net, inputs.gaussian(), tg).set_index(["layer", "statistic"]).prediction
    frozen = T.predict(net, inputs.sphere(), tg).set_index(["layer", "statistic"]).prediction
    worst = 0.0
    for key in [(l, s) for l in (1, 2, 3) for s in ("delta_sq", "z_var", "delta_mean")]:
        e, se = mc.loc[key, "estimate"], mc.loc[key, "std_error"]
        assert abs(e - p[key]) < 3 * se, (key, e, p[key], se)
        worst = max(worst, abs(e - frozen[key]) / se)
    assert worst > 5
    assert mc.loc[(1, "delta_sq"), "std_error"] < 0.01 * mc.loc[(1, "delta_sq"), "estimate"]


def test_first_layer_variance_with_mu_w_matches_monte_carlo():
    """μ_w = 1, n₀ = 16: Var z⁽¹⁾ includes μ_w² Var x̄ = q₀/16 (6 % of the total here)."""
    net = ds.MLP((16, 256, 1), activation="tanh", sigma_w=1.0, sigma_b=0.0, mu_w=1.0)
    mc = _mc(net, inputs.gaussian(), targets.zeros(), 256, 16, 8)
    p = T.predict(net).set_index(["layer", "statistic"]).prediction
    e, se = mc.loc[(1, "z_var"), "estimate"], mc.loc[(1, "z_var"), "std_error"]
    assert p[(1, "z_var")] == pytest.approx(1 + 1 / 16)
    assert abs(e - p[(1, "z_var")]) < 3 * se
    assert abs(e - 1.0) > 5 * se  # without Var_x(μ_w x̄)


# ---------------------------------------------------------------------------------------------
# no fitted constant carries a verdict; coverage is stated
# ---------------------------------------------------------------------------------------------


def test_relu_log_norm_variance_uses_the_derived_rho_and_the_fitted_mean_is_empirical():
    widths = (32,) * 5 + (4,)
    fl = T.relu_log_norm_var(widths)
    # (H2) with ρ = 1: Var log‖δ⁽ˡ⁾‖² = V_L + 3·backward_var, whatever n_L.
    np.testing.assert_allclose(fl.log_var - fl.log_var[-1], 3 * fl.backward_var, rtol=1e-12)
    assert T.relu_log_norm_var(widths, rho=1.0).log_var == pytest.approx(fl.log_var)
    net = ds.MLP(widths, activation="relu", sigma_w=np.sqrt(2.0))
    p = T.predict(net)
    how = p.groupby("statistic")["assumption"].first()
    assert how["log_delta_norm_sq_var"] == "hanin-lognormal"
    assert how["log_delta_norm_sq_mean"] == "empirical"


def test_compare_gives_empirical_rows_no_verdict_and_keeps_them_out_of_the_family():
    import pandas as pd

    from deltastats.workflow.compare import compare, summarize

    est = pd.DataFrame(
        dict(
            layer=[1, 2, 3],
            statistic=["delta_sq", "delta_sq", "log_delta_norm_sq_mean"],
            estimate=[1.0, 2.0, 5.0],
            std_error=[0.1, 0.1, 0.1],
            n_networks=100,
        )
    )
    pred = pd.DataFrame(
        dict(
            layer=[1, 2, 3],
            statistic=["delta_sq", "delta_sq", "log_delta_norm_sq_mean"],
            prediction=[1.0, 2.05, 1.0],  # the empirical row is 40 SE off
            assumption=["gaussian", "gaussian", "empirical"],
        )
    )
    c = compare(est, pred).set_index("layer")
    assert c.loc[3, "verdict"] == "no verdict" and np.isnan(c.loc[3, "p_value"])
    assert c.loc[3, "z_score"] == pytest.approx(40.0)
    assert list(c.loc[[1, 2], "verdict"]) == ["agrees", "agrees"]
    # the family has two members: Holm multiplies the smaller p-value by 2, not 3
    p2 = 2 * stats.t.sf(0.5, 99)
    assert c.loc[2, "p_adjusted"] == pytest.approx(min(1.0, 2 * p2))
    text = summarize(c.reset_index())
    assert "agrees with Monte Carlo in 2 of 2 rows" in text and "1 rows carry an empirical" in text


def test_not_covered_settings_say_what_to_do():
    net = ds.MLP((4, 8, 3))
    with pytest.raises(T.TheoryNotCovered, match="Monte Carlo alone"):
        T.predict(net, loss="cross_entropy", targets=targets.one_hot(3))
    with pytest.raises(T.TheoryNotCovered, match="targets independent of the network"):
        T.not_covered(net, targets=targets.teacher(ds.MLP((4, 3))))
    wd = T.not_covered(net, weight_decay=1e-3)
    assert set(wd) == {"grad_w_sq"} and "λW" in wd["grad_w_sq"]
    assert "grad_w_sq" not in set(T.predict(net, weight_decay=1e-3).statistic)
    bm = T.not_covered(net, batch=8)
    assert set(bm) == {"grad_w_sq"} and "compare B = 1" in bm["grad_w_sq"]
    assert T.not_covered(net) == {}
    relu = ds.MLP((4, 8, 3), activation="relu")
    assert "n_L = 3 > 1" in T.not_covered(relu)["log_delta_norm_sq_var"]
    assert T.not_covered(ds.MLP((4, 8, 1), activation="relu")) == {}
    with pytest.raises(ValueError, match="^batch must be"):
        T.predict(net, batch=0)
    with pytest.raises(ValueError, match="^weight_decay must be"):
        T.predict(net, weight_decay=-1.0)
