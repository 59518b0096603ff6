"""Synthetic data shared by the tests and the benchmarks."""

import numpy as np


def subsidence_bowls(n, noise_sd=2.0, extent=1e5, seed=0):
    """n random points over 12 smooth subsidence bowls (20-120 mm deep, 3-15 km wide) in an
    extent x extent square, plus white noise of standard deviation noise_sd (mm)."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, extent, n), rng.uniform(0, extent, n)
    centres, depth, width = rng.uniform(0, extent, (12, 2)), rng.uniform(20, 120, 12), rng.uniform(3000, 15000, 12)
    field = -sum(
        d * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * w**2)) for (cx, cy), d, w in zip(centres, depth, width)
    )
    return x, y, field + rng.normal(0, noise_sd, n)


LAND_USES = {1: "built-up", 2: "fields", 3: "bare"}


def subsidence_scenario(rows=300, columns=300, cell=25.0, seed=0, noise=1.0):
    """A basin where the truth is known on every cell: drawdown around the nearest pumping well,
    decaying with distance, times the thickness of compressible clay (to a power), more on
    irrigated fields, plus a smooth spatial residual (4 mm). PS points are dense on built-up land and sparse on
    fields and bare land, as radar finds them. Returns a dict of (rows, columns) float32 rasters
    (`dem`, `clay`, `distance` to the nearest well, `landuse` 1/2/3, `truth` in mm), the well cells
    `wells`, and the points: `ps_rows`, `ps_columns`, `ps_value` (truth + normal noise of
    standard deviation `noise`, in mm)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)

    def smooth(sigma):
        field = gaussian_filter(rng.normal(0, 1, (rows, columns)), sigma, mode="reflect")
        return field / field.std()

    r, c = np.mgrid[0:rows, 0:columns]
    dem = 2200 + 25 * smooth(20) + 0.02 * cell * c / 10  # m, a gentle tilt to the east
    clay = np.clip(30 - 0.6 * (dem - dem.mean()) + 8 * smooth(12), 2, None)  # m, thicker low down
    urban, farmed = smooth(10), smooth(14)
    landuse = np.where(urban > 0.3, 1, np.where(farmed > -0.3, 2, 3))
    well_rows, well_columns = rng.integers(0, rows, 12), rng.integers(0, columns, 12)
    distance = (
        np.min(np.hypot(r[None] - well_rows[:, None, None], c[None] - well_columns[:, None, None]), axis=0) * cell
    )
    drawdown = 30 * np.exp(-distance / 1200.0)  # m, the nearest well's cone
    truth = -3 * drawdown * (clay / 30) ** 1.5 - 8 * (landuse == 2) + 4 * smooth(16)  # mm
    chance = np.select([landuse == 1, landuse == 2], [0.04, 0.0015], 0.005)
    picked = rng.random((rows, columns)) < chance
    ps_rows, ps_columns = np.nonzero(picked)
    return {
        "dem": dem.astype(np.float32),
        "clay": clay.astype(np.float32),
        "distance": distance.astype(np.float32),
        "landuse": landuse.astype(np.float32),
        "truth": truth.astype(np.float32),
        "wells": (well_rows, well_columns),
        "ps_rows": ps_rows,
        "ps_columns": ps_columns,
        "ps_value": truth[picked] + rng.normal(0, noise, len(ps_rows)),
    }
