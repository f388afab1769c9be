"""Command line: ``mechzoo list | show ID | simulate ID | fit ID --method M | bench NAME``.

Bad input (unknown entry, method, file, setting) ends with a one-line error and exit code 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

__all__ = ["main"]


class CLIError(Exception):
    """An error meant for the user: printed on one line, exit code 2."""


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _settings(pairs: Sequence[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise CLIError(f"--set expects KEY=VALUE (got {pair!r})")
        k, v = pair.split("=", 1)
        out[k.strip()] = _parse_value(v)
    return out


def _cmd_list(args) -> int:
    import mechzoo

    for eid in mechzoo.entries():
        e = mechzoo.load(eid)
        print(f"{eid:24s} {', '.join(e.methods()):22s} {e.title}")
    return 0


def _cmd_show(args) -> int:
    import mechzoo

    e = mechzoo.load(args.id)
    print(f"{e.id}: {e.title}\n\n{e.summary}\n")
    print(f"model: mechzoo.models.{e.model.module}   routes: {', '.join(e.methods())} (default {e.default_method()})")
    if e.references:
        print("references: " + "; ".join(e.references))
    print("\nfree parameters:")
    print(f"  {'name':14s} {'dims':22s} {'unit':8s} {'prior':40s} reference")
    for p in e.parameters:
        print(f"  {p.name:14s} {str(p.dims or ''):22s} {p.unit:8s} {p.prior_spec.describe():40s} {p.reference}")
    if e.fixed:
        print("\nfixed:")
        for k, f in e.fixed.items():
            print(f"  {k:14s} = {f.value} {f.unit}  {f.meaning}")
    print("\ndata recipes: " + ", ".join(e.data) + ("   observations: " + ", ".join(e.observations) if e.observations else ""))
    return 0


def _cmd_simulate(args) -> int:
    import mechzoo

    ds = mechzoo.simulate(args.id, n=args.n, seed=args.seed, data=args.data)
    if args.out:
        ds.to_netcdf(args.out, engine="h5netcdf")
        print(f"wrote {args.out}")
    else:
        print(ds)
    return 0


def _cmd_fit(args) -> int:
    import numpy as np

    import mechzoo

    settings = _settings(args.set)
    result = mechzoo.fit(args.id, data=args.data, method=args.method, seed=args.seed, progress=not args.quiet, out=args.out, **settings)
    table = mechzoo.diagnose(result)
    attrs = table.attrs
    print(f"\n{attrs['entry_id']} · {attrs['route']} · seed {args.seed} · wall {attrs['wall_time_s']:.1f} s")
    with np.printoptions(precision=4):
        print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    tables = {k: v for k, v in attrs.items() if isinstance(v, dict) and v and all(isinstance(r, dict) for r in v.values())}
    extra = {k: v for k, v in attrs.items() if k not in ("entry_id", "route", "wall_time_s", *tables) and v is not None}
    print("  " + "  ".join(f"{k}={v}" for k, v in extra.items()))
    for name, rows in tables.items():  # e.g. the posterior predictive check, one row per feature
        import pandas as pd

        print(f"\n{name}:")
        print(pd.DataFrame.from_dict(rows, orient="index").to_string(float_format=lambda v: f"{v:.4g}"))
    if args.out:
        print(f"result saved to {args.out}")
    return 0


def _cmd_bench(args) -> int:
    from .bench import BENCHMARKS, run_benchmark

    if args.name not in BENCHMARKS:
        import difflib

        close = difflib.get_close_matches(args.name, BENCHMARKS, n=2)
        raise CLIError(f"unknown benchmark {args.name!r}" + (f"; did you mean {close[0]!r}?" if close else "") + f" (known: {', '.join(BENCHMARKS)})")
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # libraries print progress; keep stdout for the figures
        figures = run_benchmark(args.name, quick=args.quick)
    if args.json:
        print(json.dumps(figures, indent=None, default=float))
    else:
        for k, v in figures.items():
            print(f"{k:40s} {v}")
    return 0


def _cmd_gallery(args) -> int:
    if args.action != "build":
        raise CLIError(f"unknown gallery action {args.action!r}; use: mechzoo gallery build [--fast] [--out DIR]")
    from . import gallery

    out = gallery.build(fast=args.fast, out=args.out, progress=not args.quiet)
    print(f"gallery built: {out}/index.html")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mechzoo", description="A zoo of mechanistic neural models with Bayesian inference.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the entries").set_defaults(func=_cmd_list)
    s = sub.add_parser("show", help="show an entry")
    s.add_argument("id")
    s.set_defaults(func=_cmd_show)
    s = sub.add_parser("simulate", help="simulate an entry at its reference parameters")
    s.add_argument("id")
    s.add_argument("--n", type=int, default=1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--data", default="default", help="data recipe whose configuration to use")
    s.add_argument("--out", help="write the simulations to this netCDF file")
    s.set_defaults(func=_cmd_simulate)
    s = sub.add_parser("fit", help="fit an entry and print posterior summary and diagnostics")
    s.add_argument("id")
    s.add_argument("--method", help="map, nuts, hmc or npe (default: the entry's default)")
    s.add_argument("--data", help="data file (.nc result/observed_data or .npz), or a recipe/observation name")
    s.add_argument("--out", help="save the result (.nc or .zarr)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="route setting, e.g. --set draws=500")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_fit)
    s = sub.add_parser("bench", help="run a named benchmark")
    s.add_argument("name")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    s.set_defaults(func=_cmd_bench)
    s = sub.add_parser("gallery", help="build the gallery site (sphinx-gallery)")
    s.add_argument("action", nargs="?", default="build", help="build")
    s.add_argument("--fast", action="store_true", help="tiny budgets (pages are marked as such)")
    s.add_argument("--out", help="output folder (default gallery/_build/html)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_gallery)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .registry import UnknownEntryError
    from .schema import EntryError

    import os

    try:
        return int(args.func(args) or 0)
    except (CLIError, UnknownEntryError, EntryError, ValueError, FileNotFoundError, TypeError) as exc:
        if os.environ.get("MECHZOO_DEBUG"):
            raise
        msg = str(exc).strip().replace("\n", " ")
        print(f"mechzoo: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mechzoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
