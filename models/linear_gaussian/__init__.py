r"""Linear-Gaussian regression: the zoo's exact-posterior fixture.

Model (any textbook, e.g. Bishop 2006, *Pattern Recognition and Machine Learning*, §3.3):

.. math::

    y_i = \beta_0 + \sum_{j=1}^{J} x_{ij}\,\beta_j + \varepsilon_i,\qquad
    \varepsilon_i \sim \mathcal N(0, \sigma^2),\quad i = 1..n,

with a fixed design :math:`X` (column of ones, then :math:`J` covariates drawn once from
:math:`\mathcal N(0, 1)` with ``design_seed``) and known noise SD :math:`\sigma` (``noise_sd``).
With independent Gaussian priors :math:`\beta \sim \mathcal N(\mu_0, \Sigma_0)` the posterior is
Gaussian with

.. math::

    \Sigma_n = (\Sigma_0^{-1} + X^\top X/\sigma^2)^{-1},\qquad
    \mu_n = \Sigma_n(\Sigma_0^{-1}\mu_0 + X^\top y/\sigma^2)

(Bishop eq. 3.50–3.51). The summary features :math:`X^\top y / n` are sufficient, so NPE on them
targets the exact posterior as well.

Free parameters (names used by the entry): ``intercept`` (scalar, :math:`\beta_0`) and ``slopes``
(vector of length :math:`J`, :math:`\beta_{1..J}`). Everything is dimensionless.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = [
    "design_matrix",
    "simulate",
    "observation_dims",
    "coords",
    "constant_data",
    "features",
    "feature_names",
    "loglik",
    "exact_posterior",
]


#: Units of the observation variables and coordinates (for tables and figure axes).
OBSERVATION_UNITS = {"y": "1", "design": "1"}
COORDINATE_UNITS = {"observation": "index", "regressor": "index"}


def design_matrix(config: Mapping[str, Any]) -> np.ndarray:
    """The fixed design :math:`X` of shape (n_observations, 1 + n_covariates), float64.

    Parameters
    ----------
    config : mapping
        ``n_observations`` (int), ``n_covariates`` (int), ``design_seed`` (int).
    """
    n = int(config["n_observations"])
    j = int(config["n_covariates"])
    if n < 1 or j < 1:
        raise ValueError(f"n_observations and n_covariates must be >= 1 (got {n}, {j})")
    rng = np.random.default_rng(int(config["design_seed"]))
    x = rng.standard_normal((n, j))
    return np.column_stack([np.ones(n), x])


def _beta(params: Mapping[str, np.ndarray]) -> np.ndarray:
    intercept = np.asarray(params["intercept"], dtype=np.float64)
    slopes = np.asarray(params["slopes"], dtype=np.float64)
    return np.concatenate([intercept.reshape(-1, 1), slopes.reshape(intercept.size, -1)], axis=1)


def simulate(params: Mapping[str, np.ndarray], *, config: Mapping[str, Any], seeds: np.ndarray) -> dict[str, np.ndarray]:
    """Simulate a batch of data sets, one per parameter set.

    Parameters
    ----------
    params : mapping
        ``intercept`` (B,), ``slopes`` (B, J).
    config : mapping
        See :func:`design_matrix`, plus ``noise_sd`` (float > 0).
    seeds : ndarray of uint64, shape (B,)
        One seed per simulation: the noise of simulation b depends on ``seeds[b]`` only.

    Returns
    -------
    dict
        ``{"y": (B, n) float64}``.
    """
    x = design_matrix(config)
    beta = _beta(params)
    seeds = np.asarray(seeds, dtype=np.uint64).reshape(-1)
    if seeds.size != beta.shape[0]:
        raise ValueError(f"need one seed per simulation: got {seeds.size} seeds for {beta.shape[0]} parameter sets")
    noise = np.stack([np.random.default_rng(int(s)).standard_normal(x.shape[0]) for s in seeds])
    return {"y": beta @ x.T + float(config["noise_sd"]) * noise}


def observation_dims(config: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Dims of each observation variable after the batch axis."""
    return {"y": ("observation",)}


def coords(config: Mapping[str, Any]) -> dict[str, Any]:
    """Coordinate values of the observation dims."""
    return {"observation": np.arange(int(config["n_observations"]))}


def constant_data(config: Mapping[str, Any]) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """Fixed inputs stored in the result's ``constant_data`` group: the design matrix."""
    return {"design": (("observation", "regressor"), design_matrix(config))}


def feature_names(config: Mapping[str, Any]) -> list[str]:
    """Names of the sufficient statistics :math:`X^\\top y / n`."""
    return ["mean_y"] + [f"mean_x{j + 1}_y" for j in range(int(config["n_covariates"]))]


def features(observations: Mapping[str, np.ndarray], *, config: Mapping[str, Any]) -> np.ndarray:
    """Sufficient statistics :math:`X^\\top y / n`, shape (B, 1 + J)."""
    x = design_matrix(config)
    y = np.atleast_2d(np.asarray(observations["y"], dtype=np.float64))
    return y @ x / x.shape[0]


def loglik(params: Mapping[str, Any], data: Mapping[str, np.ndarray], *, config: Mapping[str, Any]):
    """Gaussian log-likelihood :math:`\\sum_i \\log \\mathcal N(y_i; x_i^\\top\\beta, \\sigma^2)` (PyTensor)."""
    import pytensor.tensor as pt

    x = design_matrix(config)
    y = np.asarray(data["y"], dtype=np.float64)
    sigma = float(config["noise_sd"])
    mean = params["intercept"] + pt.dot(x[:, 1:], params["slopes"])
    resid = (y - mean) / sigma
    return -0.5 * pt.sum(resid**2) - y.size * (np.log(sigma) + 0.5 * np.log(2 * np.pi))


def exact_posterior(
    y: np.ndarray, prior_mean: np.ndarray, prior_sd: np.ndarray, *, config: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form posterior mean and covariance of :math:`\\beta = (\\beta_0, \\beta_{1..J})`.

    Parameters
    ----------
    y : (n,) observed data.
    prior_mean, prior_sd : (1 + J,) independent Gaussian prior.

    Returns
    -------
    mean : (1 + J,), cov : (1 + J, 1 + J) — Bishop (2006) eq. 3.50–3.51.
    """
    x = design_matrix(config)
    s2 = float(config["noise_sd"]) ** 2
    prec0 = np.diag(1.0 / np.asarray(prior_sd, float) ** 2)
    cov = np.linalg.inv(prec0 + x.T @ x / s2)
    mean = cov @ (prec0 @ np.asarray(prior_mean, float) + x.T @ np.asarray(y, float) / s2)
    return mean, cov
