"""Amplitude dispersion D_A = sigma_A / mu_A over a stack of calibrated SAR amplitudes, the
classic PS candidate selection (Ferretti et al. 2001): stable scatterers have D_A below ~0.25.

sigma_A is the sample standard deviation (N - 1, as StaMPS computes it with Matlab's std), over
the images whose value is valid at that pixel; fewer than two valid images, or a mean of 0,
give NaN.
"""

import numpy as np

BLOCK_BYTES = 64 * 2**20  # float64 stack per row block; the peak is a few times this
MIN_IMAGES_ADVISED = 15  # below this D_A is a poor estimate of the phase stability


def rows_per_block(n_images, width):
    return max(1, BLOCK_BYTES // (8 * n_images * max(width, 1)))


def dispersion(stack):
    """(D_A, mean amplitude) of a block (images, rows, cols); non-finite values are not valid."""
    stack = np.asarray(stack, dtype=float)
    valid = np.isfinite(stack)
    count = valid.sum(axis=0)
    values = np.where(valid, stack, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = values.sum(axis=0) / count
        squares = np.where(valid, (stack - mean) ** 2, 0.0).sum(axis=0)
        sigma = np.sqrt(squares / (count - 1))
        ratio = sigma / mean
    enough = (count >= 2) & (mean != 0)
    return np.where(enough, ratio, np.nan), np.where(count >= 1, mean, np.nan)
