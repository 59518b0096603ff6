"""subsidence:stackfactors — driver rasters warped onto one grid as a named multi-band GeoTIFF."""

import numpy as np
from osgeo import gdal
from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core.terrain import BAND_NAMES
from .base import SubsidenceAlgorithm
from .layers import Float32Rasters, check_raster, gdal_call, grid_of_raster, open_raster, read_band

MAX_CLASSES = 50  # a categorical layer with more classes is almost surely continuous
# Directions are recognised by the band description terrainfactors gives its aspect.
DIRECTION_DESCRIPTIONS = {BAND_NAMES["ASPECT"]}
COMPONENTS = ("east", "north")  # sin and cos of a direction clockwise from north


class StackFactors(SubsidenceAlgorithm):
    INPUTS = "INPUTS"
    REFERENCE = "REFERENCE"
    CATEGORICAL = "CATEGORICAL"
    CIRCULAR = "CIRCULAR"
    OUTPUT = "OUTPUT"
    GROUP = "drivers"
    HELP_SECTION = "Driver stack and training dataset"
    SHORT_DESCRIPTION = "Driver rasters on one grid as one named multi-band GeoTIFF (categorical layers one-hot)"

    def name(self):
        return "stackfactors"

    def displayName(self):
        return self.tr("Stack driver rasters")

    def tags(self):
        return self.tr("stack,drivers,factors,align,resample,warp,one-hot,categorical,land use").split(",")

    def shortHelpString(self):
        return self.tr(
            "Puts every driver raster (DEM products, NDVI, distances, land use, water-table change …) on one grid "
            "and writes them as one multi-band GeoTIFF, one band per driver named after its layer, ready for "
            "'Export training patches' and 'Predict the surface'.\n"
            "Layers in another CRS are reprojected. Continuous layers are resampled bilinearly; categorical layers "
            "(land use) by nearest neighbour, and become one 0/1 band per class, named &lt;layer&gt;=&lt;class&gt;. "
            "Directions (aspect) become two bands, eastness and northness, so that 350° and 10° average to north. "
            "Bands are sorted by name, so the stack does not depend on the order of the inputs.\n"
            "Units: each band keeps its layer's units (one-hot bands 0/1, direction components −1 to 1); float32 "
            "with one common nodata value, on the reference grid.\n"
            "Method: GDAL warp (bilinear or nearest neighbour); directions as sine and cosine before resampling."
        )

    def initAlgorithm(self, config=None):
        drivers = QgsProcessingParameterMultipleLayers(self.INPUTS, self.tr("Driver rasters"), QgsProcessing.TypeRaster)
        drivers.setHelp(
            self.tr(
                "The driver rasters. A band is named after its layer, with _b&lt;n&gt; added for the bands of a "
                "multi-band layer: give the layers meaningful names, unique among the drivers."
            )
        )
        self.addParameter(drivers)
        reference = QgsProcessingParameterRasterLayer(
            self.REFERENCE, self.tr("Reference grid (default: first driver)"), optional=True
        )
        reference.setHelp(
            self.tr(
                "The raster whose grid (extent, cell size, CRS) the stack takes; its values are not used. Empty: "
                "the first driver's grid. Use the grid the maps should have, usually the DEM's."
            )
        )
        self.addParameter(reference)
        categorical = QgsProcessingParameterMultipleLayers(
            self.CATEGORICAL,
            self.tr("Categorical drivers (among the drivers)"),
            QgsProcessing.TypeRaster,
            optional=True,
        )
        categorical.setHelp(
            self.tr(
                "The drivers that hold classes, not quantities (land use, geology): resampled by nearest neighbour "
                "and expanded into one 0/1 band per class, named &lt;layer&gt;=&lt;class&gt;. Each must also be "
                "among the drivers, with at most {} classes."
            ).format(MAX_CLASSES)
        )
        self.addParameter(categorical)
        circular = QgsProcessingParameterMultipleLayers(
            self.CIRCULAR,
            self.tr("Directions in degrees, e.g. aspect (among the drivers)"),
            QgsProcessing.TypeRaster,
            optional=True,
        )
        circular.setHelp(
            self.tr(
                "The drivers that hold directions in degrees clockwise from north, e.g. an aspect from another "
                "program. Each becomes two bands, &lt;layer&gt;_east = sine (eastness) and &lt;layer&gt;_north = "
                "cosine (northness), computed before resampling; negative values (flat) give 0 in both. The aspect "
                "written by 'Terrain factors' is recognised without being listed here."
            )
        )
        circular.setFlags(circular.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(circular)
        output = QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Driver stack"))
        output.setHelp(
            self.tr("The float32 multi-band GeoTIFF on the reference grid; each band's description is its name.")
        )
        self.addParameter(output)

    def processAlgorithm(self, parameters, context, feedback):
        layers = self.parameterAsLayerList(parameters, self.INPUTS, context)
        if not layers:
            raise QgsProcessingException(self.tr("Give at least one driver raster."))
        for layer in layers:
            check_raster(layer, "the driver raster")
        reference = self.parameterAsRasterLayer(parameters, self.REFERENCE, context) or layers[0]
        check_raster(reference, "the reference grid", cells=False)
        categorical = {layer.source() for layer in self.parameterAsLayerList(parameters, self.CATEGORICAL, context)}
        circular = {layer.source() for layer in self.parameterAsLayerList(parameters, self.CIRCULAR, context)}
        for kind, chosen in (("Categorical", categorical), ("Direction", circular)):
            unknown = chosen - {layer.source() for layer in layers}
            if unknown:
                raise QgsProcessingException(
                    self.tr(f"{kind} layers must also be drivers: {', '.join(sorted(unknown))}.")
                )
        if categorical & circular:
            raise QgsProcessingException(
                self.tr(
                    f"A layer cannot be both categorical and a direction: {', '.join(sorted(categorical & circular))}."
                )
            )
        circular |= {layer.source() for layer in layers if _is_direction(layer.source())}
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
            names = self._band_names(layer, layer.source() in categorical, layer.source() in circular, grid, wkt)
            clash = set(names) & set(sources)
            if clash:
                raise QgsProcessingException(
                    self.tr(f"Two drivers are named {', '.join(sorted(clash))}: rename a layer.")
                )
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
                    source = layers[number].source()
                    if source in circular:
                        warped = {number: _warp(_components(source), grid, wkt, "bilinear")}
                    else:
                        warped = {number: _warp(source, grid, wkt, "near" if value is not None else "bilinear")}
                values = warped[number][band]
                if value is not None:
                    values = np.where(np.isfinite(values), (values == value).astype(np.float32), np.nan)
                stack.write(index, 0, values)
                steps.setProgress(100 * (index + 1) / len(ordered))
        feedback.pushInfo(f"{len(ordered)} bands: {', '.join(ordered)}")
        return {self.OUTPUT: output}

    def _band_names(self, layer, is_categorical, is_direction, grid, wkt):
        """{band name: (band index in what _warp returns, class value or None)} of one layer."""
        count = layer.bandCount()
        names = [layer.name()] if count == 1 else [f"{layer.name()}_b{i + 1}" for i in range(count)]
        if is_direction:
            return {
                f"{name}_{component}": (len(COMPONENTS) * index + offset, None)
                for index, name in enumerate(names)
                for offset, component in enumerate(COMPONENTS)
            }
        if not is_categorical:
            return {name: (index, None) for index, name in enumerate(names)}
        found = {}
        for index, (name, values) in enumerate(zip(names, _warp(layer.source(), grid, wkt, "near"))):
            classes = np.unique(values[np.isfinite(values)])
            if len(classes) > MAX_CLASSES:
                raise QgsProcessingException(
                    f"{name} has {len(classes)} classes (more than {MAX_CLASSES}): is it really categorical?"
                )
            found.update({f"{name}={_class_label(c)}": (index, float(c)) for c in classes})
        return found


def _is_direction(path):
    dataset, _ = gdal_call(gdal.Open, path)  # not a GDAL raster: not a direction
    return (
        dataset is not None
        and dataset.RasterCount == 1
        and dataset.GetRasterBand(1).GetDescription() in DIRECTION_DESCRIPTIONS
    )


def _components(path):
    """An in-memory dataset on the grid of `path` with, for each of its bands (degrees clockwise
    from north), its east and north components; NaN for nodata, 0 and 0 for negative values."""
    source = open_raster(path, "the direction raster")
    target = gdal.GetDriverByName("MEM").Create(
        "", source.RasterXSize, source.RasterYSize, len(COMPONENTS) * source.RasterCount, gdal.GDT_Float32
    )
    target.SetGeoTransform(source.GetGeoTransform())
    target.SetProjection(source.GetProjection())
    for index in range(source.RasterCount):
        degrees = read_band(source.GetRasterBand(index + 1))
        radians, facing = np.radians(degrees), np.where(degrees >= 0, 1.0, 0.0)
        for offset, values in enumerate((np.sin(radians) * facing, np.cos(radians) * facing)):
            band = target.GetRasterBand(len(COMPONENTS) * index + offset + 1)
            band.SetNoDataValue(float("nan"))
            band.WriteArray(values.astype(np.float32))  # NaN stays NaN: nodata
    return target


def _warp(source, grid, wkt, resampling):
    """Every band of `source` (a path or a GDAL dataset) on the grid, float32 with NaN where there
    is no data."""
    options = gdal.WarpOptions(
        format="MEM",
        dstSRS=wkt,
        outputBounds=(
            grid.left,
            grid.top - grid.height * grid.pixel_height,
            grid.left + grid.width * grid.pixel_width,
            grid.top,
        ),
        width=grid.width,
        height=grid.height,
        resampleAlg=resampling,
        outputType=gdal.GDT_Float32,
        dstNodata=float("nan"),
    )
    dataset, reason = gdal_call(gdal.Warp, "", source, options=options)
    if dataset is None:
        raise QgsProcessingException(f"GDAL cannot warp {source}: {reason}")
    return [dataset.GetRasterBand(i + 1).ReadAsArray() for i in range(dataset.RasterCount)]


def _class_label(value):
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
