"""Synthetic data shared by the tests and the benchmarks."""

import numpy as np


def subsidence_bowls(n, noise_sd=2.0, extent=1e5, seed=0):
    """n random points over 12 smooth subsidence bowls (20-120 mm deep, 3-15 km wide) in an
    extent x extent square, plus white noise of standard deviation noise_sd (mm)."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, extent, n), rng.uniform(0, extent, n)
    centres, depth, width = rng.uniform(0, extent, (12, 2)), rng.uniform(20, 120, 12), rng.uniform(3000, 15000, 12)
    field = -sum(d * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * w**2)) for (cx, cy), d, w in zip(centres, depth, width))
    return x, y, field + rng.normal(0, noise_sd, n)
