"""External input currents for the mesoGIF model (spec ``specs/mesogif.md`` §6).

Every input is one scalar current per population (shared by all neurons of that population),
in **mA**, so that ``R * I`` is in mV with ``R`` in Ω. Inputs are *frozen*: a given ``seed``
always gives the same current, independently of the spiking noise of a simulation.

Following spec §6.1 (René et al. 2020 §4.8.4) every input is generated on the fine grid
``dt_fine = 0.2 ms`` (Euler–Maruyama for the stochastic ones) and the mesoscopic input of bin
``k`` is the block average of the ``dt / dt_fine = 5`` fine samples
``j = 5k, ..., 5k + 4`` (spec §2.4). All functions return a float64 array of shape ``(T, M)``
with ``T = round(duration_s / dt)``; pass ``dt=dt_fine`` to get the fine-grid samples themselves
(the microscopic network uses those).

Presets with the paper's values are in :data:`SINE_PRESETS`, :data:`OU_PRESETS` and
:data:`IMPULSE_PRESETS`; :func:`make_stimulus` builds an input from a small description such as
``{"kind": "sine", "seed": 0}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.signal import lfilter

__all__ = [
    "DT_FINE",
    "SINE_PRESETS",
    "OU_PRESETS",
    "IMPULSE_PRESETS",
    "block_average",
    "sine_noise",
    "ornstein_uhlenbeck",
    "impulses",
    "step",
    "constant",
    "make_stimulus",
]

#: Fine time step of input generation and of the microscopic network (s), spec §1.2.
DT_FINE = 2e-4

#: Training input of spec §6.2 (René et al. Table 5): amplitude ``B`` (mA), noise ``q`` (mA),
#: frequency ``omega`` (Hz), by number of populations.
SINE_PRESETS: dict[int, dict[str, tuple[float, ...] | float]] = {
    2: {"amplitude": (0.25, 0.1), "noise_std": (4.0, 4.0), "frequency_hz": 2.0},
    4: {"amplitude": (0.0, 0.0, 0.25, 0.1), "noise_std": (4.0, 4.0, 4.0, 4.0), "frequency_hz": 2.0},
}

#: Test input of spec §6.3 (René et al. Table 6): stationary mean ``mu`` (mA), standard deviation
#: ``q`` (mA), initial value ``I(0)`` (mA), correlation time ``tau`` (s). 4-pop values for
#: L2/3e, L2/3i and L4i are the spec's assumptions (§9 item 6); L4e receives no OU input.
OU_PRESETS: dict[int, dict[str, tuple[float, ...] | float]] = {
    2: {"mean": (0.1, 0.05), "std": (0.125, 0.125), "initial": (0.1, 0.05), "tau": 1.0},
    4: {
        "mean": (0.5, 0.5, 0.0, 0.5),
        "std": (0.5, 0.5, 0.0, 0.5),
        "initial": (0.5, 0.5, 0.0, 0.5),
        "tau": 1.0,
    },
}

#: Impulse (ramp) test input of spec §6.4: heights ``B`` (mA) and half-width ``d`` (s). The
#: impulse times were lost from the paper; :func:`make_stimulus` uses ``times`` from the
#: description or, by default, 11, 13, 15 and 17 s (inside the evaluation window [10, 19) s).
IMPULSE_PRESETS: dict[int, dict[str, tuple[float, ...] | float]] = {
    4: {"amplitude": (0.0, 0.0, 0.6, -0.6), "half_width": 0.15, "times": (11.0, 13.0, 15.0, 17.0)},
    2: {"amplitude": (0.6, -0.6), "half_width": 0.15, "times": (11.0, 13.0, 15.0, 17.0)},
}


def _grid(duration_s: float, dt: float, dt_fine: float) -> tuple[int, int]:
    """Number of coarse bins ``T`` and fine samples per bin, with validation."""
    if not (np.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive number of seconds, got {duration_s!r}")
    if not (dt > 0 and dt_fine > 0):
        raise ValueError(f"dt and dt_fine must be positive, got dt={dt!r}, dt_fine={dt_fine!r}")
    T = int(round(duration_s / dt))
    if T < 1 or abs(T * dt - duration_s) > 1e-9 * max(1.0, duration_s):
        raise ValueError(f"duration_s={duration_s!r} must be a positive integer multiple of dt={dt!r}")
    factor = int(round(dt / dt_fine))
    if factor < 1 or abs(factor * dt_fine - dt) > 1e-12:
        raise ValueError(f"dt={dt!r} must be an integer multiple of dt_fine={dt_fine!r}")
    return T, factor


def _per_population(value, M: int | None, name: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1 or (M is not None and arr.shape[0] not in (1, M)):
        raise ValueError(f"{name} must be a scalar or have one value per population (M={M}), got shape {arr.shape}")
    if M is not None and arr.shape[0] == 1:
        arr = np.repeat(arr, M)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def block_average(fine: np.ndarray, factor: int) -> np.ndarray:
    """Average consecutive blocks of ``factor`` fine samples: ``I^(k) = mean_j I^f(factor k + j)``.

    Parameters
    ----------
    fine : numpy.ndarray, shape (T * factor, M)
        Fine-grid samples.
    factor : int
        Fine samples per coarse bin (5 for 1 ms / 0.2 ms, spec §2.4).

    Returns
    -------
    numpy.ndarray, shape (T, M)
    """
    fine = np.asarray(fine, dtype=np.float64)
    if fine.shape[0] % factor:
        raise ValueError(f"number of fine samples {fine.shape[0]} is not a multiple of {factor}")
    return fine.reshape(fine.shape[0] // factor, factor, *fine.shape[1:]).mean(axis=1)


def sine_noise(
    duration_s: float,
    amplitude: Sequence[float] | float,
    noise_std: Sequence[float] | float,
    *,
    seed: int,
    frequency_hz: float = 2.0,
    dt: float = 1e-3,
    dt_fine: float = DT_FINE,
    noise_scaling: str = "sqrt_dt",
) -> np.ndarray:
    """Sine-modulated frozen white noise, the training input (spec §6.2, René et al. eq. 4.28).

    .. math::  I_\\alpha(t) = B_\\alpha \\sin(2\\pi\\omega t) + q_\\alpha \\xi_\\alpha(t),

    sampled at the fine times ``t_j = j dt_fine`` with independent noise per population
    (sinusoids in phase, spec §9 item 25). With ``noise_scaling="sqrt_dt"`` (default, authors'
    library after 2018, spec §9 item 5) the fine-grid noise sample is
    ``q * sqrt(dt_fine) * zeta_j``, ``zeta_j ~ N(0, 1)`` (per-sample std 0.0566 mA for q = 4);
    ``"white"`` gives ``q / sqrt(dt_fine) * zeta_j`` (the mathematically consistent white noise,
    with very large amplitudes). The result is block-averaged to ``dt`` (spec §6.1).

    Parameters
    ----------
    duration_s : float
        Length of the input in s (the paper uses 20 s).
    amplitude : float or sequence of float
        Sine amplitude ``B`` per population (mA), e.g. ``(0.25, 0.1)`` for (E, I).
    noise_std : float or sequence of float
        Noise strength ``q`` per population (mA), e.g. 4.0.
    seed : int
        Seed of the frozen noise (``numpy.random.default_rng(seed)``).
    frequency_hz : float, default 2.0
        ``omega`` in Hz (period 0.5 s).
    dt, dt_fine : float
        Output and generation time steps in s.
    noise_scaling : {"sqrt_dt", "white"}
        Per-sample noise scaling, see above.

    Returns
    -------
    numpy.ndarray, shape (T, M), float64, mA
    """
    T, factor = _grid(duration_s, dt, dt_fine)
    B = _per_population(amplitude, None, "amplitude")
    q = _per_population(noise_std, B.shape[0], "noise_std")
    B = _per_population(B, q.shape[0], "amplitude")
    if noise_scaling == "sqrt_dt":
        scale = np.sqrt(dt_fine)
    elif noise_scaling == "white":
        scale = 1.0 / np.sqrt(dt_fine)
    else:
        raise ValueError(f"noise_scaling must be 'sqrt_dt' or 'white', got {noise_scaling!r}")
    n_fine = T * factor
    t = np.arange(n_fine) * dt_fine
    rng = np.random.default_rng(seed)
    zeta = rng.standard_normal((n_fine, B.shape[0]))
    fine = B[None, :] * np.sin(2.0 * np.pi * frequency_hz * t)[:, None] + q[None, :] * scale * zeta
    return block_average(fine, factor)


def ornstein_uhlenbeck(
    duration_s: float,
    mean: Sequence[float] | float,
    std: Sequence[float] | float,
    initial: Sequence[float] | float,
    *,
    seed: int,
    tau: float = 1.0,
    dt: float = 1e-3,
    dt_fine: float = DT_FINE,
) -> np.ndarray:
    """Frozen Ornstein–Uhlenbeck input, the test input (spec §6.3, René et al. eq. 4.29).

    .. math::  dI = \\frac{\\mu - I}{\\tau_{OU}}\\,dt + \\sqrt{2/\\tau_{OU}}\\; q\\, dW,

    integrated by Euler–Maruyama on the fine grid,
    ``I_{j+1} = I_j + (mu - I_j)/tau dt_fine + sqrt(2/tau) q sqrt(dt_fine) zeta_j`` with
    ``I_0 = initial``, then block-averaged to ``dt``. Stationary mean ``mu``, standard deviation
    ``q``, correlation time ``tau``.

    Parameters
    ----------
    duration_s : float
        Length in s.
    mean, std, initial : float or sequence of float
        ``mu`` (mA), ``q`` (mA) and ``I(0)`` (mA) per population.
    seed : int
        Seed of the frozen noise.
    tau : float, default 1.0
        Correlation time ``tau_OU`` in s.
    dt, dt_fine : float
        Output and generation time steps in s.

    Returns
    -------
    numpy.ndarray, shape (T, M), float64, mA
    """
    T, factor = _grid(duration_s, dt, dt_fine)
    mu = _per_population(mean, None, "mean")
    M = mu.shape[0]
    q = _per_population(std, M, "std")
    mu = _per_population(mu, q.shape[0], "mean")
    M = mu.shape[0]
    I0 = _per_population(initial, M, "initial")
    if not tau > 0:
        raise ValueError(f"tau must be positive (s), got {tau!r}")
    n_fine = T * factor
    rng = np.random.default_rng(seed)
    zeta = rng.standard_normal((n_fine, M))
    a = 1.0 - dt_fine / tau
    drive = mu[None, :] * dt_fine / tau + np.sqrt(2.0 / tau) * q[None, :] * np.sqrt(dt_fine) * zeta
    # y_j = a y_{j-1} + x_j with x_0 = I_0 and x_j = drive_{j-1}: y_j is the Euler-Maruyama I_j.
    x = np.empty_like(drive)
    x[0] = I0
    x[1:] = drive[:-1]
    fine = lfilter([1.0], [1.0, -a], x, axis=0)
    return block_average(fine, factor)


def impulses(
    duration_s: float,
    amplitude: Sequence[float] | float,
    times: Sequence[float],
    *,
    half_width: float = 0.15,
    dt: float = 1e-3,
    dt_fine: float = DT_FINE,
) -> np.ndarray:
    """Sum of triangular pulses, the 4-pop impulse test input (spec §6.4, eqs. 4.30–4.31).

    .. math::  I_\\alpha(t) = B_\\alpha \\sum_i r(t - t_i),\\qquad r(s)=\\max(0, 1 - |s|/d),

    i.e. linear from 0 at ``t_i - d`` to ``B`` at ``t_i`` and back to 0 at ``t_i + d``
    (``d`` = half-width, spec §9 item 7). Deterministic (no seed).

    Parameters
    ----------
    duration_s : float
        Length in s.
    amplitude : float or sequence of float
        Pulse heights ``B`` per population (mA), e.g. ``(0, 0, 0.6, -0.6)``.
    times : sequence of float
        Pulse centres ``t_i`` in s (record them; the paper's values are lost).
    half_width : float, default 0.15
        ``d`` in s.
    dt, dt_fine : float
        Output and generation time steps in s.

    Returns
    -------
    numpy.ndarray, shape (T, M), float64, mA
    """
    T, factor = _grid(duration_s, dt, dt_fine)
    B = _per_population(amplitude, None, "amplitude")
    if not half_width > 0:
        raise ValueError(f"half_width must be positive (s), got {half_width!r}")
    t = np.arange(T * factor) * dt_fine
    shape = np.zeros_like(t)
    for ti in np.atleast_1d(np.asarray(times, dtype=np.float64)):
        shape += np.maximum(0.0, 1.0 - np.abs(t - ti) / half_width)
    return block_average(shape[:, None] * B[None, :], factor)


def step(
    duration_s: float,
    amplitude: Sequence[float] | float,
    *,
    onset_s: float,
    offset_s: float | None = None,
    baseline: Sequence[float] | float = 0.0,
    dt: float = 1e-3,
    dt_fine: float = DT_FINE,
) -> np.ndarray:
    """Step input (spec §6.5): ``I = baseline + amplitude`` for ``onset_s <= t < offset_s``.

    Parameters
    ----------
    duration_s : float
        Length in s.
    amplitude : float or sequence of float
        Step height per population (mA).
    onset_s, offset_s : float
        Start and (optional) end of the step in s; no end if ``offset_s`` is None.
    baseline : float or sequence of float
        Current outside the step (mA).
    dt, dt_fine : float
        Output and generation time steps in s (the step edge is resolved on the fine grid).

    Returns
    -------
    numpy.ndarray, shape (T, M), float64, mA
    """
    T, factor = _grid(duration_s, dt, dt_fine)
    A = _per_population(amplitude, None, "amplitude")
    base = _per_population(baseline, A.shape[0], "baseline")
    A = _per_population(A, base.shape[0], "amplitude")
    t = np.arange(T * factor) * dt_fine
    on = t >= onset_s - 1e-12
    if offset_s is not None:
        on &= t < offset_s - 1e-12
    fine = base[None, :] + on[:, None] * A[None, :]
    return block_average(fine, factor)


def constant(
    duration_s: float, value: Sequence[float] | float, *, populations: int | None = None, dt: float = 1e-3
) -> np.ndarray:
    """Constant input (spec §6.5, e.g. 0.5 mA to E and I for the power spectra of Fig. 3).

    Parameters
    ----------
    duration_s : float
        Length in s.
    value : float or sequence of float
        Current per population (mA); a scalar needs ``populations``.
    populations : int, optional
        Number of populations M when ``value`` is a scalar.
    dt : float
        Time step in s.

    Returns
    -------
    numpy.ndarray, shape (T, M), float64, mA
    """
    T, _ = _grid(duration_s, dt, dt)
    v = _per_population(value, populations, "value")
    return np.repeat(v[None, :], T, axis=0)


def make_stimulus(
    description: Mapping, *, populations: int, duration_s: float, dt: float = 1e-3
) -> np.ndarray:
    """Build an input ``(T, M)`` (mA) from a small description, filling in the paper's presets.

    Parameters
    ----------
    description : mapping
        ``{"kind": ..., ...}`` with kind one of

        * ``"sine"``: training input (§6.2); keys ``seed`` (required), optional ``amplitude``,
          ``noise_std``, ``frequency_hz``, ``noise_scaling`` (defaults: :data:`SINE_PRESETS`);
        * ``"ou"``: test input (§6.3); keys ``seed`` (required), optional ``mean``, ``std``,
          ``initial``, ``tau`` (defaults: :data:`OU_PRESETS`);
        * ``"impulse"``: §6.4; optional ``amplitude``, ``times``, ``half_width``;
        * ``"step"``: keys ``amplitude``, ``onset_s``, optional ``offset_s``, ``baseline``;
        * ``"constant"``: key ``value``;
        * ``"zero"``: no input.
    populations : int
        Number of populations M (2 or 4).
    duration_s : float
        Length in s.
    dt : float
        Time step in s.

    Returns
    -------
    numpy.ndarray, shape (T, M), float64, mA
    """
    if not isinstance(description, Mapping) or "kind" not in description:
        raise ValueError("stimulus must be a mapping with a 'kind' key, e.g. {'kind': 'sine', 'seed': 0}")
    d = dict(description)
    kind = d.pop("kind")
    M = int(populations)

    def need_seed():
        if "seed" not in d:
            raise ValueError(f"stimulus kind {kind!r} is frozen noise and needs an explicit 'seed'")
        return int(d.pop("seed"))

    def check_unknown(allowed):
        extra = set(d) - set(allowed)
        if extra:
            raise ValueError(f"unknown key(s) {sorted(extra)} for stimulus kind {kind!r}; allowed: {sorted(allowed)}")

    if kind == "sine":
        seed = need_seed()
        preset = SINE_PRESETS.get(M, {})
        check_unknown({"amplitude", "noise_std", "frequency_hz", "noise_scaling"})
        args = {**preset, **d}
        if "amplitude" not in args or "noise_std" not in args:
            raise ValueError(f"no sine preset for {M} populations; give 'amplitude' and 'noise_std'")
        out = sine_noise(duration_s, seed=seed, dt=dt, **args)
    elif kind == "ou":
        seed = need_seed()
        preset = OU_PRESETS.get(M, {})
        check_unknown({"mean", "std", "initial", "tau"})
        args = {**preset, **d}
        if not {"mean", "std", "initial"} <= set(args):
            raise ValueError(f"no OU preset for {M} populations; give 'mean', 'std' and 'initial'")
        out = ornstein_uhlenbeck(duration_s, seed=seed, dt=dt, **args)
    elif kind == "impulse":
        d.pop("seed", None)
        check_unknown({"amplitude", "times", "half_width"})
        args = {**IMPULSE_PRESETS.get(M, {}), **d}
        out = impulses(duration_s, dt=dt, **args)
    elif kind == "step":
        d.pop("seed", None)
        check_unknown({"amplitude", "onset_s", "offset_s", "baseline"})
        out = step(duration_s, dt=dt, **d)
    elif kind == "constant":
        d.pop("seed", None)
        check_unknown({"value"})
        out = constant(duration_s, d["value"], populations=M, dt=dt)
    elif kind == "zero":
        d.pop("seed", None)
        check_unknown(set())
        out = constant(duration_s, 0.0, populations=M, dt=dt)
    else:
        raise ValueError(
            f"unknown stimulus kind {kind!r}; choose one of 'sine', 'ou', 'impulse', 'step', 'constant', 'zero'"
        )
    if out.shape[1] != M:
        raise ValueError(f"stimulus has {out.shape[1]} channels but the model has {M} populations")
    return out
