"""Training in the torch interpreter's worker, followed from QGIS: finding the interpreter,
starting the worker with a model card's TrainingSettings, and turning its events into the log and
the progress bar. No qgis import: the caller gives the torch-python setting and a feedback object
(pushInfo, pushWarning, pushDebugInfo, setProgress, isCanceled) and turns TrainingError into its
own exception type."""

import os

from . import launch
from .interpreter import find_torch_python
from .recipe import Plan


class TrainingError(Exception):
    """Training could not run or did not finish; the message is for the user."""


def train_in_worker(dataset_path, folder, settings, torch_python_setting, feedback, stop_after=0):
    """Trains the networks `settings` (core.model_card.TrainingSettings) describe on the dataset
    in the torch interpreter's worker, which writes model.onnx and result.npz into folder;
    stop_after: the last epoch to run (0: the plan's last)."""
    torch_python = find_torch_python(torch_python_setting)
    if torch_python.problem:
        raise TrainingError(torch_python.problem)
    feedback.pushInfo(f"Training in {torch_python.path} (torch {torch_python.torch_version}).")
    command = launch.worker_command(
        torch_python.path, dataset_path, folder, **settings.worker_arguments(stop_after=stop_after)
    )
    try:
        launch.run(command, launch.worker_env(os.environ), Follower(feedback), feedback.isCanceled)
    except InterruptedError:
        raise TrainingError("Canceled: training stopped, no model was written.") from None
    except launch.WorkerFailedError as error:
        raise TrainingError(str(error)) from None


class Follower:
    """Turns the worker's events into the log and the progress bar."""

    def __init__(self, feedback):
        self.feedback = feedback
        self.epochs = 1

    def __call__(self, event):
        kind, feedback = event.get("event"), self.feedback
        member, members = event.get("member", 1), event.get("members", 1)
        of_member = f"Member {member}/{members}: " if members > 1 else ""
        done = lambda epoch: 100 * ((member - 1) * self.epochs + epoch) / (members * self.epochs)
        if kind == "start":
            feedback.pushInfo(
                f"Worker started on {event['device']} ({event['threads']} threads), {event['samples']} patches."
            )
        elif kind == "plan":
            self.epochs = event["epochs"]
            feedback.pushInfo(f"Training plan: {Plan.from_dict(event).describe()}.")
        elif kind == "batch":
            feedback.setProgress(done(event["epoch"] - 1 + event["fraction"]))
        elif kind == "epoch":
            feedback.setProgress(done(event["epoch"]))
            validation = "" if event["val_loss"] is None else f", validation {event['val_loss']:.4f}"
            feedback.pushInfo(
                f"{of_member}Epoch {event['epoch']}/{self.epochs}: loss (standardised MSE) training "
                f"{event['train_loss']:.4f}{validation}, {event['seconds']:.1f} s"
            )
        elif kind == "stopped":
            feedback.pushInfo(
                f"{of_member}Early stop after epoch {event['epoch']}: the best validation loss was at epoch "
                f"{event['best_epoch']}."
            )
        elif kind == "transforms":
            if event["bands"]:
                feedback.pushInfo("Log-scaled inside the model, as asinh(x / m): " + ", ".join(event["bands"]) + ".")
        elif kind == "warning":
            feedback.pushWarning(f"The training worker warned: {event['text']}")
        elif kind == "output":
            feedback.pushDebugInfo(event["text"])
