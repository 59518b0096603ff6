"""Every method on the same held-out (test) points of a dataset.

- mean: the training points' mean, the null model every map must beat;
- kriging: ordinary kriging of the training and validation points;
- regression_kriging: a linear trend on each driver's patch-centre value and patch mean, fitted by
  least squares on the training and validation points, plus ordinary kriging of its residuals;
- cnn: the model's ensemble mean, from the stored patches; its σ is the ensemble's spread plus the
  noise variance calibrated on the validation points apart from the training patches
  (core.calibration);
- hybrid: the CNN plus ordinary kriging of its residuals at the validation points, the only points
  whose residuals are out of sample (at its training points a network's residuals are near zero).
  Its σ is the kriging standard deviation of those residuals.
Every method is scored with core.metrics on the same test indices, in the target's units.
"""

from dataclasses import dataclass

import numpy as np

from . import calibration, metrics
from .errors import InputError
from .kriging import OrdinaryKriging, check_points, experimental_variogram, fit_variogram, merge_coincident
from .patches import TEST, TRAIN, VAL, centre_and_mean, drop_test_overlaps, spatial_blocks, square_blocks
from .prediction import ensemble_summary

METHODS = ("mean", "kriging", "regression_kriging", "cnn", "hybrid")
NAMES = {
    "mean": "training mean (null model)",
    "kriging": "ordinary kriging",
    "regression_kriging": "regression kriging",
    "cnn": "CNN",
    "hybrid": "hybrid (CNN + kriged residuals)",
}


@dataclass
class Comparison:
    test: np.ndarray  # indices of the test points in the dataset
    observed: np.ndarray
    predicted: dict  # by method: the test points' predictions
    sigma: dict  # by method: their standard deviation (NaN where the method has none)
    cnn_spread: np.ndarray  # the ensemble members' standard deviation (NaN for a single network)
    scores: dict  # by method: metrics.regression
    calibration: dict  # by method: metrics.coverage and "crps"
    points: dict  # by method: how many points it learnt from; "calibration": the CNN's σ's
    variograms: dict  # by kriged method: the fitted core.kriging.Fit
    noise_variance: float  # the CNN's, calibrated on the validation points (NaN without them)
    notes: list  # why a method could not be scored

    def ranking(self):
        """The scored methods, lowest RMSE first."""
        return sorted(
            (method for method in METHODS if np.isfinite(self.scores[method]["rmse"])),
            key=lambda method: self.scores[method]["rmse"],
        )


def compare(data, predict_patches, variogram_model, n_neighbours, seed=0):
    """data: open_dataset's dict; predict_patches(patches) -> (patches, members) values in the
    target's units."""
    split = data["split"]
    test = np.flatnonzero(split == TEST)
    if not len(test):
        raise InputError(
            "The dataset has no test points: export it with a split that keeps some (SPLIT, TEST_FRACTION)."
        )
    known, validation = np.flatnonzero(split != TEST), np.flatnonzero(split == VAL)
    x, y, targets = data["x"], data["y"], data["targets"].astype(float)
    observed = targets[test]
    predicted, sigma, points, variograms, notes = {}, {}, {}, {}, []

    predicted["mean"] = np.full(len(test), targets[split == TRAIN].mean())
    sigma["mean"], points["mean"] = np.full(len(test), np.nan), int((split == TRAIN).sum())

    kriging, variograms["kriging"], points["kriging"] = kriged(
        x[known], y[known], targets[known], variogram_model, n_neighbours, seed
    )
    predicted["kriging"], variance = kriging.predict(x[test], y[test])
    sigma["kriging"] = np.sqrt(variance)
    notes += regularised_note(kriging, "kriging")

    features = trend_features(data["patches"])
    coefficients = fit_trend(features[known], targets[known])
    trend = features @ coefficients
    residual_kriging, variograms["regression_kriging"], points["regression_kriging"] = kriged(
        x[known], y[known], targets[known] - trend[known], variogram_model, n_neighbours, seed
    )
    correction, variance = residual_kriging.predict(x[test], y[test])
    predicted["regression_kriging"], sigma["regression_kriging"] = trend[test] + correction, np.sqrt(variance)
    notes += regularised_note(residual_kriging, "regression kriging")

    members = np.asarray(
        predict_patches(np.asarray(data["patches"][np.concatenate([test, validation])], np.float32)), float
    ).T
    cnn, spread = ensemble_summary(members)
    calibrating, _ = calibration.calibration_points(data)
    chosen = len(test) + np.flatnonzero(np.isin(validation, calibrating))
    noise = calibration.noise_variance(targets[calibrating] - cnn[chosen], spread[chosen])
    predicted["cnn"], sigma["cnn"], cnn_spread = (
        cnn[: len(test)],
        calibration.sigma(spread[: len(test)], noise),
        spread[: len(test)],
    )
    points["cnn"] = int((split == TRAIN).sum())
    points["calibration"] = len(calibrating)

    try:
        residuals = targets[validation] - cnn[len(test) :]
        residual_kriging, variograms["hybrid"], points["hybrid"] = kriged(
            x[validation], y[validation], residuals, variogram_model, n_neighbours, seed
        )
        correction, variance = residual_kriging.predict(x[test], y[test])
        predicted["hybrid"], sigma["hybrid"] = predicted["cnn"] + correction, np.sqrt(variance)
        notes += regularised_note(residual_kriging, "hybrid")
    except InputError as error:
        notes.append(
            f"The hybrid kriges the CNN's residuals at the {len(validation)} validation points, "
            f"and cannot here: {error}"
        )
        predicted["hybrid"] = sigma["hybrid"] = np.full(len(test), np.nan)
        points["hybrid"] = len(validation)

    scores = {method: metrics.regression(observed, predicted[method]) for method in METHODS}
    return Comparison(
        test,
        observed,
        predicted,
        sigma,
        cnn_spread,
        scores,
        probabilistic(observed, predicted, sigma),
        points,
        variograms,
        noise,
        notes,
    )


def kriged(x, y, z, variogram_model, n_neighbours, seed):
    """Ordinary kriging of the points (coincident ones merged) with a variogram fitted to them:
    (the OrdinaryKriging, its core.kriging.Fit, the number of points after merging)."""
    x, y, z, _ = merge_coincident(x, y, z)
    check_points(x, y, z)
    fit = fit_variogram(experimental_variogram(x, y, z, rng=seed), variogram_model)
    return OrdinaryKriging(x, y, z, fit.variogram, n_neighbours), fit, len(z)


def regularised_note(kriging, method):
    """A note when the kriging raised its nugget for some test points (core.kriging's guard)."""
    if not kriging.regularised:
        return []
    return [
        f"The {method} raised its nugget by up to {kriging.raised_nugget:.4g} for {kriging.regularised} test "
        "points, whose neighbours include near-duplicate points (a nearly singular kriging system)."
    ]


def trend_features(patches):
    """Regression kriging's covariates (N, 1 + 2C): a constant, then each band's patch-centre value
    and patch mean (core.patches.centre_and_mean)."""
    return np.column_stack([np.ones(len(patches)), centre_and_mean(patches)])


def fit_trend(features, targets):
    """Least-squares coefficients of the trend (the minimum-norm ones where covariates are collinear)."""
    return np.linalg.lstsq(features, targets, rcond=None)[0]


def probabilistic(observed, predicted, sigma):
    """By method: the % of errors within ±1σ and ±2σ, and the mean CRPS (NaN without a σ)."""
    return {
        method: {
            **metrics.coverage(observed, predicted[method], sigma[method]),
            "crps": metrics.crps(observed, predicted[method], sigma[method]),
        }
        for method in predicted
    }


def verdict(ranking, scores):
    """Which map to use, in plain words, from the methods ranked by RMSE and their scores."""
    if not ranking:
        return "No method could be scored on these points."
    best = ranking[0]
    if len(ranking) == 1:
        return f"Only {NAMES[best]} could be scored on these points."
    runner_up = ranking[1]
    margin = 100.0 * (1.0 - scores[best]["rmse"] / scores[runner_up]["rmse"])
    beaten = f"its RMSE is {margin:.0f} % below that of {NAMES[runner_up]}, the next best"
    if best == "mean":
        return f"On these points no method beats the training mean ({beaten}): no map here is better than a constant."
    advice = {
        "kriging": "use the kriged surface ('Ordinary kriging').",
        "regression_kriging": "this plugin does not map regression kriging yet; of its maps, use the best one below.",
        "cnn": "use the CNN's surface ('Predict the surface').",
        "hybrid": "use the CNN's surface with its kriged residuals ('Krige the residuals of a surface').",
    }[best]
    text = f"On these points {NAMES[best]} has the lowest RMSE: {beaten}; {advice}"
    if best == "regression_kriging":
        mapped = [method for method in ranking if method in ("kriging", "cnn", "hybrid")]
        if mapped:
            text += f" That is {NAMES[mapped[0]]}."
    return text


def spatial_folds(x, y, block_size, folds, rng):
    """Fold 0 … folds-1 of every point: whole square blocks, the largest first, each to the fold
    that has the fewest points so far."""
    block_of = square_blocks(x, y, block_size)
    counts = np.bincount(block_of)
    blocks = len(counts)
    if blocks < folds:
        raise InputError(
            f"The points fall in {blocks} blocks of {block_size:g} map units, fewer than FOLDS = {folds}: "
            "choose fewer folds."
        )
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
    predicted: dict  # by method: every point's prediction by the fold that held it out
    scores: dict  # by method, over all points: metrics.regression
    calibration: dict  # by method, over all points: metrics.coverage and "crps"
    fold_scores: list  # one scores dict (by method) per fold


def pooled(data, predicted, sigma, fold_scores):
    """The CrossValidation of out-of-fold predictions and their standard deviations (dicts by method)."""
    observed = data["targets"].astype(float)
    scores = {method: metrics.regression(observed, values) for method, values in predicted.items()}
    return CrossValidation(predicted, scores, probabilistic(observed, predicted, sigma), fold_scores)
