"""Regression scores in the target's units."""

import numpy as np
from scipy.special import erf

NAMES = ("n", "rmse", "mae", "r2", "bias")


def regression(observed, predicted):
    """n, RMSE, MAE, R² (1 - SSres / SStot; NaN below 2 points or without spread) and bias
    (mean of predicted - observed)."""
    observed, predicted = np.asarray(observed, float), np.asarray(predicted, float)
    if not len(observed):
        return {"n": 0, "rmse": float("nan"), "mae": float("nan"), "r2": float("nan"), "bias": float("nan")}
    error = predicted - observed
    spread = float(np.sum((observed - observed.mean()) ** 2))
    return {
        "n": int(len(observed)),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": 1.0 - float(np.sum(error**2)) / spread if len(observed) > 1 and spread > 0 else float("nan"),
        "bias": float(np.mean(error)),
    }


COVERAGE_NAMES = ("within_1_sigma", "within_2_sigma")
GAUSSIAN_COVERAGE = (68.27, 95.45)  # % within ±1σ and ±2σ of a normal distribution


def coverage(observed, predicted, sigma):
    """% of the points whose error |predicted - observed| is at most 1 and 2 x their sigma (the
    predicted standard deviation): for a calibrated sigma and Gaussian errors, GAUSSIAN_COVERAGE.
    NaN without points or without a finite sigma."""
    error = np.abs(np.asarray(predicted, float) - np.asarray(observed, float))
    sigma = np.asarray(sigma, float)
    if not len(error) or not np.isfinite(sigma).all():
        return dict.fromkeys(COVERAGE_NAMES, float("nan"))
    return {name: float(100.0 * np.mean(error <= k * sigma)) for k, name in enumerate(COVERAGE_NAMES, start=1)}


def crps(observed, predicted, sigma):
    """The mean continuous ranked probability score of normal predictions N(predicted, sigma²),
    in the target's units (Gneiting & Raftery 2007): lower is better, and it rewards a σ that is
    both honest and small. NaN without points or without a finite positive sigma."""
    observed, predicted, sigma = (np.asarray(values, float) for values in (observed, predicted, sigma))
    if not len(observed) or not (np.isfinite(sigma).all() and (sigma > 0).all()):
        return float("nan")
    z = (observed - predicted) / sigma
    return float(
        np.mean(sigma * (z * erf(z / np.sqrt(2)) + np.sqrt(2 / np.pi) * np.exp(-0.5 * z**2) - 1 / np.sqrt(np.pi)))
    )
