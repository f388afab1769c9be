"""Throughput of the mesoGIF simulator (for ``mechzoo bench``; no timing assertions in tests).

Reports simulated seconds per wall-clock second for a single simulation and for batches, on
the 2- or 4-population ground truth with the training input of spec §6.2. The baseline in the
same run is the single simulation (batch size 1); batched figures are also given as a ratio
to it, and per core (divided by the number of threads that can be busy, ``min(threads, B)``).
With ``nest=True`` NEST's ``gif_pop_psc_exp`` (one thread) is timed in the same run on the same
configuration (same parameters, input kind, duration and ``K``), and every figure is also given
as a ratio per core to it. Compilation is excluded (a warm-up call runs first).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np

from . import meso, parameters, stimuli

__all__ = ["benchmark_throughput"]


def _nest_len_kernel(K: int | str | Sequence[int], Ks: np.ndarray) -> int | str | list[int]:
    """NEST ``len_kernel`` equivalent to the mechzoo ``K`` (``"auto-per-population"`` is NEST's rule)."""
    if isinstance(K, str) and K == "auto-per-population":
        return "auto"
    return [int(k) for k in Ks] if len(set(Ks.tolist())) > 1 else int(Ks[0])


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
    nest: bool = False,
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
    nest : bool, default False
        Also time NEST ``gif_pop_psc_exp`` (needs ``nest-simulator``; 2 populations only, sine
        input of spec §6.2; best of ``repeats`` runs of ``max(duration_s, 5)`` s, each in a fresh
        process, kernel set-up and read-out included, import excluded).

    Returns
    -------
    dict
        ``{"unit": "simulated s / wall s", "results": [{"batch_size", "wall_s",
        "simulated_s_per_wall_s", "threads_busy", "simulated_s_per_wall_s_per_core",
        "ratio_to_single"[, "ratio_per_core_to_nest"]}...], "config": {...}[, "nest": {...}]}``.
    """
    names = parameters.population_names(populations)
    params = parameters.two_population() if len(names) == 2 else parameters.four_population()
    inputs = stimuli.make_stimulus({"kind": "sine", "seed": seed}, populations=len(names), duration_s=duration_s)
    threads = int(n_threads or os.cpu_count() or 1)
    Ks = meso.history_size(params, K, variant=variant)
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
        busy = min(threads, int(B))
        if single is None and int(B) == 1:
            single = rate
        results.append({
            "batch_size": int(B), "wall_s": best, "simulated_s_per_wall_s": rate, "threads_busy": busy,
            "simulated_s_per_wall_s_per_core": rate / busy,
        })
    for r in results:
        r["ratio_to_single"] = r["simulated_s_per_wall_s"] / single if single else None
    out: dict[str, object] = {
        "unit": "simulated s / wall s",
        "baseline": "batch_size 1 (single simulation) in the same run",
        "results": results,
        "config": {
            "populations": len(names),
            "K": Ks.tolist(),
            "variant": variant,
            "duration_s": duration_s,
            "n_threads": threads,
        },
    }
    if nest:
        from . import nest_reference

        if len(names) != 2:
            raise ValueError("nest=True compares the 2-population configuration only")
        len_kernel = _nest_len_kernel(K, Ks)
        # the timed NEST call includes kernel set-up and read-out (10-20 ms): at least 5 s of
        # simulated time keep their share small (in NEST's favour)
        nest_duration = max(float(duration_s), 5.0)
        nest_rate = max(
            nest_reference.nest_throughput(duration_s=nest_duration, seed=seed, len_kernel=len_kernel)
            for _ in range(max(1, repeats))
        )
        out["nest"] = {"model": "gif_pop_psc_exp", "len_kernel": len_kernel, "threads": 1,
                       "duration_s": nest_duration, "simulated_s_per_wall_s": nest_rate}
        for r in results:
            r["ratio_per_core_to_nest"] = r["simulated_s_per_wall_s_per_core"] / nest_rate
    return out
