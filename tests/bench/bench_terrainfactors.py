"""subsidence:terrainfactors (all five outputs, MFD, depressions filled) on a 4000 x 4000 DEM
made of the real Minnesota LiDAR DEM mirrored 2 x 2 and upsampled 5 times, run through
qgis_process as a user would (QGIS's start-up included); against GRASS GIS r.watershed (MFD,
accumulation and tci) plus r.slope.aspect on the same DEM, timed module by module in one GRASS
session (import and export not counted). Prints both times, their ratio and our peak memory."""

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from osgeo import gdal
from scipy import ndimage

import qgis_run

REPO = Path(__file__).resolve().parents[2]
DEM = REPO / "tests" / "data" / "minnesota_dem" / "dem.tif"
UPSAMPLE = 5
MEMORY_LIMIT_MB = 3 * 1024

GRASS_MODULES = (
    ["r.watershed", "elevation=dem", "accumulation=accumulation", "tci=tci", "--quiet"],  # MFD is its default
    ["r.slope.aspect", "elevation=dem", "slope=slope", "aspect=aspect", "--quiet"],
)
# Runs inside `grass --exec`: imports the DEM, then times each module alone.
GRASS_SCRIPT = """
import json, subprocess, sys, time
subprocess.run(["r.in.gdal", "input=" + sys.argv[1], "output=dem", "--quiet"], check=True)
subprocess.run(["g.region", "raster=dem"], check=True)
seconds = {}
for module in json.loads(sys.argv[2]):
    start = time.perf_counter()
    subprocess.run(module, check=True)
    seconds[module[0]] = time.perf_counter() - start
print("SECONDS " + json.dumps(seconds))
"""


def write_dem(path):
    source = gdal.Open(str(DEM))
    z = source.GetRasterBand(1).ReadAsArray()
    mirrored = np.block([[z, z[:, ::-1]], [z[::-1], z[::-1, ::-1]]])
    big = ndimage.zoom(mirrored, UPSAMPLE, order=1).astype(np.float32)
    left, pixel, _, top, _, _ = source.GetGeoTransform()
    target = gdal.GetDriverByName("GTiff").Create(
        str(path), big.shape[1], big.shape[0], 1, gdal.GDT_Float32, ["TILED=YES"]
    )
    target.SetGeoTransform((left, pixel / UPSAMPLE, 0, top, 0, -pixel / UPSAMPLE))
    target.SetProjection(source.GetProjection())
    target.GetRasterBand(1).WriteArray(big)
    target = None
    return big.shape


def run_grass(dem, folder):
    done = subprocess.run(
        [
            "grass",
            "-c",
            str(dem),
            str(folder / "grassdb" / "dem"),
            "--exec",
            "python3",
            "-c",
            GRASS_SCRIPT,
            str(dem),
            json.dumps(GRASS_MODULES),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("SECONDS "))
    return json.loads(line[len("SECONDS ") :])


def main():
    if shutil.which("grass") is None:
        raise SystemExit("GRASS GIS is not installed: `make bench` installs grass-core on Debian/Ubuntu.")
    folder = Path(tempfile.mkdtemp(prefix="bench-terrain-"))
    try:
        dem = folder / "dem.tif"
        rows, columns = write_dem(dem)
        print(f"DEM: the Minnesota LiDAR DEM mirrored 2 x 2 and upsampled x{UPSAMPLE}: {rows} x {columns} cells")
        env = qgis_run.environment()
        startup, _, _ = qgis_run.run(
            "native:createconstantrasterlayer",
            {
                "EXTENT": "0,1,0,1",
                "TARGET_CRS": "EPSG:4326",
                "PIXEL_SIZE": 1,
                "NUMBER": 1,
                "OUTPUT": folder / "one.tif",
            },
            env,
        )
        outputs = {key: folder / f"{key.lower()}.tif" for key in ("SLOPE", "ASPECT", "CATCHMENT", "TWI", "SPI")}
        ours, peak, _ = qgis_run.run("subsidence:terrainfactors", {"INPUT": dem, "FLOW_METHOD": 1, **outputs}, env)
        grass = run_grass(dem, folder)
        theirs = sum(grass.values())
        print(
            f"terrainfactors via qgis_process (5 outputs, MFD, filled): {ours:.1f} s, "
            f"of which ~{startup:.1f} s QGIS start-up "
            f"(a trivial algorithm's run); peak memory {peak:.0f} MB (limit {MEMORY_LIMIT_MB} MB)"
        )
        print(
            "GRASS: "
            + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in grass.items())
            + f"; together {theirs:.1f} s"
        )
        print(f"ratio ours / GRASS: {ours / theirs:.2f} (target <= 1)")
        if ours > theirs or peak > MEMORY_LIMIT_MB:
            raise SystemExit("terrainfactors is slower than GRASS or over its memory limit")
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
