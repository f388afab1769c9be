"""Stimulus protocols of the Hodgkin–Huxley model (spec §1.4) with the feature windows of §1.6.

A :class:`Protocol` holds everything the simulator and the feature code need: the time grid
(:math:`t_k = k\\,\\Delta t`, ``k = 0 .. n_samples-1``), the initial voltage, the injected current
density sample by sample, and the index windows that reproduce the upstream floating-point masks
(spec §1.4, §1.6, §1.10). All windows are half-open index ranges ``[start, stop)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .allen import allen_cell

#: Soma area of the synthetic protocol, π (70 µm)² in cm² (spec §1.4).
SYNTHETIC_SOMA_AREA_CM2 = math.pi * (70e-4) ** 2
#: Step current of the synthetic protocol (µA): 5e-4 µA = 0.5 nA (spec §1.4).
SYNTHETIC_STEP_UA = 5e-4
#: Threshold (ms) of the spike de-duplication rule: a spike ≤ 0.5 ms after the previous one is dropped.
MIN_INTER_SPIKE_MS = 0.5
#: Number of autocorrelation lags (1 .. 5 ms) of the 13-feature set (spec §1.6).
N_AUTOCORRELATION_LAGS = 5


@dataclass(frozen=True)
class Protocol:
    """A current-step protocol and its feature windows.

    Attributes
    ----------
    name : str
        ``"synthetic"`` or ``"allen:<specimen id>"``.
    dt : float
        Time step Δt (ms).
    n_samples : int
        Number of samples N of the trace (the simulator makes N − 1 steps).
    v0 : float
        Initial voltage :math:`V_0` (mV).
    amplitude : float
        Current density of the step (µA/cm²).
    step_start, step_stop : int
        The current is ``amplitude`` for sample indices ``step_start <= k < step_stop``, 0 elsewhere.
    t_on, t_off : float
        Stimulus onset and offset (ms) as the feature code of the reference uses them.
    rest_stop : int
        Resting-mean window ``[0, rest_stop)`` (samples with :math:`t < t_{on}`).
    rest_sd_start, rest_sd_stop : int
        Resting-SD window ``[floor(0.9 t_on/Δt), floor(t_on/Δt))``.
    window_start, window_stop : int
        Stimulus window ``[window_start, window_stop)`` (samples with :math:`t_{on} < t < t_{off}`),
        used for the spike count and the moments.
    """

    name: str
    dt: float
    n_samples: int
    v0: float
    amplitude: float
    step_start: int
    step_stop: int
    t_on: float
    t_off: float
    rest_stop: int
    rest_sd_start: int
    rest_sd_stop: int
    window_start: int
    window_stop: int

    @property
    def time(self) -> np.ndarray:
        """Time grid :math:`t_k = k\\,\\Delta t` (ms), shape ``(n_samples,)``."""
        return np.arange(self.n_samples, dtype=np.float64) * self.dt

    @property
    def current(self) -> np.ndarray:
        """Injected current density :math:`I_{inj}[k]` (µA/cm²), shape ``(n_samples,)``."""
        current = np.zeros(self.n_samples, dtype=np.float64)
        current[self.step_start : self.step_stop] = self.amplitude
        return current

    @property
    def autocorrelation_lags(self) -> np.ndarray:
        """Lags (samples) of the 13-feature autocorrelations at 1..5 ms.

        Computed as the reference does, ``linspace(1/Δt, 5/Δt, 5)`` truncated to int (spec §1.6).
        """
        lags = np.linspace(1.0 / self.dt, N_AUTOCORRELATION_LAGS / self.dt, N_AUTOCORRELATION_LAGS)
        return lags.astype(np.int64)


def synthetic_protocol() -> Protocol:
    """The synthetic step protocol of eLife-2020 Fig. 5A–E and the sbi tutorial (spec §1.4).

    120 ms at Δt = 0.01 ms (12,001 samples), :math:`V_0 = -70` mV, a step of 0.5 nA over
    :math:`A = \\pi (70\\,\\mu m)^2` (3.24806 µA/cm²) for ``1000 <= k < 11000``. Feature windows: rest
    ``0..999``, rest SD ``900..999``, stimulus ``1001..10999`` (spec §1.6).
    """
    return Protocol(
        name="synthetic",
        dt=0.01,
        n_samples=12001,
        v0=-70.0,
        amplitude=SYNTHETIC_STEP_UA / SYNTHETIC_SOMA_AREA_CM2,
        step_start=1000,
        step_stop=11000,
        t_on=10.0,
        t_off=110.0,
        rest_stop=1000,
        rest_sd_start=900,
        rest_sd_stop=1000,
        window_start=1001,
        window_stop=11000,
    )


def allen_protocol(specimen_id: int | str) -> Protocol:
    """The Allen-cell protocol of eLife-2020 Fig. 5F for one cell (spec §1.4).

    1450 ms at Δt = 0.02 ms (72,500 samples); the step of the cell's amplitude divided by
    :math:`A_{soma} = \\tau_m/R_{in}` for ``10250 <= k < 60250`` (t ∈ [205, 1205) ms); :math:`V_0` =
    first corrected sample. Windows: rest ``0..10249``, rest SD ``9225..10249``, stimulus
    ``10251..60248`` (``10251..60249`` for cell 569469018, whose stored :math:`t_{off}` is 1204.99 ms).
    """
    cell = allen_cell(specimen_id)
    window_stop = 60250 if cell.t_off_ms > 1204.985 else 60249
    return Protocol(
        name=f"allen:{cell.specimen_id}",
        dt=0.02,
        n_samples=72500,
        v0=cell.v0_mV,
        amplitude=cell.current_density,
        step_start=10250,
        step_stop=60250,
        t_on=205.0,
        t_off=cell.t_off_ms,
        rest_stop=10250,
        rest_sd_start=9225,
        rest_sd_stop=10250,
        window_start=10251,
        window_stop=window_stop,
    )


#: Range of the protocol covariates of the family protocol: the ten Allen cells of spec §1.7 have
#: J = 0.851 .. 2.284 µA/cm² and V0 = -90.06 .. -74.16 mV; the boxes add a margin on each side.
ALLEN_FAMILY_J_RANGE = (0.75, 2.4)
ALLEN_FAMILY_V0_RANGE = (-92.0, -72.0)


def allen_family_protocol() -> Protocol:
    """The Allen-cell protocol with the step amplitude and V0 left per simulation (amortised fits).

    The time grid, step timing and feature windows of :func:`allen_protocol` for the nine cells
    whose stored t_off is 1204.98 ms (1450 ms at Δt = 0.02 ms, step for ``10250 <= k < 60250``,
    stimulus window ``[10251, 60249)``); the current is a *unit* step that the simulator scales
    per simulation by the amplitude J (µA/cm²), and ``v0`` is NaN: each simulation brings its
    own V0. Used by the ``hh-allen`` entry, where J and V0 are protocol covariates, so that one
    estimator serves all ten cells (each cell's J = step / A_soma and V0, spec §1.7). For cell
    569469018 (stored t_off 1204.99 ms) the stimulus window is one sample shorter here than in
    its own protocol (49,998 instead of 49,999 samples).
    """
    return Protocol(
        name="allen-family",
        dt=0.02,
        n_samples=72500,
        v0=float("nan"),
        amplitude=1.0,
        step_start=10250,
        step_stop=60250,
        t_on=205.0,
        t_off=1204.98,
        rest_stop=10250,
        rest_sd_start=9225,
        rest_sd_stop=10250,
        window_start=10251,
        window_stop=60249,
    )


def protocol_from_config(config) -> Protocol:
    """Build the protocol named by a zoo configuration mapping.

    Parameters
    ----------
    config : mapping
        ``config["protocol"]`` is ``"synthetic"`` (default), ``"allen"`` (then ``config["cell"]``
        is the specimen id) or ``"allen-family"`` (:func:`allen_family_protocol`).
    """
    name = config.get("protocol", "synthetic")
    if name == "synthetic":
        return synthetic_protocol()
    if name == "allen":
        if "cell" not in config:
            raise ValueError("config['protocol'] = 'allen' needs config['cell'] = <Allen specimen id>")
        return allen_protocol(config["cell"])
    if name == "allen-family":
        return allen_family_protocol()
    raise ValueError(f"unknown Hodgkin–Huxley protocol {name!r}; use 'synthetic', 'allen' or 'allen-family'")
