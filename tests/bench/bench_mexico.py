"""Mexico City, real Sentinel-1 InSAR: every map scored in the PS gaps against the InSAR velocity,
side by side in one run. The demo's chain (tools/demo_mexico.sh, defaults: an ensemble of 5 small
CNNs on 9 x 9 patches of DEM, slope, TWI and SPI) gives the CNN, ordinary kriging (all PS points)
and the hybrid (the CNN plus its kriged residuals at the points it did not train on). Beside them,
on the same drivers and the same dataset points:
- the CNN refit on every dataset point (traincnn REFIT), the map a user makes last;
- gradient boosting (scikit-learn) on each driver's centre value and patch mean, every dataset point;
- regression kriging: a least-squares linear trend on the same features plus the ordinary kriging
  of its residuals at every PS point (krigeresiduals; the trend has 9 coefficients, so its residuals
  are as good as out of sample);
- the PS mean (null model).
Gap cells: every cell with a velocity and no PS point (tools/gap_scores.py). Also printed:
`evaluate`'s spatial FOLDS-fold cross-validation RMSE on the PS points of every method it scores."""

import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from osgeo import gdal

import qgis_run
from bench_cnn_quality import features, read

from insar_subsidence.core.dataset import open_dataset
from insar_subsidence.core.patches import centre_and_mean

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
from gap_scores import scores

DATA = REPO / "resources" / "sample_data" / "mexico_city"
FOLDS = 5
EVALUATED = {
    "mean": "PS mean (null model)",
    "kriging": "ordinary kriging",
    "regression_kriging": "regression kriging",
    "cnn": "CNN",
    "hybrid": "hybrid",
}


def write_like(path, values, grid):
    out = gdal.GetDriverByName("GTiff").Create(str(path), grid.RasterXSize, grid.RasterYSize, 1, gdal.GDT_Float32)
    out.SetGeoTransform(grid.GetGeoTransform())
    out.SetProjection(grid.GetProjection())
    band = out.GetRasterBand(1)
    band.SetNoDataValue(-9999.0)
    band.WriteArray(np.where(np.isfinite(values), values, -9999.0))
    out.FlushCache()


def learners(folder, data, env):
    """Gradient boosting and the regression trend on every dataset point, written on the stack's
    grid; then the trend plus its kriged residuals."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    stack, grid = read(folder / "driver_stack.tif"), gdal.Open(str(folder / "driver_stack.tif"))
    cells = features(stack, int(data["patch_size"]))
    known, targets = centre_and_mean(data["patches"]), np.asarray(data["targets"], np.float64)
    boosting = HistGradientBoostingRegressor(random_state=0).fit(known, targets)
    write_like(folder / "boosting.tif", boosting.predict(cells).reshape(stack.shape[1:]), grid)
    scale = known.std(axis=0)
    scale[scale == 0] = 1
    design = lambda x: np.column_stack([np.ones(len(x)), x / scale])
    coefficients = np.linalg.lstsq(design(known), targets, rcond=None)[0]
    write_like(folder / "trend.tif", (design(cells) @ coefficients).reshape(stack.shape[1:]), grid)
    qgis_run.run(
        "subsidence:krigeresiduals",
        {
            "SURFACE": folder / "trend.tif",
            "POINTS": folder / "ps_points.gpkg",
            "FIELD": "displacement",
            "OUTPUT": folder / "regression_kriging.tif",
            "OUTPUT_VARIANCE": "TEMPORARY_OUTPUT",
        },
        env,
    )


def cross_validation(folder, env):
    """{method: RMSE} over evaluate's FOLDS-fold spatial cross-validation (every point held out once)."""
    qgis_run.run(
        "subsidence:evaluate",
        {
            "DATASET": folder / "dataset.npz",
            "MODEL": folder / "cnn_model.onnx",
            "FOLDS": FOLDS,
            "OUTPUT_TABLE": folder / "cv.csv",
        },
        env,
    )
    with open(folder / "cv.csv", newline="", encoding="utf-8") as file:
        rows = [row for row in csv.DictReader(file) if row["row"] == "cross-validation"]
    return {EVALUATED[row["method"]]: (float(row["rmse"]), int(float(row["n"]))) for row in rows}


def main():
    env = qgis_run.environment()
    folder = Path(tempfile.mkdtemp(prefix="bench-mexico-"))
    start = time.perf_counter()
    done = subprocess.run(
        ["bash", "tools/demo_mexico.sh", "qgis_process.bin", str(folder)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(done.stdout[-3000:] + done.stderr[-3000:])
    demo_seconds = time.perf_counter() - start
    data = open_dataset(folder / "dataset.npz")
    refit_seconds, _, _ = qgis_run.run(
        "subsidence:traincnn",
        {
            "DATASET": folder / "dataset.npz",
            "ARCHITECTURE": 2,
            "ENSEMBLE": 5,
            "REFIT": "true",
            "OUTPUT_MODEL": folder / "refit.onnx",
        },
        env,
    )
    qgis_run.run(
        "subsidence:predictsurface",
        {"MODEL": folder / "refit.onnx", "FACTORS": folder / "driver_stack.tif", "OUTPUT": folder / "cnn_refit.tif"},
        env,
    )
    learners(folder, data, env)
    cv_start = time.perf_counter()
    cross = cross_validation(folder, env)
    cv_seconds = time.perf_counter() - cv_start
    maps = {
        "ordinary kriging": folder / "kriged_surface.tif",
        "regression kriging": folder / "regression_kriging.tif",
        "gradient boosting": folder / "boosting.tif",
        "CNN": folder / "cnn_surface.tif",
        "CNN refit": folder / "cnn_refit.tif",
        "hybrid": folder / "hybrid_surface.tif",
    }
    rows, cells = scores(DATA / "velocity_vert_mmyr_approx.tif", folder / "ps_points.gpkg", "displacement", maps)
    split = data["split"]
    print(
        f"{len(split)} dataset points ({(split == 0).sum()} train / {(split == 1).sum()} val / "
        f"{(split == 2).sum()} test) of the PS cells; "
        f"{cells} gap cells, {rows[0]['n']} covered by every map; "
        f"demo {demo_seconds:.0f} s, refit {refit_seconds:.0f} s, "
        f"{FOLDS}-fold cross-validation {cv_seconds:.0f} s",
        flush=True,
    )
    cv_points = next(iter(cross.values()))[1]
    print(f"  {'method':<24}{'gap RMSE':>10}{'MAE':>8}{'bias':>8}{f'CV RMSE ({cv_points} pts)':>22}   (mm/yr)")
    for row in sorted(rows, key=lambda row: row["rmse"]):
        cv = f"{cross[row['method']][0]:.2f}" if row["method"] in cross else ""
        print(f"  {row['method']:<24}{row['rmse']:>10.2f}{row['mae']:>8.2f}{row['bias']:>+8.2f}{cv:>22}")
    best = min(rows, key=lambda row: row["rmse"])
    cnn = next(row for row in rows if row["method"] == "CNN")
    print(
        f"  best in the gaps: {best['method']}; CNN / best = {cnn['rmse'] / best['rmse']:.2f}; "
        f"total {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
