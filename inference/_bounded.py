"""A density estimator trained in unbounded coordinates (the ``theta_transform = "logit"`` setting
of :mod:`mechzoo.inference.npe`).

Kept in its own module because it subclasses ``sbi``'s ``ConditionalDensityEstimator`` and
importing torch and sbi is slow: :mod:`mechzoo.inference.npe` imports it on first use.

Why: a normalising flow has unbounded support, so on a prior with bounded support (uniform
conductance densities, log-uniform synaptic strengths) it *leaks* mass outside the prior box
(``sbi``'s ``DirectPosterior`` then rejects those draws, and a posterior piled against a bound
is poorly represented). On the pyloric network the estimator trained on ~1,500 valid
simulations put only 13-23 % of its draws inside the box. The remedy (as in ``sbi``'s
``z_score_theta = "transform_to_unconstrained"`` for its Zuko flows, and Papamakarios et al.
2019, "Normalizing flows for probabilistic modeling and inference", §2.1) is a fixed bijection
T from the box to R^D in front of the flow:

    u_i = logit(s_i),   s_i = (g_i(θ_i) - g_i(a_i)) / (g_i(b_i) - g_i(a_i)),

with [a_i, b_i] the prior bounds of flat coordinate i and g_i = log for log-uniform
coordinates (so that the transform is uniform in the prior's own scale), g_i = identity
otherwise; coordinates with a finite lower bound only get u_i = log(θ_i - a_i), unbounded ones
u_i = θ_i. The flow q_u(u | x) is the ``sbi`` estimator of the ``density_estimator`` setting
(z-scoring u as usual), and by the change of variables

    log q(θ | x) = log q_u(T(θ) | x) + Σ_i log |dT_i/dθ_i|,

so the estimator is a density over θ (training loss, ``log_prob`` and draws are all in θ) and
every other part of the route — the posterior, SBC, TSNPE's regions, APT's atomic loss, the
analyses — is unchanged. Its draws lie inside the box by construction (no leakage).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sbi.neural_nets.estimators.base import ConditionalDensityEstimator

__all__ = ["BoxTransform", "BoundedDensityEstimator", "bounded_builder", "box_transform_for"]

#: Clamp of s in (0, 1) before the logit, float32-safe: draws at the very edge stay finite.
_EPS = 1e-6


class BoxTransform(torch.nn.Module):
    """The per-coordinate bijection T of the module docstring (buffers, so it travels with the
    estimator's ``state_dict`` and ``torch.save``)."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, log_scale: np.ndarray):
        super().__init__()
        lo = np.asarray(lower, dtype=np.float64)
        hi = np.asarray(upper, dtype=np.float64)
        log_scale = np.asarray(log_scale, dtype=bool) & np.isfinite(lo) & (lo > 0) & np.isfinite(hi)
        both = np.isfinite(lo) & np.isfinite(hi)
        lower_only = np.isfinite(lo) & ~np.isfinite(hi)
        if np.any(~np.isfinite(lo) & np.isfinite(hi)):
            raise ValueError("BoxTransform: a coordinate bounded above only is not supported")
        glo = np.where(log_scale, np.log(np.where(log_scale, lo, 1.0)), np.where(both, lo, 0.0))
        ghi = np.where(log_scale, np.log(np.where(log_scale, hi, 1.0)), np.where(both, hi, 1.0))
        self.register_buffer("lower", torch.as_tensor(np.where(np.isfinite(lo), lo, 0.0), dtype=torch.float32))
        self.register_buffer("upper", torch.as_tensor(np.where(np.isfinite(hi), hi, 0.0), dtype=torch.float32))
        self.register_buffer("glo", torch.as_tensor(glo, dtype=torch.float32))
        self.register_buffer("gwidth", torch.as_tensor(ghi - glo, dtype=torch.float32))
        self.register_buffer("both", torch.as_tensor(both))
        self.register_buffer("lower_only", torch.as_tensor(lower_only))
        self.register_buffer("log_scale", torch.as_tensor(log_scale))

    def _g(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.where(self.log_scale, torch.log(torch.where(self.log_scale, theta, torch.ones_like(theta))), theta)

    def forward(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u = T(θ), log|det dT/dθ| summed over the last axis). θ outside the box gives a
        non-finite log-determinant (-inf density after the sign flip in ``log_prob``)."""
        s = ((self._g(theta) - self.glo) / self.gwidth).clamp(_EPS, 1 - _EPS)
        u_box = torch.log(s) - torch.log1p(-s)
        # d u / d θ = g'(θ) / (width s (1 - s)), g' = 1/θ on log coordinates
        ld_box = -torch.log(self.gwidth) - torch.log(s) - torch.log1p(-s) - torch.where(self.log_scale, torch.log(theta.abs()), torch.zeros_like(theta))
        shifted = theta - self.lower
        u_low = torch.log(shifted.clamp(min=1e-30))
        ld_low = -torch.log(shifted.clamp(min=1e-30))
        u = torch.where(self.both, u_box, torch.where(self.lower_only, u_low, theta))
        ld = torch.where(self.both, ld_box, torch.where(self.lower_only, ld_low, torch.zeros_like(theta)))
        return u, ld.sum(-1)

    def outside(self, theta: torch.Tensor) -> torch.Tensor:
        """True where θ lies outside the box (any coordinate), over the last axis."""
        bounded = self.both | self.lower_only
        low = bounded & (theta < self.lower)
        high = self.both & (theta > self.upper)
        return (low | high).any(-1)

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        """θ = T⁻¹(u)."""
        g = self.glo + self.gwidth * torch.sigmoid(u)
        box = torch.where(self.log_scale, torch.exp(g), g)
        box = torch.minimum(torch.maximum(box, self.lower), self.upper)  # float round-off at the edges
        return torch.where(self.both, box, torch.where(self.lower_only, self.lower + torch.exp(u), u))


class BoundedDensityEstimator(ConditionalDensityEstimator):
    """q(θ | x) = q_u(T(θ) | x) |det dT/dθ| for an ``sbi`` estimator ``inner`` of u = T(θ)."""

    def __init__(self, inner: ConditionalDensityEstimator, transform: BoxTransform):
        super().__init__(inner, inner.input_shape, inner.condition_shape)
        self.transform = transform

    @property
    def embedding_net(self):
        return self.net.embedding_net

    def log_prob(self, input: torch.Tensor, condition: torch.Tensor, **kwargs) -> torch.Tensor:
        u, logdet = self.transform(input)
        lp = self.net.log_prob(u, condition, **kwargs) + logdet
        return torch.where(self.transform.outside(input), torch.full_like(lp, -math.inf), lp)

    def loss(self, input: torch.Tensor, condition: torch.Tensor, **kwargs) -> torch.Tensor:
        u, logdet = self.transform(input)
        return self.net.loss(u, condition, **kwargs) - logdet

    def sample(self, sample_shape: torch.Size, condition: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.transform.inverse(self.net.sample(sample_shape, condition, **kwargs))



def bounded_builder(inner_builder, transform: BoxTransform):
    """An ``sbi`` density-estimator builder (``NPE(density_estimator=...)``): builds
    ``inner_builder`` on (T(θ), x) — so its z-scoring sees u — and wraps it."""

    def build(batch_theta: torch.Tensor, batch_x: torch.Tensor) -> BoundedDensityEstimator:
        u, _ = transform(batch_theta.to(torch.float32))
        return BoundedDensityEstimator(inner_builder(u, batch_x), transform)

    return build


def box_transform_for(joint) -> BoxTransform:
    """The :class:`BoxTransform` of a :class:`~mechzoo.inference._joint.JointPrior` (or of a
    restricted/truncated prior whose ``base`` is one): the prior bounds per flat coordinate, log
    scale on log-uniform parameters."""
    from .priors import LogUniform

    for _ in range(8):  # unwrap restricted / truncated priors down to the joint prior
        if hasattr(joint, "parameters") or not hasattr(joint, "base"):
            break
        joint = joint.base
    if not hasattr(joint, "parameters"):
        raise TypeError(f"theta_transform = 'logit' needs the entry's joint prior (got {type(joint).__name__})")
    lo, hi, log_scale = [], [], []
    for p in joint.parameters:
        a, b = p.prior.bounds(p.shape)
        lo.append(np.broadcast_to(np.asarray(a, dtype=np.float64), p.shape).reshape(-1))
        hi.append(np.broadcast_to(np.asarray(b, dtype=np.float64), p.shape).reshape(-1))
        log_scale.append(np.full(p.size, isinstance(p.prior, LogUniform)))
    return BoxTransform(np.concatenate(lo), np.concatenate(hi), np.concatenate(log_scale))
