"""NPE checks: posterior predictive check and the handling of invalid (non-finite) features.

Issue "Simulation-based route: NPE with sbi at scale": ``diagnose()`` for NPE gives a posterior
predictive check whose acceptance is "features of the median draw within 2 SD (of the noise
spread at the truth) of the observation"; NaN/failed simulations are counted, reported, and
excluded (or replaced, as an entry declares) consistently in training and calibration.

Everything runs on the ``linear-gaussian`` entry (3 parameters, 3 sufficient features, closed-form
posterior) with small budgets: a 1000-simulation MAF trained for 40 epochs already puts the
posterior median within about half a posterior SD of the exact one. Every test uses a private
cache folder, so nothing is reused from (or leaks into) other tests' banks and estimators.
"""

import numpy as np
import pandas as pd
import pytest

import mechzoo
from mechzoo.inference import npe
from mechzoo.inference.problem import seeds_for
from mechzoo.inference.result import posterior_draws_flat, result_attrs
from mechzoo.models.linear_gaussian import design_matrix

ENTRY = "linear-gaussian"
#: A budget that trains a usable posterior in a few seconds (see the module docstring).
GOOD = {"num_simulations": 1000, "max_num_epochs": 40, "learning_rate": 3e-3, "training_batch_size": 50, "num_draws": 1000}
#: The cheapest run that exercises every step (the posterior is poor; only bookkeeping is checked).
TINY = {"num_simulations": 300, "max_num_epochs": 3, "num_draws": 60, "sbc_draws": 20}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHZOO_CACHE", str(tmp_path / "cache"))


def _feature_noise_sd(config):
    """Exact SD of the features X^T y / n at any θ: noise_sd * sqrt(diag(X^T X)) / n."""
    x = design_matrix(config)
    n = x.shape[0]
    return float(config["noise_sd"]) * np.sqrt(np.diag(x.T @ x)) / n


def test_ppc_group_and_median_draw_within_2sd(tmp_path):
    res = mechzoo.fit(ENTRY, method="npe", seed=0, progress=False, sbc_simulations=0, ppc_draws=60, ppc_noise_seeds=12, **GOOD)
    prob = mechzoo.problem(ENTRY)
    names, fnames = prob.flat_names(), prob.feature_names()
    ppc = res["posterior_predictive"].to_dataset()
    assert ppc["features"].dims == ("chain", "draw", "feature") and ppc["features"].shape == (1, 60, 3)
    assert ppc["theta"].dims == ("chain", "draw", "parameter")
    assert list(ppc["feature"].values) == fnames and list(ppc["parameter"].values) == names
    assert ppc["median_draw_features"].shape == (12, 3) and ppc["truth_features"].shape == (12, 3)
    np.testing.assert_array_equal(ppc["observed_features"].values, prob.observed_features())
    # the parameters used are the first posterior draws, and their median is the median of all draws
    draws, _ = posterior_draws_flat(res)
    np.testing.assert_array_equal(ppc["theta"].values[0], draws[:60])
    np.testing.assert_array_equal(ppc["median_draw_theta"].values, np.median(draws, axis=0))
    np.testing.assert_array_equal(ppc["truth_theta"].values, [0.7, 1.2, -0.8])  # the recipe's reference θ
    # each stored simulation is reproducible from (seed, stream, index)
    i = 17
    again = prob.simulate_features(draws[i : i + 1], seeds_for(0, 60, stream="ppc")[i : i + 1])
    np.testing.assert_allclose(ppc["features"].values[0, i], again[0], rtol=1e-12)  # batched BLAS may differ in the last bit
    assert result_attrs(res)["n_ppc_simulations"] == 60 + 12 + 12

    table = mechzoo.diagnose(res)
    check = pd.DataFrame.from_dict(table.attrs["ppc"], orient="index")
    assert list(check.index) == fnames
    assert {"observed", "ppc_mean", "ppc_sd", "ppc_z", "ppc_n_invalid", "median_mean", "median_sd", "median_z", "truth_sd",
            "median_z_truth_sd", "acceptance_z"} <= set(check.columns)
    # the noise spread at the truth matches the exact feature SD (20 seeds: about 16 % relative error)
    np.testing.assert_allclose(check["truth_sd"].values, _feature_noise_sd(prob.config), rtol=0.45)
    # issue acceptance: the median draw's features lie within 2 noise SDs (at the truth) of the observation
    assert table.attrs["ppc_median_sd_source"] == "truth"
    assert (check["acceptance_z"] <= 2).all(), check
    assert table.attrs["ppc_median_within_2sd"] is True
    assert table.attrs["ppc_median_max_z"] == pytest.approx(check["acceptance_z"].max())
    assert table.attrs["n_ppc_draws"] == 60 and table.attrs["n_ppc_invalid_draws"] == 0
    assert (check["ppc_n_invalid"] == 0).all() and (np.abs(check["ppc_z"]) < 2).all()
    # the z-score is the one documented
    np.testing.assert_allclose(check["ppc_z"], (check["observed"] - check["ppc_mean"]) / check["ppc_sd"])
    # the group survives a netCDF round trip
    assert mechzoo.load_result(mechzoo.save_result(res, tmp_path / "r.nc")).identical(res)


def test_ppc_detects_an_observation_the_model_cannot_produce():
    """Intercept pinned at its true value, slopes free: adding 10 noise SDs of ``mean_y`` to every
    y cannot be explained by the slopes (the shift is the intercept's direction), so the
    median draw misses ``mean_y`` by far more than 2 SD; the unshifted data pass."""
    settings = {**GOOD, "num_simulations": 600, "sbc_simulations": 0, "ppc_draws": 40, "ppc_noise_seeds": 10}
    ok = mechzoo.fit(ENTRY, method="npe", seed=1, progress=False, free=["slopes"], **settings)
    good = mechzoo.diagnose(ok)
    assert good.attrs["ppc_median_within_2sd"] is True

    prob = mechzoo.problem(ENTRY)
    shift = 10 * _feature_noise_sd(prob.config)[0]  # 10 SD of mean_y
    bad_res = mechzoo.fit(ENTRY, {"y": prob.observed["y"] + shift}, method="npe", seed=1, progress=False, free=["slopes"], **settings)
    assert result_attrs(bad_res)["reused_estimator"] == 1  # amortised: the same estimator, a new observation
    bad = mechzoo.diagnose(bad_res)
    check = pd.DataFrame.from_dict(bad.attrs["ppc"], orient="index")
    assert bad.attrs["ppc_median_sd_source"] == "median_draw"  # user data: the truth is unknown
    assert check.loc["mean_y", "median_z"] > 2
    assert check.loc["mean_y", "ppc_z"] > 2
    assert bad.attrs["ppc_median_within_2sd"] is False


def _nan_injecting_problem():
    """linear-gaussian whose simulator loses ``mean_y`` (NaN) for about a quarter of the noise
    seeds and returns ``mean_x2_y = +inf`` where the intercept exceeds 2.5 (about 10 % of the prior)."""
    prob = mechzoo.problem(ENTRY)
    original = prob.simulate_features

    def simulate_features(theta, seeds):
        x = original(theta, seeds).copy()
        x[np.asarray(seeds, np.uint64) % np.uint64(4) == 0, 0] = np.nan
        x[np.atleast_2d(theta)[:, 0] > 2.5, 2] = np.inf
        return x

    prob.simulate_features = simulate_features
    return prob


def test_invalid_exclude_is_counted_and_consistent_in_training_sbc_and_ppc():
    prob = _nan_injecting_problem()
    res = npe.run(prob, settings={**TINY, "sbc_simulations": 40, "ppc_draws": 40, "ppc_noise_seeds": 4}, seed=5, progress=False)
    attrs = result_attrs(res)
    _, x = npe.simulate_bank(prob, 300, seed=5, progress=False)  # the training bank, from the cache
    bad = ~np.isfinite(x)
    assert bad[:, 0].sum() > 30 and bad[:, 2].sum() > 5  # both kinds of failure occurred
    assert attrs["invalid_rule"] == "exclude"
    assert attrs["n_invalid_simulations"] == attrs["n_excluded_simulations"] == int(bad.any(1).sum())
    assert attrs["n_training_simulations"] == 300 - int(bad.any(1).sum())
    assert attrs["invalid_feature_counts"] == bad.sum(0).tolist()
    assert attrs["n_replaced_simulations"] == 0

    # SBC: the same rule on the calib bank, rows identified by bank_row
    theta_c, x_c = npe.simulate_bank(prob, 40, seed=5, stream="calib", progress=False)
    valid_c = np.all(np.isfinite(x_c), axis=1)
    cal = res["calibration"].to_dataset()
    np.testing.assert_array_equal(cal["bank_row"].values, np.flatnonzero(valid_c))
    np.testing.assert_array_equal(cal["theta"].values, theta_c[valid_c])
    assert cal.attrs["n_excluded"] == cal.attrs["n_invalid"] == int((~valid_c).sum()) > 0

    # PPC: raw features kept, non-finite values counted per feature, never dropped silently
    ppc = res["posterior_predictive"].to_dataset()
    f = ppc["features"].values[0]
    assert np.isnan(f[:, 0]).sum() > 0
    table = mechzoo.diagnose(res)
    check = pd.DataFrame.from_dict(table.attrs["ppc"], orient="index")
    assert check.loc["mean_y", "ppc_n_invalid"] == np.isnan(f[:, 0]).sum()
    finite = f[np.isfinite(f[:, 0]), 0]
    assert check.loc["mean_y", "ppc_mean"] == pytest.approx(finite.mean())
    assert table.attrs["n_ppc_invalid_draws"] == int((~np.isfinite(f)).any(1).sum())
    assert table.attrs["n_excluded_simulations"] == attrs["n_excluded_simulations"]
    assert table.attrs["invalid_feature_counts"]["mean_y"] == int(bad[:, 0].sum())
    assert table.attrs["n_sbc"] == int(valid_c.sum()) and table.attrs["n_sbc_excluded"] == int((~valid_c).sum())


def test_invalid_replace_fills_declared_features_only():
    prob = _nan_injecting_problem()
    settings = {**TINY, "sbc_simulations": 40, "ppc_draws": 0, "ppc_noise_seeds": 0, "invalid": "replace", "invalid_values": {"mean_y": -5.0}}
    res = npe.run(prob, settings=settings, seed=5, progress=False)
    attrs = result_attrs(res)
    _, x = npe.simulate_bank(prob, 300, seed=5, progress=False)
    nan_y, inf_x2 = np.isnan(x[:, 0]), np.isinf(x[:, 2])
    # mean_y is replaced; rows that also (or only) have mean_x2_y = inf stay excluded
    assert attrs["invalid_rule"] == "replace"
    assert attrs["n_invalid_simulations"] == int((nan_y | inf_x2).sum())
    assert attrs["n_excluded_simulations"] == int(inf_x2.sum())
    assert attrs["n_replaced_simulations"] == int((nan_y & ~inf_x2).sum()) > 0
    assert attrs["n_training_simulations"] == 300 - int(inf_x2.sum())
    assert attrs["replaced_feature_counts"] == [int(nan_y.sum()), 0, 0]
    # the calibration set follows the same rule
    theta_c, x_c = npe.simulate_bank(prob, 40, seed=5, stream="calib", progress=False)
    keep = ~np.isinf(x_c[:, 2])
    cal = res["calibration"].to_dataset()
    np.testing.assert_array_equal(cal["bank_row"].values, np.flatnonzero(keep))
    assert cal.attrs["n_replaced"] == int((np.isnan(x_c[:, 0]) & keep).sum())
    assert "posterior_predictive" not in res.children  # ppc_draws = ppc_noise_seeds = 0 disables it
    # the rule is part of the estimator's identity: "exclude" trains (and caches) another one
    assert npe.estimator_key(prob, {**npe.DEFAULTS, **settings}, 5) != npe.estimator_key(prob, {**npe.DEFAULTS, **TINY}, 5)
    table = mechzoo.diagnose(res)
    assert table.attrs["invalid_rule"] == "replace" and table.attrs["n_sbc_replaced"] == cal.attrs["n_replaced"]


def test_handle_invalid_replaces_and_excludes():
    x = np.array([[1.0, 2.0, 3.0], [np.nan, 2.0, 3.0], [np.nan, np.inf, 3.0], [1.0, 2.0, -np.inf]])
    names = ["a", "b", "c"]
    used, valid, counts = npe.handle_invalid(x, None)
    assert valid.tolist() == [True, False, False, False] and counts["n_excluded"] == 3 and counts["n_invalid"] == 3
    assert counts["invalid_feature_counts"] == [2, 1, 1]
    repl = npe.invalid_replacement("replace", {"a": -1.0}, names)
    used, valid, counts = npe.handle_invalid(x, repl)
    assert valid.tolist() == [True, True, False, False]
    assert used[1].tolist() == [-1.0, 2.0, 3.0] and counts["n_replaced"] == 1 and counts["n_excluded"] == 2
    used, valid, counts = npe.handle_invalid(x, npe.invalid_replacement("replace", [-1.0, 0.0, 9.0], names))
    assert valid.all() and used[3, 2] == 9.0 and counts["replaced_feature_counts"] == [2, 1, 1]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"invalid": "drop"}, "not one of"),
        ({"invalid": "replace"}, "needs invalid_values"),
        ({"invalid_values": {"mean_y": 0.0}}, "only with invalid = 'replace'"),
        ({"invalid": "replace", "invalid_values": {"no_such_feature": 0.0}}, "unknown feature"),
        ({"invalid": "replace", "invalid_values": [0.0, 1.0]}, "one value per feature"),
        ({"invalid": "replace", "invalid_values": {"mean_y": float("nan")}}, "finite number"),
        ({"invalid": "replace", "invalid_values": "zero"}, "mapping"),
        ({"ppc_noise_seeds": 1}, ">= 2"),
        ({"ppc_draws": -1}, "integer >= 0"),
        ({"ppc_draws": 2.5}, "integer >= 0"),
    ],
)
def test_bad_settings_raise_before_simulating(settings, message):
    with pytest.raises(ValueError, match=message):
        mechzoo.fit(ENTRY, method="npe", progress=False, **settings)


def test_observation_with_nan_needs_a_replacement():
    prob = mechzoo.problem(ENTRY)
    prob.observed = {"features": np.array([np.nan, 0.5, -0.3])}
    with pytest.raises(ValueError, match=r"observed features \['mean_y'\].*invalid = 'replace'"):
        npe.run(prob, settings=TINY, progress=False)


def test_entries_declare_the_invalid_rule_and_the_schema_checks_it():
    for entry_id in ("hh-2param", "hh-pospischil", "pyloric-stg"):
        assert mechzoo.load(entry_id).route_settings("npe")["invalid"] == "exclude"
    import tomllib

    from mechzoo.registry import entry_paths
    from mechzoo.schema import EntryError, parse_entry

    raw = tomllib.loads(entry_paths()["hh-2param"].read_text())
    raw["routes"]["npe"]["invalid"] = "replace"
    with pytest.raises(EntryError, match=r"routes\.npe.*needs invalid_values"):
        parse_entry(raw)
    raw["routes"]["npe"]["invalid_values"] = {"spike_count": 0.0}
    assert parse_entry(raw).route_settings("npe")["invalid_values"] == {"spike_count": 0.0}
