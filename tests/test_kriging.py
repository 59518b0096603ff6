"""Ordinary kriging (core.kriging) against PyKrige, brute force and a simulated field."""

import numpy as np
import pytest
from pykrige import variogram_models
from pykrige.ok import OrdinaryKriging as PyKrige
from scipy.spatial.distance import cdist

from insar_subsidence.core import blas
from insar_subsidence.core.errors import InputError
from insar_subsidence.core.kriging import (
    GLOBAL_MAX_POINTS,
    MODELS,
    OrdinaryKriging,
    Variogram,
    check_points,
    cross_validation_statistics,
    experimental_variogram,
    fit_variogram,
    merge_coincident,
    warnings,
)
from synthetic import subsidence_bowls

PARAMETERS = {
    "spherical": (0.8, 400.0, 0.05),
    "exponential": (0.8, 400.0, 0.05),
    "gaussian": (0.8, 400.0, 0.05),
    "linear": (0.002, 0.05),
    "power": (0.01, 1.2, 0.05),
}


@pytest.fixture(autouse=True)
def two_threads(monkeypatch):
    """Kriging on two threads, as on a two-core machine, also where the test runner gives each of
    its workers one core (conftest.py)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1000, 300), rng.uniform(0, 1000, 300)
    return x, y, np.sin(x / 150) + np.cos(y / 200) + 0.1 * rng.standard_normal(300)


def simulate(variogram, sill, n, extent, seed):
    """A Gaussian random field with covariance sill - variogram, at n random points."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, extent, n), rng.uniform(0, extent, n)
    covariance = sill - variogram(cdist(np.c_[x, y], np.c_[x, y]))
    np.fill_diagonal(covariance, sill)
    return x, y, np.linalg.cholesky(covariance) @ rng.standard_normal(n) + 10.0


@pytest.mark.parametrize("model", MODELS)
def test_variogram_models_are_pykrige_s(model):
    distances = np.concatenate([[0.0], np.geomspace(1e-3, 5000, 400), [400.0]])
    ours = Variogram(model, PARAMETERS[model])(distances)
    theirs = getattr(variogram_models, f"{model}_variogram_model")(PARAMETERS[model], distances)
    # Equal to rounding: absolute, as both forms lose relative precision where gamma -> 0.
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14 * np.abs(theirs).max())


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("k", [8, 32, 0])
def test_prediction_equals_pykrige(points, model, k):
    x, y, z = points
    variogram = Variogram(model, PARAMETERS[model])
    gx, gy = np.linspace(-50, 1050, 23), np.linspace(-50, 1050, 19)
    reference = PyKrige(x, y, z, variogram_model=model, variogram_parameters=variogram.as_pykrige_dict())
    if k:
        expected, expected_variance = reference.execute("grid", gx, gy, backend="C", n_closest_points=k)
    else:
        expected, expected_variance = reference.execute("grid", gx, gy, backend="vectorized")
    values, variances = OrdinaryKriging(x, y, z, variogram, k).predict(*np.meshgrid(gx, gy))
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(variances, expected_variance, rtol=1e-6, atol=1e-6 * np.abs(expected_variance).max())


@pytest.mark.parametrize("k", [1, 16, 0])
def test_exact_at_data_points_and_variance_nonnegative(points, k):
    x, y, z = points
    without_nugget = Variogram("spherical", (0.8, 400.0, 0.0))
    kriging = OrdinaryKriging(x, y, z, without_nugget, k)
    values, variances = kriging.predict(x, y)
    np.testing.assert_allclose(values, z, rtol=0, atol=1e-9)
    np.testing.assert_allclose(variances, 0.0, atol=1e-9)
    _, elsewhere = kriging.predict(*np.meshgrid(np.linspace(-200, 1200, 40), np.linspace(-200, 1200, 40)))
    assert elsewhere.min() >= -1e-9 and elsewhere.max() > 0.01


def brute_force_leave_one_out(x, y, z, variogram, k):
    errors, variances = [], []
    for i in range(len(z)):
        others = np.arange(len(z)) != i
        kriging = OrdinaryKriging(x[others], y[others], z[others], variogram, k)
        value, variance = kriging.predict(x[i : i + 1], y[i : i + 1])
        errors.append(z[i] - value[0])
        variances.append(variance[0])
    return np.array(errors), np.array(variances)


@pytest.mark.parametrize("k", [0, 12])
def test_leave_one_out_equals_brute_force(points, k):
    x, y, z = (array[:80] for array in points)
    variogram = Variogram("exponential", (0.8, 400.0, 0.05))
    errors, variances = OrdinaryKriging(x, y, z, variogram, k).leave_one_out()
    expected_errors, expected_variances = brute_force_leave_one_out(x, y, z, variogram, k)
    np.testing.assert_allclose(errors, expected_errors, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(variances, expected_variances, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_a_known_variogram_and_variance_is_honest(seed):
    true = Variogram("spherical", (4.0, 1500.0, 0.5))
    x, y, z = simulate(true, sill=4.5, n=2000, extent=10000.0, seed=seed)
    fit = fit_variogram(experimental_variogram(x, y, z, rng=seed), "spherical")
    fitted = fit.variogram.as_pykrige_dict()
    assert fitted["sill"] == pytest.approx(4.5, rel=0.25)
    assert fitted["range"] == pytest.approx(1500.0, rel=0.20)
    assert fitted["nugget"] == pytest.approx(0.5, abs=0.2)
    assert fit.r_squared > 0.8 and not fit.nugget_dominated and not fit.range_extrapolated
    statistics = cross_validation_statistics(*OrdinaryKriging(x, y, z, fit.variogram, 32).leave_one_out())
    assert 0.8 <= statistics["MSSE"] <= 1.25
    assert abs(statistics["MSE"]) < 0.1
    assert warnings(fit, statistics) == []


def test_white_noise_is_flagged_as_nugget_dominated():
    rng = np.random.default_rng(5)
    x, y, z = rng.uniform(0, 1000, 800), rng.uniform(0, 1000, 800), rng.standard_normal(800)
    assert fit_variogram(experimental_variogram(x, y, z, rng=0), "spherical").nugget_dominated


def test_fixed_parameters_are_held():
    x, y, z = simulate(Variogram("spherical", (4.0, 1500.0, 0.5)), 4.5, 600, 10000.0, 0)
    experimental = experimental_variogram(x, y, z, rng=0)
    held = fit_variogram(experimental, "spherical", {"sill": 6.0, "range": 1000.0, "nugget": 1.0})
    assert held.variogram.as_pykrige_dict() == pytest.approx({"sill": 6.0, "range": 1000.0, "nugget": 1.0})
    sill_only = fit_variogram(experimental, "spherical", {"sill": 4.5}).variogram.as_pykrige_dict()
    assert sill_only["sill"] == pytest.approx(4.5)
    assert fit_variogram(experimental, "linear", {"nugget": 0.25}).variogram.nugget == pytest.approx(0.25)
    with pytest.raises(InputError, match="sill"):
        fit_variogram(experimental, "linear", {"sill": 1.0})
    with pytest.raises(InputError, match="no parameter range"):
        fit_variogram(experimental, "power", {"range": 1.0})


def test_variogram_uses_a_subsample_up_to_a_third_of_the_extent():
    rng = np.random.default_rng(2)
    x, y, z = rng.uniform(0, 3000, 5000), rng.uniform(0, 3000, 5000), rng.standard_normal(5000)
    experimental = experimental_variogram(x, y, z, max_points=700, rng=0)
    assert experimental.n_points == 700
    assert experimental.counts.sum() <= 700 * 699 // 2
    assert experimental.lags.max() <= np.hypot(np.ptp(x), np.ptp(y)) / 3


def test_no_points_merge_into_none():
    empty = np.array([])
    assert [len(a) for a in merge_coincident(empty, empty, empty)[:3]] == [0, 0, 0]


def test_coincident_points_are_merged_by_mean():
    x = np.array([0.0, 1.0, 0.0, 2.0, 1.0])
    y = np.array([0.0, 1.0, 0.0, 2.0, 1.0])
    z = np.array([1.0, 5.0, 3.0, 7.0, 6.0])
    mx, my, mz, merged = merge_coincident(x, y, z)
    assert merged == 2
    assert sorted(zip(mx, my, mz)) == [(0.0, 0.0, 2.0), (1.0, 1.0, 5.5), (2.0, 2.0, 7.0)]


@pytest.mark.parametrize(
    "x, y, z, message",
    [
        ([0.0, 1.0], [0.0, 1.0], [1.0, 2.0], "at least 3 points"),
        ([0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [4.0, 4.0, 4.0], "values are equal"),
        ([5.0, 5.0, 5.0], [1.0, 1.0, 1.0], [1.0, 2.0, 3.0], "one location"),
    ],
)
def test_degenerate_inputs_are_refused(x, y, z, message):
    with pytest.raises(InputError, match=message):
        check_points(np.array(x), np.array(y), np.array(z))


def test_global_kriging_is_refused_for_large_sets_with_advice():
    n = GLOBAL_MAX_POINTS + 1
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="N_NEIGHBOURS"):
        OrdinaryKriging(
            rng.uniform(size=n), rng.uniform(size=n), rng.uniform(size=n), Variogram("linear", (1.0, 0.0)), 0
        )


def test_openblas_is_held_to_one_thread_and_restored():
    controls = blas._thread_controls()
    if not controls:
        pytest.skip("this numpy's BLAS is not OpenBLAS")
    get, set_ = controls[0]
    before = get()
    set_(2)  # not 1, which the test runner may have set (conftest.py), so that restoring shows
    try:
        with blas.one_blas_thread() as controlled:
            assert controlled and get() == 1
        assert get() == 2
    finally:
        set_(before)


def test_repeated_threaded_global_prediction_is_stable(points):
    # Reproduced heap corruption (process abort) when the global system was solved with scipy's
    # lu_solve from several threads; the grid spans several batches, so the threads are used.
    x, y, z = points
    kriging = OrdinaryKriging(x, y, z, Variogram("spherical", (0.8, 400.0, 0.0)), 0)
    grid = np.meshgrid(np.linspace(0, 1000, 40), np.linspace(0, 1000, 40))
    assert kriging.batch * 2 < grid[0].size
    first, _ = kriging.predict(*grid)
    for _ in range(200):
        values, _ = kriging.predict(*grid)
    np.testing.assert_array_equal(values, first)


def test_dense_points_give_the_nugget_from_their_short_distances():
    # A 2000-point subsample alone has no pairs closer than ~1.5 km here, where the bowls
    # already add ~50 mm² to the 4 mm² of noise; the full set's near pairs (100 000 points,
    # ~300 m apart) resolve it.
    x, y, z = subsidence_bowls(100_000, noise_sd=2.0)
    experimental = experimental_variogram(x, y, z, max_points=2000, rng=0)
    assert experimental.lags[0] < 600
    fit = fit_variogram(experimental, "gaussian")
    assert fit.variogram.nugget == pytest.approx(4.0, rel=0.25)
    statistics = cross_validation_statistics(*OrdinaryKriging(x, y, z, fit.variogram, 32).leave_one_out())
    assert 0.8 <= statistics["MSSE"] <= 1.25
    assert statistics["RMSE"] < 2.4  # the noise (2.0) is the floor


def near_duplicate_points():
    """Issue 21's case: two points 1 cm apart with values 6.4 and 11.4 among smooth ones, under a
    gaussian variogram without nugget."""
    rng = np.random.default_rng(0)
    x = np.r_[rng.uniform(0, 1000, 40), 500.0, 500.01]
    y = np.r_[rng.uniform(0, 1000, 40), 500.0, 500.0]
    z = np.r_[10 + 3 * np.sin(x[:40] / 300) + np.cos(y[:40] / 250), 6.4, 11.4]
    return x, y, z, Variogram("gaussian", (4.0, 400.0, 0.0))


@pytest.mark.parametrize("k", [32, 0])
def test_near_duplicates_without_nugget_stay_within_the_data(k):
    x, y, z, variogram = near_duplicate_points()
    kriging = OrdinaryKriging(x, y, z, variogram, k)
    value, _ = kriging.predict(np.array([503.0]), np.array([500.0]))  # PyKrige: 1337 here
    errors, _ = kriging.leave_one_out()  # PyKrige: errors up to 7e5
    assert z.min() <= value[0] <= z.max()
    assert np.abs(errors).max() < np.ptp(z)
    assert kriging.regularised == 1 and kriging.regularised_in_cross_validation > 0 and kriging.raised_nugget > 0


def test_a_raised_nugget_is_pykrige_s_kriging_with_that_nugget():
    # The guard changes nothing but the nugget, and only for the systems it flags.
    x, y, z, variogram = near_duplicate_points()
    targets = np.array([503.0, 100.0]), np.array([500.0, 900.0])
    kriging = OrdinaryKriging(x, y, z, variogram, 8)
    values, variances = kriging.predict(*targets)
    assert kriging.regularised == 1
    nugget = kriging.raised_nugget
    raised = PyKrige(
        x, y, z, variogram_model="gaussian", variogram_parameters={"sill": 4 + nugget, "range": 400, "nugget": nugget}
    )
    plain = PyKrige(x, y, z, variogram_model="gaussian", variogram_parameters=variogram.as_pykrige_dict())
    expected = [reference.execute("points", *targets, backend="C", n_closest_points=8) for reference in (raised, plain)]
    np.testing.assert_allclose([values[0], variances[0]], [expected[0][0][0], expected[0][1][0]], rtol=1e-9)
    np.testing.assert_allclose([values[1], variances[1]], [expected[1][0][1], expected[1][1][1]], rtol=1e-9)


def test_leave_one_out_of_a_sample_equals_that_of_every_point(points):
    x, y, z = points
    kriging = OrdinaryKriging(x, y, z, Variogram("spherical", PARAMETERS["spherical"]), 16)
    errors, variances = kriging.leave_one_out()
    sample = np.array([3, 50, 51, 299])
    sampled_errors, sampled_variances = kriging.leave_one_out(sample)
    np.testing.assert_allclose(sampled_errors, errors[sample], rtol=1e-12)
    np.testing.assert_allclose(sampled_variances, variances[sample], rtol=1e-12)


def test_targets_on_a_line_or_alone_are_kriged_as_everywhere(points):
    # The grouping of nearby targets must not depend on their layout: a row, a column, one target.
    x, y, z = points
    kriging = OrdinaryKriging(x, y, z, Variogram("spherical", PARAMETERS["spherical"]), 16)
    line = np.linspace(0, 1000, 333)
    for tx, ty in ((line, np.full_like(line, 500.0)), (np.full_like(line, 20.0), line)):
        values, _ = kriging.predict(tx, ty)
        one_by_one = [kriging.predict(tx[i : i + 1], ty[i : i + 1])[0][0] for i in range(0, 333, 37)]
        np.testing.assert_allclose(values[::37], one_by_one, rtol=1e-12)


def brute_force_variogram(x, y, z, max_points, seed, n_lags=20, short_lags=5):
    """The experimental variogram by its definition, from explicit class edges and every pair: the
    subsample's pairs (drawn as core.kriging draws it) beyond the short range, and, when there is a
    subsample, each of its points' pairs with any other point within the short range, the radius
    that holds 50 points at the mean density, at most the first regular class's width."""
    n = len(z)
    max_lag = np.hypot(np.ptp(x), np.ptp(y)) / 3
    chosen = np.random.default_rng(seed).choice(n, max_points, replace=False) if n > max_points else np.arange(n)
    found = []  # (distance, half squared difference)
    short = 0.0
    if n > max_points:
        short = min(np.sqrt(50 * np.ptp(x) * np.ptp(y) / (np.pi * n)), max_lag / n_lags)
        for i in chosen:
            for j in range(n):
                d = np.hypot(x[i] - x[j], y[i] - y[j])
                if j != i and d <= short:
                    found.append((d, (z[i] - z[j]) ** 2 / 2))
    for a, i in enumerate(chosen):
        for j in chosen[a + 1 :]:
            d = np.hypot(x[i] - x[j], y[i] - y[j])
            if short <= d <= max_lag:
                found.append((d, (z[i] - z[j]) ** 2 / 2))
    edges = np.linspace(0, max_lag, n_lags + 1)
    if short:
        edges = np.concatenate([np.linspace(0, short, short_lags + 1), np.linspace(short, max_lag, n_lags + 1)[1:]])
    d, h = np.array(found).T
    bins = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, len(edges) - 2)
    rows = [(d[bins == b].mean(), h[bins == b].mean(), np.sum(bins == b)) for b in np.unique(bins)]
    return [np.array(column) for column in zip(*rows)]


@pytest.mark.parametrize(
    "n, max_points, pair_block",
    [(300, 2000, 131_072), (300, 2000, 1000), (1500, 200, 131_072)],
    ids=["every pair", "every pair, in blocks of 3 rows", "subsample and short range"],
)
def test_experimental_variogram_equals_its_definition(n, max_points, pair_block, monkeypatch):
    monkeypatch.setattr("insar_subsidence.core.kriging.PAIR_BLOCK", pair_block)
    rng = np.random.default_rng(8)
    x, y = rng.uniform(0, 5000, n), rng.uniform(0, 3000, n)
    z = np.sin(x / 700) + 0.3 * rng.standard_normal(n)
    experimental = experimental_variogram(x, y, z, max_points=max_points, rng=4)
    lags, semivariance, counts = brute_force_variogram(x, y, z, max_points, seed=4)
    assert len(lags) > 20 if n > max_points else len(lags) == 20
    np.testing.assert_array_equal(experimental.counts, counts)
    np.testing.assert_allclose(experimental.lags, lags, rtol=1e-12)
    np.testing.assert_allclose(experimental.semivariance, semivariance, rtol=1e-12)


def test_a_groups_distinct_neighbours_are_np_unique_up_to_order():
    # One workspace for several groups, as a thread uses it: slots left by earlier groups are stale.
    from insar_subsidence.core.kriging import _Workspace

    rng = np.random.default_rng(5)
    workspace = _Workspace()
    for size in (4096, 7, 4096, 1):
        index = rng.integers(0, 500, size=(size // 32 or 1, min(size, 32)))
        union, positions = workspace.distinct(index, 500)
        np.testing.assert_array_equal(np.sort(union), np.unique(index))
        np.testing.assert_array_equal(union[positions], index)


@pytest.mark.parametrize("lattice", [True, False], ids=["points on a lattice", "whole-metre coordinates"])
def test_a_block_kriged_from_its_points_in_reach_is_what_predict_gives(lattice):
    """What a Dask worker kriges (krige_block on block_tasks' points) equals predict bit for bit,
    also where several points tie at the last neighbour's distance."""
    from insar_subsidence.core.grid import Grid
    from insar_subsidence.core.kriging import krige_block

    rng = np.random.default_rng(2)
    if lattice:
        x, y = (a.ravel() for a in np.meshgrid(np.arange(0, 2000, 100.0), np.arange(0, 1500, 100.0)))
    else:
        x, y = np.unique(np.round(rng.uniform(0, 2000, (3000, 2))), axis=0).T
    z = np.sin(x / 300) * np.cos(y / 200) + rng.normal(0, 0.1, len(x))
    kriging = OrdinaryKriging(x, y, z, Variogram("spherical", (1.0, 1000.0, 0.1)), 16)
    grid = Grid(0.0, 1500.0, 25.0, 25.0, 80, 60)
    blocks = [(row, min(row + 7, grid.height)) for row in range(0, grid.height, 7)]
    for block, arguments in kriging.block_tasks(grid, blocks):
        values, variances, _, _ = krige_block(*arguments)
        expected = kriging.predict(*grid.centres(*block))
        np.testing.assert_array_equal(values, expected[0])
        np.testing.assert_array_equal(variances, expected[1])
