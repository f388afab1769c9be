"""Uniform diagnostics for every route (DESIGN.md §4).

:func:`diagnose` returns one tidy ``pandas.DataFrame`` with a row per flattened parameter and the
route-dependent columns:

* MCMC (``nuts``, ``hmc``): posterior mean and SD, rank-normalised split R-hat, bulk and tail ESS
  (``arviz_stats``; Vehtari et al. 2021); divergences and E-BFMI per chain in ``df.attrs``;
* NPE: simulation-based calibration (Talts et al. 2018) on held-out simulations: the rank
  histogram's uniformity tested with a chi-square test over ``bins`` bins and a KS test on the
  normalised ranks, plus the empirical coverage of the central 95 % interval; the invalid
  simulation counts and valid fractions (training and SBC sets, and the ``invalid`` rule that
  handled them) and, with a restricted prior, the restriction's figures in ``df.attrs``;
* MAP: the restarts that converged and the spread of their optima.

Any result with a ``posterior_predictive`` group holding ``observed_features`` (the NPE route
writes it; :func:`mechzoo.inference.npe.posterior_predictive_features`) also gets the posterior
predictive check (:func:`posterior_predictive_check`): a per-feature table in
``df.attrs["ppc"]`` (``{feature: {column: value}}``; ``pandas.DataFrame.from_dict(...,
orient="index")`` rebuilds it) and summary figures ``n_ppc_draws``, ``n_ppc_invalid_draws``,
``ppc_max_abs_z``, ``n_ppc_noise_seeds``, ``ppc_median_sd_source``, ``ppc_median_max_z``,
``ppc_median_n_invalid`` and ``ppc_median_within_2sd`` (the acceptance test: every feature of
the median draw within 2 noise SDs of the observation).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .result import posterior_draws_flat, result_attrs

__all__ = ["diagnose", "sbc_uniformity", "e_bfmi", "posterior_predictive_check"]


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


def _abs_z(diff: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``|diff| / sd`` with the limits of a zero SD made explicit: 0 where ``diff == 0`` (a
    deterministic feature reproduced exactly), inf where ``diff != 0``; NaN where either is NaN."""
    diff, sd = np.abs(np.asarray(diff, dtype=np.float64)), np.asarray(sd, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = diff / sd
    zero = sd == 0
    z[zero & (diff == 0)] = 0.0
    z[zero & (diff > 0)] = np.inf
    return z


def _finite_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column mean, SD (ddof = 1) over the finite values of ``x`` (n, F), and the count of
    non-finite values; NaN where fewer than 1 (mean) or 2 (SD) finite values exist."""
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    k = finite.sum(axis=0)
    xz = np.where(finite, x, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(k > 0, xz.sum(axis=0) / k, np.nan)
        var = np.where(finite, (x - mean) ** 2, 0.0).sum(axis=0) / (k - 1)
    sd = np.where(k > 1, np.sqrt(var), np.nan)
    return mean, sd, (~finite).sum(axis=0)


def posterior_predictive_check(result: xr.DataTree) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """Posterior predictive check of the summary features (Gelman et al. 2013, *BDA3* ch. 6).

    Reads the ``posterior_predictive`` group (:func:`mechzoo.inference.npe.posterior_predictive_features`).
    Non-finite simulated values are excluded per feature and counted (``*_n_invalid``), never
    dropped silently. Units are the features' own.

    Returns
    -------
    table : DataFrame, one row per feature
        ``observed``;
        over the posterior draws: ``ppc_mean``, ``ppc_sd`` (ddof 1), ``ppc_n_invalid``,
        ``ppc_z = (observed - ppc_mean) / ppc_sd`` and ``ppc_quantile`` (fraction of the finite
        simulated values below the observation: a posterior predictive p-value);
        at the posterior median under several noise seeds: ``median_mean``, ``median_sd``,
        ``median_n_invalid``, ``median_z = |observed - median_mean| / median_sd``;
        where the data were simulated at a known truth: ``truth_mean``, ``truth_sd``,
        ``truth_n_invalid``, ``median_z_truth_sd = |observed - median_mean| / truth_sd``;
        ``acceptance_z``: ``median_z_truth_sd`` where the truth is known, else ``median_z`` (the
        issue's acceptance: within 2 SD of the noise spread at the truth).
        A zero SD gives 0 for an exact match and inf otherwise (deterministic features).
    summary : dict
        ``n_ppc_draws``, ``n_ppc_invalid_draws`` (draws with any non-finite feature),
        ``ppc_max_abs_z``; ``n_ppc_noise_seeds``, ``ppc_median_sd_source`` (``"truth"`` or
        ``"median_draw"``), ``ppc_median_max_z`` (max ``acceptance_z``; NaN if any is NaN),
        ``ppc_median_n_invalid`` (median-draw simulations with any non-finite feature) and
        ``ppc_median_within_2sd`` (every feature's ``acceptance_z`` <= 2; False if any is NaN).
        None when the result has no such group.
    """
    if "posterior_predictive" not in result.children:
        return None
    ds = result["posterior_predictive"].to_dataset()
    if "observed_features" not in ds:
        return None
    obs = np.asarray(ds["observed_features"].values, dtype=np.float64)
    table = pd.DataFrame({"observed": obs}, index=[str(f) for f in ds["feature"].values])
    table.index.name = "feature"
    summary: dict[str, Any] = {}
    if "features" in ds:
        x = ds["features"].transpose(..., "feature").values.reshape(-1, obs.size)
        mean, sd, bad = _finite_stats(x)
        table["ppc_mean"], table["ppc_sd"], table["ppc_n_invalid"] = mean, sd, bad
        with np.errstate(divide="ignore", invalid="ignore"):
            table["ppc_z"] = np.sign(obs - mean) * _abs_z(obs - mean, sd)
        finite = np.isfinite(x)
        k = finite.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            table["ppc_quantile"] = np.where(k > 0, (finite & (x < obs)).sum(axis=0) / k, np.nan)
        summary["n_ppc_draws"] = int(x.shape[0])
        summary["n_ppc_invalid_draws"] = int((~finite).any(axis=1).sum())
        z = np.abs(table["ppc_z"].values)
        summary["ppc_max_abs_z"] = float(np.max(z)) if z.size and not np.isnan(z).any() else float("nan")
    if "median_draw_features" in ds:
        xm = ds["median_draw_features"].transpose("noise_seed", "feature").values
        mean_m, sd_m, bad_m = _finite_stats(xm)
        table["median_mean"], table["median_sd"], table["median_n_invalid"] = mean_m, sd_m, bad_m
        table["median_z"] = _abs_z(obs - mean_m, sd_m)
        acceptance = table["median_z"].values
        summary["ppc_median_sd_source"] = "median_draw"
        if "truth_features" in ds:
            xt = ds["truth_features"].transpose("noise_seed", "feature").values
            mean_t, sd_t, bad_t = _finite_stats(xt)
            table["truth_mean"], table["truth_sd"], table["truth_n_invalid"] = mean_t, sd_t, bad_t
            table["median_z_truth_sd"] = _abs_z(obs - mean_m, sd_t)
            acceptance = table["median_z_truth_sd"].values
            summary["ppc_median_sd_source"] = "truth"
        table["acceptance_z"] = acceptance
        summary["n_ppc_noise_seeds"] = int(xm.shape[0])
        summary["ppc_median_n_invalid"] = int((~np.isfinite(xm)).any(axis=1).sum())
        summary["ppc_median_max_z"] = float("nan") if np.isnan(acceptance).any() else float(np.max(acceptance))
        summary["ppc_median_within_2sd"] = bool(np.all(acceptance <= 2.0))  # NaN compares False
    return table, summary


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


#: Figures of the NPE restricted prior copied from the result attrs into ``diagnose()``'s attrs.
_RESTRICTION_KEYS = (
    "restriction_rounds",
    "n_restriction_simulations",
    "restriction_valid_fraction",
    "restriction_round_valid_fractions",
    "restricted_prior_acceptance",
    "n_bank_simulations",
    "bank_valid_fraction",
    "n_restriction_training_simulations",
    "n_restriction_valid_rejected",
    "restriction_pilot_valid_accepted",
    "restriction_pilot_invalid_rejected",
    "restriction_training_wall_time_s",
    "restriction_fingerprint",
)


def _json_number(v: Any) -> Any:
    """Plain Python numbers for the JSON-safe ``attrs`` (NaN/inf stay floats)."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def diagnose(result: xr.DataTree, *, bins: int = 10) -> pd.DataFrame:
    """One diagnostics table for any route's result (see module docstring).

    The table's ``attrs`` hold route-level figures (divergences, BFMI, invalid simulations,
    MAP convergence, cost) and, where the result has a posterior predictive group, the
    per-feature check ``attrs["ppc"]`` with its summary figures (:func:`posterior_predictive_check`).

    For NPE, the invalid simulations are reported for the training bank
    (``n_invalid_simulations``: any non-finite feature; ``n_replaced_simulations``: kept after
    replacement; ``n_excluded_simulations``: dropped; per-feature ``invalid_feature_counts`` and
    ``replaced_feature_counts``; ``invalid_rule``) and for the SBC set (``n_sbc_invalid``,
    ``n_sbc_replaced``, ``n_sbc_excluded``; ``n_sbc`` is the number of simulations ranked), with
    the valid fractions ``training_valid_fraction`` (all training simulations) and
    ``sbc_valid_fraction``, and ``sbc_prior`` (``"prior"`` or ``"restricted"``). With the NPE
    ``restrict`` setting, the restriction's figures too (:data:`_RESTRICTION_KEYS`: pilot size
    and valid fraction, per-round valid fractions, estimated accepted fraction of the prior,
    main-bank size and valid fraction, pilot simulations pooled into training and valid ones
    dropped outside the region, the classifier's sensitivity and specificity on the pilot, its
    training time, and the restriction's fingerprint).
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
    if route == "npe":
        info["invalid_rule"] = attrs.get("invalid_rule", "exclude")
        info["n_training_simulations"] = attrs.get("n_training_simulations")
        info["n_invalid_simulations"] = attrs.get("n_invalid_simulations")
        info["n_replaced_simulations"] = attrs.get("n_replaced_simulations", 0)
        info["n_excluded_simulations"] = attrs.get("n_excluded_simulations", attrs.get("n_invalid_simulations"))
        n_sims, n_excl = attrs.get("n_simulations"), attrs.get("n_excluded_simulations", attrs.get("n_invalid_simulations"))
        if n_sims and n_excl is not None:
            info["training_valid_fraction"] = 1.0 - float(n_excl) / float(n_sims)
        if attrs.get("restriction_rounds") is not None:  # the restricted prior (npe module docstring)
            for key in _RESTRICTION_KEYS:
                if key in attrs:
                    info[key] = attrs[key]
        names_f = attrs.get("feature_names") or []
        for key in ("invalid_feature_counts", "replaced_feature_counts"):
            if attrs.get(key) is not None:
                counts = list(attrs[key])
                info[key] = dict(zip(names_f, counts)) if len(names_f) == len(counts) else counts
    if route == "npe" and "calibration" in result.children:
        cal = result["calibration"].to_dataset()
        if "rank" in cal:
            ranks = cal["rank"].values
            tests = sbc_uniformity(ranks, int(cal.attrs["n_posterior_draws"]), bins=bins)
            order = [list(cal["parameter"].values).index(n) for n in names]
            table["sbc_chi2_p"] = tests["chi2_p"][order]
            table["sbc_ks_p"] = tests["ks_p"][order]
            table["coverage_95"] = cal["inside_95"].values.mean(0)[order]
            info["n_sbc"] = int(ranks.shape[0])
        if int(cal.attrs.get("n_sbc", 0)) > 0 or "rank" in cal:
            info["n_sbc_invalid"] = int(cal.attrs.get("n_invalid", 0))
            info["n_sbc_replaced"] = int(cal.attrs.get("n_replaced", 0))
            info["n_sbc_excluded"] = int(cal.attrs.get("n_excluded", cal.attrs.get("n_invalid", 0)))
            info.setdefault("n_sbc", 0)
            info["sbc_prior"] = str(cal.attrs.get("sbc_prior", "prior"))
            n_cal = int(cal.attrs.get("n_sbc", 0))
            if n_cal > 0:
                info["sbc_valid_fraction"] = 1.0 - info["n_sbc_excluded"] / n_cal
    checked = posterior_predictive_check(result)
    if checked is not None:
        ppc_table, summary = checked
        info.update(summary)
        info["ppc"] = {f: {c: _json_number(v) for c, v in row.items()} for f, row in ppc_table.to_dict(orient="index").items()}
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
