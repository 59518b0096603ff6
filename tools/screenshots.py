"""Screenshots of what an analyst sees in the QGIS desktop: the plugin's toolbox groups, the kriging
dialog and the workflow model in the model designer. Run headless under Xvfb with QGIS's Python
(`make screenshots`); writes docs/screenshot_toolbox.png, docs/screenshot_dialog.png and
docs/screenshot_model.png.
"""

import os
import sys
from pathlib import Path

from qgis.core import QgsApplication, QgsProcessingModelAlgorithm
from qgis.gui import QgsMapCanvas, QgsMessageBar, QgsProcessingToolboxTreeView
from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtWidgets import QMainWindow

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "build" / "pluginpath"))  # the plugin under its package name (make)
DIALOG = "subsidence:krige"


class DesktopStandIn:
    """The part of QGIS's interface that Processing's dialogs ask for; everything else does nothing."""

    def __init__(self):
        self.window = QMainWindow()
        self.canvas = QgsMapCanvas(self.window)
        self.bar = QgsMessageBar(self.window)

    def mainWindow(self):
        return self.window

    def mapCanvas(self):
        return self.canvas

    def messageBar(self):
        return self.bar

    def iconSize(self, docked=False):
        return QSize(24, 24)

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def settle(application, widget, width, height):
    widget.resize(width, height)
    widget.show()
    for _ in range(5):
        application.processEvents()


def save(widget, path):
    if not widget.grab().save(str(path)):
        sys.exit(f"Cannot write {path}")
    print(path)


def toolbox(application, folder):
    view = QgsProcessingToolboxTreeView(None, QgsApplication.processingRegistry())
    view.setFilterString("subsidence")
    view.setHeaderHidden(True)
    view.expandAll()
    settle(application, view, 460, 560)
    save(view, folder / "screenshot_toolbox.png")


def dialog(application, folder):
    import processing

    window = processing.createAlgorithmDialog(DIALOG)
    settle(application, window, 900, 860)
    save(window, folder / "screenshot_dialog.png")


def designer(application, folder):
    from processing.modeler.ModelerDialog import ModelerDialog

    model = QgsProcessingModelAlgorithm()
    if not model.fromFile(str(REPO / "resources" / "subsidence_workflow.model3")):
        sys.exit("Cannot read the workflow model")
    window = ModelerDialog.create(model)
    settle(application, window, 1600, 1000)
    view = window.view()
    view.fitInView(view.scene().itemsBoundingRect(), Qt.AspectRatioMode.KeepAspectRatio)
    settle(application, window, 1600, 1000)
    save(window, folder / "screenshot_model.png")


def main(folder=REPO / "docs"):
    application = QgsApplication([], True)
    application.initQgis()
    sys.path.append(os.path.join(QgsApplication.pkgDataPath(), "python", "plugins"))  # processing
    import qgis.utils

    qgis.utils.iface = DesktopStandIn()  # before processing's modules import it
    from processing.core.Processing import Processing

    Processing.initialize()
    import insar_subsidence

    plugin = insar_subsidence.classFactory(qgis.utils.iface)  # kept: it owns the provider
    plugin.initProcessing()
    folder = Path(folder)
    for shoot in (toolbox, dialog, designer):
        shoot(application, folder)
    # QGIS 3.22 crashes tearing down the designer's widgets at exit; the pictures are written.
    os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:])
