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
    return lambda path, values, geotransform=GRID, epsg=25830, nodata=None: geotiff(
        path, values, geotransform, epsg, nodata
    )


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
    options = gdal.WarpOptions(
        format="MEM",
        dstSRS=reference_dataset.GetProjection(),
        outputBounds=bounds,
        width=reference_dataset.RasterXSize,
        height=reference_dataset.RasterYSize,
        resampleAlg=resampling,
        outputType=gdal.GDT_Float32,
        dstNodata=float("nan"),
    )
    warped = gdal.Warp("", path, options=options)
    return warped.GetRasterBand(1).ReadAsArray().astype(float)


def test_bands_are_named_sorted_one_hot_and_on_the_reference_grid(plugin, tmp_path, drivers):
    names, values, geotransform = stack(
        tmp_path, [drivers["elevation"], drivers["ndvi"], drivers["landuse"]], [drivers["landuse"]]
    )
    assert names == ["elevation", "landuse=1", "landuse=2", "landuse=5", "ndvi"]
    assert geotransform == GRID and values.shape == (5, 30, 40)
    rows, columns = np.mgrid[0:30, 0:40]
    np.testing.assert_allclose(values[0], 100 + 2 * rows + 0.5 * columns, rtol=1e-6)
    np.testing.assert_allclose(
        values[4], warp_with_gdal(drivers["ndvi"], drivers["elevation"], "bilinear"), rtol=1e-6, equal_nan=True
    )
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
        {
            "INPUTS": [drivers["landuse"], drivers["elevation"]],
            "CATEGORICAL": [drivers["landuse"]],
            "OUTPUT": str(tmp_path / "s.tif"),
        },
    )["OUTPUT"]
    points = QgsVectorLayer("Point?crs=EPSG:25830&field=displacement:double", "ps", "memory")
    features = []
    for row, column in [(10, 10), (20, 30), (15, 20), (25, 8)]:
        feature = QgsFeature(points.fields())
        feature.setGeometry(
            QgsGeometry.fromPointXY(QgsPointXY(180000 + (column + 0.5) * 10, 4130000 - (row + 0.5) * 10))
        )
        feature.setAttributes([float(row)])
        features.append(feature)
    points.dataProvider().addFeatures(features)
    result = processing.run(
        "subsidence:exportpatches",
        {
            "POINTS": points,
            "FIELD": "displacement",
            "FACTORS": stacked,
            "PATCH_SIZE": 3,
            "SPLIT": 1,
            "VAL_FRACTION": 0.0,
            "TEST_FRACTION": 0.25,
            "OUTPUT": str(tmp_path / "d.npz"),
        },
    )
    data = open_dataset(result["OUTPUT"])
    assert list(data["band_names"]) == ["elevation", "landuse=1", "landuse=2", "landuse=5"]
    one_hot = np.asarray(data["patches"])[:, 1:4]
    assert set(np.unique(one_hot)) <= {0.0, 1.0} and (one_hot.sum(axis=1) == 1).all()
    classes = drivers["classes"]
    for patch, x, y in zip(np.asarray(data["patches"]), data["x"], data["y"]):
        row, column = int((4130000 - y) // 10), int((x - 180000) // 10)
        assert [1, 2, 5][int(np.argmax(patch[1:4, 1, 1]))] == classes[row, column]


def test_directions_become_east_and_north_before_resampling(plugin, tmp_path, raster):
    """Columns alternating 350° and 10° on 10 m cells, stacked onto 20 m cells (bilinear, each
    output cell between two input columns): averaged as degrees they would face south (180°); as
    components they face north. Flat cells (-1) face no direction, nodata stays nodata."""
    degrees = np.where(np.arange(40) % 2 == 0, 350.0, 10.0)[None].repeat(30, axis=0).astype(np.float32)
    degrees[:, 20:] = np.where(np.arange(20) % 2 == 0, 80.0, 100.0)  # the right half faces east
    degrees[10:18, :] = -1  # flat
    degrees[0:6, 0:8] = -9999  # nodata
    aspect = raster(tmp_path / "aspect.tif", degrees, nodata=-9999)
    # 20 m cells whose centres lie halfway between the 10 m cells'.
    coarse = raster(tmp_path / "coarse.tif", np.zeros((15, 20), np.float32), (GRID[0], 20.0, 0, GRID[3], 0, -20.0))
    results = processing.run(
        "subsidence:stackfactors",
        {"INPUTS": [coarse, aspect], "CIRCULAR": [aspect], "OUTPUT": str(tmp_path / "stack.tif")},
    )
    names, values, _ = read_stack(results["OUTPUT"])
    assert names == ["aspect_east", "aspect_north", "coarse"]
    east, north = values[0], values[1]
    by_gdal = warp_with_gdal(aspect, coarse, "bilinear")
    below = np.arange(15)[:, None] >= 10  # far from the flat and nodata rows
    mixed = below & (np.arange(20) >= 1) & (np.arange(20) < 9)  # cells whose inputs are all 350° or 10°, in pairs
    assert mixed.sum() == 40 and np.allclose(by_gdal[mixed], 180.0)  # what averaging degrees does
    np.testing.assert_allclose(north[mixed], np.cos(np.radians(10.0)), atol=1e-6)
    np.testing.assert_allclose(east[mixed], 0.0, atol=1e-6)
    facing_east = below & (np.arange(20) >= 11)
    np.testing.assert_allclose(east[facing_east], np.cos(np.radians(10.0)), atol=1e-6)
    flat = np.isclose(by_gdal, -1.0)
    assert flat.any() and np.all(east[flat] == 0) and np.all(north[flat] == 0)
    assert np.isnan(east[0, 0]) and np.isnan(north[0, 0])


def test_the_aspect_of_terrain_factors_is_recognised_as_a_direction(plugin, tmp_path, raster):
    rows, columns = np.mgrid[0:30, 0:40]
    dem = raster(tmp_path / "dem.tif", (100 + 2 * rows).astype(np.float32))  # rising southwards: faces north
    aspect = processing.run("subsidence:terrainfactors", {"INPUT": dem, "ASPECT": str(tmp_path / "aspect.tif")})[
        "ASPECT"
    ]
    names, values, _ = stack(tmp_path, [dem, aspect])
    assert names == ["aspect_east", "aspect_north", "dem"]
    np.testing.assert_allclose(values[1], 1.0, atol=1e-6)
    np.testing.assert_allclose(values[0], 0.0, atol=1e-6)


def test_a_layer_cannot_be_both_categorical_and_a_direction(plugin, tmp_path, drivers):
    with pytest.raises(QgsProcessingException, match="both categorical and a direction"):
        processing.run(
            "subsidence:stackfactors",
            {
                "INPUTS": [drivers["landuse"]],
                "CATEGORICAL": [drivers["landuse"]],
                "CIRCULAR": [drivers["landuse"]],
                "OUTPUT": str(tmp_path / "s.tif"),
            },
        )
