"""Baseline: the mesoGIF log-likelihood as a plain PyTensor ``scan`` with ``pytensor.grad``.

The straightforward implementation (what René et al. did with Theano, spec §3.14 option (i)):
the canonical step M1–M17 (§3.4) written with PyTensor tensor operations on age-ordered
``(M, K)`` arrays, the age shift M17 by concatenation, one common ``K`` for all populations
(padding to the largest), and reverse-mode differentiation by PyTensor. It exists as the named
baseline of :func:`.likelihood.benchmark_likelihood` (``notes/mesogif-likelihood-speed.md``
measured ≈ 9 s per gradient for 20 s of data) and as an independent check of the hand-derived
adjoint (same value and gradient on short data). Not for production use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .likelihood import FREE_PARAMETERS, MesoGIFLikelihood

__all__ = ["ScanLikelihood"]

_EXP_CAP = 300.0


class ScanLikelihood:
    """Log-likelihood and gradient by PyTensor ``scan`` + ``pytensor.grad`` (baseline).

    Parameters
    ----------
    counts : array_like (T, M)
        Observed counts.
    config : mapping
        As for :class:`.likelihood.MesoGIFLikelihood`; ``likelihood_K`` must give the same K
        for every population (e.g. 1000), and ``init`` must be ``"silent"``.
    mode : str, optional
        PyTensor compilation mode (default: PyTensor's default, the Numba backend in PyTensor 3).
    """

    def __init__(self, counts: Any, *, config: Mapping, mode: str | None = None):
        import pytensor
        import pytensor.tensor as pt

        setup = MesoGIFLikelihood(counts, config=config)
        if len(set(setup.K.tolist())) != 1:
            raise ValueError(f"the scan baseline needs one K for all populations, got {setup.K.tolist()}")
        if setup.init != "silent":
            raise ValueError("the scan baseline implements the silent initialisation only")
        self.setup = setup
        ref = setup.reference
        M, T, K, dt = setup.M, setup.T, int(setup.K[0]), setup.dt
        N = ref["N"]
        D = np.rint(ref["delay"] / dt).astype(int)
        k_ref = int(np.rint(ref["t_ref"][0] / dt))
        if np.any(np.rint(ref["t_ref"] / dt) != k_ref):
            raise ValueError("the scan baseline assumes the same refractory period in every population")
        hist, Kh = setup.hist, setup.Kh
        ks = np.arange(T)
        A_hat = np.empty((T, M, M))
        for al in range(M):
            for be in range(M):
                A_hat[:, al, be] = hist[be, ks - D[al, be] + Kh] / (N[be] * dt)
        counts_f = setup.counts
        summed = (ks >= setup.burn).astype(np.float64)

        self.names = list(FREE_PARAMETERS)
        exc = setup.exc
        w = pt.dmatrix("w")
        tau_m, c, Du, tau_s = pt.dvector("tau_m"), pt.dvector("c"), pt.dvector("Delta_u"), pt.dvector("tau_s")
        J_theta_exc, tau_theta_exc = pt.dvector("J_theta"), pt.dvector("tau_theta")
        J_theta = pt.set_subtensor(pt.as_tensor_variable(ref["J_theta"])[exc], J_theta_exc)
        tau_theta = pt.set_subtensor(pt.as_tensor_variable(ref["tau_theta"])[exc], tau_theta_exc)
        self.inputs = [w, tau_m, c, Du, tau_s, J_theta_exc, tau_theta_exc]

        u_rest, u_th, u_r, R = (pt.as_tensor_variable(ref[k]) for k in ("u_rest", "u_th", "u_r", "R"))
        Nv = pt.as_tensor_variable(N)
        Em = pt.exp(-dt / tau_m)
        Es = pt.exp(-dt / tau_s)
        Eth = pt.exp(-dt / tau_theta)
        J = pt.as_tensor_variable(ref["p"] * N[None, :]) * w
        kappa = tau_s[None, :] * (Es[None, :] - Em[:, None]) / (tau_s[None, :] - tau_m[:, None])
        ages = pt.as_tensor_variable(np.arange(1, K + 1) * dt)
        theta = (J_theta / tau_theta)[:, None] * pt.exp(-ages[None, :] / tau_theta[:, None])
        theta_soft = -Du[:, None] * pt.expm1(-theta / Du[:, None])
        Phi = J_theta * pt.exp(-K * dt / tau_theta)
        fire = pt.as_tensor_variable((np.arange(1, K + 1) > k_ref).astype(np.float64))[None, :]
        linear = bool(setup.linear_switch)
        eps = setup.eps

        def step(I_k, n_k, A_k, s_k, y, h, g, lf, x, z, m, v, u, lam, H):
            dh = (1.0 - Em) * R * I_k + tau_m * pt.sum(J * (A_k * (1.0 - Em)[:, None] + (y - A_k) * kappa), axis=1)
            y_new = A_k + (y - A_k) * Es[None, :]
            h_new = u_rest + (h - u_rest) * Em + dh
            n_K = H[:, K - 1]
            g_new = Eth * g + (1.0 - Eth) * n_K / (Nv * dt)
            th_free = u_th + Phi * g_new
            lf_new = c * pt.exp(pt.minimum((h_new - th_free) / Du, _EXP_CAP))
            P_free = -pt.expm1(-0.5 * dt * (lf + lf_new))
            Hs = theta_soft * H / Nv[:, None]
            suffix = pt.cumsum(Hs[:, ::-1], axis=1)[:, ::-1] - Hs
            thr = (th_free - theta_soft[:, K - 1] * n_K / Nv)[:, None] + theta + suffix
            u_new = fire * (u_rest[:, None] + (u - u_rest[:, None]) * Em[:, None] + dh[:, None]) + (1.0 - fire) * u
            l_new = fire * c[:, None] * pt.exp(pt.minimum((u_new - thr) / Du[:, None], _EXP_CAP))
            pi = 0.5 * dt * (l_new + lam)
            P_exact = -pt.expm1(-pi)
            P = fire * (pt.switch(pi <= 0.01, pi, P_exact) if linear else P_exact)
            W = pt.sum(P * m, axis=1)
            X = pt.sum(m, axis=1)
            Y = pt.sum(P * v, axis=1)
            Z = pt.sum(v, axis=1)
            m_dec = (1.0 - P) * m
            v_dec = (1.0 - P) ** 2 * v + P * m
            den = Z + z
            P_lambda = pt.switch(den > 0, (Y + P_free * z) / pt.switch(den > 0, den, 1.0), 0.0)
            nbar = W + P_free * x + P_lambda * (Nv - X - x)
            z_new = (1.0 - P_free) ** 2 * z + P_free * x + v_dec[:, K - 1]
            x_new = (1.0 - P_free) * x + m_dec[:, K - 1]
            p = pt.clip(nbar / Nv, eps, 1.0 - eps)
            term = s_k * pt.sum(n_k * pt.log(p) + (Nv - n_k) * pt.log1p(-p))
            col = lambda first, arr: pt.concatenate([first[:, None], arr[:, : K - 1]], axis=1)
            zeros = pt.zeros_like(n_k)
            return (
                y_new, h_new, g_new, lf_new, x_new, z_new,
                col(n_k, m_dec), col(zeros, v_dec), col(u_r, u_new), col(zeros, l_new), col(n_k, H), term,
            )

        st = setup.state
        init = [
            pt.as_tensor_variable(st["y"]), pt.as_tensor_variable(st["sc"][0]), pt.as_tensor_variable(st["sc"][1]),
            pt.as_tensor_variable(st["sc"][2]), pt.as_tensor_variable(st["sc"][3]), pt.as_tensor_variable(st["sc"][4]),
            pt.as_tensor_variable(st["m"][:, :K]), pt.as_tensor_variable(st["v"][:, :K]),
            pt.as_tensor_variable(st["u"][:, :K]), pt.as_tensor_variable(st["lam"][:, :K]),
            pt.as_tensor_variable(hist[:, Kh - 1 :: -1][:, :K].copy()),
        ]
        outputs = pytensor.scan(
            step,
            sequences=[pt.as_tensor_variable(setup.inputs), pt.as_tensor_variable(counts_f),
                       pt.as_tensor_variable(A_hat), pt.as_tensor_variable(summed)],
            outputs_info=init + [None],
            return_updates=False,
        )
        logp = pt.sum(outputs[-1]) + setup.log_binomial
        grads = pytensor.grad(logp, self.inputs)
        kwargs = {} if mode is None else {"mode": mode}
        self._value = pytensor.function(self.inputs, logp, **kwargs)
        self._value_and_grad = pytensor.function(self.inputs, [logp, *grads], **kwargs)

    def _args(self, free: Mapping[str, Any]) -> list[np.ndarray]:
        full = self.setup.full_parameters(free)
        exc = self.setup.exc
        return [full["w"], full["tau_m"], full["c"], full["Delta_u"], full["tau_s"], full["J_theta"][exc],
                full["tau_theta"][exc]]

    def value(self, free: Mapping[str, Any]) -> float:
        """Log-likelihood (spec §4.1, full binomial coefficient)."""
        return float(self._value(*self._args(free)))

    def value_and_grad(self, free: Mapping[str, Any]) -> tuple[float, dict[str, np.ndarray]]:
        """Log-likelihood and its gradient by ``pytensor.grad`` through the scan (all free parameters)."""
        out = self._value_and_grad(*self._args(free))
        return float(out[0]), {k: np.asarray(g) for k, g in zip(self.names, out[1:])}
