"""The 100k-simulation NPE fit of ``hh-pospischil`` on its synthetic observation (issue 5; outside CI).

Runs ``mechzoo.fit("hh-pospischil", method="npe")`` with the entry's settings (100,000
simulations, NSF, SBC on 200 held-out simulations, posterior predictive check) in a fresh cache
folder, so that the wall time covers simulation *and* training, and writes a JSON summary:
simulation and training times, epochs, the truth's position in the 95 % intervals, SBC
rank-uniformity p-values per parameter, and the posterior predictive check of the median draw.

    .venv/bin/python scripts/hh_npe_100k.py --out results/hh-npe-100k
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/hh-npe-100k")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="cache folder (default: a fresh temporary one)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["MECHZOO_CACHE"] = args.cache or tempfile.mkdtemp(prefix="mechzoo-hh100k-")
    import mechzoo
    from mechzoo.inference.result import posterior_draws_flat, result_attrs

    t0 = time.perf_counter()
    res = mechzoo.fit("hh-pospischil", method="npe", seed=args.seed, out=out / "npe.nc")
    wall = time.perf_counter() - t0
    attrs = result_attrs(res)
    table = mechzoo.diagnose(res)
    draws, names = posterior_draws_flat(res)
    truth = np.concatenate([np.ravel(np.asarray(p.reference, float)) for p in mechzoo.load("hh-pospischil").parameter_specs()])
    lo, hi = np.quantile(draws, [0.025, 0.975], axis=0)
    summary = {
        "wall_time_s": wall,
        "simulation_wall_time_s": attrs.get("simulation_wall_time_s"),
        "training_wall_time_s": attrs.get("training_wall_time_s"),
        "epochs_trained": attrs.get("epochs_trained"),
        "n_simulations": attrs.get("n_simulations"),
        "n_invalid_simulations": attrs.get("n_invalid_simulations"),
        "truth_inside_95": {n: bool(a <= t <= b) for n, t, a, b in zip(names, truth, lo, hi)},
        "diagnose": json.loads(table.to_json(orient="index")),
        "diagnose_attrs": {k: v for k, v in table.attrs.items() if isinstance(v, (int, float, str, bool))},
        "ppc": table.attrs.get("ppc"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps({k: summary[k] for k in ("wall_time_s", "simulation_wall_time_s", "training_wall_time_s",
                                               "epochs_trained", "truth_inside_95")}, indent=1))
    print(table.to_string())


if __name__ == "__main__":
    main()
