"""What the kriging algorithms share: the variogram's parameters, the fit and its log, the
leave-one-out statistics, the report, and the block-wise writing of the surface and its variance."""

import json

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
)

from ..core import report
from ..core.errors import InputError
from ..core.kriging import (
    MODELS,
    OrdinaryKriging,
    cross_validation_statistics,
    experimental_variogram,
    fit_variogram,
    plot_variogram,
    warnings,
)
from .base import SubsidenceAlgorithm
from .layers import Float32Rasters

BLOCK_CELLS = 65536  # cells predicted between progress reports and cancel checks
DEFAULT_MODEL = "spherical"


class KrigingAlgorithm(SubsidenceAlgorithm):
    """Subclasses add their inputs and implement _krige(parameters, context, feedback), which
    may raise InputError for bad inputs."""

    POINTS = "POINTS"
    FIELD = "FIELD"
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
    LOO_ME = "LOO_ME"
    LOO_RMSE = "LOO_RMSE"
    LOO_MSE = "LOO_MSE"
    LOO_MSSE = "LOO_MSSE"
    # core.kriging.cross_validation_statistics' names -> output ids
    LOO_OUTPUTS = {"ME": LOO_ME, "RMSE": LOO_RMSE, "MSE": LOO_MSE, "MSSE": LOO_MSSE}
    N_POINTS = "N_POINTS"

    def group(self):
        return self.tr("Kriging and evaluation")

    def groupId(self):
        return "evaluation"

    def add_variogram_parameters(self):
        """The variogram, its fixed parameters, the neighbourhood and the fit's subsample."""
        self.addParameter(
            QgsProcessingParameterEnum(
                self.VARIOGRAM_MODEL,
                self.tr("Variogram model"),
                options=list(MODELS),
                defaultValue=MODELS.index(DEFAULT_MODEL),
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
        self.addParameter(self.report_destination(self.OUTPUT_REPORT))
        self.addOutput(
            QgsProcessingOutputString(self.VARIOGRAM_PARAMETERS, self.tr("Variogram parameters (PyKrige dict, JSON)"))
        )
        for key, label in (
            (self.NUGGET, "Nugget"),
            (self.SILL, "Sill (bounded models)"),
            (self.RANGE, "Range (bounded models)"),
            (self.FIT_R2, "Variogram fit R²"),
            (self.LOO_ME, "Leave-one-out mean error"),
            (self.LOO_RMSE, "Leave-one-out RMSE"),
            (self.LOO_MSE, "Leave-one-out mean standardised error"),
            (self.LOO_MSSE, "Leave-one-out mean squared standardised error"),
            (self.N_POINTS, "Points kriged"),
        ):
            self.addOutput(QgsProcessingOutputNumber(key, self.tr(label)))

    def processAlgorithm(self, parameters, context, feedback):
        try:
            return self._krige(parameters, context, feedback)
        except InputError as error:
            raise QgsProcessingException(str(error)) from error

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
            **{self.LOO_OUTPUTS[name]: value for name, value in statistics.items()},
        }
        bounded = fit.variogram.as_pykrige_dict()
        if "sill" in bounded:
            results.update({self.SILL: bounded["sill"], self.RANGE: bounded["range"]})
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        if report_path:
            self._write_report(report_path, fit, statistics, cautions, title, points)
            results[self.OUTPUT_REPORT] = report_path
        return results

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
