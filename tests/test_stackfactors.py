"""subsidence:stackfactors: drivers on one grid, named and sorted, checked against gdal.Warp."""

import numpy as np
import pytest
from osgeo import gdal
from qgis import processing
from qgis.core import QgsProcessingException

from insar_subsidence.algorithms.layers import NODATA

GRID = (180000.0, 10.0, 0.0, 4130000.0, 0.0, -10.0)  # EPSG:25830, 40 x 30 cells


def read_stack(path):
    dataset = gdal.Open(str(path))  # must outlive its bands
    names = [dataset.GetRasterBand(i + 1).GetDescription() for i in range(dataset.RasterCount)]
    values = dataset.ReadAsArray().astype(float).reshape(dataset.RasterCount, dataset.RasterYSize, dataset.RasterXSize)
    return names, np.where(values == NODATA, np.nan, values), dataset.GetGeoTransform()


@pytest.fixture
def raster(geotiff):
    """raster(path, values, geotransform=GRID, epsg=25830, nodata=None) -> path."""
    return lambda path, values, geotransform=GRID, epsg=25830, nodata=None: geotiff(path, values, geotransform, epsg, nodata)


@pytest.fixture
def drivers(tmp_path, raster):
    rng = np.random.default_rng(0)
    rows, columns = np.mgrid[0:30, 0:40]
    elevation = raster(tmp_path / "elevation.tif", (100 + 2 * rows + 0.5 * columns).astype(np.float32))
    # NDVI on a coarser grid in WGS84 around the same area.
    ndvi_values = rng.uniform(0, 1, (20, 20)).astype(np.float32)
    ndvi = raster(tmp_path / "ndvi.tif", ndvi_values, (-6.47, 0.0003, 0.0, 37.305, 0.0, -0.0003), epsg=4326)
    classes = rng.choice([1, 2, 5], (30, 40)).astype(np.float32)
    classes[0, :5] = 0  # nodata
    landuse = raster(tmp_path / "landuse.tif", classes, nodata=0)
    return {"elevation": elevation, "ndvi": ndvi, "landuse": landuse, "classes": classes}


def stack(tmp_path, inputs, categorical=(), name="stack.tif"):
    results = processing.run(
        "subsidence:stackfactors",
        {"INPUTS": inputs, "CATEGORICAL": list(categorical), "OUTPUT": str(tmp_path / name)},
    )
    return read_stack(results["OUTPUT"])


def warp_with_gdal(path, reference, resampling):
    reference_dataset = gdal.Open(reference)
    left, width, _, top, _, height = reference_dataset.GetGeoTransform()
    bounds = (left, top + reference_dataset.RasterYSize * height, left + reference_dataset.RasterXSize * width, top)
    options = gdal.WarpOptions(format="MEM", dstSRS=reference_dataset.GetProjection(), outputBounds=bounds,
                               width=reference_dataset.RasterXSize, height=reference_dataset.RasterYSize,
                               resampleAlg=resampling, outputType=gdal.GDT_Float32, dstNodata=float("nan"))
    warped = gdal.Warp("", path, options=options)
    return warped.GetRasterBand(1).ReadAsArray().astype(float)


def test_bands_are_named_sorted_one_hot_and_on_the_reference_grid(plugin, tmp_path, drivers):
    names, values, geotransform = stack(tmp_path, [drivers["elevation"], drivers["ndvi"], drivers["landuse"]], [drivers["landuse"]])
    assert names == ["elevation", "landuse=1", "landuse=2", "landuse=5", "ndvi"]
    assert geotransform == GRID and values.shape == (5, 30, 40)
    rows, columns = np.mgrid[0:30, 0:40]
    np.testing.assert_allclose(values[0], 100 + 2 * rows + 0.5 * columns, rtol=1e-6)
    np.testing.assert_allclose(values[4], warp_with_gdal(drivers["ndvi"], drivers["elevation"], "bilinear"), rtol=1e-6, equal_nan=True)
    classes = drivers["classes"]
    for band, value in zip(values[1:4], (1, 2, 5)):
        np.testing.assert_array_equal(band[classes != 0], (classes[classes != 0] == value).astype(float))
        assert np.isnan(band[classes == 0]).all()
    assert np.nansum(values[1:4], axis=0)[classes != 0].tolist() == [1.0] * int((classes != 0).sum())


def test_the_order_of_the_inputs_does_not_matter(plugin, tmp_path, drivers):
    first = stack(tmp_path, [drivers["elevation"], drivers["ndvi"], drivers["landuse"]], [drivers["landuse"]], "a.tif")
    second = stack(tmp_path, [drivers["landuse"], drivers["elevation"], drivers["ndvi"]], [drivers["landuse"]], "b.tif")
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1][np.isfinite(first[1])], second[1][np.isfinite(second[1])])


def test_naming_errors_are_clear(plugin, tmp_path, drivers, raster):
    other = tmp_path / "other"
    other.mkdir()
    twin = raster(other / "elevation.tif", np.zeros((30, 40), np.float32))
    with pytest.raises(QgsProcessingException):
        stack(tmp_path, [drivers["elevation"], twin])
    with pytest.raises(QgsProcessingException):
        stack(tmp_path, [drivers["elevation"]], [drivers["landuse"]])
    assert not (tmp_path / "stack.tif").exists()


def test_one_hot_bands_and_names_survive_into_the_dataset(plugin, tmp_path, drivers):
    from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsVectorLayer

    from insar_subsidence.core.dataset import open_dataset

    stacked = processing.run(
        "subsidence:stackfactors",
        {"INPUTS": [drivers["landuse"], drivers["elevation"]], "CATEGORICAL": [drivers["landuse"]], "OUTPUT": str(tmp_path / "s.tif")},
    )["OUTPUT"]
    points = QgsVectorLayer("Point?crs=EPSG:25830&field=displacement:double", "ps", "memory")
    features = []
    for row, column in [(10, 10), (20, 30), (15, 20), (25, 8)]:
        feature = QgsFeature(points.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(180000 + (column + 0.5) * 10, 4130000 - (row + 0.5) * 10)))
        feature.setAttributes([float(row)])
        features.append(feature)
    points.dataProvider().addFeatures(features)
    result = processing.run(
        "subsidence:exportpatches",
        {"POINTS": points, "FIELD": "displacement", "FACTORS": stacked, "PATCH_SIZE": 3, "SPLIT": 1,
         "VAL_FRACTION": 0.0, "TEST_FRACTION": 0.25, "OUTPUT": str(tmp_path / "d.npz")},
    )
    data = open_dataset(result["OUTPUT"])
    assert list(data["band_names"]) == ["elevation", "landuse=1", "landuse=2", "landuse=5"]
    one_hot = np.asarray(data["patches"])[:, 1:4]
    assert set(np.unique(one_hot)) <= {0.0, 1.0} and (one_hot.sum(axis=1) == 1).all()
    classes = drivers["classes"]
    for patch, x, y in zip(np.asarray(data["patches"]), data["x"], data["y"]):
        row, column = int((4130000 - y) // 10), int((x - 180000) // 10)
        assert [1, 2, 5][int(np.argmax(patch[1:4, 1, 1]))] == classes[row, column]
