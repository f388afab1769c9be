"""Parameter recovery on meso-generated 2-pop data (issue 4 acceptance; run outside CI).

1. the 4 connectivities alone (others pinned at the truth), MAP from prior draws;
2. all 14 parameters, MAP with >= 10 restarts from prior draws.

Data: the entry's default recipe (20 s of the mesoscopic model at the ground truth, sine
training input, seed 1; the likelihood sums the 10 s after the 10 s burn-in). Writes each
result (netCDF) and a JSON summary to ``--out``.

    .venv/bin/python scripts/mesogif_recovery.py --out results/mesogif-recovery
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import mechzoo
from mechzoo.inference.result import posterior_draws_flat

ENTRY = "mesogif-2pop"


def _truth(result) -> np.ndarray:
    """The ground truth (the entry's reference values) in the result's flat order."""
    free = list(result["posterior"].data_vars)
    specs = [p for p in mechzoo.load(ENTRY).parameter_specs() if p.name in free]
    return np.concatenate([np.ravel(np.asarray(p.reference, float)) for p in specs])


def _summary(result, wall: float) -> dict:
    draws, names = posterior_draws_flat(result)
    truth = _truth(result)
    rel = np.abs(draws[0] - truth) / np.abs(truth)
    restarts = result["map_restarts"].to_dataset()
    return {
        "names": names,
        "estimate": draws[0].tolist(),
        "truth": truth.tolist(),
        "relative_error": rel.tolist(),
        "median_relative_error": float(np.median(rel)),
        "max_relative_error": float(np.max(rel)),
        "restarts": int(restarts.sizes["restart"]),
        "converged": int(restarts["converged"].sum()),
        "log_posterior": restarts["log_posterior"].values.tolist(),
        "wall_time_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/mesogif-recovery")
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["w", "all"], default=None)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    runs = [("connectivity", ["w"], 4), ("all", None, args.restarts)]
    for name, free, restarts in runs:
        if args.only and (args.only == "w") != (name == "connectivity"):
            continue
        t0 = time.perf_counter()
        res = mechzoo.fit(ENTRY, method="map", seed=args.seed, free=free, restarts=restarts, workers=args.workers,
                          out=out / f"map-{name}.nc")
        summary[name] = _summary(res, time.perf_counter() - t0)
        summary_path.write_text(json.dumps(summary, indent=1))
        print(name, json.dumps({k: summary[name][k] for k in ("median_relative_error", "max_relative_error", "converged", "wall_time_s")}))


if __name__ == "__main__":
    main()
