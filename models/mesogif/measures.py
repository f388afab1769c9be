"""Performance measures for population activity traces (spec ``specs/mesogif.md`` §7).

René et al. (2020) §4.7: traces are compared on an evaluation window after a burn-in (default
[10, 19) s), after averaging the activity into 10 ms bins (spec §9 item 13; pass
``bin_s=dt`` for the 1 ms variant). Activities are in Hz: ``A = n / (N dt)``.

* per-trial correlation ρ (eq. 4.24) and RMSE (eq. 4.25), for every (reference, model) pair of
  realisations, reported as mean ± std over pairs;
* trial-averaged ρ̄ (eq. 4.26) and RMSĒ (eq. 4.27) of the ensemble means (eq. 2.5), with a
  bootstrap standard deviation (each ensemble resampled with replacement, 100 repetitions,
  ddof = 1, spec §7.2); ensembles are truncated to the same number of trials.

Per-population values are always returned (the 4-pop tables report them); the ``*_mean``
entries average over populations as in the 2-pop figures. Plain NumPy.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "activity",
    "coarse_grain",
    "evaluation_window",
    "prepare",
    "correlation",
    "rmse",
    "per_trial_measures",
    "trial_averaged_measures",
]


def activity(counts: np.ndarray, N: np.ndarray, dt: float = 1e-3) -> np.ndarray:
    """Population activity ``A = n / (N dt)`` in Hz for counts of shape ``(..., T, M)``."""
    counts = np.asarray(counts, dtype=np.float64)
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("spike counts must be finite and non-negative")
    return counts / (np.asarray(N, dtype=np.float64) * dt)


def coarse_grain(x: np.ndarray, factor: int) -> np.ndarray:
    """Average consecutive blocks of ``factor`` time bins (time axis ``-2``; a partial last block is dropped)."""
    x = np.asarray(x, dtype=np.float64)
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    T = (x.shape[-2] // factor) * factor
    if T == 0:
        raise ValueError(f"trace of {x.shape[-2]} bins is shorter than one averaging block of {factor} bins")
    x = x[..., :T, :]
    return x.reshape(*x.shape[:-2], T // factor, factor, x.shape[-1]).mean(axis=-2)


def evaluation_window(x: np.ndarray, *, dt: float = 1e-3, start_s: float = 10.0, stop_s: float | None = 19.0) -> np.ndarray:
    """Bins ``[start_s, stop_s)`` of a trace ``(..., T, M)`` (the first ``start_s`` are burn-in).

    Raises
    ------
    ValueError
        If the trace is not longer than the burn-in ``start_s`` or shorter than ``stop_s``.
    """
    x = np.asarray(x)
    T = x.shape[-2]
    k0 = int(round(start_s / dt))
    k1 = T if stop_s is None else int(round(stop_s / dt))
    if k0 >= T:
        raise ValueError(
            f"trace of {T * dt:g} s is not longer than the burn-in of {start_s:g} s; simulate longer or lower start_s"
        )
    if k1 > T:
        raise ValueError(f"trace of {T * dt:g} s is shorter than the end of the window {stop_s:g} s")
    if k1 <= k0:
        raise ValueError(f"empty evaluation window [{start_s}, {stop_s}) s")
    return x[..., k0:k1, :]


def prepare(
    counts: np.ndarray,
    N: np.ndarray,
    *,
    dt: float = 1e-3,
    start_s: float = 10.0,
    stop_s: float | None = 19.0,
    bin_s: float = 0.01,
) -> np.ndarray:
    """Counts ``(..., T, M)`` -> activity (Hz) on the evaluation window, averaged into ``bin_s`` bins."""
    factor = int(round(bin_s / dt))
    if factor < 1 or abs(factor * dt - bin_s) > 1e-9:
        raise ValueError(f"bin_s={bin_s!r} must be a positive multiple of dt={dt!r}")
    A = evaluation_window(activity(counts, N, dt), dt=dt, start_s=start_s, stop_s=stop_s)
    return coarse_grain(A, factor)


def correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation over time (axis ``-2``) per population; NaN where a trace is constant."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    da = a - a.mean(axis=-2, keepdims=True)
    db = b - b.mean(axis=-2, keepdims=True)
    num = (da * db).sum(axis=-2)
    den = np.sqrt((da * da).sum(axis=-2) * (db * db).sum(axis=-2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def rmse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square difference over time (axis ``-2``) per population (units of the traces, Hz)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return np.sqrt((d * d).mean(axis=-2))


def _check_ensembles(reference: np.ndarray, model: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference, dtype=np.float64)
    model = np.asarray(model, dtype=np.float64)
    if reference.ndim != 3 or model.ndim != 3:
        raise ValueError("ensembles must have shape (realisations, time, populations)")
    if reference.shape[1:] != model.shape[1:]:
        raise ValueError(f"ensembles differ in (time, populations): {reference.shape[1:]} vs {model.shape[1:]}")
    return reference, model


def per_trial_measures(reference: np.ndarray, model: np.ndarray) -> dict[str, np.ndarray]:
    """Per-trial ρ (eq. 4.24) and RMSE (eq. 4.25) over all (reference, model) pairs (spec §7.1, §7.2).

    Parameters
    ----------
    reference, model : numpy.ndarray, shape (R, T', M)
        Prepared activity traces (Hz), e.g. from :func:`prepare`.

    Returns
    -------
    dict
        ``rho``, ``rho_std``, ``rmse``, ``rmse_std``: per population (M,), mean and std over
        pairs; ``rho_mean``, ``rho_mean_std``, ``rmse_mean``, ``rmse_mean_std``: the same for the
        population-averaged measure of each pair (the paper's 2-pop numbers).
    """
    reference, model = _check_ensembles(reference, model)
    rho = np.stack([correlation(r[None], model) for r in reference])  # (R1, R3, M)
    err = np.stack([rmse(r[None], model) for r in reference])
    rho = rho.reshape(-1, rho.shape[-1])
    err = err.reshape(-1, err.shape[-1])
    return {
        "rho": rho.mean(0),
        "rho_std": rho.std(0),
        "rmse": err.mean(0),
        "rmse_std": err.std(0),
        "rho_mean": rho.mean(1).mean(),
        "rho_mean_std": rho.mean(1).std(),
        "rmse_mean": err.mean(1).mean(),
        "rmse_mean_std": err.mean(1).std(),
    }


def trial_averaged_measures(
    reference: np.ndarray, model: np.ndarray, *, n_bootstrap: int = 100, seed: int = 0
) -> dict[str, np.ndarray]:
    """Trial-averaged ρ̄ (eq. 4.26) and RMSĒ (eq. 4.27) with bootstrap standard deviations (spec §7.2).

    Both ensembles are truncated to the smaller number of realisations. The bootstrap
    resamples each ensemble with replacement (same size), recomputes the measures, and reports
    the sample standard deviation (ddof = 1) over ``n_bootstrap`` repetitions.

    Parameters
    ----------
    reference, model : numpy.ndarray, shape (R, T', M)
        Prepared activity traces (Hz).
    n_bootstrap : int, default 100
        Bootstrap repetitions (0 to skip).
    seed : int
        Seed of the bootstrap resampling.

    Returns
    -------
    dict
        ``rho_bar``, ``rmse_bar`` per population (M,) and their population averages
        ``rho_bar_mean``, ``rmse_bar_mean``; with the bootstrap also ``*_std`` entries;
        ``n_trials``: the number of realisations used per ensemble.
    """
    reference, model = _check_ensembles(reference, model)
    R = min(reference.shape[0], model.shape[0])
    reference, model = reference[:R], model[:R]

    def measures(ref, mod):
        a, b = ref.mean(0), mod.mean(0)
        return correlation(a, b), rmse(a, b)

    rho, err = measures(reference, model)
    out = {
        "rho_bar": rho,
        "rmse_bar": err,
        "rho_bar_mean": rho.mean(),
        "rmse_bar_mean": err.mean(),
        "n_trials": R,
    }
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        boot_rho = np.empty((n_bootstrap, rho.shape[0]))
        boot_err = np.empty_like(boot_rho)
        for i in range(n_bootstrap):
            ir = rng.integers(0, R, R)
            im = rng.integers(0, R, R)
            boot_rho[i], boot_err[i] = measures(reference[ir], model[im])
        out["rho_bar_std"] = boot_rho.std(0, ddof=1)
        out["rmse_bar_std"] = boot_err.std(0, ddof=1)
        out["rho_bar_mean_std"] = boot_rho.mean(1).std(ddof=1)
        out["rmse_bar_mean_std"] = boot_err.mean(1).std(ddof=1)
    return out
