"""Throughput of the mesoGIF simulator (for ``mechzoo bench``; no timing assertions in tests).

Reports simulated seconds per wall-clock second for a single simulation and for batches, on
the 2- or 4-population ground truth with the training input of spec §6.2. The baseline in the
same run is the single simulation (batch size 1); batched figures are also given as a ratio
to it. Compilation is excluded (a warm-up call runs first).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np

from . import meso, parameters, stimuli

__all__ = ["benchmark_throughput"]


def benchmark_throughput(
    batch_sizes: Sequence[int] = (1, 64),
    duration_s: float = 2.0,
    *,
    populations: int = 2,
    K: int | str = meso.DEFAULT_K,
    variant: str = "canonical",
    n_threads: int | None = None,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, object]:
    """Measure simulated seconds per wall second for each batch size.

    Parameters
    ----------
    batch_sizes : sequence of int
        Batch sizes to time, e.g. ``(1, 64)``.
    duration_s : float
        Simulated time per realisation (s).
    populations : {2, 4}
    K, variant
        As in :func:`.meso.simulate`.
    n_threads : int, optional
        Threads over the batch; default ``os.cpu_count()``.
    repeats : int
        Timed repetitions per batch size; the fastest is reported.
    seed : int
        Base seed (stimulus and emissions).

    Returns
    -------
    dict
        ``{"unit": "simulated s / wall s", "results": [{"batch_size", "wall_s",
        "simulated_s_per_wall_s", "ratio_to_single"}...], "config": {...}}``.
    """
    names = parameters.population_names(populations)
    params = parameters.two_population() if len(names) == 2 else parameters.four_population()
    inputs = stimuli.make_stimulus({"kind": "sine", "seed": seed}, populations=len(names), duration_s=duration_s)
    threads = int(n_threads or os.cpu_count() or 1)
    # warm-up (compilation / cache load)
    meso.simulate(meso.broadcast_parameters(params, 1), inputs[:5], seeds=np.array([seed], np.uint64), K=K, variant=variant)
    results = []
    single = None
    for B in batch_sizes:
        batch = meso.broadcast_parameters(params, int(B))
        seeds = np.arange(seed, seed + int(B), dtype=np.uint64)
        best = np.inf
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            meso.simulate(batch, inputs, seeds=seeds, K=K, variant=variant, n_threads=threads)
            best = min(best, time.perf_counter() - t0)
        rate = int(B) * duration_s / best
        if single is None and int(B) == 1:
            single = rate
        results.append({"batch_size": int(B), "wall_s": best, "simulated_s_per_wall_s": rate})
    for r in results:
        r["ratio_to_single"] = r["simulated_s_per_wall_s"] / single if single else None
    return {
        "unit": "simulated s / wall s",
        "baseline": "batch_size 1 (single simulation) in the same run",
        "results": results,
        "config": {
            "populations": len(names),
            "K": meso.history_size(params, K, variant=variant).tolist(),
            "variant": variant,
            "duration_s": duration_s,
            "n_threads": threads,
        },
    }
