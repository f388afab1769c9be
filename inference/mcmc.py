"""NUTS and HMC routes through PyMC (DESIGN.md §4).

Chains start at the MAP (a short multi-start :mod:`mechzoo.inference.map` run of the density
NUTS samples, i.e. of the unconstrained coordinates with the Jacobian), because NUTS
started from jittered points can fail on narrow posteriors (seen in this project). The sampler
is PyMC's own NUTS by default (it honours the initial values); ``sampler = "nutpie"`` uses
nutpie where it is installed. Warm-up draws are kept (``warmup_posterior``,
``warmup_sample_stats``) so that the cost in gradient evaluations is complete.

``hmc`` uses ``pm.HamiltonianMC`` (diagonal mass matrix); René et al. (2020) settings for mesoGIF
are ``step_scale = 0.0025``, ``path_length = 0.1``, ``tune = 20``, ``draws = 2000``
(specs/mesogif.md §4.7) and are set in that entry.

Long runs: ``checkpoint_dir`` writes every chain's draws to disk as they come (every
``checkpoint_every`` draws), so an interrupted run keeps what it drew (:func:`load_checkpoint`);
``init`` may name a saved result (e.g. a MAP fit) to start from instead of re-running the MAP.

``mass_matrix`` (NUTS): ``"diag"`` (PyMC's ``adapt_diag``, default), ``"full"`` (``adapt_full``)
or ``"hessian"``: a dense metric started from the inverse Hessian at the initial point (the
MAP), which shortens trajectories on correlated posteriors such as mesoGIF's.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
import xarray as xr

from .problem import Problem
from .result import make_result

__all__ = ["run", "load_checkpoint", "NUTS_DEFAULTS", "HMC_DEFAULTS"]

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
    "map_workers": 1,
    "map_init_bounds": None,
    "checkpoint_dir": None,
    "checkpoint_every": 25,
    "mass_matrix": "diag",
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
    "map_workers": 1,
    "map_init_bounds": None,
    "checkpoint_dir": None,
    "checkpoint_every": 25,
}


def _initial_values(problem: Problem, settings: Mapping[str, Any], seed: int) -> tuple[dict | None, dict]:
    init = settings["init"]
    if init == "prior":
        return None, {}
    if init != "map":
        from pathlib import Path

        if isinstance(init, str) and Path(init).exists():  # a saved result: start at its first draw
            from .result import load

            res = load(init)
            missing = [p.name for p in problem.parameters if p.name not in res["posterior"]]
            if missing:
                raise ValueError(f"init result {init!r} has no draws of {missing}")
            point = {p.name: np.asarray(res["posterior"][p.name].values[0, 0], dtype=np.float64) for p in problem.parameters}
            return point, {"init_from": str(init)}
        raise ValueError(f"init must be 'map', 'prior' or the path of a saved result (got {init!r})")
    from . import map as map_route

    res = map_route.run(problem, settings={"restarts": settings["map_restarts"], "maxiter": settings["map_maxiter"],
                                           "workers": settings["map_workers"], "init_bounds": settings["map_init_bounds"],
                                           "jacobian": True, "keep_trajectory": False}, seed=seed, progress=False)
    init = {p.name: res["posterior"][p.name].values[0, 0] for p in problem.parameters}
    return init, {"map_log_posterior": float(res["sample_stats"]["lp"].values[0, 0]), "map_wall_time_s": res.attrs["wall_time_s"]}


class _Checkpoint:
    """Per-draw callback that keeps what each chain has drawn on disk while sampling runs.

    Every ``every`` draws (and at the last one) chain ``c`` is written to
    ``directory/chain-<c>.npz`` (write to a temporary file, then rename: a crash never leaves a
    torn file): the natural parameter values in the problem's flat order (``theta``, (n, D)),
    whether the draw was a tuning draw, and the NUTS/HMC statistics (``model_logp``,
    ``diverging``, ``step_size``, ``tree_depth``, ``tree_size``, ``n_steps``, ``energy``; NaN
    where the sampler does not report one).
    An interrupted run thus keeps its draws; read them with :func:`load_checkpoint`.
    """

    #: checkpoint name -> PyMC's per-draw stat name (NUTS: depth, tree_size; HMC: n_steps)
    _STATS = {"model_logp": "model_logp", "diverging": "diverging", "step_size": "step_size", "tree_depth": "depth",
              "tree_size": "tree_size", "n_steps": "n_steps", "energy": "energy"}

    def __init__(self, directory, model, problem: Problem, every: int):
        from pathlib import Path

        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.every = max(1, int(every))
        self.names = problem.flat_names()
        # natural values of the free parameters from a point of (possibly transformed) value variables
        by_name = {v.name: v for v in model.unobserved_value_vars}
        self._natural = model.compile_fn(
            [by_name[p.name] for p in problem.parameters], inputs=model.value_vars, on_unused_input="ignore", point_fn=True
        )
        self._buf: dict[int, dict[str, list]] = {}

    def __call__(self, trace, draw) -> None:
        values = self._natural(draw.point)
        buf = self._buf.setdefault(int(draw.chain), {"theta": [], "tuning": [], **{k: [] for k in self._STATS}})
        buf["theta"].append(np.concatenate([np.ravel(v) for v in values]))
        buf["tuning"].append(bool(draw.tuning))
        stats = draw.stats[0] if isinstance(draw.stats, (list, tuple)) and draw.stats else (draw.stats or {})
        for k, pymc_name in self._STATS.items():
            buf[k].append(float(stats.get(pymc_name, np.nan)))
        if len(buf["theta"]) % self.every == 0 or draw.is_last:
            self._write(int(draw.chain))

    def flush(self) -> None:
        """Write every chain's buffer (PyMC's ``draw.is_last`` is not reliable in sequential
        sampling, so the route flushes when sampling ends, also on error or interrupt)."""
        for chain in self._buf:
            self._write(chain)

    def _write(self, chain: int) -> None:
        import os

        buf = self._buf[chain]
        path = self.dir / f"chain-{chain}.npz"
        tmp = self.dir / f".chain-{chain}.tmp.npz"
        np.savez(tmp, names=np.array(self.names), **{k: np.asarray(v) for k, v in buf.items()})
        os.replace(tmp, path)


def load_checkpoint(directory) -> xr.Dataset:
    """The draws an MCMC run with ``checkpoint_dir`` has written so far (also after a crash).

    Returns a Dataset with ``theta`` (chain, draw, parameter) in natural coordinates, ``tuning``
    and the sampler statistics, one row per draw *including warm-up*; chains are padded with NaN
    to the longest. Use ``ds.where(~ds.tuning)`` for the post-warm-up draws.
    """
    from pathlib import Path

    files = sorted(Path(directory).glob("chain-*.npz"), key=lambda p: int(p.stem.split("-")[1]))
    if not files:
        raise FileNotFoundError(f"no chain-*.npz checkpoint in {directory}")
    data = [dict(np.load(f)) for f in files]
    n = max(len(d["theta"]) for d in data)
    names = [str(x) for x in data[0]["names"]]

    def pad(a, fill):
        out = np.full((n, *a.shape[1:]), fill, dtype=np.float64 if fill is np.nan else a.dtype)
        out[: len(a)] = a
        return out

    ds = xr.Dataset(
        {"theta": (("chain", "draw", "parameter"), np.stack([pad(d["theta"], np.nan) for d in data]))},
        coords={"chain": [int(f.stem.split("-")[1]) for f in files], "draw": np.arange(n), "parameter": names},
    )
    ds["tuning"] = (("chain", "draw"), np.stack([pad(d["tuning"], True) for d in data]))
    for k in _Checkpoint._STATS:
        ds[k] = (("chain", "draw"), np.stack([pad(d.get(k, np.full(len(d["theta"]), np.nan)), np.nan) for d in data]))
    ds.attrs["n_draws_per_chain"] = [int(len(d["theta"])) for d in data]
    return ds


def _hessian_potential(problem: Problem, init: Mapping[str, np.ndarray], seed: int):
    """Dense NUTS metric started from the inverse Hessian of the log density at ``init``.

    The Hessian of the log density of the *unconstrained* coordinates (what NUTS samples) is
    taken by central differences of the exact gradient (2 D gradient evaluations, step 1e-4),
    symmetrised, and its negative is inverted through an eigen-decomposition with eigenvalues
    floored at 1e-8 of the largest (a non-concave direction gets a large, not a negative,
    variance). The metric keeps adapting during tuning (``QuadPotentialFullAdapt``), with the
    Hessian estimate weighted as 50 draws.
    """
    from pymc.step_methods.hmc import quadpotential

    from .map import LikelihoodFunctions

    funcs = LikelihoodFunctions(problem, jacobian=True)
    x0 = funcs.from_natural(init)
    n = x0.size
    h = 1e-4
    hess = np.empty((n, n))
    for j in range(n):
        e = np.zeros(n)
        e[j] = h
        hess[:, j] = (funcs.value_and_grad(x0 + e)[1] - funcs.value_and_grad(x0 - e)[1]) / (2 * h)
    neg = -0.5 * (hess + hess.T)
    w, v = np.linalg.eigh(neg)
    if not np.all(np.isfinite(w)) or w.max() <= 0:
        raise ValueError("the log density is not concave at the initial point (no positive curvature); use mass_matrix='diag'")
    w = np.maximum(w, 1e-8 * w.max())
    cov = (v / w) @ v.T
    return quadpotential.QuadPotentialFullAdapt(n, x0, cov, initial_weight=50, rng=np.random.default_rng(seed))


def _sample(pm, model, method: str, settings: Mapping[str, Any], kwargs: dict[str, Any], potential=None):
    """One ``pm.sample`` call with the route's sampler settings."""
    with model:
        if method == "hmc":
            step = pm.HamiltonianMC(step_scale=float(settings["step_scale"]), path_length=float(settings["path_length"]))
            return pm.sample(step=step, **kwargs)
        elif settings["sampler"] == "nutpie":
            if "callback" in kwargs:
                raise ValueError("checkpoint_dir needs sampler='pymc' (nutpie does not call per-draw callbacks)")
            kwargs.pop("initvals", None)  # nutpie initialises itself; it starts from the model's initial point
            kwargs.pop("discard_tuned_samples")
            return pm.sample(nuts_sampler="nutpie", target_accept=float(settings["target_accept"]), **kwargs)
        elif settings["sampler"] == "pymc":
            nuts_kwargs = {"target_accept": float(settings["target_accept"])}
            if "max_treedepth" in settings:
                depth = int(settings["max_treedepth"])
                # PyMC uses early_max_treedepth (default 8) during the first tuning steps
                nuts_kwargs.update(max_treedepth=depth, early_max_treedepth=min(depth, 8))
            if potential is not None:
                step = pm.NUTS(potential=potential, **nuts_kwargs)
                return pm.sample(step=step, nuts_sampler="pymc", **kwargs)
            init = {"diag": "adapt_diag", "full": "adapt_full"}[settings["mass_matrix"]]
            return pm.sample(nuts_sampler="pymc", init=init, **kwargs, **nuts_kwargs)
        else:
            raise ValueError(f"sampler must be 'pymc' or 'nutpie' (got {settings['sampler']!r})")


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
    checkpoint = None
    if settings["checkpoint_dir"]:
        checkpoint = _Checkpoint(settings["checkpoint_dir"], model, problem, settings["checkpoint_every"])
        kwargs["callback"] = checkpoint
    potential = None
    if method == "nuts":
        if settings["mass_matrix"] not in ("diag", "full", "hessian"):
            raise ValueError(f"mass_matrix must be 'diag', 'full' or 'hessian' (got {settings['mass_matrix']!r})")
        if settings["mass_matrix"] == "hessian":
            if init is None:
                raise ValueError("mass_matrix='hessian' needs an initial point: use init='map' or a saved result")
            if settings["sampler"] != "pymc":
                raise ValueError("mass_matrix='hessian' is implemented for sampler='pymc'")
            potential = _hessian_potential(problem, init, seed)
    try:
        idata = _sample(pm, model, method, settings, kwargs, potential)
    finally:
        if checkpoint is not None:
            checkpoint.flush()
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
