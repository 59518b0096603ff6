"""A plain, cell-by-cell reference for core.terrain: priority-flood filling (Barnes et al.
2014), the documented D8/MFD rules, and accumulation in Kahn's topological order. Flats are left
without receivers (downstream_of_flats tells which cells that can affect), or routed by a
first-in-first-out breadth-first search from their outlets (route_flats), whose tie-breaks
between equally near neighbours need not be core.terrain's."""

import heapq
import math
from collections import deque

import numpy as np

from insar_subsidence.core.terrain import MFD_EXPONENT, NEIGHBOURS


def reference_fill(z):
    """Barnes et al. (2014) priority-flood, cell by cell."""
    rows, columns = z.shape
    filled = z.astype(np.float64).copy()
    done = np.isnan(z)
    heap = []
    for row in range(rows):
        for column in range(columns):
            if not done[row, column] and any(
                not (0 <= row + dr < rows and 0 <= column + dc < columns) or np.isnan(z[row + dr, column + dc])
                for dr, dc in NEIGHBOURS
            ):
                heapq.heappush(heap, (filled[row, column], row, column))
                done[row, column] = True
    while heap:
        level, row, column = heapq.heappop(heap)
        for dr, dc in NEIGHBOURS:
            r, c = row + dr, column + dc
            if 0 <= r < rows and 0 <= c < columns and not done[r, c]:
                done[r, c] = True
                filled[r, c] = max(filled[r, c], level)
                heapq.heappush(heap, (filled[r, c], r, c))
    return filled


def reference_receivers(filled, method):
    """{cell: {neighbour: share}} by the documented rules, with flats left out (empty)."""
    rows, columns = filled.shape
    receivers = {}
    for row in range(rows):
        for column in range(columns):
            if np.isnan(filled[row, column]):
                continue
            slopes = {}
            for dr, dc in NEIGHBOURS:
                r, c = row + dr, column + dc
                if 0 <= r < rows and 0 <= c < columns and filled[r, c] < filled[row, column]:
                    slopes[(r, c)] = (filled[row, column] - filled[r, c]) / math.hypot(dr, dc)
            if not slopes:
                receivers[(row, column)] = {}
            elif method == "D8":
                receivers[(row, column)] = {max(slopes, key=slopes.get): 1.0}  # first maximum: NEIGHBOURS order
            else:
                weights = {cell: value**MFD_EXPONENT for cell, value in slopes.items()}
                receivers[(row, column)] = {cell: weight / sum(weights.values()) for cell, weight in weights.items()}
    return receivers


def reference_accumulation(receivers, shape):
    """Kahn's topological order, cell by cell."""
    upslope = np.full(shape, np.nan)
    donors = {cell: 0 for cell in receivers}
    for cell, shares in receivers.items():
        upslope[cell] = 1.0
        for receiver in shares:
            donors[receiver] += 1
    queue = deque(cell for cell, count in donors.items() if count == 0)
    while queue:
        cell = queue.popleft()
        for receiver, share in receivers[cell].items():
            upslope[receiver] += share * upslope[cell]
            donors[receiver] -= 1
            if donors[receiver] == 0:
                queue.append(receiver)
    return upslope


def downstream_of_flats(receivers, filled):
    """True on flat cells (no receiver, not on the border), on the cells of the same elevation
    next to them (the flats' outlets) and on everything downstream of those."""
    shape = filled.shape
    on_border = lambda cell: cell[0] in (0, shape[0] - 1) or cell[1] in (0, shape[1] - 1)
    touched = np.zeros(shape, bool)
    for cell, shares in receivers.items():
        if shares or on_border(cell):
            continue
        touched[cell] = True
        for dr, dc in NEIGHBOURS:
            near = (cell[0] + dr, cell[1] + dc)
            if near in receivers and filled[near] == filled[cell]:
                touched[near] = True
    for cell in sorted(receivers, key=lambda cell: -filled[cell]):  # downstream order on the filled DEM
        for receiver in receivers[cell]:
            touched[receiver] |= touched[cell]
    return touched


def route_flats(receivers, filled):
    """Give every flat cell (no receiver, not on the border) the neighbour of the same
    elevation it is first reached from, searching breadth-first from the cells that drain."""
    shape = filled.shape
    on_border = lambda cell: cell[0] in (0, shape[0] - 1) or cell[1] in (0, shape[1] - 1)
    flat = {cell for cell, shares in receivers.items() if not shares and not on_border(cell)}
    queue = deque(cell for cell in sorted(receivers) if cell not in flat)
    while queue:
        cell = queue.popleft()
        for dr, dc in NEIGHBOURS:
            near = (cell[0] + dr, cell[1] + dc)
            if near in flat and filled[near] == filled[cell]:
                flat.discard(near)
                receivers[near] = {cell: 1.0}
                queue.append(near)
    return receivers
