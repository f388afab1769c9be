"""Prior campaign of ``pyloric-stg`` (issue 7; outside CI): 10^5 prior simulations, valid fraction.

The bank is the restricted-prior route's pilot (seed stream ``"restrict"``, route seed
``--seed``), so ``mechzoo.fit("pyloric-stg", method="npe", restrict={"simulations": N})`` with
the same seed and N reuses it instead of simulating again. The bank is resumable: rerun the
same command after an interruption (``wall_time_s`` then covers only the rows this invocation
simulated, ``rows_before`` of them were already in the bank). Writes ``<out>/campaign.json``:
wall time, simulations per second, the valid fraction (all 18 features finite) and per-feature
NaN counts.

    .venv/bin/python scripts/pyloric_campaign.py --n 100000 --out results/pyloric
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="local processes (default: all cores)")
    ap.add_argument("--out", default="results/pyloric")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import mechzoo
    from mechzoo.inference.npe import simulate_bank

    prob = mechzoo.problem("pyloric-stg")
    rows_before = _rows_in_bank(prob, args.seed)
    t0 = time.perf_counter()
    theta, x = simulate_bank(prob, args.n, seed=args.seed, stream="restrict", workers=args.workers)
    wall = time.perf_counter() - t0
    finite = np.isfinite(x)
    valid = finite.all(axis=1)
    summary = {
        "n_simulations": int(args.n),
        "seed": args.seed,
        "stream": "restrict",
        "rows_before": rows_before,
        "wall_time_s": wall,
        "simulations_per_s": (args.n - rows_before) / wall,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "n_valid": int(valid.sum()),
        "valid_fraction": float(valid.mean()),
        "nan_counts": dict(zip(prob.feature_names(), (~finite).sum(axis=0).tolist())),
    }
    (out / "campaign.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


def _rows_in_bank(prob, seed: int) -> int:
    """Rows the pilot bank already holds (0 if it does not exist yet)."""
    from mechzoo.inference.cache import cache_dir
    from mechzoo.inference.campaign import open_bank

    try:
        return len(open_bank(prob, seed=seed, stream="restrict", cache_dir=cache_dir()))
    except FileNotFoundError:
        return 0


if __name__ == "__main__":
    main()
