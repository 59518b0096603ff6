"""Kriging at PS scale (issue 21): `subsidence:krige` through qgis_process against KrigeKit
(Fortran + OpenMP) and PyKrige (C backend), on the same points, the same given spherical
variogram (fitted once here with core.kriging) and 32 neighbours; PyKrige is the reference the
other two are compared with.

Each method runs in its own process, so that its peak memory is its own: PyKrige in the dev
venv, KrigeKit in its own venv (it needs numpy 2; `make bench` makes it and names its python in
KRIGEKIT_PYTHON), subsidence:krige in qgis_process, whose own start-up (a trivial algorithm, same
profile and plugin) is subtracted. The figures are for the README: missed goals are reported,
only errors make the exit status non-zero."""

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from qgis_run import environment, run  # the standard library only: KrigeKit's venv imports it too

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

EXTENT = 100_000.0  # metres: the side of the square the points fill
NOISE_SD = 2.0  # mm: the white noise on the bowls
X0, Y0 = 400_000.0, 4_000_000.0  # its south-west corner in UTM 30N
CRS = "EPSG:32630"
MODEL = "spherical"
NEIGHBOURS = 32
THREADS = 2  # KrigeKit's OpenMP threads: the machine's cores
RUNS = 5  # KrigeKit and qgis_process runs, alternated: the best and the median are reported
SAMPLE = 20_000  # cells compared with PyKrige on a grid too large for it
TILES = 25  # sampled cells are kriged by PyKrige tile by tile (TILES x TILES tiles)
CASES = ((20_000, 300, False), (200_000, 1000, True))  # points, grid side, compare on a sample
SPEED_GOAL = 1.0  # ours_net / KrigeKit
MEMORY_GOAL_MB = 2048  # peak of the qgis_process run at 200 000 points
AGREEMENT_GOAL = 1e-6  # max |ours - pykrige| / max |pykrige|, values and variance


# ---- children: each runs in its own process and prints its figures as JSON on its last line


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_krigekit(data, output):
    """KrigeKit on the whole grid (in KrigeKit's venv): only its call is timed."""
    import krigekit

    d = np.load(data)
    coords = np.column_stack([d["x"], d["y"]])
    gx, gy = np.meshgrid(d["xc"], d["yc"])  # row 0: the north edge, as in the GeoTIFF
    cells = np.column_stack([gx.ravel(), gy.ravel()])
    values = np.ascontiguousarray(d["z"])
    # KrigeKit's sill is the partial sill (checked against PyKrige with a nugget of a sixth of the sill).
    spec = dict(vtype="sph", nugget=float(d["nugget"]), sill=float(d["psill"]), a_major=float(d["range"]))
    start = time.perf_counter()
    estimate, variance = krigekit.ordinary_kriging(coords, values, cells, spec, nmax=NEIGHBOURS, nthread=THREADS)
    seconds = time.perf_counter() - start
    shape = (len(d["yc"]), len(d["xc"]))
    np.savez(output, values=np.reshape(estimate, shape), variance=np.reshape(variance, shape))
    return {"seconds": seconds, "peak_mb": peak_mb()}


def _pykrige(x, y, z, d):
    from pykrige.ok import OrdinaryKriging

    sill = float(d["psill"]) + float(d["nugget"])  # PyKrige's sill is the total sill
    parameters = {"sill": sill, "range": float(d["range"]), "nugget": float(d["nugget"])}
    return OrdinaryKriging(x, y, z, variogram_model=MODEL, variogram_parameters=parameters)


def pykrige_on_cells(d, rows, columns):
    """PyKrige's C backend with NEIGHBOURS closest points at the cells (rows, columns), without
    its n x n matrices of all the points: the cells go tile by tile, each tile kriged by a
    PyKrige holding only the union of its cells' NEIGHBOURS nearest points. A cell's nearest
    points among that subset are its nearest among all the points, so each cell gets exactly
    the system PyKrige would solve with every point."""
    from scipy.spatial import cKDTree

    x, y, z = d["x"], d["y"], d["z"]
    tx, ty = d["xc"][columns], d["yc"][rows]
    _, nearest = cKDTree(np.column_stack([x, y])).query(np.column_stack([tx, ty]), k=NEIGHBOURS)
    tile = (rows * TILES // len(d["yc"])) * TILES + columns * TILES // len(d["xc"])
    values, variance = np.empty(len(rows)), np.empty(len(rows))
    for t in np.unique(tile):
        cells = np.flatnonzero(tile == t)
        subset = np.unique(nearest[cells])
        kriging = _pykrige(x[subset], y[subset], z[subset], d)
        v, s = kriging.execute("points", tx[cells], ty[cells], backend="C", n_closest_points=NEIGHBOURS)
        values[cells], variance[cells] = np.ravel(v), np.ravel(s)
    return values, variance


def child_pykrige(data, output):
    """PyKrige on the whole grid, timed (at 20 000 points its n x n matrices take ~15 GB), or, with
    sampled cells in `data`, on those cells only."""
    d = np.load(data)
    figures = {}
    if "rows" in d.files:  # a grid too large for PyKrige: the sampled cells only
        start = time.perf_counter()
        values, variance = pykrige_on_cells(d, d["rows"], d["columns"])
        figures["sample_seconds"] = time.perf_counter() - start
    else:
        start = time.perf_counter()
        kriging = _pykrige(d["x"], d["y"], d["z"], d)
        values, variance = kriging.execute("grid", d["xc"], d["yc"], backend="C", n_closest_points=NEIGHBOURS)
        figures["seconds"] = time.perf_counter() - start
        values, variance = np.asarray(values), np.asarray(variance)
        # The tile-by-tile method used at 200 000 points, checked against the whole grid.
        rows, columns = sample_cells(len(d["yc"]))
        check, _ = pykrige_on_cells(d, rows, columns)
        figures["sample_method_deviation"] = float(np.abs(check - values[rows, columns]).max() / np.abs(values).max())
    figures["peak_mb"] = peak_mb()
    np.savez(output, values=values, variance=variance)
    return figures


def child_core(data, output):
    """core.kriging alone on the whole grid (in the dev venv), timed: the kriging without QGIS,
    reading, the variogram or the cross-validation."""
    sys.path.insert(0, str(REPO / "build" / "pluginpath"))
    from insar_subsidence.core.kriging import OrdinaryKriging, Variogram

    d = np.load(data)
    variogram = Variogram(MODEL, (float(d["psill"]), float(d["range"]), float(d["nugget"])))
    cells = np.meshgrid(d["xc"], d["yc"])
    start = time.perf_counter()
    OrdinaryKriging(d["x"], d["y"], d["z"], variogram, NEIGHBOURS).predict(*cells)
    return {"seconds": time.perf_counter() - start}


def sample_cells(size):
    cells = np.random.default_rng(1).choice(size * size, min(SAMPLE, size * size), replace=False)
    return np.divmod(np.sort(cells), size)


# ---- the parent: data, the three methods, the figures


def in_child(python, case, data, output):
    done = subprocess.run(
        [python, __file__, case, str(data), str(output)], capture_output=True, text=True, env=_child_env()
    )
    if done.returncode:
        sys.exit(f"{case} failed:\n{done.stdout[-3000:]}{done.stderr[-5000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child_env():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # KrigeKit's venv must not see the dev venv's numpy 1.x
    return env


def krigekit_python():
    python = os.environ.get("KRIGEKIT_PYTHON") or str(REPO / "build" / "bench-venv" / "bin" / "python")
    if not Path(python).exists():
        sys.exit(f"No KrigeKit python at {python}: run `make bench`, which makes its venv, or set KRIGEKIT_PYTHON.")
    return python


def write_geopackage(path, x, y, z):
    """The points as a GeoPackage layer `points` (field `value`) in CRS, via a CSV: OGR writes
    it in one go, not feature by feature."""
    from osgeo import gdal

    gdal.UseExceptions()
    csv = path.with_suffix(".csv")
    np.savetxt(csv, np.column_stack([x, y, z]), fmt="%.17g", delimiter=",", header="x,y,value", comments="")
    source = gdal.OpenEx(
        str(csv),
        gdal.OF_VECTOR,
        open_options=["X_POSSIBLE_NAMES=x", "Y_POSSIBLE_NAMES=y", "KEEP_GEOM_COLUMNS=NO", "AUTODETECT_TYPE=YES"],
    )
    gdal.VectorTranslate(str(path), source, format="GPKG", layerName="points", dstSRS=CRS, reproject=False)
    source = None
    csv.unlink()


def read_geotiff(path, left, top, pixel):
    from osgeo import gdal

    gdal.UseExceptions()
    dataset = gdal.Open(str(path))
    gt_left, gt_width, _, gt_top, _, gt_height = dataset.GetGeoTransform()
    if max(abs(gt_left - left), abs(gt_top - top)) > 1e-6 or max(abs(gt_width - pixel), abs(gt_height + pixel)) > 1e-9:
        sys.exit(f"{path}: geotransform {dataset.GetGeoTransform()} is not the bench's grid ({left}, {pixel}, {top})")
    return dataset.GetRasterBand(1).ReadAsArray().astype(float)


def timings(seconds):
    """'best 1.23 s, median 1.45 s (1.23, 1.60, …)'"""
    listed = ", ".join(f"{value:.2f}" for value in seconds)
    return f"best {min(seconds):.2f} s, median {statistics.median(seconds):.2f} s of {len(seconds)} ({listed})"


def relative(a, reference):
    return float(np.abs(a - reference).max() / np.abs(reference).max())


def thousands(n):
    return f"{n:,.0f}".replace(",", " ")


def met(ok):
    return "met" if ok else "NOT met"


def run_case(n, size, sampled, env, startup, python, folder):
    """Times the case; returns the function that then compares it with PyKrige."""
    sys.path.insert(0, str(REPO / "build" / "pluginpath"))
    sys.path.insert(0, str(HERE.parent))  # tests/: synthetic data
    from insar_subsidence.core.kriging import MODELS, experimental_variogram, fit_variogram
    from synthetic import subsidence_bowls

    x, y, z = subsidence_bowls(n, noise_sd=NOISE_SD, extent=EXTENT)
    x, y = x + X0, y + Y0
    # The nugget held at the noise's variance (2 mm)²: fitted, it comes out near 0 on these smooth
    # bowls, and a zero nugget would not tell a partial sill from a total one.
    fixed = {"nugget": NOISE_SD**2}
    named = fit_variogram(experimental_variogram(x, y, z, rng=0), MODEL, fixed).variogram.named
    psill, range_, nugget = named["psill"], named["range"], named["nugget"]
    pixel = EXTENT / size
    left, top = X0, Y0 + EXTENT
    xc = left + (np.arange(size) + 0.5) * pixel  # core.grid.Grid's cell centres
    yc = top - (np.arange(size) + 0.5) * pixel  # row 0: the north edge
    rows, columns = sample_cells(size) if sampled else (None, None)

    case = folder / f"{n}"
    case.mkdir()
    data = case / "data.npz"
    extra = {"rows": rows, "columns": columns} if sampled else {}
    np.savez(data, x=x, y=y, z=z, xc=xc, yc=yc, psill=psill, range=range_, nugget=nugget, **extra)
    write_geopackage(case / "points.gpkg", x, y, z)

    print(
        f"{thousands(n)} points -> {size} x {size} grid ({pixel:.1f} m cells), {NEIGHBOURS} neighbours, "
        f"the same {MODEL} variogram (fitted once, nugget held: partial sill {psill:.6g} mm², range {range_:.6g} m, "
        f"nugget {nugget:.6g} mm²):",
        flush=True,
    )
    parameters = {
        "POINTS": case / "points.gpkg",
        "FIELD": "value",
        "EXTENT": f"{left!r},{left + EXTENT!r},{top - EXTENT!r},{top!r} [{CRS}]",
        "PIXEL_SIZE": repr(pixel),
        "VARIOGRAM_MODEL": MODELS.index(MODEL),
        "SILL": repr(psill + nugget),  # krige's SILL is the total sill
        "RANGE": repr(range_),
        "NUGGET": repr(nugget),
        "N_NEIGHBOURS": NEIGHBOURS,
        "OUTPUT": case / "ours.tif",
        "OUTPUT_VARIANCE": case / "ours_variance.tif",
    }
    theirs, ours, core, krigekit_peak, peak = [], [], [], 0.0, 0.0
    for _ in range(RUNS):  # alternated, so that this machine's slow spells fall on all
        krigekit = in_child(python, "krigekit", data, case / "krigekit.npz")
        theirs.append(krigekit["seconds"])
        krigekit_peak = max(krigekit_peak, krigekit["peak_mb"])
        seconds, megabytes, _ = run("subsidence:krige", parameters, env)
        ours.append(seconds - startup)
        peak = max(peak, megabytes)
        core.append(in_child(sys.executable, "core", data, "-")["seconds"])
    print(f"  KrigeKit 0.3.1:       {timings(theirs)}; {THREADS} threads, its call only; peak {krigekit_peak:.0f} MB")
    print(f"  subsidence:krige:     {timings(ours)}; net: qgis_process less its start-up; peak {peak:.0f} MB")
    print(f"    of which kriging:   {timings(core)}; core.kriging's prediction alone, in-process")
    best, median = min(ours) / min(theirs), statistics.median(ours) / statistics.median(theirs)
    # Each run's ratio to the KrigeKit run just before it: the two share the machine's speed of the moment.
    paired = statistics.median(a / b for a, b in zip(ours, theirs))
    print(
        f"  ours_net / KrigeKit:  best {best:.2f}, median {median:.2f}, median of the paired runs {paired:.2f} "
        f"(goal <= {SPEED_GOAL:g}: best {met(best <= SPEED_GOAL)}, median {met(median <= SPEED_GOAL)}, "
        f"paired {met(paired <= SPEED_GOAL)})",
        flush=True,
    )
    if sampled:
        print(
            f"  peak memory of qgis_process: {peak:.0f} MB (goal <= {MEMORY_GOAL_MB} MB: {met(peak <= MEMORY_GOAL_MB)})"
        )

    def compare():
        """PyKrige, then the agreement: after every case's timings, as PyKrige's 15 GB at 20 000
        points slowed the runs after it by seconds."""
        print(f"{thousands(n)} points -> {size} x {size} grid:", flush=True)
        pykrige = in_child(sys.executable, "pykrige", data, case / "pykrige.npz")
        if sampled:
            print(
                f"  PyKrige (C backend): not run on the whole grid (its n x n kriging matrix alone would take "
                f"{thousands(8 * n * n / 2**30)} GiB); reference on {thousands(len(rows))} random cells, each "
                f"kriged by PyKrige from a subset holding its {NEIGHBOURS} nearest points "
                f"({pykrige['sample_seconds']:.1f} s)",
                flush=True,
            )
        else:
            print(
                f"  PyKrige (C backend):  {pykrige['seconds']:7.2f} s, peak {pykrige['peak_mb']:.0f} MB "
                "(its tile-by-tile sampling, used at 200 000 points, deviates "
                f"{pykrige['sample_method_deviation']:.1e} from its whole grid)",
                flush=True,
            )
        reference = np.load(case / "pykrige.npz")
        ours = [read_geotiff(case / name, left, top, pixel) for name in ("ours.tif", "ours_variance.tif")]
        theirs = np.load(case / "krigekit.npz")
        theirs = [theirs["values"], theirs["variance"]]
        if sampled:
            ours, theirs = [a[rows, columns] for a in ours], [a[rows, columns] for a in theirs]
        where = (
            f"{thousands(len(rows))} random cells" if sampled else f"the whole grid ({thousands(size * size)} cells)"
        )
        print(f"  agreement with PyKrige on {where}, max |a - PyKrige| / max |PyKrige|:")
        for name, (values, variance), goal in (("subsidence:krige", ours, True), ("KrigeKit", theirs, False)):
            v, s = relative(values, reference["values"]), relative(variance, reference["variance"])
            verdict = f" (goal <= {AGREEMENT_GOAL:g}: {met(max(v, s) <= AGREEMENT_GOAL)})" if goal else ""
            print(f"    {name + ':':17} values {v:.1e}, variance {s:.1e}{verdict}", flush=True)

    return compare


def main():
    python = krigekit_python()
    folder = Path(tempfile.mkdtemp(prefix="bench-kriging-"))
    try:
        env = environment()
        trivial = {
            "EXTENT": f"0,1,0,1 [{CRS}]",
            "TARGET_CRS": CRS,
            "PIXEL_SIZE": 1,
            "NUMBER": 0,
            "OUTPUT": folder / "constant.tif",
        }
        startups = [run("native:createconstantrasterlayer", trivial, env)[0] for _ in range(RUNS)]
        startup = min(startups)  # its floor: slow spells only add, and a smaller start-up is the cautious one
        print(f"qgis_process start-up (native:createconstantrasterlayer on a 1 x 1 raster): {timings(startups)}")
        comparisons = [run_case(n, size, sampled, env, startup, python, folder) for n, size, sampled in CASES]
        for compare in comparisons:
            compare()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        case, data, output = sys.argv[1:]
        figures = {"krigekit": child_krigekit, "pykrige": child_pykrige, "core": child_core}[case](data, output)
        print(json.dumps(figures))
    else:
        main()
