"""The training recipes' plans and the band transforms, against their definitions."""

import math

import numpy as np
import pytest

# The CNN runs in the training interpreter, not in QGIS's Python: where the tests run in a QGIS
# without torch (make test-qgis), these are skipped.
torch = pytest.importorskip("torch")

from insar_subsidence.core import transforms  # noqa: E402  (after the skip: these import torch)
from insar_subsidence.models import recipe  # noqa: E402  (after the skip: these import torch)
from insar_subsidence.models.cnn import Deployed  # noqa: E402  (after the skip: these import torch)


@pytest.mark.parametrize(
    "n_train, epochs", [(200, 572), (800, 160), (5000, 26), (50_000, recipe.MIN_EPOCHS), (20, recipe.MAX_EPOCHS)]
)
def test_the_adaptive_budget_is_in_steps(n_train, epochs):
    plan = recipe.plan("adaptive", n_train)
    assert (plan.optimiser, plan.learning_rate, plan.weight_decay, plan.batch_size, plan.clip_norm) == (
        "adamw",
        1e-3,
        1e-4,
        32,
        1.0,
    )
    assert plan.steps_per_epoch == math.ceil(n_train / 32) and plan.epochs == epochs
    assert plan.warmup_epochs == math.ceil(0.1 * epochs)


def test_the_paper_recipe_is_the_published_one_and_given_values_win():
    plan = recipe.plan("paper", 48_790)
    assert (
        plan.optimiser,
        plan.learning_rate,
        plan.weight_decay,
        plan.batch_size,
        plan.epochs,
        plan.warmup_epochs,
        plan.clip_norm,
    ) == ("adam", 1e-4, 0.0, 128, 150, 0, 0.0)
    assert [plan.rate_factor(step) for step in (0, 1000, 50_000)] == [1.0, 1.0, 1.0]
    given = recipe.plan("adaptive", 1000, epochs=20, batch_size=64, learning_rate=3e-3)
    assert (given.epochs, given.batch_size, given.learning_rate, given.warmup_epochs) == (20, 64, 3e-3, 2)


def test_the_rate_warms_up_linearly_then_follows_a_cosine_to_one_percent():
    plan = recipe.plan("adaptive", 320, epochs=100)  # 10 steps an epoch, 100 warm-up steps
    factors = np.array([plan.rate_factor(step) for step in range(1000)])
    np.testing.assert_allclose(factors[:100], np.arange(1, 101) / 100)
    after = np.arange(100, 1000)
    expected = 0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * (after - 100) / 900))
    np.testing.assert_allclose(factors[100:], expected)
    assert factors[100] == 1.0 and factors[-1] == pytest.approx(0.01, abs=1e-4)


def test_heavy_tailed_non_negative_bands_are_log_scaled_and_no_others():
    rng = np.random.default_rng(0)
    n = 400
    patches = np.stack(
        [
            rng.normal(100, 10, (n, 8, 8)),  # elevation-like
            rng.lognormal(3, 1.5, (n, 8, 8)),  # catchment-like: log-scaled
            (rng.random((n, 8, 8)) < 0.05).astype(float),  # a rare one-hot class
            -rng.lognormal(3, 1.5, (n, 8, 8)),  # skewed, but negative
            rng.exponential(5.0, (n, 8, 8)) * (rng.random((n, 8, 8)) < 0.3),  # SPI-like, with zeros
        ],
        axis=1,
    ).astype(np.float32)
    scales = transforms.log_scales(patches, np.arange(n))
    for band in (1, 4):  # the scale is the median of the positive values (for band 4: 5 ln 2)
        values = patches[:, band].ravel()
        assert scales[band] == pytest.approx(np.median(values[values > 0]), rel=0.05), band
    assert scales[4] == pytest.approx(5 * np.log(2), rel=0.05)
    assert scales[0] == scales[3] == 0
    # A one-hot band's skew may pass the test; any monotone rescaling of 0/1 is the same after standardising.
    assert scales[2] in (0, 1)


def test_the_deployed_graph_transforms_and_standardises_as_numpy_does():
    rng = np.random.default_rng(1)
    patches = np.stack([rng.normal(10, 2, (5, 6, 6)), rng.lognormal(2, 2, (5, 6, 6))], axis=1).astype(np.float32)
    patches[0, 1, 0, 0] = 0.0
    patches[1, 1, 0, 0] = -3.0  # outside the training range: still finite
    scales, mean, std = np.array([0.0, 7.5]), np.array([10.0, 1.2]), np.array([2.0, 0.8])
    model = Deployed([torch.nn.Identity()], scales, mean, std, 0.0, 1.0)
    expected = (transforms.apply(patches, scales) - mean[None, :, None, None]) / std[None, :, None, None]
    got = model.normalise(torch.from_numpy(patches)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.isfinite(got).all()
