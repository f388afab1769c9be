"""Conformance suite: runs over every registered entry (DESIGN.md §2 tier 1, §9).

For each entry: the schema is valid, both prior realisations agree, seeded simulations
reproduce exactly, and every declared route runs end to end on a tiny budget. Per-entry tiny
budgets and configuration overrides come from the entry's ``[checks.conformance]`` table
(e.g. shorter simulations), so new entries get these tests for free.
"""

import numpy as np
import pytest
import torch

import mechzoo
from mechzoo.inference.result import posterior_draws_flat, result_attrs

TINY = {
    "map": {"restarts": 2},
    "nuts": {"draws": 30, "tune": 30, "chains": 1, "map_restarts": 1},
    "hmc": {"draws": 30, "tune": 30, "chains": 1, "map_restarts": 1},
    "npe": {"num_simulations": 200, "num_draws": 50, "sbc_simulations": 0, "max_num_epochs": 3},
}

IDS = mechzoo.entries()


def _conformance(entry):
    return dict(entry.checks.get("conformance", {}))


@pytest.mark.parametrize("entry_id", IDS)
def test_schema_valid(entry_id):
    entry = mechzoo.load(entry_id)
    assert entry.id == entry_id
    assert entry.methods()
    for spec in entry.parameter_specs():
        assert spec.prior.arrays(spec.shape)  # prior broadcasts to the parameter shape


@pytest.mark.parametrize("entry_id", IDS)
def test_priors_agree_across_backends(entry_id):
    import pymc as pm
    import pytensor

    entry = mechzoo.load(entry_id)
    specs = entry.parameter_specs()
    joint = mechzoo.problem(entry, generate=False).torch_prior()
    theta = joint.sample_seeded(5, seed=1)
    with pm.Model(coords={d: v for s in specs for d, v in s.coords.items()}):
        rvs = [s.prior.pymc(s.name, s.shape, s.dims or None) for s in specs]
    start = 0
    total_pm = np.zeros(5)
    for s, rv in zip(specs, rvs):
        x = theta[:, start : start + s.size].numpy()
        start += s.size
        for i in range(5):
            total_pm[i] += pytensor.function([], pm.logp(rv, x[i].reshape(s.shape)).sum(), mode="FAST_COMPILE")()
    np.testing.assert_allclose(total_pm, joint.log_prob(theta).numpy(), rtol=0, atol=1e-8)


@pytest.mark.parametrize("entry_id", IDS)
def test_seeded_simulation_reproduces(entry_id):
    entry = mechzoo.load(entry_id)
    if not entry.routes.simulator and not hasattr(entry.model_module(), "simulate"):
        pytest.skip("no simulator")
    overrides = _conformance(entry).get("config", {})
    a = mechzoo.simulate(entry, n=2, seed=4, **overrides)
    b = mechzoo.simulate(entry, n=2, seed=4, **overrides)
    c = mechzoo.simulate(entry, n=2, seed=5, **overrides)
    assert a.identical(b)
    obs_vars = [v for v in a.data_vars if v not in {p.name for p in entry.parameters}]
    assert any(not np.array_equal(a[v].values, c[v].values, equal_nan=True) for v in obs_vars)


def _routes(entry_id):
    """(entry, method) pairs; methods an entry skips (with its stated reason) are marked skip."""
    entry = mechzoo.load(entry_id)
    conf = _conformance(entry)
    skip = set(conf.get("skip_methods", []))
    out = []
    for m in entry.methods():
        if m in skip:
            out.append(pytest.param(entry_id, m, marks=pytest.mark.skip(reason=conf.get("skip_reason", "skipped by the entry"))))
        else:
            out.append((entry_id, m))
    return out


@pytest.mark.parametrize("entry_id, method", [rm for e in IDS for rm in _routes(e)])
def test_route_runs_end_to_end(entry_id, method, tmp_path):
    entry = mechzoo.load(entry_id)
    conf = _conformance(entry)
    settings = {**TINY[method], **conf.get(method, {})}
    result = mechzoo.fit(entry, method=method, seed=2, progress=False, config=conf.get("config"), **settings)
    draws, names = posterior_draws_flat(result)
    assert names == [n for s in entry.parameter_specs() for n in s.flat_names()]  # declaration order
    assert np.all(np.isfinite(draws))
    attrs = result_attrs(result)
    assert attrs["route"] == method and attrs["entry_id"] == entry_id
    assert attrs["n_simulations"] + attrs["n_loglik_evaluations"] + attrs["n_gradient_evaluations"] > 0
    back = mechzoo.load_result(mechzoo.save_result(result, tmp_path / "r.nc"))
    assert back.identical(result)
    table = mechzoo.diagnose(result)
    assert list(table.index) == names


@pytest.mark.parametrize("entry_id", IDS)
def test_seeded_map_or_prior_reproduces(entry_id):
    """Same seed -> identical numbers for the cheapest route's random choices (prior draws)."""
    prob = mechzoo.problem(entry_id, generate=False)
    np.testing.assert_array_equal(prob.sample_prior(4, seed=8), prob.sample_prior(4, seed=8))
    assert not np.array_equal(prob.sample_prior(4, seed=8), prob.sample_prior(4, seed=9))
    assert torch.isfinite(prob.torch_prior().log_prob(torch.as_tensor(prob.sample_prior(4, seed=8)))).all()
