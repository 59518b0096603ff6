"""Map quality in the PS gaps with default settings, on a synthetic basin whose truth is known on
every cell (tests/synthetic.py: drawdown around wells times clay thickness, more on fields, a
smooth residual; PS dense on built-up land, sparse elsewhere).

The chain runs through qgis_process as a user runs it: terrain factors of the DEM (slope, aspect,
SPI), the stack (aspect east/north, land use one-hot), patches with the default spatial split,
`traincnn` with default settings (ENSEMBLE=3, to see every member), `predictsurface`, and
`krige` of the same training and validation points onto the same grid. Gradient boosting
(scikit-learn's HistGradientBoostingRegressor, defaults) learns from the same points' drivers
(each band's centre value and patch mean). All three are scored on the gap cells: those more than
GAP_CELLS cells from every PS point. Targets: CNN <= 0.6 x kriging, CNN <= 1.1 x gradient
boosting, training R² >= 0.8, every member's best epoch after its warm-up. For reference, one
network trained with the paper's recipe (RECIPE=1: Adam 1e-4, batch 128, 150 epochs) on the same
dataset."""

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr
from scipy.ndimage import distance_transform_edt, uniform_filter

import qgis_run

sys.path.insert(0, str(qgis_run.REPO / "tests"))
sys.path.insert(0, str(qgis_run.REPO / "build" / "pluginpath"))
from synthetic import subsidence_scenario

from insar_subsidence.core.dataset import open_dataset
from insar_subsidence.core.patches import centre_and_mean
from insar_subsidence.models.export import read_metadata

CELL, EPSG, LEFT, TOP = 25.0, 32614, 480000.0, 2150000.0  # CELL: the scenario's
GAP_CELLS = 3
ENSEMBLE = 3
SEEDS = (0, 1)  # two scenarios: one dataset is no measure


def write_raster(path, values, name):
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), values.shape[1], values.shape[0], 1, gdal.GDT_Float32)
    dataset.SetGeoTransform((LEFT, CELL, 0.0, TOP, 0.0, -CELL))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    dataset.SetProjection(srs.ExportToWkt())
    band = dataset.GetRasterBand(1)
    band.SetDescription(name)
    band.WriteArray(values)
    dataset = None


def write_points(path, x, y, values):
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer("ps", srs, ogr.wkbPoint)
    layer.CreateField(ogr.FieldDefn("displacement", ogr.OFTReal))
    for xi, yi, value in zip(x, y, values):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("displacement", float(value))
        feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({xi} {yi})"))
        layer.CreateFeature(feature)
    source = None


def read(path):
    dataset = gdal.Open(str(path))
    values = dataset.ReadAsArray().astype(np.float64)
    for index in range(dataset.RasterCount):
        band = values[index] if values.ndim == 3 else values
        nodata = dataset.GetRasterBand(index + 1).GetNoDataValue()
        if nodata is not None:
            band[band == nodata] = np.nan
    return values


def prepare(folder, seed, env, noise=1.0):
    """The scenario's rasters and points (`noise`: the PS values' noise, mm), the stack and the
    dataset, as a user makes them."""
    scenario = subsidence_scenario(seed=seed, noise=noise)
    for name in ("dem", "clay", "distance", "landuse"):
        write_raster(folder / f"{name}.tif", scenario[name], name)
    rng = np.random.default_rng(seed)
    rows, columns = scenario["ps_rows"], scenario["ps_columns"]
    x = LEFT + (columns + rng.uniform(0.1, 0.9, len(columns))) * CELL
    y = TOP - (rows + rng.uniform(0.1, 0.9, len(rows))) * CELL
    write_points(folder / "ps.gpkg", x, y, scenario["ps_value"])
    qgis_run.run(
        "subsidence:terrainfactors",
        {
            "INPUT": folder / "dem.tif",
            "SLOPE": folder / "slope.tif",
            "ASPECT": folder / "aspect.tif",
            "SPI": folder / "spi.tif",
        },
        env,
    )
    drivers = [folder / f"{name}.tif" for name in ("dem", "slope", "aspect", "spi", "clay", "distance", "landuse")]
    inputs = {"INPUTS": drivers, "CATEGORICAL": folder / "landuse.tif", "OUTPUT": folder / "stack.tif"}
    qgis_run.run("subsidence:stackfactors", inputs, env)
    qgis_run.run(
        "subsidence:exportpatches",
        {
            "POINTS": folder / "ps.gpkg",
            "FIELD": "displacement",
            "FACTORS": folder / "stack.tif",
            "OUTPUT": folder / "dataset.npz",
        },
        env,
    )
    return scenario


def gap_cells(scenario):
    """True on the cells more than GAP_CELLS cells from every PS point."""
    has_point = np.zeros(scenario["truth"].shape, bool)
    has_point[scenario["ps_rows"], scenario["ps_columns"]] = True
    return distance_transform_edt(~has_point) > GAP_CELLS


def features(stack, size):
    """Per cell, each band's value and its mean over the cell's patch (mirrored at the edges, as
    predictsurface does): (cells, 2 x bands). Patch rows r - P//2 … r - P//2 + P - 1 are
    scipy's window of an even size P."""
    means = [uniform_filter(band, size, mode="mirror") for band in stack]
    return np.stack([*stack, *means]).reshape(2 * len(stack), -1).T


def boosting(data, stack):
    """Gradient boosting of the training and validation points' targets on their drivers,
    predicting every cell."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    known = np.flatnonzero(data["split"] != 2)
    model = HistGradientBoostingRegressor(random_state=0).fit(
        centre_and_mean(data["patches"][known]), data["targets"][known]
    )
    return model.predict(features(stack, int(data["patch_size"]))).reshape(stack.shape[1:])


def rmse(predicted, truth, where):
    return float(np.sqrt(np.nanmean((predicted[where] - truth[where]) ** 2)))


def one_scenario(seed, env):
    folder = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    try:
        scenario = prepare(folder, seed, env)
        data = open_dataset(folder / "dataset.npz")
        split = data["split"]
        known = split != 2
        write_points(folder / "known.gpkg", data["x"][known], data["y"][known], data["targets"][known])
        seconds, _, _ = qgis_run.run(
            "subsidence:traincnn",
            {"DATASET": folder / "dataset.npz", "ENSEMBLE": ENSEMBLE, "OUTPUT_MODEL": folder / "model.onnx"},
            env,
        )
        qgis_run.run(
            "subsidence:predictsurface",
            {"MODEL": folder / "model.onnx", "FACTORS": folder / "stack.tif", "OUTPUT": folder / "cnn.tif"},
            env,
        )
        paper_seconds, _, _ = qgis_run.run(
            "subsidence:traincnn",
            {"DATASET": folder / "dataset.npz", "RECIPE": 1, "OUTPUT_MODEL": folder / "paper.onnx"},
            env,
        )
        qgis_run.run(
            "subsidence:predictsurface",
            {"MODEL": folder / "paper.onnx", "FACTORS": folder / "stack.tif", "OUTPUT": folder / "paper.tif"},
            env,
        )
        qgis_run.run(
            "subsidence:krige",
            {
                "POINTS": folder / "known.gpkg",
                "FIELD": "displacement",
                "REFERENCE": folder / "stack.tif",
                "OUTPUT": folder / "kriged.tif",
                "OUTPUT_VARIANCE": folder / "variance.tif",
            },
            env,
        )
        stack = read(folder / "stack.tif")
        gaps, truth = gap_cells(scenario), scenario["truth"]
        figures = {
            "cnn": rmse(read(folder / "cnn.tif"), truth, gaps),
            "paper": rmse(read(folder / "paper.tif"), truth, gaps),
            "kriging": rmse(read(folder / "kriged.tif"), truth, gaps),
            "boosting": rmse(boosting(data, stack), truth, gaps),
            "mean": rmse(np.full(truth.shape, data["targets"][split == 0].mean()), truth, gaps),
        }
        metadata = read_metadata(str(folder / "model.onnx"))
        training = json.loads(metadata["training"])
        history, warmup = training["history"], training["plan"]["warmup_epochs"]
        best = [
            min((entry for entry in history if entry["member"] == member), key=lambda entry: entry["val_loss"])["epoch"]
            for member in range(1, ENSEMBLE + 1)
        ]
        r2 = json.loads(metadata["metrics"])["train"]["r2"]
        paper_r2 = json.loads(read_metadata(str(folder / "paper.onnx"))["metrics"])["train"]["r2"]
        print(
            f"scenario {seed}: {len(split)} patches ({(split == 0).sum()} train / {(split == 1).sum()} val / "
            f"{(split == 2).sum()} test), "
            f"{int(gaps.sum())} gap cells; {training['plan']['epochs']} epochs planned, warm-up {warmup}; "
            f"training {seconds:.0f} s "
            f"({seconds / ENSEMBLE:.0f} s per network)",
            flush=True,
        )
        print(
            f"  gap RMSE (mm): CNN {figures['cnn']:.2f}, ordinary kriging {figures['kriging']:.2f}, "
            f"gradient boosting {figures['boosting']:.2f}, "
            f"training mean {figures['mean']:.2f}; one network with the paper's recipe {figures['paper']:.2f} "
            f"(training R² {paper_r2:.3f}, {paper_seconds:.0f} s)",
            flush=True,
        )
        checks = {
            "CNN / kriging <= 0.6": figures["cnn"] / figures["kriging"] <= 0.6,
            "CNN / gradient boosting <= 1.1": figures["cnn"] / figures["boosting"] <= 1.1,
            "training R² >= 0.8": r2 >= 0.8,
            "every member's best epoch after its warm-up": all(epoch > warmup for epoch in best),
        }
        print(
            f"  CNN / kriging {figures['cnn'] / figures['kriging']:.2f}, "
            f"CNN / gradient boosting {figures['cnn'] / figures['boosting']:.2f}, "
            f"training R² {r2:.3f}, best epochs {best}",
            flush=True,
        )
        for name, ok in checks.items():
            print(f"  {'met' if ok else 'MISSED'}: {name}", flush=True)
        return all(checks.values())
    finally:
        shutil.rmtree(folder)


def main():
    env = qgis_run.environment()
    start = time.perf_counter()
    met = [one_scenario(seed, env) for seed in SEEDS]
    print(f"{sum(met)} of {len(met)} scenarios meet every target ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
