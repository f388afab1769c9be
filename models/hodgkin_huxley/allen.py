"""The ten Allen Cell Types recordings fitted in eLife-2020 (spec §1.4, §1.7), shipped as package data.

Only derived numbers ship (``allen_cells.toml``): the protocol values needed to regenerate the step
input and the published observed 7-feature vectors. Data: Allen Institute for Brain Science, Allen Cell
Types Database (https://celltypes.brain-map.org/), reused with attribution under the Allen Institute terms
of use.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources

import numpy as np

_DATA_FILE = "allen_cells.toml"


@dataclass(frozen=True)
class AllenCell:
    """One Allen cell and the sweep used in eLife-2020 (spec §1.7 table).

    Attributes
    ----------
    specimen_id : int
        Allen specimen id.
    sweep : int
        Number of the "long square" sweep.
    tau_m_s : float
        Membrane time constant (s) used for the area.
    input_resistance_Mohm : float
        Input resistance (MΩ).
    step_amplitude_pA : float
        Amplitude of the 1 s current step (pA).
    v0_mV : float
        Initial voltage: first recorded sample after the −14 mV junction correction (mV).
    t_off_ms : float
        Stored stimulus offset (ms).
    observed_features : numpy.ndarray
        Published 7-feature vector ``[count, rest_mean, rest_sd, mean, var, skew, kurt]``
        (units as in :func:`mechzoo.models.hodgkin_huxley.features.feature_names`).
    in_figure_5f : bool
        Whether the trace is shown in eLife Fig. 5F.
    """

    specimen_id: int
    sweep: int
    tau_m_s: float
    input_resistance_Mohm: float
    step_amplitude_pA: float
    v0_mV: float
    t_off_ms: float
    observed_features: np.ndarray
    in_figure_5f: bool

    @property
    def soma_area_cm2(self) -> float:
        """Soma area :math:`A = \\tau_m / R_{in}` (cm², τ in s, R in MΩ; spec §1.4)."""
        return self.tau_m_s / self.input_resistance_Mohm

    @property
    def current_density(self) -> float:
        """Step current density :math:`J` = amplitude / area (µA/cm²; 1 pA = 1e-6 µA)."""
        return self.step_amplitude_pA * 1e-6 / self.soma_area_cm2


def allen_cells() -> dict[int, AllenCell]:
    """Load the ten Allen cells of spec §1.7 from the package data.

    Returns
    -------
    dict of int to AllenCell
        Keyed by specimen id, in the order of the spec table (eLife Fig. 5F order first).
    """
    text = resources.files(__package__).joinpath(_DATA_FILE).read_text(encoding="utf-8")
    cells = {}
    for row in tomllib.loads(text)["cell"]:
        cell = AllenCell(
            specimen_id=int(row["specimen_id"]),
            sweep=int(row["sweep"]),
            tau_m_s=float(row["tau_m_s"]),
            input_resistance_Mohm=float(row["input_resistance_Mohm"]),
            step_amplitude_pA=float(row["step_amplitude_pA"]),
            v0_mV=float(row["v0_mV"]),
            t_off_ms=float(row["t_off_ms"]),
            observed_features=np.asarray(row["observed_features"], dtype=np.float64),
            in_figure_5f=bool(row["in_figure_5f"]),
        )
        cells[cell.specimen_id] = cell
    return cells


def allen_cell(specimen_id: int | str) -> AllenCell:
    """Return one Allen cell by specimen id, with a clear error for an unknown id."""
    cells = allen_cells()
    try:
        return cells[int(specimen_id)]
    except (KeyError, ValueError):
        raise ValueError(
            f"unknown Allen specimen id {specimen_id!r}; the shipped cells are {sorted(cells)}"
        ) from None


def observed_features(specimen_id: int | str) -> np.ndarray:
    """Published observed 7-feature vector of one Allen cell (spec §1.7), shape ``(7,)``."""
    return allen_cell(specimen_id).observed_features.copy()
