"""What every algorithm of the provider shares: its icon, the check of its Python packages, the
optional HTML report and the reading of a model's card."""

import os

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingParameterFileDestination
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..core.dependencies import missing_message
from ..core.errors import InputError

ICON_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources", "icon.svg")


class SubsidenceAlgorithm(QgsProcessingAlgorithm):
    # Modules beyond QGIS's own that the algorithm imports (keys of core.dependencies.PIP_NAMES).
    REQUIRES = ()

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
