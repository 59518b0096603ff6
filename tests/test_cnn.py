"""The torch networks: the paper replica against the published Keras model, shapes of both."""

import pytest
import torch
from torch import nn

from insar_subsidence.models import architecture, cnn


def conv(inputs, outputs, kernel):
    return inputs * outputs * kernel * kernel + outputs


def dense(inputs, outputs):
    return inputs * outputs + outputs


def published_parameter_count(bands, patch_size):
    """The authors' model, counted by hand: three blocks [Conv 1x1, Conv 3x3 'same', BatchNorm
    (2 trainable weights per channel), MaxPool, Dropout] of 32, 32, 1024 filters; Flatten; Dense
    1024, 1024, 512, 512, 256, each with BatchNorm; Dense 1."""
    total, channels, size = 0, bands, patch_size
    for filters in (32, 32, 1024):
        total += conv(channels, filters, 1) + conv(filters, filters, 3) + 2 * filters
        channels, size = filters, size // 2
    features = channels * size * size
    for units in (1024, 1024, 512, 512, 256):
        total += dense(features, units) + 2 * units
        features = units
    return total + dense(features, 1)


def test_paper_replica_has_the_published_layers_and_about_21_million_weights():
    model = cnn.build("paper", 9, 30)
    kinds = [type(layer).__name__ for layer in model]
    block = ["Conv2d", "Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d", "Dropout"]
    head = ["Linear", "ReLU", "BatchNorm1d", "Dropout"] * 4 + ["Linear", "ReLU", "BatchNorm1d", "Linear"]
    assert kinds == block * 3 + ["Flatten"] + head
    convolutions = [layer for layer in model if isinstance(layer, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convolutions] == [
        (32, (1, 1), (0, 0)), (32, (3, 3), (1, 1)), (32, (1, 1), (0, 0)), (32, (3, 3), (1, 1)),
        (1024, (1, 1), (0, 0)), (1024, (3, 3), (1, 1)),
    ]  # fmt: skip
    assert [layer.out_features for layer in model if isinstance(layer, nn.Linear)] == [1024, 1024, 512, 512, 256, 1]
    assert all(layer.p == 0.1 for layer in model if isinstance(layer, nn.Dropout))
    count = sum(parameter.numel() for parameter in model.parameters())
    assert count == published_parameter_count(9, 30) and 20e6 < count < 22e6


@pytest.mark.parametrize("name, sizes", [("dense", (22, 23, 30, 41)), ("paper", (8, 15, 30))])
def test_both_take_any_bands_and_allowed_patch_sizes(name, sizes):
    for bands in (1, 9):
        for size in sizes:
            model = cnn.build(name, bands, size).eval()
            assert model(torch.zeros(3, bands, size, size)).shape == (3, 1)


@pytest.mark.parametrize("name, smallest", [("dense", 22), ("paper", 8)])
def test_too_small_patches_are_refused_with_the_minimum(name, smallest):
    assert architecture.minimum_patch_size(name) == smallest
    with pytest.raises(ValueError, match=f"at least {smallest} x {smallest}"):
        cnn.build(name, 3, smallest - 1)
