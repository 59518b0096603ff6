"""subsidence:exportpatches — patches of the driver stack around PS points, as a training dataset."""

import os
import tempfile

import numpy as np
from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from ..core import dataset, patches
from ..core.errors import InputError
from ..core.patches import DROPPED, POLICIES, POLICY_NAMES, SPLITS, TEST, TRAIN, VAL
from .base import SubsidenceAlgorithm
from .layers import grid_of_raster, open_raster, point_values, read_rows, remove_output

UNITS_OF_FIELD = {"displacement": "mm", "velocity": "mm/yr"}


class ExportPatches(SubsidenceAlgorithm):
    POINTS = "POINTS"
    FIELD = "FIELD"
    FACTORS = "FACTORS"
    PATCH_SIZE = "PATCH_SIZE"
    SPLIT = "SPLIT"
    SPLIT_FIELD = "SPLIT_FIELD"
    BLOCK_SIZE = "BLOCK_SIZE"
    VAL_FRACTION = "VAL_FRACTION"
    TEST_FRACTION = "TEST_FRACTION"
    SEED = "SEED"
    NODATA_POLICY = "NODATA_POLICY"
    OUTPUT = "OUTPUT"
    N_TRAIN = "N_TRAIN"
    N_VAL = "N_VAL"
    N_TEST = "N_TEST"
    COUNTS = {TRAIN: N_TRAIN, VAL: N_VAL, TEST: N_TEST}

    def name(self):
        return "exportpatches"

    def displayName(self):
        return self.tr("Export training patches")

    def group(self):
        return self.tr("CNN")

    def groupId(self):
        return "cnn"

    def tags(self):
        return self.tr("patches,dataset,training,cnn,split,spatial cross-validation,npz").split(",")

    def shortHelpString(self):
        return self.tr(
            "Cuts a PATCH_SIZE x PATCH_SIZE patch of the driver stack (FACTORS, from 'Stack driver rasters') "
            "around every point (reprojected to the stack's CRS) and writes the training dataset: raw patches, "
            "the FIELD values as targets, coordinates, ids, the split, band names, per-band mean and standard "
            "deviation over the training patches only, patch and pixel size, CRS, target field and units. "
            "The patch of pixel (r, c) spans rows r - P//2 … r - P//2 + P - 1, and likewise columns.\n"
            "SPLIT: spatial blocks (default: whole BLOCK_SIZE squares go to test, validation or training, and "
            "training or validation points whose patch overlaps a test patch are dropped, and training points "
            "whose patch overlaps a validation patch, so the test score, early stopping and the calibration of σ "
            "measure prediction away from the training data), random (the paper's; neighbouring patches then "
            "leak into the test set), or from SPLIT_FIELD (train/val/test or 0/1/2).\n"
            "NODATA_POLICY: skip points whose patch has any nodata, or fill nodata with the band's training "
            f"mean (points with nodata in their own cell, or less than {patches.MIN_VALID_TO_FILL:.0%} valid data "
            "in their patch, are still skipped). Cells beyond the stack's edge are nodata. Points "
            "outside the stack, without a value or dropped for overlap are counted in the log.\n"
            "The .npz is uncompressed and readable with numpy alone (patches memory-mappable); its members are "
            "listed in the plugin's core/dataset.py.\n"
            "Units: patches keep the drivers' units; targets keep the field's (mm for displacement, mm/yr for "
            "velocity); BLOCK_SIZE in the stack CRS's map units (default: a tenth of the points' extent, at "
            "least four patch widths, but small enough for at least about 9 blocks over a small area)."
        )

    def initAlgorithm(self, config=None):
        self.addParameter(
            QgsProcessingParameterFeatureSource(self.POINTS, self.tr("PS points"), [QgsProcessing.TypeVectorPoint])
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.FIELD, self.tr("Target field"), "displacement", self.POINTS, QgsProcessingParameterField.Numeric
            )
        )
        self.addParameter(QgsProcessingParameterRasterLayer(self.FACTORS, self.tr("Driver stack")))
        self.addParameter(
            QgsProcessingParameterNumber(self.PATCH_SIZE, self.tr("Patch size (pixels)"), defaultValue=30, minValue=1)
        )
        self.addParameter(QgsProcessingParameterEnum(self.SPLIT, self.tr("Split"), list(SPLITS), defaultValue=0))
        self.addParameter(
            QgsProcessingParameterField(
                self.SPLIT_FIELD, self.tr("Split field (train/val/test)"), None, self.POINTS, optional=True
            )
        )
        advanced = [
            QgsProcessingParameterNumber(
                self.BLOCK_SIZE,
                self.tr("Block size (map units; 0: from the data)"),
                QgsProcessingParameterNumber.Double,
                0.0,
                minValue=0.0,
            ),
            QgsProcessingParameterNumber(
                self.VAL_FRACTION,
                self.tr("Validation fraction"),
                QgsProcessingParameterNumber.Double,
                0.1,
                minValue=0.0,
                maxValue=0.9,
            ),
            QgsProcessingParameterNumber(
                self.TEST_FRACTION,
                self.tr("Test fraction"),
                QgsProcessingParameterNumber.Double,
                0.1,
                minValue=0.0,
                maxValue=0.9,
            ),
            QgsProcessingParameterNumber(self.SEED, self.tr("Random seed"), defaultValue=0, minValue=0),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(
            QgsProcessingParameterEnum(
                self.NODATA_POLICY, self.tr("Patches with nodata"), list(POLICIES), defaultValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT, self.tr("Training dataset"), self.tr("NumPy archive (*.npz)")
            )
        )
        for label in self.COUNTS.values():
            self.addOutput(QgsProcessingOutputNumber(label, self.tr(f"{label[2:].capitalize()} points")))

    def processAlgorithm(self, parameters, context, feedback):
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        try:
            return self._export(parameters, context, feedback, output)
        except BaseException as error:
            remove_output(output)
            if isinstance(error, InputError):
                raise QgsProcessingException(str(error)) from error
            raise

    def _export(self, parameters, context, feedback, output):
        steps = QgsProcessingMultiStepFeedback(3, feedback)
        source = self.parameterAsSource(parameters, self.POINTS, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.POINTS))
        layer = self.parameterAsRasterLayer(parameters, self.FACTORS, context)
        field = self.parameterAsString(parameters, self.FIELD, context)
        size = self.parameterAsInt(parameters, self.PATCH_SIZE, context)
        grid, crs = grid_of_raster(layer), layer.crs()
        stack = open_raster(layer.source(), "the driver stack")
        band_names = [stack.GetRasterBand(i + 1).GetDescription() or f"band_{i + 1}" for i in range(stack.RasterCount)]

        split_field = self.parameterAsString(parameters, self.SPLIT_FIELD, context) or None
        x, y, targets, ids, split_values, skipped = point_values(source, field, crs, context, steps, split_field)
        split_values = np.array(split_values, dtype=object) if split_field else None
        rows, columns = patches.pixel_indices(grid, x, y)
        inside = (rows >= 0) & (rows < grid.height) & (columns >= 0) & (columns < grid.width)
        counts = {**skipped, "outside the stack": int((~inside).sum())}
        keep = np.flatnonzero(inside)
        if not len(keep):
            raise QgsProcessingException(
                self.tr("No point lies on the driver stack: check the layers' extents and CRS.")
            )

        steps.setCurrentStep(1)
        workspace = tempfile.TemporaryDirectory(dir=os.path.dirname(output) or None)
        with workspace as folder:
            cut = patches.PatchFile(os.path.join(folder, "patches.bin"), (len(keep), stack.RasterCount, size, size))
            complete = patches.extract(
                lambda first, stop: read_rows(stack, first, stop - first),
                stack.RasterCount,
                grid.height,
                grid.width,
                rows[keep],
                columns[keep],
                size,
                cut,
                feedback.isCanceled,
            )
            if not complete:
                raise QgsProcessingException(self.tr("Canceled: no output was written."))
            policy = self.parameterAsEnum(parameters, self.NODATA_POLICY, context)
            enough = patches.usable(cut, patches.POLICY_NAMES[policy])
            counts["nodata at the point, or too little valid data in the patch"] = int((~enough).sum())

            steps.setCurrentStep(2)
            labels = np.full(len(keep), DROPPED)
            labels[enough] = self._split(
                parameters,
                context,
                feedback,
                x[keep][enough],
                y[keep][enough],
                None if split_values is None else split_values[keep][enough],
                size * grid.pixel_width,
            )
            if self.parameterAsEnum(parameters, self.SPLIT, context) == 0:
                labels, overlapping = patches.drop_test_overlaps(rows[keep], columns[keep], labels, size)
                overlap = (
                    "dropped from training/validation: patch overlaps a test patch, "
                    "or a training patch overlaps a validation patch"
                )
                counts[overlap] = overlapping
            chosen = np.flatnonzero(labels != DROPPED)
            training = chosen[labels[chosen] == TRAIN]
            if not len(training):
                feedback.pushInfo(", ".join(f"{count} {reason}" for reason, count in counts.items()) + ".")
                raise QgsProcessingException(
                    self.tr(
                        "No training point is left: see the counts above "
                        "(a smaller BLOCK_SIZE or PATCH_SIZE leaves more)."
                    )
                )
            mean, std = patches.band_statistics(cut, training)
            index = keep[chosen]
            arrays = {
                "targets": targets[index].astype(np.float32),
                "x": x[index],
                "y": y[index],
                "pid": np.array([ids[i] for i in index]),
                "split": labels[chosen].astype(np.int8),
                "band_names": np.array(band_names),
                "band_mean": mean,
                "band_std": std,
                "patch_size": np.array(size),
                "pixel_size": np.array([grid.pixel_width, grid.pixel_height]),
                "crs": np.array(crs.toWkt()),
                "target_field": np.array(field),
                "target_units": np.array(UNITS_OF_FIELD.get(field, "")),
                "nodata_policy": np.array(POLICY_NAMES[policy]),
            }
            dataset.write(output, cut, chosen, arrays, fill=mean if policy == 1 else None)
            cut.close()

        achieved = {label: int((labels[chosen] == label).sum()) for label in self.COUNTS}
        feedback.pushInfo(
            ", ".join(f"{count} {reason}" for reason, count in counts.items())
            + f". Written: {len(chosen)} patches of {stack.RasterCount} x {size} x {size}; "
            + ", ".join(
                f"{self.COUNTS[label][2:].lower()} {n} ({n / len(chosen):.1%})" for label, n in achieved.items()
            )
        )
        return {self.OUTPUT: output, **{self.COUNTS[label]: n for label, n in achieved.items()}}

    def _split(self, parameters, context, feedback, x, y, values, patch_metres):
        method = self.parameterAsEnum(parameters, self.SPLIT, context)
        rng = np.random.default_rng(self.parameterAsInt(parameters, self.SEED, context))
        val = self.parameterAsDouble(parameters, self.VAL_FRACTION, context)
        test = self.parameterAsDouble(parameters, self.TEST_FRACTION, context)
        if val + test >= 1:
            raise QgsProcessingException(self.tr("VAL_FRACTION + TEST_FRACTION must leave points for training."))
        if method == 2:
            if values is None:
                raise QgsProcessingException(self.tr("The split 'from a field' needs SPLIT_FIELD."))
            return patches.split_from_values(values)
        if method == 1:
            return patches.random_split(len(x), val, test, rng)
        block = self.parameterAsDouble(parameters, self.BLOCK_SIZE, context) or patches.default_block_size(
            x, y, patch_metres
        )
        feedback.pushInfo(self.tr("Spatial split: square blocks of {:.0f} map units.").format(block))
        return patches.spatial_blocks(x, y, block, val, test, rng)
