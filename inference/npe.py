"""Neural posterior estimation route through ``sbi`` (DESIGN.md §4).

Single-round, amortised NPE (``sbi.inference.NPE``): θ is drawn from the entry's prior (the torch
realisation of the same declaration the likelihood routes use), simulated in batches, reduced to
the entry's summary features, and a conditional density estimator (``maf`` by default; ``nsf``
as in sbibm) is trained on the valid pairs.

Invalid simulations
-------------------
A simulation is *invalid* when any of its features is non-finite (NaN or ±inf: e.g. no spike, no
burst, a diverged integration). The setting ``invalid`` declares, per entry, how they are handled,
and the same rule is applied to the training bank and to the calibration (SBC) set
(:func:`handle_invalid`):

* ``"exclude"`` (default): invalid simulations are dropped;
* ``"replace"``: non-finite values of the features named in ``invalid_values`` (a mapping
  ``{feature name: value}`` or a list with one value per feature) are replaced by the declared
  value, as the pyloric literature does for features that do not exist for a rhythm (e.g. the
  phase of a missing burst); a simulation whose other features are still non-finite is dropped.
  The same replacement is applied to the observation.

Every count is reported, never silently: ``n_invalid_simulations`` (any non-finite raw feature),
``n_replaced_simulations`` (kept thanks to a replacement), ``n_excluded_simulations`` (dropped),
per-feature ``invalid_feature_counts`` / ``replaced_feature_counts`` in the result attributes,
the same figures for the SBC set in the ``calibration`` group's attributes, and all of them in
:func:`mechzoo.diagnose`.

Checks
------
The trained posterior is saved (``estimator_path`` attribute) so that new observations can be
fitted without re-simulating (:func:`load_posterior`; the cache reuses it for any observation).
Simulation-based calibration (Talts et al. 2018) on held-out simulations from a separate seed
stream is stored in the ``calibration`` group. A posterior predictive check
(:func:`posterior_predictive_features`; Gelman et al. 2013, *Bayesian Data Analysis*, ch. 6)
simulates the features at ``ppc_draws`` posterior draws and at the posterior median under
``ppc_noise_seeds`` noise seeds and stores them in the ``posterior_predictive`` group. Both are
summarised by :func:`mechzoo.diagnose`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr

from .cache import cache_dir
from .problem import Problem, seeds_for
from .result import make_result

__all__ = [
    "run",
    "DEFAULTS",
    "INVALID_CHOICES",
    "simulate_bank",
    "load_posterior",
    "estimator_key",
    "check_invalid_declaration",
    "invalid_replacement",
    "handle_invalid",
    "posterior_predictive_features",
]

DEFAULTS: dict[str, Any] = {
    "num_simulations": 2000,
    "density_estimator": "maf",
    "num_draws": 4000,
    "chunk_size": 1000,
    "training_batch_size": 200,
    "learning_rate": 5e-4,
    "stop_after_epochs": 20,
    "max_num_epochs": 500,
    "sbc_simulations": 100,
    "sbc_draws": 200,
    "executor": None,
    "workers": None,
    "invalid": "exclude",
    "invalid_values": None,
    "ppc_draws": 100,
    "ppc_noise_seeds": 20,
}
"""Default settings of the route. Besides the simulation budget and ``sbi`` training settings:

``invalid`` (``"exclude"`` or ``"replace"``) and ``invalid_values`` (mapping feature name → value
or list of one value per feature; only with ``"replace"``) declare how non-finite features are
handled (module docstring); ``ppc_draws`` (posterior draws simulated for the posterior predictive
check, at most ``num_draws``; 0 disables) and ``ppc_noise_seeds`` (noise seeds under which the
posterior median is simulated; 0 disables, otherwise at least 2 so that an SD exists)."""

#: Choices of the ``invalid`` setting (module docstring).
INVALID_CHOICES = ("exclude", "replace")


def check_invalid_declaration(invalid: Any, invalid_values: Any) -> None:
    """Validate the ``invalid`` / ``invalid_values`` settings without knowing the feature names.

    Used by the entry schema (an entry's ``[routes] npe`` table) and by :func:`run`.

    Raises
    ------
    ValueError
        Unknown ``invalid`` choice; ``"replace"`` without values; values given with
        ``"exclude"``; values that are neither a mapping of names to numbers nor a list of
        numbers; non-finite replacement values.
    """
    if invalid not in INVALID_CHOICES:
        raise ValueError(f"npe setting invalid = {invalid!r} is not one of {list(INVALID_CHOICES)}")
    if invalid == "exclude":
        if invalid_values is not None:
            raise ValueError(
                "npe setting invalid_values is used only with invalid = 'replace' (fix: set invalid = 'replace' or remove invalid_values)"
            )
        return
    if invalid_values is None or (hasattr(invalid_values, "__len__") and len(invalid_values) == 0):
        raise ValueError(
            "npe setting invalid = 'replace' needs invalid_values: a mapping {feature name: replacement value} "
            "or a list with one value per feature"
        )
    if isinstance(invalid_values, Mapping):
        items = list(invalid_values.items())
    elif isinstance(invalid_values, (list, tuple, np.ndarray)):
        items = list(enumerate(np.asarray(invalid_values).reshape(-1).tolist()))
    else:
        raise ValueError(
            f"npe setting invalid_values must be a mapping {{feature name: value}} or a list of values (got {type(invalid_values).__name__})"
        )
    for key, value in items:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
            raise ValueError(f"npe setting invalid_values[{key!r}] = {value!r} must be a finite number")


def invalid_replacement(invalid: str, invalid_values: Any, feature_names: list[str]) -> np.ndarray | None:
    """The per-feature replacement values (F,) of the ``invalid`` setting, NaN where a feature has
    none; ``None`` for ``"exclude"``. Validates the settings against the feature names."""
    check_invalid_declaration(invalid, invalid_values)
    if invalid == "exclude":
        return None
    names = list(feature_names)
    out = np.full(len(names), np.nan)
    if isinstance(invalid_values, Mapping):
        unknown = sorted(set(map(str, invalid_values)) - set(names))
        if unknown:
            raise ValueError(f"npe setting invalid_values names unknown feature(s) {unknown}; the features are {names}")
        for k, v in invalid_values.items():
            out[names.index(str(k))] = float(v)
    else:
        values = np.asarray(invalid_values, dtype=np.float64).reshape(-1)
        if values.size != len(names):
            raise ValueError(
                f"npe setting invalid_values has {values.size} values but the entry has {len(names)} features {names}; "
                "give one value per feature or a mapping {feature name: value}"
            )
        out[:] = values
    return out


def handle_invalid(x: np.ndarray, replacement: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Apply the invalid-feature rule to features ``x`` (n, F).

    Parameters
    ----------
    x : ndarray (n, F)
        Raw simulated features.
    replacement : ndarray (F,) or None
        From :func:`invalid_replacement`: ``None`` excludes every simulation with a non-finite
        feature; otherwise non-finite values of feature j are replaced by ``replacement[j]``
        where that is finite, and simulations still holding a non-finite value are excluded.

    Returns
    -------
    x_used : ndarray (n, F)
        Features after replacement (rows that are not ``valid`` still hold non-finite values).
    valid : ndarray of bool (n,)
        Rows kept (every feature finite after replacement).
    counts : dict
        ``n_invalid`` (rows with any non-finite raw feature), ``n_replaced`` (kept rows in which
        a value was replaced), ``n_excluded`` (rows dropped), ``invalid_feature_counts`` and
        ``replaced_feature_counts`` (per feature, lists of int).
    """
    x = np.asarray(x, dtype=np.float64)
    nonfinite = ~np.isfinite(x)
    replaced = np.zeros_like(nonfinite)
    x_used = x
    if replacement is not None:
        replaced = nonfinite & np.isfinite(replacement)[None, :]
        x_used = np.where(replaced, replacement[None, :], x)
    valid = np.all(np.isfinite(x_used), axis=1)
    counts = {
        "n_invalid": int(nonfinite.any(axis=1).sum()),
        "n_replaced": int((replaced.any(axis=1) & valid).sum()),
        "n_excluded": int((~valid).sum()),
        "invalid_feature_counts": nonfinite.sum(axis=0).astype(int).tolist(),
        "replaced_feature_counts": replaced.sum(axis=0).astype(int).tolist(),
    }
    return x_used, valid, counts


def _validate_settings(problem: Problem, settings: Mapping[str, Any]) -> np.ndarray | None:
    """Check the settings' values; returns the replacement vector of the ``invalid`` rule."""
    if int(settings["num_simulations"]) < 10:
        raise ValueError(f"num_simulations must be >= 10 (got {settings['num_simulations']})")
    for key in ("sbc_simulations", "ppc_draws", "ppc_noise_seeds"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not float(value).is_integer() or value < 0:
            raise ValueError(f"npe setting {key} must be an integer >= 0 (got {value!r}); 0 disables the check")
    if int(settings["ppc_noise_seeds"]) == 1:
        raise ValueError("npe setting ppc_noise_seeds must be 0 (off) or >= 2: the noise SD at the median draw needs two simulations")
    return invalid_replacement(settings["invalid"], settings["invalid_values"], problem.feature_names())


def simulate_bank(
    problem: Problem,
    n: int,
    *,
    seed: int,
    stream: str = "simulate",
    chunk_size: int = 1000,
    progress: bool = True,
    executor: Any = None,
    workers: int | None = None,
):
    """θ ~ prior and features of their simulations, from the on-disk simulation bank.

    The bank (:func:`mechzoo.inference.campaign.run_campaign`) is keyed by entry, configuration,
    seed and stream; it is extended only by the rows it lacks and resumes after an interruption.
    Row i depends only on (seed, stream, i). Returns ``(theta (n, D), x (n, F))``.
    ``workers=None`` uses every core for banks of 20,000 rows or more and runs small banks
    in-process (starting worker processes costs seconds); results do not depend on it.
    """
    from .campaign import run_campaign

    if workers is None and executor is None and n < 20000:
        workers = 1
    bank = run_campaign(
        problem, n, seed=seed, stream=stream, chunk_size=chunk_size, progress=progress, executor=executor, workers=workers, cache_dir=cache_dir()
    )
    return np.asarray(bank.theta), np.asarray(bank.x)


_TRAINING_KEYS = ("num_simulations", "density_estimator", "training_batch_size", "learning_rate", "stop_after_epochs", "max_num_epochs")


def estimator_key(problem: Problem, settings: Mapping[str, Any], seed: int) -> str:
    """Content hash of what determines a trained estimator: entry (and its file hash), simulator
    configuration, training settings, the ``invalid`` rule (when not the default ``"exclude"``) and
    seed. Observation-dependent settings are excluded, so one trained estimator serves every
    observation (amortisation)."""
    content = {
        "entry": problem.entry_id,
        "entry_hash": problem.entry_hash,
        "config": {k: v for k, v in problem.config.items()},
        "training": {k: settings[k] for k in _TRAINING_KEYS},
        "seed": int(seed),
    }
    if problem.pinned:  # only when some parameters are pinned, so that existing keys are unchanged
        content["pinned"] = {k: np.asarray(v).tolist() for k, v in sorted(problem.pinned.items())}
    if settings.get("invalid", "exclude") != "exclude":  # the training set depends on it; "exclude" keeps existing keys
        replacement = invalid_replacement(settings["invalid"], settings.get("invalid_values"), problem.feature_names())
        content["invalid"] = {"rule": settings["invalid"], "values": [None if np.isnan(v) else float(v) for v in replacement]}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _train(problem: Problem, settings: Mapping[str, Any], seed: int, progress: bool, replacement: np.ndarray | None) -> tuple[Any, dict[str, Any]]:
    """Simulate the bank and train the estimator on the simulations the ``invalid`` rule keeps
    (:func:`handle_invalid` with ``replacement``); returns (posterior, training record)."""
    import torch
    from sbi.inference import NPE
    from torch.utils.tensorboard import SummaryWriter

    n = int(settings["num_simulations"])
    t0 = time.perf_counter()
    theta, x = simulate_bank(
        problem, n, seed=seed, chunk_size=int(settings["chunk_size"]), progress=progress, executor=settings["executor"], workers=settings["workers"]
    )
    t_sim = time.perf_counter() - t0
    x, valid, counts = handle_invalid(x, replacement)
    if valid.sum() < 10:
        raise RuntimeError(
            f"only {int(valid.sum())} of {n} simulations are valid under invalid = {settings['invalid']!r} "
            f"(non-finite values per feature {dict(zip(problem.feature_names(), counts['invalid_feature_counts']))}); cannot train NPE "
            "(fix: a larger num_simulations, or invalid = 'replace' with invalid_values for the features that are often missing)"
        )
    t1 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        writer = SummaryWriter(log_dir=str(cache_dir() / "sbi-logs"))  # sbi would write into the working folder
        inference = NPE(
            prior=problem.torch_prior(),
            density_estimator=str(settings["density_estimator"]),
            show_progress_bars=progress,
            summary_writer=writer,
        )
        inference.append_simulations(torch.as_tensor(theta[valid], dtype=torch.float32), torch.as_tensor(x[valid], dtype=torch.float32))
        estimator = inference.train(
            training_batch_size=int(settings["training_batch_size"]),
            learning_rate=float(settings["learning_rate"]),
            stop_after_epochs=int(settings["stop_after_epochs"]),
            max_num_epochs=int(settings["max_num_epochs"]),
            show_train_summary=False,
        )
        posterior = inference.build_posterior(estimator)
        writer.close()
    record = {
        "n_simulations": n,
        "n_training_simulations": int(valid.sum()),
        "n_invalid_simulations": counts["n_invalid"],
        "n_replaced_simulations": counts["n_replaced"],
        "n_excluded_simulations": counts["n_excluded"],
        "invalid_feature_counts": counts["invalid_feature_counts"],
        "replaced_feature_counts": counts["replaced_feature_counts"],
        "invalid_rule": str(settings["invalid"]),
        "simulation_wall_time_s": t_sim,
        "training_wall_time_s": time.perf_counter() - t1,
        "epochs_trained": int(inference.summary.get("epochs_trained", [0])[-1]),
    }
    return posterior, record


def run(problem: Problem, *, settings: Mapping[str, Any] | None = None, seed: int = 0, progress: bool = True) -> xr.DataTree:
    """NPE posterior at the problem's observation, with its calibration and predictive checks.

    The trained estimator is looked up in the cache by :func:`estimator_key`; if it is there
    (same entry, simulator configuration, training settings, ``invalid`` rule and seed), it is
    reused without simulating or training again (``reused_estimator = 1`` in the attrs, with the
    original training record); otherwise the bank is simulated, the estimator trained and saved.

    Invalid simulations are handled by the ``invalid`` setting, identically for training and
    calibration (module docstring); counts are in the attrs (``n_invalid_simulations``,
    ``n_replaced_simulations``, ``n_excluded_simulations``, per-feature ``invalid_feature_counts``
    and ``replaced_feature_counts``; older cached records have only the first and the per-feature
    invalid counts) and in the ``calibration`` group's attrs for the SBC set.

    Groups besides ``posterior``/``observed_data``: ``calibration`` (SBC, :func:`_sbc`) and,
    unless ``ppc_draws`` and ``ppc_noise_seeds`` are both 0, ``posterior_predictive``
    (:func:`posterior_predictive_features`). ``n_simulations`` stays the training budget; the
    predictive simulations run by this call are counted in ``n_ppc_simulations``.

    Raises
    ------
    ValueError
        Unknown settings, invalid setting values (see :func:`check_invalid_declaration`), or an
        observation with non-finite features that the ``invalid`` rule does not replace.
    """
    import torch

    unknown = set(dict(settings or {})) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown npe setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **dict(settings or {})}
    replacement = _validate_settings(problem, settings)
    t0 = time.perf_counter()
    x_o_raw = problem.observed_features()
    x_o = handle_invalid(x_o_raw[None], replacement)[0][0]
    if not np.all(np.isfinite(x_o)):
        bad = [n for n, v in zip(problem.feature_names(), x_o) if not np.isfinite(v)]
        raise ValueError(
            f"the observed features {bad} are NaN/inf; NPE needs a finite observation "
            "(fix: invalid = 'replace' with invalid_values for these features, or an observation where they exist)"
        )

    path = cache_dir() / "npe" / f"{problem.entry_id}-{estimator_key(problem, settings, seed)}.pt"
    record_path = path.with_suffix(".json")
    if path.exists() and record_path.exists():
        posterior = load_posterior(path)
        record = {**json.loads(record_path.read_text()), "reused_estimator": 1}
    else:
        posterior, record = _train(problem, settings, seed, progress, replacement)
        _save_estimator(posterior, record, path)
        record["reused_estimator"] = 0
    t_sample = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) + 1)
        draws = posterior.sample((int(settings["num_draws"]),), x=torch.as_tensor(x_o, dtype=torch.float32), show_progress_bars=False)
        draws = draws.to(torch.float64).numpy()
        calibration = _sbc(problem, posterior, settings, seed, progress, replacement)
    record["sampling_wall_time_s"] = time.perf_counter() - t_sample
    groups = {"calibration": calibration}
    t_ppc = time.perf_counter()
    n_before = problem.counter.simulations
    ppc = posterior_predictive_features(
        problem,
        draws,
        seed=seed,
        n_draws=int(settings["ppc_draws"]),
        n_noise_seeds=int(settings["ppc_noise_seeds"]),
        chunk_size=int(settings["chunk_size"]),
    )
    if ppc is not None:
        groups["posterior_predictive"] = ppc
    record["n_ppc_simulations"] = int(problem.counter.simulations - n_before)
    record["ppc_wall_time_s"] = time.perf_counter() - t_ppc
    params = problem.unflatten(draws)
    return make_result(
        problem,
        route="npe",
        posterior={k: v[None] for k, v in params.items()},
        settings=settings,
        seed=seed,
        wall_time_s=time.perf_counter() - t0,
        groups=groups,
        attrs={**record, "estimator_path": str(path), "feature_names": problem.feature_names()},
    )


def _sbc(problem: Problem, posterior, settings: Mapping[str, Any], seed: int, progress: bool, replacement: np.ndarray | None = None) -> xr.Dataset:
    """Ranks of held-out true parameters among posterior draws (Talts et al. 2018).

    Held-out pairs come from the ``calib`` seed stream (never overlapping the training bank).
    The ``invalid`` rule of training is applied (:func:`handle_invalid` with the same
    ``replacement``): excluded simulations are dropped, replaced values used, and both counted in
    the attrs (``n_invalid``, ``n_replaced``, ``n_excluded``, per-feature counts). The
    coordinate ``bank_row`` gives each kept simulation's row in the ``calib`` bank.
    """
    import torch

    n = int(settings["sbc_simulations"])
    L = int(settings["sbc_draws"])
    names = problem.flat_names()
    if n <= 0:
        return xr.Dataset(attrs={"n_sbc": 0})
    theta, x = simulate_bank(
        problem, n, seed=seed, stream="calib", chunk_size=int(settings["chunk_size"]), progress=False, executor=settings["executor"], workers=settings["workers"]
    )
    x, valid, counts = handle_invalid(x, replacement)
    attrs = {
        "n_sbc": n,
        "n_posterior_draws": L,
        "invalid_rule": str(settings.get("invalid", "exclude")),
        "n_invalid": counts["n_invalid"],
        "n_replaced": counts["n_replaced"],
        "n_excluded": counts["n_excluded"],
        "invalid_feature_counts": counts["invalid_feature_counts"],
        "replaced_feature_counts": counts["replaced_feature_counts"],
        "stream": "calib",
    }
    rows = np.flatnonzero(valid)
    theta, x = theta[valid], x[valid]
    if rows.size == 0:
        return xr.Dataset(attrs=attrs)
    samples = posterior.sample_batched((L,), x=torch.as_tensor(x, dtype=torch.float32), show_progress_bars=False)
    samples = samples.to(torch.float64).numpy()  # (L, n, D)
    ranks = (samples < theta[None]).sum(axis=0)  # (n, D)
    lo, hi = np.quantile(samples, [0.025, 0.975], axis=0)
    inside = (theta >= lo) & (theta <= hi)
    return xr.Dataset(
        {
            "rank": (("sbc_simulation", "parameter"), ranks.astype(np.int64)),
            "theta": (("sbc_simulation", "parameter"), theta),
            "inside_95": (("sbc_simulation", "parameter"), inside.astype(np.int8)),
        },
        coords={"parameter": names, "sbc_simulation": np.arange(theta.shape[0]), "bank_row": ("sbc_simulation", rows.astype(np.int64))},
        attrs=attrs,
    )


def _truth_vector(problem: Problem) -> np.ndarray | None:
    """The flat parameter vector (D,) that simulated the problem's data, when the data recipe
    recorded it (``data_info["theta"]`` of a simulator recipe); else None (real data, user data)."""
    info = problem.data_info or {}
    theta = info.get("theta")
    if info.get("generator") != "simulator" or not isinstance(theta, Mapping):
        return None
    try:
        return problem.flatten({p.name: np.asarray(theta[p.name], dtype=np.float64)[None] for p in problem.parameters})[0]
    except (KeyError, ValueError):
        return None


def _simulate_in_chunks(problem: Problem, theta: np.ndarray, seeds: np.ndarray, chunk_size: int) -> np.ndarray:
    """Features (n, F) of ``theta`` (n, D) with one seed per row, simulated in-process in chunks
    (rows depend only on their θ and seed, so the chunking does not change the result)."""
    parts = []
    for a in range(0, theta.shape[0], max(int(chunk_size), 1)):
        b = min(a + int(chunk_size), theta.shape[0])
        x = np.asarray(problem.simulate_features(theta[a:b], seeds[a:b]), dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != b - a:
            raise ValueError(f"simulate_features returned shape {x.shape}; expected ({b - a}, n_features)")
        parts.append(x)
    return np.concatenate(parts, axis=0)


def posterior_predictive_features(
    problem: Problem,
    draws: np.ndarray,
    *,
    seed: int,
    n_draws: int = 100,
    n_noise_seeds: int = 20,
    chunk_size: int = 1000,
) -> xr.Dataset | None:
    """Posterior predictive simulations of the summary features (the ``posterior_predictive`` group).

    Route-agnostic: ``draws`` (N, D) are flat posterior draws of any route.

    * The first ``n_draws`` draws (at most N; NPE draws are independent, so they are a random
      subset) are simulated once each with simulation seeds ``seeds_for(seed, n, stream="ppc")``:
      ``features`` (chain = 1, draw, feature) and the parameter values used, ``theta``
      (chain, draw, parameter). The ``draw`` coordinate is the draw's index in the posterior.
    * The posterior median (per-parameter median of all N draws), ``median_draw_theta``
      (parameter), is simulated under ``n_noise_seeds`` noise seeds
      ``seeds_for(seed, m, stream="ppc-median")``: ``median_draw_features`` (noise_seed, feature).
    * When the data were simulated by the entry at a recorded θ (a simulator data recipe), that
      truth is simulated under the *same* noise seeds (common random numbers):
      ``truth_theta`` and ``truth_features`` (noise_seed, feature); their spread is the noise SD at
      the truth that the issue's acceptance test divides by.
    * ``observed_features`` (feature): the raw observation the simulations are compared with.

    Simulated features are stored raw: non-finite values are kept (and counted in the attrs
    ``n_invalid_draws``, ``n_invalid_median_draw``, ``n_invalid_truth``: simulations with any
    non-finite feature), never replaced or dropped; :func:`mechzoo.diagnose` excludes them per
    feature and reports the counts. Simulations run in-process (``problem.simulate_features``) in
    chunks of ``chunk_size``. Returns None when ``n_draws`` and ``n_noise_seeds`` are both 0.

    References: Gelman, Meng & Stern (1996), Statistica Sinica 6:733; Gelman et al. (2013),
    *Bayesian Data Analysis*, 3rd ed., ch. 6.
    """
    draws = np.atleast_2d(np.asarray(draws, dtype=np.float64))
    n = min(int(n_draws), draws.shape[0])
    m = int(n_noise_seeds)
    if n <= 0 and m <= 0:
        return None
    if m == 1:
        raise ValueError("n_noise_seeds must be 0 or >= 2 (an SD needs two simulations)")
    feature_names = problem.feature_names()
    x_o = problem.observed_features()
    data_vars: dict[str, Any] = {"observed_features": (("feature",), x_o)}
    coords: dict[str, Any] = {"feature": feature_names, "parameter": problem.flat_names()}
    attrs: dict[str, Any] = {"n_ppc_draws": n, "n_noise_seeds": m, "stream": "ppc", "median_stream": "ppc-median"}
    if n > 0:
        theta = draws[:n]
        x = _simulate_in_chunks(problem, theta, seeds_for(seed, n, stream="ppc"), chunk_size)
        data_vars["features"] = (("chain", "draw", "feature"), x[None])
        data_vars["theta"] = (("chain", "draw", "parameter"), theta[None])
        coords.update(chain=[0], draw=np.arange(n))
        attrs["n_invalid_draws"] = int((~np.isfinite(x)).any(axis=1).sum())
    if m > 0:
        noise_seeds = seeds_for(seed, m, stream="ppc-median")
        median = np.median(draws, axis=0)
        xm = _simulate_in_chunks(problem, np.repeat(median[None], m, axis=0), noise_seeds, chunk_size)
        data_vars["median_draw_theta"] = (("parameter",), median)
        data_vars["median_draw_features"] = (("noise_seed", "feature"), xm)
        coords["noise_seed"] = np.arange(m)
        attrs["n_invalid_median_draw"] = int((~np.isfinite(xm)).any(axis=1).sum())
        truth = _truth_vector(problem)
        if truth is not None:
            xt = _simulate_in_chunks(problem, np.repeat(truth[None], m, axis=0), noise_seeds, chunk_size)
            data_vars["truth_theta"] = (("parameter",), truth)
            data_vars["truth_features"] = (("noise_seed", "feature"), xt)
            attrs["n_invalid_truth"] = int((~np.isfinite(xt)).any(axis=1).sum())
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _save_estimator(posterior, record: Mapping[str, Any], path: Path) -> None:
    """Save the trained posterior (pickled, CPU) and its training record atomically."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(posterior, tmp)
    os.replace(tmp, path)
    tmp_json = path.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(record))
    os.replace(tmp_json, path.with_suffix(".json"))


def load_posterior(path: str | os.PathLike):
    """Reload a trained NPE posterior on the CPU, whatever device trained it."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)
