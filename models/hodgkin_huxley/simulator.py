"""Batched Hodgkin–Huxley simulator with Pospischil-2008 kinetics (spec §1.2, §1.5).

One compiled Numba kernel integrates a batch of parameter sets, one simulation per parameter set,
each with its own noise stream (:mod:`.noise`), so a simulation's result depends only on its parameters
and its seed — never on the batch it was run in or on the number of threads. The batch loop is a
``prange`` (threads follow ``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``); each simulation runs the
exponential-Euler scheme of spec §1.5 in float64 on scalars and writes its trace into a scratch buffer,
from which the recorded samples and/or the features (:mod:`.features`) are taken. With features only,
memory is O(threads × samples), independent of the batch size.

Equations (spec §1.2): with :math:`u = V - V_T` and :math:`\\psi(z) = z/(e^z - 1)`
(:math:`\\psi(z) := 1 - z/2` for :math:`|z| < 10^{-4}`),

.. math::

    \\alpha_m = 1.28\\,\\psi(-(u-13)/4),\\quad \\beta_m = 1.4\\,\\psi((u-40)/5),\\quad
    \\alpha_h = 0.128\\,e^{-(u-17)/18},\\quad \\beta_h = 4/(1+e^{-(u-40)/5}),

    \\alpha_n = 0.16\\,\\psi(-(u-15)/5),\\quad \\beta_n = 0.5\\,e^{-(u-10)/40},\\quad
    p_\\infty = 1/(1+e^{-(V+35)/10}),\\quad
    \\tau_p = \\tau_{max}/(3.3\\,e^{(V+35)/20} + e^{-(V+35)/20}).

Exponential Euler (spec §1.5), step ``k = 1 .. N-1`` with gates at ``k-1``:
:math:`G = \\bar g_{Na} m^3 h + \\bar g_K n^4 + g_{leak} + \\bar g_M p`,
:math:`V_\\infty = (\\bar g_{Na} m^3 h E_{Na} + \\bar g_K n^4 E_K + g_{leak} E_{leak} + \\bar g_M p E_K
+ I_{inj}[k-1] + \\sigma \\xi_k/\\sqrt{\\Delta t})/G`,
:math:`V_k = V_\\infty + (V_{k-1} - V_\\infty) e^{-\\Delta t G / C_m}`, then every gate
:math:`x_k = x_\\infty(V_k) + (x_{k-1} - x_\\infty(V_k)) e^{-\\Delta t/\\tau_x(V_k)}` with the *new* voltage.
Initial gates are at steady state for :math:`V_0` with the simulation's own :math:`V_T`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .features import feature_count, features_of_trace, protocol_windows
from .noise import fill_standard_normal, split_seeds
from .parameters import C_M, E_K, E_NA
from .protocols import Protocol


#: e^{-5}: converts exp(-(u-40)/5) into exp(-(u-15)/5) (α_n shares the exponential of β_m, β_h).
_EXP_MINUS_5 = float(np.exp(-5.0))


@njit(cache=True, inline="always")
def _psi(z, exp_z):
    """:math:`\\psi(z) = z/(e^z - 1)` given :math:`e^z`, with the references' guard :math:`1 - z/2`
    for :math:`|z| < 10^{-4}` (spec §1.2)."""
    if abs(z) < 1e-4:
        return 1.0 - 0.5 * z
    return z / (exp_z - 1.0)


@njit(cache=True, inline="always")
def _rates(v, v_t, tau_max):
    """Gate rates at voltage ``v`` (mV): (α_m, β_m, α_h, β_h, α_n, β_n) in 1/ms, p_∞, 1/τ_p (1/ms).

    Formulas of spec §1.2, with five exponentials instead of nine: β_m, β_h and α_n share
    :math:`E = e^{-(u-40)/5}` (:math:`e^{(u-40)/5} = 1/E`, :math:`e^{-(u-15)/5} = E e^{-5}`), and
    :math:`p_\\infty`, :math:`\\tau_p` share :math:`e^{-(V+35)/20}`; the results equal the direct
    formulas up to rounding (checked against the direct per-trace baseline in the tests).
    """
    u = v - v_t
    z_m = -(u - 13.0) / 4.0
    alpha_m = 0.32 * 4.0 * _psi(z_m, np.exp(z_m))
    e_40 = np.exp(-(u - 40.0) / 5.0)
    beta_m = 0.28 * 5.0 * _psi((u - 40.0) / 5.0, 1.0 / e_40)
    alpha_h = 0.128 * np.exp(-(u - 17.0) / 18.0)
    beta_h = 4.0 / (1.0 + e_40)
    alpha_n = 0.032 * 5.0 * _psi(-(u - 15.0) / 5.0, e_40 * _EXP_MINUS_5)
    beta_n = 0.5 * np.exp(-(u - 10.0) / 40.0)
    e_p = np.exp(-(v + 35.0) / 20.0)
    p_inf = 1.0 / (1.0 + e_p * e_p)
    inv_tau_p = (3.3 / e_p + e_p) / tau_max
    return alpha_m, beta_m, alpha_h, beta_h, alpha_n, beta_n, p_inf, inv_tau_p


@njit(cache=True)
def integrate_trace(theta, noise, current, dt, v0, trace, current_scale=1.0):
    """Integrate one simulation with exponential Euler (spec §1.5) into ``trace``.

    Parameters
    ----------
    theta : numpy.ndarray
        ``(8,)`` parameters in :data:`~.parameters.PARAMETER_NAMES` order.
    noise : numpy.ndarray
        ``(N-1,)`` standard normals; ``noise[k-1]`` is :math:`\\xi_k` used at step ``k``.
    current : numpy.ndarray
        ``(N,)`` injected current density (µA/cm²); ``current[k-1]`` is used at step ``k``.
    dt : float
        Time step (ms).
    v0 : float
        Initial voltage (mV).
    trace : numpy.ndarray
        ``(N,)`` output voltage (mV), overwritten.
    current_scale : float, default 1.0
        The injected current is ``current_scale * current[k-1]`` (a per-simulation step amplitude
        over a unit-step template; 1.0 leaves every fixed protocol's result bit for bit unchanged).
    """
    g_na = theta[0]
    g_k = theta[1]
    g_leak = theta[2]
    g_m = theta[3]
    tau_max = theta[4]
    v_t = -theta[5]
    sigma = theta[6]
    e_leak = -theta[7]
    noise_scale = sigma / np.sqrt(dt)

    v = v0
    alpha_m, beta_m, alpha_h, beta_h, alpha_n, beta_n, p_inf, inv_tau_p = _rates(v, v_t, tau_max)
    m = alpha_m / (alpha_m + beta_m)
    h = alpha_h / (alpha_h + beta_h)
    n = alpha_n / (alpha_n + beta_n)
    p = p_inf
    trace[0] = v
    for k in range(1, trace.shape[0]):
        conductance_na = g_na * m * m * m * h
        n2 = n * n
        conductance_k = g_k * n2 * n2
        conductance_m = g_m * p
        total = conductance_na + conductance_k + g_leak + conductance_m
        v_inf = (
            conductance_na * E_NA
            + conductance_k * E_K
            + g_leak * e_leak
            + conductance_m * E_K
            + current_scale * current[k - 1]
            + noise_scale * noise[k - 1]
        ) / total
        v = v_inf + (v - v_inf) * np.exp(-dt * total / C_M)
        trace[k] = v
        alpha_m, beta_m, alpha_h, beta_h, alpha_n, beta_n, p_inf, inv_tau_p = _rates(v, v_t, tau_max)
        rate_m = alpha_m + beta_m
        rate_h = alpha_h + beta_h
        rate_n = alpha_n + beta_n
        m_inf = alpha_m / rate_m
        h_inf = alpha_h / rate_h
        n_inf = alpha_n / rate_n
        m = m_inf + (m - m_inf) * np.exp(-dt * rate_m)
        h = h_inf + (h - h_inf) * np.exp(-dt * rate_h)
        n = n_inf + (n - n_inf) * np.exp(-dt * rate_n)
        p = p_inf + (p - p_inf) * np.exp(-dt * inv_tau_p)


@njit(cache=True, parallel=True)
def _simulate_batch(
    theta,
    seed_low,
    seed_high,
    current,
    dt,
    v0,
    current_scale,
    record_every,
    voltage_out,
    compute_features,
    features_out,
    windows,
    lags,
):
    """Kernel: simulate every row of ``theta``; optionally record (decimated) traces and features.

    ``v0`` and ``current_scale`` are ``(B,)``: row ``b`` starts at ``v0[b]`` and is injected
    ``current_scale[b] * current``."""
    batch = theta.shape[0]
    n_samples = current.shape[0]
    record = voltage_out.shape[0] > 0
    for b in prange(batch):
        mt_state = np.empty(624, dtype=np.int64)
        noise = np.empty(n_samples - 1, dtype=np.float64)
        trace = np.empty(n_samples, dtype=np.float64)
        fill_standard_normal(seed_low[b], seed_high[b], noise, mt_state)
        integrate_trace(theta[b], noise, current, dt, v0[b], trace, current_scale[b])
        if record:
            for j in range(voltage_out.shape[1]):
                voltage_out[b, j] = trace[j * record_every]
        if compute_features:
            features_of_trace(trace, dt, windows, lags, features_out[b])


def run_batch(
    theta: np.ndarray,
    seeds: np.ndarray,
    protocol: Protocol,
    *,
    record: bool = True,
    record_every: int = 1,
    n_features: int | None = None,
    amplitude: np.ndarray | None = None,
    v0: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Simulate a batch of parameter sets under one protocol.

    Parameters
    ----------
    theta : numpy.ndarray
        ``(B, 8)`` float64 parameters in :data:`~.parameters.PARAMETER_NAMES` order (units as there).
    seeds : numpy.ndarray
        ``(B,)`` unsigned integer seeds, one per simulation (see :mod:`.noise` for the stream).
    protocol : Protocol
        Stimulus, time grid and feature windows (spec §1.4).
    record : bool, default True
        Return the voltage traces.
    record_every : int, default 1
        Keep every ``record_every``-th sample (``t_k`` for ``k = 0, r, 2r, ...``).
    n_features : {None, 7, 13}, default None
        Also compute this feature set (spec §1.6) from the full-resolution trace.
    amplitude, v0 : numpy.ndarray, optional
        ``(B,)`` per-simulation step amplitude (µA/cm², multiplying ``protocol.current``, a unit
        step for :func:`~.protocols.allen_family_protocol`) and initial voltage (mV). Default: the
        protocol's own (scale 1, ``protocol.v0``). Required when ``protocol.v0`` is NaN.

    Returns
    -------
    voltage : numpy.ndarray or None
        ``(B, ceil(N / record_every))`` membrane potential (mV), or None if ``record`` is False.
    features : numpy.ndarray or None
        ``(B, n_features)`` float64, or None if ``n_features`` is None.
    """
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    if theta.ndim != 2 or theta.shape[1] != 8:
        raise ValueError(f"theta must have shape (B, 8); got {theta.shape}")
    seeds = np.asarray(seeds)
    if seeds.shape != (theta.shape[0],):
        raise ValueError(f"seeds must have shape (B,) = ({theta.shape[0]},); got {seeds.shape}")
    record_every = int(record_every)
    if record_every < 1:
        raise ValueError(f"record_every must be a positive integer; got {record_every}")
    seed_low, seed_high = split_seeds(seeds)
    batch = theta.shape[0]
    scale = _per_row(amplitude, 1.0, batch, "amplitude")
    start = _per_row(v0, protocol.v0, batch, "v0")
    if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(start))):
        raise ValueError(f"protocol {protocol.name!r} needs finite per-simulation amplitude and v0 arrays of shape ({batch},)")
    n_recorded = -(-protocol.n_samples // record_every)
    voltage = np.empty((batch, n_recorded) if record else (0, 0), dtype=np.float64)
    compute_features = n_features is not None
    n_out = feature_count(n_features) if compute_features else 0
    features = np.empty((batch if compute_features else 0, n_out), dtype=np.float64)
    _simulate_batch(
        theta,
        seed_low,
        seed_high,
        protocol.current,
        protocol.dt,
        start,
        scale,
        record_every,
        voltage,
        compute_features,
        features,
        protocol_windows(protocol),
        protocol.autocorrelation_lags if n_features == 13 else np.empty(0, dtype=np.int64),
    )
    return (voltage if record else None), (features if compute_features else None)



def _per_row(values, default: float, batch: int, what: str) -> np.ndarray:
    """``values`` as a contiguous float64 ``(batch,)`` array, or ``default`` repeated."""
    if values is None:
        return np.full(batch, float(default), dtype=np.float64)
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape not in ((), (batch,)):
        raise ValueError(f"{what} must be a scalar or have shape ({batch},); got {arr.shape}")
    return np.ascontiguousarray(np.broadcast_to(arr, (batch,)))
