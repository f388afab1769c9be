"""Reference NUTS posterior of ``mesogif-2pop`` on its default data (issue 4; run outside CI).

14 parameters, 20 s of meso-generated data (sine input, seed 1; 10 s burn-in, 10 s summed),
2 chains x ``--draws`` after ``--tune``, started at a saved MAP fit (``--init``, e.g. from
``scripts/mesogif_recovery.py``) with a dense metric from the curvature there
(``mass_matrix="hessian"``), in the entry's NUTS coordinates (J_θ in softplus coordinates, see
``sampling_transforms`` in ``zoo/entries/mesogif-2pop.toml``). Each chain runs in its own process and writes its draws and its
sampler state to ``<out>/checkpoint`` every 10 iterations: **rerun the same command to resume**
an interrupted run exactly where it stopped (``mechzoo.inference.mcmc.load_checkpoint`` reads
what was drawn at any time). The result goes to ``<out>/nuts.nc`` and, with ``--install``, to
the entry's reference posterior shipped with the package. A resumed run appends this call's wall
time to ``legs_wall_time_s`` of the previous summary (and of the installed result's attrs), so
the cost of a run spread over several sessions is not lost; ``sampling_wall_time_s_per_chain``
(checkpoint clock, summed over legs) is NaN for checkpoints written before that clock existed.

    .venv/bin/python scripts/mesogif_reference_nuts.py --init results/mesogif-recovery/map-all.nc
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mechzoo
import numpy as np
from mechzoo.inference.result import posterior_draws_flat, result_attrs
from mechzoo.registry import REFERENCE_DIR

ENTRY = "mesogif-2pop"
INSTALL = REFERENCE_DIR / "mesogif-2pop-reference-nuts.nc"  # what mechzoo.reference_result loads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", required=True, help="saved MAP result to start from")
    ap.add_argument("--out", default="results/mesogif-nuts")
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=500, help="tuning iterations (the run in results/mesogif-nuts uses 500)")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--cores", type=int, default=2, help="chains run at once (1: chain 0 to the end, then chain 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mass-matrix", default="hessian", choices=["diag", "full", "hessian"])
    ap.add_argument("--install", action="store_true", help="copy the result to the entry's reference posterior")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = mechzoo.fit(
        ENTRY, method="nuts", seed=args.seed, init=args.init, draws=args.draws, tune=args.tune, chains=args.chains,
        cores=args.cores, mass_matrix=args.mass_matrix, checkpoint_dir=str(out / "checkpoint"), checkpoint_every=10,
        out=out / "nuts.nc",
    )
    wall = time.perf_counter() - t0
    previous = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    resumed = "resumed_from" in res.attrs
    legs = [*previous.get("legs_wall_time_s", [previous["wall_time_s"]] if "wall_time_s" in previous else []), wall] if resumed else [wall]
    table = mechzoo.diagnose(res)
    draws, names = posterior_draws_flat(res)
    truth = np.concatenate([np.ravel(np.asarray(p.reference, float)) for p in mechzoo.load(ENTRY).parameter_specs()])
    lo, hi = np.quantile(draws, [0.025, 0.975], axis=0)
    inside = (truth >= lo) & (truth <= hi)
    stats = res["sample_stats"]
    summary = {
        "wall_time_s": float(sum(legs)),
        "legs_wall_time_s": legs,
        "sampling_wall_time_s_per_chain": [float(t) for t in result_attrs(res).get("sampling_wall_time_s_per_chain", [])],
        "draws": args.draws, "tune": args.tune, "chains": args.chains, "mass_matrix": args.mass_matrix,
        "r_hat_max": float(table["r_hat"].max()),
        "ess_bulk_min": float(table["ess_bulk"].min()),
        "divergences": int(stats["diverging"].sum()),
        "mean_tree_depth": float(stats["tree_depth"].mean()),
        "n_gradient_evaluations": int(res.attrs["n_gradient_evaluations"]),
        "truth_inside_95": int(inside.sum()),
        "per_parameter": {n: {"truth": float(t), "q2.5": float(a), "q97.5": float(b), "inside": bool(i)}
                          for n, t, a, b, i in zip(names, truth, lo, hi, inside)},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(table.to_string())
    print(json.dumps({k: v for k, v in summary.items() if k != "per_parameter"}, indent=1))
    if args.install:
        res.attrs["legs_wall_time_s"] = legs
        mechzoo.save_result(res, INSTALL)
        print("installed", INSTALL)


if __name__ == "__main__":
    main()
