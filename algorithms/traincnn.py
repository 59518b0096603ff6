"""subsidence:traincnn — train the CNN in the torch interpreter and write one ONNX model."""

import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np
from qgis.core import (
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
)

from ..core import applicability, calibration, dataset, metrics, report, transforms
from ..core.calibration import MIN_POINTS as MIN_CALIBRATION_POINTS
from ..core.dataset import open_dataset
from ..core.model_card import ModelCard, TrainingSettings, dataset_fields
from ..core.patches import TEST, TRAIN, VAL, default_block_size
from ..core.prediction import MODEL_OUTPUTS, ensemble_summary
from ..models.architecture import ARCHITECTURES, check_patch_size, dense_exact
from ..models.export import finish, plugin_version
from ..models.launch import DEVICES
from ..models.recipe import PATIENCE, RECIPES, STEPS, Plan
from ..models.training import TrainingError, train_in_worker
from .base import SubsidenceAlgorithm, read_dataset
from .settings import torch_python_setting

SPLITS = ((TRAIN, "train"), (VAL, "val"), (TEST, "test"))  # the dataset's split codes, by name
MAX_MEMBERS = 50
# A model is reported as having learnt nothing below this training R², or when its RMSE on the
# validation or test points is not this much below the training mean's (the best epoch is chosen
# on the validation points, so by chance alone it beats the mean there a little).
MIN_TRAINING_R2 = 0.1
MIN_GAIN_ON_MEAN = 0.05


class TrainCnn(SubsidenceAlgorithm):
    REQUIRES = ("onnxruntime", "onnx")
    GROUP = "cnn"
    HELP_SECTION = "Training the CNN"
    SHORT_DESCRIPTION = (
        "Trains a CNN (or an ensemble) on a training dataset in the torch interpreter; writes one ONNX model"
    )
    DATASET = "DATASET"
    ARCHITECTURE = "ARCHITECTURE"
    RECIPE = "RECIPE"
    EPOCHS = "EPOCHS"
    STEPS = "STEPS"
    BATCH_SIZE = "BATCH_SIZE"
    LEARNING_RATE = "LEARNING_RATE"
    PATIENCE = "PATIENCE"
    SEED = "SEED"
    ENSEMBLE = "ENSEMBLE"
    REFIT = "REFIT"
    DEVICE = "DEVICE"
    OUTPUT_MODEL = "OUTPUT_MODEL"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    TRAIN_RMSE = "TRAIN_RMSE"
    VAL_RMSE = "VAL_RMSE"
    TEST_RMSE = "TEST_RMSE"

    def name(self):
        return "traincnn"

    def displayName(self):
        return self.tr("Train the CNN")

    def tags(self):
        return self.tr("cnn,deep learning,train,torch,onnx,regression,subsidence").split(",")

    def shortHelpString(self):
        return self.tr(
            "Trains a convolutional network that predicts a PS point's value (e.g. displacement) from "
            "the patch of drivers around it, on a dataset from 'Export training patches', and writes one ONNX "
            "model for 'Predict the surface' and 'Evaluate'. The defaults learn without tuning, from hundreds to "
            "tens of thousands of points.\n"
            "Training runs in a Python interpreter with torch (Settings › Options › Processing › Providers; "
            "'Check set-up' shows which), on a CUDA GPU if any, else all CPU cores; the weights with the best "
            "validation score are kept. An ensemble of networks also gives an uncertainty σ. The log and the "
            "optional report give RMSE, MAE, R² and bias on the training, validation and test points, and warn "
            "when the model learnt nothing useful.\n"
            "Units: the model takes raw driver values and returns the target in its units (mm for displacement), "
            "as do the RMSE outputs.\n"
            "Method: after Azarm, Mehrabi and Nadi (hybrid deep CNN for land subsidence); area of applicability "
            "after Meyer and Pebesma (2021)."
        )

    def initAlgorithm(self, config=None):
        integer, double = QgsProcessingParameterNumber.Integer, QgsProcessingParameterNumber.Double
        training_dataset = QgsProcessingParameterFile(self.DATASET, self.tr("Training dataset (.npz)"), extension="npz")
        training_dataset.setHelp(
            self.tr(
                "A dataset written by 'Export training patches'. Inside the model, drivers that are never "
                "negative and strongly right-skewed (skewness above 2, e.g. specific catchment area and SPI) are "
                "log-scaled as asinh(x / m), m the median of their positive values, and every band is standardised "
                "with its training statistics; the log and the report name the log-scaled bands. Give directions "
                "such as aspect as east and north components ('Stack driver rasters' does it). The target is "
                "standardised with the training points' statistics, and the loss is the mean squared error."
            )
        )
        architecture = QgsProcessingParameterEnum(
            self.ARCHITECTURE, self.tr("Architecture"), options=list(ARCHITECTURES), defaultValue=0
        )
        architecture.setHelp(
            self.tr(
                "dense (default): the paper's layer types sized for a CPU (0.12 M weights for 9 bands at 30 x 30); "
                "a whole raster is then predicted exactly and fast. It needs patches of 22 x 22 or more. small: "
                "the same layer types in two blocks (0.06 M weights for 9 bands at 9 x 9), as exact and fast, for "
                "patches of 8 to 21 pixels, as on coarse grids (e.g. 9 x 9 cells of 150 m). paper: the published "
                "Keras model (21 M weights), to reproduce the publication; slow on a CPU."
            )
        )
        recipe = QgsProcessingParameterEnum(
            self.RECIPE, self.tr("Training recipe"), options=list(RECIPES), defaultValue=0
        )
        recipe.setHelp(
            self.tr(
                "adaptive (default) works without tuning from a few hundred to tens of thousands of points: AdamW "
                "(weight decay 1e-4) at a peak learning rate of 1e-3, batches of 32, and a length measured in "
                "optimiser steps (4000 by default: about 150 epochs for 800 training patches); the rate rises over "
                "the first 10 % of the epochs (the warm-up), then falls along a cosine to 1 % of its peak. paper: "
                "the published recipe, to reproduce it: Adam at a constant 1e-4, batches of 128, 150 epochs (set "
                "for 48 790 training patches; with a few hundred it is too short to learn)."
            )
        )
        epochs = QgsProcessingParameterNumber(
            self.EPOCHS, self.tr("Epochs (0: the recipe's)"), integer, defaultValue=0, minValue=0
        )
        epochs.setHelp(
            self.tr(
                "Passes over the training patches. 0 (default): the recipe's, 150 for paper and, for adaptive, "
                "the optimiser steps divided by the batches per epoch, at least 10 and at most 1000. Any other "
                "value replaces it. Early stopping may end the training sooner."
            )
        )
        steps = QgsProcessingParameterNumber(
            self.STEPS, self.tr("Optimiser steps (adaptive recipe)"), integer, defaultValue=STEPS, minValue=1
        )
        steps.setHelp(
            self.tr(
                "How long the adaptive recipe trains, in optimiser steps (batches), when the epochs are the "
                "recipe's (default 4000). More steps for a harder target, fewer for a quicker first look."
            )
        )
        batch_size = QgsProcessingParameterNumber(
            self.BATCH_SIZE, self.tr("Batch size (0: the recipe's)"), integer, defaultValue=0, minValue=0
        )
        batch_size.setHelp(
            self.tr(
                "Training patches per optimiser step. 0 (default): the recipe's, 32 for adaptive and 128 for "
                "paper; any other value replaces it. 1 is refused: batch normalisation needs two patches."
            )
        )
        learning_rate = QgsProcessingParameterNumber(
            self.LEARNING_RATE,
            self.tr("Peak learning rate (0: the recipe's)"),
            double,
            defaultValue=0.0,
            minValue=0.0,
        )
        learning_rate.setHelp(
            self.tr(
                "0 (default): the recipe's, a peak of 0.001 for adaptive and a constant 0.0001 for paper; any "
                "other value replaces it."
            )
        )
        learning_rate.setMetadata({"widget_wrapper": {"decimals": 5}})
        patience = QgsProcessingParameterNumber(
            self.PATIENCE,
            self.tr("Early-stopping patience (epochs; 0: off)"),
            integer,
            defaultValue=PATIENCE,
            minValue=0,
        )
        patience.setHelp(
            self.tr(
                "Training stops once this many epochs after the warm-up bring no better validation loss (default "
                "30); 0 trains every epoch. Either way the weights with the best validation loss are written. "
                "Before every validation the batch normalisation statistics are recomputed from the training "
                "patches, so the network scored is the one just trained."
            )
        )
        seed = QgsProcessingParameterNumber(self.SEED, self.tr("Random seed"), integer, defaultValue=0, minValue=0)
        seed.setHelp(
            self.tr(
                "Seed of the initial weights and the batch order; ensemble member k uses this seed + k. On a CPU "
                "the same seed and dataset give the same model."
            )
        )
        ensemble = QgsProcessingParameterNumber(
            self.ENSEMBLE,
            self.tr("Ensemble members (number of networks)"),
            integer,
            defaultValue=1,
            minValue=1,
            maxValue=MAX_MEMBERS,
        )
        ensemble.setHelp(
            self.tr(
                "How many networks to train from successive seeds (each costs one training); 1 (default) is a "
                "single network, 5 or more is usual for an uncertainty. They are stored in the one model: "
                "'Predict the surface' writes their mean, and as the uncertainty σ their spread plus a noise "
                "variance calibrated on the validation points whose patch overlaps no training patch (all of them "
                "if fewer than {} do): the smallest that brings their mean squared standardised error to 1 at "
                "most. For a single network σ is that noise alone, the same everywhere. The report shows how well "
                "σ covers the test errors."
            ).format(MIN_CALIBRATION_POINTS)
        )
        refit = QgsProcessingParameterBoolean(
            self.REFIT, self.tr("Refit on every point for the final map (trains twice)"), defaultValue=False
        )
        refit.setHelp(
            self.tr(
                "For the final map: once the split has chosen how long to train and measured the result, the same "
                "networks are trained again on every point (training, validation and test) for the median of "
                "their best epochs, and that model is written. Its scores and calibration are those measured on "
                "the split; 'Evaluate' refuses it, so evaluate the model trained without refit. Costs a second "
                "training."
            )
        )
        device = QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), options=list(DEVICES), defaultValue=0)
        device.setHelp(
            self.tr(
                "auto (default): a CUDA GPU when torch sees one, else all CPU cores. cpu: always the CPU. cuda: "
                "the GPU, and an error when torch sees none."
            )
        )
        model = QgsProcessingParameterFileDestination(
            self.OUTPUT_MODEL, self.tr("Model"), self.tr("ONNX models (*.onnx)")
        )
        model.setHelp(
            self.tr(
                "The trained model, written only after ONNX Runtime has reproduced torch's outputs. It takes raw "
                "driver values and returns the target in its units; its model card records the bands and their "
                "statistics, the patch size, the drivers' pixel size and CRS, the dataset's split, the scores, the "
                "training settings and the training drivers for the area of applicability, so that 'Predict the "
                "surface' and 'Evaluate' refuse data that do not match."
            )
        )
        training_report = self.report_destination(self.OUTPUT_REPORT)
        training_report.setHelp(
            self.tr(
                "Optional HTML report: the training plan, each member's learning curves, RMSE, MAE, R² and bias on "
                "the training, validation and test points, observed-versus-predicted plots, the calibration of σ "
                "and the training drivers' dissimilarity. It warns, as the log does, when the model has learnt "
                "nothing useful: a training R² below {} or a validation or test RMSE not {:.0%} below the "
                "training mean's."
            ).format(MIN_TRAINING_R2, MIN_GAIN_ON_MEAN)
        )
        for parameter in (training_dataset, architecture, recipe, epochs):
            self.addParameter(parameter)
        for parameter in (batch_size, learning_rate, patience, seed):
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(ensemble)
        self.addParameter(refit)
        for parameter in (steps, device):
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(model)
        self.addParameter(training_report)
        for key, label in (
            (self.TRAIN_RMSE, "Training RMSE"),
            (self.VAL_RMSE, "Validation RMSE"),
            (self.TEST_RMSE, "Test RMSE"),
        ):
            self.addOutput(QgsProcessingOutputNumber(key, self.tr(label)))

    def checkParameterValues(self, parameters, context):
        if self.parameterAsInt(parameters, self.BATCH_SIZE, context) == 1:
            return False, self.tr(
                "A batch size of 1 cannot be trained (batch normalisation needs two patches): choose 0 for the "
                "recipe's, or 2 or more."
            )
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):
        dataset_path = self.parameterAsFile(parameters, self.DATASET, context)
        data = read_dataset(dataset_path)
        architecture = ARCHITECTURES[self.parameterAsEnum(parameters, self.ARCHITECTURE, context)]
        problem = check_patch_size(architecture, int(data["patch_size"]))
        if problem:
            raise QgsProcessingException(problem)
        if not (data["split"] == TRAIN).sum() >= 2:
            raise QgsProcessingException(self.tr("The dataset has fewer than 2 training patches."))
        if not (data["split"] == VAL).any():
            feedback.pushWarning(
                self.tr("The dataset has no validation patches: no early stopping, the last epoch's weights are kept.")
            )
        settings = TrainingSettings(
            architecture=architecture,
            recipe=RECIPES[self.parameterAsEnum(parameters, self.RECIPE, context)],
            epochs=self.parameterAsInt(parameters, self.EPOCHS, context),
            steps=self.parameterAsInt(parameters, self.STEPS, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            learning_rate=self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
            patience=self.parameterAsInt(parameters, self.PATIENCE, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            members=self.parameterAsInt(parameters, self.ENSEMBLE, context),
        )
        refit = self.parameterAsBoolean(parameters, self.REFIT, context)
        steps = QgsProcessingMultiStepFeedback(2 if refit else 1, feedback)
        folder = tempfile.mkdtemp(prefix="subsidence-train-")
        try:
            _train(dataset_path, folder, settings, steps)
            final = _refit(data, settings, folder, steps) if refit else None
            return self._write_outputs(parameters, context, feedback, data, settings, folder, final)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _write_outputs(self, parameters, context, feedback, data, settings, folder, final=None):
        """The model and the report. The scores and the calibration are those of the networks
        trained on the split (folder); with `final` (_refit's), the model written is its own."""
        history, schedule = history_and_plan(folder)
        with np.load(os.path.join(folder, "result.npz")) as result:
            members, scales = result["predictions"], result["log_scales"]
        model_folder, model_data, refit = (folder, data, None) if final is None else final
        with np.load(os.path.join(model_folder, "result.npz")) as result:
            check_inputs, model_scales = result["check_inputs"], result["log_scales"]
            check_outputs = {name: result[f"check_{name}"] for name in MODEL_OUTPUTS}
        predictions, spread = ensemble_summary(members.T)
        targets, split = data["targets"].astype(float), data["split"]
        calibrating, apart = calibration.calibration_points(data)
        noise = calibration.noise_variance(targets[calibrating] - predictions[calibrating], spread[calibrating])
        sigma = calibration.sigma(spread, noise)
        scores = {name: metrics.regression(targets[split == code], predictions[split == code]) for code, name in SPLITS}
        coverage = {
            name: metrics.coverage(targets[split == code], predictions[split == code], sigma[split == code])
            for code, name in SPLITS
        }
        feedback.pushInfo(
            self.tr("Area of applicability: the drivers of {} training patches.").format(
                int((model_data["split"] == TRAIN).sum())
            )
        )
        area, training_di = _applicability(model_data, settings.seed)
        spread = float(np.ptp(targets)) or 1.0
        card = ModelCard(
            # The dataset's split, not the refit's: the split that measured the model.
            **dataset_fields(data),
            band_mean=[float(value) for value in model_data["band_mean"]],
            band_std=[float(value) for value in model_data["band_std"]],
            band_transforms=transforms.to_metadata(data["band_names"], model_scales),
            architecture=settings.architecture,
            dense_exact=dense_exact(settings.architecture),
            ensemble_members=settings.members,
            metrics=scores,
            calibration=coverage,
            noise_variance=float(noise) if np.isfinite(noise) else None,
            applicability=area.to_metadata(),
            plugin_version=plugin_version(),
            settings=settings,
            history=history,
            plan=schedule._asdict(),
            refit=refit,
        )
        model_path = self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)
        try:
            difference = finish(
                os.path.join(model_folder, "model.onnx"),
                model_path,
                card.to_metadata(),
                check_inputs,
                check_outputs,
                spread,
            )
        except ValueError as error:
            raise QgsProcessingException(str(error)) from None
        feedback.pushInfo(
            self.tr("ONNX Runtime reproduces torch on {} patches to {:.2g} {}.").format(
                len(check_inputs), difference, card.target_units
            )
        )
        for _, name in SPLITS:
            feedback.pushInfo(
                self.tr("{}: RMSE {:.4g}, MAE {:.4g}, R² {:.3f}, bias {:.4g} ({} points)").format(
                    name, *(scores[name][key] for key in ("rmse", "mae", "r2", "bias", "n"))
                )
            )
        if np.isfinite(noise):
            feedback.pushInfo(
                self.tr(
                    "σ: the ensemble's spread plus a noise variance of {:.4g} {}² calibrated on {} validation "
                    "points{}; on the test points {:.0f} % of the errors lie within ±1σ, {:.0f} % within ±2σ "
                    "(calibrated: 68 %, 95 %)."
                ).format(
                    noise,
                    card.target_units,
                    len(calibrating),
                    " (those whose patch overlaps no training patch)"
                    if apart
                    else f" (all of them: fewer than {calibration.MIN_POINTS} lie apart from the training patches)",
                    *coverage["test"].values(),
                )
            )
        feedback.pushInfo(self.tr("Area of applicability: dissimilarity threshold {:.3g}.").format(area.threshold))
        problem = nothing_learnt(scores, targets, split)
        if problem:
            feedback.pushWarning(problem)
        if refit:
            feedback.pushInfo(
                self.tr(
                    "The model written was trained again on all {points} points for {epochs} epochs; the scores "
                    "above are those of the networks trained on the split, the estimate of its quality."
                ).format(**refit)
            )
        results = {
            self.OUTPUT_MODEL: model_path,
            self.TRAIN_RMSE: scores["train"]["rmse"],
            self.VAL_RMSE: scores["val"]["rmse"],
            self.TEST_RMSE: scores["test"]["rmse"],
        }
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        if report_path:
            with open(report_path, "w", encoding="utf-8") as file:
                log_scaled = transforms.describe(data["band_names"], scales)
                file.write(
                    _report(
                        history,
                        schedule,
                        log_scaled,
                        problem,
                        scores,
                        coverage,
                        noise,
                        targets,
                        predictions,
                        sigma,
                        split,
                        training_di,
                        area.threshold,
                        card,
                    )
                )
            results[self.OUTPUT_REPORT] = report_path
        return results


def _applicability(data, seed):
    """The area of applicability of the dataset's training patches (core.applicability.fit)."""
    train = np.flatnonzero(data["split"] == TRAIN)
    x, y = data["x"][train], data["y"][train]
    block = default_block_size(x, y, int(data["patch_size"]) * float(np.max(data["pixel_size"])))
    return applicability.fit(
        data["patches"][train], data["band_mean"], data["band_std"], x, y, block, np.random.default_rng(seed)
    )


def _refit(data, settings, folder, feedback):
    """Trains the same members again on every point of the dataset, along the split's plan (its
    epochs, warm-up and schedule) up to the median of their best epochs on the validation points:
    (its folder, its dataset, what the model records of it)."""
    history, schedule = history_and_plan(folder)
    epochs, planned = refit_epochs(history), schedule.epochs
    refit_folder = os.path.join(folder, "refit")
    os.makedirs(refit_folder)
    path = os.path.join(refit_folder, "all.npz")
    points = len(data["targets"])
    dataset.write_subset(path, data, np.arange(points), np.zeros(points, np.int8))
    feedback.setCurrentStep(1)
    feedback.pushInfo(
        f"Refit: training again on all {points} points for {epochs} of the split's {planned} planned epochs."
    )
    # The same schedule cut at the best epoch, not a schedule of that length: one compressed into a
    # few epochs skips the warm-up's slow start and ends at a cold learning rate, another network.
    refit_settings = dataclasses.replace(settings, epochs=planned, patience=0)
    _train(path, refit_folder, refit_settings, feedback, stop_after=epochs)
    return refit_folder, open_dataset(path), {"points": points, "epochs": epochs, "planned_epochs": planned}


def history_and_plan(folder):
    """The worker's per-epoch history and its training plan, from its result.npz in `folder`."""
    with np.load(os.path.join(folder, "result.npz")) as result:
        return json.loads(str(result["history"])), Plan.from_dict(json.loads(str(result["plan"])))


def refit_epochs(history):
    """The median over the members of the epoch with the best validation loss (the last epoch
    where there was no validation)."""
    best = []
    for member in sorted({entry.get("member", 1) for entry in history}):
        entries = [entry for entry in history if entry.get("member", 1) == member]
        scored = [entry for entry in entries if entry["val_loss"] is not None]
        best.append(min(scored, key=lambda entry: entry["val_loss"])["epoch"] if scored else entries[-1]["epoch"])
    return max(1, int(round(float(np.median(best)))))


def _train(dataset_path, folder, settings, feedback, stop_after=0):
    """models.training.train_in_worker in the torch interpreter of the plugin's setting."""
    try:
        train_in_worker(dataset_path, folder, settings, torch_python_setting(), feedback, stop_after)
    except TrainingError as error:
        raise QgsProcessingException(str(error)) from None


def nothing_learnt(scores, targets, split):
    """A warning when the model learnt nothing useful, else None: a training R² below
    MIN_TRAINING_R2, or an RMSE on the validation or the test points not MIN_GAIN_ON_MEAN below
    the training mean's."""
    problems = []
    if not scores["train"]["r2"] >= MIN_TRAINING_R2:
        problems.append(f"its training R² is {scores['train']['r2']:.2f} (below {MIN_TRAINING_R2})")
    for code, key, name in ((VAL, "val", "validation"), (TEST, "test", "test")):
        held_out = split == code
        if held_out.any():
            training_mean = np.full(held_out.sum(), targets[split == TRAIN].mean())
            mean_rmse = metrics.regression(targets[held_out], training_mean)["rmse"]
            rmse = scores[key]["rmse"]
            if not rmse < (1 - MIN_GAIN_ON_MEAN) * mean_rmse:
                problems.append(
                    f"its {name} RMSE ({rmse:.4g}) is not {MIN_GAIN_ON_MEAN:.0%} below the training mean's "
                    f"({mean_rmse:.4g})"
                )
    if not problems:
        return None
    return (
        "The model learnt nothing useful: "
        + " and ".join(problems)
        + ". Its map would be no better than a constant. Likely causes: "
        "targets the drivers do not explain (look for a driver that matters and is missing, or noise larger than "
        "the signal), too few training points, or training too short to converge (see the learning curves in the "
        "report; the adaptive recipe with its defaults is the first thing to try)."
    )


def _report(
    history,
    schedule,
    log_scaled,
    problem,
    scores,
    coverage,
    noise,
    targets,
    predictions,
    sigma,
    split,
    training_di,
    threshold,
    card,
):
    units, refit = card.target_units, card.refit
    members = sorted({entry.get("member", 1) for entry in history})
    columns = min(len(members), 3)
    rows = -(-len(members) // columns)
    curves = report.figure(4 * columns, 3 * rows)
    for number, member in enumerate(members):
        axes = curves.add_subplot(rows, columns, number + 1)
        entries = [entry for entry in history if entry.get("member", 1) == member]
        epochs = [entry["epoch"] for entry in entries]
        axes.plot(epochs, [entry["train_loss"] for entry in entries], label="training")
        if any(entry["val_loss"] is not None for entry in entries):
            axes.plot(epochs, [entry["val_loss"] for entry in entries], label="validation")
            best = min(entries, key=lambda entry: entry["val_loss"])
            axes.axvline(
                best["epoch"], color="black", linewidth=0.8, linestyle=":", label=f"best, epoch {best['epoch']}"
            )
        if schedule.warmup_epochs:
            axes.axvspan(0.5, schedule.warmup_epochs + 0.5, color="0.9", label="warm-up")
        axes.axhline(1.0, color="0.5", linewidth=0.8, linestyle="--")  # the training mean's loss, about
        axes.set(
            title=f"member {member}" if len(members) > 1 else "",
            xlabel="epoch",
            ylabel="MSE, standardised target",
            yscale="log",
        )
        axes.legend(fontsize="x-small")
    scatter = report.figure(12, 4)
    for index, (code, name) in enumerate(SPLITS):
        axes = scatter.add_subplot(1, 3, index + 1)
        chosen = split == code
        if np.isfinite(sigma).all():
            axes.errorbar(
                targets[chosen], predictions[chosen], yerr=sigma[chosen], fmt="o", markersize=2, elinewidth=0.5
            )
        else:
            axes.scatter(targets[chosen], predictions[chosen], s=4)
        low, high = float(np.min(targets)), float(np.max(targets))
        axes.plot([low, high], [low, high], color="black", linewidth=0.8)
        axes.set(title=f"{name} ({int(chosen.sum())})", xlabel=f"observed ({units})", ylabel=f"predicted ({units})")
    rows = [[name, *(scores[name][key] for key in metrics.NAMES)] for _, name in SPLITS]
    sections = (
        [("Warning: the model learnt nothing useful", report.paragraph(problem, warning=True))] if problem else []
    )
    if refit:
        sections.append(
            (
                "Refit on every point",
                report.paragraph(
                    f"The model written was trained again, with the same settings, on all {refit['points']} points "
                    f"for {refit['epochs']} epochs of the split's {refit['planned_epochs']} planned (the median of "
                    "the members' best epochs on the validation points). Everything below describes the networks "
                    "trained on the split, which is the estimate of its quality; the refit model has no held-out "
                    "points of its own."
                ),
            )
        )
    sections += [
        ("Scores", report.table(["points", "n", f"RMSE ({units})", f"MAE ({units})", "R²", f"bias ({units})"], rows)),
        (
            "Training",
            report.paragraph(
                schedule.describe()
                + ". Bands log-scaled inside the model as asinh(x / m): "
                + (", ".join(log_scaled) if log_scaled else "none")
                + "."
            ),
        ),
        (
            "Learning curves",
            report.image(
                curves,
                "training and validation loss of each member by epoch; dashed: about the loss of predicting the "
                "training mean",
            ),
        ),
        (
            "Observed and predicted",
            report.image(scatter, "observed versus predicted" + (" (bars: ±1σ)" if np.isfinite(sigma).all() else "")),
        ),
    ]
    if np.isfinite(noise):
        rows = [[name, *(coverage[name][key] for key in metrics.COVERAGE_NAMES)] for _, name in SPLITS]
        rows.append(["normal distribution", *metrics.GAUSSIAN_COVERAGE])
        spread = f"the standard deviation of the {len(members)} members' predictions plus " if len(members) > 1 else ""
        sections.append(
            (
                "Calibration of σ",
                report.paragraph(
                    f"σ² is {spread}a noise variance of {noise:.4g} {units}², the smallest that makes the mean "
                    "squared standardised error on the validation points whose patch overlaps no training patch at "
                    "most 1 (the errors a network's spread does not see: noise in the data and what the drivers "
                    "cannot explain). Calibrated, about 68 % of the errors lie within ±1σ and 95 % within ±2σ; the "
                    "test points, which took no part in the calibration, tell how well it holds."
                )
                + report.table(["points", "% within ±1σ", "% within ±2σ"], rows),
            )
        )
    histogram = report.figure(6, 3.5)
    axes = histogram.add_subplot()
    axes.hist(training_di, bins=40)
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    axes.set(xlabel="dissimilarity index of the training patches (to other spatial folds)", ylabel="patches")
    axes.legend()
    sections.append(
        (
            "Area of applicability",
            report.paragraph(
                "'Predict the surface' flags the pixels whose drivers lie farther from every training patch than this "
                "threshold (Meyer & Pebesma 2021): there the model extrapolates."
            )
            + report.image(histogram, "training dissimilarity"),
        )
    )
    return report.page(f"CNN training: {card.architecture} on {card.target_field}", sections)
