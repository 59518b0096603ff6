"""The .qml styles written beside the output rasters: a ramp centred on 0 for values of both signs,
sequential otherwise, over percentiles computed here with numpy."""

import numpy as np
import pytest
from qgis.core import QgsRasterLayer

from insar_subsidence.algorithms.styles import style_raster


def loaded_ramp(path):
    layer = QgsRasterLayer(str(path), "styled", "gdal")  # loads the .qml beside the file
    renderer = layer.renderer()
    assert renderer.type() == "singlebandpseudocolor"
    items = renderer.shader().rasterShaderFunction().colorRampItemList()
    return [item.value for item in items], [item.color.name() for item in items]


def test_values_of_both_signs_get_a_ramp_centred_on_zero(geotiff, tmp_path):
    values = np.random.default_rng(0).normal(-5, 10, (60, 80))
    values[0, 0] = -1e4  # an outlier must not stretch the ramp
    path = geotiff(tmp_path / "displacement.tif", values, (0, 10, 0, 0, 0, -10), 32630, nodata=-9999)
    style_raster(path, "mm")
    stops, colours = loaded_ramp(path)
    limit = np.percentile(np.abs(values.astype(np.float32)), 98)
    assert stops[0] == pytest.approx(-limit, rel=1e-6) and stops[-1] == pytest.approx(limit, rel=1e-6)
    assert stops[len(stops) // 2] == pytest.approx(0, abs=1e-9) and colours[len(stops) // 2] == "#f7f7f7"
    assert colours[0] == "#b2182b"  # negative (subsidence) red


def test_positive_values_get_a_sequential_ramp_over_their_percentiles(geotiff, tmp_path):
    values = np.random.default_rng(1).gamma(2, 3, (50, 50))
    path = geotiff(tmp_path / "variance.tif", values, (0, 10, 0, 0, 0, -10), 32630)
    style_raster(path)
    stops, _ = loaded_ramp(path)
    low, high = np.percentile(values.astype(np.float32), [2, 98])
    assert stops[0] == pytest.approx(low, rel=1e-6) and stops[-1] == pytest.approx(high, rel=1e-6)


def test_nodata_is_left_out_of_the_range(geotiff, tmp_path):
    values = np.full((20, 20), -9999.0)
    values[5:10, 5:10] = np.linspace(1, 2, 25).reshape(5, 5)
    path = geotiff(tmp_path / "partial.tif", values, (0, 10, 0, 0, 0, -10), 32630, nodata=-9999)
    low, high = style_raster(path, sequential=True)
    assert (low, high) == pytest.approx(tuple(np.percentile(np.linspace(1, 2, 25).astype(np.float32), [2, 98])))
