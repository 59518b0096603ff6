"""QGIS entry points. Only the Processing provider is registered: the plugin has no GUI of its own."""

from qgis.core import QgsApplication

from .algorithms.provider import SubsidenceProvider


class SubsidencePlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None

    def initProcessing(self):
        # Called alone by qgis_process, which has no interface: nothing here may touch the GUI.
        if self.provider is None:
            self.provider = SubsidenceProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
