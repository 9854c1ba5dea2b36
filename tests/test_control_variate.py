"""delta_sq_cv: the control variate of deltastats.stats.controls keeps coverage, lowers the SE
and is bit-for-bit chunk invariant."""

import numpy as np
import pytest

import deltastats as ds
from deltastats import inputs, targets
from deltastats.accumulators import BackpropAccumulator
from deltastats.estimators import summarize
from deltastats.model.networks import Params
from deltastats.stats import controls
from deltastats.stats.design import Design

STATS = ["delta_sq", "delta_sq_cv"]


def _rows(table, stat):
    return table[(table.statistic == stat) & (table.unit == -1)].sort_values("layer")


def test_control_matches_numpy_and_has_its_exact_mean():
    # μ_w ≠ 0 exercises the (N, S) recursion (R); the chain norms against plain matmuls.
    net = ds.MLP((3, 4, 5, 2), activation="linear", mu_w=1.5, sigma_w=0.7)
    M = 20000
    W = net.sample(M, 3).weights
    growth = controls.chain_growth(net)
    c = controls.control(net, W, growth)
    A, norms = np.broadcast_to(np.eye(2), (M, 2, 2)), {3: np.full(M, 2.0)}
    for k in range(3, 0, -1):  # A_{k−1} = A_k W⁽ᵏ⁾
        A = A @ W[k - 1]
        norms[k - 1] = (A**2).sum(axis=(1, 2))
    expected = {3: 2.0}
    for k in range(3, 0, -1):
        expected[k - 1] = expected[k] * growth[k - 1]
    rel = {k: norms[k] / expected[k] - 1 for k in norms}
    np.testing.assert_allclose(c, np.stack([rel[l] + rel[0] for l in (1, 2, 3)], 1), atol=1e-12)
    # E c = 0 exactly: the Monte Carlo mean is 0 within 4 standard errors.
    assert np.all(np.abs(c.mean(0)) < 4 * c.std(0) / np.sqrt(M))
    assert controls.chain_growth(ds.MLP((3, 3, 1), init="orthogonal")) is None


@pytest.fixture(scope="module")
def linear_runs():
    """200 replications of M = 200 deep-linear networks × B = 8 inputs (one draw, split).

    Width 16: at width 8 the per-network E[δ²] is so heavy-tailed that M = 100 under-covers
    for plain delta_sq too (≈ 0.87); the control variate adds an O(1/M) bias from β̂."""
    net = ds.MLP((16, 16, 16, 1), activation="linear", sigma_w=1.0, sigma_b=0.3)
    M, R, B = 200, 200, 8
    params = net.sample(M * R, 11)
    x = inputs.gaussian(1.0).sample(16, B, 11, n_networks=M * R)
    y = targets.gaussian(0.5).sample(x, 1, 11)
    trace = ds.backprop(net, params, x, y)
    from tests.test_estimators import _slice

    tables = []
    for r in range(R):
        s = slice(r * M, (r + 1) * M)
        acc = BackpropAccumulator(net, B, control_variate=True)
        p = Params(tuple(w[s] for w in params.weights), tuple(b[s] for b in params.biases))
        acc.update(_slice(trace, s), params=p)
        tables.append(summarize(acc, statistics=STATS).table)
    truth = ds.theory.linear_exact(net, inputs.gaussian(1.0), targets.gaussian(0.5))
    return tables, truth.delta_norm_sq / np.array(net.widths[1:])


def test_cv_coverage_and_bias_on_the_exact_linear_case(linear_runs):
    tables, truth = linear_runs
    cv = np.stack([_rows(t, "delta_sq_cv") for t in tables])  # (R, L, columns)
    cols = list(tables[0].columns)
    est = cv[..., cols.index("estimate")].astype(float)
    lo, hi = (cv[..., cols.index(k)].astype(float) for k in ("ci_low", "ci_high"))
    rate = ((lo <= truth) & (truth <= hi)).mean(axis=0)
    assert np.all((rate >= 0.91) & (rate <= 0.985)), rate
    # Unbiased within its SE: the mean over 200 replications is within 3 SE of the truth.
    se_mean = est.std(axis=0, ddof=1) / np.sqrt(est.shape[0])
    assert np.all(np.abs(est.mean(axis=0) - truth) < 3 * se_mean), (est.mean(0), truth)
    # And it is more precise than delta_sq on the same networks (layer 3 is the output).
    se = {s: np.stack([_rows(t, s).std_error.to_numpy() for t in tables]) for s in STATS}
    gain = (se["delta_sq"] ** 2).mean(0) / (se["delta_sq_cv"] ** 2).mean(0)
    assert np.all(gain > 1.5), gain


def test_cv_lowers_the_se_of_a_tanh_net():
    net = ds.MLP((16,) * 5 + (1,), activation="tanh", sigma_w=1.2)
    t = ds.estimate(net, n_networks=200, batch=16, seed=2).per_layer(STATS)
    gain = (_rows(t, "delta_sq").std_error.to_numpy() / _rows(t, "delta_sq_cv").std_error) ** 2
    assert np.all(gain > 1.5), gain
    # Same target: within a few SEs of the plain estimate.
    diff = _rows(t, "delta_sq").estimate.to_numpy() - _rows(t, "delta_sq_cv").estimate
    assert np.all(np.abs(diff) < 4 * _rows(t, "delta_sq").std_error.to_numpy())


def test_cv_is_chunk_and_merge_invariant_bit_for_bit():
    net = ds.MLP((5, 7, 7, 2), activation="tanh", mu_w=0.5)
    d = Design(net, n_networks=90, batch=8, seed=5)  # n_L = 2 ≤ B/4: delta_sq_cv is kept

    def acc_of(start, stop, sizes, shifts=None):
        acc = d.accumulator(start, shifts)
        a = start
        for size in sizes:
            params, x, trace = d.trace(a, size)
            acc.update(trace, params=params, x=x)
            a += size
        assert a == stop
        return acc

    one = acc_of(0, 90, [90])
    split = acc_of(0, 37, [10, 27]).merge(acc_of(37, 90, [20, 33], one.shifts))
    a, b = (summarize(x, statistics="delta_sq_cv").table for x in (one, split))
    assert len(a) == 3 and np.array_equal(a.to_numpy(), b.to_numpy())
    for k in ("cv/1/pool", "cv/3/pool"):
        assert np.array_equal(one.summary().mean[k], split.summary().mean[k])
    # Default estimate: the same bits whatever the chunk.
    e1, e2 = (ds.estimate(net, n_networks=90, batch=8, seed=5, chunk=c) for c in (90, 16))
    assert e1.per_layer("delta_sq_cv").equals(e2.per_layer("delta_sq_cv"))


def test_cv_absent_without_a_known_control_mean():
    net = ds.MLP((4, 4, 1), init="orthogonal")
    with pytest.warns(ds.FewNetworksWarning):
        est = ds.estimate(net, n_networks=20, batch=4)
    assert est.per_layer("delta_sq_cv").empty
    with pytest.raises(ValueError, match="control_variate"):
        BackpropAccumulator(net, 4, control_variate=True)
    acc = BackpropAccumulator(ds.MLP((4, 4, 1)), 4, control_variate=True)
    _, x, trace = Design(ds.MLP((4, 4, 1)), n_networks=2, batch=4).trace(0, 2)
    with pytest.raises(ValueError, match="params"):
        acc.update(trace, x=x)


@pytest.mark.parametrize(
    "init, dtype", [("gaussian", np.float64), ("gaussian", np.float32), ("uniform", np.float64)]
)
def test_backward_rows_drawn_with_the_weights_are_the_second_pass_bits(init, dtype):
    # Drawing with backward_scales changes no parameter; its rows are the scaled backward
    # products (numpy to rounding) and the control from them has the bits of the second pass
    # over the weights, for any split of the networks and any thread count.
    net = ds.MLP((7, 33, 20, 2), sigma_w=1.3, mu_w=0.4, init=init)
    growth = controls.chain_growth(net)
    scales = controls.backward_scales(growth)
    plain = net.sample(9, 5, start=3, dtype=dtype)
    drawn = net.sample(9, 5, start=3, dtype=dtype, backward_scales=scales)
    for a, b in zip(plain.weights + plain.biases, drawn.weights + drawn.biases):
        assert a.tobytes() == b.tobytes()
    assert drawn.backward_scales == scales and plain.backward_rows is None
    A = np.broadcast_to(np.eye(2), (9, 2, 2))
    for k in range(net.depth, 0, -1):
        A = scales[k - 1] * (A @ drawn.weights[k - 1].astype(np.float64))
        np.testing.assert_allclose(drawn.backward_rows[k - 1], A, rtol=1e-13, atol=1e-13)
    second_pass = controls.control(net, plain.weights, growth)
    fused = controls.control(net, drawn.weights, growth, drawn.backward_rows)
    assert fused.tobytes() == second_pass.tobytes()
    halves = [
        net.sample(n, 5, start=s, dtype=dtype, backward_scales=scales) for s, n in ((3, 4), (7, 5))
    ]
    for k in range(net.depth):
        joined = np.concatenate([h.backward_rows[k] for h in halves])
        assert joined.tobytes() == drawn.backward_rows[k].tobytes()


def test_fused_rows_with_threads_and_in_the_design():
    from deltastats.model import philox

    net = ds.MLP((16,) + (64,) * 4 + (1,), sigma_w=1.4)
    growth = controls.chain_growth(net)
    scales = controls.backward_scales(growth)
    one = net.sample(40, 2, backward_scales=scales)
    w = np.empty_like(one.weights[2])
    a_out = np.empty((40, 1, 64))
    key = ds.model.seeding.stream_key(2, "params")
    tensor = ds.model.seeding.param_tensor(3, "weight")
    std = float(net.layer_sigma_w[2] / 8.0)
    for threads in (1, 2):
        philox.network_normal(
            w, key, tensor, 0, 0.0, std, threads=threads,
            times=(one.backward_rows[3], a_out, scales[2]),
        )  # fmt: skip
        assert w.tobytes() == one.weights[2].tobytes()
        assert a_out.tobytes() == one.backward_rows[2].tobytes()
    with pytest.raises(ValueError, match="times needs"):
        philox.network_normal(w, key, tensor, 0, times=(one.backward_rows[3][:3], a_out, 1.0))
    with pytest.raises(ValueError, match="backward_scales must be 5 finite"):
        net.sample(2, 0, backward_scales=[1.0, 2.0])
    # The design draws the rows for its accumulator (delta_sq_cv), which then uses them.
    design = Design(net, inputs.gaussian(), targets.zeros(), n_networks=40, batch=8, seed=2)
    params, x, y = design.draw(0, 40)
    assert params.backward_scales == scales
    c = controls.control(net, params.weights, growth, params.backward_rows)
    assert c.tobytes() == controls.control(net, params.weights, growth).tobytes()
