r"""Posterior analyses from the seed papers, usable on any route's result (DESIGN.md §4).

Three analyses of a posterior over the flat parameter vector (the order of
:func:`mechzoo.inference.result.posterior_draws_flat`), all working on plain float64 NumPy arrays
and a vectorised log-density callable, so that they apply to every zoo entry and every route:

* :func:`conditional_correlations` — pairwise correlations of the 2-D *conditional* posteriors
  :math:`p(\theta_i, \theta_j \mid \theta_{\setminus ij}, x_o)`, averaged over conditioning points
  drawn from the posterior (Gonçalves et al. 2020, Fig. 9 and Methods "conditional correlations";
  released analysis ``8_cc``: 500 conditioning samples, 50×50 grids). They reveal compensation
  mechanisms that marginal correlations (:func:`posterior_correlations`) hide.
* :func:`sensitivity` — stiff and sloppy parameter directions from an eigen-decomposition of the
  posterior covariance, of the negative Hessian of the log posterior at a point, or of the
  expected outer product of its gradient (the active-subspace analysis of the posterior
  log-probability that Deistler et al. 2022 used through ``sbi.analysis.ActiveSubspace``;
  Constantine 2015).
* :func:`high_probability_path` — a path between two parameter sets that stays in regions of high
  posterior density, as in Gonçalves et al. 2020, Fig. 8 (two dissimilar posterior samples of the
  pyloric network connected by a path along which the rhythm is preserved).

:func:`log_prob_from_result` builds the log-density callable for NPE results from the saved,
amortised estimator; for the likelihood routes (MAP, NUTS, HMC) the result holds no density and
the user passes their own callable.

References
----------
Gonçalves, Lueckmann, Deistler et al. (2020), "Training deep neural density estimators to identify
mechanistic models of neural dynamics", eLife 9:e56261 (Fig. 8 and 9).
Deistler, Macke, Gonçalves (2022), "Energy-efficient network activity from disparate circuit
parameters", PNAS 119(44):e2207632119.
Constantine (2015), "Active Subspaces", SIAM.
E, Ren, Vanden-Eijnden (2007), "Simplified and improved string method for computing the minimum
energy paths in barrier-crossing events", J. Chem. Phys. 126:164103.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import xarray as xr

from .result import posterior_draws_flat, result_attrs

__all__ = [
    "posterior_correlations",
    "conditional_correlations",
    "sensitivity",
    "high_probability_path",
    "plot_high_probability_path",
    "log_prob_from_result",
]

LogProb = Callable[[np.ndarray], np.ndarray]
"""Maps an (n, d) float64 array of flat parameter vectors to their (n,) log densities."""

_BATCH_SIZE = 100_000
_PATIENCE = 10  # iterations without movement before high_probability_path stops


# ----------------------------------------------------------------------------- input checks
def _check_draws(draws: Any, names: Sequence[str], *, min_draws: int = 2) -> tuple[np.ndarray, list[str]]:
    draws = np.asarray(draws, dtype=np.float64)
    names = [str(n) for n in names]
    if draws.ndim != 2:
        raise ValueError(f"draws must be a 2-D array (n_draws, n_params); got shape {draws.shape}")
    if draws.shape[1] != len(names):
        raise ValueError(
            f"draws have {draws.shape[1]} columns but {len(names)} names were given; "
            "pass the names returned with the draws by posterior_draws_flat(result)"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"parameter names must be unique (got {names})")
    if draws.shape[0] < min_draws:
        raise ValueError(f"need at least {min_draws} draws (got {draws.shape[0]})")
    if not np.all(np.isfinite(draws)):
        raise ValueError("draws contain NaN or inf; drop those rows first")
    return draws, names


def _check_vector(value: Any, d: int, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (d,):
        raise ValueError(f"{what} must have shape ({d},) — one value per parameter; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or inf")
    return arr


def _check_scale(scale: Any, d: int) -> np.ndarray:
    s = _check_vector(scale, d, "scale")
    if np.any(s <= 0):
        raise ValueError(f"scale must be positive for every parameter (got {s.tolist()})")
    return s


def _evaluate(log_prob: LogProb, theta: np.ndarray, batch_size: int = _BATCH_SIZE) -> np.ndarray:
    """``log_prob`` on the rows of ``theta`` (n, d) in batches; NaN is treated as zero density (-inf)."""
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    out = np.empty(theta.shape[0], dtype=np.float64)
    for start in range(0, theta.shape[0], batch_size):
        chunk = theta[start : start + batch_size]
        vals = np.asarray(log_prob(chunk), dtype=np.float64)
        if vals.shape not in ((chunk.shape[0],), (chunk.shape[0], 1)):
            raise ValueError(
                f"log_prob must map an (n, d) array to n log densities; for n={chunk.shape[0]} it returned shape {vals.shape}"
            )
        out[start : start + chunk.shape[0]] = vals.reshape(-1)
    out[np.isnan(out)] = -np.inf
    if np.any(out == np.inf):
        raise ValueError("log_prob returned +inf; it must return finite values or -inf outside the support")
    return out


def _fd_gradient(log_prob: LogProb, theta: np.ndarray, lp0: np.ndarray, scale: np.ndarray, h: float) -> np.ndarray:
    r"""Gradient of ``log_prob`` at the rows of ``theta`` (n, d) with respect to the scaled
    coordinates :math:`z = \theta / s`, by central differences with step ``h`` (in units of ``s``).

    Where one side of the stencil has zero density, the one-sided difference from the centre is
    used; where both have, that component is 0.
    """
    n, d = theta.shape
    offsets = h * np.diag(scale)
    stencil = np.concatenate([theta[:, None, :] + offsets, theta[:, None, :] - offsets], axis=1)
    vals = _evaluate(log_prob, stencil.reshape(-1, d)).reshape(n, 2 * d)
    fp, fm, f0 = vals[:, :d], vals[:, d:], lp0[:, None]
    ok_p, ok_m, ok_0 = np.isfinite(fp), np.isfinite(fm), np.isfinite(f0)
    with np.errstate(invalid="ignore"):
        grad = np.where(ok_p & ok_m, (fp - fm) / (2 * h), 0.0)
        grad = np.where(ok_p & ~ok_m & ok_0, (fp - f0) / h, grad)
        grad = np.where(~ok_p & ok_m & ok_0, (f0 - fm) / h, grad)
    return grad


def _square(values: np.ndarray, names: list[str], name: str, attrs: dict[str, Any]) -> xr.DataArray:
    return xr.DataArray(
        values, dims=("parameter", "parameter_"), coords={"parameter": names, "parameter_": names}, name=name, attrs=attrs
    )


# ----------------------------------------------------------------------------- correlations
def posterior_correlations(draws: np.ndarray, names: Sequence[str]) -> xr.DataArray:
    """Marginal (Pearson) correlation matrix of posterior draws.

    Parameters
    ----------
    draws : (n_draws, d) array
        Posterior draws of the flat parameter vector (e.g. from ``posterior_draws_flat``).
    names : d parameter names.

    Returns
    -------
    DataArray (d × d) with dims ``("parameter", "parameter_")``, dimensionless, diagonal 1.
    """
    draws, names = _check_draws(draws, names)
    sd = draws.std(axis=0)
    if np.any(sd == 0):
        raise ValueError(f"parameter(s) {[n for n, s in zip(names, sd) if s == 0]} are constant over the draws; correlations are undefined")
    corr = np.corrcoef(draws, rowvar=False)
    corr = 0.5 * (corr + corr.T)
    np.fill_diagonal(corr, 1.0)
    return _square(corr, names, "posterior_correlation", {"method": "marginal Pearson correlation of posterior draws", "n_draws": draws.shape[0]})


def _weighted_correlation(log_w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correlation of (a, b) on a grid under weights exp(log_w); ``log_w`` (n, G, G), a (G,), b (G,)."""
    peak = np.max(log_w, axis=(1, 2), keepdims=True)
    with np.errstate(invalid="ignore"):
        w = np.exp(log_w - peak)
    w = np.where(np.isfinite(w), w, 0.0)
    total = w.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        w = w / total[:, None, None]
        pa = w.sum(axis=2)  # (n, G) marginal weights of a
        pb = w.sum(axis=1)
        ma, mb = pa @ a, pb @ b
        va = pa @ a**2 - ma**2
        vb = pb @ b**2 - mb**2
        cov = np.einsum("nij,i,j->n", w, a, b) - ma * mb
        corr = cov / np.sqrt(va * vb)
    tiny_a, tiny_b = 1e-12 * (a[-1] - a[0]) ** 2, 1e-12 * (b[-1] - b[0]) ** 2  # round-off level of a one-row grid
    corr[~(total > 0) | ~(va > tiny_a) | ~(vb > tiny_b)] = np.nan
    return np.clip(corr, -1.0, 1.0)


def conditional_correlations(
    log_prob: LogProb,
    draws: np.ndarray,
    names: Sequence[str],
    *,
    n_points: int = 50,
    n_grid: int = 50,
    quantiles: tuple[float, float] = (0.001, 0.999),
    limits: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
    batch_size: int = _BATCH_SIZE,
) -> xr.DataArray:
    r"""Pairwise conditional correlations of the posterior (Gonçalves et al. 2020, Fig. 9).

    For a conditioning point :math:`\theta^{(c)}` (a posterior draw) and a pair (i, j), the
    density is evaluated on an ``n_grid`` × ``n_grid`` grid over :math:`(\theta_i, \theta_j)`
    with every other parameter held at :math:`\theta^{(c)}`; normalised over the grid this is
    the 2-D conditional :math:`p(\theta_i, \theta_j \mid \theta^{(c)}_{\setminus ij}, x_o)`, and
    its Pearson correlation coefficient is computed from the grid weights. The result is the mean
    over ``n_points`` conditioning draws chosen without replacement (seeded). For a Gaussian with
    precision matrix P it equals :math:`-P_{ij}/\sqrt{P_{ii}P_{jj}}` (partial correlation) at
    every conditioning point.

    Parameters
    ----------
    log_prob : callable
        (n, d) float64 array → (n,) log densities (vectorised; -inf or NaN outside the support;
        an unnormalised density is fine).
    draws : (n_draws, d) array
        Posterior draws (same units as the parameters); the conditioning points are drawn from them.
    names : d parameter names.
    n_points : number of conditioning draws averaged over (the eLife analysis used 500).
    n_grid : grid points per axis (the eLife analysis used 50). The grid must resolve the
        conditional: its spacing should be well below the conditional SDs.
    quantiles : (lower, upper) quantiles of the draws that set each axis's grid span when
        ``limits`` is not given. The span must hold the conditionals of conditioning points in
        the tails too: on a 4-D Gaussian test case a 1–99 % span biased the result by up to 0.04
        through truncation, the default 0.1–99.9 % by 0.008. (The eLife analysis spanned the box
        prior instead; pass its bounds as ``limits`` to reproduce that choice.)
    limits : optional (lower (d,), upper (d,)) grid span in the units of the parameters.
    seed : seed of the choice of conditioning draws.
    batch_size : rows per ``log_prob`` call (whole grids are evaluated together, so at least
        ``n_grid²``); bounds the memory used.

    Returns
    -------
    DataArray (d × d), dims ``("parameter", "parameter_")``, dimensionless; symmetric, diagonal
    1. Attributes record the settings and ``min_valid_points``, the smallest number of
    conditioning points that gave a defined correlation for a pair (a grid with no finite
    density, or with all weight in one row or column, gives none; such points are left out of
    that pair's mean, and a pair with none at all is NaN).

    Notes
    -----
    Cost: ``n_points · n_grid² · d(d−1)/2`` density evaluations (31 parameters, 50 points,
    50×50 grids: 58 million).
    """
    draws, names = _check_draws(draws, names)
    d = len(names)
    if d < 2:
        raise ValueError("conditional correlations need at least two parameters")
    if n_points < 1 or n_grid < 3:
        raise ValueError(f"n_points must be >= 1 and n_grid >= 3 (got {n_points}, {n_grid})")
    if limits is None:
        q_lo, q_hi = quantiles
        if not 0 <= q_lo < q_hi <= 1:
            raise ValueError(f"quantiles must satisfy 0 <= lower < upper <= 1 (got {quantiles})")
        lower, upper = np.quantile(draws, [q_lo, q_hi], axis=0)
    else:
        if len(limits) != 2:
            raise ValueError("limits must be a pair (lower, upper) of arrays of length d")
        lower, upper = _check_vector(limits[0], d, "limits[0]"), _check_vector(limits[1], d, "limits[1]")
    if np.any(upper <= lower):
        bad = [n for n, lo, hi in zip(names, lower, upper) if hi <= lo]
        raise ValueError(f"empty grid span for {bad} (upper <= lower); pass explicit limits or check the draws")
    rng = np.random.default_rng(seed)
    n_points = min(int(n_points), draws.shape[0])
    points = draws[np.sort(rng.choice(draws.shape[0], size=n_points, replace=False))]
    axes = np.linspace(lower, upper, n_grid, axis=1)  # (d, n_grid)

    corr = np.eye(d)
    n_valid = np.full((d, d), n_points)
    per_chunk = max(1, batch_size // n_grid**2)  # conditioning points per log_prob call
    for i in range(d):
        for j in range(i + 1, d):
            per_point = np.empty(n_points)
            for k in range(0, n_points, per_chunk):
                chunk = points[k : k + per_chunk]
                theta = np.broadcast_to(chunk[:, None, None, :], (len(chunk), n_grid, n_grid, d)).copy()
                theta[..., i] = axes[i][None, :, None]
                theta[..., j] = axes[j][None, None, :]
                log_w = _evaluate(log_prob, theta.reshape(-1, d), batch_size).reshape(len(chunk), n_grid, n_grid)
                per_point[k : k + len(chunk)] = _weighted_correlation(log_w, axes[i], axes[j])
            ok = np.isfinite(per_point)
            n_valid[i, j] = n_valid[j, i] = int(ok.sum())
            corr[i, j] = corr[j, i] = per_point[ok].mean() if ok.any() else np.nan
    attrs = {
        "method": "conditional correlation on 2-D grids, averaged over posterior draws (Goncalves et al. 2020, Fig. 9)",
        "n_points": n_points,
        "n_grid": int(n_grid),
        "span": "limits" if limits is not None else f"draw quantiles {float(quantiles[0])}-{float(quantiles[1])}",
        "seed": int(seed),
        "min_valid_points": int(n_valid.min()),
    }
    return _square(corr, names, "conditional_correlation", attrs)


# ----------------------------------------------------------------------------- sensitivity
_STIFF_SLOPPY = (
    "directions are unit vectors in standardised coordinates z = theta / scale, sorted stiffest first: "
    "stiff = largest curvature of -log p = smallest posterior variance (the data constrain this combination); "
    "sloppy = smallest curvature = largest variance (parameters compensate along it)"
)


def _neg_hessian(log_prob: LogProb, point: np.ndarray, scale: np.ndarray, h: float) -> np.ndarray:
    r"""Negative Hessian of ``log_prob`` at ``point`` in coordinates :math:`z = \theta / s` by
    central differences with step ``h``: :math:`(f_{+i} - 2f_0 + f_{-i})/h^2` on the diagonal and
    :math:`(f_{++} - f_{+-} - f_{-+} + f_{--})/(4h^2)` off it (one batched call of
    :math:`1 + 2d + 2d(d-1)` points)."""
    d = point.size
    step = h * np.diag(scale)
    iu, ju = np.triu_indices(d, k=1)
    rows = [point[None], point + step, point - step]
    for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        rows.append(point + si * step[iu] + sj * step[ju])
    vals = _evaluate(log_prob, np.concatenate(rows))
    if not np.all(np.isfinite(vals)):
        raise ValueError(
            "log_prob is not finite on the finite-difference stencil around point; "
            "choose a point inside the support or a smaller fd_step"
        )
    f0, fp, fm = vals[0], vals[1 : 1 + d], vals[1 + d : 1 + 2 * d]
    n_off = iu.size
    fpp, fpm, fmp, fmm = (vals[1 + 2 * d + k * n_off : 1 + 2 * d + (k + 1) * n_off] for k in range(4))
    hess = np.diag((fp - 2 * f0 + fm) / h**2)
    hess[iu, ju] = hess[ju, iu] = (fpp - fpm - fmp + fmm) / (4 * h**2)
    return -hess


def sensitivity(
    draws: np.ndarray,
    names: Sequence[str],
    *,
    log_prob: LogProb | None = None,
    point: np.ndarray | None = None,
    scale: str | np.ndarray = "standardised",
    fd_step: float = 0.05,
    n_gradient_draws: int = 500,
    seed: int = 0,
) -> xr.Dataset:
    r"""Stiff and sloppy parameter directions of the posterior.

    Parameters are first standardised, :math:`z = \theta / s` (``scale``), and one of three
    symmetric matrices is eigen-decomposed:

    * ``log_prob`` not given — the **posterior covariance** of z (from the draws). Its eigenvalues
      are variances along the eigenvectors; stiffest = smallest variance.
    * ``log_prob`` and ``point`` given — the **negative Hessian** of log p at ``point`` in z
      (central finite differences, step ``fd_step`` in units of s); for a Gaussian it is the
      precision matrix :math:`S P S` whatever the point. Eigenvalues are curvatures (1 / variance
      at a mode); stiffest = largest curvature.
    * ``log_prob`` given, no ``point`` — the **active subspace** of the log posterior,
      :math:`M = E_{p}[\nabla_z \log p \, \nabla_z \log p^\top]`, averaged over
      ``n_gradient_draws`` draws (seeded subsample; gradients by central differences) — the
      analysis of Deistler et al. 2022 (``sbi.analysis.ActiveSubspace`` with the posterior
      log-probability as the property; Constantine 2015). For a Gaussian, M equals the precision
      matrix. Eigenvalues are mean squared directional derivatives; stiffest = largest.

    Stiff directions are parameter combinations that the data pin down (moving along them quickly
    lowers the posterior density); sloppy directions are combinations along which parameters
    compensate each other (the density barely changes).

    Parameters
    ----------
    draws : (n_draws, d) array of posterior draws (same units as the parameters).
    names : d parameter names.
    log_prob : optional vectorised log density, (n, d) → (n,).
    point : optional (d,) parameter vector (same units as the parameters), e.g. a MAP estimate
        or a posterior draw; needs ``log_prob``.
    scale : ``"standardised"`` (s = posterior SD of the draws), ``"none"`` (s = 1, raw units) or
        an array of d positive SDs in the units of the parameters (e.g. the prior SDs).
    fd_step : finite-difference step in standardised units (default 0.05: the truncation error
        of the stencil is O(fd_step²) relative, and the step is large enough for the float32
        round-off of neural density estimators).
    n_gradient_draws : draws used for the active-subspace average.
    seed : seed of that subsample.

    Returns
    -------
    Dataset with coords ``direction`` (0 = stiffest), ``parameter``, ``rank`` and variables

    * ``eigenvalue`` (direction): of the analysed matrix (see above); standardised units:
      variance (covariance) or 1/variance (Hessian, active subspace);
    * ``curvature`` (direction): 1/eigenvalue for the covariance, the eigenvalue otherwise;
    * ``sd_along_direction`` (direction): 1/√curvature, the posterior SD along the direction in
      standardised units (NaN where the curvature is not positive);
    * ``eigenvector`` (direction, parameter): unit vectors in standardised coordinates, sign
      chosen so that the largest-magnitude loading is positive; a step t along direction k is
      :math:`\theta + t\, s \odot v_k` in the units of the parameters;
    * ``stiffest_parameter``, ``stiffest_loading``, ``sloppiest_parameter``, ``sloppiest_loading``
      (rank): the parameters of the stiffest and sloppiest directions sorted by |loading|, with
      their signed loadings;
    * ``scale`` (parameter): s, in the units of the parameters.
    """
    draws, names = _check_draws(draws, names)
    d = len(names)
    if point is not None and log_prob is None:
        raise ValueError("point needs log_prob: the Hessian is taken of log_prob at point (or omit point for the covariance analysis)")
    if isinstance(scale, str):
        if scale == "standardised":
            s = draws.std(axis=0, ddof=1)
            if np.any(s == 0):
                raise ValueError(f"parameter(s) {[n for n, v in zip(names, s) if v == 0]} are constant over the draws; pass scale explicitly")
        elif scale == "none":
            s = np.ones(d)
        else:
            raise ValueError(f"scale must be 'standardised', 'none' or an array of {d} positive SDs (got {scale!r})")
        scale_label = scale
    else:
        s = _check_scale(scale, d)
        scale_label = "user"
    if fd_step <= 0:
        raise ValueError(f"fd_step must be positive (got {fd_step})")

    if log_prob is None:
        method = "covariance"
        matrix = np.cov(draws / s, rowvar=False, ddof=1).reshape(d, d)
    elif point is not None:
        method = "hessian"
        matrix = _neg_hessian(log_prob, _check_vector(point, d, "point"), s, fd_step)
    else:
        method = "active_subspace"
        rng = np.random.default_rng(seed)
        n = min(int(n_gradient_draws), draws.shape[0])
        at = draws[np.sort(rng.choice(draws.shape[0], size=n, replace=False))]
        lp0 = _evaluate(log_prob, at)
        if not np.all(np.isfinite(lp0)):
            raise ValueError("log_prob is -inf or NaN at some draws; the draws must lie in the support of log_prob")
        grad = _fd_gradient(log_prob, at, lp0, s, fd_step)
        matrix = grad.T @ grad / n
    matrix = 0.5 * (matrix + matrix.T)
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"the {method} matrix is not finite; check log_prob and the draws")
    eigval, eigvec = np.linalg.eigh(matrix)  # ascending
    if method != "covariance":
        eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    eigvec = eigvec.T.copy()  # rows = directions
    flip = np.sign(eigvec[np.arange(d), np.argmax(np.abs(eigvec), axis=1)])
    eigvec *= flip[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        curvature = 1.0 / eigval if method == "covariance" else eigval.copy()
        sd_along = np.where(curvature > 0, 1.0 / np.sqrt(curvature), np.nan)

    def _ranked(vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(-np.abs(vec), kind="stable")
        return np.asarray(names, dtype=str)[order], vec[order]

    stiff_names, stiff_load = _ranked(eigvec[0])
    sloppy_names, sloppy_load = _ranked(eigvec[-1])
    return xr.Dataset(
        {
            "eigenvalue": ("direction", eigval),
            "curvature": ("direction", curvature),
            "sd_along_direction": ("direction", sd_along),
            "eigenvector": (("direction", "parameter"), eigvec),
            "stiffest_parameter": ("rank", stiff_names),
            "stiffest_loading": ("rank", stiff_load),
            "sloppiest_parameter": ("rank", sloppy_names),
            "sloppiest_loading": ("rank", sloppy_load),
            "scale": ("parameter", s),
        },
        coords={"direction": np.arange(d), "parameter": names, "rank": np.arange(d)},
        attrs={
            "method": method,
            "scale": scale_label,
            "fd_step": float(fd_step) if method != "covariance" else "n/a",
            "n_draws": int(draws.shape[0]),
            "convention": _STIFF_SLOPPY,
        },
    )


# ----------------------------------------------------------------------------- paths
def _reparametrise(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Redistribute the points of a polyline (m, d) to equal arc length (ends fixed), by linear
    interpolation; returns the new points and their cumulative arc length."""
    seg = np.linalg.norm(np.diff(z, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] == 0:
        return z.copy(), s
    target = np.linspace(0.0, s[-1], z.shape[0])
    idx = np.clip(np.searchsorted(s, target, side="right") - 1, 0, z.shape[0] - 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(seg[idx] > 0, (target - s[idx]) / seg[idx], 0.0)
    out = z[idx] + frac[:, None] * (z[idx + 1] - z[idx])
    out[0], out[-1] = z[0], z[-1]
    return out, target


def high_probability_path(
    log_prob: LogProb,
    start: np.ndarray,
    end: np.ndarray,
    *,
    n_points: int = 30,
    n_iter: int = 300,
    step: float = 0.1,
    seed: int = 0,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
    scale: np.ndarray | None = None,
    grad_log_prob: Callable[[np.ndarray], np.ndarray] | None = None,
    fd_step: float = 1e-3,
    jitter: float = 1e-3,
    tol: float = 1e-7,
    names: Sequence[str] | None = None,
    simulate: Callable[[np.ndarray], np.ndarray] | None = None,
    feature_names: Sequence[str] | None = None,
) -> xr.Dataset:
    r"""A path from ``start`` to ``end`` that stays in high posterior density (Gonçalves et al. 2020, Fig. 8).

    Algorithm (a string method for the maximum-density path; E, Ren & Vanden-Eijnden 2007, with
    log p in place of minus the energy). Coordinates are scaled, :math:`z = \theta / s`.

    1. The path is ``n_points`` points on the straight line from ``start`` to ``end``; the
       interior points get a seeded Gaussian perturbation of SD ``jitter`` × spacing (it breaks
       exact symmetries, e.g. a line through the centre of a ring-shaped density).
    2. Each iteration, for every interior point k: the gradient :math:`g_k = \nabla_z \log p`
       (``grad_log_prob`` times s, or central differences with step ``fd_step``), the tangent
       :math:`\tau_k \propto z_{k+1} - z_{k-1}` and the perpendicular part
       :math:`g_k^\perp = g_k - (g_k\cdot\tau_k)\tau_k`. The point moves by
       :math:`\alpha_k\, g_k^\perp / \lVert g_k^\perp \rVert`, clipped to ``bounds``; the move is
       kept only if log p rises at that point, and the point's step length :math:`\alpha_k`
       then grows by 1.2 (at most the initial spacing), else it halves and the point stays.
       Initially :math:`\alpha_k` = ``step`` × spacing.
    3. The points are redistributed to equal arc length along the polyline (linear
       interpolation; the end points never move).
    4. Stop after ``n_iter`` iterations, or once no point has moved more than ``tol`` (scaled
       units) in each of 10 consecutive iterations (by then a point whose moves keep failing has
       cut its step length a thousandfold).

    At convergence log p changes only along the path (its gradient is tangent to it): the path
    follows the ridge of the density, and its lowest point is a saddle (mountain pass) of the density:
    no small deformation of the path raises its minimum.

    Where the literature differs: Gonçalves et al. (2020; ``7_stg`` code) instead minimised the
    line integral of −log p weighted by the path speed, :math:`\int -\log p(\gamma(t))\,
    \lVert\gamma'(t)\rVert\,dt`, over a few sine modes added to the straight line (BFGS, 30
    iterations), in prior-z-scored coordinates. That objective trades density against length and
    depends on the normalisation of p; the string method here has no such dependence and no
    limit on the path's shape beyond ``n_points``. It is a local method: it finds the ridge
    nearest the straight line.

    Parameters
    ----------
    log_prob : callable, (n, d) float64 → (n,) log densities (vectorised).
    start, end : (d,) parameter vectors (same units as the parameters), e.g. two posterior draws;
        log p must be finite at both.
    n_points : points on the path, ends included.
    n_iter : maximum iterations.
    step : initial step length as a fraction of the initial spacing between points.
    seed : seed of the initial jitter.
    bounds : optional (lower (d,), upper (d,)) box, e.g. the prior's; points are clipped into it.
    scale : (d,) positive length scales s (units of the parameters) defining the coordinates in
        which distances, steps and gradients are measured; default: the ``bounds`` widths if
        given, else 1. Pass e.g. posterior SDs when parameters differ in magnitude.
    grad_log_prob : optional callable (n, d) → (n, d), the gradient of log p in the units of the
        parameters; default: central finite differences on ``log_prob`` (2·d evaluations per point).
    fd_step : finite-difference step in units of ``scale``.
    jitter : SD of the initial perturbation as a fraction of the spacing (0: none).
    tol : stopping threshold on the largest point displacement per iteration (scaled units).
    names : d parameter names (default ``theta[0]`` …).
    simulate : optional callable (n, d) → (n, f) features, run once on the final path.
    feature_names : f names of the simulated features (default ``feature[0]`` …).

    Returns
    -------
    Dataset with coords ``point``, ``parameter`` (and ``feature``) and variables ``path``
    (point, parameter; same units as the parameters), ``log_prob`` (point), ``straight_line``
    and ``straight_log_prob`` (the straight line with the same number of points, for
    comparison), ``arc_length`` (point; cumulative, scaled units) and ``features`` (point,
    feature) when ``simulate`` is given. Attributes record the settings, the iterations run and
    the minimum log density along both paths.
    """
    if np.ndim(start) != 1:
        raise ValueError(f"start must be a 1-D parameter vector; got shape {np.shape(start)}")
    d = np.size(start)
    start, end = _check_vector(start, d, "start"), _check_vector(end, d, "end")
    names = [f"theta[{i}]" for i in range(d)] if names is None else [str(n) for n in names]
    if len(names) != d:
        raise ValueError(f"{len(names)} names for {d} parameters")
    if n_points < 3 or n_iter < 0:
        raise ValueError(f"n_points must be >= 3 and n_iter >= 0 (got {n_points}, {n_iter})")
    if not (step > 0 and fd_step > 0 and jitter >= 0 and tol >= 0):
        raise ValueError("step and fd_step must be positive; jitter and tol non-negative")
    if np.array_equal(start, end):
        raise ValueError("start and end are the same point")
    lower = upper = None
    if bounds is not None:
        if len(bounds) != 2:
            raise ValueError("bounds must be a pair (lower, upper) of arrays of length d")
        lower, upper = _check_vector(bounds[0], d, "bounds[0]"), _check_vector(bounds[1], d, "bounds[1]")
        if np.any(upper <= lower):
            raise ValueError("bounds: every upper bound must exceed its lower bound")
        for what, p in (("start", start), ("end", end)):
            if np.any(p < lower) or np.any(p > upper):
                raise ValueError(f"{what} lies outside bounds")
    s = _check_scale(scale, d) if scale is not None else (upper - lower if bounds is not None else np.ones(d))
    ends_lp = _evaluate(log_prob, np.stack([start, end]))
    if not np.all(np.isfinite(ends_lp)):
        raise ValueError(f"log_prob is not finite at start and end ({ends_lp.tolist()}); both must lie where the density is positive")

    def to_theta(z: np.ndarray) -> np.ndarray:
        theta = z * s
        return np.clip(theta, lower, upper) if bounds is not None else theta

    def gradient_z(z: np.ndarray, lp: np.ndarray) -> np.ndarray:
        theta = z * s
        if grad_log_prob is None:
            return _fd_gradient(log_prob, theta, lp, s, fd_step)
        g = np.asarray(grad_log_prob(theta), dtype=np.float64)
        if g.shape != theta.shape:
            raise ValueError(f"grad_log_prob must return shape {theta.shape}; got {g.shape}")
        return np.where(np.isfinite(g), g, 0.0) * s

    t = np.linspace(0.0, 1.0, n_points)[:, None]
    straight = start + t * (end - start)
    straight_lp = _evaluate(log_prob, straight)
    z = straight / s
    spacing = np.linalg.norm(z[-1] - z[0]) / (n_points - 1)
    rng = np.random.default_rng(seed)
    if jitter > 0:
        z[1:-1] += jitter * spacing * rng.standard_normal((n_points - 2, d))
        z = to_theta(z) / s
    lp = _evaluate(log_prob, z * s)
    alpha = np.full(n_points - 2, step * spacing)
    n_run, last_move, still = 0, np.nan, 0
    for _ in range(n_iter):
        inner = z[1:-1]
        g = gradient_z(inner, lp[1:-1])
        tangent = z[2:] - z[:-2]
        tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-300)
        g_perp = g - np.sum(g * tangent, axis=1, keepdims=True) * tangent
        norm = np.linalg.norm(g_perp, axis=1)
        direction = np.where(norm[:, None] > 0, g_perp / np.maximum(norm, 1e-300)[:, None], 0.0)
        proposal = to_theta(inner + alpha[:, None] * direction) / s
        lp_new = _evaluate(log_prob, proposal * s)
        accept = lp_new > lp[1:-1]
        alpha = np.where(accept, np.minimum(alpha * 1.2, spacing), alpha * 0.5)
        moved = z.copy()
        moved[1:-1] = np.where(accept[:, None], proposal, inner)
        moved, _ = _reparametrise(moved)
        moved = to_theta(moved) / s
        last_move = float(np.max(np.linalg.norm(moved - z, axis=1)))
        z = moved
        lp = _evaluate(log_prob, z * s)
        n_run += 1
        still = still + 1 if last_move <= tol else 0
        if still >= _PATIENCE:
            break
    path = z * s
    path[0], path[-1] = start, end
    lp = _evaluate(log_prob, path)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(z, axis=0), axis=1))])

    data_vars: dict[str, Any] = {
        "path": (("point", "parameter"), path),
        "log_prob": ("point", lp),
        "straight_line": (("point", "parameter"), straight),
        "straight_log_prob": ("point", straight_lp),
        "arc_length": ("point", arc),
    }
    coords: dict[str, Any] = {"point": np.arange(n_points), "parameter": names}
    if simulate is not None:
        feats = np.asarray(simulate(path), dtype=np.float64)
        if feats.ndim != 2 or feats.shape[0] != n_points:
            raise ValueError(f"simulate must map an ({n_points}, {d}) array to ({n_points}, n_features); got shape {feats.shape}")
        fnames = [f"feature[{k}]" for k in range(feats.shape[1])] if feature_names is None else [str(f) for f in feature_names]
        if len(fnames) != feats.shape[1]:
            raise ValueError(f"{len(fnames)} feature names for {feats.shape[1]} features")
        data_vars["features"] = (("point", "feature"), feats)
        coords["feature"] = fnames
    attrs = {
        "method": "string method for the maximum-density path (E, Ren & Vanden-Eijnden 2007); cf. Goncalves et al. 2020, Fig. 8",
        "n_points": int(n_points),
        "n_iter": int(n_iter),
        "n_iter_run": int(n_run),
        "last_max_move": last_move,
        "step": float(step),
        "seed": int(seed),
        "jitter": float(jitter),
        "tol": float(tol),
        "gradient": "grad_log_prob" if grad_log_prob is not None else f"central differences, fd_step={fd_step}",
        "scale": s.tolist(),
        "bounds": "given" if bounds is not None else "none",
        "min_log_prob": float(np.min(lp)),
        "straight_min_log_prob": float(np.min(straight_lp)),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def plot_high_probability_path(path: xr.Dataset, *, observed: Any = None, max_parameters: int = 6, figsize: tuple[float, float] = (13.0, 3.6)):
    """Figure of a path from :func:`high_probability_path` (e.g. the group ``high_probability_path``
    of the pyloric reference result): three panels against the position along the path (0 at the
    start draw, 1 at the end draw).

    1. log posterior density along the path (circles) and along the straight line between the same
       end points (squares);
    2. the ``max_parameters`` parameters whose end points differ most (relative to the smaller
       magnitude), each divided by its value at the start, so that all share one axis;
    3. when the path has ``features``: every feature along the path divided by the observation
       ``observed`` (a vector in the order of the ``feature`` coordinate; default: the feature at the
       start point), with the straight line's features (``straight_line_features``, if stored) as
       crosses; points whose simulation gave a non-finite feature (an invalid rhythm) are marked in
       red on the horizontal axis and counted in the title.

    Returns the matplotlib ``Figure`` (not shown or saved; the caller does that).
    """
    import matplotlib.pyplot as plt

    if "path" not in path or "log_prob" not in path:
        raise ValueError("plot_high_probability_path needs the Dataset of high_probability_path (variables 'path' and 'log_prob')")
    if max_parameters < 1:
        raise ValueError(f"max_parameters must be >= 1 (got {max_parameters})")
    theta = np.asarray(path["path"].values, dtype=np.float64)
    names = [str(n) for n in path["parameter"].values]
    s = np.linspace(0.0, 1.0, theta.shape[0])
    has_features = "features" in path
    fig, axes = plt.subplots(1, 3 if has_features else 2, figsize=figsize)
    ax = axes[0]
    ax.plot(s, path["log_prob"].values, "o-", ms=3, label="high-probability path")
    if "straight_log_prob" in path:
        ax.plot(s, path["straight_log_prob"].values, "s--", ms=3, label="straight line")
    ax.set(xlabel="position along the path", ylabel="log posterior density")
    ax.legend(fontsize=7)

    ax = axes[1]
    a, b = theta[0], theta[-1]
    rel = np.abs(a - b) / np.maximum(np.minimum(np.abs(a), np.abs(b)), 1e-300)
    for i in np.argsort(-rel)[: min(max_parameters, len(names))]:
        ax.plot(s, theta[:, i] / a[i] if a[i] != 0 else theta[:, i], "-", lw=1.2, label=f"{names[i]} ({rel[i]:.0%})")
    ax.set(xlabel="position along the path", ylabel="parameter / value at the start")
    ax.legend(fontsize=6, title="largest end-point differences", title_fontsize=6)

    if has_features:
        ax = axes[2]
        feats = np.asarray(path["features"].values, dtype=np.float64)
        fnames = [str(f) for f in path["feature"].values]
        ref = feats[0] if observed is None else np.asarray(observed, dtype=np.float64)
        if ref.shape != (feats.shape[1],):
            raise ValueError(f"observed must have one value per feature ({feats.shape[1]}); got shape {ref.shape}")
        ref = np.where(ref != 0, ref, np.nan)
        straight = np.asarray(path["straight_line_features"].values, dtype=np.float64) if "straight_line_features" in path else None
        for k, f in enumerate(fnames):
            line = ax.plot(s, feats[:, k] / ref[k], "o-", ms=2.5, lw=0.9, label=f)[0]
            if straight is not None:
                ax.plot(s, straight[:, k] / ref[k], "x", ms=3, color=line.get_color())
        ax.axhline(1.0, color="k", lw=0.6, ls=":")
        invalid = ~np.isfinite(feats).all(axis=1)
        if invalid.any():
            ax.plot(s[invalid], np.full(invalid.sum(), ax.get_ylim()[0]), "v", color="C3", ms=6, clip_on=False)
        n_straight = "" if straight is None else f", straight line {int(np.isfinite(straight).all(axis=1).sum())}/{len(s)} (x)"
        ax.set_title(f"valid points: path {int((~invalid).sum())}/{len(s)}{n_straight}", fontsize=8)
        ax.set(xlabel="position along the path", ylabel="feature / " + ("observation" if observed is not None else "value at the start"))
        ax.legend(fontsize=5, ncol=2)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- densities from results
def log_prob_from_result(result: xr.DataTree, problem: Any = None, *, batch_size: int = 10_000) -> LogProb:
    """Vectorised log posterior density of an NPE result, conditioned on the result's observation.

    The amortised estimator saved by the NPE route (``estimator_path`` attribute, a file in the
    zoo cache) is reloaded on the CPU and conditioned on the features of the result's own
    observation (its ``observed_data`` group): stored there as ``features``, or, when the result
    holds raw observations, computed from them by ``problem.features_of`` (``problem`` is then
    required; build it with ``mechzoo.problem(entry_id)`` — only its model and configuration are
    used, not its data).

    The density is the flow's, set to -inf outside the prior support and **not** corrected for
    leakage (``norm_posterior=False`` in ``sbi``): it differs from the normalised posterior by a
    constant, which none of the analyses in this module depend on; this keeps evaluation
    deterministic (the correction is estimated by rejection sampling).

    Parameters
    ----------
    result : an NPE result (``route = "npe"``).
    problem : optional Problem of the same entry and model configuration, needed only when the
        result holds raw observations.
    batch_size : rows per estimator call.

    Returns
    -------
    callable (n, d) float64 → (n,) float64 log densities on the flat parameter vector, in the
    order of ``posterior_draws_flat(result)`` (evaluated in float32 by the estimator).

    Raises
    ------
    ValueError
        For results of routes without a stored density (MAP, NUTS, HMC): pass your own
        ``log_prob`` callable instead (e.g. the compiled log posterior of ``problem.pymc_model()``).
    FileNotFoundError
        When the saved estimator is gone (e.g. the cache was cleared): rerun
        ``mechzoo.fit(entry, method="npe", seed=...)`` with the same settings to retrain it.
    """
    attrs = result_attrs(result)
    route = attrs.get("route")
    if route != "npe":
        raise ValueError(
            f"a {route!r} result stores posterior draws but no density; only NPE results carry one. "
            "Pass a log_prob callable of your own instead, e.g. the compiled log posterior of "
            "problem.pymc_model() for the likelihood routes"
        )
    path = attrs.get("estimator_path")
    if not path or not os.path.exists(path):
        raise FileNotFoundError(
            f"the NPE estimator of this result is not at {path!r} (cache cleared or another machine?); "
            f"rerun mechzoo.fit({attrs.get('entry_id')!r}, method='npe', seed={attrs.get('seed')}) with the same settings to retrain it"
        )
    names = posterior_draws_flat(result)[1]
    observed = result["observed_data"].to_dataset() if "observed_data" in result.children else xr.Dataset()
    if "features" in observed.data_vars:
        x_o = np.asarray(observed["features"].values, dtype=np.float64).reshape(-1)
    elif problem is not None and observed.data_vars:
        if getattr(problem, "entry_id", None) != attrs.get("entry_id"):
            raise ValueError(f"problem is for entry {getattr(problem, 'entry_id', None)!r} but the result for {attrs.get('entry_id')!r}")
        batched = {k: np.asarray(v.values)[None] for k, v in observed.data_vars.items()}
        x_o = np.asarray(problem.features_of(batched), dtype=np.float64)[0]
    else:
        raise ValueError(
            "the result stores raw observations, not their features; pass problem=mechzoo.problem(entry_id) "
            "so that the features the estimator is conditioned on can be computed from them"
        )
    if not np.all(np.isfinite(x_o)):
        raise ValueError("the observed features contain NaN/inf; the estimator cannot be conditioned on them")

    import torch

    from .npe import load_posterior

    posterior = load_posterior(path)
    x_t = torch.as_tensor(x_o, dtype=torch.float32)
    d = len(names)

    def log_prob(theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        if theta.ndim != 2 or theta.shape[1] != d:
            raise ValueError(f"theta must have shape (n, {d}) in the order {names}; got {theta.shape}")
        out = np.empty(theta.shape[0])
        with torch.no_grad():
            for k in range(0, theta.shape[0], batch_size):
                chunk = torch.as_tensor(theta[k : k + batch_size], dtype=torch.float32)
                out[k : k + chunk.shape[0]] = posterior.log_prob(chunk, x=x_t, norm_posterior=False).to(torch.float64).numpy()
        return out

    return log_prob
