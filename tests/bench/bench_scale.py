"""Kriging on Dask (issue 22): 200 000 points onto 1000 x 1000 cells (as bench_kriging: spherical,
32 neighbours, blocks of rows as subsidence:krige makes them) kriged in this process, on local:1
and on local:2, each run in a child process of its own so that its peak memory is the client's
alone (the workers are other processes); the rasters are compared with the in-process one. Dask's
overhead per tile is the client's wall time less the time the workers spent kriging, per tile.
From the measured costs, an extrapolation to 10^7 points and 10^9 cells, labelled as such.
Prediction on Dask is not built yet: it is not benchmarked."""

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from osgeo import gdal

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "build" / "pluginpath"))
sys.path.insert(0, str(HERE.parent))  # tests/: synthetic data

from insar_subsidence.core import cluster as dask_tiles  # noqa: E402
from insar_subsidence.core.grid import Grid  # noqa: E402
from insar_subsidence.core.kriging import OrdinaryKriging, Variogram, krige_block  # noqa: E402

POINTS, SIDE, EXTENT = 200_000, 1000, 100_000.0
NEIGHBOURS = 32
BLOCK_CELLS = 65_536  # algorithms.kriging_base's blocks of rows
VARIOGRAM = Variogram("spherical", (51_483.7, 459_821.0, 4.0))  # bench_kriging's fit at 200 000 points
RUNS = 3
WHERE = ("in-process", "local:1", "local:2")
MEMORY_GOAL_MB = 2048
AGREEMENT_GOAL = 1e-6  # of the range, values and variance
TARGET_POINTS, TARGET_CELLS = 10**7, 10**9


def timed_krige_block(*arguments):
    """krige_block, with the seconds it took on the worker."""
    start = time.perf_counter()
    result = krige_block(*arguments)
    return result, time.perf_counter() - start


def child(where, output):
    """One run, in its own process: writes the rasters to `output`, prints its figures as JSON."""
    from synthetic import subsidence_bowls

    x, y, z = subsidence_bowls(POINTS, extent=EXTENT)
    grid = Grid(0.0, EXTENT, EXTENT / SIDE, EXTENT / SIDE, SIDE, SIDE)
    blocks = grid.row_blocks(BLOCK_CELLS)
    dataset = gdal.GetDriverByName("GTiff").Create(output, SIDE, SIDE, 2, gdal.GDT_Float32, ["TILED=YES"])
    start = time.perf_counter()
    kriging = OrdinaryKriging(x, y, z, VARIOGRAM, NEIGHBOURS)
    worked, serial = [], []  # seconds on the workers; the client's own per tile (its task, the writing)

    def write(block, values, variances):
        dataset.GetRasterBand(1).WriteArray(values.astype(np.float32), 0, block[0])
        dataset.GetRasterBand(2).WriteArray(variances.astype(np.float32), 0, block[0])

    def write_result(block, result):
        began = time.perf_counter()
        (values, variances, _, _), seconds = result
        worked.append(seconds)
        write(block, values, variances)
        serial.append(time.perf_counter() - began)

    def timed(tasks):
        while True:
            began = time.perf_counter()
            task = next(tasks, None)
            serial.append(time.perf_counter() - began)
            if task is None:
                return
            yield task

    figures = {}
    if where == "in-process":
        for block in blocks:
            write(block, *kriging.predict(*grid.centres(*block)))
    else:
        began = time.perf_counter()
        with dask_tiles.cluster(where, dask_tiles.KRIGING_PACKAGES) as client:
            figures["start_up"] = time.perf_counter() - began
            began = time.perf_counter()
            tasks = timed(kriging.block_tasks(grid, blocks))
            dask_tiles.run_tiles(
                client, timed_krige_block, tasks, len(blocks), write_result, lambda _: None, lambda: False
            )
            figures.update(run=time.perf_counter() - began, worked=sum(worked), serial=sum(serial), tiles=len(blocks))
    figures["seconds"] = time.perf_counter() - start
    dataset = None
    figures["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


def in_child(where, output):
    done = subprocess.run([sys.executable, __file__, where, str(output)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{where} failed:\n{done.stdout[-3000:]}{done.stderr[-5000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def deviation(path, reference):
    dataset, expected = gdal.Open(str(path)), gdal.Open(str(reference))
    worst = 0.0
    for band in (1, 2):
        a = dataset.GetRasterBand(band).ReadAsArray().astype(float)
        b = expected.GetRasterBand(band).ReadAsArray().astype(float)
        worst = max(worst, float(np.abs(a - b).max() / np.ptp(b)))
    return worst


def main():
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    figures = {where: [] for where in WHERE}
    for _ in range(RUNS):  # alternated, so that the machine's slow spells fall on all
        for where in WHERE:
            figures[where].append(in_child(where, folder / f"{where}.tif"))
    print(
        f"Kriging {POINTS:,} points onto {SIDE} x {SIDE} cells ({NEIGHBOURS} neighbours, blocks of "
        f"{BLOCK_CELLS // SIDE} rows), best / median of {RUNS}, seconds, whole run (reading excluded):"
    )
    for where in WHERE:
        runs = figures[where]
        seconds = [run["seconds"] for run in runs]
        line = f"  {where:10} {min(seconds):6.2f} / {statistics.median(seconds):6.2f} s"
        line += f", client peak {max(run['peak_mb'] for run in runs):.0f} MB"
        if where != "in-process":
            tiles, workers = runs[0]["tiles"], int(where.split(":")[1])
            overhead = [(run["run"] - run["worked"] / workers) / tiles * 1000 for run in runs]
            agreement = deviation(folder / f"{where}.tif", folder / "in-process.tif")
            line += (
                f", of which the cluster's start-up {statistics.median(run['start_up'] for run in runs):.2f} s; "
                f"overhead per tile {statistics.median(overhead):.0f} ms ({tiles} tiles; the run's wall time less "
                f"the workers' kriging time / {workers}: Dask, transfers and the client's "
                f"{statistics.median(run['serial'] for run in runs) / tiles * 1000:.0f} ms of neighbourhoods and "
                f"writing); deviation from in-process {agreement:.1e} of the range (goal <= {AGREEMENT_GOAL:g}: "
                f"{'met' if agreement <= AGREEMENT_GOAL else 'NOT met'})"
            )
        print(line, flush=True)
    peak = max(run["peak_mb"] for where in WHERE[1:] for run in figures[where])
    print(
        f"  client peak memory on Dask {peak:.0f} MB (goal <= {MEMORY_GOAL_MB} MB: "
        f"{'met' if peak <= MEMORY_GOAL_MB else 'NOT met'})"
    )
    extrapolate(figures)


def extrapolate(figures):
    """From the local:2 runs: a worker's seconds per cell and the client's serial seconds per tile
    (neighbourhoods, writing), scaled to the target: the run takes about the longer of the
    client's serial work and the workers' share of the kriging."""
    runs = figures["local:2"]
    tiles = runs[0]["tiles"]
    per_cell = statistics.median(run["worked"] / (SIDE * SIDE) for run in runs)
    per_tile = statistics.median(run["serial"] / tiles for run in runs)
    width = int(np.sqrt(TARGET_CELLS))
    target_tiles = TARGET_CELLS / (max(1, BLOCK_CELLS // width) * width)
    client_minutes = target_tiles * per_tile / 60
    for workers in (2, 64, 512):
        minutes = max(client_minutes, TARGET_CELLS * per_cell / workers / 60)
        print(
            f"  EXTRAPOLATED, not measured: {TARGET_POINTS:.0e} points onto {TARGET_CELLS:.0e} cells with {workers} "
            f"workers like these: about {minutes:,.0f} min (workers {per_cell * 1e6:.1f} µs per cell; the client "
            f"{per_tile * 1000:.0f} ms per tile x {target_tiles:,.0f} tiles of {TARGET_CELLS / target_tiles:,.0f} "
            f"cells = {client_minutes:.0f} min, a floor whatever the workers; both costs taken as at {POINTS:,} points)"
        )
    # The client holds x, y, z, the kriging's copy of x and y and its k-d tree: about 100 bytes a point.
    print(
        f"  ESTIMATED from the arrays' sizes, not measured: the client holds about {TARGET_POINTS * 100 / 2**30:.1f} "
        f"GiB for {TARGET_POINTS:.0e} points, on top of the {figures['in-process'][0]['peak_mb']:.0f} MB measured here"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        child(*sys.argv[1:])
    else:
        main()
