"""subsidence:krigeresiduals — a surface plus the ordinary kriging of its residuals at the points (the hybrid)."""

import numpy as np
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsPointXY,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterLayer,
)

from ..core.errors import InputError
from ..core.kriging import check_points, merge_coincident
from ..core.patches import TRAIN, pixel_indices
from .base import read_dataset
from .kriging_base import BLOCK_CELLS, KrigingAlgorithm
from .layers import (
    check_raster,
    crs_from_text,
    grid_of_raster,
    open_raster,
    point_values,
    read_band,
    refuse_geographic,
    whole_ogr_layer,
)
from .styles import style_raster

NAMED = 10  # points named in the log when some lie outside the surface


class KrigeResiduals(KrigingAlgorithm):
    SURFACE = "SURFACE"
    SURFACE_UNCERTAINTY = "SURFACE_UNCERTAINTY"
    DATASET = "DATASET"
    N_LEFT_OUT = "N_LEFT_OUT"

    def name(self):
        return "krigeresiduals"

    def displayName(self):
        return self.tr("Krige the residuals of a surface (hybrid)")

    def tags(self):
        return self.tr("hybrid,residual kriging,regression kriging,kriging,cnn,correction,variance,ps,insar").split(",")

    SHORT_DESCRIPTION = "The hybrid map: a surface (e.g. the CNN's) plus the kriging of its residuals at the points"
    HELP_SECTION = "The hybrid map and the final map"

    def shortHelpString(self):
        return self.tr(
            "Corrects a predicted surface (e.g. the CNN's, from 'Predict the surface') with what the points say "
            "it misses: the residual at each point, its value minus the surface's in its cell, is kriged onto "
            "the surface's grid and added to the surface. Where the points agree with the surface nothing "
            "changes; near points it misses the map is pulled towards them.\n"
            "Out come the corrected surface (the hybrid map), its variance (by default) and, optionally, the "
            "report of 'Ordinary kriging'. Give the model's training dataset, so that only the points the model "
            "did not learn from are kriged.\n"
            "Units: the surface's and the field's (they must agree); the variance in those units squared.\n"
            "Method: residual kriging, as in regression kriging (Hengl et al. 2007): ordinary kriging of the "
            "residuals, their variogram fitted as in 'Ordinary kriging'."
        )

    def initAlgorithm(self, config=None):
        surface = QgsProcessingParameterRasterLayer(self.SURFACE, self.tr("Surface to correct"))
        surface.setHelp(
            self.tr(
                "The predicted surface to correct, e.g. the one 'Predict the surface' wrote. The outputs take its grid "
                "and CRS, which must be projected (metres); its nodata cells stay nodata."
            )
        )
        points = QgsProcessingParameterFeatureSource(self.POINTS, self.tr("Points"), [QgsProcessing.TypeVectorPoint])
        points.setHelp(
            self.tr(
                "The points whose values correct the surface, e.g. the PS points, in any CRS: they are reprojected "
                "to the surface's. Points outside the surface or on its nodata are skipped and counted (the first "
                "ten named in the log); points at the same location are merged."
            )
        )
        field = QgsProcessingParameterField(
            self.FIELD, self.tr("Value field"), None, self.POINTS, QgsProcessingParameterField.Numeric
        )
        field.setHelp(
            self.tr(
                "The numeric field of the points, in the surface's units (e.g. displacement in mm for a surface in mm)."
            )
        )
        uncertainty = QgsProcessingParameterRasterLayer(
            self.SURFACE_UNCERTAINTY,
            self.tr("Surface's uncertainty (σ; optional, added to the variance)"),
            optional=True,
        )
        uncertainty.setHelp(
            self.tr(
                "The surface's standard deviation σ on its grid, e.g. the uncertainty 'Predict the surface' wrote "
                "with it. Its square is added to the residuals' kriging variance (taken as independent): the "
                "cautious choice where the surface's error varies in ways one variogram cannot see, such as "
                "outside the model's area of applicability. Empty: the variance is the kriging variance alone."
            )
        )
        dataset = QgsProcessingParameterFile(
            self.DATASET,
            self.tr("Training dataset of the surface's model (its training points are left out)"),
            extension="npz",
            optional=True,
        )
        dataset.setHelp(
            self.tr(
                "The dataset (.npz) the surface's model was trained on. A network reproduces its training points "
                "almost exactly: their residuals are near zero and would make the correction and its variance too "
                "small. The points in the cells of its training points are left out, so only those the model did "
                "not learn from (its validation and test points, any other) are kriged. For the final map give the "
                "split model's dataset: all its validation and test points are kriged (a model refitted on every "
                "point has no out-of-sample residual left). Empty: every point is kriged, right for a surface not "
                "fitted to these points; the log warns."
            )
        )
        for parameter in (surface, points, field, uncertainty, dataset):
            self.addParameter(parameter)
        self.add_variogram_parameters()
        self.add_scheduler_parameter()
        self.add_outputs(
            "Corrected surface",
            "The surface plus the kriged residuals, on the surface's grid, in its units (the hybrid map).",
            "Variance of the corrected surface",
            "The residuals' kriging variance, plus the square of the surface's uncertainty where that is given, "
            "in the field's units squared. Written by default; skip it when only the map is needed.",
        )
        self.addOutput(QgsProcessingOutputNumber(self.N_LEFT_OUT, self.tr("Points left out as training points")))

    def _krige(self, parameters, context, feedback):
        steps = QgsProcessingMultiStepFeedback(4, feedback)
        surface = self.parameterAsRasterLayer(parameters, self.SURFACE, context)
        check_raster(surface, "the surface")
        grid, crs = grid_of_raster(surface), QgsCoordinateReferenceSystem(surface.crs())
        refuse_geographic(crs, "The surface", *grid.centre)
        uncertainty = self.parameterAsRasterLayer(parameters, self.SURFACE_UNCERTAINTY, context)
        check_raster(uncertainty, "the surface's uncertainty")
        if uncertainty is not None and (grid_of_raster(uncertainty) != grid or uncertainty.crs() != surface.crs()):
            raise QgsProcessingException(
                self.tr(
                    "SURFACE_UNCERTAINTY is not on the surface's grid: give the uncertainty written with the surface."
                )
            )
        source = self.parameterAsSource(parameters, self.POINTS, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.POINTS))
        field = self.parameterAsString(parameters, self.FIELD, context)

        whole_file = whole_ogr_layer(self, parameters, self.POINTS, context)
        x, y, z, ids, _, skipped = point_values(source, field, crs, context, steps, ogr_layer=whole_file)
        surface_file = open_raster(surface.source(), "the surface")
        row, column = pixel_indices(grid, x, y)
        at_points = _values_at(surface_file.GetRasterBand(1), row, column, grid)
        outside = ~np.isfinite(at_points)
        if outside.any():
            named = ", ".join(f"feature {ids[index]}" for index in np.flatnonzero(outside)[:NAMED])
            more = " …" if outside.sum() > NAMED else ""
            feedback.pushWarning(
                self.tr(
                    f"{int(outside.sum())} of {len(z)} points lie outside the surface or on its nodata "
                    f"and are skipped: {named}{more}."
                )
            )
            skipped["outside the surface or on its nodata"] = int(outside.sum())
        learnt = self._training_cells(parameters, context, grid, crs, row, column)
        if learnt is None:
            feedback.pushWarning(
                self.tr(
                    "No DATASET: every point's residual is kriged. If the surface comes from a model trained "
                    "on these points, its residuals at its training points are near zero, and the correction "
                    "and its variance come out too small: give the model's training dataset."
                )
            )
            learnt = np.zeros(len(z), bool)
        left_out = int((learnt & ~outside).sum())
        kept = ~outside & ~learnt
        x, y, residuals, merged = merge_coincident(x[kept], y[kept], z[kept] - at_points[kept])
        mean_residual = np.mean(residuals) if len(residuals) else float("nan")
        feedback.pushInfo(
            self.tr(
                f"{len(z)} points with a value in '{field}': {int(outside.sum())} outside the surface, "
                f"{left_out} left out as training points, {int(kept.sum())} residuals kriged "
                f"({merged} merged into coincident ones); mean residual {mean_residual:.4g}."
            )
        )
        try:
            check_points(x, y, residuals)
        except InputError as error:
            raise QgsProcessingException(
                f"{error} ({left_out} points were left out as training points, "
                f"{int(outside.sum())} lie outside the surface.)"
            ) from None

        steps.setCurrentStep(1)
        kriging, fit, statistics, cautions = self.fit_kriging(parameters, context, feedback, x, y, residuals)

        steps.setCurrentStep(3)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        variance_output = self.parameterAsOutputLayer(parameters, self.OUTPUT_VARIANCE, context)
        # The uncertainty only enters the variance: not read when the variance is not written.
        uncertainty_file = (
            None if uncertainty is None or not variance_output else open_raster(uncertainty.source(), "the uncertainty")
        )
        outputs = (output, variance_output)
        scheduler = self.scheduler(parameters, context)
        self._write_corrected(kriging, grid, crs, field, surface_file, uncertainty_file, outputs, steps, scheduler)
        style_raster(output)
        results = {self.OUTPUT: output}
        if variance_output:  # optional: written only when asked for
            style_raster(variance_output, sequential=True)
            results[self.OUTPUT_VARIANCE] = variance_output
        points = [
            ("residuals kriged", len(residuals)),
            ("left out as training points", left_out),
            ("merged into coincident points", merged),
            *[(f"skipped: {k}", v) for k, v in skipped.items()],
        ]
        return {
            **results,
            self.N_LEFT_OUT: left_out,
            **self.finish(
                parameters,
                context,
                fit,
                statistics,
                cautions,
                f"Kriged residuals of {field} about {surface.name()}",
                points,
            ),
        }

    def _training_cells(self, parameters, context, grid, crs, row, column):
        """True for the points in a cell of one of DATASET's training points; None without DATASET."""
        path = self.parameterAsFile(parameters, self.DATASET, context)
        if not path:
            return None
        data = read_dataset(path)
        train = data["split"] == TRAIN
        x, y = data["x"][train], data["y"][train]
        dataset_crs = crs_from_text(str(data["crs"]))
        if dataset_crs.isValid() and dataset_crs != crs:
            transform = QgsCoordinateTransform(dataset_crs, crs, context.transformContext())
            try:
                moved = [transform.transform(QgsPointXY(a, b)) for a, b in zip(x, y)]
            except QgsCsException as error:
                raise QgsProcessingException(
                    f"The dataset's points cannot be transformed to the surface's CRS: {error}"
                ) from None
            x, y = np.array([point.x() for point in moved]), np.array([point.y() for point in moved])
        train_row, train_column = pixel_indices(grid, x, y)
        cells = set(zip(train_row.tolist(), train_column.tolist()))
        return np.array([cell in cells for cell in zip(row.tolist(), column.tolist())], bool)

    def _write_corrected(self, kriging, grid, crs, field, surface, uncertainty, outputs, feedback, scheduler):
        def corrected(row, stop, corrections, variances):
            values = read_band(surface.GetRasterBand(1), 0, row, grid.width, stop - row).astype(float)
            if uncertainty is not None:
                variances = (
                    variances
                    + read_band(uncertainty.GetRasterBand(1), 0, row, grid.width, stop - row).astype(float) ** 2
                )
            return values + corrections, np.where(np.isfinite(values), variances, np.nan)

        names = [f"surface + kriged residuals of {field}", f"variance of the corrected {field}"]
        self._write_surfaces(kriging, grid, crs, names, outputs, feedback, scheduler, adjust=corrected)


def _values_at(band, row, column, grid):
    """The band's values in the given cells (NaN outside the grid and on nodata), read by row
    blocks so that memory stays bounded."""
    inside = (row >= 0) & (row < grid.height) & (column >= 0) & (column < grid.width)
    values = np.full(len(row), np.nan)
    rows_per_block = max(1, BLOCK_CELLS // grid.width)
    for first in range(0, grid.height, rows_per_block):
        chosen = np.flatnonzero(inside & (row >= first) & (row < first + rows_per_block))
        if len(chosen):
            block = read_band(band, 0, first, grid.width, min(rows_per_block, grid.height - first))
            values[chosen] = block[row[chosen] - first, column[chosen]]
    return values
