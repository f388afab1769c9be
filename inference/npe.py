"""Neural posterior estimation route through ``sbi`` (DESIGN.md §4).

Single-round, amortised NPE (``sbi.inference.NPE``): θ is drawn from the entry's prior (the torch
realisation of the same declaration the likelihood routes use), simulated in batches, reduced to
the entry's summary features, and a conditional density estimator (``maf`` by default; ``nsf``
as in sbibm) is trained on the valid pairs. Invalid simulations (any non-finite feature) are
counted, excluded from training and from calibration, and reported in the result attributes.

The trained posterior is saved (``estimator_path`` attribute) so that new observations can be
fitted without re-simulating (:func:`posterior_for`). Simulation-based calibration (Talts et al.
2018) on held-out simulations from a separate seed stream is stored in the ``calibration`` group
and summarised by :func:`mechzoo.diagnose`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr

from .problem import Problem, seeds_for
from .result import make_result

__all__ = ["run", "DEFAULTS", "simulate_bank", "load_posterior"]

DEFAULTS: dict[str, Any] = {
    "num_simulations": 2000,
    "density_estimator": "maf",
    "num_draws": 4000,
    "chunk_size": 1000,
    "training_batch_size": 200,
    "learning_rate": 5e-4,
    "stop_after_epochs": 20,
    "max_num_epochs": 500,
    "sbc_simulations": 100,
    "sbc_draws": 200,
}


def simulate_bank(problem: Problem, n: int, *, seed: int, stream: str = "simulate", chunk_size: int = 1000, progress: bool = True):
    """Draw ``n`` parameter sets from the prior and simulate their features in chunks.

    Seeds: prior draws and per-simulation seeds come from ``(seed, stream)`` only, so the bank
    does not depend on ``chunk_size``. Returns ``(theta (n, D), x (n, F))``.
    """
    from tqdm.auto import tqdm

    theta = problem.sample_prior(n, seed=int(seeds_for(seed, 1, stream=stream + "/prior")[0] % (2**63)))
    sim_seeds = seeds_for(seed, n, stream=stream)
    xs = []
    with tqdm(total=n, desc=f"simulate {problem.entry_id}", unit="sim", disable=not progress) as bar:
        for start in range(0, n, chunk_size):
            stop = min(n, start + chunk_size)
            xs.append(problem.simulate_features(theta[start:stop], sim_seeds[start:stop]))
            bar.update(stop - start)
    return theta, np.concatenate(xs, axis=0)


def _cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("MECHZOO_CACHE", user_cache_dir("mechzoo")))


def run(problem: Problem, *, settings: Mapping[str, Any] | None = None, seed: int = 0, progress: bool = True) -> xr.DataTree:
    """Train NPE on a fresh simulation bank and return posterior draws at the observation."""
    import torch
    from sbi.inference import NPE

    unknown = set(dict(settings or {})) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown npe setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **dict(settings or {})}
    n = int(settings["num_simulations"])
    if n < 10:
        raise ValueError(f"num_simulations must be >= 10 (got {n})")
    t0 = time.perf_counter()
    x_o = problem.observed_features()
    if not np.all(np.isfinite(x_o)):
        raise ValueError(f"the observed features contain NaN/inf ({problem.feature_names()}); NPE needs a finite observation")

    theta, x = simulate_bank(problem, n, seed=seed, chunk_size=int(settings["chunk_size"]), progress=progress)
    t_sim = time.perf_counter() - t0
    valid = np.all(np.isfinite(x), axis=1)
    n_invalid = int((~valid).sum())
    if valid.sum() < 10:
        raise RuntimeError(f"only {int(valid.sum())} of {n} simulations gave finite features; cannot train NPE")

    prior = problem.torch_prior()
    t1 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(_cache_dir() / "sbi-logs"))  # sbi would write into the working folder
        inference = NPE(
            prior=prior, density_estimator=str(settings["density_estimator"]), show_progress_bars=progress, summary_writer=writer
        )
        inference.append_simulations(
            torch.as_tensor(theta[valid], dtype=torch.float32), torch.as_tensor(x[valid], dtype=torch.float32)
        )
        estimator = inference.train(
            training_batch_size=int(settings["training_batch_size"]),
            learning_rate=float(settings["learning_rate"]),
            stop_after_epochs=int(settings["stop_after_epochs"]),
            max_num_epochs=int(settings["max_num_epochs"]),
            show_train_summary=False,
        )
        posterior = inference.build_posterior(estimator)
        t_train = time.perf_counter() - t1
        draws = posterior.sample((int(settings["num_draws"]),), x=torch.as_tensor(x_o, dtype=torch.float32), show_progress_bars=False)
        draws = draws.to(torch.float64).numpy()
        calibration = _sbc(problem, posterior, settings, seed, progress)
    epochs = int(inference.summary.get("epochs_trained", [0])[-1]) if hasattr(inference, "summary") else 0

    est_path = _save_estimator(problem, posterior, settings, seed)
    params = problem.unflatten(draws)
    posterior_draws = {k: v[None] for k, v in params.items()}
    return make_result(
        problem,
        route="npe",
        posterior=posterior_draws,
        settings=settings,
        seed=seed,
        wall_time_s=time.perf_counter() - t0,
        groups={"calibration": calibration},
        attrs={
            "n_training_simulations": int(valid.sum()),
            "n_invalid_simulations": n_invalid,
            "simulation_wall_time_s": t_sim,
            "training_wall_time_s": t_train,
            "epochs_trained": epochs,
            "estimator_path": str(est_path),
            "feature_names": problem.feature_names(),
        },
    )


def _sbc(problem: Problem, posterior, settings: Mapping[str, Any], seed: int, progress: bool) -> xr.Dataset:
    """Ranks of held-out true parameters among posterior draws (Talts et al. 2018).

    Held-out pairs come from the ``calib`` seed stream (never overlapping the training bank);
    invalid simulations are dropped and counted.
    """
    import torch

    n = int(settings["sbc_simulations"])
    L = int(settings["sbc_draws"])
    names = problem.flat_names()
    if n <= 0:
        return xr.Dataset(attrs={"n_sbc": 0})
    theta, x = simulate_bank(problem, n, seed=seed, stream="calib", chunk_size=int(settings["chunk_size"]), progress=False)
    valid = np.all(np.isfinite(x), axis=1)
    theta, x = theta[valid], x[valid]
    samples = posterior.sample_batched((L,), x=torch.as_tensor(x, dtype=torch.float32), show_progress_bars=False)
    samples = samples.to(torch.float64).numpy()  # (L, n, D)
    ranks = (samples < theta[None]).sum(axis=0)  # (n, D)
    lo, hi = np.quantile(samples, [0.025, 0.975], axis=0)
    inside = (theta >= lo) & (theta <= hi)
    return xr.Dataset(
        {
            "rank": (("sbc_simulation", "parameter"), ranks.astype(np.int64)),
            "theta": (("sbc_simulation", "parameter"), theta),
            "inside_95": (("sbc_simulation", "parameter"), inside.astype(np.int8)),
        },
        coords={"parameter": names, "sbc_simulation": np.arange(theta.shape[0])},
        attrs={"n_posterior_draws": L, "n_invalid": int((~valid).sum()), "stream": "calib"},
    )


def _save_estimator(problem: Problem, posterior, settings: Mapping[str, Any], seed: int) -> Path:
    """Pickle the trained posterior (CPU) under the cache, keyed by a content hash."""
    import torch

    key = hashlib.sha256(
        json.dumps({"entry": problem.entry_id, "hash": problem.entry_hash, "config": problem.config, "settings": dict(settings), "seed": seed}, sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    path = _cache_dir() / "npe" / f"{problem.entry_id}-{key}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(posterior, tmp)
    os.replace(tmp, path)
    return path


def load_posterior(path: str | os.PathLike):
    """Reload a trained NPE posterior on the CPU, whatever device trained it."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)
