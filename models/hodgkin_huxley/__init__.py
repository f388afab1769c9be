"""Hodgkin–Huxley neuron with Pospischil-2008 kinetics (spec ``simulator-models.md`` §1).

Single-compartment conductance-based neuron (Na, delayed-rectifier K, slow M-type K, leak, intrinsic
current noise) driven by a current step; eight biophysical parameters are inferred from seven
voltage-trace features (Gonçalves et al., eLife 9:e56261, 2020, Fig. 5; the sbi Hodgkin–Huxley
tutorial uses the 2-parameter sub-model with ``gNa, gK`` free).

Zoo adapter (the functions the zoo calls):

* :func:`simulate` — batched simulation, one seed per simulation, returns ``{"voltage": (B, T)}``;
* :func:`simulate_features` — fused simulation and features without storing traces;
* :func:`features`, :func:`feature_names` — the 7 (or 13) summary features of spec §1.6;
* :func:`observation_dims`, :func:`coords` — dims and coordinates of the observations.

Configuration keys (``config``):

==================  ===========================================================================
key                 meaning
==================  ===========================================================================
``protocol``        ``"synthetic"`` (default; spec §1.4, 120 ms at 0.01 ms), ``"allen"`` or
                    ``"allen-family"`` (the Allen timing with per-simulation J and V0, below)
``cell``            Allen specimen id (``protocol = "allen"``), one of :func:`allen_cells`
``fixed``           values of the parameters that are not free (e.g. the sbi tutorial's six)
``record``          bool, default True: return voltage traces; False: return only features
``record_every``    int, default 1: keep every r-th sample of the recorded traces
``n_features``      7 (default) or 13: feature set of :func:`features` / :func:`simulate_features`
==================  ===========================================================================

Protocol covariates (``protocol = "allen-family"``): one amortised estimator for all ten Allen
cells needs the cell's protocol (step amplitude J = I / A_soma and V0, spec §1.7) as an input.
The simulator then takes two more parameters, ``J_step`` (µA/cm²) and ``V0`` (mV), per simulation,
and *echoes them as the last two features*: NPE learns p(θ, J, V0 | x, J, V0), whose (J, V0)
marginal is concentrated at the conditioning values, so the 8 biophysical marginals are
p(θ | x, protocol) — conditioning by simulation, not inference (the echoed J/V0 posterior is a
check that the estimator reads the protocol).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .allen import AllenCell, allen_cell, allen_cells, observed_features
from .baseline import benchmark
from .features import FEATURE_UNITS, compute_features
from .features import feature_names as _feature_names
from .parameters import PARAMETER_NAMES, PARAMETER_UNITS, PRIOR_BOUNDS, THETA_STAR, parameter_matrix
from .protocols import (
    ALLEN_FAMILY_J_RANGE,
    ALLEN_FAMILY_V0_RANGE,
    Protocol,
    allen_family_protocol,
    allen_protocol,
    protocol_from_config,
    synthetic_protocol,
)
from .simulator import run_batch

__all__ = [
    "ALLEN_FAMILY_J_RANGE",
    "ALLEN_FAMILY_V0_RANGE",
    "COVARIATE_NAMES",
    "AllenCell",
    "FEATURE_UNITS",
    "PARAMETER_NAMES",
    "PARAMETER_UNITS",
    "PRIOR_BOUNDS",
    "Protocol",
    "THETA_STAR",
    "allen_cell",
    "allen_cells",
    "allen_family_protocol",
    "allen_protocol",
    "benchmark",
    "coords",
    "feature_names",
    "features",
    "observation_dims",
    "observed_features",
    "protocol_from_config",
    "run_batch",
    "simulate",
    "simulate_features",
    "synthetic_protocol",
]


#: Protocol covariates of ``protocol = "allen-family"``: extra parameters, echoed as features.
COVARIATE_NAMES = ("J_step", "V0")


def _is_family(config: Mapping) -> bool:
    return config.get("protocol", "synthetic") == "allen-family"


def _split_covariates(params: Mapping[str, np.ndarray], config: Mapping):
    """(biophysical params, {"amplitude", "v0"} run_batch keywords, covariate matrix (B, 2) or None)."""
    if not _is_family(config):
        return params, {}, None
    missing = [c for c in COVARIATE_NAMES if c not in params]
    if missing:
        raise ValueError(f"protocol 'allen-family' needs the protocol covariates {missing} as parameters (J_step in uA/cm^2, V0 in mV)")
    rest = {k: v for k, v in params.items() if k not in COVARIATE_NAMES}
    cov = np.stack([np.atleast_1d(np.asarray(params[c], dtype=np.float64)) for c in COVARIATE_NAMES], axis=1)
    return rest, {"amplitude": cov[:, 0], "v0": cov[:, 1]}, cov


def _record_every(config: Mapping) -> int:
    value = int(config.get("record_every", 1))
    if value < 1:
        raise ValueError(f"config['record_every'] must be a positive integer; got {value}")
    return value


def _n_features(config: Mapping) -> int:
    return int(config.get("n_features", 7))


def simulate(
    params: Mapping[str, np.ndarray], *, config: Mapping, seeds: np.ndarray
) -> dict[str, np.ndarray]:
    """Simulate a batch of Hodgkin–Huxley voltage traces (spec §1.2–§1.5).

    Parameters
    ----------
    params : mapping of str to numpy.ndarray
        Free parameters, each ``(B,)``, named from ``gNa, gK, gleak, gM, tau_max, neg_VT, sigma,
        neg_Eleak`` (units in :data:`PARAMETER_UNITS`); the others come from ``config["fixed"]``.
    config : mapping
        See the module docstring (``protocol``, ``cell``, ``fixed``, ``record``, ``record_every``,
        ``n_features``).
    seeds : numpy.ndarray
        ``(B,)`` uint64, one per simulation; simulation ``b`` depends only on its parameters and
        ``seeds[b]`` (its noise is ``RandomState(seeds[b]).standard_normal``, see :mod:`.noise`).

    Returns
    -------
    dict
        ``{"voltage": (B, T)}`` float64 membrane potential (mV) on :func:`coords` ``["time"]``; with
        ``config["record"] = False`` instead ``{"features": (B, F)}`` (no trace is stored), which
        :func:`features` passes through.
    """
    protocol = protocol_from_config(config)
    params, per_row, cov = _split_covariates(params, config)
    theta = parameter_matrix(params, config.get("fixed"))
    if config.get("record", True):
        voltage, _ = run_batch(theta, seeds, protocol, record=True, record_every=_record_every(config), **per_row)
        out = {"voltage": voltage}
        if cov is not None:
            out["covariates"] = cov
        return out
    _, feats = run_batch(theta, seeds, protocol, record=False, n_features=_n_features(config), **per_row)
    return {"features": feats if cov is None else np.concatenate([feats, cov], axis=1)}


def simulate_features(
    params: Mapping[str, np.ndarray], *, config: Mapping, seeds: np.ndarray
) -> np.ndarray:
    """Simulate and compute the features in one pass, without storing traces.

    Same arguments as :func:`simulate`; memory is O(threads × samples), whatever the batch size.
    Identical to ``features(simulate(params, config=config, seeds=seeds), config=config)``.

    Returns
    -------
    numpy.ndarray
        ``(B, F)`` float64 features (:func:`feature_names`).
    """
    protocol = protocol_from_config(config)
    params, per_row, cov = _split_covariates(params, config)
    theta = parameter_matrix(params, config.get("fixed"))
    _, feats = run_batch(theta, seeds, protocol, record=False, n_features=_n_features(config), **per_row)
    return feats if cov is None else np.concatenate([feats, cov], axis=1)


def features(observations: Mapping[str, np.ndarray], *, config: Mapping) -> np.ndarray:
    """Summary features of simulated or observed traces (spec §1.6).

    Parameters
    ----------
    observations : mapping
        ``{"voltage": (B, N)}`` full-resolution traces (``record_every = 1``) on the protocol's
        grid, or ``{"features": (B, F)}`` as :func:`simulate` returns with ``record = False``.
    config : mapping
        ``protocol`` / ``cell`` (windows, Δt) and ``n_features`` (7 or 13).

    Returns
    -------
    numpy.ndarray
        ``(B, F)`` float64, columns :func:`feature_names`; NaN only where the references give NaN
        (zero variance in the stimulus window).
    """
    if "features" in observations and "voltage" not in observations:
        return np.asarray(observations["features"], dtype=np.float64)
    if "voltage" not in observations:
        raise ValueError("observations must hold 'voltage' (B, N) traces or precomputed 'features'")
    if _record_every(config) != 1:
        raise ValueError("features need full-resolution traces: simulate with config['record_every'] = 1")
    feats = compute_features(observations["voltage"], protocol_from_config(config), _n_features(config))
    if _is_family(config):
        if "covariates" not in observations:
            raise ValueError("protocol 'allen-family' traces need their 'covariates' (B, 2) = (J_step, V0), as simulate returns them")
        feats = np.concatenate([feats, np.asarray(observations["covariates"], dtype=np.float64)], axis=1)
    return feats


def feature_names(config: Mapping | None = None) -> list[str]:
    """Feature names in output order.

    ===============  =======  =============================================================
    name             unit     meaning
    ===============  =======  =============================================================
    spike_count      1        spikes during the step (t_on, t_off)
    rest_mean        mV       mean voltage before the step
    rest_std         mV       SD of the voltage in the last 10 % before the step
    mean             mV       mean voltage during the step
    var              mV²      variance during the step
    skew             1        skewness during the step
    kurt             1        kurtosis (Pearson, Gaussian = 3) during the step
    autocorr_Lms     1        (13-set) autocorrelation at lag L = 1..5 ms during the step
    moment5          1        (13-set) 5th standardised moment during the step
    J_step           uA/cm²   (``allen-family``) step amplitude, echoed protocol covariate
    V0               mV       (``allen-family``) initial voltage, echoed protocol covariate
    ===============  =======  =============================================================
    """
    names = list(_feature_names(_n_features(config or {})))
    return names + list(COVARIATE_NAMES) if _is_family(config or {}) else names


#: Units of the observation variables and coordinates (for tables and figure axes).
OBSERVATION_UNITS = {"voltage": "mV", "features": "mixed (see FEATURE_UNITS)", "covariates": "uA/cm^2, mV"}
COORDINATE_UNITS = {"time": "ms", "feature": "label", "covariate": "label"}


def observation_dims(config: Mapping) -> dict[str, tuple[str, ...]]:
    """Dims of each observation (after the batch axis): ``{"voltage": ("time",)}``, or
    ``{"features": ("feature",)}`` when ``config["record"]`` is False."""
    if not config.get("record", True):
        return {"features": ("feature",)}
    if _is_family(config):
        return {"voltage": ("time",), "covariates": ("covariate",)}
    return {"voltage": ("time",)}


def coords(config: Mapping) -> dict[str, np.ndarray]:
    """Coordinates: ``{"time": t (ms)}`` of the recorded samples, or ``{"feature": names}``."""
    if not config.get("record", True):
        return {"feature": np.asarray(feature_names(config))}
    out = {"time": protocol_from_config(config).time[:: _record_every(config)]}
    if _is_family(config):
        out["covariate"] = np.asarray(COVARIATE_NAMES)
    return out
