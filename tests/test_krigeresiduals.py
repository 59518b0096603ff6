"""subsidence:krigeresiduals: the surface plus PyKrige's kriging of the residuals, the variance as
documented, training points left out, and clear refusals."""

import json

import numpy as np
import pytest
from osgeo import gdal
from pykrige.ok import OrdinaryKriging as PyKrige
from qgis import processing
from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsProcessingException, QgsVectorLayer

GRID = (400000.0, 50.0, 0, 4500000.0, 0, -50.0)  # 80 x 60 cells of 50 m
SHAPE = (60, 80)


def read(path):
    dataset = gdal.Open(str(path))
    band = dataset.GetRasterBand(1)
    values = band.ReadAsArray().astype(float)
    values[values == band.GetNoDataValue()] = np.nan
    return values


def surface_values():
    rows, columns = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    return 5.0 + 0.05 * columns - 0.03 * rows + np.sin(columns / 9.0)


def points_layer(n=150, seed=1, crs="EPSG:32630", kind="double"):
    """Points over the grid whose value is the surface's plus a smooth field it misses plus noise."""
    layer = QgsVectorLayer(f"Point?crs={crs}&field=value:{kind}", "points", "memory")
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(400000, 404000, n), rng.uniform(4497000, 4500000, n)
    column, row = ((x - 400000) // 50).astype(int), ((4500000 - y) // 50).astype(int)
    values = surface_values()[row, column] + 2.0 * np.cos((x - 400000) / 700.0) + rng.normal(0, 0.2, n)
    features = []
    for a, b, value in zip(x, y, values):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(a, b)))
        feature.setAttributes([float(value) if kind == "double" else f"{value:.3f}"])
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    return layer, x, y, values, row, column


def run(tmp_path, **parameters):
    defaults = {
        "FIELD": "value",
        "N_NEIGHBOURS": 16,
        "OUTPUT": str(tmp_path / "hybrid.tif"),
        "OUTPUT_VARIANCE": str(tmp_path / "variance.tif"),
    }
    return processing.run("subsidence:krigeresiduals", {**defaults, **parameters})


def pykrige_of_residuals(result, x, y, residuals):
    parameters = json.loads(result["VARIOGRAM_PARAMETERS"])
    model = parameters.pop("model")
    gx = GRID[0] + (np.arange(SHAPE[1]) + 0.5) * GRID[1]
    gy = GRID[3] + (np.arange(SHAPE[0]) + 0.5) * GRID[5]
    return PyKrige(x, y, residuals, variogram_model=model, variogram_parameters=parameters).execute(
        "grid", gx, gy, backend="C", n_closest_points=16
    )


def test_the_surface_plus_pykriges_kriging_of_the_residuals(plugin, tmp_path, geotiff):
    surface = geotiff(tmp_path / "surface.tif", surface_values(), GRID, 32630, names=["displacement (mm)"])
    sigma = np.full(SHAPE, 0.5) + 0.01 * np.arange(SHAPE[1])
    uncertainty = geotiff(tmp_path / "sigma.tif", sigma, GRID, 32630)
    layer, x, y, values, row, column = points_layer()
    result = run(
        tmp_path, SURFACE=surface, POINTS=layer, SURFACE_UNCERTAINTY=uncertainty, OUTPUT_REPORT=str(tmp_path / "r.html")
    )
    residuals = values - surface_values()[row, column]
    correction, variance = pykrige_of_residuals(result, x, y, residuals)
    np.testing.assert_allclose(
        read(result["OUTPUT"]), surface_values() + correction, rtol=1e-6, atol=1e-6 * np.ptp(values)
    )
    # The documented variance: the residuals' kriging variance plus the surface's σ².
    np.testing.assert_allclose(read(result["OUTPUT_VARIANCE"]), variance + sigma**2, rtol=1e-5)
    assert result["N_POINTS"] == len(values) and result["N_LEFT_OUT"] == 0
    assert "Kriged residuals" in (tmp_path / "r.html").read_text()


def test_without_uncertainty_the_variance_is_the_residuals_kriging_variance_and_nodata_stays(plugin, tmp_path, geotiff):
    values = surface_values()
    values[:5, :5] = np.nan  # nodata in the surface's corner
    surface = geotiff(tmp_path / "surface.tif", np.nan_to_num(values, nan=-9999), GRID, 32630, nodata=-9999)
    layer, x, y, observed, row, column = points_layer(seed=2)
    result = run(tmp_path, SURFACE=surface, POINTS=layer)
    valid = ~((row < 5) & (column < 5))
    _, variance = pykrige_of_residuals(result, x[valid], y[valid], (observed - surface_values()[row, column])[valid])
    written = read(result["OUTPUT_VARIANCE"])
    assert np.isnan(written[:5, :5]).all() and np.isnan(read(result["OUTPUT"])[:5, :5]).all()
    np.testing.assert_allclose(written[5:], variance[5:], rtol=1e-5)
    assert result["N_POINTS"] == valid.sum()


def test_the_training_points_of_the_dataset_are_left_out(plugin, tmp_path, geotiff):
    from insar_subsidence.core import dataset

    surface = geotiff(tmp_path / "surface.tif", surface_values(), GRID, 32630)
    layer, x, y, values, row, column = points_layer(seed=3)
    split = np.arange(len(x)) % 3  # a third each: training, validation, test
    dataset.write(
        tmp_path / "data.npz",
        np.zeros((len(x), 1, 3, 3), np.float32),
        np.arange(len(x)),
        {"targets": values.astype(np.float32), "x": x, "y": y, "split": split.astype(np.int8), "crs": "EPSG:32630"},
    )
    result = run(tmp_path, SURFACE=surface, POINTS=layer, DATASET=str(tmp_path / "data.npz"))
    # Brute force: the points in a cell of a training point.
    learnt = np.array(
        [
            any((row[i] == row[j]) and (column[i] == column[j]) for j in np.flatnonzero(split == 0))
            for i in range(len(x))
        ]
    )
    assert result["N_LEFT_OUT"] == learnt.sum() >= (split == 0).sum()
    kept = ~learnt
    correction, _ = pykrige_of_residuals(result, x[kept], y[kept], (values - surface_values()[row, column])[kept])
    np.testing.assert_allclose(read(result["OUTPUT"]), surface_values() + correction, rtol=1e-6, atol=1e-6)


def test_points_in_another_crs_are_reprojected(plugin, tmp_path, geotiff):
    surface = geotiff(tmp_path / "surface.tif", surface_values(), GRID, 32630)
    layer, *_ = points_layer(seed=4)
    geographic = processing.run(
        "native:reprojectlayer", {"INPUT": layer, "TARGET_CRS": "EPSG:4326", "OUTPUT": "memory:"}
    )["OUTPUT"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    original = run(tmp_path / "a", SURFACE=surface, POINTS=layer)
    moved = run(tmp_path / "b", SURFACE=surface, POINTS=geographic)
    np.testing.assert_allclose(read(moved["OUTPUT"]), read(original["OUTPUT"]), atol=1e-4)


def test_bad_inputs_are_refused_without_outputs(plugin, tmp_path, geotiff):
    surface = geotiff(tmp_path / "surface.tif", surface_values(), GRID, 32630)
    far = points_layer(n=50, seed=5)[0]
    far.dataProvider().truncate()
    feature = QgsFeature(far.fields())
    feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(0, 0)))
    feature.setAttributes([1.0])
    far.dataProvider().addFeatures([feature, QgsFeature(feature), QgsFeature(feature)])
    with pytest.raises(QgsProcessingException, match="at least 3 points"):
        run(tmp_path, SURFACE=surface, POINTS=far)
    text_field = points_layer(kind="string")[0]
    with pytest.raises(QgsProcessingException, match="not numbers"):
        run(tmp_path, SURFACE=surface, POINTS=text_field)
    geographic = geotiff(tmp_path / "geographic.tif", surface_values(), (-3.0, 0.001, 0, 40.0, 0, -0.001), 4326)
    with pytest.raises(QgsProcessingException, match="The surface is in EPSG:4326.*EPSG:32630"):
        run(tmp_path, SURFACE=geographic, POINTS=points_layer()[0])
    assert not (tmp_path / "hybrid.tif").exists() and not (tmp_path / "variance.tif").exists()


def test_the_variance_is_written_only_when_asked_for(plugin, tmp_path, geotiff):
    surface = geotiff(tmp_path / "surface.tif", surface_values(), GRID, 32630)
    sigma = geotiff(tmp_path / "sigma.tif", np.ones(SHAPE), GRID, 32630)
    layer, *_ = points_layer(seed=6)
    result = processing.run(
        "subsidence:krigeresiduals",
        {
            "SURFACE": surface,
            "SURFACE_UNCERTAINTY": sigma,
            "POINTS": layer,
            "FIELD": "value",
            "OUTPUT": str(tmp_path / "hybrid.tif"),
        },
    )
    assert read(result["OUTPUT"]).shape == SHAPE
    assert "OUTPUT_VARIANCE" not in result
    assert sorted(p.name for p in tmp_path.glob("*.tif")) == ["hybrid.tif", "sigma.tif", "surface.tif"]
