"""Engine: δ and gradients against finite differences, a loop reference, and closed forms."""

import numpy as np
import pytest

import deltastats as ds
from deltastats import inputs, targets
from deltastats.activations import ACTIVATIONS

SMOOTH_AND_KINKED = sorted(set(ACTIVATIONS) - {"identity", "swish"})
SHAPES = [(3, 4, 2), (4, 6, 3, 5, 2)]


def _case(widths, act, loss, shared, seed=0, mu_w=0.3, out_act="linear"):
    net = ds.MLP(
        widths, activation=act, output_activation=out_act, sigma_w=1.3, sigma_b=0.2, mu_w=mu_w
    )
    params = net.sample(3, seed)
    x = inputs.gaussian().sample(widths[0], 4, seed, n_networks=None if shared else 3)
    law = targets.one_hot(widths[-1]) if loss == "cross_entropy" else targets.gaussian()
    y = law.sample(x, widths[-1], seed)
    return net, params, x, y


def _with_bias(params, layer, j, eps):
    biases = list(params.biases)
    b = biases[layer].copy()
    b[:, j] += eps
    biases[layer] = b
    return ds.Params(params.weights, tuple(biases))


def _with_weight(params, layer, idx, eps):
    weights = list(params.weights)
    w = weights[layer].copy()
    w[(slice(None), *idx)] += eps
    weights[layer] = w
    return ds.Params(tuple(weights), params.biases)


def _objective(net, params, x, y, loss, lam):
    t = ds.backprop(net, params, x, y, loss=loss, grads=False)
    decay = 0.5 * lam * sum(np.sum(w**2, axis=(1, 2)) for w in params.weights)
    return t.loss, t.loss.mean(axis=1) + decay


def _rel_err(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


@pytest.mark.parametrize("act", SMOOTH_AND_KINKED)
@pytest.mark.parametrize("loss", ["mse", "sum_squares", "cross_entropy"])
@pytest.mark.parametrize("widths", SHAPES)
@pytest.mark.parametrize("shared", [True, False])
def test_delta_matches_finite_differences(act, loss, widths, shared):
    """δ⁽ˡ⁾[m, b, j] = ∂L_b/∂b⁽ˡ⁾_j: the bias enters z_j of every sample with slope 1."""
    net, params, x, y = _case(widths, act, loss, shared)
    trace = ds.backprop(net, params, x, y, loss=loss)
    eps = 1e-5
    for l in range(net.depth):
        fd = np.empty_like(trace.delta[l])
        for j in range(widths[l + 1]):
            up, _ = _objective(net, _with_bias(params, l, j, eps), x, y, loss, 0.0)
            dn, _ = _objective(net, _with_bias(params, l, j, -eps), x, y, loss, 0.0)
            fd[..., j] = (up - dn) / (2 * eps)
        assert _rel_err(trace.delta[l], fd) < 1e-6, (act, loss, widths, l)


@pytest.mark.parametrize("act", ["tanh", "relu", "gelu", "selu"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("lam", [0.0, 0.3])
@pytest.mark.parametrize("shared", [True, False])
def test_weight_and_bias_gradients_match_finite_differences(act, loss, lam, shared):
    widths = (3, 4, 3, 2)
    net, params, x, y = _case(widths, act, loss, shared, seed=1)
    trace = ds.backprop(net, params, x, y, loss=loss, weight_decay=lam)
    eps = 1e-5
    for l in range(net.depth):
        fd = np.empty_like(trace.grad_weights[l])
        for idx in np.ndindex(*fd.shape[1:]):
            _, up = _objective(net, _with_weight(params, l, idx, eps), x, y, loss, lam)
            _, dn = _objective(net, _with_weight(params, l, idx, -eps), x, y, loss, lam)
            fd[(slice(None), *idx)] = (up - dn) / (2 * eps)
        assert _rel_err(trace.grad_weights[l], fd) < 1e-6
        fdb = np.empty_like(trace.grad_biases[l])
        for j in range(widths[l + 1]):
            _, up = _objective(net, _with_bias(params, l, j, eps), x, y, loss, lam)
            _, dn = _objective(net, _with_bias(params, l, j, -eps), x, y, loss, lam)
            fdb[:, j] = (up - dn) / (2 * eps)
        assert _rel_err(trace.grad_biases[l], fdb) < 1e-6


def _reference(net, params, x, y, loss):
    """Plain loops: one network, one sample at a time, vectors only."""
    M, L = params.n_networks, net.depth
    lossf = ds.get_loss(loss)
    out = [np.zeros((M, x.shape[-2], n)) for n in net.widths[1:]]
    for m in range(M):
        for b in range(x.shape[-2]):
            xb = x[b] if x.ndim == 2 else x[m, b]
            yb = y[b] if y.ndim == 2 else y[m, b]
            h, zs = xb, []
            for l in range(L):
                z = params.weights[l][m] @ h + params.biases[l][m]
                zs.append(z)
                h = net.layer_activation(l + 1).phi(z)
            d = lossf.grad(h, yb) * net.phi_out.dphi(zs[-1])
            out[L - 1][m, b] = d
            for l in range(L - 2, -1, -1):
                d = net.phi.dphi(zs[l]) * (params.weights[l + 1][m].T @ d)
                out[l][m, b] = d
    return out


@pytest.mark.parametrize(
    "act,loss,out_act,shared",
    [
        ("tanh", "mse", "linear", True),
        ("relu", "mse", "sigmoid", False),
        ("softplus", "cross_entropy", "linear", False),
        ("sin", "mse", "tanh", True),
    ],
)
def test_stacked_engine_equals_loop_reference(act, loss, out_act, shared):
    net, params, x, y = _case((5, 7, 6, 4), act, loss, shared, out_act=out_act)
    trace = ds.backprop(net, params, x, y, loss=loss)
    for got, ref in zip(trace.delta, _reference(net, params, x, y, loss)):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)


def test_linear_network_closed_form():
    """φ = id, b = 0, y = 0: δ⁽ˡ⁾ = W⁽ˡ⁺¹⁾ᵀ⋯W⁽ᴸ⁾ᵀ W⁽ᴸ⁾⋯W⁽¹⁾ x (seed 003)."""
    net = ds.MLP((4, 5, 3, 6, 2), activation="linear", sigma_w=1.1, mu_w=0.4)
    params = net.sample(2, seed=5)
    x = inputs.gaussian().sample(4, 3, seed=5)
    y = np.zeros((3, 2))
    trace = ds.backprop(net, params, x, y)
    for m in range(2):
        ws = [w[m] for w in params.weights]
        g = x.T
        for w in ws:
            g = w @ g  # (n_L, B)
        for l in range(net.depth):
            d = g
            for w in reversed(ws[l + 1 :]):
                d = w.T @ d
            np.testing.assert_allclose(trace.delta[l][m], d.T, rtol=1e-12, atol=1e-14)


def test_same_seed_same_trace_and_different_seed_differs():
    net = ds.MLP((3, 8, 8, 2), activation="tanh")

    def run(seed):
        p = net.sample(4, seed)
        x = inputs.gaussian().sample(3, 5, seed, n_networks=4)
        y = targets.gaussian().sample(x, 2, seed)
        return p, ds.backprop(net, p, x, y)

    (p1, t1), (p2, t2), (p3, t3) = run(7), run(7), run(8)
    for a, b in zip(p1.weights + t1.delta, p2.weights + t2.delta):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(p1.weights[0], p3.weights[0])
    assert not np.allclose(t1.delta[0], t3.delta[0])


def test_network_parameters_do_not_depend_on_chunking():
    net = ds.MLP((3, 5, 2))
    whole = net.sample(6, seed=3)
    parts = [net.sample(2, seed=3, start=0), net.sample(4, seed=3, start=2)]
    np.testing.assert_array_equal(whole.weights[1], np.concatenate([p.weights[1] for p in parts]))
    xs = inputs.sphere().sample(3, 4, 3, n_networks=6)
    np.testing.assert_array_equal(xs[2:], inputs.sphere().sample(3, 4, 3, n_networks=4, start=2))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gaussian_parameters_are_the_documented_draws(dtype):
    # Network m: W⁽ˡ⁾ = μ_w/n + σ_w/√n · Z and b⁽ˡ⁾ = μ_b + σ_b · Z, Z the counter-based float64
    # law of (stream key, tensor 2(l−1) or 2(l−1)+1, network m), computed in float64 and
    # rounded to dtype. The reference is an independent pure-Python Philox + Box–Muller (its
    # libm ln/sin/cos differ from the compiled ones by a few ulp).
    from philox_reference import normal_array

    from deltastats.seeding import param_tensor, stream_key

    net = ds.MLP((4, 6, 3), sigma_w=(1.3, 0.7), sigma_b=0.4, mu_w=(0.3, -0.5), mu_b=-0.2)
    params = net.sample(3, seed=9, start=5, dtype=dtype)
    key = stream_key(9, "params")
    tol = 1e-13 if dtype == np.float64 else 2 * np.finfo(np.float32).eps
    for i in range(3):
        for l, (n_in, n_out) in enumerate([(4, 6), (6, 3)], start=1):
            sw, mw = net.layer_sigma_w[l - 1], net.layer_mu_w[l - 1]
            z_w = normal_array(key, param_tensor(l, "weight"), 5 + i, n_out * n_in)
            z_b = normal_array(key, param_tensor(l, "bias"), 5 + i, n_out)
            w = (mw / n_in + sw / np.sqrt(n_in) * z_w).reshape(n_out, n_in)
            b = -0.2 + 0.4 * z_b
            assert params.weights[l - 1][i].dtype == dtype
            np.testing.assert_allclose(params.weights[l - 1][i], w, rtol=tol, atol=tol)
            np.testing.assert_allclose(params.biases[l - 1][i], b, rtol=tol, atol=tol)
    # float32 parameters are the float64 ones rounded once.
    if dtype == np.float32:
        p64 = net.sample(3, seed=9, start=5)
        for a, b in zip(params.weights + params.biases, p64.weights + p64.biases):
            np.testing.assert_array_equal(a, b.astype(np.float32))


def test_float32_runs_in_float32():
    net = ds.MLP((3, 8, 2))
    p = net.sample(2, 0, dtype=np.float32)
    x = inputs.gaussian().sample(3, 4, 0)
    t = ds.backprop(net, p, x, np.zeros((4, 2)))
    assert t.delta[0].dtype == np.float32 and t.grad_weights[0].dtype == np.float32
    t64 = ds.backprop(net, net.sample(2, 0), x, np.zeros((4, 2)))
    np.testing.assert_allclose(t.delta[0], t64.delta[0], rtol=1e-4, atol=1e-6)


def test_overflow_is_reported_with_layer_and_mask():
    net = ds.MLP((4, 64, 64, 64, 64, 1), activation="linear", sigma_w=1.0)
    p = net.sample(3, 0)
    weights = list(p.weights)
    for l in (1, 2):  # network 1: z⁽²⁾ ~ 1e305 is still finite, z⁽³⁾ overflows
        weights[l] = weights[l].copy()
        weights[l][1] *= 1e300
    p = ds.Params(tuple(weights), p.biases)
    x = inputs.gaussian(1e10).sample(4, 2, 0)
    with pytest.warns(ds.NumericalOverflowWarning, match="1 of 3 networks"):
        t = ds.backprop(net, p, x, np.zeros((2, 1)))
    assert t.overflow.tolist() == [False, True, False]
    assert t.overflow_layer.tolist() == [0, 3, 0]


def test_keep_layers_and_no_grads():
    net = ds.MLP((3, 5, 5, 2))
    p = net.sample(2, 0)
    x = inputs.gaussian().sample(3, 4, 0)
    t = ds.backprop(net, p, x, np.zeros((4, 2)), grads=False, keep_layers=[2])
    assert t.z[0] is None and t.z[1] is not None and t.grad_weights is None
    assert all(d is not None for d in t.delta)


def test_teacher_targets_are_fixed_network_outputs():
    teacher = ds.MLP((3, 4, 2), activation="relu")
    law = targets.teacher(teacher, seed=11)
    x = inputs.gaussian().sample(3, 5, 0)
    y = law.sample(x, 2, seed=99)
    expected = ds.forward(teacher, teacher.sample(1, 11), x)[0]
    np.testing.assert_allclose(y, expected)


# ---- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(widths=(3, 0, 2)), "positive integers"),
        (dict(widths=(3, -1, 2)), "positive integers"),
        (dict(widths=(3, 2.5, 2)), "positive integers"),
        (dict(widths=(3,)), "at least two"),
        (dict(widths=(3, 2), sigma_w=-1.0), "sigma_w"),
        (dict(widths=(3, 2), sigma_w=float("nan")), "sigma_w"),
        (dict(widths=(3, 2), mu_w=float("inf")), "mu_w"),
        (dict(widths=(3, 4, 2), sigma_b=[0.1]), "one value per weight layer"),
        (dict(widths=(3, 2), activation="nope"), "valid names are"),
        (dict(widths=(3, 2), init="xavier"), "valid inits"),
        (dict(widths=(3, 2), init="orthogonal", mu_w=0.5), "mu_w = 0"),
    ],
)
def test_bad_spec_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ds.MLP(**kwargs)


def test_bad_arrays_raise():
    net = ds.MLP((3, 4, 2))
    p = net.sample(2, 0)
    x = np.zeros((5, 3))
    y = np.zeros((5, 2))
    with pytest.raises(ValueError, match="x has shape"):
        ds.backprop(net, p, np.zeros((5, 4)), y)
    with pytest.raises(ValueError, match="y has shape"):
        ds.backprop(net, p, x, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="x contains NaN"):
        ds.backprop(net, p, np.full((5, 3), np.nan), y)
    with pytest.raises(ValueError, match="y contains NaN"):
        ds.backprop(net, p, x, np.full((5, 2), np.inf))
    with pytest.raises(ValueError, match="unknown loss"):
        ds.backprop(net, p, x, y, loss="hinge")
    with pytest.raises(ValueError, match="probability vectors"):
        ds.backprop(net, p, x, np.full((5, 2), 0.7), loss="cross_entropy")
    with pytest.raises(ValueError, match="weight_decay"):
        ds.backprop(net, p, x, y, weight_decay=-1)
    with pytest.raises(ValueError, match="n_classes"):
        targets.one_hot(3).sample(x, 2)


def test_init_presets_and_laws_have_the_stated_moments():
    for init, var in [
        ("he", 2.0 / 100),
        ("lecun", 1.0 / 100),
        ("glorot", 2.0 / 300),
        ("uniform", 1.44 / 100),
        ("orthogonal", 1.44 / 100),
    ]:
        net = ds.MLP((100, 200), sigma_w=1.2, init=init)
        w = net.sample(40, 0).weights[0]
        # 800 000 entries: the sample variance has relative s.e. ~ sqrt(2/8e5) = 0.0016.
        assert abs(w.var() / var - 1) < 0.01, init
    w = ds.MLP((50, 20), init="orthogonal", sigma_w=1.0).sample(1, 0).weights[0][0]
    np.testing.assert_allclose(w @ w.T, np.eye(20) * 50 / 50, atol=1e-12)
    w = ds.MLP((50, 80), mu_w=2.0, sigma_w=0.5, init="uniform").sample(50, 0).weights[0]
    assert abs(w.mean() - 2.0 / 50) < 4 * 0.5 / np.sqrt(50) / np.sqrt(w.size)


def test_sample_into_earlier_params_gives_the_same_values_in_the_same_memory():
    net = ds.MLP((5, 7, 3), activation="tanh", sigma_w=1.2, sigma_b=0.3)
    fresh = net.sample(4, seed=2, start=9)
    old = net.sample(4, seed=5)
    reused = net.sample(4, seed=2, start=9, out=old)
    for a, b, c in zip(fresh.weights + fresh.biases, reused.weights + reused.biases,
                       old.weights + old.biases):  # fmt: skip
        np.testing.assert_array_equal(a, b)
        assert b is c  # written in place
    assert reused.start == 9
    # Arrays that do not fit (another M) are not used; the values are the same anyway.
    other = net.sample(3, seed=2, start=9, out=old)
    np.testing.assert_array_equal(other.weights[0], fresh.weights[0][:3])
    assert other.weights[0] is not old.weights[0]
    with pytest.raises(ValueError, match="out must be"):
        net.sample(4, seed=2, out=fresh.weights)
