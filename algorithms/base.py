"""What every algorithm of the provider shares: its icon and the check of its Python packages."""

import os

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..core.dependencies import missing_message

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
