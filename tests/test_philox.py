"""The counter-based Gaussian generator (deltastats.model.philox), tested as a generator.

- Philox4x32-10 against the known answers of Random123 (``tests/kat_vectors``, the three
  ``philox4x32 10`` lines), compiled and in an independent pure-Python reference;
- the normal values against that reference (same law, libm's ln/sin/cos) and against pinned
  bits (the same on every CPU: only IEEE +, ×, ÷, √ in a fixed order);
- mean, variance, skewness and kurtosis of 10⁷ values, each within 5 standard errors;
- Kolmogorov–Smirnov and Anderson–Darling (known parameters) on 10⁷ values, p > 10⁻⁴;
- no correlation (|r| < 5/√n) between neighbouring networks, tensors and streams, nor
  between the two values of a Box–Muller pair (values and squares);
- the bits do not depend on chunk sizes, start offsets, thread counts or alignment.

Every statistical test uses a fixed key, so it is deterministic: the thresholds (5 standard
errors, p > 10⁻⁴) are what a correct generator passes with probability ≈ 1 − 10⁻⁴ for one
key, and a broken transform (wrong tails, wrong variance, lattice artefacts at the 10⁻³
level) fails them by orders of magnitude at n = 10⁷.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from philox_reference import normal_array, philox4x32_10
from scipy import special, stats

from deltastats.model import philox
from deltastats.model.philox import network_normal, philox_normal
from deltastats.model.seeding import SHARED_NETWORK, param_tensor, stream_key

# Random123 tests/kat_vectors: counter (4 words), key (2 words), expected (4 words).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF,) * 4,
        (0xFFFFFFFF,) * 2,
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]
KEY = 0x0123456789ABCDEF
N = 10_000_000


@pytest.fixture(scope="module")
def big() -> dict:
    """10⁷ values of each law (one counter), drawn once for the module."""
    return {
        "float64": philox_normal(KEY, (3, 5, 7), N),
        "float32": philox_normal(KEY, (3, 5, 7), N, np.float32),
    }


@pytest.mark.parametrize("ctr, key, expected", KAT)
def test_known_answers_of_random123(ctr, key, expected):
    assert tuple(philox4x32_10(ctr, key)) == expected
    got = philox.philox4x32(np.array([ctr], dtype=np.uint32), key[0] | (key[1] << 32))
    assert got.dtype == np.uint32 and tuple(int(w) for w in got[0]) == expected


def test_many_counters_match_the_reference():
    rng = np.random.default_rng(0)
    ctr = rng.integers(0, 2**32, size=(50, 4), dtype=np.uint64)
    got = philox.philox4x32(ctr, KEY)
    for c, g in zip(ctr, got):
        ref = philox4x32_10(tuple(int(w) for w in c), (KEY & 0xFFFFFFFF, KEY >> 32))
        assert [int(w) for w in g] == ref


@pytest.mark.parametrize("law", ["float64", "float32"])
def test_normal_values_are_the_documented_law(law):
    # Box–Muller of the Philox words, to a few ulp of libm's ln/sin/cos; network index above
    # 2³² so that both of its counter words are used.
    network = 2**32 + 11
    n = 203
    ref = normal_array(KEY, 4, network, n, law)
    got = philox_normal(KEY, (4, network & 0xFFFFFFFF, network >> 32), n, np.dtype(law))
    if law == "float64":
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-14)
    else:  # rounded once from float64: within one float32 ulp of the reference rounded
        spacing = np.spacing(np.abs(ref).astype(np.float32))
        assert np.all(np.abs(got - ref.astype(np.float32)) <= spacing)


def test_bits_are_pinned():
    # Exact bits of the first values: the kernel uses only IEEE operations in a fixed order
    # and no fused multiply-adds, so these hold on every CPU (a change here is a change of
    # every stream, to be noted in the changelog).
    got = [float(v).hex() for v in philox_normal(KEY, (3, 5, 7), 6)]
    assert got == [
        "0x1.a90b07eb88fbep-1",
        "0x1.ef8994f8b1447p+0",
        "0x1.d3d51e27ca15ep+0",
        "-0x1.f53854d92fe2fp-1",
        "-0x1.7de657b48435cp-5",
        "0x1.ecc409ce2c0d5p-3",
    ]
    got = [float(v).hex() for v in philox_normal(KEY, (3, 5, 7), 4, np.float32)]
    assert got == [
        "0x1.8e2ab80000000p+0",
        "0x1.6b92e20000000p+0",
        "0x1.c210860000000p+0",
        "0x1.0e26980000000p-1",
    ]


@pytest.fixture(scope="module")
def ordered(big) -> dict:
    """Per law: the sorted sample and log Φ, log(1 − Φ) at it (shared by KS and AD)."""
    out = {}
    for law, z in big.items():
        x = np.sort(z.astype(np.float64))
        out[law] = (x, special.log_ndtr(x), special.log_ndtr(-x))
    return out


@pytest.mark.parametrize("law", ["float64", "float32"])
def test_moments_of_ten_million_values(big, law):
    z = big[law].astype(np.float64)
    n = z.size
    m1 = z.mean()
    c = z - m1
    c2 = c * c
    m2 = c2.mean()
    skew = np.dot(c2, c) / n / m2**1.5
    kurt = np.dot(c2, c2) / n / m2**2 - 3.0
    # Standard errors of the sample mean, variance, skewness and excess kurtosis of N(0, 1).
    for value, se in ((m1, 1.0), (m2 - 1.0, math.sqrt(2.0)), (skew, 6**0.5), (kurt, 24**0.5)):
        assert abs(value) < 5.0 * se / math.sqrt(n), (law, value)
    # E z⁶ = 15 (the tails up to ~6σ): SE √(E z¹² − 15²)/√n = √(10395 − 225)/√n.
    z2 = z * z
    assert abs(np.dot(z2 * z2, z2) / n - 15.0) < 5.0 * math.sqrt(10395 - 225) / math.sqrt(n)


def _ks_statistic(x: np.ndarray, cdf: np.ndarray) -> float:
    """D = sup |F_n − Φ| of a sorted sample x, given Φ(x)."""
    n = x.size
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - cdf), np.max(cdf - (i - 1) / n)))


@pytest.mark.parametrize("law", ["float64", "float32"])
def test_kolmogorov_smirnov_on_ten_million_values(big, ordered, law):
    # p from the exact law of D for this n (scipy's kstest on 10⁷ values would sort again).
    x, log_cdf, _ = ordered[law]
    assert stats.kstwo.sf(_ks_statistic(x, np.exp(log_cdf)), x.size) > 1e-4
    head = np.sort(big[law][:100_000].astype(np.float64))  # the statistic is scipy's
    assert _ks_statistic(head, special.ndtr(head)) == pytest.approx(
        stats.kstest(head, "norm").statistic, rel=1e-12
    )


def _anderson_darling_p(log_cdf: np.ndarray, log_sf: np.ndarray) -> float:
    """p-value of the Anderson–Darling test of N(0, 1) with known parameters, from log Φ and
    log(1 − Φ) at the sorted sample: A² = −n − (1/n) Σ (2i − 1)(ln Φ(x₍ᵢ₎) + ln(1 − Φ(x₍ₙ₊₁₋ᵢ₎))),
    P(A² > a) from the asymptotic law (Marsaglia & Marsaglia 2004, "Evaluating the
    Anderson–Darling distribution", ADinf: within ~10⁻⁶ of it)."""
    n = log_cdf.size
    i = np.arange(1, n + 1)
    a2 = -n - np.dot(2 * i - 1, log_cdf + log_sf[::-1]) / n
    if a2 < 2:
        cdf = (
            math.exp(-1.2337141 / a2)
            / math.sqrt(a2)
            * (
                2.00012
                + (
                    0.247105
                    - (0.0649821 - (0.0347962 - (0.0116720 - 0.00168691 * a2) * a2) * a2) * a2
                )
                * a2
            )
        )
    else:
        cdf = math.exp(
            -math.exp(
                1.0776
                - (2.30695 - (0.43424 - (0.082433 - (0.008056 - 0.0003146 * a2) * a2) * a2) * a2)
                * a2
            )
        )
    return 1.0 - cdf


def _ad_p_of_sample(z: np.ndarray) -> float:
    x = np.sort(z)
    return _anderson_darling_p(special.log_ndtr(x), special.log_ndtr(-x))


def test_anderson_darling_p_value_is_calibrated():
    # The asymptotic law's tabulated points of case 0 (known parameters): 5 % at 2.492,
    # 1 % at 3.857; a shifted sample is rejected.
    rng = np.random.default_rng(0)
    assert 0.01 < _ad_p_of_sample(rng.standard_normal(10_000)) <= 1.0
    assert _ad_p_of_sample(rng.standard_normal(10_000) + 0.1) < 1e-6


@pytest.mark.parametrize("law", ["float64", "float32"])
def test_anderson_darling_on_ten_million_values(ordered, law):
    # AD weighs the tails, where a Box–Muller with a wrong ln or a truncated radius would show.
    _, log_cdf, log_sf = ordered[law]
    assert _anderson_darling_p(log_cdf, log_sf) > 1e-4


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_no_correlation_between_networks_tensors_and_streams():
    n = 1_000_000
    bound = 5.0 / math.sqrt(n)
    key_p, key_x = stream_key(3, "params"), stream_key(3, "inputs")
    base = np.empty((2, n))
    network_normal(base, key_p, param_tensor(2, "weight"), 40)
    neighbours = {
        "next network": base[1],
        "bias of the layer": network_normal(np.empty((1, n)), key_p, 3, 40)[0],
        "next layer": network_normal(np.empty((1, n)), key_p, 4, 40)[0],
        "other stream": network_normal(np.empty((1, n)), key_x, 2, 40)[0],
        "other seed": network_normal(np.empty((1, n)), stream_key(4, "params"), 2, 40)[0],
        "shared draws": network_normal(np.empty((1, n)), key_p, 2, SHARED_NETWORK)[0],
    }
    for name, other in neighbours.items():
        assert abs(_corr(base[0], other)) < bound, name
        assert abs(_corr(base[0] ** 2, other**2)) < bound, name
    # The two values of a Box–Muller pair (R cos θ, R sin θ) and of neighbouring blocks.
    z = base[0]
    for lag in (1, 2, 3):
        assert abs(_corr(z[:-lag], z[lag:])) < bound, lag
        assert abs(_corr(z[:-lag] ** 2, z[lag:] ** 2)) < bound, lag


def test_streams_have_distinct_keys():
    keys = {stream_key(s, name) for s in range(3) for name in ("params", "inputs", "targets")}
    assert len(keys) == 9 and all(0 <= k < 2**64 for k in keys)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bits_do_not_depend_on_chunks_or_offsets(dtype):
    n = 10_007
    whole = philox_normal(KEY, (1, 2, 3), n, dtype)
    rng = np.random.default_rng(1)
    cuts = np.sort(rng.choice(np.arange(1, n), size=40, replace=False))
    pieces = [
        philox_normal(KEY, (1, 2, 3), b - a, dtype, start=a) for a, b in zip([0, *cuts], [*cuts, n])
    ]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    for start, length in ((0, 1), (1, 1), (3, 2), (5, 3), (7, 0)):  # cuts inside a block
        got = philox_normal(KEY, (1, 2, 3), length, dtype, start=start)
        np.testing.assert_array_equal(got, whole[start : start + length])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bits_do_not_depend_on_threads_or_alignment(dtype):
    n = 300_001
    one = philox_normal(KEY, (1, 2, 3), n, dtype, threads=1)
    for threads in (2, 3, 5):
        np.testing.assert_array_equal(philox_normal(KEY, (1, 2, 3), n, dtype, threads=threads), one)
    buf = np.empty(n + 1, dtype=dtype)  # out one element off the allocation's alignment
    np.testing.assert_array_equal(philox_normal(KEY, (1, 2, 3), n, dtype, out=buf[1:]), one)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_network_stacks_do_not_depend_on_how_many_networks_or_threads(dtype):
    shape = (7, 13, 11)
    whole = network_normal(np.empty(shape, dtype), KEY, 5, 100, 0.25, 2.0, threads=1)
    for threads in (2, 3, 16):  # by rows, and along rows when threads > networks
        got = network_normal(np.empty(shape, dtype), KEY, 5, 100, 0.25, 2.0, threads=threads)
        np.testing.assert_array_equal(got, whole)
    part = network_normal(np.empty((3, 13, 11), dtype), KEY, 5, 103, 0.25, 2.0, threads=2)
    np.testing.assert_array_equal(part, whole[3:6])
    # Row i is mean + std·Z of network start + i, rounded once (float32 = float64 rounded).
    z = philox_normal(KEY, (5, 104, 0), 13 * 11)
    np.testing.assert_array_equal(whole[4].ravel(), (z * 2.0 + 0.25).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_small_pieces_give_the_same_bits(monkeypatch, dtype):
    # Tiny pieces, so that a small draw is cut into many: groups of whole rows, and segments
    # of a row that start at odd offsets inside a block.
    monkeypatch.setattr(philox, "_PIECE_VALUES", 5)
    shape = (7, 13, 11)
    whole = network_normal(np.empty(shape, dtype), KEY, 5, 100, 0.25, 2.0, threads=1)
    for threads in (2, 3):
        got = network_normal(np.empty(shape, dtype), KEY, 5, 100, 0.25, 2.0, threads=threads)
        np.testing.assert_array_equal(got, whole)
    one = philox_normal(KEY, (1, 2, 3), 1003, dtype, start=3, threads=1)
    for threads in (2, 3):
        got = philox_normal(KEY, (1, 2, 3), 1003, dtype, start=3, threads=threads)
        np.testing.assert_array_equal(got, one)


def test_parallel_draw_from_inside_a_pool_worker():
    # A worker of the same pool asking for a parallel draw must not wait for itself.
    from deltastats._parallel import executor

    one = philox_normal(KEY, (4, 4, 4), 300_000, threads=1)
    jobs = [executor(2).submit(philox_normal, KEY, (4, 4, 4), 300_000, threads=2) for _ in range(2)]
    for job in jobs:
        np.testing.assert_array_equal(job.result(timeout=60), one)


def test_numba_thread_setting_does_not_matter():
    # The kernels are serial (threads come from the engine's pool), so numba's own thread
    # count cannot change anything; checked anyway since other code may set it.
    import numba

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = philox_normal(KEY, (9, 9, 9), 200_000, threads=2)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = philox_normal(KEY, (9, 9, 9), 200_000, threads=2)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="dtype must be np.float32 or np.float64"):
        philox_normal(1, (0, 0, 0), 4, np.float16)
    with pytest.raises(ValueError, match="counter_hi word"):
        philox_normal(1, (0, 2**32, 0), 4)
    with pytest.raises(ValueError, match="counter_hi must be three"):
        philox_normal(1, (0, 0), 4)
    with pytest.raises(ValueError, match="key"):
        philox_normal(-1, (0, 0, 0), 4)
    with pytest.raises(ValueError, match="at most"):
        philox_normal(1, (0, 0, 0), 4, start=2**33 - 2)
    with pytest.raises(ValueError, match="out must be"):
        philox_normal(1, (0, 0, 0), 4, out=np.empty(4, np.float32))
    with pytest.raises(ValueError, match="out must be"):
        network_normal(np.empty((3, 4))[:, ::2], 1, 0, 0)
    with pytest.raises(ValueError, match="below 2\\*\\*64"):
        network_normal(np.empty((2, 4)), 1, 0, 2**64 - 1)
    with pytest.raises(ValueError, match="counter words"):
        philox.philox4x32(np.array([[0, 0, 0, 2**32]], dtype=np.uint64), 0)
