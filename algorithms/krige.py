"""subsidence:krige — ordinary kriging of a point field onto a grid, with its variance."""

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingParameterCrs,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core.grid import Grid
from ..core.kriging import GLOBAL_MAX_POINTS, NUGGET_DOMINATED, check_points, merge_coincident
from .kriging_base import KrigingAlgorithm
from .layers import grid_of_raster, point_values
from .styles import style_raster


class Krige(KrigingAlgorithm):
    REFERENCE = "REFERENCE"
    EXTENT = "EXTENT"
    PIXEL_SIZE = "PIXEL_SIZE"
    CRS = "CRS"

    def name(self):
        return "krige"

    def displayName(self):
        return self.tr("Ordinary kriging (with variance)")

    def tags(self):
        return self.tr("kriging,interpolation,variogram,geostatistics,cross-validation,baseline,ps,insar").split(",")

    def shortHelpString(self):
        return self.tr(
            "Interpolates a numeric field of points (e.g. PS displacement) onto a grid by ordinary "
            "kriging, the baseline the CNN surface is compared with, and writes the kriging variance.\n"
            "The grid is the REFERENCE raster's, or EXTENT with PIXEL_SIZE in CRS (default: the points' "
            "CRS), which must be projected (metres), not geographic. Points are reprojected to it; points "
            "at the same location are merged (mean); features without geometry or value are skipped "
            "and counted.\n"
            "The variogram (PyKrige's models) is estimated from at most MAX_FIT_POINTS randomly chosen "
            "points (SEED), in 20 lags up to a third of the extent's diagonal, and fitted by Cressie's "
            "weighted least squares (relative residuals weighted by pair counts, robust loss). "
            "SILL (full sill), RANGE and NUGGET, "
            "when given, are held and the others fitted; with all three given nothing is fitted. "
            f"The log warns when the nugget exceeds {NUGGET_DOMINATED:.0%} of the sill (little spatial "
            "structure: kriging tends to the mean), when the fitted range lies far beyond the fitted lags, "
            "when the model fits the variogram poorly, and when cross-validation shows the variance to be "
            "dishonest.\n"
            "N_NEIGHBOURS nearest points krige each cell (local kriging); 0 means all points (global "
            f"kriging, refused above {GLOBAL_MAX_POINTS} points). Leave-one-out cross-validation is "
            "reported: mean error, RMSE, mean standardised error (≈ 0) and mean squared standardised "
            "error (≈ 1 when the variance is honest). OUTPUT_REPORT adds an HTML page with the "
            "variogram plot.\n"
            "Units: the prediction is in the field's units (mm for displacement, mm/yr for velocity), "
            "the variance in those units squared; RANGE and distances in the grid CRS's map units; "
            "SILL and NUGGET in the field's units squared."
        )

    def initAlgorithm(self, config=None):
        self.addParameter(
            QgsProcessingParameterFeatureSource(self.POINTS, self.tr("Points"), [QgsProcessing.TypeVectorPoint])
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.FIELD, self.tr("Value field"), None, self.POINTS, QgsProcessingParameterField.Numeric
            )
        )
        self.addParameter(QgsProcessingParameterRasterLayer(self.REFERENCE, self.tr("Reference grid"), optional=True))
        self.addParameter(
            QgsProcessingParameterExtent(self.EXTENT, self.tr("Extent (without reference grid)"), optional=True)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.PIXEL_SIZE,
                self.tr("Pixel size (without reference grid; map units)"),
                QgsProcessingParameterNumber.Double,
                optional=True,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterCrs(
                self.CRS, self.tr("Grid CRS (without reference grid; default: the points')"), optional=True
            )
        )
        self.add_variogram_parameters()
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Kriged surface")))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_VARIANCE, self.tr("Kriging variance")))
        self.add_report_and_outputs()

    def checkParameterValues(self, parameters, context):
        has_reference = parameters.get(self.REFERENCE) not in (None, "")
        has_extent = parameters.get(self.EXTENT) not in (None, "") and parameters.get(self.PIXEL_SIZE) not in (None, "")
        if not (has_reference or has_extent):
            return False, self.tr("Give a reference grid, or an extent and a pixel size.")
        return super().checkParameterValues(parameters, context)

    def _krige(self, parameters, context, feedback):
        steps = QgsProcessingMultiStepFeedback(4, feedback)
        source = self.parameterAsSource(parameters, self.POINTS, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.POINTS))
        field = self.parameterAsString(parameters, self.FIELD, context)
        grid, crs = self._grid(parameters, context, source)

        x, y, z, _, _, skipped = point_values(source, field, crs, context, steps)
        x, y, z, merged = merge_coincident(x, y, z)
        feedback.pushInfo(
            f"{len(z) + merged} points read from '{field}'; {merged} merged into coincident ones; "
            + ", ".join(f"{count} skipped ({reason})" for reason, count in skipped.items())
        )
        check_points(x, y, z)

        steps.setCurrentStep(1)
        kriging, fit, statistics, cautions = self.fit_kriging(parameters, context, feedback, x, y, z)

        steps.setCurrentStep(3)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        variance_output = self.parameterAsOutputLayer(parameters, self.OUTPUT_VARIANCE, context)
        self._write_surfaces(
            kriging, grid, crs, [f"kriged {field}", f"kriging variance of {field}"], output, variance_output, steps
        )
        style_raster(output)
        style_raster(variance_output, sequential=True)
        points = [
            ("kriged", len(z)),
            ("merged into coincident points", merged),
            *[(f"skipped: {k}", v) for k, v in skipped.items()],
        ]
        return {
            self.OUTPUT: output,
            self.OUTPUT_VARIANCE: variance_output,
            **self.finish(parameters, context, fit, statistics, cautions, f"Ordinary kriging of {field}", points),
        }

    def _grid(self, parameters, context, source):
        reference = self.parameterAsRasterLayer(parameters, self.REFERENCE, context)
        if reference is not None:
            grid, crs = grid_of_raster(reference), reference.crs()
        else:
            crs = self.parameterAsCrs(parameters, self.CRS, context)
            if not crs.isValid():
                crs = source.sourceCrs()
            extent = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
            pixel_size = self.parameterAsDouble(parameters, self.PIXEL_SIZE, context)
            grid = Grid.from_extent(
                extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum(), pixel_size
            )
        if not crs.isValid():
            raise QgsProcessingException(self.tr("The grid has no CRS: set the reference grid's CRS, or CRS."))
        if crs.isGeographic():
            raise QgsProcessingException(
                self.tr(
                    f"The grid CRS {crs.authid()} is geographic (degrees), where distances are not isotropic. "
                    "Krige in a projected CRS (e.g. the UTM zone): set CRS or use a projected reference grid."
                )
            )
        return grid, QgsCoordinateReferenceSystem(crs)
