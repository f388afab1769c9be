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
(:func:`legacy_random_state`). The generator itself is shared with the pyloric simulator
(:mod:`mechzoo.models._legacy_rng`); its state lives in a local array: no global or thread state.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .._legacy_rng import fill_legacy_normal

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
def fill_standard_normal(seed_low, seed_high, out, mt):
    """Fill ``out`` with the standard normals of the legacy ``RandomState`` of one seed.

    Parameters
    ----------
    seed_low, seed_high : int
        Low and high 32-bit words of the uint64 seed (see module docstring).
    out : numpy.ndarray
        float64 array to fill, in draw order.
    mt : numpy.ndarray
        Unused scratch (kept for the kernel's call signature); the shared generator keeps its
        state in a local array.
    """
    fill_legacy_normal(seed_low, seed_high, 1.0, out)
