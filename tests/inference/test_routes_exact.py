"""Every route against the closed-form posterior of the ``linear-gaussian`` entry (issue 2 acceptance).

Tolerances are the issue's: NUTS means within 0.1 posterior SD and SDs within 10 %; MAP within
1e-3 of the exact mode; NPE means within 0.3 posterior SD; C2ST(NUTS, exact) <= 0.6 and
C2ST(NUTS, shifted) >= 0.9. Seeds are fixed.
"""

import numpy as np
import pytest
import xarray as xr

import mechzoo
from mechzoo.inference.result import posterior_draws_flat, result_attrs
from mechzoo.models.linear_gaussian import exact_posterior

ENTRY = "linear-gaussian"


@pytest.fixture(scope="module")
def exact():
    prob = mechzoo.problem(ENTRY)
    mu0 = np.array([0.0, 0.0, 0.5])  # prior declared in the entry: intercept N(0,2), slopes N([0,0.5],[1,1.5])
    sd0 = np.array([2.0, 1.0, 1.5])
    mean, cov = exact_posterior(prob.observed["y"], mu0, sd0, config=prob.config)
    return mean, cov, np.sqrt(np.diag(cov))


@pytest.fixture(scope="module")
def nuts_result():
    return mechzoo.fit(ENTRY, method="nuts", seed=1, progress=False, draws=1000, tune=1000, chains=2)


def test_prior_used_by_test_matches_entry():
    entry = mechzoo.load(ENTRY)
    assert entry.parameters[0].prior == {"kind": "Normal", "mu": 0.0, "sigma": 2.0}
    assert entry.parameters[1].prior == {"kind": "Normal", "mu": [0.0, 0.5], "sigma": [1.0, 1.5]}


def test_map_hits_exact_mode(exact):
    mean, _, _ = exact
    res = mechzoo.fit(ENTRY, method="map", seed=3, progress=False)
    draws, names = posterior_draws_flat(res)
    assert names == ["intercept", "slopes[x1]", "slopes[x2]"]
    np.testing.assert_allclose(draws[0], mean, atol=1e-3)
    restarts = res["map_restarts"].to_dataset()
    assert restarts.sizes["restart"] == 4
    assert int(restarts["converged"].sum()) == 4
    assert restarts["trajectory"].sizes["iteration"] >= 2
    table = mechzoo.diagnose(res)
    assert table.attrs["n_converged"] == 4


def test_nuts_matches_exact(nuts_result, exact):
    mean, _, sd = exact
    draws, _ = posterior_draws_flat(nuts_result)
    assert np.all(np.abs(draws.mean(0) - mean) / sd < 0.1)
    assert np.all(np.abs(draws.std(0, ddof=1) / sd - 1) < 0.10)
    table = mechzoo.diagnose(nuts_result)
    assert table["r_hat"].max() < 1.01
    assert table["ess_bulk"].min() > 400
    assert table.attrs["divergences"] == 0
    assert all(b > 0.3 for b in table.attrs["bfmi_per_chain"])
    attrs = result_attrs(nuts_result)
    assert attrs["route"] == "nuts" and attrs["entry_id"] == ENTRY and attrs["seed"] == 1
    assert attrs["n_gradient_evaluations"] > 2000
    assert {"pymc", "arviz", "sbi", "numpy"} <= set(attrs["versions"])


def test_result_groups_and_dims(nuts_result):
    assert {"posterior", "sample_stats", "observed_data", "constant_data", "warmup_posterior"} <= set(nuts_result.children)
    post = nuts_result["posterior"]
    assert post["slopes"].dims == ("chain", "draw", "covariate")
    assert list(post["covariate"].values) == ["x1", "x2"]
    assert nuts_result["observed_data"]["y"].dims == ("observation",)
    assert nuts_result["constant_data"]["design"].dims == ("observation", "regressor")


def test_netcdf_round_trip_loses_nothing(nuts_result, tmp_path):
    path = mechzoo.save_result(nuts_result, tmp_path / "fit.nc")
    back = mechzoo.load_result(path)
    assert back.identical(nuts_result)
    xr.testing.assert_identical(back["posterior"].to_dataset(), nuts_result["posterior"].to_dataset())
    assert result_attrs(back) == result_attrs(nuts_result)


def test_compare_c2st(nuts_result, exact):
    mean, cov, sd = exact
    rng = np.random.default_rng(5)
    n = 2000
    exact_draws = rng.multivariate_normal(mean, cov, size=n)
    nuts_draws, names = posterior_draws_flat(nuts_result)

    def as_result(draws, label):
        params = {"intercept": draws[:, 0][None], "slopes": draws[:, 1:][None]}
        prob = mechzoo.problem(ENTRY)
        from mechzoo.inference.result import make_result

        return make_result(prob, route="analytic", posterior=params, settings={}, seed=5, wall_time_s=0.0, attrs={"label": label})

    exact_res = as_result(exact_draws, "exact")
    shifted_res = as_result(exact_draws + 3 * sd, "shifted")
    table = mechzoo.compare([exact_res, nuts_result, shifted_res])
    scores = table.attrs["c2st"]
    assert scores["exact vs 1:nuts"] <= 0.6
    assert scores["exact vs shifted"] >= 0.9
    assert scores["1:nuts vs shifted"] >= 0.9
    nuts_rows = table[table.result == "1:nuts"]
    assert set(nuts_rows.parameter) == set(names)
    assert (nuts_rows.interval_overlap_90 > 0.85).all()
    assert {"wall_time_s", "n_gradient_evaluations", "n_simulations"} <= set(table.columns)


def test_npe_matches_exact(exact):
    mean, _, sd = exact
    res = mechzoo.fit(ENTRY, method="npe", seed=0, progress=False, sbc_simulations=100)
    draws, _ = posterior_draws_flat(res)
    assert np.all(np.abs(draws.mean(0) - mean) / sd < 0.3)
    attrs = result_attrs(res)
    assert attrs["n_simulations"] >= attrs["n_training_simulations"] > 0
    assert attrs["n_invalid_simulations"] == 0
    table = mechzoo.diagnose(res)
    assert {"sbc_ks_p", "sbc_chi2_p", "coverage_95"} <= set(table.columns)
    assert table.attrs["n_sbc"] == 100
    # the trained estimator is saved and reloads on the CPU
    from mechzoo.inference.npe import load_posterior

    post = load_posterior(attrs["estimator_path"])
    assert post.sample((10,), x=__import__("torch").zeros(3), show_progress_bars=False).shape == (10, 3)


def test_map_with_pinned_parameters_hits_conditional_mode(exact):
    """``free=["slopes"]`` pins the intercept at its reference; the MAP is then the mode of the
    Gaussian conditional p(slopes | intercept = reference, y) = μ_s + Σ_si Σ_ii⁻¹ (ref − μ_i)."""
    mean, cov, _ = exact
    ref = 0.7  # the entry's reference intercept
    cond = mean[1:] + cov[1:, 0] / cov[0, 0] * (ref - mean[0])
    res = mechzoo.fit(ENTRY, method="map", seed=3, progress=False, free=["slopes"], restarts=2)
    draws, names = posterior_draws_flat(res)
    assert names == ["slopes[x1]", "slopes[x2]"]
    np.testing.assert_allclose(draws[0], cond, atol=1e-3)
    assert result_attrs(res)["pinned_parameters"] == {"intercept": 0.7}
    with pytest.raises(ValueError, match="unknown parameter"):
        mechzoo.fit(ENTRY, method="map", free=["nope"])


def test_nuts_checkpoint_resumes_exactly(tmp_path):
    """``checkpoint_dir``: an interrupted run (``checkpoint_stop_after``), rerun with the same
    folder, resumes every chain where it stopped and gives the uninterrupted run's draws."""
    from mechzoo.inference.mcmc import CheckpointInterrupted, load_checkpoint

    common = dict(method="nuts", seed=2, progress=False, draws=30, tune=20, chains=2, cores=1, checkpoint_every=7)
    whole = mechzoo.fit(ENTRY, checkpoint_dir=str(tmp_path / "whole"), **common)
    with pytest.raises(CheckpointInterrupted):
        mechzoo.fit(ENTRY, checkpoint_dir=str(tmp_path / "cut"), checkpoint_stop_after=17, **common)
    part = load_checkpoint(tmp_path / "cut")
    assert part.attrs["n_draws_per_chain"] == [17, 17]
    first_leg = part.attrs["sampling_wall_time_s_per_chain"]
    resumed = mechzoo.fit(ENTRY, checkpoint_dir=str(tmp_path / "cut"), **common)
    # the sampling clock adds up over legs: the resumed run's record exceeds what the first leg took
    per_chain = result_attrs(resumed)["sampling_wall_time_s_per_chain"]
    assert len(per_chain) == 2 and all(t > t0 > 0 for t, t0 in zip(per_chain, first_leg))
    for name in ("intercept", "slopes"):
        np.testing.assert_array_equal(resumed["posterior"][name].values, whole["posterior"][name].values)
        np.testing.assert_array_equal(resumed["warmup_posterior"][name].values, whole["warmup_posterior"][name].values)
    np.testing.assert_array_equal(resumed["sample_stats"]["tree_depth"].values, whole["sample_stats"]["tree_depth"].values)
    ck = load_checkpoint(tmp_path / "whole")
    assert ck.attrs["n_draws_per_chain"] == [50, 50]
    assert ck["parameter"].values.tolist() == ["intercept", "slopes[x1]", "slopes[x2]"]
    assert int(ck["tuning"].sum()) == 40
    assert result_attrs(whole)["n_gradient_evaluations"] >= int(np.nansum(ck["tree_size"].values))
    table = mechzoo.diagnose(whole)
    assert np.isfinite(table["r_hat"]).all()
    with pytest.raises(ValueError, match="holds another run"):
        mechzoo.fit(ENTRY, checkpoint_dir=str(tmp_path / "whole"), **{**common, "draws": 31})


def test_nuts_hessian_metric_matches_exact(exact):
    """``mass_matrix="hessian"`` (dense metric from the inverse Hessian at the MAP): on a Gaussian
    posterior the metric is exact, so trajectories are short and the draws still match."""
    mean, _, sd = exact
    res = mechzoo.fit(ENTRY, method="nuts", seed=4, progress=False, draws=600, tune=200, chains=2, mass_matrix="hessian")
    draws, _ = posterior_draws_flat(res)
    assert np.all(np.abs(draws.mean(0) - mean) / sd < 0.15)
    assert np.all(np.abs(draws.std(0, ddof=1) / sd - 1) < 0.12)
    assert float(res["sample_stats"]["tree_depth"].mean()) <= 2.5
    assert int(res["sample_stats"]["diverging"].sum()) == 0
    with pytest.raises(ValueError, match="mass_matrix"):
        mechzoo.fit(ENTRY, method="nuts", progress=False, mass_matrix="dense")


def test_map_init_bounds_restrict_starting_points():
    res = mechzoo.fit(ENTRY, method="map", seed=3, progress=False, restarts=3, init_bounds={"slopes": [0.0, 0.5]})
    initial = res["map_restarts"]["initial"].values
    assert np.all((initial[:, 1:] >= 0.0) & (initial[:, 1:] <= 0.5))
    with pytest.raises(ValueError, match="init_bounds"):
        mechzoo.fit(ENTRY, method="map", progress=False, init_bounds={"slopes": [1.0, 0.0]})
