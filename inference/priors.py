"""Prior vocabulary: declared once, realised twice (PyMC and ``torch.distributions``).

A prior is declared in an entry as a small table, e.g. ``{ kind = "Gamma", shape = 2, scale = 5 }``.
Each kind below realises

* a **PyMC** random variable (:meth:`PriorSpec.pymc`), used by the likelihood routes (MAP, NUTS,
  HMC), and
* a **torch** distribution with the matching support (:meth:`PriorSpec.torch`), used by the
  simulation routes (``sbi``).

Both realisations have the same log-density on the parameter's *natural* scale (the value written
in the entry, e.g. a time constant in seconds rather than its logarithm); a property test checks
this to 1e-10 at random points for every kind (``tests/inference/test_priors.py``).

Parameterisations (all densities are with respect to Lebesgue measure on the natural scale):

=============  ============================  ==================================================
kind           arguments                     density / meaning
=============  ============================  ==================================================
Normal         ``mu``, ``sigma``             :math:`\\mathcal N(\\mu, \\sigma^2)`
HalfNormal     ``sigma``                     :math:`2\\,\\mathcal N(x; 0, \\sigma^2)`, x > 0
LogNormal      ``mu``, ``sigma``             :math:`\\ln x \\sim \\mathcal N(\\mu, \\sigma^2)`
Log10Normal    ``mu``, ``sigma``             :math:`\\log_{10} x \\sim \\mathcal N(\\mu, \\sigma^2)`
                                             (René et al. 2020, Table 7 priors on time constants)
Gamma          ``shape``, ``scale``          :math:`x^{k-1} e^{-x/\\theta} / (\\theta^k \\Gamma(k))`
                                             (shape–scale, as René et al. 2020, Table 7)
Uniform        ``lower``, ``upper``          :math:`1/(b-a)` on [a, b]
LogUniform     ``lower``, ``upper``          :math:`1 / (x \\ln(b/a))` on [a, b]
=============  ============================  ==================================================

Every argument is a scalar or an array broadcastable to the parameter's shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

__all__ = [
    "PriorSpec",
    "PRIOR_KINDS",
    "make_prior",
    "joint_torch_prior",
    "ParameterSpec",
]

LN10 = math.log(10.0)


def _as_array(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    try:
        return np.broadcast_to(arr, shape).copy()
    except ValueError as exc:  # pragma: no cover - message path tested via schema
        raise ValueError(
            f"{what}: argument of shape {arr.shape} cannot be broadcast to the parameter shape {shape}"
        ) from exc


@dataclass(frozen=True)
class PriorSpec:
    """Base class of a declared prior. Subclasses set ``kind`` and ``args``.

    Parameters
    ----------
    args : dict
        The keyword arguments of the declaration (scalars or nested lists).
    """

    args: Mapping[str, Any]
    kind: ClassVar[str] = ""
    required: ClassVar[tuple[str, ...]] = ()
    positive: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        missing = [a for a in self.required if a not in self.args]
        extra = [a for a in self.args if a not in self.required]
        if missing:
            raise ValueError(f"prior {self.kind} needs argument(s) {missing} (got {sorted(self.args)})")
        if extra:
            raise ValueError(
                f"prior {self.kind} does not take argument(s) {extra}; it takes {list(self.required)}"
            )
        for a in self.required:
            v = np.asarray(self.args[a], dtype=np.float64)
            if not np.all(np.isfinite(v)):
                raise ValueError(f"prior {self.kind}: argument {a!r} must be finite")
            if a in self.positive and np.any(v <= 0):
                raise ValueError(f"prior {self.kind}: argument {a!r} must be > 0 (got {self.args[a]})")

    # --- helpers ---------------------------------------------------------
    def arrays(self, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Arguments broadcast to ``shape`` as float64 arrays."""
        return {a: _as_array(self.args[a], shape, f"prior {self.kind}.{a}") for a in self.required}

    def bounds(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Support as (lower, upper) arrays (may be infinite)."""
        return np.full(shape, -np.inf), np.full(shape, np.inf)

    def declaration(self) -> dict[str, Any]:
        """The declaration as written in an entry (for attrs and tables)."""
        return {"kind": self.kind, **{k: self.args[k] for k in self.required}}

    def describe(self) -> str:
        """Short human-readable form, e.g. ``Gamma(shape=2, scale=5)``."""
        inner = ", ".join(f"{k}={self.args[k]}" for k in self.required)
        return f"{self.kind}({inner})"

    # --- realisations ----------------------------------------------------
    def pymc(self, name: str, shape: tuple[int, ...], dims: Sequence[str] | None = None):
        """Create the PyMC random variable ``name`` inside the current model context."""
        raise NotImplementedError

    def torch(self, shape: tuple[int, ...]):
        """A ``torch.distributions.Distribution`` with ``batch_shape == shape`` (float64)."""
        raise NotImplementedError

    def torch_support(self, shape: tuple[int, ...]):
        """The torch constraint of the support, elementwise, for ``shape``."""
        from torch.distributions import constraints

        lo, hi = self.bounds(shape)
        if np.all(np.isinf(lo)) and np.all(np.isinf(hi)):
            return constraints.real
        if np.all(np.isinf(hi)) and np.all(lo == 0):
            return constraints.positive
        import torch

        return constraints.interval(torch.as_tensor(lo), torch.as_tensor(hi))


def _pm_kwargs(shape: tuple[int, ...], dims: Sequence[str] | None) -> dict[str, Any]:
    if dims:
        return {"dims": tuple(dims)}
    return {"shape": shape} if shape else {}


def _t(x: np.ndarray):
    import torch

    return torch.as_tensor(x, dtype=torch.float64)


class Normal(PriorSpec):
    """Normal prior :math:`\\mathcal N(\\mu, \\sigma^2)` (``sigma`` is the standard deviation)."""

    kind = "Normal"
    required = ("mu", "sigma")
    positive = ("sigma",)

    def pymc(self, name, shape, dims=None):
        import pymc as pm

        a = self.arrays(shape)
        return pm.Normal(name, mu=a["mu"], sigma=a["sigma"], **_pm_kwargs(shape, dims))

    def torch(self, shape):
        from torch.distributions import Normal as TN

        a = self.arrays(shape)
        return TN(_t(a["mu"]), _t(a["sigma"]))


class HalfNormal(PriorSpec):
    """Half-normal prior on x > 0 with scale ``sigma``."""

    kind = "HalfNormal"
    required = ("sigma",)
    positive = ("sigma",)

    def bounds(self, shape):
        return np.zeros(shape), np.full(shape, np.inf)

    def pymc(self, name, shape, dims=None):
        import pymc as pm

        a = self.arrays(shape)
        return pm.HalfNormal(name, sigma=a["sigma"], **_pm_kwargs(shape, dims))

    def torch(self, shape):
        from torch.distributions import HalfNormal as TH

        a = self.arrays(shape)
        return TH(_t(a["sigma"]))


class LogNormal(PriorSpec):
    """Log-normal prior: :math:`\\ln x \\sim \\mathcal N(\\mu, \\sigma^2)`."""

    kind = "LogNormal"
    required = ("mu", "sigma")
    positive = ("sigma",)
    log_base_factor: ClassVar[float] = 1.0

    def bounds(self, shape):
        return np.zeros(shape), np.full(shape, np.inf)

    def _natural_log_args(self, shape):
        a = self.arrays(shape)
        return a["mu"] * self.log_base_factor, a["sigma"] * self.log_base_factor

    def pymc(self, name, shape, dims=None):
        import pymc as pm

        mu, sigma = self._natural_log_args(shape)
        return pm.LogNormal(name, mu=mu, sigma=sigma, **_pm_kwargs(shape, dims))

    def torch(self, shape):
        from torch.distributions import LogNormal as TL

        mu, sigma = self._natural_log_args(shape)
        return TL(_t(mu), _t(sigma))


class Log10Normal(LogNormal):
    """:math:`\\log_{10} x \\sim \\mathcal N(\\mu, \\sigma^2)`.

    Realised as a log-normal with :math:`\\mu \\ln 10` and :math:`\\sigma \\ln 10` (exact: the
    density of x is the same). René et al. (2020) optimise in :math:`\\log_{10}` space; the
    log transform PyMC applies differs from it only by the constant :math:`\\ln 10`.
    """

    kind = "Log10Normal"
    log_base_factor = LN10


class Gamma(PriorSpec):
    """Gamma prior in shape–scale form: density :math:`x^{k-1} e^{-x/\\theta}/(\\theta^k\\Gamma(k))`."""

    kind = "Gamma"
    required = ("shape", "scale")
    positive = ("shape", "scale")

    def bounds(self, shape):
        return np.zeros(shape), np.full(shape, np.inf)

    def pymc(self, name, shape, dims=None):
        import pymc as pm

        a = self.arrays(shape)
        return pm.Gamma(name, alpha=a["shape"], beta=1.0 / a["scale"], **_pm_kwargs(shape, dims))

    def torch(self, shape):
        from torch.distributions import Gamma as TG

        a = self.arrays(shape)
        return TG(_t(a["shape"]), _t(1.0 / a["scale"]))


class Uniform(PriorSpec):
    """Uniform prior on [lower, upper]."""

    kind = "Uniform"
    required = ("lower", "upper")

    def __post_init__(self) -> None:
        super().__post_init__()
        if np.any(np.asarray(self.args["upper"], float) <= np.asarray(self.args["lower"], float)):
            raise ValueError(f"prior {self.kind}: upper must exceed lower (got {self.describe()})")

    def bounds(self, shape):
        a = self.arrays(shape)
        return a["lower"], a["upper"]

    def pymc(self, name, shape, dims=None):
        import pymc as pm

        a = self.arrays(shape)
        return pm.Uniform(name, lower=a["lower"], upper=a["upper"], **_pm_kwargs(shape, dims))

    def torch(self, shape):
        from torch.distributions import Uniform as TU

        a = self.arrays(shape)
        return TU(_t(a["lower"]), _t(a["upper"]), validate_args=False)


class LogUniform(Uniform):
    """Log-uniform ("reciprocal") prior: :math:`\\ln x \\sim U(\\ln a, \\ln b)`, density
    :math:`1/(x \\ln(b/a))` on [a, b] (used for pyloric synapses, Gonçalves et al. 2020)."""

    kind = "LogUniform"
    positive = ("lower", "upper")

    def pymc(self, name, shape, dims=None):
        import pymc as pm
        import pytensor.tensor as pt
        from pymc.distributions.transforms import Interval

        a = self.arrays(shape)
        lo, hi = a["lower"], a["upper"]

        def logp(value, lower, upper):
            inside = pt.and_(pt.ge(value, lower), pt.le(value, upper))
            dens = -pt.log(value) - pt.log(pt.log(upper) - pt.log(lower))
            return pt.switch(inside, dens, -np.inf)

        def random(lower, upper, rng=None, size=None):
            u = rng.uniform(np.log(lower), np.log(upper), size=size)
            return np.exp(u)

        return pm.CustomDist(
            name,
            lo,
            hi,
            logp=logp,
            random=random,
            transform=Interval(bounds_fn=lambda *rv_inputs: (rv_inputs[-2], rv_inputs[-1])),
            initval=np.sqrt(lo * hi),
            **_pm_kwargs(shape, dims),
        )

    def torch(self, shape):
        from torch.distributions import TransformedDistribution, Uniform as TU
        from torch.distributions.transforms import ExpTransform

        a = self.arrays(shape)
        base = TU(_t(np.log(a["lower"])), _t(np.log(a["upper"])), validate_args=False)
        return TransformedDistribution(base, [ExpTransform()], validate_args=False)


PRIOR_KINDS: dict[str, type[PriorSpec]] = {
    cls.kind: cls for cls in (Normal, HalfNormal, LogNormal, Log10Normal, Gamma, Uniform, LogUniform)
}


def make_prior(declaration: Mapping[str, Any]) -> PriorSpec:
    """Build a :class:`PriorSpec` from an entry declaration ``{kind = ..., **args}``.

    Raises
    ------
    ValueError
        Unknown kind (naming the known ones) or wrong/missing arguments.
    """
    decl = dict(declaration)
    kind = decl.pop("kind", None)
    if kind is None:
        raise ValueError(f"prior needs a 'kind' (one of {sorted(PRIOR_KINDS)})")
    if kind not in PRIOR_KINDS:
        import difflib

        close = difflib.get_close_matches(str(kind), PRIOR_KINDS, n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(f"unknown prior kind {kind!r}{hint} Known kinds: {sorted(PRIOR_KINDS)}")
    return PRIOR_KINDS[kind](args=decl)


@dataclass(frozen=True)
class ParameterSpec:
    """A free parameter as inference sees it: name, shape, dims, coordinates and prior.

    ``shape`` is derived from the coordinates of ``dims`` (an empty tuple is a scalar).
    """

    name: str
    prior: PriorSpec
    dims: tuple[str, ...] = ()
    coords: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    unit: str = ""
    reference: Any = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.coords[d]) for d in self.dims)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def flat_names(self) -> list[str]:
        """Flattened names with coordinates, e.g. ``w[E,I]`` (C order)."""
        if not self.dims:
            return [self.name]
        labels = [list(self.coords[d]) for d in self.dims]
        idx = np.indices(self.shape).reshape(len(self.dims), -1).T
        return [self.name + "[" + ",".join(str(labels[k][i]) for k, i in enumerate(row)) + "]" for row in idx]


def joint_torch_prior(parameters: Sequence[ParameterSpec]):
    """The joint prior over the flattened parameter vector as a torch ``Distribution``.

    The vector concatenates the C-order flattening of every parameter in declaration order
    (names from :meth:`ParameterSpec.flat_names`). ``support`` is the concatenation of the
    elementwise supports, so ``sbi`` can map it to an unconstrained space and reject samples
    outside it. The object pickles (it is saved with trained NPE estimators).
    """
    from ._joint import JointPrior

    return JointPrior(list(parameters))


def _flat_constraint(c, n):
    """An elementwise constraint usable on a flat slice of length ``n``."""
    from torch.distributions import constraints

    if isinstance(c, constraints.interval):
        import torch

        lo = torch.as_tensor(c.lower_bound, dtype=torch.float64).reshape(-1)
        hi = torch.as_tensor(c.upper_bound, dtype=torch.float64).reshape(-1)
        return constraints.interval(lo.expand(n) if lo.numel() == 1 else lo, hi.expand(n) if hi.numel() == 1 else hi)
    return c


def _safe_point(p: ParameterSpec, like):
    """A point inside the support, broadcast like ``like`` (avoids NaN from out-of-support log_prob)."""
    import torch

    lo, hi = p.prior.bounds(p.shape)
    finite_lo, finite_hi = np.isfinite(lo), np.isfinite(hi)
    mid = np.zeros(lo.shape)
    both = finite_lo & finite_hi
    mid[both] = 0.5 * (lo[both] + hi[both])
    mid[finite_lo & ~finite_hi] = lo[finite_lo & ~finite_hi] + 1.0
    return torch.as_tensor(mid, dtype=torch.float64).expand_as(like)
