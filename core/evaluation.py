"""CNN versus ordinary kriging on the same held-out (test) points of a dataset.

Kriging is fitted and run on the training and validation points only; the CNN predicts the test
points from their stored patches. Both are scored with core.metrics in the target's units.
"""

from dataclasses import dataclass

import numpy as np

from . import metrics
from .errors import InputError
from .kriging import OrdinaryKriging, check_points, experimental_variogram, fit_variogram, merge_coincident
from .patches import TEST


@dataclass
class Comparison:
    test: np.ndarray  # indices of the test points in the dataset
    observed: np.ndarray
    cnn: np.ndarray
    kriging: np.ndarray
    kriging_variance: np.ndarray
    scores: dict  # {"cnn": metrics, "kriging": metrics}
    kriging_points: int  # how many points kriging was given (training + validation, merged)

    @property
    def improvement_percent(self):
        """How much lower the CNN's RMSE is than kriging's, in % of kriging's."""
        return 100.0 * (1.0 - self.scores["cnn"]["rmse"] / self.scores["kriging"]["rmse"])


def compare(data, predict_patches, variogram_model, n_neighbours, seed=0):
    """data: open_dataset's dict; predict_patches(patches) -> values in the target's units."""
    split = data["split"]
    test = np.flatnonzero(split == TEST)
    if not len(test):
        raise InputError("The dataset has no test points: export it with a split that keeps some (SPLIT, TEST_FRACTION).")
    known = np.flatnonzero(split != TEST)
    x, y, z, _ = merge_coincident(data["x"][known], data["y"][known], data["targets"][known].astype(float))
    check_points(x, y, z)
    fit = fit_variogram(experimental_variogram(x, y, z, rng=seed), variogram_model)
    kriged, variance = OrdinaryKriging(x, y, z, fit.variogram, n_neighbours).predict(data["x"][test], data["y"][test])
    cnn = np.asarray(predict_patches(np.asarray(data["patches"][test], np.float32)), float)
    observed = data["targets"][test].astype(float)
    scores = {"cnn": metrics.regression(observed, cnn), "kriging": metrics.regression(observed, kriged)}
    return Comparison(test, observed, cnn, kriged, variance, scores, len(z))
