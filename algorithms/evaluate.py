"""subsidence:evaluate — every method (the null model, kriging, regression kriging, the CNN, the
hybrid) on the same held-out points."""

import os
import tempfile

import numpy as np
from scipy.special import erf
from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsWkbTypes,
)

from ..core import dataset, metrics, report
from ..core.calibration import MIN_POINTS as MIN_CALIBRATION_POINTS
from ..core.dataset import open_dataset, split_fingerprint
from ..core.errors import InputError
from ..core.evaluation import METHODS, NAMES, compare, fold_split, pooled, spatial_folds, verdict
from ..core.kriging import MODELS
from ..core.patches import DROPPED, TEST, TRAIN, VAL, default_block_size
from ..core.prediction import members_output, session
from ..models.training import TrainingError, train_in_worker
from .base import SubsidenceAlgorithm, read_dataset, read_model_card
from .layers import REPROJECT_RASTER, crs_from_text, new_fields, open_raster, read_decimated, refuse_geographic
from .settings import torch_python_setting

PREDICT_BATCH = 256
MAP_SIDE = 800  # cells a side at most in the report's maps
VALIDATION_FRACTION = 0.15  # of a fold's training points, in whole blocks, for early stopping

SIGMA_METHODS = ("kriging", "regression_kriging", "cnn", "hybrid")  # the methods with a σ
MAPPED = ("kriging", "regression_kriging", "cnn", "hybrid")  # shown in the plots (the mean is a constant)
PROBABILISTIC = (*metrics.COVERAGE_NAMES, "crps")
SPLIT_NOTE = (
    "The test points are those the dataset's split set aside: with the default spatial split whole blocks of "
    "points, with training and validation patches overlapping them dropped, so every method predicts away from "
    "the data they learnt from. A random split would put test points next to training points, where kriging is "
    "nearly exact and the CNN sees its own training patches: it measures interpolation between neighbours, not "
    "prediction where radar gives no points."
)


class Evaluate(SubsidenceAlgorithm):
    REQUIRES = ("onnxruntime",)
    GROUP = "evaluation"
    HELP_SECTION = "Evaluation"
    SHORT_DESCRIPTION = (
        "Which map to trust: mean, kriging, regression kriging, CNN and hybrid scored on held-out points"
    )
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
    MEAN_RMSE = "MEAN_RMSE"
    KRIGING_RMSE = "KRIGING_RMSE"
    REGRESSION_KRIGING_RMSE = "REGRESSION_KRIGING_RMSE"
    CNN_RMSE = "CNN_RMSE"
    HYBRID_RMSE = "HYBRID_RMSE"
    CV_MEAN_RMSE = "CV_MEAN_RMSE"
    CV_KRIGING_RMSE = "CV_KRIGING_RMSE"
    CV_REGRESSION_KRIGING_RMSE = "CV_REGRESSION_KRIGING_RMSE"
    CV_CNN_RMSE = "CV_CNN_RMSE"
    CV_HYBRID_RMSE = "CV_HYBRID_RMSE"
    IMPROVEMENT_PERCENT = "IMPROVEMENT_PERCENT"
    KRIGING_WITHIN_1_SIGMA = "KRIGING_WITHIN_1_SIGMA"
    KRIGING_WITHIN_2_SIGMA = "KRIGING_WITHIN_2_SIGMA"
    KRIGING_CRPS = "KRIGING_CRPS"
    REGRESSION_KRIGING_WITHIN_1_SIGMA = "REGRESSION_KRIGING_WITHIN_1_SIGMA"
    REGRESSION_KRIGING_WITHIN_2_SIGMA = "REGRESSION_KRIGING_WITHIN_2_SIGMA"
    REGRESSION_KRIGING_CRPS = "REGRESSION_KRIGING_CRPS"
    CNN_WITHIN_1_SIGMA = "CNN_WITHIN_1_SIGMA"
    CNN_WITHIN_2_SIGMA = "CNN_WITHIN_2_SIGMA"
    CNN_CRPS = "CNN_CRPS"
    HYBRID_WITHIN_1_SIGMA = "HYBRID_WITHIN_1_SIGMA"
    HYBRID_WITHIN_2_SIGMA = "HYBRID_WITHIN_2_SIGMA"
    HYBRID_CRPS = "HYBRID_CRPS"
    BEST_METHOD = "BEST_METHOD"
    VERDICT = "VERDICT"
    # The outputs of each method (core.evaluation.METHODS) and of each σ score (PROBABILISTIC).
    RMSE_OUTPUTS = {
        "mean": MEAN_RMSE,
        "kriging": KRIGING_RMSE,
        "regression_kriging": REGRESSION_KRIGING_RMSE,
        "cnn": CNN_RMSE,
        "hybrid": HYBRID_RMSE,
    }
    CV_RMSE_OUTPUTS = {
        "mean": CV_MEAN_RMSE,
        "kriging": CV_KRIGING_RMSE,
        "regression_kriging": CV_REGRESSION_KRIGING_RMSE,
        "cnn": CV_CNN_RMSE,
        "hybrid": CV_HYBRID_RMSE,
    }
    SIGMA_OUTPUTS = {
        "kriging": (KRIGING_WITHIN_1_SIGMA, KRIGING_WITHIN_2_SIGMA, KRIGING_CRPS),
        "regression_kriging": (
            REGRESSION_KRIGING_WITHIN_1_SIGMA,
            REGRESSION_KRIGING_WITHIN_2_SIGMA,
            REGRESSION_KRIGING_CRPS,
        ),
        "cnn": (CNN_WITHIN_1_SIGMA, CNN_WITHIN_2_SIGMA, CNN_CRPS),
        "hybrid": (HYBRID_WITHIN_1_SIGMA, HYBRID_WITHIN_2_SIGMA, HYBRID_CRPS),
    }

    def name(self):
        return "evaluate"

    def displayName(self):
        return self.tr("Evaluate: every method on the held-out points")

    def tags(self):
        return self.tr(
            "evaluate,validation,test,rmse,cnn,kriging,regression kriging,hybrid,null model,comparison,accuracy,"
            "calibration,crps"
        ).split(",")

    def shortHelpString(self):
        return self.tr(
            "Tells which map to trust: five methods predict the dataset's test points, which none of them has "
            "seen, and are scored on exactly those points: the training mean (the null model: a map that does "
            "not beat it is no map), ordinary kriging, regression kriging (a linear trend on the drivers at the "
            "point and over its patch, plus kriging of its residuals), the CNN, and the hybrid (the CNN plus "
            "kriging of its residuals at the validation points, what 'Krige the residuals of a surface' maps).\n"
            "Out come a comparison table, each method's RMSE, how well each σ is calibrated (errors within ±1σ "
            "and ±2σ, CRPS) and a verdict: the best method and which map to use; optionally an HTML report with "
            "plots and maps, and a spatial cross-validation.\n"
            "Units: the dataset's target units (mm for displacement).\n"
            "Method: a hold-out test on the dataset's spatial split, and optionally spatial K-fold "
            "cross-validation (Roberts et al. 2017); CRPS after Gneiting and Raftery (2007)."
        )

    def initAlgorithm(self, config=None):
        dataset_file = QgsProcessingParameterFile(self.DATASET, self.tr("Training dataset (.npz)"), extension="npz")
        dataset_file.setHelp(
            self.tr(
                "The dataset from 'Export training patches' the model was trained on; its test points are those "
                "every method is scored on. With the default spatial split they are whole blocks of points away "
                "from the training ones, so the scores measure prediction where radar gives no points. A "
                "dataset whose stack is in a geographic CRS (degrees) is refused: kriging needs metres."
            )
        )
        model = QgsProcessingParameterFile(self.MODEL, self.tr("Model trained on it (.onnx)"), extension="onnx")
        model.setHelp(
            self.tr(
                "The model from 'Train the CNN' trained on this very dataset. One trained on a dataset exported "
                "again (e.g. with another random seed) is refused: its training points may be this dataset's test "
                "points. So is a model refitted on every point, which holds no point out."
            )
        )
        variogram = QgsProcessingParameterEnum(
            self.VARIOGRAM_MODEL, self.tr("Variogram model"), options=list(MODELS), defaultValue=0
        )
        variogram.setHelp(
            self.tr(
                "The variogram of the kriging, the regression kriging and the hybrid, fitted as in 'Ordinary "
                "kriging'; default spherical."
            )
        )
        neighbours = QgsProcessingParameterNumber(
            self.N_NEIGHBOURS, self.tr("Kriging neighbours (0: all points)"), defaultValue=32, minValue=0
        )
        neighbours.setHelp(
            self.tr(
                "How many of the nearest points krige each test point in the kriging, the regression kriging and "
                "the hybrid (default 32; 0: all points), as in 'Ordinary kriging'."
            )
        )
        folds = QgsProcessingParameterNumber(
            self.FOLDS,
            self.tr("Spatial cross-validation folds (0: off; each retrains the CNN)"),
            QgsProcessingParameterNumber.Integer,
            0,
            minValue=0,
            maxValue=20,
        )
        folds.setHelp(
            self.tr(
                "0 (default): off. 2 or more: a spatial K-fold cross-validation over all the dataset's points. "
                "Whole blocks of points form the folds; for each fold the CNN is trained again, with the settings "
                "the model records, and every method fitted on the other folds, without the points whose patch "
                "overlaps the fold's. It costs one training per fold. The test points are often a few blocks, so "
                "their scores are one draw; over the folds every point is held out once, which tells how far to "
                "trust each σ. Pooled and per-fold scores go to the table, the report and the cross-validation "
                "RMSE outputs."
            )
        )
        folds.setFlags(folds.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        for parameter in (dataset_file, model, variogram, neighbours, folds):
            self.addParameter(parameter)
        for key, label, help_text in (
            (
                self.SURFACE,
                "Predicted surface",
                "Optional: the surface 'Predict the surface' wrote with this model, mapped in the report with the "
                "points (test points in black).",
            ),
            (
                self.UNCERTAINTY,
                "Its uncertainty",
                "Optional: the uncertainty (standard deviation σ) 'Predict the surface' wrote with this model, "
                "mapped in the report.",
            ),
            (
                self.APPLICABILITY,
                "Its area of applicability",
                "Optional: the area of applicability 'Predict the surface' wrote with this model; the report maps "
                "its dissimilarity index and outlines the area.",
            ),
        ):
            layer = QgsProcessingParameterRasterLayer(key, self.tr(f"{label}, for the report's maps"), optional=True)
            layer.setHelp(self.tr(help_text))
            self.addParameter(layer)
        table = QgsProcessingParameterFeatureSink(
            self.OUTPUT_TABLE, self.tr("Comparison table"), QgsProcessing.TypeVector
        )
        table.setHelp(
            self.tr(
                "One row per test point (coordinates, observed, every method's prediction, error and σ) and one "
                "per method (n, RMSE, MAE, R², bias and, for the methods with a σ, the % of errors within ±1σ "
                "and ±2σ and the CRPS). Calibrated normal errors put 68 % and 95 % within ±1σ and ±2σ; the CRPS, "
                "in the target's units, rewards a σ both honest and small. σ is the kriging standard deviation, "
                "and for the CNN its ensemble's spread plus a noise variance calibrated on the validation points "
                "apart from the training patches, so that the test points take no part in it."
            )
        )
        self.addParameter(table)
        report_file = self.report_destination(self.OUTPUT_REPORT)
        report_file.setHelp(
            self.tr(
                "An optional HTML page: the verdict, the scores, observed against predicted, the residuals, a map "
                "of the errors at the test points, the calibration of every σ and, when given, the maps of the "
                "surface, its uncertainty and its area of applicability."
            )
        )
        self.addParameter(report_file)
        for method in METHODS:
            self.addOutput(QgsProcessingOutputNumber(self.RMSE_OUTPUTS[method], self.tr(f"RMSE: {NAMES[method]}")))
            self.addOutput(
                QgsProcessingOutputNumber(
                    self.CV_RMSE_OUTPUTS[method], self.tr(f"RMSE, spatial cross-validation: {NAMES[method]}")
                )
            )
        self.addOutput(QgsProcessingOutputNumber(self.IMPROVEMENT_PERCENT, self.tr("CNN improvement over kriging (%)")))
        for method in SIGMA_METHODS:
            for name, output in zip(PROBABILISTIC, self.SIGMA_OUTPUTS[method]):
                label = (
                    "CRPS" if name == "crps" else "% of test errors " + name.replace("_", " ").replace(" sigma", "σ")
                )
                self.addOutput(QgsProcessingOutputNumber(output, self.tr(f"{NAMES[method]}: {label}")))
        self.addOutput(QgsProcessingOutputString(self.BEST_METHOD, self.tr("The method with the lowest test RMSE")))
        self.addOutput(QgsProcessingOutputString(self.VERDICT, self.tr("Which map to use, in words")))

    def processAlgorithm(self, parameters, context, feedback):
        dataset_path = self.parameterAsFile(parameters, self.DATASET, context)
        data = read_dataset(dataset_path)
        _refuse_geographic_dataset(data)
        model_path = self.parameterAsFile(parameters, self.MODEL, context)
        card = read_model_card(model_path, model_path)
        _check_model_fits(card, data)
        if card.refit is not None:
            raise QgsProcessingException(
                "The model was trained again on every point of the dataset (REFIT), its test points included, so "
                "no point is held out from it: evaluate the model trained on the split (Train the CNN without REFIT)."
            )
        _check_split(card, data, feedback)
        variogram = MODELS[self.parameterAsEnum(parameters, self.VARIOGRAM_MODEL, context)]
        neighbours = self.parameterAsInt(parameters, self.N_NEIGHBOURS, context)
        folds = self.parameterAsInt(parameters, self.FOLDS, context)
        if folds == 1:
            raise QgsProcessingException(self.tr("FOLDS is 0 (no cross-validation) or at least 2."))
        steps = QgsProcessingMultiStepFeedback(1 + folds, feedback)
        try:
            result = compare(data, _predictor(model_path), variogram, neighbours)
            cross = _cross_validate(data, card, folds, variogram, neighbours, steps) if folds else None
        except InputError as error:
            raise QgsProcessingException(str(error)) from None
        units = str(data["target_units"])
        ranking = result.ranking()
        advice = verdict(ranking, result.scores)
        self._log(result, cross, folds, units, card, advice, feedback)
        table = self._write_table(parameters, context, data, result, cross)
        outputs = {
            self.OUTPUT_TABLE: table,
            **{self.RMSE_OUTPUTS[method]: result.scores[method]["rmse"] for method in METHODS},
            **{
                self.CV_RMSE_OUTPUTS[method]: cross.scores[method]["rmse"] if cross else float("nan")
                for method in METHODS
            },
            self.IMPROVEMENT_PERCENT: 100.0 * (1.0 - result.scores["cnn"]["rmse"] / result.scores["kriging"]["rmse"]),
            **{
                output: result.calibration[method][name]
                for method in SIGMA_METHODS
                for name, output in zip(PROBABILISTIC, self.SIGMA_OUTPUTS[method])
            },
            self.BEST_METHOD: ranking[0] if ranking else "",
            self.VERDICT: advice,
        }
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        if report_path:
            with open(report_path, "w", encoding="utf-8") as file:
                maps = [
                    (key, self.parameterAsRasterLayer(parameters, key, context))
                    for key in (self.SURFACE, self.UNCERTAINTY, self.APPLICABILITY)
                ]
                file.write(
                    _report(
                        data, result, cross, units, advice, [(key, layer) for key, layer in maps if layer is not None]
                    )
                )
            outputs[self.OUTPUT_REPORT] = report_path
        return outputs

    def _log(self, result, cross, folds, units, card, advice, feedback):
        for method in METHODS:
            score, within = result.scores[method], result.calibration[method]
            line = (
                f"{NAMES[method]}: RMSE {score['rmse']:.4g} {units}, MAE {score['mae']:.4g}, R² {score['r2']:.3f}, "
                f"bias {score['bias']:.4g} ({score['n']} test points, from {result.points[method]} points)"
            )
            if np.isfinite(within["crps"]):
                line += (
                    f"; {within['within_1_sigma']:.0f} % of the errors within ±1σ, {within['within_2_sigma']:.0f} % "
                    f"within ±2σ (calibrated: 68 %, 95 %), CRPS {within['crps']:.4g}"
                )
            feedback.pushInfo(line)
        for note in result.notes:
            feedback.pushWarning(note)
        if np.isfinite(result.noise_variance):
            feedback.pushInfo(
                f"The CNN's σ: its ensemble's spread plus a noise variance of {result.noise_variance:.4g} {units}² "
                f"calibrated on {result.points['calibration']} validation points."
            )
        else:
            feedback.pushWarning(
                self.tr(
                    "The dataset has no validation points: the CNN's σ is its ensemble's spread alone, uncalibrated."
                )
            )
        if card.ensemble_members < 2:
            feedback.pushInfo(
                self.tr(
                    "The model is a single network: its σ is the calibrated noise alone, the same everywhere (an "
                    "ensemble, ENSEMBLE of 5 or more, adds where the networks disagree)."
                )
            )
        if cross:
            for method in METHODS:
                feedback.pushInfo(
                    f"Spatial {folds}-fold cross-validation, {NAMES[method]}: RMSE "
                    f"{cross.scores[method]['rmse']:.4g} {units} ({cross.scores[method]['n']} points)"
                )
        feedback.pushInfo(advice)

    def _write_table(self, parameters, context, data, result, cross):
        columns = point_columns(data, result)
        numbers = (*columns, *metrics.NAMES, *PROBABILISTIC)
        fields = new_fields(
            [("row", "string"), ("pid", "string"), ("method", "string")] + [(n, "double") for n in numbers]
        )
        sink, destination = self.parameterAsSink(parameters, self.OUTPUT_TABLE, context, fields, QgsWkbTypes.NoGeometry)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT_TABLE))
        for slot, index in enumerate(result.test):
            values = [None if np.isnan(column[slot]) else float(column[slot]) for column in columns.values()]
            self._add(
                sink,
                fields,
                ["point", str(data["pid"][index]), None] + values + [None] * (len(metrics.NAMES) + len(PROBABILISTIC)),
            )
        summaries = [("summary", result.scores, result.calibration)]
        if cross:
            summaries += [("cross-validation", cross.scores, cross.calibration)] + [
                (f"fold {fold + 1}", scores, None) for fold, scores in enumerate(cross.fold_scores)
            ]
        for row, scores, calibration in summaries:
            for method in METHODS:
                within = [
                    None if calibration is None or np.isnan(calibration[method][key]) else calibration[method][key]
                    for key in PROBABILISTIC
                ]
                numbers = [
                    None if np.isnan(scores[method][key]) else float(scores[method][key]) for key in metrics.NAMES
                ]
                self._add(sink, fields, [row, None, method] + [None] * len(columns) + numbers + within)
        return destination

    def _add(self, sink, fields, attributes):
        feature = QgsFeature(fields)
        feature.setAttributes(attributes)
        if not sink.addFeature(feature, QgsFeatureSink.FastInsert):
            raise QgsProcessingException(self.writeFeatureError(sink, {}))


def _refuse_geographic_dataset(data):
    """Kriging the dataset's points in degrees would give wrong variograms: refused, as the export
    of such a dataset now is, with the UTM zone of the points' centre to reproject the stack to."""
    if "crs" not in data or not len(data["x"]):
        return
    x, y = data["x"], data["y"]
    refuse_geographic(
        crs_from_text(str(data["crs"])),
        "The dataset's driver stack",
        (x.min() + x.max()) / 2,
        (y.min() + y.max()) / 2,
        fix=REPROJECT_RASTER + ", then export the patches and train the CNN again",
    )


def point_columns(data, result):
    """The table's numbers for each test point, by column name: coordinates, observed, every
    method's prediction and error, the kriging variance, each σ, and the CNN ensemble's spread."""
    columns = {"x": data["x"][result.test], "y": data["y"][result.test], "observed": result.observed}
    columns.update({method: result.predicted[method] for method in METHODS})
    columns.update({f"{method}_error": result.predicted[method] - result.observed for method in METHODS})
    columns["kriging_variance"] = result.sigma["kriging"] ** 2
    columns.update({f"{method}_sigma": result.sigma[method] for method in SIGMA_METHODS if method != "kriging"})
    columns["cnn_spread"] = result.cnn_spread
    return columns


def _predictor(model_path):
    """predict(patches) -> every member's values (patches, members), in batches of PREDICT_BATCH patches."""
    run = session(model_path)
    name, output = run.get_inputs()[0].name, members_output(run)

    def predict(patches):
        parts = [
            run.run([output], {name: patches[start : start + PREDICT_BATCH]})[0]
            for start in range(0, len(patches), PREDICT_BATCH)
        ]
        return np.concatenate(parts)

    return predict


def _cross_validate(data, card, folds, variogram, neighbours, feedback):
    """Spatial K-fold cross-validation: per fold, the CNN retrained (with the model's own training
    settings) and every other method fitted on the other folds' points, all predicting the fold's."""
    settings = card.settings
    if settings is None:
        raise QgsProcessingException(
            "The model does not record how it was trained, so FOLDS cannot retrain it: train it again with "
            "'Train the CNN' (this version)."
        )
    size, pixel, x, y = int(data["patch_size"]), data["pixel_size"], data["x"], data["y"]
    block = default_block_size(x, y, size * float(np.max(pixel)))
    rng = np.random.default_rng(settings.seed)
    fold_of = spatial_folds(x, y, block, folds, rng)
    members = settings.members or 1
    networks = f"CNN ensemble ({members} members)" if members > 1 else "CNN"
    feedback.pushWarning(
        f"Cross-validation trains the {networks} {folds} more times (with the same settings): about {folds} times "
        "as long as its training took."
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
                f"Fold {fold + 1}/{folds}: {(split == TEST).sum()} test points, {(split == TRAIN).sum()} training, "
                f"{(split == VAL).sum()} validation, {(split == DROPPED).sum()} left out (their patch overlaps a "
                "test patch)."
            )
            path = os.path.join(folder, "fold.npz")
            dataset.write_subset(path, data, keep, split[keep])
            try:
                train_in_worker(path, folder, settings, torch_python_setting(), feedback)
            except TrainingError as error:
                raise QgsProcessingException(str(error)) from None
            comparison = compare(
                open_dataset(path), _predictor(os.path.join(folder, "model.onnx")), variogram, neighbours
            )
            for method in METHODS:
                predicted[method][keep[comparison.test]] = comparison.predicted[method]
                sigma[method][keep[comparison.test]] = comparison.sigma[method]
            for note in comparison.notes:
                feedback.pushWarning(f"Fold {fold + 1}: {note}")
            fold_scores.append(comparison.scores)
    return pooled(data, predicted, sigma, fold_scores)


def _check_model_fits(card, data):
    names = [str(name) for name in data["band_names"]]
    size = int(data["patch_size"])
    if list(card.band_names) != names or card.patch_size != size:
        raise QgsProcessingException(
            f"The model was not trained on this dataset's drivers: it takes {', '.join(card.band_names)} at "
            f"{card.patch_size} x {card.patch_size}, the dataset has {', '.join(names)} at {size} x {size}."
        )


def _check_split(card, data, feedback):
    """Refuses a dataset whose points or split differ from those the model was trained on: its test
    points could be the model's training points."""
    if card.split_fingerprint is None:
        feedback.pushWarning(
            card.unrecorded_warning(
                "the split of the points it was trained on", "Whether this dataset is the one it was trained on"
            )
        )
    elif card.split_fingerprint != split_fingerprint(data["x"], data["y"], data["split"]):
        raise QgsProcessingException(
            "This model was trained on another split of these points (e.g. exported with another SEED), or on "
            "other points: its training points may be this dataset's test points. Evaluate it with the dataset it "
            "was trained on, or train again on this one."
        )


def _report(data, result, cross, units, advice, maps):
    shown = [method for method in MAPPED if np.isfinite(result.predicted[method]).all()]
    scatter = report.figure(3.2 * len(shown), 3.4)
    low, high = float(result.observed.min()), float(result.observed.max())
    for slot, method in enumerate(shown):
        axes = scatter.add_subplot(1, len(shown), slot + 1)
        axes.scatter(result.observed, result.predicted[method], s=6)
        axes.plot([low, high], [low, high], color="black", linewidth=0.8)
        axes.set(title=NAMES[method], xlabel=f"observed ({units})", ylabel=f"predicted ({units})" if slot == 0 else "")
    histograms = report.figure(3.2 * len(shown), 3)
    for slot, method in enumerate(shown):
        axes = histograms.add_subplot(1, len(shown), slot + 1)
        axes.hist(result.predicted[method] - result.observed, bins=30)
        axes.set(title=NAMES[method], xlabel=f"predicted - observed ({units})", ylabel="points" if slot == 0 else "")
    errors = report.figure(3.6 * len(shown), 3.8)
    limit = float(np.max(np.abs([result.predicted[method] - result.observed for method in shown]))) or 1.0
    x, y = data["x"][result.test], data["y"][result.test]
    others = np.flatnonzero(data["split"] != TEST)
    for slot, method in enumerate(shown):
        axes = errors.add_subplot(1, len(shown), slot + 1)
        axes.scatter(data["x"][others], data["y"][others], s=2, color="lightgrey", label="training and validation")
        image = axes.scatter(
            x, y, c=result.predicted[method] - result.observed, s=10, cmap="RdBu_r", vmin=-limit, vmax=limit
        )
        axes.set(title=NAMES[method], aspect="equal")
        axes.tick_params(labelsize=6)
        errors.colorbar(image, ax=axes, label=units, shrink=0.7)
    header = [
        "method",
        "n",
        f"RMSE ({units})",
        f"MAE ({units})",
        "R²",
        f"bias ({units})",
        "% within ±1σ",
        "% within ±2σ",
        f"CRPS ({units})",
    ]
    rows = [
        [
            NAMES[method],
            *(result.scores[method][key] for key in metrics.NAMES),
            *(result.calibration[method][key] for key in PROBABILISTIC),
        ]
        for method in METHODS
    ]
    sections = [("Calibration of the uncertainties", _calibration_section(result, cross))]
    if maps:
        sections.append(("Maps", _maps(data, maps, units)))
    if cross:
        sections.append(("Spatial cross-validation", _cross_section(cross, header)))
    learnt_from = ", ".join(f"{NAMES[method]} {result.points[method]}" for method in METHODS)
    return report.page(
        "Which map to trust: every method on the held-out points",
        [
            ("Verdict", report.paragraph(advice)),
            (
                "Scores",
                report.table(header, rows)
                + report.paragraph(
                    "Ranked by RMSE on the test points; σ-based columns are empty for a method without a σ. "
                    + "".join(note + " " for note in result.notes)
                ),
            ),
            (
                "Which points",
                report.paragraph(SPLIT_NOTE)
                + report.paragraph(
                    f"{len(result.test)} test points. Points each method learnt from: {learnt_from} (the hybrid "
                    "kriges the CNN's residuals at the validation points only; kriging and regression kriging use "
                    "the training and validation points)."
                ),
            ),
            ("Observed and predicted", report.image(scatter, "observed versus predicted")),
            ("Residuals", report.image(histograms, "residual histograms")),
            ("Map of the errors", report.image(errors, "errors at the test points")),
            *sections,
        ],
    )


def _cross_section(cross, header):
    folds = len(cross.fold_scores)
    rows = [
        [
            f"{NAMES[method]}, all points",
            *(cross.scores[method][key] for key in metrics.NAMES),
            *(cross.calibration[method][key] for key in PROBABILISTIC),
        ]
        for method in METHODS
    ]
    for fold, scores in enumerate(cross.fold_scores):
        rows += [
            [
                f"{NAMES[method]}, fold {fold + 1}",
                *(scores[method][key] for key in metrics.NAMES),
                *[""] * len(PROBABILISTIC),
            ]
            for method in METHODS
        ]
    return report.paragraph(
        f"Every point of the dataset was held out once: the points fall into {folds} folds of whole spatial blocks; "
        "for each fold the CNN was trained again, with the model's own settings, and every other method fitted, on "
        "the other folds' points, leaving out those whose patch overlaps a held-out patch."
    ) + report.table(header, rows)


def _calibration_section(result, cross):
    rows = [
        [f"{NAMES[method]}, test points", *(result.calibration[method][key] for key in PROBABILISTIC)]
        for method in SIGMA_METHODS
    ]
    if cross:
        rows += [
            [f"{NAMES[method]}, cross-validation", *(cross.calibration[method][key] for key in PROBABILISTIC)]
            for method in SIGMA_METHODS
        ]
    rows.append(["calibrated (normal errors)", *metrics.GAUSSIAN_COVERAGE, ""])
    curve = report.figure(6, 4)
    axes = curve.add_subplot()
    k = np.linspace(0, 3, 61)
    axes.plot(k, 100 * erf(k / np.sqrt(2)), color="black", linewidth=0.8, label="calibrated")
    for method in SIGMA_METHODS:
        sigma = result.sigma[method]
        if np.isfinite(sigma).all():
            ratio = np.abs(result.predicted[method] - result.observed) / np.maximum(sigma, np.finfo(float).tiny)
            axes.plot(k, [100 * np.mean(ratio <= value) for value in k], label=NAMES[method])
    axes.set(xlabel="k (error within ±kσ)", ylabel="% of the test points", ylim=(0, 100))
    axes.legend(fontsize="small")
    note = (
        "σ: for kriging, regression kriging and the hybrid the kriging standard deviation; for the CNN the ensemble "
        f"members' spread plus a noise variance calibrated on {result.points['calibration']} validation points "
        f"(those whose patch overlaps no training patch, or all of them when fewer than {MIN_CALIBRATION_POINTS} do)"
        + (
            f": {result.noise_variance:.4g}, in the target's units squared"
            if np.isfinite(result.noise_variance)
            else " (none here: no validation points)"
        )
        + ". Below the calibrated line σ understates the errors (too confident); above, it overstates them. CRPS: the "
        "continuous ranked probability score, lower is better."
    )
    return (
        report.paragraph(note)
        + report.table(["σ of", "% within ±1σ", "% within ±2σ", "CRPS"], rows)
        + report.image(curve, "calibration curve")
    )


def _maps(data, maps, units):
    """The given rasters side by side, decimated, with the points on top."""
    titles = {
        "SURFACE": f"predicted surface ({units})",
        "UNCERTAINTY": f"uncertainty, σ ({units})",
        "APPLICABILITY": "dissimilarity index",
    }
    shown = report.figure(5.5 * len(maps), 4.8)
    test = data["split"] == TEST
    for slot, (key, layer) in enumerate(maps):
        raster = open_raster(layer.source(), titles[key])  # kept open while its band is read
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
            axes.contour(
                np.nan_to_num(inside, nan=1.0),
                levels=[0.5],
                colors="black",
                linewidths=0.8,
                extent=extent,
                origin="upper",
            )
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
