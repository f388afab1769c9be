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

Long runs: with ``checkpoint_dir`` each chain runs in its own process (``cores`` at a time) and
writes its draws and its complete sampler state (step method with adaptation and random
generator, current point) every ``checkpoint_every`` iterations; rerunning the same fit with the
same ``checkpoint_dir`` resumes every chain exactly where it stopped (the draws equal an
uninterrupted run's), and :func:`load_checkpoint` reads what was drawn at any time. Each chain
keeps its sampling clock in the checkpoint, so the result's ``sampling_wall_time_s_per_chain``
attr sums every leg of an interrupted run (``wall_time_s`` is the last call only).
``checkpoint_stop_after`` (testing aid) stops each chain after that many iterations, as an
interruption would. ``init`` may name a saved result (e.g. a MAP fit) to start from instead of
re-running the MAP.

``mass_matrix`` (NUTS): ``"diag"`` (PyMC's ``adapt_diag``, default), ``"full"`` (``adapt_full``)
or ``"hessian"``: a dense metric started from the inverse Hessian at the initial point (the
MAP), which shortens trajectories on correlated posteriors such as mesoGIF's.

``sampling_transforms`` (NUTS and HMC; default off): sampler-only reparameterisations of positive
parameters, e.g. ``{"J_theta": {"kind": "softplus", "scale": 0.05}}``, which straightens
mesoGIF's curved c_E / J_θ ridge (:mod:`mechzoo.inference.transforms`). The posterior is
unchanged; the draws are reported in natural units as always.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
import xarray as xr

from .problem import Problem
from .result import make_result

__all__ = ["run", "load_checkpoint", "CheckpointInterrupted", "NUTS_DEFAULTS", "HMC_DEFAULTS"]

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
    "checkpoint_stop_after": None,
    "mass_matrix": "diag",
    "sampling_transforms": None,
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
    "checkpoint_stop_after": None,
    "sampling_transforms": None,
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


#: checkpoint name -> PyMC's per-draw stat name (NUTS: depth, tree_size; HMC: n_steps)
_STATS = {"model_logp": "model_logp", "diverging": "diverging", "step_size": "step_size", "tree_depth": "depth",
          "tree_size": "tree_size", "n_steps": "n_steps", "energy": "energy"}


class CheckpointInterrupted(RuntimeError):
    """Raised when ``checkpoint_stop_after`` stops the chains (a stand-in for an interruption)."""


def _atomic_write_bytes(path, data: bytes) -> None:
    import os

    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _chain_worker(payload: bytes) -> int:
    """Run (or resume) one chain with the step method in ``payload`` (see :func:`_run_resumable`).

    Every ``every`` iterations the chain's draws (``chain-<c>.npz``) and its complete state
    (``chain-<c>.state.pkl``: the step method with its adaptation and random generator, the
    current point and the iteration) are written atomically. A rerun loads the state and
    continues the same Markov chain exactly where it stopped, so an interrupted-and-resumed run
    gives the same draws as an uninterrupted one.
    """
    import io
    from pathlib import Path

    import cloudpickle

    job = cloudpickle.loads(payload)
    d = Path(job["dir"])
    c = int(job["chain"])
    tune, draws, every = int(job["tune"]), int(job["draws"]), max(1, int(job["every"]))
    total = tune + draws
    state_path = d / f"chain-{c}.state.pkl"
    t_leg = time.perf_counter()
    if state_path.exists():
        state = cloudpickle.loads(state_path.read_bytes())
        step, point, i0, buf = state["step"], state["point"], int(state["i"]), state["buf"]
        elapsed0 = float(state.get("elapsed_s", np.nan))  # NaN: a checkpoint written before the clock was kept
    else:
        elapsed0 = 0.0
        step, point, i0 = job["step"], job["start"], 0
        buf = {"theta": [], "tuning": [], **{k: [] for k in _STATS}}
        step.setup_chain(np.random.default_rng([int(job["seed"]), c]), tune, draws)
        step.tune = bool(tune)
        if hasattr(step, "reset_tuning"):
            step.reset_tuning()
        if hasattr(step, "iter_count"):
            step.iter_count = 0
    natural = job["natural"]
    stop_after = job.get("stop_after")

    def save(i_next: int) -> None:
        elapsed = elapsed0 + (time.perf_counter() - t_leg)  # this chain's sampling time over all legs
        out = io.BytesIO()
        np.savez(out, names=np.array(job["names"]), elapsed_s=np.float64(elapsed), **{k: np.asarray(v) for k, v in buf.items()})
        _atomic_write_bytes(d / f"chain-{c}.npz", out.getvalue())
        _atomic_write_bytes(state_path, cloudpickle.dumps({"step": step, "point": point, "i": i_next, "buf": buf, "elapsed_s": elapsed}))

    for i in range(i0, total):
        if i == tune:
            step.stop_tuning()
        point, stats = step.step(point)
        stats = stats[0] if isinstance(stats, (list, tuple)) else stats
        buf["theta"].append(np.concatenate([np.ravel(v) for v in natural(point)]))
        buf["tuning"].append(i < tune)
        for k, name in _STATS.items():
            buf[k].append(float(stats.get(name, np.nan)))
        if (i + 1) % every == 0 or i + 1 == total:
            save(i + 1)
        if stop_after is not None and i + 1 - i0 >= int(stop_after) and i + 1 < total:
            save(i + 1)
            return i + 1
    return total


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
    for k in _STATS:
        ds[k] = (("chain", "draw"), np.stack([pad(d.get(k, np.full(len(d["theta"]), np.nan)), np.nan) for d in data]))
    ds.attrs["n_draws_per_chain"] = [int(len(d["theta"])) for d in data]
    # wall time each chain has spent sampling, summed over interrupted and resumed legs (NaN when
    # the checkpoint predates this record or a leg was not timed)
    ds.attrs["sampling_wall_time_s_per_chain"] = [float(d["elapsed_s"]) if "elapsed_s" in d else float("nan") for d in data]
    return ds


def _hessian_potential(problem: Problem, init: Mapping[str, np.ndarray], seed: int, model=None):
    """Dense NUTS metric from the curvature of the log density at ``init`` (the MAP).

    1. The Hessian of the log density of the *unconstrained* coordinates (what NUTS samples) by
       central differences of the exact gradient (2 D gradient evaluations, step 1e-4),
       symmetrised; eigen-decomposition of its negative, eigenvalues floored at 1e-8 of the
       largest.
    2. **Scale calibration along each eigen-direction**: where the density is far from Gaussian
       (a curved ridge, e.g. mesoGIF's c_E / J_θ / τ_θ trade-off) the Hessian can misjudge the
       width by an order of magnitude. For each eigen-direction ``v`` with Laplace SD ``σ`` the
       scale ``s`` at which the log density has dropped by 1/2 on average over ``±s v`` (the
       1-SD drop of a Gaussian) is found by bisection on ``log s`` in ``[σ/100, 3σ]`` (12 steps,
       2 evaluations each); ``s²`` replaces ``σ²`` as the variance along ``v``.

    The metric keeps adapting during tuning (``QuadPotentialFullAdapt``), with this estimate
    weighted as 50 draws. ``model``: the PyMC model whose coordinates NUTS samples (default: the
    problem's; another one after ``sampling_transforms``).
    """
    from pymc.step_methods.hmc import quadpotential

    from .map import LikelihoodFunctions

    funcs = LikelihoodFunctions(problem, jacobian=True, model=model)
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
    f0 = funcs.value_and_grad(x0)[0]

    def drop(direction: np.ndarray, scale: float) -> float:
        vals = [funcs.value_and_grad(x0 + sign * scale * direction)[0] for sign in (1.0, -1.0)]
        return f0 - 0.5 * (vals[0] + vals[1]) if all(np.isfinite(vals)) else np.inf

    variances = np.empty(n)
    for i in range(n):
        sigma = 1.0 / np.sqrt(w[i])
        lo, hi = np.log(sigma / 100.0), np.log(3.0 * sigma)
        if drop(v[:, i], np.exp(hi)) < 0.5:  # flatter than its curvature says: keep the widest scale
            variances[i] = np.exp(2 * hi)
            continue
        for _ in range(12):
            mid = 0.5 * (lo + hi)
            if drop(v[:, i], np.exp(mid)) < 0.5:
                lo = mid
            else:
                hi = mid
        variances[i] = np.exp(lo + hi)  # (geometric midpoint)^2
    cov = (v * variances) @ v.T
    return quadpotential.QuadPotentialFullAdapt(n, x0, cov, initial_weight=50, rng=np.random.default_rng(seed))


def _run_key(problem: Problem, method: str, settings: Mapping[str, Any], seed: int) -> str:
    """What a checkpointed run must share with the run it resumes: entry, data, route, settings
    (other than the checkpoint controls) and seed."""
    import hashlib
    import json

    h = hashlib.sha256()
    h.update(json.dumps({"entry": problem.entry_id, "entry_hash": problem.entry_hash, "method": method, "seed": int(seed),
                         "config": problem.config, "pinned": {k: np.asarray(v).tolist() for k, v in problem.pinned.items()},
                         "settings": {k: v for k, v in settings.items() if not k.startswith("checkpoint_") and k != "cores"
                                      # off (the default) leaves the key of runs from before the setting existed
                                      and not (k == "sampling_transforms" and not v)}},
                        sort_keys=True, default=str).encode())
    for k in sorted(problem.observed):
        h.update(k.encode())
        h.update(np.ascontiguousarray(problem.observed[k]).tobytes())
    return h.hexdigest()[:16]


def _all_chains_saved(problem: Problem, method: str, settings: Mapping[str, Any], seed: int) -> bool:
    """True if ``checkpoint_dir`` holds this run (same key) and a saved state for every chain."""
    import json
    from pathlib import Path

    if not settings.get("checkpoint_dir"):
        return False
    d = Path(settings["checkpoint_dir"])
    run_file = d / "run.json"
    if not run_file.exists() or json.loads(run_file.read_text()).get("key") != _run_key(problem, method, settings, seed):
        return False
    return all((d / f"chain-{c}.state.pkl").exists() for c in range(int(settings["chains"])))


def _make_step(pm, model, method: str, settings: Mapping[str, Any], init, potential, seed: int):
    """The step method and the (transformed) starting point, as ``pm.sample`` would build them."""
    from pymc.initial_point import make_initial_point_fn

    start_fn = make_initial_point_fn(model=model, overrides=dict(init or {}), jitter_rvs=set(), return_transformed=True)
    start = start_fn(int(seed))
    with model:
        if method == "hmc":
            return pm.HamiltonianMC(step_scale=float(settings["step_scale"]), path_length=float(settings["path_length"])), start
        nuts_kwargs: dict[str, Any] = {"target_accept": float(settings["target_accept"])}
        if "max_treedepth" in settings:
            depth = int(settings["max_treedepth"])
            nuts_kwargs.update(max_treedepth=depth, early_max_treedepth=min(depth, 8))
        if potential is not None:
            return pm.NUTS(potential=potential, **nuts_kwargs), start
        starts, step = pm.init_nuts(init={"diag": "adapt_diag", "full": "adapt_full"}[settings["mass_matrix"]], chains=1,
                                    initvals=[dict(init or {})], model=model, random_seed=int(seed), progressbar=False,
                                    quiet=True, **nuts_kwargs)
        return step, starts[0]


def _run_resumable(problem: Problem, model, method: str, settings: Mapping[str, Any], seed: int, init, potential,
                   progress: bool) -> tuple[dict, dict, dict]:
    """Sample with one process per chain, writing each chain's draws *and state* to
    ``checkpoint_dir`` every ``checkpoint_every`` iterations; a rerun with the same
    ``checkpoint_dir`` (same entry, data, settings and seed) resumes every chain where it stopped.

    Returns the posterior ``{name: (chain, draw, *shape)}``, the sample statistics and the warm-up
    groups, assembled from the checkpoint files.
    """
    import json
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    import cloudpickle
    import pymc as pm
    from tqdm.auto import tqdm

    d = Path(settings["checkpoint_dir"])
    d.mkdir(parents=True, exist_ok=True)
    key = _run_key(problem, method, settings, seed)
    run_file = d / "run.json"
    if run_file.exists():
        old = json.loads(run_file.read_text())
        if old.get("key") != key:
            raise ValueError(
                f"checkpoint_dir {str(d)!r} holds another run (key {old.get('key')}, this run {key}): "
                "use a new folder, or the same entry, data, settings and seed to resume it"
            )
    else:
        run_file.write_text(json.dumps({"key": key, "entry": problem.entry_id, "method": method, "seed": int(seed)}))
    chains, tune, draws = int(settings["chains"]), int(settings["tune"]), int(settings["draws"])
    if all((d / f"chain-{c}.state.pkl").exists() for c in range(chains)):
        step, start = None, None  # every chain continues from its saved state
    else:
        step, start = _make_step(pm, model, method, settings, init, potential, seed)
    by_name = {v.name: v for v in model.unobserved_value_vars}
    natural = model.compile_fn([by_name[p.name] for p in problem.parameters], inputs=model.value_vars,
                               on_unused_input="ignore", point_fn=True)
    payloads = [cloudpickle.dumps({
        "dir": str(d), "chain": c, "tune": tune, "draws": draws, "every": settings["checkpoint_every"], "seed": int(seed),
        "step": step, "start": start, "natural": natural, "names": problem.flat_names(),
        "stop_after": settings.get("checkpoint_stop_after"),
    }) for c in range(chains)]
    total = tune + draws
    workers = max(1, min(int(settings["cores"]), chains))
    bar = tqdm(total=chains * total, desc=f"{method.upper()} {problem.entry_id}", disable=not progress, unit="draw")

    def done_so_far() -> int:
        n = 0
        for c in range(chains):
            f = d / f"chain-{c}.npz"
            if f.exists():
                try:
                    n += len(np.load(f)["tuning"])
                except (OSError, ValueError, KeyError):  # being replaced
                    pass
        return n

    if workers == 1:
        reached = []
        for payload in payloads:
            reached.append(_chain_worker(payload))
            bar.update(done_so_far() - bar.n)
    else:
        # the platform's default start method, as PyMC's own parallel sampling (fork on Linux:
        # no re-import of the caller's __main__, so scripts need no main guard)
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context()) as pool:
            futures = [pool.submit(_chain_worker, payload) for payload in payloads]
            while not all(f.done() for f in futures):
                time.sleep(1.0)
                bar.update(done_so_far() - bar.n)
            reached = [f.result() for f in futures]
    bar.update(done_so_far() - bar.n)
    bar.close()
    if any(r < total for r in reached):
        raise CheckpointInterrupted(
            f"stopped at iterations {reached} of {total} (checkpoint_stop_after); rerun with the same "
            f"checkpoint_dir {str(d)!r} to resume"
        )
    ck = load_checkpoint(d)
    tuning = ck["tuning"].values.astype(bool)
    if not (np.all(tuning[:, :tune]) and not np.any(tuning[:, tune:])):
        raise RuntimeError(f"checkpoint files in {str(d)!r} are inconsistent with tune={tune}, draws={draws}")

    def split(sel: slice) -> tuple[dict, dict]:
        theta = ck["theta"].values[:, sel]
        post = {k: v for k, v in problem.unflatten(theta).items()}
        stats = {
            "lp": ck["model_logp"].values[:, sel], "diverging": ck["diverging"].values[:, sel].astype(bool),
            "step_size": ck["step_size"].values[:, sel], "energy": ck["energy"].values[:, sel],
        }
        if method == "nuts":
            stats.update(tree_depth=ck["tree_depth"].values[:, sel].astype(np.int64), n_steps=ck["tree_size"].values[:, sel])
        else:
            stats["n_steps"] = ck["n_steps"].values[:, sel]
        return post, stats

    post, stats = split(slice(tune, total))
    groups = {}
    if tune:
        wpost, wstats = split(slice(0, tune))
        coords = {"chain": np.arange(chains), "draw": np.arange(tune)}
        groups["warmup_posterior"] = xr.Dataset(
            {p.name: (("chain", "draw", *p.dims), wpost[p.name]) for p in problem.parameters},
            coords={**coords, **{dim: problem.coords()[dim] for p in problem.parameters for dim in p.dims}},
        )
        groups["warmup_sample_stats"] = xr.Dataset({k: (("chain", "draw"), v) for k, v in wstats.items()}, coords=coords)
    return post, stats, groups


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
    from .transforms import apply_sampling_transforms, check_sampling_transforms

    settings["sampling_transforms"] = check_sampling_transforms(settings["sampling_transforms"], problem.parameters)
    t0 = time.perf_counter()
    resuming = _all_chains_saved(problem, method, settings, seed)
    # a resumed run takes its points and step methods from the saved states: no MAP, no metric
    init, init_info = (None, {"resumed_from": str(settings["checkpoint_dir"])}) if resuming else _initial_values(problem, settings, seed)
    model = apply_sampling_transforms(problem.pymc_model(), settings["sampling_transforms"])
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
    potential = None
    if method == "nuts":
        if settings["mass_matrix"] not in ("diag", "full", "hessian"):
            raise ValueError(f"mass_matrix must be 'diag', 'full' or 'hessian' (got {settings['mass_matrix']!r})")
        if settings["mass_matrix"] == "hessian" and not resuming:
            if init is None:
                raise ValueError("mass_matrix='hessian' needs an initial point: use init='map' or a saved result")
            if settings["sampler"] != "pymc":
                raise ValueError("mass_matrix='hessian' is implemented for sampler='pymc'")
            potential = _hessian_potential(problem, init, seed, model)
    if settings["checkpoint_dir"]:
        if settings["sampler"] != "pymc":
            raise ValueError("checkpoint_dir needs sampler='pymc' (the resumable driver runs PyMC's step methods)")
        post, stats, groups = _run_resumable(problem, model, method, settings, seed, init, potential, progress)
        wall = time.perf_counter() - t0
        per_chain = load_checkpoint(settings["checkpoint_dir"]).attrs["sampling_wall_time_s_per_chain"]
        # wall_time_s is this call; a resumed run's total sampling time is the slowest chain's sum over its legs
        init_info["sampling_wall_time_s_per_chain"] = per_chain
        leapfrog = int(np.nansum(stats["n_steps"])) + sum(int(np.nansum(g["n_steps"].values)) for n, g in groups.items() if n == "warmup_sample_stats")
    else:
        idata = _sample(pm, model, method, settings, kwargs, potential)
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
        post = idata["posterior"].to_dataset()[[p.name for p in problem.parameters]]
    problem.counter.gradient_evaluations += leapfrog  # MAP initialisation already counted its own
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
