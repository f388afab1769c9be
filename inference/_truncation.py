"""Truncated proposals for sequential NPE (the ``truncate`` setting of :mod:`mechzoo.inference.npe`).

Kept in its own module because it subclasses ``torch.distributions.Distribution`` and importing
torch is slow: :mod:`mechzoo.inference.npe` imports it on first use.

Method: truncated sequential NPE (TSNPE; Deistler, Goncalves & Macke 2022, NeurIPS,
"Truncated proposals for scalable and hassle-free simulation-based inference"). After round
r-1 the posterior estimate q_{r-1}(θ | x_o) defines the region

    A_r = A_{r-1} ∩ B_r ∩ {θ : log q_{r-1}(θ | x_o) >= t_r},

with t_r the ``quantile`` of log q_{r-1} over its own draws (TSNPE's highest-probability
region, default ε = 1e-4) and B_r the axis-aligned box of those draws, widened by ``margin`` of
its width on each side and clipped to the previous box. The proposal of round r is the NPE
prior restricted to A_r, p(θ) 1[θ ∈ A_r] / P(A_r). It is sampled *exactly*: the prior is
truncated to B_r dimension by dimension through its inverse CDF (the prior factorises over
flat coordinates: every prior kind of :mod:`mechzoo.inference.priors` is elementwise
independent), then draws outside the HPR tests (and, with a classifier-restricted prior, outside
its accepted region) are rejected. The box is what makes the rejection step affordable: the HPR
of a 31-dimensional posterior fills a tiny part of the prior, but most of its box.

Because A_1 ⊇ A_2 ⊇ ..., the pooled training θ of all rounds have density p(θ) c(θ) with c a
step function that is constant on the innermost region, so maximum-likelihood training
(``force_first_round_loss``) on the pooled data estimates p(θ | x) ∝ p(θ) p(x | θ) for every x
whose posterior lies inside A_R — in particular x_o (TSNPE, Sec. 3). Unlike the atomic loss of
SNPE-C, this stays correct when invalid simulations are dropped.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import torch

from ._rejection import RejectionPrior

__all__ = ["TruncatedPrior", "HPRegion", "PosteriorProposal", "truncated_box_sample", "box_mass"]

#: Version of the truncated sampler; part of the fingerprint, so that banks drawn by an older
#: sampler are not extended by a newer one.
SAMPLER_VERSION = 1


class HPRegion:
    """θ with log q(θ | x_o) >= ``threshold`` for a trained posterior ``q`` (a frozen copy)."""

    def __init__(self, posterior, x_o: np.ndarray, threshold: float):
        self.posterior = posterior
        self.x_o = torch.as_tensor(np.asarray(x_o, dtype=np.float32))
        self.threshold = float(threshold)

    def log_q(self, theta: torch.Tensor, batch: int = 1 << 15) -> torch.Tensor:
        """log q(θ | x_o), float64, in batches (no gradient)."""
        out = []
        with torch.no_grad():
            for a in range(0, theta.shape[0], batch):
                lp = self.posterior.log_prob(theta[a : a + batch].to(torch.float32), x=self.x_o, norm_posterior=False)
                out.append(lp.to(torch.float64))
        return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)

    def contains(self, theta: torch.Tensor) -> torch.Tensor:
        return self.log_q(theta) >= self.threshold


def _flat_components(joint):
    """Per-parameter (component, size, shape) of a :class:`~mechzoo.inference._joint.JointPrior`."""
    return [(d, n, tuple(p.shape)) for p, d, n in zip(joint.parameters, joint.components, joint.sizes)]


def box_mass(joint, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Prior mass of [lo_i, hi_i] for every flat coordinate i (float64, shape (D,))."""
    lo_t, hi_t = torch.as_tensor(lo, dtype=torch.float64), torch.as_tensor(hi, dtype=torch.float64)
    out, start = [], 0
    for d, n, shape in _flat_components(joint):
        a, b = lo_t[start : start + n].reshape(shape), hi_t[start : start + n].reshape(shape)
        out.append((d.cdf(b) - d.cdf(a)).reshape(n).to(torch.float64))
        start += n
    return torch.cat(out).clamp(min=0.0).numpy()


def truncated_box_sample(joint, lo: np.ndarray, hi: np.ndarray, n: int) -> torch.Tensor:
    """``n`` exact draws of the prior truncated to the box [lo, hi] (global torch RNG).

    Inverse-CDF per flat coordinate: u ~ U(F(lo), F(hi)), θ = F⁻¹(u), which is exact for an
    elementwise-independent prior. Raises ``NotImplementedError`` for a prior kind without an
    inverse CDF in torch (Gamma).
    """
    lo_t, hi_t = torch.as_tensor(lo, dtype=torch.float64), torch.as_tensor(hi, dtype=torch.float64)
    parts, start = [], 0
    for d, m, shape in _flat_components(joint):
        a, b = lo_t[start : start + m].reshape(shape), hi_t[start : start + m].reshape(shape)
        fa, fb = d.cdf(a).to(torch.float64), d.cdf(b).to(torch.float64)
        u = fa + (fb - fa) * torch.rand((n, *shape), dtype=torch.float64)
        x = d.icdf(u.to(fa.dtype)).to(torch.float64)
        x = torch.minimum(torch.maximum(x, a.expand_as(x)), b.expand_as(x))  # round-off at the box edges
        parts.append(x.reshape(n, m))
        start += m
    return torch.cat(parts, dim=-1)


class TruncatedPrior(RejectionPrior):
    """The NPE prior restricted to the nested TSNPE region A_R (module docstring).

    ``base`` is the NPE prior (the entry's joint prior, or a classifier-restricted prior whose
    ``base`` is the joint prior and whose ``accepts`` is applied too); ``box`` = (lo, hi) the
    current box; ``regions`` the :class:`HPRegion` of every round. Proposals are exact draws of
    the joint prior truncated to the box (:func:`truncated_box_sample`), rejected outside the
    region (:class:`~mechzoo.inference._rejection.RejectionPrior`). ``info`` holds the acceptance
    of the HPR/classifier tests within the box (estimated on a seeded probe), the box's prior
    mass and the ``fingerprint``.
    """

    _what = "the truncated proposal (its region is too small a part of its box)"

    def __init__(self, base, box: tuple[np.ndarray, np.ndarray], regions: list[HPRegion], info: dict):
        self.joint = getattr(base, "base", base)
        self.box = (np.asarray(box[0], dtype=np.float64), np.asarray(box[1], dtype=np.float64))
        self.regions = list(regions)
        super().__init__(base, info)

    @property
    def support(self):
        return self.base.support

    def accepts(self, theta) -> torch.Tensor:
        """θ (n, D) lies in the box, in the base's accepted region and in every round's HPR."""
        theta = torch.as_tensor(theta, dtype=torch.float64)
        lo, hi = torch.as_tensor(self.box[0]), torch.as_tensor(self.box[1])
        ok = ((theta >= lo) & (theta <= hi)).all(-1)
        if hasattr(self.base, "accepts") and bool(ok.any()):
            ok[ok.clone()] = self.base.accepts(theta[ok])
        for region in self.regions:
            if bool(ok.any()):
                ok[ok.clone()] = region.contains(theta[ok])
        return ok

    def _propose(self, n: int) -> torch.Tensor:
        return truncated_box_sample(self.joint, *self.box, n)

    def log_prob(self, value):
        """Normalised density p(θ) 1[θ ∈ A_R] / P(A_R) with p the joint prior and P(A_R) = box
        mass × acceptance (the accepted fraction of box draws, which includes the classifier's
        test when the base is a classifier-restricted prior)."""
        value = torch.as_tensor(value, dtype=torch.float64)
        flat = value.reshape(-1, value.shape[-1])
        lp = torch.as_tensor(self.joint.log_prob(flat), dtype=torch.float64)  # P_joint(A_R) normalises, whatever the base
        inside = self.accepts(flat)
        log_mass = math.log(self.info["box_mass"]) + math.log(self.info["acceptance"])
        out = torch.where(inside, lp - log_mass, torch.full_like(lp, -math.inf))
        return out.reshape(value.shape[:-1])


def make_truncated_prior(base, posterior, x_o: np.ndarray, previous: "TruncatedPrior | None", *, quantile: float, margin: float,
                         n_draws: int, n_probe: int, seed: int, key: str) -> TruncatedPrior:
    """The proposal of the next round from the current ``posterior`` at ``x_o``.

    Draws ``n_draws`` from the estimator q(θ | x_o) (seeded) and keeps those inside the NPE prior's
    support (the in-support fraction, 1 minus the leakage, is recorded), sets the HPR threshold
    at their ``quantile`` of log q and the box at their per-coordinate range widened by ``margin`` × width (clipped to
    the previous box, or to the prior's own bounds where finite), then estimates the acceptance
    within the box on ``n_probe`` seeded box draws. Raises ``RuntimeError`` if no probe draw is
    accepted.
    """
    x_t = torch.as_tensor(np.asarray(x_o, dtype=np.float32))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(int(seed))
        # raw estimator draws, then the ones inside the prior's support: sbi's posterior.sample
        # would redraw the leaked ones, which takes minutes when an early estimator leaks most of
        # its mass outside a high-dimensional box; the in-support draws are draws of q restricted
        # to the support, which is what the threshold and the box are estimated from
        raw = posterior.posterior_estimator.sample((int(n_draws),), condition=x_t[None]).reshape(int(n_draws), -1).to(torch.float64)
    in_support = torch.as_tensor(base.support.check(raw), dtype=torch.bool)
    if in_support.dim() > 1:
        in_support = in_support.all(-1)
    draws = raw[in_support]
    if draws.shape[0] < 100:
        raise RuntimeError(
            f"only {draws.shape[0]} of {n_draws} draws of the current estimator lie inside the prior's support; too few to set the "
            "truncation (fix: more simulations in the first round, or a larger truncate['posterior_draws'])"
        )
    region = HPRegion(posterior, x_o, threshold=0.0)
    log_q = region.log_q(draws)
    region.threshold = float(torch.quantile(log_q, float(quantile)).item()) if log_q.numel() > 1 else float(log_q.min())
    lo, hi = draws.min(0).values.numpy(), draws.max(0).values.numpy()
    width = hi - lo
    lo, hi = lo - margin * width, hi + margin * width
    joint = getattr(base, "base", base)
    if previous is not None:
        lo, hi = np.maximum(lo, previous.box[0]), np.minimum(hi, previous.box[1])
    else:
        lo_p, hi_p = _prior_bounds(joint)
        lo, hi = np.maximum(lo, lo_p), np.minimum(hi, hi_p)
    regions = ([] if previous is None else list(previous.regions)) + [region]
    prior = TruncatedPrior(base, (lo, hi), regions, {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) + 1)
        probe = truncated_box_sample(joint, lo, hi, int(n_probe))
    accepted = prior.accepts(probe)
    n_acc = int(accepted.sum())
    if n_acc == 0:
        raise RuntimeError(f"no draw of {n_probe} from the truncation box lies in the posterior's high-probability region; cannot build the truncated proposal")
    inside = probe[accepted]
    info = {
        "key": key,
        "round": len(regions),
        "quantile": float(quantile),
        "margin": float(margin),
        "thresholds": [r.threshold for r in regions],
        "box_lo": lo.tolist(),
        "box_hi": hi.tolist(),
        "box_mass": float(np.prod(box_mass(joint, lo, hi))),
        "posterior_in_support_fraction": float(in_support.double().mean()),
        "n_probe": int(n_probe),
        "n_probe_accepted": n_acc,
        "acceptance": n_acc / int(n_probe),
        "mean": inside.mean(0).tolist(),
        "variance": (inside.var(0) if n_acc > 1 else torch.as_tensor(joint.variance, dtype=torch.float64)).tolist(),
        "base_fingerprint": str(getattr(base, "fingerprint", "")),
        "sampler_version": SAMPLER_VERSION,
    }
    h = hashlib.sha256(json.dumps({k: info[k] for k in ("key", "round", "thresholds", "box_lo", "box_hi", "base_fingerprint", "sampler_version")}, sort_keys=True).encode())
    h.update(np.packbits(accepted.numpy()).tobytes())
    info["fingerprint"] = h.hexdigest()
    prior.info = info
    return prior


def _prior_bounds(joint) -> tuple[np.ndarray, np.ndarray]:
    """Per flat coordinate (lower, upper) bounds of the joint prior's support (±inf if unbounded)."""
    lo, hi = [], []
    for p in joint.parameters:
        a, b = p.prior.bounds(p.shape)
        lo.append(np.broadcast_to(np.asarray(a, dtype=np.float64), p.shape).reshape(-1))
        hi.append(np.broadcast_to(np.asarray(b, dtype=np.float64), p.shape).reshape(-1))
    return np.concatenate(lo), np.concatenate(hi)


class PosteriorProposal(torch.distributions.Distribution):
    """The current posterior estimate q(θ | x_o) as the proposal of an APT round (the
    ``sequential`` setting of :mod:`mechzoo.inference.npe`).

    ``sample_seeded(n, seed)`` depends only on the seed (the campaign draws θ blocks with it);
    ``fingerprint`` hashes the estimator key, the round and the estimator's weights, so that a
    bank is extended only by draws of the same proposal. ``log_prob`` is the posterior's
    (normalised for leakage by ``sbi``).
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, posterior, x_o: np.ndarray, *, key: str, round: int):
        self.posterior = posterior
        self.x_o = torch.as_tensor(np.asarray(x_o, dtype=np.float32))
        self.posterior.set_default_x(self.x_o)
        self.prior = posterior.prior
        h = hashlib.sha256(json.dumps({"key": key, "round": int(round), "sampler": "posterior-proposal-1"}, sort_keys=True).encode())
        for name, tensor in sorted(posterior.posterior_estimator.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        self._fingerprint = h.hexdigest()
        super().__init__(batch_shape=self.prior.batch_shape, event_shape=self.prior.event_shape, validate_args=False)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def support(self):
        return self.prior.support

    def sample(self, sample_shape=torch.Size()):
        shape = torch.Size(sample_shape)
        with torch.no_grad():
            draws = self.posterior.sample(shape, x=self.x_o, show_progress_bars=False)
        return draws.to(torch.float64)

    def sample_seeded(self, n: int, seed: int) -> torch.Tensor:
        """``n`` draws that depend only on ``seed`` (the global torch RNG is left untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return self.sample(torch.Size([int(n)]))

    def log_prob(self, value):
        with torch.no_grad():
            return self.posterior.log_prob(torch.as_tensor(value, dtype=torch.float32), x=self.x_o).to(torch.float64)
