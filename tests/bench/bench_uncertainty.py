"""What uncertainty and the area of applicability cost: subsidence:predictsurface through
qgis_process on a 3000 x 3000 x 9 stack of smooth driver-like fields with dense models (30 x 30
patches), all measured in this run:
- plain: one network, the surface only (the reference);
- ensemble: five members, the surface and OUTPUT_UNCERTAINTY;
- applicability: one network, the surface and OUTPUT_APPLICABILITY, with 1000 and with 20 000
  training patches in the model (KD-tree queries of 18 features per pixel).
Prints seconds, pixels/s, the ratio to plain and the peak memory of each run."""

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from osgeo import gdal, osr
from scipy.ndimage import gaussian_filter

import qgis_run
from random_models import write_dense_model

sys.path.insert(0, str(qgis_run.REPO / "build" / "pluginpath"))
from insar_subsidence.core import applicability

BANDS, SIZE, SIDE, PIXEL = 9, 30, 3000, 10.0
NAMES = [f"driver{band}" for band in range(BANDS)]
MEMBERS = 5
TRAINING_PATCHES = (1000, 20_000)


def smooth_stack():
    rng = np.random.default_rng(0)
    stack = np.stack([gaussian_filter(rng.standard_normal((SIDE, SIDE), dtype=np.float32), 20) for _ in range(BANDS)])
    return stack / stack.std(axis=(1, 2), keepdims=True)


def write_stack(path, stack):
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), SIDE, SIDE, BANDS, gdal.GDT_Float32, ["TILED=YES"])
    dataset.SetGeoTransform((500000.0, PIXEL, 0.0, 4200000.0, 0.0, -PIXEL))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32630)
    dataset.SetProjection(srs.ExportToWkt())
    for number, name in enumerate(NAMES, start=1):
        band = dataset.GetRasterBand(number)
        band.SetDescription(name)
        band.WriteArray(stack[number - 1])
    dataset = None


def area_of_applicability(stack, patches, rng):
    """The applicability metadata of `patches` training patches cut at random from the stack."""
    rows, columns = rng.integers(0, SIDE - SIZE, patches), rng.integers(0, SIDE - SIZE, patches)
    cut = np.stack([stack[:, row : row + SIZE, column : column + SIZE] for row, column in zip(rows, columns)])
    area, _ = applicability.fit(
        cut, np.zeros(BANDS), np.ones(BANDS), columns * PIXEL, rows * PIXEL, 50 * SIZE * PIXEL, rng
    )
    return area.to_metadata()


def main():
    folder = Path(tempfile.mkdtemp(prefix="bench-uncertainty-"))
    try:
        stack_values = smooth_stack()
        stack = folder / "stack.tif"
        write_stack(stack, stack_values)
        rng = np.random.default_rng(1)
        write_dense_model(folder / "plain.onnx", NAMES, SIZE)
        write_dense_model(folder / "ensemble.onnx", NAMES, SIZE, MEMBERS)
        for patches in TRAINING_PATCHES:
            write_dense_model(
                folder / f"area{patches}.onnx",
                NAMES,
                SIZE,
                applicability=area_of_applicability(stack_values, patches, rng),
            )
        del stack_values
        env = qgis_run.environment()
        runs = [
            ("plain (1 network, surface)", "plain.onnx", {}),
            (
                f"ensemble of {MEMBERS}, surface + uncertainty",
                "ensemble.onnx",
                {"OUTPUT_UNCERTAINTY": folder / "sd.tif"},
            ),
            *(
                (
                    f"1 network, surface + applicability, {patches} training patches",
                    f"area{patches}.onnx",
                    {"OUTPUT_APPLICABILITY": folder / "aoa.tif"},
                )
                for patches in TRAINING_PATCHES
            ),
        ]
        print(
            f"stack {SIDE} x {SIDE} x {BANDS}, dense models with {SIZE} x {SIZE} patches, "
            "via qgis_process (start-up included)"
        )
        reference = None
        for label, model, extra in runs:
            parameters = {"MODEL": folder / model, "FACTORS": stack, "OUTPUT": folder / "surface.tif", **extra}
            seconds, peak, _ = qgis_run.run("subsidence:predictsurface", parameters, env)
            reference = reference or seconds
            print(
                f"{label}: {seconds:.1f} s, {SIDE * SIDE / seconds:.0f} pixels/s, "
                f"{seconds / reference:.2f} x plain, peak {peak:.0f} MB",
                flush=True,
            )
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
