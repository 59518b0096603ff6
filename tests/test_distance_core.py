"""core.distance against brute force over every segment."""

import numpy as np
import pytest

from insar_subsidence.core import distance


def brute_force(starts, ends, targets):
    ab = ends - starts
    t = np.clip(((targets[:, None] - starts) * ab).sum(-1) / (ab**2).sum(-1), 0, 1)
    return np.hypot(*(targets[:, None] - (starts + t[..., None] * ab)).transpose(2, 0, 1)).min(axis=1)


@pytest.mark.parametrize("piece", [2.0, 25.0, 400.0])
def test_segments_exact_near_and_far(piece):
    rng = np.random.default_rng(4)
    starts = rng.uniform(0, 1000, (60, 2))
    ends = starts + rng.normal(0, 150, (60, 2))
    targets = np.concatenate([rng.uniform(-100, 1100, (3000, 2)), rng.uniform(5000, 20000, (300, 2))])  # far ones too
    np.testing.assert_allclose(
        distance.to_segments(starts, ends, targets, piece), brute_force(starts, ends, targets), rtol=1e-12, atol=1e-9
    )


def test_points_exact():
    rng = np.random.default_rng(5)
    points, targets = rng.uniform(0, 100, (40, 2)), rng.uniform(-50, 150, (500, 2))
    expected = np.hypot(*(targets[:, None] - points).transpose(2, 0, 1)).min(axis=1)
    np.testing.assert_allclose(distance.to_points(points, targets), expected, rtol=1e-12)
