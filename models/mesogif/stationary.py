"""Stationary (large-N, zero-input) state of the canonical mesoGIF model (spec §4.4).

René et al. (2020) Appendix C.1 / I, Algorithm 3, written for the canonical discretisation of
``specs/mesogif.md`` §3.4: for zero external input and ``N -> ∞`` the activity is constant,
``A^(k) = A*``, and the state follows in closed form from ``A*``. ``A*`` solves one
self-consistency equation per population (counts of all age groups sum to N),

.. math::

    F_\\alpha(A^*) = A^*_\\alpha\\Delta t\\Big[\\sum_{a=1}^{K} S_{\\alpha,a-1}
                     + \\frac{S_{\\alpha,K}}{P^{\\mathrm{free}*}_\\alpha}\\Big] - 1 = 0,

with the survival ``S_a = prod_{b<=a} (1 - P*_b)``. The probabilities use the same rule as the
simulator (``linear_switch``, M11), so the returned state is a fixed point of the simulator's
``N -> ∞`` dynamics.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.optimize import root

__all__ = ["stationary_rates", "stationary_state"]

_EXP_CAP = 300.0


def _escape_rate(x: np.ndarray, c: float, Delta_u: float) -> np.ndarray:
    return c * np.exp(np.minimum(x / Delta_u, _EXP_CAP))


def _probability(pi: np.ndarray, linear_switch: bool) -> np.ndarray:
    exact = -np.expm1(-pi)
    return np.where(pi <= 0.01, pi, exact) if linear_switch else exact


def _profile(params: Mapping[str, np.ndarray], K: np.ndarray, dt: float, A: np.ndarray, linear_switch: bool):
    """Per-population stationary quantities for the rates ``A`` (Hz); list of dicts."""
    N = params["N"]
    J = params["p"] * N[None, :] * params["w"]
    H_syn = params["tau_m"] * (J @ A)  # mV
    k_ref = np.rint(params["t_ref"] / dt).astype(int)
    out = []
    for al in range(N.shape[0]):
        Ka = int(K[al])
        a = np.arange(1, Ka + 1)
        tau_th, J_th, Du, c = params["tau_theta"][al], params["J_theta"][al], params["Delta_u"][al], params["c"][al]
        u_rest, u_r, u_th, tau_m = params["u_rest"][al], params["u_r"][al], params["u_th"][al], params["tau_m"][al]
        theta = J_th / tau_th * np.exp(-a * dt / tau_th)
        theta_soft = -Du * np.expm1(-theta / Du)
        Phi = J_th * np.exp(-Ka * dt / tau_th)
        fire = a > k_ref[al]
        u_star = np.where(
            fire, u_rest + H_syn[al] + (u_r - u_rest - H_syn[al]) * np.exp(-(a - k_ref[al]) * dt / tau_m), u_r
        )
        terms = theta_soft * A[al] * dt
        suffix = np.concatenate([np.cumsum(terms[::-1])[::-1][1:], [0.0]])  # sum over a' > a
        th_star = u_th + theta + Phi * A[al] - theta_soft[-1] * A[al] * dt + suffix
        lam = np.where(fire, _escape_rate(u_star - th_star, c, Du), 0.0)
        lam_prev = np.concatenate([[0.0], lam[:-1]])
        P = np.where(fire, _probability(0.5 * dt * (lam + lam_prev), linear_switch), 0.0)
        lam_free = _escape_rate(u_rest + H_syn[al] - u_th - Phi * A[al], c, Du)
        P_free = -np.expm1(-lam_free * dt)
        S = np.cumprod(1.0 - P)
        S_prev = np.concatenate([[1.0], S[:-1]])
        out.append(
            dict(
                u_star=u_star, lam=lam, lam_prev=lam_prev, P=P, S=S, S_prev=S_prev,
                lam_free=lam_free, P_free=P_free, h=u_rest + H_syn[al], u_r=u_r,
            )
        )
    return out


def _residual(log_A: np.ndarray, params, K, dt, linear_switch) -> np.ndarray:
    A = np.exp(np.clip(log_A, -30.0, 10.0))  # 1e-13 Hz .. 22 kHz keeps every term finite
    prof = _profile(params, K, dt, A, linear_switch)
    res = np.empty(A.shape[0])
    for i, p in enumerate(prof):
        free = p["S"][-1] / p["P_free"] if p["P_free"] > 0 else (0.0 if p["S"][-1] == 0 else 1e300)
        res[i] = A[i] * dt * (p["S_prev"].sum() + free) - 1.0
    return res


def stationary_rates(
    params: Mapping[str, np.ndarray],
    *,
    K: np.ndarray,
    dt: float = 1e-3,
    linear_switch: bool = True,
    guess_hz: float | None = None,
) -> tuple[np.ndarray, bool]:
    """Stationary population rates ``A*`` (Hz) for zero input and ``N -> ∞`` (spec §4.4).

    Parameters
    ----------
    params : mapping
        A single parameter set (no batch axis).
    K : numpy.ndarray of int, shape (M,)
        Age bins per population.
    dt : float
        Time step in s.
    linear_switch : bool
        Probability rule of M11 (same as the simulator).
    guess_hz : float, optional
        Initial guess for every population. By default 1 Hz (René et al.), then 10 Hz (their
        code), 3 Hz and 30 Hz are tried until the root finder converges.

    Returns
    -------
    rates : numpy.ndarray, shape (M,)
        ``A*`` in Hz.
    success : bool
        Whether the root finder converged (residual below 1e-9); uniqueness is not guaranteed.
    """
    P = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    K = np.asarray(K, dtype=np.int64)
    M = P["N"].shape[0]
    guesses = (guess_hz,) if guess_hz is not None else (1.0, 10.0, 3.0, 30.0)
    rates = np.full(M, np.nan)
    for guess in guesses:
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            sol = root(_residual, np.full(M, np.log(guess)), args=(P, K, dt, linear_switch), method="hybr")
            rates = np.exp(sol.x)
            ok = bool(np.all(np.isfinite(sol.x))) and bool(np.all(np.abs(sol.x) < 10.0))
            if ok:
                ok = bool(np.max(np.abs(_residual(sol.x, P, K, dt, linear_switch))) < 1e-9)
        if ok:
            return rates, True
    return rates, False


def stationary_state(
    params: Mapping[str, np.ndarray], *, K: np.ndarray, dt: float = 1e-3, linear_switch: bool = True
) -> dict[str, np.ndarray] | None:
    """Stationary mesoscopic state in age order (spec §4.4), or ``None`` if no fixed point is found.

    The state is the one *at* ``t_k`` before bin ``k`` is processed (spec §3.3): the stored
    potential and hazard of age ``a`` are the stationary values of age ``a - 1`` (computed in the
    previous step), ``u_0 = u_r``, ``lambda_0 = 0``.

    Returns
    -------
    dict or None
        ``rate`` (M,) Hz; ``m``, ``v``, ``u``, ``lam`` (M, K_max) age-indexed; ``y`` (M, M) Hz;
        ``h`` mV, ``g`` Hz, ``lam_free`` Hz, ``x``, ``z`` (M,).
    """
    P = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    K = np.asarray(K, dtype=np.int64)
    rates, ok = stationary_rates(P, K=K, dt=dt, linear_switch=linear_switch)
    if not ok:
        return None
    M = rates.shape[0]
    Kmax = int(K.max())
    prof = _profile(P, K, dt, rates, linear_switch)
    st = {
        "rate": rates,
        "m": np.zeros((M, Kmax)),
        "v": np.zeros((M, Kmax)),
        "u": np.zeros((M, Kmax)),
        "lam": np.zeros((M, Kmax)),
        "y": np.repeat(rates[None, :], M, axis=0),
        "h": np.array([p["h"] for p in prof]),
        "g": rates.copy(),
        "lam_free": np.array([p["lam_free"] for p in prof]),
        "x": np.zeros(M),
        "z": np.zeros(M),
    }
    for al, p in enumerate(prof):
        Ka = int(K[al])
        n0 = P["N"][al] * rates[al] * dt
        m = n0 * p["S_prev"]
        v = np.zeros(Ka)
        for i in range(1, Ka):
            v[i] = (1.0 - p["P"][i - 1]) ** 2 * v[i - 1] + p["P"][i - 1] * m[i - 1]
        v_hat = (1.0 - p["P"][-1]) ** 2 * v[-1] + p["P"][-1] * m[-1]
        x = n0 * p["S"][-1] / p["P_free"]
        st["m"][al, :Ka] = m
        st["v"][al, :Ka] = v
        st["u"][al, :Ka] = np.concatenate([[p["u_r"]], p["u_star"][:-1]])
        st["lam"][al, :Ka] = p["lam_prev"]
        st["x"][al] = x
        st["z"][al] = (p["P_free"] * x + v_hat) / (1.0 - (1.0 - p["P_free"]) ** 2)
    return st
