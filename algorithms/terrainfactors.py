"""subsidence:terrainfactors — slope, aspect, specific catchment area, TWI and SPI of a DEM."""

from concurrent import futures

import numpy as np
from qgis.core import (
    QgsEllipsoidUtils,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsUnitTypes,
)

from ..core import terrain
from .base import SubsidenceAlgorithm
from .layers import Float32Rasters, grid_of_raster, open_raster, read_band

DEFAULT_METHOD = "MFD"


class TerrainFactors(SubsidenceAlgorithm):
    REQUIRES = ("skimage",)
    INPUT = "INPUT"
    FILL_DEPRESSIONS = "FILL_DEPRESSIONS"
    FLOW_METHOD = "FLOW_METHOD"
    MIN_SLOPE = "MIN_SLOPE"
    # The outputs' ids are core.terrain's names of the factors.
    SLOPE = "SLOPE"
    ASPECT = "ASPECT"
    CATCHMENT = "CATCHMENT"
    TWI = "TWI"
    SPI = "SPI"
    OUTPUTS = (SLOPE, ASPECT, CATCHMENT, TWI, SPI)

    def name(self):
        return "terrainfactors"

    def displayName(self):
        return self.tr("Terrain factors (slope, aspect, TWI, SPI)")

    def group(self):
        return self.tr("Driving factors")

    def groupId(self):
        return "drivers"

    def tags(self):
        return self.tr(
            "slope,aspect,catchment,flow accumulation,twi,wetness,spi,stream power,dem,d8,mfd,d-infinity,fill,driver"
        ).split(",")

    def shortHelpString(self):
        return self.tr(
            "Computes the terrain drivers of subsidence from a DEM (band 1), each on the DEM's grid:\n"
            "- SLOPE and ASPECT by Horn's method, as gdaldem slope/aspect in the interior. Aspect is the "
            "direction the slope faces, clockwise from north; flat cells get -1. On the DEM's border and "
            "next to nodata a missing neighbour is extrapolated linearly from the opposite one, so every "
            "valid cell has a value (exact for a plane).\n"
            "- CATCHMENT, the specific catchment area a: the area draining through a cell, itself "
            "included, divided by the flow width, taken as the cell size (the WhiteboxTools/SAGA "
            "convention). With FILL_DEPRESSIONS, depressions are first raised to their spill level "
            "(priority-flood result); cells on flats drain along the shortest path to the flat's outlet. "
            "FLOW_METHOD: D8 (all flow to the steepest neighbour), MFD (Freeman 1991: split among all "
            "lower neighbours in proportion to slope^1.1) or D-infinity (Tarboton 1997). Nodata cells and "
            "the DEM's border are outlets: a cell next to them with no lower neighbour sends its flow out.\n"
            "- TWI = ln(a / tan b) and SPI = a tan b, with b the slope, at least MIN_SLOPE so that "
            "ln and tan never see 0.\n"
            "Nodata cells stay nodata. A DEM in degrees is handled: cell sizes are taken in metres on "
            "its ellipsoid, row by row. Elevations must be in metres.\n"
            "Units: slope and aspect in degrees, catchment in m2/m, TWI and SPI dimensionless "
            "(ln of metres, and m2/m)."
        )

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("DEM")))
        self.addParameter(
            QgsProcessingParameterBoolean(self.FILL_DEPRESSIONS, self.tr("Fill depressions"), defaultValue=True)
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.FLOW_METHOD,
                self.tr("Flow method"),
                options=list(terrain.METHODS),
                defaultValue=terrain.METHODS.index(DEFAULT_METHOD),
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_SLOPE,
                self.tr("Minimum slope for TWI and SPI (degrees)"),
                QgsProcessingParameterNumber.Double,
                defaultValue=0.1,
                minValue=1e-6,
                maxValue=89.0,
            )
        )
        for key, label in (
            (self.SLOPE, "Slope"),
            (self.ASPECT, "Aspect"),
            (self.CATCHMENT, "Specific catchment area"),
            (self.TWI, "Topographic wetness index"),
            (self.SPI, "Stream power index"),
        ):
            self.addParameter(
                QgsProcessingParameterRasterDestination(key, self.tr(label), optional=True, createByDefault=True)
            )

    def checkParameterValues(self, parameters, context):
        if not any(parameters.get(key) for key in self.OUTPUTS):
            return False, self.tr("Choose at least one output.")
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        outputs = {key: self.parameterAsOutputLayer(parameters, key, context) for key in self.OUTPUTS}
        outputs = {key: path for key, path in outputs.items() if path}
        if not outputs:
            raise QgsProcessingException(self.tr("Choose at least one output."))
        grid, crs = grid_of_raster(layer), layer.crs()
        sizes = self._cell_sizes(grid, crs, feedback)
        z = _read_band_1(layer.source())
        if np.isnan(z).all():
            raise QgsProcessingException(self.tr("The DEM has no valid cell."))
        steps = QgsProcessingMultiStepFeedback(len(terrain.STEPS), feedback)
        order = list(outputs)
        files = [(outputs[key], [terrain.BAND_NAMES[key]]) for key in order]

        def announce(index):
            steps.setCurrentStep(index)
            steps.pushInfo(self.tr("{}…").format(terrain.STEPS[index]))

        with Float32Rasters(files, grid, crs) as rasters, futures.ThreadPoolExecutor(max_workers=1) as writer:

            def write(key, array):  # in a second thread, while the next outputs are computed
                rasters.write(order.index(key), 0, array)
                rasters.flush(order.index(key))

            writes = []
            try:
                terrain.factors(
                    z,
                    sizes,
                    order,
                    lambda key, array: writes.append(writer.submit(write, key, array)),
                    method=terrain.METHODS[self.parameterAsEnum(parameters, self.FLOW_METHOD, context)],
                    fill=self.parameterAsBoolean(parameters, self.FILL_DEPRESSIONS, context),
                    min_slope=self.parameterAsDouble(parameters, self.MIN_SLOPE, context),
                    step=announce,
                    cancelled=feedback.isCanceled,
                )
            except InterruptedError:
                raise QgsProcessingException(self.tr("Canceled: no output was written.")) from None
            for write in writes:
                write.result()  # raises what a write raised
        steps.setProgress(100)
        return {key: outputs.get(key) for key in self.OUTPUTS}

    def _cell_sizes(self, grid, crs, feedback):
        if crs.isGeographic():
            ellipsoid = QgsEllipsoidUtils.ellipsoidParameters(crs.ellipsoidAcronym())
            if not ellipsoid.valid:
                raise QgsProcessingException(
                    self.tr("The DEM's CRS has no known ellipsoid to measure its cells in metres.")
                )
            feedback.pushInfo(
                self.tr("Geographic DEM: cells measured on the {} ellipsoid, row by row.").format(
                    crs.ellipsoidAcronym()
                )
            )
            return terrain.CellSizes.geographic(
                grid.top, grid.pixel_width, grid.pixel_height, grid.height, ellipsoid.semiMajor, ellipsoid.semiMinor
            )
        if not crs.isValid() or crs.mapUnits() == QgsUnitTypes.DistanceUnknownUnit:
            feedback.pushWarning(self.tr("The DEM has no CRS with known units: its cells are taken to be in metres."))
            return terrain.CellSizes.projected(grid.pixel_width, grid.pixel_height, grid.height)
        metres = QgsUnitTypes.fromUnitToUnitFactor(crs.mapUnits(), QgsUnitTypes.DistanceMeters)
        return terrain.CellSizes.projected(grid.pixel_width, grid.pixel_height, grid.height, metres)


def _read_band_1(path):
    dataset = open_raster(path, "the DEM")  # kept while its band is read
    return read_band(dataset.GetRasterBand(1))
