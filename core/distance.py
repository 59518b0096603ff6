"""Exact Euclidean distance from grid cell centres to points and line segments.

Segments are cut into pieces of length at most `piece` (which leaves their union unchanged);
for each target, the k pieces with the nearest midpoints give a distance d. A piece with its
midpoint at distance m is no closer than m - piece / 2, so when the k-th midpoint lies at least
d + piece / 2 away no other piece can beat d; the targets for which that does not hold yet are
queried again, together, with four times as many pieces. The result is exact, with no
rasterisation of the features.
"""

import numpy as np
from scipy.spatial import cKDTree

NEAREST_PIECES = 8
PAIRS = 1_000_000  # target x piece pairs evaluated at once


def to_points(points, targets):
    """Distance from each target (N, 2) to the nearest of `points` (M, 2)."""
    distances, _ = cKDTree(points).query(targets, k=1, workers=-1)
    return distances


def to_segments(starts, ends, targets, piece):
    """Distance from each target (N, 2) to the nearest segment starts[i] -> ends[i] (M, 2)."""
    starts, ends = _pieces(np.asarray(starts, float), np.asarray(ends, float), piece)
    tree = cKDTree((starts + ends) / 2)
    best = np.empty(len(targets))
    pending = np.arange(len(targets))
    k = min(NEAREST_PIECES, len(starts))
    while len(pending):
        undecided = []
        for first in range(0, len(pending), max(1, PAIRS // k)):  # bounds the (targets x k) arrays
            chosen = pending[first : first + max(1, PAIRS // k)]
            middle, index = tree.query(targets[chosen], k=k, workers=-1)
            middle, index = middle.reshape(len(chosen), k), index.reshape(len(chosen), k)
            nearest = _segment_distance(targets[chosen][:, None, :], starts[index], ends[index]).min(axis=1)
            sure = (k == len(starts)) | (middle[:, -1] >= nearest + piece / 2)
            best[chosen[sure]] = nearest[sure]
            undecided.append(chosen[~sure])
        pending = np.concatenate(undecided)
        k = min(4 * k, len(starts))
    return best


def _pieces(starts, ends, piece):
    lengths = np.hypot(*(ends - starts).T)
    counts = np.maximum(1, np.ceil(lengths / piece).astype(int))
    owner = np.repeat(np.arange(len(starts)), counts)
    step = np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.array([], int)
    fraction = step / counts[owner]
    direction = ends[owner] - starts[owner]
    new_starts = starts[owner] + direction * fraction[:, None]
    new_ends = starts[owner] + direction * ((step + 1) / counts[owner])[:, None]
    return new_starts, new_ends


def _segment_distance(p, a, b):
    """Distance from points p to segments a -> b (broadcast over leading axes)."""
    ab = b - a
    length_squared = (ab**2).sum(-1)
    t = np.where(length_squared > 0, ((p - a) * ab).sum(-1) / np.where(length_squared > 0, length_squared, 1), 0.0)
    closest = a + np.clip(t, 0.0, 1.0)[..., None] * ab
    return np.sqrt(((p - closest) ** 2).sum(-1))
