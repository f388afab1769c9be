"""Comparison of posteriors of the same entry and data (DESIGN.md §4; specs/comparison-study.md §4.1).

:func:`compare` returns a tidy table: one row per (result, parameter) with mean, SD, the signed
mean difference to the first result in SD units, the variance ratio, the overlap of the central
90 % intervals with the first result's, and cost columns; ``df.attrs["c2st"]`` holds the
classifier two-sample test between every pair.

C2ST follows the sbibm settings of the comparison-study spec §4.1 exactly: both samples z-scored
with the mean and SD (N−1) of the first sample; scikit-learn ``MLPClassifier(relu, hidden layers
(10·d, 10·d), adam, max_iter=10000, random_state=seed)``; 5-fold shuffled ``KFold`` accuracy,
seed 1 by default. 0.5 means indistinguishable, 1.0 fully separable.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .result import posterior_draws_flat, result_attrs

__all__ = ["compare", "c2st", "interval_overlap"]


def c2st(x: np.ndarray, y: np.ndarray, *, seed: int = 1, n_folds: int = 5, max_samples: int | None = None) -> float:
    """Classifier two-sample test accuracy between samples ``x`` (n, d) and ``y`` (m, d).

    ``max_samples`` subsamples each side (seeded) to bound the cost; the spec uses 10,000.
    """
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"c2st needs two (n, d) samples with the same d (got {x.shape} and {y.shape})")
    rng = np.random.default_rng(seed)
    if max_samples is not None:
        if x.shape[0] > max_samples:
            x = x[rng.choice(x.shape[0], max_samples, replace=False)]
        if y.shape[0] > max_samples:
            y = y[rng.choice(y.shape[0], max_samples, replace=False)]
    mean, sd = x.mean(0), x.std(0, ddof=1)
    sd = np.where(sd > 0, sd, 1.0)
    data = np.concatenate([(x - mean) / sd, (y - mean) / sd])
    target = np.concatenate([np.zeros(x.shape[0]), np.ones(y.shape[0])])
    d = x.shape[1]
    clf = MLPClassifier(activation="relu", hidden_layer_sizes=(10 * d, 10 * d), solver="adam", max_iter=10000, random_state=seed)
    folds = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(clf, data, target, cv=folds, scoring="accuracy")))


def interval_overlap(ref: np.ndarray, other: np.ndarray, prob: float = 0.9) -> np.ndarray:
    """Fraction of the reference's central ``prob`` interval covered by the other's, per column."""
    a = (1 - prob) / 2
    rlo, rhi = np.quantile(ref, [a, 1 - a], axis=0)
    olo, ohi = np.quantile(other, [a, 1 - a], axis=0)
    inter = np.clip(np.minimum(rhi, ohi) - np.maximum(rlo, olo), 0, None)
    return inter / np.where(rhi > rlo, rhi - rlo, np.inf)


def _label(result: xr.DataTree, i: int) -> str:
    attrs = result_attrs(result)
    return attrs.get("label") or f"{i}:{attrs.get('route', 'unknown')}"


def compare(
    results: Sequence[xr.DataTree],
    *,
    labels: Sequence[str] | None = None,
    c2st_seed: int = 1,
    c2st_max_samples: int | None = 4000,
) -> pd.DataFrame:
    """Compare posteriors of the same entry and data (see module docstring).

    Parameters
    ----------
    results : sequence of DataTree
        The first is the reference for differences and overlaps.
    labels : names for the results (default ``"<index>:<route>"``).
    c2st_max_samples : per-side subsample size for C2ST (None: all draws).
    """
    if len(results) < 2:
        raise ValueError("compare needs at least two results")
    labels = list(labels) if labels is not None else [_label(r, i) for i, r in enumerate(results)]
    if len(labels) != len(results) or len(set(labels)) != len(labels):
        raise ValueError("labels must be unique, one per result")
    entries = {result_attrs(r).get("entry_id") for r in results}
    if len(entries) > 1:
        raise ValueError(f"compare needs results of one entry (got {sorted(map(str, entries))})")
    ref_draws, names = posterior_draws_flat(results[0])
    draws = [ref_draws] + [posterior_draws_flat(r, names)[0] for r in results[1:]]
    ref_mean, ref_sd = ref_draws.mean(0), ref_draws.std(0, ddof=1) if ref_draws.shape[0] > 1 else np.full(len(names), np.nan)
    rows = []
    for lab, res, d in zip(labels, results, draws):
        attrs = result_attrs(res)
        mean = d.mean(0)
        sd = d.std(0, ddof=1) if d.shape[0] > 1 else np.full(len(names), np.nan)
        overlap = interval_overlap(ref_draws, d) if d.shape[0] > 1 and ref_draws.shape[0] > 1 else np.full(len(names), np.nan)
        for j, n in enumerate(names):
            rows.append(
                {
                    "result": lab,
                    "route": attrs.get("route"),
                    "parameter": n,
                    "mean": mean[j],
                    "sd": sd[j],
                    "mean_diff_z": (mean[j] - ref_mean[j]) / ref_sd[j],
                    "var_ratio": (sd[j] / ref_sd[j]) ** 2,
                    "interval_overlap_90": overlap[j],
                    "n_draws": d.shape[0],
                    "wall_time_s": attrs.get("wall_time_s"),
                    "n_simulations": attrs.get("n_simulations"),
                    "n_loglik_evaluations": attrs.get("n_loglik_evaluations"),
                    "n_gradient_evaluations": attrs.get("n_gradient_evaluations"),
                }
            )
    table = pd.DataFrame(rows)
    scores = {}
    for i in range(len(results)):
        for k in range(i + 1, len(results)):
            if draws[i].shape[0] >= 10 and draws[k].shape[0] >= 10:
                scores[f"{labels[i]} vs {labels[k]}"] = c2st(draws[i], draws[k], seed=c2st_seed, max_samples=c2st_max_samples)
    table.attrs["c2st"] = scores
    table.attrs["c2st_seed"] = c2st_seed
    return table
