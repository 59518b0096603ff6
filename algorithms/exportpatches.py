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
from .layers import check_raster, grid_of_raster, open_raster, point_values, read_rows, refuse_geographic, remove_output

UNITS_OF_FIELD = {"displacement": "mm", "velocity": "mm/yr"}


class ExportPatches(SubsidenceAlgorithm):
    GROUP = "cnn"
    HELP_SECTION = "Driver stack and training dataset"
    SHORT_DESCRIPTION = (
        "PS points and driver stack to a training dataset (.npz) of patches, with a leak-free spatial split"
    )
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

    def tags(self):
        return self.tr("patches,dataset,training,cnn,split,spatial cross-validation,npz").split(",")

    def shortHelpString(self):
        return self.tr(
            "Cuts a square patch of the driver stack around every PS point and writes the training dataset for "
            "'Train the CNN': the patches, the points' values as targets, their coordinates and ids, their split "
            "into training, validation and test points, and each band's mean and standard deviation over the "
            "training patches.\n"
            "By default whole spatial blocks go to training, validation or test, and patches that overlap across "
            "them are dropped, so that the test score and the uncertainty measure prediction away from the "
            "training data. The log counts the points left out (outside the stack, without a value, with too "
            "much nodata, or overlapping) and the outputs give the number of training, validation and test "
            "points.\n"
            "Units: patches keep the drivers' units; targets keep the field's (mm for displacement, mm/yr for "
            "velocity); the block size is in the stack's map units.\n"
            "Method: patches for a CNN after Azarm, Mehrabi and Nadi; spatial blocks after Roberts et al. "
            "(2017, Ecography 40, 913)."
        )

    def initAlgorithm(self, config=None):
        points = QgsProcessingParameterFeatureSource(self.POINTS, self.tr("PS points"), [QgsProcessing.TypeVectorPoint])
        points.setHelp(
            self.tr(
                "The PS points, e.g. from 'Import PS points'. They are reprojected to the stack's CRS; points "
                "outside the stack are left out and counted in the log."
            )
        )
        field = QgsProcessingParameterField(
            self.FIELD, self.tr("Target field"), "displacement", self.POINTS, QgsProcessingParameterField.Numeric
        )
        field.setHelp(
            self.tr(
                "The value the CNN learns to predict: displacement (mm, the default) or velocity (mm/yr), or any "
                "numeric field. Points without a value are left out and counted."
            )
        )
        factors = QgsProcessingParameterRasterLayer(self.FACTORS, self.tr("Driver stack"))
        factors.setHelp(
            self.tr(
                "The drivers as one multi-band raster with named bands, from 'Stack driver rasters'. Cells beyond "
                "its edge count as nodata. 'Predict the surface' will need a stack with the same bands, pixel "
                "size and CRS. The CRS must be projected, in metres (e.g. the UTM zone): a stack in degrees is "
                "refused, with the zone to reproject it to."
            )
        )
        patch_size = QgsProcessingParameterNumber(
            self.PATCH_SIZE, self.tr("Patch size (pixels)"), defaultValue=30, minValue=1
        )
        patch_size.setHelp(
            self.tr(
                "Side of the square patch cut around each point's cell, in pixels (default 30): the drivers' "
                "context the CNN sees. An even size puts the extra row and column before the point's cell (above "
                "and left of it). The dense architecture needs 22 or more, the small one 8 to 21."
            )
        )
        split = QgsProcessingParameterEnum(self.SPLIT, self.tr("Split"), list(SPLITS), defaultValue=0)
        split.setHelp(
            self.tr(
                "How the points are divided into training, validation and test points. Spatial blocks (default): "
                "whole square blocks go to test, validation or training; training or validation points whose "
                "patch overlaps a test patch are dropped, and so are training points whose patch overlaps a "
                "validation patch, so the test score, early stopping and the calibration of σ measure prediction "
                "away from the training data. Random: the paper's split; neighbouring patches then leak into the "
                "test set. From a field: the values of the split field."
            )
        )
        split_field = QgsProcessingParameterField(
            self.SPLIT_FIELD, self.tr("Split field (train/val/test)"), None, self.POINTS, optional=True
        )
        split_field.setHelp(
            self.tr(
                "Only for the split 'from a field': a field giving each point's part, as train, val or test (or "
                "0, 1, 2)."
            )
        )
        block_size = QgsProcessingParameterNumber(
            self.BLOCK_SIZE,
            self.tr("Block size (map units; 0: from the data)"),
            QgsProcessingParameterNumber.Double,
            0.0,
            minValue=0.0,
        )
        block_size.setHelp(
            self.tr(
                "Side of the square blocks of the spatial split, in the stack's map units. 0 (default): a tenth "
                "of the points' extent, at least four patch widths, but small enough for about 9 blocks over a "
                "small area. A smaller block leaves more training points when many are dropped for overlap."
            )
        )
        block_size.setMetadata({"widget_wrapper": {"decimals": 2}})
        val_fraction = QgsProcessingParameterNumber(
            self.VAL_FRACTION,
            self.tr("Validation fraction"),
            QgsProcessingParameterNumber.Double,
            0.1,
            minValue=0.0,
            maxValue=0.9,
        )
        val_fraction.setHelp(
            self.tr(
                "Share of the points for validation (default 0.1): they decide when training stops and "
                "calibrate the uncertainty σ. With spatial blocks the share is reached block by block, so "
                "approximately."
            )
        )
        test_fraction = QgsProcessingParameterNumber(
            self.TEST_FRACTION,
            self.tr("Test fraction"),
            QgsProcessingParameterNumber.Double,
            0.1,
            minValue=0.0,
            maxValue=0.9,
        )
        test_fraction.setHelp(
            self.tr(
                "Share of the points held out for testing (default 0.1): no method sees them, and 'Evaluate' "
                "scores every method on them. Validation and test fractions together must stay below 1."
            )
        )
        for fraction in (val_fraction, test_fraction):
            fraction.setMetadata({"widget_wrapper": {"decimals": 2}})
        seed = QgsProcessingParameterNumber(self.SEED, self.tr("Random seed"), defaultValue=0, minValue=0)
        seed.setHelp(self.tr("Seed of the random choice of blocks or points: the same seed gives the same split."))
        policy = QgsProcessingParameterEnum(
            self.NODATA_POLICY, self.tr("Patches with nodata"), list(POLICIES), defaultValue=0
        )
        policy.setHelp(
            self.tr(
                "What to do with a point whose patch holds nodata: skip the point (default), or fill the nodata "
                "with the band's training mean. With fill, a point with nodata in its own cell, or with less than "
                "{:.0%} valid data in its patch, is still skipped. 'Predict the surface' follows the same rule: "
                "with skip, a strip of half a patch along the stack's edge stays empty."
            ).format(patches.MIN_VALID_TO_FILL)
        )
        output = QgsProcessingParameterFileDestination(
            self.OUTPUT, self.tr("Training dataset"), self.tr("NumPy archive (*.npz)")
        )
        output.setHelp(
            self.tr(
                "The training dataset for 'Train the CNN': one uncompressed NumPy archive, readable with numpy "
                "alone (its members are listed in the plugin's core/dataset.py). Besides the patches and targets it "
                "records the band names, patch and pixel size, CRS, target field and units, and the nodata choice."
            )
        )
        for parameter in (points, field, factors, patch_size, split, split_field):
            self.addParameter(parameter)
        for parameter in (block_size, val_fraction, test_fraction, seed):
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(policy)
        self.addParameter(output)
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
        check_raster(layer, "the driver stack")
        grid, crs = grid_of_raster(layer), layer.crs()
        refuse_geographic(crs, "The driver stack", *grid.centre)  # its blocks and patch widths would be in degrees
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
