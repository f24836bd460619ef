"""Per-thread scratch buffers, placed at distinct offsets within a 4 KiB page.

Reading one buffer while writing another at an address equal modulo 4 KiB stalls every load (4K aliasing:
copying a (16, 2048) block took 97 µs instead of 10), so each named buffer starts at its own offset.

Pure NumPy; nothing here knows about Dask.
"""

from __future__ import annotations

import threading

import numpy as np

_local = threading.local()


def scratch(name: str, shape: tuple, dtype) -> np.ndarray:
    """A per-thread buffer reused across blocks and chunks (contiguous, uninitialised).

    Blocks allocate nothing large: Dask worker processes run with
    ``MALLOC_TRIM_THRESHOLD_=65536`` (distributed's default), which turns every
    large temporary into a fresh ``mmap`` and its page faults; with two busy
    workers that doubled the time of a chunk.
    """
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
        _local.slots = {}
    dtype = np.dtype(dtype)
    size = 1
    for n in shape:
        size *= int(n)
    key = (name, dtype.str)
    buf = pool.get(key)
    if buf is None or buf.size < size:
        slot = _local.slots.setdefault(key, len(_local.slots))
        buf = pool[key] = _staggered(max(size, 1), dtype, slot)
    return buf[:size].reshape(shape)


#: Distance, modulo 4 KiB, between the starts of two scratch buffers (a multiple
#: of the 64-byte cache line, odd in lines so that 64 buffers get 64 distinct offsets).
_SLOT_STRIDE = 9 * 64


def _staggered(size: int, dtype: np.dtype, slot: int) -> np.ndarray:
    """An uninitialised 1-D buffer whose start lies ``slot * 576`` bytes past a 4 KiB boundary.

    A block's per-row vectors are 16 KiB long (``BLOCK_VECTOR_BYTES``), so
    every row of every buffer starts at the same offset within a 4 KiB page
    as the buffer itself. Large allocations all start at the same offset
    (``mmap`` pages plus malloc's header), and a loop that reads one buffer
    while writing another at an address equal modulo 4 KiB stalls on every
    load (4K aliasing: the CPU takes the store for one to the same address).
    Copying a (16, 2048) block between two such buffers measured 97 µs
    instead of 10 µs. Giving each named buffer its own offset avoids it.
    """
    offset = (slot * _SLOT_STRIDE) % 4096
    raw = np.empty(size * dtype.itemsize + 4096, dtype=np.uint8)
    start = (offset - raw.ctypes.data) % 4096
    return raw[start : start + size * dtype.itemsize].view(dtype)
