"""Per-trace baseline of the Hodgkin–Huxley simulator, and the benchmark against the batched one.

The baseline integrates one simulation at a time with a plain Python/NumPy loop over time steps, in
the style of the sbi Hodgkin–Huxley tutorial (rate functions of the voltage, one legacy
``RandomState(seed)`` per simulation drawing one normal per step; spec §1.5), and computes the features
with NumPy array operations on boolean time masks the way the reference statistics class does
(``t < t_on``, ``(t > t_on) & (t < t_off)``, the two-pass clip-and-slope spike detection; spec §1.6).
It is an independent second implementation of the same equations: the tests check the batched
simulator against it, and :func:`benchmark` reports the speed-up of the batched simulator over it.
"""

from __future__ import annotations

import os
import time

import numpy as np

from .noise import legacy_random_state
from .parameters import C_M, E_K, E_NA, PARAMETER_NAMES, PRIOR_BOUNDS
from .protocols import Protocol, protocol_from_config


def _efun(z):
    """z / (exp(z) - 1), with its limit 1 - z/2 near 0."""
    if np.abs(z) < 1e-4:
        return 1 - z / 2
    return z / (np.exp(z) - 1)


def simulate_one(theta, seed: int, protocol: Protocol) -> np.ndarray:
    """Simulate one trace with a per-step Python loop (the sbi-tutorial way).

    Parameters
    ----------
    theta : array_like
        ``(8,)`` parameters in :data:`~.parameters.PARAMETER_NAMES` order.
    seed : int
        Noise seed (stream of :func:`~.noise.legacy_random_state`).
    protocol : Protocol
        Stimulus and time grid.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` voltage (mV).
    """
    gbar_Na, gbar_K, g_leak, gbar_M, tau_max, neg_V_T, nois_fact, neg_E_leak = (float(x) for x in theta)
    V_T = -neg_V_T
    E_leak = -neg_E_leak
    dt = protocol.dt
    I = protocol.current
    rng = legacy_random_state(seed)

    def alpha_m(x):
        v1 = x - V_T - 13.0
        return 0.32 * _efun(-0.25 * v1) / 0.25

    def beta_m(x):
        v1 = x - V_T - 40.0
        return 0.28 * _efun(0.2 * v1) / 0.2

    def alpha_h(x):
        v1 = x - V_T - 17.0
        return 0.128 * np.exp(-v1 / 18.0)

    def beta_h(x):
        v1 = x - V_T - 40.0
        return 4.0 / (1 + np.exp(-0.2 * v1))

    def alpha_n(x):
        v1 = x - V_T - 15.0
        return 0.032 * _efun(-0.2 * v1) / 0.2

    def beta_n(x):
        v1 = x - V_T - 10.0
        return 0.5 * np.exp(-v1 / 40)

    def tau_m(x):
        return 1 / (alpha_m(x) + beta_m(x))

    def m_inf(x):
        return alpha_m(x) / (alpha_m(x) + beta_m(x))

    def tau_h(x):
        return 1 / (alpha_h(x) + beta_h(x))

    def h_inf(x):
        return alpha_h(x) / (alpha_h(x) + beta_h(x))

    def tau_n(x):
        return 1 / (alpha_n(x) + beta_n(x))

    def n_inf(x):
        return alpha_n(x) / (alpha_n(x) + beta_n(x))

    def p_inf(x):
        v1 = x + 35.0
        return 1.0 / (1.0 + np.exp(-0.1 * v1))

    def tau_p(x):
        v1 = x + 35.0
        return tau_max / (3.3 * np.exp(0.05 * v1) + np.exp(-0.05 * v1))

    n_samples = protocol.n_samples
    V = np.zeros(n_samples)
    m = np.zeros(n_samples)
    h = np.zeros(n_samples)
    n = np.zeros(n_samples)
    p = np.zeros(n_samples)
    V[0] = protocol.v0
    m[0] = m_inf(V[0])
    h[0] = h_inf(V[0])
    n[0] = n_inf(V[0])
    p[0] = p_inf(V[0])
    for i in range(1, n_samples):
        tau_V_inv = ((m[i - 1] ** 3) * gbar_Na * h[i - 1] + (n[i - 1] ** 4) * gbar_K + g_leak + gbar_M * p[i - 1]) / C_M
        V_inf = (
            (m[i - 1] ** 3) * gbar_Na * h[i - 1] * E_NA
            + (n[i - 1] ** 4) * gbar_K * E_K
            + g_leak * E_leak
            + gbar_M * p[i - 1] * E_K
            + I[i - 1]
            + nois_fact * rng.standard_normal() / (dt**0.5)
        ) / (tau_V_inv * C_M)
        V[i] = V_inf + (V[i - 1] - V_inf) * np.exp(-dt * tau_V_inv)
        m[i] = m_inf(V[i]) + (m[i - 1] - m_inf(V[i])) * np.exp(-dt / tau_m(V[i]))
        h[i] = h_inf(V[i]) + (h[i - 1] - h_inf(V[i])) * np.exp(-dt / tau_h(V[i]))
        n[i] = n_inf(V[i]) + (n[i - 1] - n_inf(V[i])) * np.exp(-dt / tau_n(V[i]))
        p[i] = p_inf(V[i]) + (p[i - 1] - p_inf(V[i])) * np.exp(-dt / tau_p(V[i]))
    return V


def features_one(v: np.ndarray, protocol: Protocol) -> np.ndarray:
    """The 7 features of one trace with NumPy masks, the way the reference statistics class does.

    Windows come from float comparisons on ``t = arange(N) * dt`` (spec §1.6), so this also checks
    the index windows of :class:`~.protocols.Protocol`.
    """
    dt = protocol.dt
    t_on = protocol.t_on
    t_off = protocol.t_off
    t = np.arange(v.shape[0]) * dt

    clipped = np.array(v, dtype=np.float64)
    clipped[clipped < -10] = -10
    clipped[np.where(np.diff(clipped) < 0)] = -10
    spike_times = t[np.where(np.diff(clipped) < 0)]
    spike_times_stim = spike_times[(spike_times > t_on) & (spike_times < t_off)]
    if spike_times_stim.shape[0] > 0:
        spike_times_stim = spike_times_stim[np.append(1, np.diff(spike_times_stim)) > 0.5]

    rest_pot = np.mean(v[t < t_on])
    rest_pot_std = np.std(v[int(0.9 * t_on / dt) : int(t_on / dt)])
    window = v[(t > t_on) & (t < t_off)]
    mean = np.mean(window)
    std = np.std(window)
    centred = window - mean
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.mean(centred**2)
        skew = np.mean(centred**3) / std**3
        kurt = np.mean(centred**4) / std**4
    return np.array([spike_times_stim.shape[0], rest_pot, rest_pot_std, mean, var, skew, kurt])


def _prior_draws(n: int, seed: int) -> np.ndarray:
    """``(n, 8)`` draws from the eLife box prior (spec §1.3)."""
    rng = np.random.default_rng(seed)
    low = np.array([PRIOR_BOUNDS[name][0] for name in PARAMETER_NAMES])
    high = np.array([PRIOR_BOUNDS[name][1] for name in PARAMETER_NAMES])
    return low + (high - low) * rng.random((n, len(PARAMETER_NAMES)))


def benchmark(
    n: int = 400,
    *,
    n_baseline: int = 4,
    protocol: str = "synthetic",
    cell: int | None = None,
    seed: int = 0,
) -> dict:
    """Simulations per second of the batched simulator and of the per-trace baseline, same run.

    Both simulate parameter sets drawn from the eLife prior (the baseline the first ``n_baseline``
    of the same draws) and compute the 7 features; the batched simulator uses the fused
    simulate-and-features path (no traces stored), with Numba's current thread count. Compilation
    is done (or loaded from cache) before timing.

    Parameters
    ----------
    n : int, default 400
        Simulations in the timed batched call.
    n_baseline : int, default 4
        Simulations timed for the baseline (≈ 0.3–0.5 s each on the synthetic protocol).
    protocol : {"synthetic", "allen"}
    cell : int, optional
        Allen specimen id when ``protocol == "allen"``.
    seed : int
        Seed of the prior draws; simulation ``i`` uses noise seed ``seed + i``.

    Returns
    -------
    dict
        ``batched_sims_per_s``, ``baseline_sims_per_s``, ``speedup`` (ratio, batched/baseline), the
        same for trace-recording batched runs (``batched_record_sims_per_s``), counts, threads and
        the protocol, each figure with its unit in ``units``.
    """
    import numba

    from .simulator import run_batch

    config = {"protocol": protocol} if cell is None else {"protocol": protocol, "cell": cell}
    proto = protocol_from_config(config)
    theta = _prior_draws(max(n, n_baseline), seed)
    seeds = np.arange(seed, seed + theta.shape[0], dtype=np.uint64)

    run_batch(theta[:2], seeds[:2], proto, record=True, n_features=7)  # compile / load cache

    start = time.perf_counter()
    run_batch(theta[:n], seeds[:n], proto, record=False, n_features=7)
    batched_s = time.perf_counter() - start

    start = time.perf_counter()
    run_batch(theta[:n], seeds[:n], proto, record=True)
    batched_record_s = time.perf_counter() - start

    start = time.perf_counter()
    for i in range(n_baseline):
        features_one(simulate_one(theta[i], int(seeds[i]), proto), proto)
    baseline_s = time.perf_counter() - start

    batched_rate = n / batched_s
    baseline_rate = n_baseline / baseline_s
    return {
        "protocol": proto.name,
        "n_batched": n,
        "n_baseline": n_baseline,
        "numba_threads": numba.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "batched_sims_per_s": batched_rate,
        "batched_record_sims_per_s": n / batched_record_s,
        "baseline_sims_per_s": baseline_rate,
        "speedup": batched_rate / baseline_rate,
        "units": {
            "batched_sims_per_s": "simulations/s (simulate + 7 features)",
            "batched_record_sims_per_s": "simulations/s (simulate, traces stored, no features)",
            "baseline_sims_per_s": "simulations/s (simulate + 7 features, per-trace loop)",
            "speedup": "ratio batched/baseline, same run",
        },
    }
