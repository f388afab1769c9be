"""Named benchmarks (``mechzoo bench NAME [--json]``, DESIGN.md §7).

Every benchmark returns a flat dict of measured figures; each figure that is a speed comes with
its unit and the baseline measured in the same run, and ratios are reported against that
baseline. Benchmarks are never asserted in tests (tests only smoke-run them with ``quick``).
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable

import numpy as np

__all__ = ["BENCHMARKS", "run_benchmark"]


def _machine() -> dict[str, Any]:
    return {"machine": platform.machine(), "cpu_count": os.cpu_count(), "python": platform.python_version()}


def bench_routes(quick: bool = False) -> dict[str, Any]:
    """Routes on the exact-posterior entry ``linear-gaussian``.

    Baselines (same run): PyMC's own single-start ``pm.find_MAP`` for the MAP route; the exact
    posterior (closed form) for accuracy; PyMC NUTS for nutpie's ESS per second.
    """
    import pymc as pm

    import mechzoo
    from mechzoo.inference.result import posterior_draws_flat
    from mechzoo.models.linear_gaussian import exact_posterior

    entry = mechzoo.load("linear-gaussian")
    prob = mechzoo.problem(entry)
    prior_mean = np.concatenate([np.atleast_1d(np.asarray(p.prior.arrays(p.shape)["mu"])).ravel() for p in prob.parameters])
    prior_sd = np.concatenate([np.atleast_1d(np.asarray(p.prior.arrays(p.shape)["sigma"])).ravel() for p in prob.parameters])
    mean, cov = exact_posterior(prob.observed["y"], prior_mean, prior_sd, config=prob.config)
    sd = np.sqrt(np.diag(cov))
    out: dict[str, Any] = {"entry": "linear-gaussian", **_machine()}

    t = time.perf_counter()
    res = mechzoo.fit(entry, method="map", progress=False, restarts=4)
    out["map_wall_s"] = time.perf_counter() - t
    d, _ = posterior_draws_flat(res)
    out["map_max_abs_error_vs_exact_mode"] = float(np.max(np.abs(d[0] - mean)))
    model = prob.pymc_model()
    t = time.perf_counter()
    point = pm.find_MAP(model=model, progressbar=False)
    out["baseline_pymc_find_map_wall_s"] = time.perf_counter() - t
    flat = np.concatenate([np.ravel(point[p.name]) for p in prob.parameters])
    out["baseline_pymc_find_map_max_abs_error"] = float(np.max(np.abs(flat - mean)))

    draws = 300 if quick else 1000
    ess_per_s = {}
    for sampler in ("pymc", "nutpie"):
        t = time.perf_counter()
        r = mechzoo.fit(entry, method="nuts", progress=False, sampler=sampler, draws=draws, tune=draws)
        wall = time.perf_counter() - t
        diag = mechzoo.diagnose(r)
        d, _ = posterior_draws_flat(r)
        out[f"nuts_{sampler}_wall_s"] = wall
        out[f"nuts_{sampler}_min_ess_bulk"] = float(diag["ess_bulk"].min())
        out[f"nuts_{sampler}_max_mean_error_sd"] = float(np.max(np.abs(d.mean(0) - mean) / sd))
        ess_per_s[sampler] = float(diag["ess_bulk"].min()) / wall
    out["nuts_min_ess_per_s_unit"] = "effective draws / wall s (incl. compilation and MAP init)"
    out["nuts_pymc_min_ess_per_s"] = ess_per_s["pymc"]
    out["nuts_nutpie_min_ess_per_s"] = ess_per_s["nutpie"]
    out["ratio_nutpie_vs_pymc_ess_per_s"] = ess_per_s["nutpie"] / ess_per_s["pymc"]

    n_sim = 1000 if quick else 3000
    t = time.perf_counter()
    r = mechzoo.fit(entry, method="npe", progress=False, num_simulations=n_sim, sbc_simulations=0)
    out["npe_wall_s"] = time.perf_counter() - t
    out["npe_num_simulations"] = n_sim
    d, _ = posterior_draws_flat(r)
    out["npe_max_mean_error_sd"] = float(np.max(np.abs(d.mean(0) - mean) / sd))
    return out


def bench_hh(quick: bool = False) -> dict[str, Any]:
    """Batched Hodgkin–Huxley simulations per second vs the per-trace baseline (same run)."""
    from mechzoo.models.hodgkin_huxley.baseline import benchmark

    res = benchmark(n=100 if quick else 400, n_baseline=2 if quick else 4)
    return {**_machine(), **res}


def bench_mesogif_sim(quick: bool = False) -> dict[str, Any]:
    """mesoGIF simulated seconds per wall second, single and batched (baseline: batch of 1), and
    per core next to NEST ``gif_pop_psc_exp`` on the same configuration (same K, same input),
    measured in the same run where ``nest-simulator`` is installed."""
    from mechzoo.models.mesogif.benchmark import benchmark_throughput

    kwargs = dict(batch_sizes=(1, 8) if quick else (1, 64), duration_s=1.0 if quick else 2.0, repeats=1 if quick else 3)
    try:
        from mechzoo.models.mesogif import nest_reference

        has_nest = nest_reference.nest_available()
    except ImportError:
        has_nest = False
    res = benchmark_throughput(**kwargs, nest=has_nest)
    out: dict[str, Any] = {**_machine(), **res}
    if not has_nest:
        out["nest"] = "nest-simulator not installed"
    return out


def bench_pyloric(quick: bool = False) -> dict[str, Any]:
    """Batched pyloric simulations (11 s, features) per second per core.

    Baseline: the published ``pyloric`` simulator's ≈ 0.7 s per simulation (spec §2.10), quoted —
    the PyPI package of that name is an empty placeholder, so it cannot be measured here.
    """
    from mechzoo.models.pyloric import benchmark

    res = benchmark(n=4 if quick else 16)
    out = {**_machine(), **res}
    if "cpu_s_per_sim" in res:
        out["ratio_vs_published_0.7_s_per_sim"] = 0.7 / float(res["cpu_s_per_sim"])
    return out


def bench_mesogif_likelihood(quick: bool = False) -> dict[str, Any]:
    """mesoGIF log-likelihood + gradient time (20 s of data, 10 s burn-in), 2- and 4-pop, next to
    a plain PyTensor ``scan`` + ``pytensor.grad`` baseline (same run, extrapolated linearly from a
    short data length) and the paper's implied ≈ 9 s per gradient (201 h / 2000 HMC samples)."""
    from mechzoo.models.mesogif.likelihood import benchmark_likelihood

    if quick:
        res = benchmark_likelihood(duration_s=2.0, burn_in_s=1.0, populations=(2,), Ks=("auto-per-population",), repeats=1, scan_duration_s=0.2, scan_repeats=1)
    else:
        res = benchmark_likelihood()
    return {**_machine(), **res, "paper_seconds_per_gradient": 9.0}


BENCHMARKS: dict[str, Callable[..., dict[str, Any]]] = {
    "mesogif-likelihood": bench_mesogif_likelihood,
    "routes": bench_routes,
    "hh": bench_hh,
    "mesogif-sim": bench_mesogif_sim,
    "pyloric": bench_pyloric,
}


def run_benchmark(name: str, *, quick: bool = False) -> dict[str, Any]:
    """Run the benchmark ``name`` and return its figures."""
    return {"benchmark": name, **BENCHMARKS[name](quick=quick)}
