"""Parameters, prior bounds and unit conversions of the pyloric network (spec §2.4).

31 free parameters: 3 neurons x 8 membrane conductance densities (mS/cm^2, independent
uniforms) and 7 synaptic conductances (absolute, uniform in the natural log of the
conductance in mS). The zoo passes them as two arrays with a leading batch axis:

* ``membrane`` (B, 3, 8) in **mS/cm^2**, dims (neuron, current) with
  ``neuron = ["AB/PD", "LP", "PY"]`` and
  ``current = ["Na", "CaT", "CaS", "A", "KCa", "Kd", "H", "leak"]``;
* ``synapses`` (B, 7) in **nS**, dim synapse with
  ``synapse = ["AB-LP", "PD-LP", "AB-PY", "PD-PY", "LP-PD", "LP-PY", "PY-LP"]``.

The upstream 31-vector (eLife-2020, pyloric, PNAS-2022) is the membrane densities in table
order followed by ``ln(g / mS)`` of the synapses; :func:`params_from_theta` and
:func:`theta_from_params` convert between the two.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .simulator import CURRENTS, NEURONS, SYNAPSES

#: lower bounds of the membrane conductance densities (mS/cm^2), (neuron, current)
MEMBRANE_LOWER = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0, 25.0, 0.0, 0.0],
        [0.0, 0.0, 2.0, 10.0, 0.0, 0.0, 0.0, 0.01],
        [0.0, 0.0, 0.0, 30.0, 0.0, 50.0, 0.0, 0.0],
    ]
)
#: upper bounds of the membrane conductance densities (mS/cm^2), (neuron, current)
MEMBRANE_UPPER = np.array(
    [
        [500.0, 7.5, 8.0, 60.0, 15.0, 150.0, 0.02, 0.01],
        [200.0, 2.5, 12.0, 60.0, 10.0, 125.0, 0.06, 0.04],
        [600.0, 12.5, 4.0, 60.0, 5.0, 150.0, 0.06, 0.04],
    ]
)
#: bounds of ln(g / mS) of the synapses: 0.01 nS ... 1 µS (AB-LP: ... 10 µS)
SYNAPSE_LOG_MS_LOWER = np.full(7, np.log(1e-8))
SYNAPSE_LOG_MS_UPPER = np.array([np.log(1e-2)] + [np.log(1e-3)] * 6)
#: the same bounds in nS (log-uniform prior)
SYNAPSE_NS_LOWER = np.exp(SYNAPSE_LOG_MS_LOWER) * 1e6
SYNAPSE_NS_UPPER = np.exp(SYNAPSE_LOG_MS_UPPER) * 1e6

NS_PER_MS = 1e6


def parameter_names() -> list[str]:
    """Names of the 31 upstream parameters in vector order (e.g. ``"AB/PD Na"``, ``"LP-PY"``)."""
    return [f"{n} {c}" for n in NEURONS for c in CURRENTS] + list(SYNAPSES)


def theta_lower_upper() -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the upstream 31-vector (membrane mS/cm^2, then synapses ln mS) (§2.4)."""
    lo = np.concatenate([MEMBRANE_LOWER.ravel(), SYNAPSE_LOG_MS_LOWER])
    hi = np.concatenate([MEMBRANE_UPPER.ravel(), SYNAPSE_LOG_MS_UPPER])
    return lo, hi


def params_from_theta(theta: np.ndarray) -> dict[str, np.ndarray]:
    """Upstream 31-vectors -> zoo parameter arrays.

    Parameters
    ----------
    theta : numpy.ndarray, shape (B, 31) or (31,)
        Membrane densities (mS/cm^2) in table order, then ``ln(g / mS)`` of the synapses.

    Returns
    -------
    dict
        ``membrane`` (B, 3, 8) mS/cm^2 and ``synapses`` (B, 7) nS.
    """
    t = np.atleast_2d(np.asarray(theta, dtype=np.float64))
    if t.shape[-1] != 31:
        raise ValueError(f"theta must have 31 entries on its last axis, got shape {t.shape}")
    return {
        "membrane": t[:, :24].reshape(-1, 3, 8).copy(),
        "synapses": np.exp(t[:, 24:]) * NS_PER_MS,
    }


def theta_from_params(params: Mapping[str, np.ndarray]) -> np.ndarray:
    """Zoo parameter arrays -> upstream 31-vectors (inverse of :func:`params_from_theta`)."""
    mem = np.asarray(params["membrane"], dtype=np.float64).reshape(-1, 24)
    syn = np.asarray(params["synapses"], dtype=np.float64).reshape(-1, 7)
    return np.concatenate([mem, np.log(syn / NS_PER_MS)], axis=1)


def sample_prior(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw ``n`` parameter sets from the prior of §2.4.

    Parameters
    ----------
    n : int
        Number of draws.
    rng : numpy.random.Generator
        Source of randomness (pass one explicitly; no global state).

    Returns
    -------
    dict
        ``membrane`` (n, 3, 8) mS/cm^2 (uniform) and ``synapses`` (n, 7) nS (log-uniform).
    """
    lo, hi = theta_lower_upper()
    theta = lo + (hi - lo) * rng.random((int(n), 31))
    return params_from_theta(theta)
