"""subsidence:selectps on a 73-image 5000 x 5000 float32 stack (7.3 GB, larger than its block
budget by far), run through qgis_process as a user would; prints time and the peak memory of
that process against the stack's size."""

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

import qgis_run

IMAGES, SIZE, ROWS = 73, 5000, 200  # ROWS: a multiple of STABLE_EVERY
STABLE_EVERY = 100  # one stable pixel per 100 x 100 cells: 2500 candidates


def write_stack(path):
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), SIZE, SIZE, IMAGES, gdal.GDT_Float32, ["BIGTIFF=YES"])
    dataset.SetGeoTransform((500000.0, 10.0, 0.0, 4200000.0, 0.0, -10.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32630)
    dataset.SetProjection(srs.ExportToWkt())
    rng = np.random.default_rng(0)
    for row in range(0, SIZE, ROWS):
        block = rng.random((IMAGES, ROWS, SIZE), dtype=np.float32) + 0.1  # uniform clutter: D_A ~ 0.5
        block[:, ::STABLE_EVERY, ::STABLE_EVERY] = 5.0 + rng.normal(
            0, 0.1, (IMAGES, ROWS // STABLE_EVERY, SIZE // STABLE_EVERY)
        )
        dataset.WriteArray(block, 0, row)
    dataset = None


def run_selectps(stack, folder, env):
    """One run: seconds, the peak memory of its process (MB), the summary line."""
    parameters = {
        "INPUT": stack,
        "THRESHOLD": 0.25,
        "OUTPUT_DISPERSION": folder / "da.tif",
        "OUTPUT": folder / "ps.gpkg",
    }
    seconds, peak, output = qgis_run.run("subsidence:selectps", parameters, env)
    return seconds, peak, next((line.strip() for line in output.splitlines() if "PS candidates" in line), "")


def main():
    folder = Path(tempfile.mkdtemp(prefix="bench-selectps-"))
    try:
        stack = folder / "stack.tif"
        start = time.perf_counter()
        write_stack(stack)
        print(
            f"stack: {IMAGES} images x {SIZE} x {SIZE} float32, {stack.stat().st_size / 2**30:.1f} GiB on disk "
            f"(written in {time.perf_counter() - start:.0f} s)"
        )
        env = qgis_run.environment()
        for label, cache in (("GDAL cache as configured", None), ("GDAL_CACHEMAX=64 MB", "64")):
            run_env = dict(env, GDAL_CACHEMAX=cache) if cache else env
            seconds, peak, found = run_selectps(stack, folder, run_env)
            print(
                f"selectps via qgis_process, {label}: {seconds:.0f} s, "
                f"{IMAGES * SIZE * SIZE / seconds / 1e6:.0f} M values/s; {found}"
            )
            print(
                f"  peak memory {peak:.0f} MB for a {stack.stat().st_size / 2**20:.0f} MB stack "
                f"({peak / (stack.stat().st_size / 2**20):.2f} of its size)"
            )
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
