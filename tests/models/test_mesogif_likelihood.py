"""Tests of the mesoGIF log-likelihood and its exact gradient (``specs/mesogif.md`` §4.1, §4.3, App. B item 5)."""

from __future__ import annotations

import numpy as np
import pytest

from mechzoo.models import mesogif
from mechzoo.models.mesogif import likelihood as lk
from mechzoo.models.mesogif import meso, parameters

DT = 1e-3


def _truth(populations: int) -> dict[str, np.ndarray]:
    return lk._free_truth(populations)


def _prior_draw(rng: np.random.Generator, M: int, n_exc: int) -> dict[str, np.ndarray]:
    """One draw of the free parameters from the priors of spec §5.4."""
    return {
        "w": rng.normal(0.0, 4.0, (M, M)),
        "tau_m": 10.0 ** rng.normal(-2.0, 2.0, M),
        "c": rng.gamma(2.0, 5.0, M),
        "Delta_u": rng.gamma(3.0, 1.5, M),
        "tau_s": 10.0 ** rng.normal(-3.0, 3.0, M),
        "J_theta": rng.gamma(2.0, 0.5, n_exc),
        "tau_theta": 10.0 ** rng.normal(-1.0, 5.0, n_exc),
    }


def _data(populations: int, duration_s: float, *, burn_in_s: float, seed: int = 1, **extra):
    config = {"populations": populations, "duration_s": duration_s, "stimulus": {"kind": "sine", "seed": 0},
              "burn_in_s": burn_in_s, **extra}
    truth = _truth(populations)
    counts = mesogif.simulate({k: v[None] for k, v in truth.items()}, config=config,
                              seeds=np.array([seed], dtype=np.uint64))["counts"][0]
    return config, truth, counts


@pytest.fixture(scope="module")
def short_2pop():
    return _data(2, 0.5, burn_in_s=0.1, linear_switch=False)


# --------------------------------------------------------------------------------------------
# Same step equations as the simulator
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("populations", [2, 4])
@pytest.mark.parametrize("K", ["auto-per-population", 300])
@pytest.mark.parametrize("linear_switch", [True, False])
def test_kernel_expected_counts_equal_simulator(populations, K, linear_switch):
    """The likelihood kernel's n̄ equals the simulator's n̄ for the same (simulated) history."""
    config, truth, _ = _data(populations, 0.8, burn_in_s=0.1, linear_switch=linear_switch)
    full = mesogif.full_parameters({k: v[None] for k, v in truth.items()}, config, 1)
    lik = lk.MesoGIFLikelihood(np.zeros((800, populations), dtype=int), config={**config, "likelihood_K": K})
    sim = meso.simulate(full, lik.inputs, seeds=np.array([5], dtype=np.uint64), K=lik.K, return_expected=True,
                        linear_switch=linear_switch)
    counts = sim["counts"][0]
    lik = lk.MesoGIFLikelihood(counts, config={**config, "likelihood_K": K})
    nbar = lik.expected_counts(truth)
    reference = sim["expected_counts"][0]
    np.testing.assert_allclose(nbar, reference, rtol=1e-12, atol=0)
    teacher, prob = meso.expected_counts({k: v[0] for k, v in full.items()}, lik.inputs, counts, K=lik.K,
                                         linear_switch=linear_switch)
    np.testing.assert_allclose(nbar, teacher, rtol=1e-12, atol=0)
    # the value is the binomial log-pmf of spec §4.1 with the full coefficient, burn-in not summed
    from scipy.stats import binom

    expected = binom.logpmf(counts[lik.burn:], lik.reference["N"][None, :], prob[lik.burn:]).sum()
    assert lik.value(truth) == pytest.approx(expected, rel=1e-12)


def test_default_k_is_per_population_at_reference():
    config, truth, counts = _data(2, 0.3, burn_in_s=0.1)
    lik = lk.MesoGIFLikelihood(counts, config=config)
    assert lik.K.tolist() == [693, 50]
    lik4 = lk.MesoGIFLikelihood(np.zeros((300, 4), dtype=int), config={**config, "populations": 4})
    assert lik4.K.tolist() == [693, 50, 693, 50]


# --------------------------------------------------------------------------------------------
# Exact gradient
# --------------------------------------------------------------------------------------------
def _stencil(lik, theta, key, idx, h):
    """Five-point central difference of the log-likelihood along one component (relative step ``h``)."""
    tp = {k: np.array(v, dtype=float) for k, v in theta.items()}
    x0 = tp[key][idx]
    step = h * (max(abs(x0), 0.1) if key == "w" else abs(x0))
    vals = []
    for s in (2, 1, -1, -2):
        tp[key][idx] = x0 + s * step
        vals.append(lik.value(tp))
    return (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * step)


def _gradient_check(lik, theta):
    """Max relative error of the adjoint gradient over the components whose finite difference is
    itself reliable (two step sizes agree to 1e-6), and the fraction of reliable components."""
    _, grad = lik.value_and_grad(theta)
    rows = []
    for key in lk.FREE_PARAMETERS:
        for idx in np.ndindex(np.shape(theta[key])):
            fd1 = _stencil(lik, theta, key, idx, 1e-4)
            fd2 = _stencil(lik, theta, key, idx, 2e-4)
            rows.append((key, idx, grad[key][idx], fd1, fd2))
    scale = 1e-6 * max(abs(r[3]) for r in rows)
    errors, reliable = [], 0
    for key, idx, g, fd1, fd2 in rows:
        ref = max(abs(fd1), abs(g), scale)
        if abs(fd1 - fd2) <= 1e-6 * ref:
            reliable += 1
            errors.append(abs(g - fd1) / ref)
    return max(errors), reliable / len(rows)


def test_gradient_matches_finite_differences_at_truth(short_2pop):
    config, truth, counts = short_2pop
    lik = lk.MesoGIFLikelihood(counts, config=config)
    err, frac = _gradient_check(lik, truth)
    assert frac >= 0.9
    assert err <= 1e-5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_matches_finite_differences_at_prior_draws(short_2pop, seed):
    config, _, counts = short_2pop
    lik = lk.MesoGIFLikelihood(counts, config=config)
    theta = _prior_draw(np.random.default_rng(seed), 2, 1)
    err, frac = _gradient_check(lik, theta)
    assert frac >= 0.7, f"finite differences unreliable for {1 - frac:.0%} of the components"
    assert err <= 1e-5


@pytest.mark.slow
def test_gradient_matches_finite_differences_four_populations():
    config, truth, counts = _data(4, 0.4, burn_in_s=0.1, linear_switch=False)
    lik = lk.MesoGIFLikelihood(counts, config=config)
    for theta in (truth, _prior_draw(np.random.default_rng(7), 4, 2)):
        err, frac = _gradient_check(lik, theta)
        assert frac >= 0.7
        assert err <= 1e-5


def test_gradient_with_linear_switch_and_checkpoint_sizes():
    """With the default linear switch (M11), the gradient does not depend on the checkpoint interval."""
    config, truth, counts = _data(2, 0.4, burn_in_s=0.1)
    lik = lk.MesoGIFLikelihood(counts, config=config)
    v, g = lik.value_and_grad(truth)
    for C in (1, 7, 1000):
        v2, g2 = lk.MesoGIFLikelihood(counts, config={**config, "checkpoint": C}).value_and_grad(truth)
        assert v2 == v
        for key in g:
            np.testing.assert_allclose(g2[key], g[key], rtol=1e-12, atol=1e-12 * np.abs(g[key]).max())
    # (no finite-difference check here: with the switch the log-likelihood jumps by ~1e-5 where a
    # cohort's pi crosses 0.01, which central differences straddle; see the module of the likelihood)


def test_subset_and_full_shape_parameters(short_2pop):
    config, truth, counts = short_2pop
    lik = lk.MesoGIFLikelihood(counts, config=config)
    v, g = lik.value_and_grad(truth)
    v_w, g_w = lik.value_and_grad({"w": truth["w"]})
    assert v_w == v and set(g_w) == {"w"}
    np.testing.assert_array_equal(g_w["w"], g["w"])
    full_shape = {**truth, "J_theta": np.array([1.0, 0.0]), "tau_theta": np.array([1.0, 1.0])}
    v_f, g_f = lik.value_and_grad(full_shape)
    assert v_f == v and g_f["J_theta"].shape == (2,)
    assert g_f["J_theta"][0] == pytest.approx(g["J_theta"][0], rel=1e-12)


# --------------------------------------------------------------------------------------------
# Appendix B item 5: the truth beats ±10 % perturbations
# --------------------------------------------------------------------------------------------
def test_truth_beats_perturbations_appendix_b5():
    config, truth, counts = _data(2, 12.0, burn_in_s=2.0)  # 10 s summed
    lik = lk.MesoGIFLikelihood(counts, config=config)
    at_truth = lik.value(truth)
    margins = {}
    for key in ("w", "tau_m", "c", "Delta_u"):
        for idx in np.ndindex(truth[key].shape):
            for factor in (0.9, 1.1):
                theta = {k: v.copy() for k, v in truth.items()}
                theta[key][idx] *= factor
                margins[(key, idx, factor)] = at_truth - lik.value(theta)
    worst = min(margins, key=margins.get)
    assert margins[worst] > 0, f"perturbation {worst} has a higher log-likelihood by {-margins[worst]:.2f}"


# --------------------------------------------------------------------------------------------
# PyTensor Op
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["FAST_RUN", "CVM"])
def test_pytensor_op_matches_numpy(short_2pop, mode):
    import warnings

    import pytensor
    import pytensor.tensor as pt

    config, truth, counts = short_2pop
    theta = _prior_draw(np.random.default_rng(3), 2, 1)
    variables = {k: pt.tensor(k, dtype="float64", shape=v.shape) for k, v in truth.items()}
    logp = mesogif.loglik(variables, {"counts": counts}, config=config)
    names = list(lk.FREE_PARAMETERS)
    grads = pytensor.grad(logp, [variables[k] for k in names])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no object-mode or deprecation warning from our Ops
        fn = pytensor.function([variables[k] for k in names], [logp, *grads], mode=mode)
        value_only = pytensor.function([variables[k] for k in names], logp, mode=mode)
    value, grad = mesogif.loglik_and_grad(theta, counts, config=config)
    for point in (theta, truth, theta):
        out = fn(*[point[k] for k in names])
        v_ref, g_ref = mesogif.loglik_and_grad(point, counts, config=config)
        assert out[0] == v_ref
        for k, o in zip(names, out[1:]):
            np.testing.assert_array_equal(o, g_ref[k])
        assert value_only(*[point[k] for k in names]) == v_ref
    assert value == fn(*[theta[k] for k in names])[0]


def test_pymc_sample_runs(short_2pop):
    import pymc as pm

    config, truth, counts = short_2pop
    with pm.Model():
        rvs = {
            "w": pm.Normal("w", 0.0, 4.0, shape=(2, 2)),
            "tau_m": pm.LogNormal("tau_m", -2.0 * np.log(10), 2.0 * np.log(10), shape=2),
            "c": pm.Gamma("c", alpha=2.0, beta=0.2, shape=2),
            "Delta_u": pm.Gamma("Delta_u", alpha=3.0, beta=1 / 1.5, shape=2),
            "tau_s": pm.LogNormal("tau_s", -3.0 * np.log(10), 3.0 * np.log(10), shape=2),
            "J_theta": pm.Gamma("J_theta", alpha=2.0, beta=2.0, shape=1),
            "tau_theta": pm.LogNormal("tau_theta", -1.0 * np.log(10), 5.0 * np.log(10), shape=1),
        }
        pm.Potential("loglik", mesogif.loglik(rvs, {"counts": counts}, config=config))
        idata = pm.sample(draws=3, tune=3, chains=1, cores=1, random_seed=3, progressbar=False,
                          nuts_sampler="pymc", initvals={k: v for k, v in truth.items()},
                          compute_convergence_checks=False, nuts={"max_treedepth": 3})
    w = idata.posterior["w"].values
    assert w.shape == (1, 3, 2, 2) and np.all(np.isfinite(w))


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------
def test_bad_input_errors(short_2pop):
    config, truth, counts = short_2pop
    good = counts.copy()

    def err(data, match, cfg=config, params=truth):
        with pytest.raises(ValueError, match=match):
            mesogif.loglik_and_grad(params, data, config=cfg)

    nan = good.astype(float)
    nan[3, 0] = np.nan
    err(nan, "NaN")
    neg = good.copy()
    neg[4, 1] = -1
    err(neg, "negative")
    over = good.copy()
    over[5, 1] = 110  # N_I = 109
    err(over, "exceed the population size")
    err(good.astype(float) + 0.5, "integers")
    err(good[:, :1], r"shape \(T, M\)")
    err(good.T, r"shape \(T, M\)")
    err(good[:, :, None], r"shape \(T, M\)")
    err({"spikes": good}, "counts")
    err(good[:50], "burn-in", cfg={**config, "duration_s": 0.05})
    err(good, "duration_s", cfg={**config, "duration_s": 0.3})
    err(good, "burn-in", cfg={**config, "burn_in_s": 10.0})
    err(good, "shape", params={**truth, "w": np.zeros(3)})
    err(good, "support", params={**truth, "tau_m": np.array([-0.01, 0.01])})
    err(good, "unknown free parameter", params={**truth, "u_th": np.ones(2)})
    err(good, "variant", cfg={**config, "variant": "R"})
    err(good, "init", cfg={**config, "init": "stationary"})
    with pytest.raises(ValueError, match="shape"):
        import pytensor.tensor as pt

        mesogif.loglik({"w": pt.tensor("w", dtype="float64", shape=(3, 3))}, {"counts": good}, config=config)


def test_op_returns_minus_inf_outside_support(short_2pop):
    config, truth, counts = short_2pop
    lik = lk.MesoGIFLikelihood(counts, config=config)
    v, g = lik.value_and_grad({**truth, "c": np.array([-1.0, 10.0])}, strict=False)
    assert v == -np.inf and np.all(g["c"] == 0)


def test_kappa_partials_continuous_across_equal_time_constants():
    tau_m = np.array([[0.01]])
    for tau_s in (0.01 * (1 + 2e-3), 0.01 * (1 + 5e-4), 0.01 * (1 - 5e-4), 0.01):
        ds, dm = lk.kappa_partials(np.array([[tau_s]]), tau_m, DT)
        h = 2e-6

        def kappa(s, m):
            return meso._kappa(np.array([[s]]), np.array([[m]]), DT)[0, 0]

        def stencil(f):
            return (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)

        assert ds[0, 0] == pytest.approx(stencil(lambda e: kappa(tau_s + e, 0.01)), rel=1e-5)
        assert dm[0, 0] == pytest.approx(stencil(lambda e: kappa(tau_s, 0.01 + e)), rel=1e-5)


@pytest.mark.slow
def test_adjoint_gradient_equals_pytensor_scan_autodiff():
    """Independent check: PyTensor ``scan`` + ``pytensor.grad`` of the same step (baseline module)."""
    from mechzoo.models.mesogif.scan_baseline import ScanLikelihood

    config, truth, counts = _data(2, 0.3, burn_in_s=0.1, likelihood_K=100, linear_switch=False)
    scan = ScanLikelihood(counts, config=config)
    lik = lk.MesoGIFLikelihood(counts, config=config)
    for theta in ({k: v * 1.05 for k, v in truth.items()}, _prior_draw(np.random.default_rng(11), 2, 1)):
        v_scan, g_scan = scan.value_and_grad(theta)
        v, g = lik.value_and_grad(theta)
        assert v == pytest.approx(v_scan, rel=1e-12)
        for key in g:
            np.testing.assert_allclose(g[key], g_scan[key], rtol=1e-9, atol=1e-9 * np.abs(g_scan[key]).max())
