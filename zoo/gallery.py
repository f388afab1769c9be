"""The gallery: a Sphinx + sphinx-gallery site with one page per entry (DESIGN.md §8).

:func:`build` does three things, each of which only redoes what is missing:

1. **fits** every gallery route of every entry into the result cache
   ``$MECHZOO_CACHE/gallery/[fast/]<entry>/<method>.nc`` (a failing route is recorded in
   ``<method>.error.json`` beside it and shown on the page; it never stops the build);
2. **generates** the Sphinx sources: the landing page (a grid of entries filterable by tag and
   route), one page per entry written from its TOML (title, summary, references, the model's
   equations from the model module's docstring, parameter tables with units and priors, routes,
   a figure of simulated data, and per stored fit the posterior plots, ``mechzoo.diagnose`` table
   and cost), copies ``gallery/conf.py``, ``gallery/_static`` and the worked examples
   ``gallery/examples/plot_*.py``;
3. **runs** ``sphinx-build`` (sphinx-gallery executes the examples) into ``gallery/_build/html``.

What the gallery fits for an entry can be chosen in the entry's TOML::

    [checks.gallery]
    methods = ["npe"]                 # routes fitted (default: every route of the entry)
    npe = { num_simulations = 5000 }  # budget of a route in a full build (same as settings.npe)
    fast_methods = ["npe"]            # routes fitted by a fast build (default: methods)
    config = { duration_s = 5.0 }     # model-configuration overrides of the fits
    fast_config = { duration_s = 1.0 }
    settings = { npe = { num_simulations = 5000 } }       # budgets of a full build
    fast_settings = { npe = { num_simulations = 200 } }   # budgets of a fast build
    data = "default"                  # data recipe / observation the fits use
    simulate = { config = { record = true } }             # data figure (default: the fits' config)
    units = { voltage = "mV", time = "ms" }               # units of observations / coordinates

A fast build (``fast=True``) uses tiny budgets (:data:`FAST_SETTINGS`), keeps its results apart
(``gallery/fast/``) and marks every page "fast build: tiny budgets, not a converged posterior".

Which entries get fits at all can be narrowed for a cheap build (tests, CI, working on one page):
``build(fit_entries=[...])`` or the environment variable ``MECHZOO_GALLERY_FIT_ENTRIES`` (entry
ids separated by commas or spaces; ``none`` for no fits; unset, empty or ``all`` for every entry,
the default). Every entry still gets its page (model, parameter tables, simulated-data figure); an
entry left out is neither fitted nor are its stored fits shown, and its page says so instead of
showing posteriors::

    MECHZOO_GALLERY_FIT_ENTRIES=linear-gaussian mechzoo gallery build --fast
"""

from __future__ import annotations

import hashlib
import html
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["build", "cache_dir", "FAST_SETTINGS", "FIT_ENTRIES_ENV", "fit_entries_from_env", "gallery_fits", "ensure_fits",
           "generate_sources", "GALLERY_SOURCE"]

GALLERY_SOURCE = Path(os.environ.get("MECHZOO_GALLERY_SRC", Path(__file__).resolve().parent.parent / "gallery"))

FAST_SETTINGS: dict[str, dict[str, Any]] = {
    "map": {"restarts": 2},
    "nuts": {"draws": 100, "tune": 100, "chains": 2, "map_restarts": 2},
    "hmc": {"draws": 100, "tune": 100, "chains": 2, "map_restarts": 2},
    "npe": {"num_simulations": 300, "sbc_simulations": 0, "max_num_epochs": 20},
}
_PAGE_VERSION = 2  # bump when the generated figures or their reST change (the simulated-data section is cached)
FIT_ENTRIES_ENV = "MECHZOO_GALLERY_FIT_ENTRIES"
FAST_NOTE = "fast build: tiny budgets, not a converged posterior"
ROUTE_NAMES = {"map": "MAP (multi-start optimisation)", "nuts": "NUTS (PyMC)", "hmc": "HMC (PyMC)", "npe": "NPE (sbi)"}
_MATHJAX_DIRS = (Path("/usr/share/javascript/mathjax"), Path("/usr/share/nodejs/mathjax"))
_MATHJAX_FILES = (
    "MathJax.js",
    "config/TeX-AMS_SVG-full.js",
    "jax/output/SVG/config.js",
    "jax/output/SVG/jax.js",
    "jax/output/SVG/autoload",
    "jax/output/SVG/fonts/TeX",
    "jax/element",
    "jax/input/TeX",
    "extensions",
    "localization/en",
)


# ---------------------------------------------------------------------------------------- cache
def cache_dir(fast: bool = False) -> Path:
    """Folder of the gallery's stored results (``$MECHZOO_CACHE/gallery`` or ``.../gallery/fast``)."""
    from mechzoo.inference.cache import cache_dir as zoo_cache_dir

    root = zoo_cache_dir() / "gallery"
    return root / "fast" if fast else root


def _gallery_options(entry) -> dict[str, Any]:
    opts = entry.checks.get("gallery", {})
    if opts is False:
        return {"methods": [], "fast_methods": []}
    if not isinstance(opts, Mapping):
        raise ValueError(f"{entry.path or entry.id}: checks.gallery must be a table (got {opts!r})")
    return dict(opts)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


@dataclass
class GalleryFit:
    """One stored fit of the gallery: an entry, a route, its budget and where it is stored."""

    entry_id: str
    method: str
    fast: bool
    settings: dict[str, Any]
    config: dict[str, Any]
    data: Any
    seed: int = 0
    entry_hash: str = ""
    key: str = field(init=False)

    def __post_init__(self) -> None:
        blob = json.dumps(
            {"entry_hash": self.entry_hash, "method": self.method, "fast": self.fast, "settings": self.settings,
             "config": self.config, "data": self.data, "seed": self.seed},
            sort_keys=True, default=str,
        )
        self.key = hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def path(self) -> Path:
        return cache_dir(self.fast) / self.entry_id / f"{self.method}.nc"

    @property
    def error_path(self) -> Path:
        return self.path.with_suffix(".error.json")

    def stored(self):
        """The stored result if it was made with this fit's key, else None."""
        from mechzoo.inference.result import load

        if not self.path.exists():
            return None
        try:
            res = load(self.path)
        except Exception:  # a corrupt file is recomputed
            return None
        return res if res.attrs.get("gallery_key") == self.key else None

    def stored_error(self) -> str | None:
        if not self.error_path.exists():
            return None
        try:
            info = json.loads(self.error_path.read_text())
        except Exception:
            return None
        return info.get("error") if info.get("key") == self.key else None


def gallery_fits(entry, fast: bool) -> list[GalleryFit]:
    """The fits the gallery shows for ``entry`` (see the module docstring for the TOML options)."""
    from .registry import entry_hash, entry_paths

    opts = _gallery_options(entry)
    methods = list(opts.get("methods", entry.methods()))
    if fast:
        methods = list(opts.get("fast_methods", methods))
    config = _merge(opts.get("config", {}), opts.get("fast_config", {}) if fast else {})
    paths = entry_paths()
    ehash = entry_hash(paths[entry.id]) if entry.id in paths else ""
    out = []
    for m in methods:
        if m not in entry.methods():
            continue
        settings = {**opts.get(m, {}), **opts.get("settings", {}).get(m, {})}  # [checks.gallery] npe = {...} or settings.npe
        if fast:
            settings = {**settings, **FAST_SETTINGS.get(m, {}), **opts.get("fast_settings", {}).get(m, {})}
        out.append(GalleryFit(entry.id, m, fast, settings, config, opts.get("data"), 0, ehash))
    return out


def ensure_fits(entry_ids: Iterable[str], *, fast: bool, progress: bool = True, retry_errors: bool = False) -> dict[str, dict[str, Any]]:
    """Compute the missing gallery fits; returns ``{entry: {method: result DataTree | error str}}``."""
    import mechzoo
    from mechzoo.inference.result import save

    plan: list[GalleryFit] = []
    for eid in entry_ids:
        try:
            plan += gallery_fits(mechzoo.load(eid), fast)
        except Exception as exc:
            _log(progress, f"[gallery] {eid}: cannot plan fits: {exc}")
    out: dict[str, dict[str, Any]] = {eid: {} for eid in entry_ids}
    todo = []
    for f in plan:
        res = f.stored()
        if res is not None:
            out[f.entry_id][f.method] = res
            continue
        err = f.stored_error()
        if err is not None and not retry_errors:
            out[f.entry_id][f.method] = err
            continue
        todo.append(f)
    _log(progress, f"[gallery] {len(plan) - len(todo)} stored fits reused, {len(todo)} to compute ({'fast' if fast else 'full'} budgets) in {cache_dir(fast)}")
    for i, f in enumerate(todo, 1):
        _log(progress, f"[gallery] ({i}/{len(todo)}) fitting {f.entry_id} / {f.method} {json.dumps(f.settings, sort_keys=True)}")
        t0 = time.perf_counter()
        try:
            res = mechzoo.fit(f.entry_id, data=f.data, method=f.method, seed=f.seed, progress=progress, config=f.config or None, **f.settings)
            res.attrs["gallery_key"] = f.key
            res.attrs["gallery_fast"] = int(f.fast)
            save(res, f.path)
            if f.error_path.exists():
                f.error_path.unlink()
            out[f.entry_id][f.method] = res
            _log(progress, f"[gallery]     done in {time.perf_counter() - t0:.1f} s -> {f.path}")
        except Exception as exc:  # a failing route must not kill the build
            msg = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            tb = traceback.format_exc(limit=6)
            f.error_path.parent.mkdir(parents=True, exist_ok=True)
            f.error_path.write_text(json.dumps({"key": f.key, "error": msg, "traceback": tb, "settings": f.settings}, indent=1))
            out[f.entry_id][f.method] = msg
            _log(progress, f"[gallery]     FAILED after {time.perf_counter() - t0:.1f} s: {msg}")
    return out


def fit_entries_from_env() -> list[str] | None:
    """The entries to fit from ``$MECHZOO_GALLERY_FIT_ENTRIES``: None (every entry) when it is unset,
    empty or ``all``; ``[]`` for ``none``; else the ids it lists (separated by commas or spaces)."""
    raw = os.environ.get(FIT_ENTRIES_ENV, "").strip()
    if not raw or raw.lower() in ("all", "*"):
        return None
    if raw.lower() == "none":
        return []
    return [s for s in re.split(r"[,\s]+", raw) if s]


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- reST helpers
_INLINE = re.compile(r"([\\*`|_<>])")
_DOI = re.compile(r"(?:doi:\s*|https?://(?:dx\.)?doi\.org/)?(10\.\d{4,9}/[^\s,;]+)", re.IGNORECASE)
_URL = re.compile(r"https?://[^\s,;]+")


def esc(text: Any) -> str:
    """Escape free text for reST inline use."""
    return _INLINE.sub(r"\\\1", str(text)).replace("\n", " ")


def lit(text: Any) -> str:
    """Inline literal (safe for any text without a backtick)."""
    s = str(text).replace("`", "'").replace("\n", " ")
    return f"``{s}``" if s.strip() else ""


def heading(text: str, char: str) -> str:
    t = esc(text)
    return f"{t}\n{char * (len(t) + 4)}\n"


def fmt_number(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}".replace(",", " ")
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not np.isfinite(v):
            return "–" if np.isnan(v) else str(v)
        return f"{v:.4g}"
    return str(v)


def fmt_value(v: Any, limit: int = 80) -> str:
    s = json.dumps(v, default=lambda o: np.asarray(o).tolist() if hasattr(o, "__array__") else str(o), ensure_ascii=False)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def list_table(header: list[str], rows: list[list[str]], *, cls: str = "", widths: str = "auto", title: str = "") -> str:
    """A ``list-table`` directive; cells are reST text (already escaped)."""
    out = [f".. list-table::{(' ' + esc(title)) if title else ''}", "   :header-rows: 1", f"   :widths: {widths}"]
    if cls:
        out.append(f"   :class: {cls}")
    out.append("")
    for row in [header, *rows]:
        for j, cell in enumerate(row):
            cell = str(cell).strip() or " "
            out.append(("   * - " if j == 0 else "     - ") + cell)
    return "\n".join(out) + "\n"


def reference_links(ref: str) -> str:
    """A reference as reST, with DOIs and URLs made into links."""
    m = _DOI.search(ref)
    if m:
        doi = m.group(1).rstrip(".)]")
        link = f"`doi:{doi} <https://doi.org/{doi}>`__"
        rest = ref.replace(m.group(0), "").strip(" ,;.:()[]")
        return f"{esc(rest)}, {link}" if rest else link
    u = _URL.search(ref)
    if u:
        url = u.group(0).rstrip(".)]")
        return esc(ref) + f" (`link <{url}>`__)"
    return esc(ref)


def docstring_rst(doc: str | None) -> str:
    """A model docstring as reST that can sit inside a page: numpydoc section titles become rubrics."""
    if not doc:
        return "*(the model module has no docstring)*\n"
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        stripped = nxt.strip()
        if (
            line.strip()
            and not line.startswith(" ")
            and stripped
            and len(set(stripped)) == 1
            and stripped[0] in "-=~^\"'`#*+"
            and len(stripped) >= len(line.strip())
            and nxt == stripped
        ):
            out += [f".. rubric:: {line.strip()}", ""]
            i += 2
            continue
        out.append(line)
        i += 1
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------- units
_NOT_UNITS = {"in", "of", "the", "and", "or", "per", "with", "for", "when", "as", "at", "on", "to", "if", "is", "see", "after", "before", "array", "float64", "int64", "bool"}


def _unit_from_doc(name: str, *docs: str | None) -> str | None:
    """A unit stated next to ``name`` in a docstring: ``name ... (mV)``, ``name`` (B, T) mV, (name in ms)."""
    unit = r"([A-Za-zµμΩ%][A-Za-z0-9µμΩ%/²³^·\-]{0,11})"
    n = re.escape(name)
    for doc in docs:
        if not doc:
            continue
        for pat in (
            rf"\b{n}s?\b[^;\n]{{0,80}}?\({unit}\)",
            rf"``{n}``\s*\([^()\n]*\)\s+{unit}(?=[\s,;.]|$)",
            rf"\(\s*{n}\s+in\s+{unit}\b",
        ):
            for m in re.finditer(pat, doc):
                if m.group(1).lower() not in _NOT_UNITS and not re.fullmatch(r"[A-Z]", m.group(1)):
                    return m.group(1)
    return None


def resolve_unit(name: str, entry, ds=None, *, coordinate: bool = False) -> str:
    """Unit of an observation variable or coordinate, from (in order) the data's ``units``
    attribute, the entry's ``checks.gallery.units``, the model module's ``OBSERVATION_UNITS`` /
    ``COORDINATE_UNITS`` / ``FEATURE_UNITS``, its docstrings; integer ranges are "index"."""
    if ds is not None and name in ds.variables:
        u = ds[name].attrs.get("units") or ds[name].attrs.get("unit")
        if u:
            return str(u)
    opts = entry.checks.get("gallery", {}) if isinstance(entry.checks.get("gallery", {}), Mapping) else {}
    if name in opts.get("units", {}):
        return str(opts["units"][name])
    module = entry.model_module()
    for attr in ("COORDINATE_UNITS", "OBSERVATION_UNITS", "FEATURE_UNITS") if coordinate else ("OBSERVATION_UNITS", "FEATURE_UNITS"):
        table = getattr(module, attr, None)
        if isinstance(table, Mapping) and name in table:
            return str(table[name])
    if coordinate and ds is not None and name in ds.coords:
        vals = np.asarray(ds[name].values)
        if vals.dtype.kind in "iu" and np.array_equal(vals, np.arange(vals.size)):
            return "index"
    docs = [getattr(getattr(module, f, None), "__doc__", None) for f in (("coords",) if coordinate else ("simulate", "observation_dims"))]
    u = _unit_from_doc(name, *docs)
    if u:
        return u
    if re.search(r"\bdimensionless\b", module.__doc__ or "", re.IGNORECASE):
        return "1"
    if not coordinate and ds is not None and name in ds.data_vars:
        kind = ds[name].dtype.kind
        if kind == "b":
            return "true/false"
        if kind in "iu" or re.match(r"(num|n)_", name):
            return "count"
    if coordinate and ds is not None and name in ds.coords and ds[name].dtype.kind in "USO":
        return "label"
    return "unit not declared"


def axis_label(name: str, unit: str) -> str:
    return f"{name} [{unit}]"


# ---------------------------------------------------------------------------------- figures
def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    return fig


def plot_simulation(entry, ds) -> tuple[Any, str]:
    """Figure of one simulation (``simulation = 0``) of every observation variable, and its caption."""
    params = {p.name for p in entry.parameters}
    obs = [v for v in ds.data_vars if v not in params and v != "features" and ds[v].ndim >= 2]
    obs.sort(key=lambda v: (0 if "time" in ds[v].dims else 1, -ds[v].size))
    shown = obs[:4]
    use_features = not shown and "features" in ds
    if use_features:
        shown = ["features"]
    if not shown:
        raise ValueError("the simulation returned no array observation to plot")
    fig = _figure(7.5, 2.6 * len(shown))
    axes = fig.subplots(len(shown), 1, squeeze=False)[:, 0]
    parts = []
    for ax, var in zip(axes, shown):
        da = ds[var].isel(simulation=0)
        vunit = resolve_unit(var, entry, ds)
        if da.ndim == 1:
            dim = da.dims[0]
            x = da[dim].values if dim in da.coords else np.arange(da.sizes[dim])
            if np.asarray(x).dtype.kind in "USO":
                ax.bar(np.arange(len(x)), da.values, color="C0")
                ax.set_xticks(np.arange(len(x)), [str(s) for s in x], rotation=60, ha="right", fontsize=7)
                ax.set_xlabel(axis_label(dim, "label"))
            else:
                style = dict(marker="o", ms=3, lw=1) if da.size <= 60 else dict(lw=0.8)
                ax.plot(x, da.values, **style)
                ax.set_xlabel(axis_label(dim, resolve_unit(dim, entry, ds, coordinate=True)))
            ax.set_ylabel(axis_label(var, vunit))
            parts.append(f"{var} against {dim}")
        else:
            if da.ndim > 2:
                da = da.isel({d: 0 for d in da.dims[2:]})
            long_dim, short_dim = sorted(da.dims, key=lambda d: -da.sizes[d])
            if "time" in da.dims:
                long_dim, short_dim = "time", [d for d in da.dims if d != "time"][0]
            da = da.transpose(long_dim, short_dim)
            x = da[long_dim].values if long_dim in da.coords else np.arange(da.sizes[long_dim])
            labels = [str(s) for s in (da[short_dim].values if short_dim in da.coords else range(da.sizes[short_dim]))]
            xunit = resolve_unit(long_dim, entry, ds, coordinate=True)
            if da.sizes[short_dim] <= 8 and np.asarray(x).dtype.kind not in "USO":
                for j, lab in enumerate(labels):
                    ax.plot(x, da.values[:, j], lw=0.8, label=f"{short_dim} {lab}")
                ax.legend(fontsize=7, loc="upper right", ncols=min(4, len(labels)))
                ax.set_xlabel(axis_label(long_dim, xunit))
                ax.set_ylabel(axis_label(var, vunit))
                parts.append(f"{var} against {long_dim}, one line per {short_dim}")
            else:
                vals = np.asarray(da.values, dtype=float).T
                im = ax.imshow(vals, aspect="auto", interpolation="nearest", origin="lower")
                cb = fig.colorbar(im, ax=ax)
                cb.set_label(axis_label(var, vunit))
                xcat = long_dim in da.coords and np.asarray(x).dtype.kind in "USO"
                if xcat and len(x) <= 30:
                    ax.set_xticks(np.arange(len(x)), [str(v) for v in x], fontsize=7, rotation=30 if len(x) > 6 else 0)
                    ax.set_xlabel(axis_label(long_dim, "label"))
                elif long_dim in da.coords and not xcat and len(x) > 1:
                    ticks = np.linspace(0, len(x) - 1, 6).round().astype(int)
                    ax.set_xticks(ticks, [f"{x[t]:.4g}" for t in ticks])
                    ax.set_xlabel(axis_label(long_dim, xunit))
                else:
                    ax.set_xlabel(axis_label(long_dim, "index"))
                ax.set_ylabel(axis_label(short_dim, resolve_unit(short_dim, entry, ds, coordinate=True)))
                if len(labels) <= 20:
                    ax.set_yticks(np.arange(len(labels)), labels, fontsize=7)
                parts.append(f"{var} as an image over ({long_dim}, {short_dim})")
        ax.set_title(var, fontsize=9, loc="left")
    caption = (
        f"Simulated data of {entry.title} at the reference parameters (one simulation, seed 0): "
        + "; ".join(parts)
        + "."
        + ("" if len(obs) <= 4 else f" {len(obs) - 4} further observation variable(s) not shown.")
    )
    return fig, caption


def _flat_reference(entry) -> dict[str, float]:
    out = {}
    for p in entry.parameters:
        if p.reference is None:
            continue
        ref = np.asarray(p.reference, dtype=float)
        if not p.dims:
            out[p.name] = float(ref)
            continue
        labels = [list(map(str, entry.dims[d])) for d in p.dims]
        for idx in np.ndindex(ref.shape):
            out[p.name + "[" + ",".join(labels[k][i] for k, i in enumerate(idx)) + "]"] = float(ref[idx])
    return out


def _flat_units(entry, names: list[str]) -> dict[str, str]:
    units = {p.name: p.unit for p in entry.parameters}
    return {n: units.get(n.split("[")[0], "") for n in names}


def _point_estimates(result) -> np.ndarray | None:
    """MAP: the optima of every converged restart, (R, D) flat, when stored."""
    if "map_restarts" not in result.children:
        return None
    mr = result["map_restarts"].to_dataset()
    if "optimum" not in mr:
        return None
    opt = np.asarray(mr["optimum"].values, dtype=float)
    return opt.reshape(opt.shape[0], -1)


def plot_posterior(entry, result, method: str) -> tuple[Any, str]:
    """Pair plot (≤ 6 parameters) or marginals of a route's posterior, reference values marked."""
    from mechzoo.inference.result import posterior_draws_flat

    draws, names = posterior_draws_flat(result)
    ref = _flat_reference(entry)
    units = _flat_units(entry, names)
    d = len(names)
    label = ROUTE_NAMES.get(method, method)
    if draws.shape[0] < 5:  # a point estimate (MAP)
        restarts = _point_estimates(result)
        ncol = min(4, d)
        nrow = int(np.ceil(d / ncol))
        fig = _figure(2.4 * ncol + 0.6, 1.6 * nrow + 0.4)
        axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
        for j, n in enumerate(names):
            ax = axes[j]
            if restarts is not None and restarts.shape[1] == d:
                ax.plot(restarts[:, j], np.zeros(restarts.shape[0]) + 0.5, "|", ms=14, color="0.6", label="restart optima")
            ax.plot(draws[:, j], [0.5] * draws.shape[0], "o", color="C0", label="estimate")
            if n in ref:
                ax.axvline(ref[n], color="C3", ls="--", lw=1.2, label="reference")
            ax.set_yticks([])
            ax.set_ylim(0, 1)
            ax.set_xlabel(axis_label(n, units[n]), fontsize=8)
        for ax in axes[d:]:
            ax.set_visible(False)
        axes[0].legend(fontsize=6, loc="upper left")
        caption = (f"{label} point estimate of each parameter (blue), the optima of the restarts (grey ticks) and the "
                   "reference value (red dashed); the horizontal axis of each panel is the parameter in its unit.")
        return fig, caption
    sub = draws[np.random.default_rng(0).choice(draws.shape[0], min(draws.shape[0], 2000), replace=False)]
    if d <= 6:
        fig = _figure(1.9 * d + 0.8, 1.9 * d + 0.6)
        axes = fig.subplots(d, d, squeeze=False)
        for i in range(d):
            for j in range(d):
                ax = axes[i, j]
                if j > i:
                    ax.set_visible(False)
                    continue
                if i == j:
                    ax.hist(draws[:, j], bins=40, density=True, color="C0", alpha=0.7)
                    if names[j] in ref:
                        ax.axvline(ref[names[j]], color="C3", ls="--", lw=1.2)
                    ax.set_yticks([])
                else:
                    ax.plot(sub[:, j], sub[:, i], ".", ms=1.5, alpha=0.35, color="C0")
                    if names[i] in ref and names[j] in ref:
                        ax.plot(ref[names[j]], ref[names[i]], "*", color="C3", ms=9, mec="k", mew=0.4)
                    ax.set_ylabel(axis_label(names[i], units[names[i]]), fontsize=7) if j == 0 else ax.set_yticklabels([])
                if i == d - 1:
                    ax.set_xlabel(axis_label(names[j], units[names[j]]), fontsize=7)
                else:
                    ax.set_xticklabels([])
                ax.tick_params(labelsize=6)
        caption = (f"{label} posterior: marginal histograms (diagonal, density in 1/unit of the parameter) and pairwise "
                   f"scatter of {len(sub)} draws (below the diagonal); reference values in red (dashed line / star). "
                   "Axes show each parameter in its unit.")
        return fig, caption
    ncol = 4
    nrow = int(np.ceil(d / ncol))
    fig = _figure(10, 1.7 * nrow + 0.4)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for j, n in enumerate(names):
        ax = axes[j]
        ax.hist(draws[:, j], bins=40, density=True, color="C0", alpha=0.7)
        if n in ref:
            ax.axvline(ref[n], color="C3", ls="--", lw=1.2)
        ax.set_yticks([])
        ax.set_xlabel(axis_label(n, units[n]), fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[d:]:
        ax.set_visible(False)
    caption = (f"{label} posterior marginals of the {d} parameters (histograms, density in 1/unit of the parameter); "
               "reference values as red dashed lines. Axes show each parameter in its unit.")
    return fig, caption


def plot_routes_overlay(entry, results: Mapping[str, Any]) -> tuple[Any, str] | None:
    """Marginals of every sampled route of an entry overlaid, reference values marked."""
    from mechzoo.inference.result import posterior_draws_flat

    sampled = {}
    names = None
    for m, res in results.items():
        if isinstance(res, str):
            continue
        draws, n = posterior_draws_flat(res, names)
        names = names or n
        sampled[m] = draws
    if len(sampled) < 2 or names is None:
        return None
    ref = _flat_reference(entry)
    units = _flat_units(entry, names)
    d = len(names)
    ncol = min(4, d)
    nrow = int(np.ceil(d / ncol))
    fig = _figure(2.5 * ncol + 0.5, 1.8 * nrow + 0.6)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for j, n in enumerate(names):
        ax = axes[j]
        for k, (m, draws) in enumerate(sampled.items()):
            if draws.shape[0] >= 5:
                ax.hist(draws[:, j], bins=30, density=True, histtype="step", lw=1.2, color=f"C{k}", label=m)
            else:
                ax.axvline(draws[0, j], color=f"C{k}", lw=1.5, label=m)
        if n in ref:
            ax.axvline(ref[n], color="k", ls="--", lw=1, label="reference")
        ax.set_yticks([])
        ax.set_xlabel(axis_label(n, units[n]), fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[d:]:
        ax.set_visible(False)
    axes[0].legend(fontsize=6)
    caption = ("Posterior marginals of every route overlaid (step histograms, density in 1/unit of the parameter; "
               "point estimates as vertical lines) with the reference values (black dashed). Axes show each parameter "
               "in its unit.")
    return fig, caption


def _save(fig, path: Path, dpi: int = 110) -> None:
    """Save a figure as PNG, leaving the file untouched when the bytes are the same."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png", metadata={"Software": None})
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_bytes() == data:
        return
    tmp = path.with_name(".tmp-" + path.name)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _placeholder(path: Path, text: str) -> None:
    fig = _figure(4, 2.4)
    ax = fig.subplots()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9)
    ax.set_axis_off()
    _save(fig, path, dpi=60)


def _write(path: Path, text: str) -> None:
    """Write only if changed (keeps Sphinx's incremental build incremental)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return
    path.write_text(text)


# ------------------------------------------------------------------------------- entry page
def _prior_text(p) -> str:
    try:
        return p.prior_spec.describe()
    except Exception:
        return fmt_value(p.prior)


def _table_diagnostics(table, label: str = "parameter") -> str:
    cols = list(table.columns)
    rows = [[lit(idx)] + [esc(fmt_number(table.loc[idx, c])) for c in cols] for idx in table.index]
    return list_table([label, *[esc(c) for c in cols]], rows, cls="mz-diagnostics")


_COST_KEYS = ("wall_time_s", "n_simulations", "n_loglik_evaluations", "n_gradient_evaluations")


def _result_block(entry, m: str, res, figdir: Path, stem: str) -> list[str]:
    """Posterior figure (``figures/<stem>-posterior.png``) and ``mechzoo.diagnose`` tables of one
    result of route ``m``, as reST lines; a failure in either is shown on the page, not raised."""
    import mechzoo

    L: list[str] = []
    try:
        fig, caption = plot_posterior(entry, res, m)
        _save(fig, figdir / f"{stem}-posterior.png")
        L += [f".. figure:: figures/{stem}-posterior.png", f"   :alt: {m} posterior of {esc(entry.title)}", "   :class: mz-figure", "   :figclass: mz-figure", "",
              f"   {esc(caption)}", ""]
    except Exception as exc:
        L += [".. error::", "", f"   Plotting the posterior failed: {lit(_short(exc))}", ""]
    try:
        table = mechzoo.diagnose(res)
        L += [".. rubric:: Diagnostics from mechzoo.diagnose", "", _table_diagnostics(table), ""]
        info = {k: v for k, v in table.attrs.items() if k not in (*_COST_KEYS, "route", "entry_id") and v is not None}
        nested = {k: v for k, v in info.items() if isinstance(v, dict) and v and all(isinstance(r, dict) for r in v.values())}
        info = {k: v for k, v in info.items() if k not in nested}
        if info:
            L += [f"- {lit(k)}: {lit(fmt_value(v))}" for k, v in info.items()] + [""]
        for name, rows in nested.items():  # e.g. the posterior predictive check, one row per feature
            import pandas as pd

            L += [f".. rubric:: {esc(name)}", "", _table_diagnostics(pd.DataFrame.from_dict(rows, orient="index"), label="row"), ""]
    except Exception as exc:
        L += [".. error::", "", f"   ``mechzoo.diagnose`` failed: {lit(_short(exc))}", ""]
    return L


def _reference_section(entry, figdir: Path) -> list[str]:
    """The "Reference results" section: every result shipped for the entry
    (:func:`mechzoo.reference_results`), with its posterior, diagnostics and, where the result has
    a ``high_probability_path`` group, the path figure (:func:`plot_high_probability_path`)."""
    import mechzoo

    eid = entry.id
    refs = mechzoo.reference_results(eid)
    if not refs:
        return []
    L = [heading("Reference results", "-"), "",
         "Fits run once outside CI with their full budgets and shipped with the package; load one with "
         f"``mechzoo.reference_result({eid!r}, method=...)``. Their settings, seeds and costs are in the result's attributes.", ""]
    for m, file in refs.items():
        L += [heading(f"{ROUTE_NAMES.get(m, m)} (reference)", "~"), ""]
        try:
            res = mechzoo.reference_result(eid, m)
        except Exception as exc:
            L += [".. error::", "", f"   Loading the reference result ``{file.name}`` failed: {lit(_short(exc))}", ""]
            continue
        L += _result_block(entry, m, res, figdir, f"{eid}-reference-{m}")
        if "high_probability_path" in res.children:
            try:
                L += _path_block(entry, res, figdir / f"{eid}-reference-{m}-path.png")
            except Exception as exc:
                L += [".. error::", "", f"   Plotting the high-probability path failed: {lit(_short(exc))}", ""]
    return L


def _path_block(entry, res, file: Path) -> list[str]:
    from mechzoo.inference.analysis import plot_high_probability_path

    path = res["high_probability_path"].to_dataset()
    observed = None
    if "posterior_predictive" in res.children and "observed_features" in res["posterior_predictive"].to_dataset():
        observed = res["posterior_predictive"].to_dataset()["observed_features"].values
    fig = plot_high_probability_path(path, observed=observed)
    _save(fig, file)
    n = path.sizes["point"]
    valid = int(np.isfinite(path["features"].values).all(axis=1).sum()) if "features" in path else None
    caption = (f"High-probability path between two posterior draws ({n} points; string method, "
               "``mechzoo.inference.analysis.high_probability_path``): log posterior density along the path and the straight line, "
               "the parameters that differ most between the end points (relative to their start values), and "
               + ("the simulated features relative to the observation" if observed is not None else "the simulated features")
               + (f"; {valid} of {n} points on the path give every feature." if valid is not None else "."))
    return [".. rubric:: High-probability path", "", f".. figure:: figures/{file.name}", f"   :alt: high-probability path of {esc(entry.title)}",
            "   :class: mz-figure", "   :figclass: mz-figure", "", f"   {esc(caption)}", ""]


def entry_page(entry, fits: Mapping[str, Any], *, fast: bool, figdir: Path, thumbdir: Path, fitted: bool = True) -> str:
    """The reST source of an entry's page; writes its figures into ``figdir`` and its thumbnail.
    ``fitted=False``: this build left the entry's fits out (``fit_entries``); the page says so."""
    import mechzoo

    eid = entry.id
    opts = _gallery_options(entry)
    L: list[str] = [f".. _entry-{eid}:", "", heading(entry.title, "="), ""]
    L += [".. container:: mz-entry-meta", "", f"   Entry ``{eid}`` · model ``mechzoo.models.{entry.model.module}`` · added {entry.added}", ""]
    if fast:
        L += [".. warning::", "   :class: mz-fast-note", "", f"   {FAST_NOTE.capitalize()} — the posteriors below were computed "
              "with tiny budgets to test the build; do not read them as results.", ""]
    L += [esc(entry.summary), ""]
    L += [f"**Tags:** {', '.join(lit(t) for t in entry.tags) or '–'}    **Routes:** "
          + ", ".join(lit(m) + (" (default)" if m == entry.default_method() else "") for m in entry.methods()), ""]
    if entry.references:
        L += [heading("References", "-"), ""]
        L += [f"- {reference_links(r)}" for r in entry.references] + [""]

    # model
    L += [heading("Model", "-"), ""]
    try:
        doc = entry.model_module().__doc__
    except Exception as exc:
        doc = f"(cannot import the model module: {exc})"
    L += [".. container:: mz-model-doc", "", textwrap.indent(docstring_rst(doc), "   "), ""]
    if entry.model.config:
        L += [".. rubric:: Model configuration of the entry", ""]
        L += [list_table(["key", "value"], [[lit(k), lit(fmt_value(v))] for k, v in entry.model.config.items()], cls="mz-config"), ""]

    # parameters
    L += [heading("Parameters", "-"), ""]
    rows = []
    for p in entry.parameters:
        dims = ", ".join(f"{d} = {list(entry.dims[d])}" for d in p.dims) or "scalar"
        rows.append([lit(p.name), esc(dims), lit(p.unit), lit(_prior_text(p)), lit(fmt_value(p.reference)) if p.reference is not None else "–", esc(p.meaning)])
    L += [list_table(["name", "dims", "unit", "prior", "reference value", "meaning"], rows, cls="mz-parameters", title="Free parameters"), ""]
    if entry.fixed:
        rows = [[lit(k), lit(fmt_value(f.value)), lit(f.unit) or "–", esc(f.meaning)] for k, f in entry.fixed.items()]
        L += [list_table(["name", "value", "unit", "meaning"], rows, cls="mz-fixed", title="Fixed parameters"), ""]

    # routes
    L += [heading("Routes", "-"), ""]
    kinds = [k for k, on in (("likelihood", entry.routes.likelihood), ("simulator", entry.routes.simulator)) if on]
    L += [f"The entry has a {' and a '.join(kinds)}; its routes and their default settings:", ""]
    rows = [[lit(m) + (" (default)" if m == entry.default_method() else ""), esc(ROUTE_NAMES.get(m, m)),
             lit(fmt_value(entry.route_settings(m), 200)) if entry.route_settings(m) else "package defaults"] for m in entry.methods()]
    L += [list_table(["route", "method", "settings"], rows, cls="mz-routes"), ""]
    L += ["Fit it in one line, e.g.::", "", f"    mechzoo.fit({eid!r}, method={entry.default_method()!r})", ""]
    if entry.data:
        L += [".. rubric:: Data recipes", ""]
        L += [f"- ``{k}``: {esc(r.description or r.generator)}" for k, r in entry.data.items()] + [""]

    # simulated data
    L += [heading("Simulated data", "-"), ""]
    sim_opts = dict(opts.get("simulate", {}))
    sim_config = _merge(opts.get("config", {}), sim_opts.get("config", {}))
    L += [simulation_section(entry, sim_opts.get("data", "default"), sim_config, figdir=figdir, thumbdir=thumbdir), ""]

    L += _reference_section(entry, figdir)

    # posteriors
    L += [heading("Posteriors", "-"), ""]
    if not fitted:
        L += [".. note::", "   :class: mz-no-fits", "",
              f"   This build of the gallery fitted only some entries (``fit_entries`` / ``{FIT_ENTRIES_ENV}``) and left "
              "this one out: no posterior is shown.", ""]
    elif not fits:
        L += ["No route is fitted for the gallery (``checks.gallery`` of the entry).", ""]
    else:
        L += [f"Stored fits (seed 0) of the entry's default data: {', '.join(lit(m) for m in fits)}"
              + (" — *" + FAST_NOTE + "*." if fast else "."), ""]
        cost_rows = []
        for m, res in fits.items():
            L += [heading(ROUTE_NAMES.get(m, m), "~"), ""]
            if isinstance(res, str):
                L += [".. error::", "", f"   The route ``{m}`` failed for this entry:", "", "   .. code-block:: text", "",
                      textwrap.indent(res, "      "), ""]
                cost_rows.append([lit(m), "failed", "–", "–", "–", "–"])
                continue
            L += _result_block(entry, m, res, figdir, f"{eid}-{m}")
            from mechzoo.inference.result import result_attrs

            a = result_attrs(res)
            cost_rows.append([lit(m), esc(fmt_number(a.get("wall_time_s"))), esc(fmt_number(a.get("n_simulations"))),
                              esc(fmt_number(a.get("n_loglik_evaluations"))), esc(fmt_number(a.get("n_gradient_evaluations"))),
                              lit(fmt_value(a.get("settings", {}), 160))])
        overlay = None
        try:
            overlay = plot_routes_overlay(entry, fits)
        except Exception:
            overlay = None
        if overlay is not None:
            fig, caption = overlay
            _save(fig, figdir / f"{eid}-routes.png")
            L += [heading("Routes compared", "~"), "", f".. figure:: figures/{eid}-routes.png", f"   :alt: routes compared for {esc(entry.title)}",
                  "   :class: mz-figure", "   :figclass: mz-figure", "", f"   {esc(caption)}", ""]
        L += [heading("Cost", "~"), ""]
        L += [list_table(["route", "wall time [s]", "simulations", "log-likelihood evaluations", "gradient evaluations", "settings"], cost_rows, cls="mz-cost"), ""]
    return "\n".join(L) + "\n"


def simulation_section(entry, data: str, config: Mapping[str, Any], *, figdir: Path, thumbdir: Path) -> str:
    """The "Simulated data" section: figure, caption and features of one simulation at the
    reference parameters. Cached beside the figure, keyed by the entry file and configuration,
    so that a rebuild does not simulate again."""
    import mechzoo
    from mechzoo import __version__

    from .registry import entry_hash, entry_paths

    eid = entry.id
    paths = entry_paths()
    key = hashlib.sha256(json.dumps([entry_hash(paths[eid]) if eid in paths else "", data, config, __version__, _PAGE_VERSION],
                                    sort_keys=True, default=str).encode()).hexdigest()[:16]
    cache = figdir / f"{eid}-simulated.json"
    png, thumb = figdir / f"{eid}-simulated.png", thumbdir / f"{eid}.png"
    if cache.exists() and png.exists() and thumb.exists():
        try:
            stored = json.loads(cache.read_text())
            if stored.get("key") == key:
                return stored["rst"]
        except Exception:
            pass
    L: list[str] = []
    try:
        ds = mechzoo.simulate(eid, n=1, seed=0, data=data, **config)
        fig, caption = plot_simulation(entry, ds)
        _save(fig, png)
        _save(fig, thumb, dpi=45)
        L += [f".. figure:: figures/{eid}-simulated.png", f"   :alt: simulated data of {esc(entry.title)}", "   :class: mz-figure", "   :figclass: mz-figure", "", f"   {esc(caption)}", ""]
        if "features" in ds:
            names = [str(n) for n in ds["feature"].values]
            vals = ds["features"].isel(simulation=0).values
            units = [resolve_unit(n, entry, ds) for n in names]
            rows = [[lit(n), esc(fmt_number(v)), lit(u) if u != "unit not declared" else "–"] for n, v, u in zip(names, vals, units)]
            L += [list_table(["feature", "value", "unit"], rows, cls="mz-features", title="Summary features of this simulation"), ""]
        rst = "\n".join(L)
        _write(cache, json.dumps({"key": key, "rst": rst}))
        return rst
    except Exception as exc:
        _placeholder(thumb, f"{entry.title}\n(no simulation figure)")
        return "\n".join([".. error::", "", f"   The simulation at the reference parameters failed: {lit(_short(exc))}", ""])


def _short(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip().replace("\n", " ")[:500]


# -------------------------------------------------------------------------------- landing page
def landing_page(cards: list[dict[str, Any]], *, fast: bool) -> str:
    tags = sorted({t for c in cards for t in c["tags"]})
    routes = [m for m in ("map", "nuts", "hmc", "npe") if any(m in c["routes"] for c in cards)]
    opt = lambda vals: "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in vals)  # noqa: E731
    H = ['<div class="mz-filters" id="mz-filters">',
         '<label>Tag <select id="mz-filter-tag"><option value="">all tags</option>' + opt(tags) + "</select></label>",
         '<label>Route <select id="mz-filter-route"><option value="">all routes</option>' + opt(routes) + "</select></label>",
         '<label>Search <input id="mz-filter-text" type="search" placeholder="title or id"></label>',
         f'<span class="mz-count" id="mz-count">{len(cards)} entries</span>', "</div>", '<div class="mz-grid" id="mz-grid">']
    for c in cards:
        chips = "".join(f'<span class="mz-chip mz-tag" data-tag="{html.escape(t)}">{html.escape(t)}</span>' for t in c["tags"])
        rchips = "".join(f'<span class="mz-chip mz-route">{html.escape(m)}</span>' for m in c["routes"])
        H.append(
            f'<a class="mz-card" href="entries/{c["id"]}.html" data-id="{c["id"]}" data-tags="{html.escape(" ".join(c["tags"]))}" '
            f'data-routes="{" ".join(c["routes"])}" data-title="{html.escape(c["title"].lower())}">'
            f'<img src="_static/thumbs/{c["id"]}.png" alt="simulated data of {html.escape(c["title"])}">'
            f'<span class="mz-card-title">{html.escape(c["title"])}</span><span class="mz-chips">{chips}</span>'
            f'<span class="mz-chips">{rchips}</span></a>'
        )
    H.append("</div>")
    L = [".. _gallery-home:", "", heading("mechzoo gallery", "="), "",
         "Mechanistic models of neural dynamics with Bayesian inference built in. Each card is one entry of the zoo, "
         "generated from its TOML: the model's equations, parameters and priors, a simulated trace and the posterior "
         "of every route. Filter by tag or route; click a card to open the entry.", ""]
    if fast:
        L += [".. warning::", "   :class: mz-fast-note", "", f"   {FAST_NOTE.capitalize()}.", ""]
    L += [".. raw:: html", "", textwrap.indent("\n".join(H), "   "), ""]
    L += ["Worked examples: :doc:`auto_examples/index`. All entries as a list: :doc:`entries/index`.", ""]
    L += [".. toctree::", "   :hidden:", "", "   entries/index", "   auto_examples/index", ""]
    return "\n".join(L)


def entries_index(cards: list[dict[str, Any]]) -> str:
    L = [heading("Entries", "="), ""]
    rows = [[f":doc:`{esc(c['title'])} <{c['id']}>`", lit(c["id"]), esc(", ".join(c["tags"])), esc(", ".join(c["routes"]))] for c in cards]
    L += [list_table(["entry", "id", "tags", "routes"], rows, cls="mz-entries"), ""]
    L += [".. toctree::", "   :hidden:", "", *[f"   {c['id']}" for c in cards], ""]
    return "\n".join(L)


# ------------------------------------------------------------------------------------ build
def _vendor_mathjax(static: Path) -> bool:
    """Copy a local MathJax 2 (Debian ``libjs-mathjax``) into the site so math renders offline."""
    src = os.environ.get("MECHZOO_MATHJAX")
    cands = [Path(src)] if src else list(_MATHJAX_DIRS)
    for root in cands:
        if not (root / "MathJax.js").exists() or not (root / "config/TeX-AMS_SVG-full.js").exists():
            continue
        dest = static / "mathjax"
        if (dest / "MathJax.js").exists():
            return True
        for rel in _MATHJAX_FILES:
            s, d = root / rel, dest / rel
            if s.is_dir():
                shutil.copytree(s, d, dirs_exist_ok=True)
            elif s.exists():
                d.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(s, d)
        return True
    return False


def generate_sources(src: Path, fits: Mapping[str, Mapping[str, Any]], *, fast: bool, entry_ids: list[str], progress: bool = True,
                     fit_entries: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Write the Sphinx source tree into ``src``; returns the landing cards (one per entry).
    ``fit_entries``: the entries this build fitted (None: all); the others' pages show no posterior."""
    fitted_ids = None if fit_entries is None else set(fit_entries)
    import mechzoo

    src.mkdir(parents=True, exist_ok=True)
    for name in ("conf.py",):
        _write(src / name, (GALLERY_SOURCE / name).read_text())
    for folder in ("_static", "examples"):
        if (GALLERY_SOURCE / folder).is_dir():
            for f in (GALLERY_SOURCE / folder).rglob("*"):
                if f.is_file() and "__pycache__" not in f.parts:
                    rel = f.relative_to(GALLERY_SOURCE)
                    _write(src / rel, f.read_text())
    mathjax = _vendor_mathjax(src / "_static")
    _write(src / "_gallery_build.json", json.dumps({"fast": fast, "mathjax_local": mathjax}, indent=1))
    # entries no longer registered: remove their pages
    edir = src / "entries"
    edir.mkdir(exist_ok=True)
    for old in edir.glob("*.rst"):
        if old.stem not in entry_ids and old.stem != "index":
            old.unlink()
    cards = []
    for eid in entry_ids:
        try:
            entry = mechzoo.load(eid)
        except Exception as exc:
            _log(progress, f"[gallery] {eid}: invalid entry, page shows the error: {exc}")
            _placeholder(src / "_static" / "thumbs" / f"{eid}.png", f"{eid}\n(invalid entry)")
            _write(edir / f"{eid}.rst", heading(eid, "=") + "\n.. error::\n\n   The entry is invalid:\n\n   .. code-block:: text\n\n"
                   + textwrap.indent(str(exc), "      ") + "\n")
            cards.append({"id": eid, "title": eid, "tags": ["invalid"], "routes": []})
            continue
        _log(progress, f"[gallery] page {eid}")
        page = entry_page(entry, fits.get(eid, {}), fast=fast, figdir=edir / "figures", thumbdir=src / "_static" / "thumbs",
                          fitted=fitted_ids is None or eid in fitted_ids)
        _write(edir / f"{eid}.rst", page)
        cards.append({"id": eid, "title": entry.title, "tags": list(entry.tags), "routes": entry.methods()})
    _write(src / "index.rst", landing_page(cards, fast=fast))
    _write(edir / "index.rst", entries_index(cards))
    return cards


def build(fast: bool = False, out: Path | str | None = None, progress: bool = True, *,
          entries: list[str] | None = None, examples: bool = True, retry_errors: bool = False,
          fit_entries: Iterable[str] | None = None) -> Path:
    """Build the gallery site and return its folder (default ``gallery/_build/html``).

    Parameters
    ----------
    fast : tiny budgets (:data:`FAST_SETTINGS`), results under ``$MECHZOO_CACHE/gallery/fast``,
        pages marked "fast build: tiny budgets, not a converged posterior".
    out : output folder of the HTML site. The Sphinx sources and doctrees are kept beside it
        (``<out>.src``, ``<out>.doctrees``) so that a rebuild redoes only what changed.
    progress : print progress (fits, pages, Sphinx) to stderr.
    entries : build only these entry ids (default: every registered entry).
    examples : run the worked examples (sphinx-gallery); False skips executing them.
    retry_errors : retry routes whose stored failure matches the current settings.
    fit_entries : fit (and show the posteriors of) only these entries; the others still get their
        page without a posterior section. Default: ``$MECHZOO_GALLERY_FIT_ENTRIES`` when set
        (:func:`fit_entries_from_env`), else every entry. Meant for cheap test / CI builds.
    """
    import mechzoo

    if not (GALLERY_SOURCE / "conf.py").exists():
        raise FileNotFoundError(f"gallery sources not found at {GALLERY_SOURCE}; build from a source checkout (pip install -e .) "
                                "or set MECHZOO_GALLERY_SRC")
    try:
        import sphinx  # noqa: F401
        import sphinx_gallery  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"the gallery needs sphinx, sphinx-gallery and pydata-sphinx-theme ({exc}); "
                          "pip install sphinx sphinx-gallery pydata-sphinx-theme") from None
    out = Path(out) if out is not None else GALLERY_SOURCE / "_build" / "html"
    out = out.resolve()
    src = out.with_name(out.name + ".src")
    doctrees = out.with_name(out.name + ".doctrees")
    t0 = time.perf_counter()
    ids = list(entries) if entries is not None else mechzoo.entries()
    if fit_entries is None:
        fit_entries = fit_entries_from_env()
    if fit_entries is not None:
        fit_entries = list(dict.fromkeys(fit_entries))
        unknown = [e for e in fit_entries if e not in ids]
        if unknown:
            raise ValueError(f"fit_entries / {FIT_ENTRIES_ENV}: {', '.join(unknown)} not among the entries built ({', '.join(ids)})")
        _log(progress, f"[gallery] fits restricted to: {', '.join(fit_entries) or 'none'}")
    fit_ids = ids if fit_entries is None else [e for e in ids if e in fit_entries]
    fits = ensure_fits(fit_ids, fast=fast, progress=progress, retry_errors=retry_errors)
    t_fit = time.perf_counter() - t0
    cards = generate_sources(src, fits, fast=fast, entry_ids=ids, progress=progress, fit_entries=fit_entries)
    t_pages = time.perf_counter() - t0 - t_fit
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["MPLBACKEND"] = "Agg"
    env["MECHZOO_GALLERY_FAST"] = "1" if fast else "0"
    env["MECHZOO_GALLERY_EXAMPLES"] = "1" if examples else "0"
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-d", str(doctrees), str(src), str(out)]
    if not progress:
        cmd.insert(3, "-q")
    _log(progress, "[gallery] " + " ".join(cmd))
    proc = subprocess.run(cmd, env=env, capture_output=not progress, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or "")[-4000:] if not progress else ""
        raise RuntimeError(f"sphinx-build failed with exit code {proc.returncode}\n{detail}")
    manifest = {
        "fast": fast,
        "fit_entries": fit_entries,  # None: every entry was fitted
        "entries": [{**c, "page": f"entries/{c['id']}.html", "fitted": c["id"] in fit_ids,
                     "fits": {m: ("error" if isinstance(r, str) else "ok") for m, r in fits.get(c["id"], {}).items()}} for c in cards],
        "cache": str(cache_dir(fast)),
        "seconds": {"fits": round(t_fit, 1), "pages": round(t_pages, 1), "sphinx": round(time.perf_counter() - t0 - t_fit - t_pages, 1)},
    }
    (out / "gallery-manifest.json").write_text(json.dumps(manifest, indent=1))
    _log(progress, f"[gallery] built {out / 'index.html'} in {time.perf_counter() - t0:.0f} s")
    return out
