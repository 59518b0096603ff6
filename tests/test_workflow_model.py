"""resources/subsidence_workflow.model3: the file is what tools/make_workflow_model.py writes, and
the whole chain runs through qgis_process.bin on the Doñana points with a small DEM."""

import csv
import json
import subprocess
import sys
from xml.etree.ElementTree import canonicalize

import numpy as np
import pytest
from conftest import DONANA_ASC, REPO
from osgeo import gdal, ogr
from qgis.core import Qgis, QgsProcessingModelAlgorithm

from insar_subsidence.core.dataset import open_dataset

sys.path.insert(0, str(REPO / "tools"))
from make_workflow_model import PRIMARY

MODEL = REPO / "resources" / "subsidence_workflow.model3"
WELLS = REPO / "resources" / "sample_data" / "donana" / "Piezometros.shp"
OUTPUTS = {
    "importps:ps_points": "ps.gpkg",
    "stackfactors:stack": "stack.tif",
    "exportpatches:dataset": "dataset.npz",
    "traincnn:model": "model.onnx",
    "traincnn:training_report": "training.html",
    "predictsurface:cnn_surface": "cnn.tif",
    "predictsurface:cnn_uncertainty": "cnn_sd.tif",
    "predictsurface:cnn_applicability": "cnn_aoa.tif",
    "krige:kriged_surface": "kriged.tif",
    "krige:kriging_variance": "variance.tif",
    "krige:kriging_report": "kriging.html",
    "krigeresiduals:hybrid_surface": "hybrid.tif",
    "krigeresiduals:hybrid_variance": "hybrid_variance.tif",
    "evaluate:comparison": "comparison.csv",
    "evaluate:evaluation_report": "evaluation.html",
}


def cells(x, y):
    """(rows, columns) of the 50 m DEM grid below (origin 175000, 4141000) holding points x, y."""
    return np.floor((4141000 - np.asarray(y)) / 50).astype(int), np.floor((np.asarray(x) - 175000) / 50).astype(int)


def step_of(output):
    return output.split(":")[0]


def expected_cells(stack_path, size, policy):
    """The cells whose size x size patch (rows r - size//2 ...) the policy keeps, counted directly:
    "skip" every cell of the patch valid in every band, "fill" the centre valid and at least half."""
    stack = gdal.Open(stack_path)
    valid = np.ones((stack.RasterYSize, stack.RasterXSize), bool)
    for number in range(1, stack.RasterCount + 1):
        band = stack.GetRasterBand(number)
        values = band.ReadAsArray()
        valid &= np.isfinite(values) & (values != band.GetNoDataValue())
    half = size // 2
    padded = np.pad(valid, ((half, size - half - 1), (half, size - half - 1)))  # beyond the edge: nodata
    counts = np.lib.stride_tricks.sliding_window_view(padded, (size, size)).sum(axis=(2, 3))
    if policy == "skip":
        return counts == size * size
    return valid & (counts * 2 >= size * size)


@pytest.mark.skipif(
    Qgis.QGIS_VERSION_INT // 100 != 322, reason="the committed model is written by QGIS 3.22 (make workflow-model)"
)
def test_the_committed_model_is_what_the_generator_writes(tmp_path):
    written = tmp_path / "model.model3"
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_workflow_model.py"), str(written)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    # Qt writes the attributes in a different order each time: compare canonical forms (sorted).
    same = canonicalize(from_file=written, strip_text=True) == canonicalize(from_file=MODEL, strip_text=True)
    assert same, "run `make workflow-model` and commit the result"


def test_every_step_of_the_model_passes_qgis_model_check(plugin):
    """What the model designer shows: no step red, no "Parameter … is mandatory" in the check."""
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(MODEL))
    assert model.validate() == (True, [])
    assert {child: model.validateChildAlgorithm(child) for child in model.childAlgorithms()} == {
        child: (True, []) for child in model.childAlgorithms()
    }
    names = [parameter.parameterName() for parameter in model.orderedParameters()]
    assert names[:3] == ["ps_export", "dem", "wells"]  # the data first, the kriging settings last
    assert names[-2:] == ["variogram_model", "n_neighbours"]
    assert all(model.parameterDefinition(name).help() for name in names)
    outputs = model.destinationParameterDefinitions()
    assert sorted(output.name() for output in outputs if output.defaultValue()) == sorted(PRIMARY)
    assert all(output.flags() & output.FlagOptional for output in outputs if output.name() not in PRIMARY)


def dem_and_inputs(geotiff, tmp_path, pixel=50):
    """A DEM (a tilted plane with a hill; 400 x 440 cells at 50 m) over the points plus more than
    half a patch, and the model's inputs for the Doñana points with a short training."""
    step = pixel // 50
    rows, columns = np.mgrid[0:400:step, 0:440:step]
    dem = 50 + 0.02 * rows + 30 * np.exp(-((rows - 160) ** 2 + (columns - 220) ** 2) / 6400.0)
    geotiff(tmp_path / "dem.tif", dem, (175000, pixel, 0, 4141000, 0, -pixel), 25830)
    return {
        "ps_export": DONANA_ASC,
        "start_date": "2016-01-01",
        "end_date": "2019-12-31",
        "units": 2,
        "los_to_vertical": "true",
        "dem": tmp_path / "dem.tif",
        "wells": WELLS,
        "patch_size": 22,
        "epochs": 2,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "ensemble": 2,
        "variogram_model": 0,
        "n_neighbours": 16,
    }


@pytest.mark.heavy
def test_naming_only_the_primary_outputs_writes_them_and_no_other(qgis_process, geotiff, tmp_path):
    outputs = {name: str(tmp_path / "out" / OUTPUTS[name]) for name in PRIMARY}
    (tmp_path / "out").mkdir()
    arguments = {**dem_and_inputs(geotiff, tmp_path, pixel=100), "epochs": 1, **outputs}
    done = qgis_process("--json", "run", str(MODEL), "--", *(f"{key}={value}" for key, value in arguments.items()))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(done.stdout)["results"]
    assert {name: results[name] for name in PRIMARY} == outputs
    # Beside each raster its style (.qml) and GDAL's statistics (.aux.xml).
    written = {path.name for path in (tmp_path / "out").iterdir() if not path.name.endswith((".qml", ".aux.xml"))}
    assert sorted(written) == sorted(OUTPUTS[name] for name in PRIMARY)


@pytest.mark.heavy
def test_the_model_runs_the_whole_chain_through_qgis_process(qgis_process, geotiff, tmp_path):
    outputs = {name: str(tmp_path / file) for name, file in OUTPUTS.items()}
    arguments = {**dem_and_inputs(geotiff, tmp_path), **outputs}
    done = qgis_process("--json", "run", str(MODEL), "--", *(f"{key}={value}" for key, value in arguments.items()))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(done.stdout)["results"]
    assert {name: results[name] for name in OUTPUTS} == outputs
    # Kriging maps every cell; the CNN and what builds on it leave out the cells whose patch the
    # dataset's nodata policy would have dropped in training (beyond the stack's edge is nodata).
    data = open_dataset(outputs["exportpatches:dataset"])
    predicted = expected_cells(outputs["stackfactors:stack"], int(data["patch_size"]), str(data["nodata_policy"]))
    assert 0.5 < predicted.mean() < 1
    maps = {}
    for name in (
        "predictsurface:cnn_surface",
        "predictsurface:cnn_uncertainty",
        "predictsurface:cnn_applicability",
        "krige:kriged_surface",
        "krige:kriging_variance",
        "krigeresiduals:hybrid_surface",
        "krigeresiduals:hybrid_variance",
    ):
        raster = gdal.Open(outputs[name])
        assert (raster.RasterXSize, raster.RasterYSize) == (440, 400)
        assert raster.GetGeoTransform() == (175000, 50, 0, 4141000, 0, -50)
        band = raster.GetRasterBand(1)
        values = band.ReadAsArray().astype(float)
        values[values == band.GetNoDataValue()] = np.nan
        expected = np.ones_like(predicted) if name.startswith("krige:") else predicted
        np.testing.assert_array_equal(np.isfinite(values), expected, err_msg=name)
        assert (tmp_path / OUTPUTS[name]).with_suffix(".qml").exists()
        maps[name] = values
    stack = gdal.Open(outputs["stackfactors:stack"])
    assert sorted(stack.GetRasterBand(b).GetDescription() for b in range(1, 6)) == [
        "OUTPUT",
        "SLOPE",
        "SPI",
        "TWI",
        "dem",
    ]
    with open(outputs["evaluate:comparison"], newline="") as file:
        table = list(csv.DictReader(file))
    assert sum(row["row"] == "point" for row in table) == (data["split"] == 2).sum() > 0
    assert {row["method"] for row in table if row["row"] == "summary"} == {
        "mean",
        "kriging",
        "regression_kriging",
        "cnn",
        "hybrid",
    }
    # Each summary is numpy's on the point rows: RMSE, and the share of errors within ±1σ and ±2σ.
    points = [row for row in table if row["row"] == "point"]
    observed = np.array([float(row["observed"]) for row in points])
    sigmas = {"kriging": np.sqrt([float(row["kriging_variance"]) for row in points])}
    sigmas.update(
        {
            method: np.array([float(row[f"{method}_sigma"]) for row in points])
            for method in ("regression_kriging", "cnn", "hybrid")
        }
    )
    summary = {row["method"]: row for row in table if row["row"] == "summary"}
    for method in ("mean", "kriging", "regression_kriging", "cnn", "hybrid"):
        error = np.array([float(row[method]) for row in points]) - observed
        assert float(summary[method]["rmse"]) == pytest.approx(np.sqrt(np.mean(error**2)), rel=1e-6), method
        for k in (1, 2):
            if method in sigmas:
                expected = 100 * np.mean(np.abs(error) <= k * sigmas[method])
                assert float(summary[method][f"within_{k}_sigma"]) == pytest.approx(expected), method
    # The hybrid is the CNN's surface plus the kriged residuals of the points outside the training
    # patches' cells: at those points it is closer to them than the CNN, and its variance lower there.
    hybrid, cnn, variance = (
        maps[name]
        for name in ("krigeresiduals:hybrid_surface", "predictsurface:cnn_surface", "krigeresiduals:hybrid_variance")
    )
    training_cells = set(zip(*cells(data["x"][data["split"] == 0], data["y"][data["split"] == 0])))
    source = ogr.Open(outputs["importps:ps_points"])
    ps_points = [
        (*feature.GetGeometryRef().GetPoint_2D(), feature.GetField("displacement")) for feature in source.GetLayer()
    ]
    x, y, values = np.array(ps_points).T
    rows, columns = cells(x, y)
    kriged = np.array([cell not in training_cells and predicted[cell] for cell in zip(rows, columns)]) & (
        cnn[rows, columns] > -1e30
    )
    rows, columns, values = rows[kriged], columns[kriged], values[kriged]
    assert len(values) > 50
    assert np.mean((values - hybrid[rows, columns]) ** 2) < 0.9 * np.mean((values - cnn[rows, columns]) ** 2)
    variance = np.where(variance > -1e30, variance, np.nan)  # nodata where the CNN's surface has none
    assert np.nanmin(variance) >= 0 and np.mean(variance[rows, columns]) < np.nanmean(variance)
    assert (
        'alt="maps of the surface, its uncertainty and its area of applicability"'
        in open(outputs["evaluate:evaluation_report"], encoding="utf-8").read()
    )
