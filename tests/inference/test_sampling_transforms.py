"""Sampler-only reparameterisations (``sampling_transforms``): exact maths, unchanged posterior,
clear errors."""

import numpy as np
import pytest

import mechzoo
from mechzoo.inference.transforms import ScaledSoftplus, apply_sampling_transforms, check_sampling_transforms


def test_softplus_transform_inverts_and_has_the_right_jacobian():
    import pytensor.tensor as pt

    tr = ScaledSoftplus(0.05)
    u = pt.dvector("u")
    x = tr.backward(u)
    back = tr.forward(x)
    ljd = tr.log_jac_det(u)
    values = np.array([-0.3, -0.05, 0.0, 0.02, 0.4, 3.0])
    np.testing.assert_allclose(back.eval({u: values}), values, rtol=1e-12, atol=1e-12)
    h = 1e-6
    numeric = (x.eval({u: values + h}) - x.eval({u: values - h})) / (2 * h)
    np.testing.assert_allclose(np.exp(ljd.eval({u: values})), numeric, rtol=1e-7)
    assert np.all(x.eval({u: values}) > 0)


def test_reparameterised_nuts_draws_the_same_gamma():
    """Gamma(shape 3, scale 0.5): mean 1.5, SD 0.866; the softplus coordinates change nothing."""
    import pymc as pm

    with pm.Model() as model:
        pm.Gamma("J", alpha=3.0, beta=2.0)
    new = apply_sampling_transforms(model, {"J": {"kind": "softplus", "scale": 0.1}})
    assert [v.name for v in new.value_vars] == ["J_softplus__"]
    with new:
        idata = pm.sample(draws=2000, tune=500, chains=2, cores=1, random_seed=3, progressbar=False, compute_convergence_checks=False)
    draws = idata.posterior["J"].values.ravel()
    assert abs(draws.mean() - 1.5) < 0.05
    assert abs(draws.std() / np.sqrt(0.75) - 1) < 0.06
    assert int(idata.sample_stats["diverging"].sum()) == 0


def test_sampling_transforms_are_checked():
    params = mechzoo.problem("mesogif-2pop").parameters
    assert check_sampling_transforms(None, params) is None
    assert check_sampling_transforms({"J_theta": {"kind": "softplus", "scale": 1}}, params) == {"J_theta": {"kind": "softplus", "scale": 1.0}}
    with pytest.raises(ValueError, match="not a free parameter"):
        check_sampling_transforms({"J_thetaa": {"kind": "softplus", "scale": 0.1}}, params)
    with pytest.raises(ValueError, match="kind must be"):
        check_sampling_transforms({"J_theta": {"kind": "identity", "scale": 0.1}}, params)
    with pytest.raises(ValueError, match="scale must be a positive"):
        check_sampling_transforms({"J_theta": {"kind": "softplus", "scale": 0}}, params)
    with pytest.raises(ValueError, match="positive parameter"):
        check_sampling_transforms({"w": {"kind": "softplus", "scale": 0.1}}, params)
    with pytest.raises(ValueError, match="must be a table"):
        check_sampling_transforms(["J_theta"], params)
