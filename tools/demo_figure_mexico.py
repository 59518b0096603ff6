"""The Mexico City demo's picture (OUTPUT_FOLDER/surfaces.png): above, the InSAR velocity (the
truth, on its own grid) with the PS points, the CNN surface and its σ; below, ordinary kriging,
the hybrid and the CNN's dissimilarity index with the edge of its area of applicability. One colour
scale for every velocity. Usage: demo_figure_mexico.py OUTPUT_FOLDER TRUTH.tif"""

import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from osgeo import gdal, osr

from demo_figure_donana import points, read
from gap_scores import transform


def utm_extent(path):
    """The truth raster's extent in the demo's UTM grid's CRS (its corners transformed: the grid is
    small enough for the distortion to stay below a cell)."""
    dataset = gdal.Open(str(path))
    left, width, _, top, _, height = dataset.GetGeoTransform()
    right, bottom = left + width * dataset.RasterXSize, top + height * dataset.RasterYSize
    x, y = _to_utm(np.array([left, right]), np.array([bottom, top]))
    return x[0], x[1], y[0], y[1]


def main(folder, truth_path):
    folder = Path(folder)
    truth, _ = read(truth_path)
    cnn, extent = read(folder / "cnn_surface.tif")
    cnn_sd, _ = read(folder / "cnn_uncertainty.tif")
    kriged, _ = read(folder / "kriged_surface.tif")
    hybrid, _ = read(folder / "hybrid_surface.tif")
    dissimilarity, _ = read(folder / "cnn_applicability.tif")
    inside, _ = read(folder / "cnn_applicability.tif", 2)
    ps = points(folder / "ps_points.gpkg")
    ps_x, ps_y = _to_utm(ps[:, 0], ps[:, 1])
    low, high = np.nanpercentile(truth, [2, 98])
    figure = Figure(figsize=(15, 7.6), dpi=80, layout="tight")
    panels = (
        ("InSAR velocity, the truth (mm/yr; dots: PS)", truth, utm_extent(truth_path), "RdBu", low, high),
        ("CNN surface, ensemble mean (mm/yr)", cnn, extent, "RdBu", low, high),
        ("CNN uncertainty, calibrated σ (mm/yr)", cnn_sd, extent, "magma_r", 0, np.nanpercentile(cnn_sd, 98)),
        ("Ordinary kriging (mm/yr)", kriged, extent, "RdBu", low, high),
        ("Hybrid: CNN + kriged residuals (mm/yr)", hybrid, extent, "RdBu", low, high),
        (
            "CNN dissimilarity index (line: area of applicability)",
            dissimilarity,
            extent,
            "magma_r",
            *np.nanpercentile(dissimilarity, [2, 98]),
        ),
    )
    for slot, (title, values, where, colours, vmin, vmax) in enumerate(panels):
        axes = figure.add_subplot(2, 3, slot + 1)
        shown = axes.imshow(values, extent=where, cmap=colours, vmin=vmin, vmax=vmax)
        if slot == 0:
            axes.scatter(ps_x, ps_y, s=1.5, c="black", linewidths=0)
        if slot == 5:
            axes.contour(
                np.nan_to_num(inside, nan=1.0),
                levels=[0.5],
                colors="black",
                linewidths=0.8,
                extent=where,
                origin="upper",
            )
        axes.set(title=title, xticks=[], yticks=[], xlim=extent[:2], ylim=extent[2:])
        figure.colorbar(shown, ax=axes, shrink=0.8)
    figure.suptitle(
        "Mexico City, vertical velocity January–July 2018 (Sentinel-1, PyRate test data): "
        f"{len(ps)} PS cells of coherence ≥ 0.65, the rest gaps"
    )
    figure.savefig(folder / "surfaces.png")


def _to_utm(lon, lat):
    source, target = osr.SpatialReference(), osr.SpatialReference()
    source.ImportFromEPSG(4326)
    target.ImportFromEPSG(32614)
    for reference in (source, target):
        reference.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return transform(lon, lat, source, target)


if __name__ == "__main__":
    main(*sys.argv[1:3])
