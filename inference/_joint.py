"""The joint torch prior over flat parameter vectors (see :func:`mechzoo.inference.priors.joint_torch_prior`).

Kept in its own module because it subclasses ``torch.distributions.Distribution`` and importing
torch is slow: :mod:`mechzoo.inference.priors` imports it lazily.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, constraints

from .priors import ParameterSpec, _flat_constraint, _safe_point

__all__ = ["JointPrior"]


class JointPrior(Distribution):
    """Product of the entry's priors over the flat vector θ (event shape (D,), float64)."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, parameters: list[ParameterSpec]):
        self.parameters = parameters
        self.components = [p.prior.torch(p.shape) for p in parameters]
        self.sizes = [p.size for p in parameters]
        self.supports = [_flat_constraint(p.prior.torch_support(p.shape), n) for p, n in zip(parameters, self.sizes)]
        super().__init__(batch_shape=torch.Size(), event_shape=torch.Size([sum(self.sizes)]), validate_args=False)
        self._sup = constraints.independent(constraints.cat(self.supports, dim=-1, lengths=self.sizes), 1)
        draws = self.sample_seeded(20000, seed=0)
        self._mean = draws.mean(0)
        self._var = draws.var(0)

    @property
    def support(self):
        return self._sup

    @property
    def mean(self):
        return self._mean

    @property
    def variance(self):
        return self._var

    def sample(self, sample_shape=torch.Size()):
        sample_shape = torch.Size(sample_shape)
        parts = [d.sample(sample_shape).reshape(*sample_shape, n) for d, n in zip(self.components, self.sizes)]
        return torch.cat(parts, dim=-1).to(torch.float64)

    def sample_seeded(self, n: int, seed: int) -> torch.Tensor:
        """``n`` draws that depend only on ``seed`` (the global torch RNG is left untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return self.sample(torch.Size([n]))

    def log_prob(self, value):
        value = torch.as_tensor(value, dtype=torch.float64)
        batch = value.shape[:-1]
        out = torch.zeros(batch, dtype=torch.float64)
        inside = torch.ones(batch, dtype=torch.bool)
        start = 0
        for p, d, n, sup in zip(self.parameters, self.components, self.sizes, self.supports):
            flat = value[..., start : start + n]
            ok = sup.check(flat)
            inside &= ok.all(-1)
            x = flat.reshape(*batch, *p.shape)
            safe = torch.where(ok.reshape(x.shape), x, _safe_point(p, x))
            out = out + d.log_prob(safe).reshape(*batch, n).sum(-1)
            start += n
        return torch.where(inside, out, torch.full_like(out, -math.inf))
