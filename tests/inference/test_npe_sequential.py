"""APT rounds (the ``sequential`` setting) and bounded flows (``theta_transform = "logit"``).

Checked here: the box transform is a bijection whose log-determinant matches autograd; the
bounded estimator is a normalised density on the prior box (grid integral), puts every draw
inside it and gives -inf outside; the settings are validated; and on ``linear-gaussian`` (exact
posterior) one APT round is counted, cached, keeps the posterior exact within 0.3 posterior SD
and makes the estimator specific to the observation; APT on a bounded prior without the logit
flow warns (it leaks outside the prior).
"""

import warnings
from pathlib import Path

import numpy as np
import pytest

import mechzoo
from mechzoo.inference import npe
from mechzoo.inference.priors import ParameterSpec, joint_torch_prior, make_prior
from mechzoo.inference.result import result_attrs
from npe_round_helpers import FingerprintOnly, assert_key_is_specific_to_observation, assert_matches_exact, fit_in_fresh_cache

ENTRY = "linear-gaussian"
SETTINGS = {
    "num_simulations": 600,
    "num_draws": 2000,
    "sbc_simulations": 0,
    "ppc_draws": 0,
    "ppc_noise_seeds": 0,
    "sequential": {"rounds": 1, "simulations": 600},
}


def _joint(with_normal: bool = True):
    specs = [
        ParameterSpec(name="u", prior=make_prior({"kind": "Uniform", "lower": 0.0, "upper": 10.0})),
        ParameterSpec(name="g", prior=make_prior({"kind": "LogUniform", "lower": 0.01, "upper": 1000.0})),
    ]
    if with_normal:
        specs.append(ParameterSpec(name="n", prior=make_prior({"kind": "Normal", "mu": 1.0, "sigma": 2.0})))
    return joint_torch_prior(specs)


def test_box_transform_is_a_bijection_with_the_right_jacobian():
    import torch

    from mechzoo.inference._bounded import box_transform_for

    joint = _joint()
    T = box_transform_for(joint).double()
    torch.manual_seed(0)
    theta = joint.sample((200,)).to(torch.float64)
    u, logdet = T(theta)
    assert torch.isfinite(u).all() and torch.isfinite(logdet).all()
    np.testing.assert_allclose(T.inverse(u).numpy(), theta.numpy(), rtol=1e-6, atol=1e-9)
    assert torch.equal(u[:, 2], theta[:, 2])  # the unbounded coordinate is left alone
    for i in range(5):
        J = torch.autograd.functional.jacobian(lambda t: T(t[None])[0][0], theta[i])
        assert torch.allclose(torch.linalg.slogdet(J).logabsdet, logdet[i], rtol=1e-8, atol=1e-8)
    outside = torch.tensor([[11.0, 1.0, 0.0], [5.0, 0.001, 0.0], [5.0, 1.0, 1e6]], dtype=torch.float64)
    assert T.outside(outside).tolist() == [True, True, False]


def test_bounded_estimator_is_a_normalised_density_inside_the_box():
    import torch
    from sbi.neural_nets import posterior_nn

    from mechzoo.inference._bounded import bounded_builder, box_transform_for

    joint = _joint(with_normal=False)
    torch.manual_seed(1)
    theta = joint.sample((500,)).to(torch.float32)
    x = theta[:, :1] + torch.randn(500, 1)
    from sbi.inference import NPE

    inference = NPE(prior=joint, density_estimator=bounded_builder(posterior_nn(model="maf"), box_transform_for(joint)), show_progress_bars=False)
    est = inference.append_simulations(theta, x).train(max_num_epochs=30, show_train_summary=False)
    cond = torch.tensor([[3.0]])
    with torch.no_grad():
        draws = est.sample((4000,), condition=cond).reshape(4000, 2)
        assert bool(((draws[:, 0] >= 0) & (draws[:, 0] <= 10) & (draws[:, 1] >= 0.01) & (draws[:, 1] <= 1000)).all())
        # grid integral of q(θ) dθ over the box on a grid that is uniform in u (fine near the
        # edges, where the density concentrates), with the cell widths dθ taken from the grid
        # itself (finite differences), not from the transform's log-determinant
        uu = torch.linspace(-18.0, 18.0, 1201, dtype=torch.float64)
        grid = est.transform.double().inverse(torch.stack([uu, uu], -1))
        widths = [torch.as_tensor(np.gradient(grid[:, k].numpy())) for k in range(2)]
        A, G = torch.meshgrid(grid[:, 0], grid[:, 1], indexing="ij")
        pts = torch.stack([A.reshape(-1), G.reshape(-1)], -1).float()
        est.transform.float()
        lp = est.log_prob(pts[None], condition=cond).reshape(-1).double()
        mass = float((torch.exp(lp).reshape(A.shape) * widths[0][:, None] * widths[1][None, :]).sum())
        assert mass == pytest.approx(1.0, abs=0.02)
        out = est.log_prob(torch.tensor([[[11.0, 1.0], [5.0, 2000.0]]]).transpose(0, 1).reshape(1, 2, 2), condition=cond.expand(2, 1))
        assert torch.isinf(out).all() and (out < 0).all()


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"rounds": 1}, "needs"),
        ({"rounds": 0, "simulations": 100}, "rounds"),
        ({"rounds": 1, "simulations": 5}, "simulations"),
        ({"rounds": 1, "simulations": 100, "num_atoms": 1}, "num_atoms"),
        ({"rounds": 1, "simulations": 100, "typo": 1}, "unknown"),
        ([1, 2], "mapping"),
    ],
)
def test_sequential_setting_is_validated(bad, match):
    with pytest.raises(ValueError, match=match):
        npe.check_sequential_declaration(bad)


def test_sequential_excludes_truncate_and_theta_transform_is_checked():
    with pytest.raises(ValueError, match="exclude each other"):
        mechzoo.fit(ENTRY, method="npe", progress=False, **{**SETTINGS, "truncate": {"rounds": 1, "simulations": 100}})
    with pytest.raises(ValueError, match="theta_transform"):
        mechzoo.fit(ENTRY, method="npe", progress=False, **{**SETTINGS, "theta_transform": "probit"})


@pytest.fixture(scope="module")
def sequential_fit(tmp_path_factory):
    return fit_in_fresh_cache(tmp_path_factory, "sequential-cache", SETTINGS)


def test_sequential_round_is_counted_and_cached(sequential_fit, monkeypatch):
    res, cache = sequential_fit
    monkeypatch.setenv("MECHZOO_CACHE", str(cache))
    attrs = result_attrs(res)
    assert attrs["amortised"] == 0 and attrs["sequential_rounds"] == 1 and attrs["sequential_num_atoms"] == 10
    assert attrs["sequential_round_simulations"] == [600] and attrs["sequential_round_valid_fractions"] == [1.0]
    assert attrs["n_simulations"] == 1200 and attrs["n_training_simulations"] == 1200
    assert res["calibration"].attrs["n_sbc"] == 0 and "not amortised" in res["calibration"].attrs["sbc_skipped"]
    assert npe.load_posterior(str(attrs["estimator_path"]).replace(".pt", "-round-1.pt")) is not None
    # the round's bank holds draws of the first posterior (600 simulations): narrower than the
    # prior in every coordinate, a small fraction of its volume
    theta, _ = npe.simulate_bank(mechzoo.problem(ENTRY), 600, seed=2, stream="sequential-1", prior=FingerprintOnly(attrs["sequential_round_fingerprints"][0]), progress=False)
    ratio = theta.std(0) / np.array([2.0, 1.0, 1.5])  # prior SDs of the entry
    assert np.all(ratio < 1.0) and np.prod(ratio) < 0.25


def test_interrupted_sequential_run_resumes_from_its_cached_round(sequential_fit, monkeypatch):
    """A run stopped after round 1 was saved (final estimator missing) loads that round's network
    instead of training it again, and gives the uninterrupted run's draws."""
    res, cache = sequential_fit
    monkeypatch.setenv("MECHZOO_CACHE", str(cache))
    path = Path(result_attrs(res)["estimator_path"])
    path.unlink()
    path.with_suffix(".json").unlink()
    resumed = mechzoo.fit(ENTRY, method="npe", seed=2, progress=False, **SETTINGS)
    attrs = result_attrs(resumed)
    assert attrs["reused_estimator"] == 0 and attrs["sequential_round_epochs"] == [0]
    for name in res["posterior"].data_vars:
        np.testing.assert_array_equal(resumed["posterior"][name].values, res["posterior"][name].values)


def test_sequential_posterior_matches_exact(sequential_fit):
    assert_matches_exact(sequential_fit[0])


def test_sequential_and_transform_enter_the_estimator_key():
    assert_key_is_specific_to_observation(SETTINGS, "sequential")
    a = mechzoo.problem(ENTRY)
    plain = {**npe.DEFAULTS, **SETTINGS, "sequential": None}
    assert npe.estimator_key(a, {**plain, "theta_transform": "logit"}, 0) != npe.estimator_key(a, plain, 0)


def test_sequential_on_a_bounded_prior_without_the_logit_flow_warns():
    settings = {**npe.DEFAULTS, "sequential": {"rounds": 1, "simulations": 100}}
    with pytest.warns(UserWarning, match="theta_transform = 'logit'"):
        npe._validate_settings(mechzoo.problem("hh-2param"), settings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        npe._validate_settings(mechzoo.problem("hh-2param"), {**settings, "theta_transform": "logit"})
        npe._validate_settings(mechzoo.problem(ENTRY), settings)  # Gaussian prior: nothing to bound
