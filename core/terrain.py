"""Terrain factors of a DEM: Horn slope and aspect, depression filling, flow routing (D8, MFD,
D-infinity), specific catchment area, TWI and SPI.

Arrays are (rows, columns) with NaN for nodata; rows go south. Cell sizes are in metres and may
change from row to row (a DEM in degrees), so every distance is taken per row.

Routing works on a copy padded with one ring of nodata, on flat indices, so that a neighbour is
the index plus a constant offset. Nodata and the outside are outlets: a valid cell next to one of
them (an edge cell) with no lower valid neighbour sends its flow out of the DEM. Depressions are
filled first (morphological reconstruction, which gives the priority-flood result), and a cell
on a flat drains to a neighbour one step closer to the flat's outlet (Garbrecht & Martz's
gradient towards lower terrain), so every valid cell drains to an edge.

Accumulation visits the cells in waves: a cell is passed on once all its donors have been, so
every wave is a few vectorised operations and the number of waves is the longest flow path.
"""

import math
from concurrent import futures
from dataclasses import dataclass

import numpy as np

METHODS = ("D8", "MFD", "D-infinity")
FLAT_ASPECT = -1.0  # aspect of a cell without slope
MFD_EXPONENT = 1.1  # Freeman (1991)
STRIP_ROWS = 512  # rows of slope and aspect computed at once, bounding the temporaries
# The eight neighbours, clockwise from north: (row offset, column offset).
NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))
NORTH, NORTH_EAST, EAST, SOUTH_EAST, SOUTH, SOUTH_WEST, WEST, NORTH_WEST = range(8)
# D-infinity facets: (cardinal, diagonal) neighbours bounding each of the eight triangles.
FACETS = (
    (NORTH, NORTH_EAST),
    (EAST, NORTH_EAST),
    (EAST, SOUTH_EAST),
    (SOUTH, SOUTH_EAST),
    (SOUTH, SOUTH_WEST),
    (WEST, SOUTH_WEST),
    (WEST, NORTH_WEST),
    (NORTH, NORTH_WEST),
)


@dataclass(frozen=True)
class CellSizes:
    """Cell width and height in metres, one value per row."""

    width: np.ndarray
    height: np.ndarray

    @classmethod
    def projected(cls, pixel_width, pixel_height, rows, metres_per_unit=1.0):
        return cls(np.full(rows, pixel_width * metres_per_unit), np.full(rows, pixel_height * metres_per_unit))

    @classmethod
    def geographic(cls, top, pixel_width, pixel_height, rows, semi_major, semi_minor):
        """Sizes of cells given in degrees on the ellipsoid (a, b), from the radii of curvature at
        each row's central latitude."""
        latitude = np.radians(top - (np.arange(rows) + 0.5) * pixel_height)
        e2 = 1.0 - (semi_minor / semi_major) ** 2
        w = 1.0 - e2 * np.sin(latitude) ** 2
        prime_vertical = semi_major / np.sqrt(w)
        meridian = semi_major * (1.0 - e2) / w**1.5
        return cls(prime_vertical * np.cos(latitude) * math.radians(pixel_width), meridian * math.radians(pixel_height))

    @property
    def area(self):
        return self.width * self.height

    @property
    def flow_width(self):
        """The contour width a cell's catchment is divided by: the cell size (for cells that are
        not square, the side of the square of the same area)."""
        return np.sqrt(self.width * self.height)


def slope_aspect(z, sizes):
    """Slope (degrees) and aspect (degrees clockwise from north, the direction the slope faces;
    FLAT_ASPECT where there is no slope) by Horn's method, as gdaldem in the interior.

    A neighbour that is missing (DEM border or nodata) is extrapolated linearly from the opposite
    one, a missing diagonal from the plane through its two cardinals, so a plane gives its exact
    slope on every valid cell; a cell with no valid neighbour along an axis has no gradient along
    it. NaN cells stay NaN."""
    rows, columns = z.shape
    slope = np.empty(z.shape, np.float32)
    aspect = np.empty(z.shape, np.float32)
    padded = np.pad(np.asarray(z, np.float64), 1, constant_values=np.nan)
    width = np.pad(sizes.width, 1, mode="edge")
    for first in range(0, rows, STRIP_ROWS):
        last = min(first + STRIP_ROWS, rows)
        window = padded[first : last + 2]
        around = [
            window[1 + row : window.shape[0] - 1 + row, 1 + column : columns + 1 + column] for row, column in NEIGHBOURS
        ]
        top, middle, bottom = (
            width[first:last, None],
            width[first + 1 : last + 1, None],
            width[first + 2 : last + 2, None],
        )
        east, south = _horn_gradient(around, top, middle, bottom, sizes.height[first:last, None])
        # Cells with a missing neighbour: again, with the missing values extrapolated.
        edge_rows, edge_columns = np.nonzero(np.isnan(east) & ~np.isnan(window[1:-1, 1:-1]))
        if edge_rows.size:
            centre = window[1 + edge_rows, 1 + edge_columns]
            known = [values[edge_rows, edge_columns] for values in around]
            east[edge_rows, edge_columns], south[edge_rows, edge_columns] = _horn_gradient(
                _extrapolated(centre, known),
                top[edge_rows, 0],
                middle[edge_rows, 0],
                bottom[edge_rows, 0],
                sizes.height[first + edge_rows],
            )
        east, south = east.astype(np.float32), south.astype(np.float32)
        slope[first:last] = np.degrees(np.arctan(np.hypot(east, south)))
        facing = np.degrees(np.arctan2(-east, south)) % np.float32(360)
        facing[(east == 0) & (south == 0)] = FLAT_ASPECT
        aspect[first:last] = facing
    return slope, aspect


def _horn_gradient(around, top, middle, bottom, height):
    """dz/d(east) and dz/d(south) from the eight neighbours' values (in NEIGHBOURS order), the
    cell widths of the rows above, at and below, and the row spacing."""
    n, ne, e, se, s, sw, w, nw = around
    east = ((ne - nw) / top + 2 * (e - w) / middle + (se - sw) / bottom) / 8
    south = ((sw + 2 * s + se) - (nw + 2 * n + ne)) / (8 * height)
    return east, south


def _extrapolated(centre, around):
    """The eight neighbours with missing (NaN) ones replaced: a cardinal by the mirror of its
    opposite through the centre (the centre if that is missing too), a diagonal by the plane
    through its two cardinals."""
    filled = list(around)
    for direction in (NORTH, EAST, SOUTH, WEST):
        value, mirror = around[direction], around[(direction + 4) % 8]
        filled[direction] = np.where(np.isnan(value), np.where(np.isnan(mirror), centre, 2 * centre - mirror), value)
    for direction in (NORTH_EAST, SOUTH_EAST, SOUTH_WEST, NORTH_WEST):
        plane = filled[direction - 1] + filled[(direction + 1) % 8] - centre
        filled[direction] = np.where(np.isnan(around[direction]), plane, around[direction])
    return filled


def fill_depressions(z):
    """The DEM with every depression raised to its spill level, so that each valid cell has a
    path to an edge that never goes up (NaN kept). The values are copies of the DEM's, so the
    DEM's float type is kept.

    This is grayscale reconstruction by erosion of the DEM from its edge cells (Soille's
    depression filling, the priority-flood result), by scikit-image."""
    z = np.asarray(z, np.float32 if z.dtype == np.float32 else np.float64)
    padded = np.pad(z, 1, constant_values=np.nan)
    invalid = np.isnan(padded)
    mask = np.where(invalid, np.finfo(z.dtype).min, padded)  # nodata: outlets lower than anything
    outlets = _edge_cells(invalid) | invalid
    try:
        # scikit-image's private inner loop: twice as fast as its public function, with a fifth
        # less memory. Should a version drop it, the public function gives the same numbers.
        from skimage.morphology._grayreconstruct import reconstruction_loop
    except ImportError:
        filled = _reconstruct(mask, outlets)
    else:
        filled = _reconstruct_by_rank(mask, outlets, reconstruction_loop)
    filled[invalid] = np.nan
    return filled[1:-1, 1:-1]


def _reconstruct(mask, outlets):
    """Reconstruction by erosion of `mask` from its values at `outlets`, by scikit-image's public
    function."""
    from skimage.morphology import reconstruction  # the optional package: imported when needed

    seed = np.where(outlets, mask, mask.max())
    return reconstruction(seed, mask, method="erosion").astype(mask.dtype)


def _reconstruct_by_rank(mask, outlets, reconstruction_loop):
    """What _reconstruct returns, by scikit-image's inner loop with the rank order prepared from
    one sort of the mask: skimage.morphology.reconstruction sorts the seed and the mask together
    twice, which takes most of its time."""
    # The loop reads neighbours without bounds checks: one more ring, at the top value, fixed.
    mask = np.pad(mask, 1, constant_values=mask.max())
    outlets = np.pad(outlets, 1).ravel()
    size = mask.size
    if 2 * size >= 2**31:
        raise ValueError("The DEM is too large to fill in one piece (over 1e9 cells).")
    values = mask.ravel()
    order = np.argsort(values, kind="stable").astype(np.int32)
    ordered = values[order]
    new = np.empty(size, bool)
    new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    distinct = ordered[new]
    # The loop dilates ranks: rank 0 for the highest value, which every non-outlet seed takes.
    rank = np.empty(size, np.uint32)
    rank[order] = len(distinct) - np.cumsum(new)
    ranks = np.concatenate([np.where(outlets, rank, 0).astype(np.uint32), rank])  # seed image, then mask image
    # Every element by increasing value: each mask cell followed by its seed if it is an outlet
    # (same value), then the other seeds (the top value).
    pairs = np.stack([order + size, order], axis=1)[np.stack([np.ones(size, bool), outlets[order]], axis=1)]
    by_value = np.concatenate([pairs, np.flatnonzero(~outlets).astype(np.int32)])
    previous = np.full(2 * size, -1, np.int32)
    following = np.full(2 * size, -1, np.int32)
    previous[by_value[1:]] = by_value[:-1]
    following[by_value[:-1]] = by_value[1:]
    strides = np.array([row * mask.shape[1] + column for row, column in NEIGHBOURS], np.int32)
    reconstruction_loop(ranks, previous, following, strides, int(by_value[0]), size)
    return distinct[::-1][ranks[:size]].reshape(mask.shape)[1:-1, 1:-1]


def _edge_cells(invalid):
    """Valid cells with an invalid cell (nodata, or the padding of a padded grid) among their 8
    neighbours."""
    return _next_to(invalid) & ~invalid


def _next_to(cells):
    """True where one of the 8 neighbours is True (beyond the border counts as False)."""
    padded = np.pad(cells, 1)
    near = np.zeros_like(cells)
    for direction in range(8):
        near |= _neighbour(padded, direction)
    return near


@dataclass
class Routing:
    """Flow fractions on the padded grid: fractions[d, i] is the share of the flow of cell i
    (flat index) that goes to its neighbour d, at flat index i + offsets[d]; bit d of
    receivers[i] says whether that share is positive."""

    fractions: np.ndarray  # (8, (rows + 2) * (columns + 2)) float32
    receivers: np.ndarray  # ((rows + 2) * (columns + 2),) uint8
    offsets: np.ndarray  # (8,)
    valid: np.ndarray  # (rows + 2, columns + 2) bool


def route(filled, sizes, method, cancelled=lambda: False):
    """Flow fractions of every cell of a filled DEM by `method` (one of METHODS)."""
    if method not in METHODS:
        raise ValueError(f"Unknown flow method {method!r}")
    rows, columns = filled.shape
    padded = np.pad(filled, 1, constant_values=np.nan)
    valid = ~np.isnan(padded)
    offsets = np.array([row * (columns + 2) + column for row, column in NEIGHBOURS])
    width, height = sizes.width[:, None].astype(np.float32), sizes.height[:, None].astype(np.float32)
    diagonal = np.hypot(width, height)
    lengths = (height, diagonal, width, diagonal) * 2
    fractions = np.zeros((8, rows + 2, columns + 2), np.float32)
    slopes = fractions[:, 1:-1, 1:-1]  # drop / distance to each lower neighbour, until replaced by fractions
    centre = padded[1:-1, 1:-1]
    for direction in range(8):
        drop = centre - _neighbour(padded, direction)
        np.divide(drop, lengths[direction], out=slopes[direction], where=drop > 0)  # NaN compares False
    has_lower = slopes.max(axis=0) > 0
    if method == "D8":
        _steepest(slopes, has_lower)
    elif method == "MFD":
        np.power(slopes, MFD_EXPONENT, out=slopes)
        total = slopes.sum(axis=0)
        np.divide(slopes, total, out=slopes, where=total > 0)
    else:
        _d_infinity(padded, slopes, has_lower, width, height, diagonal)
    flat = np.zeros_like(valid)
    flat[1:-1, 1:-1] = ~has_lower
    flat &= valid & ~_edge_cells(~valid)
    fractions = fractions.reshape(8, -1)
    _drain_flats(padded, flat, fractions, cancelled)
    receivers = np.zeros(fractions.shape[1], np.uint8)
    for direction in range(8):
        receivers |= (fractions[direction] > 0).view(np.uint8) << direction
    return Routing(fractions, receivers, offsets, valid)


def _steepest(slopes, has_lower):
    """D8, in place: everything to the neighbour with the steepest descent (the first,
    clockwise from north, on a tie)."""
    steepest = slopes.argmax(axis=0)
    slopes[:] = 0
    np.put_along_axis(slopes, steepest[None], has_lower[None].astype(np.float32), axis=0)


def _d_infinity(padded, slopes, has_lower, width, height, diagonal):
    """Tarboton (1997), in place: the steepest of the eight triangular facets gives the flow
    angle, and the flow is split between the facet's two neighbours in proportion to how close
    the angle is to each. Cells whose every lower neighbour lies on a facet with nodata fall
    back to D8."""
    centre = padded[1:-1, 1:-1]
    best_slope = np.zeros(centre.shape, np.float32)
    best_facet = np.full(centre.shape, -1, np.int8)
    best_share = np.zeros(centre.shape, np.float32)  # share of the diagonal neighbour
    for index, (cardinal, corner) in enumerate(FACETS):
        along, across = (height, width) if cardinal in (NORTH, SOUTH) else (width, height)
        side = _neighbour(padded, cardinal)
        s1 = (centre - side) / along
        s2 = (side - _neighbour(padded, corner)) / across
        angle = np.arctan2(s2, s1)
        widest = np.arctan2(across, along)
        slope = np.where(angle < 0, s1, np.hypot(s1, s2))
        slope = np.where(angle > widest, (centre - _neighbour(padded, corner)) / diagonal, slope)
        steeper = slope > best_slope  # NaN (a nodata neighbour) compares False
        best_slope[steeper] = slope[steeper]
        best_facet[steeper] = index
        best_share[steeper] = np.clip(angle / widest, 0, 1)[steeper]
    _steepest(slopes, has_lower)
    on_rows, on_columns = np.nonzero(best_facet >= 0)
    facet, share = best_facet[on_rows, on_columns], best_share[on_rows, on_columns]
    slopes[:, on_rows, on_columns] = 0
    cardinals, corners = np.array(FACETS).T
    slopes[cardinals[facet], on_rows, on_columns] = 1 - share
    slopes[corners[facet], on_rows, on_columns] = share


def _neighbour(padded, direction):
    """Every inner cell's neighbour `direction` in a grid padded by one cell."""
    row, column = NEIGHBOURS[direction]
    return padded[1 + row : padded.shape[0] - 1 + row, 1 + column : padded.shape[1] - 1 + column]


def _drain_flats(padded, flat, fractions, cancelled):
    """Route each flat cell (all its fractions are 0: it has no lower neighbour) to a neighbour
    of the same elevation one step closer (in 8-connected steps) to a cell of that elevation
    that drains; distances grow in waves from those cells."""
    columns = padded.shape[1]
    offsets = [row * columns + column for row, column in NEIGHBOURS]
    elevation = padded.ravel()
    is_flat = flat.ravel().copy()
    draining = (~flat & ~np.isnan(padded)).ravel()
    frontier = np.flatnonzero(draining & _next_to(flat).ravel())
    frontier = frontier[_any_equal_flat_neighbour(frontier, elevation, is_flat, offsets)]
    while frontier.size:
        if cancelled():
            raise InterruptedError
        reached = []
        level = elevation[frontier]
        for direction, offset in enumerate(offsets):
            neighbour = frontier + offset
            neighbour = neighbour[is_flat[neighbour] & (elevation[neighbour] == level)]
            is_flat[neighbour] = False  # claimed: later directions and waves leave it alone
            fractions[(direction + 4) % 8, neighbour] = 1  # back towards the cell it was reached from
            reached.append(neighbour)
        frontier = np.concatenate(reached)


def _any_equal_flat_neighbour(cells, elevation, is_flat, offsets):
    found = np.zeros(cells.size, bool)
    for offset in offsets:
        neighbour = cells + offset
        found |= is_flat[neighbour] & (elevation[neighbour] == elevation[cells])
    return found


def accumulate(routing, area, cancelled=lambda: False):
    """Upslope area of every cell including itself (units of `area`, a per-row array), NaN on
    nodata."""
    rows, columns = routing.valid.shape
    cells = rows * columns
    valid = routing.valid.ravel()
    upslope = np.zeros(cells)
    upslope.reshape(rows, columns)[1:-1] = area[:, None]
    upslope[~valid] = 0
    donors = np.zeros(cells, np.uint8)
    for direction, offset in enumerate(routing.offsets):
        gives = (routing.receivers[max(0, -offset) : cells - max(0, offset)] >> direction) & 1
        donors[max(0, offset) : cells + min(0, offset)] += gives
    ready = np.flatnonzero(valid & (donors == 0))
    waves = 0
    while ready.size:
        waves += 1
        if waves % 64 == 0 and cancelled():
            raise InterruptedError
        flow = upslope[ready]
        receivers = routing.receivers[ready]
        reached = []
        for direction, offset in enumerate(routing.offsets):
            gives = np.flatnonzero(receivers & (1 << direction))
            if not gives.size:
                continue
            giver = ready[gives]
            receiver = giver + offset
            upslope[receiver] += routing.fractions[direction][giver] * flow[gives]
            donors[receiver] -= 1
            reached.append(receiver[donors[receiver] == 0])
        ready = np.concatenate(reached) if reached else ready[:0]
    upslope[~valid] = np.nan
    return upslope.reshape(rows, columns)[1:-1, 1:-1]


def wetness_and_power(catchment, slope_degrees, min_slope_degrees):
    """TWI = ln(a / tan b) and SPI = a tan b, with b at least min_slope_degrees."""
    tangent = np.tan(np.radians(np.maximum(slope_degrees, np.float32(min_slope_degrees))))
    return np.log(catchment / tangent), catchment * tangent


OUTPUTS = ("SLOPE", "ASPECT", "CATCHMENT", "TWI", "SPI")
# The band description written with each output; stacking the drivers recognises aspect by its own.
BAND_NAMES = {
    "SLOPE": "slope (degrees)",
    "ASPECT": "aspect (degrees clockwise from north)",
    "CATCHMENT": "specific catchment area (m2/m)",
    "TWI": "topographic wetness index",
    "SPI": "stream power index",
}
STEPS = ("Slope and aspect", "Filling depressions", "Flow directions", "Flow accumulation", "TWI and SPI")


def factors(
    z, sizes, wanted, emit, method="MFD", fill=True, min_slope=0.1, step=lambda index: None, cancelled=lambda: False
):
    """Compute the `wanted` OUTPUTS of the DEM z and pass each to emit(name, array) as soon as it
    is ready. step(index) announces STEPS[index]; cancelled() is polled and raises
    InterruptedError. Depressions are filled in a second thread while slope and aspect are
    computed and emitted (the reconstruction releases the GIL)."""
    unknown = set(wanted) - set(OUTPUTS)
    if unknown:
        raise ValueError(f"Unknown outputs {sorted(unknown)}")
    routed = bool({"CATCHMENT", "TWI", "SPI"} & set(wanted))

    def start(index):
        if cancelled():
            raise InterruptedError
        step(index)

    pool = futures.ThreadPoolExecutor(max_workers=1)
    try:
        filling = pool.submit(fill_depressions, z) if routed and fill else None
        start(0)
        slope, aspect = slope_aspect(z, sizes)
        for name, array in (("SLOPE", slope), ("ASPECT", aspect)):
            if name in wanted:
                emit(name, array)
        del aspect
        if not routed:
            return
        start(1)
        filled = (
            _wait(filling, cancelled) if filling else np.asarray(z, np.float32 if z.dtype == np.float32 else np.float64)
        )
    finally:
        pool.shutdown(wait=False)  # after a cancel, the filling thread ends on its own
    start(2)
    routing = route(filled, sizes, method, cancelled)
    del filled
    start(3)
    upslope = accumulate(routing, sizes.area, cancelled)
    del routing
    catchment = (upslope / sizes.flow_width[:, None]).astype(np.float32)
    del upslope
    if "CATCHMENT" in wanted:
        emit("CATCHMENT", catchment)
    start(4)
    wetness, power = wetness_and_power(catchment, slope, min_slope)
    for name, array in (("TWI", wetness), ("SPI", power)):
        if name in wanted:
            emit(name, array)


def _wait(future, cancelled):
    while True:
        try:
            return future.result(timeout=0.5)
        except futures.TimeoutError:
            if cancelled():
                raise InterruptedError from None
