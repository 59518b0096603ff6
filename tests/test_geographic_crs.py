"""A geographic CRS (degrees) is refused alike by krige, exportpatches and evaluate, with the UTM
zone to reproject to; points in degrees are reprojected to a projected grid and krige as in metres."""

import numpy as np
import pytest
from osgeo import gdal
from qgis import processing
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsPointXY,
    QgsProcessingException,
)

from conftest import displacement_points, points_on_amplitude_grid, write_geotiff
from insar_subsidence.core import dataset
from insar_subsidence.core.grid import utm_epsg

MEXICO_CITY = (-99.1, 19.4)  # in UTM zone 14N: EPSG:32614
MEXICO_GRID = (-99.2, 0.01, 0, 19.5, 0, -0.01)  # 20 x 20 cells of 0.01° around it, EPSG:4326


@pytest.mark.parametrize(
    "longitude, latitude, epsg",
    [(-99.1, 19.4, 32614), (-6.4, 37.0, 32629), (151.2, -33.9, 32756), (3.0, 0.0, 32631), (180.0, 10.0, 32601)],
)
def test_utm_zone_of_known_places(longitude, latitude, epsg):
    assert utm_epsg(longitude, latitude) == epsg


def test_polar_caps_get_the_polar_stereographic_crs():
    assert (utm_epsg(10.0, 85.0), utm_epsg(10.0, -85.0)) == (32661, 32761)


def to_degrees(x, y):
    """EPSG:32630 coordinates in EPSG:4326 longitude and latitude."""
    transform = QgsCoordinateTransform(
        QgsCoordinateReferenceSystem("EPSG:32630"),
        QgsCoordinateReferenceSystem("EPSG:4326"),
        QgsCoordinateTransformContext(),
    )
    points = [transform.transform(QgsPointXY(a, b)) for a, b in zip(x, y)]
    return [p.x() for p in points], [p.y() for p in points]


def test_points_in_degrees_krige_as_the_same_points_in_metres(plugin, tmp_path):
    rng = np.random.default_rng(4)
    x, y = rng.uniform(500000, 502000, 60), rng.uniform(4098000, 4100000, 60)
    values = np.sin(x / 400) + np.cos(y / 500) + rng.normal(0, 0.05, 60)
    reference = write_geotiff(tmp_path / "grid.tif", np.zeros((20, 20)), (500000, 100, 0, 4100000, 0, -100), 32630)
    surfaces = []
    for name, layer in (
        ("metres", displacement_points(x, y, values)),
        ("degrees", displacement_points(*to_degrees(x, y), values, crs="EPSG:4326")),
    ):
        results = processing.run(
            "subsidence:krige",
            {
                "POINTS": layer,
                "FIELD": "displacement",
                "REFERENCE": reference,
                "SILL": 1.0,
                "RANGE": 1500,
                "NUGGET": 0.01,
                "OUTPUT": str(tmp_path / f"{name}.tif"),
                "OUTPUT_VARIANCE": str(tmp_path / f"{name}_variance.tif"),
            },
        )
        assert results["N_POINTS"] == 60
        surfaces.append(gdal.Open(results["OUTPUT"]).ReadAsArray().astype(float))
    np.testing.assert_allclose(surfaces[1], surfaces[0], rtol=1e-6, atol=1e-6 * np.ptp(surfaces[0]))


def krige_on_geographic_grid(tmp_path, grid):
    longitude, latitude = MEXICO_CITY
    degrees = longitude + np.linspace(-0.05, 0.05, 20), latitude + np.linspace(-0.05, 0.05, 20)
    points = displacement_points(*degrees, range(20), crs="EPSG:4326")
    outputs = [tmp_path / "kriged.tif", tmp_path / "variance.tif"]
    parameters = {"POINTS": points, "FIELD": "displacement", "REFERENCE": grid}
    return "subsidence:krige", {**parameters, "OUTPUT": str(outputs[0]), "OUTPUT_VARIANCE": str(outputs[1])}, outputs


def export_geographic_stack(tmp_path, grid):
    output = tmp_path / "dataset.npz"
    parameters = {
        "POINTS": points_on_amplitude_grid(20),
        "FIELD": "displacement",
        "FACTORS": grid,
        "PATCH_SIZE": 4,
        "OUTPUT": str(output),
    }
    return "subsidence:exportpatches", parameters, [output]


def evaluate_geographic_dataset(tmp_path, grid):
    """A dataset as an export from the geographic stack would have been: only what is read before the check."""
    path, n = tmp_path / "geographic.npz", 20
    longitude, latitude = MEXICO_CITY
    dataset.write(
        path,
        np.zeros((n, 1, 4, 4), np.float32),
        np.arange(n),
        {
            "targets": np.zeros(n, np.float32),
            "x": longitude + np.linspace(-0.05, 0.05, n),
            "y": latitude + np.linspace(-0.05, 0.05, n),
            "pid": np.array([f"p{i}" for i in range(n)]),
            "split": np.zeros(n, np.int8),
            "crs": np.array(QgsCoordinateReferenceSystem("EPSG:4326").toWkt()),
        },
    )
    outputs = [tmp_path / "comparison.csv", tmp_path / "evaluation.html"]
    (tmp_path / "never_read.onnx").write_bytes(b"")  # the dataset is refused first
    parameters = {"DATASET": str(path), "MODEL": str(tmp_path / "never_read.onnx")}
    return (
        "subsidence:evaluate",
        {**parameters, "OUTPUT_TABLE": str(outputs[0]), "OUTPUT_REPORT": str(outputs[1])},
        outputs,
    )


@pytest.fixture
def refusals(plugin, tmp_path):
    """{algorithm: its error message} for a geographic grid, stack and dataset around Mexico City,
    after checking that none of them left an output behind."""
    grid = write_geotiff(
        tmp_path / "geographic.tif",
        np.random.default_rng(0).normal(size=(3, 20, 20)),
        MEXICO_GRID,
        4326,
        names=["a", "b", "c"],
    )
    messages = {}
    for make in (krige_on_geographic_grid, export_geographic_stack, evaluate_geographic_dataset):
        algorithm, parameters, outputs = make(tmp_path, grid)
        with pytest.raises(QgsProcessingException) as refused:
            processing.run(algorithm, parameters)
        assert not [path for path in outputs if path.exists()]
        messages[algorithm] = str(refused.value)
    return messages


def test_geographic_data_are_refused_alike_with_the_fix(refusals):
    for algorithm, message in refusals.items():
        assert "EPSG:4326" in message and "EPSG:32614 (WGS 84 / UTM zone 14N)" in message, algorithm
        assert "Warp (reproject) (gdal:warpreproject)" in message, algorithm
    # One message: only the subject, and for evaluate the steps to redo, differ.
    reasons = {message.split(" is in ", 1)[1].split("centre:")[0] for message in refusals.values()}
    assert len(reasons) == 1


def test_grid_crs_in_degrees_is_refused_with_the_utm_zone_to_set(plugin, tmp_path):
    sydney = "151.15,151.25,-33.95,-33.85 [EPSG:4326]"
    points = displacement_points([151.17, 151.2, 151.23], [-33.9, -33.88, -33.92], [1, 2, 3], crs="EPSG:4326")
    parameters = {"POINTS": points, "FIELD": "displacement", "EXTENT": sydney, "PIXEL_SIZE": 100}
    with pytest.raises(QgsProcessingException, match=r"set 'Grid CRS' to EPSG:32756, .*Warp") as refused:
        processing.run("subsidence:krige", {**parameters, "OUTPUT": str(tmp_path / "kriged.tif")})
    assert "The grid is in EPSG:4326 (WGS 84)" in str(refused.value)
    assert not (tmp_path / "kriged.tif").exists()


def test_another_datum_is_placed_in_its_wgs84_zone(plugin):
    from insar_subsidence.algorithms.layers import refuse_geographic

    with pytest.raises(QgsProcessingException, match="EPSG:32629"):
        refuse_geographic(QgsCoordinateReferenceSystem("EPSG:4258"), "The stack", -6.4, 37.0)  # ETRS89, Doñana
    refuse_geographic(QgsCoordinateReferenceSystem("EPSG:25830"), "The stack", 180000, 4130000)  # projected: fine
