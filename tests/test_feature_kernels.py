"""Compiled per-network features = the plain numpy definitions, and independent of chunking."""

import numpy as np
import pytest

from deltastats.feature_kernels import (
    block_moments,
    gram_weight_features,
    layer_features,
    weight_features,
)
from deltastats.stats import features as F


def _power(y):
    """Per-unit (p₁, p₂, p₃, p₄, p₁², p₂), p_k = mean over inputs of yᵏ → (M, n, 6)."""
    p = [np.mean(y**k, axis=1) for k in (1, 2, 3, 4)]
    return np.stack([*p, p[0] ** 2, p[1]], axis=-1)


def _pooled(y):
    """Layer-pooled (P₁…P₄, P₁², R), R = mean_b (mean_j y_bj)² → (M, 1, 6)."""
    flat = y.reshape(y.shape[0], -1)
    P = [np.mean(flat**k, axis=1) for k in (1, 2, 3, 4)]
    R = np.mean(y.mean(axis=2) ** 2, axis=1)
    return np.stack([*P, P[0] ** 2, R], axis=-1)[:, None, :]


def _three(t):
    return np.stack([t.mean(1), (t * t).mean(1), t.mean(1) ** 2], -1)[:, None, :]


def _reference(d, z, cd, cz, ell, c_lognorm, c_dsq):
    d, z = d.astype(np.float64), z.astype(np.float64)
    out = {
        "delta/unit": _power(d - cd),
        "delta/pool": _pooled(d - cd.mean()),
        "z/unit": _power(z - cz),
        "z/pool": _pooled(z - cz.mean()),
    }
    with np.errstate(divide="ignore"):
        out["lognorm/pool"] = _three(np.log(np.mean(d * d, axis=2)) - c_lognorm)
    out["dsq/pool"] = _three(np.mean(d * d, axis=2) - c_dsq)
    ell_bar = ell.mean(1)
    out["stein/unit"] = np.stack(
        [
            np.broadcast_to(ell_bar[:, None], (d.shape[0], d.shape[2])),
            np.mean(ell[:, :, None] * (z - cz), axis=1),
            out["z/unit"][..., F.P1],
            out["z/unit"][..., F.P2],
            out["delta/unit"][..., F.P1],
        ],
        -1,
    )
    zbar = (z - cz.mean()).mean(axis=2)
    out["stein/pool"] = np.stack(
        [
            ell_bar,
            np.mean(ell * zbar, axis=1),
            out["z/pool"][:, 0, F.P1],
            out["z/pool"][:, 0, F.P2],
            out["delta/pool"][:, 0, F.P1],
        ],
        -1,
    )[:, None, :]
    return out


def _data(dtype, M=7, B=5, n=11, seed=0):
    rng = np.random.default_rng(seed)
    d = (0.3 * rng.standard_normal((M, B, n)) + 0.1).astype(dtype)
    z = (2.0 * rng.standard_normal((M, B, n)) + 0.5).astype(dtype)
    d[2, 3] = 0.0  # a dead row: log(‖δ_b‖²/n) = −inf
    cd, cz = d[0].mean(0, dtype=np.float64), z[0].mean(0, dtype=np.float64)
    ell = rng.standard_normal((M, B)) - 0.2
    return d, z, cd, cz, ell, -2.0, 0.1


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_layer_features_equal_the_numpy_definitions(dtype):
    args = _data(dtype)
    got, ref = layer_features(*args), _reference(*args)
    assert set(got) == set(ref)
    for name in ref:
        assert got[name].shape == ref[name].shape and got[name].dtype == np.float64, name
        finite = np.isfinite(ref[name])
        np.testing.assert_array_equal(np.isfinite(got[name]), finite, err_msg=name)
        np.testing.assert_array_equal(got[name][~finite], ref[name][~finite], err_msg=name)
        # rounding only: summation orders differ (scale: each column's magnitude)
        for c in range(ref[name].shape[-1]):
            a, b = got[name][..., c], ref[name][..., c]
            ok = np.isfinite(b)
            scale = np.abs(b[ok]).max()
            np.testing.assert_allclose(a[ok], b[ok], rtol=0, atol=1e-13 * scale, err_msg=name)
    assert np.isneginf(got["lognorm/pool"][2, 0, 0])  # the dead row's log-norm


def test_features_of_offset_data_keep_their_digits():
    # Values 1e4 away from zero with a spread of 1e-3: shifting before summing keeps every
    # feature (R and the Stein ℓ·z̄ term included) to ~1e-12 of its size, where summing first
    # and shifting after would lose eight digits to cancellation.
    d, z, cd, cz, ell, cl, cs = _data(np.float64, M=4, B=6, n=9, seed=3)
    d, z = 1e4 + 1e-3 * d, -1e4 + 1e-3 * z
    cd, cz = d[0].mean(0), z[0].mean(0)
    got, ref = layer_features(d, z, cd, cz, ell, cl, cs), _reference(d, z, cd, cz, ell, cl, cs)
    for name in ("delta/pool", "z/pool", "stein/pool"):
        for c in range(ref[name].shape[-1]):
            a, b = got[name][..., c], ref[name][..., c]
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max(), err_msg=name)


def test_layer_features_do_not_depend_on_the_chunk():
    d, z, cd, cz, ell, cl, cs = _data(np.float64, M=9)
    whole = layer_features(d, z, cd, cz, ell, cl, cs)
    parts = [layer_features(d[s], z[s], cd, cz, ell[s], cl, cs) for s in (slice(0, 4), slice(4, 9))]
    for name, f in whole.items():
        np.testing.assert_array_equal(f, np.concatenate([p[name] for p in parts]))


def test_layer_features_propagate_nan_and_reject_bad_arrays():
    d, z, cd, cz, ell, cl, cs = _data(np.float64)
    d[1, 0, 0] = np.nan
    got = layer_features(d, z, cd, cz, ell, cl, cs)
    assert np.isnan(got["delta/unit"][1, 0]).any() and np.isfinite(got["delta/unit"][0]).all()
    with pytest.raises(ValueError, match="C-contiguous"):
        layer_features(d[:, :, ::2], z[:, :, ::2], cd[::2], cz[::2], ell, cl, cs)
    with pytest.raises(ValueError, match="one dtype"):
        layer_features(d, z.astype(np.float32), cd, cz, ell, cl, cs)
    with pytest.raises(ValueError, match="layer width"):
        layer_features(d, z, cd[:3], cz, ell, cl, cs)
    with pytest.raises(ValueError, match="layer width"):
        layer_features(d, z, 0.0, 0.0, ell, cl, cs)
    with pytest.raises(ValueError, match="ell must have shape"):
        layer_features(d, z, cd, cz, ell[:, :1], cl, cs)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_weight_features(dtype):
    g = np.random.default_rng(1).standard_normal((6, 7, 5)).astype(dtype) + 0.3
    got = weight_features(g, 0.25)
    y = g.reshape(6, -1).astype(np.float64) - 0.25
    ref = np.stack([y.mean(1), (y * y).mean(1), y.mean(1) ** 2], -1)[:, None, :]
    np.testing.assert_allclose(got, ref, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("B", [11, F.SYRK_MIN_ROWS, 53])
def test_gram_weight_features_equal_those_of_the_gradient(dtype, shared, B):
    # B = 11 (general product) and from SYRK_MIN_ROWS on (dsyrk), widths that are not
    # multiples of the kernels' lane counts (tails).
    rng = np.random.default_rng(3)
    d = rng.standard_normal((6, B, 13)).astype(dtype)
    h = rng.standard_normal((B, 19) if shared else (6, B, 19)).astype(dtype) + 0.2
    g = np.matmul(d.swapaxes(-1, -2).astype(np.float64), h.astype(np.float64)) / B
    c = float(g[0].mean())
    got = gram_weight_features(d, h, c, 0.5)
    np.testing.assert_allclose(got, weight_features(g, c, 0.5), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="do not match"):
        gram_weight_features(d, h[..., :5, :], c)


def test_block_moments_equal_the_two_pass_definitions():
    rng = np.random.default_rng(2)
    f = rng.standard_normal((12, 4, 3)) + 5.0
    rows = np.array([0, 1, 3, 4, 7, 8, 9, 11])  # rows 2, 5, 6, 10 excluded
    groups = (100 + rows) % 5  # repeated groups
    mean, com, gsum = block_moments(f, rows, groups, 5)
    sel = f[rows]
    np.testing.assert_allclose(mean, sel.mean(0), rtol=1e-14)
    dev = sel - sel.mean(0)
    np.testing.assert_allclose(com, np.einsum("msi,msj->sij", dev, dev), rtol=1e-12, atol=1e-13)
    ref = np.zeros((5, 4, 3))
    np.add.at(ref, groups, sel)
    np.testing.assert_array_equal(gsum, ref)  # same order of additions: same bits
    empty = block_moments(f, rows[:0], groups[:0], 5)
    assert all(not a.any() for a in empty)
    with pytest.raises(ValueError, match="groups must lie"):
        block_moments(f, rows, groups + 1, 5)
    with pytest.raises(ValueError, match="rows must index"):
        block_moments(f, rows + 1, groups, 5)


@pytest.mark.parametrize("B", [1, 3, 4, 5, 7, 8, 11])
def test_unit_sums_add_the_inputs_one_at_a_time_in_order(B):
    # The kernel sweeps four inputs at once; each sum must still add the inputs' terms one by
    # one in input order, (((S + y₀) + y₁) + …), bit for bit, whatever B mod 4 is.
    rng = np.random.default_rng(5)
    d, z = rng.standard_normal((3, B, 9)), rng.standard_normal((3, B, 9))
    cd, cz, ell = rng.standard_normal(9), rng.standard_normal(9), rng.standard_normal((3, B))
    got = layer_features(d, z, cd, cz, ell, 0.3, 0.7)
    for name, x, c in (("delta/unit", d, cd), ("z/unit", z, cz)):
        y = x - c
        sums = [np.zeros((3, 9)) for _ in range(4)]
        for b in range(B):
            yb = y[:, b]
            q = yb * yb
            sums = [sums[0] + yb, sums[1] + q, sums[2] + q * yb, sums[3] + q * q]
        for k in range(4):
            np.testing.assert_array_equal(got[name][..., F.P1 + k], sums[k] / B)
    cross = np.zeros((3, 9))
    for b in range(B):
        cross = cross + ell[:, b : b + 1] * (z[:, b] - cz)
    np.testing.assert_array_equal(got["stein/unit"][..., F.ST_LOSS_Z], cross / B)
