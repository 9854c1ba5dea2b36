"""Trace memory of the engine: one aligned block per call, reused across calls.

A streaming loop calls :func:`~deltastats.engine.backprop` chunk after chunk with the same
shapes. Fresh memory must be paged in (zeroed by the kernel), which costs as much as the
arithmetic of a default-sized pass, so the block of a trace that nobody references any more
serves the next call instead (at most :data:`WORKSPACE_CACHE_BYTES`).
"""

from __future__ import annotations

import weakref

import numpy as np

from .._parallel import LOCK


def allocate(requests: dict, dtype) -> dict:
    """Arrays for ``{key: (shape, previous)}``: ``previous`` when it fits, else a view of one
    block (each view C-contiguous and 64-byte aligned) from :func:`lease_block`."""
    arrays, fresh = {}, []
    for key, (shape, previous) in requests.items():
        if (
            isinstance(previous, np.ndarray)
            and previous.shape == shape
            and previous.dtype == dtype
            and previous.flags.c_contiguous
            and previous.flags.writeable
        ):
            arrays[key] = previous
        else:
            fresh.append((key, shape))
    if fresh:
        itemsize = np.dtype(dtype).itemsize
        sizes = [-(-int(np.prod(shape)) * itemsize // 64) * 64 for _, shape in fresh]
        block = lease_block(sum(sizes) + 64)
        start = (-block.ctypes.data) % 64  # first 64-byte-aligned byte
        for (key, shape), size in zip(fresh, sizes):
            nbytes = int(np.prod(shape)) * itemsize
            arrays[key] = block[start : start + nbytes].view(dtype).reshape(shape)
            start += size
    return arrays


#: Bytes of trace memory the engine keeps for reuse once the traces using it are gone
#: (at most two blocks; 0 disables). Fresh memory must be paged in (zeroed by the kernel),
#: which costs as much as the arithmetic for a default-sized pass; a loop that calls
#: backprop on chunk after chunk reuses the same pages instead. :func:`clear_cache` frees it.
WORKSPACE_CACHE_BYTES = 1 << 30
_CACHE: list = []  # entries [block, weakref to the _Lease of its current use or None]


class _Lease:
    """One use of a cached block: every trace array of that use is a view whose base chain
    ends here, so the block is free again exactly when this object has been collected."""

    def __init__(self, block: np.ndarray) -> None:
        self.block = block
        self.__array_interface__ = block.__array_interface__


def lease_block(nbytes: int) -> np.ndarray:
    """A uint8 array of at least ``nbytes`` bytes that no live array views."""
    with LOCK:
        for entry in _CACHE:
            block, ref = entry
            if block.nbytes >= nbytes and (ref is None or ref() is None):
                break
        else:
            block = np.empty(nbytes, dtype=np.uint8)
            entry = [block, None]
            if nbytes <= WORKSPACE_CACHE_BYTES:
                _CACHE.append(entry)
                while len(_CACHE) > 2 or sum(e[0].nbytes for e in _CACHE) > WORKSPACE_CACHE_BYTES:
                    _CACHE.pop(0)
        lease = _Lease(block)
        entry[1] = weakref.ref(lease)
        return np.asarray(lease)


def clear_cache() -> None:
    """Drop the engine's cached trace memory (:data:`WORKSPACE_CACHE_BYTES`)."""
    with LOCK:
        _CACHE.clear()
