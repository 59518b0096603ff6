"""subsidence:terrainfactors on the real Minnesota LiDAR DEM against gdaldem and a cell-by-cell
reference, and on analytic DEMs in a geographic CRS and with nodata."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import MINNESOTA_DEM
from osgeo import gdal
from qgis import processing
from qgis.core import QgsProcessingException
from terrain_reference import (
    downstream_of_flats,
    reference_accumulation,
    reference_fill,
    reference_receivers,
    route_flats,
)

from insar_subsidence.core.terrain import METHODS

OUTPUTS = ("SLOPE", "ASPECT", "CATCHMENT", "TWI", "SPI")
D8 = METHODS.index("D8")  # the FLOW_METHOD option


def run(tmp_path, dem, feedback=None, **parameters):
    outputs = {key: str(tmp_path / f"{key.lower()}.tif") for key in OUTPUTS}
    result = processing.run(
        "subsidence:terrainfactors", {"INPUT": str(dem), **outputs, **parameters}, feedback=feedback
    )
    return {key: read(result[key]) for key in OUTPUTS if result.get(key)}


def read(path):
    dataset = gdal.Open(path)  # must outlive its band
    band = dataset.GetRasterBand(1)
    values = band.ReadAsArray().astype(np.float64)
    values[values == band.GetNoDataValue()] = np.nan
    return values


def gdaldem(dem, tmp_path, mode):
    path = str(tmp_path / f"gdaldem_{mode}.tif")
    subprocess.run(["gdaldem", mode, str(dem), path, "-q"], check=True)  # Horn; border cells nodata
    return read(path)


def test_slope_and_aspect_equal_gdaldem_in_the_interior(plugin, tmp_path, geotiff):
    """gdaldem works in float32: on elevations of ~400 m its rounding alone reaches 0.0025 degrees
    of slope and 1 degree of aspect on gentle cells (against a float64 Horn). So it is given the
    DEM lowered by 379 m, which float32 holds exactly and which has the same slopes."""
    ours = run(tmp_path, MINNESOTA_DEM)
    dataset = gdal.Open(str(MINNESOTA_DEM))
    lowered = dataset.GetRasterBand(1).ReadAsArray() - np.float32(379)
    lowered_dem = geotiff(tmp_path / "lowered.tif", lowered, dataset.GetGeoTransform(), 26915)
    slope, aspect = gdaldem(lowered_dem, tmp_path, "slope"), gdaldem(lowered_dem, tmp_path, "aspect")
    compared = ~np.isnan(slope)
    assert compared.sum() == 398 * 398
    assert np.abs(ours["SLOPE"] - slope)[compared].max() <= 1e-3
    faces = ~np.isnan(aspect)  # gdaldem leaves flat cells without aspect
    difference = (ours["ASPECT"] - aspect + 180) % 360 - 180
    assert faces.sum() > 0.99 * compared.sum() and np.abs(difference[faces]).max() <= 1e-3
    assert np.isfinite(ours["SLOPE"]).all() and np.isfinite(ours["ASPECT"]).all()  # the border too


@pytest.mark.parametrize("method", METHODS)
def test_real_dem_gives_finite_twi_and_spi_everywhere(plugin, tmp_path, method):
    ours = run(tmp_path, MINNESOTA_DEM, FLOW_METHOD=METHODS.index(method))
    for key in OUTPUTS:
        assert np.isfinite(ours[key]).all(), key
    assert (ours["CATCHMENT"] >= 1.0 - 1e-6).all()  # at least the cell itself: 1 m2 over 1 m
    tangent = np.tan(np.radians(np.maximum(ours["SLOPE"], 0.1)))
    np.testing.assert_allclose(ours["TWI"], np.log(ours["CATCHMENT"] / tangent), rtol=1e-5)
    np.testing.assert_allclose(ours["SPI"], ours["CATCHMENT"] * tangent, rtol=1e-5)


@pytest.mark.parametrize("method, agreeing", [("D8", 0.99), ("MFD", 0.90)])
def test_catchment_equals_the_cell_by_cell_reference_on_the_real_dem(plugin, tmp_path, method, agreeing):
    """The whole DEM (160 000 cells, 73 000 of them in filled depressions). The reference's
    D8/MFD accumulation is ours to 1e-5 on every cell no flat drains through. With the flats
    routed by the reference's own breadth-first search, whose tie-breaks differ, the cells off
    the flats still agree: to 1e-5 for 99 % (D8) / 90 % (MFD) of them (measured 99.8 % and
    92.9 %), and to 0.1 % for 95 % (measured: 0 and 0.045 %)."""
    ours = run(tmp_path, MINNESOTA_DEM, FLOW_METHOD=METHODS.index(method))["CATCHMENT"]
    dataset = gdal.Open(str(MINNESOTA_DEM))
    z = dataset.GetRasterBand(1).ReadAsArray().astype(np.float64)
    filled = reference_fill(z)
    receivers = reference_receivers(filled, method)
    expected = reference_accumulation(receivers, z.shape)  # cells of 1 m2, flow width 1 m
    flats = downstream_of_flats(receivers, filled)
    assert (~flats).mean() > 0.2
    np.testing.assert_allclose(ours[~flats], expected[~flats], rtol=1e-5)
    off_flats = (filled == z) & np.array(
        [[bool(receivers[(row, column)]) for column in range(z.shape[1])] for row in range(z.shape[0])]
    )
    expected = reference_accumulation(route_flats(receivers, filled), z.shape)
    relative = np.abs(ours / expected - 1)[off_flats]
    assert off_flats.mean() > 0.5
    assert np.mean(relative <= 1e-5) >= agreeing
    assert np.percentile(relative, 95) <= 1e-3


def test_geographic_dem_gets_metric_slopes_and_areas(plugin, tmp_path, geotiff):
    """A plane rising 3 % to the east, sampled on a 0.0002 degree grid at 50 N: the slope is
    atan(0.03) everywhere, and a south-draining column's catchment grows by the metric cell."""
    rows, columns, step, top = 30, 40, 0.0002, 50.0
    latitude = np.radians(top - (np.arange(rows) + 0.5) * step)
    a, b = 6378137.0, 6356752.314245
    e2 = 1 - (b / a) ** 2
    width = a / np.sqrt(1 - e2 * np.sin(latitude) ** 2) * np.cos(latitude) * math.radians(step)
    z = 0.03 * np.arange(columns)[None, :] * width[:, None]
    dem = geotiff(tmp_path / "dem4326.tif", z, (10.0, step, 0, top, 0, -step), 4326)
    ours = run(tmp_path, dem, FLOW_METHOD=D8)
    np.testing.assert_allclose(ours["SLOPE"], math.degrees(math.atan(0.03)), atol=2e-3)
    np.testing.assert_allclose(ours["ASPECT"], 270.0, atol=0.05)
    # D8 sends every cell west: the first column holds its row, over its own cell width.
    height = a * (1 - e2) / (1 - e2 * np.sin(latitude) ** 2) ** 1.5 * math.radians(step)
    np.testing.assert_allclose(ours["CATCHMENT"][:, 0], columns * width * height / np.sqrt(width * height), rtol=1e-5)


@pytest.mark.parametrize("nodata", [-9999.0, None])
def test_nodata_stays_nodata_and_acts_as_an_outlet(plugin, tmp_path, geotiff, nodata):
    """A plane rising to the east, cut by a nodata (or NaN) column: the cells east of it drain
    into it, those west of it to the DEM's west border; with 10 m cells a row of n cells gives
    a = 10 n."""
    columns, cut = 20, 6
    z = 100 + 0.5 * np.arange(columns)[None, :] + np.zeros((15, 1))
    z[:, cut] = np.nan if nodata is None else nodata
    dem = geotiff(tmp_path / "cut.tif", z, (500000, 10, 0, 4100000, 0, -10), 32630, nodata=nodata)
    ours = run(tmp_path, dem, FLOW_METHOD=D8)
    hole = ~np.isfinite(z) | (z == nodata)
    for key in OUTPUTS:
        assert np.isnan(ours[key][hole]).all() and np.isfinite(ours[key][~hole]).all(), key
    np.testing.assert_allclose(ours["CATCHMENT"][:, cut + 1], 10.0 * (columns - cut - 1))
    np.testing.assert_allclose(ours["CATCHMENT"][:, 0], 10.0 * cut)


def test_cells_in_us_feet_are_measured_in_metres(plugin, tmp_path, geotiff):
    """EPSG:2236 (Florida East, US survey feet): 10 ft cells, elevations rising 0.1 m a cell."""
    z = 5 + 0.1 * np.arange(12)[None, :] + np.zeros((10, 1))
    dem = geotiff(tmp_path / "feet.tif", z, (700000, 10, 0, 600000, 0, -10), 2236)
    ours = run(tmp_path, dem, FLOW_METHOD=D8)
    cell = 10 * 1200 / 3937  # metres
    np.testing.assert_allclose(ours["SLOPE"], math.degrees(math.atan(0.1 / cell)), atol=1e-4)
    np.testing.assert_allclose(ours["CATCHMENT"][:, 0], 12 * cell, rtol=1e-5)


def test_only_the_requested_outputs_are_written(plugin, tmp_path):
    result = processing.run(
        "subsidence:terrainfactors", {"INPUT": str(MINNESOTA_DEM), "TWI": str(tmp_path / "twi.tif")}
    )
    assert os.path.exists(result["TWI"]) and sorted(os.listdir(tmp_path)) == ["twi.tif"]
    assert set(result) == {"TWI"}  # no result for an output that was not written


def test_no_output_is_refused(plugin, tmp_path):
    with pytest.raises(QgsProcessingException, match="at least one output"):
        processing.run("subsidence:terrainfactors", {"INPUT": str(MINNESOTA_DEM)})


def test_cancel_leaves_no_output(plugin, tmp_path, log_feedback):
    feedback = log_feedback(cancel_at=30)
    with pytest.raises(QgsProcessingException, match="Canceled"):
        run(tmp_path, MINNESOTA_DEM, feedback)
    assert not any(name.endswith(".tif") for name in os.listdir(tmp_path))


def test_greyed_out_with_the_install_command_without_scikit_image(plugin, monkeypatch):
    from qgis.core import QgsApplication

    from insar_subsidence.core import dependencies

    monkeypatch.setitem(sys.modules, "skimage", None)
    ok, message = QgsApplication.processingRegistry().algorithmById("subsidence:terrainfactors").canExecute()
    assert not ok and dependencies.install_command(["skimage"]) in message
