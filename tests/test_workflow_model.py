"""resources/subsidence_workflow.model3: the file is what tools/make_workflow_model.py writes, and
the whole chain runs through qgis_process.bin on the Doñana points with a small DEM."""

import csv
import json
import subprocess
import sys
from xml.etree.ElementTree import canonicalize

import numpy as np
from conftest import DONANA_ASC, REPO
from osgeo import gdal

from insar_subsidence.core.dataset import open_dataset

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


def test_the_committed_model_is_what_the_generator_writes(tmp_path):
    written = tmp_path / "model.model3"
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_workflow_model.py"), str(written)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    # Qt writes the attributes in a different order each time: compare canonical forms (sorted).
    same = canonicalize(from_file=written, strip_text=True) == canonicalize(from_file=MODEL, strip_text=True)
    assert same, "run `make workflow-model` and commit the result"


def test_the_model_runs_the_whole_chain_through_qgis_process(qgis_process, geotiff, tmp_path):
    # A 50 m DEM (a tilted plane with a hill) over the points plus more than half a patch.
    rows, columns = np.mgrid[0:400, 0:440]
    dem = 50 + 0.02 * rows + 30 * np.exp(-((rows - 160) ** 2 + (columns - 220) ** 2) / 6400.0)
    geotiff(tmp_path / "dem.tif", dem, (175000, 50, 0, 4141000, 0, -50), 25830)
    outputs = {name: str(tmp_path / file) for name, file in OUTPUTS.items()}
    arguments = {
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
        **outputs,
    }
    done = qgis_process("--json", "run", str(MODEL), "--", *(f"{key}={value}" for key, value in arguments.items()))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(done.stdout)["results"]
    assert {name: results[name] for name in OUTPUTS} == outputs
    rasters = (
        "cnn_surface",
        "cnn_uncertainty",
        "cnn_applicability",
        "kriged_surface",
        "kriging_variance",
        "hybrid_surface",
        "hybrid_variance",
    )
    for name in (
        f"{step}:{raster}"
        for step, raster in zip(["predictsurface"] * 3 + ["krige"] * 2 + ["krigeresiduals"] * 2, rasters)
    ):
        raster = gdal.Open(outputs[name])
        assert (raster.RasterXSize, raster.RasterYSize) == (440, 400)
        assert raster.GetGeoTransform() == (175000, 50, 0, 4141000, 0, -50)
        assert np.all(raster.GetRasterBand(1).ReadAsArray() > -1e30)  # no nodata, edges included
        assert (tmp_path / OUTPUTS[name]).with_suffix(".qml").exists()
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
    data = open_dataset(outputs["exportpatches:dataset"])
    assert sum(row["row"] == "point" for row in table) == (data["split"] == 2).sum() > 0
    assert {row["method"] for row in table if row["row"] == "summary"} == {
        "mean",
        "kriging",
        "regression_kriging",
        "cnn",
        "hybrid",
    }
    assert all(
        0 <= float(row["within_2_sigma"]) <= 100 for row in table if row["row"] == "summary" and row["method"] != "mean"
    )
    # The hybrid is the CNN's surface plus a correction that is not zero: it kriged residuals.
    hybrid, cnn = (
        gdal.Open(outputs[f"{step}:{name}"]).ReadAsArray()
        for step, name in (("krigeresiduals", "hybrid_surface"), ("predictsurface", "cnn_surface"))
    )
    assert np.isfinite(hybrid).all() and np.abs(hybrid - cnn).max() > 0
    variance = gdal.Open(outputs["krigeresiduals:hybrid_variance"]).ReadAsArray()
    assert variance.min() >= 0 and variance.max() > 0
    assert (
        'alt="maps of the surface, its uncertainty and its area of applicability"'
        in open(outputs["evaluate:evaluation_report"], encoding="utf-8").read()
    )
