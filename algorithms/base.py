"""What every algorithm of the provider shares: its icon, its toolbox group, its help link, the
check of its Python packages, the optional HTML report and the reading of a model's card."""

import configparser
import itertools
import os
import re
import tempfile
from functools import lru_cache

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterDestination,
    QgsRasterLayer,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..core.dependencies import missing_message
from ..core.errors import InputError

PLUGIN_DIR = os.path.dirname(os.path.dirname(__file__))
ICON_PATH = os.path.join(PLUGIN_DIR, "resources", "icon.svg")
# A data source URI rather than a file path (memory:, ogr:, postgres: …; a drive letter is one letter).
URI = re.compile(r"[A-Za-z][\w+.-]+:")
# The toolbox groups in the order of the workflow: id (stable, part of the interface) -> name.
GROUPS = {
    "inputs": "1 Inputs",
    "drivers": "2 Drivers",
    "cnn": "3 CNN",
    "kriging": "4 Kriging",
    "evaluation": "5 Evaluation",
    "setup": "Set-up",
}


@lru_cache(maxsize=1)
def repository_url():
    """The plugin's repository, from metadata.txt (where the README the help links to lives)."""
    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read(os.path.join(PLUGIN_DIR, "metadata.txt"), encoding="utf-8")
    return metadata.get("general", "repository").rstrip("/")


def readme_anchor(heading):
    """The anchor a README heading gets where the repository renders it: lower case, punctuation
    dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


class SubsidenceAlgorithm(QgsProcessingAlgorithm):
    # Modules beyond QGIS's own that the algorithm imports (keys of core.dependencies.PIP_NAMES).
    REQUIRES = ()
    GROUP = ""  # a key of GROUPS
    HELP_SECTION = ""  # the README heading that documents the algorithm
    SHORT_DESCRIPTION = ""  # one line for the toolbox's tooltip

    def group(self):
        return self.tr(GROUPS[self.GROUP])

    def groupId(self):
        return self.GROUP

    def shortDescription(self):
        return self.tr(self.SHORT_DESCRIPTION)

    def helpUrl(self):
        return f"{repository_url()}#{readme_anchor(self.HELP_SECTION)}"

    def createInstance(self):
        return type(self)()

    def tr(self, text):
        return QCoreApplication.translate(type(self).__name__, text)

    def icon(self):
        return QIcon(ICON_PATH)

    def canExecute(self):
        # The toolbox greys the algorithm out and shows this message, with the install command.
        message = missing_message(self.REQUIRES)
        return message is None, message or ""

    def checkParameterValues(self, parameters, context):
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:  # QGIS says "... not found" also of a file that exists but cannot be read
            message = next(filter(None, map(_unreadable_layer_file, self._layer_files(parameters))), message)
        else:  # the first problem only: each output check writes a temporary file
            inputs = (
                self._missing_file(definition, parameters.get(definition.name()), context)
                for definition in self.parameterDefinitions()
                if isinstance(definition, QgsProcessingParameterFile)
            )
            outputs = (
                self._output_problem(definition, parameters.get(definition.name()), context)
                for definition in self.destinationParameterDefinitions()
            )
            message = next(filter(None, itertools.chain(inputs, outputs)), "")
            ok = not message
        return ok, message

    def _layer_files(self, parameters):
        """(label, path, 'raster' or 'vector') of each file given as a layer (a path with an extension)."""
        for definition in self.parameterDefinitions():
            kind = LAYER_KINDS.get(definition.type())
            value = parameters.get(definition.name())
            for path in value if isinstance(value, list) else [value]:
                if kind and isinstance(path, str) and (os.path.isfile(path) or os.path.splitext(path)[1]):
                    yield definition.description(), path, kind

    def _missing_file(self, definition, value, context):
        """Why the input file `value` cannot be read (None: it can, or none is given)."""
        path = self.parameterAsFile({definition.name(): value}, definition.name(), context) if value else ""
        if not path or definition.behavior() != QgsProcessingParameterFile.File or os.path.isfile(path):
            return None
        return f"{definition.description()}: there is no file {path}. Check the path."

    def _output_problem(self, definition, value, context):
        """Why the output file `value` cannot be written (None: it can), before any work is done."""
        if isinstance(value, QgsProcessingOutputLayerDefinition):
            value = value.sink.staticValue()
        path = str(value or "")
        if not path or path == QgsProcessing.TEMPORARY_OUTPUT or URI.match(path) or "|" in path:
            return None  # not written, a temporary file, or a URI (memory:, ogr:, postgres: …)
        label = definition.description()
        extensions = _extensions(definition)
        extension = os.path.splitext(path)[1].lower().lstrip(".")
        if extensions and extension not in extensions:
            named = " or ".join(f".{e}" for e in extensions[:2]) + (
                ", or another format OGR writes" if len(extensions) > 2 else ""
            )
            return f"{label}: {path} ends in '.{extension}', a format this output is not written in. Name it {named}."
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            return f"{label}: the folder {folder} does not exist. Create it, or choose another folder."
        try:  # os.access answers yes to root even where nothing can be written (/sys, read-only mounts)
            with tempfile.NamedTemporaryFile(dir=folder):
                pass
        except OSError as error:
            return f"{label}: nothing can be written in {folder} ({error.strerror}). Choose a folder you can write to."
        if os.path.exists(path) and not os.access(path, os.W_OK):
            return f"{label}: {path} exists and cannot be overwritten. Choose another name, or make it writable."
        return None

    def prepareAlgorithm(self, parameters, context, feedback):
        # processing.run and qgis_process never ask canExecute(), so the check is repeated here.
        ok, message = self.canExecute()
        if not ok:
            raise QgsProcessingException(message)
        return True

    def report_destination(self, name):
        """An optional HTML report: written only when the user names a file."""
        return QgsProcessingParameterFileDestination(
            name, self.tr("Report"), self.tr("HTML files (*.html)"), optional=True, createByDefault=False
        )


# Layer parameters by type, and what they take.
LAYER_KINDS = {"raster": "raster", "multilayer": "raster", "source": "vector", "vector": "vector"}


def _unreadable_layer_file(file):
    """Why QGIS cannot load the (label, path, kind) of _layer_files, or None when it can."""
    label, path, kind = file
    if not os.path.isfile(path):
        return f"{label}: there is no file {path}. Check the path."
    if os.path.getsize(path) == 0:
        return f"{label}: {path} is empty (0 bytes). Export or copy it again."
    layer = QgsRasterLayer(path, "check") if kind == "raster" else QgsVectorLayer(path, "check", "ogr")
    if layer.isValid():
        return None
    return (
        f"{label}: QGIS cannot read {path} as a {kind} layer: it is truncated, damaged or another kind of file. "
        "Export or copy it again."
    )


def _extensions(definition):
    """The file extensions an output accepts: rasters are written as GeoTIFF, vector layers in
    any format OGR writes, files in the format their filter names."""
    if isinstance(definition, QgsProcessingParameterRasterDestination):
        return ["tif", "tiff"]
    if isinstance(definition, QgsProcessingParameterFeatureSink):
        return [e.lower() for e in QgsVectorFileWriter.supportedFormatExtensions()]
    if isinstance(definition, QgsProcessingParameterFileDestination):
        return re.findall(r"\*\.(\w+)", definition.fileFilter().lower())
    return []


def read_dataset(path):
    """The dataset at `path` (core.dataset.open_dataset); a QgsProcessingException when it cannot be read."""
    from ..core.dataset import open_dataset

    try:
        return open_dataset(path)
    except InputError as error:
        raise QgsProcessingException(str(error)) from None


def read_model_card(model, path):
    """The card of an ONNX model (a path, or the file's bytes read from `path`); a
    QgsProcessingException naming `path` when it is no model or its card is malformed."""
    from ..models.export import read_card

    try:
        return read_card(model)
    except InputError as error:
        raise QgsProcessingException(f"{path}: {error}") from None
    except Exception as error:  # onnxruntime raises its own exception types
        raise QgsProcessingException(
            f"{path} is not an ONNX model ONNX Runtime can load ({error}). Choose the .onnx file 'Train the CNN' wrote."
        ) from None
