"""Cross-check of the mesoGIF model against NEST's ``gif_pop_psc_exp`` (spec §3.11, Appendix A, B).

Skipped where NEST (PyPI ``nest-simulator``) is not installed.

Deliberate differences between NEST and :func:`mechzoo.models.mesogif.meso.simulate`, and how
the tests handle them (spec §3.11):

* item 5, ``K``: NEST picks one ``K`` per population (693 / 50 for the 2-pop defaults); the
  mechzoo model is run with ``K="auto-per-population"``, the same rule.
* item 6, initial condition: NEST starts from a synchronous spike of all neurons; the
  statistics use the window [10, 20) s only, and the teacher-forced comparison starts the
  mechzoo model from ``init="synchronous"`` and compares from 5 s on. (NEST does not transmit
  the initial synchronous spike to other populations, mechzoo's history does; this and item
  10, NEST's initial cohort potentials of 0 mV, affect only the transient.)
* item 7, input timing: handled inside :func:`simulate_nest` (checked below).
* item 8: NEST subtracts the age-``K`` threshold term with buffer slot 0, mechzoo with the
  oldest cohort (≈ 1e-3 mV): teacher-forced expected counts therefore agree to ≈ 1e-4
  relative, not to rounding error.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("PYNEST_QUIET", "1")  # no start-up banner
pytest.importorskip("nest")

from mechzoo.models.mesogif.nest_reference import (  # noqa: E402
    nest_available,
    nest_parameters,
    nest_throughput,
    simulate_nest,
)
from mechzoo.models.mesogif.parameters import four_population, two_population  # noqa: E402
from mechzoo.models.mesogif.stimuli import SINE_PRESETS, sine_noise  # noqa: E402

#: Appendix B item 2: stationary activity (N -> infinity, zero input), K = 693, Hz.
STATIONARY_K693 = {
    2: np.array([4.920, 8.019]),
    4: np.array([2.482, 6.360, 7.606, 9.579]),
}
#: Appendix B items 3 and 4: canonical meso rates under the sine input (10-30 s / 10-20 s).
DRIVEN = {2: np.array([5.7, 8.35]), 4: np.array([2.5, 6.45, 8.5, 10.0])}


def parameters(M: int) -> dict[str, np.ndarray]:
    return two_population() if M == 2 else four_population()


def sine_input(duration_s: float, M: int, seed: int = 0) -> np.ndarray:
    """Training input of spec §6.2, block-averaged to 1 ms (mA)."""
    preset = SINE_PRESETS[M]
    return sine_noise(
        duration_s,
        preset["amplitude"],
        preset["noise_std"],
        seed=seed,
        frequency_hz=preset["frequency_hz"],
    )


def rates(counts: np.ndarray, N: np.ndarray, start_s: float, dt: float = 1e-3) -> np.ndarray:
    return counts[int(round(start_s / dt)) :].mean(axis=0) / N / dt


def test_nest_is_available():
    assert nest_available()


def test_parameter_mapping_follows_appendix_a():
    params = two_population()
    node, weights, delays = nest_parameters(params, C_m=200.0)
    expected_w = params["p"] * params["w"] * 200.0 / (1000.0 * params["tau_s"][None, :])
    np.testing.assert_allclose(weights, expected_w, rtol=1e-14)
    np.testing.assert_allclose(delays, 1.0)
    assert node[0]["tau_syn_ex"] == 3.0 and node[0]["tau_syn_in"] == 6.0
    assert node[0]["q_sfa"] == [1.0] and node[0]["tau_sfa"] == [1000.0]
    assert node[1]["q_sfa"] == [0.0]
    assert node[0]["E_L"] == 20.0 and node[1]["E_L"] == 19.5
    assert node[0]["len_kernel"] == -1
    # excitatory sources with different tau_s cannot be represented (§3.11 item 3)
    bad = four_population()
    bad["tau_s"] = np.array([0.003, 0.006, 0.004, 0.006])
    with pytest.raises(ValueError, match="tau_syn_ex"):
        nest_parameters(bad)


@pytest.mark.parametrize("M", [2, 4])
def test_large_population_reproduces_stationary_fixed_point(M):
    """Appendix B item 2: all N x 1000 and p / 1000 (same J) reproduce the fixed point to 0.2 %.

    Zero input, K = 693 for every population, mean over [2.5, 5) s (the synchronous start has
    relaxed by then). Measured deviations: 2-pop (+0.04 %, +0.18 %), 4-pop (-0.07 %, +0.19 %,
    +0.13 %, +0.06 %) over [4, 8) s. Tolerance 0.5 %.
    """
    params = parameters(M)
    params["N"] = params["N"] * 1000
    params["p"] = params["p"] / 1000
    counts = simulate_nest(params, None, duration_s=5.0, seed=1, len_kernel=693)
    np.testing.assert_allclose(rates(counts, params["N"], 2.5), STATIONARY_K693[M], rtol=5e-3)


@pytest.mark.parametrize("M", [2, 4])
def test_driven_rates_match_appendix_b(M):
    """Appendix B items 3, 4: canonical meso rates under the sine input, 10-20 s.

    Measured with NEST, 2-pop, 10 seeds: (5.64 ± 0.05, 8.37 ± 0.04) Hz (mean ± sd over seeds)
    vs ≈ (5.7, 8.35) Hz (§3.13 gives 5.66 / 8.35 over 10-30 s); 4-pop, seed 1:
    (2.48, 6.51, 8.47, 9.98) Hz vs ≈ (2.5, 6.45, 8.5, 10.0). Tolerance 4 %: the reference
    values are rounded ("≈") and one 10-s window has ≈ 1 % seed-to-seed sd.
    """
    params = parameters(M)
    counts = simulate_nest(params, sine_input(20.0, M), duration_s=20.0, seed=1)
    np.testing.assert_allclose(rates(counts, params["N"], 10.0), DRIVEN[M], rtol=0.04)


def test_seeded_reproducibility():
    params = two_population()
    inputs = sine_input(1.0, 2)
    a = simulate_nest(params, inputs, duration_s=1.0, seed=3)
    b = simulate_nest(params, inputs, duration_s=1.0, seed=3)
    c = simulate_nest(params, inputs, duration_s=1.0, seed=4)
    assert a.shape == (1000, 2) and a.dtype == np.int64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_input_reaches_the_update_of_its_own_bin():
    """The current of bin k acts on NEST's update of bin k (§3.11 item 7 is compensated).

    Two runs with the same seed differ only by an input pulse in bin 400: everything before
    bin 400 is identical and the expected count of bin 400 itself is already raised.
    """
    params = two_population()
    base = np.zeros((500, 2))
    pulse = base.copy()
    pulse[400] = 1.0  # mA
    c0, e0 = simulate_nest(params, base, duration_s=0.5, seed=2, return_expected=True)
    c1, e1 = simulate_nest(params, pulse, duration_s=0.5, seed=2, return_expected=True)
    np.testing.assert_array_equal(c0[:400], c1[:400])
    np.testing.assert_array_equal(e0[:400], e1[:400])
    assert np.all(e1[400] > e0[400] * 1.05)


def test_fine_grid_input_is_block_averaged():
    params = two_population()
    fine = sine_noise(0.2, (0.25, 0.1), (4.0, 4.0), seed=1, dt=2e-4)
    coarse = fine.reshape(200, 5, 2).mean(axis=1)
    a = simulate_nest(params, fine, duration_s=0.2, seed=1)
    b = simulate_nest(params, coarse, duration_s=0.2, seed=1)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"inputs": np.zeros((7, 2))}, "time samples"),
        ({"inputs": np.zeros((10, 3))}, "shape"),
        ({"inputs": np.full((10, 2), np.inf)}, "NaN"),
        ({"seed": -2}, "seed"),
        ({"duration_s": 0.0105}, "whole number"),
        ({"dt": 0.0015}, "multiple"),
    ],
)
def test_bad_input_raises(kwargs, match):
    arguments = {"inputs": None, "duration_s": 0.01, "seed": 0}
    arguments.update(kwargs)
    inputs = arguments.pop("inputs")
    with pytest.raises(ValueError, match=match):
        simulate_nest(two_population(), inputs, **arguments)


def test_throughput_is_positive():
    assert nest_throughput(duration_s=1.0) > 0.0


# ----------------------------------------------------------------------------------------
# mechzoo meso vs NEST
# ----------------------------------------------------------------------------------------


def _meso():
    meso = pytest.importorskip("mechzoo.models.mesogif.meso")
    if not hasattr(meso, "simulate") or not hasattr(meso, "expected_counts"):
        pytest.skip("mechzoo.models.mesogif.meso.simulate / expected_counts not available yet")
    return meso


@pytest.mark.parametrize("M", [2, 4])
def test_teacher_forced_expected_counts_match_nest(M):
    """Fed NEST's own spike counts, mechzoo's canonical step reproduces NEST's expected counts.

    This is the deterministic core of the cross-check (spec §3.11): given the same history,
    M1-M14 must give NEST's ``n̄`` (recordable ``mean``). 12-s run, compared from 5 s on (initial
    condition, items 6 and 10); remaining difference: item 8 (≈ 1e-3 mV in the threshold).
    Measured (20-s run): mean |Δ n̄| ≈ 6e-4 spikes per bin (expected counts ≈ 1-3), max
    relative difference 0.3 % (2-pop) / 0.4 % (4-pop); shifting the input by one bin instead
    gives a mean |Δ n̄| ≈ 0.05 and relative differences of ≈ 20 %.
    """
    meso = _meso()
    params = parameters(M)
    inputs = sine_input(12.0, M)
    counts, nest_expected = simulate_nest(
        params, inputs, duration_s=12.0, seed=1, return_expected=True
    )
    ours, _ = meso.expected_counts(
        params, inputs, counts.astype(np.float64), K="auto-per-population", init="synchronous"
    )
    a, b = nest_expected[5000:], ours[5000:]
    relative = np.abs(a - b) / np.maximum(np.abs(b), 1e-2)
    assert np.mean(np.abs(a - b)) < 2e-3
    assert np.median(relative) < 1e-3
    assert np.max(relative) < 2e-2


def _meso_vs_nest_statistics(M: int, seeds: range):
    meso = _meso()
    params = parameters(M)
    inputs = sine_input(20.0, M)
    nest_rates, nest_var = [], []
    for seed in seeds:
        counts = simulate_nest(params, inputs, duration_s=20.0, seed=seed)
        activity = counts[10_000:] / params["N"] / 1e-3
        nest_rates.append(activity.mean(axis=0))
        nest_var.append(activity.var(axis=0))
    batch = {k: np.repeat(np.asarray(v)[None], len(seeds), axis=0) for k, v in params.items()}
    out = meso.simulate(
        batch,
        inputs,
        seeds=np.asarray(seeds, dtype=np.uint64) + 1000,
        K="auto-per-population",
        init="synchronous",
    )
    activity = out["counts"][:, 10_000:] / params["N"] / 1e-3
    mech_rates, mech_var = activity.mean(axis=1), activity.var(axis=1)
    return (
        np.mean(mech_rates, axis=0),
        np.mean(nest_rates, axis=0),
        np.mean(mech_var, axis=0),
        np.mean(nest_var, axis=0),
    )


def test_meso_vs_nest_two_population_statistics():
    """mechzoo meso vs NEST, 2-pop sine input, 6 seeds x 10 s (10-20 s): rates within 2 %,
    variance of the 1-ms activity within 10 %.

    Measured with 10 seeds: rates +0.3 % (E), -0.4 % (I); variances +0.1 % (E), -1.2 % (I);
    with these 6 seeds: rates +0.1 %, -0.2 %; variances -0.1 %, -1.3 %.
    One 10-s window has seed-to-seed sd ≈ 0.9 % (rate) and ≈ 3 % (variance), so the 6-seed
    difference has sd ≈ 0.5 % / 1.7 %: the tolerances are ≥ 4 sd.
    """
    mech_r, nest_r, mech_v, nest_v = _meso_vs_nest_statistics(2, range(6))
    np.testing.assert_allclose(mech_r, nest_r, rtol=0.02)
    np.testing.assert_allclose(mech_v, nest_v, rtol=0.10)


@pytest.mark.slow
def test_meso_vs_nest_four_population_statistics():
    """As the 2-pop check, for the 4-pop model (8 seeds).

    Measured: rates +0.4, +0.1, -0.1, +0.05 %; variances +0.6, +1.3, -0.8, +0.4 %.
    """
    mech_r, nest_r, mech_v, nest_v = _meso_vs_nest_statistics(4, range(8))
    np.testing.assert_allclose(mech_r, nest_r, rtol=0.02)
    np.testing.assert_allclose(mech_v, nest_v, rtol=0.10)
