"""subsidence:distance — exact Euclidean distance from each cell centre to the nearest feature."""

import numpy as np
from qgis.core import (
    QgsCoordinateTransform,
    QgsCsException,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsWkbTypes,
)

from ..core import distance
from .base import SubsidenceAlgorithm
from .layers import Float32Rasters, check_area_of_use, check_raster, grid_of_raster, polygon_cells

BLOCK_CELLS = 262_144  # cells computed between progress reports and cancel checks


class Distance(SubsidenceAlgorithm):
    INPUT = "INPUT"
    REFERENCE = "REFERENCE"
    OUTPUT = "OUTPUT"
    GROUP = "drivers"
    HELP_SECTION = "Algorithms"
    SHORT_DESCRIPTION = "Exact distance from each cell to the nearest well, river, fault or area, on a reference grid"

    def name(self):
        return "distance"

    def displayName(self):
        return self.tr("Distance to features")

    def tags(self):
        return self.tr("distance,proximity,wells,rivers,faults,euclidean,driver").split(",")

    def shortHelpString(self):
        return self.tr(
            "Computes a raster of the distance from each cell centre to the nearest feature of a layer: pumping "
            "wells (points), rivers or faults (lines), or areas (polygons, 0 inside them). The raster is on the "
            "reference grid (its extent, cell size and CRS), so it stacks with the other drivers.\n"
            "Units: map units of the reference grid's CRS, metres for a projected CRS; use a projected grid (the "
            "log warns when it is geographic).\n"
            "Method: exact Euclidean distance to the points and segments in the grid's CRS (features reprojected "
            "vertex by vertex, curves segmentised), not to a rasterised copy of them."
        )

    def initAlgorithm(self, config=None):
        features = QgsProcessingParameterFeatureSource(
            self.INPUT, self.tr("Features"), [QgsProcessing.TypeVectorAnyGeometry]
        )
        features.setHelp(
            self.tr(
                "The features to measure the distance to: points (wells), lines (rivers, faults) or polygons "
                "(inside which the distance is 0), in any CRS. Features without a geometry are skipped."
            )
        )
        self.addParameter(features)
        reference = QgsProcessingParameterRasterLayer(self.REFERENCE, self.tr("Reference grid"))
        reference.setHelp(
            self.tr(
                "A raster whose grid the distance raster takes: extent, cell size and CRS (its values are not "
                "used). Usually the DEM, or the grid of the other drivers."
            )
        )
        self.addParameter(reference)
        output = QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Distance"))
        output.setHelp(self.tr("The distance to the nearest feature at each cell centre (float32, map units)."))
        self.addParameter(output)

    def processAlgorithm(self, parameters, context, feedback):
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        check_area_of_use(source.sourceCrs(), source.sourceExtent(), source.sourceName())
        reference = self.parameterAsRasterLayer(parameters, self.REFERENCE, context)
        check_raster(reference, "the reference grid", cells=False)
        grid, crs = grid_of_raster(reference), reference.crs()
        if crs.isGeographic():
            feedback.pushWarning("The grid's CRS is geographic: distances will be in degrees, not metres.")
        points, starts, ends, polygons = self._features(
            source, QgsCoordinateTransform(source.sourceCrs(), crs, context.transformContext())
        )
        if not (len(points) or len(starts)):
            raise QgsProcessingException(
                self.tr(
                    f"'{source.sourceName()}' has no feature with a geometry: there is nothing to measure from. "
                    "Choose the layer of the wells, rivers or faults."
                )
            )
        inside = polygon_cells(polygons, grid, crs.toWkt()) if polygons else None
        piece = max(grid.pixel_width, grid.pixel_height)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        with Float32Rasters([(output, [f"distance to {source.sourceName()}"])], grid, crs) as raster:
            for row, stop in grid.row_blocks(BLOCK_CELLS):
                if feedback.isCanceled():
                    raise QgsProcessingException(self.tr("Canceled: no output was written."))
                x, y = grid.centres(row, stop)
                targets = np.column_stack([x.ravel(), y.ravel()])
                nearest = np.full(len(targets), np.inf)
                if len(points):
                    nearest = np.minimum(nearest, distance.to_points(points, targets))
                if len(starts):
                    nearest = np.minimum(nearest, distance.to_segments(starts, ends, targets, piece))
                block = nearest.reshape(x.shape)
                if inside is not None:
                    block[inside[row:stop]] = 0.0
                raster.write(0, row, block)
                feedback.setProgress(100 * stop / grid.height)
        return {self.OUTPUT: output}

    def _features(self, source, transform):
        """Points (M, 2), segment starts and ends (K, 2) and polygon WKBs, in the grid's CRS."""
        points, starts, ends, polygons = [], [], [], []
        for feature in source.getFeatures():
            geometry = QgsGeometry(feature.geometry())
            if geometry.isEmpty():
                continue
            try:
                geometry.transform(transform)
            except QgsCsException as error:
                raise QgsProcessingException(
                    f"Feature {feature.id()} cannot be reprojected to the grid's CRS: {error}"
                ) from error
            if QgsWkbTypes.isCurvedType(geometry.wkbType()):
                geometry = QgsGeometry(geometry.constGet().segmentize())
            kind = geometry.type()
            if kind == QgsWkbTypes.PointGeometry:
                points += [(p.x(), p.y()) for p in geometry.constParts()]
                continue
            if kind == QgsWkbTypes.PolygonGeometry:
                polygons.append(geometry.asWkb())
                polygons_of = geometry.asMultiPolygon() if geometry.isMultipart() else [geometry.asPolygon()]
                lines = [ring for polygon in polygons_of for ring in polygon]
            else:
                lines = geometry.asMultiPolyline() if geometry.isMultipart() else [geometry.asPolyline()]
            for line in lines:
                vertices = np.array([(v.x(), v.y()) for v in line])
                starts.append(vertices[:-1])
                ends.append(vertices[1:])
        to_array = lambda chunks: np.concatenate(chunks) if chunks else np.empty((0, 2))
        return np.array(points, float).reshape(-1, 2), to_array(starts), to_array(ends), polygons
