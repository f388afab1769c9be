"""MAP route: multi-start optimisation of the log posterior (DESIGN.md §4).

Every restart starts from a prior draw and runs full-batch L-BFGS-B (scipy) on the PyMC log
posterior in PyMC's unconstrained space, with exact PyTensor gradients. By default the objective
is the log posterior density of the *natural* parameters (``jacobian = false``), so the optimum
is the posterior mode in the coordinates the entry declares; ``jacobian = true`` optimises the
density of the unconstrained coordinates instead (as PyMC's samplers see it).

PyMC's ``find_MAP`` can stop early at a wrong point on scan models (a pitfall seen in this
project): here every restart is kept with its convergence flag (scipy success *and* a small
projected gradient), the best converged restart is the result, and a warning lists restarts that
did not converge.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Mapping

import numpy as np
import xarray as xr

from .problem import Problem
from .result import make_result

__all__ = ["run", "DEFAULTS", "LikelihoodFunctions"]

DEFAULTS: dict[str, Any] = {
    "restarts": 10,
    "maxiter": 2000,
    "gtol": 1e-8,
    "ftol": 1e-13,
    "jacobian": False,
    "keep_trajectory": True,
    "workers": 1,
    "init_bounds": None,
}


class LikelihoodFunctions:
    """Compiled log posterior and gradient on the flat unconstrained vector, plus the maps
    between natural parameters and that vector (built once per problem)."""

    def __init__(self, problem: Problem, *, jacobian: bool = False, model=None):
        import pytensor
        import pytensor.tensor as pt
        from pymc.blocking import DictToArrayBijection

        self.problem = problem
        self.model = problem.pymc_model() if model is None else model
        model = self.model
        self.value_vars = list(model.value_vars)
        ip = model.initial_point()
        self._bij_point = DictToArrayBijection.map({v.name: ip[v.name] for v in self.value_vars})
        logp = model.logp(jacobian=jacobian)
        grads = pt.grad(logp, self.value_vars)
        self._fn = pytensor.function(self.value_vars, [logp, *grads], on_unused_input="ignore")
        # natural values of the free RVs from the unconstrained values
        rvs = [model[p.name] for p in problem.parameters]
        natural = [model.rvs_to_values[rv] for rv in rvs]
        outs = []
        for rv, val in zip(rvs, natural):
            tr = model.rvs_to_transforms.get(rv)
            outs.append(val if tr is None else tr.backward(val, *rv.owner.inputs))
        self._to_natural = pytensor.function(self.value_vars, outs, on_unused_input="ignore")
        # unconstrained values from natural ones
        nat_in = [pt.tensor(dtype="float64", shape=tuple(p.shape)) for p in problem.parameters]
        fwd = []
        for rv, x in zip(rvs, nat_in):
            tr = model.rvs_to_transforms.get(rv)
            fwd.append(x if tr is None else tr.forward(x, *rv.owner.inputs))
        self._to_unconstrained = pytensor.function(nat_in, fwd, on_unused_input="ignore")
        self.rvs = rvs

    def _split(self, x: np.ndarray) -> list[np.ndarray]:
        from pymc.blocking import DictToArrayBijection, RaveledVars

        point = DictToArrayBijection.rmap(RaveledVars(np.asarray(x, float), self._bij_point.point_map_info))
        return [np.asarray(point[v.name], dtype=np.float64) for v in self.value_vars]

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        out = self._fn(*self._split(x))
        self.problem.counter.loglik_evaluations += 1
        self.problem.counter.gradient_evaluations += 1
        return float(out[0]), np.concatenate([np.ravel(g) for g in out[1:]])

    def to_natural(self, x: np.ndarray) -> dict[str, np.ndarray]:
        vals = self._to_natural(*self._split(x))
        return {p.name: np.asarray(v, dtype=np.float64) for p, v in zip(self.problem.parameters, vals)}

    def from_natural(self, params: Mapping[str, np.ndarray]) -> np.ndarray:
        vals = self._to_unconstrained(*[np.asarray(params[p.name], dtype=np.float64).reshape(p.shape) for p in self.problem.parameters])
        # flatten in the order of the value variables (that of value_and_grad), which need not be
        # the declaration order (e.g. after pymc's change_value_transforms)
        by_value = {self.model.rvs_to_values[rv].name: v for rv, v in zip(self.rvs, vals)}
        return np.concatenate([np.ravel(by_value[v.name]) for v in self.value_vars])


def _optimise(funcs: LikelihoodFunctions, x0: np.ndarray, settings: Mapping[str, Any]) -> dict[str, Any]:
    from scipy.optimize import minimize

    trajectory: list[np.ndarray] = [x0.copy()]
    values: list[float] = []

    def objective(x):
        v, g = funcs.value_and_grad(x)
        if not np.isfinite(v):
            return 1e300, np.zeros_like(x)
        return -v, -g

    def callback(xk):
        if settings["keep_trajectory"]:
            trajectory.append(np.array(xk))

    v0, _ = funcs.value_and_grad(x0)
    values.append(v0)
    res = minimize(
        objective,
        x0,
        jac=True,
        method="L-BFGS-B",
        callback=callback,
        options={"maxiter": int(settings["maxiter"]), "gtol": float(settings["gtol"]), "ftol": float(settings["ftol"]), "maxcor": 30},
    )
    final_v, final_g = funcs.value_and_grad(res.x)
    grad_norm = float(np.max(np.abs(final_g)))
    converged = bool(np.isfinite(final_v) and (res.success or grad_norm < 1e-5) and grad_norm < 1e-3 * max(1.0, abs(final_v)))
    return {
        "x": res.x,
        "log_posterior": final_v,
        "initial_log_posterior": v0,
        "grad_max_abs": grad_norm,
        "converged": converged,
        "n_iterations": int(res.nit),
        "n_evaluations": int(res.nfev),
        "message": str(res.message),
        "trajectory": np.array(trajectory),
    }


def _starting_points(problem: Problem, n: int, seed: int, bounds: Mapping[str, Any] | None) -> np.ndarray:
    """``n`` prior draws (flat, natural coordinates); with ``bounds = {name: [low, high]}`` draws
    of the prior truncated to those boxes (every element of the named parameters), by rejection
    in seeded batches. Deterministic for a given seed."""
    if not bounds:
        return problem.sample_prior(n, seed=seed)
    names = {p.name: p for p in problem.parameters}
    unknown = set(bounds) - set(names) - set(problem.pinned)  # bounds of pinned parameters do not apply
    if unknown:
        raise ValueError(f"init_bounds names unknown parameter(s) {sorted(unknown)}; free parameters: {list(names)}")
    lo = np.full(problem.dim, -np.inf)
    hi = np.full(problem.dim, np.inf)
    start = 0
    for p in problem.parameters:
        if p.name in bounds:
            b = np.asarray(bounds[p.name], dtype=np.float64)
            if b.shape != (2,) or not b[0] < b[1]:
                raise ValueError(f"init_bounds[{p.name!r}] must be [low, high] with low < high (got {bounds[p.name]!r})")
            lo[start : start + p.size], hi[start : start + p.size] = b
        start += p.size
    # Every prior kind of mechzoo.inference.priors factorises over elements, so the truncated
    # prior is sampled column by column (rejection per element; efficient also when the joint
    # acceptance rate would be tiny, e.g. ten bounded time constants).
    out = np.empty((n, problem.dim))
    filled = np.zeros(problem.dim, dtype=np.int64)
    batch = max(1000, 10 * n)
    for attempt in range(200):
        draws = problem.sample_prior(batch, seed=seed + 7919 * attempt)
        for j in np.nonzero(filled < n)[0]:
            ok = draws[(draws[:, j] >= lo[j]) & (draws[:, j] <= hi[j]), j]
            take = ok[: n - filled[j]]
            out[filled[j] : filled[j] + take.size, j] = take
            filled[j] += take.size
        if np.all(filled >= n):
            return out
    bad = [problem.flat_names()[j] for j in np.nonzero(filled < n)[0]]
    raise ValueError(f"init_bounds: too few prior draws of {bad} fall inside the bounds; widen init_bounds")


def _parallel_restarts(problem: Problem, funcs: LikelihoodFunctions, starts: np.ndarray, settings: Mapping[str, Any],
                       workers: int, bar) -> list[dict[str, Any]]:
    """Restarts on ``workers`` threads, each with its own compiled functions (a compiled PyTensor
    function is not re-entrant). Parallel only where the log-likelihood releases the GIL (the
    mesoGIF kernels do); results do not depend on ``workers``: each restart is deterministic."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()
    lock = threading.Lock()
    pool_funcs = [funcs]

    def one(i: int) -> dict[str, Any]:
        f = getattr(local, "funcs", None)
        if f is None:
            with lock:
                f = pool_funcs.pop() if pool_funcs else None
            if f is None:
                f = LikelihoodFunctions(problem, jacobian=bool(settings["jacobian"]))
            local.funcs = f
        out = _optimise(f, f.from_natural(problem.unflatten(starts[i])), settings)
        bar.update()
        return out

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="map-restart") as pool:
        return list(pool.map(one, range(len(starts))))


def run(problem: Problem, *, settings: Mapping[str, Any] | None = None, seed: int = 0, progress: bool = True) -> xr.DataTree:
    """Multi-start MAP. Returns the common result (posterior = the best restart as one draw),
    with every restart in the ``map_restarts`` group (optimum, log posterior, convergence,
    evaluation counts, initial point and the parameter trajectory in natural coordinates).

    Settings (:data:`DEFAULTS`): ``restarts``, ``maxiter``, ``gtol``, ``ftol`` (L-BFGS-B),
    ``jacobian`` (see the module docstring), ``keep_trajectory``, ``workers``: restarts run on
    that many threads (useful where the likelihood releases the GIL, as mesoGIF's does), and
    ``init_bounds``: ``{parameter: [low, high]}`` restricting the starting points to the prior
    truncated to those boxes (an entry uses it where broad priors put most draws in degenerate
    regions, e.g. mesoGIF time constants far below the 1 ms time step)."""
    from tqdm.auto import tqdm

    unknown = set(dict(settings or {})) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown map setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **dict(settings or {})}
    t0 = time.perf_counter()
    funcs = LikelihoodFunctions(problem, jacobian=bool(settings["jacobian"]))
    n = int(settings["restarts"])
    if n < 1:
        raise ValueError(f"restarts must be >= 1 (got {n})")
    workers = int(settings["workers"])
    if workers < 1:
        raise ValueError(f"workers must be >= 1 (got {workers})")
    starts = _starting_points(problem, n, seed, settings["init_bounds"])
    bar = tqdm(total=n, desc=f"MAP {problem.entry_id}", disable=not progress, unit="restart")
    if workers == 1 or n == 1:
        runs = []
        for i in range(n):
            runs.append(_optimise(funcs, funcs.from_natural(problem.unflatten(starts[i])), settings))
            bar.update()
    else:
        runs = _parallel_restarts(problem, funcs, starts, settings, min(workers, n), bar)
    bar.close()
    logps = np.array([r["log_posterior"] for r in runs])
    converged = np.array([r["converged"] for r in runs])
    candidates = np.where(converged, logps, -np.inf) if converged.any() else logps
    best = int(np.nanargmax(candidates))
    if not converged.all():
        warnings.warn(
            f"MAP: {int((~converged).sum())} of {n} restarts did not converge (kept in map_restarts; best converged restart used)",
            RuntimeWarning,
            stacklevel=2,
        )
    best_params = funcs.to_natural(runs[best]["x"])
    posterior = {k: v[None, None] for k, v in best_params.items()}

    names = problem.flat_names()
    optima = np.stack([problem.flatten({k: v[None] for k, v in funcs.to_natural(r["x"]).items()})[0] for r in runs])
    max_len = max(len(r["trajectory"]) for r in runs)
    traj = np.full((n, max_len, problem.dim), np.nan)
    for i, r in enumerate(runs):
        nat = [problem.flatten({k: v[None] for k, v in funcs.to_natural(x).items()})[0] for x in r["trajectory"]]
        traj[i, : len(nat)] = np.array(nat)
    restarts = xr.Dataset(
        {
            "optimum": (("restart", "parameter"), optima),
            "initial": (("restart", "parameter"), starts),
            "log_posterior": (("restart",), logps),
            "initial_log_posterior": (("restart",), np.array([r["initial_log_posterior"] for r in runs])),
            "converged": (("restart",), converged.astype(np.int8)),
            "grad_max_abs": (("restart",), np.array([r["grad_max_abs"] for r in runs])),
            "n_iterations": (("restart",), np.array([r["n_iterations"] for r in runs])),
            "n_evaluations": (("restart",), np.array([r["n_evaluations"] for r in runs])),
            "message": (("restart",), np.array([r["message"] for r in runs])),
            "trajectory": (("restart", "iteration", "parameter"), traj),
        },
        coords={"restart": np.arange(n), "parameter": names, "iteration": np.arange(max_len)},
        attrs={"best_restart": best, "objective": "log posterior" + (" + log|J|" if settings["jacobian"] else " (natural coordinates)")},
    )
    stats = {"lp": np.array([[logps[best]]]), "converged": np.array([[int(converged[best])]])}
    return make_result(
        problem,
        route="map",
        posterior=posterior,
        sample_stats=stats,
        settings=settings,
        seed=seed,
        wall_time_s=time.perf_counter() - t0,
        groups={"map_restarts": restarts},
        attrs={"n_restarts": n, "n_converged": int(converged.sum()), "best_restart": best},
    )
