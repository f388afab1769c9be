"""The one-line API: ``simulate``, ``fit``, ``diagnose``, ``compare`` (DESIGN.md §7)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr

from mechzoo.inference import compare as _compare
from mechzoo.inference import diagnostics as _diagnostics
from mechzoo.inference import map as _map
from mechzoo.inference import mcmc as _mcmc
from mechzoo.inference import npe as _npe
from mechzoo.inference.problem import Problem, seeds_for
from mechzoo.inference.result import load as load_result
from mechzoo.inference.result import save as save_result

from .registry import entry_hash, entry_paths, load
from .schema import Entry

__all__ = ["simulate", "fit", "diagnose", "compare", "problem", "default_data", "load_result", "save_result"]


def _entry(entry: str | Entry) -> Entry:
    return entry if isinstance(entry, Entry) else load(entry)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _theta(entry: Entry, theta: Mapping[str, Any] | None, n: int) -> dict[str, np.ndarray]:
    """Validated parameter values broadcast to a batch of ``n``."""
    values = entry.reference_values() if theta is None else {k: np.asarray(v, dtype=np.float64) for k, v in theta.items()}
    specs = {p.name: p for p in entry.parameter_specs()}
    unknown = set(values) - set(specs)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for entry {entry.id!r}; free parameters: {list(specs)}")
    missing = set(specs) - set(values)
    if missing:
        ref = entry.reference_values()
        values.update({k: ref[k] for k in missing})
    out = {}
    for name, spec in specs.items():
        v = values[name]
        if v.shape == spec.shape:
            v = np.broadcast_to(v, (n, *spec.shape))
        elif v.shape[1:] != spec.shape:
            raise ValueError(f"parameter {name!r} must have shape {spec.shape} (dims {spec.dims}) or (batch, *{spec.shape}); got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"parameter {name!r} contains NaN or inf")
        lo, hi = spec.prior.bounds(spec.shape)
        if np.any(v < lo) or np.any(v > hi):
            raise ValueError(f"parameter {name!r} = {v.tolist()} lies outside the support of its prior {spec.prior.describe()}")
        out[name] = np.ascontiguousarray(v, dtype=np.float64)
    sizes = {a.shape[0] for a in out.values()}
    if len(sizes) > 1:
        raise ValueError(f"parameter batches of different sizes: {sorted(sizes)}")
    return out


def simulate(
    entry: str | Entry,
    theta: Mapping[str, Any] | None = None,
    *,
    n: int = 1,
    data: str = "default",
    seed: int = 0,
    features: bool = True,
    **config: Any,
) -> xr.Dataset:
    """Simulate an entry.

    Parameters
    ----------
    entry : entry id or Entry
    theta : mapping, optional
        Free-parameter values (each of the parameter's shape, or with a leading batch axis).
        ``None``: the entry's reference values.
    n : number of simulations when ``theta`` is not batched (each gets its own seed).
    data : name of the data recipe whose configuration to use.
    seed : root seed; simulation i uses ``seeds_for(seed, n)[i]``.
    features : also return the summary features where the entry has them.
    **config : overrides of the model configuration.

    Returns
    -------
    xarray.Dataset with dims ``("simulation", *observation dims)`` and the parameters used;
    each variable carries its ``units`` attribute where the entry or the model declares it.
    """
    e = _entry(entry)
    if not e.routes.simulator and not hasattr(e.model_module(), "simulate"):
        raise ValueError(f"entry {e.id!r} has no simulator")
    if data not in e.data:
        raise ValueError(f"entry {e.id!r} has no data recipe {data!r} (known: {sorted(e.data)})")
    prob = problem(e, data=None, recipe=data, config=config, generate=False)
    params = _theta(e, theta, n)
    batch = next(iter(params.values())).shape[0]
    seeds = seeds_for(seed, batch)
    theta_flat = prob.flatten(params)
    obs = prob.simulate(theta_flat, seeds)
    dims = prob.model.observation_dims(prob.config)
    coords = prob.model.coords(prob.config)
    data_vars = {k: (("simulation", *dims[k]), v) for k, v in obs.items()}
    for p in prob.parameters:
        data_vars[p.name] = (("simulation", *p.dims), params[p.name])
    ds_coords = {k: v for k, v in {**coords, **prob.coords()}.items()}
    if features and (hasattr(prob.model, "features") or hasattr(prob.model, "simulate_features")):
        data_vars["features"] = (("simulation", "feature"), prob.features_of(obs))
        ds_coords["feature"] = prob.feature_names()
    used = {d for v in data_vars.values() for d in v[0]}
    ds = xr.Dataset(data_vars, coords={k: v for k, v in ds_coords.items() if k in used})
    units = {**getattr(prob.model, "OBSERVATION_UNITS", {}), **getattr(prob.model, "COORDINATE_UNITS", {})}
    units.update({p.name: p.unit for p in prob.parameters})
    for name in ds.variables:
        if name in units:
            ds[name].attrs["units"] = units[name]
    ds.attrs = {"entry_id": e.id, "seed": int(seed), "data_recipe": data}
    return ds


def default_data(
    entry: str | Entry, name: str = "default", *, config: Mapping[str, Any] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    """Regenerate the named data recipe: returns (observed arrays, model config, recipe info).

    ``config`` overrides the model configuration of the recipe (e.g. a shorter duration).
    """
    e = _entry(entry)
    if name not in e.data:
        raise ValueError(f"entry {e.id!r} has no data recipe {name!r} (known: {sorted(e.data)})")
    recipe = e.data[name]
    config = _merge(_merge(e.model.config, recipe.config), config or {})
    info = {"recipe": name, **recipe.model_dump()}
    if recipe.generator == "observation":
        obs = e.observations[recipe.observation]
        config = _merge(config, obs.config)
        if obs.features is None:
            raise ValueError(f"observation {recipe.observation!r} of {e.id!r} has no features")
        return {"features": np.asarray(obs.features, dtype=np.float64)}, config, info
    prob = problem(e, data=None, recipe=name, config=config, generate=False)
    theta = None if recipe.theta == "reference" else recipe.theta
    params = _theta(e, theta, 1)
    out = prob.simulate(prob.flatten(params), seeds_for(recipe.seed, 1, stream="data"))
    info["theta"] = {k: v[0].tolist() for k, v in params.items()}
    return {k: np.asarray(v[0]) for k, v in out.items()}, config, info


def _coerce_data(e: Entry, prob_config: Mapping[str, Any], data: Any) -> dict[str, np.ndarray]:
    """User data (dict, Dataset, DataTree or path) as observation arrays, validated."""
    module = e.model_module()
    if isinstance(data, (str, os.PathLike)):
        p = Path(data)
        if not p.exists():
            raise FileNotFoundError(f"data file {p} does not exist")
        data = load_result(p) if p.suffix in (".nc", ".zarr") else np.load(p, allow_pickle=False)
    if isinstance(data, xr.DataTree):
        data = data["observed_data"].to_dataset() if "observed_data" in data.children else data.to_dataset()
    if isinstance(data, xr.Dataset):
        data = {k: data[k].values for k in data.data_vars}
    if hasattr(data, "files"):  # npz
        data = {k: data[k] for k in data.files}
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a mapping of arrays, an xarray Dataset/DataTree or a file path (got {type(data).__name__})")
    expected = module.observation_dims(prob_config) if hasattr(module, "observation_dims") else {}
    out = {}
    for k, v in data.items():
        arr = np.asarray(v)
        if k != "features" and expected and k not in expected:
            raise ValueError(f"unknown data variable {k!r} for entry {e.id!r}; expected {sorted(expected)} or 'features'")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"data variable {k!r} must be numeric (got dtype {arr.dtype})")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"data variable {k!r} contains NaN or inf")
        if k != "features" and expected and arr.ndim != len(expected[k]):
            raise ValueError(f"data variable {k!r} must have dims {expected[k]} (ndim {len(expected[k])}); got shape {arr.shape}")
        out[k] = arr
    if hasattr(module, "validate_observations"):
        module.validate_observations(out, config=prob_config)
    return out


def _split_free(e: Entry, free: Sequence[str] | None) -> tuple[list, dict[str, np.ndarray]]:
    """Free parameter specs (declaration order) and the others pinned at their reference values."""
    specs = e.parameter_specs()
    if free is None:
        return specs, {}
    if isinstance(free, str):
        free = [free]
    names = [p.name for p in specs]
    unknown = [f for f in free if f not in names]
    if unknown:
        raise ValueError(f"free: unknown parameter(s) {unknown} of entry {e.id!r}; its parameters: {names}")
    if not free:
        raise ValueError("free: give at least one parameter to infer")
    pinned = {}
    for p in specs:
        if p.name in free:
            continue
        if p.reference is None:
            raise ValueError(
                f"free: parameter {p.name!r} of entry {e.id!r} has no reference value to be pinned at "
                f"(fix: add it to free, or give the entry a 'reference' for it)"
            )
        pinned[p.name] = np.asarray(p.reference, dtype=np.float64).reshape(p.shape)
    return [p for p in specs if p.name in free], pinned


def problem(
    entry: str | Entry,
    data: Any = None,
    *,
    recipe: str = "default",
    config: Mapping[str, Any] | None = None,
    generate: bool = True,
    free: Sequence[str] | None = None,
) -> Problem:
    """Build the :class:`~mechzoo.inference.problem.Problem` routes consume.

    ``data=None`` regenerates the entry's ``recipe`` (default data); a string naming an entry
    observation or data recipe uses that; anything else is taken as user data. ``free`` names
    the parameters to infer; the others are pinned at their ``reference`` values (default:
    all parameters are free).
    """
    e = _entry(entry)
    cfg = _merge(e.model.config, e.data[recipe].config if recipe in e.data else {})
    cfg = _merge(cfg, config or {})
    observed: dict[str, np.ndarray] = {}
    name, info = "user", {}
    if generate:
        if data is None or (isinstance(data, str) and (data in e.data or data in e.observations)):
            which = recipe if data is None else data
            if isinstance(data, str) and data in e.observations and data not in e.data:
                obs = e.observations[data]
                observed = {"features": np.asarray(obs.features, dtype=np.float64)}
                cfg = _merge(cfg, obs.config)
                name, info = data, {"observation": data, "source": obs.source}
            else:
                observed, cfg, info = default_data(e, which, config=config)
                name = which
        else:
            observed = _coerce_data(e, cfg, data)
    specs, pinned = _split_free(e, free)
    return Problem(
        entry_id=e.id,
        parameters=specs,
        pinned=pinned,
        model=e.model_module(),
        config=cfg,
        observed=observed,
        data_name=name,
        data_info=info,
        entry_hash=entry_hash(entry_paths()[e.id]) if e.id in entry_paths() else "",
    )


def fit(
    entry: str | Entry,
    data: Any = None,
    method: str | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
    out: str | os.PathLike | None = None,
    config: Mapping[str, Any] | None = None,
    free: Sequence[str] | None = None,
    **settings: Any,
) -> xr.DataTree:
    """Fit a zoo entry in one line.

    Parameters
    ----------
    entry : entry id (e.g. ``"mesogif-2pop"``) or Entry.
    data : None (the entry's default data recipe), the name of a recipe or shipped observation,
        a mapping of observation arrays, an xarray Dataset/DataTree, or a file path (.nc/.npz).
    method : ``"map"``, ``"nuts"``, ``"hmc"`` or ``"npe"`` (default: the entry's default route).
    seed : root seed of every random choice of the route.
    progress : show progress bars.
    out : optional path; the result is saved there (netCDF or zarr) before it is returned.
    config : overrides of the model configuration (applied to the default data recipe too).
    free : names of the parameters to infer; the others stay at their reference values (recorded
        in the result's ``pinned_parameters_json``). Default: all.
    **settings : route settings overriding the entry's defaults (e.g. ``draws=500``).

    Returns
    -------
    xarray.DataTree in ArviZ conventions (DESIGN.md §5).
    """
    e = _entry(entry)
    method = method or e.default_method()
    if method not in ("map", "nuts", "hmc", "npe"):
        raise ValueError(f"unknown method {method!r}; choose one of map, nuts, hmc, npe")
    if method not in e.methods():
        raise ValueError(f"entry {e.id!r} does not support method {method!r}; its routes: {e.methods()}")
    prob = problem(e, data, config=config, free=free)
    run_settings = {**e.route_settings(method), **settings}
    if method == "map":
        result = _map.run(prob, settings=run_settings, seed=seed, progress=progress)
    elif method in ("nuts", "hmc"):
        result = _mcmc.run(prob, method=method, settings=run_settings, seed=seed, progress=progress)
    else:
        result = _npe.run(prob, settings=run_settings, seed=seed, progress=progress)
    if out is not None:
        save_result(result, out)
    return result


diagnose = _diagnostics.diagnose
compare = _compare.compare
