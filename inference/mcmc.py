"""NUTS and HMC routes through PyMC (DESIGN.md §4).

Chains start at the MAP (a short multi-start :mod:`mechzoo.inference.map` run), because NUTS
started from jittered points can fail on narrow posteriors (seen in this project). The sampler
is PyMC's own NUTS by default (it honours the initial values); ``sampler = "nutpie"`` uses
nutpie where it is installed. Warm-up draws are kept (``warmup_posterior``,
``warmup_sample_stats``) so that the cost in gradient evaluations is complete.

``hmc`` uses ``pm.HamiltonianMC`` (diagonal mass matrix); René et al. (2020) settings for mesoGIF
are ``step_scale = 0.0025``, ``path_length = 0.1``, ``tune = 20``, ``draws = 2000``
(specs/mesogif.md §4.7) and are set in that entry.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
import xarray as xr

from .problem import Problem
from .result import make_result

__all__ = ["run", "NUTS_DEFAULTS", "HMC_DEFAULTS"]

NUTS_DEFAULTS: dict[str, Any] = {
    "draws": 1000,
    "tune": 1000,
    "chains": 2,
    "cores": 1,
    "target_accept": 0.9,
    "sampler": "pymc",
    "init": "map",
    "map_restarts": 4,
    "map_maxiter": 2000,
}
HMC_DEFAULTS: dict[str, Any] = {
    "draws": 1000,
    "tune": 500,
    "chains": 2,
    "cores": 1,
    "step_scale": 0.25,
    "path_length": 2.0,
    "init": "map",
    "map_restarts": 4,
    "map_maxiter": 2000,
}


def _initial_values(problem: Problem, settings: Mapping[str, Any], seed: int) -> tuple[dict | None, dict]:
    if settings["init"] == "prior":
        return None, {}
    if settings["init"] != "map":
        raise ValueError(f"init must be 'map' or 'prior' (got {settings['init']!r})")
    from . import map as map_route

    res = map_route.run(problem, settings={"restarts": settings["map_restarts"], "maxiter": settings["map_maxiter"], "keep_trajectory": False}, seed=seed, progress=False)
    init = {p.name: res["posterior"][p.name].values[0, 0] for p in problem.parameters}
    return init, {"map_log_posterior": float(res["sample_stats"]["lp"].values[0, 0]), "map_wall_time_s": res.attrs["wall_time_s"]}


def run(
    problem: Problem, *, method: str = "nuts", settings: Mapping[str, Any] | None = None, seed: int = 0, progress: bool = True
) -> xr.DataTree:
    """Sample the posterior with NUTS (``method="nuts"``) or HMC (``method="hmc"``)."""
    import pymc as pm

    defaults = NUTS_DEFAULTS if method == "nuts" else HMC_DEFAULTS
    unknown = set(dict(settings or {})) - set(defaults) - {"max_treedepth"}
    if unknown:
        raise ValueError(f"unknown {method} setting(s) {sorted(unknown)}; known: {sorted(defaults)}")
    settings = {**defaults, **dict(settings or {})}
    t0 = time.perf_counter()
    init, init_info = _initial_values(problem, settings, seed)
    model = problem.pymc_model()
    chains = int(settings["chains"])
    kwargs: dict[str, Any] = dict(
        draws=int(settings["draws"]),
        tune=int(settings["tune"]),
        chains=chains,
        cores=int(settings["cores"]),
        random_seed=int(seed),
        progressbar=progress,
        discard_tuned_samples=False,
        compute_convergence_checks=False,
        model=model,
    )
    if init is not None:
        kwargs["initvals"] = [dict(init) for _ in range(chains)]
    with model:
        if method == "hmc":
            step = pm.HamiltonianMC(step_scale=float(settings["step_scale"]), path_length=float(settings["path_length"]))
            idata = pm.sample(step=step, **kwargs)
        elif settings["sampler"] == "nutpie":
            kwargs.pop("initvals", None)  # nutpie initialises itself; it starts from the model's initial point
            kwargs.pop("discard_tuned_samples")
            idata = pm.sample(nuts_sampler="nutpie", target_accept=float(settings["target_accept"]), **kwargs)
        elif settings["sampler"] == "pymc":
            nuts_kwargs = {"target_accept": float(settings["target_accept"])}
            if "max_treedepth" in settings:
                depth = int(settings["max_treedepth"])
                # PyMC uses early_max_treedepth (default 8) during the first tuning steps
                nuts_kwargs.update(max_treedepth=depth, early_max_treedepth=min(depth, 8))
            idata = pm.sample(nuts_sampler="pymc", init="adapt_diag", **kwargs, **nuts_kwargs)
        else:
            raise ValueError(f"sampler must be 'pymc' or 'nutpie' (got {settings['sampler']!r})")
    wall = time.perf_counter() - t0
    groups = {}
    for name in ("warmup_posterior", "warmup_sample_stats"):
        if name in idata.children:
            groups[name] = idata[name].to_dataset()
    stats = idata["sample_stats"].to_dataset()
    leapfrog = 0
    for g in ("sample_stats", "warmup_sample_stats"):
        if g in idata.children:
            ds = idata[g].to_dataset()
            for key in ("n_steps", "tree_size"):
                if key in ds:
                    leapfrog += int(np.nansum(ds[key].values))
                    break
    problem.counter.gradient_evaluations += leapfrog  # MAP initialisation already counted its own
    post = idata["posterior"].to_dataset()[[p.name for p in problem.parameters]]
    return make_result(
        problem,
        route=method,
        posterior=post,
        sample_stats=stats,
        settings=settings,
        seed=seed,
        wall_time_s=wall,
        groups=groups,
        attrs={"initial_point": {k: np.asarray(v).tolist() for k, v in (init or {}).items()}, **init_info},
    )
