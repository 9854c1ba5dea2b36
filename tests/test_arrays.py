"""estimate_arrays / ArrayAccumulator: the engine's numbers on its own trace, independent
references (statsmodels cluster-robust OLS, MixedLM REML), coverage on a random-effects design,
chunking invariance, statistics absent without their pieces, non-finite networks, bad input."""

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import deltastats as ds
from deltastats import inputs, targets

SEED = 3


def _quiet(fn, *args, **kw):
    """Call fn with the few-networks / no-SE warnings silenced (small test designs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ds.FewNetworksWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kw)


def _engine_case(M=150, B=6, seed=SEED):
    net = ds.MLP((5, 8, 7, 3), activation="tanh", mu_w=0.3, sigma_w=1.2, sigma_b=0.1)
    law_x, law_y = inputs.gaussian(), targets.gaussian(0.5)
    p = net.sample(M, seed)
    x = law_x.sample(5, B, seed, n_networks=M)
    y = law_y.sample(x, 3, seed)
    trace = ds.backprop(net, p, x, y)
    return net, law_x, law_y, trace


def _numbers(est):
    return est.table.drop(columns=["statistic", "name"], errors="ignore").to_numpy()


# -- the engine's own trace ---------------------------------------------------------------------
@pytest.mark.parametrize("method", ["clt", "jackknife"])
def test_engine_trace_gives_estimate_bit_for_bit(method):
    net, law_x, law_y, trace = _engine_case()
    ref = ds.estimate(
        net, law_x, law_y, n_networks=150, batch=6, seed=SEED, method=method, chunk=40
    )
    est = ds.estimate_arrays(
        list(trace.delta),
        z=list(trace.z),
        loss=trace.loss,
        grads=list(trace.grad_weights),
        method=method,
    )
    # delta_sq_cv needs the weights (its control), which arrays do not carry: absent there.
    ref = dataclasses.replace(
        ref, table=ref.table[ref.table.statistic != "delta_sq_cv"].reset_index(drop=True)
    )
    assert list(est.table["statistic"]) == list(ref.table["statistic"])
    # estimate() forms the weight-gradient features from δ and h (Gram matrices), the arrays
    # path from the materialized gradients: those agree to rounding, the rest bit for bit.
    grad = ref.table["statistic"].str.startswith("grad_w").to_numpy()
    a, b = _numbers(est), _numbers(ref)
    np.testing.assert_array_equal(a[~grad], b[~grad])
    np.testing.assert_allclose(a[grad], b[grad], rtol=1e-12, atol=1e-15)
    assert (est.n_networks, est.n_inputs, est.n_overflow) == (150, 6, 0)
    # Usable by suggest_allocation exactly like the engine's estimates.
    pd.testing.assert_frame_equal(
        ds.suggest_allocation(est, 1.0, 0.1), ds.suggest_allocation(ref, 1.0, 0.1)
    )


def test_mapping_names_become_a_name_column():
    _, _, _, trace = _engine_case()
    names = ["hidden1", "hidden2", "out"]
    est = ds.estimate_arrays(dict(zip(names, trace.delta)), z=dict(zip(names, trace.z)))
    plain = ds.estimate_arrays(list(trace.delta), z=list(trace.z))
    t = est.per_layer("delta_sq")
    assert list(t.columns[:3]) == ["layer", "name", "unit"]
    assert t[["layer", "name"]].values.tolist() == [[1, "hidden1"], [2, "hidden2"], [3, "out"]]
    np.testing.assert_array_equal(_numbers(est), _numbers(plain))
    assert "name" not in plain.per_layer().columns
    assert est.result("delta_sq", "hidden2") == est.result("delta_sq", 2)
    assert est.per_unit("delta_mean")["name"].iloc[0] == "hidden1"
    with pytest.raises(ValueError, match="no layer named 'hidden9'"):
        est.result("delta_sq", "hidden9")


def test_compare_joins_named_estimates_with_predictions():
    rng = np.random.default_rng(11)
    x = {"a": _random_effects(rng, 150, 6, 3), "b": 2.0 + _random_effects(rng, 150, 6, 2)}
    est = ds.estimate_arrays(x)
    pred = pd.DataFrame(
        {"layer": [1, 2], "statistic": "delta_mean", "prediction": [0.3, 1.0], "assumption": "x"}
    )
    comp = ds.compare(est, pred)
    assert comp["verdict"].tolist() == ["agrees", "disagrees"]  # E x = 0.3 and 2.3
    assert comp["name"].tolist() == ["a", "b"]


# -- independent references ---------------------------------------------------------------------
def _random_effects(rng, M, B, n, mu=0.3, tau=0.8, unit=0.5, df=5):
    """x_mbj = μ + a_m + c_mj + e_mbj: network effect a_m ~ N(0, τ²), unit-within-network
    effect c_mj ~ N(0, unit²), heavy-tailed noise e ~ t_df (df = 5: the fourth moment, which
    the interval of E[x²] needs, is finite). E x = μ and E x² = μ² + τ² + unit² + df/(df − 2)."""
    a = tau * rng.standard_normal((M, 1, 1))
    c = unit * rng.standard_normal((M, 1, n))
    e = rng.standard_t(df, size=(M, B, n))
    return mu + a + c + e


def test_clt_se_of_pooled_mean_is_cluster_robust_ols():
    import statsmodels.api as sm

    rng = np.random.default_rng(0)
    M, B, n = 37, 6, 3
    x = _random_effects(rng, M, B, n)
    est = _quiet(ds.estimate_arrays, [x])
    groups = np.repeat(np.arange(M), B * n)
    for unit in (-1, 0, 2):
        y = x.reshape(-1) if unit == -1 else x[:, :, unit].reshape(-1)
        g = groups if unit == -1 else np.repeat(np.arange(M), B)
        fit = sm.OLS(y, np.ones_like(y)).fit(
            cov_type="cluster", cov_kwds={"groups": g, "use_correction": False}
        )
        r = est.result("delta_mean", 1, unit)
        assert r.estimate == pytest.approx(fit.params[0], rel=1e-13)
        assert r.standard_error == pytest.approx(fit.bse[0] * np.sqrt(M / (M - 1)), rel=1e-10)
        # The interval is t with M − 1 degrees of freedom.
        half = stats.t.ppf(0.975, M - 1) * r.standard_error
        assert r.confidence_interval[1] - r.estimate == pytest.approx(half, rel=1e-12)


def test_icc_equals_mixedlm_reml_on_a_balanced_design():
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(1)
    M, B = 60, 8
    x = 1.0 + 0.7 * rng.standard_normal((M, 1, 1)) + rng.standard_normal((M, B, 1))
    est = _quiet(ds.estimate_arrays, [x])
    df = pd.DataFrame({"y": x.reshape(-1), "g": np.repeat(np.arange(M), B)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.mixedlm("y ~ 1", df, groups=df["g"]).fit(reml=True)
    s_b, s_w = float(fit.cov_re.iloc[0, 0]), float(fit.scale)
    icc = s_b / (s_b + s_w)
    for unit in (-1, 0):  # one unit: pooled and unit rows describe the same signal
        assert est.result("icc", 1, unit).estimate == pytest.approx(icc, rel=1e-5)
        deff = est.result("design_effect", 1, unit).estimate
        assert deff == pytest.approx(1 + (B - 1) * icc, rel=1e-5)
    # The between/within split is far from trivial here: τ² = 0.49 against σ² = 1.
    assert 0.2 < icc < 0.5


def test_coverage_of_95_percent_intervals_on_random_effects_design():
    """400 replications, M = 100 networks × B = 8 inputs × 4 units: the intervals of the
    pooled and per-unit mean and of E[x²] cover their known values within the binomial band;
    intervals that treat the M·B values as independent do not."""
    rng = np.random.default_rng(2)
    R, M, B, n = 400, 100, 8, 4
    mu, tau, unit, df = 0.3, 0.8, 0.5, 5
    truth_sq = mu**2 + tau**2 + unit**2 + df / (df - 2)
    hits = {"mean_pool": 0, "mean_unit": 0, "sq_pool": 0, "naive": 0}
    z = stats.t.ppf(0.975, M - 1)
    for _ in range(R):
        x = _random_effects(rng, M, B, n, mu, tau, unit, df)
        est = ds.estimate_arrays([x], statistics=["delta_mean", "delta_sq"])
        for key, stat, u, truth in (
            ("mean_pool", "delta_mean", -1, mu),
            ("mean_unit", "delta_mean", 1, mu),
            ("sq_pool", "delta_sq", -1, truth_sq),
        ):
            lo, hi = est.result(stat, 1, u).confidence_interval
            hits[key] += lo <= truth <= hi
        col = x[:, :, 1].reshape(-1)  # naive i.i.d. interval of unit 1's mean
        half = z * col.std(ddof=1) / np.sqrt(col.size)
        hits["naive"] += abs(col.mean() - mu) <= half
    lo, hi = stats.binom.ppf([0.0005, 0.9995], R, 0.95) / R
    for key in ("mean_pool", "mean_unit", "sq_pool"):
        assert lo <= hits[key] / R <= hi, (key, hits[key] / R, (lo, hi))
    assert hits["naive"] / R < lo  # design effect 1 + 7·icc, icc = 0.89/(0.89 + 5/3): too narrow


# -- chunking, merging ---------------------------------------------------------------------------
def _own_arrays(rng, M=130, B=5):
    """Two 'layers' of a model that is not an MLP: a (C, H, W) = (2, 3, 2) feature map and a
    vector, with z, loss and gradients of conv-like and LayerNorm-like shapes."""
    d1 = rng.standard_normal((M, B, 2, 3, 2)) * rng.gamma(2.0, size=(M, 1, 1, 1, 1))
    d2 = 0.1 + rng.standard_normal((M, B, 4))
    z1, z2 = rng.standard_normal(d1.shape), 2.0 + rng.standard_normal(d2.shape)
    loss = rng.gamma(2.0, size=(M, B))
    g1, g2 = rng.standard_normal((M, 2, 1, 3, 3)), rng.standard_normal((M, 4))
    return [d1, d2], [z1, z2], loss, [g1, g2]


def _feed(acc, arrays, sizes, start=0):
    delta, z, loss, grads = arrays
    a = start
    for size in sizes:
        b = a + size
        acc.update(
            delta=[d[a:b] for d in delta],
            z=[x[a:b] for x in z],
            loss=loss[a:b],
            grads=[g[a:b] for g in grads],
        )
        a = b
    return acc


def test_any_chunking_and_merge_is_bit_for_bit():
    rng = np.random.default_rng(4)
    arrays = _own_arrays(rng)
    delta, z, loss, grads = arrays
    M = loss.shape[0]
    loss[17, 2] = np.nan  # one excluded network, so blocks with a gap are exercised too
    with pytest.warns(ds.NumericalOverflowWarning, match="1 of 130"):
        ref = ds.estimate_arrays(delta, z=z, loss=loss, grads=grads, method="jackknife")
    for sizes in ([M], [1, 7, 40, 12, 70], [33] * 3 + [31]):
        acc = _feed(ds.ArrayAccumulator(), arrays, sizes)
        with pytest.warns(ds.NumericalOverflowWarning):
            est = acc.result(method="jackknife")
        np.testing.assert_array_equal(_numbers(est), _numbers(ref))
    first = _feed(ds.ArrayAccumulator(), arrays, [50])
    second = _feed(ds.ArrayAccumulator(start=50, shifts=first.shifts), arrays, [20, 60], 50)
    merged = second.merge(first)
    with pytest.warns(ds.NumericalOverflowWarning):
        est = merged.result(method="jackknife")
    np.testing.assert_array_equal(_numbers(est), _numbers(ref))
    assert (est.n_networks, est.n_overflow, est.overflow_layers) == (129, 1, {0: 1})
    # Without shared shifts the summaries are not combinable exactly: refused.
    other = _feed(ds.ArrayAccumulator(start=50), arrays, [80], 50)
    with pytest.raises(ValueError, match="shifts"):
        first.merge(other)


def test_bootstrap_runs_with_kept_networks():
    rng = np.random.default_rng(5)
    x = _random_effects(rng, 120, 4, 2)
    boot = ds.estimate_arrays([x], method="bootstrap", statistics="delta_mean")
    clt = ds.estimate_arrays([x], statistics="delta_mean")
    b, c = boot.result("delta_mean", 1), clt.result("delta_mean", 1)
    assert b.estimate == c.estimate
    assert b.standard_error == pytest.approx(c.standard_error, rel=0.15)
    with pytest.raises(ValueError, match="keep_networks=True"):
        ds.ArrayAccumulator().update(delta=[x]).result(method="bootstrap")


# -- what is estimated --------------------------------------------------------------------------
def test_statistics_need_their_pieces_and_are_absent_otherwise():
    rng = np.random.default_rng(6)
    delta, z, loss, grads = _own_arrays(rng, M=110)
    only_delta = set(ds.estimate_arrays(delta).table["statistic"])
    assert only_delta == {
        "delta_mean",
        "delta_sq",
        "delta_var",
        "delta_skew",
        "delta_kurt",
        "delta_norm_sq",
        "log_delta_norm_sq_mean",
        "log_delta_norm_sq_var",
        "icc",
        "design_effect",
        "delta_sq_icc",
    }
    with_z = set(ds.estimate_arrays(delta, z=z).table["statistic"])
    assert with_z - only_delta == {"z_mean", "z_var", "z_skew", "z_kurt"}
    with_loss = set(ds.estimate_arrays(delta, z=z, loss=loss).table["statistic"])
    assert with_loss - with_z == {"stein_delta_mean", "stein_gap"}
    assert set(ds.estimate_arrays(delta, loss=loss).table["statistic"]) == only_delta
    est = ds.estimate_arrays(delta, grads=[None, grads[1]])
    rows = est.table[est.table["statistic"].str.startswith("grad_w")]
    assert set(rows["layer"]) == {2} and len(rows) == 3
    assert not est.table["estimate"].isna().any()


def test_gradient_statistics_of_any_shape_use_the_actual_entries():
    rng = np.random.default_rng(7)
    delta, _, _, grads = _own_arrays(rng, M=110)
    est = ds.estimate_arrays(delta, grads=grads)
    for layer, g in enumerate(grads, start=1):
        per_net = (g.reshape(g.shape[0], -1) ** 2).sum(axis=1)  # ‖G_m‖², N entries
        r = est.result("grad_w_sq", layer)
        assert r.estimate == pytest.approx(per_net.mean(), rel=1e-12)
        se = per_net.std(ddof=1) / np.sqrt(per_net.size)
        assert r.standard_error == pytest.approx(se, rel=1e-10)
        flat = g.reshape(-1)
        assert est.result("grad_w_mean", layer).estimate == pytest.approx(flat.mean(), abs=1e-14)
    # A (C, H, W) feature map is flattened to C·H·W units, channel-major.
    d1 = delta[0]
    unit = est.per_unit("delta_sq").query("layer == 1")
    assert len(unit) == 12
    np.testing.assert_allclose(
        unit["estimate"].to_numpy(), np.mean(d1**2, axis=(0, 1)).reshape(-1), rtol=1e-12
    )


def test_low_precision_inputs_accumulate_in_float64():
    rng = np.random.default_rng(8)
    x = _random_effects(rng, 120, 6, 3)
    e64 = ds.estimate_arrays([x])
    for dtype in (np.float32, np.float16):
        xd = x.astype(dtype)
        e = ds.estimate_arrays([xd])
        assert e.table["estimate"].dtype == np.float64
        ref = ds.estimate_arrays([xd.astype(np.float64)])  # the same values, in float64
        np.testing.assert_allclose(e.table["estimate"], ref.table["estimate"], rtol=1e-12)
        np.testing.assert_allclose(
            e.per_layer("delta_mean")["estimate"],
            e64.per_layer("delta_mean")["estimate"],
            atol=5e-3,
        )


def test_non_finite_networks_are_excluded_counted_and_warned():
    rng = np.random.default_rng(9)
    delta, z, loss, grads = _own_arrays(rng, M=120)
    delta[1][5, 0, 1] = np.inf
    z[0][9, 3, 0, 0, 0] = np.nan
    grads[1][11, 2] = np.nan
    with pytest.warns(ds.NumericalOverflowWarning, match="non-finite values .* in 3 of 120"):
        est = ds.estimate_arrays(delta, z=z, loss=loss, grads=grads)
    assert est.n_overflow == 3 and est.n_networks == 117
    assert est.overflow_layers == {1: 1, 2: 2}
    assert np.isfinite(est.table["estimate"]).all()
    keep = np.setdiff1d(np.arange(120), [5, 9, 11])
    clean = ds.estimate_arrays(
        [d[keep] for d in delta],
        z=[x[keep] for x in z],
        loss=loss[keep],
        grads=grads and [g[keep] for g in grads],
    )
    np.testing.assert_allclose(
        est.table["estimate"], clean.table["estimate"], rtol=1e-11, atol=1e-13
    )


# -- bad input ------------------------------------------------------------------------------------
def test_bad_input_gives_one_line_errors_naming_the_argument():
    rng = np.random.default_rng(10)
    d = rng.standard_normal((4, 3, 2))
    bad = [
        (dict(delta=[d[:1]]), r"delta holds M = 1 network"),
        (dict(delta=d), r"delta must be a sequence over layers"),
        (dict(delta=[]), r"delta is empty"),
        (dict(delta="abc"), r"delta must be a sequence"),
        (dict(delta=[d, d[:3]]), r"delta\[1\] has \(M, B\) = \(3, 3\)"),
        (dict(delta=[d[0]]), r"delta\[0\] must have shape \(M, B, n_l\)"),
        (dict(delta=[d.astype(int)]), r"delta\[0\] must be a float16, float32 or float64"),
        (dict(delta=[[[[1.0], [2.0, 3.0]]]]), r"delta\[0\] cannot be read as a rectangular array"),
        (dict(delta={"a": d}, z={"b": d}), r"z must have the layers of delta"),
        (dict(delta=[d], z=[d[:, :2]]), r"z\[0\] has shape \(4, 2, 2\)"),
        (dict(delta={"a": d}, z=[d]), r"z is a sequence but delta is a mapping"),
        (dict(delta=[d], loss=d), r"loss must have shape \(M, B\) = \(4, 3\)"),
        (dict(delta=[d], grads=[d[:2]]), r"grads\[0\] must have shape \(M, …\) with M = 4"),
        (dict(delta=[d], grads=[d, d]), r"grads must have one entry per layer"),
        (dict(delta={"a": d}, grads={"c": d}), r"grads has layers \['c'\]"),
        (dict(delta=[d], method="bayes"), r"unknown method 'bayes'"),
        (dict(delta=[d], confidence=1.5), r"confidence must be in \(0, 1\)"),
        (dict(delta=[d], jackknife_groups=1), r"jackknife_groups must be an int >= 2"),
        (dict(delta=[d], statistics="delta_square"), r"unknown statistic 'delta_square'"),
    ]
    for kwargs, message in bad:
        delta = kwargs.pop("delta")
        with pytest.raises(ValueError, match=message) as info:
            ds.estimate_arrays(delta, **kwargs)
        assert "\n" not in str(info.value), str(info.value)
    acc = ds.ArrayAccumulator()
    with pytest.raises(ValueError, match="empty"):
        acc.result()
    acc.update(delta=[d], loss=d[..., 0])
    with pytest.raises(ValueError, match=r"delta has B = 2 inputs per network"):
        acc.update(delta=[d[:, :2]], loss=d[:, :2, 0])
    with pytest.raises(ValueError, match=r"z must be given in every chunk"):
        acc.update(delta=[d], z=[d], loss=d[..., 0])
    with pytest.raises(ValueError, match=r"delta has layers"):
        acc.update(delta=[d, d], loss=d[..., 0])
    with pytest.raises(ValueError, match="jackknife_groups"):
        ds.ArrayAccumulator(jackknife_groups=0)
    nan = ds.ArrayAccumulator()
    nan.update(delta=[np.full((3, 2, 2), np.nan)])
    with pytest.raises(ValueError, match=r"only 0 of 3 networks have finite values"):
        nan.result()
    with pytest.raises(ValueError, match="for arrays of δ .* use deltastats.estimate_arrays"):
        ds.summarize(d)
