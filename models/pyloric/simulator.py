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
a scratch buffer, and only the features (plus optionally a decimated trace and spike
times) are returned. Every simulation is independent of the batch it runs in.

Layout and speed. One thread advances a block of :data:`LANES` = 8 simulations in
lock-step. Their whole state (V, [Ca], 11 gates per neuron, 7 synapses) and parameters
live in one workspace ``w[row, lane]`` with the lanes innermost; each time step is three
branch-free loops over the lanes (one per neuron: §2.5 steps 2-5) and one for the
synapses (step 6, plus step 1 of the next step). LLVM compiles each of them to AVX-512
code, 8 simulations per instruction, with ``exp`` from :func:`.._vecmath.vexp` and ``log``
(for E_Ca) from :func:`.._vecmath.vlog`, since llvmlite here has no vector libm (SVML): a libm call
would cost 5x more and be scalar. The §2.10 trap switches and the G = 0 fallback are
selects, not branches. Each simulation's noise stream is drawn in full before its block
starts (``fill_legacy_normal``, one seed per simulation as before) and transposed to
lane-innermost order per chunk of :data:`CHUNK` steps; the new voltage and power are
transposed back per chunk into per-simulation traces for the feature code (which is
unchanged; its Savitzky-Golay loop now vectorises along time with the same summation
order). A block of fewer than 8 simulations still runs 8 lanes (copies of the last one,
discarded), and the lane count is a compile-time constant, so every simulation executes
the same instructions whatever its batch, block, lane or thread: results are bit-for-bit
independent of the batching (tested). The price: a call with fewer than 8 simulations costs
as much as one with 8 (about 0.6 s for one 11-s simulation here, twice the old kernel),
so batch the calls.

Measured on a 2-core AVX-512 x86 machine (AMD EPYC, shared; CPU time of 16 prior draws of
11 s, features included, old and new kernels interleaved in one process): the previous
one-simulation-per-thread scalar kernel took 0.28 CPU s per simulation, this one
0.075-0.084 (3.3-3.7x, 1 or 2 threads), or 0.072-0.078 without the energies
(``simulate_features``, 3.6-3.9x); the published compiled simulator takes about 0.7 s
(spec §2.10), i.e. 8-9.5x. Against the previous kernel, same seeds: ``exp`` and
``log`` differ by an ulp or two, the traces by < 1e-8 mV over the first 300 ms; the features
of the §2.8 reference sets (7 runs) came out identical, and 194 of 200 prior draws agreed to
1e-6 in all 18 features -- the very same 194 as when the previous kernel's noise is scaled
by (1 + 2^-52), so the 6 others (a spike or burst more or less; up to 18 % in a feature)
are the model's own sensitivity to round-off, not a change of the model.

``trap_flags`` deliberately reproduces the implementation mistakes listed in §2.10; it
exists only for the regression tests and must be 0 in any real use.
"""

from __future__ import annotations

import math

import numpy as np
from numba import get_num_threads, njit, prange

from . import summary as _feat
from .._legacy_rng import fill_legacy_normal
from .._vecmath import vexp, vlog

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


# --------------------------------------------------------------------------------------
# lock-step layout
# --------------------------------------------------------------------------------------

#: Simulations advanced in lock-step by one thread (one AVX-512 vector of float64). A
#: compile-time constant: every lane runs the same instructions whatever the batch size,
#: so a simulation's result never depends on its block or lane.
LANES = 8
#: Steps per chunk of the noise / trace transposition buffers (``(CHUNK, 3, LANES)``).
CHUNK = 128

# Rows of the per-block workspace ``w[row, lane]``. Everything the inner (lane) loops
# touch lives in this one array, so that LLVM can prove the loads and stores of different
# rows independent without run-time alias checks (which it refuses for a loop of 8
# iterations) and vectorise across lanes.
_V = 0  # V_{i-1} (mV)
_VN = 1  # V_i, until the synapse pass makes it the old voltage
_CA = 2  # [Ca] (µM)
_ECAP = 3  # E_Ca of the previous step (energy measure only)
_M = 4  # activation gates Na, CaT, CaS, A, KCa, Kd, H: rows 4..10
_H = 11  # inactivation gates Na, CaT, CaS, A: rows 11..14
_G = 15  # absolute maximal conductances Na ... leak (mS): rows 15..22
_GSYN = 23  # synaptic input of the current step: sum g_s s (mS)
_ISYN = 24  # sum g_s s E_s (µA)
_PSYN = 25  # sum g_s s (V_post - E_s)^2 (energy measure)
_NZ = 26  # noise current of the current step (µA)
_PW = 27  # power density of the current step (energy measure)
_NS = 28  # rows per neuron; neuron j uses rows j * _NS + ...
_S = 3 * _NS  # synaptic gates s_k: rows _S .. _S + 6
_GS = _S + 7  # synaptic maximal conductances (mS): rows _GS .. _GS + 6
_NROW = _GS + 7


@njit(cache=True, inline="always")
def _sig(v, a, inv_b):
    """σ(V; a, b) = 1 / (1 + exp((V + a) / b)), with ``inv_b = 1 / b``."""
    return 1.0 / (1.0 + vexp((v + a) * inv_b))


@njit(cache=True, inline="always")
def _relax(x, x_inf, tau, dt):
    """Exponential-Euler gate update x_inf + (x - x_inf) exp(-dt / tau)."""
    return x_inf + (x - x_inf) * vexp(-dt / tau)


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _run_block(
    g_membrane_density,
    g_synapse_mS,
    seed_low,
    seed_high,
    b0,
    nb,
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
    noise,
    v_keep,
    p_keep,
):
    """Simulations ``b0 .. b0 + nb - 1`` of the batch (``nb <= LANES``), in lock-step.

    Lanes ``nb .. LANES - 1`` are padding (copies of the last simulation without noise);
    their results are discarded. ``noise`` (>= nb, 3 N), ``v_keep`` (>= nb, 3, N - n_burn)
    and ``p_keep`` (>= nb, 3, N - n_burn), or (>= nb, 3, 0) for no energies, are scratch
    buffers, entirely overwritten for the first ``nb`` rows.
    """
    N = n_steps
    n_keep = N - n_burn
    n_rec = voltage_record.shape[2]
    C = CAPACITANCE_UF
    ca_decay = math.exp(-dt / CA_TAU_MS)
    inv_area = 1.0 / AREA_CM2
    gates_new_v = (trap_flags & TRAP_GATES_NEW_V) != 0
    kca_new_ca = (trap_flags & TRAP_KCA_NEW_CALCIUM) != 0
    zero_g_fallback = (trap_flags & TRAP_NO_ZERO_G_FALLBACK) == 0
    clamp_syn = (trap_flags & TRAP_NO_SYNAPSE_CLAMP) == 0
    noise_shift = 1 if (trap_flags & TRAP_NOISE_PREVIOUS_INDEX) else 0
    noise_factor = math.sqrt(dt) if (trap_flags & TRAP_NOISE_SCALED_SQRT_DT) else 1.0

    # ---- per-simulation noise streams (nb, 3 N): draw j N + i drives neuron j at step i
    for l in range(nb):
        fill_legacy_normal(seed_low[b0 + l], seed_high[b0 + l], noise_std, noise[l])

    # ---- parameters and state, lane-innermost (initial state of §2.5)
    w = np.zeros((_NROW, LANES))
    h_init = 1.0 if (trap_flags & TRAP_INACTIVATION_START_ONE) else 0.0
    e_ca_init = -RT_OVER_2F_MV * math.log(CA_REST_UM / CA_EXT_UM)
    for l in range(LANES):
        src = b0 + min(l, nb - 1)
        for j in range(3):
            r = j * _NS
            w[r + _V, l] = V_INIT_MV
            w[r + _VN, l] = V_INIT_MV
            w[r + _CA, l] = CA_REST_UM
            w[r + _ECAP, l] = e_ca_init
            for q in range(4):
                w[r + _H + q, l] = h_init
            for c in range(8):
                w[r + _G + c, l] = g_membrane_density[src, j, c] * AREA_CM2
        for k in range(7):
            w[_GS + k, l] = g_synapse_mS[src, k]
    # s = 0, hence no synaptic input at step 1

    nbuf = np.zeros((CHUNK, 3, LANES))  # padding lanes keep zero noise
    vbuf = np.empty((CHUNK, 3, LANES))
    pbuf = np.empty((CHUNK, 3, LANES))
    with_power = p_keep.shape[2] == n_keep
    if n_burn == 0:
        for l in range(nb):
            for j in range(3):
                v_keep[l, j, 0] = V_INIT_MV
                if with_power:
                    p_keep[l, j, 0] = 0.0

    for i0 in range(1, N, CHUNK):
        tc = min(CHUNK, N - i0)
        # noise samples i (or i - 1) of this chunk, lane-innermost
        for l in range(nb):
            for j in range(3):
                lo = j * N + i0 - noise_shift
                row = noise[l, lo : lo + tc]
                for t in range(tc):
                    nbuf[t, j, l] = row[t] * noise_factor

        for t in range(tc):
            nz = nbuf[t]
            for j in range(3):
                r = j * _NS
                for l in range(LANES):
                    w[r + _NZ, l] = nz[j, l]

            # ---- steps 1-5 per neuron (synaptic input already formed); lanes innermost
            for j in range(3):
                r = j * _NS
                for l in range(LANES):
                    v = w[r + _V, l]
                    ca = w[r + _CA, l]
                    m_na = w[r + _M + 0, l]
                    m_cat = w[r + _M + 1, l]
                    m_cas = w[r + _M + 2, l]
                    m_a = w[r + _M + 3, l]
                    m_kca = w[r + _M + 4, l]
                    m_kd = w[r + _M + 5, l]
                    m_h = w[r + _M + 6, l]
                    h_na = w[r + _H + 0, l]
                    h_cat = w[r + _H + 1, l]
                    h_cas = w[r + _H + 2, l]
                    h_a = w[r + _H + 3, l]
                    # 2. channel conductances from the gates at i-1 (mS)
                    c_na = w[r + _G + 0, l] * m_na * m_na * m_na * h_na
                    c_cat = w[r + _G + 1, l] * m_cat * m_cat * m_cat * h_cat
                    c_cas = w[r + _G + 2, l] * m_cas * m_cas * m_cas * h_cas
                    c_a = w[r + _G + 3, l] * m_a * m_a * m_a * h_a
                    mk = m_kca * m_kca
                    c_kca = w[r + _G + 4, l] * mk * mk
                    md = m_kd * m_kd
                    c_kd = w[r + _G + 5, l] * md * md
                    c_h = w[r + _G + 6, l] * m_h
                    c_leak = w[r + _G + 7, l]
                    # energy measure (reference: previous step's E_Ca), per cm^2
                    d_na = v - E_NA_MV
                    d_ca = v - w[r + _ECAP, l]
                    d_k = v - E_K_MV
                    d_h = v - E_H_MV
                    d_l = v - E_LEAK_MV
                    power = (
                        c_na * (d_na * d_na)
                        + c_cat * (d_ca * d_ca)
                        + c_cas * (d_ca * d_ca)
                        + c_a * (d_k * d_k)
                        + c_kca * (d_k * d_k)
                        + c_kd * (d_k * d_k)
                        + c_h * (d_h * d_h)
                        + c_leak * (d_l * d_l)
                    )
                    w[r + _PW, l] = (power + w[r + _PSYN, l]) * inv_area
                    # 3. calcium: E_Ca from [Ca]_{i-1}, exponential Euler
                    e_ca = RT_OVER_2F_MV * vlog(CA_EXT_UM / ca)
                    w[r + _ECAP, l] = e_ca
                    i_ca = (c_cat + c_cas) * (v - e_ca)
                    ca_inf = CA_REST_UM - CA_F_UM_PER_UA * i_ca
                    ca_new = ca_inf + (ca - ca_inf) * ca_decay
                    # 4. voltage: exponential Euler, forward Euler when G = 0
                    G = (
                        w[r + _GSYN, l]
                        + c_na + c_cat + c_cas + c_a + c_kca + c_kd + c_h + c_leak
                    )
                    Q = (
                        w[r + _ISYN, l]
                        + c_na * E_NA_MV
                        + c_cat * e_ca
                        + c_cas * e_ca
                        + c_a * E_K_MV
                        + c_kca * E_K_MV
                        + c_kd * E_K_MV
                        + c_h * E_H_MV
                        + c_leak * E_LEAK_MV
                        + w[r + _NZ, l]
                    )
                    v_inf = Q / G
                    v_exp = v_inf + (v - v_inf) * vexp(-dt * G / C)
                    v_fe = v + dt * Q / C
                    v_new = v_fe if ((G == 0.0) & zero_g_fallback) else v_exp
                    w[r + _VN, l] = v_new
                    w[r + _CA, l] = ca_new
                    # 5. gates with the OLD voltage (and old calcium for KCa)
                    x = v_new if gates_new_v else v
                    cx = ca_new if kca_new_ca else ca
                    w[r + _M + 0, l] = _relax(
                        m_na,
                        _sig(x, 25.5, 1.0 / -5.29),
                        2.64 - 2.52 * _sig(x, 120.0, 1.0 / -25.0),
                        dt,
                    )
                    tau_h_na = (1.34 / (1.0 + vexp((x + 62.9) * (1.0 / -10.0)))) * (
                        1.5 + 1.0 / (1.0 + vexp((x + 34.9) * (1.0 / 3.6)))
                    )
                    w[r + _H + 0, l] = _relax(h_na, _sig(x, 48.9, 1.0 / 5.18), tau_h_na, dt)
                    w[r + _M + 1, l] = _relax(
                        m_cat,
                        _sig(x, 27.1, 1.0 / -7.2),
                        43.4 - 42.6 * _sig(x, 68.1, 1.0 / -20.5),
                        dt,
                    )
                    w[r + _H + 1, l] = _relax(
                        h_cat,
                        _sig(x, 32.1, 1.0 / 5.5),
                        210.0 - 179.6 * _sig(x, 55.0, 1.0 / -16.9),
                        dt,
                    )
                    tau_m_cas = 2.8 + 14.0 / (
                        vexp((x + 27.0) * (1.0 / 10.0)) + vexp((x + 70.0) * (1.0 / -13.0))
                    )
                    w[r + _M + 2, l] = _relax(m_cas, _sig(x, 33.0, 1.0 / -8.1), tau_m_cas, dt)
                    tau_h_cas = 120.0 + 300.0 / (
                        vexp((x + 55.0) * (1.0 / 9.0)) + vexp((x + 65.0) * (1.0 / -16.0))
                    )
                    w[r + _H + 2, l] = _relax(h_cas, _sig(x, 60.0, 1.0 / 6.2), tau_h_cas, dt)
                    w[r + _M + 3, l] = _relax(
                        m_a,
                        _sig(x, 27.2, 1.0 / -8.7),
                        23.2 - 20.8 * _sig(x, 32.9, 1.0 / -15.2),
                        dt,
                    )
                    w[r + _H + 3, l] = _relax(
                        h_a,
                        _sig(x, 56.9, 1.0 / 4.9),
                        77.2 - 58.4 * _sig(x, 38.9, 1.0 / -26.5),
                        dt,
                    )
                    w[r + _M + 4, l] = _relax(
                        m_kca,
                        (cx / (cx + 3.0)) * _sig(x, 28.3, 1.0 / -12.6),
                        180.6 - 150.2 * _sig(x, 46.0, 1.0 / -22.7),
                        dt,
                    )
                    w[r + _M + 5, l] = _relax(
                        m_kd,
                        _sig(x, 12.3, 1.0 / -11.8),
                        14.4 - 12.8 * _sig(x, 28.3, 1.0 / -19.2),
                        dt,
                    )
                    tau_m_h = 2.0 / (vexp(-14.59 - 0.086 * x) + vexp(-1.87 + 0.0701 * x))
                    w[r + _M + 6, l] = _relax(m_h, _sig(x, 75.0, 1.0 / 5.5), tau_m_h, dt)

            # ---- 6. synapses with the old presynaptic voltage, forward Euler with clamp;
            # then V_i becomes the old voltage and the synaptic input of step i + 1 is formed
            for l in range(LANES):
                v0 = w[_VN, l] if gates_new_v else w[_V, l]
                v1 = w[_NS + _VN, l] if gates_new_v else w[_NS + _V, l]
                v2 = w[2 * _NS + _VN, l] if gates_new_v else w[2 * _NS + _V, l]
                inf0 = 1.0 / (1.0 + vexp((SYN_VTH_MV - v0) * (1.0 / SYN_DELTA_MV)))
                inf1 = 1.0 / (1.0 + vexp((SYN_VTH_MV - v1) * (1.0 / SYN_DELTA_MV)))
                inf2 = 1.0 / (1.0 + vexp((SYN_VTH_MV - v2) * (1.0 / SYN_DELTA_MV)))
                # AB-LP, PD-LP, AB-PY, PD-PY (pre AB/PD), LP-PD, LP-PY (pre LP), PY-LP
                q0 = _syn_step(w[_S + 0, l], inf0, 40.0, dt, clamp_syn)
                q1 = _syn_step(w[_S + 1, l], inf0, 100.0, dt, clamp_syn)
                q2 = _syn_step(w[_S + 2, l], inf0, 40.0, dt, clamp_syn)
                q3 = _syn_step(w[_S + 3, l], inf0, 100.0, dt, clamp_syn)
                q4 = _syn_step(w[_S + 4, l], inf1, 40.0, dt, clamp_syn)
                q5 = _syn_step(w[_S + 5, l], inf1, 40.0, dt, clamp_syn)
                q6 = _syn_step(w[_S + 6, l], inf2, 40.0, dt, clamp_syn)
                w[_S + 0, l] = q0
                w[_S + 1, l] = q1
                w[_S + 2, l] = q2
                w[_S + 3, l] = q3
                w[_S + 4, l] = q4
                w[_S + 5, l] = q5
                w[_S + 6, l] = q6
                u0 = w[_VN, l]
                u1 = w[_NS + _VN, l]
                u2 = w[2 * _NS + _VN, l]
                w[_V, l] = u0
                w[_NS + _V, l] = u1
                w[2 * _NS + _V, l] = u2
                # synaptic input of the next step (§2.5 step 1), from s_i and V_i
                a0 = w[_GS + 0, l] * q0
                a1 = w[_GS + 1, l] * q1
                a2 = w[_GS + 2, l] * q2
                a3 = w[_GS + 3, l] * q3
                a4 = w[_GS + 4, l] * q4
                a5 = w[_GS + 5, l] * q5
                a6 = w[_GS + 6, l] * q6
                e0 = u0 + 70.0  # into AB/PD: LP-PD (-70 mV)
                e1g = u1 + 70.0  # into LP: AB-LP, PY-LP (-70 mV), PD-LP (-80 mV)
                e1c = u1 + 80.0
                e2g = u2 + 70.0  # into PY: AB-PY, LP-PY (-70 mV), PD-PY (-80 mV)
                e2c = u2 + 80.0
                w[_GSYN, l] = a4
                w[_ISYN, l] = a4 * -70.0
                w[_PSYN, l] = a4 * e0 * e0
                w[_NS + _GSYN, l] = a0 + a1 + a6
                w[_NS + _ISYN, l] = a0 * -70.0 + a1 * -80.0 + a6 * -70.0
                w[_NS + _PSYN, l] = a0 * e1g * e1g + a1 * e1c * e1c + a6 * e1g * e1g
                w[2 * _NS + _GSYN, l] = a2 + a3 + a5
                w[2 * _NS + _ISYN, l] = a2 * -70.0 + a3 * -80.0 + a5 * -70.0
                w[2 * _NS + _PSYN, l] = a2 * e2g * e2g + a3 * e2c * e2c + a5 * e2g * e2g

            vb = vbuf[t]
            pb = pbuf[t]
            for j in range(3):
                r = j * _NS
                for l in range(LANES):
                    vb[j, l] = w[r + _V, l]
                    pb[j, l] = w[r + _PW, l]

        # kept samples of this chunk
        t_first = max(n_burn - i0, 0)
        if t_first < tc:
            k0 = i0 + t_first - n_burn
            for l in range(nb):
                for j in range(3):
                    vk = v_keep[l, j, k0 : k0 + tc - t_first]
                    for t in range(tc - t_first):
                        vk[t] = vbuf[t_first + t, j, l]
                    if with_power:
                        pk = p_keep[l, j, k0 : k0 + tc - t_first]
                        for t in range(tc - t_first):
                            pk[t] = pbuf[t_first + t, j, l]

    for l in range(nb):
        for r in range(n_rec):
            for j in range(3):
                voltage_record[b0 + l, j, r] = v_keep[l, j, r * record_every]
        _feat.trace_features(
            v_keep[l],
            p_keep[l],
            dt,
            min_burst_ms,
            centre,
            left,
            right,
            scalars_out[b0 + l],
            spike_times_out[b0 + l],
        )


@njit(cache=True, inline="always")
def _syn_step(s, s_inf, k_minus_inv, dt, clamp):
    """Forward-Euler synapse update, ``s_inf`` when ``dt > tau_s`` (and ``clamp``)."""
    tau_s = k_minus_inv * (1.0 - s_inf)
    s_next = s + (s_inf - s) * dt / tau_s
    return s_inf if ((dt > tau_s) & clamp) else s_next



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
    with_energy=True,
):
    """Simulate a batch and compute its features (§2.2-§2.6), :data:`LANES` at a time.

    Parameters
    ----------
    g_membrane_density : numpy.ndarray, shape (B, 3, 8)
        Maximal conductance densities (mS/cm^2), neurons AB/PD, LP, PY; currents Na, CaT,
        CaS, A, KCa, Kd, H, leak.
    g_synapse_mS : numpy.ndarray, shape (B, 7)
        Absolute maximal synaptic conductances (mS) in the order of :data:`SYNAPSES`.
    seed_low, seed_high : numpy.ndarray, shape (B,), int64
        32-bit halves of the 64-bit noise seed of each simulation.
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
    voltage_record : numpy.ndarray, shape (B, 3, n_rec)
        Post-burn-in samples ``n_burn + r * record_every`` written in place (mV); may have
        ``n_rec == 0``.
    min_burst_ms : float
        Minimum kept burst length (ms).
    centre, left, right : numpy.ndarray
        Savitzky-Golay weights.
    scalars_out : numpy.ndarray, shape (B, N_SCALARS)
        Features and extras, written in place.
    spike_times_out : numpy.ndarray, shape (B, 3, max_spikes)
        Spike times (ms after burn-in), NaN-padded, written in place.
    trap_flags : int
        0 for the correct model; test-only deliberate mistakes otherwise.
    with_energy : bool, optional
        Keep the power trace and compute the energies (else they are NaN; saves 9.6 MB
        of scratch per simulation in flight).

    Notes
    -----
    The batch is cut into blocks of :data:`LANES` consecutive simulations; each thread
    allocates its scratch once (noise streams, post-burn-in voltage and power of
    ``LANES`` simulations: about 30 MB per simulation, 20 MB without energies) and runs
    its blocks one after the other. The result of a simulation depends only on its own
    parameters and seed.
    """
    n_blocks = (g_membrane_density.shape[0] + LANES - 1) // LANES
    _simulate_blocks(
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
        with_energy,
        max(1, min(get_num_threads(), n_blocks)),
    )


@njit(cache=True, parallel=True, error_model="numpy")
def _simulate_blocks(
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
    with_energy,
    n_workers,
):
    """Compiled body of :func:`simulate_batch`; ``n_workers`` threads share the blocks."""
    B = g_membrane_density.shape[0]
    N = n_steps
    n_keep = N - n_burn
    n_blocks = (B + LANES - 1) // LANES
    lanes = min(LANES, B)
    for worker in prange(n_workers):
        noise = np.empty((lanes, 3 * N))
        v_keep = np.empty((lanes, 3, n_keep))
        p_keep = np.empty((lanes, 3, n_keep if with_energy else 0))
        for blk in range(worker, n_blocks, n_workers):
            b0 = blk * LANES
            nb = min(LANES, B - b0)
            _run_block(
                g_membrane_density,
                g_synapse_mS,
                seed_low,
                seed_high,
                b0,
                nb,
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
                noise,
                v_keep,
                p_keep,
            )
