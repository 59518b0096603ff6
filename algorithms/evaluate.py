"""subsidence:evaluate — the CNN and ordinary kriging on the same held-out points."""

import json
import os
import tempfile

import numpy as np
from scipy.special import erf
from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from ..core import dataset, metrics, report
from ..core.dataset import open_dataset
from ..core.errors import InputError
from ..core.evaluation import compare, fold_split, pooled, spatial_folds
from ..core.kriging import MODELS
from ..core.patches import DROPPED, TEST, TRAIN, VAL, band_statistics, default_block_size
from ..core.prediction import members_output, session
from .base import SubsidenceAlgorithm
from .layers import read_decimated
from .traincnn import train_in_worker

PREDICT_BATCH = 256
MAP_SIDE = 800  # cells a side at most in the report's maps
PER_POINT = ("targets", "x", "y", "pid", "split")  # the dataset's members with a value per point
VALIDATION_FRACTION = 0.15  # of a fold's training points, in whole blocks, for early stopping

METHODS = ("cnn", "kriging")
SPLIT_NOTE = (
    "The test points are those the dataset's split set aside: with the default spatial split whole blocks of "
    "points, with training and validation patches overlapping them dropped, so both methods predict away from "
    "the data they learnt from. A random split would put test points next to training points, where kriging is "
    "nearly exact and the CNN sees its own training patches: it measures interpolation between neighbours, not "
    "prediction where radar gives no points."
)


class Evaluate(SubsidenceAlgorithm):
    REQUIRES = ("onnxruntime",)
    DATASET = "DATASET"
    MODEL = "MODEL"
    VARIOGRAM_MODEL = "VARIOGRAM_MODEL"
    N_NEIGHBOURS = "N_NEIGHBOURS"
    FOLDS = "FOLDS"
    SURFACE = "SURFACE"
    UNCERTAINTY = "UNCERTAINTY"
    APPLICABILITY = "APPLICABILITY"
    OUTPUT_TABLE = "OUTPUT_TABLE"
    OUTPUT_REPORT = "OUTPUT_REPORT"

    def name(self):
        return "evaluate"

    def displayName(self):  # noqa: N802
        return self.tr("Evaluate: CNN versus kriging")

    def group(self):
        return self.tr("Modelling")

    def groupId(self):  # noqa: N802
        return "modelling"

    def tags(self):
        return self.tr("evaluate,validation,test,rmse,cnn,kriging,comparison,accuracy").split(",")

    def shortHelpString(self):  # noqa: N802
        return self.tr(
            "Compares the trained CNN with ordinary kriging on the dataset's test points, which neither "
            "has seen: kriging is fitted (VARIOGRAM_MODEL, N_NEIGHBOURS as in 'Ordinary kriging') and run "
            "on the training and validation points only and predicts the test points at their "
            "coordinates; the CNN predicts them from their stored patches.\n"
            "OUTPUT_TABLE holds one row per test point (observed, both predictions, their errors, the "
            "kriging variance, the ensemble's standard deviation, coordinates) and one per method (n, RMSE, MAE, "
            "R², bias, calibration); IMPROVEMENT_PERCENT is how much lower the CNN's RMSE is than kriging's. "
            "OUTPUT_REPORT adds observed-versus-predicted plots, residual histograms and a map of the errors.\n"
            "Calibration: the share of test points whose error lies within ±1σ and ±2σ, σ being the standard "
            "deviation of the CNN ensemble's members (models trained with ENSEMBLE of 2 or more) and the square "
            "root of the kriging variance; a calibrated σ with Gaussian errors covers 68 % and 95 %. In the table "
            "(within_1_sigma, within_2_sigma) and the outputs CNN_WITHIN_1_SIGMA … KRIGING_WITHIN_2_SIGMA.\n"
            "SURFACE, UNCERTAINTY and APPLICABILITY (optional; the outputs of 'Predict the surface' with this "
            "model) are mapped in the report, with the points.\n"
            "FOLDS (advanced; 0 = off) adds a spatial K-fold cross-validation over all the dataset's points: whole blocks "
            "of points form the folds, and for each fold the CNN is trained again (with the settings the model records) "
            "and kriging fitted on the other folds, without the points whose patch overlaps the fold's. It costs FOLDS "
            "trainings. Its scores (pooled and per fold) go to the table, the report, CV_CNN_RMSE and CV_KRIGING_RMSE.\n"
            "Units: the dataset's target units (mm for displacement)."
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(self.DATASET, self.tr("Training dataset (.npz)"), extension="npz"))
        self.addParameter(QgsProcessingParameterFile(self.MODEL, self.tr("Model trained on it (.onnx)"), extension="onnx"))
        self.addParameter(QgsProcessingParameterEnum(self.VARIOGRAM_MODEL, self.tr("Variogram model"), options=list(MODELS), defaultValue=0))
        self.addParameter(
            QgsProcessingParameterNumber(self.N_NEIGHBOURS, self.tr("Kriging neighbours (0: all points)"), defaultValue=32, minValue=0)
        )
        folds = QgsProcessingParameterNumber(
            self.FOLDS, self.tr("Spatial cross-validation folds (0: off; each retrains the CNN)"), QgsProcessingParameterNumber.Integer, 0, minValue=0, maxValue=20
        )
        folds.setFlags(folds.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(folds)
        for key, label in ((self.SURFACE, "Predicted surface"), (self.UNCERTAINTY, "Its uncertainty"), (self.APPLICABILITY, "Its area of applicability")):
            self.addParameter(QgsProcessingParameterRasterLayer(key, self.tr(f"{label}, for the report's maps"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT_TABLE, self.tr("Comparison table"), QgsProcessing.TypeVector))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_REPORT, self.tr("Report"), self.tr("HTML files (*.html)"), optional=True, createByDefault=False
            )
        )
        for key, label in (
            ("CNN_RMSE", "CNN RMSE"), ("KRIGING_RMSE", "Kriging RMSE"), ("IMPROVEMENT_PERCENT", "CNN improvement over kriging (%)"),
            ("CV_CNN_RMSE", "CNN RMSE, spatial cross-validation"), ("CV_KRIGING_RMSE", "Kriging RMSE, spatial cross-validation"),
            *((f"{method.upper()}_{name.upper()}", f"{method}: % of test errors {name.replace('_', ' ').replace(' sigma', 'σ')}") for method in METHODS for name in metrics.COVERAGE_NAMES),
        ):  # fmt: skip
            self.addOutput(QgsProcessingOutputNumber(key, self.tr(label)))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..models.export import read_metadata

        dataset_path = self.parameterAsFile(parameters, self.DATASET, context)
        try:
            data = open_dataset(dataset_path)
        except (OSError, ValueError, KeyError) as error:
            raise QgsProcessingException(f"{dataset_path} is not a dataset written by 'Export training patches': {error}") from None
        model_path = self.parameterAsFile(parameters, self.MODEL, context)
        metadata = read_metadata(model_path)
        _check_model_fits(metadata, data)
        variogram = MODELS[self.parameterAsEnum(parameters, self.VARIOGRAM_MODEL, context)]
        neighbours = self.parameterAsInt(parameters, self.N_NEIGHBOURS, context)
        folds = self.parameterAsInt(parameters, self.FOLDS, context)
        if folds == 1:
            raise QgsProcessingException(self.tr("FOLDS is 0 (no cross-validation) or at least 2."))
        steps = QgsProcessingMultiStepFeedback(1 + folds, feedback)
        try:
            result = compare(data, _predictor(model_path), variogram, neighbours)
            cross = _cross_validate(data, metadata, folds, variogram, neighbours, steps) if folds else None
        except InputError as error:
            raise QgsProcessingException(str(error)) from None
        units = str(data["target_units"])
        for method in METHODS:
            score = result.scores[method]
            feedback.pushInfo(f"{method}: RMSE {score['rmse']:.4g} {units}, MAE {score['mae']:.4g}, R² {score['r2']:.3f}, bias {score['bias']:.4g} ({score['n']} test points)")
        feedback.pushInfo(f"Kriging used {result.kriging_points} training and validation points; none of the {len(result.test)} test points.")
        for method in METHODS:
            within = result.calibration[method]
            feedback.pushInfo(f"{method}: {within['within_1_sigma']:.0f} % of the test errors within ±1σ, {within['within_2_sigma']:.0f} % within ±2σ (calibrated: 68 %, 95 %)")
        if int(metadata.get("ensemble_members", "1")) < 2:
            feedback.pushWarning(self.tr("The model is a single network: no CNN uncertainty to calibrate (train it with ENSEMBLE of 2 or more)."))
        nan = float("nan")
        if cross:
            for method in METHODS:
                feedback.pushInfo(f"Spatial {folds}-fold cross-validation, {method}: RMSE {cross.scores[method]['rmse']:.4g} {units} ({cross.scores[method]['n']} points)")
        table = self._write_table(parameters, context, data, result, cross)
        outputs = {
            self.OUTPUT_TABLE: table,
            "CNN_RMSE": result.scores["cnn"]["rmse"],
            "KRIGING_RMSE": result.scores["kriging"]["rmse"],
            "IMPROVEMENT_PERCENT": result.improvement_percent,
            "CV_CNN_RMSE": cross.scores["cnn"]["rmse"] if cross else nan,
            "CV_KRIGING_RMSE": cross.scores["kriging"]["rmse"] if cross else nan,
            **{f"{method.upper()}_{name.upper()}": result.calibration[method][name] for method in METHODS for name in metrics.COVERAGE_NAMES},
        }
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        if report_path:
            with open(report_path, "w", encoding="utf-8") as file:
                maps = [(key, self.parameterAsRasterLayer(parameters, key, context)) for key in (self.SURFACE, self.UNCERTAINTY, self.APPLICABILITY)]
                file.write(_report(data, result, cross, units, [(key, layer) for key, layer in maps if layer is not None]))
            outputs[self.OUTPUT_REPORT] = report_path
        return outputs

    def _write_table(self, parameters, context, data, result, cross):
        fields = QgsFields()
        for name, kind in (("row", QVariant.String), ("pid", QVariant.String), ("method", QVariant.String)):
            fields.append(QgsField(name, kind))
        numbers = ("x", "y", "observed", "cnn", "kriging", "cnn_error", "kriging_error", "kriging_variance", "cnn_sigma", *metrics.NAMES, *metrics.COVERAGE_NAMES)
        for name in numbers:
            fields.append(QgsField(name, QVariant.Double))
        sink, destination = self.parameterAsSink(parameters, self.OUTPUT_TABLE, context, fields, QgsWkbTypes.NoGeometry)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT_TABLE))
        for slot, index in enumerate(result.test):
            values = [data["x"][index], data["y"][index], result.observed[slot], result.cnn[slot], result.kriging[slot]]
            values += [result.cnn[slot] - result.observed[slot], result.kriging[slot] - result.observed[slot], result.kriging_variance[slot], result.cnn_sigma[slot]]
            values = [None if np.isnan(value) else float(value) for value in values]
            self._add(sink, fields, ["point", str(data["pid"][index]), None] + values + [None] * (len(metrics.NAMES) + len(metrics.COVERAGE_NAMES)))
        summaries = [("summary", result.scores, result.calibration)]
        if cross:
            summaries += [("cross-validation", cross.scores, cross.calibration)] + [(f"fold {fold + 1}", scores, None) for fold, scores in enumerate(cross.fold_scores)]
        for row, scores, calibration in summaries:
            for method in METHODS:
                within = [None if calibration is None or np.isnan(calibration[method][key]) else calibration[method][key] for key in metrics.COVERAGE_NAMES]
                self._add(sink, fields, [row, None, method] + [None] * 9 + [float(scores[method][key]) for key in metrics.NAMES] + within)
        return destination

    def _add(self, sink, fields, attributes):
        feature = QgsFeature(fields)
        feature.setAttributes(attributes)
        if not sink.addFeature(feature, QgsFeatureSink.FastInsert):
            raise QgsProcessingException(self.writeFeatureError(sink, {}))


def _predictor(model_path):
    """predict(patches) -> every member's values (patches, members), in batches of PREDICT_BATCH patches."""
    run = session(model_path)
    name, output = run.get_inputs()[0].name, members_output(run)

    def predict(patches):
        parts = [run.run([output], {name: patches[start : start + PREDICT_BATCH]})[0] for start in range(0, len(patches), PREDICT_BATCH)]
        return np.concatenate(parts)

    return predict


def _cross_validate(data, metadata, folds, variogram, neighbours, feedback):
    """Spatial K-fold cross-validation: per fold, the CNN retrained (with the model's own training
    settings) and kriging fitted on the other folds' points, both predicting the fold's."""
    settings = json.loads(metadata.get("training", "{}")).get("settings")
    if not settings:
        raise QgsProcessingException("The model does not record how it was trained, so FOLDS cannot retrain it: train it again with 'Train the CNN' (this version).")
    size, pixel, x, y = int(data["patch_size"]), data["pixel_size"], data["x"], data["y"]
    block = default_block_size(x, y, size * float(np.max(pixel)))
    rng = np.random.default_rng(settings["seed"])
    fold_of = spatial_folds(x, y, block, folds, rng)
    feedback.pushWarning(
        f"Cross-validation trains the CNN{' ensemble (%d members)' % settings['members'] if settings.get('members', 1) > 1 else ''} {folds} more times "
        f"(with the same settings): about {folds} times as long as its training took."
    )
    predicted = {method: np.full(len(x), np.nan) for method in METHODS}
    sigma = {method: np.full(len(x), np.nan) for method in METHODS}
    fold_scores = []
    with tempfile.TemporaryDirectory(prefix="subsidence-folds-") as folder:
        for fold in range(folds):
            feedback.setCurrentStep(1 + fold)
            split = fold_split(fold_of == fold, x, y, pixel, size, block, VALIDATION_FRACTION, rng)
            keep = np.flatnonzero(split != DROPPED)
            feedback.pushInfo(
                f"Fold {fold + 1}/{folds}: {(split == TEST).sum()} test points, {(split == TRAIN).sum()} training, {(split == VAL).sum()} "
                f"validation, {(split == DROPPED).sum()} left out (their patch overlaps a test patch)."
            )
            path = os.path.join(folder, "fold.npz")
            _write_fold(path, data, keep, split[keep])
            train_in_worker(path, folder, settings, feedback)
            comparison = compare(open_dataset(path), _predictor(os.path.join(folder, "model.onnx")), variogram, neighbours)
            for method in METHODS:
                predicted[method][keep[comparison.test]] = getattr(comparison, method)
            sigma["cnn"][keep[comparison.test]] = comparison.cnn_sigma
            sigma["kriging"][keep[comparison.test]] = np.sqrt(comparison.kriging_variance)
            fold_scores.append(comparison.scores)
    return pooled(data, predicted, sigma, fold_scores)


def _write_fold(path, data, keep, split):
    """The dataset of one fold: its points, its split, the band statistics of its training patches."""
    mean, std = band_statistics(data["patches"], keep[split == TRAIN])
    arrays = {key: value[keep] if key in PER_POINT else value for key, value in data.items() if key != "patches"}
    arrays.update(split=split.astype(np.int8), band_mean=mean, band_std=std)
    dataset.write(path, data["patches"], keep, arrays)


def _check_model_fits(metadata, data):
    names = json.loads(metadata.get("band_names", "[]"))
    if names != [str(name) for name in data["band_names"]] or int(metadata.get("patch_size", -1)) != int(data["patch_size"]):
        raise QgsProcessingException(
            "The model was not trained on this dataset's drivers: it takes {} at {} x {}, the dataset has {} at {} x {}.".format(
                ", ".join(names) or "unknown bands", metadata.get("patch_size"), metadata.get("patch_size"),
                ", ".join(map(str, data["band_names"])), int(data["patch_size"]), int(data["patch_size"]),
            )
        )  # fmt: skip


def _report(data, result, cross, units, maps):
    scatter = report.figure(10, 4)
    low, high = float(result.observed.min()), float(result.observed.max())
    for slot, method in enumerate(METHODS):
        axes = scatter.add_subplot(1, 2, slot + 1)
        axes.scatter(result.observed, getattr(result, method), s=6)
        axes.plot([low, high], [low, high], color="black", linewidth=0.8)
        axes.set(title=method, xlabel=f"observed ({units})", ylabel=f"predicted ({units})")
    histograms = report.figure(10, 3.5)
    for slot, method in enumerate(METHODS):
        axes = histograms.add_subplot(1, 2, slot + 1)
        axes.hist(getattr(result, method) - result.observed, bins=30)
        axes.set(title=f"{method} residuals", xlabel=f"predicted - observed ({units})", ylabel="points")
    errors = report.figure(10, 4.5)
    limit = float(np.max(np.abs(np.concatenate([result.cnn, result.kriging]) - np.tile(result.observed, 2)))) or 1.0
    x, y = data["x"][result.test], data["y"][result.test]
    others = np.flatnonzero(data["split"] != 2)
    for slot, method in enumerate(METHODS):
        axes = errors.add_subplot(1, 2, slot + 1)
        axes.scatter(data["x"][others], data["y"][others], s=2, color="lightgrey", label="training and validation")
        shown = axes.scatter(x, y, c=getattr(result, method) - result.observed, s=10, cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes.set(title=f"{method} error at the test points", aspect="equal")
        errors.colorbar(shown, ax=axes, label=units)
    header = ["method", "n", f"RMSE ({units})", f"MAE ({units})", "R²", f"bias ({units})"]
    rows = [[method, *(result.scores[method][key] for key in metrics.NAMES)] for method in METHODS]
    sections = [("Calibration of the uncertainties", _calibration_section(result, cross))]
    if maps:
        sections.append(("Maps", _maps(data, maps, units)))
    if cross:
        sections.append(("Spatial cross-validation", _cross_section(cross, header)))
    return report.page(
        "CNN versus ordinary kriging on the held-out points",
        [
            ("Scores", report.table(["method", "n", f"RMSE ({units})", f"MAE ({units})", "R²", f"bias ({units})"], rows)
             + report.paragraph(f"The CNN's RMSE is {result.improvement_percent:.1f} % lower than kriging's (negative: higher).")),
            ("Which points", report.paragraph(SPLIT_NOTE) + report.paragraph(
                f"{len(result.test)} test points; kriging used the {result.kriging_points} training and validation points.")),
            ("Observed and predicted", report.image(scatter, "observed versus predicted")),
            ("Residuals", report.image(histograms, "residual histograms")),
            ("Map of the errors", report.image(errors, "errors at the test points")),
            *sections,
        ],
    )  # fmt: skip


def _cross_section(cross, header):
    folds = len(cross.fold_scores)
    rows = [[f"{method}, all points", *(cross.scores[method][key] for key in metrics.NAMES)] for method in METHODS]
    for fold, scores in enumerate(cross.fold_scores):
        rows += [[f"{method}, fold {fold + 1}", *(scores[method][key] for key in metrics.NAMES)] for method in METHODS]
    return report.paragraph(
        f"Every point of the dataset was held out once: the points fall into {folds} folds of whole spatial blocks; for each fold "
        "the CNN was trained again, with the model's own settings, and kriging fitted, on the other folds' points, leaving out "
        "those whose patch overlaps a held-out patch."
    ) + report.table(header, rows)


def _calibration_section(result, cross):
    rows = [[f"{method}, test points", *(result.calibration[method][key] for key in metrics.COVERAGE_NAMES)] for method in METHODS]
    if cross:
        rows += [[f"{method}, cross-validation", *(cross.calibration[method][key] for key in metrics.COVERAGE_NAMES)] for method in METHODS]
    rows.append(["calibrated (normal errors)", *metrics.GAUSSIAN_COVERAGE])
    curve = report.figure(6, 4)
    axes = curve.add_subplot()
    k = np.linspace(0, 3, 61)
    axes.plot(k, 100 * erf(k / np.sqrt(2)), color="black", linewidth=0.8, label="calibrated")
    for method, sigma in (("cnn", result.cnn_sigma), ("kriging", np.sqrt(result.kriging_variance))):
        if np.isfinite(sigma).all():
            ratio = np.abs(getattr(result, method) - result.observed) / np.maximum(sigma, np.finfo(float).tiny)
            axes.plot(k, [100 * np.mean(ratio <= value) for value in k], label=method)
    axes.set(xlabel="k (error within ±kσ)", ylabel="% of the test points", ylim=(0, 100))
    axes.legend()
    note = (
        "σ: for the CNN the standard deviation of the ensemble members' predictions, for kriging the square root of its "
        "variance. Below the calibrated line σ understates the errors (too confident); above, it overstates them."
    )
    if not np.isfinite(result.cnn_sigma).all():
        note += " The CNN is a single network: train it with ENSEMBLE of 2 or more for an uncertainty."
    return report.paragraph(note) + report.table(["σ of", "% within ±1σ", "% within ±2σ"], rows) + report.image(curve, "calibration curve")


def _maps(data, maps, units):
    """The given rasters side by side, decimated, with the points on top."""
    from osgeo import gdal

    titles = {"SURFACE": f"predicted surface ({units})", "UNCERTAINTY": f"uncertainty, ensemble σ ({units})", "APPLICABILITY": "dissimilarity index"}
    shown = report.figure(5.5 * len(maps), 4.8)
    test = data["split"] == 2
    for slot, (key, layer) in enumerate(maps):
        raster = gdal.Open(layer.source())  # kept open while its band is read
        if raster is None:
            raise QgsProcessingException(f"GDAL cannot open {layer.source()}: {gdal.GetLastErrorMsg()}")
        values, extent = _decimated(raster, 1)
        axes = shown.add_subplot(1, len(maps), slot + 1)
        finite = values[np.isfinite(values)]
        if key == "SURFACE" and len(finite) and finite.min() < 0 < finite.max():
            limit = float(np.percentile(np.abs(finite), 98))
            image = axes.imshow(values, extent=extent, cmap="RdBu", vmin=-limit, vmax=limit)
        else:
            low, high = np.percentile(finite, [2, 98]) if len(finite) else (0, 1)
            image = axes.imshow(values, extent=extent, cmap="magma_r", vmin=low, vmax=high)
        if key == "APPLICABILITY" and raster.RasterCount >= 2:
            inside, _ = _decimated(raster, 2)
            axes.contour(np.nan_to_num(inside, nan=1.0), levels=[0.5], colors="black", linewidths=0.8, extent=extent, origin="upper")
            titles[key] += " (line: edge of the area of applicability)"
        axes.scatter(data["x"][~test], data["y"][~test], s=1, color="grey", label="training and validation")
        axes.scatter(data["x"][test], data["y"][test], s=3, color="black", label="test")
        axes.set(title=titles[key], aspect="equal")
        axes.tick_params(labelsize=7)
        axes.tick_params(axis="x", labelrotation=30)
        shown.colorbar(image, ax=axes, shrink=0.7)
    return report.image(shown, "maps of the surface, its uncertainty and its area of applicability")


def _decimated(raster, number):
    """Band `number` read at most MAP_SIDE cells a side (NaN for nodata) and its (left, right, bottom, top)."""
    left, pixel_width, _, top, _, pixel_height = raster.GetGeoTransform()
    extent = (left, left + raster.RasterXSize * pixel_width, top + raster.RasterYSize * pixel_height, top)
    return read_decimated(raster.GetRasterBand(number), MAP_SIDE), extent
