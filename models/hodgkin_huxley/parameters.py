"""Parameters, priors and fixed constants of the Hodgkin–Huxley model (spec §1.2–§1.3).

The parameter order and the sign convention (``neg_VT = -V_T``, ``neg_Eleak = -E_leak``, both entered as
positive numbers) are those of the eLife-2020 posterior plots (spec ``simulator-models.md`` §1.3).

=====  ============  ============  =============================================  ==============  =======
 #     name          unit          meaning                                        prior (eLife)   θ*
=====  ============  ============  =============================================  ==============  =======
 1     gNa           mS/cm²        maximal Na conductance  :math:`\\bar g_{Na}`     U(0.5, 80)      50
 2     gK            mS/cm²        maximal delayed-rectifier K :math:`\\bar g_K`    U(1e-4, 15)     5
 3     gleak         mS/cm²        leak conductance :math:`g_{leak}`               U(1e-4, 0.6)    0.1
 4     gM            mS/cm²        maximal slow (M-type) K :math:`\\bar g_M`        U(1e-4, 0.6)    0.07
 5     tau_max       ms            slow-K time-constant scale                     U(50, 3000)     600
 6     neg_VT        mV            :math:`-V_T`, spike-threshold offset           U(40, 90)       60
 7     sigma         µA ms^½/cm²   intrinsic current-noise scale                  U(1e-4, 0.15)   0.1
 8     neg_Eleak     mV            :math:`-E_{leak}`, leak reversal               U(35, 100)      70
=====  ============  ============  =============================================  ==============  =======
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: Parameter names in the eLife-2020 order (spec §1.3).
PARAMETER_NAMES: tuple[str, ...] = (
    "gNa",
    "gK",
    "gleak",
    "gM",
    "tau_max",
    "neg_VT",
    "sigma",
    "neg_Eleak",
)

#: Units of the parameters, same order as :data:`PARAMETER_NAMES`.
PARAMETER_UNITS: dict[str, str] = {
    "gNa": "mS/cm^2",
    "gK": "mS/cm^2",
    "gleak": "mS/cm^2",
    "gM": "mS/cm^2",
    "tau_max": "ms",
    "neg_VT": "mV",
    "sigma": "uA ms^0.5/cm^2",
    "neg_Eleak": "mV",
}

#: Ground truth θ* of the synthetic observation (spec §1.3, §1.7).
THETA_STAR: dict[str, float] = {
    "gNa": 50.0,
    "gK": 5.0,
    "gleak": 0.1,
    "gM": 0.07,
    "tau_max": 600.0,
    "neg_VT": 60.0,
    "sigma": 0.1,
    "neg_Eleak": 70.0,
}

#: Bounds (low, high) of the independent uniform prior of eLife-2020 ("prior_extent", spec §1.3).
PRIOR_BOUNDS: dict[str, tuple[float, float]] = {
    "gNa": (0.5, 80.0),
    "gK": (1e-4, 15.0),
    "gleak": (1e-4, 0.6),
    "gM": (1e-4, 0.6),
    "tau_max": (50.0, 3000.0),
    "neg_VT": (40.0, 90.0),
    "sigma": (1e-4, 0.15),
    "neg_Eleak": (35.0, 100.0),
}

#: Membrane capacitance density C_m (µF/cm²), spec §1.3.
C_M = 1.0
#: Na reversal potential (mV), spec §1.3.
E_NA = 53.0
#: K reversal potential (mV), spec §1.3 (shared by the delayed rectifier and the M current).
E_K = -107.0


def parameter_matrix(
    params: Mapping[str, np.ndarray], fixed: Mapping[str, float] | None = None
) -> np.ndarray:
    """Assemble the ``(B, 8)`` parameter matrix in :data:`PARAMETER_NAMES` order.

    Parameters
    ----------
    params : mapping of str to array_like
        Free parameters, each with a leading batch axis ``(B,)`` (a scalar is read as ``B = 1``).
    fixed : mapping of str to float, optional
        Values of the parameters held fixed (e.g. the six fixed parameters of the sbi tutorial's
        2-parameter variant, spec §1.3).

    Returns
    -------
    numpy.ndarray
        ``(B, 8)`` float64 array, columns ordered as :data:`PARAMETER_NAMES`.

    Raises
    ------
    ValueError
        For an unknown name, a parameter both free and fixed, a missing parameter, inconsistent
        batch sizes, or a non-finite value.
    """
    fixed = dict(fixed or {})
    unknown = sorted(set(params) - set(PARAMETER_NAMES)) + sorted(set(fixed) - set(PARAMETER_NAMES))
    if unknown:
        raise ValueError(
            f"unknown Hodgkin–Huxley parameter(s) {unknown}; expected names from {list(PARAMETER_NAMES)}"
        )
    both = sorted(set(params) & set(fixed))
    if both:
        raise ValueError(f"parameter(s) {both} given both as free and in config['fixed']; give each once")
    missing = [name for name in PARAMETER_NAMES if name not in params and name not in fixed]
    if missing:
        raise ValueError(
            f"missing Hodgkin–Huxley parameter(s) {missing}: pass them in params or in config['fixed'] "
            f"(θ* values: {[THETA_STAR[m] for m in missing]})"
        )
    arrays = {name: np.atleast_1d(np.asarray(value, dtype=np.float64)) for name, value in params.items()}
    sizes = {name: a.shape for name, a in arrays.items()}
    if any(a.ndim != 1 for a in arrays.values()) or len({a.shape[0] for a in arrays.values()}) > 1:
        raise ValueError(f"every free parameter must have the same shape (B,); got shapes {sizes}")
    batch = next(iter(arrays.values())).shape[0] if arrays else 1
    theta = np.empty((batch, len(PARAMETER_NAMES)), dtype=np.float64)
    for column, name in enumerate(PARAMETER_NAMES):
        theta[:, column] = arrays[name] if name in arrays else float(fixed[name])
    if not np.all(np.isfinite(theta)):
        bad = [PARAMETER_NAMES[c] for c in np.unique(np.nonzero(~np.isfinite(theta))[1])]
        raise ValueError(f"non-finite values in parameter(s) {bad}")
    return theta
