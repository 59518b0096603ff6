"""A CNN σ that covers the errors: the ensemble's spread plus a noise variance.

The spread of an ensemble's members says how much the networks disagree, not how far the data
scatter about what any of them can learn (noise, drivers that are missing). That part is a
variance s² estimated on points the networks did not train on (the validation points): the
smallest s² ≥ 0 for which the mean squared standardised error there, mean(r² / (spread² + s²)),
is at most 1. A single network has no spread: its σ is s alone.

The validation points used are those whose patch overlaps no training patch, as the test points
are kept from them: a validation point beside a training point is predicted almost as well as a
training point, and calibrating on it would make σ too small where there are no points.
"""

import numpy as np
from scipy.optimize import brentq
from scipy.spatial import cKDTree

from .patches import TRAIN, VAL

MIN_POINTS = 10  # calibration points below which every validation point is used


def noise_variance(residuals, spread):
    """s² for held-out residuals (observed - predicted) and the ensemble's spread there (its
    standard deviation; NaN for a single network). NaN without residuals."""
    residuals = np.asarray(residuals, float)
    if not len(residuals):
        return float("nan")
    squared, spread_squared = residuals**2, np.nan_to_num(np.asarray(spread, float)) ** 2
    high = float(np.mean(squared))  # excess(high) <= 0, as every term is at most squared / high
    if high == 0:
        return 0.0

    def excess(noise):  # decreasing in noise
        return float(np.mean(squared / (spread_squared + noise))) - 1.0

    if np.all(spread_squared > 0) and excess(0.0) <= 0:
        return 0.0
    low = 1e-12 * high
    if excess(low) <= 0:
        return low
    if excess(high) >= 0:  # zero only without spread (a single network), where s² = high exactly
        return high
    return float(brentq(excess, low, high, xtol=1e-12 * high))


def sigma(spread, noise):
    """The calibrated σ from the ensemble's spread (NaN for a single network) and s² (NaN when
    the model records none: then the spread alone)."""
    spread = np.asarray(spread, float)
    if np.isnan(noise):
        return spread
    return np.sqrt(np.nan_to_num(spread) ** 2 + noise)


def calibration_points(data):
    """(indices of the validation points to calibrate on, whether they are apart from the
    training patches): those whose patch overlaps no training patch (closer than a patch in both
    directions counts as overlapping, as for the test points), or every validation point when
    fewer than MIN_POINTS are."""
    split = data["split"]
    validation, training = np.flatnonzero(split == VAL), np.flatnonzero(split == TRAIN)
    if not len(validation) or not len(training):
        return validation, True
    cells = np.column_stack([data["x"] / data["pixel_size"][0], data["y"] / data["pixel_size"][1]])
    distance, _ = cKDTree(cells[training]).query(cells[validation], p=np.inf)
    apart = validation[distance >= int(data["patch_size"]) * (1 - 1e-9)]
    return (apart, True) if len(apart) >= MIN_POINTS else (validation, False)
