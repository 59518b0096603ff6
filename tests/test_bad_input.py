"""Every algorithm meets bad input with a message a user can act on (issue 23).

The cases are generated, not written one by one: each input of the compliance test's valid
parameters (conftest.sample_parameters) is replaced in turn by each bad input of its kind (a
raster, a vector layer, a dataset or model file, a field, an output), all other parameters kept
valid. Every case must end in a QgsProcessingException whose message names the input and says
what to do, with no Python traceback or raw exception in the log, and with no output file left behind. The size of
the matrix is printed at the end of the test run (conftest.pytest_terminal_summary)."""

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import LogFeedback, sample_parameters_in
from osgeo import gdal
from qgis import processing
from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsProcessingDestinationParameter,
    QgsProcessingException,
    QgsVectorLayer,
    QgsWkbTypes,
)

from insar_subsidence.algorithms.layers import new_fields
from insar_subsidence.algorithms.provider import ALGORITHMS

# What a message must not contain: a traceback, or an exception passed on raw.
RAW = re.compile(
    r"Traceback|File \"|\bErrno\b|BadZipFile|InvalidProtobuf|"
    r"\b(Key|Value|Type|Runtime|Index|Attribute|OS|IO|ZeroDivision|Assertion|NotADirectory)Error\b"
)

# What a message must contain: something to do.
ACTION = re.compile(
    r"\b(check|choose|set|export|create|georeference|name it|leave|reproject|resample|warp|give|fix|copy|train|make)\b",
    re.IGNORECASE,
)


# ---- the bad inputs: kind -> maker(valid value, folder, context) -> bad value, where context
# holds the other parameters' valid values (a field's layer)


def _valid_bytes(value):
    return Path(str(value)).read_bytes()


def missing(value, folder, context):
    return str(folder / f"missing{Path(str(value)).suffix or '.gpkg'}")


def empty(value, folder, context):
    path = folder / f"empty{_suffix(value)}"
    path.write_bytes(b"")
    return str(path)


def truncated(value, folder, context):
    path = folder / f"truncated{_suffix(value)}"
    path.write_bytes(_valid_bytes(_file_of(value, folder))[:1000])
    return str(path)


def text_instead(value, folder, context):
    path = folder / f"notes{_suffix(value)}"
    path.write_text("These are my field notes, not data.\n")
    return str(path)


def raster_instead(value, folder, context):
    path = folder / f"raster{_suffix(value)}"
    driver = gdal.GetDriverByName("GTiff")
    dataset = driver.Create(str(path), 4, 4, 1, gdal.GDT_Float32)
    dataset.SetGeoTransform((500000, 10, 0, 4100000, 0, -10))
    dataset = None
    return str(path)


def _suffix(value):
    return ".gpkg" if isinstance(value, QgsVectorLayer) else Path(str(value)).suffix


def _file_of(value, folder):
    """A file holding the value: a memory layer is written to a GeoPackage first."""
    if isinstance(value, QgsVectorLayer):
        return _write_layer(folder / "valid.gpkg", value)
    return value


def _raster_like(value, folder, name, values_of):
    """A copy of the raster `value` whose band values are values_of(band values, band), with
    its georeferencing unless values_of is None."""
    source = gdal.Open(str(value))
    path = folder / f"{name}.tif"
    target = gdal.GetDriverByName("GTiff").Create(
        str(path), source.RasterXSize, source.RasterYSize, source.RasterCount, gdal.GDT_Float32
    )
    for number in range(1, source.RasterCount + 1):
        band = source.GetRasterBand(number)
        values = band.ReadAsArray().astype(np.float32)
        target.GetRasterBand(number).SetDescription(band.GetDescription())
        if name == "all_nodata":
            target.GetRasterBand(number).SetNoDataValue(-9999)
            values[:] = -9999
        elif name == "infinite":
            values.flat[[0, 1]] = np.inf, -np.inf
            values.flat[2] = np.nan
        target.GetRasterBand(number).WriteArray(values)
    if name != "no_georeferencing":
        target.SetGeoTransform(source.GetGeoTransform())
    if name not in ("no_georeferencing", "no_crs"):
        target.SetProjection(source.GetProjection())
    target = None
    return str(path)


def no_georeferencing(value, folder, context):
    return _raster_like(value, folder, "no_georeferencing", None)


def no_crs(value, folder, context):
    return _raster_like(value, folder, "no_crs", None)


def all_nodata(value, folder, context):
    return _raster_like(value, folder, "all_nodata", None)


def infinite_cells(value, folder, context):
    return _raster_like(value, folder, "infinite", None)


def _layer_of(value):
    layer = value if isinstance(value, QgsVectorLayer) else QgsVectorLayer(str(value), "valid", "ogr")
    assert layer.isValid(), value
    return layer


def _write_layer(path, layer, features=None):
    """`features` (default: the layer's) written with the layer's fields and CRS to a GeoPackage."""
    from qgis.core import QgsCoordinateTransformContext, QgsVectorFileWriter

    geometry = QgsWkbTypes.displayString(layer.wkbType())
    copy = QgsVectorLayer(f"{geometry}?crs={layer.crs().authid()}", "copy", "memory")
    copy.dataProvider().addAttributes(layer.fields().toList())
    copy.updateFields()
    copy.dataProvider().addFeatures(list(layer.getFeatures()) if features is None else features)
    options = QgsVectorFileWriter.SaveVectorOptions()
    error = QgsVectorFileWriter.writeAsVectorFormatV3(copy, str(path), QgsCoordinateTransformContext(), options)
    assert error[0] == QgsVectorFileWriter.NoError, error
    return str(path)


def no_features(value, folder, context):
    return _write_layer(folder / "no_features.gpkg", _layer_of(value), [])


def infinite_values(value, folder, context):
    """Every numeric value of the first two features +inf and -inf (and NaN, a missing value, in the third)."""
    layer = _layer_of(value)
    features = list(layer.getFeatures())
    numeric = [i for i, value in enumerate(features[0].attributes()) if isinstance(value, float)]
    for feature, bad in zip(features, (np.inf, -np.inf, np.nan)):
        for i in numeric:
            feature.setAttribute(i, float(bad))
    return _write_layer(folder / "infinite_values.gpkg", layer, features)


def outside_area_of_use(value, folder, context):
    """The points 10 000 km east of where they are: beyond the area of use of any projected CRS."""
    layer = _layer_of(value)
    features = []
    for feature in layer.getFeatures():
        moved = QgsFeature(feature)
        geometry = feature.geometry()
        geometry.translate(1e7, 0)
        moved.setGeometry(geometry)
        features.append(moved)
    return _write_layer(folder / "outside_area_of_use.gpkg", layer, features)


def text_field(value, folder, context):
    """The field replaced by one of the same name holding text."""
    layer = _layer_of(context["layer"])
    text = new_fields([(value, "string")])[0]
    fields = [text if f.name() == value else f for f in layer.fields()]
    geometry = QgsWkbTypes.displayString(layer.wkbType())
    copy = QgsVectorLayer(f"{geometry}?crs={layer.crs().authid()}", "copy", "memory")
    copy.dataProvider().addAttributes(fields)
    copy.updateFields()
    features = []
    for feature in layer.getFeatures():
        attributes = ["n/a" if f.name() == value else feature[f.name()] for f in layer.fields()]
        new = QgsFeature(copy.fields())
        new.setGeometry(feature.geometry())
        new.setAttributes(attributes)
        features.append(new)
    context["replace"] = (context["layer_parameter"], _write_layer(folder / "text_field.gpkg", copy, features))
    return value


def infinite_targets(value, folder, context):
    with np.load(str(value), allow_pickle=False) as npz:
        arrays = dict(npz)
    arrays["targets"] = arrays["targets"].copy()
    arrays["targets"][:2] = np.inf, -np.inf
    path = folder / "infinite_targets.npz"
    np.savez(path, **arrays)
    return str(path)


def unwritable_folder(value, folder, context):
    """A folder nobody may write in, root included."""
    return f"/sys/{Path(str(value)).name}"


def missing_folder(value, folder, context):
    return str(folder / "no such folder" / Path(str(value)).name)


def unsupported_extension(value, folder, context):
    return str(Path(str(value)).with_suffix(".xyz"))


FILES = {"missing file": missing, "empty file": empty, "truncated file": truncated}
RASTER = {
    **FILES,
    "text instead of a raster": text_instead,
    "no CRS or geotransform": no_georeferencing,
    "no CRS": no_crs,
    "all nodata": all_nodata,
    "±inf cells": infinite_cells,
}
KINDS = {
    "raster": RASTER,
    "grid": {  # a truncated file whose header is whole still has its grid
        "missing file": missing,
        "empty file": empty,
        "text instead of a raster": text_instead,
        "no CRS or geotransform": no_georeferencing,
        "no CRS": no_crs,
    },
    "dem": {name: maker for name, maker in RASTER.items() if name != "no CRS"},
    "geometry": {
        **FILES,
        "a raster instead of a vector file": raster_instead,
        "no features": no_features,
        "outside the CRS's area of use": outside_area_of_use,
    },
    "source": {
        **FILES,
        "a raster instead of a vector file": raster_instead,
        "no features": no_features,
        "±inf values": infinite_values,
        "outside the CRS's area of use": outside_area_of_use,
    },
    "dataset": {**FILES, "a raster instead of a dataset": raster_instead, "±inf targets": infinite_targets},
    "model": {**FILES, "a raster instead of a model": raster_instead, "text instead of a model": text_instead},
    "field": {"a text field": text_field},
    "output": {
        "a folder that is not writable": unwritable_folder,
        "a folder that does not exist": missing_folder,
        "an unsupported extension": unsupported_extension,
    },
}


# Narrower kinds, for inputs of which only a part is used: the raster's grid, the layer's geometries.
BROADER = {"grid": "raster", "geometry": "source", "dem": "raster"}


def input_kind(definition, value):
    """Which table of KINDS applies to a parameter with this definition and valid value (None: none)."""
    kind = definition.type()
    if isinstance(definition, QgsProcessingDestinationParameter):
        return "output"
    if kind in ("raster", "multilayer"):
        return "raster"
    if kind in ("source", "vector"):
        return "source"
    if kind == "field":
        return "field"
    if kind == "file":
        return "model" if str(value).endswith(".onnx") else "dataset"
    return None


def algorithm_of(algorithm_id):
    return QgsApplication.processingRegistry().algorithmById(algorithm_id)


def case_table():
    """(algorithm id, parameter name, bad input) for every bad input of the kind of every parameter
    in SAMPLE_KINDS."""
    cases = []
    for algorithm in ALGORITHMS:
        algorithm_id = f"subsidence:{algorithm().name()}"
        for name, kind in SAMPLE_KINDS.get(algorithm_id, {}).items():
            cases.extend((algorithm_id, name, bad) for bad in KINDS[kind])
    return cases


# The kind of each input of the sample parameters (and of some outputs): test_the_table_covers_every_input
# checks it against the parameters' definitions, so that a new input cannot be left out.
SAMPLE_KINDS = {
    "subsidence:importps": {"INPUT": "source", "OUTPUT": "output"},
    "subsidence:selectps": {"INPUT": "raster", "OUTPUT": "output", "OUTPUT_DISPERSION": "output"},
    # A DEM without a CRS is taken to be in metres, with a warning.
    "subsidence:terrainfactors": {"INPUT": "dem", "SLOPE": "output"},
    # Distances take the geometries of INPUT and the grid of REFERENCE, not their values.
    "subsidence:distance": {"INPUT": "geometry", "REFERENCE": "grid", "OUTPUT": "output"},
    "subsidence:stackfactors": {"INPUTS": "raster", "OUTPUT": "output"},
    "subsidence:exportpatches": {"POINTS": "source", "FIELD": "field", "FACTORS": "raster", "OUTPUT": "output"},
    "subsidence:traincnn": {"DATASET": "dataset", "OUTPUT_MODEL": "output", "OUTPUT_REPORT": "output"},
    "subsidence:predictsurface": {"MODEL": "model", "FACTORS": "raster", "OUTPUT": "output"},
    "subsidence:krige": {"POINTS": "source", "FIELD": "field", "OUTPUT": "output", "OUTPUT_VARIANCE": "output"},
    "subsidence:krigeresiduals": {
        "SURFACE": "raster",
        "SURFACE_UNCERTAINTY": "raster",
        "POINTS": "source",
        "FIELD": "field",
        "OUTPUT": "output",
    },
    "subsidence:evaluate": {"DATASET": "dataset", "MODEL": "model", "OUTPUT_TABLE": "output"},
}
CASES = case_table()


@pytest.fixture(scope="module")
def valid(plugin, dense_model, tmp_path_factory):
    return sample_parameters_in(tmp_path_factory.mktemp("valid"), dense_model)


def test_the_table_covers_every_input(valid):
    """Every file, layer, field and output the sample parameters give is in SAMPLE_KINDS, with the kind
    its definition says; checksetup alone takes no input."""
    for algorithm_id, parameters in valid.items():
        definitions = {d.name(): d for d in algorithm_of(algorithm_id).parameterDefinitions()}
        expected = {
            name: input_kind(definitions[name], value)
            for name, value in parameters.items()
            if input_kind(definitions[name], value)
        }
        # Not every output is fuzzed: one base-class check serves them all.
        listed = {name: BROADER.get(kind, kind) for name, kind in SAMPLE_KINDS.get(algorithm_id, {}).items()}
        assert {n: k for n, k in expected.items() if k != "output"} == {
            n: k for n, k in listed.items() if k != "output"
        }, algorithm_id
        assert all(expected.get(name) == "output" for name, kind in listed.items() if kind == "output"), algorithm_id


def _outputs_in(parameters, algorithm, folder):
    """The parameters with every output file moved into `folder`."""
    moved = dict(parameters)
    for definition in algorithm.destinationParameterDefinitions():
        if definition.name() in moved:
            moved[definition.name()] = str(folder / Path(str(moved[definition.name()])).name)
    return moved


def refusal(algorithm_id, parameters):
    """What the log and the QgsProcessingException say when the algorithm refuses the parameters."""
    feedback = LogFeedback()
    with pytest.raises(QgsProcessingException) as raised:
        processing.run(algorithm_id, parameters, feedback=feedback)
    return "\n".join([*feedback.lines, str(raised.value)])


def case_id(case):
    algorithm_id, name, bad = case
    return f"{algorithm_id[11:]}-{name}-{bad}"


# The raster cases again with GDAL's Python exceptions on, as QGIS 3.38 and later have them.
RASTER_CASES = [
    case for case in CASES if BROADER.get(SAMPLE_KINDS[case[0]][case[1]], SAMPLE_KINDS[case[0]][case[1]]) == "raster"
]


@pytest.fixture
def gdal_exceptions():
    was_on = bool(gdal.GetUseExceptions())
    gdal.UseExceptions()
    yield
    (gdal.UseExceptions if was_on else gdal.DontUseExceptions)()


@pytest.mark.parametrize("case", RASTER_CASES, ids=map(case_id, RASTER_CASES))
def test_bad_rasters_are_refused_alike_with_gdal_exceptions_on(valid, tmp_path, gdal_exceptions, case):
    test_bad_input_is_refused_with_a_message(valid, tmp_path, *case)


@pytest.mark.parametrize(("algorithm_id", "name", "bad"), CASES, ids=map(case_id, CASES))
def test_bad_input_is_refused_with_a_message(valid, tmp_path, algorithm_id, name, bad):
    algorithm = algorithm_of(algorithm_id)
    inputs, outputs = tmp_path / "inputs", tmp_path / "outputs"
    inputs.mkdir()
    outputs.mkdir()
    parameters = _outputs_in(valid[algorithm_id], algorithm, outputs)
    definition = algorithm.parameterDefinition(name)
    value = parameters[name]
    layer_parameter = next((d.parentLayerParameterName() for d in [definition] if d.type() == "field"), None)
    context = {"layer": parameters.get(layer_parameter), "layer_parameter": layer_parameter}
    maker = KINDS[SAMPLE_KINDS[algorithm_id][name]][bad]
    if isinstance(value, list):
        parameters[name] = [maker(value[0], inputs, context)]
        named = parameters[name][0]
    else:
        parameters[name] = maker(value, inputs, context)
        named = parameters[name]
    if "replace" in context:
        replaced, parameters[replaced] = context["replace"]
        named = parameters[replaced]

    message = refusal(algorithm_id, parameters)
    assert not RAW.search(message), message
    names = {definition.description().lower(), Path(str(named)).name.lower(), Path(str(named)).stem}
    if definition.type() == "field":
        names.add(str(value).lower())
    assert any(n in message.lower() for n in names), f"names none of {names}: {message}"
    assert ACTION.search(message), f"says nothing to do: {message}"
    left = [p for p in outputs.iterdir()]
    if isinstance(definition, QgsProcessingDestinationParameter):
        left += [Path(str(parameters[name]))] if Path(str(parameters[name])).exists() else []
    assert left == [], f"left behind: {left}"


@pytest.mark.parametrize(
    ("content", "said"), [("", "is empty (0 bytes)"), ("pid,x,y,velocity\n", "has a header but no rows")]
)
def test_an_empty_csv_is_called_empty_not_missing(plugin, tmp_path, content, said):
    """Issue 23: importps said 'empty.csv not found' of a file that exists."""
    path = tmp_path / "empty.csv"
    path.write_text(content)
    message = refusal("subsidence:importps", {"INPUT": str(path), "OUTPUT": str(tmp_path / "ps.gpkg")})
    assert "empty.csv" in message and "not found" not in message and said in message, message
    assert not (tmp_path / "ps.gpkg").exists()
