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
`small` is `dense` sized for the small patches of coarse grids (a 100 x 60 grid of 150 m cells
needs patches of about 8 to 11 cells, where `dense` needs 22): the same layer types, evaluable
densely alike, in two blocks of 32 and 64 filters of which only the first pools (each pooling
halves the feature map), then dense layers of 64, 64 and 32 units. A 9 x 9 patch goes
9 -> 7 (convolution) -> 3 (pooling) -> 1 (convolution); 8 x 8 is the smallest. With 9 bands and
9 x 9 patches that is 0.06 M parameters.
`paper` replicates the published Keras model (3x3 convolutions with 'same' padding, 32, 32 and
1024 filters, dense 1024-1024-512-512-256) for reproduction; it is slow on a CPU and cannot be
evaluated densely.
Which to use: `dense` for patches of 22 cells or more, `small` for 8 to 21 cells, `paper` to
reproduce the publication.
"""

ARCHITECTURES = ("dense", "paper", "small")  # the ARCHITECTURE enum's order: part of the interface, append only
BLOCK_WIDTHS = {"dense": (32, 32, 64), "paper": (32, 32, 1024), "small": (32, 64)}
# Whether each block ends with a 2x2 max-pooling (stride 2, remainder dropped).
POOLING = {"dense": (True, True, True), "paper": (True, True, True), "small": (True, False)}
# The 3x3 convolutions' padding: 0 'valid', which dense evaluation needs, or 1 'same'.
PADDING = {"dense": 0, "paper": 1, "small": 0}
DENSE_WIDTHS = {"dense": (128, 128, 64, 64, 32), "paper": (1024, 1024, 512, 512, 256), "small": (64, 64, 32)}
DROPOUT = 0.1


def dense_exact(architecture):
    """Whether a whole raster can be predicted exactly by evaluating the network densely
    (models.dense): only 'valid' convolutions keep a pixel's prediction to its own patch."""
    return PADDING[architecture] == 0


def feature_size(architecture, patch_size):
    """Side of the last block's feature map for a patch of patch_size, or 0 if the patch is too
    small for the architecture."""
    size = patch_size
    for pooled in POOLING[architecture]:
        size += 2 * PADDING[architecture] - 2  # the 3x3 convolution: 'valid' loses 2, 'same' nothing
        if pooled:
            size //= 2
        if size < 1:
            return 0
    return size


def minimum_patch_size(architecture):
    return next(size for size in range(1, 1000) if feature_size(architecture, size) >= 1)


def check_patch_size(architecture, patch_size):
    """None, or why the architecture cannot take patches of this size (and which one can)."""
    if architecture not in ARCHITECTURES:
        return f"Unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}."
    if feature_size(architecture, patch_size) >= 1:
        return None
    smallest = minimum_patch_size(architecture)
    problem = (
        f"The {architecture} architecture needs patches of at least {smallest} x {smallest} pixels (its "
        "convolutions and poolings shrink a smaller one to nothing before the dense layers); the dataset's are "
        f"{patch_size} x {patch_size}."
    )
    fitting = [name for name in ARCHITECTURES if dense_exact(name) and feature_size(name, patch_size) >= 1]
    if fitting:
        return (
            f"{problem} Choose the {fitting[0]} architecture, made for patches of this size, or export patches "
            f"of {smallest} x {smallest} or larger."
        )
    return f"{problem} Export patches of that size or larger."
