"""mechzoo — a zoo of mechanistic models of neural dynamics with Bayesian inference built in.

Public API (DESIGN.md §7)::

    import mechzoo
    mechzoo.entries()                        # ids of the registered entries
    entry = mechzoo.load("linear-gaussian")  # a validated Entry
    ds = mechzoo.simulate("linear-gaussian", n=3, seed=1)
    result = mechzoo.fit("linear-gaussian", method="nuts")   # xarray.DataTree (ArviZ)
    mechzoo.diagnose(result)                 # one table for any route
    mechzoo.compare([result, other])         # tidy table + C2ST
    mechzoo.reference_result("pyloric-stg")  # a shipped reference fit (if any)
"""

from mechzoo.inference.result import load as load_result
from mechzoo.inference.result import save as save_result

from .api import compare, default_data, diagnose, fit, problem, simulate
from .registry import UnknownEntryError, entries, load, reference_result, reference_results
from .schema import Entry, EntryError

__version__ = "0.1.0"

__all__ = [
    "Entry",
    "EntryError",
    "UnknownEntryError",
    "compare",
    "default_data",
    "diagnose",
    "entries",
    "fit",
    "load",
    "load_result",
    "problem",
    "reference_result",
    "reference_results",
    "save_result",
    "simulate",
]
