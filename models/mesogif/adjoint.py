"""Teacher-forced mesoGIF log-likelihood and its exact reverse-mode gradient (Numba kernels).

The forward step is the canonical algorithm M1–M17 of ``specs/mesogif.md`` §3.4 in likelihood
mode (§3.14, §4.3): the observed counts are fed back, so no state depends on ``n̄`` and the
recursion is open-loop. The reverse sweep is the **hand-derived adjoint** of the same step
(one adjoint recurrence per state variable, see :func:`_reverse_step`), evaluated over segments
of ``checkpoint`` steps that are recomputed from stored checkpoints into a small tape
(``notes/mesogif-likelihood-speed.md``).

Layout (like :mod:`.meso`'s birth-time windows, but one linear array for the whole run):

* cohort arrays ``m, v, u, lam`` have shape ``(M, T + K_max)`` and are indexed by **birth
  time**: the cohort of population α born in bin ``b`` lives at index ``b + K_α`` (initial
  cohorts, born at ``b = -K_α .. -1``, occupy ``0 .. K_α - 1``). At step ``k`` the live cohorts
  are the contiguous window ``[k, k + K_α)``; index ``k + j`` has age ``a = K_α - j``. Nothing
  is shifted or wrapped (M17 is an index change);
* the count history is one array ``hist`` of shape ``(M, K_h + T)``: the initial history
  (ages ``K_h .. 1`` before bin 0) followed by the observed counts, so ``n_α^{(j)}`` is
  ``hist[α, j + K_h]``.

The kernels return gradients with respect to the *derived constants* of §3.2 (``E^m``,
``τ_m``, ``E^s``, ``J``, ``κ``, ``E^θ``, ``Φ``, ``θ_a``, ``θ̃_a``, ``c``, ``Δu``); the chain
rule to the free parameters is in :mod:`.likelihood`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .._vecmath import vexp, vexpm1

__all__ = ["forward_expected_counts", "logp_and_gradient", "N_SCALAR_TAPE"]

#: LLVM fast-math flags of the step kernels: fused multiply-add and reassociated sums let the
#: cohort loops vectorise (the sums over cohorts change in the last bits, ~1e-15 relative);
#: no ``nnan``/``ninf``, so non-finite values are still detected.
_FASTMATH = {"contract", "reassoc", "nsz"}

#: Cap of the escape-rate exponent (spec §3.10; same value as :mod:`.meso`).
EXP_CAP = 300.0

# Per-step scalar tape fields (per population).
_S_H, _S_G, _S_LF, _S_X, _S_Z, _S_GN, _S_LFN, _S_LFND, _S_ARGF, _S_PF, _S_W, _S_XS, _S_Y, _S_ZS, _S_PL, _S_DEN = range(16)
N_SCALAR_TAPE = 16
# Per-cohort tape fields.
_T_M, _T_V, _T_U, _T_P, _T_DP, _T_LN, _T_LND, _T_ARG = range(8)
_N_COHORT_TAPE = 8


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _forward_step(
    k, tl, record,
    N, R, u_rest, u_th, u_r, c, Du, tau_m, Em, Eth, Phi, Es, J, kappa, D, k_ref, K, theta, theta_soft,
    dt, linear_switch, inputs, hist, Kh,
    m, v, u, lam, y, sc,
    thr, tape_c, tape_s, tape_y, nbar_out,
):  # pragma: no cover - compiled
    """One step ``k`` of M1–M17 for all populations (likelihood mode), in place.

    ``sc`` holds the per-population scalars ``(h, g, lam_free, x, z)`` (rows 0–4). With
    ``record`` the quantities the adjoint needs are written to the tapes at local index ``tl``.
    Writes ``n̄^(k)`` to ``nbar_out[k]``.
    """
    M = N.shape[0]
    half_dt = 0.5 * dt
    base = k + Kh  # column of bin k in hist
    for al in range(M):
        Nal = N[al]
        Ka = K[al]
        kr = k_ref[al]
        em = Em[al]
        ur = u_rest[al]
        # M1-M3
        dh = (1.0 - em) * R[al] * inputs[k, al]
        for be in range(M):
            A_hat = hist[be, base - D[al, be]] / (N[be] * dt)
            yy = y[al, be]
            if record:
                tape_y[tl, al, be] = yy
            dh += tau_m[al] * J[al, be] * (A_hat * (1.0 - em) + (yy - A_hat) * kappa[al, be])
            y[al, be] = A_hat + (yy - A_hat) * Es[be]
        # M4
        h_pre = sc[0, al]
        h = ur + (h_pre - ur) * em + dh
        sc[0, al] = h
        # M5-M6
        n_K = hist[al, base - Ka]
        g_pre = sc[1, al]
        g = Eth[al] * g_pre + (1.0 - Eth[al]) * n_K / (Nal * dt)
        sc[1, al] = g
        th_free = u_th[al] + Phi[al] * g
        # M8
        argf = (h - th_free) / Du[al]
        lfnd = 1.0 if argf <= EXP_CAP else 0.0
        argf = min(argf, EXP_CAP)
        lfn = c[al] * vexp(argf)
        lf_pre = sc[2, al]
        P_free = -vexpm1(-0.5 * dt * (lf_pre + lfn))
        sc[2, al] = lfn
        # M7 (suffix sum over ages, oldest first); thr[j] is the threshold of age K_α - j
        inv_N = 1.0 / Nal
        th_sum = th_free - theta_soft[al, Ka - 1] * n_K * inv_N
        n_fire = Ka - kr
        for j in range(n_fire):
            a = Ka - j
            thr[j] = th_sum + theta[al, a - 1]
            th_sum += theta_soft[al, a - 1] * hist[al, base - a] * inv_N
        # M9-M12, M15 (oldest to youngest). Branch-free so that LLVM vectorises it (selects,
        # vexp/vexpm1 from mechzoo.models._vecmath; reductions reassociated, see _FASTMATH).
        inv_Du = 1.0 / Du[al]
        cc = c[al]
        # Views of the live window [k, k + K_α): indices j >= 0 are provably in range, so Numba's
        # negative-index wraparound folds away and the loops below vectorise.
        mw = m[al, k:k + Ka]
        vw = v[al, k:k + Ka]
        uw = u[al, k:k + Ka]
        lw = lam[al, k:k + Ka]
        W = 0.0
        X = 0.0
        Y = 0.0
        Z = 0.0
        for j in range(n_fire):
            mm = mw[j]
            vv = vw[j]
            up = uw[j]
            uu = ur + (up - ur) * em + dh
            uw[j] = uu
            arg_raw = (uu - thr[j]) * inv_Du
            lnd = 1.0 if arg_raw <= EXP_CAP else 0.0
            arg = min(arg_raw, EXP_CAP)
            l_new = cc * vexp(arg)
            pi = half_dt * (l_new + lw[j])
            lin = linear_switch and pi <= 0.01
            P = pi if lin else -vexpm1(-pi)
            dP = 1.0 if lin else 1.0 - P
            lw[j] = l_new
            q = 1.0 - P
            vw[j] = q * q * vv + P * mm
            mw[j] = q * mm
            W += P * mm
            X += mm
            Y += P * vv
            Z += vv
            if record:
                tape_c[tl, al, _T_M, j] = mm
                tape_c[tl, al, _T_V, j] = vv
                tape_c[tl, al, _T_U, j] = up
                tape_c[tl, al, _T_P, j] = P
                tape_c[tl, al, _T_DP, j] = dP
                tape_c[tl, al, _T_LN, j] = l_new
                tape_c[tl, al, _T_LND, j] = l_new * lnd
                tape_c[tl, al, _T_ARG, j] = arg
        for j in range(n_fire, Ka):  # refractory ages: P = 0, potential clamped
            X += mw[j]
            Z += vw[j]
        # M13-M14, M16
        m_K = m[al, k]
        v_K = v[al, k]
        x = sc[3, al]
        z = sc[4, al]
        den = Z + z
        P_lambda = (Y + P_free * z) / den if den > 0.0 else 0.0
        nbar = W + P_free * x + P_lambda * (Nal - X - x)
        sc[4, al] = (1.0 - P_free) * (1.0 - P_free) * z + P_free * x + v_K
        sc[3, al] = (1.0 - P_free) * x + m_K
        nbar_out[k, al] = nbar
        if record:
            tape_s[tl, al, _S_H] = h_pre
            tape_s[tl, al, _S_G] = g_pre
            tape_s[tl, al, _S_LF] = lf_pre
            tape_s[tl, al, _S_X] = x
            tape_s[tl, al, _S_Z] = z
            tape_s[tl, al, _S_GN] = g
            tape_s[tl, al, _S_LFN] = lfn
            tape_s[tl, al, _S_LFND] = lfn * lfnd
            tape_s[tl, al, _S_ARGF] = argf
            tape_s[tl, al, _S_PF] = P_free
            tape_s[tl, al, _S_W] = W
            tape_s[tl, al, _S_XS] = X
            tape_s[tl, al, _S_Y] = Y
            tape_s[tl, al, _S_ZS] = Z
            tape_s[tl, al, _S_PL] = P_lambda
            tape_s[tl, al, _S_DEN] = den
        # M17: new cohort born in bin k (observed count; teacher forcing)
        inew = k + Ka
        m[al, inew] = hist[al, base]
        v[al, inew] = 0.0
        u[al, inew] = u_r[al]
        lam[al, inew] = 0.0


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _reverse_step(
    k, tl,
    N, R, u_rest, c, Du, tau_m, Em, Eth, Phi, Es, J, kappa, D, k_ref, K, dt, inputs, hist, Kh,
    tape_c, tape_s, tape_y, dl_dnbar,
    mb, vb, ub, lb, yb, scb, thr_b,
    g_Em, g_taum, g_Es, g_J, g_kappa, g_Eth, g_Phi, g_theta, g_theta_soft, g_c, g_Du,
):  # pragma: no cover - compiled
    """Adjoint of :func:`_forward_step` for step ``k`` (tape index ``tl``).

    On entry ``mb, vb, ub, lb`` (cohort adjoints, birth-time layout), ``yb`` and ``scb``
    (adjoints of ``h, g, lam_free, x, z``) are the adjoints of the state *after* step ``k``;
    on exit those of the state before it. Gradients with respect to the constants are
    accumulated into the ``g_*`` arrays (``g_c`` and ``g_Du`` accumulate ``Σ l̄ λ`` and
    ``Σ ārg·arg``; the factors ``1/c`` and ``-1/Δu`` are applied by the caller).
    """
    M = N.shape[0]
    half_dt = 0.5 * dt
    base = k + Kh
    for al in range(M):
        Nal = N[al]
        Ka = K[al]
        kr = k_ref[al]
        em = Em[al]
        ur = u_rest[al]
        inv_Du = 1.0 / Du[al]
        inv_N = 1.0 / Nal
        x = tape_s[tl, al, _S_X]
        z = tape_s[tl, al, _S_Z]
        Pf = tape_s[tl, al, _S_PF]
        X = tape_s[tl, al, _S_XS]
        PL = tape_s[tl, al, _S_PL]
        den = tape_s[tl, al, _S_DEN]
        nb = dl_dnbar[k, al]
        # M16 reversed: x' = (1-Pf) x + m'_K, z' = (1-Pf)^2 z + Pf x + v'_K
        xb_post = scb[3, al]
        zb_post = scb[4, al]
        Pfb = -xb_post * x + zb_post * (x - 2.0 * (1.0 - Pf) * z)
        xb = xb_post * (1.0 - Pf) + zb_post * Pf
        zb = zb_post * (1.0 - Pf) * (1.0 - Pf)
        mb[al, k] = xb_post
        vb[al, k] = zb_post
        ub[al, k] = 0.0
        lb[al, k] = 0.0
        # M14 reversed
        Wb = nb
        Pfb += nb * x
        xb += nb * (Pf - PL)
        PLb = nb * (Nal - X - x)
        Xb = -nb * PL
        # M13 reversed (safe division)
        Yb = 0.0
        Zb = 0.0
        if den > 0.0:
            Yb = PLb / den
            Pfb += PLb * z / den
            zb += PLb * Pf / den
            Zb = -PLb * PL / den
            zb += Zb
        # Cohorts, youngest to oldest: M12, M15, M11, M10, M9, M7 reversed
        n_fire = Ka - kr
        mbw = mb[al, k:k + Ka]  # views of the live window, see _forward_step
        vbw = vb[al, k:k + Ka]
        ubw = ub[al, k:k + Ka]
        lbw = lb[al, k:k + Ka]
        for j in range(Ka - 1, n_fire - 1, -1):  # refractory ages
            mbw[j] += Xb
            vbw[j] += Zb
        # vectorisable part: cohort adjoints and reductions (youngest to oldest order is not
        # needed here, every cohort is independent given Wb, Xb, Yb, Zb)
        acc_c = 0.0
        acc_Du = 0.0
        acc_Em = 0.0
        acc_dh = 0.0
        for j in range(n_fire):
            mm = tape_c[tl, al, _T_M, j]
            vv = tape_c[tl, al, _T_V, j]
            P = tape_c[tl, al, _T_P, j]
            q = 1.0 - P
            mbp = mbw[j]
            vbp = vbw[j]
            mbw[j] = mbp * q + (vbp + Wb) * P + Xb
            vbw[j] = vbp * q * q + Zb + Yb * P
            Pb = -mbp * mm + vbp * (mm - 2.0 * q * vv) + Wb * mm + Yb * vv
            pib = Pb * tape_c[tl, al, _T_DP, j]
            lnb = pib * half_dt + lbw[j]
            lbw[j] = pib * half_dt
            acc_c += lnb * tape_c[tl, al, _T_LN, j]
            argb = lnb * tape_c[tl, al, _T_LND, j]
            acc_Du += argb * tape_c[tl, al, _T_ARG, j]
            ub2 = ubw[j] + argb * inv_Du
            ubw[j] = ub2 * em
            acc_Em += ub2 * (tape_c[tl, al, _T_U, j] - ur)
            acc_dh += ub2
            thrb = -argb * inv_Du
            thr_b[j] = thrb
        # M7 reversed: threshold suffix sum (a scan over ages, sequential)
        cum = 0.0  # sum of threshold adjoints of younger firing ages
        for j in range(n_fire - 1, -1, -1):
            a = Ka - j
            g_theta[al, a - 1] += thr_b[j]
            g_theta_soft[al, a - 1] += cum * hist[al, base - a] * inv_N
            cum += thr_b[j]
        n_K = hist[al, base - Ka]
        g_theta_soft[al, Ka - 1] -= cum * n_K * inv_N
        thfb = cum
        # M8 reversed (free neurons)
        lfn = tape_s[tl, al, _S_LFN]
        pifb = Pfb * (1.0 - Pf)
        lfnb = scb[2, al] + pifb * half_dt
        scb[2, al] = pifb * half_dt
        acc_c += lfnb * lfn
        argfb = lfnb * tape_s[tl, al, _S_LFND]
        acc_Du += argfb * tape_s[tl, al, _S_ARGF]
        hb = scb[0, al] + argfb * inv_Du
        thfb -= argfb * inv_Du
        # M6, M5 reversed
        gb = scb[1, al] + thfb * Phi[al]
        g_Phi[al] += thfb * tape_s[tl, al, _S_GN]
        scb[1, al] = gb * Eth[al]
        g_Eth[al] += gb * (tape_s[tl, al, _S_G] - n_K / (Nal * dt))
        # M4 reversed
        scb[0, al] = hb * em
        acc_Em += hb * (tape_s[tl, al, _S_H] - ur)
        dhb = hb + acc_dh
        # M3, M2 reversed
        acc_Em -= dhb * R[al] * inputs[k, al]
        for be in range(M):
            A_hat = hist[be, base - D[al, be]] / (N[be] * dt)
            yy = tape_y[tl, al, be]
            ybp = yb[al, be]
            g_Es[be] += ybp * (yy - A_hat)
            term = A_hat * (1.0 - em) + (yy - A_hat) * kappa[al, be]
            g_taum[al] += dhb * J[al, be] * term
            g_J[al, be] += dhb * tau_m[al] * term
            g_kappa[al, be] += dhb * tau_m[al] * J[al, be] * (yy - A_hat)
            acc_Em -= dhb * tau_m[al] * J[al, be] * A_hat
            yb[al, be] = ybp * Es[be] + dhb * tau_m[al] * J[al, be] * kappa[al, be]
        g_Em[al] += acc_Em
        g_c[al] += acc_c
        g_Du[al] += acc_Du
        scb[3, al] = xb
        scb[4, al] = zb


@njit(cache=True, nogil=True)
def _binomial_terms(nbar, hist, Kh, N, k, eps, burn, dl_dnbar):  # pragma: no cover - compiled
    """Sum over populations of ``n log p + (N - n) log1p(-p)`` at step ``k`` (spec §4.1) and
    its derivative with respect to ``n̄`` (zero where the probability is clipped or ``k < burn``)."""
    M = N.shape[0]
    total = 0.0
    for al in range(M):
        Nal = N[al]
        n = hist[al, k + Kh]
        p_raw = nbar[k, al] / Nal
        p = p_raw
        if p < eps:
            p = eps
        elif p > 1.0 - eps:
            p = 1.0 - eps
        if k >= burn:
            total += n * np.log(p) + (Nal - n) * np.log1p(-p)
            if p_raw >= eps and p_raw <= 1.0 - eps:
                dl_dnbar[k, al] = (n / p - (Nal - n) / (1.0 - p)) / Nal
            else:
                dl_dnbar[k, al] = 0.0
        else:
            dl_dnbar[k, al] = 0.0
    return total


@njit(cache=True, nogil=True)
def _init_linear(m0, v0, u0, lam0, K, L):  # pragma: no cover - compiled
    M = m0.shape[0]
    m = np.zeros((M, L))
    v = np.zeros((M, L))
    u = np.zeros((M, L))
    lam = np.zeros((M, L))
    for al in range(M):
        Ka = K[al]
        for a in range(1, Ka + 1):
            i = Ka - a
            m[al, i] = m0[al, a - 1]
            v[al, i] = v0[al, a - 1]
            u[al, i] = u0[al, a - 1]
            lam[al, i] = lam0[al, a - 1]
    return m, v, u, lam


@njit(cache=True, nogil=True)
def _run(
    N, R, u_rest, u_th, u_r, c, Du, tau_m, Em, Eth, Phi, Es, J, kappa, D, k_ref, K, theta, theta_soft,
    dt, linear_switch, eps, burn, inputs, hist, Kh,
    m0, v0, u0, lam0, y0, sc0, compute_grad, checkpoint,
    nbar,
    g_Em, g_taum, g_Es, g_J, g_kappa, g_Eth, g_Phi, g_theta, g_theta_soft, g_c, g_Du,
):  # pragma: no cover - compiled
    """Forward pass (log-likelihood, ``n̄``) and, with ``compute_grad``, the checkpointed reverse sweep.

    Returns ``(sum of binomial terms without the constant, ok)``; ``ok`` is False if ``n̄``
    became non-finite (then no gradient is computed).
    """
    T = inputs.shape[0]
    M = N.shape[0]
    Kmax = theta.shape[1]
    L = T + Kmax + 1
    m, v, u, lam = _init_linear(m0, v0, u0, lam0, K, L)
    y = y0.copy()
    sc = sc0.copy()
    thr = np.empty(Kmax)
    C = checkpoint
    n_ck = (T + C - 1) // C
    dummy_c = np.empty((1, 1, 1, 1))
    dummy_s = np.empty((1, 1, 1))
    dummy_y = np.empty((1, 1, 1))
    if compute_grad:
        ck_c = np.empty((n_ck, 4, M, Kmax))
        ck_y = np.empty((n_ck, M, M))
        ck_s = np.empty((n_ck, 5, M))
    else:
        ck_c = np.empty((1, 4, 1, 1))
        ck_y = np.empty((1, 1, 1))
        ck_s = np.empty((1, 1, 1))
    dl = np.zeros((T, M))
    total = 0.0
    for k in range(T):
        if compute_grad and k % C == 0:
            ic = k // C
            for al in range(M):
                for j in range(K[al]):
                    ck_c[ic, 0, al, j] = m[al, k + j]
                    ck_c[ic, 1, al, j] = v[al, k + j]
                    ck_c[ic, 2, al, j] = u[al, k + j]
                    ck_c[ic, 3, al, j] = lam[al, k + j]
            ck_y[ic] = y
            ck_s[ic] = sc
        _forward_step(
            k, 0, False,
            N, R, u_rest, u_th, u_r, c, Du, tau_m, Em, Eth, Phi, Es, J, kappa, D, k_ref, K, theta, theta_soft,
            dt, linear_switch, inputs, hist, Kh,
            m, v, u, lam, y, sc, thr, dummy_c, dummy_s, dummy_y, nbar,
        )
        for al in range(M):
            if not np.isfinite(nbar[k, al]):
                return -np.inf, False
        total += _binomial_terms(nbar, hist, Kh, N, k, eps, burn, dl)
    if not compute_grad:
        return total, True
    tape_c = np.empty((C, M, _N_COHORT_TAPE, Kmax))
    tape_s = np.empty((C, M, N_SCALAR_TAPE))
    tape_y = np.empty((C, M, M))
    mb = np.zeros((M, L))
    vb = np.zeros((M, L))
    ub = np.zeros((M, L))
    lb = np.zeros((M, L))
    yb = np.zeros((M, M))
    scb = np.zeros((5, M))
    scratch_nbar = np.empty((T, M))
    for ic in range(n_ck - 1, -1, -1):
        k0 = ic * C
        k1 = min(T, k0 + C)
        for al in range(M):
            for j in range(K[al]):
                m[al, k0 + j] = ck_c[ic, 0, al, j]
                v[al, k0 + j] = ck_c[ic, 1, al, j]
                u[al, k0 + j] = ck_c[ic, 2, al, j]
                lam[al, k0 + j] = ck_c[ic, 3, al, j]
        y[:, :] = ck_y[ic]
        sc[:, :] = ck_s[ic]
        for k in range(k0, k1):
            _forward_step(
                k, k - k0, True,
                N, R, u_rest, u_th, u_r, c, Du, tau_m, Em, Eth, Phi, Es, J, kappa, D, k_ref, K, theta, theta_soft,
                dt, linear_switch, inputs, hist, Kh,
                m, v, u, lam, y, sc, thr, tape_c, tape_s, tape_y, scratch_nbar,
            )
        for k in range(k1 - 1, k0 - 1, -1):
            _reverse_step(
                k, k - k0,
                N, R, u_rest, c, Du, tau_m, Em, Eth, Phi, Es, J, kappa, D, k_ref, K, dt, inputs, hist, Kh,
                tape_c, tape_s, tape_y, dl,
                mb, vb, ub, lb, yb, scb, thr,
                g_Em, g_taum, g_Es, g_J, g_kappa, g_Eth, g_Phi, g_theta, g_theta_soft, g_c, g_Du,
            )
    return total, True


def _kernel_arguments(consts: dict, inputs: np.ndarray, hist: np.ndarray, Kh: int, state: dict, burn: int,
                      dt: float, linear_switch: bool, eps: float) -> tuple:
    pop = consts["pop"]
    f = np.ascontiguousarray
    return (
        f(pop[0]), f(pop[1]), f(pop[2]), f(pop[3]), f(pop[4]), f(pop[5]), f(pop[6]), f(pop[7]), f(pop[8]),
        f(pop[9]), f(pop[10]), f(consts["Es"]), f(consts["J"]), f(consts["kappa"]), f(consts["D"].astype(np.int64)),
        f(consts["k_ref"].astype(np.int64)), f(consts["K"].astype(np.int64)), f(consts["theta"]), f(consts["theta_soft"]),
        float(dt), bool(linear_switch), float(eps), int(burn), f(inputs, dtype=np.float64), f(hist), int(Kh),
        f(state["m"]), f(state["v"]), f(state["u"]), f(state["lam"]), f(state["y"]), f(state["sc"]),
    )


def forward_expected_counts(consts, inputs, hist, Kh, state, *, dt, linear_switch, eps=1e-8, burn=0):
    """Expected counts ``n̄`` (T, M) and the summed binomial terms from the likelihood kernel (no gradient)."""
    args = _kernel_arguments(consts, inputs, hist, Kh, state, burn, dt, linear_switch, eps)
    T, M = inputs.shape
    Kmax = consts["theta"].shape[1]
    nbar = np.full((T, M), np.nan)
    g = _gradient_buffers(M, Kmax)
    total, ok = _run(*args, False, 32, nbar, *g)
    return nbar, total, ok


def _gradient_buffers(M: int, Kmax: int) -> tuple:
    return (
        np.zeros(M), np.zeros(M), np.zeros(M), np.zeros((M, M)), np.zeros((M, M)), np.zeros(M), np.zeros(M),
        np.zeros((M, Kmax)), np.zeros((M, Kmax)), np.zeros(M), np.zeros(M),
    )


GRADIENT_NAMES = ("Em", "tau_m", "Es", "J", "kappa", "Eth", "Phi", "theta", "theta_soft", "c_acc", "Du_acc")


def logp_and_gradient(consts, inputs, hist, Kh, state, *, dt, linear_switch, eps, burn, checkpoint=32):
    """Summed binomial terms and their gradient with respect to the derived constants.

    Returns
    -------
    total : float
        ``Σ_{k >= burn} Σ_α n log p̃ + (N - n) log1p(-p̃)`` (spec §4.1 without the binomial
        coefficient), ``-inf`` if ``n̄`` became non-finite.
    nbar : numpy.ndarray (T, M)
    grads : dict or None
        Keys :data:`GRADIENT_NAMES` (``c_acc = Σ l̄ λ`` and ``Du_acc = Σ ārg·arg``, see
        :func:`_reverse_step`); None if the forward pass failed.
    """
    args = _kernel_arguments(consts, inputs, hist, Kh, state, burn, dt, linear_switch, eps)
    T, M = inputs.shape
    Kmax = consts["theta"].shape[1]
    nbar = np.full((T, M), np.nan)
    g = _gradient_buffers(M, Kmax)
    total, ok = _run(*args, True, int(checkpoint), nbar, *g)
    if not ok:
        return -np.inf, nbar, None
    return total, nbar, dict(zip(GRADIENT_NAMES, g))
