"""Per-simulation noise stream: NumPy's legacy ``RandomState(seed).standard_normal`` in Numba.

The references draw the intrinsic-noise normals of one simulation from a fresh legacy
``numpy.random.RandomState(seed)`` (spec §1.5). To reproduce them exactly without a Python call per
simulation, this module implements the same generator in Numba: the MT19937 Mersenne Twister
(Matsumoto & Nishimura 1998) seeded as ``RandomState`` seeds it, its 53-bit uniform double, and the
polar (Marsaglia) Gaussian with one cached value, in the order of the legacy ``gauss`` routine.

Seed convention (one seed per simulation, so results do not depend on batching):

* ``seed < 2**32``: the stream of ``RandomState(seed)`` (integer seeding, ``init_genrand``);
* ``seed >= 2**32``: the stream of ``RandomState([seed & 0xffffffff, seed >> 32])``
  (array seeding, ``init_by_array``),

so every uint64 seed maps to a distinct stream that plain NumPy can reproduce
(:func:`legacy_random_state`). The MT state lives in a local array: no global or thread state.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_N = 624
_M = 397
_MATRIX_A = 0x9908B0DF
_UPPER_MASK = 0x80000000
_LOWER_MASK = 0x7FFFFFFF
_MASK32 = 0xFFFFFFFF


def legacy_random_state(seed: int) -> np.random.RandomState:
    """The NumPy ``RandomState`` whose normal stream :func:`fill_standard_normal` reproduces.

    Parameters
    ----------
    seed : int
        Seed in ``[0, 2**64)``.
    """
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64); got {seed}")
    if seed < 2**32:
        return np.random.RandomState(seed)
    return np.random.RandomState([seed & _MASK32, seed >> 32])


def split_seeds(seeds) -> tuple[np.ndarray, np.ndarray]:
    """Split uint64 seeds into (low, high) 32-bit words as int64 arrays (for the Numba kernels)."""
    seeds = np.asarray(seeds)
    if seeds.dtype.kind not in "ui":
        raise ValueError(f"seeds must be an integer array (uint64); got dtype {seeds.dtype}")
    if seeds.dtype.kind == "i" and np.any(seeds < 0):
        raise ValueError("seeds must be non-negative")
    seeds = seeds.astype(np.uint64)
    low = (seeds & np.uint64(_MASK32)).astype(np.int64)
    high = (seeds >> np.uint64(32)).astype(np.int64)
    return low, high


@njit(cache=True)
def _init_genrand(mt, seed):
    mt[0] = seed & _MASK32
    for i in range(1, _N):
        previous = mt[i - 1]
        mt[i] = (1812433253 * (previous ^ (previous >> 30)) + i) & _MASK32


@njit(cache=True)
def _init_by_array(mt, key_low, key_high):
    """``init_by_array`` with the two-word key ``[key_low, key_high]``."""
    _init_genrand(mt, 19650218)
    i = 1
    j = 0
    for _ in range(_N):  # max(N, key length) iterations
        previous = mt[i - 1]
        key = key_low if j == 0 else key_high
        mt[i] = ((mt[i] ^ ((previous ^ (previous >> 30)) * 1664525)) + key + j) & _MASK32
        i += 1
        j += 1
        if i >= _N:
            mt[0] = mt[_N - 1]
            i = 1
        if j >= 2:
            j = 0
    for _ in range(_N - 1):
        previous = mt[i - 1]
        mt[i] = ((mt[i] ^ ((previous ^ (previous >> 30)) * 1566083941)) - i) & _MASK32
        i += 1
        if i >= _N:
            mt[0] = mt[_N - 1]
            i = 1
    mt[0] = 0x80000000


@njit(cache=True)
def _twist(mt):
    """Regenerate the 624 words of the MT19937 state."""
    for k in range(_N - _M):
        y = (mt[k] & _UPPER_MASK) | (mt[k + 1] & _LOWER_MASK)
        mt[k] = mt[k + _M] ^ (y >> 1) ^ (_MATRIX_A * (y & 1))
    for k in range(_N - _M, _N - 1):
        y = (mt[k] & _UPPER_MASK) | (mt[k + 1] & _LOWER_MASK)
        mt[k] = mt[k + _M - _N] ^ (y >> 1) ^ (_MATRIX_A * (y & 1))
    y = (mt[_N - 1] & _UPPER_MASK) | (mt[0] & _LOWER_MASK)
    mt[_N - 1] = mt[_M - 1] ^ (y >> 1) ^ (_MATRIX_A * (y & 1))


@njit(cache=True, inline="always")
def _next_uint32(mt, position):
    """Next tempered 32-bit output of MT19937 and the new position in the state."""
    if position >= _N:
        _twist(mt)
        position = 0
    y = mt[position]
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    y ^= y >> 18
    return y, position + 1


@njit(cache=True, inline="always")
def _uniform53(a, b):
    """Uniform double in [0, 1) with 53 random bits from two 32-bit outputs (legacy ``random_double``)."""
    return ((a >> 5) * 67108864.0 + (b >> 6)) / 9007199254740992.0


@njit(cache=True)
def fill_standard_normal(seed_low, seed_high, out, mt):
    """Fill ``out`` with the standard normals of the legacy ``RandomState`` of one seed.

    Parameters
    ----------
    seed_low, seed_high : int
        Low and high 32-bit words of the uint64 seed (see module docstring).
    out : numpy.ndarray
        float64 array to fill, in draw order.
    mt : numpy.ndarray
        int64 scratch array of length 624 (the generator state), overwritten.
    """
    if seed_high == 0:
        _init_genrand(mt, seed_low)
    else:
        _init_by_array(mt, seed_low, seed_high)
    position = _N
    count = out.shape[0]
    k = 0
    while k < count:
        # polar method: draw points in (-1, 1)^2 until inside the unit disc (legacy ``gauss``)
        while True:
            a, position = _next_uint32(mt, position)
            b, position = _next_uint32(mt, position)
            x1 = 2.0 * _uniform53(a, b) - 1.0
            a, position = _next_uint32(mt, position)
            b, position = _next_uint32(mt, position)
            x2 = 2.0 * _uniform53(a, b) - 1.0
            r2 = x1 * x1 + x2 * x2
            if r2 < 1.0 and r2 != 0.0:
                break
        factor = np.sqrt(-2.0 * np.log(r2) / r2)
        out[k] = factor * x2  # returned first
        if k + 1 < count:
            out[k + 1] = factor * x1  # the cached value, returned next
        k += 2
