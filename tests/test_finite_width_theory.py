"""Forward 1/n theory (theory.finite_width.forward_corrections): closed cases, an independent
implementation of the book's one-input recursions, Monte Carlo, and predict's rows."""

import time

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss

import deltastats as ds
from deltastats import inputs, targets
from deltastats import theory as T
from deltastats.theory.finite_width import forward_corrections


def test_relu_and_linear_without_bias_have_no_kernel_shift_and_the_exact_layer_2_vertex():
    """f₂ = E φ² is linear in G for relu (G/2) and linear (G): δK = 0 at any width. The
    vertex at layer 2 is exact: Var(Ĝ₂ | x) = σ⁴ Var(φ(z)²)/n₁ with z ~ N(0, K₁)."""
    n, q = 32, 1.3
    for act, var_phi2 in (("relu", 5 / 4), ("linear", 2.0)):  # Var φ² / K²
        sw2 = 2.0 if act == "relu" else 1.0
        net = ds.MLP((8, n, n, n, 1), activation=act, sigma_w=np.sqrt(sw2))
        fc = forward_corrections(net, inputs.sphere(q))
        np.testing.assert_allclose(fc.shift_var, 0.0, atol=1e-12)
        K1 = sw2 * q
        assert fc.vertex[1] == pytest.approx(sw2**2 * var_phi2 * K1**2 / n, rel=1e-10)
        assert fc.vertex[0] == 0.0


def _book_recursion(act, sw2, sb2, q, widths):
    """Roberts–Yaida–Hanin one-input recursions at μ_w = 0, written independently: g(K) and
    its derivatives by central differences of a 200-point Gauss–Hermite rule."""
    t, w = hermegauss(200)
    w = w / w.sum()
    phi = ds.activations.get_activation(act).phi

    def g(K):
        return w @ phi(np.sqrt(K) * t) ** 2

    def phi4(K):
        return w @ phi(np.sqrt(K) * t) ** 4

    K, V, dK, out = sw2 * q + sb2, 0.0, 0.0, []
    for n in widths[1:-1]:
        out.append((K, V, dK))
        h = 1e-3 * K
        g1 = (g(K + h) - g(K - h)) / (2 * h)
        g2 = (g(K + h) - 2 * g(K) + g(K - h)) / (h * h)
        V, dK = (
            sw2**2 * (phi4(K) - g(K) ** 2) / n + (sw2 * g1) ** 2 * V,
            sw2 * g1 * dK + 0.5 * sw2 * g2 * V,
        )
        K = sw2 * g(K) + sb2
    out.append((K, V, dK))
    return np.array(out)


@pytest.mark.parametrize("act", ["tanh", "erf", "sin"])
def test_zero_mean_case_is_the_books_one_input_recursion(act):
    widths = (10, 48, 64, 40, 64, 1)
    sw2, sb2, q = 1.6, 0.1, 0.8
    net = ds.MLP(widths, activation=act, sigma_w=np.sqrt(sw2), sigma_b=np.sqrt(sb2))
    fc = forward_corrections(net, inputs.sphere(q))
    ref = _book_recursion(act, sw2, sb2, q, widths)
    np.testing.assert_allclose(fc.vertex, ref[:, 1], rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(fc.shift_var, ref[:, 2], rtol=1e-4, atol=1e-9)
    assert np.all(fc.shift_var[2:] != 0)


def _mc(net, law, M, B, seed):
    est = ds.estimate(net, law, targets.zeros(), n_networks=M, batch=B, seed=seed)
    t = est.per_layer()
    return t[t.unit == -1].set_index(["layer", "statistic"])


def test_tanh_width_32_variance_matches_monte_carlo_where_mean_field_does_not():
    """Critical tanh (σ_w² = 1.76, σ_b² = 0.05) at width 32, sphere inputs: z_var falls below
    mean field layer after layer; the 1/n rows agree within 3 SE at every layer."""
    widths = (16,) + (32,) * 6 + (1,)
    net = ds.MLP(widths, activation="tanh", sigma_w=np.sqrt(1.76), sigma_b=np.sqrt(0.05))
    law = inputs.sphere()
    mc = _mc(net, law, 3000, 8, 1)
    p = T.predict(net, law, finite_width=True)
    fw = p[p.assumption == "finite-width"].set_index(["layer", "statistic"]).prediction
    mf = p[p.assumption == "mean-field"].set_index(["layer", "statistic"]).prediction
    z_mf = []
    for l in range(1, 8):
        e, se = mc.loc[(l, "z_var"), "estimate"], mc.loc[(l, "z_var"), "std_error"]
        assert abs(e - fw[(l, "z_var")]) < 3 * se, (l, e, fw[(l, "z_var")], se)
        z_mf.append((e - mf[(l, "z_var")]) / se)
    assert min(z_mf[3:6]) < -1.5  # mean field is high at layers 4–6
    assert np.sum(np.square(z_mf)) > 2 * sum(
        ((mc.loc[(l, "z_var"), "estimate"] - fw[(l, "z_var")]) / mc.loc[(l, "z_var"), "std_error"])
        ** 2
        for l in range(1, 8)
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("act", "n", "sw2", "mw", "law"),
    [
        ("gelu", 128, 1.5, 0.0, "sphere"),
        ("relu", 64, 1.5, 0.5, "gaussian"),
        ("softplus", 64, 1.2, 0.5, "gaussian"),
    ],
)
def test_forward_corrections_match_monte_carlo_within_3_se(act, n, sw2, mw, law):
    net = ds.MLP(
        (16,) + (n,) * 6 + (1,),
        activation=act,
        sigma_w=np.sqrt(sw2),
        sigma_b=np.sqrt(0.05),
        mu_w=mw,
    )
    law = inputs.sphere() if law == "sphere" else inputs.gaussian()
    mc = _mc(net, law, 3000, 8, 1)
    fc = forward_corrections(net, law)
    for l in range(1, 8):
        # The single output unit's Var z is a mean of one heavy-tailed value per network, and
        # its t interval under-covers (seeds 1–3 give z = 3.3, 1.3, 0.1 for relu here, while
        # every hidden layer stays within 2.1): 4 SE there, 3 SE elsewhere.
        tol = 4 if l == 7 else 3
        for stat, pred in (("z_var", fc.z_var), ("z_mean", fc.z_mean)):
            e, se = mc.loc[(l, stat), "estimate"], mc.loc[(l, stat), "std_error"]
            assert abs(e - pred[l - 1]) < tol * se, (stat, l, e, pred[l - 1], se)


def test_predict_finite_width_rows_and_speed():
    net = ds.MLP((16,) + (128,) * 9 + (1,), activation="tanh", sigma_w=1.2, sigma_b=0.2)
    T.predict(net, finite_width=True)  # first call warms the rule caches
    t0 = time.perf_counter()
    p = T.predict(net, targets=targets.constant(0.5), finite_width=True)
    # The issue's bound is "well under a second" (about 0.5 s here); 2 s leaves room for a
    # loaded CI machine.
    assert time.perf_counter() - t0 < 2.0
    fw = p[p.assumption == "finite-width"]
    forward = {"z_mean", "z_var", "log_z_var", "z_kurt"}
    backward = {"delta_mean", "delta_sq", "delta_var", "delta_norm_sq", "log_delta_sq"}
    assert set(fw.statistic) == forward | backward | {"grad_w_sq"}
    assert set(fw.layer) == set(range(1, 11))
    # uniform weights: the 1/n terms are derived for Gaussian weights only.
    uniform = ds.MLP((16,) + (128,) * 9 + (1,), activation="tanh", sigma_w=1.2, init="uniform")
    assert "finite-width" not in set(T.predict(uniform, finite_width=True).assumption)
    # μ_w ≠ 0 is covered (θ = (M, G) in backward_corrections).
    coupled = ds.MLP((16,) + (128,) * 9 + (1,), activation="tanh", sigma_w=1.2, mu_w=0.5)
    pc = T.predict(coupled, finite_width=True)
    assert set(pc[pc.assumption == "finite-width"].statistic) == forward | backward | {"grad_w_sq"}
    base = T.predict(net, targets=targets.constant(0.5))
    assert len(p) == len(base) + len(fw)
    assert "finite-width" not in set(base.assumption)
    with pytest.raises(ValueError, match="^finite_width must be"):
        T.predict(net, finite_width=1)


def test_kurtosis_of_the_first_layer_is_the_input_law_mixture():
    """z⁽¹⁾ | x ~ N(0, σ_w²ρ + σ_b²): excess kurtosis 3σ_w⁴ Var ρ/(σ_w²q₀ + σ_b²)², with
    Var ρ = 2q₀²/n₀ for Gaussian inputs, 0 on the sphere, at any width."""
    n0, q, sw2, sb2 = 16, 1.2, 1.5, 0.05
    net = ds.MLP((n0, 64, 64, 1), activation="tanh", sigma_w=np.sqrt(sw2), sigma_b=np.sqrt(sb2))
    fc = forward_corrections(net, inputs.gaussian(q))
    expected = 3 * sw2**2 * (2 * q * q / n0) / (sw2 * q + sb2) ** 2
    assert fc.z_kurt[0] == pytest.approx(expected, rel=1e-9)
    assert fc.z_kurt_mean_field[0] == pytest.approx(expected, rel=1e-9)
    assert forward_corrections(net, inputs.sphere(q)).z_kurt[0] == pytest.approx(0, abs=1e-12)


def test_tanh_width_32_kurtosis_is_the_four_point_vertex():
    """Sphere inputs: at n = ∞ z is Gaussian (excess kurtosis 0); at width 32 the kernel's
    fluctuation makes it 3V/K² ≈ 0.04–0.09, within 3 SE of Monte Carlo at every layer."""
    widths = (16,) + (32,) * 6 + (1,)
    net = ds.MLP(widths, activation="tanh", sigma_w=np.sqrt(1.76), sigma_b=np.sqrt(0.05))
    mc = _mc(net, inputs.sphere(), 3000, 8, 1)
    fc = forward_corrections(net, inputs.sphere())
    far = 0
    for l in range(1, 8):
        e, se = mc.loc[(l, "z_kurt"), "estimate"], mc.loc[(l, "z_kurt"), "std_error"]
        assert abs(e - fc.z_kurt[l - 1]) < 3 * se, (l, e, fc.z_kurt[l - 1], se)
        far += abs(e - fc.z_kurt_mean_field[l - 1]) > 5 * se
    assert far >= 4


@pytest.mark.slow
def test_forward_rows_on_the_issue_grid():
    """Activations × sphere/Gaussian inputs × n₀ ∈ {16, 512} × μ_w ∈ {0, 0.5, 1}, width 64,
    depth 6, n_L = 1, constant targets: the finite-width z_var and z_mean rows agree with
    Monte Carlo within 3 SE on ≥ 98 % of rows and beyond 5 SE on none, where mean field
    misses z_var by more than 5 SE on many rows. z_kurt (first order) is beyond 5 SE on none."""
    sw2 = dict(tanh=1.5, relu=1.8, gelu=1.5, erf=1.5, sin=1.5, softplus=1.2, sigmoid=3.0)
    zs = {"finite-width": {"z_var": [], "z_mean": [], "z_kurt": []}, "mean-field": {"z_var": []}}
    for act in sw2:
        for law in (inputs.sphere(), inputs.gaussian()):
            for n0 in (16, 512):
                for mw in (0.0, 0.5, 1.0):
                    net = ds.MLP(
                        (n0,) + (64,) * 5 + (1,),
                        activation=act,
                        sigma_w=np.sqrt(sw2[act]),
                        sigma_b=np.sqrt(0.05),
                        mu_w=mw,
                    )
                    tg = targets.constant(0.5)
                    est = ds.estimate(net, law, tg, n_networks=600, batch=8, seed=2)
                    mc = est.per_layer()
                    mc = mc[mc.unit == -1].set_index(["layer", "statistic"])
                    p = T.predict(net, law, tg, finite_width=True)
                    for r in p.itertuples():
                        if r.statistic in zs.get(r.assumption, {}):
                            e, se = mc.loc[(r.layer, r.statistic), ["estimate", "std_error"]]
                            zs[r.assumption][r.statistic].append((e - r.prediction) / se)
    for stat in ("z_var", "z_mean"):
        z = np.abs(zs["finite-width"][stat])
        assert np.mean(z < 3) >= 0.98 and not np.any(z > 5), (stat, np.sort(z)[-5:])
    assert not np.any(np.abs(zs["finite-width"]["z_kurt"]) > 5)
    assert np.sum(np.abs(zs["mean-field"]["z_var"]) > 5) >= 10


def test_relu_delta_sq_one_hidden_layer_by_hand():
    """δ⁽¹⁾ = D w g, g = w·relu(z): E‖δ⁽¹⁾‖² = σ⁴K₁(n₁ + 5)/(4n₁) by Wick (E w⁴ = 3σ⁴/n₁²)."""
    from deltastats.theory.finite_width import relu_delta_sq

    n0, n1, q0, s2 = 5, 7, 1.3, 1.7
    got = relu_delta_sq((n0, n1, 1), np.sqrt(s2), n0 * q0)
    K1 = s2 * q0
    assert got[0] * n1 == pytest.approx(s2**2 * K1 * (n1 + 5) / (4 * n1), rel=1e-13)
    assert got[1] == pytest.approx(s2 * K1 / 2 * n1 / n1, rel=1e-13)  # E g² = σ²E‖h‖²/n₁
    # n → ∞: mean field (B3)
    wide = (16,) + (10**6,) * 4 + (1,)
    net = ds.MLP(wide, activation="relu", sigma_w=np.sqrt(2.0))
    mf = T.backward_moments(net, inputs.sphere()).delta_sq
    np.testing.assert_allclose(relu_delta_sq(wide, np.sqrt(2.0), 16.0), mf, rtol=1e-4)


@pytest.mark.parametrize("n_out", [1, 4])
def test_relu_finite_width_delta_sq_matches_monte_carlo_where_mean_field_is_far_off(n_out):
    """Width 32, depth 7, He init, zero targets: mean field is 40–70 % low at layer 1 (the
    'e^{3β}' gap); the exact recursion agrees within 3 SE at every layer."""
    widths = (16,) + (32,) * 6 + (n_out,)
    net = ds.MLP(widths, activation="relu", sigma_w=np.sqrt(2.0))
    law = inputs.gaussian()
    mc = _mc(net, law, 6000, 4, 3)
    p = T.predict(net, law, finite_width=True)
    fw = p[p.assumption == "finite-width"].set_index(["layer", "statistic"]).prediction
    mf = p[p.assumption == "gaussian"].set_index(["layer", "statistic"]).prediction
    for l in range(1, 8):
        e, se = mc.loc[(l, "delta_sq"), "estimate"], mc.loc[(l, "delta_sq"), "std_error"]
        assert abs(e - fw[(l, "delta_sq")]) < 3 * se, (l, e, fw[(l, "delta_sq")], se)
    e1, se1 = mc.loc[(1, "delta_sq"), "estimate"], mc.loc[(1, "delta_sq"), "std_error"]
    assert e1 / mf[(1, "delta_sq")] > 1.3 and (e1 - mf[(1, "delta_sq")]) / se1 > 5


def test_relu_finite_width_grad_w_sq_matches_monte_carlo():
    """Per-sample E‖∂L/∂W⁽ˡ⁾‖² = E‖h⁽ˡ⁻¹⁾‖⁴(σ²/n)a_l exactly (B = 1), width 64, depth 5:
    within 3 SE at every layer where mean field is more than 5 SE below. (At width 32 the
    per-sample norms are so heavy-tailed that 6000 networks under-estimate even E g².)"""
    from deltastats.theory.finite_width import relu_grad_w_sq

    widths = (16,) + (64,) * 4 + (1,)
    net = ds.MLP(widths, activation="relu", sigma_w=np.sqrt(2.0))
    law = inputs.sphere()
    mc = _mc(net, law, 10000, 1, 5)
    p = T.predict(net, law, finite_width=True)
    fw = p[p.assumption == "finite-width"].set_index(["layer", "statistic"]).prediction
    mf = p[p.assumption == "mean-field"].set_index(["layer", "statistic"]).prediction
    np.testing.assert_allclose(
        [fw[(l, "grad_w_sq")] for l in range(1, 6)],
        relu_grad_w_sq(widths, np.sqrt(2.0), 16.0**2),  # sphere: ‖x‖² = n₀q₀ exactly
        rtol=1e-12,
    )
    far = 0
    for l in range(1, 6):
        e, se = mc.loc[(l, "grad_w_sq"), "estimate"], mc.loc[(l, "grad_w_sq"), "std_error"]
        assert abs(e - fw[(l, "grad_w_sq")]) < 3 * se, (l, e, fw[(l, "grad_w_sq")], se)
        far += (e - mf[(l, "grad_w_sq")]) / se > 5
    assert far >= 3


def test_depth_200_with_finite_width_is_finite_where_defined():
    """Past overflow of the kernel the 1/n rows are left out, never NaN; exact ReLU rows stay."""
    for act, sw in (("relu", 2.5), ("tanh", 0.5)):
        net = ds.MLP((16,) + (16,) * 199 + (4,), activation=act, sigma_w=sw, sigma_b=0.0)
        p = T.predict(net, finite_width=True)
        fw = p[p.assumption == "finite-width"]
        assert not p.prediction.isna().any() and len(fw) > 0
        assert np.all(np.isfinite(fw.prediction[fw.statistic.str.startswith("log")]))


def test_verdicts_are_held_against_the_most_complete_prediction():
    import pandas as pd

    from deltastats import theory as T

    relu = ds.MLP((8, 16, 16, 1), activation="relu", sigma_w=2**0.5)
    full = T.predict(relu, finite_width=True)
    best = T.for_verdicts(full).set_index(["layer", "statistic"])
    row = best.loc[(1, "delta_sq")]
    assert row.assumption == "finite-width" and row.testable and row.note == ""
    gauss = full[
        (full.layer == 1) & (full.statistic == "delta_sq") & (full.assumption == "gaussian")
    ]
    assert row.prediction_infinite_width == gauss.prediction.iloc[0] != row.prediction
    assert not best.index.duplicated().any()  # one prediction per (layer, statistic)

    # a tanh output: the forward 1/n terms are derived, the backward ones are not
    tanh = ds.MLP((8, 16, 16, 1), activation="tanh", output_activation="tanh")
    best = T.for_verdicts(T.predict(tanh, finite_width=True)).set_index(["layer", "statistic"])
    assert best.loc[(1, "z_var"), "assumption"] == "finite-width"
    sq = best.loc[(1, "delta_sq")]
    assert sq.assumption == "gaussian" and not sq.testable and "not derived" in sq.note
    est = pd.DataFrame(
        dict(
            layer=[1, 1],
            statistic=["delta_sq", "z_var"],
            estimate=[sq.prediction * 3, 9.0],
            std_error=1e-6,
            n_networks=100,
        )
    )
    comp = ds.compare(est, best.reset_index()).set_index("statistic")
    assert comp.loc["delta_sq", "verdict"] == "no verdict"  # 1/n term not derived: not judged
    assert comp.loc["z_var", "verdict"] == "disagrees"
    # at infinite width (finite_width=False) every row is testable
    assert T.for_verdicts(T.predict(tanh), finite_width=False)["testable"].all()


def test_finite_width_rows_only_where_derived_and_compare_refuses_two_per_row():
    import pandas as pd

    from deltastats import theory as T

    for init in ("orthogonal", "uniform"):  # the 1/n terms are derived for Gaussian weights
        p = T.predict(ds.MLP((8, 8, 8, 1), activation="relu", init=init), finite_width=True)
        assert "finite-width" not in set(p["assumption"])
    relu = ds.MLP((8, 8, 8, 8), activation="relu", sigma_w=2**0.5)
    p = T.predict(relu, finite_width=True)
    fw = set(p.loc[p["assumption"] == "finite-width", "statistic"])
    # E δ² exact (relu_delta_sq); E δ ≠ 0 at finite width, from backward_corrections
    assert {"delta_sq", "delta_mean", "delta_var"} <= fw
    est = pd.DataFrame(dict(layer=[1], statistic="delta_sq", estimate=1.0, std_error=0.1))
    with pytest.raises(ValueError, match="for_verdicts"):
        ds.compare(est, p)
    # a saved table (with its own theory columns) can be compared again
    first = ds.compare(est, T.for_verdicts(p))
    again = ds.compare(first, T.for_verdicts(p))
    assert again["verdict"].tolist() == first["verdict"].tolist()
