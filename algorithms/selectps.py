"""subsidence:selectps — PS candidates by amplitude dispersion over a stack of amplitude images."""

import numpy as np
from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from ..core.dispersion import MIN_IMAGES_ADVISED, dispersion, rows_per_block
from ..core.grid import Grid
from .base import SubsidenceAlgorithm
from .layers import Float32Rasters, open_raster, read_rows, remove_output


class SelectPs(SubsidenceAlgorithm):
    INPUT = "INPUT"
    THRESHOLD = "THRESHOLD"
    OUTPUT_DISPERSION = "OUTPUT_DISPERSION"
    OUTPUT = "OUTPUT"

    def name(self):
        return "selectps"

    def displayName(self):
        return self.tr("Select PS candidates (amplitude dispersion)")

    def group(self):
        return self.tr("PS points")

    def groupId(self):
        return "points"

    def tags(self):
        return self.tr("psinsar,amplitude dispersion,ps candidates,stable scatterers,sar,ferretti").split(",")

    def shortHelpString(self):
        return self.tr(
            "Computes the amplitude dispersion index D_A = σ_A / μ_A of every pixel over a stack of "
            "co-registered, calibrated SAR amplitude images (one band per acquisition: one multi-band "
            "raster, or several single-band rasters on the same grid), and returns the pixels with "
            "D_A below THRESHOLD (usual 0.2–0.4) as PS candidates at pixel centres.\n"
            "σ_A is the sample standard deviation (N − 1, as in StaMPS) over the images valid at the "
            "pixel (nodata and NaN are skipped); fewer than two valid images give nodata. With fewer than "
            f"{MIN_IMAGES_ADVISED} images D_A is a poor proxy for phase stability, and the log warns. The "
            "stack is read in row blocks, so it may be larger than memory.\n"
            "Units: D_A is dimensionless; mean_amplitude is in the images' amplitude units; points are in "
            "the stack's CRS."
        )

    def initAlgorithm(self, config=None):
        self.addParameter(
            QgsProcessingParameterMultipleLayers(self.INPUT, self.tr("Amplitude images"), QgsProcessing.TypeRaster)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.THRESHOLD, self.tr("Dispersion threshold"), QgsProcessingParameterNumber.Double, 0.25, minValue=0.0
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(self.OUTPUT_DISPERSION, self.tr("Amplitude dispersion"))
        )
        self.addParameter(
            QgsProcessingParameterFeatureSink(self.OUTPUT, self.tr("PS candidates"), QgsProcessing.TypeVectorPoint)
        )

    def processAlgorithm(self, parameters, context, feedback):
        layers = self.parameterAsLayerList(parameters, self.INPUT, context)
        datasets, grid = self._datasets(layers)
        images = sum(dataset.RasterCount for dataset in datasets)
        if images < 2:
            raise QgsProcessingException(self.tr("The amplitude dispersion needs at least two images (bands)."))
        if images < MIN_IMAGES_ADVISED:
            feedback.pushWarning(
                f"Only {images} images: with fewer than {MIN_IMAGES_ADVISED}, D_A says little about phase stability."
            )
        threshold = self.parameterAsDouble(parameters, self.THRESHOLD, context)
        crs = layers[0].crs()
        fields = QgsFields()
        fields.append(QgsField("dispersion", QVariant.Double))
        fields.append(QgsField("mean_amplitude", QVariant.Double))
        sink, destination = self.parameterAsSink(parameters, self.OUTPUT, context, fields, QgsWkbTypes.Point, crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT_DISPERSION, context)
        try:
            found = self._stream(datasets, images, grid, crs, threshold, output, sink, feedback)
        except Exception:
            del sink  # closes the file, so that it can be removed
            remove_output(destination)
            raise
        feedback.pushInfo(
            f"{found} PS candidates with D_A < {threshold} among {grid.width * grid.height} pixels, {images} images."
        )
        return {self.OUTPUT_DISPERSION: output, self.OUTPUT: destination}

    def _datasets(self, layers):
        """The layers' GDAL datasets, checked to share the first one's grid, and that grid."""
        datasets = []
        reference = None
        for layer in layers:
            dataset = open_raster(layer.source(), "the image")
            shape = (dataset.RasterXSize, dataset.RasterYSize, dataset.GetGeoTransform())
            if reference is None:
                reference = shape
            elif shape[:2] != reference[:2] or not np.allclose(shape[2], reference[2]):
                raise QgsProcessingException(
                    self.tr(
                        f"{layer.name()} is not on the first image's grid ({shape[0]} x {shape[1]}, {shape[2]} "
                        f"against {reference[0]} x {reference[1]}, {reference[2]}): co-register the images first."
                    )
                )
            datasets.append(dataset)
        width, height, (left, pixel_width, row_rotation, top, column_rotation, pixel_height) = reference
        if row_rotation or column_rotation or pixel_height >= 0:
            raise QgsProcessingException(self.tr("The images must be north-up (no rotation): warp them first."))
        return datasets, Grid(left, top, pixel_width, -pixel_height, width, height)

    def _stream(self, datasets, images, grid, crs, threshold, output, sink, feedback):
        found = 0
        rows = rows_per_block(images, grid.width)
        with Float32Rasters([(output, ["amplitude dispersion"])], grid, crs) as rasters:
            for row in range(0, grid.height, rows):
                if feedback.isCanceled():
                    raise QgsProcessingException(self.tr("Canceled: no output was written."))
                count = min(rows, grid.height - row)
                stack = np.concatenate([read_rows(dataset, row, count) for dataset in datasets])
                values, mean = dispersion(stack)
                rasters.write(0, row, values)
                block_rows, columns = np.nonzero(values < threshold)
                x = grid.left + (columns + 0.5) * grid.pixel_width
                y = grid.top - (row + block_rows + 0.5) * grid.pixel_height
                for px, py, d, m in zip(x, y, values[block_rows, columns], mean[block_rows, columns]):
                    feature = QgsFeature()
                    feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(px, py)))
                    feature.setAttributes([float(d), float(m)])
                    sink.addFeature(feature, QgsFeatureSink.FastInsert)
                found += len(x)
                feedback.setProgress(100 * (row + count) / grid.height)
        return found
