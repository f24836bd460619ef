"""Counter-based random numbers keyed by global row index (pure NumPy).

Every random draw that touches the data (k-means|| and k-means++ sampling, the
"random" and "random_from_data" initialisations) is a function of
``(seed, stream, global row index)`` only. A chunk can therefore draw its rows'
numbers without knowing how the rest of the data is chunked, and a fit gives the
same result for any chunking.

The generator is SplitMix64 (Steele, Lea & Flood 2014) evaluated at position
``index`` of the sequence seeded by ``mix(seed, stream)``.
"""

from __future__ import annotations

import numpy as np

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def stream_key(seed: int, stream: int) -> int:
    """A 64-bit key for one named stream of one seed."""
    with np.errstate(over="ignore"):
        a = _mix(np.array([(seed & _MASK64)], dtype=np.uint64) + _GAMMA)
        b = _mix(np.array([(stream & _MASK64)], dtype=np.uint64) ^ a)
    return int(b[0])


def keyed_uniform(key: int, index: np.ndarray) -> np.ndarray:
    """Uniform draws in the open interval (0, 1), one per ``index``.

    Parameters
    ----------
    key : int
        Stream key from :func:`stream_key`.
    index : ndarray of int, shape (n,)
        Global positions (e.g. row numbers, or ``row * K + k``).

    Returns
    -------
    u : ndarray of float64, shape (n,)
    """
    idx = np.asarray(index, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (idx + np.uint64(1)) * _GAMMA
        bits = _mix(z) >> np.uint64(11)
    return (bits.astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


def keyed_exponential(key: int, index: np.ndarray) -> np.ndarray:
    """Standard exponential draws, one per ``index`` (see :func:`keyed_uniform`)."""
    return -np.log(keyed_uniform(key, index))
