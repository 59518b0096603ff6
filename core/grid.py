"""A north-up raster grid: where its cells are, in map units."""

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError

MAX_SIDE = 100_000  # cells; beyond this the pixel size was almost surely given in the wrong units
MARGIN = 0.05  # of the points' longer side, added on every side of a grid drawn around points
DEFAULT_SIDE = 500  # cells along the longer side of a grid drawn around points without a pixel size


def round_up(size):
    """The smallest of 1, 2 and 5 times a power of ten that is at least `size` (> 0)."""
    power = 10.0 ** math.floor(math.log10(size))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= size * (1 - 1e-12))


@dataclass(frozen=True)
class Grid:
    left: float
    top: float
    pixel_width: float
    pixel_height: float  # positive; rows go south
    width: int
    height: int

    @classmethod
    def around(cls, x, y, pixel_size=None):
        """The grid (see from_extent) over the points' extent widened by MARGIN of its longer side
        on every side."""
        xmin, xmax, ymin, ymax = float(np.min(x)), float(np.max(x)), float(np.min(y)), float(np.max(y))
        margin = MARGIN * max(xmax - xmin, ymax - ymin)
        return cls.from_extent(xmin - margin, ymin - margin, xmax + margin, ymax + margin, pixel_size)

    @classmethod
    def from_extent(cls, xmin, ymin, xmax, ymax, pixel_size=None):
        """The grid of `pixel_size` cells anchored at the extent's top-left corner, covering it; by
        default the cells take the round size (1, 2 or 5 x 10^k) that gives at most DEFAULT_SIDE of
        them along the longer side."""
        if pixel_size is None and xmax > xmin and ymax >= ymin:
            pixel_size = round_up(max(xmax - xmin, ymax - ymin) / DEFAULT_SIDE)
        if not pixel_size > 0:
            raise InputError(f"The pixel size must be positive, not {pixel_size}.")
        if not (xmax > xmin and ymax > ymin):
            raise InputError("The extent is empty.")
        width = max(1, math.ceil((xmax - xmin) / pixel_size - 1e-9))
        height = max(1, math.ceil((ymax - ymin) / pixel_size - 1e-9))
        if max(width, height) > MAX_SIDE:
            raise InputError(
                f"A pixel size of {pixel_size} map units makes a {width} x {height} grid; "
                f"is the pixel size in the units of the grid's CRS?"
            )
        return cls(xmin, ymax, pixel_size, pixel_size, width, height)

    @property
    def geotransform(self):
        return (self.left, self.pixel_width, 0.0, self.top, 0.0, -self.pixel_height)

    def row_blocks(self, cells):
        """(first row, stop row) of consecutive blocks of whole rows, each of about `cells` cells
        (at least one row), covering the grid."""
        rows = max(1, cells // self.width)
        return [(first, min(first + rows, self.height)) for first in range(0, self.height, rows)]

    def centres(self, row_start, row_stop):
        """Cell-centre coordinates (x, y) of rows row_start .. row_stop - 1, each (rows, width)."""
        x = self.left + (np.arange(self.width) + 0.5) * self.pixel_width
        y = self.top - (np.arange(row_start, row_stop) + 0.5) * self.pixel_height
        return np.meshgrid(x, y)

    @property
    def centre(self):
        """(x, y) of the grid's centre, in map units."""
        return self.left + self.width * self.pixel_width / 2, self.top - self.height * self.pixel_height / 2


def utm_epsg(longitude, latitude):
    """The EPSG code of the WGS 84 UTM zone holding a point (degrees): 326zz north of the equator,
    327zz south, zz = floor((longitude + 180) / 6) + 1. The polar caps UTM leaves out (north of
    84° N, south of 80° S) get the Universal Polar Stereographic CRS instead."""
    if latitude > 84:
        return 32661  # WGS 84 / UPS North (N,E)
    if latitude < -80:
        return 32761  # WGS 84 / UPS South (N,E)
    # % 60: longitude 180 (= -180) and longitudes given as 0..360 wrap round.
    zone = int(math.floor((longitude + 180) / 6)) % 60 + 1
    return (32600 if latitude >= 0 else 32700) + zone
