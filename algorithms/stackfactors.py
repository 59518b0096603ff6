"""subsidence:stackfactors — driver rasters warped onto one grid as a named multi-band GeoTIFF."""

import numpy as np
from osgeo import gdal
from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .base import SubsidenceAlgorithm
from .layers import Float32Rasters, grid_of_raster

MAX_CLASSES = 50  # a categorical layer with more classes is almost surely continuous


class StackFactors(SubsidenceAlgorithm):
    INPUTS = "INPUTS"
    REFERENCE = "REFERENCE"
    CATEGORICAL = "CATEGORICAL"
    OUTPUT = "OUTPUT"

    def name(self):
        return "stackfactors"

    def displayName(self):  # noqa: N802
        return self.tr("Stack driver rasters")

    def group(self):
        return self.tr("Driving factors")

    def groupId(self):  # noqa: N802
        return "drivers"

    def tags(self):
        return self.tr("stack,drivers,factors,align,resample,warp,one-hot,categorical,land use").split(",")

    def shortHelpString(self):  # noqa: N802
        return self.tr(
            "Warps every driver raster (DEM products, NDVI, distances, land use, water-table change …) onto "
            "the REFERENCE grid (default: the first input) and writes them as one float32 multi-band GeoTIFF "
            "whose band descriptions are the driver names, with one common nodata value.\n"
            "Continuous layers are resampled bilinearly; layers listed in CATEGORICAL too are resampled by "
            "nearest neighbour and expanded into one 0/1 band per class, named '<layer>=<class>'. Layers in "
            "another CRS are reprojected. A band is named after its layer (and '_b<n>' for the bands of a "
            "multi-band layer). Bands are sorted by name, so the stack does not depend on the order of the "
            "inputs; names must be unique.\n"
            "Units: each band keeps its layer's units (one-hot bands are 0/1); the grid is the reference's."
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers(self.INPUTS, self.tr("Driver rasters"), QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterRasterLayer(self.REFERENCE, self.tr("Reference grid (default: first driver)"), optional=True))
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                self.CATEGORICAL, self.tr("Categorical drivers (among the drivers)"), QgsProcessing.TypeRaster, optional=True
            )
        )
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Driver stack")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layers = self.parameterAsLayerList(parameters, self.INPUTS, context)
        if not layers:
            raise QgsProcessingException(self.tr("Give at least one driver raster."))
        reference = self.parameterAsRasterLayer(parameters, self.REFERENCE, context) or layers[0]
        categorical = {layer.source() for layer in self.parameterAsLayerList(parameters, self.CATEGORICAL, context)}
        unknown = categorical - {layer.source() for layer in layers}
        if unknown:
            raise QgsProcessingException(self.tr(f"Categorical layers must also be drivers: {', '.join(sorted(unknown))}."))
        grid, crs = grid_of_raster(reference), reference.crs()
        steps = QgsProcessingMultiStepFeedback(len(layers) + 1, feedback)

        # First the names (categorical layers are warped to learn their classes), then the bands in
        # name order, one warped layer in memory at a time.
        wkt = crs.toWkt()
        sources = {}  # band name -> (layer number, band number, class or None)
        for number, layer in enumerate(layers):
            steps.setCurrentStep(number)
            if feedback.isCanceled():
                raise QgsProcessingException(self.tr("Canceled."))
            names = self._band_names(layer, layer.source() in categorical, grid, wkt)
            clash = set(names) & set(sources)
            if clash:
                raise QgsProcessingException(self.tr(f"Two drivers are named {', '.join(sorted(clash))}: rename a layer."))
            sources.update({name: (number, *band_and_class) for name, band_and_class in names.items()})
            feedback.pushInfo(f"{layer.name()}: {', '.join(names)}")

        steps.setCurrentStep(len(layers))
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        ordered = sorted(sources)
        warped = {}  # the last warped layer: number -> its bands
        with Float32Rasters([(output, ordered)], grid, crs) as stack:
            for index, name in enumerate(ordered):
                if feedback.isCanceled():
                    raise QgsProcessingException(self.tr("Canceled: no output was written."))
                number, band, value = sources[name]
                if number not in warped:
                    layer = layers[number]
                    warped = {number: _warp(layer.source(), grid, wkt, "near" if value is not None else "bilinear")}
                values = warped[number][band]
                if value is not None:
                    values = np.where(np.isfinite(values), (values == value).astype(np.float32), np.nan)
                stack.write(index, 0, values)
                steps.setProgress(100 * (index + 1) / len(ordered))
        feedback.pushInfo(f"{len(ordered)} bands: {', '.join(ordered)}")
        return {self.OUTPUT: output}

    def _band_names(self, layer, is_categorical, grid, wkt):
        """{band name: (band index, class value or None)} of one layer."""
        count = layer.bandCount()
        names = [layer.name()] if count == 1 else [f"{layer.name()}_b{i + 1}" for i in range(count)]
        if not is_categorical:
            return {name: (index, None) for index, name in enumerate(names)}
        found = {}
        for index, (name, values) in enumerate(zip(names, _warp(layer.source(), grid, wkt, "near"))):
            classes = np.unique(values[np.isfinite(values)])
            if len(classes) > MAX_CLASSES:
                raise QgsProcessingException(f"{name} has {len(classes)} classes (more than {MAX_CLASSES}): is it really categorical?")
            found.update({f"{name}={_class_label(c)}": (index, float(c)) for c in classes})
        return found


def _warp(path, grid, wkt, resampling):
    """Every band of `path` on the grid, float32 with NaN where there is no data."""
    options = gdal.WarpOptions(
        format="MEM",
        dstSRS=wkt,
        outputBounds=(grid.left, grid.top - grid.height * grid.pixel_height, grid.left + grid.width * grid.pixel_width, grid.top),
        width=grid.width,
        height=grid.height,
        resampleAlg=resampling,
        outputType=gdal.GDT_Float32,
        dstNodata=float("nan"),
    )
    dataset = gdal.Warp("", path, options=options)
    if dataset is None:
        raise QgsProcessingException(f"GDAL cannot warp {path}: {gdal.GetLastErrorMsg()}")
    return [dataset.GetRasterBand(i + 1).ReadAsArray() for i in range(dataset.RasterCount)]


def _class_label(value):
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
