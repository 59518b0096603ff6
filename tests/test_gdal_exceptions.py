"""The plugin's GDAL calls fail with its own message whether GDAL's Python exceptions are off
(QGIS up to 3.36: a failed call returns None) or on (QGIS 3.38 and later: it raises)."""

import os
import re

import numpy as np
import pytest
from osgeo import gdal
from qgis import processing
from qgis.core import QgsCoordinateReferenceSystem, QgsProcessingException, QgsProject, QgsRasterLayer

from insar_subsidence.algorithms.layers import Float32Rasters, open_raster
from insar_subsidence.core.grid import Grid


@pytest.fixture(params=[False, True], ids=["exceptions off", "exceptions on"])
def exceptions(request):
    """GDAL's exception mode for the test; the mode before it is restored afterwards."""
    was_on = bool(gdal.GetUseExceptions())
    (gdal.UseExceptions if request.param else gdal.DontUseExceptions)()
    yield request.param
    (gdal.UseExceptions if was_on else gdal.DontUseExceptions)()


def test_missing_file_gives_our_message(exceptions, tmp_path):
    path = str(tmp_path / "missing.tif")
    with pytest.raises(QgsProcessingException, match=f"^GDAL cannot open the DEM {re.escape(path)}: .*No such file"):
        open_raster(path, "the DEM")
    assert bool(gdal.GetUseExceptions()) is exceptions  # the mode is left as it was


def test_file_that_is_no_raster_gives_our_message(exceptions, tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("not a raster")
    with pytest.raises(QgsProcessingException, match="^GDAL cannot open the raster .*not recognized"):
        open_raster(str(path))
    assert bool(gdal.GetUseExceptions()) is exceptions


def test_a_raster_opens(exceptions, tmp_path, geotiff):
    path = geotiff(tmp_path / "small.tif", np.arange(12.0).reshape(3, 4), (0, 1, 0, 3, 0, -1), 32630)
    dataset = open_raster(str(path))
    np.testing.assert_array_equal(dataset.ReadAsArray(), np.arange(12.0).reshape(3, 4))


def test_output_that_cannot_be_created_gives_our_message(exceptions, tmp_path):
    path = str(tmp_path / "no such folder" / "out.tif")
    grid = Grid(0, 3, 1, 1, 4, 3)
    with pytest.raises(QgsProcessingException, match=f"^Cannot create {re.escape(path)}: "):
        Float32Rasters([(path, ["band"])], grid, QgsCoordinateReferenceSystem("EPSG:32630"))


def test_algorithm_reading_a_vanished_dem_gives_our_message(plugin, exceptions, tmp_path, geotiff):
    """The project still holds the layer, but its file is gone when the algorithm reads it.

    The layer goes in by its id, and the project deletes it: PyQGIS keeps the exception that left
    processAlgorithm, so a layer object among the parameters would live until the interpreter
    exits, after exitQgis, and crash there in GDALClose (exit status 139 in one process)."""
    path = str(geotiff(tmp_path / "dem.tif", np.ones((5, 6)), (500000, 10, 0, 4100000, 0, -10), 32630))
    layer = QgsRasterLayer(path, "dem")
    assert layer.isValid()
    project = QgsProject.instance()
    project.addMapLayer(layer, False)
    try:
        os.remove(path)
        with pytest.raises(QgsProcessingException, match=f"GDAL cannot open the DEM {re.escape(path)}: .*No such file"):
            processing.run("subsidence:terrainfactors", {"INPUT": layer.id(), "SLOPE": str(tmp_path / "slope.tif")})
    finally:
        project.removeMapLayer(layer.id())
