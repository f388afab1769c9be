"""Uniform diagnostics for every route (DESIGN.md §4).

:func:`diagnose` returns one tidy ``pandas.DataFrame`` with a row per flattened parameter and the
route-dependent columns:

* MCMC (``nuts``, ``hmc``): posterior mean and SD, rank-normalised split R-hat, bulk and tail ESS
  (``arviz_stats``; Vehtari et al. 2021); divergences and E-BFMI per chain in ``df.attrs``;
* NPE: simulation-based calibration (Talts et al. 2018) on held-out simulations: the rank
  histogram's uniformity tested with a chi-square test over ``bins`` bins and a KS test on the
  normalised ranks, plus the empirical coverage of the central 95 % interval; the invalid
  simulation counts in ``df.attrs``;
* MAP: the restarts that converged and the spread of their optima.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .result import posterior_draws_flat, result_attrs

__all__ = ["diagnose", "sbc_uniformity", "e_bfmi"]


def sbc_uniformity(ranks: np.ndarray, n_draws: int, *, bins: int = 10) -> dict[str, np.ndarray]:
    """Uniformity tests of SBC ranks (n_sims, D) in ``0..n_draws``.

    Returns per-parameter ``chi2_p`` (chi-square test of ``bins`` equal-width rank bins) and
    ``ks_p`` (KS test of (rank + 0.5)/(n_draws + 1) against U(0, 1)).
    """
    from scipy import stats

    ranks = np.asarray(ranks)
    n, d = ranks.shape
    chi2_p, ks_p = np.empty(d), np.empty(d)
    edges = np.linspace(0, n_draws + 1, bins + 1)
    for j in range(d):
        counts, _ = np.histogram(ranks[:, j], bins=edges)
        chi2_p[j] = stats.chisquare(counts).pvalue
        ks_p[j] = stats.kstest((ranks[:, j] + 0.5) / (n_draws + 1), "uniform").pvalue
    return {"chi2_p": chi2_p, "ks_p": ks_p}


def e_bfmi(energy: np.ndarray) -> np.ndarray:
    r"""Estimated Bayesian fraction of missing information per chain (Betancourt 2016, eq. 3.1):
    :math:`\sum_n (E_n - E_{n-1})^2 / \sum_n (E_n - \bar E)^2` for energies (chain, draw)."""
    energy = np.atleast_2d(energy)
    num = np.sum(np.diff(energy, axis=1) ** 2, axis=1)
    den = np.sum((energy - energy.mean(axis=1, keepdims=True)) ** 2, axis=1)
    return num / den


def _mcmc_table(result: xr.DataTree, names: list[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    import arviz_stats as azs

    post = result["posterior"].to_dataset()
    rows = {n: {} for n in names}

    def _fill(ds: xr.Dataset, col: str):
        for var in ds.data_vars:
            da = ds[var]
            if da.dims:
                flat = da.stack(_flat=da.dims).values
                coords = [tuple(map(str, idx)) if isinstance(idx, tuple) else (str(idx),) for idx in da.stack(_flat=da.dims)["_flat"].values]
                for c, v in zip(coords, flat):
                    rows[f"{var}[{','.join(c)}]"][col] = float(v)
            else:
                rows[var][col] = float(da.values)

    _fill(post.mean(("chain", "draw")), "mean")
    _fill(post.std(("chain", "draw"), ddof=1), "sd")
    if post.sizes["chain"] * post.sizes["draw"] >= 8:
        _fill(azs.rhat(result), "r_hat")
        _fill(azs.ess(result, method="bulk"), "ess_bulk")
        _fill(azs.ess(result, method="tail"), "ess_tail")
    info: dict[str, Any] = {}
    if "sample_stats" in result.children:
        ss = result["sample_stats"].to_dataset()
        if "diverging" in ss:
            info["divergences_per_chain"] = ss["diverging"].astype(int).sum("draw").values.tolist()
            info["divergences"] = int(sum(info["divergences_per_chain"]))
        if "energy" in ss:
            energy = np.asarray(ss["energy"].transpose("chain", "draw").values, dtype=np.float64)
            info["bfmi_per_chain"] = e_bfmi(energy).tolist()
        for key in ("reached_max_treedepth", "maxdepth_reached"):
            if key in ss:
                info["max_treedepth_hits"] = int(ss[key].astype(int).sum())
    return pd.DataFrame.from_dict(rows, orient="index"), info


def diagnose(result: xr.DataTree, *, bins: int = 10) -> pd.DataFrame:
    """One diagnostics table for any route's result (see module docstring).

    The table's ``attrs`` hold route-level figures (divergences, BFMI, invalid simulations,
    MAP convergence, cost).
    """
    attrs = result_attrs(result)
    route = attrs.get("route", "unknown")
    draws, names = posterior_draws_flat(result)
    info: dict[str, Any] = {
        "route": route,
        "entry_id": attrs.get("entry_id"),
        "wall_time_s": attrs.get("wall_time_s"),
        "n_simulations": attrs.get("n_simulations"),
        "n_loglik_evaluations": attrs.get("n_loglik_evaluations"),
        "n_gradient_evaluations": attrs.get("n_gradient_evaluations"),
    }
    if route in ("nuts", "hmc"):
        table, extra = _mcmc_table(result, names)
        info.update(extra)
    else:
        table = pd.DataFrame({"mean": draws.mean(0), "sd": draws.std(0, ddof=1) if draws.shape[0] > 1 else np.nan}, index=names)
    if route == "npe" and "calibration" in result.children:
        cal = result["calibration"].to_dataset()
        info["n_invalid_simulations"] = attrs.get("n_invalid_simulations")
        info["n_training_simulations"] = attrs.get("n_training_simulations")
        if "rank" in cal:
            ranks = cal["rank"].values
            tests = sbc_uniformity(ranks, int(cal.attrs["n_posterior_draws"]), bins=bins)
            order = [list(cal["parameter"].values).index(n) for n in names]
            table["sbc_chi2_p"] = tests["chi2_p"][order]
            table["sbc_ks_p"] = tests["ks_p"][order]
            table["coverage_95"] = cal["inside_95"].values.mean(0)[order]
            info["n_sbc"] = int(ranks.shape[0])
            info["n_sbc_invalid"] = int(cal.attrs.get("n_invalid", 0))
    if route == "map" and "map_restarts" in result.children:
        mr = result["map_restarts"].to_dataset()
        conv = mr["converged"].values.astype(bool)
        info["n_restarts"] = int(conv.size)
        info["n_converged"] = int(conv.sum())
        best = float(mr["log_posterior"].values[conv].max()) if conv.any() else float("nan")
        info["best_log_posterior"] = best
        info["n_within_0.1_nats_of_best"] = int(np.sum(mr["log_posterior"].values[conv] > best - 0.1))
        opt = mr["optimum"].values[conv]
        table["restart_spread_sd"] = opt.std(0, ddof=1) if opt.shape[0] > 1 else np.nan
    table.index.name = "parameter"
    table.attrs = json.loads(json.dumps(info, default=lambda o: np.asarray(o).tolist()))
    return table
