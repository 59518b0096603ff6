"""The Processing provider `subsidence`."""

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .base import ICON_PATH
from .checksetup import CheckSetup
from .distance import Distance
from .evaluate import Evaluate
from .exportpatches import ExportPatches
from .importps import ImportPs
from .krige import Krige
from .krigeresiduals import KrigeResiduals
from .predictsurface import PredictSurface
from .selectps import SelectPs
from .stackfactors import StackFactors
from .settings import add_settings, remove_settings
from .terrainfactors import TerrainFactors
from .traincnn import TrainCnn

# Explicit, in the order the toolbox lists them within a group.
ALGORITHMS = (
    CheckSetup,
    ImportPs,
    SelectPs,
    TerrainFactors,
    Distance,
    StackFactors,
    ExportPatches,
    TrainCnn,
    PredictSurface,
    Krige,
    KrigeResiduals,
    Evaluate,
)


class SubsidenceProvider(QgsProcessingProvider):
    def id(self):
        return "subsidence"

    def name(self):
        return "InSAR Subsidence Mapper"

    def longName(self):
        return "InSAR Subsidence Mapper: PS points to continuous subsidence maps"

    def icon(self):
        return QIcon(ICON_PATH)

    def supportedOutputRasterLayerExtensions(self):
        # Rasters are written as float32 GeoTIFF (algorithms.layers), so only .tif is offered.
        return ["tif"]

    def load(self):
        add_settings(self)
        self.refreshAlgorithms()
        return True

    def unload(self):
        remove_settings()

    def loadAlgorithms(self):
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
