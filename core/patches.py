"""Patches of the driver stack around points, and honest train / validation / test splits.

Patch convention (docs/DESIGN.md): around pixel (r, c) with size P, rows r - P//2 … r - P//2 + P - 1,
likewise columns; cells outside the stack are NaN (nodata), in prediction too.
"""

import numpy as np
from scipy.spatial import cKDTree

from .errors import InputError

SPLITS = ("spatial blocks", "random", "from a field")  # enum order of SPLIT
POLICIES = ("skip the point", "fill with the band's training mean")  # enum order of NODATA_POLICY
POLICY_NAMES = ("skip", "fill")  # the same, as recorded in datasets and models
TRAIN, VAL, TEST, DROPPED = 0, 1, 2, -1
MIN_VALID_TO_FILL = 0.5  # with the fill policy, patches with less valid data are still dropped
FRACTION_ROUNDING = 1e-9  # valid shares are compared with this slack, so that 0.5 is 0.5 however summed
STRIP_BYTES = 64 * 2**20  # float32 strip of the stack read at once
POINTS_PER_GATHER = 1024  # patches cut from a strip in one vectorised step
# The chunks below (about 32 MB of 9 x 30 x 30 float32 patches) bound the memory of the passes.


def pixel_indices(grid, x, y):
    """(row, column) of the cells holding the points; outside the grid they are out of range."""
    columns = np.floor((np.asarray(x) - grid.left) / grid.pixel_width).astype(np.int64)
    rows = np.floor((grid.top - np.asarray(y)) / grid.pixel_height).astype(np.int64)
    return rows, columns


def extract(read_rows, n_bands, height, width, rows, columns, size, out, cancelled=lambda: False):
    """Fills out[i] (N, C, P, P) with the patch around (rows[i], columns[i]), reading the stack in
    strips: read_rows(first, stop) -> (C, stop - first, width) float32 with NaN for nodata."""
    half = size // 2
    strip = max(size, STRIP_BYTES // (4 * n_bands * (width + 2 * size)) - size)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    start = 0
    while start < len(order):
        if cancelled():
            return False
        first = sorted_rows[start] - half  # first patch row of this strip
        stop = int(np.searchsorted(sorted_rows, sorted_rows[start] + strip, side="left"))
        buffer = np.full((n_bands, strip + size, width + 2 * size), np.nan, np.float32)
        top, bottom = int(max(first, 0)), int(min(first + strip + size, height))
        if bottom > top:
            buffer[:, top - first : bottom - first, size : size + width] = read_rows(top, bottom)
        offsets = np.arange(size)
        for part in range(start, stop, POINTS_PER_GATHER):  # bounds the gathered copies
            chosen = order[part : min(part + POINTS_PER_GATHER, stop)]
            patch_rows = (rows[chosen] - half - first)[:, None] + offsets
            patch_columns = (columns[chosen] - half + size)[:, None] + offsets
            out[chosen] = buffer[:, patch_rows[:, :, None], patch_columns[:, None, :]].transpose(1, 0, 2, 3)
        start = stop
    return True


def least_valid(policy):
    """The smallest share of valid cells a patch needs under a nodata policy (POLICY_NAMES)."""
    return 1.0 if policy == "skip" else MIN_VALID_TO_FILL


def usable(patches, policy, chunk=1024):
    """Which (N, C, P, P) patches (an array, or a PatchFile read in chunks) a policy keeps, in
    training and prediction alike: their centre cell is valid in every band and at least
    least_valid(policy) of their cells are valid."""
    keep = np.empty(len(patches), bool)
    for start in range(0, len(patches), chunk):
        block = np.isfinite(patches[start : start + chunk])
        half = block.shape[-1] // 2
        fraction = block.reshape(len(block), -1).mean(axis=1)
        centre_valid = block[:, :, half, half].all(axis=1)
        keep[start : start + chunk] = centre_valid & (fraction >= least_valid(policy) - FRACTION_ROUNDING)
    return keep


MIN_BLOCKS = 9  # fewer leave one block for the test points and one for validation, or none


def default_block_size(x, y, patch_metres):
    """About 10 x 10 blocks over the points, and never less than four patch widths, unless the area
    is so small that four patch widths leave fewer than MIN_BLOCKS blocks: then blocks of the size
    that gives about that many (the split still drops the patches that overlap across blocks)."""
    width, height = np.ptp(x), np.ptp(y)
    tenth = max(width, height) / 10.0
    block = max(4.0 * patch_metres, tenth)
    if block_count(width, height, block) < MIN_BLOCKS:
        block = max(tenth, float(np.sqrt(width * height / MIN_BLOCKS))) or block  # 0 only with every point at one place
    return block


def block_count(width, height, block_size):
    """How many of square_blocks' blocks cover a width x height rectangle from its corner."""
    return int((width // block_size + 1) * (height // block_size + 1))


def square_blocks(x, y, block_size):
    """The square block (0 … blocks - 1) each point falls in, counted from the points' corner."""
    keys = np.column_stack([np.floor((x - x.min()) / block_size), np.floor((y - y.min()) / block_size)])
    return np.unique(keys, axis=0, return_inverse=True)[1].ravel()


def spatial_blocks(x, y, block_size, val_fraction, test_fraction, rng):
    """Whole square blocks of points to test, then validation, then training, in random order,
    until each share is reached."""
    block_of = square_blocks(x, y, block_size)
    counts = np.bincount(block_of)
    blocks = len(counts)
    labels_of_block = np.full(blocks, TRAIN)
    targets = ((TEST, test_fraction * len(x)), (VAL, val_fraction * len(x)))
    filled = {TEST: 0, VAL: 0}
    for block in rng.permutation(blocks):
        for label, target in targets:
            if filled[label] < target:
                labels_of_block[block] = label
                filled[label] += counts[block]
                break
    if blocks < 3:
        raise InputError(
            f"The points fall in {blocks} blocks of {block_size:g} map units: choose a smaller BLOCK_SIZE."
        )
    return labels_of_block[block_of]


def random_split(n, val_fraction, test_fraction, rng):
    labels = np.full(n, TRAIN)
    shuffled = rng.permutation(n)
    n_test, n_val = int(round(test_fraction * n)), int(round(val_fraction * n))
    labels[shuffled[:n_test]] = TEST
    labels[shuffled[n_test : n_test + n_val]] = VAL
    return labels


def split_from_values(values):
    names = {
        "train": TRAIN,
        "training": TRAIN,
        "0": TRAIN,
        "val": VAL,
        "validation": VAL,
        "1": VAL,
        "test": TEST,
        "2": TEST,
    }
    labels = []
    for value in values:
        key = str(value).strip().lower().removesuffix(".0")
        if key not in names:
            raise InputError(f"Split value {value!r} is not one of train/val/test (or 0/1/2).")
        labels.append(names[key])
    return np.array(labels)


def drop_test_overlaps(rows, columns, labels, size):
    """Keeps held-out patches apart from those learnt from: training and validation points whose
    patch overlaps a test patch, then training points whose patch overlaps a validation patch, get
    DROPPED (validation points are where early stopping and the σ's calibration measure the
    error away from the training data, so they must be as far from it as the test points).
    Overlapping means closer than `size` cells in both rows and columns (rows and columns: the
    points' cell indices, or positions in cells as floats). Returns the new labels and the count."""
    labels = labels.copy()
    dropped = _drop_near(rows, columns, labels, TEST, (TRAIN, VAL), size) + _drop_near(
        rows, columns, labels, VAL, (TRAIN,), size
    )
    return labels, dropped


def _drop_near(rows, columns, labels, held_out, others, size):
    """Sets the points of the `others` labels whose patch overlaps a `held_out` patch to DROPPED,
    in place; returns how many."""
    anchors = labels == held_out
    candidates = np.flatnonzero(np.isin(labels, others))
    if not anchors.any() or not len(candidates):
        return 0
    tree = cKDTree(np.column_stack([rows[anchors], columns[anchors]]))
    # Closer than size: within size - 1 for whole cells, within just under size for positions.
    reach = size - 1 if np.issubdtype(np.asarray(rows).dtype, np.integer) else size * (1 - 1e-9)
    near = tree.query_ball_point(np.column_stack([rows[candidates], columns[candidates]]), r=reach, p=np.inf)
    overlapping = candidates[[bool(found) for found in near]]
    labels[overlapping] = DROPPED
    return len(overlapping)


FEATURE_CHUNK = 1024  # patches whose features are computed at a time


def centre_and_mean(patches, dtype=np.float64):
    """(N, 2C) raw features of (N, C, P, P) patches: each band's value at the patch centre
    (pixel P//2, P//2, the point's own cell), then its mean over the patch."""
    half = patches.shape[2] // 2
    out = np.empty((len(patches), 2 * patches.shape[1]), dtype)
    for start in range(0, len(patches), FEATURE_CHUNK):
        block = np.asarray(patches[start : start + FEATURE_CHUNK], np.float64)
        out[start : start + len(block)] = np.concatenate([block[:, :, half, half], block.mean(axis=(2, 3))], axis=1)
    return out


def band_statistics(patches, index, chunk=512, transform=None):
    """Per-band mean and standard deviation of the patches at `index` (after `transform`, a
    function of a block of patches, when given), ignoring NaN."""
    n_bands = patches.shape[1]
    total, squares, count = np.zeros(n_bands), np.zeros(n_bands), np.zeros(n_bands)
    for start in range(0, len(index), chunk):
        block = np.asarray(patches[np.sort(index[start : start + chunk])], dtype=np.float64)
        if transform is not None:
            block = transform(block)
        finite = np.isfinite(block)
        values = np.where(finite, block, 0.0)
        total += values.sum(axis=(0, 2, 3))
        squares += (values**2).sum(axis=(0, 2, 3))
        count += finite.sum(axis=(0, 2, 3))
    if (count == 0).any():
        raise InputError("Some driver band has no valid value in any training patch.")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return mean, np.where(std > 0, std, 1.0)  # a constant band is left unscaled


class PatchFile:
    """A (N, C, P, P) float32 array in a plain file, written and read with explicit I/O rather
    than a memory map, whose touched pages would count as the process's memory."""

    def __init__(self, path, shape):
        self.shape = tuple(shape)
        self.dtype = np.dtype(np.float32)
        self._row = int(np.prod(self.shape[1:]))
        self._file = open(path, "w+b")
        self._file.truncate(self.shape[0] * self._row * self.dtype.itemsize)

    def __len__(self):
        return self.shape[0]

    def __setitem__(self, index, block):
        block = np.ascontiguousarray(block, dtype=self.dtype).reshape(len(index), self._row)
        for row, values in zip(np.asarray(index), block):
            self._file.seek(int(row) * self._row * self.dtype.itemsize)
            self._file.write(values.tobytes())

    def __getitem__(self, index):
        if isinstance(index, slice):
            index = np.arange(*index.indices(self.shape[0]))
        out = np.empty((len(index), self._row), self.dtype)
        for position, row in enumerate(np.asarray(index)):
            self._file.seek(int(row) * self._row * self.dtype.itemsize)
            self._file.readinto(out[position])
        return out.reshape((len(index), *self.shape[1:]))

    def close(self):
        self._file.close()
