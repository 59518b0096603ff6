"""layers.point_values: the points of a layer as arrays, against QGIS's own per-point transform."""

import numpy as np
import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsVectorLayer,
)

from insar_subsidence.algorithms.layers import point_values

WKT = {
    "point": "Point (-3.5 37.1)",
    "point z": "PointZ (-3.4 37.2 55)",
    "multipoint": "MultiPoint ((-3.3 37.3),(-3.2 37.4))",
    "null value": "Point (-3.1 37.5)",
    "no geometry": None,
    "beyond the pole": "Point (-3.0 95.0)",
    "second point": "Point (-3.6 37.0)",
}


def layer_of(rows):
    layer = QgsVectorLayer("MultiPoint?crs=EPSG:4326&field=v:double&field=tag:string", "p", "memory")
    features = []
    for number, (name, wkt) in enumerate(rows.items()):
        feature = QgsFeature(layer.fields())
        if wkt:
            feature.setGeometry(QgsGeometry.fromWkt(wkt))
        feature.setAttributes([None if name == "null value" else float(number), name])
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    return layer


@pytest.mark.parametrize("target", ["EPSG:4326", "EPSG:32630"])
def test_every_part_is_read_transformed_and_the_rest_counted(target, plugin):
    layer = layer_of(WKT)
    crs = QgsCoordinateReferenceSystem(target)
    read = point_values(layer, "v", crs, QgsProcessingContext(), QgsProcessingFeedback(), extra_field="tag")
    transform = QgsCoordinateTransform(layer.crs(), crs, QgsCoordinateTransformContext())
    expected, untransformable = {}, 0  # tag -> [(x, y), ...], each point transformed by QGIS one by one
    for name, wkt in WKT.items():
        if not wkt or name == "null value":
            continue
        geometry = QgsGeometry.fromWkt(wkt)  # must outlive its parts
        for part in geometry.constParts():
            try:
                point = transform.transform(QgsPointXY(part.x(), part.y()))
            except QgsCsException:
                untransformable += 1
                continue
            expected.setdefault(name, []).append((point.x(), point.y()))
    got = {}
    for x, y, tag in zip(read.x, read.y, read.extra):
        got.setdefault(tag, []).append((x, y))
    assert got.keys() == expected.keys()
    for tag in expected:
        np.testing.assert_allclose(sorted(got[tag]), sorted(expected[tag]), rtol=0, atol=1e-9)
    values = dict(zip(read.extra, read.values))
    assert values["second point"] == 6.0 and values["multipoint"] == 2.0
    assert read.skipped == {"no geometry": 1, "no value": 1, "not transformable": untransformable}
    assert untransformable == (target != "EPSG:4326")  # latitude 95: kept where nothing is transformed


def test_a_layer_of_multipoints_only_is_read_part_by_part(plugin):
    # No 2D single point at all: the WKB path gets nothing to decode.
    layer = layer_of({"multipoint": WKT["multipoint"]})
    crs = QgsCoordinateReferenceSystem("EPSG:4326")
    read = point_values(layer, "v", crs, QgsProcessingContext(), QgsProcessingFeedback())
    np.testing.assert_allclose(np.c_[read.x, read.y], [(-3.3, 37.3), (-3.2, 37.4)])
