"""Shared test configuration: quiet, single-threaded numerics, a private cache folder."""

import os

os.environ.setdefault("MECHZOO_CACHE", os.path.join(os.path.dirname(__file__), "..", ".mechzoo-cache", "tests"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
