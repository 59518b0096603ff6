"""core.terrain against analytic surfaces and a cell-by-cell reference (priority-flood filling,
routing and accumulation in topological order, written the plain way)."""

import importlib
import math
import sys

import numpy as np
import pytest
from conftest import MINNESOTA_DEM
from osgeo import gdal
from scipy.ndimage import binary_dilation

from terrain_reference import downstream_of_flats, reference_accumulation, reference_fill, reference_receivers

from insar_subsidence.core import terrain

METHODS = terrain.METHODS


def accumulate(z, method, cell=1.0):
    """Upslope area (cells times cell area) and the total that leaves the DEM: what reaches the
    valid cells that pass nothing on and touch nodata or the border."""
    rows = z.shape[0]
    sizes = terrain.CellSizes.projected(cell, cell, rows)
    routing = terrain.route(z, sizes, method)
    upslope = terrain.accumulate(routing, sizes.area)
    edge = binary_dilation(~routing.valid, np.ones((3, 3), bool)) & routing.valid
    ends = (routing.receivers.reshape(routing.valid.shape) == 0) & edge
    return upslope, np.pad(upslope, 1)[ends].sum(), routing


def grid_xy(rows, columns, dx, dy):
    """Cell-centre x (east) and y (north) of a north-up grid with its top-left corner at (0, 0)."""
    return np.meshgrid((np.arange(columns) + 0.5) * dx, -(np.arange(rows) + 0.5) * dy)


def azimuth_of_descent(east_gradient, north_gradient):
    return math.degrees(math.atan2(-east_gradient, -north_gradient)) % 360


@pytest.mark.parametrize("a, b", [(0.3, -0.2), (-1.5, 0.0), (0.0, 0.7), (2.0, 3.0)])
def test_plane_slope_and_aspect_exact_everywhere_with_rectangular_cells(a, b):
    x, y = grid_xy(9, 12, 2.0, 3.0)
    z = 100 + a * x + b * y
    slope, aspect = terrain.slope_aspect(z, terrain.CellSizes.projected(2.0, 3.0, 9))
    np.testing.assert_allclose(slope, math.degrees(math.atan(math.hypot(a, b))), atol=1e-4)
    np.testing.assert_allclose(aspect, azimuth_of_descent(a, b), atol=1e-3)


def test_plane_exact_next_to_nodata():
    x, y = grid_xy(10, 10, 5.0, 5.0)
    z = 3 * x - 2 * y
    z[4:6, 3:7] = np.nan
    z[0, 9] = np.nan
    slope, aspect = terrain.slope_aspect(z, terrain.CellSizes.projected(5.0, 5.0, 10))
    valid = ~np.isnan(z)
    np.testing.assert_allclose(slope[valid], math.degrees(math.atan(math.hypot(3, 2))), atol=1e-4)
    np.testing.assert_allclose(aspect[valid], azimuth_of_descent(3, -2), atol=1e-3)
    assert np.isnan(slope[~valid]).all() and np.isnan(aspect[~valid]).all()


def test_paraboloid_exact_in_the_interior():
    """Horn's weighted central differences are exact for any quadratic surface."""
    x, y = grid_xy(15, 20, 1.5, 2.5)
    x, y = x - 14, y + 20
    z = 0.02 * x**2 + 0.03 * y**2 + 0.01 * x * y
    slope, aspect = terrain.slope_aspect(z, terrain.CellSizes.projected(1.5, 2.5, 15))
    east, north = 0.04 * x + 0.01 * y, 0.06 * y + 0.01 * x
    inner = (slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(slope[inner], np.degrees(np.arctan(np.hypot(east, north)))[inner], atol=1e-4)
    expected = np.degrees(np.arctan2(-east, -north)) % 360
    difference = (aspect[inner] - expected[inner] + 180) % 360 - 180
    assert np.abs(difference).max() < 1e-3


def test_flat_aspect_has_the_documented_value():
    slope, aspect = terrain.slope_aspect(np.full((5, 6), 12.0), terrain.CellSizes.projected(1, 1, 5))
    assert (slope == 0).all() and (aspect == terrain.FLAT_ASPECT).all()


def test_geographic_cell_sizes_match_the_ellipsoid():
    """WGS84: 1 degree of longitude is 111 319.49 m at the equator and 78 846.8 m at 45 N; one of
    latitude 110 574.3 m at the equator and 111 131.7 m at 45 N (standard tables)."""
    a, b = 6378137.0, 6356752.314245
    equator = terrain.CellSizes.geographic(0.5, 1.0, 1.0, 1, a, b)
    mid = terrain.CellSizes.geographic(45.5, 1.0, 1.0, 1, a, b)
    np.testing.assert_allclose(equator.width, 111319.49, rtol=1e-6)
    np.testing.assert_allclose(mid.width, 78846.8, rtol=1e-5)
    np.testing.assert_allclose(equator.height, 110574.3, rtol=1e-4)
    np.testing.assert_allclose(mid.height, 111131.7, rtol=1e-4)


def test_plane_in_degrees_gives_its_metric_slope():
    """A plane rising 2 % to the east and 1 % to the north, sampled on a 0.0005 degree grid at 60 N."""
    a, b = 6378137.0, 6356752.314245
    rows, columns, step, top = 40, 50, 0.0005, 60.0
    sizes = terrain.CellSizes.geographic(top, step, step, rows, a, b)
    east = np.arange(columns) * sizes.width[:, None]  # metres east of column 0, on each row
    north = -np.cumsum(sizes.height)[:, None] + np.zeros((1, columns))
    z = 0.02 * east + 0.01 * north
    slope, aspect = terrain.slope_aspect(z, sizes)
    np.testing.assert_allclose(slope, math.degrees(math.atan(math.hypot(0.02, 0.01))), atol=2e-3)
    np.testing.assert_allclose(aspect, azimuth_of_descent(0.02, 0.01), atol=0.05)


def tilted_v_valley(half_width=6, rows=12, cell=1.0, side=1.0, down=0.1):
    """Sides falling `side` per cell towards the central column, the valley falling `down` per
    cell to the south: every side cell's steepest neighbour is the next cell towards the valley,
    every valley cell's the one south of it."""
    columns = 2 * half_width + 1
    away = np.abs(np.arange(columns) - half_width)[None, :]
    return 100 + side * away * cell - down * np.arange(rows)[:, None] * cell


def test_d8_accumulation_of_a_tilted_v_valley_in_closed_form():
    half, rows = 6, 12
    z = tilted_v_valley(half, rows)
    upslope, outflow, _ = accumulate(z, "D8")
    away = np.abs(np.arange(2 * half + 1) - half)
    expected = np.broadcast_to(half - away + 1.0, z.shape).copy()
    expected[:, half] = (np.arange(rows) + 1) * (2 * half + 1)
    np.testing.assert_array_equal(upslope, expected)
    assert outflow == z.size


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("cell", [1.0, 30.0])
def test_grid_aligned_plane_gives_row_times_cell_size(method, cell):
    """z falls to the south only: a = (row + 1) * cell exactly, for MFD wherever the upstream cone
    stays clear of the side columns (which lose flow sideways out of the DEM)."""
    rows, columns = 10, 31
    z = 50 - 0.05 * cell * np.arange(rows)[:, None] + np.zeros((1, columns))
    sizes = terrain.CellSizes.projected(cell, cell, rows)
    upslope, outflow, _ = accumulate(z, method, cell)
    catchment = upslope / sizes.flow_width[:, None]
    expected = (np.arange(rows)[:, None] + 1) * cell + np.zeros((1, columns))
    row, column = np.indices(z.shape)
    exact = (column - row >= 1) & (column + row <= columns - 2) if method == "MFD" else np.ones(z.shape, bool)
    assert exact.sum() >= 100
    np.testing.assert_allclose(catchment[exact], expected[exact], rtol=1e-6)
    np.testing.assert_allclose(outflow, z.size * cell**2, rtol=1e-6)
    slope, _ = terrain.slope_aspect(z, sizes)
    wetness, power = terrain.wetness_and_power(catchment, slope, 0.1)
    np.testing.assert_allclose(wetness[exact], np.log(expected[exact] / 0.05), rtol=1e-5)
    np.testing.assert_allclose(power[exact], expected[exact] * 0.05, rtol=1e-5)


@pytest.fixture(scope="module")
def real_crop():
    dataset = gdal.Open(str(MINNESOTA_DEM))
    return dataset.GetRasterBand(1).ReadAsArray(240, 160, 90, 80).astype(np.float32)


@pytest.fixture(params=["private loop", "public function"])
def either_reconstruction(request, monkeypatch):
    """The fill by scikit-image's private inner loop, and by its public function, which a version
    without that loop gets."""
    import skimage.morphology  # binds the public function before its private module is hidden

    if request.param == "public function":
        monkeypatch.setitem(sys.modules, "skimage.morphology._grayreconstruct", None)
        with pytest.raises(ImportError):
            importlib.import_module("skimage.morphology._grayreconstruct")
    return skimage.morphology


def test_fill_equals_priority_flood_on_the_real_dem(real_crop, either_reconstruction):
    z = real_crop.copy()
    z[30:34, 40:47] = np.nan  # a nodata hole is an outlet too
    filled = terrain.fill_depressions(z)
    expected = reference_fill(z)
    assert (filled > z).sum() > 100  # the crop has real depressions
    np.testing.assert_array_equal(filled, expected.astype(np.float32))


def test_pit_is_filled_and_drains(either_reconstruction):
    z = 10 + 0.1 * np.arange(15)[:, None] + 0.2 * np.arange(15)[None, :]
    z[6:9, 6:9] -= 5
    filled = terrain.fill_depressions(z)
    spill = min(
        z[row, column] for row in range(5, 10) for column in range(5, 10) if not (6 <= row < 9 and 6 <= column < 9)
    )
    np.testing.assert_array_equal(filled[6:9, 6:9], np.full((3, 3), spill))
    mask = np.ones(z.shape, bool)
    mask[6:9, 6:9] = False
    np.testing.assert_array_equal(filled[mask], z[mask])
    for method in METHODS:
        assert accumulate(filled, method)[1] == pytest.approx(z.size, rel=1e-6)
    _, unfilled, _ = accumulate(z, "D8")
    assert unfilled < z.size  # without filling, the pit keeps what flows into it


@pytest.mark.parametrize("method", METHODS)
def test_mass_balance_and_invariants_on_the_real_dem(real_crop, method):
    """Every cell holds its own area plus exactly the shares its donors pass on; everything
    leaves the DEM; accumulation >= 1 cell; with D8 it never decreases downstream."""
    z = real_crop.copy()
    z[30:34, 40:47] = np.nan
    upslope, outflow, routing = accumulate(terrain.fill_depressions(z), method)
    valid = ~np.isnan(z)
    assert np.isnan(upslope[~valid]).all() and (upslope[valid] >= 1).all()
    assert outflow == pytest.approx(valid.sum(), rel=1e-6)
    padded = np.pad(upslope, 1, constant_values=0).ravel()
    expected = np.where(routing.valid.ravel(), 1.0, 0.0)
    for direction, offset in enumerate(routing.offsets):
        share = routing.fractions[direction]
        donors = np.flatnonzero(share)
        expected[donors + offset] += share[donors] * padded[donors]
        if method == "D8":
            assert (padded[donors + offset] > padded[donors]).all()
    assert routing.valid.ravel()[(routing.receivers > 0)].all()
    np.testing.assert_allclose(padded[routing.valid.ravel()], expected[routing.valid.ravel()], rtol=1e-5)
    shares = routing.fractions.sum(axis=0)
    assert np.all((np.abs(shares - 1) < 1e-6) | (shares == 0))


@pytest.mark.parametrize("method", ["D8", "MFD"])
def test_accumulation_equals_the_reference_away_from_flats(real_crop, method):
    """Where no flat lies upstream (flats are routed by a tie-break the reference need not
    share) the accumulation is the reference's to float32 precision; everywhere it is finite."""
    z = real_crop
    filled = terrain.fill_depressions(z)
    upslope, _, _ = accumulate(filled, method)
    receivers = reference_receivers(filled.astype(np.float64), method)
    expected = reference_accumulation(receivers, z.shape)
    touched_by_flat = downstream_of_flats(receivers, filled)
    clean = ~touched_by_flat
    assert clean.mean() > 0.3
    np.testing.assert_allclose(upslope[clean], expected[clean], rtol=1e-5)
    assert np.isfinite(upslope).all()


def test_flats_drain_towards_their_outlet():
    """A flat terrace with one lower cell at its east end: all of it drains there."""
    z = np.full((7, 9), 20.0)
    z[0, :] = z[-1, :] = z[:, 0] = z[:, -1] = 30.0  # walls
    z[3, -1] = 5.0  # the only way out
    for method in METHODS:
        upslope, outflow, _ = accumulate(terrain.fill_depressions(z), method)
        assert upslope[3, -1] >= 5 * 7 + 1  # every terrace cell passes through the outlet
        assert outflow == pytest.approx(z.size, rel=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_factors_emits_every_output_finite_on_valid_cells(real_crop, method):
    z = real_crop.copy()
    z[0:3, 0:5] = np.nan
    emitted = {}
    terrain.factors(
        z, terrain.CellSizes.projected(1, 1, z.shape[0]), terrain.OUTPUTS, emitted.__setitem__, method=method
    )
    assert set(emitted) == set(terrain.OUTPUTS)
    valid = ~np.isnan(z)
    for name, array in emitted.items():
        assert array.dtype == np.float32 and array.shape == z.shape
        assert np.isfinite(array[valid]).all(), name
        assert np.isnan(array[~valid]).all(), name


def test_factors_cancel_raises():
    z = tilted_v_valley()
    with pytest.raises(InterruptedError):
        terrain.factors(
            z,
            terrain.CellSizes.projected(1, 1, z.shape[0]),
            terrain.OUTPUTS,
            lambda *_: None,
            method="MFD",
            cancelled=lambda: True,
        )


@pytest.mark.parametrize("degrees, dx, dy", [(10.0, 1.0, 1.0), (30.0, 2.0, 3.0), (40.0, 1.0, 1.0)])
def test_d_infinity_splits_by_the_angle_on_a_plane(degrees, dx, dy):
    """Flow heading `degrees` south of east: Tarboton's shares are angle / facet angle to the
    south-east neighbour and the rest to the east one, on every cell with all its neighbours."""
    alpha = math.radians(degrees)
    x, y = grid_xy(8, 9, dx, dy)
    z = -(math.cos(alpha) * x - math.sin(alpha) * y)
    routing = terrain.route(z, terrain.CellSizes.projected(dx, dy, 8), "D-infinity")
    shares = routing.fractions.reshape(8, 10, 11)[:, 2:-2, 2:-2]
    to_corner = alpha / math.atan2(dy, dx)
    np.testing.assert_allclose(shares[terrain.SOUTH_EAST], to_corner, rtol=1e-5)
    np.testing.assert_allclose(shares[terrain.EAST], 1 - to_corner, rtol=1e-5)
    assert shares.sum(axis=0) == pytest.approx(1)


def test_d_infinity_follows_the_radius_of_a_cone():
    """On a cone every cell's flow angle (its facet, turned by share x 45 degrees from the
    facet's cardinal towards its diagonal) points away from the apex, up to the facet plane's
    tilt on the curved surface: about atan(1 / 2r) at r cells from the apex (Tarboton 1997)."""
    x, y = grid_xy(41, 41, 1.0, 1.0)
    x, y = x - 20.5, y + 20.5
    routing = terrain.route(50 - np.hypot(x, y), terrain.CellSizes.projected(1, 1, 41), "D-infinity")
    shares = routing.fractions.reshape(8, 43, 43)[:, 1:-1, 1:-1]
    compass = np.arange(8) * 45.0  # NEIGHBOURS are 45 degrees apart, clockwise from north
    cardinal = compass[0::2][shares[0::2].argmax(axis=0)]
    diagonal = compass[1::2][shares[1::2].argmax(axis=0)]
    turn = (diagonal - cardinal + 180) % 360 - 180
    heading = cardinal + shares[1::2].max(axis=0) * turn
    radial = np.degrees(np.arctan2(x, y))
    distance = np.hypot(x, y)
    away = (distance > 3) & (np.abs(x) < 18) & (np.abs(y) < 18)
    error = np.abs((heading - radial + 180) % 360 - 180)[away]
    assert (error <= np.degrees(np.arctan(0.5 / distance[away])) + 0.05).all()


def test_d_infinity_picks_the_facet_of_steepest_euclidean_slope():
    """Facet (E, NE) falls 1 straight east; facet (S, SW) falls 0.75 south and 0.6 across,
    0.96 in all: east wins (a sum of the two slopes, 1.35, would pick the other)."""
    z = np.array([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [-1.35, -0.75, -1.0]])
    shares = terrain.route(z, terrain.CellSizes.projected(1, 1, 3), "D-infinity").fractions.reshape(8, 5, 5)[:, 2, 2]
    np.testing.assert_array_equal(shares, np.eye(8)[terrain.EAST])


def test_fill_equals_scikit_image_reconstruction_on_the_whole_real_dem():
    """The fill drives scikit-image's inner reconstruction loop itself: it must give what the
    public skimage.morphology.reconstruction gives, seeded with the DEM on its edge cells."""
    from skimage.morphology import reconstruction

    z = gdal.Open(str(MINNESOTA_DEM)).ReadAsArray().astype(np.float32)
    z[100:130, 200:260] = np.nan
    z[390:, :7] = np.nan
    padded = np.pad(z, 1, constant_values=np.nan)
    invalid = np.isnan(padded)
    edge = binary_dilation(invalid, np.ones((3, 3), bool)) & ~invalid
    mask = np.where(invalid, np.finfo(np.float32).min, padded)
    seed = np.where(edge | invalid, mask, np.nanmax(z))
    expected = reconstruction(seed, mask, method="erosion")[1:-1, 1:-1]
    expected[np.isnan(z)] = np.nan
    filled = terrain.fill_depressions(z)
    assert (filled > z).sum() > 20_000  # the holes drain some depressions: 22 282 cells stay filled
    np.testing.assert_array_equal(filled, expected)
