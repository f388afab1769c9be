"""One amortised NPE estimator for the ten Allen cells (``hh-allen``; issue 5; outside CI).

Trains ``hh-allen`` once (100,000 simulations over the prior and the protocol covariates J and
V0, MAF, minibatch 500; a fresh cache folder unless ``--cache``), then fits each of the ten
published Allen observations with that estimator (``mechzoo.fit("hh-allen", "allen-<id>")``,
which finds it in the cache) and writes a JSON summary: training cost, SBC of the estimator (once:
it is the same for every observation), per-cell fit wall time (4,000 posterior draws and the
posterior predictive check; the estimator is not retrained),
the posterior of the echoed covariates against the cell's protocol, and posterior predictive
spike counts (100 posterior draws simulated under the cell's protocol) against the observed.

    .venv/bin/python scripts/hh_allen_npe.py --out results/hh-allen
    .venv/bin/python scripts/hh_allen_npe.py --out results/hh-allen --cache /tmp/mechzoo-hh-allen-XXXX  # reuse a trained one
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
    ap.add_argument("--out", default="results/hh-allen")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="cache folder (default: a fresh temporary one)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["MECHZOO_CACHE"] = args.cache or tempfile.mkdtemp(prefix="mechzoo-hh-allen-")
    import mechzoo
    from mechzoo.inference.result import posterior_draws_flat, result_attrs

    entry = mechzoo.load("hh-allen")
    cells = [name for name in entry.observations if name.startswith("allen-")]
    t0 = time.perf_counter()
    first = mechzoo.fit("hh-allen", cells[0], method="npe", seed=args.seed)
    train_wall = time.perf_counter() - t0
    attrs = result_attrs(first)
    summary: dict = {
        "training": {
            "wall_time_s": train_wall,
            "simulation_wall_time_s": attrs.get("simulation_wall_time_s"),
            "training_wall_time_s": attrs.get("training_wall_time_s"),
            "epochs_trained": attrs.get("epochs_trained"),
            "n_simulations": attrs.get("n_simulations"),
            "n_invalid_simulations": attrs.get("n_invalid_simulations"),
            "density_estimator": entry.route_settings("npe").get("density_estimator"),
        },
        "sbc": json.loads(mechzoo.diagnose(first).to_json(orient="index")),
        "cells": {},
    }
    for cell in cells:
        t = time.perf_counter()
        res = mechzoo.fit("hh-allen", cell, method="npe", seed=args.seed, sbc_simulations=0)  # SBC is the estimator's: run once above
        wall = time.perf_counter() - t
        a = result_attrs(res)
        assert int(a.get("reused_estimator", 0)) == 1, "the cell fit retrained the estimator"
        draws, names = posterior_draws_flat(res)
        x_o = np.asarray(entry.observations[cell].features, dtype=np.float64)
        ppc = res["posterior_predictive"].to_dataset()
        feats = ppc["features"].values.reshape(-1, ppc.sizes["feature"])
        spikes = feats[:, 0][np.isfinite(feats[:, 0])]
        cov = {n: {"posterior_mean": float(draws[:, names.index(n)].mean()), "posterior_sd": float(draws[:, names.index(n)].std()),
                   "cell": float(x_o[7 + k])} for k, n in enumerate(("J_step", "V0"))}
        summary["cells"][cell] = {
            "fit_wall_time_s": wall,
            "sampling_wall_time_s": a.get("sampling_wall_time_s"),
            "ppc_wall_time_s": a.get("ppc_wall_time_s"),
            "observed_spike_count": float(x_o[0]),
            "ppc_spike_count_median": float(np.median(spikes)) if spikes.size else None,
            "ppc_spike_count_q05_q95": [float(q) for q in np.quantile(spikes, [0.05, 0.95])] if spikes.size else None,
            "ppc_fraction_within_2_spikes": float(np.mean(np.abs(spikes - x_o[0]) <= 2)) if spikes.size else None,
            "ppc_n_invalid": int(ppc.attrs.get("n_invalid_draws", 0)),
            "covariates": cov,
            "posterior_mean": dict(zip(names, draws.mean(axis=0).tolist())),
            "posterior_sd": dict(zip(names, draws.std(axis=0).tolist())),
        }
        print(cell, f"{wall:.1f} s", "spikes obs", x_o[0], "ppc median", summary["cells"][cell]["ppc_spike_count_median"], flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps(summary["training"], indent=1))


if __name__ == "__main__":
    main()
