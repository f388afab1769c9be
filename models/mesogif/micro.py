"""Microscopic GIF network in brian2: the ground-truth data generator of the mesoGIF family.

Implements spec ``specs/mesogif.md`` §2 (René et al. 2020 §4.1; Schwalger et al. 2017): a
randomly connected network of stochastic generalized integrate-and-fire neurons with

* exponential escape noise :math:`\\lambda_i=c_\\alpha\\exp((u_i-\\vartheta_i)/\\Delta u_\\alpha)`,
  spike probability :math:`\\min(1,\\lambda_i\\Delta t_f)` per fine step (§2.3 item 4, §9 item 15);
* reset to :math:`u_{r,\\alpha}` and absolute refractoriness for
  :math:`k^f_{\\mathrm{ref}}=\\mathrm{round}(t_{\\mathrm{ref}}/\\Delta t_f)` fine steps (§2.3 item 5);
* spike-triggered exponential threshold adaptation, jump :math:`J_\\theta/\\tau_\\theta` (§2.1,
  canonical: no :math:`t_{\\mathrm{ref}}` offset);
* exponential synaptic currents per source population with a transmission delay of
  :math:`D^f=\\mathrm{round}(\\Delta/\\Delta t_f)\\ge 1` fine steps (§2.3 item 1);
* Bernoulli connectivity with autapses (normative, §2.2, §9 item 16), or fixed in-degree;
* optionally heterogeneous per-neuron :math:`\\tau_m` and :math:`\\tau_\\theta` (§2.5, §5.5).

The fine step is :math:`\\Delta t_f = 0.2` ms; the output is the number of spikes of every
population in each 1-ms bin (§2.4), an integer array of shape ``(T, M)``.

Time step order (spec §2.3) and how it maps onto brian2's scheduling slots
-------------------------------------------------------------------------
brian2 runs, in every time step, the slots ``groups -> thresholds -> synapses -> resets``.
The model's variables are all dimensionless floats in the spec's units (mV, s, Hz) and are
updated by explicit code (no ODE solver), so the discrete algorithm of §2.3 is reproduced
step for step:

``groups`` (one ``run_regularly`` code block), fine step ``j``
    the refractory counter decreases, ``r <- max(r - 1, 0)`` (item 5 of step ``j - 1``, see
    below); the synaptic traces decay, ``y_b <- E^s_b y_b`` (item 1); membrane update
    (item 2) with :math:`RI_{\\mathrm{syn}}=\\tau_m\\sum_b w_{\\alpha b}y_b`; threshold decay
    (item 3); spike probability :math:`\\min(1,\\lambda\\Delta t_f)`, 0 while refractory (item 4).
``thresholds``
    ``rand() < p_spike`` (item 4).
``synapses``
    a spike emitted in step ``j'`` is delivered with brian2 delay ``D^f - 1`` steps, i.e. at
    the end of step ``j' + D^f - 1``, adding ``1/(tau_s E^s)`` to ``y_b``; after the decay at
    the start of step ``j' + D^f`` it contributes exactly ``1/tau_s`` (item 1), so it is first
    felt by the membrane in step ``j' + D^f``.
``resets``
    ``r <- k_ref + 1``, ``u <- u_r``, ``Theta <- Theta + J_theta/tau_theta`` (item 5). The
    ``+ 1`` compensates for the decrement being done at the start of the next step instead
    of the end of this one: a neuron spiking in step ``j`` is silent in steps
    ``j+1 .. j+k_ref`` and integrates again from ``u_r`` in step ``j+k_ref+1``, as in §2.3.

Random numbers and seeds
------------------------
* ``network_seed`` (default: ``seed``) controls the **network**: the connectivity and, for the
  heterogeneous variant, the per-neuron time constants. It drives a NumPy ``Generator``
  (``numpy.random.default_rng([network_seed, 0])``). Keep it fixed and vary ``seed`` to draw
  several realisations of the same network (the paper's setting, §2.2).
* ``seed`` controls the **escape noise** (the per-step Bernoulli spike draws). brian2's
  runtime targets draw ``rand()`` from NumPy's legacy global generator, which is seeded with
  ``brian2.seed(s)``, ``s = SeedSequence([seed, 1]).generate_state(1)[0]``. The global NumPy
  state is saved before and restored after the run, so calling :func:`simulate_micro` leaves
  no trace in the caller's global random state.

Code generation target
----------------------
brian2 offers the ``numpy`` and ``cython`` runtime targets; both work here without network
access. ``codegen="auto"`` (default) picks ``cython`` when Cython and a C compiler (gcc) work,
else ``numpy``. ``cython`` compiles each code object once per network structure (number of
populations) -- about 1-1.5 min in total on a busy 2-core machine -- and caches the
extensions in brian2's Cython cache (by default ``~/.cython/brian_extensions``); afterwards it
runs the 2-population network at ≈ 0.8-1 s wall time per simulated second, 2-3.5x faster than
``numpy`` (≈ 1.5-3.5 s per simulated second, no compilation; measured on a shared 2-core
machine). Use ``codegen="numpy"`` for short runs on a machine with a cold cache (the default
test suite does). Both targets draw the same random numbers from the same generator and give
identical counts. The target is set per brian2 object (``codeobj_class``), never through
brian2's global preferences. The input ``TimedArray`` is padded to a fixed length so that
inputs of different lengths reuse the compiled code. brian2's runtime is not thread-safe: run
parallel simulations in processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from mechzoo.models.mesogif.parameters import (
    HETEROGENEOUS_LOG10_TAU,
    PARAMETER_KEYS,
    check_parameters,
)

__all__ = [
    "FINE_DT",
    "COARSE_DT",
    "MicroNetwork",
    "build_network",
    "draw_connectivity",
    "draw_heterogeneous_time_constants",
    "fine_input",
    "simulate_micro",
]

#: Microscopic time step :math:`\Delta t_f` in s (spec §1.2).
FINE_DT: float = 2e-4
#: Mesoscopic bin :math:`\Delta t` in s; the output counts are per bin (spec §1.2, §2.4).
COARSE_DT: float = 1e-3
#: Fine steps per mesoscopic bin.
STEPS_PER_BIN: int = 5
#: Cap on the exponent of the escape rate (spec §3.10; only reached far from plausible values).
_MAX_EXPONENT: float = 300.0
#: Minimum number of rows of the input TimedArray (2**17 fine steps = 26.2 s), see _run_brian2.
_TIMED_ARRAY_ROWS: int = 1 << 17


@dataclass(frozen=True)
class MicroNetwork:
    """A drawn network: connectivity and per-neuron time constants (spec §2.2, §2.5).

    Attributes
    ----------
    population : numpy.ndarray of int, shape (N_total,)
        Population index of every neuron (neurons are stored population by population).
    pre, post : tuple of numpy.ndarray of int
        For every **source** population ``b``, the global indices of the presynaptic and
        postsynaptic neuron of each synapse from ``b`` (``pre[b][k] -> post[b][k]``).
    tau_m : numpy.ndarray, shape (N_total,)
        Membrane time constant of every neuron (s).
    tau_theta : numpy.ndarray, shape (N_total,)
        Adaptation time constant of every neuron (s).
    """

    population: np.ndarray
    pre: tuple[np.ndarray, ...]
    post: tuple[np.ndarray, ...]
    tau_m: np.ndarray
    tau_theta: np.ndarray

    def in_degree(self) -> np.ndarray:
        """Number of presynaptic partners of every neuron in every source population.

        Returns
        -------
        numpy.ndarray of int, shape (N_total, M)
            ``in_degree[i, b]`` = number of synapses from population ``b`` onto neuron ``i``.
        """
        n_total = self.population.shape[0]
        return np.stack(
            [np.bincount(post, minlength=n_total) for post in self.post], axis=1
        )


# ----------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------


def _n_bins(duration_s: float) -> int:
    if not (isinstance(duration_s, (int, float, np.integer, np.floating)) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive number of seconds, got {duration_s!r}")
    n = int(round(float(duration_s) / COARSE_DT))
    if n < 1 or abs(n * COARSE_DT - float(duration_s)) > 1e-9 * max(1.0, float(duration_s)):
        raise ValueError(
            f"duration_s={duration_s!r} must be a positive whole number of 1-ms bins "
            f"(e.g. {max(n, 1) * COARSE_DT:.3f})"
        )
    return n


def fine_input(inputs: np.ndarray | None, *, n_bins: int, n_populations: int) -> np.ndarray:
    """External current on the fine 0.2-ms grid (spec §2.4, §6.1), in mA.

    Parameters
    ----------
    inputs : array_like or None
        ``None`` (no external input), an array ``(T, M)`` on the 1-ms grid (each value is held
        constant over the 5 fine steps of its bin), or an array ``(5 T, M)`` on the fine grid.
        Units: mA (``R I`` is then in mV for ``R`` in Ω, spec §1.3).
    n_bins : int
        Number of 1-ms bins ``T`` to be simulated.
    n_populations : int
        Number of populations ``M``.

    Returns
    -------
    numpy.ndarray, shape (5 T, M), float64
        Fine-grid input.

    Raises
    ------
    ValueError
        If the shape matches neither grid or the input is not finite.
    """
    n_fine = STEPS_PER_BIN * n_bins
    if inputs is None:
        return np.zeros((n_fine, n_populations))
    arr = np.asarray(inputs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != n_populations:
        raise ValueError(
            f"inputs must have shape (T, M) = ({n_bins}, {n_populations}) at 1 ms or "
            f"({n_fine}, {n_populations}) at 0.2 ms (one column per population, in mA), "
            f"got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("inputs contain NaN or infinite values")
    if arr.shape[0] == n_fine:
        return arr.copy()
    if arr.shape[0] == n_bins:
        return np.repeat(arr, STEPS_PER_BIN, axis=0)
    raise ValueError(
        f"inputs have {arr.shape[0]} time samples but duration_s needs {n_bins} (1-ms grid) or "
        f"{n_fine} (0.2-ms grid); pass an input covering exactly the simulated duration"
    )


# ----------------------------------------------------------------------------------------
# network drawing
# ----------------------------------------------------------------------------------------


def draw_connectivity(
    params: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    *,
    connectivity: str = "bernoulli",
    autapses: bool = True,
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Draw the synapses of the microscopic network (spec §2.2).

    Parameters
    ----------
    params : mapping
        Parameter set (keys of :mod:`mechzoo.models.mesogif.parameters`); uses ``N`` and ``p``
        (``p[a, b]``: probability of a connection from a neuron of ``b`` onto one of ``a``).
    rng : numpy.random.Generator
        Source of randomness (the network generator, see the module docstring).
    connectivity : {"bernoulli", "fixed_indegree"}
        ``"bernoulli"`` (normative, René et al. §4.1): every ordered pair independently with
        probability ``p[a, b]``. ``"fixed_indegree"`` (NEST example): every neuron of ``a``
        receives exactly ``round(p[a, b] * N[b])`` partners from ``b``, drawn without
        replacement.
    autapses : bool, default True
        Whether a neuron may connect to itself (the authors' code allows it, spec §2.2).

    Returns
    -------
    pre, post : tuple of numpy.ndarray of int
        One pair of arrays per source population ``b`` with global neuron indices.
    """
    N = np.asarray(params["N"], dtype=np.int64)
    p = np.asarray(params["p"], dtype=np.float64)
    M = N.shape[0]
    offsets = np.concatenate([[0], np.cumsum(N)])
    if connectivity not in ("bernoulli", "fixed_indegree"):
        raise ValueError(
            f"connectivity must be 'bernoulli' or 'fixed_indegree', got {connectivity!r}"
        )
    pre_all: list[np.ndarray] = []
    post_all: list[np.ndarray] = []
    for b in range(M):
        pre_b: list[np.ndarray] = []
        post_b: list[np.ndarray] = []
        for a in range(M):
            n_post, n_pre = int(N[a]), int(N[b])
            same = a == b
            if connectivity == "bernoulli":
                mask = rng.random((n_post, n_pre)) < p[a, b]
                if same and not autapses:
                    np.fill_diagonal(mask, False)
                post_local, pre_local = np.nonzero(mask)
            else:
                k = int(round(p[a, b] * n_pre))
                available = n_pre - (1 if (same and not autapses) else 0)
                if k > available:
                    raise ValueError(
                        f"fixed in-degree round(p*N) = {k} exceeds the {available} available "
                        f"presynaptic neurons for target {a}, source {b}"
                    )
                keys = rng.random((n_post, n_pre))
                if same and not autapses:
                    np.fill_diagonal(keys, np.inf)
                # k smallest random keys per row = k partners drawn without replacement
                pre_local = np.argsort(keys, axis=1, kind="stable")[:, :k].ravel()
                post_local = np.repeat(np.arange(n_post), k)
            pre_b.append(pre_local.astype(np.int64) + offsets[b])
            post_b.append(post_local.astype(np.int64) + offsets[a])
        pre_all.append(np.concatenate(pre_b))
        post_all.append(np.concatenate(post_b))
    return tuple(pre_all), tuple(post_all)


def _heterogeneity_spec(
    heterogeneous: bool | Mapping | None, M: int
) -> dict[str, tuple] | None:
    if heterogeneous is None or heterogeneous is False:
        return None
    if heterogeneous is True:
        if M != 2:
            raise ValueError(
                "heterogeneous=True uses René et al. Table 8 (spec §5.5), defined for the "
                f"2-population model only; got M={M}. Pass a mapping "
                "{'tau_m': [(mu, sigma) or None per population], 'tau_theta': [...]} instead."
            )
        return dict(HETEROGENEOUS_LOG10_TAU)
    if not isinstance(heterogeneous, Mapping):
        raise ValueError(
            "heterogeneous must be None/False, True (spec §5.5 Table 8) or a mapping "
            f"{{'tau_m': [...], 'tau_theta': [...]}}, got {type(heterogeneous).__name__}"
        )
    unknown = set(heterogeneous) - {"tau_m", "tau_theta"}
    if unknown:
        raise ValueError(
            f"heterogeneous may only sample 'tau_m' and 'tau_theta' (spec §2.5), got {sorted(unknown)}"
        )
    out: dict[str, tuple] = {}
    for key, per_pop in heterogeneous.items():
        per_pop = tuple(per_pop)
        if len(per_pop) != M:
            raise ValueError(
                f"heterogeneous[{key!r}] needs one entry (mu, sigma) or None per population "
                f"(M={M}), got {len(per_pop)}"
            )
        for entry in per_pop:
            if entry is not None and (len(entry) != 2 or not entry[1] >= 0):
                raise ValueError(
                    f"heterogeneous[{key!r}] entries must be (mu, sigma) of log10(tau/s) with "
                    f"sigma >= 0, or None; got {entry!r}"
                )
        out[key] = per_pop
    return out


def draw_heterogeneous_time_constants(
    params: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    heterogeneous: bool | Mapping | None = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron membrane and adaptation time constants (spec §2.5, §5.5).

    Parameters
    ----------
    params : mapping
        Parameter set; ``N``, ``tau_m`` and ``tau_theta`` give the homogeneous values used for
        every population that is not sampled.
    rng : numpy.random.Generator
        Network generator.
    heterogeneous : True, mapping or None
        ``True``: René et al. Table 8 (:data:`~mechzoo.models.mesogif.parameters.HETEROGENEOUS_LOG10_TAU`):
        :math:`\\log_{10}\\tau_{m}\\sim\\mathcal N(-1.6, 0.5^2)` (E), :math:`\\mathcal N(-1.8,0.5^2)`
        (I), :math:`\\log_{10}\\tau_{\\theta,E}\\sim\\mathcal N(-0.7,0.5^2)`. A mapping
        ``{"tau_m": [(mu, sigma) | None, ...], "tau_theta": [...]}`` with one entry per
        population (``None`` = not sampled). ``None``/``False``: homogeneous.

    Returns
    -------
    tau_m, tau_theta : numpy.ndarray, shape (N_total,)
        Time constants in s.
    """
    N = np.asarray(params["N"], dtype=np.int64)
    M = N.shape[0]
    population = np.repeat(np.arange(M), N)
    tau_m = np.asarray(params["tau_m"], dtype=np.float64)[population].copy()
    tau_theta = np.asarray(params["tau_theta"], dtype=np.float64)[population].copy()
    spec = _heterogeneity_spec(heterogeneous, M)
    if spec is None:
        return tau_m, tau_theta
    for key, target in (("tau_m", tau_m), ("tau_theta", tau_theta)):
        for a, entry in enumerate(spec.get(key, (None,) * M)):
            if entry is None:
                continue
            mu, sigma = float(entry[0]), float(entry[1])
            sel = population == a
            target[sel] = 10.0 ** rng.normal(mu, sigma, size=int(sel.sum()))
    return tau_m, tau_theta


def build_network(
    params: Mapping[str, np.ndarray],
    *,
    network_seed: int,
    connectivity: str = "bernoulli",
    heterogeneous: bool | Mapping | None = None,
    autapses: bool = True,
) -> MicroNetwork:
    """Draw a network (connectivity, per-neuron time constants) from ``network_seed``.

    The connectivity is drawn first, then the heterogeneous time constants, from
    ``numpy.random.default_rng([network_seed, 0])``; the same seed always gives the same
    network (spec §2.2: drawn once per network, kept fixed across trials).

    Parameters
    ----------
    params : mapping
        Parameter set.
    network_seed : int
        Non-negative integer seed of the network.
    connectivity, autapses
        See :func:`draw_connectivity`.
    heterogeneous
        See :func:`draw_heterogeneous_time_constants`.

    Returns
    -------
    MicroNetwork
    """
    network_seed = _check_seed(network_seed, "network_seed")
    rng = np.random.default_rng([network_seed, 0])
    N = np.asarray(params["N"], dtype=np.int64)
    pre, post = draw_connectivity(params, rng, connectivity=connectivity, autapses=autapses)
    tau_m, tau_theta = draw_heterogeneous_time_constants(params, rng, heterogeneous)
    return MicroNetwork(
        population=np.repeat(np.arange(N.shape[0]), N),
        pre=pre,
        post=post,
        tau_m=tau_m,
        tau_theta=tau_theta,
    )


def _check_seed(seed, name: str) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {seed!r}")
    return int(seed)


# ----------------------------------------------------------------------------------------
# brian2 code generation
# ----------------------------------------------------------------------------------------


def _codeobj_class(codegen: str):
    """brian2 code object class for ``codegen`` in {"auto", "cython", "numpy"}."""
    if codegen not in ("auto", "cython", "numpy"):
        raise ValueError(f"codegen must be 'auto', 'cython' or 'numpy', got {codegen!r}")
    from brian2.codegen.runtime.numpy_rt import NumpyCodeObject

    if codegen == "numpy":
        return NumpyCodeObject
    try:
        from brian2.codegen.runtime.cython_rt import CythonCodeObject
    except ImportError as err:  # pragma: no cover - depends on the installation
        if codegen == "cython":
            raise RuntimeError(f"brian2's Cython target is not available: {err}") from err
        return NumpyCodeObject
    if codegen == "cython" or CythonCodeObject.is_available():
        return CythonCodeObject
    return NumpyCodeObject  # pragma: no cover - no working compiler


def _progress_reporter(duration_s: float) -> tuple[Callable, Callable[[], None]]:
    from tqdm.auto import tqdm

    bar = tqdm(total=round(duration_s, 3), unit="s sim", desc="micro GIF", leave=False)

    def report(elapsed, completed, start, duration):  # brian2's report signature
        done = round(float(completed) * duration_s, 3)
        bar.update(max(0.0, done - bar.n))

    return report, bar.close


def simulate_micro(
    params: Mapping[str, np.ndarray],
    input_fine_or_coarse: np.ndarray | None,
    *,
    duration_s: float,
    seed: int,
    connectivity: str = "bernoulli",
    heterogeneous: bool | Mapping | None = None,
    progress: bool = False,
    network_seed: int | None = None,
    autapses: bool = True,
    codegen: str = "auto",
) -> np.ndarray:
    """Simulate the microscopic GIF network and return population spike counts per 1-ms bin.

    Implements spec §2.3 step by step on the fine grid :math:`\\Delta t_f=0.2` ms, starting
    from the "silent" initial condition (:math:`u_i=u_{\\mathrm{rest}}`, :math:`\\Theta_i=0`,
    no refractoriness, no past spikes). Per fine step ``j``:

    1. :math:`y_{i\\beta}\\leftarrow E^{s,f}_\\beta y_{i\\beta}+\\frac1{\\tau_{s,\\beta}}\\sum_{l\\in\\Gamma_{i\\beta}}s_l(j-D^f_{\\alpha\\beta})`,
       :math:`RI_{\\mathrm{syn},i}=\\tau_{m,i}\\sum_\\beta w_{\\alpha\\beta}y_{i\\beta}`;
    2. if not refractory
       :math:`u_i\\leftarrow u_iE^{m,f}_i+(u_{\\mathrm{rest},\\alpha}+R_\\alpha I^f_\\alpha(j)+RI_{\\mathrm{syn},i})(1-E^{m,f}_i)`,
       else :math:`u_i\\leftarrow u_{r,\\alpha}`;
    3. :math:`\\Theta_i\\leftarrow E^{\\theta,f}_i\\Theta_i`;
    4. spike with probability :math:`\\min(1, c_\\alpha e^{(u_i-u_{\\mathrm{th},\\alpha}-\\Theta_i)/\\Delta u_\\alpha}\\Delta t_f)`
       if not refractory;
    5. refractory counters decrease; spiking neurons: :math:`r_i=k^f_{\\mathrm{ref}}`,
       :math:`u_i=u_{r,\\alpha}`, :math:`\\Theta_i\\mathrel{+}=J_{\\theta,\\alpha}/\\tau_{\\theta,i}`.

    Parameters
    ----------
    params : mapping of str to numpy.ndarray
        Parameter set with exactly the keys of
        :data:`mechzoo.models.mesogif.parameters.PARAMETER_KEYS` (units: s, mV, Ω, Hz, mV·s),
        e.g. :func:`~mechzoo.models.mesogif.parameters.two_population`. ``t_ref`` and every
        ``delay`` must be multiples of 0.2 ms and every delay at least 0.2 ms.
    input_fine_or_coarse : array_like or None
        External current per population in mA: ``(T, M)`` on the 1-ms grid (held constant
        within each bin) or ``(5 T, M)`` on the 0.2-ms grid, ``T = duration_s / 1 ms``.
        ``None`` means no external input.
    duration_s : float
        Simulated time in s, a whole number of milliseconds.
    seed : int
        Seed of the escape noise (see the module docstring, "Random numbers and seeds").
    connectivity : {"bernoulli", "fixed_indegree"}, default "bernoulli"
        Connectivity rule (spec §2.2).
    heterogeneous : None, True or mapping, default None
        Heterogeneous per-neuron :math:`\\tau_m`, :math:`\\tau_\\theta` (spec §2.5, §5.5); see
        :func:`draw_heterogeneous_time_constants`.
    progress : bool, default False
        Show a tqdm progress bar over simulated time.
    network_seed : int, optional
        Seed of the network (connectivity, heterogeneous time constants); defaults to
        ``seed``. Fix it and vary ``seed`` for trials of one network.
    autapses : bool, default True
        Allow self-connections (authors' code; spec §2.2).
    codegen : {"auto", "cython", "numpy"}, default "auto"
        brian2 runtime code generation target (module docstring).

    Returns
    -------
    numpy.ndarray of int64, shape (T, M)
        :math:`n_\\alpha^{(k)}`, the number of spikes of population ``alpha`` in bin
        :math:`[k\\Delta t,(k+1)\\Delta t)`; :math:`A=n/(N\\Delta t)` is the population activity.

    Raises
    ------
    ValueError
        Invalid parameters (missing/unknown keys, shapes, non-positive constants, delays not
        multiples of 0.2 ms or shorter than one step), a wrong input shape, NaN input, a
        bad duration, seed or option.

    Examples
    --------
    >>> from mechzoo.models.mesogif.parameters import two_population
    >>> counts = simulate_micro(two_population(), None, duration_s=0.1, seed=1)  # doctest: +SKIP
    >>> counts.shape  # doctest: +SKIP
    (100, 2)
    """
    M = check_parameters(params, dt=FINE_DT)
    if np.asarray(params["N"]).ndim != 1:
        raise ValueError("simulate_micro simulates one parameter set; got batched parameters")
    seed = _check_seed(seed, "seed")
    network_seed = seed if network_seed is None else _check_seed(network_seed, "network_seed")
    n_bins = _n_bins(duration_s)
    current = fine_input(input_fine_or_coarse, n_bins=n_bins, n_populations=M)
    codeobj_class = _codeobj_class(codegen)
    P = {k: np.asarray(params[k], dtype=np.float64) for k in PARAMETER_KEYS}
    network = build_network(
        P,
        network_seed=network_seed,
        connectivity=connectivity,
        heterogeneous=heterogeneous,
        autapses=autapses,
    )
    counts, _ = _run_brian2(P, network, current, n_bins, seed, codeobj_class, progress)
    return counts


def _run_brian2(
    P: dict[str, np.ndarray],
    network: MicroNetwork,
    current: np.ndarray,
    n_bins: int,
    seed: int,
    codeobj_class,
    progress: bool,
    record_u: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Build and run the brian2 network; return counts ``(T, M)`` and optionally potentials.

    ``record_u`` (neuron indices) records the membrane potential of those neurons right after
    the membrane update of every fine step (before the spike draw), shape ``(5 T, n)``; used
    by the tests that check the discrete algorithm of spec §2.3 exactly.
    """
    import brian2

    M = P["N"].shape[0]
    N_total = network.population.shape[0]
    pop = network.population
    dt_q = FINE_DT * brian2.second
    n_fine = STEPS_PER_BIN * n_bins

    k_ref = np.rint(P["t_ref"] / FINE_DT).astype(np.int64)
    delay_steps = np.rint(P["delay"] / FINE_DT).astype(np.int64)  # (target, source), >= 1

    # --- neuron group: all state in the spec's units (mV, s, Hz), dimensionless in brian2
    w_vars = "\n".join(f"w_{b} : 1 (constant)" for b in range(M))
    y_vars = "\n".join(f"y_{b} : 1" for b in range(M))
    eqs = f"""
    u : 1
    Theta : 1
    r : integer
    p_spike : 1
    {y_vars}
    population : integer (constant)
    tau_m : 1 (constant)
    E_m : 1 (constant)
    E_theta : 1 (constant)
    theta_jump : 1 (constant)
    u_rest : 1 (constant)
    u_r : 1 (constant)
    u_th : 1 (constant)
    c : 1 (constant)
    Delta_u : 1 (constant)
    k_ref : integer (constant)
    {w_vars}
    """
    clock = brian2.Clock(dt=dt_q, name="fine_clock")  # one clock for every object
    group = brian2.NeuronGroup(
        N_total,
        eqs,
        threshold="rand() < p_spike",
        reset="r = k_ref + 1\nu = u_r\nTheta = Theta + theta_jump",
        clock=clock,
        codeobj_class=codeobj_class,
        name="gif_neurons",
    )
    group.population = pop
    group.tau_m = network.tau_m
    group.E_m = np.exp(-FINE_DT / network.tau_m)
    group.E_theta = np.exp(-FINE_DT / network.tau_theta)
    group.theta_jump = P["J_theta"][pop] / network.tau_theta
    for key in ("u_rest", "u_r", "u_th", "c", "Delta_u"):
        setattr(group, key, P[key][pop])
    group.k_ref = k_ref[pop]
    for b in range(M):
        setattr(group, f"w_{b}", P["w"][pop, b])
    group.u = P["u_rest"][pop]  # silent initial condition (spec §2.3)

    # external drive R_alpha * I_alpha(j) in mV, one column per population
    # brian2's Cython TimedArray hard-codes the number of rows: pad to a fixed size so that
    # inputs of different lengths reuse the compiled code (padding is never read)
    n_rows = max(_TIMED_ARRAY_ROWS, 1 << int(math.ceil(math.log2(n_fine))))
    drive_values = np.zeros((n_rows, M))
    drive_values[:n_fine] = current * P["R"][None, :]
    drive = brian2.TimedArray(drive_values, dt=dt_q, name="external_drive")
    syn_sum = " + ".join(f"w_{b} * y_{b}" for b in range(M))
    decay = "\n".join(f"y_{b} = y_{b} * E_s_{b}" for b in range(M))
    group.run_regularly(
        f"""
        r = r - int(r > 0)
        {decay}
        u = int(r == 0) * (u * E_m + (u_rest + external_drive(t, population) + tau_m * ({syn_sum})) * (1 - E_m)) + int(r > 0) * u_r
        Theta = Theta * E_theta
        p_spike = int(r == 0) * clip(c * exp(clip((u - u_th - Theta) / Delta_u, -inf, max_exponent)) * fine_dt, 0, 1)
        """,
        when="groups",
        codeobj_class=codeobj_class,
        name="gif_step",
    )

    namespace = {
        "external_drive": drive,
        "fine_dt": FINE_DT,
        "max_exponent": _MAX_EXPONENT,
        "inf": np.inf,
    }
    for b in range(M):
        namespace[f"E_s_{b}"] = math.exp(-FINE_DT / P["tau_s"][b])
        # delivered at the end of step j-1, decayed once at the start of step j -> 1/tau_s
        namespace[f"arrival_{b}"] = 1.0 / (P["tau_s"][b] * namespace[f"E_s_{b}"])

    objects = [group]
    for b in range(M):
        pre, post = network.pre[b], network.post[b]
        if pre.size == 0:
            continue
        syn = brian2.Synapses(
            group,
            group,
            on_pre=f"y_{b}_post += arrival_{b}",
            clock=clock,
            codeobj_class=codeobj_class,
            name=f"synapses_from_{b}",
        )
        syn.connect(i=pre, j=post)
        # brian2 delivers in the synapses slot after the membrane update: delay D-1 steps
        lag = delay_steps[pop[post], b] - 1
        if np.all(lag == lag[0]):
            syn.delay = int(lag[0]) * dt_q
        else:
            syn.delay = lag * dt_q
        objects.append(syn)
    monitor = brian2.SpikeMonitor(group, codeobj_class=codeobj_class, name="spikes")
    objects.append(monitor)
    if record_u is not None:
        u_monitor = brian2.StateMonitor(
            group,
            "u",
            record=np.asarray(record_u, dtype=np.int64),
            when="before_thresholds",
            codeobj_class=codeobj_class,
            name="potentials",
        )
        objects.append(u_monitor)
    net = brian2.Network(*objects)

    report, close = (None, None)
    if progress:
        report, close = _progress_reporter(n_bins * COARSE_DT)
    saved_state = np.random.get_state()
    try:
        brian2.seed(int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]))
        net.run(
            n_fine * dt_q,
            namespace=namespace,
            report=report,
            report_period=1 * brian2.second,
        )
        spike_index = np.asarray(monitor.i[:], dtype=np.int64)
        spike_step = np.rint(np.asarray(monitor.t_[:]) / FINE_DT).astype(np.int64)
    finally:
        np.random.set_state(saved_state)
        if close is not None:
            close()
    counts = np.zeros((n_bins, M), dtype=np.int64)
    np.add.at(counts, (spike_step // STEPS_PER_BIN, pop[spike_index]), 1)
    potentials = None if record_u is None else np.asarray(u_monitor.u[:]).T.copy()
    return counts, potentials
