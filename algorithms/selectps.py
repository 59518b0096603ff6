"""subsidence:selectps — PS candidates by amplitude dispersion over a stack of amplitude images."""

import numpy as np
from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
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

from ..core.dispersion import MIN_IMAGES_ADVISED, dispersion, rows_per_block
from ..core.grid import Grid
from .base import SubsidenceAlgorithm
from .layers import Float32Rasters, check_raster, new_fields, open_raster, read_rows, remove_output


class SelectPs(SubsidenceAlgorithm):
    INPUT = "INPUT"
    THRESHOLD = "THRESHOLD"
    OUTPUT_DISPERSION = "OUTPUT_DISPERSION"
    OUTPUT = "OUTPUT"
    GROUP = "inputs"
    HELP_SECTION = "PS import"
    SHORT_DESCRIPTION = "PS candidates from a stack of SAR amplitude images: pixels of low amplitude dispersion"

    def name(self):
        return "selectps"

    def displayName(self):
        return self.tr("Select PS candidates (amplitude dispersion)")

    def tags(self):
        return self.tr("psinsar,amplitude dispersion,ps candidates,stable scatterers,sar,ferretti").split(",")

    def shortHelpString(self):
        return self.tr(
            "Finds persistent-scatterer candidates in a stack of co-registered, calibrated SAR amplitude images: "
            "the pixels whose amplitude varies little over time, i.e. whose amplitude dispersion D = σ/μ (the "
            "standard deviation of the amplitude over its mean) is below the threshold.\n"
            "Writes the candidates as points at the pixel centres, with their dispersion and mean amplitude, and "
            "the dispersion raster (optional), to judge the threshold by. The stack is read in blocks of rows, so "
            "it may be larger than memory.\n"
            "Units: the dispersion is dimensionless; the mean amplitude is in the images' units; the points are in "
            "the stack's CRS.\n"
            "Method: the amplitude dispersion index of Ferretti, Prati and Rocca (2001, IEEE TGRS 39(1)), with the "
            "sample standard deviation (N − 1, as StaMPS) over the images valid at each pixel."
        )

    def initAlgorithm(self, config=None):
        images = QgsProcessingParameterMultipleLayers(self.INPUT, self.tr("Amplitude images"), QgsProcessing.TypeRaster)
        images.setHelp(
            self.tr(
                "One band per acquisition: one multi-band raster, or several single-band rasters on the same grid "
                "(co-registered, north-up). Nodata and NaN pixels are skipped; a pixel needs two valid images. "
                "With fewer than {} images the dispersion says little about phase stability, and the log warns."
            ).format(MIN_IMAGES_ADVISED)
        )
        self.addParameter(images)
        threshold = QgsProcessingParameterNumber(
            self.THRESHOLD, self.tr("Dispersion threshold"), QgsProcessingParameterNumber.Double, 0.25, minValue=0.0
        )
        threshold.setHelp(
            self.tr(
                "Pixels with an amplitude dispersion below this value become candidates. Usual values are 0.2 to "
                "0.4 (default 0.25): lower keeps fewer, more stable pixels."
            )
        )
        threshold.setMetadata({"widget_wrapper": {"decimals": 2}})
        self.addParameter(threshold)
        dispersion_raster = QgsProcessingParameterRasterDestination(
            self.OUTPUT_DISPERSION, self.tr("Amplitude dispersion"), optional=True, createByDefault=True
        )
        dispersion_raster.setHelp(
            self.tr(
                "The amplitude dispersion of every pixel (float32, on the stack's grid; nodata where fewer than two "
                "images are valid): its histogram shows where to set the threshold. Optional."
            )
        )
        self.addParameter(dispersion_raster)
        candidates = QgsProcessingParameterFeatureSink(
            self.OUTPUT, self.tr("PS candidates"), QgsProcessing.TypeVectorPoint
        )
        candidates.setHelp(
            self.tr("The candidates as points at the pixel centres, with the fields dispersion and mean_amplitude.")
        )
        self.addParameter(candidates)

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
        fields = new_fields([("dispersion", "double"), ("mean_amplitude", "double")])
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
        results = {self.OUTPUT: destination}
        if output:
            results[self.OUTPUT_DISPERSION] = output
        return results

    def _datasets(self, layers):
        """The layers' GDAL datasets, checked to share the first one's grid, and that grid."""
        datasets = []
        reference = None
        for layer in layers:
            check_raster(layer, "the image")
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
        files = [(output, ["amplitude dispersion"])] if output else []  # the raster only when asked for
        with Float32Rasters(files, grid, crs) as rasters:
            for row in range(0, grid.height, rows):
                if feedback.isCanceled():
                    raise QgsProcessingException(self.tr("Canceled: no output was written."))
                count = min(rows, grid.height - row)
                stack = np.concatenate([read_rows(dataset, row, count) for dataset in datasets])
                values, mean = dispersion(stack)
                if output:
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
