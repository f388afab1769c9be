"""Truncated sequential NPE (TSNPE; Deistler, Goncalves & Macke 2022) — the ``truncate`` setting.

For simulators whose valid region is small (the pyloric network), the rounds after the first
simulate only inside the high-probability region of the current posterior at the observation.
Checked here: the box-truncated prior is sampled exactly (KS against the truncated marginals,
box mass against closed forms), settings are validated, and on ``linear-gaussian`` (exact
posterior) the rounds stay inside their proposal, are counted, keep the posterior exact within
0.3 posterior SD, and make the estimator specific to the observation.
"""

import numpy as np
import pytest
import scipy.stats

import mechzoo
from mechzoo.inference import npe
from mechzoo.inference.priors import ParameterSpec, joint_torch_prior, make_prior
from mechzoo.inference.result import result_attrs
from npe_round_helpers import FingerprintOnly, assert_matches_exact, assert_key_is_specific_to_observation, exact_linear_gaussian, fit_in_fresh_cache

ENTRY = "linear-gaussian"
SETTINGS = {
    "num_simulations": 600,
    "num_draws": 2000,
    "sbc_simulations": 0,
    "ppc_draws": 0,
    "ppc_noise_seeds": 0,
    "truncate": {"rounds": 1, "simulations": 600, "posterior_draws": 5000, "probe": 2000},
}


def _joint():
    specs = [
        ParameterSpec(name="u", prior=make_prior({"kind": "Uniform", "lower": 0.0, "upper": 10.0}), dims=("k",), coords={"k": [0, 1]}),
        ParameterSpec(name="g", prior=make_prior({"kind": "LogUniform", "lower": 0.01, "upper": 1000.0})),
        ParameterSpec(name="n", prior=make_prior({"kind": "Normal", "mu": 1.0, "sigma": 2.0})),
    ]
    return joint_torch_prior(specs)


def test_box_truncated_prior_is_exact():
    import torch

    from mechzoo.inference._truncation import box_mass, truncated_box_sample

    joint = _joint()
    lo = np.array([2.0, 0.0, 0.1, -1.0])
    hi = np.array([3.0, 10.0, 10.0, 4.0])
    torch.manual_seed(0)
    draws = truncated_box_sample(joint, lo, hi, 4000).numpy()
    assert draws.shape == (4000, 4)
    assert np.all(draws >= lo) and np.all(draws <= hi)
    truncated = [
        scipy.stats.uniform(2.0, 1.0).cdf,
        scipy.stats.uniform(0.0, 10.0).cdf,
        lambda x: (np.log(x) - np.log(0.1)) / (np.log(10.0) - np.log(0.1)),
        lambda x: (scipy.stats.norm(1, 2).cdf(x) - scipy.stats.norm(1, 2).cdf(-1)) / (scipy.stats.norm(1, 2).cdf(4) - scipy.stats.norm(1, 2).cdf(-1)),
    ]
    for i, cdf in enumerate(truncated):
        assert scipy.stats.kstest(draws[:, i], cdf).pvalue > 0.01, i
    expected = [0.1, 1.0, 2.0 / 5.0, scipy.stats.norm(1, 2).cdf(4) - scipy.stats.norm(1, 2).cdf(-1)]
    np.testing.assert_allclose(box_mass(joint, lo, hi), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"rounds": 1}, "needs"),
        ({"rounds": 0, "simulations": 100}, "rounds"),
        ({"rounds": 1, "simulations": 100, "quantile": 0.7}, "quantile"),
        ({"rounds": 1, "simulations": 100, "typo": 1}, "unknown"),
        (5, "mapping"),
    ],
)
def test_truncate_setting_is_validated(bad, match):
    with pytest.raises(ValueError, match=match):
        npe.check_truncate_declaration(bad)


@pytest.fixture(scope="module")
def truncated_fit(tmp_path_factory):
    return fit_in_fresh_cache(tmp_path_factory, "truncated-cache", SETTINGS)


def test_truncated_round_is_inside_its_proposal_and_counted(truncated_fit, monkeypatch):
    res, cache = truncated_fit
    monkeypatch.setenv("MECHZOO_CACHE", str(cache))
    attrs = result_attrs(res)
    assert attrs["amortised"] == 0 and attrs["truncation_rounds"] == 1
    assert attrs["truncation_round_simulations"] == [600]
    assert attrs["n_simulations"] == 1200 and attrs["n_training_simulations"] == 1200
    assert 0.0 < attrs["truncation_round_box_mass"][0] < 0.5  # the box is much smaller than the prior
    assert attrs["truncation_round_acceptance"][0] > 0.1
    assert attrs["truncation_round_in_support"] == [1.0]  # a Gaussian prior: every estimator draw is in its support
    assert res["calibration"].attrs["n_sbc"] == 0 and "not amortised" in res["calibration"].attrs["sbc_skipped"]
    table = mechzoo.diagnose(res)
    assert table.attrs["n_simulations"] == 1200
    # the round's posterior is cached for resumption; the round's bank holds draws of the box ∩ region
    path = str(attrs["estimator_path"])
    assert npe.load_posterior(path.replace(".pt", "-round-1.pt")) is not None
    theta, _ = npe.simulate_bank(mechzoo.problem(ENTRY), 600, seed=2, stream="truncate-1", prior=FingerprintOnly(attrs["truncation_round_fingerprints"][0]), progress=False)
    _, cov = exact_linear_gaussian()
    sd = np.sqrt(np.diag(cov))
    width = theta.max(0) - theta.min(0)
    assert np.all(width < 16 * sd)  # a truncation to the posterior's support: prior SDs are 10-20x the posterior's
    assert np.all(width > 4 * sd)  # ... and not tighter than the posterior itself


def test_truncated_posterior_matches_exact(truncated_fit):
    assert_matches_exact(truncated_fit[0])


def test_truncated_estimator_key_depends_on_the_observation():
    assert_key_is_specific_to_observation(SETTINGS, "truncate")
