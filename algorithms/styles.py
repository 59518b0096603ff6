"""Default styles for the rasters the algorithms write: a .qml beside the GeoTIFF, which QGIS
applies whenever it loads the file (from the Toolbox, the Browser or a script)."""

import numpy as np
from qgis.core import QgsColorRampShader, QgsRasterLayer, QgsRasterShader, QgsSingleBandPseudoColorRenderer
from qgis.PyQt.QtGui import QColor

from .layers import open_raster, read_decimated

SAMPLE_SIDE = 1000  # the range is taken from at most this many cells a side (decimated read)
# ColorBrewer RdBu, red for negative values (subsidence: away from the satellite, down).
DIVERGING = ("#b2182b", "#ef8a62", "#fddbc7", "#f7f7f7", "#d1e5f0", "#67a9cf", "#2166ac")
# Sequential for magnitudes (variance, uncertainty): light to dark.
SEQUENTIAL = ("#fcfdbf", "#fd9668", "#de4968", "#8c2981", "#3b0f70")


def style_raster(path, units="", sequential=False):
    """Writes path's .qml: a diverging ramp centred on 0, from -L to L with L the 98th percentile of
    |value|, when the values take both signs (displacement, velocity), else a sequential ramp over
    the 2nd to 98th percentiles. Returns the (low, high) of the ramp, or None for an empty raster."""
    values = _sample(path)
    if not len(values):
        return None
    if not sequential and values.min() < 0 < values.max():
        limit = float(np.percentile(np.abs(values), 98)) or float(np.abs(values).max())
        low, high, colours = -limit, limit, DIVERGING
    else:
        low, high = (float(value) for value in np.percentile(values, [2, 98]))
        high = high if high > low else low + 1.0
        colours = SEQUENTIAL
    steps = np.linspace(low, high, len(colours))
    items = [
        QgsColorRampShader.ColorRampItem(float(value), QColor(colour), f"{value:.3g} {units}".strip())
        for value, colour in zip(steps, colours)
    ]
    ramp = QgsColorRampShader(low, high)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    ramp.setColorRampItemList(items)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    layer = QgsRasterLayer(path, "style", "gdal")
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(low)
    renderer.setClassificationMax(high)
    layer.setRenderer(renderer)
    layer.saveNamedStyle(layer.styleURI())  # the default style, without the overload deprecated in 3.26
    return low, high


def _sample(path):
    """Band 1's valid values, read decimated to at most SAMPLE_SIDE cells a side."""
    dataset = open_raster(path)  # kept open while its band is read
    values = read_decimated(dataset.GetRasterBand(1), SAMPLE_SIDE).astype(np.float64)
    return values[np.isfinite(values)]
