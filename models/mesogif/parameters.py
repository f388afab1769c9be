"""Ground-truth parameter sets of the mesoGIF model and their validation.

A parameter set is a plain ``dict[str, numpy.ndarray]`` (float64) with exactly the keys below
(spec ``specs/mesogif.md`` §1.4, §5). ``M`` is the number of populations; matrices are stored
as ``(target, source)`` (rows = postsynaptic population α, columns = presynaptic population β).
The same keys are used by the microscopic network (``micro.py``), so a parameter set can be
handed to either simulator.

==============  ==========  =======  ==========================================================
key             shape       unit     meaning
==============  ==========  =======  ==========================================================
``N``           (M,)        --       number of neurons of each population
``R``           (M,)        Ω        membrane resistance (``R I_ext`` is in mV for I in mA)
``u_rest``      (M,)        mV       resting potential
``tau_m``       (M,)        s        membrane time constant
``t_ref``       (M,)        s        absolute refractory period
``u_th``        (M,)        mV       non-adapting threshold
``u_r``         (M,)        mV       reset potential
``c``           (M,)        Hz       escape rate at threshold
``Delta_u``     (M,)        mV       threshold softness (noise level) of the escape rate
``tau_s``       (M,)        s        synaptic time constant, indexed by the **source** population
``J_theta``     (M,)        mV·s     adaptation strength (integral of the adaptation kernel)
``tau_theta``   (M,)        s        adaptation time constant
``delay``       (M, M)      s        transmission delay Δ_αβ (target, source)
``p``           (M, M)      --       connection probability (target, source)
``w``           (M, M)      mV       connection weight (target, source)
==============  ==========  =======  ==========================================================

The escape rate is :math:`f_\\alpha(u-\\vartheta)=c_\\alpha\\exp((u-\\vartheta)/\\Delta u_\\alpha)`;
the adaptation kernel is :math:`\\theta_\\alpha(t)=J_{\\theta,\\alpha}/\\tau_{\\theta,\\alpha}\\,
e^{-t/\\tau_{\\theta,\\alpha}}` (mV). Only the product ``p * N[source] * w`` (the effective
coupling J, mV) enters the mesoscopic model (spec §3.2, §5.6).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "PARAMETER_KEYS",
    "VECTOR_KEYS",
    "MATRIX_KEYS",
    "HETEROGENEOUS_LOG10_TAU",
    "two_population",
    "four_population",
    "population_names",
    "excitatory_populations",
    "effective_coupling",
    "check_parameters",
    "refractory_bins",
    "delay_bins",
]

#: Keys of a parameter set whose value has shape ``(..., M)``.
VECTOR_KEYS: tuple[str, ...] = (
    "N",
    "R",
    "u_rest",
    "tau_m",
    "t_ref",
    "u_th",
    "u_r",
    "c",
    "Delta_u",
    "tau_s",
    "J_theta",
    "tau_theta",
)
#: Keys of a parameter set whose value has shape ``(..., M, M)`` (target, source).
MATRIX_KEYS: tuple[str, ...] = ("delay", "p", "w")
#: All keys of a parameter set, in documentation order.
PARAMETER_KEYS: tuple[str, ...] = VECTOR_KEYS + MATRIX_KEYS

_POPULATION_NAMES = {
    2: ("E", "I"),
    4: ("L2/3e", "L2/3i", "L4e", "L4i"),
}
_EXCITATORY = {2: (0,), 4: (0, 2)}

#: Heterogeneous two-population network (spec §2.5, §5.5; René et al. 2020 Table 8): per-neuron
#: ``log10(tau / 1 s) ~ Normal(mu, sigma**2)``, given as ``(mu, sigma)``. ``tau_theta`` is
#: sampled for the E population only; all other parameters are those of :func:`two_population`.
HETEROGENEOUS_LOG10_TAU: dict[str, tuple[tuple[float, float] | None, ...]] = {
    "tau_m": ((-1.6, 0.5), (-1.8, 0.5)),
    "tau_theta": ((-0.7, 0.5), None),
}


def population_names(n: int) -> list[str]:
    """Names of the populations of the ``n``-population model.

    Parameters
    ----------
    n : int
        Number of populations, 2 (``["E", "I"]``) or 4 (``["L2/3e", "L2/3i", "L4e", "L4i"]``).

    Returns
    -------
    list of str
        Population names in storage order (spec §1.1).
    """
    try:
        return list(_POPULATION_NAMES[int(n)])
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"populations must be 2 (E, I) or 4 (L2/3e, L2/3i, L4e, L4i), got {n!r}"
        ) from None


def excitatory_populations(n: int) -> list[int]:
    """Indices of the excitatory (adapting) populations of the ``n``-population model.

    These are the populations whose ``J_theta`` and ``tau_theta`` are inferred (spec §5.1, §5.2).
    """
    population_names(n)  # validates n
    return list(_EXCITATORY[int(n)])


def two_population() -> dict[str, np.ndarray]:
    """Ground-truth parameters of the 2-population (E, I) model (spec §5.1; René et al. Table 7).

    Returns
    -------
    dict of str to numpy.ndarray
        Parameter set with the keys and units of the module docstring. The I population has no
        adaptation (``J_theta = 0``); its ``tau_theta`` is set to 1 s (any positive value,
        spec §9 item 23). Effective couplings ``J = p N w`` are
        ``[[54.030, -73.045], [43.298, -86.410]]`` mV.
    """
    return {
        "N": np.array([438.0, 109.0]),
        "R": np.array([19.0, 11.964]),  # Ω
        "u_rest": np.array([20.0, 19.5]),  # mV
        "tau_m": np.array([0.01, 0.01]),  # s
        "t_ref": np.array([0.002, 0.002]),  # s
        "u_th": np.array([15.0, 15.0]),  # mV
        "u_r": np.array([0.0, 0.0]),  # mV
        "c": np.array([10.0, 10.0]),  # Hz
        "Delta_u": np.array([5.0, 5.0]),  # mV
        "tau_s": np.array([0.003, 0.006]),  # s, by source population
        "J_theta": np.array([1.0, 0.0]),  # mV s
        "tau_theta": np.array([1.0, 1.0]),  # s
        "delay": np.full((2, 2), 0.001),  # s
        "p": np.array([[0.0497, 0.1350], [0.0794, 0.1597]]),
        "w": np.array([[2.482, -4.964], [1.245, -4.964]]),  # mV
    }


def four_population() -> dict[str, np.ndarray]:
    """Ground-truth parameters of the 4-population model (spec §5.2; René et al. Table 7).

    Populations are ordered L2/3e, L2/3i, L4e, L4i. L2/3 populations have ``R = 0`` and
    therefore receive no external input. Inhibitory populations have no adaptation
    (``J_theta = 0``, ``tau_theta = 1`` s as a harmless placeholder).

    Returns
    -------
    dict of str to numpy.ndarray
        Parameter set with the keys and units of the module docstring.
    """
    p = np.array(
        [
            [0.1009, 0.1689, 0.0437, 0.0818],
            [0.1346, 0.1371, 0.0316, 0.0515],
            [0.0077, 0.0059, 0.0497, 0.1350],
            [0.0691, 0.0029, 0.0794, 0.1597],
        ]
    )
    w = np.array(
        [
            [1.245, -4.964, 1.245, -4.964],
            [1.245, -4.964, 1.245, -4.964],
            [1.245, -4.964, 2.482, -4.964],
            [1.245, -4.964, 1.245, -4.964],
        ]
    )
    return {
        "N": np.array([413.0, 116.0, 438.0, 109.0]),
        "R": np.array([0.0, 0.0, 19.0, 11.964]),  # Ω
        "u_rest": np.array([18.0, 18.0, 25.0, 20.0]),  # mV
        "tau_m": np.full(4, 0.01),  # s
        "t_ref": np.full(4, 0.002),  # s
        "u_th": np.full(4, 15.0),  # mV
        "u_r": np.zeros(4),  # mV
        "c": np.full(4, 10.0),  # Hz
        "Delta_u": np.full(4, 5.0),  # mV
        "tau_s": np.array([0.003, 0.006, 0.003, 0.006]),  # s, by source population
        "J_theta": np.array([1.0, 0.0, 1.0, 0.0]),  # mV s
        "tau_theta": np.ones(4),  # s
        "delay": np.full((4, 4), 0.001),  # s
        "p": p,
        "w": w,  # mV
    }


def effective_coupling(params: Mapping[str, np.ndarray]) -> np.ndarray:
    """Effective mean-field coupling :math:`J_{\\alpha\\beta}=p_{\\alpha\\beta}N_\\beta w_{\\alpha\\beta}` (mV).

    Works on single ``(M, M)`` and batched ``(..., M, M)`` parameter sets (spec §3.2).
    """
    N = np.asarray(params["N"], dtype=np.float64)
    return np.asarray(params["p"], dtype=np.float64) * N[..., None, :] * np.asarray(
        params["w"], dtype=np.float64
    )


def _integer_bins(value: np.ndarray, dt: float, what: str, tol: float = 1e-6) -> np.ndarray:
    ratio = np.asarray(value, dtype=np.float64) / dt
    bins = np.rint(ratio)
    bad = np.abs(ratio - bins) > tol * np.maximum(1.0, np.abs(ratio))
    if np.any(bad):
        raise ValueError(
            f"{what} must be an integer multiple of dt={dt!r} s; got {what}/dt = "
            f"{ratio[bad].ravel()[:4].tolist()} (choose {what} = n*dt or a dt that divides it)"
        )
    return bins.astype(np.int64)


def refractory_bins(params: Mapping[str, np.ndarray], dt: float) -> np.ndarray:
    """:math:`k_{\\mathrm{ref}}=\\mathrm{round}(t_{\\mathrm{ref}}/\\Delta t)` (spec §1.2), int array ``(..., M)``.

    Raises
    ------
    ValueError
        If ``t_ref`` is not an integer multiple of ``dt``.
    """
    return _integer_bins(params["t_ref"], dt, "t_ref")


def delay_bins(params: Mapping[str, np.ndarray], dt: float) -> np.ndarray:
    """:math:`D_{\\alpha\\beta}=\\mathrm{round}(\\Delta_{\\alpha\\beta}/\\Delta t)\\ge1` (spec §1.2), int ``(..., M, M)``.

    Raises
    ------
    ValueError
        If a delay is not an integer multiple of ``dt`` or is shorter than one step.
    """
    D = _integer_bins(params["delay"], dt, "delay")
    if np.any(D < 1):
        raise ValueError(
            f"every delay must be at least one time step dt={dt!r} s (spec §3.8: D >= 1 keeps "
            f"the step causal); got delay/dt min = {int(D.min())}"
        )
    return D


def check_parameters(params: Mapping[str, np.ndarray], dt: float = 1e-3) -> int:
    """Validate a (possibly batched) mesoGIF parameter set; raise ``ValueError`` on bad input.

    Checks (spec §1.2–§1.4, §3.2, §3.8): all keys present and no unknown keys; every value
    finite; shapes ``(*batch, M)`` for vectors and ``(*batch, M, M)`` for ``delay``, ``p``,
    ``w`` with one common batch shape; ``N`` positive integers; ``tau_m``, ``tau_s``,
    ``tau_theta``, ``c``, ``Delta_u`` strictly positive; ``t_ref >= 0``, ``R >= 0``;
    ``0 <= p <= 1``; ``t_ref`` and ``delay`` integer multiples of ``dt`` and every delay at
    least one step. The check ``K > k_ref`` is made where ``K`` is chosen
    (:func:`mechzoo.models.mesogif.meso.history_size`).

    Parameters
    ----------
    params : mapping of str to array_like
        Parameter set, single or with leading batch axes.
    dt : float, default 1e-3
        Time step in s.

    Returns
    -------
    int
        The number of populations ``M``.
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a mapping of parameter name to array, got {type(params).__name__}")
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    missing = [k for k in PARAMETER_KEYS if k not in params]
    if missing:
        raise ValueError(
            f"parameter set is missing {missing}; a mesoGIF parameter set needs the keys "
            f"{list(PARAMETER_KEYS)} (start from two_population() or four_population())"
        )
    unknown = [k for k in params if k not in PARAMETER_KEYS]
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; valid keys are {list(PARAMETER_KEYS)}")
    arrays = {}
    for key in PARAMETER_KEYS:
        try:
            arrays[key] = np.asarray(params[key], dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"parameter {key!r} is not numeric: {err}") from None
        if not np.all(np.isfinite(arrays[key])):
            raise ValueError(f"parameter {key!r} contains NaN or infinite values")
    N = arrays["N"]
    if N.ndim < 1:
        raise ValueError("parameter 'N' must have shape (..., M) with M populations, got a scalar")
    M = N.shape[-1]
    batch = N.shape[:-1]
    for key in VECTOR_KEYS:
        if arrays[key].shape != batch + (M,):
            raise ValueError(
                f"parameter {key!r} has shape {arrays[key].shape}, expected {batch + (M,)} "
                f"(one value per population, M={M} from 'N')"
            )
    for key in MATRIX_KEYS:
        if arrays[key].shape != batch + (M, M):
            raise ValueError(
                f"parameter {key!r} has shape {arrays[key].shape}, expected {batch + (M, M)} "
                f"(rows = target, columns = source, M={M} from 'N')"
            )
    if np.any(N < 1) or np.any(N != np.rint(N)):
        raise ValueError(f"population sizes 'N' must be positive integers, got {N.ravel()[:8].tolist()}")
    for key, unit in (("tau_m", "s"), ("tau_s", "s"), ("tau_theta", "s"), ("c", "Hz"), ("Delta_u", "mV")):
        if np.any(arrays[key] <= 0):
            raise ValueError(
                f"parameter {key!r} must be strictly positive ({unit}), got min {arrays[key].min()!r}"
            )
    for key in ("t_ref", "R"):
        if np.any(arrays[key] < 0):
            raise ValueError(f"parameter {key!r} must be non-negative, got min {arrays[key].min()!r}")
    if np.any(arrays["p"] < 0) or np.any(arrays["p"] > 1):
        raise ValueError("connection probabilities 'p' must lie in [0, 1]")
    refractory_bins(arrays, dt)
    delay_bins(arrays, dt)
    return int(M)
