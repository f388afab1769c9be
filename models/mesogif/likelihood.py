"""mesoGIF log-likelihood with an exact gradient, as NumPy functions and as a PyTensor ``Op``.

The log-likelihood is spec ``specs/mesogif.md`` §4.1: the binomial log-pmf of the observed
counts given the teacher-forced mesoscopic state (§3.14, §4.3),

.. math::

    \\log\\mathcal L(\\eta)=\\sum_{k\\ge k_{\\mathrm{burn}}}\\sum_\\alpha\\Big[\\log\\binom{N_\\alpha}{n^{(k)}_\\alpha}
    + n^{(k)}_\\alpha\\log\\tilde p^{(k)}_\\alpha + (N_\\alpha-n^{(k)}_\\alpha)\\log\\big(1-\\tilde p^{(k)}_\\alpha\\big)\\Big],
    \\qquad \\tilde p = \\mathrm{clip}(\\bar n/N, 10^{-8}, 1-10^{-8}),

in float64, with the full binomial coefficient kept (the reporting convention of §4.2). The
first ``burn_in_s`` seconds (default 10 s, §4.3) are advanced but not summed. ``n̄`` comes from
the canonical step M1–M17 (§3.4) evaluated by the Numba kernel of :mod:`.adjoint`, which is
tested to reproduce :func:`.meso.expected_counts` (the simulator's code) to round-off.

The gradient with respect to the free parameters (``w`` mV, ``tau_m`` s, ``c`` Hz,
``Delta_u`` mV, ``tau_s`` s, ``J_theta`` mV·s and ``tau_theta`` s of the excitatory
populations: 14 for 2 populations, 36 for 4) is the exact reverse-mode derivative of the same
discrete recursion (hand-derived adjoint with checkpointing, :mod:`.adjoint`), chained here
through the derived constants of §3.2.

Choices (documented so that numbers can be compared):

* **K is fixed per likelihood**, by default the per-population Schwalger rule (§3.6,
  ``"auto-per-population"``: 693 / 50 bins for the 2-pop model) evaluated at the *reference*
  parameters (ground truth with ``config["fixed"]``), not at the parameters being evaluated —
  otherwise the likelihood would jump when the rule's integer changes. Override with the config
  key ``likelihood_K`` (int, list, ``"auto"`` or ``"auto-per-population"``).
* ``linear_switch`` (M11) follows the config key of the simulator (default True, as the
  simulator), so that simulator and likelihood are the same model. The switch makes the
  log-likelihood jump by tiny amounts where a cohort's ``π`` crosses 0.01; for samplers set
  ``linear_switch = false`` in the config (exact ``-expm1(-π)`` everywhere, spec §9 item 17).
* Initialisation: ``"silent"`` (default) or ``"synchronous"``; ``"stationary"`` depends on the
  parameters through a root finder and is not differentiated, so it is refused here.
* Only the canonical variant (§3.4) has an adjoint; ``variant = "R"`` is refused.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import gammaln

from . import adjoint, meso, parameters, stimuli

__all__ = [
    "FREE_PARAMETERS",
    "DEFAULT_BURN_IN_S",
    "MesoGIFLikelihood",
    "loglik_and_grad",
    "loglik_value",
    "pytensor_loglik",
    "benchmark_likelihood",
]

#: Names of the free parameters of the zoo entries (spec §5.1, §5.2), in the order of the flat vector.
FREE_PARAMETERS: tuple[str, ...] = ("w", "tau_m", "c", "Delta_u", "tau_s", "J_theta", "tau_theta")
#: Data burn-in (spec §4.3), s.
DEFAULT_BURN_IN_S = 10.0
_POSITIVE = ("tau_m", "c", "Delta_u", "tau_s", "tau_theta")
_EXCITATORY_ONLY = ("J_theta", "tau_theta")


# --------------------------------------------------------------------------------------------
# Derivatives of the derived constants (spec §3.2)
# --------------------------------------------------------------------------------------------
def _decay_derivatives(tau: np.ndarray, dt: float) -> tuple[np.ndarray, ...]:
    """``E(τ) = exp(-dt/τ)`` and its first four derivatives with respect to ``τ``.

    For ``τ`` so small that ``E`` underflows to 0 (extreme prior draws), every derivative is 0
    too (their limit), instead of ``0 · inf``."""
    s = dt
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        E = np.exp(-dt / tau)
        d1 = E * s / tau**2
        d2 = E * s * (s - 2.0 * tau) / tau**4
        d3 = E * s * (s**2 - 6.0 * s * tau + 6.0 * tau**2) / tau**6
        d4 = E * s * (s**3 - 12.0 * s**2 * tau + 36.0 * s * tau**2 - 24.0 * tau**3) / tau**8
    vanished = E == 0.0
    d1, d2, d3, d4 = (np.where(vanished, 0.0, d) for d in (d1, d2, d3, d4))
    return E, d1, d2, d3, d4


def kappa_partials(tau_s: np.ndarray, tau_m: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Partial derivatives of ``κ_αβ = τ_s,β (E^s_β - E^m_α)/(τ_s,β - τ_m,α)`` (spec §3.2).

    Written with the divided difference ``F = (E(τ_s) - E(τ_m))/(τ_s - τ_m)``, ``κ = τ_s F``.
    For ``|τ_s - τ_m| < 10^-3 τ_m`` the second-order Taylor expansion of ``F`` and its
    partials around ``τ_m`` is used (the exact quotients lose digits there).

    Parameters
    ----------
    tau_s : numpy.ndarray, shape (1, M)
        Synaptic time constants by source population (s).
    tau_m : numpy.ndarray, shape (M, 1)
        Membrane time constants by target population (s).
    dt : float
        Time step (s).

    Returns
    -------
    dkappa_dtau_s, dkappa_dtau_m : numpy.ndarray, shape (M, M)
        In 1/s.
    """
    tau_s = np.broadcast_to(tau_s, np.broadcast_shapes(tau_s.shape, tau_m.shape))
    tau_m = np.broadcast_to(tau_m, tau_s.shape)
    delta = tau_s - tau_m
    near = np.abs(delta) < 1e-3 * tau_m
    safe = np.where(near, 1.0, delta)
    Es, Es1, *_ = _decay_derivatives(tau_s, dt)
    Em, Em1, Em2, Em3, Em4 = _decay_derivatives(tau_m, dt)
    F_exact = (Es - Em) / safe
    dF_ds_exact = (Es1 - F_exact) / safe
    dF_dm_exact = (F_exact - Em1) / safe
    F_near = Em1 + Em2 * delta / 2.0 + Em3 * delta**2 / 6.0
    dF_ds_near = Em2 / 2.0 + Em3 * delta / 3.0 + Em4 * delta**2 / 8.0
    dF_dm_near = Em2 / 2.0 + Em3 * delta / 6.0 + Em4 * delta**2 / 24.0
    F = np.where(near, F_near, F_exact)
    dF_ds = np.where(near, dF_ds_near, dF_ds_exact)
    dF_dm = np.where(near, dF_dm_near, dF_dm_exact)
    return F + tau_s * dF_ds, tau_s * dF_dm


# --------------------------------------------------------------------------------------------
# The likelihood object
# --------------------------------------------------------------------------------------------
def _reference_parameters(config: Mapping) -> dict[str, np.ndarray]:
    from . import full_parameters

    full = full_parameters({}, config, 1)
    return {k: v[0] for k, v in full.items()}


class MesoGIFLikelihood:
    """Log-likelihood of observed counts under the mesoGIF model, with its exact gradient.

    Built once per data set and configuration: it validates the data, builds the stimulus,
    fixes ``K`` and the burn-in, and precomputes the constant binomial coefficients.

    Parameters
    ----------
    counts : array_like of int, shape (T, M)
        Observed spike counts per bin, ``0 <= n <= N_α``.
    config : mapping
        Model configuration of the zoo adapter (see :mod:`mechzoo.models.mesogif`):
        ``populations`` (2 or 4), ``stimulus`` (or ``inputs``, an explicit ``(T, M)`` current in
        mA), optional ``duration_s`` (must then equal ``T dt``), ``dt`` (default 1e-3 s),
        ``fixed``, ``init`` (``"silent"``), ``linear_switch`` (True), and for the likelihood
        ``burn_in_s`` (default 10 s, spec §4.3), ``likelihood_K`` (default
        ``"auto-per-population"``, evaluated at the reference parameters) and
        ``checkpoint`` (steps per checkpoint of the reverse sweep, default 32).

    Raises
    ------
    ValueError
        For malformed counts (wrong shape, NaN, negative, non-integer, above ``N``), data not
        longer than the burn-in, or unsupported options.
    """

    def __init__(self, counts: Any, *, config: Mapping):
        if not isinstance(config, Mapping):
            raise ValueError(f"config must be a mapping, got {type(config).__name__}")
        if "populations" not in config:
            raise ValueError("config needs 'populations' (2 or 4)")
        self.config = dict(config)
        self.populations = int(config["populations"])
        names = parameters.population_names(self.populations)
        M = len(names)
        self.M = M
        self.dt = float(config.get("dt", 1e-3))
        if not (np.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"config 'dt' must be a positive number of seconds, got {self.dt!r}")
        variant = config.get("variant", "canonical")
        if variant != "canonical":
            raise ValueError(
                f"the likelihood gradient is implemented for variant='canonical' (spec §3.4) only, got {variant!r}"
            )
        self.init = config.get("init", "silent")
        if self.init not in ("silent", "synchronous"):
            raise ValueError(
                f"likelihood init must be 'silent' or 'synchronous' (spec §3.9); got {self.init!r} "
                "('stationary' depends on the parameters through a root finder and is not differentiated)"
            )
        self.linear_switch = bool(config.get("linear_switch", True))
        self.checkpoint = int(config.get("checkpoint", 32))
        if self.checkpoint < 1:
            raise ValueError(f"config 'checkpoint' must be a positive number of steps, got {self.checkpoint}")
        self.eps = float(meso.PROBABILITY_EPS)
        self.reference = _reference_parameters(self.config)
        self.exc = parameters.excitatory_populations(self.populations)
        N = self.reference["N"]
        # ---- counts
        arr = np.asarray(counts)
        if arr.dtype == object:
            raise ValueError("counts must be a numeric array of shape (T, M)")
        if arr.ndim != 2 or arr.shape[1] != M:
            raise ValueError(
                f"counts must have shape (T, M) = (time, population) with M={M} ({', '.join(names)}); got shape {arr.shape}"
            )
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError("counts contain NaN or infinite values; spike counts must be finite integers")
        if np.any(arr < 0):
            raise ValueError("counts contain negative values; spike counts per bin must be >= 0")
        if np.any(arr != np.rint(arr)):
            raise ValueError("counts must be integers (spike counts per bin)")
        over = arr > N[None, :]
        if np.any(over):
            alpha = int(np.nonzero(over.any(axis=0))[0][0])
            raise ValueError(
                f"counts exceed the population size: population {names[alpha]!r} has N={N[alpha]:g} neurons "
                f"but up to {arr[:, alpha].max():g} spikes per bin"
            )
        T = arr.shape[0]
        self.T = T
        # ---- burn-in
        burn_s = float(config.get("burn_in_s", DEFAULT_BURN_IN_S))
        if not (np.isfinite(burn_s) and burn_s >= 0):
            raise ValueError(f"config 'burn_in_s' must be a non-negative number of seconds, got {burn_s!r}")
        self.burn = int(round(burn_s / self.dt))
        if T <= self.burn:
            raise ValueError(
                f"data are {T * self.dt:g} s long ({T} bins) but the burn-in is {burn_s:g} s (spec §4.3): "
                "no bin is left for the likelihood; give longer data or a shorter config 'burn_in_s'"
            )
        # ---- inputs
        if "duration_s" in config:
            T_cfg = int(round(float(config["duration_s"]) / self.dt))
            if T_cfg != T:
                raise ValueError(
                    f"config 'duration_s'={config['duration_s']!r} s ({T_cfg} bins) does not match the data length "
                    f"({T} bins): the stimulus must be the one that produced the data"
                )
        if "inputs" in config:
            inputs = np.asarray(config["inputs"], dtype=np.float64)
            if inputs.shape != (T, M):
                raise ValueError(f"config 'inputs' must have shape (T, M) = {(T, M)}, got {inputs.shape}")
        elif "stimulus" in config:
            inputs = stimuli.make_stimulus(config["stimulus"], populations=self.populations, duration_s=T * self.dt, dt=self.dt)
        else:
            raise ValueError("config needs 'stimulus' (e.g. {'kind': 'sine', 'seed': 0}) or 'inputs' (T, M) in mA")
        if not np.all(np.isfinite(inputs)):
            raise ValueError("inputs contain NaN or infinite values")
        self.inputs = np.ascontiguousarray(inputs)
        self.counts = arr
        # ---- K and history
        K_rule = config.get("likelihood_K", "auto-per-population")
        self.K = meso.history_size(self.reference, K_rule, dt=self.dt)
        state = meso.initial_state(meso.broadcast_parameters(self.reference, 1), K=self.K, dt=self.dt, init=self.init)
        H0 = state["H"][0]  # (M, Kh), index a - 1 = age a
        self.Kh = H0.shape[1]
        hist = np.empty((M, self.Kh + T))
        hist[:, : self.Kh] = H0[:, ::-1]
        hist[:, self.Kh :] = arr.T
        self.hist = np.ascontiguousarray(hist)
        sc = np.stack([state["h"][0], state["g"][0], state["lam_free"][0], state["x"][0], state["z"][0]])
        self.state = {
            "m": state["m"][0], "v": state["v"][0], "u": state["u"][0], "lam": state["lam"][0],
            "y": state["y"][0], "sc": sc,
        }
        import hashlib

        digest = hashlib.sha256(self.hist.tobytes())
        digest.update(self.inputs.tobytes())
        digest.update(repr(sorted((k, repr(v)) for k, v in self.config.items() if k != "inputs")).encode())
        #: Content hash of data, inputs and configuration (identifies the Op in PyTensor graphs).
        self.data_key = digest.hexdigest()[:16]
        summed = arr[self.burn :]
        self.log_binomial = float(np.sum(gammaln(N + 1.0) - gammaln(summed + 1.0) - gammaln(N - summed + 1.0)))

    # ---------------------------------------------------------------- parameters
    def full_parameters(self, free: Mapping[str, Any], *, strict: bool = True) -> dict[str, np.ndarray] | None:
        """Reference parameters with the given free ones inserted (single set, no batch axis).

        ``J_theta`` and ``tau_theta`` may have shape ``(n_exc,)`` (excitatory populations) or
        ``(M,)``. Returns None for values outside the support if ``strict`` is False.
        """
        full = {k: v.copy() for k, v in self.reference.items()}
        M = self.M
        for key, value in free.items():
            if key not in FREE_PARAMETERS:
                raise ValueError(f"unknown free parameter {key!r}; the mesoGIF likelihood takes {list(FREE_PARAMETERS)}")
            arr = np.asarray(value, dtype=np.float64)
            if key in _EXCITATORY_ONLY and arr.shape == (len(self.exc),) and len(self.exc) != M:
                full[key][self.exc] = arr
            elif arr.shape == full[key].shape:
                full[key] = arr.copy()
            else:
                hint = f" or ({len(self.exc)},) (excitatory populations)" if key in _EXCITATORY_ONLY else ""
                raise ValueError(f"free parameter {key!r} has shape {arr.shape}, expected {full[key].shape}{hint}")
            bad = not np.all(np.isfinite(arr)) or (key in _POSITIVE and np.any(arr <= 0)) or (key == "J_theta" and np.any(arr < 0))
            if bad:
                if strict:
                    raise ValueError(
                        f"free parameter {key!r} = {arr.tolist()} is outside its support "
                        f"({'finite and > 0' if key in _POSITIVE else 'finite and >= 0' if key == 'J_theta' else 'finite'})"
                    )
                return None
        return full

    def _constants(self, full: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batched = meso.broadcast_parameters(full, 1)
        consts = meso._constants(batched, self.K, self.dt, "canonical")
        out = {k: np.ascontiguousarray(v[0]) for k, v in consts.items()}
        out["K"] = self.K
        return out

    # ---------------------------------------------------------------- evaluation
    def expected_counts(self, free: Mapping[str, Any]) -> np.ndarray:
        """Teacher-forced expected counts ``n̄`` (T, M) computed by the likelihood kernel."""
        full = self.full_parameters(free)
        nbar, _, _ = adjoint.forward_expected_counts(
            self._constants(full), self.inputs, self.hist, self.Kh, self.state, dt=self.dt,
            linear_switch=self.linear_switch, eps=self.eps, burn=self.burn,
        )
        return nbar

    def value(self, free: Mapping[str, Any], *, strict: bool = True) -> float:
        """Log-likelihood (spec §4.1, full binomial log-pmf) at the free parameters; no gradient."""
        full = self.full_parameters(free, strict=strict)
        if full is None:
            return -np.inf
        _, total, ok = adjoint.forward_expected_counts(
            self._constants(full), self.inputs, self.hist, self.Kh, self.state, dt=self.dt,
            linear_switch=self.linear_switch, eps=self.eps, burn=self.burn,
        )
        return float(total + self.log_binomial) if ok else -np.inf

    def value_and_grad(self, free: Mapping[str, Any], *, strict: bool = True) -> tuple[float, dict[str, np.ndarray]]:
        """Log-likelihood and its exact gradient with respect to each given free parameter.

        Parameters
        ----------
        free : mapping
            Any subset of :data:`FREE_PARAMETERS` (natural scale, units of
            :mod:`.parameters`); the others are fixed at the reference values.
        strict : bool
            Raise ``ValueError`` for parameters outside the support (else return ``-inf``
            and zero gradients).

        Returns
        -------
        logp : float
        grad : dict of str to numpy.ndarray
            ``∂ log L / ∂ θ`` with the shape of each given parameter (units: 1/unit).
        """
        full = self.full_parameters(free, strict=strict)
        zeros = {k: np.zeros(np.shape(v)) for k, v in free.items()}
        if full is None:
            return -np.inf, zeros
        consts = self._constants(full)
        total, _, g = adjoint.logp_and_gradient(
            consts, self.inputs, self.hist, self.Kh, self.state, dt=self.dt, linear_switch=self.linear_switch,
            eps=self.eps, burn=self.burn, checkpoint=self.checkpoint,
        )
        if g is None:
            return -np.inf, zeros
        grads = self._chain(full, consts, g)
        out = {}
        for key, value in free.items():
            gk = grads[key]
            if key in _EXCITATORY_ONLY and np.shape(value) == (len(self.exc),) and len(self.exc) != self.M:
                gk = gk[self.exc]
            out[key] = np.asarray(gk, dtype=np.float64).reshape(np.shape(value))
        return float(total + self.log_binomial), out

    def _chain(self, full, consts, g) -> dict[str, np.ndarray]:
        """Chain rule from the derived constants (spec §3.2) to the parameters."""
        dt = self.dt
        tau_m, tau_s, tau_theta = full["tau_m"], full["tau_s"], full["tau_theta"]
        J_theta, Du, c = full["J_theta"], full["Delta_u"], full["c"]
        Em = np.exp(-dt / tau_m)
        Es = np.exp(-dt / tau_s)
        Eth = np.exp(-dt / tau_theta)
        dk_ds, dk_dm = kappa_partials(tau_s[None, :], tau_m[:, None], dt)
        grads = {
            "w": g["J"] * full["p"] * full["N"][None, :],
            "tau_m": g["tau_m"] + g["Em"] * Em * dt / tau_m**2 + np.sum(g["kappa"] * dk_dm, axis=1),
            "tau_s": g["Es"] * Es * dt / tau_s**2 + np.sum(g["kappa"] * dk_ds, axis=0),
            "c": g["c_acc"] / c,
            "Delta_u": -g["Du_acc"] / Du,
            "J_theta": np.zeros(self.M),
            "tau_theta": g["Eth"] * Eth * dt / tau_theta**2,
        }
        theta = consts["theta"]
        for al in range(self.M):
            Ka = int(self.K[al])
            ages = np.arange(1, Ka + 1) * dt
            th = theta[al, :Ka]
            ratio = th / Du[al]
            e = np.exp(-ratio)
            gts = g["theta_soft"][al, :Ka]
            grads["Delta_u"][al] += np.sum(gts * (-np.expm1(-ratio) - ratio * e))
            g_theta = g["theta"][al, :Ka] + gts * e
            decay = np.exp(-ages / tau_theta[al])
            decay_K = np.exp(-Ka * dt / tau_theta[al])
            grads["J_theta"][al] = np.sum(g_theta * decay) / tau_theta[al] + g["Phi"][al] * decay_K
            grads["tau_theta"][al] += (
                np.sum(g_theta * th * (ages / tau_theta[al] ** 2 - 1.0 / tau_theta[al]))
                + g["Phi"][al] * J_theta[al] * decay_K * Ka * dt / tau_theta[al] ** 2
            )
        return grads


# --------------------------------------------------------------------------------------------
# Plain functions
# --------------------------------------------------------------------------------------------
def _setup(counts, config) -> MesoGIFLikelihood:
    if isinstance(counts, MesoGIFLikelihood):
        return counts
    if isinstance(counts, Mapping):
        if "counts" not in counts:
            raise ValueError("data must be {'counts': int array (T, M)}")
        counts = counts["counts"]
    return MesoGIFLikelihood(counts, config=config)


def loglik_and_grad(free_params: Mapping[str, Any], counts: Any, *, config: Mapping) -> tuple[float, dict[str, np.ndarray]]:
    """Log-likelihood (spec §4.1) and its exact gradient, in NumPy (for benchmarks and checks).

    Parameters
    ----------
    free_params : mapping of str to array_like
        Free parameters (any subset of :data:`FREE_PARAMETERS`) on the natural scale, without
        batch axis: ``w`` (M, M) mV, ``tau_m``, ``c``, ``Delta_u``, ``tau_s`` (M,), ``J_theta``
        mV·s and ``tau_theta`` s (n_exc,) or (M,).
    counts : array_like (T, M), ``{"counts": ...}`` or a :class:`MesoGIFLikelihood`
        Observed counts (a prepared likelihood object skips the set-up).
    config : mapping
        See :class:`MesoGIFLikelihood`.

    Returns
    -------
    logp : float
    grad : dict of str to numpy.ndarray
    """
    return _setup(counts, config).value_and_grad(free_params)


def loglik_value(free_params: Mapping[str, Any], counts: Any, *, config: Mapping) -> float:
    """Log-likelihood only (one forward pass)."""
    return _setup(counts, config).value(free_params)


# --------------------------------------------------------------------------------------------
# PyTensor Ops
# --------------------------------------------------------------------------------------------
def _make_ops():
    from pytensor.graph.basic import Apply
    from pytensor.graph.op import Op
    import pytensor.tensor as pt

    class _Cache(threading.local):
        """Last evaluation, keyed by the parameter bytes, shared by the value and gradient Ops.

        Thread-local: compiled functions may run the same Op from several threads (parallel
        MAP restarts), and one thread must never read another's gradient."""

        def __init__(self):
            self.key = None
            self.value = None
            self.grads = None

        def __reduce__(self):  # pickled (e.g. to sampler processes) as an empty cache
            return (type(self), ())

    def _key(inputs) -> bytes:
        return b"".join(np.ascontiguousarray(x, dtype=np.float64).tobytes() for x in inputs)

    class MesoGIFLoglikGradOp(Op):
        """Gradient of :class:`MesoGIFLoglikOp`: one output per parameter (the vector–Jacobian
        product for a unit cotangent; the cotangent is applied in ``MesoGIFLoglikOp.pullback``).

        Computes the log-likelihood too and leaves it in the shared cache, so a graph with both
        the value and the gradient runs the forward pass once more at most."""

        __props__ = ("names", "data_key")

        def __init__(self, likelihood, names, data_key, cache):
            self.likelihood = likelihood
            self.names = tuple(names)
            self.data_key = data_key
            self.cache = cache

        def make_node(self, *inputs):
            inputs = [pt.as_tensor_variable(x).astype("float64") for x in inputs]
            return Apply(self, inputs, [x.type() for x in inputs])

        def perform(self, node, inputs, outputs):
            key = _key(inputs)
            if self.cache.key != key or self.cache.grads is None:
                value, grads = self.likelihood.value_and_grad(dict(zip(self.names, inputs)), strict=False)
                self.cache.key, self.cache.value, self.cache.grads = key, value, grads
            for out, name, x in zip(outputs, self.names, inputs):
                out[0] = np.asarray(self.cache.grads[name], dtype=np.float64).reshape(np.shape(x))

    class MesoGIFLoglikOp(Op):
        """Scalar mesoGIF log-likelihood (spec §4.1) of fixed data as a function of the free parameters."""

        __props__ = ("names", "data_key")

        def __init__(self, likelihood, names, data_key):
            self.likelihood = likelihood
            self.names = tuple(names)
            self.data_key = data_key
            self.cache = _Cache()
            self.grad_op = MesoGIFLoglikGradOp(likelihood, names, data_key, self.cache)

        def make_node(self, *inputs):
            inputs = [pt.as_tensor_variable(x).astype("float64") for x in inputs]
            return Apply(self, inputs, [pt.dscalar()])

        def perform(self, node, inputs, outputs):
            key = _key(inputs)
            if self.cache.key != key:
                value = self.likelihood.value(dict(zip(self.names, inputs)), strict=False)
                self.cache.key, self.cache.value, self.cache.grads = key, value, None
            outputs[0][0] = np.asarray(self.cache.value, dtype=np.float64)

        def pullback(self, inputs, outputs, cotangents):
            grads = self.grad_op(*inputs)
            if not isinstance(grads, (list, tuple)):
                grads = [grads]
            return [cotangents[0] * gi for gi in grads]

    _register_numba(MesoGIFLoglikOp)
    _register_numba(MesoGIFLoglikGradOp)
    return MesoGIFLoglikOp, MesoGIFLoglikGradOp


def _register_numba(op_type) -> None:
    """Run the Op's ``perform`` from PyTensor's Numba backend (FAST_RUN in PyTensor 3) through
    ``numba.objmode``: one Python call per evaluation, whose cost is negligible next to the
    compiled kernel it calls. (The same as PyTensor's fallback, without its warning.)"""
    try:
        import numba
        from pytensor.link.numba.dispatch import numba_funcify
        from pytensor.link.numba.dispatch.basic import get_numba_type, numba_njit
    except ImportError:  # pragma: no cover - numba backend unavailable
        return

    @numba_funcify.register(op_type)
    def _funcify(op, node=None, storage_map=None, **kwargs):
        n_out = len(node.outputs)
        if n_out == 1:
            signature = get_numba_type(node.outputs[0].type)
        else:
            signature = numba.types.Tuple([get_numba_type(o.type) for o in node.outputs])

        def call_perform(inputs):
            storage = [[None] for _ in range(n_out)]
            op.perform(node, inputs, storage)
            return storage[0][0] if n_out == 1 else tuple(s[0] for s in storage)

        @numba_njit
        def perform(*inputs):
            with numba.objmode(result=signature):
                result = call_perform(inputs)
            return result

        return perform


_OPS = None


def pytensor_loglik(params: Mapping[str, Any], data: Any, *, config: Mapping):
    """The log-likelihood as a PyTensor scalar of the free-parameter variables (zoo contract).

    Parameters
    ----------
    params : mapping of str to pytensor variable (or array)
        Free parameters named as in :data:`FREE_PARAMETERS`, natural scale.
    data : mapping
        ``{"counts": int array (T, M)}``.
    config : mapping
        See :class:`MesoGIFLikelihood`.

    Returns
    -------
    pytensor.tensor.TensorVariable
        Scalar float64 log-likelihood; its gradient is the exact adjoint (second Op).
    """
    global _OPS
    if _OPS is None:
        _OPS = _make_ops()
    LoglikOp, _ = _OPS
    likelihood = _setup(data, config)
    unknown = [k for k in params if k not in FREE_PARAMETERS]
    if unknown:
        raise ValueError(f"unknown free parameter(s) {unknown}; the mesoGIF likelihood takes {list(FREE_PARAMETERS)}")
    names = [k for k in FREE_PARAMETERS if k in params]
    if not names:
        raise ValueError(f"params must contain at least one of {list(FREE_PARAMETERS)}")
    import pytensor.tensor as pt

    inputs = []
    for k in names:
        x = pt.as_tensor_variable(params[k])
        expected = likelihood.reference[k].shape
        allowed = [expected]
        if k in _EXCITATORY_ONLY:
            allowed.append((len(likelihood.exc),))
        static = x.type.shape
        if len(static) not in {len(s) for s in allowed} or not any(
            all(d is None or d == e for d, e in zip(static, s)) for s in allowed if len(s) == len(static)
        ):
            raise ValueError(f"free parameter {k!r} has shape {static}, expected one of {allowed}")
        inputs.append(x.astype("float64"))
    return LoglikOp(likelihood, names, likelihood.data_key)(*inputs)


# --------------------------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------------------------
def _free_truth(populations: int) -> dict[str, np.ndarray]:
    p = parameters.two_population() if populations == 2 else parameters.four_population()
    exc = parameters.excitatory_populations(populations)
    out = {k: p[k].copy() for k in FREE_PARAMETERS}
    out["J_theta"] = p["J_theta"][exc]
    out["tau_theta"] = p["tau_theta"][exc]
    return out


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def benchmark_likelihood(
    *,
    duration_s: float = 20.0,
    burn_in_s: float = 10.0,
    populations: Sequence[int] = (2, 4),
    Ks: Sequence[int | str] = ("auto-per-population", 1000),
    repeats: int = 5,
    scan_duration_s: float | None = 1.0,
    scan_repeats: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Seconds per log-likelihood and per log-likelihood + gradient, with the ``scan`` baseline.

    Data: meso-simulated counts at the ground truth (spec §5.1/§5.2) with the sine training
    input (§6.2), ``duration_s`` long with ``burn_in_s`` not summed. Each figure is the median
    of ``repeats`` calls after a warm-up (compilation excluded), on the calling thread (set
    ``NUMBA_NUM_THREADS=1`` for one core).

    The named baseline, measured in the same run, is a plain PyTensor ``scan`` +
    ``pytensor.grad`` of the same step (:mod:`.scan_baseline`), timed on ``scan_duration_s``
    of data (its cost is linear in the number of steps) and **extrapolated linearly** to
    ``duration_s``; its burn-in is scaled by the same factor. ``scan_duration_s=None`` skips it.

    Returns
    -------
    dict
        ``{"figures": [ {name, populations, K, value, unit, ...}, ...], "load_average": (1, 5, 15 min),
        "cpu_count": int, "baseline": ...}``.
    """
    figures: list[dict[str, Any]] = []
    out: dict[str, Any] = {"figures": figures, "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg()}
    for n_pop in populations:
        truth = _free_truth(n_pop)
        config = {"populations": n_pop, "duration_s": duration_s, "stimulus": {"kind": "sine", "seed": seed},
                  "burn_in_s": burn_in_s}
        from . import simulate as zoo_simulate

        counts = zoo_simulate({k: v[None] for k, v in truth.items()}, config=config,
                              seeds=np.array([seed + 1], dtype=np.uint64))["counts"][0]
        for K in Ks:
            lik = MesoGIFLikelihood(counts, config={**config, "likelihood_K": K})
            lik.value_and_grad(truth)  # warm-up / compile
            t_val = _median_time(lambda: lik.value(truth), repeats)
            t_grad = _median_time(lambda: lik.value_and_grad(truth), repeats)
            common = {"populations": n_pop, "K": [int(x) for x in lik.K], "duration_s": duration_s,
                      "burn_in_s": burn_in_s, "unit": "s"}
            figures.append({"name": "logp", "value": t_val, **common})
            figures.append({"name": "logp+grad", "value": t_grad, **common})
        if scan_duration_s is not None:
            from .scan_baseline import ScanLikelihood

            short = int(round(scan_duration_s / 1e-3))
            factor = duration_s / scan_duration_s
            cfg_short = {**config, "duration_s": scan_duration_s, "burn_in_s": burn_in_s / factor}
            scan = ScanLikelihood(counts[:short], config={**cfg_short, "likelihood_K": 1000})
            scan.value_and_grad(truth)  # warm-up
            t_scan = _median_time(lambda: scan.value_and_grad(truth), scan_repeats)
            figures.append({
                "name": "scan logp+grad (baseline, extrapolated)", "value": t_scan * factor,
                "measured_s": t_scan, "measured_duration_s": scan_duration_s, "populations": n_pop,
                "K": [1000] * n_pop, "duration_s": duration_s, "unit": "s",
                "note": f"PyTensor scan + pytensor.grad timed on {scan_duration_s:g} s and extrapolated linearly x{factor:g}",
            })
            fast = [f for f in figures if f["populations"] == n_pop and f["name"] == "logp+grad"]
            for f in fast:
                f["speedup_vs_scan"] = t_scan * factor / f["value"]
    out["load_average_after"] = os.getloadavg()
    return out
