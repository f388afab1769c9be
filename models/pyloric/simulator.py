"""Compiled simulator of the three-neuron pyloric network (spec ``simulator-models.md`` §2.2-2.5).

Model (Prinz et al. 2004, as in the pyloric/eLife-2020/PNAS-2022 code): three
single-compartment neurons (AB/PD, LP, PY) with eight membrane currents each and seven
graded synapses. Per neuron :math:`j`

.. math::

    C \\frac{dV_j}{dt} = -\\sum_c g_c (V_j - E_c) - \\sum_{s \\to j} g_s s (V_j - E_s)
                        + I_\\mathrm{noise},

with :math:`g_c = \\bar g_c A\\, m^p h^q` (:math:`A = 0.628\\cdot10^{-3}` cm²,
:math:`C = 0.6283\\cdot10^{-3}` µF), gate kinetics of §2.2, calcium dynamics with a Nernst
reversal potential, and first-order graded synapses of §2.3.

Integration (§2.5), for step :math:`i = 1 \\dots N-1`, everything from the state at
:math:`i-1`:

1. synaptic conductance and current numerator per post-synaptic neuron from :math:`s_{i-1}`;
2. channel conductances from the gates at :math:`i-1`;
3. :math:`E_\\mathrm{Ca}` from :math:`[\\mathrm{Ca}]_{i-1}`, then the exponential-Euler
   calcium update;
4. :math:`G = \\sum_c g_c + g_\\mathrm{syn}`, :math:`Q = I_\\mathrm{syn,num} + \\sum_c g_c E_c +
   I_\\mathrm{noise}[i]` (noise sample :math:`i`); exponential Euler
   :math:`V_i = Q/G + (V_{i-1} - Q/G) e^{-\\Delta t G / C}`, or forward Euler
   :math:`V_i = V_{i-1} + \\Delta t Q / C` when :math:`G = 0`;
5. all gates with the **old** voltage :math:`V_{i-1}` (and old calcium for KCa),
   exponential Euler;
6. synapses with the old presynaptic voltage, forward Euler, clamped to
   :math:`s_\\infty` when :math:`\\Delta t > \\tau_s`.

Initial state: V = -50 mV, [Ca] = 0.05 µM, every gate (activation *and* inactivation)
0, every synapse 0. Noise: i.i.d. N(0, 0.001 µA) per step, **not** scaled by Δt, drawn as
``RandomState(seed).normal(scale=0.001, size=(3, N))`` (one seed per simulation, see
:mod:`._legacy_rng`).

The kernel fuses simulation and feature extraction: the post-burn-in voltage lives only in
a per-simulation buffer, and only the features (plus optionally a decimated trace and
spike times) are returned. The batch loop is a ``numba.prange``; every simulation is
independent of the batch it runs in.

``trap_flags`` deliberately reproduces the implementation mistakes listed in §2.10; it
exists only for the regression tests and must be 0 in any real use.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import summary as _feat
from .._legacy_rng import fill_legacy_normal

# --------------------------------------------------------------------------------------
# constants (§2.2, §2.3)
# --------------------------------------------------------------------------------------

AREA_CM2 = 0.628e-3  #: membrane area of each compartment (cm^2)
CAPACITANCE_UF = 0.6283e-3  #: total capacitance (µF)
E_NA_MV = 50.0
E_K_MV = -80.0
E_H_MV = -20.0
E_LEAK_MV = -50.0
CA_TAU_MS = 200.0
CA_F_UM_PER_UA = 14961.0
CA_EXT_UM = 3000.0
CA_REST_UM = 0.05
GAS_CONSTANT = 8314.51  # mJ / (mol K)
FARADAY = 96485.3415  # C / mol
TEMPERATURE_K = 283.0
RT_OVER_2F_MV = GAS_CONSTANT * TEMPERATURE_K / (2.0 * FARADAY)  # 12.1936 mV
V_INIT_MV = -50.0
SYN_VTH_MV = -35.0
SYN_DELTA_MV = 5.0

NEURONS = ("AB/PD", "LP", "PY")
CURRENTS = ("Na", "CaT", "CaS", "A", "KCa", "Kd", "H", "leak")
SYNAPSES = ("AB-LP", "PD-LP", "AB-PY", "PD-PY", "LP-PD", "LP-PY", "PY-LP")
#: pre-synaptic neuron index of each synapse (0 = AB/PD, 1 = LP, 2 = PY)
SYN_PRE = np.array([0, 0, 0, 0, 1, 1, 2], dtype=np.int64)
#: post-synaptic neuron index
SYN_POST = np.array([1, 1, 2, 2, 0, 2, 1], dtype=np.int64)
#: reversal potential (mV): glutamatergic -70, cholinergic -80
SYN_E_MV = np.array([-70.0, -80.0, -70.0, -80.0, -70.0, -70.0, -70.0])
#: k_-^{-1} (ms): glutamatergic 40, cholinergic 100
SYN_KMINUS_INV_MS = np.array([40.0, 100.0, 40.0, 100.0, 40.0, 40.0, 40.0])

DEFAULT_NOISE_STD_UA = 0.001
DEFAULT_DT_MS = 0.025
DEFAULT_DURATION_MS = 11000.0
DEFAULT_BURN_IN_MS = 1000.0

# trap flags (tests only): each reproduces one mistake of §2.10
TRAP_GATES_NEW_V = 1  #: gates (and synapses) updated with the new voltage V_i
TRAP_NOISE_PREVIOUS_INDEX = 2  #: noise sample i-1 instead of i
TRAP_NO_ZERO_G_FALLBACK = 4  #: exponential Euler even when G = 0 (NaN)
TRAP_INACTIVATION_START_ONE = 8  #: inactivation gates h start at 1 instead of 0
TRAP_NO_SYNAPSE_CLAMP = 16  #: no s = s_inf clamp when dt > tau_s
TRAP_NOISE_SCALED_SQRT_DT = 32  #: noise SD multiplied by sqrt(dt)
TRAP_KCA_NEW_CALCIUM = 64  #: KCa activation from the new [Ca]_i


@njit(cache=True, inline="always")
def _sig(v, a, b):
    """σ(V; a, b) = 1 / (1 + exp((V + a) / b))."""
    return 1.0 / (1.0 + math.exp((v + a) / b))


@njit(cache=True, inline="always")
def _sig2(v, a1, b1, a2, b2):
    """1 / (exp((V + a1) / b1) + exp((V + a2) / b2))."""
    return 1.0 / (math.exp((v + a1) / b1) + math.exp((v + a2) / b2))


@njit(cache=True, inline="always")
def _relax(x, x_inf, tau, dt):
    """Exponential-Euler gate update x_inf + (x - x_inf) exp(-dt / tau)."""
    return x_inf + (x - x_inf) * math.exp(-dt / tau)


@njit(cache=True, error_model="numpy")
def simulate_one(
    g_membrane_density,
    g_synapse_mS,
    seed_low,
    seed_high,
    n_steps,
    n_burn,
    dt,
    noise_std,
    record_every,
    voltage_record,
    min_burst_ms,
    centre,
    left,
    right,
    scalars_out,
    spike_times_out,
    trap_flags,
):
    """Simulate one parameter set and compute its features (§2.2-§2.6).

    Parameters
    ----------
    g_membrane_density : numpy.ndarray, shape (3, 8)
        Maximal conductance densities (mS/cm^2), neurons AB/PD, LP, PY; currents Na, CaT,
        CaS, A, KCa, Kd, H, leak.
    g_synapse_mS : numpy.ndarray, shape (7,)
        Absolute maximal synaptic conductances (mS) in the order of :data:`SYNAPSES`.
    seed_low, seed_high : int
        32-bit halves of the 64-bit noise seed.
    n_steps : int
        Number of samples N (time grid ``0, dt, ..., (N-1) dt``).
    n_burn : int
        Samples discarded before the features (40,000 for 1 s at 0.025 ms).
    dt : float
        Step (ms).
    noise_std : float
        SD of the per-step noise current (µA).
    record_every : int
        Decimation of ``voltage_record``.
    voltage_record : numpy.ndarray, shape (3, n_rec)
        Post-burn-in samples ``n_burn + r * record_every`` written in place (mV); may have
        ``n_rec == 0``.
    min_burst_ms : float
        Minimum kept burst length (ms).
    centre, left, right : numpy.ndarray
        Savitzky-Golay weights.
    scalars_out : numpy.ndarray, shape (N_SCALARS,)
        Features and extras, written in place.
    spike_times_out : numpy.ndarray, shape (3, max_spikes)
        Spike times (ms after burn-in), NaN-padded, written in place.
    trap_flags : int
        0 for the correct model; test-only deliberate mistakes otherwise.
    """
    N = n_steps
    n_keep = N - n_burn
    n_rec = voltage_record.shape[1]

    noise = np.empty(3 * N)
    fill_legacy_normal(seed_low, seed_high, noise_std, noise)
    if trap_flags & TRAP_NOISE_SCALED_SQRT_DT:
        noise *= math.sqrt(dt)

    v_keep = np.empty((3, n_keep))
    p_keep = np.empty((3, n_keep))

    # absolute membrane conductances (mS)
    g = np.empty((3, 8))
    for j in range(3):
        for c in range(8):
            g[j, c] = g_membrane_density[j, c] * AREA_CM2

    V = np.full(3, V_INIT_MV)
    Ca = np.full(3, CA_REST_UM)
    # activation gates: Na, CaT, CaS, A, KCa, Kd, H ; inactivation: Na, CaT, CaS, A
    m = np.zeros((3, 7))
    h = np.zeros((3, 4))
    if trap_flags & TRAP_INACTIVATION_START_ONE:
        h[:, :] = 1.0
    s = np.zeros(7)
    e_ca_prev = np.empty(3)  # E_Ca of the previous step (used by the energy measure only)
    for j in range(3):
        e_ca_prev[j] = -RT_OVER_2F_MV * math.log(Ca[j] / CA_EXT_UM)

    V_new = np.empty(3)
    Ca_new = np.empty(3)
    g_syn = np.empty(3)
    i_syn = np.empty(3)
    p_syn = np.empty(3)
    ca_decay = math.exp(-dt / CA_TAU_MS)
    C = CAPACITANCE_UF

    if n_burn == 0:
        for j in range(3):
            v_keep[j, 0] = V[j]
            p_keep[j, 0] = 0.0

    for i in range(1, N):
        # 1. synaptic conductance and current numerator from s_{i-1}
        for j in range(3):
            g_syn[j] = 0.0
            i_syn[j] = 0.0
            p_syn[j] = 0.0
        for k in range(7):
            post = SYN_POST[k]
            gs = g_synapse_mS[k] * s[k]
            g_syn[post] += gs
            i_syn[post] += gs * SYN_E_MV[k]
            dv = V[post] - SYN_E_MV[k]
            p_syn[post] += gs * dv * dv

        noise_index = i - 1 if (trap_flags & TRAP_NOISE_PREVIOUS_INDEX) else i
        for j in range(3):
            v_old = V[j]
            # 2. channel conductances from gates at i-1 (mS)
            c_na = g[j, 0] * m[j, 0] * m[j, 0] * m[j, 0] * h[j, 0]
            c_cat = g[j, 1] * m[j, 1] * m[j, 1] * m[j, 1] * h[j, 1]
            c_cas = g[j, 2] * m[j, 2] * m[j, 2] * m[j, 2] * h[j, 2]
            c_a = g[j, 3] * m[j, 3] * m[j, 3] * m[j, 3] * h[j, 3]
            mk = m[j, 4] * m[j, 4]
            c_kca = g[j, 4] * mk * mk
            md = m[j, 5] * m[j, 5]
            c_kd = g[j, 5] * md * md
            c_h = g[j, 6] * m[j, 6]
            c_leak = g[j, 7]

            # energy measure (reference: power with the previous step's E_Ca), per cm^2
            if i >= n_burn:
                e_prev = e_ca_prev[j]
                power = (
                    c_na * (v_old - E_NA_MV) ** 2
                    + c_cat * (v_old - e_prev) ** 2
                    + c_cas * (v_old - e_prev) ** 2
                    + c_a * (v_old - E_K_MV) ** 2
                    + c_kca * (v_old - E_K_MV) ** 2
                    + c_kd * (v_old - E_K_MV) ** 2
                    + c_h * (v_old - E_H_MV) ** 2
                    + c_leak * (v_old - E_LEAK_MV) ** 2
                )
                p_keep[j, i - n_burn] = (power + p_syn[j]) / AREA_CM2

            # 3. calcium: E_Ca from [Ca]_{i-1}, exponential Euler
            e_ca = RT_OVER_2F_MV * math.log(CA_EXT_UM / Ca[j])
            e_ca_prev[j] = e_ca
            i_ca = (c_cat + c_cas) * (v_old - e_ca)
            ca_inf = CA_REST_UM - CA_F_UM_PER_UA * i_ca
            Ca_new[j] = ca_inf + (Ca[j] - ca_inf) * ca_decay

            # 4. voltage: exponential Euler, forward Euler when G = 0
            G = g_syn[j] + c_na + c_cat + c_cas + c_a + c_kca + c_kd + c_h + c_leak
            Q = (
                i_syn[j]
                + c_na * E_NA_MV
                + c_cat * e_ca
                + c_cas * e_ca
                + c_a * E_K_MV
                + c_kca * E_K_MV
                + c_kd * E_K_MV
                + c_h * E_H_MV
                + c_leak * E_LEAK_MV
                + noise[j * N + noise_index]
            )
            if G == 0.0 and not (trap_flags & TRAP_NO_ZERO_G_FALLBACK):
                V_new[j] = v_old + dt * Q / C
            else:
                v_inf = Q / G
                V_new[j] = v_inf + (v_old - v_inf) * math.exp(-dt * G / C)

        # 5. gates with the OLD voltage (and old calcium for KCa)
        for j in range(3):
            v = V_new[j] if (trap_flags & TRAP_GATES_NEW_V) else V[j]
            ca = Ca_new[j] if (trap_flags & TRAP_KCA_NEW_CALCIUM) else Ca[j]
            # Na
            m[j, 0] = _relax(m[j, 0], _sig(v, 25.5, -5.29), 2.64 - 2.52 * _sig(v, 120.0, -25.0), dt)
            tau_h_na = (1.34 / (1.0 + math.exp((v + 62.9) / -10.0))) * (
                1.5 + 1.0 / (1.0 + math.exp((v + 34.9) / 3.6))
            )
            h[j, 0] = _relax(h[j, 0], _sig(v, 48.9, 5.18), tau_h_na, dt)
            # CaT
            m[j, 1] = _relax(m[j, 1], _sig(v, 27.1, -7.2), 43.4 - 42.6 * _sig(v, 68.1, -20.5), dt)
            h[j, 1] = _relax(h[j, 1], _sig(v, 32.1, 5.5), 210.0 - 179.6 * _sig(v, 55.0, -16.9), dt)
            # CaS
            m[j, 2] = _relax(
                m[j, 2], _sig(v, 33.0, -8.1), 2.8 + 14.0 * _sig2(v, 27.0, 10.0, 70.0, -13.0), dt
            )
            h[j, 2] = _relax(
                h[j, 2], _sig(v, 60.0, 6.2), 120.0 + 300.0 * _sig2(v, 55.0, 9.0, 65.0, -16.0), dt
            )
            # A
            m[j, 3] = _relax(m[j, 3], _sig(v, 27.2, -8.7), 23.2 - 20.8 * _sig(v, 32.9, -15.2), dt)
            h[j, 3] = _relax(h[j, 3], _sig(v, 56.9, 4.9), 77.2 - 58.4 * _sig(v, 38.9, -26.5), dt)
            # KCa
            m[j, 4] = _relax(
                m[j, 4],
                (ca / (ca + 3.0)) * _sig(v, 28.3, -12.6),
                180.6 - 150.2 * _sig(v, 46.0, -22.7),
                dt,
            )
            # Kd
            m[j, 5] = _relax(m[j, 5], _sig(v, 12.3, -11.8), 14.4 - 12.8 * _sig(v, 28.3, -19.2), dt)
            # H
            tau_m_h = 2.0 / (math.exp(-14.59 - 0.086 * v) + math.exp(-1.87 + 0.0701 * v))
            m[j, 6] = _relax(m[j, 6], _sig(v, 75.0, 5.5), tau_m_h, dt)

        # 6. synapses with the old presynaptic voltage, forward Euler with clamp
        for k in range(7):
            pre = SYN_PRE[k]
            v_pre = V_new[pre] if (trap_flags & TRAP_GATES_NEW_V) else V[pre]
            s_inf = 1.0 / (1.0 + math.exp((SYN_VTH_MV - v_pre) / SYN_DELTA_MV))
            tau_s = SYN_KMINUS_INV_MS[k] * (1.0 - s_inf)
            s_next = s[k] + (s_inf - s[k]) * dt / tau_s
            if dt > tau_s and not (trap_flags & TRAP_NO_SYNAPSE_CLAMP):
                s_next = s_inf
            s[k] = s_next

        for j in range(3):
            V[j] = V_new[j]
            Ca[j] = Ca_new[j]
        if i >= n_burn:
            for j in range(3):
                v_keep[j, i - n_burn] = V[j]

    for r in range(n_rec):
        for j in range(3):
            voltage_record[j, r] = v_keep[j, r * record_every]

    _feat.trace_features(
        v_keep, p_keep, dt, min_burst_ms, centre, left, right, scalars_out, spike_times_out
    )


@njit(cache=True, parallel=True, error_model="numpy")
def simulate_batch(
    g_membrane_density,
    g_synapse_mS,
    seed_low,
    seed_high,
    n_steps,
    n_burn,
    dt,
    noise_std,
    record_every,
    voltage_record,
    min_burst_ms,
    centre,
    left,
    right,
    scalars_out,
    spike_times_out,
    trap_flags,
):
    """Batched :func:`simulate_one` (``prange`` over the leading axis of every array).

    Shapes: ``g_membrane_density`` (B, 3, 8) mS/cm^2, ``g_synapse_mS`` (B, 7) mS,
    ``seed_low``/``seed_high`` (B,) int64, ``voltage_record`` (B, 3, n_rec),
    ``scalars_out`` (B, N_SCALARS), ``spike_times_out`` (B, 3, max_spikes).
    """
    for b in prange(g_membrane_density.shape[0]):
        simulate_one(
            g_membrane_density[b],
            g_synapse_mS[b],
            seed_low[b],
            seed_high[b],
            n_steps,
            n_burn,
            dt,
            noise_std,
            record_every,
            voltage_record[b],
            min_burst_ms,
            centre,
            left,
            right,
            scalars_out[b],
            spike_times_out[b],
            trap_flags,
        )
