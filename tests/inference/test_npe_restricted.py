"""NPE with a restricted prior, for simulators whose prior draws are mostly invalid.

Issue (pyloric network entry): "NPE with mostly-invalid simulations ... train a classifier of
valid vs invalid simulations and restrict the prior (sbi has tools for restricted priors) ...
Invalid counts appear in the result attrs and in ``diagnose()``."

The fixture is ``linear-gaussian`` (intercept ~ N(0, 2), two slopes) whose simulator returns NaN
features wherever the intercept is negative: half of the prior is invalid, and the valid region
{intercept >= 0} is known exactly. The data (reference θ, intercept 0.7, posterior SD about 0.11)
lie deep inside it, so the restricted posterior must still cover the truth. Budgets are tiny; one
restricted run is shared by the module (its own cache folder), the other tests use private
cache folders.
"""

import pickle

import numpy as np
import pytest

import mechzoo
from mechzoo.inference import npe
from mechzoo.inference.campaign import bank_dir
from mechzoo.inference.result import posterior_draws_flat, result_attrs

ENTRY = "linear-gaussian"
TRUTH = np.array([0.7, 1.2, -0.8])
#: A small classifier that separates intercept >= 0 from < 0 after a few epochs.
RESTRICT = {"simulations": 400, "hidden_features": 32, "training_batch_size": 50, "learning_rate": 3e-3, "max_num_epochs": 25, "stop_after_epochs": 10}
SETTINGS = {
    "num_simulations": 500,
    "max_num_epochs": 25,
    "learning_rate": 3e-3,
    "training_batch_size": 50,
    "num_draws": 500,
    "sbc_simulations": 30,
    "sbc_draws": 40,
    "ppc_draws": 0,
    "ppc_noise_seeds": 0,
    "restrict": RESTRICT,
}
SEED = 3


def _half_invalid_problem():
    """linear-gaussian whose features are all NaN where the intercept is negative."""
    prob = mechzoo.problem(ENTRY)
    original = prob.simulate_features

    def simulate_features(theta, seeds):
        x = original(theta, seeds).copy()
        x[np.atleast_2d(theta)[:, 0] < 0, :] = np.nan
        return x

    prob.simulate_features = simulate_features
    return prob


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One restricted NPE run in a module cache: (problem, result, cache folder)."""
    cache = tmp_path_factory.mktemp("restricted-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MECHZOO_CACHE", str(cache))
        prob = _half_invalid_problem()
        res = npe.run(prob, settings=SETTINGS, seed=SEED, progress=False)
    return prob, res, cache


@pytest.fixture
def module_cache(fitted, monkeypatch):
    monkeypatch.setenv("MECHZOO_CACHE", str(fitted[2]))
    return fitted[2]


def test_restricted_bank_is_mostly_valid_and_counts_are_reported(fitted, module_cache):
    prob, res, _ = fitted
    attrs = result_attrs(res)
    prior = npe.load_posterior(attrs["estimator_path"]).prior
    # the pilot from the plain prior is about half valid; the main bank from the restricted prior almost all
    theta_p, x_p = npe.simulate_bank(prob, 400, seed=SEED, stream="restrict", progress=False)
    theta_b, x_b = npe.simulate_bank(prob, 500, seed=SEED, stream="restricted", prior=prior, progress=False)
    valid_p, valid_b = np.isfinite(x_p).all(1), np.isfinite(x_b).all(1)
    assert 0.4 < valid_p.mean() < 0.65
    assert valid_b.mean() >= 0.8
    assert prior.accepts(theta_b).all()  # every bank θ was drawn inside the accepted region
    assert (theta_b[:, 0] < 0).mean() <= 0.2  # ... which is essentially intercept >= 0

    assert attrs["restriction_rounds"] == 1
    assert attrs["n_restriction_simulations"] == 400 and attrs["n_bank_simulations"] == 500
    assert attrs["n_simulations"] == 900  # the cost counts the pilot
    assert attrs["restriction_valid_fraction"] == pytest.approx(valid_p.mean())
    assert attrs["restriction_round_valid_fractions"] == [pytest.approx(valid_p.mean())]
    assert attrs["bank_valid_fraction"] == pytest.approx(valid_b.mean())
    assert 0.3 < attrs["restricted_prior_acceptance"] < 0.7  # exact: P(intercept >= 0) = 0.5
    assert attrs["restriction_training_wall_time_s"] > 0 and attrs["reused_restriction"] == 0
    # invalid counts cover pilot and bank; training pools the valid ones inside the region
    n_invalid = int((~valid_p).sum() + (~valid_b).sum())
    assert attrs["n_invalid_simulations"] == attrs["n_excluded_simulations"] == n_invalid
    in_region_p = prior.accepts(theta_p).numpy()
    assert attrs["n_restriction_training_simulations"] == int((valid_p & in_region_p).sum())
    assert attrs["n_restriction_valid_rejected"] == int((valid_p & ~in_region_p).sum())
    assert attrs["n_training_simulations"] == attrs["n_restriction_training_simulations"] + int(valid_b.sum())
    assert attrs["restriction_pilot_invalid_rejected"] > 0.8 and attrs["restriction_pilot_valid_accepted"] > 0.8

    table = mechzoo.diagnose(res)
    for key in ("restriction_valid_fraction", "bank_valid_fraction", "restricted_prior_acceptance", "n_restriction_simulations",
                "n_bank_simulations", "restriction_training_wall_time_s"):
        assert table.attrs[key] == pytest.approx(attrs[key]), key
    assert table.attrs["training_valid_fraction"] == pytest.approx(1 - n_invalid / 900)
    assert table.attrs["sbc_prior"] == "restricted"
    assert table.attrs["n_excluded_simulations"] == n_invalid


def test_posterior_is_restricted_and_covers_the_truth(fitted, module_cache):
    prob, res, _ = fitted
    attrs = result_attrs(res)
    prior = npe.load_posterior(attrs["estimator_path"]).prior
    draws, names = posterior_draws_flat(res)
    assert names == ["intercept", "slopes[x1]", "slopes[x2]"]
    assert prior.accepts(draws).all()  # sbi rejects posterior draws outside the restricted support
    mean, sd = draws.mean(0), draws.std(0)
    assert np.all(np.abs(mean - TRUTH) < np.maximum(3 * sd, 0.35)), (mean, sd)
    assert np.all(sd < 0.5)

    # SBC: held-out θ from the same restricted prior, only valid simulations ranked
    cal = res["calibration"].to_dataset()
    assert cal.attrs["sbc_prior"] == "restricted" and cal.attrs["stream"] == "calib-restricted"
    assert cal.attrs["restriction_fingerprint"] == prior.fingerprint == attrs["restriction_fingerprint"]
    theta_c, x_c = npe.simulate_bank(prob, 30, seed=SEED, stream="calib-restricted", prior=prior, progress=False)
    valid_c = np.isfinite(x_c).all(1)
    assert prior.accepts(theta_c).all()
    np.testing.assert_array_equal(cal["theta"].values, theta_c[valid_c])
    assert cal.attrs["n_excluded"] == int((~valid_c).sum())
    table = mechzoo.diagnose(res)
    assert table.attrs["n_sbc"] == int(valid_c.sum())
    assert table.attrs["sbc_valid_fraction"] == pytest.approx(valid_c.mean())


def test_restriction_and_bank_are_deterministic_and_keyed(fitted, tmp_path, monkeypatch):
    prob, res, cache = fitted
    attrs = result_attrs(res)
    monkeypatch.setenv("MECHZOO_CACHE", str(cache))
    prior = npe.load_posterior(attrs["estimator_path"]).prior
    theta_b, x_b = npe.simulate_bank(prob, 500, seed=SEED, stream="restricted", prior=prior, progress=False)

    # a fresh cache: the same seed trains the same classifier and draws the same bank
    monkeypatch.setenv("MECHZOO_CACHE", str(tmp_path / "fresh"))
    settings = {**npe.DEFAULTS, **SETTINGS}
    again, record, rounds = npe.train_restriction(prob, settings, seed=SEED, progress=False)
    assert record["reused_restriction"] == 0
    assert again.fingerprint == prior.fingerprint
    assert record["restricted_prior_acceptance"] == attrs["restricted_prior_acceptance"]
    theta_2, x_2 = npe.simulate_bank(prob, 500, seed=SEED, stream="restricted", prior=again, progress=False)
    np.testing.assert_array_equal(theta_2, theta_b)
    np.testing.assert_array_equal(x_2, x_b)
    np.testing.assert_array_equal(again.sample_seeded(300, 17).numpy(), prior.sample_seeded(300, 17).numpy())
    # the second call reuses the cached restriction (no training, same object content)
    cached, record2, _ = npe.train_restriction(prob, settings, seed=SEED, progress=False)
    assert record2["reused_restriction"] == 1 and cached.fingerprint == prior.fingerprint
    # the pickled prior keeps its identity
    restored = pickle.loads(pickle.dumps(prior))
    assert restored.fingerprint == prior.fingerprint
    np.testing.assert_array_equal(restored.accepts(theta_b).numpy(), prior.accepts(theta_b).numpy())

    # bank keys: the restricted bank is not the plain one, and its key holds the fingerprint
    plain = bank_dir(prob, seed=SEED, stream="restricted")
    restricted = bank_dir(prob, seed=SEED, stream="restricted", settings={"restricted_prior": prior.fingerprint})
    assert plain != restricted and restricted.exists() and not plain.exists()
    # another seed gives another restriction
    other, _, _ = npe.train_restriction(prob, settings, seed=SEED + 1, progress=False)
    assert other.fingerprint != prior.fingerprint


def test_cached_restriction_is_reused_without_simulating(fitted, module_cache):
    """A new NPE training setting trains a new estimator but reuses the restriction and both
    banks from the cache: no simulation is run again (SBC set included)."""
    prob = _half_invalid_problem()
    settings = {**SETTINGS, "max_num_epochs": 5}
    res = npe.run(prob, settings=settings, seed=SEED, progress=False)
    attrs = result_attrs(res)
    assert attrs["reused_estimator"] == 0 and attrs["reused_restriction"] == 1
    assert prob.counter.simulations == 0
    assert attrs["restriction_fingerprint"] == result_attrs(fitted[1])["restriction_fingerprint"]
    assert attrs["n_simulations"] == 900
    # the estimator's identity includes the restriction settings
    base = {**npe.DEFAULTS, **SETTINGS}
    assert npe.estimator_key(prob, base, SEED) != npe.estimator_key(prob, {**base, "restrict": None}, SEED)
    assert npe.estimator_key(prob, base, SEED) != npe.estimator_key(prob, {**base, "restrict": {**RESTRICT, "simulations": 500}}, SEED)


def test_two_rounds_nest_the_restriction(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHZOO_CACHE", str(tmp_path / "cache"))
    prob = _half_invalid_problem()
    settings = {**npe.DEFAULTS, **SETTINGS, "restrict": {**RESTRICT, "simulations": 300, "rounds": 2, "max_num_epochs": 15}}
    prior, record, rounds = npe.train_restriction(prob, settings, seed=1, progress=False)
    assert record["restriction_rounds"] == 2 and record["n_restriction_simulations"] == 600 and len(rounds) == 2
    first, second = record["restriction_round_valid_fractions"]
    assert second > max(first, 0.8)  # round 2 is drawn from the round-1 restricted prior
    # the final region is the intersection: never larger than round 1's
    assert record["restriction_round_acceptance"][1] <= record["restriction_round_acceptance"][0]
    assert len(prior.regions) == 2 and prior.accepts(rounds[1][0]).float().mean() > 0.8
    # round 2's θ come from the round-1 restricted prior: essentially intercept >= 0
    theta2, _ = rounds[1]
    assert (theta2[:, 0] < 0).mean() < 0.2


@pytest.mark.parametrize(
    "restrict, message",
    [
        (5, "mapping"),
        ({"rounds": 1}, "needs 'simulations'"),
        ({"simulations": 5}, r"restrict\['simulations'\] must be an integer >= 10"),
        ({"simulations": 100.5}, "integer"),
        ({"simulations": 100, "layers": 3}, "unknown key"),
        ({"simulations": 100, "rounds": 0}, r"restrict\['rounds'\]"),
        ({"simulations": 100, "model": "cnn"}, "'resnet' or 'mlp'"),
        ({"simulations": 100, "allowed_false_negatives": 1.0}, r"\[0, 1\)"),
        ({"simulations": 100, "validation_fraction": 0.0}, r"\(0, 1\)"),
        ({"simulations": 100, "learning_rate": -1.0}, "> 0"),
        ({"simulations": 100, "loss_importance_weights": "yes"}, "true or false"),
        ({"simulations": 100}, "fewer than one batch"),
    ],
)
def test_bad_restrict_settings_raise_before_simulating(restrict, message, tmp_path, monkeypatch):
    monkeypatch.setenv("MECHZOO_CACHE", str(tmp_path / "cache"))
    prob = _half_invalid_problem()
    with pytest.raises(ValueError, match=message):
        npe.run(prob, settings={"restrict": restrict}, progress=False)
    assert prob.counter.simulations == 0


def test_pilot_without_valid_simulations_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHZOO_CACHE", str(tmp_path / "cache"))
    prob = mechzoo.problem(ENTRY)
    prob.simulate_features = lambda theta, seeds: np.full((np.atleast_2d(theta).shape[0], 3), np.nan)
    with pytest.raises(RuntimeError, match=r"only 0 of 60 prior pilot simulations are valid.*restrict\['simulations'\]"):
        npe.run(prob, settings={"restrict": {"simulations": 60, "training_batch_size": 20}}, progress=False)


def test_balanced_loss_restricts_a_rare_valid_region(tmp_path, monkeypatch):
    """Valid only where intercept > 3 (6.7 % of the N(0, 2) prior): with the classes' losses
    balanced (loss_importance_weights = true) as with sbi's plain loss, the accepted region is
    intercept > 3 up to the classifier's error, i.e. about 6.7 % of the prior."""
    monkeypatch.setenv("MECHZOO_CACHE", str(tmp_path / "cache"))
    prob = mechzoo.problem(ENTRY)
    original = prob.simulate_features

    def simulate_features(theta, seeds):
        x = original(theta, seeds).copy()
        x[np.atleast_2d(theta)[:, 0] <= 3.0, :] = np.nan
        return x

    prob.simulate_features = simulate_features
    from sbi.utils import RestrictionEstimator

    passed = []
    train = RestrictionEstimator.train

    def spy(self, *args, **kwargs):
        passed.append(kwargs.get("loss_importance_weights"))
        return train(self, *args, **kwargs)

    monkeypatch.setattr(RestrictionEstimator, "train", spy)
    base = {**RESTRICT, "simulations": 3000, "training_batch_size": 100, "max_num_epochs": 40}
    for weighted in (False, True):
        settings = {**npe.DEFAULTS, **SETTINGS, "restrict": {**base, "loss_importance_weights": weighted}}
        prior, record, rounds = npe.train_restriction(prob, settings, seed=2, progress=False)
        # the threshold is set on sbi's held-out valid draws, so a few training draws may fall outside
        assert record["restriction_pilot_valid_accepted"] >= 0.95
        assert 0.05 < record["restricted_prior_acceptance"] < 0.09
        theta = prior.sample_seeded(400, 5).numpy()
        assert (theta[:, 0] > 2.8).mean() > 0.95
    assert passed == [False, True]  # the setting reaches sbi's classifier training
