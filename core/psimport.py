"""PS exports from the usual processors, recognised by their columns, turned into displacement
(mm) and velocity (mm/yr) per point.

A table is a dict {column name: list of values} (strings, numbers or None), plus optional
point coordinates from the layer's geometry. Units (auto), per format:
EGMS L2a/L2b/L3: mm, mm/yr (EPSG:3035 easting/northing). SARPROZ: mm, VEL mm/yr (WGS84 LAT/LON).
MintPy save_qgis / TRE: mm, VEL mm/yr. StaMPS-Visualizer: mm, velocity mm/yr (WGS84 lon/lat).
DePSI: d_ columns in m. Generic D<YYYYMMDD> layers and plain tables: not stated, mm assumed
(Points.unit_from is None: the caller warns and asks for the units).
"""

import csv
import datetime
import re
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

UNITS = ("auto", "m", "cm", "mm")  # enum order of the algorithm's UNITS
TO_MM = {"m": 1000.0, "cm": 10.0, "mm": 1.0}
DAYS_PER_YEAR = 365.25
MATLAB_DATENUM_OFFSET = 366  # Matlab datenum = Python date ordinal + 366

DATE_COLUMN = re.compile(r"^(?:d_?|D_?)?(\d{8})$")
COHERENCE_NAMES = (
    "temporal_coherence",
    "coherence",
    "coher",
    "coer",
    "pnt_enscoh",
    "coh",
    "coh_mean",
    "mean_coherence",
)
UP_NAMES = ("los_up", "cosu", "cos_u", "up")
INCIDENCE_NAMES = ("incidence_angle", "inc_angle", "incidence", "theta")
VELOCITY_NAMES = ("mean_velocity", "vel", "velocity", "v", "vel_mmyr")
ID_NAMES = ("pid", "id", "code", "pnt_id", "point_id")


@dataclass
class PsFormat:
    name: str
    x: str = None  # coordinate columns; None: the layer's geometry
    y: str = None
    crs: str = None  # of x/y columns; None: the layer's (or the CRS parameter's)
    dates: list = field(default_factory=list)  # [(column, datetime.date)] in time order
    velocity: str = None
    cumulative: str = None  # whole-period displacement column, used when there are no epochs
    coherence: str = None
    up: str = None
    incidence: str = None
    pid: str = None
    units: str = None  # of displacements; None: not stated by the format
    dates_in_first_row: bool = False  # StaMPS-Visualizer: row 0 holds the epochs


def read_delimited(path):
    """A CSV/TXT file as {column: [strings]}; the delimiter is sniffed (, ; tab space)."""
    with open(path, newline="", encoding="utf-8-sig") as file:
        sample = file.read(65536)
        if not sample.strip():
            raise InputError(f"{path} is empty.")
        file.seek(0)
        try:
            dialect = csv.Sniffer().sniff(sample.splitlines()[0], delimiters=",;\t ")
        except csv.Error:
            dialect = csv.excel
        rows = list(csv.reader(file, dialect, skipinitialspace=True))
    header, body = [name.strip() for name in rows[0]], [row for row in rows[1:] if any(cell.strip() for cell in row)]
    if not body:
        raise InputError(f"{path} has a header but no rows.")
    short = [number + 2 for number, row in enumerate(body) if len(row) < len(header)]
    if short:
        raise InputError(f"{path}: rows {short[:5]} have fewer values than the header's {len(header)} columns.")
    return {name: [row[i] for row in body] for i, name in enumerate(header)}


def _find(columns, names):
    lower = {column.lower(): column for column in columns}
    return next((lower[name] for name in names if name in lower), None)


def _date_columns(columns):
    found = []
    for column in columns:
        match = DATE_COLUMN.match(column)
        if match:
            try:
                found.append((column, datetime.datetime.strptime(match.group(1), "%Y%m%d").date()))
            except ValueError:
                continue
    return sorted(found, key=lambda pair: pair[1])


def detect(columns, has_geometry, x_field=None, y_field=None):
    """The format of a table with these columns (see the module's docstring), or InputError
    listing what was found and what is expected."""
    columns = list(columns)
    has = {column.lower() for column in columns}
    common = dict(
        dates=_date_columns(columns),
        coherence=_find(columns, COHERENCE_NAMES),
        up=_find(columns, UP_NAMES),
        incidence=_find(columns, INCIDENCE_NAMES),
        pid=_find(columns, ID_NAMES),
        velocity=_find(columns, VELOCITY_NAMES),
    )
    if x_field or y_field:
        if not (x_field in columns and y_field in columns):
            raise InputError(f"X_FIELD and Y_FIELD must both be columns of the table; it has: {', '.join(columns)}.")
        return PsFormat("x, y table", x=x_field, y=y_field, **common)
    if {"pid", "easting", "northing", "mean_velocity"} <= has:
        name = "EGMS L2a/L2b" if "los_up" in has else "EGMS L3 (Ortho)"
        return PsFormat(
            name, x=_find(columns, ["easting"]), y=_find(columns, ["northing"]), crs="EPSG:3035", units="mm", **common
        )
    if {"id", "lat", "lon", "vel"} <= has and has & {"coher", "cumul.disp.", "svet", "lvet"}:
        return PsFormat(
            "SARPROZ",
            x=_find(columns, ["lon"]),
            y=_find(columns, ["lat"]),
            crs="EPSG:4326",
            units="mm",
            cumulative=_find(columns, ["cumul.disp."]),
            **common,
        )
    if {"code", "vel", "v_stdev", "coherence"} <= has:
        coordinates = _latlon(columns) if not has_geometry else {}
        return PsFormat("MintPy save_qgis / TRE", units="mm", **coordinates, **common)
    ordered = _stamps_columns(columns)
    if ordered:
        return PsFormat(
            "StaMPS-Visualizer",
            x=ordered[0],
            y=ordered[1],
            crs="EPSG:4326",
            velocity=ordered[2],
            units="mm",
            dates=[(column, None) for column in ordered[3:]],
            dates_in_first_row=True,
        )
    if {"pnt_lat", "pnt_lon"} <= has:
        return PsFormat(
            "TU Delft DePSI",
            x=_find(columns, ["pnt_lon"]),
            y=_find(columns, ["pnt_lat"]),
            crs="EPSG:4326",
            units="m",
            **common,
        )
    if common["dates"] or common["velocity"]:
        if has_geometry:
            return PsFormat("generic (D<YYYYMMDD> columns)", **common)
        coordinates = _latlon(columns)
        if coordinates:
            return PsFormat("generic (D<YYYYMMDD> columns)", **coordinates, **common)
    raise InputError(
        f"Unrecognised PS layout. Columns found: {', '.join(columns[:40])}{' …' if len(columns) > 40 else ''}. "
        "Expected one of: EGMS (pid, easting, northing, mean_velocity, YYYYMMDD…), SARPROZ (ID, LAT, LON, VEL, "
        "COHER…), MintPy/TRE (CODE, VEL, V_STDEV, COHERENCE, DYYYYMMDD…), StaMPS-Visualizer (export_res_1…), "
        "DePSI (pnt_lat, pnt_lon, d_YYYYMMDD…), a point layer with DYYYYMMDD or velocity columns, or give "
        "X_FIELD, Y_FIELD (and VALUE_FIELD) for a plain table."
        + ("" if has_geometry else " The table has no geometry and no recognised coordinate columns.")
    )


def _latlon(columns):
    lat, lon = _find(columns, ["lat", "latitude"]), _find(columns, ["lon", "longitude", "long"])
    return {"x": lon, "y": lat, "crs": "EPSG:4326"} if lat and lon else {}


def _stamps_columns(columns):
    numbered = sorted(
        (int(match.group(1)), column) for column in columns if (match := re.match(r"^export_res_(\d+)$", column))
    )
    if len(numbered) >= 5 and len(numbered) == len(columns):
        return [column for _, column in numbered]
    return None


def numeric(values, column):
    """Floats from strings/numbers; empty and None become NaN; anything else, ±inf included, is an error."""
    try:
        floats = np.array([np.nan if v is None or v == "" else v for v in values], dtype=float)
    except (TypeError, ValueError):
        for row, value in enumerate(values):
            try:
                float(value) if value not in (None, "") else None
            except (TypeError, ValueError):
                raise InputError(f"Column '{column}' has a non-numeric value {value!r} in row {row + 1}.") from None
        raise
    infinite = np.flatnonzero(np.isinf(floats))
    if len(infinite):
        raise InputError(
            f"Column '{column}' has {len(infinite)} infinite values, the first in row {infinite[0] + 1}. Leave "
            "missing values empty, or fix them in the source."
        )
    return floats


@dataclass
class Points:
    x: np.ndarray
    y: np.ndarray
    pid: list
    displacement: np.ndarray  # mm
    velocity: np.ndarray  # mm/yr
    coherence: np.ndarray
    n_epochs: int
    start_date: str
    end_date: str
    dropped: dict  # reason -> count
    notes: list  # what the log should say
    unit: str  # of the file's displacements, as read: "m", "cm" or "mm"
    unit_from: str  # why: "declared", the layout's name (it states its units) or None (not stated: mm assumed)


def convert(
    table,
    fmt,
    geometry_xy=None,
    start=None,
    end=None,
    units="auto",
    min_coherence=0.0,
    los_to_vertical=False,
    value_field=None,
):
    """The points of `table` in format `fmt`: displacement between the epochs nearest to `start`
    and `end` (default first and last), velocity as the least-squares slope over the epochs in
    between (or the file's velocity when there are no epochs), both in mm."""
    notes = []
    dropped = {}
    n_rows = len(next(iter(table.values()))) if table else 0
    dates = list(fmt.dates)
    if fmt.dates_in_first_row:  # StaMPS-Visualizer: epochs as Matlab day numbers minus one
        dates = [(column, _from_matlab(float(table[column][0]) + 1)) for column, _ in dates]
        table = {column: values[1:] for column, values in table.items()}
        n_rows -= 1
    if n_rows == 0:
        raise InputError("The table has no rows.")
    x, y = (numeric(table[fmt.x], fmt.x), numeric(table[fmt.y], fmt.y)) if fmt.x else geometry_xy
    if x is None:
        raise InputError(f"The {fmt.name} table has no coordinates: no geometry, and no X/Y or LAT/LON columns.")
    unit, unit_from = _unit(fmt, units)
    scale = TO_MM[unit]
    pid = [str(v) for v in table[fmt.pid]] if fmt.pid else [str(i + 1) for i in range(n_rows)]

    if value_field:
        displacement, velocity, n_epochs, first, last = (
            numeric(table[value_field], value_field) * scale,
            np.full(n_rows, np.nan),
            0,
            "",
            "",
        )
    elif dates:
        series = np.column_stack([numeric(table[column], column) for column, _ in dates]) * scale
        displacement, velocity, n_epochs, first, last = _over_window(series, [d for _, d in dates], start, end, notes)
    elif fmt.velocity:
        velocity = numeric(table[fmt.velocity], fmt.velocity) * scale
        cumulative = (
            numeric(table[fmt.cumulative], fmt.cumulative) * scale if fmt.cumulative else np.full(n_rows, np.nan)
        )
        displacement, n_epochs, first, last = cumulative, 0, "", ""
        notes.append(
            f"No epoch columns: velocity from '{fmt.velocity}'"
            + (f", displacement from '{fmt.cumulative}'." if fmt.cumulative else "; displacement left empty.")
        )
    else:
        raise InputError("The table has neither epoch columns (DYYYYMMDD…) nor a velocity column: nothing to import.")

    if los_to_vertical:
        factor = _vertical_factor(table, fmt)
        displacement, velocity = displacement / factor, velocity / factor
        notes.append("Line-of-sight values divided by " + (f"'{fmt.up}'." if fmt.up else f"cos('{fmt.incidence}')."))
    coherence = numeric(table[fmt.coherence], fmt.coherence) if fmt.coherence else np.full(n_rows, np.nan)
    keep = np.isfinite(x) & np.isfinite(y)
    dropped["no coordinates"] = int((~keep).sum())
    # A point needs its displacement; in a file without epochs its velocity is enough.
    has_values = np.isfinite(displacement) | ((n_epochs == 0) & np.isfinite(velocity))
    dropped["missing values (NaN)"] = int((keep & ~has_values).sum())
    keep &= has_values
    if min_coherence > 0:
        if not fmt.coherence:
            raise InputError("MIN_COHERENCE is set, but the table has no coherence column.")
        low = keep & ~(coherence >= min_coherence)
        dropped[f"coherence below {min_coherence}"] = int(low.sum())
        keep &= ~low
    index = np.flatnonzero(keep)
    if len(index) == 0:
        raise InputError(f"No point is left: {', '.join(f'{n} dropped ({r})' for r, n in dropped.items() if n)}.")
    x, y, displacement, velocity, coherence = (a[index] for a in (x, y, displacement, velocity, coherence))
    pid = [pid[i] for i in index]
    x, y, pid, displacement, velocity, coherence, merged = _merge_duplicates(
        x, y, pid, displacement, velocity, coherence
    )
    dropped["merged into a point at the same location"] = merged
    return Points(x, y, pid, displacement, velocity, coherence, n_epochs, first, last, dropped, notes, unit, unit_from)


def _unit(fmt, units):
    """The unit of the file's displacements and where it comes from (see Points.unit_from)."""
    if units != "auto":
        return units, "declared"
    if fmt.units:
        return fmt.units, fmt.name
    return "mm", None


def _from_matlab(datenum):
    return datetime.date.fromordinal(int(round(datenum)) - MATLAB_DATENUM_OFFSET)


def _over_window(series, dates, start, end, notes):
    if len(dates) < 2:
        raise InputError(f"Only one epoch column ({dates[0]}): a displacement needs at least two epochs.")
    ordinals = np.array([d.toordinal() for d in dates], dtype=float)
    first_epoch, last_epoch = dates[0], dates[-1]
    start = start or first_epoch
    end = end or last_epoch
    if start >= end:
        raise InputError(f"START_DATE ({start}) must be before END_DATE ({end}).")
    if start > last_epoch or end < first_epoch:
        raise InputError(f"The dates {start} … {end} lie outside the epochs {first_epoch} … {last_epoch}.")
    i = int(np.argmin(np.abs(ordinals - start.toordinal())))
    j = int(np.argmin(np.abs(ordinals - end.toordinal())))
    if j <= i:
        raise InputError(f"START_DATE and END_DATE fall on the same epoch ({dates[i]}): choose dates further apart.")
    notes.append(f"Epochs used: {dates[i]} … {dates[j]} ({j - i + 1} of {len(dates)}; nearest to {start} and {end}).")
    window = series[:, i : j + 1]
    days = ordinals[i : j + 1] - ordinals[i]
    displacement = window[:, -1] - window[:, 0]
    # Least-squares slope per point, in one matrix product; a point with a NaN epoch gets NaN.
    centred = days - days.mean()
    velocity = (window - window.mean(axis=1, keepdims=True)) @ centred / (centred @ centred) * DAYS_PER_YEAR
    displacement = np.where(np.isfinite(velocity), displacement, np.nan)
    return displacement, velocity, j - i + 1, dates[i].isoformat(), dates[j].isoformat()


def _vertical_factor(table, fmt):
    if fmt.up:
        factor = numeric(table[fmt.up], fmt.up)
    elif fmt.incidence:
        factor = np.cos(np.radians(numeric(table[fmt.incidence], fmt.incidence)))
    else:
        raise InputError(
            f"LOS_TO_VERTICAL needs an up component ({', '.join(UP_NAMES)}) or an incidence angle "
            f"({', '.join(INCIDENCE_NAMES)}); the {fmt.name} table has neither."
        )
    if np.nanmin(np.abs(factor)) < 0.1:
        raise InputError("The up component / cos(incidence) is near 0 for some points: vertical values would explode.")
    return factor


def _merge_duplicates(x, y, pid, displacement, velocity, coherence):
    unique, first, inverse, counts = np.unique(
        np.column_stack([x, y]), axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    inverse = inverse.ravel()

    def mean(values):
        sums = np.bincount(inverse, weights=np.nan_to_num(values))
        finite = np.bincount(inverse, weights=np.isfinite(values).astype(float))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(finite > 0, sums / finite, np.nan)

    return (
        unique[:, 0],
        unique[:, 1],
        [pid[i] for i in first],
        mean(displacement),
        mean(velocity),
        mean(coherence),
        len(x) - len(unique),
    )
