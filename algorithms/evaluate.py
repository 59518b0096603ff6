"""subsidence:evaluate — the CNN and ordinary kriging on the same held-out points."""

import json

import numpy as np
from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from ..core import report
from ..core.dataset import open_dataset
from ..core.errors import InputError
from ..core.evaluation import compare
from ..core.kriging import MODELS
from ..core.prediction import session
from .base import SubsidenceAlgorithm

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
            "kriging variance, coordinates) and one per method (n, RMSE, MAE, R², bias); "
            "IMPROVEMENT_PERCENT is how much lower the CNN's RMSE is than kriging's. OUTPUT_REPORT adds "
            "observed-versus-predicted plots, residual histograms and a map of the errors.\n"
            "Units: the dataset's target units (mm for displacement)."
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(self.DATASET, self.tr("Training dataset (.npz)"), extension="npz"))
        self.addParameter(QgsProcessingParameterFile(self.MODEL, self.tr("Model trained on it (.onnx)"), extension="onnx"))
        self.addParameter(QgsProcessingParameterEnum(self.VARIOGRAM_MODEL, self.tr("Variogram model"), options=list(MODELS), defaultValue=0))
        self.addParameter(
            QgsProcessingParameterNumber(self.N_NEIGHBOURS, self.tr("Kriging neighbours (0: all points)"), defaultValue=32, minValue=0)
        )
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT_TABLE, self.tr("Comparison table"), QgsProcessing.TypeVector))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_REPORT, self.tr("Report"), self.tr("HTML files (*.html)"), optional=True, createByDefault=False
            )
        )
        for key, label in (("CNN_RMSE", "CNN RMSE"), ("KRIGING_RMSE", "Kriging RMSE"), ("IMPROVEMENT_PERCENT", "CNN improvement over kriging (%)")):
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
        run = session(model_path)
        name = run.get_inputs()[0].name
        predict = lambda patches: np.concatenate(  # noqa: E731
            [run.run(None, {name: patches[start : start + 256]})[0][:, 0] for start in range(0, len(patches), 256)] or [np.empty(0)]
        )
        try:
            result = compare(
                data,
                predict,
                MODELS[self.parameterAsEnum(parameters, self.VARIOGRAM_MODEL, context)],
                self.parameterAsInt(parameters, self.N_NEIGHBOURS, context),
            )
        except InputError as error:
            raise QgsProcessingException(str(error)) from None
        units = str(data["target_units"])
        for method in METHODS:
            score = result.scores[method]
            feedback.pushInfo(f"{method}: RMSE {score['rmse']:.4g} {units}, MAE {score['mae']:.4g}, R² {score['r2']:.3f}, bias {score['bias']:.4g} ({score['n']} test points)")
        feedback.pushInfo(f"Kriging used {result.kriging_points} training and validation points; none of the {len(result.test)} test points.")
        table = self._write_table(parameters, context, data, result)
        outputs = {
            self.OUTPUT_TABLE: table,
            "CNN_RMSE": result.scores["cnn"]["rmse"],
            "KRIGING_RMSE": result.scores["kriging"]["rmse"],
            "IMPROVEMENT_PERCENT": result.improvement_percent,
        }
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        if report_path:
            with open(report_path, "w", encoding="utf-8") as file:
                file.write(_report(data, result, units))
            outputs[self.OUTPUT_REPORT] = report_path
        return outputs

    def _write_table(self, parameters, context, data, result):
        fields = QgsFields()
        for name, kind in (("row", QVariant.String), ("pid", QVariant.String), ("method", QVariant.String)):
            fields.append(QgsField(name, kind))
        numbers = ("x", "y", "observed", "cnn", "kriging", "cnn_error", "kriging_error", "kriging_variance", "n", "rmse", "mae", "r2", "bias")
        for name in numbers:
            fields.append(QgsField(name, QVariant.Double))
        sink, destination = self.parameterAsSink(parameters, self.OUTPUT_TABLE, context, fields, QgsWkbTypes.NoGeometry)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT_TABLE))
        for slot, index in enumerate(result.test):
            values = [data["x"][index], data["y"][index], result.observed[slot], result.cnn[slot], result.kriging[slot]]
            values += [result.cnn[slot] - result.observed[slot], result.kriging[slot] - result.observed[slot], result.kriging_variance[slot]]
            self._add(sink, fields, ["point", str(data["pid"][index]), None] + [float(value) for value in values] + [None] * 5)
        for method in METHODS:
            score = result.scores[method]
            self._add(sink, fields, ["summary", None, method] + [None] * 8 + [float(score[key]) for key in ("n", "rmse", "mae", "r2", "bias")])
        return destination

    def _add(self, sink, fields, attributes):
        feature = QgsFeature(fields)
        feature.setAttributes(attributes)
        if not sink.addFeature(feature, QgsFeatureSink.FastInsert):
            raise QgsProcessingException(self.writeFeatureError(sink, {}))


def _check_model_fits(metadata, data):
    names = json.loads(metadata.get("band_names", "[]"))
    if names != [str(name) for name in data["band_names"]] or int(metadata.get("patch_size", -1)) != int(data["patch_size"]):
        raise QgsProcessingException(
            "The model was not trained on this dataset's drivers: it takes {} at {} x {}, the dataset has {} at {} x {}.".format(
                ", ".join(names) or "unknown bands", metadata.get("patch_size"), metadata.get("patch_size"),
                ", ".join(map(str, data["band_names"])), int(data["patch_size"]), int(data["patch_size"]),
            )
        )  # fmt: skip


def _report(data, result, units):
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
    rows = [[method, *(result.scores[method][key] for key in ("n", "rmse", "mae", "r2", "bias"))] for method in METHODS]
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
        ],
    )  # fmt: skip
