"""The zoo cache folder (DESIGN.md §6): simulation banks, trained estimators, gallery fits."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """``path`` if given, else ``$MECHZOO_CACHE``, else the user cache folder (platformdirs)."""
    if path is not None:
        return Path(path)
    env = os.environ.get("MECHZOO_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mechzoo"))
