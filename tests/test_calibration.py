"""core.calibration's noise variance and core.metrics' CRPS against independent oracles."""

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import norm

from insar_subsidence.core import calibration, metrics


def test_the_noise_variance_makes_the_mean_squared_standardised_error_one():
    rng = np.random.default_rng(0)
    spread = rng.uniform(0.2, 0.6, 500)
    residuals = rng.normal(0, np.sqrt(spread**2 + 1.5**2))  # the spread misses a noise of σ 1.5
    noise = calibration.noise_variance(residuals, spread)
    assert np.mean(residuals**2 / (spread**2 + noise)) == pytest.approx(1.0, rel=1e-9)
    assert noise == pytest.approx(1.5**2, rel=0.15)
    np.testing.assert_allclose(calibration.sigma(spread, noise), np.sqrt(spread**2 + noise))


def test_a_spread_that_covers_the_errors_gets_no_noise_and_a_single_network_gets_the_mean_square():
    rng = np.random.default_rng(1)
    spread = rng.uniform(1, 2, 300)
    assert calibration.noise_variance(0.5 * spread * rng.standard_normal(300), spread) == 0.0
    residuals = rng.normal(0, 3, 300)
    single = np.full(300, np.nan)
    assert calibration.noise_variance(residuals, single) == pytest.approx(np.mean(residuals**2), rel=1e-9)
    np.testing.assert_allclose(calibration.sigma(single, 4.0), 2.0)
    assert np.isnan(calibration.sigma(single, float("nan"))).all()  # no calibration recorded: the spread alone
    assert np.isnan(calibration.noise_variance([], []))


def test_crps_equals_the_integral_of_the_squared_distance_between_the_distributions():
    rng = np.random.default_rng(2)
    observed, predicted, sigma = rng.normal(0, 2, 20), rng.normal(0, 2, 20), rng.uniform(0.3, 3, 20)

    def integral(y, mu, s):  # CRPS = ∫ (F(t) - 1{t >= y})² dt
        below = quad(lambda t: norm.cdf(t, mu, s) ** 2, -np.inf, y)[0]
        above = quad(lambda t: (1 - norm.cdf(t, mu, s)) ** 2, y, np.inf)[0]
        return below + above

    expected = np.mean([integral(*values) for values in zip(observed, predicted, sigma)])
    assert metrics.crps(observed, predicted, sigma) == pytest.approx(expected, rel=1e-7)
    assert np.isnan(metrics.crps(observed, predicted, np.full(20, np.nan)))


def test_calibration_points_are_the_validation_points_apart_from_every_training_patch():
    rng = np.random.default_rng(3)
    n = 400
    x, y = rng.uniform(0, 3000, n), rng.uniform(0, 3000, n)
    split = np.where(x < 1000, 1, 0).astype(np.int8)  # validation on the west, training on the east
    data = {"x": x, "y": y, "split": split, "pixel_size": np.array([10.0, 20.0]), "patch_size": 8}
    chosen, apart = calibration.calibration_points(data)
    # Brute force: a patch is 80 m wide and 160 m high; overlapping means closer in both directions.
    train = np.flatnonzero(split == 0)
    overlaps = [
        ((np.abs(x[i] - x[train]) < 80) & (np.abs(y[i] - y[train]) < 160)).any() for i in np.flatnonzero(split == 1)
    ]
    assert apart and np.array_equal(chosen, np.flatnonzero(split == 1)[~np.array(overlaps)])
    assert 0 < len(chosen) < (split == 1).sum()
    data.update(
        x=x / 3, y=y / 3, split=np.where(rng.random(n) < 0.2, 1, 0).astype(np.int8)
    )  # mixed in, dense: too few apart
    chosen, apart = calibration.calibration_points(data)
    assert not apart and np.array_equal(chosen, np.flatnonzero(data["split"] == 1))


def test_a_single_network_gets_the_mean_square_even_where_rounding_would_hide_the_root():
    residuals = np.array([0.1, 0.7, -1.3, 2.9, 0.3, -0.2, 1.1])  # mean(r² / mean(r²)) rounds above 1
    assert calibration.noise_variance(residuals, np.full(7, np.nan)) == np.mean(residuals**2)
