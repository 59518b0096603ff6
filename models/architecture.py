"""The CNN architectures' shapes, without torch (QGIS checks a dataset against them before
starting the worker).

`dense` keeps the paper's sequence of layer types — per block a 1x1 convolution, a 3x3
convolution with ReLU, batch normalisation, 2x2 max-pooling and dropout 0.1, then dense layers —
with two changes:
- the 3x3 convolutions are 'valid' (no padding), so that a pixel's prediction depends on its
  patch alone and a whole raster can be predicted exactly by evaluating the network densely
  (dilated convolutions and stride-1 pooling; see the prediction algorithm);
- widths for CPU training: blocks of 32, 32 and 64 filters (the paper's last block has 1024,
  which alone costs 9.4 M weights and ~70 % of the FLOPs per pixel) and dense layers of 128, 128,
  64, 64 and 32 units (the paper's 1024, 1024, 512, 512, 256 divided by 8). With 9 bands and
  30 x 30 patches that is 0.12 M parameters instead of 21 M, trains at about a thousand patches per
  second on two cores, and still has a receptive field of the whole patch.
`paper` replicates the published Keras model (3x3 convolutions with 'same' padding, 32, 32 and
1024 filters, dense 1024-1024-512-512-256) for reproduction; it is slow on a CPU and cannot be
evaluated densely.
"""

ARCHITECTURES = ("dense", "paper")  # the ARCHITECTURE enum's order: part of the interface
BLOCK_WIDTHS = {"dense": (32, 32, 64), "paper": (32, 32, 1024)}
DENSE_WIDTHS = {"dense": (128, 128, 64, 64, 32), "paper": (1024, 1024, 512, 512, 256)}
DROPOUT = 0.1


def feature_size(architecture, patch_size):
    """Side of the last block's feature map for a patch of patch_size, or 0 if the patch is too
    small for the architecture."""
    size = patch_size
    for _ in BLOCK_WIDTHS[architecture]:
        if architecture == "dense":
            size -= 2  # 'valid' 3x3 convolution
        size //= 2  # 2x2 max-pooling, stride 2, remainder dropped
        if size < 1:
            return 0
    return size


def minimum_patch_size(architecture):
    return next(size for size in range(1, 1000) if feature_size(architecture, size) >= 1)


def check_patch_size(architecture, patch_size):
    """None, or why the architecture cannot take patches of this size."""
    if architecture not in ARCHITECTURES:
        return f"Unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}."
    if feature_size(architecture, patch_size) < 1:
        return (
            f"The {architecture} architecture needs patches of at least {minimum_patch_size(architecture)} x "
            f"{minimum_patch_size(architecture)} pixels (its convolutions and three 2 x 2 poolings); the dataset's "
            f"are {patch_size} x {patch_size}. Export patches of that size or larger."
        )
    return None
