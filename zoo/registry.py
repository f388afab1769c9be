"""The entry registry: finds ``zoo/entries/*.toml`` (and folders named in ``MECHZOO_ENTRY_PATH``),
validates them and suggests close ids for typos."""

from __future__ import annotations

import difflib
import hashlib
import os
import tomllib
from functools import lru_cache
from pathlib import Path

from .schema import Entry, EntryError, parse_entry

__all__ = ["entries", "load", "entry_paths", "UnknownEntryError", "entry_hash", "reference_results", "reference_result"]

ENTRY_DIR = Path(__file__).parent / "entries"
#: Reference results shipped with the package: ``<entry id>-reference-<method>.nc``, each written
#: by a script under ``scripts/`` that records its settings, seed and diagnostics in the attrs.
REFERENCE_DIR = ENTRY_DIR / "data"


class UnknownEntryError(KeyError):
    """No entry has this id; the message lists the closest ids."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


def _search_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("MECHZOO_ENTRY_PATH", "").split(os.pathsep) if p]
    return [ENTRY_DIR, *extra]


def entry_paths() -> dict[str, Path]:
    """Map of entry id (file stem) to its TOML path; later folders cannot shadow earlier ones."""
    out: dict[str, Path] = {}
    for d in _search_dirs():
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.toml")):
            if path.stem in out:
                raise EntryError(f"{path}: entry id {path.stem!r} is already defined in {out[path.stem]}")
            out[path.stem] = path
    return out


def entries() -> list[str]:
    """Ids of every registered entry, sorted."""
    return sorted(entry_paths())


def entry_hash(path: Path) -> str:
    """Content hash of an entry file (first 16 hex digits of SHA-256)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@lru_cache(maxsize=64)
def _load_path(path: Path, mtime: float) -> Entry:
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise EntryError(f"{path}: not valid TOML: {exc}") from None
    entry = parse_entry(raw, path)
    try:
        module = entry.model_module()
    except ImportError as exc:
        raise EntryError(f"{path}: field 'model.module': cannot import mechzoo.models.{entry.model.module} ({exc})") from None
    needs = {"simulator": ("simulate",), "likelihood": ("loglik",)}
    for route, funcs in needs.items():
        if getattr(entry.routes, route):
            missing = [f for f in funcs if not hasattr(module, f)]
            if missing:
                raise EntryError(
                    f"{path}: field 'routes.{route}': mechzoo.models.{entry.model.module} has no {missing}; "
                    f"set {route} = false or implement it"
                )
    return entry


def load(entry_id: str) -> Entry:
    """Load and validate the entry ``entry_id``.

    Raises
    ------
    UnknownEntryError
        With the closest registered ids.
    EntryError
        If the entry file is invalid (file, field and fix named).
    """
    paths = entry_paths()
    if entry_id not in paths:
        close = difflib.get_close_matches(entry_id, paths, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownEntryError(f"unknown entry {entry_id!r}{hint} (registered: {', '.join(sorted(paths)) or 'none'})")
    path = paths[entry_id]
    return _load_path(path, path.stat().st_mtime)


def reference_results(entry_id: str) -> dict[str, Path]:
    """Reference results shipped for ``entry_id``: map of method to netCDF path (may be empty).

    A reference result (DESIGN.md §2, tier 2; posteriordb style) is a fit run once outside CI with
    the settings, seed and diagnostics stored in its attrs, e.g. the NUTS posterior of
    ``mesogif-2pop`` or the NPE posterior of ``pyloric-stg`` for its experimental rhythm.
    """
    load(entry_id)  # unknown ids raise with suggestions
    prefix = f"{entry_id}-reference-"
    return {p.name[len(prefix) : -len(".nc")]: p for p in sorted(REFERENCE_DIR.glob(f"{prefix}*.nc"))}


def reference_result(entry_id: str, method: str | None = None):
    """Load the reference result of ``entry_id`` for ``method`` (the only one when ``None``).

    Returns the common result object (``xarray.DataTree``, see :func:`mechzoo.load_result`).

    Raises
    ------
    LookupError
        No reference result for that entry/method (the message lists what exists), or several
        and no ``method`` given.
    """
    from mechzoo.inference.result import load as load_result

    found = reference_results(entry_id)
    if method is None:
        if len(found) != 1:
            raise LookupError(f"entry {entry_id!r} has {len(found)} reference results ({', '.join(found) or 'none'}); pass method=")
        method = next(iter(found))
    if method not in found:
        raise LookupError(f"entry {entry_id!r} has no reference result for method {method!r} (shipped: {', '.join(found) or 'none'})")
    return load_result(found[method])
