"""The entry schema: what a zoo entry (``zoo/entries/<id>.toml``) may and must declare.

An entry is data (DESIGN.md §2). This module validates it with pydantic and turns every problem
into an :class:`EntryError` that names the file, the field and the fix.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mechzoo.inference.priors import ParameterSpec, PriorSpec, make_prior

__all__ = ["Entry", "EntryError", "ParameterDecl", "parse_entry"]

ID_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
KNOWN_METHODS = ("map", "nuts", "hmc", "npe")
LIKELIHOOD_METHODS = ("map", "nuts", "hmc")
SIMULATOR_METHODS = ("npe",)


class EntryError(ValueError):
    """An invalid entry: the message names the file, the field and what to do."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class ParameterDecl(_Strict):
    """One free parameter: name, dims (coordinate names declared in ``[dims]``), unit, prior."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    dims: list[str] = []
    unit: str
    prior: dict[str, Any]
    reference: float | list[Any] | None = None
    meaning: str = ""

    @field_validator("prior")
    @classmethod
    def _prior_known(cls, v: dict[str, Any]) -> dict[str, Any]:
        make_prior(v)  # raises ValueError with the known kinds
        return v

    @property
    def prior_spec(self) -> PriorSpec:
        return make_prior(self.prior)


class FixedDecl(_Strict):
    """A parameter held fixed: its value (scalar or nested list), unit and meaning."""

    value: Any
    unit: str = ""
    meaning: str = ""


class ModelDecl(_Strict):
    """Which module of :mod:`mechzoo.models` implements the entry, and its fixed configuration."""

    module: str = Field(pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$")
    config: dict[str, Any] = {}


class RoutesDecl(_Strict):
    """Which routes the entry supports, and per-route default settings."""

    likelihood: bool
    simulator: bool
    default: Literal["map", "nuts", "hmc", "npe"] | None = None
    map: dict[str, Any] = {}
    nuts: dict[str, Any] = {}
    hmc: dict[str, Any] = {}
    npe: dict[str, Any] = {}

    @field_validator("npe")
    @classmethod
    def _npe_invalid_rule(cls, v: dict[str, Any]) -> dict[str, Any]:
        """How invalid (non-finite) features are handled is declared per entry: ``invalid`` =
        ``"exclude"`` or ``"replace"`` with ``invalid_values``, and optionally a ``restrict``
        table for a classifier-restricted prior (mechzoo.inference.npe)."""
        from mechzoo.inference.npe import check_invalid_declaration, check_restrict_declaration

        check_invalid_declaration(v.get("invalid", "exclude"), v.get("invalid_values"))
        check_restrict_declaration(v.get("restrict"))
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "RoutesDecl":
        if not (self.likelihood or self.simulator):
            raise ValueError("an entry needs at least one route: set likelihood = true or simulator = true")
        if self.default is not None and self.default not in self.methods():
            raise ValueError(
                f"default method {self.default!r} is not among the entry's routes {self.methods()}"
            )
        return self

    def methods(self) -> list[str]:
        out: list[str] = []
        if self.likelihood:
            out += list(LIKELIHOOD_METHODS)
        if self.simulator:
            out += list(SIMULATOR_METHODS)
        return out


class DataRecipe(_Strict):
    """A default data set as a *recipe*: regenerated reproducibly instead of shipped.

    ``generator = "simulator"`` runs the entry's simulator at ``theta`` (``"reference"``: the
    parameters' reference values) with ``seed``; ``config`` overrides the model configuration
    (e.g. a different generator or duration). ``generator = "observation"`` uses a shipped
    observation named by ``observation``.
    """

    generator: Literal["simulator", "observation"] = "simulator"
    theta: Literal["reference"] | dict[str, Any] = "reference"
    seed: int = 0
    config: dict[str, Any] = {}
    observation: str | None = None
    description: str = ""

    @model_validator(mode="after")
    def _obs(self) -> "DataRecipe":
        if self.generator == "observation" and not self.observation:
            raise ValueError("generator = 'observation' needs observation = '<name of an [observations] item>'")
        return self


class ObservationDecl(_Strict):
    """A small published observation shipped with the entry (e.g. a feature vector)."""

    features: list[float] | None = None
    config: dict[str, Any] = {}
    description: str = ""
    source: str = ""


class Entry(_Strict):
    """A validated zoo entry (DESIGN.md §2). Build with :func:`parse_entry` or ``mechzoo.load``."""

    id: str = Field(pattern=ID_PATTERN)
    title: str = Field(min_length=3)
    summary: str = Field(min_length=10)
    references: list[str] = []
    tags: list[str] = []
    added: _dt.date
    model: ModelDecl
    dims: dict[str, list[Any]] = {}
    parameters: list[ParameterDecl] = Field(min_length=1)
    fixed: dict[str, FixedDecl] = {}
    routes: RoutesDecl
    data: dict[str, DataRecipe] = Field(min_length=1)
    observations: dict[str, ObservationDecl] = {}
    checks: dict[str, Any] = {}
    path: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Entry":
        names = [p.name for p in self.parameters]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"parameters: duplicate parameter name(s) {dup}; names must be unique")
        for i, p in enumerate(self.parameters):
            for d in p.dims:
                if d not in self.dims:
                    raise ValueError(
                        f"parameters[{i}] ({p.name}): dim {d!r} is not declared; add it to [dims] "
                        f"with its coordinate labels (declared: {sorted(self.dims)})"
                    )
            shape = tuple(len(self.dims[d]) for d in p.dims)
            spec = p.prior_spec
            try:
                spec.arrays(shape)
            except ValueError as exc:
                raise ValueError(f"parameters[{i}] ({p.name}).prior: {exc}") from None
            if p.reference is not None:
                ref = np.asarray(p.reference, dtype=float)
                if ref.shape != shape:
                    raise ValueError(
                        f"parameters[{i}] ({p.name}).reference has shape {ref.shape}, but dims {p.dims} "
                        f"give shape {shape}"
                    )
                lo, hi = spec.bounds(shape)
                if np.any(ref < lo) or np.any(ref > hi):
                    raise ValueError(
                        f"parameters[{i}] ({p.name}).reference {p.reference} lies outside the support of "
                        f"its prior {spec.describe()}"
                    )
        if "default" not in self.data:
            raise ValueError(f"data: a recipe named 'default' is required (found {sorted(self.data)})")
        for k, r in self.data.items():
            if r.generator == "observation" and r.observation not in self.observations:
                raise ValueError(
                    f"data.{k}.observation = {r.observation!r} names no [observations] item "
                    f"(known: {sorted(self.observations)})"
                )
        for name in self.fixed:
            if name in names:
                raise ValueError(f"fixed.{name}: {name!r} is also a free parameter; remove one of them")
        return self

    # ------------------------------------------------------------------ helpers
    def parameter_specs(self) -> list[ParameterSpec]:
        """Free parameters as :class:`ParameterSpec` (shape from dims, prior realised lazily)."""
        return [
            ParameterSpec(
                name=p.name,
                prior=p.prior_spec,
                dims=tuple(p.dims),
                coords={d: list(self.dims[d]) for d in p.dims},
                unit=p.unit,
                reference=p.reference,
            )
            for p in self.parameters
        ]

    def reference_values(self) -> dict[str, np.ndarray]:
        """Reference (ground-truth) values of every free parameter; error if one is missing."""
        missing = [p.name for p in self.parameters if p.reference is None]
        if missing:
            raise EntryError(f"{self.path or self.id}: parameters {missing} have no reference value; pass theta explicitly")
        return {p.name: np.asarray(p.reference, dtype=np.float64) for p in self.parameters}

    def model_module(self):
        """Import the implementing module ``mechzoo.models.<model.module>``."""
        return importlib.import_module(f"mechzoo.models.{self.model.module}")

    def methods(self) -> list[str]:
        return self.routes.methods()

    def default_method(self) -> str:
        return self.routes.default or self.methods()[0]

    def route_settings(self, method: str) -> dict[str, Any]:
        return dict(getattr(self.routes, "nuts" if method == "nuts" else method, {}))


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top level>"


_FIXES = {
    "missing": "add the field",
    "extra_forbidden": "remove it or check its spelling against the schema (mechzoo/schema.py)",
    "string_pattern_mismatch": "use lower-case words separated by '-' for ids, identifiers for names",
    "date_from_datetime_parsing": "write the date as YYYY-MM-DD",
}


def parse_entry(raw: dict[str, Any], path: str | Path = "<memory>") -> Entry:
    """Validate a parsed TOML mapping as an :class:`Entry`.

    Raises
    ------
    EntryError
        One line per problem: ``<file>: field '<dotted.path>': <problem> (fix: ...)``.
    """
    path = str(path)
    try:
        entry = Entry.model_validate({**raw, "path": path})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = _format_loc(tuple(err["loc"]))
            msg = re.sub(r"^(Value error|Assertion failed), ", "", err["msg"])
            fix = _FIXES.get(err["type"])
            lines.append(f"{path}: field '{loc}': {msg}" + (f" (fix: {fix})" if fix else ""))
        raise EntryError("invalid entry\n  " + "\n  ".join(lines)) from None
    stem = Path(path).stem
    if path != "<memory>" and stem != entry.id:
        raise EntryError(f"{path}: field 'id': id {entry.id!r} differs from the file name {stem!r} (fix: rename one)")
    return entry
