"""subsidence:selectps against a direct numpy computation on a stack with known stable pixels."""

import numpy as np
import pytest
from osgeo import gdal, ogr
from qgis import processing
from qgis.core import QgsProcessingException

from insar_subsidence.core import dispersion as dispersion_module

WIDTH, HEIGHT, IMAGES = 40, 30, 20
GEOTRANSFORM = (500000.0, 20.0, 0.0, 4100000.0, 0.0, -20.0)
STABLE = [(0, 0), (5, 7), (12, 39), (29, 20), (17, 3)]  # (row, column)


def stack(seed=0):
    rng = np.random.default_rng(seed)
    amplitudes = rng.rayleigh(1.0, (IMAGES, HEIGHT, WIDTH))  # clutter: D_A about 0.52
    for row, column in STABLE:
        amplitudes[:, row, column] = 10.0 + rng.normal(0, 0.2, IMAGES)  # D_A about 0.02
    return amplitudes


def run(tmp_path, inputs, threshold=0.25, feedback=None):
    return processing.run(
        "subsidence:selectps",
        {
            "INPUT": inputs,
            "THRESHOLD": threshold,
            "OUTPUT_DISPERSION": str(tmp_path / "da.tif"),
            "OUTPUT": str(tmp_path / "ps.gpkg"),
        },
        feedback=feedback,
    )


@pytest.fixture
def geotiff_at(geotiff):
    """geotiff_at(path, bands, nodata=None) on this module's grid, EPSG:32630."""
    return lambda path, bands, nodata=None: geotiff(path, bands, GEOTRANSFORM, 32630, nodata)


def read_band(path):
    dataset = gdal.Open(path)  # must outlive its band
    return dataset.GetRasterBand(1).ReadAsArray()


def points(path):
    source = ogr.Open(path)
    return sorted(
        (
            round(f.GetGeometryRef().GetX(), 6),
            round(f.GetGeometryRef().GetY(), 6),
            f.GetField("dispersion"),
            f.GetField("mean_amplitude"),
        )
        for f in source.GetLayer()
    )


def expected(amplitudes):
    da = np.nanstd(amplitudes, axis=0, ddof=1) / np.nanmean(amplitudes, axis=0)
    rows, columns = np.nonzero(da < 0.25)
    centres = [(GEOTRANSFORM[0] + (c + 0.5) * 20.0, GEOTRANSFORM[3] - (r + 0.5) * 20.0) for r, c in zip(rows, columns)]
    return da, sorted(centres)


@pytest.mark.parametrize("rows_per_block", [None, 3])
def test_multiband_stack_matches_numpy(plugin, tmp_path, geotiff_at, monkeypatch, rows_per_block):
    if rows_per_block:  # blocks of 3 rows: the streaming must not change anything
        monkeypatch.setattr(dispersion_module, "BLOCK_BYTES", 8 * IMAGES * WIDTH * rows_per_block)
    amplitudes = stack().astype(np.float32)  # what the GeoTIFF holds
    results = run(tmp_path, [geotiff_at(tmp_path / "stack.tif", amplitudes)])
    da, centres = expected(amplitudes.astype(float))
    written = read_band(results["OUTPUT_DISPERSION"])
    np.testing.assert_allclose(written, da, rtol=1e-6)
    found = points(results["OUTPUT"])
    assert [(x, y) for x, y, _, _ in found] == [(round(x, 6), round(y, 6)) for x, y in centres]
    assert len(found) == len(STABLE)
    for x, y, d, m in found:
        column, row = int((x - GEOTRANSFORM[0]) / 20), int((GEOTRANSFORM[3] - y) / 20)
        assert d == pytest.approx(da[row, column], rel=1e-12)
        assert m == pytest.approx(amplitudes[:, row, column].astype(float).mean(), rel=1e-12)


def test_single_band_images_and_nodata(plugin, tmp_path, geotiff_at):
    amplitudes = stack(1).astype(np.float32)
    amplitudes[3, 5, 7] = -9999  # one missing acquisition at a stable pixel
    paths = [geotiff_at(tmp_path / f"a{i}.tif", [band], nodata=-9999) for i, band in enumerate(amplitudes)]
    results = run(tmp_path, paths)
    oracle = np.where(amplitudes == -9999, np.nan, amplitudes).astype(float)
    da, centres = expected(oracle)
    written = read_band(results["OUTPUT_DISPERSION"])
    np.testing.assert_allclose(written, da, rtol=1e-6)
    assert len(points(results["OUTPUT"])) == len(centres) == len(STABLE)


def test_the_dispersion_raster_is_written_only_when_asked_for(plugin, tmp_path, geotiff_at):
    amplitudes = stack().astype(np.float32)
    path = geotiff_at(tmp_path / "stack.tif", amplitudes)
    results = processing.run("subsidence:selectps", {"INPUT": [path], "OUTPUT": str(tmp_path / "ps.gpkg")})
    written = {file.name for file in tmp_path.iterdir()} - {"stack.tif", "stack.tif.aux.xml"}  # the input's
    assert set(results) == {"OUTPUT"} and written == {"ps.gpkg"}
    _, centres = expected(amplitudes.astype(float))
    assert [(x, y) for x, y, _, _ in points(results["OUTPUT"])] == [(round(x, 6), round(y, 6)) for x, y in centres]


def test_few_images_warn(plugin, tmp_path, geotiff_at, log_feedback):
    feedback = log_feedback()
    run(tmp_path, [geotiff_at(tmp_path / "short.tif", stack()[:5])], feedback=feedback)
    assert "WARNING Only 5 images" in feedback.text


def test_bad_stacks_are_clear_errors(plugin, tmp_path, geotiff_at):
    with pytest.raises(QgsProcessingException):
        run(tmp_path, [geotiff_at(tmp_path / "one.tif", stack()[:1])])
    other = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "other.tif"), WIDTH + 1, HEIGHT, 1, gdal.GDT_Float32)
    other.SetGeoTransform(GEOTRANSFORM)
    other = None
    with pytest.raises(QgsProcessingException):
        run(tmp_path, [geotiff_at(tmp_path / "a.tif", stack()[:3]), str(tmp_path / "other.tif")])
    assert not (tmp_path / "da.tif").exists()
