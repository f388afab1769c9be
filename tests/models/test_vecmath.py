"""Accuracy and vectorisation of the branch-free exp/expm1 of ``mechzoo.models._vecmath``."""

import numpy as np
import numba
import pytest
from numba import njit

from mechzoo.models._vecmath import vexp, vexpm1, vlog

ULP = np.finfo(np.float64).eps


@njit(cache=True)
def _both(x, e, em1):  # pragma: no cover - compiled
    for i in range(x.size):
        e[i] = vexp(x[i])
        em1[i] = vexpm1(x[i])


def _eval(x):
    e = np.empty_like(x)
    em1 = np.empty_like(x)
    _both(x, e, em1)
    return e, em1


@pytest.mark.parametrize(
    "sampler",
    [
        lambda rng: rng.uniform(-700.0, 700.0, 200_000),
        lambda rng: rng.uniform(-1.0, 1.0, 200_000),
        lambda rng: 10.0 ** rng.uniform(-300.0, 0.0, 200_000),
        lambda rng: -(10.0 ** rng.uniform(-300.0, 0.0, 200_000)),
    ],
    ids=["wide", "unit", "tiny-positive", "tiny-negative"],
)
def test_exp_and_expm1_within_two_ulp_of_libm(sampler):
    x = sampler(np.random.default_rng(3))
    e, em1 = _eval(x)
    assert np.max(np.abs(e / np.exp(x) - 1.0)) <= 2 * ULP
    assert np.max(np.abs(em1 / np.expm1(x) - 1.0)) <= 2 * ULP


def test_documented_edge_behaviour():
    e, em1 = _eval(np.array([np.nan, -1e4, 1e4, 0.0, -745.0]))
    assert np.isnan(e[0]) and np.isnan(em1[0])
    assert 0.0 < e[1] < 1e-307 and em1[1] == -1.0  # clamped at -708, not a subnormal
    assert np.isfinite(e[2]) and e[2] > 1e307  # clamped at 709, finite
    assert e[3] == 1.0 and em1[3] == 0.0
    assert e[4] == e[1]


@pytest.mark.parametrize("lo, hi", [(-300.0, 300.0), (-1.0, 1.0), (2.0, 8.0)])
def test_branch_free_log_within_two_ulp_of_libm(lo, hi):
    """The vectorisable log (pyloric E_Ca) against libm (via NumPy)."""
    x = 10.0 ** np.random.default_rng(2).uniform(lo, hi, 100_000)
    y = _vlog_array(x)
    ref = np.log(x)
    np.testing.assert_array_less(np.abs(y - ref), 2.01 * np.spacing(np.abs(ref)) + 1e-300)
    special = np.array([0.0, -1.0, np.inf, np.nan, 1.0])
    np.testing.assert_array_equal(_vlog_array(special), [-np.inf, np.nan, np.inf, np.nan, 0.0])


@numba.njit(cache=True)
def _vlog_kernel(x, out):  # pragma: no cover - compiled
    for i in range(x.size):
        out[i] = vlog(x[i])


def _vlog_array(x):
    out = np.empty_like(x)
    _vlog_kernel(x, out)
    return out
