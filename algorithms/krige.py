"""subsidence:krige — ordinary kriging of a point field onto a grid, with its variance."""

import json

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core import report
from ..core.errors import InputError
from ..core.grid import Grid
from ..core.kriging import (
    GLOBAL_MAX_POINTS,
    MODELS,
    NUGGET_DOMINATED,
    OrdinaryKriging,
    check_points,
    cross_validation_statistics,
    experimental_variogram,
    fit_variogram,
    merge_coincident,
    plot_variogram,
    warnings,
)
from .base import SubsidenceAlgorithm
from .layers import Float32Rasters, grid_of_raster, point_values
from .styles import style_raster

BLOCK_CELLS = 65536  # cells predicted between progress reports and cancel checks


class Krige(SubsidenceAlgorithm):
    POINTS = "POINTS"
    FIELD = "FIELD"
    REFERENCE = "REFERENCE"
    EXTENT = "EXTENT"
    PIXEL_SIZE = "PIXEL_SIZE"
    CRS = "CRS"
    VARIOGRAM_MODEL = "VARIOGRAM_MODEL"
    SILL = "SILL"
    RANGE = "RANGE"
    NUGGET = "NUGGET"
    N_NEIGHBOURS = "N_NEIGHBOURS"
    MAX_FIT_POINTS = "MAX_FIT_POINTS"
    SEED = "SEED"
    OUTPUT = "OUTPUT"
    OUTPUT_VARIANCE = "OUTPUT_VARIANCE"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    VARIOGRAM_PARAMETERS = "VARIOGRAM_PARAMETERS"
    FIT_R2 = "FIT_R2"
    LOO = ("LOO_ME", "LOO_RMSE", "LOO_MSE", "LOO_MSSE")
    N_POINTS = "N_POINTS"

    def name(self):
        return "krige"

    def displayName(self):
        return self.tr("Ordinary kriging (with variance)")

    def group(self):
        return self.tr("Kriging and evaluation")

    def groupId(self):
        return "evaluation"

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
            "weighted least squares (relative residuals weighted by pair counts, robust loss). SILL (full sill), RANGE and NUGGET, "
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

    def add_variogram_parameters(self):
        """The variogram, its fixed parameters, the neighbourhood and the fit's subsample."""
        self.addParameter(
            QgsProcessingParameterEnum(
                self.VARIOGRAM_MODEL, self.tr("Variogram model"), options=list(MODELS), defaultValue=0
            )
        )
        for key, label in (
            (self.SILL, "Sill, full (empty: fitted)"),
            (self.RANGE, "Range (empty: fitted; map units)"),
            (self.NUGGET, "Nugget (empty: fitted)"),
        ):
            self.addParameter(
                QgsProcessingParameterNumber(
                    key, self.tr(label), QgsProcessingParameterNumber.Double, optional=True, minValue=0.0
                )
            )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.N_NEIGHBOURS, self.tr("Neighbours per cell (0: all points)"), defaultValue=32, minValue=0
            )
        )
        for parameter in (
            QgsProcessingParameterNumber(
                self.MAX_FIT_POINTS, self.tr("Points used to estimate the variogram"), defaultValue=2000, minValue=50
            ),
            QgsProcessingParameterNumber(
                self.SEED, self.tr("Random seed (variogram subsample)"), defaultValue=0, minValue=0
            ),
        ):
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)

    def add_report_and_outputs(self):
        """The report and the numbers every kriging run returns."""
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_REPORT,
                self.tr("Report"),
                self.tr("HTML files (*.html)"),
                optional=True,
                createByDefault=False,
            )
        )
        self.addOutput(
            QgsProcessingOutputString(self.VARIOGRAM_PARAMETERS, self.tr("Variogram parameters (PyKrige dict, JSON)"))
        )
        for key, label in (
            (self.NUGGET, "Nugget"),
            (self.SILL, "Sill (bounded models)"),
            (self.RANGE, "Range (bounded models)"),
            (self.FIT_R2, "Variogram fit R²"),
            ("LOO_ME", "Leave-one-out mean error"),
            ("LOO_RMSE", "Leave-one-out RMSE"),
            ("LOO_MSE", "Leave-one-out mean standardised error"),
            ("LOO_MSSE", "Leave-one-out mean squared standardised error"),
            (self.N_POINTS, "Points kriged"),
        ):
            self.addOutput(QgsProcessingOutputNumber(key, self.tr(label)))

    def checkParameterValues(self, parameters, context):
        has_reference = parameters.get(self.REFERENCE) not in (None, "")
        has_extent = parameters.get(self.EXTENT) not in (None, "") and parameters.get(self.PIXEL_SIZE) not in (None, "")
        if not (has_reference or has_extent):
            return False, self.tr("Give a reference grid, or an extent and a pixel size.")
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):
        try:
            return self._krige(parameters, context, feedback)
        except InputError as error:
            raise QgsProcessingException(str(error)) from error

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

    def fit_kriging(self, parameters, context, feedback, x, y, z):
        """The variogram fitted (or given) and the kriging of the points, with its leave-one-out
        statistics and the cautions, all logged: (kriging, fit, statistics, cautions)."""
        model = MODELS[self.parameterAsEnum(parameters, self.VARIOGRAM_MODEL, context)]
        experimental = experimental_variogram(
            x,
            y,
            z,
            max_points=self.parameterAsInt(parameters, self.MAX_FIT_POINTS, context),
            rng=self.parameterAsInt(parameters, self.SEED, context),
        )
        fit = fit_variogram(experimental, model, self._fixed(parameters, context))
        self._log_fit(fit, feedback)
        kriging = OrdinaryKriging(x, y, z, fit.variogram, self.parameterAsInt(parameters, self.N_NEIGHBOURS, context))
        statistics = cross_validation_statistics(*kriging.leave_one_out())
        feedback.pushInfo(
            "Leave-one-out: "
            + ", ".join(f"{name} {value:.4g}" for name, value in statistics.items())
            + " (MSE ≈ 0 and MSSE ≈ 1 when the kriging variance is honest)"
        )
        cautions = warnings(fit, statistics)
        for caution in cautions:
            feedback.pushWarning(caution)
        return kriging, fit, statistics, cautions

    def finish(self, parameters, context, fit, statistics, cautions, title, points):
        """The numeric outputs, and the report when asked for; points: (what, count) rows."""
        results = {
            self.VARIOGRAM_PARAMETERS: json.dumps({"model": fit.variogram.model, **fit.variogram.as_pykrige_dict()}),
            self.NUGGET: fit.variogram.nugget,
            self.FIT_R2: fit.r_squared,
            self.N_POINTS: points[0][1],
            **{f"LOO_{name}": value for name, value in statistics.items()},
        }
        bounded = fit.variogram.as_pykrige_dict()
        if "sill" in bounded:
            results.update({self.SILL: bounded["sill"], self.RANGE: bounded["range"]})
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        if report_path:
            self._write_report(report_path, fit, statistics, cautions, title, points)
            results[self.OUTPUT_REPORT] = report_path
        return results

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

    def _fixed(self, parameters, context):
        names = {self.SILL: "sill", self.RANGE: "range", self.NUGGET: "nugget"}
        return {
            name: self.parameterAsDouble(parameters, key, context)
            for key, name in names.items()
            if parameters.get(key) not in (None, "")
        }

    def _log_fit(self, fit, feedback):
        feedback.pushInfo(
            f"Variogram {fit.variogram.model}: "
            + ", ".join(f"{name} {value:.6g}" for name, value in fit.variogram.as_pykrige_dict().items())
            + f"; R² of the fit {fit.r_squared:.3f} (weighted by pairs), from {fit.experimental.n_points} points"
        )
        for lag, gamma, count in zip(fit.experimental.lags, fit.experimental.semivariance, fit.experimental.counts):
            feedback.pushDebugInfo(
                f"lag {lag:.6g}: experimental {gamma:.6g}, fitted {fit.variogram(lag):.6g}, {count} pairs"
            )

    def _write_surfaces(self, kriging, grid, crs, names, output, variance_output, feedback, adjust=None):
        """Kriges the grid by blocks of rows into the two files (band names `names`);
        adjust(first row, stop row, values, variances), when given, returns what is written."""
        rows_per_block = max(1, BLOCK_CELLS // grid.width)
        with Float32Rasters([(output, [names[0]]), (variance_output, [names[1]])], grid, crs) as rasters:
            for row in range(0, grid.height, rows_per_block):
                if feedback.isCanceled():
                    raise QgsProcessingException(self.tr("Canceled: no output was written."))
                stop = min(row + rows_per_block, grid.height)
                values, variances = kriging.predict(*grid.centres(row, stop))
                if adjust is not None:
                    values, variances = adjust(row, stop, values, variances)
                rasters.write(0, row, values)
                rasters.write(1, row, variances)
                feedback.setProgress(100 * stop / grid.height)

    def _write_report(self, path, fit, statistics, cautions, title, points):
        fig = report.figure()
        plot_variogram(fit, fig.add_subplot())
        sections = [
            (
                "Warnings",
                "".join(report.paragraph(caution, warning=True) for caution in cautions) or report.paragraph("None."),
            ),
            ("Variogram", report.image(fig, "experimental and fitted variogram")),
            (
                "Fitted model",
                report.table(
                    ["parameter", "value"],
                    [
                        ("model", fit.variogram.model),
                        *fit.variogram.as_pykrige_dict().items(),
                        ("R² of the fit (weighted by pairs)", fit.r_squared),
                    ],
                ),
            ),
            (
                "Leave-one-out cross-validation",
                report.table(["statistic", "value"], list(statistics.items()))
                + report.paragraph("MSE should be close to 0 and MSSE close to 1 when the kriging variance is honest."),
            ),
            ("Points", report.table(["", "count"], points)),
        ]
        with open(path, "w", encoding="utf-8") as file:
            file.write(report.page(title, sections))
