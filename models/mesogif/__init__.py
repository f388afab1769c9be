"""mesoGIF: finite-size mesoscopic model of populations of GIF neurons.

Schwalger, Deger & Gerstner (2017) PLoS Comput Biol 13(4): e1005507, as used by René, Longtin &
Macke (2020) Neural Comput 32(8):1448–1498. Specification: ``specs/mesogif.md``.

Modules: :mod:`.parameters` (ground truth, validation), :mod:`.stimuli` (inputs, §6),
:mod:`.meso` (simulator and teacher-forced expected counts, §3), :mod:`.stationary` (§4.4),
:mod:`.measures` (performance measures, §7), :mod:`.benchmark` (throughput).

This module also holds the **zoo adapter** (``simulate``, ``observation_dims``, ``coords``):
``params`` carries only the free parameters of an entry, with a leading batch axis; the
fixed ones come from the ground truth of spec §5.1/§5.2 (optionally overridden by
``config["fixed"]``).

Config keys
-----------
``populations``
    2 (E, I) or 4 (L2/3e, L2/3i, L4e, L4i).
``duration_s``
    Length of the simulation in s.
``stimulus``
    Input description for :func:`.stimuli.make_stimulus`, e.g. ``{"kind": "sine", "seed": 0}``.
``K`` (default 1000), ``dt`` (default 0.001 s), ``init`` (default ``"silent"``), ``variant``
(default ``"canonical"``), ``linear_switch`` (default True)
    Passed to :func:`.meso.simulate`.
``fixed`` (optional)
    Mapping of parameter name to value (unbatched) overriding the ground truth.
``generator`` (optional, default ``"meso"``)
    ``"micro"`` simulates the microscopic GIF network of spec §2 instead (brian2,
    :func:`.micro.simulate_micro`; Bernoulli connectivity, or ``connectivity`` from the config) —
    the paper's way of generating ground-truth data. ``codegen`` selects brian2's code generation.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import likelihood, measures, meso, parameters, stationary, stimuli
from .meso import expected_counts, history_size
from .parameters import (
    PARAMETER_KEYS,
    check_parameters,
    excitatory_populations,
    four_population,
    population_names,
    two_population,
)

__all__ = [
    "simulate",
    "constant_data",
    "observation_dims",
    "coords",
    "ground_truth",
    "expected_counts",
    "history_size",
    "check_parameters",
    "two_population",
    "four_population",
    "population_names",
    "excitatory_populations",
    "PARAMETER_KEYS",
    "meso",
    "parameters",
    "stimuli",
    "stationary",
    "measures",
    "likelihood",
]

_EXCITATORY_ONLY = ("J_theta", "tau_theta")


#: Units of the observation variables and coordinates (for tables and figure axes).
OBSERVATION_UNITS = {"counts": "spikes per bin", "input": "mA"}
COORDINATE_UNITS = {"time": "s", "population": "label"}


def ground_truth(populations: int) -> dict[str, np.ndarray]:
    """Ground-truth parameter set of the 2- or 4-population model (spec §5.1, §5.2)."""
    n = len(population_names(populations))
    return two_population() if n == 2 else four_population()


def _config_value(config: Mapping, key: str, default):
    return config[key] if key in config else default


def _duration_bins(config: Mapping) -> tuple[int, float]:
    if "duration_s" not in config:
        raise ValueError("config needs 'duration_s' (length of the simulation in s)")
    dt = float(_config_value(config, "dt", 1e-3))
    duration = float(config["duration_s"])
    T = int(round(duration / dt))
    if T < 1 or abs(T * dt - duration) > 1e-9 * max(1.0, duration):
        raise ValueError(f"config 'duration_s'={duration!r} must be a positive multiple of dt={dt!r}")
    return T, dt


def full_parameters(params: Mapping[str, np.ndarray], config: Mapping, batch_size: int) -> dict[str, np.ndarray]:
    """Batched full parameter set: ground truth (+ ``config["fixed"]``) with the free ``params`` inserted.

    ``J_theta`` and ``tau_theta`` may be given for the excitatory populations only, shape
    ``(B, n_exc)``, or for all populations, ``(B, M)``.
    """
    if "populations" not in config:
        raise ValueError("config needs 'populations' (2 or 4)")
    n = int(config["populations"])
    base = ground_truth(n)
    M = len(population_names(n))
    for key, value in dict(_config_value(config, "fixed", {})).items():
        if key not in base:
            raise ValueError(f"config 'fixed' has unknown parameter {key!r}; valid: {list(PARAMETER_KEYS)}")
        base[key] = np.broadcast_to(np.asarray(value, dtype=np.float64), base[key].shape).copy()
    full = {k: np.repeat(v[None], batch_size, axis=0) for k, v in base.items()}
    exc = excitatory_populations(n)
    for key, value in params.items():
        if key not in base:
            raise ValueError(f"unknown free parameter {key!r}; valid names: {list(PARAMETER_KEYS)}")
        arr = np.asarray(value, dtype=np.float64)
        if key in _EXCITATORY_ONLY and arr.shape == (batch_size, len(exc)) and len(exc) != M:
            full[key][:, exc] = arr
            continue
        expected = (batch_size,) + base[key].shape
        if arr.shape != expected:
            hint = f" or {(batch_size, len(exc))} (excitatory populations only)" if key in _EXCITATORY_ONLY else ""
            raise ValueError(f"free parameter {key!r} has shape {arr.shape}, expected {expected}{hint}")
        full[key] = arr.copy()
    return full


def simulate(params: Mapping[str, np.ndarray], *, config: Mapping, seeds: np.ndarray) -> dict[str, np.ndarray]:
    """Zoo adapter: simulate population spike counts for a batch of free-parameter values.

    Parameters
    ----------
    params : mapping of str to numpy.ndarray
        Free parameters with a leading batch axis B, e.g. ``w`` (B, M, M) mV, ``tau_m``,
        ``c``, ``Delta_u``, ``tau_s`` (B, M), ``J_theta`` and ``tau_theta`` (B, n_exc) for the
        excitatory populations.
    config : mapping
        Fixed configuration (see the module docstring).
    seeds : numpy.ndarray of uint64, shape (B,)
        One seed per simulation (binomial emission noise); the stimulus has its own seed in
        ``config["stimulus"]``.

    Returns
    -------
    dict
        ``{"counts": int64 array (B, T, M)}``.
    """
    seeds = np.atleast_1d(np.asarray(seeds))
    B = seeds.shape[0]
    for key, value in params.items():
        if np.ndim(value) < 1 or np.shape(value)[0] != B:
            raise ValueError(f"free parameter {key!r} must have a leading batch axis of length {B} (= len(seeds))")
    full = full_parameters(params, config, B)
    T, dt = _duration_bins(config)
    inputs = _inputs(config)
    generator = _config_value(config, "generator", "meso")
    if generator == "micro":
        from .micro import simulate_micro

        counts = []
        for b in range(B):
            one = {k: v[b] for k, v in full.items()}
            counts.append(
                simulate_micro(
                    one,
                    inputs,
                    duration_s=T * dt,
                    seed=int(seeds[b]),
                    connectivity=_config_value(config, "connectivity", "bernoulli"),
                    codegen=_config_value(config, "codegen", "auto"),
                )
            )
        return {"counts": np.stack(counts).astype(np.int64)}
    if generator != "meso":
        raise ValueError(f"config 'generator' must be 'meso' or 'micro' (got {generator!r})")
    out = meso.simulate(
        full,
        inputs,
        seeds=seeds.astype(np.uint64),
        K=_config_value(config, "K", meso.DEFAULT_K),
        variant=_config_value(config, "variant", "canonical"),
        init=_config_value(config, "init", "silent"),
        dt=dt,
        linear_switch=bool(_config_value(config, "linear_switch", True)),
    )
    return {"counts": out["counts"]}


def _inputs(config: Mapping) -> np.ndarray:
    """The frozen input (T, M) in mA described by ``config["stimulus"]`` (spec §6)."""
    T, dt = _duration_bins(config)
    if "stimulus" not in config:
        raise ValueError("config needs 'stimulus', e.g. {'kind': 'sine', 'seed': 0}")
    return stimuli.make_stimulus(config["stimulus"], populations=int(config["populations"]), duration_s=T * dt, dt=dt)


def constant_data(config: Mapping) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """Fixed inputs for the result's ``constant_data`` group: the stimulus (time, population), mA."""
    return {"input": (("time", "population"), _inputs(config))}


def observation_dims(config: Mapping) -> dict[str, tuple[str, ...]]:
    """Dimension names of the observations: ``{"counts": ("time", "population")}``."""
    return {"counts": ("time", "population")}


def coords(config: Mapping) -> dict[str, object]:
    """Coordinates: population names and bin start times ``t_k = k dt`` (s)."""
    T, dt = _duration_bins(config)
    return {"population": population_names(int(config["populations"])), "time": np.arange(T) * dt}


def loglik(params: Mapping, data: Mapping, *, config: Mapping):
    """Zoo adapter: the log-likelihood of observed counts as a PyTensor scalar (spec §4.1).

    Parameters
    ----------
    params : mapping of str to pytensor variable
        Free parameters named as in the entry, on their natural scale and without batch axis:
        ``w`` (M, M) mV, ``tau_m``, ``c``, ``Delta_u``, ``tau_s`` (M,), ``J_theta`` mV·s and
        ``tau_theta`` s (n_exc,) — any subset; the others are fixed from ``config``.
    data : mapping
        ``{"counts": int array (T, M)}``.
    config : mapping
        The model configuration (module docstring) plus the likelihood keys ``burn_in_s``
        (default 10 s, spec §4.3), ``likelihood_K`` (default ``"auto-per-population"`` at the
        reference parameters, spec §3.6) and ``checkpoint`` (see
        :class:`.likelihood.MesoGIFLikelihood`).

    Returns
    -------
    pytensor.tensor.TensorVariable
        Scalar float64; the value is computed by a compiled Numba kernel and its gradient by the
        exact hand-derived adjoint (:mod:`.adjoint`), both wrapped as PyTensor Ops.
    """
    return likelihood.pytensor_loglik(params, data, config=config)


def loglik_and_grad(free_params: Mapping, counts, *, config: Mapping):
    """Log-likelihood and its exact gradient in NumPy: ``(float, {name: array})``.

    See :func:`.likelihood.loglik_and_grad`.
    """
    return likelihood.loglik_and_grad(free_params, counts, config=config)
