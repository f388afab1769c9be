"""Pyloric network of the crustacean stomatogastric ganglion (spec ``simulator-models.md`` §2).

Three single-compartment neurons (AB/PD, LP, PY; Prinz et al. 2004) with 8 membrane
conductances each and 7 graded synapses: 31 free parameters. No likelihood: the zoo fits
the 18 summary features of §2.6 by simulation-based inference (eLife-2020, PNAS-2022).

Zoo adapter (names are the contract used by ``mechzoo``):

* :func:`simulate` -- batched simulation; returns features, spike times, extras and
  (optionally) the decimated post-burn-in voltage;
* :func:`simulate_features` -- fused simulation + features, never stores traces;
* :func:`features`, :func:`feature_names`, :func:`observation_dims`, :func:`coords`;
* :func:`benchmark` -- simulations per second per core;
* reference data shipped with the package: :func:`reference_observation` (§2.7) and
  :func:`reference_parameter_sets` (§2.8).

Parameters (``params`` mapping, leading batch axis B):

* ``membrane`` (B, 3, 8), mS/cm^2, dims (neuron, current);
* ``synapses`` (B, 7), nS (absolute), dim synapse.

``config`` keys (all optional, defaults in :data:`DEFAULT_CONFIG`): ``duration_ms``
(11000), ``burn_in_ms`` (1000), ``dt_ms`` (0.025), ``record`` (False), ``record_every``
(1), ``noise_std_uA`` (0.001, per step, not scaled by dt), ``min_burst_ms`` (40; eLife
simulations used 50), ``feature_order`` ("pnas" canonical, or "elife"), ``max_spikes``
(spike times kept per neuron, 500).

Seeds: one ``uint64`` per simulation; the noise of simulation b is exactly
``np.random.RandomState(seeds[b]).normal(scale=0.001, size=(3, N))`` for seeds below 2**32
(as upstream pyloric), so results never depend on batching.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from importlib import resources

import numpy as np

from . import summary as _features_mod
from .summary import (
    ELIFE_FEATURE_NAMES,
    FEATURE_NAMES,
    FEATURE_UNITS,
    features_from_voltage,
    reorder_features,
    savgol_matrices,
    savgol_window,
    unpack_scalars,
)
from .prior import (
    MEMBRANE_LOWER,
    MEMBRANE_UPPER,
    SYNAPSE_NS_LOWER,
    SYNAPSE_NS_UPPER,
    params_from_theta,
    parameter_names,
    sample_prior,
    theta_from_params,
    theta_lower_upper,
)
from .simulator import (
    CURRENTS,
    NEURONS,
    SYNAPSES,
    simulate_batch,
)

__all__ = [
    "CURRENTS",
    "DEFAULT_CONFIG",
    "ELIFE_FEATURE_NAMES",
    "FEATURE_NAMES",
    "FEATURE_UNITS",
    "MEMBRANE_LOWER",
    "MEMBRANE_UPPER",
    "NEURONS",
    "SYNAPSES",
    "SYNAPSE_NS_LOWER",
    "SYNAPSE_NS_UPPER",
    "benchmark",
    "coords",
    "feature_names",
    "features",
    "features_from_voltage",
    "observation_dims",
    "parameter_names",
    "params_from_theta",
    "reference_observation",
    "reference_parameter_sets",
    "reorder_features",
    "resolve_config",
    "sample_prior",
    "simulate",
    "simulate_features",
    "theta_from_params",
    "theta_lower_upper",
]

#: Defaults of the protocol (§2.5) and of the feature extraction (§2.6).
DEFAULT_CONFIG: dict = {
    "duration_ms": 11000.0,
    "burn_in_ms": 1000.0,
    "dt_ms": 0.025,
    "record": False,
    "record_every": 1,
    "noise_std_uA": 0.001,
    "min_burst_ms": 40.0,
    "feature_order": "pnas",
    "max_spikes": 500,
}

_MOMENTS = ("mean", "sd", "skewness", "excess_kurtosis")
_ENERGY_KINDS = ("total", "per_burst", "per_spike")


# --------------------------------------------------------------------------------------
# configuration and input checks
# --------------------------------------------------------------------------------------


def resolve_config(config: Mapping | None = None) -> dict:
    """Fill in defaults, validate, and add the derived integers ``n_steps``/``n_burn``/``n_record``.

    Raises
    ------
    ValueError
        On unknown keys or inconsistent values, naming the key and the fix.
    """
    cfg = dict(DEFAULT_CONFIG)
    derived = {"n_steps", "n_burn", "n_record"}
    for key, value in dict(config or {}).items():
        if key in derived:
            continue
        if key not in DEFAULT_CONFIG:
            raise ValueError(
                f"unknown pyloric config key {key!r}; valid keys: {sorted(DEFAULT_CONFIG)}"
            )
        cfg[key] = value
    dt = float(cfg["dt_ms"])
    duration = float(cfg["duration_ms"])
    burn = float(cfg["burn_in_ms"])
    if not dt > 0:
        raise ValueError(f"dt_ms must be > 0, got {dt}")
    if not (0 <= burn < duration):
        raise ValueError(
            f"need 0 <= burn_in_ms < duration_ms, got burn_in_ms={burn}, duration_ms={duration}"
        )
    n_steps = int(round(duration / dt))
    n_burn = int(round(burn / dt))
    if n_steps - n_burn < 3:
        raise ValueError("duration_ms - burn_in_ms must cover at least 3 samples")
    record_every = int(cfg["record_every"])
    if record_every < 1:
        raise ValueError(f"record_every must be a positive integer, got {cfg['record_every']}")
    max_spikes = int(cfg["max_spikes"])
    if max_spikes < 0:
        raise ValueError(f"max_spikes must be >= 0, got {max_spikes}")
    _features_mod._check_order(cfg["feature_order"])
    cfg.update(
        dt_ms=dt,
        duration_ms=duration,
        burn_in_ms=burn,
        record=bool(cfg["record"]),
        record_every=record_every,
        max_spikes=max_spikes,
        noise_std_uA=float(cfg["noise_std_uA"]),
        min_burst_ms=float(cfg["min_burst_ms"]),
        feature_order=_features_mod._check_order(cfg["feature_order"]),
        n_steps=n_steps,
        n_burn=n_burn,
        n_record=(-(-(n_steps - n_burn) // record_every)) if cfg["record"] else 0,
    )
    return cfg


def _check_params(params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if "membrane" not in params or "synapses" not in params:
        raise ValueError(
            "params must hold 'membrane' (B, 3, 8) in mS/cm^2 and 'synapses' (B, 7) in nS; "
            f"got keys {sorted(params)}"
        )
    mem = np.asarray(params["membrane"], dtype=np.float64)
    syn = np.asarray(params["synapses"], dtype=np.float64)
    if mem.ndim == 2:
        mem = mem[None]
    if syn.ndim == 1:
        syn = syn[None]
    if mem.ndim != 3 or mem.shape[1:] != (3, 8):
        raise ValueError(
            f"'membrane' must have shape (B, 3, 8) (neuron x current, mS/cm^2), got {mem.shape}"
        )
    if syn.ndim != 2 or syn.shape[1] != 7:
        raise ValueError(f"'synapses' must have shape (B, 7) (nS), got {syn.shape}")
    if mem.shape[0] != syn.shape[0]:
        raise ValueError(
            f"batch sizes differ: membrane has {mem.shape[0]}, synapses {syn.shape[0]}"
        )
    if not (np.all(np.isfinite(mem)) and np.all(np.isfinite(syn))):
        raise ValueError("parameters must be finite (no NaN/inf)")
    if np.any(mem < 0) or np.any(syn < 0):
        raise ValueError(
            "conductances must be >= 0 (membrane in mS/cm^2, synapses in nS, not log values; "
            "convert upstream ln(mS) vectors with params_from_theta)"
        )
    return np.ascontiguousarray(mem), np.ascontiguousarray(syn)


def _check_seeds(seeds, batch: int) -> tuple[np.ndarray, np.ndarray]:
    raw = np.asarray(seeds)
    if raw.shape != (batch,):
        raise ValueError(f"seeds must have shape ({batch},) (one per simulation), got {raw.shape}")
    if raw.dtype.kind not in "iu":
        raise ValueError(f"seeds must be integers (uint64), got dtype {raw.dtype}")
    if raw.dtype.kind == "i" and np.any(raw < 0):
        raise ValueError("seeds must be non-negative")
    s = raw.astype(np.uint64)
    low = (s & np.uint64(0xFFFFFFFF)).astype(np.int64)
    high = (s >> np.uint64(32)).astype(np.int64)
    return low, high


def _run(params, config, seeds, *, record, max_spikes, trap_flags=0, energy=True):
    cfg = resolve_config(config)
    mem, syn = _check_params(params)
    batch = mem.shape[0]
    low, high = _check_seeds(seeds, batch)
    n_rec = cfg["n_record"] if record else 0
    voltage = np.empty((batch, 3, n_rec))
    scalars = np.empty((batch, _features_mod.N_SCALARS))
    spikes = np.empty((batch, 3, max_spikes))
    centre, left, right = savgol_matrices(savgol_window(cfg["dt_ms"]))
    simulate_batch(
        mem,
        syn * 1e-6,  # nS -> mS
        low,
        high,
        cfg["n_steps"],
        cfg["n_burn"],
        cfg["dt_ms"],
        cfg["noise_std_uA"],
        cfg["record_every"],
        voltage,
        cfg["min_burst_ms"],
        centre,
        left,
        right,
        scalars,
        spikes,
        int(trap_flags),
        bool(energy),
    )
    return cfg, voltage, scalars, spikes


def _ordered(cfg, out):
    if cfg["feature_order"] == "pnas":
        return out["features"]
    return reorder_features(
        out["features"], "pnas", "elife", start_to_start_abpd_py=out["start_to_start_ABPD_PY"]
    )


# --------------------------------------------------------------------------------------
# zoo contract
# --------------------------------------------------------------------------------------


def simulate(
    params: Mapping[str, np.ndarray], *, config: Mapping | None = None, seeds: np.ndarray
) -> dict[str, np.ndarray]:
    """Simulate a batch of pyloric networks (§2.2-§2.5) and extract features (§2.6).

    Parameters
    ----------
    params : Mapping[str, numpy.ndarray]
        ``membrane`` (B, 3, 8) conductance densities in mS/cm^2 (neuron x current) and
        ``synapses`` (B, 7) absolute synaptic conductances in nS.
    config : Mapping, optional
        See :data:`DEFAULT_CONFIG`. With ``record=True`` the post-burn-in voltage is
        returned, every ``record_every``-th sample (full 10 s at full resolution: 9.6 MB per
        simulation).
    seeds : numpy.ndarray, shape (B,)
        One non-negative integer (uint64) seed per simulation.

    Returns
    -------
    dict[str, numpy.ndarray]
        ``features`` (B, 18) in ``config["feature_order"]`` (NaN per §2.6);
        ``spike_times`` (B, 3, max_spikes) ms after burn-in, NaN-padded; ``num_spikes``,
        ``num_bursts`` (B, 3); ``triphasic``, ``pyloric_like`` (B,) bool;
        ``start_to_start_ABPD_PY`` (B,) ms; ``energy`` (B, 3, 3) nJ/cm^2 (total, per
        burst, per spike; reference power measure); ``voltage_moments`` (B, 3, 4);
        ``voltage`` (B, 3, n_record) mV when ``record``. Dims: :func:`observation_dims`.
    """
    cfg0 = resolve_config(config)
    cfg, voltage, scalars, spikes = _run(
        params, cfg0, seeds, record=cfg0["record"], max_spikes=cfg0["max_spikes"]
    )
    out = unpack_scalars(scalars)
    out["features"] = _ordered(cfg, out)
    out["spike_times"] = spikes
    if cfg["record"]:
        out["voltage"] = voltage
    return out


def simulate_features(
    params: Mapping[str, np.ndarray], *, config: Mapping | None = None, seeds: np.ndarray
) -> np.ndarray:
    """Fused simulation and feature extraction: (B, 18) float64 features, nothing else kept.

    Same arguments as :func:`simulate` (``record`` and ``max_spikes`` are ignored; the
    energies are not computed). Memory: about 20 MB of scratch per simulation in flight,
    i.e. up to 160 MB per running thread (8 simulations run in lock-step), independent of B.
    """
    cfg, _, scalars, _ = _run(params, config, seeds, record=False, max_spikes=0, energy=False)
    return _ordered(cfg, unpack_scalars(scalars))


def features(
    observations: Mapping[str, np.ndarray], *, config: Mapping | None = None
) -> np.ndarray:
    """The 18 features (B, 18) of simulated observations (§2.6, reference NaN rules).

    Returns the features computed during the simulation when present; otherwise computes
    them from a full-resolution ``voltage`` (requires ``record_every == 1``).
    """
    cfg = resolve_config(config)
    if "features" in observations:
        x = np.asarray(observations["features"], dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != 18:
            raise ValueError(f"observations['features'] must be (B, 18), got {x.shape}")
        return x
    if "voltage" not in observations:
        raise ValueError("observations hold neither 'features' nor 'voltage'")
    if cfg["record_every"] != 1:
        raise ValueError(
            "features need the full-resolution voltage: simulate with record_every=1, or use "
            "the 'features' returned by simulate"
        )
    out = features_from_voltage(
        observations["voltage"], dt_ms=cfg["dt_ms"], min_burst_ms=cfg["min_burst_ms"]
    )
    return _ordered(cfg, out)


def feature_names(config: Mapping | None = None) -> tuple[str, ...]:
    """Names of the 18 features in ``config["feature_order"]`` (default pyloric/PNAS order)."""
    return _features_mod.feature_names(resolve_config(config)["feature_order"])


#: Units of the observation variables and coordinates (for tables and figure axes).
OBSERVATION_UNITS = {
    "features": "mixed (see FEATURE_UNITS)",
    "spike_times": "ms",
    "num_spikes": "count",
    "num_bursts": "count",
    "triphasic": "true/false",
    "pyloric_like": "true/false",
    "start_to_start_ABPD_PY": "ms",
    "energy": "nJ/cm^2",
    "voltage_moments": "mV^k (k-th moment)",
    "voltage": "mV",
}
COORDINATE_UNITS = {"time": "ms", "spike": "index", "neuron": "label", "energy_kind": "label", "moment": "order"}


def observation_dims(config: Mapping | None = None) -> dict[str, tuple[str, ...]]:
    """Dims of each array returned by :func:`simulate`, after the leading batch axis."""
    cfg = resolve_config(config)
    dims = {
        "features": ("feature",),
        "spike_times": ("neuron", "spike"),
        "num_spikes": ("neuron",),
        "num_bursts": ("neuron",),
        "triphasic": (),
        "pyloric_like": (),
        "start_to_start_ABPD_PY": (),
        "energy": ("neuron", "energy_kind"),
        "voltage_moments": ("neuron", "moment"),
    }
    if cfg["record"]:
        dims["voltage"] = ("neuron", "time")
    return dims


def coords(config: Mapping | None = None) -> dict[str, np.ndarray | list]:
    """Coordinate labels of the parameter and observation dims (time in ms after burn-in)."""
    cfg = resolve_config(config)
    out = {
        "neuron": list(NEURONS),
        "current": list(CURRENTS),
        "synapse": list(SYNAPSES),
        "feature": list(feature_names(cfg)),
        "spike": np.arange(cfg["max_spikes"]),
        "energy_kind": list(_ENERGY_KINDS),
        "moment": list(_MOMENTS),
    }
    if cfg["record"]:
        out["time"] = np.arange(cfg["n_record"]) * cfg["record_every"] * cfg["dt_ms"]
    return out


# --------------------------------------------------------------------------------------
# reference data (package data, no downloads)
# --------------------------------------------------------------------------------------


def _load_reference() -> dict:
    text = resources.files(__name__).joinpath("reference_data.json").read_text()
    return json.loads(text)


def reference_observation(order: str = "pnas") -> np.ndarray:
    """Experimental feature vector of preparation 845_082_0044 (§2.7), shape (18,).

    ``order="pnas"`` (canonical) or ``"elife"`` (second start-to-start is AB/PD->PY).
    """
    obs = _load_reference()["observation"]
    key = "features_pnas" if _features_mod._check_order(order) == "pnas" else "features_elife"
    return np.array(obs[key], dtype=np.float64)


def reference_parameter_sets() -> dict[str, dict]:
    """Known-good parameter sets of §2.8 with their expected results.

    Returns
    -------
    dict
        Per set: ``params`` (``membrane`` (1, 3, 8) mS/cm^2, ``synapses`` (1, 7) nS), and the
        raw entries of the shipped JSON (``seeds``, ``expected`` or
        ``expected_ranges_over_three_seeds``, ``source``).
    """
    sets = {}
    for name, entry in _load_reference()["parameter_sets"].items():
        mem = np.array(entry["membrane_mS_per_cm2"], dtype=np.float64)[None]
        if "synapses_log_mS" in entry:
            syn = np.exp(np.array(entry["synapses_log_mS"], dtype=np.float64)) * 1e6
        else:
            syn = np.array(entry["synapses_nS"], dtype=np.float64)
        sets[name] = dict(entry, params={"membrane": mem, "synapses": syn[None]})
    return sets


# --------------------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------------------


def benchmark(n: int = 16, *, seed: int = 0, config: Mapping | None = None) -> dict:
    """Measure simulations per second (fused simulate + features) on prior draws.

    Times :func:`simulate_features` (the path used for training sets; it skips the energy
    extras). The kernel runs 8 simulations in lock-step per thread, so ``n`` should be a
    multiple of 8 times the thread count (default 16 = 2 threads x 8).

    Parameters
    ----------
    n : int
        Number of full simulations (default 11 s each) timed after a short warm-up that
        compiles/loads the kernels.
    seed : int
        Seed of the prior draws and of the noise.
    config : Mapping, optional
        Simulation config (defaults: the protocol of §2.5).

    Returns
    -------
    dict
        ``sims_per_s`` (wall), ``sims_per_s_per_core`` (using the Numba thread count),
        ``cpu_s_per_sim`` (process CPU time per simulation, robust on a shared machine),
        ``threads``, ``n``, and ``baseline``: the published compiled reference (pyloric,
        Cython, ≈0.7 s per simulation on 2-core x86, spec §2.10) -- quoted, not measured: the
        PyPI package named ``pyloric`` (0.0.1) is an empty placeholder and mackelab's
        simulator installs only from git.
    """
    import numba

    cfg = resolve_config(config)
    rng = np.random.default_rng(seed)
    params = sample_prior(int(n), rng)
    seeds = rng.integers(0, 2**32, size=int(n), dtype=np.uint64)
    warm = sample_prior(1, rng)
    short = {**cfg, "duration_ms": 20.0, "burn_in_ms": 10.0}
    simulate_features(warm, config=short, seeds=seeds[:1])
    threads = int(numba.get_num_threads())
    t_wall = time.perf_counter()
    t_cpu = time.process_time()
    x = simulate_features(params, config=cfg, seeds=seeds)
    cpu = time.process_time() - t_cpu
    wall = time.perf_counter() - t_wall
    baseline_s = 0.7
    per_core = n / wall / threads
    return {
        "n": int(n),
        "threads": threads,
        "cores_visible": os.cpu_count(),
        "wall_s": wall,
        "cpu_s": cpu,
        "sims_per_s": n / wall,
        "sims_per_s_per_core": per_core,
        "cpu_s_per_sim": cpu / n,
        "valid_fraction": float(np.mean(np.all(np.isfinite(x), axis=1))),
        "baseline": {
            "name": "pyloric (mackelab, Cython), spec §2.10",
            "s_per_sim": baseline_s,
            "measured_here": False,
            "why_not": "PyPI 'pyloric' 0.0.1 is an empty placeholder; the real one is git-only",
        },
        "speedup_vs_baseline_cpu": baseline_s / (cpu / n),
    }
