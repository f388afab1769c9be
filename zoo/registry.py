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

__all__ = ["entries", "load", "entry_paths", "UnknownEntryError", "entry_hash"]

ENTRY_DIR = Path(__file__).parent / "entries"


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
