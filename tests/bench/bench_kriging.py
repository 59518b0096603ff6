"""Kriging at PS scale: PyKrige (C backend) against core.kriging on the same points, variogram and
neighbour count; then core.kriging alone on 200 000 points. Each case runs in its own process,
so that its peak memory is its own."""

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "build" / "pluginpath"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: synthetic data

from insar_subsidence.core.kriging import (
    OrdinaryKriging,
    cross_validation_statistics,
    experimental_variogram,
    fit_variogram,
)
from synthetic import subsidence_bowls

EXTENT = 100_000.0  # metres
NEIGHBOURS = 32
MODEL = "gaussian"  # smooth bowls: the model without warnings on this field (see the log of krige)


def subsidence_points(n):
    return subsidence_bowls(n, noise_sd=2.0, extent=EXTENT)


def grid(size):
    centres = (np.arange(size) + 0.5) * EXTENT / size
    return centres, np.meshgrid(centres, centres)


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def case_pykrige(n, size, output):
    from pykrige.ok import OrdinaryKriging as PyKrige

    x, y, z = subsidence_points(n)
    variogram = fit_variogram(experimental_variogram(x, y, z, rng=0), MODEL).variogram
    centres, _ = grid(size)

    def run():
        kriging = PyKrige(x, y, z, variogram_model=MODEL, variogram_parameters=variogram.as_pykrige_dict())
        return kriging.execute("grid", centres, centres, backend="C", n_closest_points=NEIGHBOURS)

    (values, _), seconds = timed(run)
    np.save(output, np.asarray(values))
    return {"seconds": seconds, "peak_mb": peak_mb()}


def case_ours(n, size, output, with_fit_and_cross_validation=0):
    x, y, z = subsidence_points(n)
    (fit, fit_seconds) = timed(lambda: fit_variogram(experimental_variogram(x, y, z, rng=0), MODEL))
    kriging = OrdinaryKriging(x, y, z, fit.variogram, NEIGHBOURS)
    figures = {"fit_seconds": fit_seconds}
    if with_fit_and_cross_validation:
        statistics, figures["loo_seconds"] = timed(lambda: cross_validation_statistics(*kriging.leave_one_out()))
        figures["loo_msse"] = statistics["MSSE"]
    _, (gx, gy) = grid(size)
    (values, _), figures["seconds"] = timed(lambda: OrdinaryKriging(x, y, z, fit.variogram, NEIGHBOURS).predict(gx, gy))
    figures["peak_mb"] = peak_mb()
    if output != "-":
        np.save(output, values)
    return figures


def in_child(*arguments):
    done = subprocess.run([sys.executable, __file__, *map(str, arguments)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    print(f"20 000 points -> 300 x 300 grid, {NEIGHBOURS} neighbours, same {MODEL} variogram:")
    folder = Path(tempfile.mkdtemp())
    theirs = in_child("pykrige", 20_000, 300, folder / "pykrige.npy")
    ours = in_child("ours", 20_000, 300, folder / "ours.npy")
    difference = np.abs(np.load(folder / "pykrige.npy") - np.load(folder / "ours.npy"))
    print(f"  PyKrige (C backend): {theirs['seconds']:.1f} s, peak {theirs['peak_mb']:.0f} MB")
    print(f"  core.kriging:        {ours['seconds']:.2f} s, peak {ours['peak_mb']:.0f} MB")
    print(f"  speed-up: {theirs['seconds'] / ours['seconds']:.0f}x (target >= 20x)")
    print(f"  grids agree: largest difference {difference.max():.2e} mm over {difference.size} cells")

    large = in_child("ours", 200_000, 1000, "-", 1)
    total = large["fit_seconds"] + large["loo_seconds"] + large["seconds"]
    print(f"200 000 points -> 1000 x 1000 grid, {NEIGHBOURS} neighbours (core.kriging):")
    print(
        f"  variogram fit {large['fit_seconds']:.2f} s, leave-one-out {large['loo_seconds']:.1f} s "
        f"(MSSE {large['loo_msse']:.2f}), grid {large['seconds']:.1f} s"
    )
    print(f"  total {total:.1f} s (target <= 60 s), peak memory {large['peak_mb']:.0f} MB (target <= 2048 MB)")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        case, n, size, output, *flags = sys.argv[1:]
        if case == "pykrige":
            figures = case_pykrige(int(n), int(size), output)
        else:
            figures = case_ours(int(n), int(size), output, *map(int, flags))
        print(json.dumps(figures))
    else:
        main()
