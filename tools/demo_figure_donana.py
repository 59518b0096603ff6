"""The Doñana demo's picture (build/demo/donana/surfaces.png), with the PS points: the CNN surface, its
uncertainty and its area of applicability above; the kriged surface, kriging's standard deviation
and the difference of the two surfaces in the middle; the hybrid (the CNN plus its kriged
residuals), its standard deviation and its correction to the CNN below. Usage: demo_figure_donana.py
OUTPUT_FOLDER"""

import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from osgeo import gdal, ogr


def read(path, number=1):
    dataset = gdal.Open(str(path))  # kept open while its band is read
    band = dataset.GetRasterBand(number)
    values = band.ReadAsArray().astype(float)
    values[values == band.GetNoDataValue()] = np.nan
    left, width, _, top, _, height = dataset.GetGeoTransform()
    return values, (left, left + width * dataset.RasterXSize, top + height * dataset.RasterYSize, top)


def points(path):
    source = ogr.Open(str(path))  # kept: its layer dies with it
    layer = source.GetLayer()
    return np.array(
        [
            (feature.GetGeometryRef().GetX(), feature.GetGeometryRef().GetY(), feature["displacement"])
            for feature in layer
        ]
    )


def main(folder):
    folder = Path(folder)
    cnn, extent = read(folder / "cnn_surface.tif")
    kriged, _ = read(folder / "kriged_surface.tif")
    kriging_sd = np.sqrt(read(folder / "kriging_variance.tif")[0])
    cnn_sd, _ = read(folder / "cnn_uncertainty.tif")
    hybrid, _ = read(folder / "hybrid_surface.tif")
    hybrid_sd = np.sqrt(read(folder / "hybrid_variance.tif")[0])
    dissimilarity, _ = read(folder / "cnn_applicability.tif")
    inside, _ = read(folder / "cnn_applicability.tif", 2)
    ps = points(folder / "ps_points.gpkg")
    limit = np.nanpercentile(np.abs(np.concatenate([cnn.ravel(), kriged.ravel(), ps[:, 2]])), 98)
    spread = np.nanpercentile(np.concatenate([cnn_sd.ravel(), kriging_sd.ravel()]), 98)
    difference, correction = cnn - kriged, hybrid - cnn
    figure = Figure(figsize=(15, 14.4), dpi=80, layout="tight")
    panels = (
        ("CNN surface, ensemble mean (mm)", cnn, "RdBu", -limit, limit),
        ("CNN uncertainty, calibrated σ (mm)", cnn_sd, "magma_r", 0, spread),
        (
            "CNN dissimilarity index (line: area of applicability)",
            dissimilarity,
            "magma_r",
            *np.nanpercentile(dissimilarity, [2, 98]),
        ),
        ("Ordinary kriging (mm)", kriged, "RdBu", -limit, limit),
        ("Kriging σ, √variance (mm)", kriging_sd, "magma_r", 0, spread),
        (
            "CNN − kriging (mm)",
            difference,
            "PuOr",
            -np.nanpercentile(np.abs(difference), 98),
            np.nanpercentile(np.abs(difference), 98),
        ),
        ("Hybrid: CNN + kriged residuals (mm)", hybrid, "RdBu", -limit, limit),
        ("Hybrid σ, √variance (mm)", hybrid_sd, "magma_r", 0, spread),
        (
            "Hybrid − CNN: the kriged residuals (mm)",
            correction,
            "PuOr",
            -np.nanpercentile(np.abs(correction), 98),
            np.nanpercentile(np.abs(correction), 98),
        ),
    )
    for slot, (title, values, colours, low, high) in enumerate(panels):
        axes = figure.add_subplot(3, 3, slot + 1)
        shown = axes.imshow(values, extent=extent, cmap=colours, vmin=low, vmax=high)
        if slot == 2:
            axes.contour(
                np.nan_to_num(inside, nan=1.0),
                levels=[0.5],
                colors="black",
                linewidths=0.8,
                extent=extent,
                origin="upper",
            )
        axes.scatter(
            ps[:, 0],
            ps[:, 1],
            c=ps[:, 2],
            cmap="RdBu",
            vmin=-limit,
            vmax=limit,
            s=6,
            edgecolors="black",
            linewidths=0.3,
        )
        axes.set(title=title, xticks=[], yticks=[])
        figure.colorbar(shown, ax=axes, shrink=0.8)
    figure.suptitle("Doñana, vertical displacement 2016–2019, Sentinel-1 P-SBAS points (dots)")
    figure.savefig(folder / "surfaces.png")


if __name__ == "__main__":
    main(sys.argv[1])
