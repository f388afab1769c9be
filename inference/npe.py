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

from .cache import cache_dir
from .problem import Problem, seeds_for
from .result import make_result

__all__ = ["run", "DEFAULTS", "simulate_bank", "load_posterior", "estimator_key"]

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
    "executor": None,
    "workers": None,
}


def simulate_bank(
    problem: Problem,
    n: int,
    *,
    seed: int,
    stream: str = "simulate",
    chunk_size: int = 1000,
    progress: bool = True,
    executor: Any = None,
    workers: int | None = None,
):
    """θ ~ prior and features of their simulations, from the on-disk simulation bank.

    The bank (:func:`mechzoo.inference.campaign.run_campaign`) is keyed by entry, configuration,
    seed and stream; it is extended only by the rows it lacks and resumes after an interruption.
    Row i depends only on (seed, stream, i). Returns ``(theta (n, D), x (n, F))``.
    ``workers=None`` uses every core for banks of 20,000 rows or more and runs small banks
    in-process (starting worker processes costs seconds); results do not depend on it.
    """
    from .campaign import run_campaign

    if workers is None and executor is None and n < 20000:
        workers = 1
    bank = run_campaign(
        problem, n, seed=seed, stream=stream, chunk_size=chunk_size, progress=progress, executor=executor, workers=workers, cache_dir=cache_dir()
    )
    return np.asarray(bank.theta), np.asarray(bank.x)


_TRAINING_KEYS = ("num_simulations", "density_estimator", "training_batch_size", "learning_rate", "stop_after_epochs", "max_num_epochs")


def estimator_key(problem: Problem, settings: Mapping[str, Any], seed: int) -> str:
    """Content hash of what determines a trained estimator: entry (and its file hash), simulator
    configuration, training settings and seed. Observation-dependent settings are excluded, so
    one trained estimator serves every observation (amortisation)."""
    content = {
        "entry": problem.entry_id,
        "entry_hash": problem.entry_hash,
        "config": {k: v for k, v in problem.config.items()},
        "training": {k: settings[k] for k in _TRAINING_KEYS},
        "seed": int(seed),
    }
    if problem.pinned:  # only when some parameters are pinned, so that existing keys are unchanged
        content["pinned"] = {k: np.asarray(v).tolist() for k, v in sorted(problem.pinned.items())}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _train(problem: Problem, settings: Mapping[str, Any], seed: int, progress: bool) -> tuple[Any, dict[str, Any]]:
    """Simulate the bank and train the estimator; returns (posterior, training record)."""
    import torch
    from sbi.inference import NPE
    from torch.utils.tensorboard import SummaryWriter

    n = int(settings["num_simulations"])
    t0 = time.perf_counter()
    theta, x = simulate_bank(
        problem, n, seed=seed, chunk_size=int(settings["chunk_size"]), progress=progress, executor=settings["executor"], workers=settings["workers"]
    )
    t_sim = time.perf_counter() - t0
    valid = np.all(np.isfinite(x), axis=1)
    if valid.sum() < 10:
        raise RuntimeError(f"only {int(valid.sum())} of {n} simulations gave finite features; cannot train NPE")
    t1 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        writer = SummaryWriter(log_dir=str(cache_dir() / "sbi-logs"))  # sbi would write into the working folder
        inference = NPE(
            prior=problem.torch_prior(),
            density_estimator=str(settings["density_estimator"]),
            show_progress_bars=progress,
            summary_writer=writer,
        )
        inference.append_simulations(torch.as_tensor(theta[valid], dtype=torch.float32), torch.as_tensor(x[valid], dtype=torch.float32))
        estimator = inference.train(
            training_batch_size=int(settings["training_batch_size"]),
            learning_rate=float(settings["learning_rate"]),
            stop_after_epochs=int(settings["stop_after_epochs"]),
            max_num_epochs=int(settings["max_num_epochs"]),
            show_train_summary=False,
        )
        posterior = inference.build_posterior(estimator)
        writer.close()
    record = {
        "n_simulations": n,
        "n_training_simulations": int(valid.sum()),
        "n_invalid_simulations": int((~valid).sum()),
        "invalid_feature_counts": np.sum(~np.isfinite(x), axis=0).tolist(),
        "simulation_wall_time_s": t_sim,
        "training_wall_time_s": time.perf_counter() - t1,
        "epochs_trained": int(inference.summary.get("epochs_trained", [0])[-1]),
    }
    return posterior, record


def run(problem: Problem, *, settings: Mapping[str, Any] | None = None, seed: int = 0, progress: bool = True) -> xr.DataTree:
    """NPE posterior at the problem's observation.

    The trained estimator is looked up in the cache by :func:`estimator_key`; if it is there
    (same entry, simulator configuration, training settings and seed), it is reused without
    simulating or training again (``reused_estimator = 1`` in the attrs, with the original
    training record); otherwise the bank is simulated, the estimator trained and saved.
    Invalid simulations (non-finite features) are excluded from training and calibration and
    counted in the attrs (``n_invalid_simulations``, per-feature ``invalid_feature_counts``).
    """
    import torch

    unknown = set(dict(settings or {})) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown npe setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **dict(settings or {})}
    if int(settings["num_simulations"]) < 10:
        raise ValueError(f"num_simulations must be >= 10 (got {settings['num_simulations']})")
    t0 = time.perf_counter()
    x_o = problem.observed_features()
    if not np.all(np.isfinite(x_o)):
        raise ValueError(f"the observed features contain NaN/inf ({problem.feature_names()}); NPE needs a finite observation")

    path = cache_dir() / "npe" / f"{problem.entry_id}-{estimator_key(problem, settings, seed)}.pt"
    record_path = path.with_suffix(".json")
    if path.exists() and record_path.exists():
        posterior = load_posterior(path)
        record = {**json.loads(record_path.read_text()), "reused_estimator": 1}
    else:
        posterior, record = _train(problem, settings, seed, progress)
        _save_estimator(posterior, record, path)
        record["reused_estimator"] = 0
    t_sample = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) + 1)
        draws = posterior.sample((int(settings["num_draws"]),), x=torch.as_tensor(x_o, dtype=torch.float32), show_progress_bars=False)
        draws = draws.to(torch.float64).numpy()
        calibration = _sbc(problem, posterior, settings, seed, progress)
    record["sampling_wall_time_s"] = time.perf_counter() - t_sample
    params = problem.unflatten(draws)
    return make_result(
        problem,
        route="npe",
        posterior={k: v[None] for k, v in params.items()},
        settings=settings,
        seed=seed,
        wall_time_s=time.perf_counter() - t0,
        groups={"calibration": calibration},
        attrs={**record, "estimator_path": str(path), "feature_names": problem.feature_names()},
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
    theta, x = simulate_bank(
        problem, n, seed=seed, stream="calib", chunk_size=int(settings["chunk_size"]), progress=False, executor=settings["executor"], workers=settings["workers"]
    )
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


def _save_estimator(posterior, record: Mapping[str, Any], path: Path) -> None:
    """Save the trained posterior (pickled, CPU) and its training record atomically."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(posterior, tmp)
    os.replace(tmp, path)
    tmp_json = path.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(record))
    os.replace(tmp_json, path.with_suffix(".json"))


def load_posterior(path: str | os.PathLike):
    """Reload a trained NPE posterior on the CPU, whatever device trained it."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)
