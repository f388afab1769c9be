"""Summary features of a Hodgkin–Huxley voltage trace (spec §1.6, eLife-2020 and the sbi tutorial).

7-feature set (default; all published HH/Allen fits):

===  ===============  =======  ========================================================================
 #   name             unit     definition (windows of :class:`~.protocols.Protocol`)
===  ===============  =======  ========================================================================
 0   spike_count      1        spikes with :math:`t_{on} < t_k < t_{off}`, de-duplicated (see below)
 1   rest_mean        mV       mean of :math:`v` over ``[0, rest_stop)`` (:math:`t < t_{on}`)
 2   rest_std         mV       SD (ddof 0) over ``[rest_sd_start, rest_sd_stop)`` (last 10 % before onset)
 3   mean             mV       mean over the stimulus window ``[window_start, window_stop)``
 4   var              mV²      2nd central moment (ddof 0) over the stimulus window
 5   skew             1        :math:`\\mu_3/s^3` (Fisher–Pearson :math:`g_1`, :math:`s` = ddof-0 SD)
 6   kurt             1        :math:`\\mu_4/s^4` (Pearson, not excess; a Gaussian gives 3)
===  ===============  =======  ========================================================================

13-feature set (the defaults of the same upstream statistics class, spec §1.6):
``spike_count, autocorr_1ms .. autocorr_5ms, rest_mean, rest_std, mean, var, skew, kurt, moment5``;
``autocorr_L`` = :math:`\\sum_k x_k x_{k+L} / \\sum_k x_k^2` of the mean-subtracted stimulus-window trace
(zero padding; lags ``int(linspace(1/Δt, 5/Δt, 5))`` samples), ``moment5`` = :math:`\\mu_5/s^5`.

Spike rule (spec §1.6): a spike is recorded at sample :math:`k` when :math:`v_k > -10` mV,
:math:`v_{k+1} \\ge v_k` and :math:`v_{k+2} < v_{k+1}`; only :math:`k` in the stimulus window count; a spike
whose time :math:`t_k = k\\Delta t` is not more than 0.5 ms after the previous *detected* spike is dropped
(the first is kept). This equals the references' two-pass clip-and-slope procedure.

NaN rules (as the references): no spikes gives 0; only a zero window variance gives NaN, in the
standardised moments (and the autocorrelations of the 13-set), as 0/0 does in the references.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .protocols import MIN_INTER_SPIKE_MS, Protocol

#: Names of the 7-feature set, in order (units in the module docstring table).
FEATURE_NAMES_7: tuple[str, ...] = ("spike_count", "rest_mean", "rest_std", "mean", "var", "skew", "kurt")
#: Names of the 13-feature set, in order.
FEATURE_NAMES_13: tuple[str, ...] = (
    "spike_count",
    "autocorr_1ms",
    "autocorr_2ms",
    "autocorr_3ms",
    "autocorr_4ms",
    "autocorr_5ms",
    "rest_mean",
    "rest_std",
    "mean",
    "var",
    "skew",
    "kurt",
    "moment5",
)
#: Units of every feature name.
FEATURE_UNITS: dict[str, str] = {
    "spike_count": "1",
    "rest_mean": "mV",
    "rest_std": "mV",
    "mean": "mV",
    "var": "mV^2",
    "skew": "1",
    "kurt": "1",
    "moment5": "1",
    **{f"autocorr_{lag}ms": "1" for lag in range(1, 6)},
    "J_step": "uA/cm^2",  # protocol covariates echoed by the allen-family protocol
    "V0": "mV",
}


def feature_count(n_features: int) -> int:
    """Validate a feature-set size (7 or 13) and return it."""
    if n_features not in (7, 13):
        raise ValueError(f"n_features must be 7 or 13 (spec §1.6); got {n_features!r}")
    return int(n_features)


def feature_names(n_features: int = 7) -> list[str]:
    """Names of the 7- or 13-feature set, in output order (units: :data:`FEATURE_UNITS`)."""
    return list(FEATURE_NAMES_7 if feature_count(n_features) == 7 else FEATURE_NAMES_13)


def protocol_windows(protocol: Protocol) -> np.ndarray:
    """Index windows as the int64 array the kernels take:
    ``[rest_stop, rest_sd_start, rest_sd_stop, window_start, window_stop]``."""
    return np.array(
        [
            protocol.rest_stop,
            protocol.rest_sd_start,
            protocol.rest_sd_stop,
            protocol.window_start,
            protocol.window_stop,
        ],
        dtype=np.int64,
    )


@njit(cache=True)
def spike_count(trace, dt, start, stop):
    """Number of spikes in samples ``[start, stop)`` by the rule of spec §1.6 (see module docstring)."""
    count = 0
    previous_time = 0.0
    detected_any = False
    last = min(stop, trace.shape[0] - 2)
    for k in range(start, last):
        if trace[k] > -10.0 and trace[k + 1] >= trace[k] and trace[k + 2] < trace[k + 1]:
            time = k * dt
            if not detected_any or time - previous_time > MIN_INTER_SPIKE_MS:
                count += 1
            detected_any = True
            previous_time = time
    return count


@njit(cache=True)
def features_of_trace(trace, dt, windows, lags, out):
    """Compute the 7 (``lags`` empty) or 13 (``lags`` of length 5) features of one trace into ``out``.

    Parameters
    ----------
    trace : numpy.ndarray
        ``(N,)`` full-resolution voltage (mV).
    dt : float
        Time step (ms).
    windows : numpy.ndarray
        int64 ``[rest_stop, rest_sd_start, rest_sd_stop, window_start, window_stop]``.
    lags : numpy.ndarray
        int64 autocorrelation lags in samples (empty for the 7-feature set).
    out : numpy.ndarray
        ``(7,)`` or ``(13,)`` output, overwritten.
    """
    rest_stop = windows[0]
    sd_start = windows[1]
    sd_stop = windows[2]
    start = windows[3]
    stop = windows[4]

    rest_sum = 0.0
    for k in range(rest_stop):
        rest_sum += trace[k]
    rest_mean = rest_sum / rest_stop

    sd_sum = 0.0
    for k in range(sd_start, sd_stop):
        sd_sum += trace[k]
    sd_mean = sd_sum / (sd_stop - sd_start)
    sd_m2 = 0.0
    for k in range(sd_start, sd_stop):
        d = trace[k] - sd_mean
        sd_m2 += d * d
    rest_std = np.sqrt(sd_m2 / (sd_stop - sd_start))

    n = stop - start
    total = 0.0
    for k in range(start, stop):
        total += trace[k]
    mean = total / n
    m2 = 0.0
    m3 = 0.0
    m4 = 0.0
    m5 = 0.0
    for k in range(start, stop):
        d = trace[k] - mean
        d2 = d * d
        m2 += d2
        m3 += d2 * d
        m4 += d2 * d2
        m5 += d2 * d2 * d
    m2 /= n
    m3 /= n
    m4 /= n
    m5 /= n
    s = np.sqrt(m2)
    # 0/0 -> NaN exactly where the references give NaN (zero window variance)
    skew = m3 / (s * s * s) if s > 0.0 else np.nan
    kurt = m4 / (m2 * m2) if s > 0.0 else np.nan

    out[0] = spike_count(trace, dt, start, stop)
    if lags.shape[0] == 0:
        out[1] = rest_mean
        out[2] = rest_std
        out[3] = mean
        out[4] = m2
        out[5] = skew
        out[6] = kurt
        return
    norm = m2 * n  # sum of squared deviations
    for i in range(lags.shape[0]):
        lag = lags[i]
        acc = 0.0
        for k in range(start, stop - lag):
            acc += (trace[k] - mean) * (trace[k + lag] - mean)
        out[1 + i] = acc / norm if norm > 0.0 else np.nan
    out[6] = rest_mean
    out[7] = rest_std
    out[8] = mean
    out[9] = m2
    out[10] = skew
    out[11] = kurt
    out[12] = m5 / (m2 * m2 * s) if s > 0.0 else np.nan


@njit(cache=True, parallel=True)
def _features_batch(voltage, dt, windows, lags, out):
    for b in prange(voltage.shape[0]):
        features_of_trace(voltage[b], dt, windows, lags, out[b])


def compute_features(voltage: np.ndarray, protocol: Protocol, n_features: int = 7) -> np.ndarray:
    """Features of a batch of full-resolution traces (spec §1.6).

    Parameters
    ----------
    voltage : numpy.ndarray
        ``(B, N)`` or ``(N,)`` membrane potential (mV) on the protocol's full time grid.
    protocol : Protocol
        Gives Δt and the index windows.
    n_features : {7, 13}
        Feature set.

    Returns
    -------
    numpy.ndarray
        ``(B, n_features)`` (or ``(n_features,)`` for one trace) float64; NaN only where the
        references give NaN.
    """
    n_features = feature_count(n_features)
    voltage = np.asarray(voltage, dtype=np.float64)
    single = voltage.ndim == 1
    voltage = np.ascontiguousarray(np.atleast_2d(voltage))
    if voltage.ndim != 2 or voltage.shape[1] != protocol.n_samples:
        raise ValueError(
            f"features need full-resolution traces of {protocol.n_samples} samples "
            f"(protocol {protocol.name!r}, record_every = 1); got shape {voltage.shape}"
        )
    out = np.empty((voltage.shape[0], n_features), dtype=np.float64)
    lags = protocol.autocorrelation_lags if n_features == 13 else np.empty(0, dtype=np.int64)
    _features_batch(voltage, protocol.dt, protocol_windows(protocol), lags, out)
    return out[0] if single else out
