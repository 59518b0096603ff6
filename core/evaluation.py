"""CNN versus ordinary kriging on the same held-out (test) points of a dataset.

Kriging is fitted and run on the training and validation points only; the CNN predicts the test
points from their stored patches. Both are scored with core.metrics in the target's units.
"""

from dataclasses import dataclass

import numpy as np

from . import metrics
from .errors import InputError
from .kriging import OrdinaryKriging, check_points, experimental_variogram, fit_variogram, merge_coincident
from .patches import TEST, drop_test_overlaps, spatial_blocks, square_blocks
from .prediction import ensemble_summary


@dataclass
class Comparison:
    test: np.ndarray  # indices of the test points in the dataset
    observed: np.ndarray
    cnn: np.ndarray  # the mean of the ensemble's members
    cnn_sigma: np.ndarray  # their standard deviation (NaN for a single network)
    kriging: np.ndarray
    kriging_variance: np.ndarray
    scores: dict  # {"cnn": metrics, "kriging": metrics}
    calibration: dict  # {"cnn": metrics.coverage, "kriging": metrics.coverage}
    kriging_points: int  # how many points kriging was given (training + validation, merged)

    @property
    def improvement_percent(self):
        """How much lower the CNN's RMSE is than kriging's, in % of kriging's."""
        return 100.0 * (1.0 - self.scores["cnn"]["rmse"] / self.scores["kriging"]["rmse"])


def compare(data, predict_patches, variogram_model, n_neighbours, seed=0):
    """data: open_dataset's dict; predict_patches(patches) -> (patches, members) values in the
    target's units."""
    split = data["split"]
    test = np.flatnonzero(split == TEST)
    if not len(test):
        raise InputError("The dataset has no test points: export it with a split that keeps some (SPLIT, TEST_FRACTION).")
    known = np.flatnonzero(split != TEST)
    x, y, z, _ = merge_coincident(data["x"][known], data["y"][known], data["targets"][known].astype(float))
    check_points(x, y, z)
    fit = fit_variogram(experimental_variogram(x, y, z, rng=seed), variogram_model)
    kriged, variance = OrdinaryKriging(x, y, z, fit.variogram, n_neighbours).predict(data["x"][test], data["y"][test])
    cnn, cnn_sigma = ensemble_summary(np.asarray(predict_patches(np.asarray(data["patches"][test], np.float32)), float).T)
    observed = data["targets"][test].astype(float)
    scores = {"cnn": metrics.regression(observed, cnn), "kriging": metrics.regression(observed, kriged)}
    calibration = {"cnn": metrics.coverage(observed, cnn, cnn_sigma), "kriging": metrics.coverage(observed, kriged, np.sqrt(variance))}
    return Comparison(test, observed, cnn, cnn_sigma, kriged, variance, scores, calibration, len(z))



def spatial_folds(x, y, block_size, folds, rng):
    """Fold 0 … folds-1 of every point: whole square blocks, the largest first, each to the fold
    that has the fewest points so far."""
    block_of = square_blocks(x, y, block_size)
    counts = np.bincount(block_of)
    blocks = len(counts)
    if blocks < folds:
        raise InputError(f"The points fall in {blocks} blocks of {block_size:g} map units, fewer than FOLDS = {folds}: choose fewer folds.")
    fold_of_block, filled = np.empty(blocks, np.int64), np.zeros(folds)
    for block in sorted(rng.permutation(blocks), key=lambda block: -counts[block]):
        fold_of_block[block] = int(np.argmin(filled))
        filled[fold_of_block[block]] += counts[block]
    return fold_of_block[block_of]


def fold_split(test, x, y, pixel_size, patch_size, block_size, val_fraction, rng):
    """The split of one fold (test: its points, boolean): TEST there, the other points' blocks
    TRAIN or VAL (about val_fraction of them), DROPPED where their patch might overlap a test patch.
    The dataset keeps the points' coordinates, not their cells: points closer than a patch in both
    directions are taken to overlap, which includes every pair of overlapping patches."""
    labels = np.full(len(x), TEST)
    others = np.flatnonzero(~test)
    labels[others] = spatial_blocks(x[others], y[others], block_size, val_fraction, 0.0, rng)
    columns, rows = (x - x.min()) / pixel_size[0], (y.max() - y) / pixel_size[1]
    return drop_test_overlaps(rows, columns, labels, patch_size)[0]


@dataclass
class CrossValidation:
    predicted: dict  # {"cnn": …, "kriging": …}: every point's prediction by the fold that held it out
    scores: dict  # over all points: {"cnn": metrics, "kriging": metrics}
    calibration: dict  # over all points: {"cnn": metrics.coverage, "kriging": metrics.coverage}
    fold_scores: list  # one scores dict per fold


def pooled(data, predicted, sigma, fold_scores):
    """The CrossValidation of out-of-fold predictions and their standard deviations (dicts by method)."""
    observed = data["targets"].astype(float)
    scores = {method: metrics.regression(observed, values) for method, values in predicted.items()}
    calibration = {method: metrics.coverage(observed, predicted[method], sigma[method]) for method in predicted}
    return CrossValidation(predicted, scores, calibration, fold_scores)
