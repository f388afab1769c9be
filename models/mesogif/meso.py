"""Mesoscopic GIF population model (mesoGIF), discrete time: simulator and teacher-forced path.

Implements the canonical algorithm M1–M17 of ``specs/mesogif.md`` §3.4 (Schwalger, Deger &
Gerstner 2017, as in NEST ``gif_pop_psc_exp``) and Variant R of §3.13 (the authors' code of
René, Longtin & Macke 2020), in float64 and compiled with Numba.

**One step, written once.** The Numba kernel :func:`_advance` performs steps M1–M17 for all
populations; the only difference between simulation and likelihood mode is the emission (M15'):
either ``n ~ Binomial(N, clip(n̄/N, 0, 1))`` (:func:`simulate`) or the observed count is fed
back (*teacher forcing*, :func:`expected_counts`, spec §4.3). Both return the expected counts
``n̄`` computed by the same code, which a likelihood (spec §4.1) is built on.

Implementation notes (see ``notes/mesogif-likelihood-speed.md``):

* State is indexed by **birth time**: the cohort born in bin ``b`` lives in ring slot
  ``b mod K_α`` of its population, the spike-count history ``H`` in slot ``b mod K_h``. The
  age shift M17 is then an index change (the new cohort overwrites the slot of the age-``K``
  cohort, which has just joined the free pool in M16).
* ``K`` may differ per population (spec §3.6 rule gives 693 for E, 50 for I); arrays are
  padded to ``max K``, population α uses its first ``K_α`` slots.
* Time steps are sequential; independent simulations (batch axis) run in parallel threads
  (the kernel releases the GIL). Each simulation has its own ``numpy.random.Generator``
  seeded by its own seed, so results do not depend on how a batch is chunked or threaded.

Choices where the spec leaves room (documented here so that results can be compared):

* M11 linear branch (``P = pi`` for ``pi <= 0.01``) is on by default (``linear_switch=True``,
  spec §9 item 17); the stationary solver uses the same rule as the simulator, so the
  stationary state is an exact fixed point of the step. (The Appendix B reference rates were
  computed with ``1 - exp(-pi)``; the two differ by < 0.2 %.)
* Emission clips ``n̄/N`` to [0, 1] (NEST convention, spec M15').
* Variant R: the table of spec §3.13 fixes R1–R10 except two details, resolved as follows.
  (i) ``P^Λ`` uses the free-pool variance ``z`` *before* its update in the step (like ``Y`` and
  ``Z``, which use the stored variances), while ``n̄`` uses ``x`` *after* it (R7).
  (ii) The free-neuron adaptation gain is offset like the kernel (R1):
  ``Phi = J_theta exp(-(K dt - t_ref) / tau_theta)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from .parameters import PARAMETER_KEYS, check_parameters, delay_bins

__all__ = [
    "DEFAULT_K",
    "PROBABILITY_EPS",
    "history_size",
    "schwalger_history_size",
    "simulate",
    "expected_counts",
    "initial_state",
    "binomial_probability",
    "broadcast_parameters",
    "run_with_state",
]

#: Default number of age bins (spec §3.6 resolution: René et al. "around K = 1000").
DEFAULT_K = 1000
#: Clip of the binomial probability in the likelihood (spec §4.1), float64.
PROBABILITY_EPS = 1e-8
#: Cap of the escape-rate exponent (spec §3.10).
_EXP_CAP = 300.0
_VARIANTS = ("canonical", "R")
_INITS = ("silent", "stationary", "synchronous")

# Row indices of the per-population constant table passed to the kernel.
_N, _R, _UREST, _UTH, _UR, _C, _DU, _TAUM, _EM, _ETH, _PHI = range(11)
_N_POP_CONST = 11
# Row indices of the per-population scalar state.
_H, _G, _LF, _X, _Z, _VOUT = range(6)
_N_POP_STATE = 6


# --------------------------------------------------------------------------------------------
# Number of age bins K (spec §3.6)
# --------------------------------------------------------------------------------------------
def schwalger_history_size(params: Mapping[str, np.ndarray], dt: float = 1e-3, *, variant: str = "canonical") -> np.ndarray:
    """Per-population number of age bins by the Schwalger rule (spec §3.6; NEST ``get_history_size``).

    Canonical: start from ``k = floor(20 s / dt)`` and decrease ``k`` while
    ``theta(k dt) / Delta_u < 0.1`` and ``k > floor(5 tau_m / dt)``; if ``k dt <= t_ref`` set
    ``k = floor(t_ref / dt) + 1``. Gives (693, 50) for the 2-pop defaults.
    ``variant="R"`` reproduces the authors' slip (kernel offset by ``t_ref`` compared with
    ``0.1 * D`` in bins instead of ``0.1 * Delta_u``), which gives 2304 for the defaults.

    Parameters
    ----------
    params : mapping
        A single (unbatched) parameter set.
    dt : float
        Time step in s.
    variant : {"canonical", "R"}

    Returns
    -------
    numpy.ndarray of int, shape (M,)
    """
    J_theta = np.asarray(params["J_theta"], float)
    tau_theta = np.asarray(params["tau_theta"], float)
    Delta_u = np.asarray(params["Delta_u"], float)
    tau_m = np.asarray(params["tau_m"], float)
    t_ref = np.asarray(params["t_ref"], float)
    k_max = int(np.floor(20.0 / dt + 1e-9))
    ks = np.arange(1, k_max + 1)
    out = np.empty(J_theta.shape, dtype=np.int64)
    D_max = int(delay_bins(params, dt).max()) if variant == "R" else 1
    for i in range(J_theta.shape[0]):
        if variant == "R":
            kern = J_theta[i] / tau_theta[i] * np.exp(-(ks * dt - t_ref[i]) / tau_theta[i])
            small = kern < 0.1 * D_max
        else:
            kern = J_theta[i] / tau_theta[i] * np.exp(-ks * dt / tau_theta[i])
            small = kern / Delta_u[i] < 0.1
        k_min = int(np.floor(5.0 * tau_m[i] / dt + 1e-9))
        # Decreasing from k_max while the kernel is small and k > k_min stops at the largest k
        # whose kernel is not small, or at k_min (closed form of the loop).
        not_small = np.nonzero(~small)[0]
        last_big = int(ks[not_small[-1]]) if not_small.size else 0
        k = min(max(last_big, k_min), k_max)
        if k * dt <= t_ref[i] + 1e-12:
            k = int(np.floor(t_ref[i] / dt + 1e-9)) + 1
        out[i] = k
    return out


def _refractory_and_integration_bins(t_ref: np.ndarray, dt: float, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """(k_ref, k_int): ages ``a <= k_ref`` cannot fire; ages ``a <= k_int`` keep ``u = u_r``.

    Canonical (spec §3.7): ``k_ref = k_int = round(t_ref / dt)``. Variant R (§3.13 R2, R3):
    ages with ``a dt < t_ref`` are refractory; every cohort older than one bin is integrated.
    """
    ratio = np.asarray(t_ref, float) / dt
    if variant == "R":
        k_ref = np.ceil(ratio - 1e-9).astype(np.int64) - 1
        k_ref = np.maximum(k_ref, 0)
        k_int = np.minimum(k_ref, 1)
    else:
        k_ref = np.rint(ratio).astype(np.int64)
        k_int = k_ref.copy()
    return k_ref, k_int


def history_size(
    params: Mapping[str, np.ndarray],
    K: int | str | Sequence[int] = DEFAULT_K,
    *,
    dt: float = 1e-3,
    variant: str = "canonical",
) -> np.ndarray:
    """Resolve the number of age bins ``K`` per population and check ``K > k_ref`` (spec §3.6).

    Parameters
    ----------
    params : mapping
        Parameter set, single or batched (leading batch axis). Rules are evaluated at these
        values; for a batch the maximum over the batch is used (array shapes must be static).
    K : int, sequence of int, "auto" or "auto-per-population"
        ``int``: the same K for every population (default 1000, spec §3.6 resolution);
        sequence: one K per population; ``"auto"``: the Schwalger rule
        (:func:`schwalger_history_size`) maximised over populations (spec §3.6);
        ``"auto-per-population"``: the rule per population (NEST; faster, see
        ``notes/mesogif-likelihood-speed.md``).
    dt : float
        Time step in s.
    variant : {"canonical", "R"}

    Returns
    -------
    numpy.ndarray of int, shape (M,)

    Raises
    ------
    ValueError
        If ``K`` is malformed or ``K_α <= k_ref,α`` for some population (the youngest cohort
        that can fire must be tracked explicitly).
    """
    M = int(np.asarray(params["N"]).shape[-1])
    if isinstance(K, str):
        if K not in ("auto", "auto-per-population"):
            raise ValueError(f"K must be an int, a sequence of M ints, 'auto' or 'auto-per-population', got {K!r}")
        flat = {}
        for key in PARAMETER_KEYS:
            arr = np.asarray(params[key], float)
            tail = (M, M) if arr.ndim >= 2 and arr.shape[-2:] == (M, M) and key in ("delay", "p", "w") else (M,)
            flat[key] = arr.reshape((-1,) + tail)
        n_sets = flat["N"].shape[0]
        per_pop = np.max(
            [schwalger_history_size({k: v[i] for k, v in flat.items()}, dt, variant=variant) for i in range(n_sets)],
            axis=0,
        )
        Ks = np.full(M, per_pop.max()) if K == "auto" else per_pop
    else:
        Ks = np.atleast_1d(np.asarray(K))
        if Ks.dtype.kind not in "iu" and not (Ks.dtype.kind == "f" and np.all(Ks == np.rint(Ks))):
            raise ValueError(f"K must be integer, got {K!r}")
        Ks = Ks.astype(np.int64)
        if Ks.shape == (1,):
            Ks = np.repeat(Ks, M)
        if Ks.shape != (M,):
            raise ValueError(f"K must be a single int or one int per population (M={M}), got shape {Ks.shape}")
    Ks = Ks.astype(np.int64)
    k_ref, _ = _refractory_and_integration_bins(np.asarray(params["t_ref"], float), dt, variant)
    k_ref_max = k_ref.reshape(-1, M).max(axis=0)
    if np.any(Ks <= k_ref_max):
        raise ValueError(
            f"K={Ks.tolist()} age bins must exceed the refractory bins k_ref={k_ref_max.tolist()} "
            f"(t_ref/dt) in every population (spec §3.2); increase K"
        )
    return Ks


# --------------------------------------------------------------------------------------------
# Derived constants (spec §3.2), batched over parameter sets
# --------------------------------------------------------------------------------------------
def _kappa(tau_s: np.ndarray, tau_m: np.ndarray, dt: float) -> np.ndarray:
    """Synaptic-membrane filter factor κ_αβ of spec §3.2 with a guarded removable singularity.

    ``kappa = tau_s (E_s - E_m) / (tau_s - tau_m)``; for ``|tau_s - tau_m| < 1e-9`` s the
    second-order expansion around ``tau_s = tau_m`` is used (limit ``dt/tau_m * E_m``).
    ``tau_s`` has shape (..., 1, M) (source), ``tau_m`` shape (..., M, 1) (target).
    """
    delta = tau_s - tau_m
    Es = np.exp(-dt / tau_s)
    Em = np.exp(-dt / tau_m)
    near = np.abs(delta) < 1e-9
    safe = np.where(near, 1.0, delta)
    exact = tau_s * (Es - Em) / safe
    d1 = dt / tau_m**2 * Em  # dE/dtau at tau_m
    d2 = (dt**2 / tau_m**4 - 2.0 * dt / tau_m**3) * Em
    taylor = tau_s * (d1 + 0.5 * d2 * delta)
    return np.where(near, taylor, exact)


def _constants(params: Mapping[str, np.ndarray], K: np.ndarray, dt: float, variant: str) -> dict[str, np.ndarray]:
    """Per-simulation constants of spec §3.2 for a batched parameter set (leading axis B)."""
    P = {k: np.asarray(params[k], dtype=np.float64) for k in PARAMETER_KEYS}
    B, M = P["N"].shape
    Kmax = int(K.max())
    tau_m, tau_s, tau_theta = P["tau_m"], P["tau_s"], P["tau_theta"]
    Em = np.exp(-dt / tau_m)
    Es = np.exp(-dt / tau_s)
    Eth = np.exp(-dt / tau_theta)
    J = P["p"] * P["N"][:, None, :] * P["w"]
    kappa = _kappa(tau_s[:, None, :], tau_m[:, :, None], dt)
    ages = np.arange(1, Kmax + 1, dtype=np.float64)
    jump = (P["J_theta"] / tau_theta)[:, :, None]
    if variant == "R":
        lag = ages[None, None, :] * dt - P["t_ref"][:, :, None]
        theta = np.where(lag >= -1e-12, jump * np.exp(-lag / tau_theta[:, :, None]), 1e12)
        Phi = P["J_theta"] * np.exp(-(K[None, :] * dt - P["t_ref"]) / tau_theta)
    else:
        theta = jump * np.exp(-ages[None, None, :] * dt / tau_theta[:, :, None])
        Phi = P["J_theta"] * np.exp(-K[None, :] * dt / tau_theta)
    Du = P["Delta_u"][:, :, None]
    theta_soft = -Du * np.expm1(-theta / Du)
    k_ref, k_int = _refractory_and_integration_bins(P["t_ref"], dt, variant)
    pop = np.empty((B, _N_POP_CONST, M))
    pop[:, _N] = P["N"]
    pop[:, _R] = P["R"]
    pop[:, _UREST] = P["u_rest"]
    pop[:, _UTH] = P["u_th"]
    pop[:, _UR] = P["u_r"]
    pop[:, _C] = P["c"]
    pop[:, _DU] = P["Delta_u"]
    pop[:, _TAUM] = tau_m
    pop[:, _EM] = Em
    pop[:, _ETH] = Eth
    pop[:, _PHI] = Phi
    return {
        "pop": np.ascontiguousarray(pop),
        "Es": np.ascontiguousarray(Es),
        "J": np.ascontiguousarray(J),
        "kappa": np.ascontiguousarray(kappa),
        "D": np.ascontiguousarray(delay_bins(P, dt)),
        "k_ref": np.ascontiguousarray(k_ref),
        "k_int": np.ascontiguousarray(k_int),
        "theta": np.ascontiguousarray(theta),
        "theta_soft": np.ascontiguousarray(theta_soft),
    }


# --------------------------------------------------------------------------------------------
# Initial state (spec §3.9, §4.4)
# --------------------------------------------------------------------------------------------
def _history_length(K: np.ndarray, D: np.ndarray) -> int:
    """Ring length of the count history: ``max(K, max D) + 1`` so no read slot is overwritten."""
    return int(max(int(K.max()), int(D.max()))) + 1


def initial_state(
    params: Mapping[str, np.ndarray],
    *,
    K: np.ndarray,
    dt: float = 1e-3,
    init: str = "silent",
    variant: str = "canonical",
    linear_switch: bool = True,
) -> dict[str, np.ndarray]:
    """Initial mesoscopic state for a batched parameter set, in age order (spec §3.3, §3.9, §4.4).

    Parameters
    ----------
    params : mapping
        Batched parameter set (leading axis B).
    K : numpy.ndarray of int, shape (M,)
        Age bins per population (from :func:`history_size`).
    dt : float
        Time step in s.
    init : {"silent", "stationary", "synchronous"}
        ``"silent"`` (René et al. Algorithm 1, default): all neurons free, never fired.
        ``"stationary"``: the large-N fixed point for zero input (§4.4, canonical variant
        only); falls back to silent with a ``RuntimeWarning`` if the root finder fails.
        ``"synchronous"``: NEST / Schwalger — all neurons in the youngest cohort.
    variant : {"canonical", "R"}
    linear_switch : bool
        Probability rule of M11, used by the stationary solver for consistency.

    Returns
    -------
    dict of str to numpy.ndarray
        Age-indexed arrays (index ``a - 1`` holds age ``a``): ``H`` (B, M, K_h) counts,
        ``m``, ``v``, ``u``, ``lam`` (B, M, K_max), ``y`` (B, M, M) Hz, and ``h`` mV, ``g`` Hz,
        ``lam_free`` Hz, ``x``, ``z``, ``v_out`` (B, M).
    """
    P = {k: np.asarray(params[k], dtype=np.float64) for k in PARAMETER_KEYS}
    B, M = P["N"].shape
    Kmax = int(K.max())
    D = delay_bins(P, dt)
    Kh = _history_length(K, D)
    state = {
        "H": np.zeros((B, M, Kh)),
        "m": np.zeros((B, M, Kmax)),
        "v": np.zeros((B, M, Kmax)),
        "u": np.repeat(P["u_rest"][:, :, None], Kmax, axis=2),
        "lam": np.zeros((B, M, Kmax)),
        "y": np.zeros((B, M, M)),
        "h": P["u_rest"].copy(),
        "g": np.zeros((B, M)),
        "lam_free": np.zeros((B, M)),
        "x": P["N"].copy(),
        "z": np.zeros((B, M)),
        "v_out": np.zeros((B, M)),
    }
    if init == "silent":
        return state
    if init == "synchronous":
        state["x"][:] = 0.0
        state["m"][:, :, 0] = P["N"]
        state["H"][:, :, 0] = P["N"]
        state["u"][:, :, 0] = P["u_r"]
        return state
    if init == "stationary":
        if variant != "canonical":
            raise ValueError("init='stationary' is implemented for variant='canonical' only (spec §4.4)")
        from .stationary import stationary_state

        for b in range(B):
            single = {k: v[b] for k, v in P.items()}
            st = stationary_state(single, K=K, dt=dt, linear_switch=linear_switch)
            if st is None:
                warnings.warn(
                    f"stationary initialisation: no fixed point found for parameter set {b}; "
                    "falling back to the silent initialisation (spec §4.4)",
                    RuntimeWarning,
                    stacklevel=3,
                )
                continue
            for key in ("m", "v", "u", "lam"):
                for alpha in range(M):
                    state[key][b, alpha, : K[alpha]] = st[key][alpha][: K[alpha]]
            state["H"][b] = st["rate"][:, None] * P["N"][b][:, None] * dt
            for key in ("y", "h", "g", "lam_free", "x", "z"):
                state[key][b] = st[key]
        return state
    raise ValueError(f"init must be one of {_INITS}, got {init!r}")


def _to_rings(state: dict[str, np.ndarray], K: np.ndarray) -> dict[str, np.ndarray]:
    """Convert age-ordered arrays to birth-time rings at global step ``k = 0``.

    Age ``a`` (born in bin ``-a``) goes to slot ``(-a) mod K_α`` (cohorts) and ``(-a) mod K_h``
    (history).
    """
    out = {k: np.ascontiguousarray(v.copy()) for k, v in state.items()}
    Kh = state["H"].shape[2]
    ages_h = np.arange(1, Kh + 1)
    out["H"] = np.zeros_like(state["H"])
    out["H"][:, :, (-ages_h) % Kh] = state["H"]
    for key in ("m", "v", "u", "lam"):
        ring = state[key].copy()
        for alpha, Ka in enumerate(K):
            ages = np.arange(1, Ka + 1)
            ring[:, alpha, (-ages) % Ka] = state[key][:, alpha, :Ka]
        out[key] = np.ascontiguousarray(ring)
    scal = np.empty((state["h"].shape[0], _N_POP_STATE, state["h"].shape[1]))
    scal[:, _H] = state["h"]
    scal[:, _G] = state["g"]
    scal[:, _LF] = state["lam_free"]
    scal[:, _X] = state["x"]
    scal[:, _Z] = state["z"]
    scal[:, _VOUT] = state["v_out"]
    out["scalars"] = scal
    return out


def _from_rings(rings: dict[str, np.ndarray], b: int, K: np.ndarray, k_next: int) -> dict[str, np.ndarray]:
    """Age-ordered copy of simulation ``b``'s state before global step ``k_next`` (inverse of :func:`_to_rings`)."""
    H = rings["H"][b]
    Kh = H.shape[1]
    ages_h = np.arange(1, Kh + 1)
    out = {"H": H[:, (k_next - ages_h) % Kh].copy()}
    for key in ("m", "v", "u", "lam"):
        ring = rings[key][b]
        arr = np.full(ring.shape, np.nan)
        for alpha, Ka in enumerate(K):
            ages = np.arange(1, Ka + 1)
            arr[alpha, :Ka] = ring[alpha, (k_next - ages) % Ka]
        out[key] = arr
    out["y"] = rings["y"][b].copy()
    scal = rings["scalars"][b]
    for name, row in (("h", _H), ("g", _G), ("lam_free", _LF), ("x", _X), ("z", _Z), ("v_out", _VOUT)):
        out[name] = scal[row].copy()
    return out


# --------------------------------------------------------------------------------------------
# The step (M1–M17), compiled
# --------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _advance(
    pop, Es, J, kappa, D, k_ref, k_int, K, theta, theta_soft, dt, variant_r, linear_switch,
    H, m, v, u, lam, y, scal, k_start,
    inputs, observed, teacher_forced, rng,
    out_counts, out_nbar,
):  # pragma: no cover - compiled
    """Advance one simulation by ``inputs.shape[0]`` steps of spec §3.4 (or Variant R, §3.13).

    State arrays are updated in place (birth-time rings, see module docstring). With
    ``teacher_forced`` the observed count is used as ``n^(k)``; otherwise it is drawn from
    ``Binomial(N, clip(n̄/N, 0, 1))`` with ``rng``. Writes ``n`` and ``n̄`` of every step to
    ``out_counts`` and ``out_nbar``. Returns ``-1`` on success, else the first step whose
    ``n̄`` was not finite.
    """
    T = inputs.shape[0]
    M = pop.shape[1]
    Kh = H.shape[1]
    n_new = np.zeros(M)
    thr = np.empty(m.shape[1])  # scratch: cohort thresholds by slot (mV)
    for t in range(T):
        k = k_start + t
        for al in range(M):
            N = pop[0, al]
            R = pop[1, al]
            u_rest = pop[2, al]
            u_th = pop[3, al]
            u_r = pop[4, al]
            c = pop[5, al]
            Du = pop[6, al]
            tau_m = pop[7, al]
            Em = pop[8, al]
            Eth = pop[9, al]
            Phi = pop[10, al]
            Ka = K[al]
            kr = k_ref[al]
            ki = k_int[al]
            # M1-M3: delayed activity, potential increment, synaptic filter
            dh = (1.0 - Em) * R * inputs[t, al]
            for be in range(M):
                A_hat = H[be, (k - D[al, be]) % Kh] / (pop[0, be] * dt)
                yy = y[al, be]
                if variant_r:  # R4: filter first, then use the updated y
                    yy = A_hat + (yy - A_hat) * Es[be]
                    y[al, be] = yy
                    dh += tau_m * J[al, be] * (A_hat * (1.0 - Em) + (yy - A_hat) * kappa[al, be])
                else:
                    dh += tau_m * J[al, be] * (A_hat * (1.0 - Em) + (yy - A_hat) * kappa[al, be])
                    y[al, be] = A_hat + (yy - A_hat) * Es[be]
            # M4: free membrane potential
            h = u_rest + (scal[0, al] - u_rest) * Em + dh
            scal[0, al] = h
            # M5-M6: adaptation trace of activity leaving the window, free threshold
            n_K = H[al, (k - Ka) % Kh]
            g = Eth * scal[1, al] + (1.0 - Eth) * n_K / (N * dt)
            scal[1, al] = g
            th_free = u_th + Phi * g
            # M8: free hazard and probability (trapezoid)
            arg = (h - th_free) / Du
            if arg > _EXP_CAP:
                arg = _EXP_CAP
            lf_new = c * np.exp(arg)
            P_free = -np.expm1(-0.5 * dt * (scal[2, al] + lf_new))
            scal[2, al] = lf_new
            # M7 (pass 1): thresholds of the firing ages, written by cohort slot into the scratch
            # array; the suffix sum over older ages runs from the oldest age K downwards.
            inv_N = 1.0 / N
            if variant_r:
                th_sum = th_free  # R5: no subtraction of the age-K term
            else:
                th_sum = th_free - theta_soft[al, Ka - 1] * n_K * inv_N
            s = k % Ka  # cohort slot of age a = K (born in bin k - K)
            sh = (k - Ka) % Kh  # history slot of age a = K
            for a in range(Ka, kr, -1):
                thr[s] = th_sum + theta[al, a - 1]
                th_sum += theta_soft[al, a - 1] * H[al, sh] * inv_N
                s += 1
                if s == Ka:
                    s = 0
                sh += 1
                if sh == Kh:
                    sh = 0
            # M9-M12, M15 (pass 2): potentials, hazards, probabilities, sums, survival update,
            # from the oldest (K) to the youngest (1) age.
            inv_Du = 1.0 / Du
            half_dt = 0.5 * dt
            W = 0.0
            X = 0.0
            Y = 0.0
            Z = 0.0
            v_older = scal[5, al]  # R8: pre-decay variance of the next-older cohort
            s = k % Ka
            for a in range(Ka, 0, -1):
                mm = m[al, s]
                vv = v[al, s]
                P = 0.0
                if a > ki:  # M9: integrate the cohort potential
                    uu = u_rest + (u[al, s] - u_rest) * Em + dh
                    u[al, s] = uu
                    if a > kr:  # M10, M11: hazard and firing probability
                        arg = (uu - thr[s]) * inv_Du
                        if arg > _EXP_CAP:
                            arg = _EXP_CAP
                        l_new = c * np.exp(arg)
                        pi = half_dt * (l_new + lam[al, s])
                        if linear_switch and pi <= 0.01:
                            P = pi
                        else:
                            P = -np.expm1(-pi)
                        lam[al, s] = l_new
                # M15: survival update (variance first, with the pre-decay m)
                q = 1.0 - P
                m_dec = q * mm
                v[al, s] = q * q * vv + P * mm
                m[al, s] = m_dec
                if variant_r:  # R6, R8
                    W += P * m_dec
                    X += m_dec
                    Y += P * v_older
                    Z += v_older
                    v_older = vv
                else:  # M12 with pre-decay m, v
                    W += P * mm
                    X += mm
                    Y += P * vv
                    Z += vv
                s += 1
                if s == Ka:
                    s = 0
            s_old = k % Ka  # slot of the age-K cohort, recycled for the new cohort
            m_K = m[al, s_old]
            v_K = v[al, s_old]
            x = scal[3, al]
            z = scal[4, al]
            # M13-M14 (and R7, R9, R10), M16
            if variant_r:
                P_lambda = (Y + P_free * z) / (abs(Z + z) + 4e-10)
                x_plus = (1.0 - P_free) * x + m_K
                nbar = W + P_free * x_plus + P_lambda * (N - X - x_plus)
                scal[4, al] = (1.0 - P_free) * (1.0 - P_free) * z + P_free * x
                scal[3, al] = x_plus
                scal[5, al] = v_K
            else:
                den = Z + z
                P_lambda = (Y + P_free * z) / den if den > 0.0 else 0.0
                nbar = W + P_free * x + P_lambda * (N - X - x)
                scal[4, al] = (1.0 - P_free) * (1.0 - P_free) * z + P_free * x + v_K
                scal[3, al] = (1.0 - P_free) * x + m_K
            if not np.isfinite(nbar):
                return t
            out_nbar[t, al] = nbar
            # M15': emission
            if teacher_forced:
                n = observed[t, al]
            else:
                p = nbar / N
                if p < 0.0:
                    p = 0.0
                elif p > 1.0:
                    p = 1.0
                n = float(rng.binomial(np.int64(N + 0.5), p))
            out_counts[t, al] = n
            n_new[al] = n
            # M17: new cohort in the recycled slot
            m[al, s_old] = n
            v[al, s_old] = 0.0
            u[al, s_old] = u_r
            lam[al, s_old] = 0.0
        for al in range(M):
            H[al, k % Kh] = n_new[al]
    return -1


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def _check_variant(variant: str) -> None:
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be 'canonical' (spec §3.4) or 'R' (spec §3.13), got {variant!r}")


def _batched_params(params_batch: Mapping[str, np.ndarray], dt: float) -> tuple[dict[str, np.ndarray], int, int]:
    check_parameters(params_batch, dt)
    P = {k: np.asarray(params_batch[k], dtype=np.float64) for k in PARAMETER_KEYS}
    if P["N"].ndim != 2:
        raise ValueError(
            f"params_batch must have exactly one leading batch axis, e.g. 'N' of shape (B, M); got "
            f"'N' of shape {P['N'].shape} (use broadcast_parameters(params, B) for a single set)"
        )
    B, M = P["N"].shape
    return P, B, M


def broadcast_parameters(params: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """Repeat a single parameter set along a new leading batch axis of length ``batch_size``."""
    return {k: np.repeat(np.asarray(params[k], dtype=np.float64)[None], batch_size, axis=0) for k in params}


def _check_inputs(inputs: np.ndarray, B: int, M: int) -> np.ndarray:
    I = np.asarray(inputs, dtype=np.float64)
    if I.ndim == 2:
        I = np.broadcast_to(I[None], (B,) + I.shape)
    if I.ndim != 3 or I.shape[0] != B or I.shape[2] != M:
        raise ValueError(
            f"inputs must have shape (T, M) or (B, T, M) with M={M}, B={B} (external current in mA), "
            f"got {np.shape(inputs)}"
        )
    if I.shape[1] < 1:
        raise ValueError("inputs must contain at least one time step")
    if not np.all(np.isfinite(I)):
        raise ValueError("inputs contain NaN or infinite values")
    return I


def _run_one(consts, rings, b, inputs_b, observed_b, teacher_forced, seed, dt, variant_r, linear_switch, K):
    T, M = inputs_b.shape
    counts = np.empty((T, M))
    nbar = np.empty((T, M))
    rng = np.random.default_rng(seed)
    status = _advance(
        consts["pop"][b], consts["Es"][b], consts["J"][b], consts["kappa"][b], consts["D"][b],
        consts["k_ref"][b], consts["k_int"][b], K, consts["theta"][b], consts["theta_soft"][b],
        dt, variant_r, linear_switch,
        rings["H"][b], rings["m"][b], rings["v"][b], rings["u"][b], rings["lam"][b], rings["y"][b],
        rings["scalars"][b], 0,
        inputs_b, observed_b, teacher_forced, rng, counts, nbar,
    )
    if status >= 0:
        raise FloatingPointError(
            f"expected spike count became non-finite at step {status} of simulation {b}; "
            "the parameters are far outside the plausible range (check tau_m, c, Delta_u, w)"
        )
    return counts, nbar


def simulate(
    params_batch: Mapping[str, np.ndarray],
    inputs: np.ndarray,
    *,
    seeds: np.ndarray,
    K: int | str | Sequence[int] = DEFAULT_K,
    variant: str = "canonical",
    init: str = "silent",
    dt: float = 1e-3,
    return_expected: bool = False,
    linear_switch: bool = True,
    n_threads: int = 1,
) -> dict[str, np.ndarray]:
    """Simulate B mesoGIF realisations / parameter sets at once (spec §3.4, §3.13).

    Parameters
    ----------
    params_batch : mapping of str to numpy.ndarray
        Parameter set with a leading batch axis: ``params_batch[key]`` has shape
        ``(B, *shape)`` (keys and units in :mod:`mechzoo.models.mesogif.parameters`).
    inputs : numpy.ndarray, shape (T, M) or (B, T, M)
        Mean external current per bin ``I^(k)`` in mA (see :mod:`.stimuli`); ``(T, M)`` is
        shared by the whole batch.
    seeds : numpy.ndarray of uint64, shape (B,)
        One seed per simulation (``numpy.random.default_rng(seed)`` draws its binomial
        emissions), so results do not depend on how a campaign is chunked.
    K : int, sequence of int, "auto" or "auto-per-population", default 1000
        Number of age bins, see :func:`history_size`.
    variant : {"canonical", "R"}
        Algorithm of spec §3.4 or the authors' code, §3.13.
    init : {"silent", "stationary", "synchronous"}
        Initial state, see :func:`initial_state`.
    dt : float, default 1e-3
        Time step in s.
    return_expected : bool, default False
        Also return the expected counts ``n̄`` (M14).
    linear_switch : bool, default True
        M11: use ``P = pi`` for ``pi <= 0.01`` (NEST and the authors' code) instead of
        ``1 - exp(-pi)`` everywhere.
    n_threads : int, default 1
        Worker threads over the batch (the compiled step releases the GIL).

    Returns
    -------
    dict of str to numpy.ndarray
        ``"counts"``: int64 ``(B, T, M)`` spike counts ``n^(k)``; with ``return_expected``
        also ``"expected_counts"``: float64 ``(B, T, M)`` expected counts ``n̄^(k)``.
    """
    _check_variant(variant)
    P, B, M = _batched_params(params_batch, dt)
    seeds = np.asarray(seeds)
    if seeds.shape != (B,) or seeds.dtype.kind not in "iu" or np.any(seeds < 0):
        raise ValueError(f"seeds must be an array of B={B} non-negative integers (uint64), got shape {seeds.shape} dtype {seeds.dtype}")
    I = _check_inputs(inputs, B, M)
    Ks = history_size(P, K, dt=dt, variant=variant)
    consts = _constants(P, Ks, dt, variant)
    rings = _to_rings(initial_state(P, K=Ks, dt=dt, init=init, variant=variant, linear_switch=linear_switch), Ks)
    T = I.shape[1]
    counts = np.empty((B, T, M), dtype=np.int64)
    expected = np.empty((B, T, M)) if return_expected else None
    dummy_obs = np.zeros((1, M))

    def task(b):
        c, nb = _run_one(consts, rings, b, np.ascontiguousarray(I[b]), dummy_obs, False, np.uint64(seeds[b]),
                         float(dt), variant == "R", bool(linear_switch), Ks)
        counts[b] = c.astype(np.int64)
        if expected is not None:
            expected[b] = nb

    if n_threads > 1 and B > 1:
        with ThreadPoolExecutor(max_workers=int(n_threads)) as pool:
            list(pool.map(task, range(B)))
    else:
        for b in range(B):
            task(b)
    out = {"counts": counts}
    if expected is not None:
        out["expected_counts"] = expected
    return out


def binomial_probability(expected: np.ndarray, N: np.ndarray, eps: float = PROBABILITY_EPS) -> np.ndarray:
    """Binomial probability of the likelihood, ``clip(n̄ / N, eps, 1 - eps)`` (spec §4.1)."""
    return np.clip(np.asarray(expected) / np.asarray(N, dtype=np.float64), eps, 1.0 - eps)


def expected_counts(
    params: Mapping[str, np.ndarray],
    inputs: np.ndarray,
    observed_counts: np.ndarray,
    *,
    K: int | str | Sequence[int] = DEFAULT_K,
    init: str = "silent",
    variant: str = "canonical",
    dt: float = 1e-3,
    linear_switch: bool = True,
    eps: float = PROBABILITY_EPS,
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced expected counts ``n̄^(k)`` given observed counts (spec §3.14, §4.1, §4.3).

    The observed ``n^(k)`` is fed back wherever the simulator would use its own sample
    (history, new cohort, delayed activity); the step is the same compiled code as
    :func:`simulate`. ``n̄^(k)`` depends only on ``n^(0..k-1)`` (delays ``D >= 1``).

    Parameters
    ----------
    params : mapping
        A single parameter set (no batch axis).
    inputs : numpy.ndarray, shape (T, M)
        External current per bin in mA.
    observed_counts : numpy.ndarray, shape (T, M)
        Observed spike counts, integers in ``[0, N_α]`` (real values are accepted, e.g. for
        a stationary history).
    K, init, variant, dt, linear_switch
        As in :func:`simulate`.
    eps : float, default 1e-8
        Probability clip of spec §4.1.

    Returns
    -------
    expected : numpy.ndarray, shape (T, M)
        Expected counts ``n̄^(k)`` (M14), unclipped.
    probability : numpy.ndarray, shape (T, M)
        Binomial probability ``clip(n̄ / N, eps, 1 - eps)`` of the likelihood (spec §4.1).
    """
    _check_variant(variant)
    check_parameters(params, dt)
    if np.asarray(params["N"]).ndim != 1:
        raise ValueError("expected_counts takes a single parameter set ('N' of shape (M,)); loop over a batch")
    batched = broadcast_parameters(params, 1)
    P, B, M = _batched_params(batched, dt)
    I = _check_inputs(inputs, 1, M)
    obs = np.asarray(observed_counts, dtype=np.float64)
    if obs.shape != I.shape[1:]:
        raise ValueError(f"observed_counts must have the shape of inputs {I.shape[1:]} (T, M), got {obs.shape}")
    if not np.all(np.isfinite(obs)):
        raise ValueError("observed_counts contain NaN or infinite values")
    if np.any(obs < 0) or np.any(obs > P["N"][0][None, :]):
        raise ValueError("observed_counts must lie in [0, N] for every population (spike counts per bin)")
    Ks = history_size(P, K, dt=dt, variant=variant)
    consts = _constants(P, Ks, dt, variant)
    rings = _to_rings(initial_state(P, K=Ks, dt=dt, init=init, variant=variant, linear_switch=linear_switch), Ks)
    _, nbar = _run_one(consts, rings, 0, np.ascontiguousarray(I[0]), np.ascontiguousarray(obs), True,
                       np.uint64(0), float(dt), variant == "R", bool(linear_switch), Ks)
    return nbar, binomial_probability(nbar, P["N"][0][None, :], eps)


def run_with_state(
    params: Mapping[str, np.ndarray],
    inputs: np.ndarray,
    *,
    seed: int = 0,
    observed_counts: np.ndarray | None = None,
    K: int | str | Sequence[int] = DEFAULT_K,
    variant: str = "canonical",
    init: str = "silent",
    dt: float = 1e-3,
    linear_switch: bool = True,
) -> dict[str, object]:
    """One simulation (or teacher-forced pass) that also returns the final state (diagnostics, tests).

    Same step code as :func:`simulate` / :func:`expected_counts`. With ``observed_counts``
    the pass is teacher-forced, otherwise counts are drawn with ``default_rng(seed)``.

    Returns
    -------
    dict
        ``counts`` (T, M), ``expected_counts`` (T, M), ``K`` (M,), and ``state``: the state
        ``S^(T)`` after the last step in age order (index ``a - 1`` holds age ``a``; see
        :func:`initial_state` for the keys; ages beyond ``K_α`` are NaN).
    """
    _check_variant(variant)
    check_parameters(params, dt)
    P, _, M = _batched_params(broadcast_parameters(params, 1), dt)
    I = _check_inputs(inputs, 1, M)
    teacher = observed_counts is not None
    obs = np.ascontiguousarray(np.asarray(observed_counts, dtype=np.float64)) if teacher else np.zeros((1, M))
    if teacher and obs.shape != I.shape[1:]:
        raise ValueError(f"observed_counts must have shape {I.shape[1:]}, got {obs.shape}")
    Ks = history_size(P, K, dt=dt, variant=variant)
    consts = _constants(P, Ks, dt, variant)
    rings = _to_rings(initial_state(P, K=Ks, dt=dt, init=init, variant=variant, linear_switch=linear_switch), Ks)
    counts, nbar = _run_one(consts, rings, 0, np.ascontiguousarray(I[0]), obs, teacher, np.uint64(seed),
                            float(dt), variant == "R", bool(linear_switch), Ks)
    return {
        "counts": counts,
        "expected_counts": nbar,
        "K": Ks,
        "state": _from_rings(rings, 0, Ks, I.shape[1]),
    }
