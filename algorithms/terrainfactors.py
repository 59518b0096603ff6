"""subsidence:terrainfactors — slope, aspect, specific catchment area, TWI and SPI of a DEM."""

from concurrent import futures

from qgis.core import (
    QgsEllipsoidUtils,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsUnitTypes,
)

from ..core import terrain
from .base import SubsidenceAlgorithm
from .layers import Float32Rasters, check_raster, grid_of_raster, open_raster, read_band

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
    GROUP = "drivers"
    HELP_SECTION = "Terrain factors"
    SHORT_DESCRIPTION = "Slope, aspect, specific catchment area, TWI and SPI of a DEM (D8, MFD or D-infinity flow)"

    def name(self):
        return "terrainfactors"

    def displayName(self):
        return self.tr("Terrain factors (slope, aspect, TWI, SPI)")

    def tags(self):
        return self.tr(
            "slope,aspect,catchment,flow accumulation,twi,wetness,spi,stream power,dem,d8,mfd,d-infinity,fill,driver"
        ).split(",")

    def shortHelpString(self):
        return self.tr(
            "Computes the terrain drivers of subsidence from a DEM, each as a raster on the DEM's grid: slope, "
            "aspect, specific catchment area, topographic wetness index (TWI) and stream power index (SPI). "
            "Leave out the outputs you do not need (at least one).\n"
            "Nodata cells stay nodata; every valid cell gets a value, also on the DEM's border and next to nodata. "
            "Elevations must be in metres; a DEM in degrees is handled (its cells are measured in metres on its "
            "ellipsoid).\n"
            "Units: slope and aspect in degrees (aspect clockwise from north, −1 on flat cells), specific "
            "catchment area in m²/m, TWI and SPI dimensionless (ln of m, and m²/m).\n"
            "Method: slope and aspect by Horn (1981), as gdaldem; flow by D8, MFD (Freeman 1991) or D-infinity "
            "(Tarboton 1997) after filling depressions; TWI = ln(a / tan β) and SPI = a · tan β (Moore, Grayson "
            "and Ladson 1991)."
        )

    def initAlgorithm(self, config=None):
        dem = QgsProcessingParameterRasterLayer(self.INPUT, self.tr("DEM"))
        dem.setHelp(
            self.tr(
                "The elevation model: band 1, elevations in metres. Cell sizes in other map units are converted to "
                "metres; a DEM in degrees gets its cells measured on its ellipsoid, row by row."
            )
        )
        self.addParameter(dem)
        fill = QgsProcessingParameterBoolean(self.FILL_DEPRESSIONS, self.tr("Fill depressions"), defaultValue=True)
        fill.setHelp(
            self.tr(
                "Raises every closed depression to its spill level before the flow is routed (the priority-flood "
                "result), so that water flows on to the DEM's border or to nodata. Off: flow ends in each "
                "depression. Changes only the catchment area, TWI and SPI."
            )
        )
        self.addParameter(fill)
        method = QgsProcessingParameterEnum(
            self.FLOW_METHOD,
            self.tr("Flow method"),
            options=list(terrain.METHODS),
            defaultValue=terrain.METHODS.index(DEFAULT_METHOD),
        )
        method.setHelp(
            self.tr(
                "How a cell passes its flow downslope. D8: all of it to the steepest neighbour. MFD (default, "
                "Freeman 1991): split among all lower neighbours in proportion to slope^1.1. D-infinity (Tarboton "
                "1997): between the two neighbours either side of the steepest direction. Cells on flats drain along "
                "the shortest path to the flat's outlet; nodata and the border are outlets."
            )
        )
        self.addParameter(method)
        min_slope = QgsProcessingParameterNumber(
            self.MIN_SLOPE,
            self.tr("Minimum slope for TWI and SPI (degrees)"),
            QgsProcessingParameterNumber.Double,
            defaultValue=0.1,
            minValue=1e-6,
            maxValue=89.0,
        )
        min_slope.setHelp(
            self.tr(
                "TWI and SPI use the slope, but at least this many degrees (default 0.1), so that on flat cells "
                "neither the logarithm nor the tangent sees 0. A larger value lowers TWI and raises SPI on flats."
            )
        )
        min_slope.setMetadata({"widget_wrapper": {"decimals": 3}})
        min_slope.setFlags(min_slope.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(min_slope)
        for key, label, text in (
            (
                self.SLOPE,
                self.tr("Slope"),
                self.tr(
                    "Slope in degrees by Horn's method, as gdaldem in the interior. On the border and next to nodata "
                    "a missing neighbour is extrapolated linearly from the opposite one (exact for a plane)."
                ),
            ),
            (
                self.ASPECT,
                self.tr("Aspect"),
                self.tr(
                    "The direction the slope faces, in degrees clockwise from north; −1 on flat cells. 'Stack driver "
                    "rasters' turns it into eastness and northness."
                ),
            ),
            (
                self.CATCHMENT,
                self.tr("Specific catchment area"),
                self.tr(
                    "The area draining through a cell, itself included, divided by the flow width, taken as the cell "
                    "size (the WhiteboxTools and SAGA convention), in m²/m."
                ),
            ),
            (
                self.TWI,
                self.tr("Topographic wetness index"),
                self.tr("ln(a / tan β), with a the specific catchment area and β the slope: high where water gathers."),
            ),
            (
                self.SPI,
                self.tr("Stream power index"),
                self.tr("a · tan β, with a the specific catchment area and β the slope: the erosive power of flow."),
            ),
        ):
            output = QgsProcessingParameterRasterDestination(key, label, optional=True, createByDefault=True)
            output.setHelp(text)
            self.addParameter(output)

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
        check_raster(layer, "the DEM", crs=False)  # without one, its cells are taken to be in metres (warned)
        grid, crs = grid_of_raster(layer), layer.crs()
        sizes = self._cell_sizes(grid, crs, feedback)
        z = _read_band_1(layer.source())
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
        return outputs  # only the outputs asked for, and so written

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
