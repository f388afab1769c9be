"""Numba re-implementation of NumPy's *legacy* Gaussian stream (``RandomState.normal``).

The reference pyloric simulator draws its noise current with
``np.random.RandomState(seed).normal(scale=0.001, size=(3, N))`` (spec
``simulator-models.md`` §2.5). To reproduce that stream sample for sample inside a
compiled, thread-parallel kernel -- one seed per simulation, no shared generator, no
global state -- this module implements the two pieces NumPy's legacy generator is made of:

* the Mersenne Twister MT19937 (Matsumoto & Nishimura 1998) with NumPy's two seeding
  routines: ``init_genrand`` for an integer seed in ``[0, 2**32)`` (what
  ``RandomState(seed)`` does) and ``init_by_array`` for a key of 32-bit words (what
  ``RandomState([lo, hi])`` does; used here for 64-bit seeds);
* the legacy 53-bit double ``(a * 2**26 + b) / 2**53`` with ``a = next32 >> 5``,
  ``b = next32 >> 6``, and the legacy polar (Marsaglia) Gaussian that returns the second
  variate of each accepted pair first and caches the other one.

All 32-bit words are held in ``int64`` so that every intermediate product stays below
``2**63`` and Numba never mixes signed and unsigned integers.

The mapping from a ``uint64`` seed to the generator is:
``seed < 2**32`` -> ``RandomState(int(seed))`` (bit-identical to upstream pyloric), else
``RandomState(np.array([seed & 0xffffffff, seed >> 32]))``. :func:`numpy_reference_noise`
gives the same stream through NumPy for tests.
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


@njit(cache=True)
def _init_genrand(mt, seed):
    """Seed the MT19937 state vector ``mt`` (int64, 624) from a 32-bit integer."""
    mt[0] = seed & _MASK32
    for i in range(1, _N):
        prev = mt[i - 1]
        mt[i] = (1812433253 * (prev ^ (prev >> 30)) + i) & _MASK32


@njit(cache=True)
def _init_by_array(mt, key):
    """Seed ``mt`` from an array of 32-bit words (MT19937 ``init_by_array``)."""
    _init_genrand(mt, 19650218)
    key_length = key.shape[0]
    i = 1
    j = 0
    k = _N if _N > key_length else key_length
    while k > 0:
        prev = mt[i - 1]
        mt[i] = ((mt[i] ^ ((prev ^ (prev >> 30)) * 1664525)) + key[j] + j) & _MASK32
        i += 1
        j += 1
        if i >= _N:
            mt[0] = mt[_N - 1]
            i = 1
        if j >= key_length:
            j = 0
        k -= 1
    k = _N - 1
    while k > 0:
        prev = mt[i - 1]
        mt[i] = ((mt[i] ^ ((prev ^ (prev >> 30)) * 1566083941)) - i) & _MASK32
        i += 1
        if i >= _N:
            mt[0] = mt[_N - 1]
            i = 1
        k -= 1
    mt[0] = 0x80000000


@njit(cache=True)
def _twist(mt):
    """Regenerate the 624 words of the MT19937 state in place."""
    for kk in range(_N - _M):
        y = (mt[kk] & _UPPER_MASK) | (mt[kk + 1] & _LOWER_MASK)
        mag = _MATRIX_A if (y & 1) else 0
        mt[kk] = mt[kk + _M] ^ (y >> 1) ^ mag
    for kk in range(_N - _M, _N - 1):
        y = (mt[kk] & _UPPER_MASK) | (mt[kk + 1] & _LOWER_MASK)
        mag = _MATRIX_A if (y & 1) else 0
        mt[kk] = mt[kk + (_M - _N)] ^ (y >> 1) ^ mag
    y = (mt[_N - 1] & _UPPER_MASK) | (mt[0] & _LOWER_MASK)
    mag = _MATRIX_A if (y & 1) else 0
    mt[_N - 1] = mt[_M - 1] ^ (y >> 1) ^ mag


@njit(cache=True)
def _temper(y):
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    y ^= y >> 18
    return y & _MASK32


@njit(cache=True)
def seed_state(seed_low, seed_high):
    """Return a fresh MT19937 state for a 64-bit seed given as two 32-bit halves.

    Parameters
    ----------
    seed_low, seed_high : int
        ``seed & 0xffffffff`` and ``seed >> 32``. ``seed_high == 0`` selects the integer
        seeding of ``RandomState(seed)``; otherwise the key ``[seed_low, seed_high]`` is
        used as for ``RandomState([seed_low, seed_high])``.

    Returns
    -------
    numpy.ndarray
        int64 array of length 625: the 624 state words followed by the position.
    """
    state = np.empty(_N + 1, dtype=np.int64)
    mt = state[:_N]
    if seed_high == 0:
        _init_genrand(mt, seed_low)
    else:
        key = np.empty(2, dtype=np.int64)
        key[0] = seed_low
        key[1] = seed_high
        _init_by_array(mt, key)
    state[_N] = _N
    return state


@njit(cache=True)
def fill_legacy_normal(seed_low, seed_high, scale, out):
    """Fill ``out`` (1-D float64) with ``RandomState(seed).normal(scale=scale, size=out.size)``.

    Parameters
    ----------
    seed_low, seed_high : int
        The two 32-bit halves of the 64-bit seed (see :func:`seed_state`).
    scale : float
        Standard deviation of the normal draws (``loc`` is 0).
    out : numpy.ndarray
        1-D float64 array filled in place, in NumPy's C order of draws.
    """
    state = seed_state(seed_low, seed_high)
    mt = state[:_N]
    pos = _N
    has_gauss = False
    cached = 0.0
    n = out.shape[0]
    for idx in range(n):
        if has_gauss:
            has_gauss = False
            gauss = cached
        else:
            while True:
                # legacy random_double: two 32-bit words -> 53-bit mantissa
                if pos >= _N:
                    _twist(mt)
                    pos = 0
                a = _temper(mt[pos]) >> 5
                pos += 1
                if pos >= _N:
                    _twist(mt)
                    pos = 0
                b = _temper(mt[pos]) >> 6
                pos += 1
                x1 = 2.0 * ((a * 67108864.0 + b) / 9007199254740992.0) - 1.0
                if pos >= _N:
                    _twist(mt)
                    pos = 0
                a = _temper(mt[pos]) >> 5
                pos += 1
                if pos >= _N:
                    _twist(mt)
                    pos = 0
                b = _temper(mt[pos]) >> 6
                pos += 1
                x2 = 2.0 * ((a * 67108864.0 + b) / 9007199254740992.0) - 1.0
                r2 = x1 * x1 + x2 * x2
                if r2 < 1.0 and r2 != 0.0:
                    break
            f = np.sqrt(-2.0 * np.log(r2) / r2)
            cached = f * x1
            has_gauss = True
            gauss = f * x2
        out[idx] = 0.0 + scale * gauss


def split_seed(seed) -> tuple[int, int]:
    """Split a non-negative integer seed (< 2**64) into its 32-bit halves ``(low, high)``."""
    seed = int(seed)
    if seed < 0 or seed >= 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed & _MASK32, seed >> 32


def numpy_reference_noise(seed, scale: float, size) -> np.ndarray:
    """The same stream as :func:`fill_legacy_normal`, drawn through NumPy (for tests).

    Parameters
    ----------
    seed : int
        Seed in ``[0, 2**64)``.
    scale : float
        Standard deviation.
    size : int or tuple of int
        Output shape (draws fill it in C order).
    """
    low, high = split_seed(seed)
    rs = np.random.RandomState(low) if high == 0 else np.random.RandomState(np.array([low, high]))
    return rs.normal(scale=scale, size=size)
