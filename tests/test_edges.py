"""One edge convention for training and prediction: at every pixel, the surface is the model applied
to the patch that 'Export training patches' cuts for a point there, and nothing where it drops it."""

import json

import numpy as np
import onnxruntime
import pytest
from cnn_data import smooth_fields, trained_model
from osgeo import gdal
from qgis import processing
from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsVectorLayer

from insar_subsidence.algorithms.layers import new_fields
from insar_subsidence.core.dataset import open_dataset
from insar_subsidence.core.patches import POLICY_NAMES
from insar_subsidence.models.export import read_metadata

SIZE, ROWS, COLUMNS = 9, 16, 21
LEFT, TOP, PIXEL = 400000.0, 4500000.0, 10.0


def points_on_every_pixel():
    """A point at the centre of every pixel of the stack, with a target (any: only the patches matter)."""
    layer = QgsVectorLayer("Point?crs=EPSG:32630", "points", "memory")
    layer.dataProvider().addAttributes(new_fields([("displacement", "double")]))
    layer.updateFields()
    features = []
    for row in range(ROWS):
        for column in range(COLUMNS):
            feature = QgsFeature(layer.fields())
            centre = QgsPointXY(LEFT + (column + 0.5) * PIXEL, TOP - (row + 0.5) * PIXEL)
            feature.setGeometry(QgsGeometry.fromPointXY(centre))
            feature.setAttributes([float(row * COLUMNS + column)])
            features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_each_pixel_is_the_model_on_the_patch_training_cuts(plugin, tmp_path, geotiff, policy):
    values = smooth_fields(3, ROWS, COLUMNS, seed=3)
    values[0, 7, 10] = -9999  # a hole inside, where the policies differ too
    stack = geotiff(
        tmp_path / "stack.tif", values, (LEFT, PIXEL, 0, TOP, 0, -PIXEL), 32630, -9999, ["band0", "band1", "band2"]
    )
    exported = processing.run(
        "subsidence:exportpatches",
        {
            "POINTS": points_on_every_pixel(),
            "FIELD": "displacement",
            "FACTORS": stack,
            "PATCH_SIZE": SIZE,
            "SPLIT": 1,  # random: every kept point stays in the dataset
            "VAL_FRACTION": 0.0,
            "TEST_FRACTION": 0.0,
            "NODATA_POLICY": POLICY_NAMES.index(policy),
            "OUTPUT": str(tmp_path / "dataset.npz"),
        },
    )
    data = open_dataset(exported["OUTPUT"])
    model = trained_model(tmp_path, "small", SIZE, policy, epochs=1)
    surface = processing.run(
        "subsidence:predictsurface", {"MODEL": model, "FACTORS": stack, "OUTPUT": str(tmp_path / "surface.tif")}
    )["OUTPUT"]
    raster = gdal.Open(surface)  # kept while its band is read: GDAL crashes otherwise
    predicted = raster.ReadAsArray().astype(float)
    predicted[predicted == raster.GetRasterBand(1).GetNoDataValue()] = np.nan

    cells = np.round(data["targets"]).astype(int)  # the targets number the pixels
    kept = np.zeros((ROWS, COLUMNS), bool)
    kept.flat[cells] = True
    assert not kept[0].all() and kept[SIZE // 2 : -(SIZE // 2), SIZE // 2 : -(SIZE // 2)].sum() > 0
    np.testing.assert_array_equal(np.isfinite(predicted), kept)  # predicted exactly where training keeps a point
    # The patches training cut: the stack's cells, nodata beyond its edge (the dataset holds them
    # filled with its own training means, which the model's differ from).
    beyond = np.pad(
        np.where(values == -9999, np.nan, values), ((0, 0), (SIZE, SIZE), (SIZE, SIZE)), constant_values=np.nan
    )
    offsets = np.arange(SIZE) - SIZE // 2 + SIZE
    rows, columns = np.divmod(cells, COLUMNS)
    cut = beyond[:, (rows[:, None] + offsets)[:, :, None], (columns[:, None] + offsets)[:, None, :]].transpose(
        1, 0, 2, 3
    )
    valid = np.isfinite(cut)
    np.testing.assert_array_equal(data["patches"][valid], cut[valid].astype(np.float32))
    mean = np.array(json.loads(read_metadata(model)["band_mean"]), np.float32)[:, None, None]
    patches = np.where(valid, cut, mean).astype(np.float32)
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    expected = session.run(["prediction"], {"patches": patches})[0][:, 0]
    spread = float(np.ptp(expected)) or 1.0
    np.testing.assert_allclose(predicted.flat[cells], expected, atol=1e-4 * spread)
