"""An independent, slow reference of the counter-based normal laws, for the tests.

Written from the published definitions (Salmon et al. 2011 for Philox4x32-10; Box–Muller with
the C library's log, cos and sin on Python floats), sharing no code with
:mod:`deltastats.model.philox`. It is exact in the Philox words and within a few units in the
last place in the normal values (a different ln/sin/cos).
"""

from __future__ import annotations

import math

import numpy as np

_MASK = 0xFFFFFFFF


def philox4x32_10(ctr: tuple[int, int, int, int], key: tuple[int, int]) -> list[int]:
    """Philox4x32-10 of a 128-bit counter (4 words) under a 64-bit key (2 words)."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & _MASK, (k1 + 0xBB67AE85) & _MASK
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & _MASK, (p0 >> 32) ^ c3 ^ k1, p0 & _MASK
    return [c0, c1, c2, c3]


def _words(key: int, block: int, tensor: int, network: int) -> list[int]:
    ctr = (block, tensor, network & _MASK, network >> 32)
    return philox4x32_10(ctr, (key & _MASK, key >> 32))


def normal64(key: int, tensor: int, network: int, i: int) -> float:
    """Value i of the float64 law: block i // 2, (R cos θ, R sin θ) from 53-bit u and θ."""
    w = _words(key, i // 2, tensor, network)
    a = (w[0] >> 6) * 2**27 + (w[1] >> 5)
    b = (w[2] >> 6) * 2**27 + (w[3] >> 5)
    r = math.sqrt(-2.0 * math.log((a + 1) / 2**53))
    theta = 2.0 * math.pi * ((b + 0.5) / 2**53)
    return r * (math.cos(theta) if i % 2 == 0 else math.sin(theta))


def normal32(key: int, tensor: int, network: int, i: int) -> float:
    """Value i of the float32 law (in float64, before rounding): block i // 4, two pairs of
    32-bit (u, θ)."""
    w = _words(key, i // 4, tensor, network)
    slot = i % 4
    u, v = w[2 * (slot // 2)], w[2 * (slot // 2) + 1]
    r = math.sqrt(-2.0 * math.log((u + 1) / 2**32))
    theta = 2.0 * math.pi * ((v + 0.5) / 2**32)
    return r * (math.cos(theta) if slot % 2 == 0 else math.sin(theta))


def normal_array(key: int, tensor: int, network: int, n: int, law: str = "float64") -> np.ndarray:
    """Values 0 … n−1 of one counter, as float64."""
    f = normal64 if law == "float64" else normal32
    return np.array([f(key, tensor, network, i) for i in range(n)])
