"""subsidence:selectps on a 73-image 5000 x 5000 float32 stack (7.3 GB, larger than its block
budget by far), run through qgis_process as a user would; prints time and the peak memory of
that process against the stack's size."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

IMAGES, SIZE, ROWS = 73, 5000, 200  # ROWS: a multiple of STABLE_EVERY
STABLE_EVERY = 100  # one stable pixel per 100 x 100 cells: 2500 candidates
REPO = Path(__file__).resolve().parents[2]


def write_stack(path):
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), SIZE, SIZE, IMAGES, gdal.GDT_Float32, ["BIGTIFF=YES"])
    dataset.SetGeoTransform((500000.0, 10.0, 0.0, 4200000.0, 0.0, -10.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32630)
    dataset.SetProjection(srs.ExportToWkt())
    rng = np.random.default_rng(0)
    for row in range(0, SIZE, ROWS):
        block = rng.random((IMAGES, ROWS, SIZE), dtype=np.float32) + 0.1  # uniform clutter: D_A ~ 0.5
        block[:, ::STABLE_EVERY, ::STABLE_EVERY] = 5.0 + rng.normal(0, 0.1, (IMAGES, ROWS // STABLE_EVERY, SIZE // STABLE_EVERY))
        dataset.WriteArray(block, 0, row)
    dataset = None


def run_selectps(stack, folder, env):
    """One run in its own process: seconds, its peak memory (MB), the summary line."""
    measure = (
        "import resource, subprocess, sys, json; "
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(json.dumps([done.returncode, done.stdout[-3000:] + done.stderr[-3000:], "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))"
    )
    command = ["qgis_process.bin", "run", "subsidence:selectps", "--", f"INPUT={stack}", "THRESHOLD=0.25",
               f"OUTPUT_DISPERSION={folder / 'da.tif'}", f"OUTPUT={folder / 'ps.gpkg'}"]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", measure, *command], env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    code, output, peak = json.loads(done.stdout)
    if code:
        sys.exit(output)
    found = next((line.strip() for line in output.splitlines() if "PS candidates" in line), "")
    return seconds, peak, found


def main():
    folder = Path(tempfile.mkdtemp(prefix="bench-selectps-"))
    try:
        stack = folder / "stack.tif"
        start = time.perf_counter()
        write_stack(stack)
        print(f"stack: {IMAGES} images x {SIZE} x {SIZE} float32, {stack.stat().st_size / 2**30:.1f} GiB on disk "
              f"(written in {time.perf_counter() - start:.0f} s)")
        profile = folder / "profile"
        profile.mkdir()
        env = dict(
            os.environ,
            QT_QPA_PLATFORM="offscreen",
            QGIS_PLUGINPATH=str(REPO / "build" / "pluginpath"),
            QGIS_CUSTOM_CONFIG_PATH=str(profile),
            PYTHONPATH=sysconfig.get_paths()["purelib"],
        )
        subprocess.run(["qgis_process.bin", "plugins", "enable", "insar_subsidence"], env=env, capture_output=True, check=True)
        for label, cache in (("GDAL cache as configured", None), ("GDAL_CACHEMAX=64 MB", "64")):
            run_env = dict(env, GDAL_CACHEMAX=cache) if cache else env
            seconds, peak, found = run_selectps(stack, folder, run_env)
            print(f"selectps via qgis_process, {label}: {seconds:.0f} s, {IMAGES * SIZE * SIZE / seconds / 1e6:.0f} M values/s; {found}")
            print(f"  peak memory {peak:.0f} MB for a {stack.stat().st_size / 2**20:.0f} MB stack "
                  f"({peak / (stack.stat().st_size / 2**20):.2f} of its size)")
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
