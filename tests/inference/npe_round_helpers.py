"""Helpers shared by the sequential-round NPE tests (``truncate`` and ``sequential`` settings)."""

import numpy as np
import pytest

import mechzoo
from mechzoo.models.linear_gaussian import exact_posterior

ENTRY = "linear-gaussian"


def exact_linear_gaussian():
    """(mean, covariance) of the exact posterior of ``linear-gaussian`` at its observation."""
    prob = mechzoo.problem(ENTRY)
    mu0 = np.array([0.0, 0.0, 0.5])  # prior declared in the entry: intercept N(0,2), slopes N([0,0.5],[1,1.5])
    sd0 = np.array([2.0, 1.0, 1.5])
    return exact_posterior(prob.observed["y"], mu0, sd0, config=prob.config)


def fit_in_fresh_cache(tmp_path_factory, name: str, settings: dict):
    """``(result, cache folder)`` of an NPE fit of ``linear-gaussian`` (seed 2) in a new cache."""
    cache = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MECHZOO_CACHE", str(cache))
        res = mechzoo.fit(ENTRY, method="npe", seed=2, progress=False, **settings)
    return res, cache


def assert_key_is_specific_to_observation(settings: dict, round_setting: str) -> None:
    """With the round setting ``round_setting`` on, the estimator key depends on the observation;
    without it (an amortised estimator) it does not."""
    from mechzoo.inference import npe

    settings = {**npe.DEFAULTS, **settings}
    a = mechzoo.problem(ENTRY)
    b = mechzoo.problem(ENTRY, recipe="default", config=None)
    b.observed = {k: np.asarray(v) + 0.5 for k, v in a.observed.items()}
    assert npe.estimator_key(a, settings, 0) != npe.estimator_key(b, settings, 0)
    plain = {**settings, round_setting: None}
    assert npe.estimator_key(a, plain, 0) == npe.estimator_key(b, plain, 0)


class FingerprintOnly:
    """Reads back an existing bank by its fingerprint (never samples: the bank is complete)."""

    def __init__(self, fingerprint):
        self.fingerprint = fingerprint

    def sample_seeded(self, n, seed):  # pragma: no cover - the bank holds every row
        raise AssertionError("the bank should be complete")


def assert_matches_exact(res, tolerance: float = 0.3) -> None:
    """Posterior mean within ``tolerance`` posterior SD of the exact one, SD within that fraction."""
    from mechzoo.inference.result import posterior_draws_flat

    mean, cov = exact_linear_gaussian()
    sd = np.sqrt(np.diag(cov))
    draws, _ = posterior_draws_flat(res)
    assert np.all(np.abs(draws.mean(0) - mean) / sd < tolerance)
    assert np.all(np.abs(draws.std(0) / sd - 1) < tolerance)
