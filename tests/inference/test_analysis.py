"""Posterior analyses (``mechzoo.inference.analysis``) against closed forms.

Gaussian posteriors give exact answers: the conditional correlation of (i, j) given the rest is
the partial correlation -P_ij / sqrt(P_ii P_jj) of the precision matrix P; the negative Hessian
of log p and the active-subspace matrix E[grad log p grad log p^T] are P itself (S P S in
coordinates standardised by S). Paths are checked on a ring and a banana, whose straight lines
cross deep density valleys. All seeds are explicit; the fast tests use NumPy only.
"""

import numpy as np
import pytest
import xarray as xr

from mechzoo.inference.analysis import (
    conditional_correlations,
    high_probability_path,
    log_prob_from_result,
    plot_high_probability_path,
    posterior_correlations,
    sensitivity,
)

NAMES = ["a", "b", "c", "d"]
CORR = np.array([[1.0, 0.6, 0.3, 0.0], [0.6, 1.0, 0.5, 0.2], [0.3, 0.5, 1.0, 0.4], [0.0, 0.2, 0.4, 1.0]])
SD = np.array([1.0, 2.0, 0.5, 3.0])
MU = np.array([1.0, -2.0, 0.5, 10.0])
COV = CORR * np.outer(SD, SD)
PREC = np.linalg.inv(COV)


def gaussian_log_prob(theta):
    r = theta - MU
    return -0.5 * np.einsum("ni,ij,nj->n", r, PREC, r)


@pytest.fixture(scope="module")
def draws():
    rng = np.random.default_rng(1)
    return MU + rng.standard_normal((4000, 4)) @ np.linalg.cholesky(COV).T


# ----------------------------------------------------------------------------- correlations
def test_conditional_correlations_equal_partial_correlations(draws):
    cc = conditional_correlations(gaussian_log_prob, draws, NAMES, n_points=30, n_grid=100, seed=0)
    expected = -PREC / np.sqrt(np.outer(np.diag(PREC), np.diag(PREC)))
    np.fill_diagonal(expected, 1.0)
    assert cc.dims == ("parameter", "parameter_")
    assert list(cc["parameter"].values) == NAMES and list(cc["parameter_"].values) == NAMES
    np.testing.assert_array_equal(cc.values, cc.values.T)
    np.testing.assert_array_equal(np.diag(cc.values), 1.0)
    assert np.max(np.abs(cc.values - expected)) < 0.02  # observed 0.008 (grid truncation at the 0.1/99.9 % quantiles)
    # they differ from the marginal correlations (e.g. a–c: 0.3 marginal, 0.06 conditional)
    assert abs(cc.sel(parameter="a", parameter_="c") - 0.0586) < 0.02
    assert cc.attrs["n_points"] == 30 and cc.attrs["min_valid_points"] == 30
    again = conditional_correlations(gaussian_log_prob, draws, NAMES, n_points=30, n_grid=100, seed=0)
    np.testing.assert_array_equal(again.values, cc.values)
    chunked = conditional_correlations(gaussian_log_prob, draws, NAMES, n_points=30, n_grid=100, seed=0, batch_size=25_000)
    np.testing.assert_allclose(chunked.values, cc.values, atol=1e-12)


def test_conditional_correlations_are_exact_on_a_wide_grid(draws):
    cc = conditional_correlations(gaussian_log_prob, draws, NAMES, n_points=5, n_grid=100, limits=(MU - 6 * SD, MU + 6 * SD), seed=3)
    expected = -PREC / np.sqrt(np.outer(np.diag(PREC), np.diag(PREC)))
    np.fill_diagonal(expected, 1.0)
    np.testing.assert_allclose(cc.values, expected, atol=1e-6)


def test_posterior_correlations_are_the_covariance_correlations(draws):
    pc = posterior_correlations(draws, NAMES)
    np.testing.assert_allclose(pc.values, np.corrcoef(draws, rowvar=False), atol=1e-12)
    assert np.max(np.abs(pc.values - CORR)) < 0.05  # sampling error of 4000 draws
    big = MU + np.random.default_rng(2).standard_normal((100_000, 4)) @ np.linalg.cholesky(COV).T
    assert np.max(np.abs(posterior_correlations(big, NAMES).values - CORR)) < 0.01


# ----------------------------------------------------------------------------- sensitivity
def _assert_same_directions(rows, columns):
    """Eigenvector rows equal the columns of numpy's eigh up to sign."""
    dots = np.abs(np.sum(rows * columns.T, axis=1))
    np.testing.assert_allclose(dots, 1.0, atol=1e-8)


def test_sensitivity_covariance_matches_eigh_of_standardised_covariance(draws):
    ds = sensitivity(draws, NAMES)
    s = draws.std(axis=0, ddof=1)
    values, vectors = np.linalg.eigh(np.cov(draws / s, rowvar=False))  # ascending variance = stiffest first
    np.testing.assert_allclose(ds["eigenvalue"].values, values, rtol=1e-10)
    np.testing.assert_allclose(ds["curvature"].values, 1 / values, rtol=1e-10)
    np.testing.assert_allclose(ds["sd_along_direction"].values, np.sqrt(values), rtol=1e-10)
    _assert_same_directions(ds["eigenvector"].values, vectors)
    np.testing.assert_allclose(ds["scale"].values, s)
    assert ds.attrs["method"] == "covariance"
    assert np.all(np.diff(ds["curvature"].values) < 0)  # stiffest first
    # loadings sorted by magnitude, and consistent with the eigenvector
    stiff = dict(zip(ds["stiffest_parameter"].values, ds["stiffest_loading"].values))
    assert np.all(np.diff(np.abs(ds["stiffest_loading"].values)) <= 0)
    np.testing.assert_allclose([stiff[n] for n in NAMES], ds["eigenvector"].values[0])


def test_sensitivity_hessian_is_the_standardised_precision(draws):
    s = draws.std(axis=0, ddof=1)
    target = s[:, None] * PREC * s[None, :]
    values, vectors = np.linalg.eigh(target)
    ds = sensitivity(draws, NAMES, log_prob=gaussian_log_prob, point=draws[7])
    assert ds.attrs["method"] == "hessian"
    np.testing.assert_allclose(ds["eigenvalue"].values, values[::-1], rtol=1e-6)  # largest curvature first
    _assert_same_directions(ds["eigenvector"].values, vectors[:, ::-1])
    np.testing.assert_allclose(ds["sd_along_direction"].values, 1 / np.sqrt(values[::-1]), rtol=1e-6)


def test_sensitivity_active_subspace_is_the_expected_gradient_outer_product(draws):
    # E[g g^T] over the draws, with g = -P (theta - mu), in standardised coordinates
    s = draws.std(axis=0, ddof=1)
    g = -(draws - MU) @ PREC * s
    values, vectors = np.linalg.eigh(g.T @ g / len(draws))
    ds = sensitivity(draws, NAMES, log_prob=gaussian_log_prob, n_gradient_draws=len(draws))
    assert ds.attrs["method"] == "active_subspace"
    np.testing.assert_allclose(ds["eigenvalue"].values, values[::-1], rtol=1e-6)
    _assert_same_directions(ds["eigenvector"].values, vectors[:, ::-1])
    # and it estimates the precision matrix (sampling error of 4000 draws)
    np.testing.assert_allclose(ds["eigenvalue"].values, np.linalg.eigvalsh(s[:, None] * PREC * s)[::-1], rtol=0.1)


@pytest.mark.parametrize("use_hessian", [False, True])
def test_stiffest_direction_loads_on_the_best_constrained_parameter(use_hessian):
    sd = np.array([1.0, 0.05, 3.0])
    cov = np.diag(sd**2)
    cov[0, 2] = cov[2, 0] = 0.3 * sd[0] * sd[2]
    prec = np.linalg.inv(cov)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3000, 3)) @ np.linalg.cholesky(cov).T
    kwargs = {"log_prob": lambda t: -0.5 * np.einsum("ni,ij,nj->n", t, prec, t), "point": np.zeros(3)} if use_hessian else {}
    ds = sensitivity(x, ["g_Na", "g_K", "g_leak"], scale="none", **kwargs)
    assert ds["stiffest_parameter"].values[0] == "g_K"
    assert abs(ds["stiffest_loading"].values[0]) > 0.999
    assert ds["sloppiest_parameter"].values[0] == "g_leak"
    assert ds["sd_along_direction"].values[0] == pytest.approx(0.05, rel=0.05)


# ----------------------------------------------------------------------------- paths
RING_RADIUS, RING_WIDTH = 3.0, 0.3


def ring_log_prob(theta):
    r = np.hypot(theta[:, 0], theta[:, 1])
    return -0.5 * ((r - RING_RADIUS) / RING_WIDTH) ** 2


def banana_log_prob(theta):
    x, y = theta[:, 0], theta[:, 1]
    return -0.5 * (x / 2) ** 2 - 0.5 * ((y - 0.5 * x**2 + 1.0) / 0.3) ** 2


def banana_gradient(theta):
    x, y = theta[:, 0], theta[:, 1]
    r = (y - 0.5 * x**2 + 1.0) / 0.3**2
    return np.stack([-x / 4 + r * x, -r], axis=1)


def test_path_goes_round_the_ring():
    start, end = np.array([-RING_RADIUS, 0.0]), np.array([RING_RADIUS, 0.0])
    ds = high_probability_path(ring_log_prob, start, end, n_points=30, n_iter=300, seed=0, names=["x", "y"])
    path = ds["path"].values
    assert ds["path"].dims == ("point", "parameter") and list(ds["parameter"].values) == ["x", "y"]
    np.testing.assert_array_equal(path[0], start)
    np.testing.assert_array_equal(path[-1], end)
    assert ds["straight_log_prob"].min() < -45  # the straight line crosses the hole: -50 nats at the centre
    assert ds["log_prob"].min() > -0.01  # observed -7e-10: the path follows the ring
    assert float(ds["log_prob"].min() - ds["straight_log_prob"].min()) > 40
    np.testing.assert_allclose(np.hypot(path[:, 0], path[:, 1]), RING_RADIUS, atol=0.01)
    np.testing.assert_allclose(ds["log_prob"].values, ring_log_prob(path))
    spacing = np.diff(ds["arc_length"].values)
    np.testing.assert_allclose(spacing, spacing.mean(), rtol=1e-6)  # equal arc length
    assert ds.attrs["n_iter_run"] < 300  # converged
    again = high_probability_path(ring_log_prob, start, end, n_points=30, n_iter=300, seed=0)
    np.testing.assert_array_equal(again["path"].values, path)


def test_path_follows_the_banana_with_and_without_gradient():
    start, end = np.array([-2.0, 1.0]), np.array([2.0, 1.0])  # both on the ridge y = x^2/2 - 1
    fd = high_probability_path(banana_log_prob, start, end, seed=0)
    exact = high_probability_path(banana_log_prob, start, end, seed=0, grad_log_prob=banana_gradient)
    for ds in (fd, exact):
        assert float(ds["straight_log_prob"].min()) < -22  # -22.2 at x = 0
        assert float(ds["log_prob"].min()) > -0.51  # the end points' own density is -0.5
        x, y = ds["path"].values.T
        np.testing.assert_allclose(y, 0.5 * x**2 - 1.0, atol=0.02)
    np.testing.assert_allclose(fd["path"].values, exact["path"].values, atol=1e-3)


def test_path_respects_bounds_and_attaches_features():
    start, end = np.array([-2.0, 1.0]), np.array([2.0, 1.0])
    lower, upper = np.array([-3.0, -0.5]), np.array([3.0, 3.0])  # cuts off the bottom of the banana

    def simulate(theta):
        return np.stack([theta.sum(axis=1), theta[:, 0] * theta[:, 1]], axis=1)

    ds = high_probability_path(
        banana_log_prob, start, end, seed=0, bounds=(lower, upper), simulate=simulate, feature_names=["sum", "product"]
    )
    path = ds["path"].values
    assert np.all(path >= lower) and np.all(path <= upper)
    assert path[:, 1].min() == pytest.approx(-0.5)  # the optimum lies on the bound
    np.testing.assert_array_equal(path[[0, -1]], np.stack([start, end]))
    assert float(ds["log_prob"].min() - ds["straight_log_prob"].min()) > 15  # observed 20.8 nats
    assert ds["features"].dims == ("point", "feature") and list(ds["feature"].values) == ["sum", "product"]
    np.testing.assert_allclose(ds["features"].values, simulate(path))
    assert ds.attrs["bounds"] == "given"


def test_path_figure_shows_density_largest_changes_and_invalid_points():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start, end = np.array([-2.0, 1.0, 5.0]), np.array([2.0, 1.0, 5.5])

    def log_prob(theta):
        return banana_log_prob(theta[:, :2]) - 0.5 * (theta[:, 2] - 5.0) ** 2

    def simulate(theta):  # the middle points give no second feature (an "invalid" simulation)
        second = np.where(np.abs(theta[:, 0]) < 0.5, np.nan, theta[:, 0] * theta[:, 1])
        return np.stack([theta.sum(axis=1), second], axis=1)

    ds = high_probability_path(log_prob, start, end, n_points=11, seed=0, names=["x", "y", "z"], simulate=simulate, feature_names=["sum", "product"])
    ds["straight_line_features"] = (("point", "feature"), simulate(ds["straight_line"].values))
    n_invalid = int((~np.isfinite(ds["features"].values).all(axis=1)).sum())
    assert 0 < n_invalid < 11
    fig = plot_high_probability_path(ds, observed=[4.0, 2.0], max_parameters=2)
    density, params, feats = fig.axes
    np.testing.assert_allclose(density.lines[0].get_ydata(), ds["log_prob"].values)
    np.testing.assert_allclose(density.lines[1].get_ydata(), ds["straight_log_prob"].values)
    labels = [line.get_label() for line in params.lines]
    assert labels == ["x (200%)", "z (10%)"]  # the two largest relative end-point differences; y does not change
    np.testing.assert_allclose(params.lines[0].get_ydata(), ds["path"].values[:, 0] / -2.0)
    np.testing.assert_allclose(feats.lines[0].get_ydata(), ds["features"].values[:, 0] / 4.0)  # relative to the observation
    assert feats.get_title().startswith(f"valid points: path {11 - n_invalid}/11")
    with pytest.raises(ValueError, match="one value per feature"):
        plot_high_probability_path(ds, observed=[1.0])
    with pytest.raises(ValueError, match="needs the Dataset of high_probability_path"):
        plot_high_probability_path(ds.drop_vars("path"))
    plt.close("all")


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors(draws):
    with pytest.raises(ValueError, match="4 columns but 3 names"):
        posterior_correlations(draws, NAMES[:3])
    with pytest.raises(ValueError, match="2-D"):
        sensitivity(draws[:, 0], ["a"])
    with pytest.raises(ValueError, match="NaN"):
        posterior_correlations(np.where(draws > 12, np.nan, draws), NAMES)
    with pytest.raises(ValueError, match="unique"):
        posterior_correlations(draws, ["a", "a", "b", "c"])
    with pytest.raises(ValueError, match="returned shape"):
        conditional_correlations(lambda t: np.zeros((len(t), 2)), draws, NAMES, n_points=2, n_grid=5)
    with pytest.raises(ValueError, match="upper <= lower"):
        conditional_correlations(gaussian_log_prob, draws, NAMES, limits=(MU, MU))
    with pytest.raises(ValueError, match="point needs log_prob"):
        sensitivity(draws, NAMES, point=MU)
    with pytest.raises(ValueError, match="scale must be"):
        sensitivity(draws, NAMES, scale="prior")
    with pytest.raises(ValueError, match="positive"):
        sensitivity(draws, NAMES, scale=np.array([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"point must have shape \(4,\)"):
        sensitivity(draws, NAMES, log_prob=gaussian_log_prob, point=MU[:3])
    with pytest.raises(ValueError, match="end must have shape"):
        high_probability_path(ring_log_prob, [-3.0, 0.0], [3.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="not finite at start and end"):
        high_probability_path(lambda t: np.where(t[:, 0] > 0, -np.inf, 0.0), [-3.0, 0.0], [3.0, 0.0])
    with pytest.raises(ValueError, match="outside bounds"):
        high_probability_path(ring_log_prob, [-3.0, 0.0], [3.0, 0.0], bounds=([-2.0, -2.0], [4.0, 4.0]))
    with pytest.raises(ValueError, match="same point"):
        high_probability_path(ring_log_prob, [3.0, 0.0], [3.0, 0.0])


def _fake_result(route, **attrs):
    post = xr.Dataset({"a": (("chain", "draw"), np.zeros((1, 5)))}, coords={"chain": [0], "draw": np.arange(5)})
    tree = xr.DataTree.from_dict({"/posterior": post, "/observed_data": xr.Dataset({"features": ("feature", [1.0, 2.0])})})
    tree.attrs = {"route": route, "entry_id": "toy", "seed": 0, **attrs}
    return tree


def test_log_prob_from_result_explains_routes_without_a_density():
    with pytest.raises(ValueError, match="log_prob callable"):
        log_prob_from_result(_fake_result("nuts"))
    with pytest.raises(FileNotFoundError, match="method='npe'"):
        log_prob_from_result(_fake_result("npe", estimator_path="/nonexistent/estimator.pt"))


@pytest.mark.slow
def test_log_prob_from_npe_result(tmp_path, monkeypatch):
    """A tiny NPE on the linear-Gaussian entry: the callable reproduces sbi's own log_prob."""
    import torch

    import mechzoo
    from mechzoo.inference.npe import load_posterior
    from mechzoo.inference.result import posterior_draws_flat

    monkeypatch.setenv("MECHZOO_CACHE", str(tmp_path))
    res = mechzoo.fit(
        "linear-gaussian", method="npe", seed=0, progress=False, num_simulations=300, max_num_epochs=5, sbc_simulations=0, num_draws=200
    )
    with pytest.raises(ValueError, match="raw observations"):
        log_prob_from_result(res)
    problem = mechzoo.problem("linear-gaussian")
    log_prob = log_prob_from_result(res, problem)
    draws, names = posterior_draws_flat(res)
    values = log_prob(draws[:50])
    assert values.shape == (50,) and values.dtype == np.float64 and np.all(np.isfinite(values))
    posterior = load_posterior(res.attrs["estimator_path"])
    x_o = torch.as_tensor(problem.observed_features(), dtype=torch.float32)
    ref = posterior.log_prob(torch.as_tensor(draws[:50], dtype=torch.float32), x=x_o, norm_posterior=False).numpy()
    np.testing.assert_allclose(values, ref, rtol=1e-6)
    ds = sensitivity(draws, names, log_prob=log_prob, point=draws.mean(0), fd_step=0.1)
    assert np.all(np.isfinite(ds["eigenvalue"].values))
