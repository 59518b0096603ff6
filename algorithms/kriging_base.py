"""What the kriging algorithms share: the variogram's parameters, the fit and its log, the
leave-one-out statistics, the report, and the block-wise writing of the surface and its variance."""

import json

import numpy as np

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from ..core import report
from ..core.errors import InputError
from ..core.dependencies import qgis_python
from ..core.kriging import (
    GLOBAL_MAX_POINTS,
    MODELS,
    NUGGET_DOMINATED,
    OrdinaryKriging,
    cross_validation_statistics,
    experimental_variogram,
    fit_variogram,
    krige_block,
    plot_variogram,
    warnings,
)
from ..core.cluster import KRIGING_PACKAGES, CanceledError, cluster, describe, run_tiles
from .base import SubsidenceAlgorithm
from .layers import Float32Rasters
from .settings import dask_scheduler_setting

BLOCK_CELLS = 65536  # cells predicted between progress reports and cancel checks
DEFAULT_MODEL = "spherical"
# Leave-one-out on more points says little more (MSSE's standard error ~ sqrt(2 / n): 0.03) but
# costs time: on every point it took as long as a third of the grid at 200 000 points.
DEFAULT_LOO_POINTS = 2000


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
    MAX_LOO_POINTS = "MAX_LOO_POINTS"
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
    SCHEDULER = "SCHEDULER"

    GROUP = "kriging"
    HELP_SECTION = "Kriging"

    def add_variogram_parameters(self):
        """The variogram, its fixed parameters, the neighbourhood and the fit's subsample."""
        model = QgsProcessingParameterEnum(
            self.VARIOGRAM_MODEL,
            self.tr("Variogram model"),
            options=list(MODELS),
            defaultValue=MODELS.index(DEFAULT_MODEL),
        )
        model.setHelp(
            self.tr(
                "The shape of the variogram fitted to the points (PyKrige's models). Spherical, exponential and "
                "gaussian level off at a sill beyond a range; linear and power never level off, for values "
                "that keep drifting apart with distance (they take no sill or range). It is fitted by Cressie's "
                "weighted least squares (relative residuals weighted by the pair counts, robust loss); the "
                "log and the report give the fit's R²."
            )
        )
        self.addParameter(model)
        neighbours = QgsProcessingParameterNumber(
            self.N_NEIGHBOURS, self.tr("Neighbours per cell (0: all points)"), defaultValue=32, minValue=0
        )
        neighbours.setHelp(
            self.tr(
                "How many of the nearest points krige each cell (local kriging); default 32. 0 uses every point "
                f"for every cell (global kriging), refused above {GLOBAL_MAX_POINTS} points. The leave-one-out "
                "cross-validation uses the same neighbourhood."
            )
        )
        self.addParameter(neighbours)
        fixed = (
            (
                self.SILL,
                "Total sill: nugget + partial sill (empty: fitted)",
                "Holds the variogram's total sill, the semivariance it levels off at (nugget included), instead of "
                "fitting it; in the field's units squared (mm², or (mm/yr)² for velocities). Spherical, "
                "exponential and gaussian models only. Leave empty to fit it.",
                4,
            ),
            (
                self.RANGE,
                "Range, in map units (empty: fitted)",
                "Holds the distance at which the variogram levels off, in the grid CRS's map units (metres), "
                "instead of fitting it; set it when the log warns that the fitted range lies far beyond the "
                "fitted distances. Spherical, exponential and gaussian models only. Leave empty to fit it.",
                1,
            ),
            (
                self.NUGGET,
                "Nugget (empty: fitted)",
                "Holds the variogram's nugget, the variance between points at (almost) the same place: noise "
                "and detail below the points' spacing; in the field's units squared. Leave empty to fit it. "
                "With sill, range and nugget all given nothing is fitted. The log warns when the nugget exceeds "
                f"{NUGGET_DOMINATED:.0%} of the sill: little spatial structure, the kriging tends to the mean.",
                4,
            ),
        )
        for key, label, help_text, decimals in fixed:
            parameter = QgsProcessingParameterNumber(
                key, self.tr(label), QgsProcessingParameterNumber.Double, optional=True, minValue=0.0
            )
            parameter.setHelp(self.tr(help_text))
            parameter.setMetadata({"widget_wrapper": {"decimals": decimals}})
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        fit_points = QgsProcessingParameterNumber(
            self.MAX_FIT_POINTS, self.tr("Points used to estimate the variogram"), defaultValue=2000, minValue=50
        )
        fit_points.setHelp(
            self.tr(
                "At most this many randomly chosen points give the experimental variogram (default 2000), in 20 "
                "distance classes up to a third of the extent's diagonal; where the points are denser, their "
                "nearest neighbours add finer short distances. More points: a steadier variogram, a slower fit. "
                "Every point is kriged whatever this number."
            )
        )
        loo_points = QgsProcessingParameterNumber(
            self.MAX_LOO_POINTS,
            self.tr("Points cross-validated (leave-one-out; 0: none)"),
            defaultValue=DEFAULT_LOO_POINTS,
            minValue=0,
        )
        loo_points.setHelp(
            self.tr(
                f"At most this many randomly chosen points are each predicted from their neighbours without "
                f"themselves (default {DEFAULT_LOO_POINTS}), for the leave-one-out statistics and the warning "
                "about the variance's honesty. More points: steadier statistics, a longer run (one more "
                "kriging system per point). 0 skips the cross-validation: its outputs are then empty."
            )
        )
        seed = QgsProcessingParameterNumber(
            self.SEED, self.tr("Random seed (variogram and cross-validation subsamples)"), defaultValue=0, minValue=0
        )
        seed.setHelp(
            self.tr(
                "Used only when there are more points than 'Points used to estimate the variogram' or 'Points "
                "cross-validated': it picks which of them are used. The same seed gives the same variogram and "
                "statistics again."
            )
        )
        for parameter in (fit_points, loo_points, seed):
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)

    def add_scheduler_parameter(self):
        scheduler = QgsProcessingParameterString(
            self.SCHEDULER, self.tr("Dask scheduler (empty: the provider's setting)"), optional=True
        )
        scheduler.setHelp(
            self.tr(
                "Where the grid is kriged, block by block: empty takes the provider's setting (Settings › Options › "
                "Processing › Providers › InSAR Subsidence Mapper › Dask scheduler), itself empty by default: this "
                "process. local:N starts N worker processes on this machine for the run; an address such as "
                "tcp://host:8786 uses a running Dask cluster (dask-jobqueue, dask-kubernetes, `dask scheduler`). "
                "The result is the same. Needs the Python packages dask and distributed, in QGIS and on the workers "
                "(with numpy and scipy; the plugin is sent to them). The variogram and the cross-validation stay "
                "in this process."
            )
        )
        scheduler.setFlags(scheduler.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(scheduler)

    def add_outputs(self, label, help_text, variance_label, variance_help):
        """The surface (required), its variance (optional, written by default), the report and the
        numbers every kriging run returns."""
        surface = QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr(label))
        surface.setHelp(self.tr(help_text))
        self.addParameter(surface)
        variance = QgsProcessingParameterRasterDestination(
            self.OUTPUT_VARIANCE, self.tr(variance_label), optional=True, createByDefault=True
        )
        variance.setHelp(self.tr(variance_help))
        self.addParameter(variance)
        report_file = self.report_destination(self.OUTPUT_REPORT)
        report_file.setHelp(
            self.tr(
                "An optional HTML page: the experimental and fitted variogram, the fitted parameters, the "
                "warnings, the points used and the leave-one-out statistics (mean error, RMSE, mean standardised "
                "error, close to 0, and mean squared standardised error, close to 1 when the variance is honest)."
            )
        )
        self.addParameter(report_file)
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
        statistics = self._cross_validate(parameters, context, kriging, feedback)
        cautions = warnings(fit, statistics)
        for caution in cautions:
            feedback.pushWarning(caution)
        return kriging, fit, statistics, cautions

    def _cross_validate(self, parameters, context, kriging, feedback):
        """Leave-one-out statistics on at most MAX_LOO_POINTS random points (None when 0)."""
        n = len(kriging.z)
        wanted = self.parameterAsInt(parameters, self.MAX_LOO_POINTS, context)
        if wanted == 0:
            feedback.pushInfo("Leave-one-out cross-validation skipped ('Points cross-validated' is 0).")
            return None
        sample = None
        if n > wanted:
            rng = np.random.default_rng(self.parameterAsInt(parameters, self.SEED, context))
            sample = np.sort(rng.choice(n, size=wanted, replace=False))
        statistics = cross_validation_statistics(*kriging.leave_one_out(sample))
        feedback.pushInfo(
            f"Leave-one-out on {n if sample is None else wanted} of {n} points: "
            + ", ".join(f"{name} {value:.4g}" for name, value in statistics.items())
            + " (MSE ≈ 0 and MSSE ≈ 1 when the kriging variance is honest)"
        )
        self.log_regularised(kriging.regularised_in_cross_validation, "points cross-validated", kriging, feedback)
        return statistics

    def log_regularised(self, count, what, kriging, feedback):
        """Warns when `count` predictions needed a raised nugget (core.kriging's guard)."""
        if count:
            feedback.pushWarning(
                f"{count} {what} were kriged with the nugget raised by up to {kriging.raised_nugget:.4g}: their "
                "neighbours include points so close together (near-duplicates, e.g. several scatterers in one "
                "resolution cell) that, with this nugget, the kriging system is nearly singular and the values "
                "would run far outside the data's range. Consider a larger nugget."
            )

    def finish(self, parameters, context, fit, statistics, cautions, title, points):
        """The numeric outputs, and the report when asked for; points: (what, count) rows."""
        results = {
            self.VARIOGRAM_PARAMETERS: json.dumps({"model": fit.variogram.model, **fit.variogram.as_pykrige_dict()}),
            self.NUGGET: fit.variogram.nugget,
            self.FIT_R2: fit.r_squared,
            self.N_POINTS: points[0][1],
            **{output: statistics[name] if statistics else float("nan") for name, output in self.LOO_OUTPUTS.items()},
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

    def _write_surfaces(self, kriging, grid, crs, names, outputs, feedback, scheduler="", adjust=None):
        """Kriges the grid by blocks of rows into the surface and, when the second of `outputs` is
        not empty, the variance (band names `names`), here or on the Dask `scheduler`;
        adjust(first row, stop row, values, variances), when given, returns what is written."""
        blocks = grid.row_blocks(BLOCK_CELLS)
        output, variance_output = outputs
        files = [(output, [names[0]])] + ([(variance_output, [names[1]])] if variance_output else [])
        with Float32Rasters(files, grid, crs) as rasters:

            def write(block, values, variances):
                if adjust is not None:
                    values, variances = adjust(*block, values, variances)
                rasters.write(0, block[0], values)
                if variance_output:
                    rasters.write(1, block[0], variances)

            if scheduler and kriging.is_global:
                feedback.pushInfo(
                    f"Global kriging runs in this process, not on {describe(scheduler)}: its one "
                    "system serves every cell."
                )
                scheduler = ""
            if scheduler:
                self._krige_on_cluster(kriging, grid, blocks, write, scheduler, feedback)
            else:
                for block in blocks:
                    if feedback.isCanceled():
                        raise QgsProcessingException(self.tr("Canceled: no output was written."))
                    write(block, *kriging.predict(*grid.centres(*block)))
                    feedback.setProgress(100 * block[1] / grid.height)
        self.log_regularised(kriging.regularised, f"of the {grid.width * grid.height} cells", kriging, feedback)

    def _krige_on_cluster(self, kriging, grid, blocks, write, scheduler, feedback):
        """The blocks kriged as Dask tasks, written here as they come back."""
        feedback.pushInfo(f"Kriging {len(blocks)} blocks of rows on {describe(scheduler)}.")

        def write_result(block, result):
            values, variances, regularised, raised = result
            kriging.add_regularised(regularised, raised)
            write(block, values, variances)

        try:
            with cluster(scheduler, KRIGING_PACKAGES, qgis_python()) as client:
                run_tiles(
                    client,
                    krige_block,
                    kriging.block_tasks(grid, blocks),
                    len(blocks),
                    write_result,
                    lambda fraction: feedback.setProgress(100 * fraction),
                    feedback.isCanceled,
                )
        except CanceledError as canceled:
            raise QgsProcessingException(self.tr("Canceled: no output was written.")) from canceled

    def scheduler(self, parameters, context):
        """The Dask scheduler of this run: the SCHEDULER parameter, else the provider's setting
        (empty: this process)."""
        given = self.parameterAsString(parameters, self.SCHEDULER, context).strip()
        return given or dask_scheduler_setting()

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
                + report.paragraph("MSE should be close to 0 and MSSE close to 1 when the kriging variance is honest.")
                if statistics
                else report.paragraph("Skipped ('Points cross-validated' is 0)."),
            ),
            ("Points", report.table(["", "count"], points)),
        ]
        with open(path, "w", encoding="utf-8") as file:
            file.write(report.page(title, sections))
