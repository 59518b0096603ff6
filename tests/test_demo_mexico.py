"""tools/demo_mexico.sh on the bundled Mexico City data, reduced (an ensemble of 2, 3 epochs): the
chain runs through qgis_process, writes every output, and the gap scores it prints equal those
recomputed here from the output rasters and the velocity raster, with QGIS's own coordinate
transforms and raster sampling instead of tools/gap_scores.py's GDAL reading."""

import re
import subprocess

import numpy as np
import pytest
from conftest import REPO, qgis_process_environment
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

DATA = REPO / "resources" / "sample_data" / "mexico_city"
MAPS = {"CNN": "cnn_surface.tif", "ordinary kriging": "kriged_surface.tif", "hybrid": "hybrid_surface.tif"}
OUTPUTS = (
    "ps_points.gpkg",
    "driver_stack.tif",
    "dataset.npz",
    "cnn_model.onnx",
    "training_report.html",
    "cnn_uncertainty.tif",
    "cnn_applicability.tif",
    "kriging_variance.tif",
    "hybrid_variance.tif",
    "comparison.csv",
    "evaluation_report.html",
    "gap_scores.csv",
    "surfaces.png",
    *MAPS.values(),
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(the output folder, what the demo printed)."""
    folder = tmp_path_factory.mktemp("mexico")
    profile = folder / "profile"
    profile.mkdir()
    env = {**qgis_process_environment(profile), "ENSEMBLE": "2", "EPOCHS": "3"}
    done = subprocess.run(
        ["bash", "tools/demo_mexico.sh", "qgis_process.bin", str(folder / "out")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder / "out", done.stdout


@pytest.mark.heavy
def test_the_reduced_demo_writes_every_output(demo):
    folder, printed = demo
    assert [name for name in OUTPUTS if not (folder / name).exists()] == []
    assert "1574 points written" in printed and "An ensemble of 2 CNNs" in printed


def printed_scores(printed):
    """{method: (n, RMSE, MAE, bias, RMSE far from the PS)} from the demo's gap table, and the
    number of far cells its header gives."""
    table = printed[printed.index("RMSE >3 cells") :]
    scores = {}
    for method in ("PS mean (null model)", *MAPS):
        match = re.search(rf"^{re.escape(method)}\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", table, re.MULTILINE)
        scores[method] = (int(match[1]), *(float(value) for value in match.groups()[1:]))
    return scores, int(re.match(r"RMSE >3 cells \((\d+)\)", table)[1])


def test_printed_gap_scores_equal_a_recomputation_from_the_rasters(demo):
    folder, printed = demo
    truth = QgsRasterLayer(str(DATA / "velocity_vert_mmyr_approx.tif"))
    provider, extent = truth.dataProvider(), truth.extent()
    width, height = truth.rasterUnitsPerPixelX(), truth.rasterUnitsPerPixelY()
    block = provider.block(1, extent, truth.width(), truth.height())
    values = np.array(
        [
            [np.nan if block.isNoData(r, c) else block.value(r, c) for c in range(truth.width())]
            for r in range(truth.height())
        ]
    )
    # The cells holding a PS point (the points are in the truth's CRS, EPSG:4326).
    has_ps = np.zeros(values.shape, bool)
    ps = QgsVectorLayer(str(folder / "ps_points.gpkg"), "ps", "ogr")
    ps_values = []
    for feature in ps.getFeatures():
        point = feature.geometry().asPoint()
        has_ps[int((extent.yMaximum() - point.y()) // height), int((point.x() - extent.xMinimum()) // width)] = True
        ps_values.append(feature["displacement"])
    rows, columns = np.nonzero(np.isfinite(values) & ~has_ps)
    ps_rows, ps_columns = np.nonzero(has_ps)
    nearest = np.sqrt(np.min((rows[:, None] - ps_rows) ** 2 + (columns[:, None] - ps_columns) ** 2, axis=1))
    centres = [
        QgsPointXY(extent.xMinimum() + (c + 0.5) * width, extent.yMaximum() - (r + 0.5) * height)
        for r, c in zip(rows, columns)
    ]
    predicted = {"PS mean (null model)": np.full(len(rows), np.mean(ps_values))}
    for method, name in MAPS.items():
        layer = QgsRasterLayer(str(folder / name))
        to_map = QgsCoordinateTransform(truth.crs(), layer.crs(), QgsProject.instance())
        assert layer.crs() == QgsCoordinateReferenceSystem("EPSG:32614")
        samples = [layer.dataProvider().sample(to_map.transform(centre), 1) for centre in centres]
        predicted[method] = np.array([value if found else np.nan for value, found in samples])
    common = np.all([np.isfinite(p) for p in predicted.values()], axis=0)
    expected, truth_at_gaps, far = {}, values[rows, columns][common], nearest[common] > 3
    for method, values_at_gaps in predicted.items():
        error = values_at_gaps[common] - truth_at_gaps
        expected[method] = (
            int(common.sum()),
            np.sqrt(np.mean(error**2)),
            np.mean(np.abs(error)),
            np.mean(error),
            np.sqrt(np.mean(error[far] ** 2)),
        )
    assert len(rows) == 4324  # every valid cell that is not a PS cell
    scores, n_far = printed_scores(printed)
    assert n_far == far.sum() > 100
    # Kriging maps every gap cell the CNN maps: the cells left out are those the CNN (and the hybrid
    # on it) leaves empty along the stack's edge, where training would have dropped the patch.
    assert np.isfinite(predicted["ordinary kriging"])[np.isfinite(predicted["CNN"])].all()
    np.testing.assert_array_equal(common, np.isfinite(predicted["CNN"]))
    assert common.sum() > 0.7 * len(rows)
    for method, (n, *numbers) in scores.items():
        assert n == expected[method][0]
        np.testing.assert_allclose(numbers, expected[method][1:], atol=0.006, err_msg=method)
