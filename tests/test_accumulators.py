"""Accumulators: exact moments, stability under a 1e8 offset, chunk/merge invariance, bad input."""

import numpy as np
import pandas as pd
import pytest

import deltastats as ds
from deltastats import estimators as E
from deltastats import inputs, targets
from deltastats.accumulators import BackpropAccumulator, FeatureAccumulator, merge
from deltastats.engine import Trace
from deltastats.stats import controls
from deltastats.stats.design import Design


def _fake_trace(x, loss=None, grad=None):
    """A one-layer 'trace' whose δ and z are the synthetic array x of shape (M, B, n)."""
    M, B, n = x.shape
    loss = np.zeros((M, B)) if loss is None else loss
    grad = np.zeros((M, n, 1)) if grad is None else grad
    return Trace(
        z=(x,),
        h=(x,),
        delta=(x,),
        loss=loss,
        grad_weights=(grad,),
        grad_biases=(np.zeros((M, n)),),
        overflow=np.zeros(M, dtype=bool),
        overflow_layer=np.zeros(M, dtype=np.int64),
    )


def _summarize_array(x, method="clt", **kw):
    M, B, n = x.shape
    net = ds.MLP((1, n), activation="linear")
    acc = BackpropAccumulator(net, B, **kw)
    acc.update(_fake_trace(x))
    return E.summarize(acc, method=method), acc


def _value(est, stat, unit=-1, layer=1):
    return est.result(stat, layer, unit).estimate


# -- exact moments on synthetic arrays ---------------------------------------------------------
def _two_level_array(rng, M=40, n=3):
    """x_mbj = a_m + e_mbj: network effects a_m = ±1 (balanced), and every network's batch a
    permutation of the multiset {0, 0, 0, 4} (mean 1, var 3, μ₃ = 6, μ₄ = 21)."""
    base = np.array([0.0, 0.0, 0.0, 4.0])
    a = np.where(np.arange(M) % 2 == 0, 1.0, -1.0)
    e = np.stack([np.stack([rng.permutation(base) for _ in range(n)], -1) for _ in range(M)])
    return a[:, None, None] + e


def test_known_moments_are_exact():
    """Pooled over networks and inputs: x = a + e with a = ±1 (var 1, symmetric, kurtosis
    E a⁴ = 1) independent of e, so mean 1, var 1 + 3 = 4, μ₃ = 6, μ₄ = E a⁴ + 6 E a² μ₂(e)
    + μ₄(e) = 1 + 18 + 21 = 40."""
    x = _two_level_array(np.random.default_rng(0))
    M, B, n = x.shape
    est, _ = _summarize_array(x)
    for unit in (-1, 0, 2):
        assert _value(est, "delta_mean", unit) == pytest.approx(1.0, rel=1e-13)
        assert _value(est, "delta_sq", unit) == pytest.approx(5.0, rel=1e-13)
        assert _value(est, "delta_skew", unit) == pytest.approx(6 / 4**1.5, rel=1e-12)
        assert _value(est, "delta_kurt", unit) == pytest.approx(40 / 16 - 3, rel=1e-12)
        # (V) adds the unbiasing term (q̄ − p̄₁²)/(M − 1) = Var_plugin(a)/(M − 1).
        assert _value(est, "delta_var", unit) == pytest.approx(4.0 + 1.0 / (M - 1), rel=1e-13)
        assert _value(est, "z_kurt", unit) == pytest.approx(40 / 16 - 3, rel=1e-12)
    # ANOVA components per unit: σ̂²_W = B/(B−1)·3, σ̂²_B = M/(M−1)·1 − σ̂²_W/B.
    s_w = B / (B - 1) * 3.0
    s_b = M / (M - 1) * 1.0 - s_w / B
    icc = s_b / (s_b + s_w)
    assert _value(est, "icc", 0) == pytest.approx(icc, rel=1e-12)
    assert _value(est, "design_effect", 1) == pytest.approx(1 + (B - 1) * icc, rel=1e-12)


def test_accumulator_matches_direct_numpy_on_random_data():
    rng = np.random.default_rng(1)
    x = rng.gamma(2.0, size=(57, 6, 3)) + rng.normal(size=(57, 1, 3))
    est, acc = _summarize_array(x)
    flat = x.reshape(-1, 3)
    mu = flat.mean(0)
    c = flat - mu
    m2, m3, m4 = (c**2).mean(0), (c**3).mean(0), (c**4).mean(0)
    for j in range(3):
        assert _value(est, "delta_mean", j) == pytest.approx(mu[j], rel=1e-13)
        assert _value(est, "delta_skew", j) == pytest.approx(m3[j] / m2[j] ** 1.5, rel=1e-11)
        assert _value(est, "delta_kurt", j) == pytest.approx(m4[j] / m2[j] ** 2 - 3, rel=1e-11)
    # Between-network covariance of per-network means → CLT standard error of the mean.
    pm = x.mean(axis=1)
    se = pm.std(axis=0, ddof=1) / np.sqrt(x.shape[0])
    for j in range(3):
        assert est.result("delta_mean", 1, j).standard_error == pytest.approx(se[j], rel=1e-11)
    # Pooled layer rows: the distribution of a random unit.
    assert _value(est, "delta_mean") == pytest.approx(x.mean(), rel=1e-13)
    # E‖δ‖² sums the squares over the layer's units: n_l times the pooled E[δ²].
    assert _value(est, "delta_norm_sq") == pytest.approx((x**2).sum(axis=-1).mean(), rel=1e-13)
    pool = x.reshape(57, -1)
    c = x.ravel() - x.mean()
    assert _value(est, "delta_kurt") == pytest.approx(
        (c**4).mean() / (c**2).mean() ** 2 - 3, rel=1e-11
    )
    del pool


def test_offset_1e8_is_stable():
    """Shifted features: data offset by 10⁸ give the same moments (raw powers would give
    10³²-sized cancellation and garbage)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 8, 2)) * np.array([1.0, 0.5]) + rng.normal(size=(64, 1, 2))
    a, _ = _summarize_array(x)
    b, _ = _summarize_array(x + 1e8)
    for stat in ("delta_var", "delta_skew", "delta_kurt", "icc"):
        for unit in (-1, 0, 1):
            va, vb = _value(a, stat, unit), _value(b, stat, unit)
            assert vb == pytest.approx(va, rel=1e-6, abs=1e-6), (stat, unit)
            sa = a.result(stat, 1, unit).standard_error
            sb = b.result(stat, 1, unit).standard_error
            assert sb == pytest.approx(sa, rel=1e-5), (stat, unit)
    assert _value(b, "delta_mean", 0) == pytest.approx(_value(a, "delta_mean", 0) + 1e8, rel=1e-15)
    # What a naive raw-moment formula would have done:
    naive = np.mean((x + 1e8) ** 2) - np.mean(x + 1e8) ** 2
    assert abs(naive - np.var(x)) > 1e-3 * np.var(x)


# -- chunking and merging ----------------------------------------------------------------------
def _random_features(rng, M):
    return {
        "a": rng.normal(size=(M, 3, 4)) + 1e3,
        "b": rng.standard_t(3, size=(M, 1, 2)),
    }


def _assert_same_summary(s, t):
    assert s.count == t.count and s.n_seen == t.n_seen
    np.testing.assert_array_equal(s.group_count, t.group_count)
    for k in s.mean:
        np.testing.assert_array_equal(s.mean[k], t.mean[k])
        np.testing.assert_array_equal(s.cov[k], t.cov[k])
        np.testing.assert_array_equal(s.group_sum[k], t.group_sum[k])
        if s.per_network is not None:
            np.testing.assert_array_equal(s.per_network[k], t.per_network[k])


def _feed(acc, feats, valid, start, stop, sizes):
    i = start
    for size in sizes:
        j = min(i + size, stop)
        if j > i:
            acc.update({k: v[i:j] for k, v in feats.items()}, valid[i:j])
        i = j
    while i < stop:
        j = min(i + 13, stop)
        acc.update({k: v[i:j] for k, v in feats.items()}, valid[i:j])
        i = j
    return acc


@pytest.mark.parametrize("block", [1, 8, 32])
def test_any_chunking_and_merge_order_is_bit_identical(block):
    rng = np.random.default_rng(3)
    M = 203
    feats = _random_features(rng, M)
    valid = rng.random(M) > 0.05
    kw = dict(block=block, n_groups=7, keep_networks=True)
    ref = _feed(FeatureAccumulator(**kw), feats, valid, 0, M, [M]).summary()
    for sizes in ([1] * 40, [7, 50, 3], [64, 64, 64], [M]):
        acc = _feed(FeatureAccumulator(**kw), feats, valid, 0, M, sizes)
        _assert_same_summary(acc.summary(), ref)
    # Contiguous pieces (not block-aligned), merged in several orders and trees.
    cuts = [0, 50, 51, 120, 160, M]
    parts = [
        _feed(FeatureAccumulator(a, **kw), feats, valid, a, b, [5, 11])
        for a, b in zip(cuts[:-1], cuts[1:])
    ]
    p0, p1, p2, p3, p4 = parts
    trees = [
        merge(merge(merge(merge(p0, p1), p2), p3), p4),
        merge(p0, merge(p1, merge(p2, merge(p3, p4)))),
        merge(merge(p4, p3), merge(merge(p1, p2), p0)),
        merge(merge(merge(p2, p1), p0), merge(p4, p3)),
    ]
    for acc in trees:
        _assert_same_summary(acc.summary(), ref)
    # Against direct numpy (to rounding, 1e-12 relative).
    for k, f in feats.items():
        f = f[valid]
        np.testing.assert_allclose(ref.mean[k], f.mean(axis=0), rtol=1e-12)
        d = f - f.mean(axis=0)
        cov = np.einsum("msi,msj->sij", d, d) / (len(f) - 1)
        np.testing.assert_allclose(ref.cov[k], cov, rtol=1e-10, atol=1e-12 * np.abs(cov).max())
    assert ref.count == valid.sum() and ref.n_seen == M
    assert ref.group_count.sum() == valid.sum()


def test_backprop_accumulator_merge_equals_one_pass():
    net = ds.MLP((3, 4, 2), activation="tanh", mu_w=0.5, sigma_w=1.3, sigma_b=0.1)
    B = 5

    def trace(start, M):
        p = net.sample(M, 11, start=start)
        x = inputs.gaussian().sample(3, B, 11, n_networks=M, start=start)
        y = targets.gaussian().sample(x, 2, 11, start=start)
        return ds.backprop(net, p, x, y)

    one = BackpropAccumulator(net, B)
    one.update(trace(0, 90))
    first = BackpropAccumulator(net, B)
    first.update(trace(0, 37))
    second = BackpropAccumulator(net, B, start=37, shifts=first.shifts)
    second.update(trace(37, 20))
    second.update(trace(57, 33))
    both = second.merge(first)
    a = E.summarize(one).table
    b = E.summarize(both).table
    np.testing.assert_array_equal(
        a.drop(columns="statistic").to_numpy(), b.drop(columns="statistic").to_numpy()
    )
    # Without shared shifts the summaries are not combinable: refused.
    other = BackpropAccumulator(net, B, start=37)
    other.update(trace(37, 53))
    with pytest.raises(ValueError, match="shifts"):
        first.merge(other)


def test_trace_without_gradients_gives_the_gradient_features_from_delta_and_h():
    net = ds.MLP((3, 6, 5, 2), activation="tanh", sigma_w=1.3, sigma_b=0.1)
    B = 4
    p = net.sample(30, 5)
    x = inputs.gaussian().sample(3, B, 5, n_networks=30)
    y = targets.gaussian().sample(x, 2, 5)
    full, light = BackpropAccumulator(net, B), BackpropAccumulator(net, B)
    full.update(ds.backprop(net, p, x, y))
    light.update(ds.backprop(net, p, x, y, grads=False), x=x)
    assert full.shifts.keys() == light.shifts.keys()
    for k in full.shifts:  # network 0's gradient is formed as the engine forms it: same bits
        np.testing.assert_array_equal(full.shifts[k], light.shifts[k])
    a, b = E.summarize(full).table, E.summarize(light).table
    grad = a["statistic"].str.startswith("grad_w").to_numpy()
    assert grad.any()
    cols = ["estimate", "std_error"]
    np.testing.assert_array_equal(a.loc[~grad, cols].to_numpy(), b.loc[~grad, cols].to_numpy())
    np.testing.assert_allclose(
        a.loc[grad, cols].to_numpy(), b.loc[grad, cols].to_numpy(), rtol=1e-12, atol=1e-16
    )
    with pytest.raises(ValueError, match="without gradients"):
        light.update(ds.backprop(net, p, x, y, grads=False))
    with pytest.raises(ValueError, match="without gradients"):
        light.update(ds.backprop(net, p, x, y, grads=False, weight_decay=0.1), x=x)


def test_float32_engine_is_accumulated_in_float64():
    net = ds.MLP((3, 4, 1), activation="tanh", mu_w=0.5)
    e64 = E.estimate(net, n_networks=120, batch=4, seed=0)
    e32 = E.estimate(net, n_networks=120, batch=4, seed=0, dtype=np.float32)
    a, b = e64.per_layer(), e32.per_layer()
    assert b["estimate"].dtype == np.float64
    np.testing.assert_allclose(b["estimate"], a["estimate"], rtol=1e-4, atol=1e-5)


# -- bad input ---------------------------------------------------------------------------------
def test_bad_accumulator_input_raises():
    with pytest.raises(ValueError, match="n_groups"):
        FeatureAccumulator(n_groups=1)
    with pytest.raises(ValueError, match="block"):
        FeatureAccumulator(block=0)
    acc = FeatureAccumulator()
    with pytest.raises(ValueError, match=r"\(M, S, k\)"):
        acc.update({"a": np.zeros((3, 2))})
    acc.update({"a": np.zeros((3, 2, 2))})
    with pytest.raises(ValueError, match="changed"):
        acc.update({"a": np.zeros((3, 1, 2))})
    far = FeatureAccumulator(10)
    far.update({"a": np.zeros((3, 2, 2))})
    with pytest.raises(ValueError, match="contiguous"):
        acc.merge(far)
    with pytest.raises(ValueError, match="empty"):
        FeatureAccumulator().summary()
    net = ds.MLP((2, 2, 1))
    with pytest.raises(ValueError, match="batch"):
        BackpropAccumulator(net, 0)
    bacc = BackpropAccumulator(net, 3)
    p = net.sample(2, 0)
    x = inputs.gaussian().sample(2, 4, 0, n_networks=2)
    with pytest.raises(ValueError, match="inputs per network"):
        bacc.update(ds.backprop(net, p, x, targets.zeros().sample(x, 1, 0)))


def test_parallel_jobs_with_network0_shifts_reproduce_estimate_exactly():
    """The pattern for parallel runs: shifts from network 0, one accumulator per contiguous
    range of networks, merged in any order → bit-for-bit the sequential estimate()."""
    net = ds.MLP((3, 3, 2), activation="tanh", mu_w=0.7, sigma_w=1.1)
    B, seed, n = 4, 9, 130
    law_x, law_y = inputs.gaussian(), targets.constant(0.3)

    design = Design(net, law_x, law_y, n_networks=n, batch=B, seed=seed)

    def trace(start, M):
        # As estimate() draws and runs the engine (with or without materialized gradients,
        # whose features then come from δ and h, so the inputs go along).
        return design.trace(start, M)

    _, x0, t0 = trace(0, 1)
    shifts = BackpropAccumulator(net, B).compute_shifts(t0, x=x0)
    jobs = []
    cv = controls.enabled(net, B)
    for a, b in ((0, 45), (45, 100), (100, n)):
        acc = BackpropAccumulator(net, B, start=a, shifts=shifts, control_variate=cv)
        pa, xa, ta = trace(a, b - a)
        acc.update(ta, x=xa, params=pa)
        jobs.append(acc)
    merged = merge(jobs[2], merge(jobs[1], jobs[0]))
    got = E.summarize(merged).table
    want = E.estimate(net, law_x, law_y, n_networks=n, batch=B, seed=seed, chunk=17).table
    cols = [c for c in E.COLUMNS if c != "statistic"]
    np.testing.assert_array_equal(got[cols].to_numpy(), want[cols].to_numpy())
    assert (got.statistic == want.statistic).all()
    with pytest.raises(ValueError, match="keep_networks=True"):
        E.summarize(merged, method="bootstrap")


def test_a_feature_stack_and_a_dict_in_any_order_give_the_same_bits():
    from deltastats.stats.stacked import FeatureStack

    rng = np.random.default_rng(5)
    M = 70
    feats = _random_features(rng, M)
    valid = rng.random(M) > 0.1
    kw = dict(block=8, n_groups=3, keep_networks=True)
    ref = _feed(FeatureAccumulator(**kw), feats, valid, 0, M, [M]).summary()
    acc = FeatureAccumulator(**kw)
    acc.update(FeatureStack.of({k: v[:30] for k, v in feats.items()}, 30), valid[:30])
    acc.update({k: feats[k][30:] for k in reversed(list(feats))}, valid[30:])  # other order
    _assert_same_summary(acc.summary(), ref)
    assert list(acc.summary().mean) == list(feats)
    with pytest.raises(ValueError, match="changed between chunks"):
        acc.update({"a": feats["a"][:2]})


def test_first_nonfinite_key_skips_exempt_columns():
    from deltastats.stats.stacked import first_nonfinite_key

    f = np.zeros((4, 9))
    keys = np.array([1, 1, 0, 2, 2, 2, 3, 0, 3])
    f[1, 2] = -np.inf  # exempt column: not counted
    f[2, 4], f[2, 8] = np.nan, np.inf  # keys 2 and 3: the smallest wins
    f[3, 7], f[3, 6] = np.nan, -np.inf
    got = first_nonfinite_key(f, keys, 99)
    np.testing.assert_array_equal(got, [99, 99, 2, 3])


def test_layer_features_in_threads_have_the_serial_bits(monkeypatch):
    """The per-layer feature kernels (and the control variate's weight products) run side by
    side on two cores; every column is computed as in one thread, so the estimates are the
    same bits."""
    import deltastats as ds
    from deltastats import _parallel
    from deltastats._parallel import executor

    net = ds.MLP((6, 20, 20, 20, 1), activation="tanh", sigma_w=1.2)
    tables = []
    for threads in (2, 1):
        monkeypatch.setattr(
            _parallel, "side_pool", lambda t=threads: executor(2) if t == 2 else None
        )
        tables.append(ds.estimate(net, n_networks=150, batch=5, seed=8, chunk=40).table)
    assert "delta_sq_cv" in set(tables[0]["statistic"])
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)


def test_reduction_split_over_arrays_has_the_bits_of_one_call():
    """reduce_rows over two halves of the arrays (what FeatureLayout.reduce runs side by side)
    writes exactly what one call over all arrays writes."""
    from deltastats.stats.stacked import FeatureLayout, reduce_rows

    rng = np.random.default_rng(4)
    lay = FeatureLayout.of({"a": (5, 3), "b": (1, 4), "c": (7, 2)})
    data = rng.standard_normal((9, lay.width))
    rows = np.array([0, 2, 3, 5, 8], dtype=np.int64)
    groups = rows % 3
    shapes = np.array(lay.shapes, dtype=np.int64).reshape(-1, 2)
    outs = []
    for parts in ([(0, -1)], [(0, 1), (1, -1)], [(0, 2), (2, -1)]):
        mean, com = np.full(lay.width, np.nan), np.full(lay.n_comoments, np.nan)
        gsum = np.full((3, lay.width), np.nan)
        for lo, hi in parts:
            reduce_rows(data, rows, groups, lay.offsets, shapes, lay.com_offsets, mean, com,
                        gsum, lo, hi)  # fmt: skip
        outs.append(np.concatenate([mean, com, gsum.ravel()]))
    assert np.isfinite(outs[0]).all()
    for other in outs[1:]:
        np.testing.assert_array_equal(other, outs[0])
    np.testing.assert_allclose(outs[0][: lay.width], data[rows].mean(axis=0), rtol=1e-14)
