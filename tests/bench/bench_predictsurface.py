"""subsidence:predictsurface with a dense model (9 bands, 30 x 30 patches) on a 10 000 x 10 000
x 9 stack, through qgis_process: pixels/s and peak memory of the whole run; against naive
per-patch ONNX Runtime inference of the same model (batches of 256 patches) measured in the same
run; and the share of this machine's SGEMM rate the dense evaluation achieves (its FLOPs per
pixel x pixels/s / numpy's float32 matmul FLOP/s). Targets: >= 20 x naive, >= 60 % of SGEMM,
<= 2 GB peak."""

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

import bench_machine
import qgis_run
from random_models import write_dense_model

sys.path.insert(0, str(qgis_run.REPO / "build" / "pluginpath"))
from insar_subsidence.core.prediction import session
from insar_subsidence.models.dense import dense_model

BANDS, SIZE, SIDE, ROWS = 9, 30, 10_000, 500
NAMES = [f"driver{band}" for band in range(BANDS)]
MEMORY_LIMIT_MB = 2048


def write_stack(path):
    dataset = gdal.GetDriverByName("GTiff").Create(
        str(path), SIDE, SIDE, BANDS, gdal.GDT_Float32, ["BIGTIFF=YES", "TILED=YES"]
    )
    dataset.SetGeoTransform((500000.0, 10.0, 0.0, 4200000.0, 0.0, -10.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32630)
    dataset.SetProjection(srs.ExportToWkt())
    rng = np.random.default_rng(0)
    for number, name in enumerate(NAMES, start=1):
        dataset.GetRasterBand(number).SetDescription(name)
    for row in range(0, SIDE, ROWS):
        dataset.WriteArray(rng.standard_normal((BANDS, ROWS, SIDE), dtype=np.float32), 0, row)
    dataset = None


def naive_pixels_per_second(model_path, patches=2048, batch=256):
    with open(model_path, "rb") as file:
        run = session(file.read())
    data = np.random.default_rng(1).normal(0, 1, (batch, BANDS, SIZE, SIZE)).astype(np.float32)
    run.run(None, {"patches": data})  # warm-up
    start = time.perf_counter()
    for _ in range(patches // batch):
        run.run(None, {"patches": data})
    return patches / (time.perf_counter() - start)


def dense_flops_per_pixel(model_path):
    """2 x multiply-adds of every convolution of the dense form, all evaluated at every pixel."""
    import onnx
    from onnx import numpy_helper

    with open(model_path, "rb") as file:
        dense, _ = dense_model(file.read())
    graph = onnx.load_from_string(dense).graph
    weights = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    return sum(2 * weights[node.input[1]].size for node in graph.node if node.op_type == "Conv")


def main():
    folder = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    try:
        model, stack = folder / "model.onnx", folder / "stack.tif"
        write_dense_model(model, NAMES, SIZE)
        start = time.perf_counter()
        write_stack(stack)
        print(
            f"stack: {SIDE} x {SIDE} x {BANDS} float32 ({stack.stat().st_size / 2**30:.1f} GiB, "
            f"written in {time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        sgemm = bench_machine.sgemm_gflops()
        naive = naive_pixels_per_second(model)
        flops = dense_flops_per_pixel(model)
        seconds, peak, _ = qgis_run.run(
            "subsidence:predictsurface",
            {"MODEL": model, "FACTORS": stack, "OUTPUT": folder / "surface.tif"},
            qgis_run.environment(),
        )
        dense = SIDE * SIDE / seconds
        print(f"naive per-patch ONNX Runtime: {naive:.0f} pixels/s (one patch per pixel, batches of 256)")
        print(
            f"predictsurface (dense, via qgis_process, QGIS start-up included): "
            f"{SIDE}^2 pixels in {seconds:.0f} s, {dense:.0f} pixels/s; "
            f"ratio {dense / naive:.0f} x naive (target >= 20)"
        )
        print(
            f"dense evaluation: {flops / 1e3:.0f} kFLOP per pixel x {dense:.0f} pixels/s = "
            f"{flops * dense / 1e9:.1f} GFLOP/s, "
            f"{100 * flops * dense / (sgemm * 1e9):.0f} % of this machine's SGEMM ({sgemm:.0f} GFLOP/s; target >= 60 %)"
        )
        print(
            f"peak memory {peak:.0f} MB for a {stack.stat().st_size / 2**20:.0f} MB stack "
            f"(target <= {MEMORY_LIMIT_MB} MB)"
        )
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
