"""Generalisation of a MAP fit to micro-generated data (issue 4; René et al. 2020 Fig. 2; run outside CI).

1. MAP (14 parameters, ``--restarts`` restarts from prior draws) on the entry's ``micro`` data:
   20 s of the brian2 GIF network at the ground truth, sine training input.
2. Test input: a frozen OU current (spec §6.3, seed ``--ou-seed``), 20 s; the first 10 s are
   burn-in and ``[10, 19)`` s is compared, in 10 ms bins (spec §7.1).
3. Ensembles of ``--trials`` realisations each (different seeds): the micro network at the truth
   (reference), the meso model at the MAP ("inferred") and at the truth ("theory").
4. Trial-averaged ρ̄ and RMSĒ with bootstrap SDs (spec §7.2; ``models.mesogif.measures``).

Writes ``summary.json`` (and the MAP result) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import mechzoo
from mechzoo.inference.problem import seeds_for
from mechzoo.inference.result import load
from mechzoo.models import mesogif
from mechzoo.models.mesogif import measures

ENTRY = "mesogif-2pop"


def _jsonable(d):
    return {k: (v.tolist() if isinstance(v, np.ndarray) else float(v) if isinstance(v, np.floating) else v) for k, v in d.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/mesogif-generalisation")
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--ou-seed", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--map", default=None, help="reuse a saved MAP result instead of fitting")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    t0 = time.perf_counter()
    if args.map:
        fit = load(args.map)
    else:
        fit = mechzoo.fit(ENTRY, "micro", method="map", seed=args.seed, restarts=args.restarts, workers=args.workers,
                          out=out / "map-micro.nc")
    summary["map_wall_time_s"] = time.perf_counter() - t0
    entry = mechzoo.load(ENTRY)
    specs = entry.parameter_specs()
    best = {p.name: fit["posterior"][p.name].values[0, 0] for p in specs}
    truth = {p.name: np.asarray(p.reference, float) for p in specs}
    summary["map"] = {k: np.ravel(v).tolist() for k, v in best.items()}
    config = {**entry.model.config, "stimulus": {"kind": "ou", "seed": args.ou_seed}}
    N = np.asarray(entry.fixed["N"].value, float)
    R = args.trials

    def ensemble(params, generator, stream):
        cfg = {**config, "generator": generator}
        batch = {k: np.broadcast_to(v, (R, *np.shape(v))).copy() for k, v in params.items()}
        t = time.perf_counter()
        counts = mesogif.simulate(batch, config=cfg, seeds=seeds_for(args.seed, R, stream=stream))["counts"]
        summary[f"{stream}_wall_time_s"] = time.perf_counter() - t
        return measures.prepare(counts, N)

    inferred = ensemble(best, "meso", "inferred")
    theory = ensemble(truth, "meso", "theory")
    reference = ensemble(truth, "micro", "micro-reference")
    summary["trials"] = R
    summary["inferred"] = _jsonable(measures.trial_averaged_measures(reference, inferred, seed=1))
    summary["theory"] = _jsonable(measures.trial_averaged_measures(reference, theory, seed=1))
    summary["mean_rates_hz"] = {
        "micro": reference.mean((0, 1)).tolist(), "inferred": inferred.mean((0, 1)).tolist(), "theory": theory.mean((0, 1)).tolist()
    }
    summary_path.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: summary[k] for k in ("inferred", "theory", "mean_rates_hz")}, indent=1))


if __name__ == "__main__":
    main()
