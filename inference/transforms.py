"""Sampling-only reparameterisations: the ``sampling_transforms`` setting of the NUTS/HMC routes.

A transform changes the unconstrained coordinates the sampler moves in, not the model: PyMC adds
the log-Jacobian, so the posterior over the natural parameters is the same. It is a geometry
fix for samplers. The MAP route keeps the entry's own coordinates. The MAP with
``jacobian = true`` is the mode in those coordinates (specs/mesogif.md §4.5).

Why this exists (measured on ``mesogif-2pop``, 640 warm-up draws of the reference NUTS run):
in PyMC's default log coordinates, log c_E is a curved function of log J_θ. Regressing log c_E
on the other 13 coordinates leaves a residual SD of 0.058 with log J_θ, and of 0.015 with J_θ
itself. The escape rate c·exp((u − ϑ)/Δu) at a steady adaptation J_θ·Ā gives
log c − J_θ Ā/Δu = const, so the ridge is straight in (log c, J_θ). NUTS's step size is set by
the narrowest part of a curved ridge, so there it took 2^6 leapfrog steps per draw.

``{"J_theta": {"kind": "softplus", "scale": s}}`` samples u with J = s·softplus(u/s). This map
has dJ/du = 1 − exp(−J/s): it is linear for J ≫ s, and J > 0 everywhere, so no proposal falls
outside the support.

Imported only by the routes that sample (and by their tests), so ``import mechzoo`` does not
import PyMC through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytensor.tensor as pt
from pymc.logprob.transforms import Transform

__all__ = ["ScaledSoftplus", "apply_sampling_transforms", "check_sampling_transforms", "make_transform"]

_KINDS = ("softplus",)


class ScaledSoftplus(Transform):
    r"""x = s·log(1 + exp(u/s)) for a positive variable x; s > 0 in the variable's unit.

    forward: u = s·(y + log(1 − e^{−y})), y = x/s; log|dx/du| = log σ(u/s) = −softplus(−u/s).
    """

    name = "softplus"
    ndim_supp = 0

    def __init__(self, scale: float):
        self.scale = float(scale)

    def forward(self, value, *inputs):
        y = value / self.scale
        return self.scale * (y + pt.log(-pt.expm1(-y)))

    def backward(self, value, *inputs):
        return self.scale * pt.softplus(value / self.scale)

    def log_jac_det(self, value, *inputs):
        return -pt.softplus(-value / self.scale)

    def __eq__(self, other):
        return type(other) is type(self) and other.scale == self.scale

    def __hash__(self):
        return hash((type(self).__name__, self.scale))


def check_sampling_transforms(value: Any, parameters) -> dict[str, dict[str, Any]] | None:
    """Validate the setting against the entry's free parameters; ``None``/empty means off.

    Raises
    ------
    ValueError
        Unknown parameter, unknown kind, missing or non-positive scale, or a parameter whose
        prior support is not the positive half-line.
    """
    if not value:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"sampling_transforms must be a table {{parameter = {{kind = 'softplus', scale = s}}}} (got {value!r})")
    by_name = {p.name: p for p in parameters}
    out = {}
    for name, spec in value.items():
        if name not in by_name:
            raise ValueError(f"sampling_transforms: {name!r} is not a free parameter (free: {', '.join(by_name)})")
        if not isinstance(spec, Mapping) or spec.get("kind") not in _KINDS:
            raise ValueError(f"sampling_transforms[{name!r}]: kind must be one of {_KINDS} (got {spec!r})")
        scale = spec.get("scale")
        if not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"sampling_transforms[{name!r}]: scale must be a positive number in the unit of {name} (got {scale!r})")
        lo, _ = by_name[name].prior.bounds(())
        if not lo >= 0:
            raise ValueError(f"sampling_transforms[{name!r}]: softplus needs a positive parameter; the prior's support starts at {lo}")
        unknown = set(spec) - {"kind", "scale"}
        if unknown:
            raise ValueError(f"sampling_transforms[{name!r}]: unknown key(s) {sorted(unknown)}")
        out[name] = {"kind": spec["kind"], "scale": float(scale)}
    return out


def make_transform(spec: Mapping[str, Any]):
    """The PyMC transform of one checked ``sampling_transforms`` item."""
    if spec["kind"] == "softplus":
        return ScaledSoftplus(spec["scale"])
    raise ValueError(f"unknown transform kind {spec['kind']!r}")


def apply_sampling_transforms(model, transforms: Mapping[str, Mapping[str, Any]] | None):
    """``model`` with its value transforms replaced for the named variables (a new model)."""
    if not transforms:
        return model
    from pymc.model.transform.conditioning import change_value_transforms

    return change_value_transforms(model, {name: make_transform(spec) for name, spec in transforms.items()})
