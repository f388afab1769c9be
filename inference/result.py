"""The result object shared by every route (DESIGN.md §5).

Every route returns an ``xarray.DataTree`` in ArviZ 1.x conventions: groups ``posterior``
(dims ``chain``, ``draw`` and the parameter's own dims), ``sample_stats``, ``observed_data``,
``constant_data`` where the entry has fixed inputs, plus route-specific groups (``map_restarts``
for MAP, ``calibration`` for NPE, ``warmup_*`` for MCMC). Root attributes record the entry id,
route, settings, seed, package versions, wall time and call counts. Mappings are stored as JSON
strings so that a result round-trips through netCDF with nothing lost (:func:`save`, :func:`load`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr

from .problem import Problem

__all__ = ["make_result", "save", "load", "versions", "posterior_draws_flat", "result_attrs"]

_VERSION_PACKAGES = ("mechzoo", "numpy", "pymc", "pytensor", "arviz", "arviz-base", "arviz-stats", "sbi", "torch", "nutpie", "numba", "brian2")


def versions() -> dict[str, str]:
    """Versions of Python and the packages that can influence a result."""
    out = {"python": platform.python_version()}
    for pkg in _VERSION_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (str, int, float)) or value is None:
        return value
    return repr(value)


def result_attrs(result: xr.DataTree) -> dict[str, Any]:
    """Root attributes with JSON strings decoded back into Python objects."""
    out: dict[str, Any] = {}
    for k, v in result.attrs.items():
        if isinstance(v, str) and k.endswith("_json"):
            out[k[: -len("_json")]] = json.loads(v)
        else:
            out[k] = v.item() if isinstance(v, np.generic) else v
    return out


def _sanitize(ds: xr.Dataset) -> xr.Dataset:
    """Make a dataset netCDF-safe: object arrays become fixed strings, bool attrs ints, dict attrs JSON."""
    ds = ds.copy()
    for name in list(ds.variables):
        var = ds[name]
        if var.dtype == object:
            ds[name] = var.astype(str)
    new_attrs = {}
    for k, v in ds.attrs.items():
        if isinstance(v, (dict, list, tuple)) and not (isinstance(v, (list, tuple)) and all(isinstance(x, (int, float, str)) for x in v)):
            new_attrs[k] = json.dumps(_jsonable(v))
        elif isinstance(v, (bool, np.bool_)):
            new_attrs[k] = int(v)
        elif v is None:
            new_attrs[k] = "None"
        else:
            new_attrs[k] = v
    ds.attrs = new_attrs
    return ds


def make_result(
    problem: Problem,
    *,
    route: str,
    posterior: Mapping[str, np.ndarray] | xr.Dataset,
    settings: Mapping[str, Any],
    seed: int,
    wall_time_s: float,
    sample_stats: Mapping[str, np.ndarray] | xr.Dataset | None = None,
    groups: Mapping[str, xr.Dataset] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.DataTree:
    """Assemble the common result object.

    Parameters
    ----------
    posterior : mapping or Dataset
        ``{name: (chain, draw, *shape)}`` for every free parameter (or a ready Dataset).
    sample_stats : mapping or Dataset, optional
        ``{stat: (chain, draw)}``.
    groups : mapping of Dataset, optional
        Extra groups (``warmup_posterior``, ``map_restarts``, ``calibration`` ...).
    attrs : mapping, optional
        Extra root attributes (e.g. ``n_invalid_simulations``).
    """
    coords = problem.coords()
    if isinstance(posterior, xr.Dataset):
        post = posterior
    else:
        data_vars = {}
        for p in problem.parameters:
            arr = np.asarray(posterior[p.name], dtype=np.float64)
            if arr.shape[2:] != p.shape:
                raise ValueError(f"posterior draws of {p.name} have shape {arr.shape}, expected (chain, draw, *{p.shape})")
            data_vars[p.name] = (("chain", "draw", *p.dims), arr)
        n_chain, n_draw = next(iter(data_vars.values()))[1].shape[:2]
        post = xr.Dataset(
            data_vars,
            coords={"chain": np.arange(n_chain), "draw": np.arange(n_draw), **{d: coords[d] for d in coords}},
        )
    post.attrs.update({"route": route, "sample_dims": ["chain", "draw"]})
    tree: dict[str, xr.Dataset] = {"posterior": post}
    if sample_stats is not None:
        if isinstance(sample_stats, xr.Dataset):
            tree["sample_stats"] = sample_stats
        else:
            tree["sample_stats"] = xr.Dataset(
                {k: (("chain", "draw"), np.asarray(v)) for k, v in sample_stats.items()},
                coords={"chain": post["chain"].values, "draw": post["draw"].values},
            )
    tree["observed_data"] = problem.observed_dataset()
    const = problem.constant_dataset()
    if const is not None:
        tree["constant_data"] = const
    for name, ds in (groups or {}).items():
        tree[name] = ds
    root_attrs = {
        "entry_id": problem.entry_id,
        "entry_hash": problem.entry_hash,
        "route": route,
        "seed": int(seed),
        "wall_time_s": float(wall_time_s),
        "n_simulations": int(problem.counter.simulations),
        "n_loglik_evaluations": int(problem.counter.loglik_evaluations),
        "n_gradient_evaluations": int(problem.counter.gradient_evaluations),
        "data_name": problem.data_name,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings_json": json.dumps(_jsonable(dict(settings)), sort_keys=True),
        "versions_json": json.dumps(versions(), sort_keys=True),
        "data_info_json": json.dumps(_jsonable(problem.data_info), sort_keys=True),
        "model_config_json": json.dumps(_jsonable(problem.config), sort_keys=True),
        "parameter_names_json": json.dumps(problem.flat_names()),
        "priors_json": json.dumps({p.name: p.prior.declaration() for p in problem.parameters}),  # declaration order
        "pinned_parameters_json": json.dumps(_jsonable(problem.pinned), sort_keys=True),
    }
    for k, v in (attrs or {}).items():
        if isinstance(v, (dict, list, tuple)):
            root_attrs[f"{k}_json"] = json.dumps(_jsonable(v), sort_keys=True)
        else:
            root_attrs[k] = _jsonable(v)
    dt = xr.DataTree.from_dict({f"/{k}": _sanitize(v) for k, v in tree.items()})
    dt.attrs = root_attrs
    return dt


def save(result: xr.DataTree, path: str | os.PathLike) -> Path:
    """Write a result to netCDF (``.nc``, h5netcdf engine) or zarr (``.zarr``) atomically.

    The file is written under a temporary name in the same folder and renamed, so an
    interrupted save never leaves a half-written result.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".zarr":
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-", suffix=".zarr"))
        result.to_zarr(tmp, mode="w")
        if path.exists():
            import shutil

            shutil.rmtree(path)
        tmp.rename(path)
        return path
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".nc")
    os.close(fd)
    try:
        result.to_netcdf(tmp_name, engine="h5netcdf")
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
    return path


def load(path: str | os.PathLike) -> xr.DataTree:
    """Read a result written by :func:`save` (fully loaded into memory, file closed)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no result at {path}")
    if path.suffix == ".zarr":
        dt = xr.open_datatree(path, engine="zarr")
    else:
        dt = xr.open_datatree(path, engine="h5netcdf")
    loaded = dt.load()
    dt.close()
    return loaded


def posterior_draws_flat(result: xr.DataTree, names: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """All posterior draws as an (n_draws, D) array with flat names like ``w[E,I]``.

    The order follows ``parameter_names`` recorded in the result (declaration order, C order).
    """
    post = result["posterior"].to_dataset()
    var_names = list(json.loads(result.attrs["priors_json"]).keys()) if "priors_json" in result.attrs else list(post.data_vars)
    cols, flat = [], []
    for v in var_names:
        da = post[v]
        other = [d for d in da.dims if d not in ("chain", "draw")]
        arr = da.transpose("chain", "draw", *other).values
        n = arr.shape[0] * arr.shape[1]
        cols.append(arr.reshape(n, -1))
        if other:
            labels = [list(map(str, da[d].values)) for d in other]
            idx = np.indices([len(l) for l in labels]).reshape(len(other), -1).T
            flat += [v + "[" + ",".join(labels[k][i] for k, i in enumerate(row)) + "]" for row in idx]
        else:
            flat.append(v)
    draws = np.concatenate(cols, axis=1)
    if names is not None:
        order = [flat.index(n) for n in names]
        draws, flat = draws[:, order], list(names)
    return draws, flat
