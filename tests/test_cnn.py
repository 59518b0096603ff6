"""The torch networks: the paper replica against the published Keras model, the small network
against its layers counted by hand, shapes of all three."""

import pytest

# The CNN runs in the training interpreter, not in QGIS's Python: where the tests run in a QGIS
# without torch (make test-qgis), these are skipped.
torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402  (after the skip: these import torch)

from insar_subsidence.models import architecture, cnn  # noqa: E402  (after the skip: these import torch)


def conv(inputs, outputs, kernel):
    return inputs * outputs * kernel * kernel + outputs


def dense(inputs, outputs):
    return inputs * outputs + outputs


def counted_by_hand(bands, filters, feature_side, units):
    """Blocks [Conv 1x1, Conv 3x3, BatchNorm (2 trainable weights per channel)] of `filters`;
    Flatten of the last block's feature_side x feature_side map; Dense `units`, each with
    BatchNorm; Dense 1."""
    total, channels = 0, bands
    for width in filters:
        total += conv(channels, width, 1) + conv(width, width, 3) + 2 * width
        channels = width
    features = channels * feature_side * feature_side
    for width in units:
        total += dense(features, width) + 2 * width
        features = width
    return total + dense(features, 1)


def published_parameter_count(bands, patch_size):
    """The authors' model: 'same' convolutions in blocks of 32, 32, 1024 filters, each halved by
    its pooling; Dense 1024, 1024, 512, 512, 256."""
    return counted_by_hand(bands, (32, 32, 1024), patch_size // 8, (1024, 1024, 512, 512, 256))


def test_paper_replica_has_the_published_layers_and_about_21_million_weights():
    model = cnn.build("paper", 9, 30)
    kinds = [type(layer).__name__ for layer in model]
    block = ["Conv2d", "Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d", "Dropout"]
    head = ["Linear", "ReLU", "BatchNorm1d", "Dropout"] * 4 + ["Linear", "ReLU", "BatchNorm1d", "Linear"]
    assert kinds == block * 3 + ["Flatten"] + head
    convolutions = [layer for layer in model if isinstance(layer, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convolutions] == [
        (32, (1, 1), (0, 0)),
        (32, (3, 3), (1, 1)),
        (32, (1, 1), (0, 0)),
        (32, (3, 3), (1, 1)),
        (1024, (1, 1), (0, 0)),
        (1024, (3, 3), (1, 1)),
    ]
    assert [layer.out_features for layer in model if isinstance(layer, nn.Linear)] == [1024, 1024, 512, 512, 256, 1]
    assert all(layer.p == 0.1 for layer in model if isinstance(layer, nn.Dropout))
    count = sum(parameter.numel() for parameter in model.parameters())
    assert count == published_parameter_count(9, 30) and 20e6 < count < 22e6


def small_parameter_count(bands, feature_side):
    """Two blocks of 32 and 64 filters ('valid' convolutions); Dense 64, 64, 32."""
    return counted_by_hand(bands, (32, 64), feature_side, (64, 64, 32))


def test_small_has_dense_layer_types_with_one_pooling_and_60_thousand_weights():
    model = cnn.build("small", 9, 9)
    kinds = [type(layer).__name__ for layer in model]
    block = ["Conv2d", "Conv2d", "ReLU", "BatchNorm2d"]
    head = ["Linear", "ReLU", "BatchNorm1d", "Dropout"] * 2 + ["Linear", "ReLU", "BatchNorm1d", "Linear"]
    assert kinds == block + ["MaxPool2d", "Dropout"] + block + ["Dropout", "Flatten"] + head
    convolutions = [layer for layer in model if isinstance(layer, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convolutions] == [
        (32, (1, 1), (0, 0)),
        (32, (3, 3), (0, 0)),
        (64, (1, 1), (0, 0)),
        (64, (3, 3), (0, 0)),
    ]
    assert [layer.out_features for layer in model if isinstance(layer, nn.Linear)] == [64, 64, 32, 1]
    assert all(layer.p == 0.1 for layer in model if isinstance(layer, nn.Dropout))
    count = sum(parameter.numel() for parameter in model.parameters())
    assert count == small_parameter_count(9, 1) == 59_553


@pytest.mark.parametrize("size, side", [(8, 1), (9, 1), (10, 2), (11, 2), (12, 3), (21, 7), (30, 12)])
def test_small_convolves_pools_and_convolves_again(size, side):
    """By hand: 9 -> 7 ('valid' 3x3) -> 3 (2x2 pooling, the odd row dropped) -> 1 ('valid' 3x3)."""
    assert architecture.feature_size("small", size) == side


@pytest.mark.parametrize(
    "name, sizes", [("dense", (22, 23, 30, 41)), ("paper", (8, 15, 30)), ("small", (8, 9, 11, 21, 30))]
)
def test_each_takes_any_bands_and_allowed_patch_sizes(name, sizes):
    for bands in (1, 9):
        for size in sizes:
            model = cnn.build(name, bands, size).eval()
            assert model(torch.zeros(3, bands, size, size)).shape == (3, 1)


@pytest.mark.parametrize("name, smallest", [("dense", 22), ("paper", 8), ("small", 8)])
def test_too_small_patches_are_refused_with_the_minimum(name, smallest):
    assert architecture.minimum_patch_size(name) == smallest
    with pytest.raises(ValueError, match=f"at least {smallest} x {smallest}"):
        cnn.build(name, 3, smallest - 1)


@pytest.mark.parametrize(
    "size, advice",
    [
        (12, "Choose the small architecture"),
        (8, "Choose the small architecture"),
        (7, "Export patches of that size or larger"),
    ],
)
def test_patches_too_small_for_dense_point_to_small_when_it_takes_them(size, advice):
    problem = architecture.check_patch_size("dense", size)
    assert "at least 22 x 22" in problem and advice in problem
    assert ("small architecture" in problem) == (size >= 8)


def test_the_enum_order_is_kept_and_only_valid_convolutions_are_dense_exact():
    names = architecture.ARCHITECTURES
    assert list(zip(names, map(architecture.dense_exact, names))) == [
        ("dense", True),
        ("paper", False),
        ("small", True),
    ]
