"""NEST ``gif_pop_psc_exp``: an independent implementation of the mesoscopic model, for cross-checks.

NEST (``pip install nest-simulator``) implements Schwalger et al.'s (2017) mesoscopic
population algorithm as the node ``gif_pop_psc_exp``; spec ``specs/mesogif.md`` §3.11 lists
how it relates to the canonical algorithm of §3.4 and Appendix A gives the parameter mapping
used here (NEST works in ms, pA, pF):

==========================  =========================================================
NEST                        this package
==========================  =========================================================
``N``                       ``N``
``tau_m`` [ms]              ``1000 tau_m``
``C_m`` [pF]                arbitrary (``C_m`` argument, default 250); ``R_NEST = tau_m/C_m``
``lambda_0`` [Hz]           ``c``
``Delta_V`` [mV]            ``Delta_u``
``V_T_star``, ``E_L``,      ``u_th``, ``u_rest``, ``u_r`` [mV]
``V_reset``
``t_ref`` [ms]              ``1000 t_ref``
``tau_syn_ex/in`` [ms]      ``1000 tau_s`` of the excitatory / inhibitory sources
``tau_sfa`` [ms]            ``[1000 tau_theta]``
``q_sfa`` [mV]              ``[J_theta / tau_theta]``
``len_kernel``              ``K`` (``-1``: NEST's automatic rule, spec §3.6)
``BinoRand``                ``True`` (binomial draws)
weight β→α [pA]             ``p[α, β] w[α, β] C_m / (1000 tau_s[β])``
delay β→α [ms]              ``1000 delay[α, β]``
input current [pA]          ``R I [mV] * C_m / (1000 tau_m)``
==========================  =========================================================

Deliberate and unavoidable differences from :func:`mechzoo.models.mesogif.meso.simulate`
(spec §3.11): NEST starts from a synchronous spike of all neurons (item 6, instead of the
silent initialisation; discard a burn-in); it subtracts the age-``K`` threshold term with
buffer slot 0 instead of the oldest cohort (item 8, ≈ 1e-3 mV); its initial cohort
potentials are 0 mV (item 10); it uses one ``K`` per population (``len_kernel``, item 5);
synaptic time constants are per *target* and split by the sign of the weight (item 3), so a
parameter set whose excitatory (or inhibitory) sources onto one target have different
``tau_s`` cannot be represented and raises ``ValueError``.

Input timing (item 7): a ``step_current_generator`` amplitude set at time ``t`` reaches the
population's membrane update two steps later (one step of connection delay, one step of the
node's current buffer). :func:`simulate_nest` compensates: it runs ``2`` lead steps with zero
input before bin 0 and schedules the current of bin ``k`` so that NEST's update of bin ``k``
uses ``I^(k)``, as in spec §3.4 (M2).

Seeds: ``seed`` is mapped to NEST's kernel ``rng_seed`` (``SeedSequence([seed, 2])``, range
``[1, 2**31 - 1]``); one thread is used, so a seed always gives the same result. NEST's
kernel is process-global: every call resets it (``nest.ResetKernel``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import numpy as np

from mechzoo.models.mesogif.parameters import PARAMETER_KEYS, check_parameters

__all__ = [
    "nest_available",
    "nest_parameters",
    "simulate_nest",
    "nest_throughput",
]

#: Steps with zero input run before bin 0 so that the input of bin ``k`` reaches NEST's update
#: of bin ``k`` (generator -> node connection delay + NEST's one-step current buffer).
INPUT_LEAD_STEPS: int = 2


def _import_nest():
    """Import NEST quietly; raise ``ImportError`` with an install hint if it is missing."""
    os.environ.setdefault("PYNEST_QUIET", "1")
    try:
        import nest  # noqa: PLC0415
    except ImportError as err:
        raise ImportError(
            "NEST is not installed; install it with `pip install nest-simulator` "
            f"(needed only for the NEST cross-check): {err}"
        ) from err
    return nest


def nest_available() -> bool:
    """Whether the NEST simulator (PyPI ``nest-simulator``) can be imported.

    Returns
    -------
    bool
        ``True`` if ``import nest`` works and provides ``gif_pop_psc_exp``.
    """
    try:
        nest = _import_nest()
        return "gif_pop_psc_exp" in nest.node_models
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return False


def nest_parameters(
    params: Mapping[str, np.ndarray],
    *,
    len_kernel: int | str = "auto",
    C_m: float = 250.0,
) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Map a parameter set to NEST ``gif_pop_psc_exp`` settings (spec Appendix A).

    Parameters
    ----------
    params : mapping
        Parameter set (keys of :mod:`mechzoo.models.mesogif.parameters`).
    len_kernel : "auto" or int or sequence of int, default "auto"
        Number of age bins ``K`` of every population; ``"auto"`` = NEST's rule (spec §3.6,
        e.g. 693 for E and 50 for I with the 2-population defaults at 1 ms). Pass the ``K`` of
        the mechzoo model for a like-for-like comparison.
    C_m : float, default 250.0
        Membrane capacitance in pF; arbitrary (it cancels), sets the current scale.

    Returns
    -------
    node_params : list of dict
        One NEST status dictionary per population.
    weights : numpy.ndarray, shape (M, M)
        Connection weight source β → target α in pA (``weights[α, β]``); 0 = no connection.
    delays : numpy.ndarray, shape (M, M)
        Connection delays in ms.

    Raises
    ------
    ValueError
        If the synaptic time constants cannot be represented in NEST (spec §3.11 item 3):
        NEST has one ``tau_syn_ex`` and one ``tau_syn_in`` per target population and routes an
        input by the sign of its weight, so all sources with positive (negative) weight onto a
        target must share one ``tau_s``.
    """
    M = check_parameters(params, dt=1e-4)
    P = {k: np.asarray(params[k], dtype=np.float64) for k in PARAMETER_KEYS}
    tau_m_ms = 1000.0 * P["tau_m"]
    tau_s_ms = 1000.0 * P["tau_s"]
    coupling = P["p"] * P["w"]  # (target, source), mV
    if isinstance(len_kernel, str):
        if len_kernel != "auto":
            raise ValueError(f"len_kernel must be 'auto' or a positive integer, got {len_kernel!r}")
        kernels = np.full(M, -1, dtype=np.int64)
    else:
        kernels = np.broadcast_to(np.asarray(len_kernel), (M,)).astype(np.int64)
        if np.any(kernels < 1):
            raise ValueError(f"len_kernel must be positive, got {len_kernel!r}")
    node_params = []
    for a in range(M):
        taus = {}
        for sign, name in ((1.0, "tau_syn_ex"), (-1.0, "tau_syn_in")):
            sources = np.nonzero(np.sign(coupling[a]) == sign)[0]
            values = np.unique(tau_s_ms[sources])
            if values.size > 1:
                raise ValueError(
                    f"NEST gif_pop_psc_exp has one {name} per target population, but the "
                    f"{'excitatory' if sign > 0 else 'inhibitory'} sources {sources.tolist()} of "
                    f"target {a} have different tau_s {(values / 1000).tolist()} s (spec §3.11 "
                    "item 3); this parameter set cannot be simulated in NEST"
                )
            # unused time constants only need to be valid
            taus[name] = float(values[0]) if values.size else float(tau_s_ms.min())
        q = P["J_theta"][a] / P["tau_theta"][a]
        node_params.append(
            {
                "N": int(P["N"][a]),
                "tau_m": float(tau_m_ms[a]),
                "C_m": float(C_m),
                "lambda_0": float(P["c"][a]),
                "Delta_V": float(P["Delta_u"][a]),
                "V_T_star": float(P["u_th"][a]),
                "E_L": float(P["u_rest"][a]),
                "V_reset": float(P["u_r"][a]),
                "t_ref": float(1000.0 * P["t_ref"][a]),
                "tau_sfa": [float(1000.0 * P["tau_theta"][a])],
                "q_sfa": [float(q)],
                "len_kernel": int(kernels[a]),
                "BinoRand": True,
                "I_e": 0.0,
                **taus,
            }
        )
    weights = coupling * C_m / tau_s_ms[None, :]
    delays = 1000.0 * P["delay"]
    return node_params, weights, delays


def _coarse_inputs(inputs, n_steps: int, M: int, dt: float) -> np.ndarray:
    if inputs is None:
        return np.zeros((n_steps, M))
    arr = np.asarray(inputs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != M:
        raise ValueError(
            f"inputs must have shape (T, M) = ({n_steps}, {M}) on the dt={dt} s grid (in mA), "
            f"got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("inputs contain NaN or infinite values")
    if arr.shape[0] == n_steps:
        return arr
    factor = arr.shape[0] // n_steps if n_steps else 0
    if factor > 1 and factor * n_steps == arr.shape[0]:
        # fine-grid input: block average, as the mesoscopic model does (spec §2.4, §6.1)
        return arr.reshape(n_steps, factor, M).mean(axis=1)
    raise ValueError(
        f"inputs have {arr.shape[0]} time samples but duration_s needs {n_steps} at dt={dt} s "
        "(or an integer multiple of it on a finer grid)"
    )


def _run_isolated(func, *args, **kwargs):
    """Run ``func`` in a fresh spawned process and return its result.

    NEST's kernel is process-global and has been seen to crash (segmentation fault in
    ``ResetKernel``) in a process that had already loaded torch, brian2 and other native
    libraries; a separate process keeps such a crash from taking down the caller.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(func, *args, **kwargs).result()


def simulate_nest(
    params: Mapping[str, np.ndarray],
    inputs: np.ndarray | None,
    *,
    duration_s: float,
    seed: int,
    dt: float = 1e-3,
    len_kernel: int | str = "auto",
    C_m: float = 250.0,
    return_expected: bool = False,
    isolate: bool = True,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Simulate the mesoscopic model with NEST's ``gif_pop_psc_exp`` (spec §3.11, Appendix A).

    With ``isolate=True`` (default) NEST runs in a separate spawned process (see
    :func:`_run_isolated`); ``isolate=False`` runs it in this process.

    Parameters
    ----------
    params : mapping of str to numpy.ndarray
        Parameter set, e.g. :func:`~mechzoo.models.mesogif.parameters.two_population` or
        :func:`~mechzoo.models.mesogif.parameters.four_population`.
    inputs : array_like or None
        External current in mA, ``(T, M)`` on the ``dt`` grid, or on a finer grid with an
        integer number of samples per step (block-averaged, spec §2.4). ``None``: no input.
    duration_s : float
        Simulated time in s (a whole number of steps).
    seed : int
        Non-negative seed of NEST's random number generator.
    dt : float, default 1e-3
        NEST resolution in s (the mesoscopic step). Delays and ``t_ref`` must be multiples.
    len_kernel : "auto" or int, default "auto"
        Number of age bins ``K`` (see :func:`nest_parameters`).
    C_m : float, default 250.0
        Membrane capacitance in pF (arbitrary, cancels).
    return_expected : bool, default False
        Also return NEST's expected counts :math:`\\bar n^{(k)}` (recordable ``mean``).

    Returns
    -------
    counts : numpy.ndarray of int64, shape (T, M)
        Spike counts per population and step. Note NEST's initial condition (all neurons spike
        together just before bin 0, spec §3.11 item 6).
    expected : numpy.ndarray, shape (T, M)
        Only with ``return_expected=True``.

    Raises
    ------
    ImportError
        If NEST is not installed.
    ValueError
        Invalid parameters, inputs, duration or seed, or parameters NEST cannot represent.
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isolate:
        check_parameters(params, dt=dt)  # raise input errors here, not in the child
        _import_nest()
        return _run_isolated(
            simulate_nest,
            {k: np.asarray(v) for k, v in params.items()},
            None if inputs is None else np.asarray(inputs),
            duration_s=duration_s,
            seed=int(seed),
            dt=dt,
            len_kernel=len_kernel,
            C_m=C_m,
            return_expected=return_expected,
            isolate=False,
        )
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    M = check_parameters(params, dt=dt)
    if np.asarray(params["N"]).ndim != 1:
        raise ValueError("simulate_nest simulates one parameter set; got batched parameters")
    if not (np.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive number of seconds, got {duration_s!r}")
    n_steps = int(round(duration_s / dt))
    if n_steps < 1 or abs(n_steps * dt - duration_s) > 1e-9 * max(1.0, duration_s):
        raise ValueError(f"duration_s={duration_s!r} must be a whole number of steps dt={dt!r}")
    current = _coarse_inputs(inputs, n_steps, M, dt)
    node_params, weights, delays = nest_parameters(params, len_kernel=len_kernel, C_m=C_m)

    nest = _import_nest()
    h = 1000.0 * dt  # ms
    rng_seed = int(np.random.SeedSequence([int(seed), 2]).generate_state(1)[0]) % (2**31 - 2) + 1
    nest.ResetKernel()
    nest.verbosity = nest.VerbosityLevel.ERROR
    nest.SetKernelStatus(
        {"resolution": h, "local_num_threads": 1, "rng_seed": rng_seed, "print_time": False}
    )
    pops = nest.Create("gif_pop_psc_exp", M)
    for a in range(M):
        pops[a].set(node_params[a])
    for a in range(M):
        for b in range(M):
            if weights[a, b] != 0.0:
                nest.Connect(
                    pops[b],
                    pops[a],
                    syn_spec={"weight": float(weights[a, b]), "delay": float(delays[a, b])},
                )
    # input current of bin k is scheduled at time (k + 1) h and used in NEST update k + LEAD
    P = {k: np.asarray(params[k], dtype=np.float64) for k in ("R", "tau_m")}
    times = (np.arange(n_steps) + 1.0) * h
    for a in range(M):
        values = current[:, a] * P["R"][a] * C_m / (1000.0 * P["tau_m"][a])  # pA
        if not np.any(values):
            continue
        generator = nest.Create("step_current_generator")
        generator.set(amplitude_times=times.tolist(), amplitude_values=values.tolist())
        nest.Connect(generator, pops[a], syn_spec={"weight": 1.0, "delay": h})
    meter = nest.Create(
        "multimeter", params={"record_from": ["n_events", "mean"], "interval": h}
    )
    nest.Connect(meter, pops)
    total = n_steps + INPUT_LEAD_STEPS
    nest.Simulate((total + 1) * h)

    events = meter.get("events")
    senders = np.asarray(events["senders"])
    stamps = np.rint(np.asarray(events["times"]) / h).astype(np.int64)  # update s -> stamp s+1
    counts = np.zeros((n_steps, M), dtype=np.int64)
    expected = np.zeros((n_steps, M))
    for a in range(M):
        sel = senders == pops[a].global_id
        step = stamps[sel] - 1 - INPUT_LEAD_STEPS
        keep = (step >= 0) & (step < n_steps)
        counts[step[keep], a] = np.rint(np.asarray(events["n_events"])[sel][keep]).astype(np.int64)
        expected[step[keep], a] = np.asarray(events["mean"])[sel][keep]
    nest.ResetKernel()
    if return_expected:
        return counts, expected
    return counts


def nest_throughput(
    duration_s: float = 20.0,
    params: Mapping[str, np.ndarray] | None = None,
    *,
    seed: int = 0,
    len_kernel: int | str = "auto",
) -> float:
    """Simulated seconds per wall-clock second of NEST's ``gif_pop_psc_exp``.

    Runs :func:`simulate_nest` once (2-population parameters and the sine training input of
    spec §6.2 unless ``params`` is given, then zero input) and divides the simulated time by
    the wall time of the whole call (kernel set-up, simulation and read-out; NEST import
    excluded). For a benchmark that compares against the mechzoo simulator measured in the
    same run.

    Parameters
    ----------
    duration_s : float, default 20.0
        Simulated time in s.
    params : mapping, optional
        Parameter set; default :func:`~mechzoo.models.mesogif.parameters.two_population`.
    seed : int, default 0
        NEST seed.
    len_kernel : "auto" or int
        See :func:`nest_parameters`.

    Returns
    -------
    float
        ``duration_s / wall_seconds``.
    """
    _import_nest()
    inputs = None
    if params is None:
        from mechzoo.models.mesogif.parameters import two_population
        from mechzoo.models.mesogif.stimuli import SINE_PRESETS, sine_noise

        params = two_population()
        preset = SINE_PRESETS[2]
        inputs = sine_noise(
            duration_s,
            preset["amplitude"],
            preset["noise_std"],
            seed=seed,
            frequency_hz=preset["frequency_hz"],
        )
    return float(_run_isolated(_timed_simulation, params, inputs, duration_s, seed, len_kernel))


def _timed_simulation(params, inputs, duration_s, seed, len_kernel) -> float:
    """Simulated seconds per wall second of one in-process NEST run (called in a child process)."""
    _import_nest()
    start = time.perf_counter()
    simulate_nest(params, inputs, duration_s=duration_s, seed=seed, len_kernel=len_kernel, isolate=False)
    return float(duration_s) / (time.perf_counter() - start)
