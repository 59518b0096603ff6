"""Exact Euclidean distance from grid cell centres to points and line segments.

Segments are cut into pieces of length at most `piece` (which leaves their union unchanged);
for each target, the k pieces with the nearest midpoints give a distance d. A piece with its
midpoint at distance m is no closer than m - piece / 2, so when the k-th midpoint lies at least
d + piece / 2 away no other piece can beat d; otherwise every piece within d + piece / 2 is
checked. The result is exact, with no rasterisation of the features.
"""

import numpy as np
from scipy.spatial import cKDTree

NEAREST_PIECES = 8
BATCH = 65_536


def to_points(points, targets):
    """Distance from each target (N, 2) to the nearest of `points` (M, 2)."""
    distances, _ = cKDTree(points).query(targets, k=1, workers=-1)
    return distances


def to_segments(starts, ends, targets, piece):
    """Distance from each target (N, 2) to the nearest segment starts[i] -> ends[i] (M, 2)."""
    starts, ends = _pieces(np.asarray(starts, float), np.asarray(ends, float), piece)
    tree = cKDTree((starts + ends) / 2)
    k = min(NEAREST_PIECES, len(starts))
    out = np.empty(len(targets))
    for first in range(0, len(targets), BATCH):
        batch = targets[first : first + BATCH]
        middle_distances, index = tree.query(batch, k=k, workers=-1)
        index = index.reshape(len(batch), k)
        best = _segment_distance(batch[:, None, :], starts[index], ends[index]).min(axis=1)
        unsure = np.flatnonzero(middle_distances.reshape(len(batch), k)[:, -1] < best + piece / 2)
        if k < len(starts):
            for i, candidates in zip(unsure, tree.query_ball_point(batch[unsure], best[unsure] + piece / 2)):
                candidates = np.asarray(candidates)
                best[i] = _segment_distance(batch[i][None, :], starts[candidates], ends[candidates]).min()
        out[first : first + BATCH] = best
    return out


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
