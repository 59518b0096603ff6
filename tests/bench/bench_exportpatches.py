"""subsidence:exportpatches: 100 000 points x 9 bands x 30 x 30 (3.2 GB of patches) through
qgis_process; prints the time and the export's peak memory against the dataset's size, then
reads random training batches from the memory-mapped result."""

import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr

import qgis_run

sys.path.insert(0, str(qgis_run.REPO / "build" / "pluginpath"))
from insar_subsidence.core.dataset import open_dataset

POINTS, BANDS, SIZE, PATCH = 100_000, 9, 3000, 30
GEOTRANSFORM = (400000.0, 10.0, 0.0, 4300000.0, 0.0, -10.0)


def spatial_reference():
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32630)
    return srs


def write_stack(path):
    dataset = gdal.GetDriverByName("GTiff").Create(
        str(path), SIZE, SIZE, BANDS, gdal.GDT_Float32, ["TILED=YES", "INTERLEAVE=BAND"]
    )
    dataset.SetGeoTransform(GEOTRANSFORM)
    dataset.SetProjection(spatial_reference().ExportToWkt())
    rng = np.random.default_rng(0)
    for number in range(1, BANDS + 1):
        band = dataset.GetRasterBand(number)
        band.WriteArray(rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32))
        band.SetDescription(f"driver_{number}")
    dataset = None


def write_points(path):
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer("ps", spatial_reference(), ogr.wkbPoint)
    layer.CreateField(ogr.FieldDefn("displacement", ogr.OFTReal))
    rng = np.random.default_rng(1)
    margin = PATCH * GEOTRANSFORM[1]
    xs = rng.uniform(GEOTRANSFORM[0] + margin, GEOTRANSFORM[0] + SIZE * 10 - margin, POINTS)
    ys = rng.uniform(GEOTRANSFORM[3] - SIZE * 10 + margin, GEOTRANSFORM[3] - margin, POINTS)
    layer.StartTransaction()
    for x, y, value in zip(xs, ys, rng.normal(0, 10, POINTS)):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("displacement", float(value))
        feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({x} {y})"))
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    source = None


def main():
    folder = Path(tempfile.mkdtemp(prefix="bench-patches-"))
    try:
        write_stack(folder / "stack.tif")
        write_points(folder / "ps.gpkg")
        env = qgis_run.environment()
        parameters = {
            "POINTS": folder / "ps.gpkg",
            "FIELD": "displacement",
            "FACTORS": folder / "stack.tif",
            "PATCH_SIZE": PATCH,
            "OUTPUT": folder / "dataset.npz",
        }
        seconds, peak, output = qgis_run.run("subsidence:exportpatches", parameters, env)
        size_mb = (folder / "dataset.npz").stat().st_size / 2**20
        print(
            f"{POINTS} points x {BANDS} bands x {PATCH} x {PATCH}: exported in {seconds:.0f} s "
            f"({POINTS / seconds:.0f} points/s), dataset {size_mb:.0f} MB"
        )
        print(f"  peak memory of the export {peak:.0f} MB ({peak / size_mb:.2f} of the dataset's size)")
        print("  " + next((line.strip() for line in output.splitlines() if "Written:" in line), ""))

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        data = open_dataset(folder / "dataset.npz")
        rng = np.random.default_rng(0)
        training = np.flatnonzero(data["split"] == 0)
        start = time.perf_counter()
        for _ in range(50):
            batch = np.asarray(data["patches"][np.sort(rng.choice(training, 128, replace=False))])
        per_batch = (time.perf_counter() - start) / 50
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
        print(
            f"  reading: patches memory-mapped ({type(data['patches']).__name__}), random batches of 128 in "
            f"{per_batch * 1e3:.1f} ms, batch shape {batch.shape}; resident memory grew by {grown:.0f} MB, "
            "clean file-backed pages of the map (reclaimable), not a loaded copy"
        )
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
