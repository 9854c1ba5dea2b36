"""Compiled kernels: tanh accuracy in ulps, position-independent bits, fused layers = numpy."""

import decimal
import math

import numpy as np
import pytest

import deltastats as ds
from deltastats import engine, inputs, kernels, targets


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in units in the last place between same-signed finite floats."""
    ints = np.int64 if a.dtype == np.float64 else np.int32
    return np.abs(a.view(ints).astype(np.int64) - b.view(ints).astype(np.int64))


def _arguments(n: int = 200_000) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate(
        [
            rng.standard_normal(n) * 3,
            rng.uniform(-1e-3, 1e-3, n // 10),  # small: u = e^{2x} − 1 must not cancel
            rng.uniform(-25, 25, n // 10),  # through the saturation at |x| ≈ 19
            np.ldexp(1.0, -np.arange(1, 1075)),  # down to the smallest subnormal
            np.linspace(0.30, 0.40, 1001),  # around k = 0 → 1 of the reduction (T2)
        ]
    )


def _exact_tanh(x: np.ndarray) -> np.ndarray:
    """tanh to 40 significant digits (Python's decimal), rounded once to float64."""
    out = []
    for v in x:
        d = decimal.Decimal(float(v))
        with decimal.localcontext() as ctx:
            # e^{2x} − 1 cancels ~|log10 x| digits for small x: carry that many more
            ctx.prec = 40 + max(0, -d.adjusted()) if d else 40
            e = (2 * d).exp()
            out.append(float((e - 1) / (e + 1)))
    return np.array(out)


def test_tanh_float64_is_within_3_ulp_of_the_exact_value():
    x = _arguments()
    got = kernels.tanh(x)
    libm = np.array([math.tanh(v) for v in x])  # glibc: within 2 ulp of exact
    assert _ulps(got, libm).max() <= 5
    assert np.mean(_ulps(got, libm) == 0) > 0.75  # mostly the same bits
    # against the exact value: a random subset and the arguments furthest from the library's
    worst = np.argsort(_ulps(got, libm))[-300:]
    pick = np.concatenate([worst, np.random.default_rng(5).choice(x.size, 3000)])
    assert _ulps(got[pick], _exact_tanh(x[pick])).max() <= 3
    # where tanh x lies just below a power of two, the rounding of u + 2 used to cost 4 ulp
    hard = np.array([0.06183494322914945, 0.030518264166546922, 0.015619236195929401])
    assert _ulps(kernels.tanh(hard), _exact_tanh(hard)).max() <= 3


def test_tanh_float32_is_within_3_ulp_of_the_exact_value():
    x = _arguments().astype(np.float32)
    ref = np.tanh(x.astype(np.float64)).astype(np.float32)  # ≤ ½ ulp + double rounding
    assert _ulps(kernels.tanh(x), ref).max() <= 3


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tanh_special_values(dtype):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 30.0, -30.0, 5e-300], dtype=dtype)
    got = kernels.tanh(x)
    np.testing.assert_array_equal(got[:4], [0.0, -0.0, 1.0, -1.0])
    assert np.signbit(got[1]) and not np.signbit(got[0])
    assert np.isnan(got[4])
    np.testing.assert_array_equal(got[5:7], [1.0, -1.0])
    assert got[7] == x[7]  # tanh x = x below the square root of the smallest ulp


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tanh_bits_do_not_depend_on_position_or_length(dtype):
    # Vectorized body and scalar remainder compute the same IEEE operations: any slice of
    # the input gives the same bits as the whole array (what makes chunking irrelevant).
    x = _arguments(4000).astype(dtype)
    whole = kernels.tanh(x)
    for start in range(9):
        for stop in (start + 1, start + 3, start + 17, x.size):
            np.testing.assert_array_equal(kernels.tanh(x[start:stop].copy()), whole[start:stop])
    one_by_one = np.array([kernels.tanh(x[i : i + 1])[0] for i in range(0, x.size, 97)])
    np.testing.assert_array_equal(one_by_one, whole[::97])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tanh_layer_equals_the_separate_numpy_passes(dtype):
    rng = np.random.default_rng(1)
    z0 = rng.standard_normal((5, 7, 9)).astype(dtype)
    bias = rng.standard_normal((5, 9)).astype(dtype)
    z0[2, 3, 4] = np.nan
    z0[4, 0, 0] = np.inf
    z, h, d = z0.copy(), np.empty_like(z0), np.empty_like(z0)
    bad = kernels.tanh_layer(z, bias, h, d)
    want_z = z0 + bias[:, None, :]
    np.testing.assert_array_equal(z, want_z)
    np.testing.assert_array_equal(h, kernels.tanh(want_z))
    np.testing.assert_array_equal(d, 1 - h * h)
    np.testing.assert_array_equal(bad, [False, False, True, False, True])
    z_kept = z0.copy()
    kernels.tanh_layer(z_kept, bias, h, d, store_z=False)
    np.testing.assert_array_equal(z_kept, z0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scale_layer_is_the_product_with_flags(dtype):
    rng = np.random.default_rng(2)
    d0 = rng.standard_normal((4, 3, 6)).astype(dtype)
    back = rng.standard_normal((4, 3, 6)).astype(dtype)
    back[1, 2, 5] = np.inf
    d = d0.copy()
    bad = kernels.scale_layer(d, back)
    np.testing.assert_array_equal(d, d0 * back)
    np.testing.assert_array_equal(bad, [False, True, False, False])


def test_tanh_rejects_what_it_cannot_take():
    with pytest.raises(ValueError, match="float64/float32"):
        kernels.tanh(np.arange(4))
    with pytest.raises(ValueError, match="float64/float32"):
        kernels.tanh(np.zeros(4), out=np.zeros(5))


@pytest.mark.parametrize("keep", [None, ()])
def test_engine_with_and_without_compiled_kernels_agree(monkeypatch, keep):
    # The compiled path (fused tanh layers) and the numpy path (np.tanh, separate passes)
    # differ only by the few-ulp difference of the two tanh's, amplified by the depth.
    net = ds.MLP((16,) * 7, activation="tanh", sigma_w=1.5, sigma_b=0.3, mu_w=0.2)
    params = net.sample(12, seed=3)
    x = inputs.gaussian().sample(16, 10, seed=3)
    y = targets.gaussian().sample(x, 16, seed=3)
    traces = {}
    for flag in (True, False):
        monkeypatch.setattr(engine, "USE_COMPILED_KERNELS", flag)
        traces[flag] = ds.backprop(net, params, x, y, keep_layers=keep, chunk_size=5)
    for a, b in zip(traces[True].delta, traces[False].delta):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    for a, b in zip(traces[True].grad_weights, traces[False].grad_weights):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    if keep is None:
        for a, b in zip(traces[True].h, traces[False].h):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tanh_scale_layer_is_the_two_pass_route_bit_for_bit(dtype):
    # φ' recomputed from h in the backward pass must give the bits of φ' stored by the
    # forward kernel and multiplied in by scale_layer (the engine relies on it).
    rng = np.random.default_rng(4)
    z = (3 * rng.standard_normal((3, 5, 17))).astype(dtype)
    bias = rng.standard_normal((3, 17)).astype(dtype)
    h, dphi = np.empty_like(z), np.empty_like(z)
    kernels.tanh_layer(z, bias, h, dphi)
    back = rng.standard_normal(z.shape).astype(dtype)
    back[1, 2, 3] = np.inf
    two_pass = dphi.copy()
    bad2 = kernels.scale_layer(two_pass, back)
    one_pass = np.empty_like(z)
    bad1 = kernels.tanh_scale_layer(one_pass, back, h)
    np.testing.assert_array_equal(one_pass, two_pass)
    np.testing.assert_array_equal(bad1, bad2)
    assert bad1.tolist() == [False, True, False]
