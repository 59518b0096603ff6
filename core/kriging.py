"""Ordinary kriging for PS point sets of any size: variogram estimation without the n^2 pair
matrix, local kriging as batched small linear systems, and leave-one-out cross-validation.

The kriging system and the variogram models are PyKrige's (`pykrige.variogram_models`, the
`-gamma` matrix with a zero diagonal, exact values at the data points), so that results equal
`pykrige.ok.OrdinaryKriging` for the same parameters; what is written here is what PyKrige
cannot do at scale.
"""

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from .blas import available_cores, one_blas_thread
from .errors import InputError

# Enum order of the algorithm's VARIOGRAM_MODEL: part of the public interface.
MODELS = ("spherical", "exponential", "gaussian", "linear", "power")
# PyKrige's parameter lists, in its order.
PARAMETERS = {
    "spherical": ("psill", "range", "nugget"),
    "exponential": ("psill", "range", "nugget"),
    "gaussian": ("psill", "range", "nugget"),
    "linear": ("slope", "nugget"),
    "power": ("scale", "exponent", "nugget"),
}
BOUNDED = ("spherical", "exponential", "gaussian")

EPS = 1.0e-10  # PyKrige's distance below which a target is a data point
GLOBAL_MAX_POINTS = 5000  # global kriging solves one (n+1)^2 system: ~200 MB at this size
N_LAGS = 20
SHORT_LAGS = 5  # finer lags below the first regular one, from the full set's near pairs
SHORT_RANGE_NEIGHBOURS = 50  # full-set neighbours of each subsampled point used for them
PAIR_BLOCK = 131_072  # subsample pairs classed at once (1 MB of distances)
NUGGET_DOMINATED = 0.75  # nugget / sill above which spatial dependence is weak (Cambardella 1994)
RANGE_BEYOND_LAGS = 2.0  # a fitted range beyond this multiple of the largest lag is extrapolated
POOR_FIT_R2 = 0.5  # below this the model does not follow the experimental variogram
HONEST_MSSE = (0.5, 2.0)  # leave-one-out MSSE outside this: the kriging variance misstates errors
CHUNK = 65_536  # targets whose neighbours are looked up together (~34 MB for k = 32)
GLOBAL_BATCH_VALUES = 140_000  # float64 values per global batch array (~1 MB): fits in cache
GROUP = 256  # nearby targets kriged from one table of semivariances (~200 points for k = 32)
MAX_WEIGHT_SUM = 10.0  # sum of |weights| beyond which a system is ill-conditioned (sane: about 1 to 3)
ANCHOR_STEP = 16  # cells between the anchors that bound a block's neighbourhood (see _points_in_reach)
RIDGES = (1e-6, 1e-4, 1e-2, 1e-1)  # nugget raises tried in turn, relative to the largest semivariance


@dataclass(frozen=True)
class Variogram:
    model: str
    parameters: tuple  # in PyKrige's order, see PARAMETERS

    def __call__(self, distances):
        """PyKrige's model at the distances (equal to pykrige.variogram_models to rounding)."""
        return self.evaluate_in_place(np.array(distances, dtype=float))

    def evaluate_in_place(self, d):
        """Overwrites the float array of distances `d` with the model's values and returns it.

        Local kriging evaluates about (k + 1)^2 values per grid cell, so this makes as few
        passes over `d` as it can."""
        named = self.named
        if self.model == "linear":
            d *= named["slope"]
        elif self.model == "power":
            np.power(d, named["exponent"], out=d)
            d *= named["scale"]
        elif self.model == "spherical":
            d *= 1.0 / named["range"]
            np.minimum(d, 1.0, out=d)
            cubic = d * d
            cubic *= -0.5
            cubic += 1.5
            d *= cubic
            d *= named["psill"]
        else:  # exponential and gaussian: sill - psill * exp(-(d / a)^p), with PyKrige's a
            if self.model == "exponential":
                d *= -3.0 / named["range"]
            else:
                np.square(d, out=d)
                d *= -1.0 / (named["range"] * 4.0 / 7.0) ** 2
            np.exp(d, out=d)
            d *= -named["psill"]
            d += named["psill"]
        d += named["nugget"]
        return d

    @property
    def named(self):
        return dict(zip(PARAMETERS[self.model], self.parameters))

    def with_nugget(self, nugget):
        return Variogram(self.model, tuple(nugget if name == "nugget" else value for name, value in self.named.items()))

    @property
    def nugget(self):
        return self.named["nugget"]

    def as_pykrige_dict(self):
        """PyKrige's `variogram_parameters` dict (bounded models give the full sill)."""
        named = self.named
        if self.model in BOUNDED:
            return {"sill": named["psill"] + named["nugget"], "range": named["range"], "nugget": named["nugget"]}
        return named


@dataclass(frozen=True)
class ExperimentalVariogram:
    lags: np.ndarray  # mean pair distance in each bin
    semivariance: np.ndarray
    counts: np.ndarray  # pairs in each bin
    n_points: int  # points the pairs were drawn from


@dataclass(frozen=True)
class Fit:
    variogram: Variogram
    experimental: ExperimentalVariogram
    r_squared: float  # of the model against the experimental semivariances, weighted by pairs
    nugget_ratio: float  # nugget / semivariance at the largest lag

    @property
    def nugget_dominated(self):
        return self.nugget_ratio > NUGGET_DOMINATED

    @property
    def range_extrapolated(self):
        """The model levels off well beyond the lags it was fitted on: its range is a guess."""
        return (
            self.variogram.model in BOUNDED
            and self.variogram.named["range"] > RANGE_BEYOND_LAGS * self.experimental.lags.max()
        )


def merge_coincident(x, y, z):
    """Points at the same location become one, with the mean value; returns x, y, z (ordered by x,
    then y), merged count. (A lexsort: np.unique(axis=0) took 0.16 s at 200 000 points.)"""
    order = np.lexsort((y, x))
    x, y, z = x[order], y[order], z[order]
    first = np.ones(len(x), bool)
    first[1:] = (x[1:] != x[:-1]) | (y[1:] != y[:-1])
    group = np.cumsum(first) - 1
    means = np.bincount(group, weights=z) / np.bincount(group)
    return x[first], y[first], means, len(z) - int(first.sum())


def check_points(x, y, z, minimum=3):
    if len(z) < minimum:
        raise InputError(f"Kriging needs at least {minimum} points with a value; there are {len(z)}.")
    if np.ptp(z) == 0:
        raise InputError(f"All {len(z)} values are equal ({z[0]}): there is nothing to interpolate.")
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        raise InputError("All points are at one location.")


def experimental_variogram(x, y, z, max_points=2000, n_lags=N_LAGS, rng=None):
    """Binned semivariances up to a third of the extent's diagonal, never from all n^2 pairs.

    The pairs among a random subsample of at most `max_points` points give the lags; where the
    full set is much denser than the subsample, the short distances (which decide the nugget and
    the kriging weights) come from the full set instead: each subsampled point's neighbours
    within the radius that holds about SHORT_RANGE_NEIGHBOURS points (at most the first regular
    lag), in SHORT_LAGS finer lags.
    """
    rng = np.random.default_rng(rng)
    xy = np.column_stack([x, y])
    max_lag = np.hypot(np.ptp(x), np.ptp(y)) / 3.0
    chosen = rng.choice(len(z), size=max_points, replace=False) if len(z) > max_points else np.arange(len(z))
    # Lag classes: n_lags equal ones from `start` to max_lag, after SHORT_LAGS finer ones below it
    # when the full set gives the short distances.
    subsampled = len(chosen) < len(z)
    start = min(_short_range(xy), max_lag / n_lags) if subsampled else 0.0
    n_short = SHORT_LAGS if subsampled else 0
    sums = np.zeros((3, n_short + n_lags + 1))  # pairs, distances, half squared differences; last: unused pairs
    if subsampled:
        pairs = cKDTree(xy).query_ball_point(xy[chosen], start, workers=-1)
        anchors = np.repeat(chosen, [len(p) for p in pairs])
        others = np.concatenate(pairs).astype(int)
        keep = anchors != others
        anchors, others = anchors[keep], others[keep]
        distances = np.hypot(*(xy[anchors] - xy[others]).T)
        # Within `start` by the query; one at exactly `start` goes to the first regular class.
        bins = np.minimum(distances * (SHORT_LAGS / start), SHORT_LAGS).astype(np.intp)
        _add_to_classes(sums, bins, distances, 0.5 * (z[anchors] - z[others]) ** 2)
    for distances, halves, later in _subsample_pairs(xy[chosen], z[chosen]):
        classes = (distances - start) * (n_lags / (max_lag - start))
        used = (classes >= 0.0) & (distances <= max_lag) & later
        bins = np.minimum(classes, n_lags - 1).astype(np.intp)  # max_lag itself: the last class
        bins += n_short
        bins[~used] = len(sums[0]) - 1
        _add_to_classes(sums, bins, distances, halves)
    counts, distance_sums, half_sums = sums[:, : n_short + n_lags]
    filled = counts > 0
    lags = distance_sums[filled] / counts[filled]
    semivariance = half_sums[filled] / counts[filled]
    if filled.sum() < 3:
        raise InputError(
            f"Only {filled.sum()} of {n_short + n_lags} lag classes have point pairs ({len(z)} points): "
            "too few to estimate a variogram."
        )
    return ExperimentalVariogram(lags, semivariance, counts[filled].astype(np.int64), len(chosen))


def _subsample_pairs(xy, z):
    """The subsample's point pairs by blocks of rows of their distance matrix, each of about
    PAIR_BLOCK pairs: (distances, half squared differences, whether the pair is i < j). Blocks
    that stay in the cache, instead of pdist's 16 MB arrays, which took up to 0.1 s more in a
    fresh process, where every new page is a fault."""
    n = len(z)
    rows = max(1, PAIR_BLOCK // n)
    for first in range(0, n - 1, rows):
        i = np.arange(first, min(first + rows, n - 1))
        distances = cdist(xy[i], xy[first + 1 :])
        halves = z[i, None] - z[None, first + 1 :]
        halves *= halves
        halves *= 0.5
        later = np.arange(first + 1, n)[None, :] > i[:, None]
        yield distances, halves, later


def _add_to_classes(sums, bins, distances, halves):
    """Adds the pairs, their distances and half squared differences to `sums` by class."""
    size = sums.shape[1]
    bins = np.ravel(bins)
    sums[0] += np.bincount(bins, minlength=size)
    sums[1] += np.bincount(bins, weights=np.ravel(distances), minlength=size)
    sums[2] += np.bincount(bins, weights=np.ravel(halves), minlength=size)


def _short_range(xy):
    """The radius holding about SHORT_RANGE_NEIGHBOURS points, at the mean density over the
    bounding box."""
    area = max(np.ptp(xy[:, 0]) * np.ptp(xy[:, 1]), np.finfo(float).tiny)
    return float(np.sqrt(SHORT_RANGE_NEIGHBOURS * area / (np.pi * len(xy))))


def fit_variogram(experimental, model, fixed=None):
    """Weighted least squares of the model on the experimental variogram.

    Cressie's (1985) weights: each lag's residual is relative, (observed / model - 1), weighted
    by its pair count, so that lags count by how well they are known, whatever their
    semivariance; the soft-L1 loss keeps a few odd lags from dominating. Parameters named in
    `fixed` (PyKrige names, e.g. {"nugget": 0}) are held; for the bounded models "sill" holds
    the full sill (PyKrige's dict convention), i.e. psill = sill - nugget.
    """
    if model not in MODELS:
        raise InputError(f"Unknown variogram model {model!r}; use one of {', '.join(MODELS)}.")
    fixed = dict(fixed or {})
    names = PARAMETERS[model]
    sill = fixed.pop("sill", None)
    if sill is not None and (model not in BOUNDED or "psill" in fixed):
        raise InputError(f"A sill applies to the {', '.join(BOUNDED)} models, and not together with a partial sill.")
    if sill is not None and sill < fixed.get("nugget", 0.0):
        raise InputError(f"The sill ({sill}) must not be smaller than the nugget ({fixed['nugget']}).")
    unknown = set(fixed) - set(names)
    if unknown:
        raise InputError(
            f"The {model} model has no parameter {', '.join(sorted(unknown))}; its parameters are {', '.join(names)}."
        )
    h, gamma = experimental.lags, experimental.semivariance
    scale = gamma.max()  # fit in units of the largest semivariance, so the loss scale means the same everywhere
    start, low, high = _start_and_bounds(model, h, gamma / scale)
    free = [i for i, name in enumerate(names) if name not in fixed and not (sill is not None and name == "psill")]
    if sill is not None:
        high[names.index("nugget")] = min(high[names.index("nugget")], sill / scale)
    weights = np.sqrt(experimental.counts / experimental.counts.mean())

    def full(theta):
        values = np.array([fixed[name] / _unit(name, scale) if name in fixed else 0.0 for name in names])
        values[free] = theta
        if sill is not None:
            values[0] = sill / scale - values[names.index("nugget")]
        return values

    def residuals(theta):
        modelled = np.maximum(_evaluate(model, full(theta), h), 1e-12)
        return weights * (gamma / scale / modelled - 1.0)

    start = np.clip(start, low, high)
    if free:
        solution = least_squares(residuals, start[free], bounds=(low[free], high[free]), loss="soft_l1")
        values = full(solution.x)
    else:
        values = full([])
    parameters = tuple(float(v * _unit(name, scale)) for name, v in zip(names, values))
    variogram = Variogram(model, parameters)
    fitted = variogram(h)
    counts = experimental.counts
    mean = np.sum(counts * gamma) / counts.sum()
    r_squared = 1.0 - np.sum(counts * (gamma - fitted) ** 2) / np.sum(counts * (gamma - mean) ** 2)
    largest = float(variogram(np.array([h.max()]))[0])
    nugget_ratio = variogram.nugget / largest if largest > 0 else 1.0
    return Fit(variogram, experimental, float(r_squared), float(nugget_ratio))


def _unit(name, scale):
    # Semivariance-valued parameters are fitted divided by `scale`; distances and exponents are not.
    return scale if name in ("psill", "nugget", "slope", "scale") else 1.0


def _start_and_bounds(model, h, gamma):
    top = max(gamma.max(), 1e-12)
    if model in BOUNDED:
        start = [max(top - gamma[0], 0.1 * top), 0.5 * h.max(), 0.5 * gamma[0]]
        low, high = [0.0, 1e-6 * h.max(), 0.0], [10 * top, 10 * h.max(), 10 * top]
    elif model == "linear":
        start = [max((gamma[-1] - gamma[0]) / max(h[-1] - h[0], 1e-12), 1e-12), 0.5 * gamma[0]]
        low, high = [0.0, 0.0], [np.inf, 10 * top]
    else:  # power; PyKrige's exponent range
        start = [top / h.max(), 1.0, 0.5 * gamma[0]]
        low, high = [0.0, 0.001, 0.0], [np.inf, 1.999, 10 * top]
    return np.array(start, float), np.array(low, float), np.array(high, float)


def _evaluate(model, values, distances):
    return Variogram(model, tuple(values))(distances)


class OrdinaryKriging:
    """Ordinary kriging with PyKrige's system. `n_neighbours` 0 (or >= n) means global kriging.

    `regularised` counts the predictions so far whose system was ill-conditioned (see
    _solve_group) and were solved with a raised nugget; `raised_nugget` is the largest raise."""

    def __init__(self, x, y, z, variogram, n_neighbours=32):
        self.xy = np.column_stack([x, y]).astype(float)
        self.z = np.asarray(z, float)
        self.variogram = variogram
        n = len(self.z)
        self.is_global = n_neighbours == 0 or n_neighbours >= n
        if self.is_global and n > GLOBAL_MAX_POINTS:
            raise InputError(
                f"Global kriging of {n} points would solve a {n + 1} x {n + 1} system; it is refused above "
                f"{GLOBAL_MAX_POINTS} points. Use local kriging (N_NEIGHBOURS 16 to 64): it gives nearly "
                f"the same surface where points are dense."
            )
        extent = np.hypot(np.ptp(self.xy[:, 0]), np.ptp(self.xy[:, 1]))
        if not variogram(np.array([extent]))[0] > 0:
            raise InputError(
                f"The {variogram.model} variogram {variogram.as_pykrige_dict()} is zero at every distance: "
                "every kriging system would be singular. Give a positive sill or nugget."
            )
        self.k = n if self.is_global else int(n_neighbours)
        self.batch = max(1, GLOBAL_BATCH_VALUES // (self.k + 1)) if self.is_global else GROUP
        self.tree = cKDTree(self.xy)
        self._workspace = _Workspace()
        self.regularised = 0
        self._raises = []
        # Global: the one system's inverse, applied by matmul. (scipy's lu_solve corrupts the heap
        # when called from two threads with Debian 12's scipy 1.10 and OpenBLAS 0.3.21.)
        self._inverse = self._global_inverse() if self.is_global else None

    def _global_inverse(self):
        """The inverse of the global system; with the nugget raised (RIDGES) while a point's
        leave-one-out weights, -inverse[i, j] / inverse[i, i], sum to more than MAX_WEIGHT_SUM in
        absolute value: then every target is kriged with the raised nugget."""
        n = len(self.z)
        semivariances = self.variogram.evaluate_in_place(cdist(self.xy, self.xy))
        scale = max(float(semivariances.max()), np.finfo(float).tiny)
        for ridge in (0.0, *RIDGES):
            a = np.ones((n + 1, n + 1))
            np.negative(semivariances, out=a[:n, :n])
            a[:n, :n] -= ridge * scale  # the nugget raised, PyKrige's way: off the diagonal only
            np.fill_diagonal(a[:n, :n], 0.0)
            a[n, n] = 0.0
            inverse = np.linalg.inv(a)
            block = np.abs(inverse[:n, :n])
            weight_sums = block.sum(axis=1) / np.diag(block) - 1.0
            if weight_sums.max() <= MAX_WEIGHT_SUM:
                break
        if ridge:
            self.variogram = self.variogram.with_nugget(self.variogram.nugget + ridge * scale)
            self._raises.append(ridge * scale)
        return inverse

    def add_regularised(self, count, raised):
        """Counts `count` predictions made elsewhere (a Dask worker's block) whose nugget was raised
        by up to `raised`."""
        self.regularised += count
        if count:
            self._raises.append(raised)

    @property
    def raised_nugget(self):
        """The largest raise of the nugget so far (0: none)."""
        return max(self._raises, default=0.0)

    def _right_hand_side(self, distances):
        b = np.empty((distances.shape[0], distances.shape[1] + 1))
        b[:, :-1] = distances
        np.negative(self.variogram.evaluate_in_place(b[:, :-1]), out=b[:, :-1])
        b[:, :-1][np.abs(distances) <= EPS] = 0.0  # exact at data points, as PyKrige
        b[:, -1] = 1.0
        return b

    def predict(self, tx, ty):
        """Prediction and kriging variance at the targets (arrays of any shape, same shape out)."""
        targets = np.column_stack([np.ravel(tx), np.ravel(ty)]).astype(float)
        values, variances, regularised = self._chunked(targets, self._predict_chunk)
        self.regularised += regularised
        return values.reshape(np.shape(tx)), variances.reshape(np.shape(tx))

    def _predict_chunk(self, targets):
        if self.is_global:
            return self._in_batches(len(targets), lambda part: self._predict_global(targets[part]))
        return self._predict_local(targets, self.k)

    def _predict_global(self, targets):
        b = self._right_hand_side(cdist(targets, self.xy))
        weights = b @ self._inverse  # the system is symmetric, so is its inverse
        regularised = len(targets) if self._raises else 0
        return weights[:, :-1] @ self.z, _non_negative(-np.einsum("bi,bi->b", weights, b)), regularised

    def _predict_local(self, targets, k, skip_nearest=False):
        # One neighbour query for the whole chunk, on every core; then the systems in groups of
        # nearby targets, which share most of their neighbours.
        distances, index = self._neighbours(targets, k + skip_nearest)
        distances, index = distances[:, int(skip_nearest) :], index[:, int(skip_nearest) :]
        order = spatial_order(targets, GROUP)
        return self._in_batches(
            len(targets), lambda part: self._solve_group(distances[order[part]], index[order[part]]), order
        )

    def _neighbours(self, targets, count):
        """The `count` nearest points of each target, (distances, indices) nearest first, and
        among equal distances the lower index first, also for the last place: a Dask block's
        subset of the points, kept in their order, then gives the same neighbours in the same
        order as all the points (cKDTree's own pick among ties depends on the tree: on points
        with whole-metre coordinates, 660 of 250 000 cells differed by up to 0.6 % of the range)."""
        extra = int(count < len(self.z))  # one more, to see a tie at the last place
        distances, index = self.tree.query(targets, k=count + extra, workers=-1)
        distances = distances.reshape(len(targets), -1)  # k = 1 comes squeezed
        index = index.reshape(len(targets), -1)
        if extra:
            for row in np.flatnonzero(distances[:, count - 1] == distances[:, count]):
                reach = distances[row, count - 1] * (1 + 1e-9)  # the ball's test rounds otherwise
                within = np.asarray(self.tree.query_ball_point(targets[row], reach), np.intp)
                far = np.hypot(*(self.xy[within] - targets[row]).T)
                best = np.lexsort((within, far))[:count]
                distances[row, :count], index[row, :count] = far[best], within[best]
            distances, index = distances[:, :count], index[:, :count]
        tied = np.flatnonzero((distances[:, 1:] == distances[:, :-1]).any(axis=1))
        if len(tied):
            order = np.lexsort((index[tied], distances[tied]), axis=-1)
            distances[tied] = np.take_along_axis(distances[tied], order, axis=1)
            index[tied] = np.take_along_axis(index[tied], order, axis=1)
        return distances, index

    def _solve_group(self, distances, index):
        """Kriges the targets of one group from their neighbours' distances and indices (B, k).

        The systems are PyKrige's with a constant `shift` added to every semivariance entry and the
        border scaled by it (see _shifted): the weights are the same (they sum to 1), the variance is
        shift - weights . b, and the diagonal, now the largest entry of its column, spares LAPACK
        the row swaps (15 % faster).

        A system whose weights sum in absolute value to more than MAX_WEIGHT_SUM is ill-conditioned,
        typically by near-duplicate points under a nugget near 0 (several scatterers in one
        resolution cell): it would extrapolate wildly. Those are solved again with the nugget raised
        step by step (RIDGES, relative to the shift) until their weights are sane."""
        k = index.shape[1]
        a, shift = self._shifted_systems(index)
        b = np.empty((len(index), k + 1))
        b[:, :-1] = distances
        np.subtract(shift, self.variogram.evaluate_in_place(b[:, :-1]), out=b[:, :-1])
        at_point = np.abs(distances) <= EPS
        b[:, :-1][at_point] = shift  # exact at data points, as PyKrige
        b[:, -1] = shift
        weights = np.linalg.solve(a, b[..., None])[..., 0]
        tops = np.full(len(index), shift)  # the variance is top - weights . b
        bad = np.flatnonzero(np.abs(weights[:, :-1]).sum(axis=1) > MAX_WEIGHT_SUM)
        regularised = len(bad)
        for ridge in RIDGES:
            if not len(bad):
                break
            raise_by = ridge * shift
            diagonal = np.arange(k)
            a[bad[:, None], diagonal, diagonal] += raise_by
            b[bad, :-1] += raise_by * at_point[bad]
            tops[bad] += raise_by
            weights[bad] = np.linalg.solve(a[bad], b[bad, :, None])[..., 0]
            self._raises.append(float(tops[bad].max() - shift))  # a list: safe to append to from threads
            bad = bad[np.abs(weights[bad, :-1]).sum(axis=1) > MAX_WEIGHT_SUM]
        values = np.einsum("bi,bi->b", weights[:, :-1], self.z[index])
        return values, _non_negative(tops - np.einsum("bi,bi->b", weights, b)), regularised

    def _shifted_systems(self, index):
        """The kriging matrices (B, k+1, k+1) of the neighbour sets `index` (B, k), and their shift.

        Where the targets are close together (a grid), each system is gathered from one table of
        the semivariances among all the group's neighbours, instead of being evaluated pair by pair
        (5x less time); where they are scattered (cross-validation of a sample), the table would
        outgrow the systems, and each is evaluated from its own points."""
        union, positions = self._workspace.distinct(index, len(self.z))
        size, k = len(union), index.shape[1]
        if size * size > index.size * (k + 1):
            return _shifted(self._semivariances(index))
        table, shift = _shifted(self._semivariances(union[None]))
        rows = np.empty((len(index), k + 1), dtype=np.intp)
        rows[:, :-1] = positions
        rows[:, -1] = size
        shape = (len(index), k + 1, k + 1)
        flat = self._workspace.array("flat", shape, np.intp)
        np.add(rows[:, :, None] * (size + 1), rows[:, None, :], out=flat)
        # np.take releases the GIL, fancy indexing does not; with mode "raise" (the indices are
        # valid anyway) it would write into a copy of `out` first.
        systems = self._workspace.array("systems", shape, float)
        return np.take(table[0], flat, out=systems, mode="clip"), shift

    def _semivariances(self, index):
        """The semivariances among the points of each row of `index` (B, m): (B, m, m). numpy
        rather than cdist, which holds the GIL and so keeps the other threads waiting."""
        x, y = self.xy[index, 0], self.xy[index, 1]
        squared = x[:, :, None] - x[:, None, :]
        squared *= squared
        dy = y[:, :, None] - y[:, None, :]
        dy *= dy
        squared += dy
        return self.variogram.evaluate_in_place(np.sqrt(squared, out=squared))

    def block_tasks(self, grid, blocks):
        """(block, arguments of krige_block) for each block (first row, stop row) of the grid: the
        task a worker runs to krige the block as predict would here, given only the points that can
        be among its cells' neighbours."""
        for first, stop in blocks:
            chosen = self._points_in_reach(grid, first, stop)
            points = (self.xy[chosen, 0], self.xy[chosen, 1], self.z[chosen])
            yield (first, stop), (*points, self.variogram, self.k, grid, first, stop)

    def _points_in_reach(self, grid, first, stop):
        """Indices of the points that can be among the k nearest of a cell of rows first .. stop - 1.

        Anchors every ANCHOR_STEP cells (and on the last row and column) put each cell within
        `slack` of one; a cell's k-th nearest point lies within r(anchor) + |cell - anchor| of it,
        r being the distance to the anchor's k-th nearest, so its k nearest lie within
        r(anchor) + 2 slack of the anchor. At least k + 1 points, so that the block is kriged
        locally as here."""
        rows = np.unique(np.r_[np.arange(first, stop, ANCHOR_STEP), stop - 1])
        columns = np.unique(np.r_[np.arange(0, grid.width, ANCHOR_STEP), grid.width - 1])
        ax = grid.left + (columns + 0.5) * grid.pixel_width
        ay = grid.top - (rows + 0.5) * grid.pixel_height
        anchors = np.column_stack([a.ravel() for a in np.meshgrid(ax, ay)])
        slack = ANCHOR_STEP / 2 * np.hypot(grid.pixel_width, grid.pixel_height)
        reach, _ = self.tree.query(anchors, k=[self.k], workers=-1)
        within = self.tree.query_ball_point(anchors, reach[:, 0] + 2 * slack, workers=-1)
        chosen = np.unique(np.concatenate(within).astype(np.intp))
        return chosen if len(chosen) > self.k else np.arange(len(self.z))

    def leave_one_out(self, sample=None):
        """Points predicted from the others: (errors = observed - predicted, kriging variances),
        for every point or for the indices in `sample`. `regularised_in_cross_validation` counts
        the points whose system needed a raised nugget.

        Global: Dubrule's (1983) closed form from one inverse of the system. Local: each point's
        k nearest other points, solved in groups like the grid.
        """
        n = len(self.z)
        chosen = np.arange(n) if sample is None else np.asarray(sample)
        if self.is_global:
            diagonal = np.diag(self._inverse)[chosen]
            errors = (self._inverse[chosen, :n] @ self.z) / diagonal
            self.regularised_in_cross_validation = len(chosen) if self._raises else 0
            return errors, 1.0 / diagonal
        k = min(self.k, n - 1)
        # Coincident points are merged beforehand, so each point's nearest neighbour is itself.
        predicted, variances, regularised = self._chunked(
            self.xy[chosen], lambda xy: self._predict_local(xy, k, skip_nearest=True)
        )
        self.regularised_in_cross_validation = regularised
        return self.z[chosen] - predicted, variances

    def _chunked(self, targets, predict):
        """predict(targets chunk) -> (values, variances, regularised) over chunks that bound the memory."""
        values = np.empty(len(targets))
        variances = np.empty(len(targets))
        regularised = 0
        for start in range(0, len(targets), CHUNK):
            part = slice(start, start + CHUNK)
            values[part], variances[part], count = predict(targets[part])
            regularised += count
        return values, variances, regularised

    def _in_batches(self, n, solve, order=None):
        """Runs solve(slice) -> (values, variances, regularised) over batches of n targets on every
        core; the slices are of `order` (the targets' positions) when given."""
        values = np.empty(n)
        variances = np.empty(n)
        counts = []

        def run(start):
            part = slice(start, start + self.batch)
            where = part if order is None else order[part]
            values[where], variances[where], count = solve(part)
            counts.append(count)

        # numpy and LAPACK release the GIL, so threads use every core, provided each has one
        # BLAS thread (see core.blas).
        with one_blas_thread() as controlled, ThreadPoolExecutor(available_cores() if controlled else 1) as pool:
            list(pool.map(run, range(0, n, self.batch)))
        return values, variances, sum(counts)


class _Workspace(threading.local):
    """Each thread's arrays for the systems of its groups, reused from group to group. Fresh
    megabyte arrays for every group cost a third more time wherever the C library maps each one
    anew (glibc does until a larger block has been freed: 1.06 s instead of 0.80 s for 90 000
    cells in a fresh process)."""

    def __init__(self):
        self._arrays = {}

    def distinct(self, index, n):
        """The distinct values of `index` (integers below n), in no particular order, and the
        position of each entry's value among them: np.unique(index, return_inverse=True) up to the
        order, in time proportional to index.size (4096 neighbours: 18 µs instead of
        255 µs by sorting). Each thread keeps a table of n slots, never cleared: a value's slot
        is written before it is read."""
        entries = np.ravel(index)
        slots = self.array("slots", (n,), np.int32)
        numbers = np.arange(len(entries), dtype=np.int32)
        slots[entries] = numbers  # one of a value's entries is left in its slot
        union = entries[slots[entries] == numbers]
        slots[union] = numbers[: len(union)]
        return union, slots[index]

    def array(self, name, shape, dtype):
        """An uninitialised array of this shape, sharing memory with the last one of this name."""
        size = int(np.prod(shape))
        array = self._arrays.get(name)
        if array is None or array.size < size or array.dtype != dtype:
            array = self._arrays[name] = np.empty(size, dtype)
        return array[:size].reshape(shape)


def krige_block(x, y, z, variogram, n_neighbours, grid, first, stop):
    """Rows first .. stop - 1 of the grid kriged from the points: (values, variances, systems
    regularised, largest raise of the nugget). What a Dask worker runs for one block."""
    kriging = OrdinaryKriging(x, y, z, variogram, n_neighbours)
    values, variances = kriging.predict(*grid.centres(first, stop))
    return values, variances, kriging.regularised, kriging.raised_nugget


def _shifted(semivariances):
    """PyKrige's kriging matrices for the semivariances (B, m, m) among m points, shifted:
    (B, m + 1, m + 1) matrices of shift - semivariance off the diagonal, shift on it (PyKrige's
    0), shift on the border and 0 in the corner; and the shift, the largest semivariance."""
    batch, m, _ = semivariances.shape
    shift = max(float(semivariances.max()), np.finfo(float).tiny)
    a = np.full((batch, m + 1, m + 1), shift)
    np.subtract(shift, semivariances, out=a[:, :m, :m])
    diagonal = np.arange(m)
    a[:, diagonal, diagonal] = shift
    a[:, m, m] = 0.0
    return a, shift


def _non_negative(variances):
    """Kriging variances with rounding's negatives at the data points (about -1e-13 of the sill)
    made 0, so that their square roots are not NaN."""
    return np.maximum(variances, 0.0, out=variances)


def spatial_order(xy, group):
    """An order of the points (n, 2) in which each run of `group` consecutive points lies in one
    square tile holding about `group` points, so that a run's points share most neighbours."""
    spans = np.ptp(xy, axis=0)
    area = spans[0] * spans[1]
    if area > 0:
        side = np.sqrt(area * group / len(xy))
    else:  # on a line, or one place: tiles along the line
        side = max(spans.max() * group / len(xy), np.finfo(float).tiny)
    tiles = np.floor((xy - xy.min(axis=0)) / side)
    return np.lexsort((tiles[:, 0], tiles[:, 1]))


def warnings(fit, statistics):
    """What the user should know before trusting the surface or its variance (statistics: the
    leave-one-out ones, or None)."""
    found = []
    if fit.nugget_dominated:
        found.append(
            f"The nugget is {fit.nugget_ratio:.0%} of the sill: the values have little spatial structure at "
            "these distances, and kriging stays close to their mean. Check the field and its units, or set the "
            "variogram by hand."
        )
    if fit.range_extrapolated:
        found.append(
            f"The fitted range ({fit.variogram.named['range']:.6g}) is beyond {RANGE_BEYOND_LAGS:g} times the "
            f"largest lag ({fit.experimental.lags.max():.6g}): the variogram does not level off within the "
            "data's distances. "
            "Consider the linear or power model, or set RANGE."
        )
    if fit.r_squared < POOR_FIT_R2:
        found.append(
            f"The {fit.variogram.model} model fits the experimental variogram poorly (R² {fit.r_squared:.2f}): "
            "try another model, or look at the variogram plot in the report."
        )
    low, high = HONEST_MSSE
    if statistics and not low <= statistics["MSSE"] <= high:
        found.append(
            f"Leave-one-out MSSE is {statistics['MSSE']:.2f} (about 1 when honest): the kriging variance "
            + ("understates" if statistics["MSSE"] > high else "overstates")
            + " the real errors, so read OUTPUT_VARIANCE with care."
        )
    return found


def cross_validation_statistics(errors, variances):
    """Mean error, RMSE, mean standardised error, mean squared standardised error (~1 if honest)."""
    standardised = errors / np.sqrt(np.maximum(variances, np.finfo(float).tiny))
    return {
        "ME": float(np.mean(errors)),
        "RMSE": float(np.sqrt(np.mean(errors**2))),
        "MSE": float(np.mean(standardised)),
        "MSSE": float(np.mean(standardised**2)),
    }


def plot_variogram(fit, axes):
    """Experimental semivariances (marker area ~ pairs) and the fitted model, on matplotlib axes."""
    experimental = fit.experimental
    h = np.linspace(0.0, experimental.lags.max() * 1.05, 200)
    sizes = 10 + 90 * experimental.counts / experimental.counts.max()
    axes.scatter(experimental.lags, experimental.semivariance, s=sizes, color="#2166ac", label="experimental")
    axes.plot(h, fit.variogram(h), color="#b2182b", label=f"fitted {fit.variogram.model}")
    axes.set_xlabel("lag distance (map units)")
    axes.set_ylabel("semivariance (value units²)")
    axes.set_ylim(bottom=0)
    axes.legend()
