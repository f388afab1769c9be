"""Priors declared once, realised twice: PyMC and torch agree on log-density and support."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pymc as pm

from mechzoo.inference.priors import PRIOR_KINDS, ParameterSpec, joint_torch_prior, make_prior

finite = st.floats(-5, 5, allow_nan=False)
pos = st.floats(0.05, 5, allow_nan=False)


@st.composite
def declarations(draw):
    kind = draw(st.sampled_from(sorted(PRIOR_KINDS)))
    if kind in ("Normal", "LogNormal", "Log10Normal"):
        return {"kind": kind, "mu": draw(finite), "sigma": draw(pos)}
    if kind == "HalfNormal":
        return {"kind": kind, "sigma": draw(pos)}
    if kind == "Gamma":
        return {"kind": kind, "shape": draw(pos), "scale": draw(pos)}
    lo = draw(st.floats(0.01, 3)) if kind == "LogUniform" else draw(finite)
    return {"kind": kind, "lower": lo, "upper": lo + draw(pos)}


def _pymc_logp(decl, x):
    prior = make_prior(decl)
    with pm.Model():
        rv = prior.pymc("x", (x.size,))
    import pytensor

    return pytensor.function([], pm.logp(rv, x), mode="FAST_COMPILE")()


@settings(max_examples=40, deadline=None)
@given(decl=declarations(), u=st.lists(st.floats(0.001, 0.999), min_size=3, max_size=3))
def test_logdensity_and_support_agree(decl, u):
    """For every kind: same log-density to 1e-10 inside the support, -inf outside in both."""
    prior = make_prior(decl)
    tdist = prior.torch((3,))
    lo, hi = prior.bounds((3,))
    # points inside the support: quantile-like mapping of u, plus points beyond each bound
    if np.isfinite(lo[0]) and np.isfinite(hi[0]):
        inside = lo + np.asarray(u) * (hi - lo)
    elif np.isfinite(lo[0]):
        inside = lo + np.asarray(u) * 10
    else:
        inside = (np.asarray(u) - 0.5) * 20
    lp_pm = _pymc_logp(decl, inside)
    lp_t = tdist.log_prob(torch.as_tensor(inside)).numpy()
    np.testing.assert_allclose(lp_pm, lp_t, rtol=0, atol=1e-10)
    support = prior.torch_support((3,))
    assert bool(support.check(torch.as_tensor(inside)).all())
    if np.isfinite(lo[0]):
        outside = lo - 0.5
        assert np.all(np.isneginf(_pymc_logp(decl, outside)))
        assert not bool(support.check(torch.as_tensor(outside)).any())
    if np.isfinite(hi[0]):
        outside = hi + 0.5
        assert np.all(np.isneginf(_pymc_logp(decl, outside)))
        assert not bool(support.check(torch.as_tensor(outside)).any())


def test_every_kind_is_covered():
    assert set(PRIOR_KINDS) >= {"Normal", "LogNormal", "Log10Normal", "Gamma", "Uniform", "LogUniform", "HalfNormal"}


def test_log10normal_is_lognormal_of_log10():
    """Log10Normal(mu, sigma): log10 x ~ N(mu, sigma^2) (René et al. 2020, Table 7)."""
    draws = make_prior({"kind": "Log10Normal", "mu": -2.0, "sigma": 0.5}).torch(()).sample((200000,)).numpy()
    assert abs(np.log10(draws).mean() + 2.0) < 0.01
    assert abs(np.log10(draws).std() - 0.5) < 0.01


def test_gamma_is_shape_scale():
    """Gamma(shape=2, scale=5) has mean 10 (René et al. 2020 prior on c)."""
    draws = make_prior({"kind": "Gamma", "shape": 2.0, "scale": 5.0}).torch(()).sample((200000,)).numpy()
    assert abs(draws.mean() - 10.0) < 0.1


def test_joint_prior_matches_sum_of_components_and_support():
    specs = [
        ParameterSpec("a", make_prior({"kind": "Normal", "mu": 0, "sigma": 1})),
        ParameterSpec("w", make_prior({"kind": "Gamma", "shape": 2, "scale": [1.0, 2.0]}), ("k",), {"k": ["x", "y"]}),
        ParameterSpec("u", make_prior({"kind": "LogUniform", "lower": 0.1, "upper": 10})),
    ]
    joint = joint_torch_prior(specs)
    theta = joint.sample_seeded(50, seed=3)
    assert theta.shape == (50, 4)
    expected = sum(
        make_prior(d).torch(s).log_prob(theta[:, sl].reshape(50, *s)).reshape(50, -1).sum(-1)
        for d, s, sl in [
            ({"kind": "Normal", "mu": 0, "sigma": 1}, (), slice(0, 1)),
            ({"kind": "Gamma", "shape": 2, "scale": [1.0, 2.0]}, (2,), slice(1, 3)),
            ({"kind": "LogUniform", "lower": 0.1, "upper": 10}, (), slice(3, 4)),
        ]
    )
    torch.testing.assert_close(joint.log_prob(theta), expected, rtol=0, atol=1e-10)
    bad = theta.clone()
    bad[0, 1] = -1.0  # negative Gamma value
    bad[1, 3] = 20.0  # above the LogUniform bound
    lp = joint.log_prob(bad)
    assert torch.isinf(lp[0]) and torch.isinf(lp[1]) and torch.isfinite(lp[2:]).all()
    assert not joint.support.check(bad)[0] and not joint.support.check(bad)[1]
    torch.testing.assert_close(joint.sample_seeded(5, seed=9), joint.sample_seeded(5, seed=9))


@pytest.mark.parametrize(
    "decl, message",
    [
        ({"kind": "Gama", "shape": 1, "scale": 1}, "did you mean Gamma"),
        ({"kind": "Normal", "mu": 0}, "needs argument"),
        ({"kind": "Normal", "mu": 0, "sigma": -1}, "must be > 0"),
        ({"kind": "Uniform", "lower": 2, "upper": 1}, "upper must exceed lower"),
        ({"kind": "Normal", "mu": 0, "sigma": 1, "scale": 2}, "does not take"),
    ],
)
def test_bad_declarations(decl, message):
    with pytest.raises(ValueError, match=message):
        make_prior(decl)
