"""A prior restricted to a region and sampled by rejection (base of the restricted and truncated priors).

Kept in its own module because it subclasses ``torch.distributions.Distribution`` and importing
torch is slow: :mod:`mechzoo.inference.npe` imports it on first use.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution

__all__ = ["RejectionPrior"]


class RejectionPrior(Distribution):
    """p(θ) restricted to the region where :meth:`accepts` holds, sampled by rejection.

    Subclasses set ``base`` (the distribution they restrict: event shape and batch shape come
    from it) and ``info`` (``fingerprint``, the estimated ``acceptance`` of proposals, ``n_probe``
    draws it was estimated on, ``mean`` and ``variance`` of the accepted probe draws), and define
    :meth:`accepts` and :meth:`_propose` (``n`` candidate draws from the global torch RNG).
    ``sample_seeded(n, seed)`` depends only on the seed (the campaign draws θ blocks with it).
    """

    arg_constraints: dict = {}
    has_rsample = False
    #: What the error says when no proposal is accepted.
    _what = "the restricted prior"

    def __init__(self, base, info: dict):
        self.base = base
        self.info = dict(info)
        super().__init__(batch_shape=base.batch_shape, event_shape=base.event_shape, validate_args=False)

    @property
    def fingerprint(self) -> str:
        return str(self.info["fingerprint"])

    @property
    def acceptance(self) -> float:
        return float(self.info["acceptance"])

    @property
    def mean(self):
        return torch.as_tensor(self.info["mean"], dtype=torch.float64)

    @property
    def variance(self):
        return torch.as_tensor(self.info["variance"], dtype=torch.float64)

    def accepts(self, theta) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _propose(self, n: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, sample_shape=torch.Size()):
        shape = torch.Size(sample_shape)
        n, d = shape.numel(), int(self.event_shape[0])
        if n == 0:
            return torch.empty((*shape, d), dtype=torch.float64)
        rate = max(float(self.info.get("acceptance", 1.0)), 1.0 / max(int(self.info.get("n_probe", 1)), 1))
        batch = int(min(max(math.ceil(1.25 * n / rate), 256), 1 << 17))
        parts, got, proposed = [], 0, 0
        while got < n:
            candidates = self._propose(batch).to(torch.float64)
            kept = candidates[self.accepts(candidates)]
            parts.append(kept)
            got += int(kept.shape[0])
            proposed += batch
            if got == 0 and proposed >= 10_000_000:
                raise RuntimeError(f"{self._what} accepted none of {proposed} proposals; the region is too small to sample by rejection")
        return torch.cat(parts)[:n].reshape(*shape, d)

    def sample_seeded(self, n: int, seed: int) -> torch.Tensor:
        """``n`` draws that depend only on ``seed`` (the global torch RNG is left untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return self.sample(torch.Size([int(n)]))
