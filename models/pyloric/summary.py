"""Summary features of the pyloric rhythm (spec ``simulator-models.md`` §2.6).

Everything here works on the post-burn-in voltage of the three model neurons (AB/PD, LP,
PY), sampled every ``dt`` ms, with time stamps restarting at 0 at the first kept sample.
The compiled functions are called by the fused simulator kernel (so that an 11-s trace
never leaves the worker) and, through :func:`features_from_voltage`, on recorded traces.

Conventions that reproduce the reference implementation (pyloric ``PrinzStats``):

* smoothing: Savitzky-Golay, 21 samples, cubic, SciPy ``mode="interp"`` edges (§2.6.1);
* spike ``k`` (0-based index into the smoothed trace): ``v[k+1] > -10 mV``,
  ``v[k+1] - v[k] >= 0`` and ``v[k+2] - v[k+1] <= 0``; spike time ``k * dt`` (§2.6.2);
* spike indices are integers; inter-spike intervals and burst lengths are compared as the
  floating-point differences of ``k * dt`` exactly as upstream (``>= 150`` ms splits a
  burst, ``> min_burst_ms`` keeps it), so borderline cases fall the same way (§2.6.3);
* NaN rules of §2.6.3-§2.6.8 (burst duration NaN without kept bursts, cycle length NaN
  with fewer than two, plateau NaN without kept bursts, phase-type features NaN unless the
  rhythm is triphasic).

The canonical feature order of this package is the **pyloric/PNAS order** (18 features,
:data:`FEATURE_NAMES`); :func:`reorder_features` maps to and from the eLife order.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# --------------------------------------------------------------------------------------
# names and orders
# --------------------------------------------------------------------------------------

NEURONS = ("AB/PD", "LP", "PY")

#: The 18 features, pyloric/PNAS order (spec §2.6 "Feature vector, pyloric/PNAS order").
FEATURE_NAMES = (
    "cycle_period",
    "burst_duration_ABPD",
    "burst_duration_LP",
    "burst_duration_PY",
    "duty_cycle_ABPD",
    "duty_cycle_LP",
    "duty_cycle_PY",
    "start_phase_LP",
    "start_phase_PY",
    "start_to_start_ABPD_LP",
    "start_to_start_LP_PY",
    "end_to_start_ABPD_LP",
    "end_to_start_LP_PY",
    "phase_gap_ABPD_LP",
    "phase_gap_LP_PY",
    "plateau_duration_ABPD",
    "plateau_duration_LP",
    "plateau_duration_PY",
)

#: The 18 features, eLife-2020 order (15 + 3 plateaus; second start-to-start is AB/PD->PY).
ELIFE_FEATURE_NAMES = (
    "cycle_period",
    "burst_duration_ABPD",
    "burst_duration_LP",
    "burst_duration_PY",
    "end_to_start_ABPD_LP",
    "end_to_start_LP_PY",
    "start_to_start_ABPD_LP",
    "start_to_start_ABPD_PY",
    "duty_cycle_ABPD",
    "duty_cycle_LP",
    "duty_cycle_PY",
    "phase_gap_ABPD_LP",
    "phase_gap_LP_PY",
    "start_phase_LP",
    "start_phase_PY",
    "plateau_duration_ABPD",
    "plateau_duration_LP",
    "plateau_duration_PY",
)

FEATURE_UNITS = {
    "cycle_period": "ms",
    "burst_duration": "ms",
    "duty_cycle": "1",
    "start_phase": "1",
    "start_to_start": "ms",
    "end_to_start": "ms",
    "phase_gap": "1",
    "plateau_duration": "ms",
}

# Layout of the per-simulation scalar output row written by the kernels.
N_FEATURES = 18
IDX_SS_ABPD_PY = 18  # start-to-start AB/PD -> PY (eLife feature), ms
IDX_TRIPHASIC = 19
IDX_PYLORIC_LIKE = 20
IDX_NUM_BURSTS = 21  # 3 values
IDX_NUM_SPIKES = 24  # 3
IDX_ENERGY = 27  # 3
IDX_ENERGY_PER_BURST = 30  # 3
IDX_ENERGY_PER_SPIKE = 33  # 3
IDX_V_MEAN = 36  # 3
IDX_V_STD = 39  # 3
IDX_V_SKEW = 42  # 3
IDX_V_KURT = 45  # 3
N_SCALARS = 48

# fixed analysis constants (§2.6)
SPIKE_THRESHOLD_MV = -10.0
IBI_THRESHOLD_MS = 150.0
PLATEAU_THRESHOLD_MV = -30.0
PLATEAU_STEPPING = 10
TRIPHASIC_FRACTION = 0.9
PYLORIC_FRACTION = 0.7
#: Minimum burst length (ms): 40 in pyloric/PNAS and the eLife experimental data,
#: 50 in the eLife simulation-side code (§2.6.3).
DEFAULT_MIN_BURST_MS = 40.0

# energy window around a burst, in samples (reference: 2 ms before, 12 ms after at 0.025 ms)
ENERGY_SAMPLES_BEFORE_BURST = 80
ENERGY_SAMPLES_AFTER_BURST = 480


def savgol_window(dt_ms: float) -> int:
    """Savitzky-Golay window length: ``floor(0.5 / dt)`` made odd (21 at 0.025 ms, §2.6.1)."""
    w = int(0.5 / dt_ms)
    if w % 2 == 0:
        w += 1
    return w


def savgol_matrices(window: int, polyorder: int = 3):
    """Coefficients of the Savitzky-Golay smoother with SciPy's ``mode="interp"`` edges.

    Parameters
    ----------
    window : int
        Odd window length (samples).
    polyorder : int
        Polynomial order (3 in §2.6.1).

    Returns
    -------
    centre : numpy.ndarray, shape (window,)
        Weights of the interior smoother, ``y[k] = sum_j centre[j] x[k - half + j]``.
    left, right : numpy.ndarray, shape (half, window)
        ``y[:half] = left @ x[:window]`` and ``y[-half:] = right @ x[-window:]``: the
        least-squares polynomial of order ``polyorder`` through the first/last window
        evaluated at the edge samples, as ``scipy.signal.savgol_filter(mode="interp")``.
    """
    if window % 2 != 1 or window <= polyorder:
        raise ValueError(f"window must be odd and > polyorder, got {window}")
    half = window // 2
    pos = np.arange(window, dtype=np.float64)
    fit = np.vander(pos, polyorder + 1, increasing=True)  # (window, p+1)
    projector = np.linalg.pinv(fit)  # (p+1, window)
    full = np.vander(pos, polyorder + 1, increasing=True) @ projector  # (window, window)
    centre = full[half].copy()
    left = full[:half].copy()
    right = full[window - half :].copy()
    return centre, left, right


# --------------------------------------------------------------------------------------
# compiled building blocks
# --------------------------------------------------------------------------------------


@njit(cache=True)
def savgol_smooth(x, centre, left, right, out):
    """Savitzky-Golay smoothing of ``x`` into ``out`` (see :func:`savgol_matrices`).

    A trace shorter than the window is copied unchanged (SciPy would raise).
    """
    n = x.shape[0]
    w = centre.shape[0]
    half = w // 2
    if n < w:
        for k in range(n):
            out[k] = x[k]
        return
    # interior: out[k] = sum_j centre[j] x[k - half + j], accumulated in the order j = 0,
    # 1, ... for every k, over blocks of k so that the inner loop runs along k (vectorises)
    block = 512
    for k0 in range(half, n - half, block):
        m = min(block, n - half - k0)
        acc = out[k0 : k0 + m]
        for t in range(m):
            acc[t] = 0.0
        for j in range(w):
            c = centre[j]
            xs = x[k0 - half + j : k0 - half + j + m]
            for t in range(m):
                acc[t] += c * xs[t]
    for r in range(half):
        acc = 0.0
        for j in range(w):
            acc += left[r, j] * x[j]
        out[r] = acc
        acc = 0.0
        for j in range(w):
            acc += right[r, j] * x[n - w + j]
        out[n - half + r] = acc


@njit(cache=True)
def detect_spikes(smoothed, threshold, out_idx):
    """Spike indices of a smoothed trace (§2.6.2); returns the count written to ``out_idx``.

    Sample ``k`` is a spike when ``s[k+1] > threshold``, ``s[k+1] - s[k] >= 0`` and
    ``s[k+2] - s[k+1] <= 0``; ``out_idx`` needs room for ``len(smoothed) // 2 + 1``.
    """
    n = smoothed.shape[0]
    count = 0
    for k in range(n - 2):
        v1 = smoothed[k + 1]
        if v1 > threshold and (v1 - smoothed[k]) >= 0.0 and (smoothed[k + 2] - v1) <= 0.0:
            out_idx[count] = k
            count += 1
    return count


@njit(cache=True)
def find_bursts(spike_idx, n_spikes, dt, ibi_ms, min_burst_ms, out_start, out_end):
    """Group spikes into bursts and keep the long ones (§2.6.3).

    A burst ends wherever the next inter-spike interval is ``>= ibi_ms``; the last burst
    ends at the last spike. A burst is kept when ``t_end - t_start > min_burst_ms``.
    Times are ``index * dt`` (float), compared as upstream.

    Returns
    -------
    int
        Number of kept bursts; their first/last spike indices are in ``out_start`` /
        ``out_end``.
    """
    n_kept = 0
    if n_spikes == 0:
        return 0
    group_first = 0
    for q in range(1, n_spikes + 1):
        split = q == n_spikes
        if not split:
            split = (spike_idx[q] * dt - spike_idx[q - 1] * dt) >= ibi_ms
        if split:
            t0 = spike_idx[group_first] * dt
            t1 = spike_idx[q - 1] * dt
            if (t1 - t0) > min_burst_ms:
                out_start[n_kept] = spike_idx[group_first]
                out_end[n_kept] = spike_idx[q - 1]
                n_kept += 1
            group_first = q
    return n_kept


@njit(cache=True)
def plateau_samples(above, start, stop, stepping):
    """Longest run of marked samples in ``above[start:stop:stepping]`` ended by an unmarked one.

    A run still open at the end of the segment is not counted (reference quirk, §2.6.5).
    Returns the run length times ``stepping`` (samples).
    """
    longest = 0
    current = 0
    k = start
    while k < stop:
        if above[k]:
            current += 1
        else:
            if current > longest:
                longest = current
            current = 0
        k += stepping
    return longest * stepping


@njit(cache=True)
def _moments(v, out, neuron):
    n = v.shape[0]
    mean = 0.0
    for k in range(n):
        mean += v[k]
    mean /= n
    m2 = 0.0
    m3 = 0.0
    m4 = 0.0
    for k in range(n):
        d = v[k] - mean
        d2 = d * d
        m2 += d2
        m3 += d2 * d
        m4 += d2 * d2
    m2 /= n
    m3 /= n
    m4 /= n
    out[IDX_V_MEAN + neuron] = mean
    out[IDX_V_STD + neuron] = math.sqrt(m2)
    if m2 <= (2.220446049250313e-16 * mean) ** 2 or m2 == 0.0:
        out[IDX_V_SKEW + neuron] = np.nan
        out[IDX_V_KURT + neuron] = np.nan
    else:
        out[IDX_V_SKEW + neuron] = m3 / m2**1.5
        out[IDX_V_KURT + neuron] = m4 / (m2 * m2) - 3.0


@njit(cache=True)
def trace_features(
    voltage,
    power,
    dt,
    min_burst_ms,
    centre,
    left,
    right,
    out,
    spike_times_out,
):
    """All features of one simulation from its post-burn-in voltage (§2.6).

    Parameters
    ----------
    voltage : numpy.ndarray, shape (3, n)
        Membrane potential (mV) of AB/PD, LP, PY after burn-in, one sample per ``dt``.
    power : numpy.ndarray, shape (3, n) or (3, 0)
        Per-step power density (``sum_c g_c (V - E_c)^2`` plus synapses, divided by the
        area; mS/cm^2 * mV^2 = nW/cm^2) aligned with ``voltage``; with zero columns the
        energies are NaN. Energies are ``sum(power) * dt / 1000`` (nJ/cm^2), per burst
        over samples ``[start - 80, end + 480)`` of each kept burst (Python slice rules,
        including the wrap of a negative start), per spike the burst total over the
        number of spikes (reference definitions; §2.6 optional extras).
    dt : float
        Sampling step (ms).
    min_burst_ms : float
        Minimum burst length (ms), 40 (pyloric/PNAS) or 50 (eLife simulations).
    centre, left, right : numpy.ndarray
        Savitzky-Golay weights from :func:`savgol_matrices`.
    out : numpy.ndarray, shape (N_SCALARS,)
        Written in place: the 18 features (PNAS order) then the extras (module constants
        ``IDX_*``).
    spike_times_out : numpy.ndarray, shape (3, max_spikes)
        Spike times (ms) written in place, NaN-padded; may have ``max_spikes == 0``.
    """
    n = voltage.shape[1]
    has_power = power.shape[1] == n and n > 0
    # energy = sum over steps of power density (nW/cm^2) * dt (ms) / 1000 -> nJ/cm^2
    energy_scale = dt * 1e-3
    nan = np.nan
    for q in range(N_SCALARS):
        out[q] = nan
    max_spikes = spike_times_out.shape[1]
    for j in range(3):
        for q in range(max_spikes):
            spike_times_out[j, q] = nan

    smoothed = np.empty(n)
    spike_idx = np.empty(n // 2 + 2, dtype=np.int64)
    above = np.empty(n, dtype=np.bool_)
    # per-neuron kept bursts (first/last spike index); at most n_spikes bursts
    burst_start = np.empty((3, n // 2 + 2), dtype=np.int64)
    burst_end = np.empty((3, n // 2 + 2), dtype=np.int64)
    n_bursts = np.zeros(3, dtype=np.int64)
    cycle = np.empty(3)

    for j in range(3):
        v = voltage[j]
        _moments(v, out, j)
        savgol_smooth(v, centre, left, right, smoothed)
        ns = detect_spikes(smoothed, SPIKE_THRESHOLD_MV, spike_idx)
        out[IDX_NUM_SPIKES + j] = ns
        for q in range(min(ns, max_spikes)):
            spike_times_out[j, q] = spike_idx[q] * dt
        nb = find_bursts(
            spike_idx, ns, dt, IBI_THRESHOLD_MS, min_burst_ms, burst_start[j], burst_end[j]
        )
        n_bursts[j] = nb
        out[IDX_NUM_BURSTS + j] = nb

        # burst duration: mean (end - start) of kept bursts, NaN if none
        if nb > 0:
            acc = 0.0
            for r in range(nb):
                acc += burst_end[j, r] * dt - burst_start[j, r] * dt
            out[1 + j] = acc / nb
        # cycle length: mean difference of consecutive kept burst starts, NaN if < 2
        if nb >= 2:
            acc = 0.0
            for r in range(nb - 1):
                acc += burst_start[j, r + 1] * dt - burst_start[j, r] * dt
            cycle[j] = acc / (nb - 1)
        else:
            cycle[j] = nan

        # plateau duration (§2.6.5)
        if nb > 0:
            for k in range(n):
                above[k] = smoothed[k] > PLATEAU_THRESHOLD_MV
            acc = 0.0
            for r in range(nb):
                if r == nb - 1:
                    stop = spike_idx[ns - 1]
                else:
                    stop = burst_start[j, r + 1]
                acc += plateau_samples(above, burst_start[j, r], stop, PLATEAU_STEPPING)
            mean_len = acc / nb
            if mean_len < 200.0:
                mean_len = 100.0
            out[15 + j] = mean_len * dt

        # energies (reference definitions, incl. the negative-index wrap of the window)
        if has_power:
            total = 0.0
            for k in range(n):
                total += power[j, k]
            out[IDX_ENERGY + j] = total * energy_scale
            if ns == 0:
                out[IDX_ENERGY_PER_BURST + j] = 0.0
                out[IDX_ENERGY_PER_SPIKE + j] = 0.0
            else:
                cum = 0.0
                for r in range(nb):
                    lo = burst_start[j, r] - ENERGY_SAMPLES_BEFORE_BURST
                    hi = burst_end[j, r] + ENERGY_SAMPLES_AFTER_BURST
                    if lo < 0:
                        lo += n  # Python slice semantics of the reference
                        if lo < 0:
                            lo = 0
                    if hi > n:
                        hi = n
                    for k in range(lo, hi):
                        cum += power[j, k]
                out[IDX_ENERGY_PER_SPIKE + j] = cum * energy_scale / max(1, ns)
                if nb > 0:
                    out[IDX_ENERGY_PER_BURST + j] = cum * energy_scale / nb

    # ---- circuit level (§2.6.6-§2.6.9) ----
    period = cycle[0]
    out[0] = period
    for j in range(3):
        out[4 + j] = out[1 + j] / period
    out[IDX_TRIPHASIC] = 0.0
    out[IDX_PYLORIC_LIKE] = 0.0
    if not np.isnan(period):
        nb0 = n_bursts[0]
        n_tri = 0
        n_pyloric = 0
        ss_ab_lp = 0.0
        ss_lp_py = 0.0
        ss_ab_py = 0.0
        es_ab_lp = 0.0
        es_lp_py = 0.0
        for r in range(nb0 - 1):
            pst = burst_start[0, r]
            pet = burst_start[0, r + 1]
            ok = True
            first = np.empty(3, dtype=np.int64)
            for j in range(3):
                count = 0
                for q in range(n_bursts[j]):
                    b = burst_start[j, q]
                    if pst <= b and b < pet:
                        if count == 0:
                            first[j] = q
                        count += 1
                if count != 1:
                    ok = False
            if ok:
                n_tri += 1
                s_ab = burst_start[0, first[0]] * dt
                e_ab = burst_end[0, first[0]] * dt
                s_lp = burst_start[1, first[1]] * dt
                e_lp = burst_end[1, first[1]] * dt
                s_py = burst_start[2, first[2]] * dt
                e_py = burst_end[2, first[2]] * dt
                ss_ab_lp += s_lp - s_ab
                ss_lp_py += s_py - s_lp
                ss_ab_py += s_py - s_ab
                es_ab_lp += s_lp - e_ab
                es_lp_py += s_py - e_lp
                if (s_lp - s_py) <= 0.0 and (e_lp - e_py) <= 0.0 and (e_ab - s_lp) <= 0.0:
                    n_pyloric += 1
        triphasic = nb0 >= 2 and (n_tri / (nb0 - 1)) >= TRIPHASIC_FRACTION
        if triphasic:
            out[IDX_TRIPHASIC] = 1.0
            ss_ab_lp /= n_tri
            ss_lp_py /= n_tri
            ss_ab_py /= n_tri
            es_ab_lp /= n_tri
            es_lp_py /= n_tri
            out[7] = ss_ab_lp / period
            out[8] = ss_ab_py / period
            out[9] = ss_ab_lp
            out[10] = ss_lp_py
            out[11] = es_ab_lp
            out[12] = es_lp_py
            out[13] = es_ab_lp / period
            out[14] = es_lp_py / period
            out[IDX_SS_ABPD_PY] = ss_ab_py
            if (n_pyloric / n_tri) >= PYLORIC_FRACTION:
                out[IDX_PYLORIC_LIKE] = 1.0


@njit(cache=True)
def _features_batch(voltage, dt, min_burst_ms, centre, left, right, out, spike_times_out):
    empty_power = np.empty((3, 0))
    for b in range(voltage.shape[0]):
        trace_features(
            voltage[b],
            empty_power,
            dt,
            min_burst_ms,
            centre,
            left,
            right,
            out[b],
            spike_times_out[b],
        )


# --------------------------------------------------------------------------------------
# Python-level helpers
# --------------------------------------------------------------------------------------


def features_from_voltage(
    voltage: np.ndarray,
    *,
    dt_ms: float = 0.025,
    min_burst_ms: float = DEFAULT_MIN_BURST_MS,
    max_spikes: int = 0,
) -> dict[str, np.ndarray]:
    """Features of recorded post-burn-in voltage traces (§2.6).

    Parameters
    ----------
    voltage : numpy.ndarray, shape (B, 3, n) or (3, n)
        Membrane potential (mV) of AB/PD, LP, PY sampled every ``dt_ms`` (no decimation),
        burn-in already removed.
    dt_ms : float
        Sampling step (ms).
    min_burst_ms : float
        Minimum kept burst length (ms).
    max_spikes : int
        Spike times returned per neuron (NaN-padded).

    Returns
    -------
    dict
        ``features`` (B, 18) in PNAS order and the extras (see :func:`unpack_scalars`);
        energies are NaN (no power trace).
    """
    v = np.asarray(voltage, dtype=np.float64)
    squeeze = v.ndim == 2
    if squeeze:
        v = v[None]
    if v.ndim != 3 or v.shape[1] != 3:
        raise ValueError(f"voltage must have shape (B, 3, n) or (3, n); got {v.shape}")
    v = np.ascontiguousarray(v)
    centre, left, right = savgol_matrices(savgol_window(dt_ms))
    out = np.empty((v.shape[0], N_SCALARS))
    spikes = np.empty((v.shape[0], 3, int(max_spikes)))
    _features_batch(v, float(dt_ms), float(min_burst_ms), centre, left, right, out, spikes)
    res = unpack_scalars(out)
    res["spike_times"] = spikes
    if squeeze:
        res = {k: a[0] for k, a in res.items()}
    return res


def unpack_scalars(scalars: np.ndarray) -> dict[str, np.ndarray]:
    """Split the kernel's (B, N_SCALARS) rows into named arrays.

    Returns
    -------
    dict
        ``features`` (B, 18, PNAS order; ms or dimensionless), ``start_to_start_ABPD_PY``
        (B,) ms, ``triphasic`` (B,) bool, ``pyloric_like`` (B,) bool, ``num_bursts``
        (B, 3) int, ``num_spikes`` (B, 3) int, ``energy`` (B, 3, 3) with the last axis
        ``[total, per_burst, per_spike]`` (reference power measure, per cm^2, summed over
        steps), ``voltage_moments`` (B, 3, 4) with ``[mean mV, SD mV, skewness,
        excess kurtosis]``.
    """
    s = np.asarray(scalars)
    energy = np.stack(
        [
            s[:, IDX_ENERGY : IDX_ENERGY + 3],
            s[:, IDX_ENERGY_PER_BURST : IDX_ENERGY_PER_BURST + 3],
            s[:, IDX_ENERGY_PER_SPIKE : IDX_ENERGY_PER_SPIKE + 3],
        ],
        axis=-1,
    )
    moments = np.stack(
        [
            s[:, IDX_V_MEAN : IDX_V_MEAN + 3],
            s[:, IDX_V_STD : IDX_V_STD + 3],
            s[:, IDX_V_SKEW : IDX_V_SKEW + 3],
            s[:, IDX_V_KURT : IDX_V_KURT + 3],
        ],
        axis=-1,
    )
    return {
        "features": s[:, :N_FEATURES].copy(),
        "start_to_start_ABPD_PY": s[:, IDX_SS_ABPD_PY].copy(),
        "triphasic": s[:, IDX_TRIPHASIC] > 0.5,
        "pyloric_like": s[:, IDX_PYLORIC_LIKE] > 0.5,
        "num_bursts": s[:, IDX_NUM_BURSTS : IDX_NUM_BURSTS + 3].astype(np.int64),
        "num_spikes": s[:, IDX_NUM_SPIKES : IDX_NUM_SPIKES + 3].astype(np.int64),
        "energy": energy,
        "voltage_moments": moments,
    }


def feature_names(order: str = "pnas") -> tuple[str, ...]:
    """Names of the 18 features in ``order`` (``"pnas"``, canonical, or ``"elife"``)."""
    order = _check_order(order)
    return FEATURE_NAMES if order == "pnas" else ELIFE_FEATURE_NAMES


def _check_order(order: str) -> str:
    o = str(order).lower()
    if o in ("pnas", "pyloric", "pnas-2022"):
        return "pnas"
    if o in ("elife", "elife-2020"):
        return "elife"
    raise ValueError(f"unknown feature order {order!r}; use 'pnas' (canonical) or 'elife'")


def reorder_features(
    x: np.ndarray,
    source: str = "pnas",
    target: str = "elife",
    *,
    start_to_start_abpd_py: np.ndarray | None = None,
) -> np.ndarray:
    """Map feature vectors between the pyloric/PNAS and the eLife order (§2.6).

    The orders hold the same quantities except one: PNAS has start-to-start LP->PY where
    eLife has start-to-start AB/PD->PY. Both are averages over the same triphasic periods,
    so ``SS_ABPD->PY = SS_ABPD->LP + SS_LP->PY`` (exact in real arithmetic; in floating point
    it differs from the directly averaged value by a few ulp). The PNAS authors converted
    the experimental eLife vector by this subtraction.

    Parameters
    ----------
    x : numpy.ndarray, shape (..., 18)
        Feature vectors in the ``source`` order.
    source, target : {"pnas", "elife"}
        Orders.
    start_to_start_abpd_py : numpy.ndarray, optional
        The directly averaged AB/PD->PY start-to-start (ms), shape ``x.shape[:-1]``, as
        returned by the simulator; used instead of the sum for ``pnas -> elife``.

    Returns
    -------
    numpy.ndarray
        ``x`` in the ``target`` order (a new array).
    """
    source = _check_order(source)
    target = _check_order(target)
    x = np.asarray(x, dtype=np.float64)
    if x.shape[-1] != N_FEATURES:
        raise ValueError(f"last axis must have 18 features, got shape {x.shape}")
    if source == target:
        return x.copy()
    src = feature_names(source)
    dst = feature_names(target)
    values = {name: x[..., i] for i, name in enumerate(src)}
    if source == "pnas":
        if start_to_start_abpd_py is not None:
            values["start_to_start_ABPD_PY"] = np.asarray(start_to_start_abpd_py, float)
        else:
            values["start_to_start_ABPD_PY"] = (
                values["start_to_start_ABPD_LP"] + values["start_to_start_LP_PY"]
            )
    else:
        values["start_to_start_LP_PY"] = (
            values["start_to_start_ABPD_PY"] - values["start_to_start_ABPD_LP"]
        )
    return np.stack([np.broadcast_to(values[name], x.shape[:-1]) for name in dst], axis=-1)
