"""subsidence:predictsurface — every pixel of a driver stack through the trained model."""

import math
import time

import numpy as np
from qgis.core import (
    QgsCoordinateTransform,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core import calibration
from ..core.applicability import Applicability
from ..core.grid import Grid
from ..core.prediction import Predictor, ensemble_summary, session
from .base import SubsidenceAlgorithm, read_model_card
from .layers import Float32Rasters, check_raster, crs_from_text, grid_of_raster, open_raster, polygon_cells, read_band
from .styles import style_raster

PATCHWISE_TILE = 64  # tile side when the model runs patch by patch: progress every few seconds


class PredictSurface(SubsidenceAlgorithm):
    REQUIRES = ("onnxruntime", "onnx")
    GROUP = "cnn"
    HELP_SECTION = "Predicting the surface"
    SHORT_DESCRIPTION = (
        "Applies a trained CNN to every pixel of a driver stack: the surface, its uncertainty and applicability"
    )
    MODEL = "MODEL"
    FACTORS = "FACTORS"
    EXTENT = "EXTENT"
    MASK = "MASK"
    TILE_SIZE = "TILE_SIZE"
    BLANK_OUTSIDE = "BLANK_OUTSIDE"
    OUTPUT = "OUTPUT"
    OUTPUT_UNCERTAINTY = "OUTPUT_UNCERTAINTY"
    OUTPUT_APPLICABILITY = "OUTPUT_APPLICABILITY"
    APPLICABLE_PERCENT = "APPLICABLE_PERCENT"

    def name(self):
        return "predictsurface"

    def displayName(self):
        return self.tr("Predict the surface")

    def tags(self):
        return self.tr("predict,cnn,onnx,surface,continuous,subsidence,raster,inference").split(",")

    def shortHelpString(self):
        return self.tr(
            "Applies a model from 'Train the CNN' to every pixel of the driver stack and writes the continuous "
            "surface: at each pixel the model's prediction from the patch of drivers around it (for an ensemble, "
            "the members' mean). The stack must have the model's bands (matched by name), pixel size and CRS.\n"
            "Optionally it also writes the uncertainty σ of each pixel and the area of applicability: where the "
            "drivers resemble those the model was trained on. Outside it the model extrapolates. A pixel whose "
            "own drivers are nodata gets nodata; so does a pixel near the stack's edge when the training patches "
            "were exported with 'skip the point'.\n"
            "Units: the model's target units (mm for displacement, mm/yr for velocity), σ likewise; the "
            "dissimilarity index has none.\n"
            "Method: the dense and small architectures are evaluated a tile at a time, giving exactly the "
            "per-patch predictions; area of applicability after Meyer and Pebesma (2021, Methods in Ecology and "
            "Evolution 12, 1620)."
        )

    def initAlgorithm(self, config=None):
        model = QgsProcessingParameterFile(self.MODEL, self.tr("Model (.onnx)"), extension="onnx")
        model.setHelp(
            self.tr(
                "A model written by 'Train the CNN' (or any ONNX model following the plugin's conventions). It "
                "records the bands, patch size, pixel size and CRS it was trained with; models of earlier versions "
                "record neither pixel size nor CRS, and the log warns that the stack is not checked."
            )
        )
        factors = QgsProcessingParameterRasterLayer(self.FACTORS, self.tr("Driver stack"))
        factors.setHelp(
            self.tr(
                "The drivers from 'Stack driver rasters', built as for training: bands are matched to the model's "
                "by name (a missing or extra band is an error), and the pixel size (to 1 %) and CRS must be those "
                "of the training drivers. Beyond its edge the drivers count as nodata. Nodata in a pixel's patch "
                "takes the band's training mean, but the pixel gets nodata where training would have dropped its "
                "patch: any nodata for 'skip the point', less than half valid for 'fill'. With 'skip the point' a "
                "strip of half a patch along the edge stays empty: give a stack a little larger than the area to map."
            )
        )
        extent = QgsProcessingParameterExtent(self.EXTENT, self.tr("Extent (default: the whole stack)"), optional=True)
        extent.setHelp(
            self.tr(
                "Limits the output to the stack's cells that meet this extent, on the stack's grid; the patches "
                "of its border pixels still read the drivers around them."
            )
        )
        mask = QgsProcessingParameterFeatureSource(
            self.MASK, self.tr("Mask polygons"), [QgsProcessing.TypeVectorPolygon], optional=True
        )
        mask.setHelp(self.tr("Optional polygons: only the pixels inside them are predicted, the others get nodata."))
        tile = QgsProcessingParameterNumber(
            self.TILE_SIZE,
            self.tr("Tile size (pixels)"),
            QgsProcessingParameterNumber.Integer,
            defaultValue=512,
            minValue=16,
            maxValue=8192,
        )
        tile.setHelp(
            self.tr(
                "Side of the square tiles read, predicted and written one at a time (default 512): memory depends "
                "on it, not on the raster's size. Lower it if memory runs short. Models that cannot be evaluated "
                "densely run in tiles of at most {} pixels."
            ).format(PATCHWISE_TILE)
        )
        tile.setFlags(tile.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        blank = QgsProcessingParameterBoolean(
            self.BLANK_OUTSIDE, self.tr("Leave out pixels outside the area of applicability"), defaultValue=False
        )
        blank.setHelp(
            self.tr(
                "Gives nodata, in the surface and the uncertainty, to the pixels whose drivers lie outside the "
                "area of applicability, where the model extrapolates. Needs a model that records its training "
                "drivers (this version's 'Train the CNN')."
            )
        )
        output = QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Predicted surface"))
        output.setHelp(
            self.tr("The predicted surface on the stack's grid (or the extent's part of it), in the target's units.")
        )
        uncertainty = QgsProcessingParameterRasterDestination(
            self.OUTPUT_UNCERTAINTY,
            self.tr("Uncertainty (standard deviation σ)"),
            optional=True,
            createByDefault=False,
        )
        uncertainty.setHelp(
            self.tr(
                "Optional: the standard deviation σ of the prediction at each pixel, in the target's units. σ² is "
                "the square of the ensemble members' spread plus the noise variance the model calibrated on its "
                "validation points; for a single network σ is that noise alone, the same everywhere (a single "
                "network without that calibration, from an earlier version, has no σ). 'Evaluate' reports how well "
                "σ covers the errors at the test points."
            )
        )
        applicability = QgsProcessingParameterRasterDestination(
            self.OUTPUT_APPLICABILITY,
            self.tr("Area of applicability (dissimilarity index, mask)"),
            optional=True,
            createByDefault=False,
        )
        applicability.setHelp(
            self.tr(
                "Optional, two bands. Band 1: the dissimilarity index (DI) of each pixel's drivers, the distance to "
                "the nearest training patch divided by the mean distance between training patches (drivers "
                "standardised with the training statistics; per band the patch centre's value and the patch "
                "mean). Band 2: 1 inside the area of applicability (DI at most the model's threshold, the largest "
                "training DI that is no outlier, each training patch compared with those outside its spatial "
                "fold), 0 outside. The output 'Pixels inside the area of applicability (%)' gives their share."
            )
        )
        for parameter in (model, factors, extent, mask, tile, blank, output, uncertainty, applicability):
            self.addParameter(parameter)
        self.addOutput(
            QgsProcessingOutputNumber(self.APPLICABLE_PERCENT, self.tr("Pixels inside the area of applicability (%)"))
        )

    def processAlgorithm(self, parameters, context, feedback):
        from ..models.dense import NotDenseError, dense_model

        model_path = self.parameterAsFile(parameters, self.MODEL, context)
        with open(model_path, "rb") as file:
            model_bytes = file.read()
        card = read_model_card(model_bytes, model_path)
        size, members = card.patch_size, card.ensemble_members
        uncertainty_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_UNCERTAINTY, context)
        applicability_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_APPLICABILITY, context)
        blank = self.parameterAsBoolean(parameters, self.BLANK_OUTSIDE, context)
        noise = float("nan") if card.noise_variance is None else card.noise_variance
        if uncertainty_path and members < 2 and not np.isfinite(noise):
            raise QgsProcessingException(
                self.tr(
                    "The model is a single network without a calibrated noise variance: an uncertainty needs an "
                    "ensemble, or a model trained with this version's 'Train the CNN'. Train it with ENSEMBLE of 2 "
                    "or more (5 or more is usual)."
                )
            )
        area = _area(model_path, card) if applicability_path or blank else None
        layer = self.parameterAsRasterLayer(parameters, self.FACTORS, context)
        check_raster(layer, "the driver stack")
        stack = open_raster(layer.source(), "the stack")
        bands = _matched_bands(stack, card.band_names)
        stack_grid, crs = grid_of_raster(layer), layer.crs()
        _check_grid(card, stack_grid, crs, feedback)
        dense = card.dense_exact
        if dense:
            try:
                model_bytes, _ = dense_model(model_bytes)
            except NotDenseError as reason:
                feedback.pushWarning(
                    self.tr("The model cannot be evaluated densely ({}): predicting patch by patch.").format(reason)
                )
                dense = False
        predictor = Predictor(session(model_bytes), dense, size, list(card.band_mean), card.nodata_policy, members)
        grid, first_row, first_column = self._output_grid(parameters, context, stack_grid, crs)
        inside = self._mask(parameters, context, grid, crs)
        tile = (
            self.parameterAsInt(parameters, self.TILE_SIZE, context)
            if dense
            else min(PATCHWISE_TILE, self.parameterAsInt(parameters, self.TILE_SIZE, context))
        )
        feedback.pushInfo(
            self.tr("{} x {} pixels, {} evaluation in tiles of {} x {}{}.").format(
                grid.width,
                grid.height,
                "dense" if dense else "patch-by-patch",
                tile,
                tile,
                f", an ensemble of {members}" if members > 1 else "",
            )
        )
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        units = card.target_units
        name = card.target_field + (f" ({units})" if units else "")
        files = [(output, [name])]
        if uncertainty_path:
            files.append((uncertainty_path, [f"standard deviation ({units})" if units else "standard deviation"]))
        if applicability_path:
            files.append((applicability_path, ["dissimilarity index", "inside the area of applicability (1/0)"]))
        tiles = math.ceil(grid.height / tile) * math.ceil(grid.width / tile)
        done, start, counts = 0, time.perf_counter(), np.zeros(2, np.int64)  # predicted pixels, those inside
        with Float32Rasters(files, grid, crs) as raster:
            for row in range(0, grid.height, tile):
                rows = min(tile, grid.height - row)
                for column in range(0, grid.width, tile):
                    if feedback.isCanceled():
                        raise QgsProcessingException(self.tr("Canceled: no output was written."))
                    columns = min(tile, grid.width - column)
                    wanted = None if inside is None else inside[row : row + rows, column : column + columns]
                    tile_layers = [np.full((rows, columns), np.nan, np.float32)] * 4  # mean, spread, DI, inside
                    if wanted is None or wanted.any():
                        block = _read_block(
                            stack, bands, stack_grid, first_row + row, rows, first_column + column, columns, size
                        )
                        tile_layers = _predicted_tile(predictor, area, block, wanted, blank, noise)
                        counts += np.isfinite(tile_layers[3]).sum(), (tile_layers[3] == 1).sum()
                    layers = (
                        [tile_layers[0]]
                        + ([tile_layers[1]] if uncertainty_path else [])
                        + (tile_layers[2:] if applicability_path else [])
                    )
                    for index, values in enumerate(layers):
                        raster.write(index, row, values, column)
                    done += 1
                    feedback.setProgress(100 * done / tiles)
                    if not dense:
                        elapsed = time.perf_counter() - start
                        feedback.pushInfo(
                            self.tr("Tile {}/{}, about {:.0f} s left.").format(
                                done, tiles, elapsed / done * (tiles - done)
                            )
                        )
                # GDAL would keep the blocks read and written in its cache (5 % of RAM by default):
                # drop them after each row of tiles, so memory stays bounded by the tile size.
                stack.FlushCache()
                for index in range(len(layers)):
                    raster.flush(index)
        style_raster(output, units)
        results = {
            self.OUTPUT: output,
            self.APPLICABLE_PERCENT: 100.0 * counts[1] / counts[0] if counts[0] else float("nan"),
        }
        if uncertainty_path:
            style_raster(uncertainty_path, units, sequential=True)
            results[self.OUTPUT_UNCERTAINTY] = uncertainty_path
        if applicability_path:
            style_raster(applicability_path, sequential=True)
            results[self.OUTPUT_APPLICABILITY] = applicability_path
        if area is not None:
            feedback.pushInfo(
                self.tr("{:.1f} % of the predicted pixels lie inside the area of applicability (DI ≤ {:.3g}).").format(
                    results[self.APPLICABLE_PERCENT], area.threshold
                )
            )
        return results

    def _output_grid(self, parameters, context, stack_grid, crs):
        """The stack's grid, or its cells that meet EXTENT; with the first row and column."""
        if not parameters.get(self.EXTENT):
            return stack_grid, 0, 0
        extent = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
        left = max(0, math.floor((extent.xMinimum() - stack_grid.left) / stack_grid.pixel_width))
        right = min(stack_grid.width, math.ceil((extent.xMaximum() - stack_grid.left) / stack_grid.pixel_width))
        top = max(0, math.floor((stack_grid.top - extent.yMaximum()) / stack_grid.pixel_height))
        bottom = min(stack_grid.height, math.ceil((stack_grid.top - extent.yMinimum()) / stack_grid.pixel_height))
        if right <= left or bottom <= top:
            raise QgsProcessingException(self.tr("EXTENT does not overlap the driver stack."))
        grid = Grid(
            stack_grid.left + left * stack_grid.pixel_width,
            stack_grid.top - top * stack_grid.pixel_height,
            stack_grid.pixel_width,
            stack_grid.pixel_height,
            right - left,
            bottom - top,
        )
        return grid, top, left

    def _mask(self, parameters, context, grid, crs):
        source = self.parameterAsSource(parameters, self.MASK, context)
        if source is None:
            return None
        transform = QgsCoordinateTransform(source.sourceCrs(), crs, context.transformContext())
        polygons = []
        for feature in source.getFeatures():
            geometry = feature.geometry()
            if not geometry.isEmpty():
                geometry.transform(transform)
                polygons.append(geometry.asWkb())
        if not polygons:
            raise QgsProcessingException(self.tr("The mask layer has no polygon."))
        return polygon_cells(polygons, grid, crs.toWkt())


def _check_grid(card, stack_grid, crs, feedback):
    """Refuses a stack whose pixel size or CRS differ from the drivers' the model was trained on:
    its patches would cover another area, or be read in other units and directions."""
    problem = card.resolution_problem(stack_grid.pixel_width, stack_grid.pixel_height)
    if problem:
        raise QgsProcessingException(problem)
    if card.crs is None:
        feedback.pushWarning(
            card.unrecorded_warning(
                "the pixel size and CRS of the drivers it was trained on", "The stack's pixel size and CRS"
            )
        )
        return
    trained = crs_from_text(card.crs)
    if not trained.isValid():
        feedback.pushWarning(f"QGIS does not know the model's CRS ({card.crs}): the stack's CRS is not checked.")
    elif not _same_crs(trained, crs):
        raise QgsProcessingException(
            f"The stack is in {_crs_name(crs)}, the model was trained on drivers in {_crs_name(trained)}. Reproject "
            "the drivers to the model's CRS ('Stack driver rasters' with a REFERENCE raster in that CRS, or "
            f"gdalwarp -t_srs {trained.authid() or 'with its WKT'}), or train a model on drivers in this CRS."
        )


def _same_crs(first, second):
    if first.authid() and second.authid():
        return first.authid() == second.authid()
    return first == second


def _crs_name(crs):
    return f"{crs.authid()} ({crs.description()})" if crs.authid() else crs.description() or crs.toWkt()


def _predicted_tile(predictor, area, block, wanted, blank, noise):
    """The tile's (mean, σ, DI, inside 1/0) from its block (σ: core.calibration.sigma of the
    members' spread and the noise variance), NaN where nothing is predicted
    (and the last two NaN without an area of applicability); `wanted`: pixels in the mask or None."""
    filled, predicted = predictor.prepare(block)
    if wanted is not None:
        predicted &= wanted
    dissimilarity, applicable = np.full(predicted.shape, np.nan), np.full(predicted.shape, np.nan)
    if area is not None:
        dissimilarity = area.block_dissimilarity(filled, predictor.size, predicted)
        applicable[predicted] = dissimilarity[predicted] <= area.threshold
        if blank:
            predicted &= applicable == 1
    mean, spread = ensemble_summary(predictor.predict(filled, predicted))
    sigma = np.where(np.isfinite(mean), calibration.sigma(spread, noise), np.nan).astype(np.float32)
    return [mean, sigma, dissimilarity, applicable]


def _area(path, card):
    if card.applicability is None:
        raise QgsProcessingException(
            f"{path} does not record the drivers it was trained on: train it again with 'Train the CNN' (this "
            "version) for an area of applicability."
        )
    return Applicability.from_metadata(card.applicability, card.band_mean, card.band_std)


def _matched_bands(stack, names):
    """The stack's band numbers in the model's band order; every model band must be there once,
    and nothing else."""
    descriptions = [stack.GetRasterBand(number).GetDescription() for number in range(1, stack.RasterCount + 1)]
    missing = [name for name in names if descriptions.count(name) != 1]
    extra = [description for description in descriptions if description not in names]
    if missing or extra:
        problems = []
        if missing:
            problems.append("missing (or repeated) in the stack: " + ", ".join(missing))
        if extra:
            problems.append("in the stack but not in the model: " + ", ".join(extra))
        raise QgsProcessingException(
            "The stack's bands do not match the model's (" + "; ".join(problems) + "). Build the stack with "
            "'Stack driver rasters' from the same drivers as the training dataset."
        )
    return [descriptions.index(name) + 1 for name in names]


def _read_block(stack, bands, stack_grid, first_row, rows, first_column, columns, size):
    """Drivers (bands, rows + size - 1, columns + size - 1) for the output pixels from
    (first_row, first_column), NaN for nodata and beyond the stack's edge: the patches training cut."""
    half = size // 2
    top, left = first_row - half, first_column - half
    block = np.full((len(bands), rows + size - 1, columns + size - 1), np.nan, np.float32)
    inside_top, inside_left = max(top, 0), max(left, 0)
    inside_bottom = min(top + block.shape[1], stack_grid.height)
    inside_right = min(left + block.shape[2], stack_grid.width)
    if inside_bottom <= inside_top or inside_right <= inside_left:
        return block
    for slot, number in enumerate(bands):
        block[slot, inside_top - top : inside_bottom - top, inside_left - left : inside_right - left] = read_band(
            stack.GetRasterBand(number), inside_left, inside_top, inside_right - inside_left, inside_bottom - inside_top
        )
    return block
