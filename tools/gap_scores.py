"""Scores maps in the PS gaps against a truth raster: every cell of the truth raster with a value
and no PS point in it is a gap cell; each map is read at the gap cells' centres (in its own CRS,
the cell that holds the centre) and scored there, all maps on the cells where every one has a
value. The null model is the PS points' mean. Prints one line per method (n, RMSE, MAE, bias =
map − truth, and the RMSE on the gap cells more than FAR cells from every PS cell) and writes them
as CSV.

Usage: gap_scores.py TRUTH.tif PS_POINTS FIELD OUTPUT.csv NAME=MAP.tif [NAME=MAP.tif …]"""

import csv
import sys

import numpy as np
from osgeo import gdal, ogr, osr
from scipy.ndimage import distance_transform_edt

NULL_MODEL = "PS mean (null model)"
COLUMNS = ("method", "n", "rmse", "mae", "bias", "n_far", "rmse_far")
FAR = 3  # cells (of the truth raster) from the nearest PS cell, centre to centre


def read_raster(path):
    """(values with NaN for nodata, geotransform, spatial reference)."""
    dataset = gdal.Open(str(path))
    band = dataset.GetRasterBand(1)
    values = band.ReadAsArray().astype(np.float64)
    if band.GetNoDataValue() is not None:
        values[values == band.GetNoDataValue()] = np.nan
    reference = osr.SpatialReference(wkt=dataset.GetProjection())
    reference.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return values, dataset.GetGeoTransform(), reference


def read_points(path, field):
    """(x, y, values, spatial reference) of a point layer."""
    source = ogr.Open(str(path))
    layer = source.GetLayer()
    rows = [
        (feature.GetGeometryRef().GetX(), feature.GetGeometryRef().GetY(), feature.GetField(field)) for feature in layer
    ]
    reference = layer.GetSpatialRef().Clone()
    reference.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    x, y, values = (np.array(column, np.float64) for column in zip(*rows))
    return x, y, values, reference


def transform(x, y, source, target):
    if source.IsSame(target):
        return x, y
    moved = np.array(osr.CoordinateTransformation(source, target).TransformPoints(np.column_stack([x, y])))
    return moved[:, 0], moved[:, 1]


def cell_of(geotransform, x, y):
    """(row, column) of the cells holding (x, y); north-up grids."""
    left, width, _, top, _, height = geotransform
    return np.floor((y - top) / height).astype(int), np.floor((x - left) / width).astype(int)


def on_grid(shape, rows, columns):
    return (rows >= 0) & (rows < shape[0]) & (columns >= 0) & (columns < shape[1])


def sample(path, x, y, reference):
    """The raster's values at (x, y) given in `reference`; NaN outside it or on nodata."""
    values, geotransform, own = read_raster(path)
    rows, columns = cell_of(geotransform, *transform(x, y, reference, own))
    inside = on_grid(values.shape, rows, columns)
    out = np.full(len(x), np.nan)
    out[inside] = values[rows[inside], columns[inside]]
    return out


def gap_cells(truth_path, points_path, field):
    """(x, y, truth value, distance in cells to the nearest PS cell) at the centres of the truth
    raster's gap cells, its reference, and the PS values' mean."""
    truth, geotransform, reference = read_raster(truth_path)
    px, py, ps_values, ps_reference = read_points(points_path, field)
    rows, columns = cell_of(geotransform, *transform(px, py, ps_reference, reference))
    has_ps = np.zeros(truth.shape, bool)
    inside = on_grid(truth.shape, rows, columns)
    has_ps[rows[inside], columns[inside]] = True
    gap_rows, gap_columns = np.nonzero(np.isfinite(truth) & ~has_ps)
    left, width, _, top, _, height = geotransform
    x, y = left + (gap_columns + 0.5) * width, top + (gap_rows + 0.5) * height
    distance = distance_transform_edt(~has_ps)[gap_rows, gap_columns]
    return x, y, truth[gap_rows, gap_columns], distance, reference, float(np.nanmean(ps_values))


def scores(truth_path, points_path, field, maps):
    """One dict per method (COLUMNS), the null model first, on the gap cells every map covers."""
    x, y, truth, distance, reference, ps_mean = gap_cells(truth_path, points_path, field)
    predictions = {NULL_MODEL: np.full(len(truth), ps_mean)}
    predictions.update({name: sample(path, x, y, reference) for name, path in maps.items()})
    common = np.all([np.isfinite(values) for values in predictions.values()], axis=0)
    far = distance[common] > FAR
    rows = []
    for name, values in predictions.items():
        error = values[common] - truth[common]
        rows.append(
            {
                "method": name,
                "n": int(common.sum()),
                "rmse": _rms(error),
                "mae": float(np.mean(np.abs(error))),
                "bias": float(np.mean(error)),
                "n_far": int(far.sum()),
                "rmse_far": _rms(error[far]),
            }
        )
    return rows, int(len(truth))


def _rms(error):
    return float(np.sqrt(np.mean(error**2))) if len(error) else float("nan")


def main(argv):
    truth_path, points_path, field, output = argv[:4]
    maps = dict(argument.split("=", 1) for argument in argv[4:])
    rows, cells = scores(truth_path, points_path, field, maps)
    with open(output, "w", newline="") as file:
        writer = csv.DictWriter(file, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"{cells} gap cells (a value in the truth, no PS point), {rows[0]['n']} of them covered by every map")
    far = f"RMSE >{FAR} cells ({rows[0]['n_far']})"
    print(f"{'method':<24}{'n':>6}{'RMSE':>9}{'MAE':>9}{'bias':>9}{far:>22}")
    for row in rows:
        print(
            f"{row['method']:<24}{row['n']:>6}{row['rmse']:>9.2f}{row['mae']:>9.2f}{row['bias']:>+9.2f}{row['rmse_far']:>22.2f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
