"""layers.point_values: the points of a layer as arrays, against QGIS's own per-point transform;
read from the file by GDAL's columns, against QGIS's features."""

import json
import math
import sqlite3
import struct

import numpy as np
import pytest
from osgeo import ogr, osr
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingFeedback,
    QgsVectorLayer,
)

from insar_subsidence.algorithms import layers
from insar_subsidence.algorithms.layers import OgrLayer, point_values, whole_ogr_layer

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


# Every kind of row a PS file can hold, as OGR writes it: (WKT or None, value or None)
FILE_ROWS = [
    ("POINT (-3.5 37.1)", 1.0),
    ("POINT (-3.6 37.0)", None),  # NULL value
    (None, 2.0),  # no geometry
    ("POINT EMPTY", 3.0),
    ("POINT Z (-3.4 37.2 55)", 4.0),
    ("MULTIPOINT ((-3.3 37.3),(-3.2 37.4))", 5.0),
    ("MULTIPOINT EMPTY", 6.0),
    ("POINT (-3.0 95.0)", 7.0),  # beyond the pole: not transformable to UTM
    (None, None),
    ("POINT (-3.7 36.9)", math.nan),
    *[(f"POINT ({-3.8 + i / 1000} {36.8 + i / 997})", float(i)) for i in range(40)],
]


def write_points(path, rows, integer=False, driver="GPKG", geometry_type=ogr.wkbUnknown, float32=False):
    """A layer `points` in EPSG:4326 of the geometry type (any, by default), field `v` (a double,
    a float32 or an integer), in features of the given rows; returns its path."""
    dataset = ogr.GetDriverByName(driver).CreateDataSource(str(path))
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    layer = dataset.CreateLayer("points", wgs84, geometry_type)
    layer.CreateField(ogr.FieldDefn("other", ogr.OFTString))
    value = ogr.FieldDefn("v", ogr.OFTInteger if integer else ogr.OFTReal)
    if float32:
        value.SetSubType(ogr.OFSTFloat32)
    layer.CreateField(value)
    for wkt, value in rows:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("other", "x")
        if value is not None:
            feature.SetField("v", int(value) if integer else value)
        if wkt:
            feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feature)
    dataset = None
    return str(path)


def krige_algorithm():
    return QgsApplication.processingRegistry().algorithmById("subsidence:krige")


def read_both_ways(path, target, monkeypatch, field="v"):
    """point_values of the file read through QGIS's features and through GDAL's columns (which
    must then be what is read: reading features fails)."""
    layer = QgsVectorLayer(path, "points", "ogr")
    crs = QgsCoordinateReferenceSystem(target)
    whole = whole_ogr_layer(krige_algorithm(), {"POINTS": layer}, "POINTS", QgsProcessingContext())
    assert whole == OgrLayer(path, "points") or whole == OgrLayer(path, None)
    features = point_values(layer, field, crs, QgsProcessingContext(), QgsProcessingFeedback())
    with monkeypatch.context() as patched:
        patched.setattr(layers, "_collect_features", lambda *args: pytest.fail("QGIS's features were read"))
        columns = point_values(layer, field, crs, QgsProcessingContext(), QgsProcessingFeedback(), ogr_layer=whole)
    return features, columns


@pytest.mark.parametrize("target", ["EPSG:4326", "EPSG:32630"])
def test_the_file_read_by_gdal_gives_what_qgis_features_give(target, plugin, tmp_path, monkeypatch):
    # Every row with a geometry: a missing one leaves the layer to QGIS (see below).
    rows = [(wkt, value) for wkt, value in FILE_ROWS if wkt]
    features, columns = read_both_ways(write_points(tmp_path / "p.gpkg", rows), target, monkeypatch)
    np.testing.assert_array_equal(columns.x, features.x)
    np.testing.assert_array_equal(columns.y, features.y)
    np.testing.assert_array_equal(columns.values, features.values)
    assert columns.ids == features.ids
    assert columns.extra == features.extra
    assert columns.skipped == features.skipped
    assert features.skipped == {
        "no geometry": 2,  # POINT EMPTY, MULTIPOINT EMPTY
        "no value": 2,
        "not transformable": int(target != "EPSG:4326"),
    }
    assert len(features.x) == 40 + 1 + 1 + 2 + (target == "EPSG:4326")


@pytest.mark.parametrize("driver, name", [("GPKG", "p.gpkg"), ("ESRI Shapefile", "p.shp"), ("GeoJSON", "p.geojson")])
def test_point_layers_read_by_gdal_give_what_qgis_features_give(driver, name, plugin, tmp_path, monkeypatch):
    # A layer of 2D points, every one with a geometry, comes in WKBs of one width (a fixed-width
    # column), some ending in zero bytes (x = 2 ** 20).
    rows = [(wkt, value) for wkt, value in FILE_ROWS if wkt and wkt.startswith("POINT (")]
    rows.append(("POINT (1048576 0)", 8.0))
    path = write_points(tmp_path / name, rows, driver=driver, geometry_type=ogr.wkbPoint)
    features, columns = read_both_ways(path, "EPSG:32630", monkeypatch)
    np.testing.assert_array_equal(
        np.c_[columns.x, columns.y, columns.values], np.c_[features.x, features.y, features.values]
    )
    assert columns.ids == features.ids and columns.skipped == features.skipped
    assert len(features.x) == 41 and features.skipped == {"no geometry": 0, "no value": 2, "not transformable": 2}


def test_an_integer_field_is_read_the_same_by_gdal(plugin, tmp_path, monkeypatch):
    rows = [(wkt, value) for wkt, value in FILE_ROWS if wkt and (value is None or math.isfinite(value))]
    features, columns = read_both_ways(write_points(tmp_path / "p.gpkg", rows, integer=True), "EPSG:4326", monkeypatch)
    np.testing.assert_array_equal(columns.values, features.values)
    assert columns.ids == features.ids and columns.skipped == features.skipped


def test_an_infinite_value_is_refused_the_same_by_gdal(plugin, tmp_path, monkeypatch):
    path = write_points(tmp_path / "p.gpkg", [*(row for row in FILE_ROWS if row[0]), ("POINT (-3.1 37.6)", -math.inf)])
    messages = []
    for reader in ("features", "columns"):
        with pytest.raises(QgsProcessingException) as refused:
            read_both_ways(path, "EPSG:4326", monkeypatch) if reader == "columns" else point_values(
                QgsVectorLayer(path, "points", "ogr"),
                "v",
                QgsCoordinateReferenceSystem("EPSG:4326"),
                QgsProcessingContext(),
                QgsProcessingFeedback(),
            )
        messages.append(str(refused.value))
    assert messages[0] == messages[1] and "infinite in 1 features (the first: feature 49)" in messages[0]


def test_only_a_whole_unfiltered_file_is_read_by_gdal(plugin, tmp_path):
    path = write_points(tmp_path / "p.gpkg", FILE_ROWS)
    algorithm, context = krige_algorithm(), QgsProcessingContext()

    def whole(value):
        return whole_ogr_layer(algorithm, {"POINTS": value}, "POINTS", context)

    layer = QgsVectorLayer(path, "points", "ogr")
    assert whole(path) == OgrLayer(path, None)
    assert whole(f"{path}|layername=points") == OgrLayer(path, "points")
    assert whole(QgsProcessingFeatureSourceDefinition(layer.source())) is not None
    layer.selectByIds([1])
    context.temporaryLayerStore().addMapLayer(layer)
    assert whole(QgsProcessingFeatureSourceDefinition(layer.id(), True)) is None  # selected features only
    assert whole(QgsProcessingFeatureSourceDefinition(layer.id(), False, 10)) is None  # a feature limit
    subset = QgsVectorLayer(path, "subset", "ogr")
    assert subset.setSubsetString('"v" > 3')
    assert whole(subset) is None
    edited = QgsVectorLayer(path, "edited", "ogr")
    assert edited.startEditing() and edited.deleteFeature(1)
    assert whole(edited) is None
    edited.rollBack()
    assert whole(layer_of({"point": WKT["point"]})) is None  # not a file


# Layers on which GDAL's columns and QGIS's features could disagree (a review found each): the
# reader must give QGIS's result, by reading the columns right or by leaving the layer to QGIS.
GPKG_BLOB = b"GP\x00\x01" + struct.pack("<i", 4326)  # GeoPackage geometry header, no envelope


def replace_geometry(path, fid, wkb, header=GPKG_BLOB):
    """Writes the geometry blob by hand (without the spatial index's triggers, which need
    SpatiaLite's functions)."""
    with sqlite3.connect(path) as database:
        for (trigger,) in database.execute("select name from sqlite_master where type = 'trigger'").fetchall():
            database.execute(f"drop trigger {trigger}")
        database.execute("update points set geom = ? where fid = ?", (header + wkb, fid))


def missing_geometries(folder):
    return write_points(folder / "p.gpkg", FILE_ROWS), "v"


def big_endian_empty_point(folder):
    path = write_points(
        folder / "p.gpkg", [("POINT (-3.5 37.1)", 1.0), ("POINT (0 0)", 2.0)], geometry_type=ogr.wkbPoint
    )
    replace_geometry(path, 2, struct.pack(">bIdd", 0, 1, math.nan, math.nan))
    return path, "v"


def unreadable_geometry(folder):
    path = write_points(
        folder / "p.gpkg", [("POINT (-3.5 37.1)", 1.0), ("POINT (0 0)", 2.0)], geometry_type=ogr.wkbPoint
    )
    replace_geometry(path, 2, b"\x07" * 21)
    return path, "v"


def spatialite_geometry(folder):
    """POINT (-3.6 37.2) as SpatiaLite stores it, which OGR reads in a GeoPackage too."""
    path = write_points(
        folder / "p.gpkg", [("POINT (-3.5 37.1)", 1.0), ("POINT (0 0)", 2.0)], geometry_type=ogr.wkbPoint
    )
    blob = (
        b"\x00\x01"
        + struct.pack("<i", 4326)
        + struct.pack("<dddd", -3.6, 37.2, -3.6, 37.2)
        + b"\x7c"
        + struct.pack("<idd", 1, -3.6, 37.2)
        + b"\xfe"
    )
    replace_geometry(path, 2, blob, header=b"")
    return path, "v"


def float32_field(folder):
    rows = [("POINT (-3.5 37.1)", -2.7), ("POINT (-3.6 37.2)", 0.1)]
    return write_points(folder / "p.gpkg", rows, geometry_type=ogr.wkbPoint, float32=True), "v"


def fields_named_like_the_stream_columns(field):
    def make(folder):
        features = [
            {
                "type": "Feature",
                "properties": {"OGC_FID": 100 + i, "wkb_geometry": 10.5 + i},
                "geometry": {"type": "Point", "coordinates": [-3.5 - i / 10, 37.1]},
            }
            for i in range(2)
        ]
        path = folder / "p.geojson"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        return str(path), field

    return make


def points_in_a_multipoint_layer(folder):
    rows = [("POINT (-3.5 37.1)", 1.0), ("MULTIPOINT ((-3.4 37.2))", 2.0), ("POINT (-3.3 37.3)", 3.0)]
    return write_points(folder / "p.gpkg", rows, geometry_type=ogr.wkbMultiPoint), "v"


def view_without_an_id(folder):
    rows = [("POINT (-3.5 37.1)", 1.0), ("POINT (-3.6 37.2)", 2.0), ("POINT (-3.7 37.3)", 3.0)]
    path = write_points(folder / "p.gpkg", rows, geometry_type=ogr.wkbPoint)
    with sqlite3.connect(path) as database:
        database.execute("create view seen as select geom, v from points")
        database.execute(
            "insert into gpkg_contents (table_name, data_type, identifier, srs_id) "
            "values ('seen', 'features', 'seen', 4326)"
        )
        database.execute("insert into gpkg_geometry_columns values ('seen', 'geom', 'POINT', 4326, 0, 0)")
    return f"{path}|layername=seen", "v"


@pytest.mark.parametrize(
    "make",
    [
        missing_geometries,
        big_endian_empty_point,
        unreadable_geometry,
        spatialite_geometry,
        float32_field,
        fields_named_like_the_stream_columns("OGC_FID"),
        fields_named_like_the_stream_columns("wkb_geometry"),
        points_in_a_multipoint_layer,
        view_without_an_id,
    ],
    ids=[
        "features without geometry",
        "big-endian POINT EMPTY",
        "unreadable geometry",
        "SpatiaLite geometry",
        "float32 field",
        "field OGC_FID",
        "field wkb_geometry",
        "points in a MultiPoint layer",
        "view without an id",
    ],
)
@pytest.mark.parametrize("target", ["EPSG:4326", "EPSG:32630"])
def test_layers_gdal_columns_could_misread_give_what_qgis_gives(make, target, plugin, tmp_path):
    source, field = make(tmp_path)
    layer = QgsVectorLayer(source, "points", "ogr")
    assert layer.isValid()
    whole = whole_ogr_layer(krige_algorithm(), {"POINTS": layer}, "POINTS", QgsProcessingContext())
    assert whole is not None
    crs, context, feedback = QgsCoordinateReferenceSystem(target), QgsProcessingContext(), QgsProcessingFeedback()
    features = point_values(layer, field, crs, context, feedback)
    columns = point_values(layer, field, crs, context, feedback, ogr_layer=whole)
    np.testing.assert_array_equal(
        np.c_[columns.x, columns.y, columns.values], np.c_[features.x, features.y, features.values]
    )
    assert columns.ids == features.ids and columns.skipped == features.skipped
    assert len(features.ids) >= 1


def test_the_first_infinite_value_is_named_alike(plugin, tmp_path, monkeypatch):
    rows = [("POINT (-3.5 37.1)", -math.inf), ("POINT Z (-3.4 37.2 1)", math.inf)]
    path = write_points(tmp_path / "p.gpkg", rows)
    with pytest.raises(QgsProcessingException, match=r"infinite in 2 features \(the first: feature 1\)"):
        read_both_ways(path, "EPSG:4326", monkeypatch)
