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
    QgsProcessingParameterRasterLayer,
)

from ..core.grid import DEFAULT_SIDE, MARGIN, Grid
from ..core.kriging import check_points, merge_coincident
from .kriging_base import KrigingAlgorithm
from .layers import WARP, check_raster, grid_of_raster, point_values, refuse_geographic, whole_ogr_layer
from .styles import style_raster

# Without a reference grid the grid CRS is a parameter: the fix is to set it.
SET_GRID_CRS = f"set 'Grid CRS' to {{crs}}, or give a reference grid in it (reproject a raster with {WARP})"


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

    SHORT_DESCRIPTION = "Ordinary kriging of a point field (e.g. PS displacement) onto a grid, with its variance"

    def shortHelpString(self):
        return self.tr(
            "Interpolates a numeric field of points (e.g. PS displacement or velocity) onto a grid by ordinary "
            "kriging: the geostatistical baseline the CNN surface is compared with.\n"
            "Out come the kriged surface, its kriging variance (by default) and, optionally, an HTML report. "
            "The log gives the fitted variogram and a leave-one-out cross-validation, and warns when the nugget "
            "dominates, the range lies beyond the fitted distances, the model fits poorly or the variance "
            "misstates the errors.\n"
            "The grid is the reference grid's, or an extent and a pixel size in a projected CRS (metres).\n"
            "Units: the surface in the field's units (mm, mm/yr), the variance in those units squared; "
            "distances in the grid CRS's map units.\n"
            "Method: ordinary kriging as in PyKrige, the variogram fitted by weighted least squares "
            "(Cressie 1985), leave-one-out in closed form (Dubrule 1983)."
        )

    def initAlgorithm(self, config=None):
        points = QgsProcessingParameterFeatureSource(self.POINTS, self.tr("Points"), [QgsProcessing.TypeVectorPoint])
        points.setHelp(
            self.tr(
                "The points to interpolate, e.g. from 'Import PS points', in any CRS: they are reprojected to the "
                "grid's. Points at the same location are merged into their mean; points without geometry are "
                "skipped and counted in the log."
            )
        )
        field = QgsProcessingParameterField(
            self.FIELD, self.tr("Value field"), None, self.POINTS, QgsProcessingParameterField.Numeric
        )
        field.setHelp(
            self.tr(
                "The numeric field to krige, e.g. displacement (mm) or velocity (mm/yr). Points without a value "
                "are skipped and counted."
            )
        )
        reference = QgsProcessingParameterRasterLayer(self.REFERENCE, self.tr("Reference grid"), optional=True)
        reference.setHelp(
            self.tr(
                "A raster whose grid (extent, pixel size and CRS) the outputs take, e.g. the driver stack, so that "
                "the kriged map lines up cell for cell with the CNN surface. Its CRS must be projected. When "
                "given, the extent, pixel size and grid CRS below are not used."
            )
        )
        extent = QgsProcessingParameterExtent(self.EXTENT, self.tr("Extent (without reference grid)"), optional=True)
        extent.setHelp(
            self.tr(
                f"Without a reference grid: the area to krige. Empty: the points' extent plus {MARGIN:.0%} of its "
                "longer side on every side."
            )
        )
        pixel_size = QgsProcessingParameterNumber(
            self.PIXEL_SIZE,
            self.tr("Pixel size (without reference grid; map units)"),
            QgsProcessingParameterNumber.Double,
            optional=True,
            minValue=0.0,
        )
        pixel_size.setHelp(
            self.tr(
                "Without a reference grid: the side of a cell in the grid CRS's map units (metres), e.g. 100. "
                f"Empty: a round size (1, 2 or 5 × 10ⁿ) that gives at most {DEFAULT_SIDE} cells along the longer "
                "side. The time taken grows with the number of cells."
            )
        )
        pixel_size.setMetadata({"widget_wrapper": {"decimals": 2}})
        crs = QgsProcessingParameterCrs(
            self.CRS, self.tr("Grid CRS (without reference grid; default: the points')"), optional=True
        )
        crs.setHelp(
            self.tr(
                "Without a reference grid: the grid's CRS; empty takes the points' CRS. It must be projected "
                "(metres, e.g. the UTM zone): in a geographic CRS (degrees) distances are not the same in every "
                "direction, and the run is refused."
            )
        )
        for parameter in (points, field, reference, extent, pixel_size, crs):
            self.addParameter(parameter)
        self.add_variogram_parameters()
        self.add_scheduler_parameter()
        self.add_outputs(
            "Kriged surface",
            "The kriged value at every cell centre, in the field's units (Float32 GeoTIFF, styled).",
            "Kriging variance",
            "The kriging variance of every cell, in the field's units squared (its square root is the "
            "standard deviation σ). Written by default; skip it when only the surface is needed.",
        )

    def _krige(self, parameters, context, feedback):
        steps = QgsProcessingMultiStepFeedback(4, feedback)
        source = self.parameterAsSource(parameters, self.POINTS, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.POINTS))
        field = self.parameterAsString(parameters, self.FIELD, context)
        grid, crs = self._grid(parameters, context, source, feedback)

        whole_file = whole_ogr_layer(self, parameters, self.POINTS, context)
        x, y, z, _, _, skipped = point_values(source, field, crs, context, steps, ogr_layer=whole_file)
        x, y, z, merged = merge_coincident(x, y, z)
        feedback.pushInfo(
            f"{len(z) + merged} points read from '{field}'; {merged} merged into coincident ones; "
            + ", ".join(f"{count} skipped ({reason})" for reason, count in skipped.items())
        )
        check_points(x, y, z)
        if grid is None:
            grid = self._grid_around(parameters, context, x, y, feedback)

        steps.setCurrentStep(1)
        kriging, fit, statistics, cautions = self.fit_kriging(parameters, context, feedback, x, y, z)

        steps.setCurrentStep(3)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        variance_output = self.parameterAsOutputLayer(parameters, self.OUTPUT_VARIANCE, context)
        names = [f"kriged {field}", f"kriging variance of {field}"]
        scheduler = self.scheduler(parameters, context)
        self._write_surfaces(kriging, grid, crs, names, (output, variance_output), steps, scheduler)
        style_raster(output)
        results = {self.OUTPUT: output}
        if variance_output:  # optional: written only when asked for
            style_raster(variance_output, sequential=True)
            results[self.OUTPUT_VARIANCE] = variance_output
        points = [
            ("kriged", len(z)),
            ("merged into coincident points", merged),
            *[(f"skipped: {k}", v) for k, v in skipped.items()],
        ]
        return {
            **results,
            **self.finish(parameters, context, fit, statistics, cautions, f"Ordinary kriging of {field}", points),
        }

    def _grid(self, parameters, context, source, feedback):
        reference = self.parameterAsRasterLayer(parameters, self.REFERENCE, context)
        if reference is not None:
            check_raster(reference, "the reference grid", cells=False)
            grid, crs = grid_of_raster(reference), reference.crs()
            self._check_crs(crs)
            refuse_geographic(crs, "The reference grid", *grid.centre)
            return grid, QgsCoordinateReferenceSystem(crs)
        crs = self.parameterAsCrs(parameters, self.CRS, context)
        if not crs.isValid():
            crs = source.sourceCrs()
        self._check_crs(crs)
        if parameters.get(self.EXTENT) in (None, ""):
            centre = source.sourceExtent().center()  # near enough to name a UTM zone
            refuse_geographic(crs, "The grid", centre.x(), centre.y(), fix=SET_GRID_CRS)
            return None, QgsCoordinateReferenceSystem(crs)  # drawn around the points once they are read
        extent = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
        # Refused before the grid is drawn: a pixel size in metres makes no sense in degrees.
        refuse_geographic(crs, "The grid", extent.center().x(), extent.center().y(), fix=SET_GRID_CRS)
        pixel_size = self._pixel_size(parameters, context)
        grid = Grid.from_extent(extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum(), pixel_size)
        self._log_grid(grid, "the extent given", pixel_size, feedback)
        return grid, QgsCoordinateReferenceSystem(crs)

    def _pixel_size(self, parameters, context):
        """PIXEL_SIZE, or None for core.grid's round default."""
        if parameters.get(self.PIXEL_SIZE) in (None, ""):
            return None
        return self.parameterAsDouble(parameters, self.PIXEL_SIZE, context)

    def _grid_around(self, parameters, context, x, y, feedback):
        pixel_size = self._pixel_size(parameters, context)
        grid = Grid.around(x, y, pixel_size)
        where = f"the points' extent plus {MARGIN:.0%} of its longer side on every side"
        self._log_grid(grid, where, pixel_size, feedback)
        return grid

    def _log_grid(self, grid, where, pixel_size, feedback):
        """The grid drawn, in the log; pixel_size None: the round size core.grid chose."""
        feedback.pushInfo(
            f"Grid: {where}, {grid.width} x {grid.height} cells of {grid.pixel_width:g} map units"
            + (f" (a round size for at most {DEFAULT_SIDE} cells along the longer side)" if pixel_size is None else "")
        )

    def _check_crs(self, crs):
        if not crs.isValid():
            raise QgsProcessingException(self.tr("The grid has no CRS: set the reference grid's CRS, or CRS."))
