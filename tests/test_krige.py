"""subsidence:krige end to end: real PS points in, GeoTIFFs out, checked with GDAL and PyKrige."""

import html
import json

import numpy as np
import pytest
from osgeo import gdal, ogr
from pykrige.ok import OrdinaryKriging as PyKrige
from qgis import processing
from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsProcessingException, QgsVectorLayer

from insar_subsidence.algorithms.layers import NODATA


def ogr_points(path, field):
    """The points and values read straight from the file with OGR (not through the plugin)."""
    source = ogr.Open(str(path))  # must outlive its layer
    xs, ys, values = [], [], []
    for feature in source.GetLayer():
        geometry = feature.GetGeometryRef()
        for i in range(max(geometry.GetGeometryCount(), 1)):
            point = geometry.GetGeometryRef(i) if geometry.GetGeometryCount() else geometry
            xs.append(point.GetX())
            ys.append(point.GetY())
            values.append(feature.GetField(field))
    return np.array(xs), np.array(ys), np.array(values)


def merged_by_location(x, y, z):
    groups = {}
    for key, value in zip(zip(x, y), z):
        groups.setdefault(key, []).append(value)
    keys = list(groups)
    return np.array([k[0] for k in keys]), np.array([k[1] for k in keys]), np.array([np.mean(groups[k]) for k in keys])


def read(path):
    dataset = gdal.Open(str(path))
    band = dataset.GetRasterBand(1)
    return band.ReadAsArray().astype(float), dataset.GetGeoTransform(), band.GetNoDataValue(), band.GetDescription()


def centres(geotransform, shape):
    left, width, _, top, _, height = geotransform
    return left + (np.arange(shape[1]) + 0.5) * width, top + (np.arange(shape[0]) + 0.5) * height


def pykrige_leave_one_out(x, y, z, model, parameters, neighbours):
    """Mean error, RMSE, mean standardised error and mean squared standardised error of each point
    kriged by PyKrige from the others (error = observed - predicted)."""
    errors, sigmas = [], []
    for left_out in range(len(z)):
        others = np.arange(len(z)) != left_out
        kriging = PyKrige(x[others], y[others], z[others], variogram_model=model, variogram_parameters=parameters)
        value, variance = kriging.execute(
            "points", x[left_out : left_out + 1], y[left_out : left_out + 1], backend="C", n_closest_points=neighbours
        )
        errors.append(z[left_out] - value[0])
        sigmas.append(np.sqrt(variance[0]))
    errors, standardised = np.array(errors), np.array(errors) / np.array(sigmas)
    return [errors.mean(), np.sqrt(np.mean(errors**2)), standardised.mean(), np.mean(standardised**2)]


def krige(tmp_path, **parameters):
    defaults = {"OUTPUT": str(tmp_path / "kriged.tif"), "OUTPUT_VARIANCE": str(tmp_path / "variance.tif")}
    return processing.run("subsidence:krige", {**defaults, **parameters})


def test_real_points_match_pykrige_on_the_written_grid(plugin, donana, tmp_path):
    path, extent = donana
    results = krige(tmp_path, POINTS=str(path), FIELD="Vel", EXTENT=extent, PIXEL_SIZE=250, N_NEIGHBOURS=16)
    values, geotransform, nodata, description = read(results["OUTPUT"])
    variances, variance_geotransform, _, _ = read(results["OUTPUT_VARIANCE"])
    assert values.shape == (72, 80) and geotransform == (176000, 250, 0, 4140000, 0, -250)
    assert variance_geotransform == geotransform
    assert nodata == pytest.approx(NODATA) and description == "kriged Vel"

    x, y, z = merged_by_location(*ogr_points(path, "Vel"))
    assert results["N_POINTS"] == len(z) == 442  # the file has 573 points at 442 locations
    parameters = json.loads(results["VARIOGRAM_PARAMETERS"])
    model = parameters.pop("model")
    assert (parameters["sill"], parameters["range"], parameters["nugget"]) == (
        results["SILL"],
        results["RANGE"],
        results["NUGGET"],
    )
    gx, gy = centres(geotransform, values.shape)
    reference = PyKrige(x, y, z, variogram_model=model, variogram_parameters=parameters)
    expected, expected_variance = reference.execute("grid", gx, gy, backend="C", n_closest_points=16)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6 * np.ptp(z))
    np.testing.assert_allclose(variances, expected_variance, rtol=1e-5, atol=1e-9)
    assert variances.min() >= 0
    expected_loo = pykrige_leave_one_out(x, y, z, model, parameters, 16)
    assert [results[k] for k in ("LOO_ME", "LOO_RMSE", "LOO_MSE", "LOO_MSSE")] == pytest.approx(expected_loo, rel=1e-5)
    assert 0 < results["FIT_R2"] <= 1  # the fit explains part of the variogram, not nothing


def test_reference_grid_is_followed(plugin, donana, tmp_path, geotiff):
    path, _ = donana
    reference = geotiff(tmp_path / "reference.tif", np.zeros((20, 30)), (180000, 300, 0, 4135000, 0, -400), 25830)
    results = krige(tmp_path, POINTS=str(path), FIELD="Vel", REFERENCE=reference)
    values, geotransform, _, _ = read(results["OUTPUT"])
    assert values.shape == (20, 30) and geotransform == (180000, 300, 0, 4135000, 0, -400)


def test_points_in_another_crs_are_reprojected(plugin, donana, tmp_path):
    path, extent = donana
    geographic = processing.run(
        "native:reprojectlayer", {"INPUT": str(path), "TARGET_CRS": "EPSG:4326", "OUTPUT": str(tmp_path / "wgs84.gpkg")}
    )["OUTPUT"]
    common = {
        "FIELD": "Vel",
        "EXTENT": extent,
        "PIXEL_SIZE": 500,
        "CRS": "EPSG:25830",
        "NUGGET": 0.01,
        "SILL": 0.1,
        "RANGE": 3000,
    }
    for folder in ("original", "reprojected"):
        (tmp_path / folder).mkdir()
    original = krige(tmp_path / "original", POINTS=str(path), **common)
    reprojected = krige(tmp_path / "reprojected", POINTS=geographic, **common)
    np.testing.assert_allclose(read(reprojected["OUTPUT"])[0], read(original["OUTPUT"])[0], atol=1e-4)


def test_manual_variogram_is_used_as_given(plugin, donana, tmp_path):
    path, extent = donana
    results = krige(
        tmp_path,
        POINTS=str(path),
        FIELD="Vel",
        EXTENT=extent,
        PIXEL_SIZE=2000,
        VARIOGRAM_MODEL=1,
        SILL=0.2,
        RANGE=4000,
        NUGGET=0.01,
    )
    assert json.loads(results["VARIOGRAM_PARAMETERS"]) == pytest.approx(
        {"model": "exponential", "sill": 0.2, "range": 4000, "nugget": 0.01}
    )


def test_report_has_the_variogram_plot_and_cross_validation(plugin, donana, tmp_path):
    path, extent = donana
    results = krige(
        tmp_path,
        POINTS=str(path),
        FIELD="Vel",
        EXTENT=extent,
        PIXEL_SIZE=2000,
        OUTPUT_REPORT=str(tmp_path / "report.html"),
    )
    page = (tmp_path / "report.html").read_text()
    assert results["OUTPUT_REPORT"] == str(tmp_path / "report.html")
    assert "data:image/png;base64," in page and "MSSE" in page


def memory_points(values, crs="EPSG:25830"):
    layer = QgsVectorLayer(f"Point?crs={crs}&field=value:double", "points", "memory")
    rng = np.random.default_rng(0)
    features = []
    for value in values:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(*rng.uniform(0, 10000, 2))))
        feature.setAttributes([None if value is None else float(value)])  # numpy floats are refused
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    return layer


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"EXTENT": "0,10000,0,10000 [EPSG:25830]", "PIXEL_SIZE": 100, "CRS": "EPSG:4326"}, "geographic"),
        ({"EXTENT": "0,10000,0,10000 [EPSG:25830]", "PIXEL_SIZE": 0.0001}, "wrong units|units of the grid"),
        (
            {"EXTENT": "0,10000,0,10000 [EPSG:25830]", "PIXEL_SIZE": 100, "VARIOGRAM_MODEL": 3, "RANGE": 100},
            "no parameter range",
        ),
        (
            {"EXTENT": "0,10000,0,10000 [EPSG:25830]", "PIXEL_SIZE": 100, "SILL": 0, "RANGE": 500, "NUGGET": 0},
            "zero at every distance",
        ),
    ],
)
def test_bad_settings_are_clear_errors(plugin, tmp_path, parameters, message, log_feedback):
    with pytest.raises(QgsProcessingException, match=message):
        run_and_capture(tmp_path, memory_points(np.arange(20.0)), parameters, log_feedback())


@pytest.mark.parametrize("pixel_size", [None, 250.0], ids=["no pixel size", "pixel size"])
def test_without_a_grid_the_points_extent_plus_a_margin_is_kriged(plugin, tmp_path, log_feedback, pixel_size):
    """Issue 23: PIXEL_SIZE without REFERENCE or EXTENT was refused; now neither is needed."""
    layer = memory_points(np.arange(20.0))
    points = np.array([[f.geometry().asPoint().x(), f.geometry().asPoint().y()] for f in layer.getFeatures()])
    (xmin, ymin), (xmax, ymax) = points.min(axis=0), points.max(axis=0)
    margin = 0.05 * max(xmax - xmin, ymax - ymin)
    # The default: the round size (1, 2 or 5 x 10^k) giving at most 500 cells along the longer side.
    longer = max(xmax - xmin, ymax - ymin) + 2 * margin
    expected = pixel_size or min(s * 10.0**k for k in range(-3, 6) for s in (1, 2, 5) if longer / (s * 10.0**k) <= 500)
    feedback = log_feedback()
    parameters = {} if pixel_size is None else {"PIXEL_SIZE": pixel_size}
    run_and_capture(tmp_path, layer, parameters, feedback)

    raster = gdal.Open(str(tmp_path / "k.tif"))
    left, width, _, top, _, height = raster.GetGeoTransform()
    assert (left, top, width, height) == pytest.approx((xmin - margin, ymax + margin, expected, -expected))
    assert raster.RasterXSize == np.ceil((xmax - xmin + 2 * margin) / expected - 1e-9)
    assert raster.RasterYSize == np.ceil((ymax - ymin + 2 * margin) / expected - 1e-9)
    assert np.isfinite(raster.ReadAsArray()).all()
    assert "Grid: the points' extent plus 5% of its longer side" in feedback.text


def test_constant_values_are_a_clear_error(plugin, tmp_path, log_feedback):
    with pytest.raises(QgsProcessingException, match="values are equal"):
        run_and_capture(
            tmp_path,
            memory_points([3.0] * 20),
            {"EXTENT": "0,10000,0,10000 [EPSG:25830]", "PIXEL_SIZE": 500},
            log_feedback(),
        )


def test_null_values_are_skipped_and_counted(plugin, tmp_path, log_feedback):
    results, log = run_and_capture(
        tmp_path,
        memory_points([None, float("nan"), *np.arange(30.0)]),
        {"EXTENT": "0,10000,0,10000 [EPSG:25830]", "PIXEL_SIZE": 500},
        log_feedback(),
    )
    assert results["N_POINTS"] == 30
    assert "2 skipped (no value)" in log


def run_and_capture(tmp_path, layer, parameters, feedback):
    defaults = {
        "POINTS": layer,
        "FIELD": "value",
        "OUTPUT": str(tmp_path / "k.tif"),
        "OUTPUT_VARIANCE": str(tmp_path / "v.tif"),
    }
    try:
        results = processing.run("subsidence:krige", {**defaults, **parameters}, feedback=feedback)
    except QgsProcessingException as error:
        raise QgsProcessingException(feedback.text + str(error)) from error
    return results, feedback.text


def test_white_noise_warns_that_the_nugget_dominates(plugin, tmp_path, log_feedback):
    noise = np.random.default_rng(3).standard_normal(300)
    _, log = run_and_capture(
        tmp_path, memory_points(noise), {"EXTENT": "0,10000,0,10000 [EPSG:25830]", "PIXEL_SIZE": 1000}, log_feedback()
    )
    assert "WARNING The nugget is" in log


def test_clustered_real_points_warn_about_range_and_variance(plugin, donana, tmp_path, log_feedback):
    # PS points cluster in towns: the spherical fit levels off far beyond the lags, and
    # cross-validation shows the variance understating the errors. The user must be told.
    path, extent = donana
    results, log = run_and_capture(
        tmp_path, str(path), {"FIELD": "Vel", "EXTENT": extent, "PIXEL_SIZE": 2000}, log_feedback()
    )
    assert "WARNING The fitted range" in log and "does not level off" in log
    assert results["LOO_MSSE"] > 2 and "WARNING Leave-one-out MSSE" in log


def test_cancel_leaves_no_output(plugin, donana, tmp_path, log_feedback):
    path, extent = donana
    feedback = log_feedback(cancel_at=80)  # during the grid, the last step
    with pytest.raises(QgsProcessingException, match="Canceled"):
        run_and_capture(tmp_path, str(path), {"FIELD": "Vel", "EXTENT": extent, "PIXEL_SIZE": 20}, feedback)
    assert not (tmp_path / "k.tif").exists() and not (tmp_path / "v.tif").exists()


def test_the_variance_is_written_only_when_asked_for(plugin, donana, tmp_path):
    path, extent = donana
    results = processing.run(
        "subsidence:krige",
        {"POINTS": str(path), "FIELD": "Vel", "EXTENT": extent, "PIXEL_SIZE": 2000, "OUTPUT": str(tmp_path / "k.tif")},
    )
    assert read(results["OUTPUT"])[0].shape == (9, 10)
    assert "OUTPUT_VARIANCE" not in results and [p.name for p in tmp_path.glob("*.tif")] == ["k.tif"]


def run_on(tmp_path, x, y, z, feedback, **parameters):
    """krige of memory points at x, y (EPSG:32630) over their extent, 20 x 20 cells."""
    from conftest import displacement_points

    extent = f"{x.min()},{x.max()},{y.min()},{y.max()} [EPSG:32630]"
    size = float(max(np.ptp(x), np.ptp(y)) / 20)
    settings = {"FIELD": "displacement", "EXTENT": extent, "PIXEL_SIZE": size, **parameters}
    return run_and_capture(tmp_path, displacement_points(x, y, z), settings, feedback)


def test_near_duplicates_stay_within_the_data_and_the_log_says_how(plugin, tmp_path, log_feedback):
    # Issue 21: two points 1 cm apart (6.4 and 11.4), gaussian, nugget 0: PyKrige gives 1337 3 m away.
    rng = np.random.default_rng(0)
    x = np.r_[rng.uniform(0, 1000, 40), 500.0, 500.01] + 500000
    y = np.r_[rng.uniform(0, 1000, 40), 500.0, 500.0] + 4100000
    z = np.r_[10 + 3 * np.sin(x[:40] / 300) + np.cos(y[:40] / 250), 6.4, 11.4]
    gaussian = {"VARIOGRAM_MODEL": 2, "SILL": 4.0, "RANGE": 400.0, "NUGGET": 0.0}
    results, log = run_on(tmp_path, x, y, z, log_feedback(), **gaussian)
    surface, geotransform, *_ = read(results["OUTPUT"])
    column, row = (
        int((500500.005 - geotransform[0]) / geotransform[1]),
        int((4100500 - geotransform[3]) / geotransform[5]),
    )
    assert z.min() <= surface[row, column] <= z.max()
    margin = 0.1 * np.ptp(z)  # a gaussian variogram overshoots a little beyond the points
    assert z.min() - margin <= surface.min() and surface.max() <= z.max() + margin
    assert "cells were kriged with the nugget raised" in log and "points cross-validated were kriged" in log
    assert abs(results["LOO_ME"]) < 1 and results["LOO_RMSE"] < np.ptp(z)


def test_an_exact_duplicate_cluster_is_merged_and_counted(plugin, tmp_path, log_feedback):
    rng = np.random.default_rng(4)
    x, y = rng.uniform(0, 2000, 30) + 500000, rng.uniform(0, 2000, 30) + 4100000
    z = np.sin(x / 400) + rng.normal(0, 0.1, 30)
    cluster = np.array([1.0, 2.0, 3.0, 4.0])  # four more scatterers where point 0 is
    x, y, z = np.r_[x, [x[0]] * 4], np.r_[y, [y[0]] * 4], np.r_[z, cluster]
    results, log = run_on(tmp_path, x, y, z, log_feedback())
    assert results["N_POINTS"] == 30
    assert "34 points read from 'displacement'; 4 merged into coincident ones" in log


def test_cross_validation_is_subsampled_or_skipped(plugin, tmp_path, log_feedback):
    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 2000, 60) + 500000, rng.uniform(0, 2000, 60) + 4100000
    z = np.sin(x / 400) + np.cos(y / 500) + rng.normal(0, 0.1, 60)
    results, log = run_on(tmp_path, x, y, z, log_feedback(), MAX_LOO_POINTS=10)
    assert "Leave-one-out on 10 of 60 points" in log and np.isfinite(results["LOO_RMSE"])
    results, log = run_on(tmp_path, x, y, z, log_feedback(), MAX_LOO_POINTS=0, OUTPUT_REPORT=str(tmp_path / "r.html"))
    assert "Leave-one-out cross-validation skipped" in log
    assert all(np.isnan(results[key]) for key in ("LOO_ME", "LOO_RMSE", "LOO_MSE", "LOO_MSSE"))
    assert "Skipped ('Points cross-validated' is 0)" in html.unescape((tmp_path / "r.html").read_text())
