"""The demo's picture: the CNN surface, the kriged surface and the kriging variance, with the PS
points, side by side (build/demo/surfaces.png). Usage: demo_figure.py OUTPUT_FOLDER"""

import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from osgeo import gdal, ogr


def read(path):
    dataset = gdal.Open(str(path))
    band = dataset.GetRasterBand(1)
    values = band.ReadAsArray().astype(float)
    values[values == band.GetNoDataValue()] = np.nan
    left, width, _, top, _, height = dataset.GetGeoTransform()
    return values, (left, left + width * dataset.RasterXSize, top + height * dataset.RasterYSize, top)


def points(path):
    source = ogr.Open(str(path))  # kept: its layer dies with it
    layer = source.GetLayer()
    return np.array([(feature.GetGeometryRef().GetX(), feature.GetGeometryRef().GetY(), feature["displacement"]) for feature in layer])


def main(folder):
    folder = Path(folder)
    cnn, extent = read(folder / "cnn_surface.tif")
    kriged, _ = read(folder / "kriged_surface.tif")
    variance, _ = read(folder / "kriging_variance.tif")
    ps = points(folder / "ps_points.gpkg")
    limit = np.nanpercentile(np.abs(np.concatenate([cnn.ravel(), kriged.ravel(), ps[:, 2]])), 98)
    figure = Figure(figsize=(15, 4.8), dpi=90, layout="tight")
    panels = (
        ("CNN surface (mm)", cnn, "RdBu", -limit, limit),
        ("Ordinary kriging (mm)", kriged, "RdBu", -limit, limit),
        ("Kriging variance (mm²)", variance, "magma_r", *np.nanpercentile(variance, [2, 98])),
    )
    for slot, (title, values, colours, low, high) in enumerate(panels):
        axes = figure.add_subplot(1, 3, slot + 1)
        shown = axes.imshow(values, extent=extent, cmap=colours, vmin=low, vmax=high)
        axes.scatter(ps[:, 0], ps[:, 1], c=ps[:, 2], cmap="RdBu", vmin=-limit, vmax=limit, s=6, edgecolors="black", linewidths=0.3)
        axes.set(title=title, xticks=[], yticks=[])
        figure.colorbar(shown, ax=axes, shrink=0.8)
    figure.suptitle("Doñana, vertical displacement 2016–2019, Sentinel-1 P-SBAS points (dots)")
    figure.savefig(folder / "surfaces.png")


if __name__ == "__main__":
    main(sys.argv[1])
