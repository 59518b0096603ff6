"""subsidence:distance against analytic distances and QGIS's own geometry distance."""

import numpy as np
import pytest
from osgeo import gdal
from qgis import processing
from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsProcessingException, QgsVectorLayer

LEFT, TOP, PIXEL, WIDTH, HEIGHT = 500000.0, 4100000.0, 25.0, 48, 36


@pytest.fixture
def reference(tmp_path, geotiff):
    return geotiff(tmp_path / "grid.tif", np.zeros((HEIGHT, WIDTH)), (LEFT, PIXEL, 0, TOP, 0, -PIXEL), 32630)


def centres():
    x = LEFT + (np.arange(WIDTH) + 0.5) * PIXEL
    y = TOP - (np.arange(HEIGHT) + 0.5) * PIXEL
    return np.meshgrid(x, y)


def layer_of(kind, wkts, crs="EPSG:32630"):
    layer = QgsVectorLayer(f"{kind}?crs={crs}", "features", "memory")
    features = []
    for wkt in wkts:
        feature = QgsFeature()
        feature.setGeometry(QgsGeometry.fromWkt(wkt))
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    return layer


def distance(tmp_path, layer, reference):
    result = processing.run(
        "subsidence:distance", {"INPUT": layer, "REFERENCE": reference, "OUTPUT": str(tmp_path / "d.tif")}
    )
    dataset = gdal.Open(result["OUTPUT"])  # must outlive its band
    return dataset.GetRasterBand(1).ReadAsArray().astype(float)


def test_points(plugin, tmp_path, reference):
    wells = [(500130.0, 4099410.0), (500900.0, 4099500.0), (501300.0, 4099200.0)]
    result = distance(tmp_path, layer_of("Point", [f"POINT ({x} {y})" for x, y in wells]), reference)
    x, y = centres()
    expected = np.min([np.hypot(x - wx, y - wy) for wx, wy in wells], axis=0)
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_a_horizontal_line_and_a_square(plugin, tmp_path, reference):
    x, y = centres()
    line = distance(tmp_path, layer_of("LineString", ["LINESTRING (499000 4099500, 502000 4099500)"]), reference)
    np.testing.assert_allclose(line, np.abs(y - 4099500), rtol=1e-6, atol=1e-6)
    square = distance(
        tmp_path,
        layer_of(
            "Polygon", ["POLYGON ((500300 4099300, 500700 4099300, 500700 4099700, 500300 4099700, 500300 4099300))"]
        ),
        reference,
    )
    dx = np.maximum.reduce([500300 - x, np.zeros_like(x), x - 500700])
    dy = np.maximum.reduce([4099300 - y, np.zeros_like(y), y - 4099700])
    np.testing.assert_allclose(square, np.hypot(dx, dy), rtol=1e-6, atol=1e-6)
    assert (square == 0).sum() == 16 * 16  # the cell centres inside the 400 m square


def test_random_lines_match_qgis_geometry_distance(plugin, tmp_path, reference):
    rng = np.random.default_rng(0)
    wkts = []
    for _ in range(6):
        vertices = rng.uniform(
            [LEFT - 200, TOP - HEIGHT * PIXEL - 200], [LEFT + WIDTH * PIXEL + 200, TOP + 200], (5, 2)
        )
        wkts.append("LINESTRING (" + ", ".join(f"{a} {b}" for a, b in vertices) + ")")
    result = distance(tmp_path, layer_of("LineString", wkts), reference)
    geometries = [QgsGeometry.fromWkt(wkt) for wkt in wkts]
    x, y = centres()
    for row, column in zip(rng.integers(0, HEIGHT, 200), rng.integers(0, WIDTH, 200)):
        point = QgsGeometry.fromPointXY(QgsPointXY(x[row, column], y[row, column]))
        assert result[row, column] == pytest.approx(min(g.distance(point) for g in geometries), rel=1e-6)


def test_features_in_another_crs_are_reprojected(plugin, tmp_path, reference):
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject

    utm = QgsPointXY(500600.0, 4099600.0)
    transform = QgsCoordinateTransform(
        QgsCoordinateReferenceSystem("EPSG:32630"), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance()
    )
    geographic = transform.transform(utm)
    result = distance(
        tmp_path, layer_of("Point", [f"POINT ({geographic.x():.12f} {geographic.y():.12f})"], "EPSG:4326"), reference
    )
    x, y = centres()
    np.testing.assert_allclose(result, np.hypot(x - utm.x(), y - utm.y()), atol=1e-3)


def test_a_layer_without_features_is_an_error(plugin, tmp_path, reference):
    with pytest.raises(QgsProcessingException):
        distance(tmp_path, layer_of("Point", []), reference)
    assert not (tmp_path / "d.tif").exists()
