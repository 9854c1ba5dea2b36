"""Engine parallelism: bit-for-bit identical results whatever the thread split and chunking.

The engine splits the M networks into chunks of consecutive networks that worker threads
take in turn, with single-threaded BLAS. These tests check the premise (a stacked matmul of a
sub-stack gives the same bits as the full stack) and the promise (every trace array is
identical for threads = 1, 2, 3 and any chunk size), plus float32 against float64.
"""

import time
import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import deltastats as ds
from deltastats import engine, inputs, targets
from deltastats.engine import passes


def _fields(trace):
    """Every array of a trace, named, for exact comparison."""
    out = {"loss": trace.loss, "overflow": trace.overflow, "layer": trace.overflow_layer}
    for name in ("z", "h", "delta", "grad_weights", "grad_biases"):
        for l, a in enumerate(getattr(trace, name) or ()):
            if a is not None:
                out[f"{name}[{l}]"] = a
    return out


def assert_identical(t1, t2):
    f1, f2 = _fields(t1), _fields(t2)
    assert f1.keys() == f2.keys()
    for k in f1:
        assert f1[k].shape == f2[k].shape and f1[k].dtype == f2[k].dtype, k
        # Bitwise, NaN included: compare the raw bytes.
        assert np.ascontiguousarray(f1[k]).tobytes() == np.ascontiguousarray(f2[k]).tobytes(), k


def _problem(widths, act="tanh", loss="mse", shared=False, M=7, B=64, seed=0, dtype=np.float64):
    net = ds.MLP(widths, activation=act, sigma_w=1.4, sigma_b=0.2, mu_w=0.3)
    params = net.sample(M, seed, dtype=dtype)
    x = inputs.gaussian().sample(widths[0], B, seed, n_networks=None if shared else M)
    law = targets.one_hot(widths[-1]) if loss == "cross_entropy" else targets.gaussian()
    y = law.sample(x, widths[-1], seed)
    return net, params, x, y


# Width 128 with B = 64 exercises the row-blocked backward GEMM (B·n·n > 10⁶).
CASES = [
    dict(widths=(20, 128, 128, 3), act="tanh", loss="mse", shared=False),
    dict(widths=(5, 24, 17, 4), act="relu", loss="cross_entropy", shared=True),
    dict(widths=(6, 16, 16, 16, 2), act="gelu", loss="mse", shared=False),
    dict(widths=(6, 16, 9, 2), act="linear", loss="mse", shared=True),
]


def test_stacked_matmul_of_a_sub_stack_has_the_bits_of_the_full_stack():
    """The premise: numpy calls GEMM once per stack entry, so slicing M changes no bits."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((9, 128, 128))
    h = rng.standard_normal((9, 64, 128))
    with threadpool_limits(1, user_api="blas"):
        full_nt = np.matmul(h, W.swapaxes(-1, -2))
        full_nn = np.matmul(h.reshape(9, 2, 32, 128), W[:, None]).reshape(9, 64, 128)
        for s in (slice(0, 1), slice(1, 4), slice(4, 9), slice(3, 8)):
            sub = np.empty_like(h[s])
            np.matmul(h[s], W[s].swapaxes(-1, -2), out=sub)
            assert sub.tobytes() == full_nt[s].tobytes()
            c = s.stop - s.start
            sub_nn = np.matmul(h[s].reshape(c, 2, 32, 128), W[s][:, None])
            assert sub_nn.reshape(c, 64, 128).tobytes() == full_nn[s].tobytes()
    # Element-wise ufuncs: a slice (odd length, other alignment) gives the same bits, in
    # place or not.
    z = rng.standard_normal(10_001) * 3
    whole = np.tanh(z)
    part = z[3:9_998].copy()
    np.tanh(part, out=part)
    assert part.tobytes() == whole[3:9_998].tobytes()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["act"])
def test_bit_identical_across_threads_and_chunks(case):
    net, params, x, y = _problem(**case)
    kw = dict(loss=case["loss"], weight_decay=0.1)
    ref = ds.backprop(net, params, x, y, threads=1, chunk_size=params.n_networks, **kw)
    for threads, chunk in [(1, 1), (2, 1), (2, 3), (3, 2), (3, None), (None, None), (2, 7)]:
        t = ds.backprop(net, params, x, y, threads=threads, chunk_size=chunk, **kw)
        assert_identical(ref, t)


@pytest.mark.parametrize("layout", [("copy", 1), ("copy", 2), ("swap", 1), ("direct", 2)])
@pytest.mark.parametrize("shared", [False, True])
def test_every_forward_layout_is_split_invariant_and_agrees(monkeypatch, layout, shared):
    """Each call for z = h Wᵀ (a Wᵀ copy, zᵀ = W hᵀ, row blocks), forced whatever this machine's
    BLAS would choose: the same bits for every split, the direct product's values to rounding."""
    net, params, x, y = _problem((20, 48, 96, 3), shared=shared, dtype=np.float32)
    ref = ds.backprop(net, params, x, y)
    monkeypatch.setattr(passes, "_forward_layout", lambda *args: layout)
    one = ds.backprop(net, params, x, y, threads=1, chunk_size=params.n_networks)
    for threads, chunk in [(1, 1), (2, 3), (3, None)]:
        assert_identical(one, ds.backprop(net, params, x, y, threads=threads, chunk_size=chunk))
    for a, b in zip(one.delta + one.z, ref.delta + ref.z):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * np.abs(b).max())


def test_wide_float32_layers_are_split_invariant():
    """Width 256, B = 64: the product is too large for the small-GEMM path (on AVX-512
    OpenBLAS the engine then computes zᵀ = W hᵀ in float32)."""
    net, params, x, y = _problem((16, 256, 256, 2), M=5, dtype=np.float32)
    ref = ds.backprop(net, params, x, y, threads=1, chunk_size=5)
    for threads, chunk in [(1, 1), (2, 2), (None, None)]:
        assert_identical(ref, ds.backprop(net, params, x, y, threads=threads, chunk_size=chunk))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["act"])
def test_keeping_fewer_layers_changes_no_bits(case):
    """In-place buffers (nothing kept) and stored z/h (all kept) give the same δ and loss."""
    net, params, x, y = _problem(**case)
    full = ds.backprop(net, params, x, y, loss=case["loss"], grads=False)
    for keep in ((), (1,), (net.depth,)):
        for threads, chunk in [(1, None), (3, 2)]:
            t = ds.backprop(
                net,
                params,
                x,
                y,
                loss=case["loss"],
                grads=False,
                keep_layers=keep,
                threads=threads,
                chunk_size=chunk,
            )
            for l in range(net.depth):
                assert t.delta[l].tobytes() == full.delta[l].tobytes()
                if l + 1 in keep:
                    assert t.z[l].tobytes() == full.z[l].tobytes()
                    assert t.h[l].tobytes() == full.h[l].tobytes()
                else:
                    assert t.z[l] is None and t.h[l] is None
            assert t.loss.tobytes() == full.loss.tobytes()


def test_chunks_of_networks_equal_the_whole():
    """Networks start … start+M−1 computed in two calls equal one call (streaming chunks)."""
    net, params, x, y = _problem((8, 128, 128, 2), M=6)
    whole = ds.backprop(net, params, x, y, threads=2)
    parts = [
        ds.backprop(
            net,
            ds.Params(tuple(w[s] for w in params.weights), tuple(b[s] for b in params.biases)),
            x[s],
            y[s],
            threads=t,
        )
        for s, t in ((slice(0, 2), 1), (slice(2, 6), 3))
    ]
    for l in range(net.depth):
        joined = np.concatenate([p.delta[l] for p in parts])
        assert joined.tobytes() == whole.delta[l].tobytes()
        joined = np.concatenate([p.grad_weights[l] for p in parts])
        assert joined.tobytes() == whole.grad_weights[l].tobytes()


def test_out_reuses_memory_and_gives_the_same_bits():
    net, params, x, y = _problem((6, 32, 32, 2), M=5)
    first = ds.backprop(net, params, x, y, threads=2, chunk_size=2)
    ref = ds.backprop(net, params, x, y)
    params2 = net.sample(5, seed=1)
    again = ds.backprop(net, params2, x, y, out=first, threads=3, chunk_size=1)
    assert np.shares_memory(again.delta[0], first.delta[0])
    assert np.shares_memory(again.grad_weights[1], first.grad_weights[1])
    assert_identical(again, ds.backprop(net, params2, x, y))
    # An incompatible `out` (other M) is ignored, not misused.
    small = ds.backprop(net, net.sample(2, 0), x[:2], y[:2], out=ref)
    assert small.delta[0].shape[0] == 2


def test_overflow_mask_and_layer_do_not_depend_on_the_split():
    net = ds.MLP((4, 64, 64, 64, 64, 1), activation="linear", sigma_w=1.0)
    p = net.sample(5, 0)
    weights = list(p.weights)
    for l in (1, 2):  # network 3: z⁽²⁾ ~ 1e305 is still finite, z⁽³⁾ overflows
        weights[l] = weights[l].copy()
        weights[l][3] *= 1e300
    p = ds.Params(tuple(weights), p.biases)
    x = inputs.gaussian(1e10).sample(4, 2, 0)
    for threads, chunk in [(1, None), (2, 1), (3, 2)]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no stray RuntimeWarning from a worker thread
            with pytest.raises(ds.NumericalOverflowWarning, match="1 of 5 networks"):
                ds.backprop(net, p, x, np.zeros((2, 1)), threads=threads, chunk_size=chunk)
        with pytest.warns(ds.NumericalOverflowWarning):
            t = ds.backprop(net, p, x, np.zeros((2, 1)), threads=threads, chunk_size=chunk)
        assert t.overflow.tolist() == [False, False, False, True, False]
        assert t.overflow_layer.tolist() == [0, 0, 0, 3, 0]


def test_float32_agrees_with_float64_to_float32_precision():
    """Default-like tanh network (σ_w² = 1.5, depth 10, width 64): per-layer statistics."""
    widths = (64,) + (64,) * 9 + (1,)
    net = ds.MLP(widths, activation="tanh", sigma_w=np.sqrt(1.5))
    x = inputs.gaussian().sample(64, 32, 0, n_networks=24)
    y = targets.gaussian().sample(x, 1, 0)
    t64 = ds.backprop(net, net.sample(24, 0), x, y, grads=False, keep_layers=())
    t32 = ds.backprop(
        net, net.sample(24, 0, dtype=np.float32), x, y, grads=False, keep_layers=(), threads=2
    )
    eps = np.finfo(np.float32).eps
    for d32, d64 in zip(t32.delta, t64.delta):
        assert d32.dtype == np.float32
        scale = np.abs(d64).max()
        # Rounding of ~10 layers of length-64 dot products: a few hundred ulps at most.
        assert np.abs(d32 - d64).max() <= 1e3 * eps * scale
        for stat in (np.mean, lambda a: np.mean(a * a)):
            s32, s64 = stat(d32.astype(np.float64)), stat(d64)
            assert abs(s32 - s64) <= 1e3 * eps * max(abs(s64), scale * scale * 1e-3)


def test_thread_and_chunk_arguments_are_validated():
    net, params, x, y = _problem((3, 4, 2), M=2, B=3)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            ds.backprop(net, params, x, y, threads=bad)
        with pytest.raises(ValueError, match="chunk_size"):
            ds.backprop(net, params, x, y, chunk_size=bad)
    with pytest.raises(ValueError, match="out must be a Trace"):
        ds.backprop(net, params, x, y, out=np.zeros(3))


def test_default_threads_follow_the_blas_limit():
    """Inside a BLAS-limited worker (joblib sets 1 thread) the engine does not add threads."""
    widths = (128,) * 11
    with threadpool_limits(1, user_api="blas"):
        assert passes._plan(256, 64, widths, None, None)[1] == 1
    assert passes._plan(256, 64, widths, 3, 1)[1] == 3
    assert passes._plan(2, 64, widths, 3, 1)[1] == 2  # never more threads than chunks
    assert passes._plan(2, 3, (3, 4, 2), None, None)[1] == 1  # tiny problem: no threads


def test_cached_trace_memory_is_reused_only_when_no_array_views_it():
    net, params, x, y = _problem((6, 32, 32, 2), M=4)
    ref = ds.backprop(net, params, x, y)
    expected = {k: v.copy() for k, v in _fields(ref).items()}
    del ref
    t1 = ds.backprop(net, params, x, y)
    kept = t1.delta[0]  # a view of t1's block: the block must not be handed out again
    address = t1.delta[1].ctypes.data
    del t1
    t2 = ds.backprop(net, net.sample(4, seed=9), x, y)
    for a in _fields(t2).values():
        assert not np.shares_memory(a, kept)
    np.testing.assert_array_equal(kept, expected["delta[0]"])  # untouched by the new call
    del kept
    t3 = ds.backprop(net, params, x, y)  # t1's block is free again (t2 still holds its own)
    assert t3.delta[1].ctypes.data == address
    for k, v in _fields(t3).items():
        np.testing.assert_array_equal(v, expected[k])
    for a in _fields(t2).values():
        assert not any(np.shares_memory(a, b) for b in _fields(t3).values())
    engine.clear_cache()


@pytest.mark.parametrize("init", ["gaussian", "uniform", "orthogonal"])
def test_parameter_draws_are_the_same_with_threads(monkeypatch, init):
    from deltastats import networks

    net = ds.MLP((40, 50, 30, 2), sigma_w=1.2, sigma_b=0.3, init=init)
    monkeypatch.setattr(networks, "_sampling_threads", lambda n: 3)  # even on one CPU
    threaded = net.sample(9, seed=4, start=2)
    monkeypatch.setattr(networks, "_sampling_threads", lambda n: 1)
    serial = net.sample(9, seed=4, start=2)
    for a, b in zip(threaded.weights + threaded.biases, serial.weights + serial.biases):
        np.testing.assert_array_equal(a, b)


def test_side_by_side_shares_calls_and_leaves_the_blas_setting_alone():
    """Two threads share the calls (results in order, the first error raised), and BLAS runs
    single-threaded during the calls but keeps the process's setting afterwards: with each
    call setting and restoring it from either thread, BLAS was once left single-threaded."""
    from deltastats._parallel import blas_libraries, side_by_side

    libs = blas_libraries()
    with threadpool_limits(2, user_api="blas"):
        before = [lib.num_threads for lib in libs]
        rng = np.random.default_rng(0)
        a = rng.standard_normal((40, 64, 64))
        seen = []

        def product(i):
            seen.append(max(lib.num_threads for lib in libs))
            with passes.single_threaded_blas():
                return float(np.matmul(a[i], a[i]).sum())

        calls = [lambda i=i: product(i) for i in range(40)]
        for _ in range(5):
            got = side_by_side(calls)
            assert got == [float(np.matmul(a[i], a[i]).sum()) for i in range(40)]
            assert [lib.num_threads for lib in libs] == before
        assert max(seen) == 1
        # After a failing call no call starts on either thread, and the error comes out.

        def boom():
            raise ValueError("call 3 failed")

        ran = []

        def slow(k):
            time.sleep(0.01)
            ran.append(k)

        with pytest.raises(ValueError, match="call 3 failed"):
            side_by_side([lambda: slow(0), lambda: slow(1), boom] + [lambda: slow(9)] * 30)
        assert len(ran) <= 5  # the two first, and at most what the other thread had begun
        assert [lib.num_threads for lib in libs] == before


def test_tasks_are_sized_in_bytes():
    """≈ 512 KiB per layer array: the same networks per task as 65,536 float64 elements, twice
    as many in float32, and at least 4 tasks when there are enough networks."""
    for width, f64, f32 in ((32, 32, 64), (128, 8, 16), (512, 2, 4)):
        widths = (width,) * 11
        assert passes._plan(256, 64, widths, 2, None, 8)[0] == f64
        assert passes._plan(256, 64, widths, 2, None, 4)[0] == f32
    assert passes._plan(64, 64, (32,) * 11, 2, None, 4)[0] == 16  # 4 tasks of 16, not 1 of 64
