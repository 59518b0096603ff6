"""What every algorithm of the provider shares: its icon, its toolbox group, its help link, the
check of its Python packages, the optional HTML report and the reading of a model's card."""

import configparser
import os
import re
from functools import lru_cache

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingParameterFileDestination
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..core.dependencies import missing_message
from ..core.errors import InputError

PLUGIN_DIR = os.path.dirname(os.path.dirname(__file__))
ICON_PATH = os.path.join(PLUGIN_DIR, "resources", "icon.svg")
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


def read_model_card(model, path):
    """The card of an ONNX model (a path, or the file's bytes read from `path`); a
    QgsProcessingException naming `path` when it is no model or its card is malformed."""
    from ..models.export import read_card

    try:
        return read_card(model)
    except InputError as error:
        raise QgsProcessingException(f"{path}: {error}") from None
    except Exception as error:  # onnxruntime raises its own exception types
        raise QgsProcessingException(f"{path} is not an ONNX model ONNX Runtime can load: {error}") from None
