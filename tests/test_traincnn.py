"""subsidence:traincnn: learning a known function, the ONNX contract, determinism, cancel and
failures; the worker's command line as data; the paper replica against the published model."""

import json
import os
import sys

import numpy as np
import onnxruntime
import pytest
from cnn_data import known_function_dataset
from qgis import processing
from qgis.core import QgsProcessingException

from insar_subsidence.core.model_card import CARD_VERSION, REQUIRED, ModelCard, TrainingSettings
from insar_subsidence.core.patches import TEST, TRAIN, VAL
from insar_subsidence.models import launch
from insar_subsidence.models.export import read_metadata
from insar_subsidence.models.recipe import PATIENCE, STEPS
from insar_subsidence.models.training import Follower


def train(tmp_path, dataset, feedback=None, **parameters):
    values = {"DATASET": str(dataset), "OUTPUT_MODEL": str(tmp_path / "model.onnx"), "SEED": 1, **parameters}
    return processing.run("subsidence:traincnn", values, feedback=feedback)


def predict(model, patches):
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(["prediction"], {"patches": np.asarray(patches, np.float32)})[0][:, 0]


@pytest.mark.heavy
def test_learns_a_known_function_of_the_patches(plugin, tmp_path):
    """Target = band 0 at the centre + 3 x band 1's mean over the 5 x 5 centre (smooth fields):
    test RMSE below 10 % of the target's std in 20 epochs."""
    std = known_function_dataset(tmp_path / "data.npz", n=3000)
    result = train(
        tmp_path,
        tmp_path / "data.npz",
        EPOCHS=20,
        BATCH_SIZE=64,
        LEARNING_RATE=2e-3,
        PATIENCE=0,
        OUTPUT_REPORT=str(tmp_path / "r.html"),
    )
    assert result["TEST_RMSE"] < 0.1 * std
    assert result["TRAIN_RMSE"] < 0.2 * std and result["VAL_RMSE"] < 0.15 * std
    metadata = read_metadata(result["OUTPUT_MODEL"])
    assert set(REQUIRED) <= set(metadata)
    history = json.loads(metadata["training"])["history"]
    losses = [epoch["train_loss"] for epoch in history]
    assert len(history) == 20 and losses[-1] < 0.5 * losses[0] and np.mean(losses[-5:]) < np.mean(losses[:5])
    assert json.loads(metadata["metrics"])["test"]["rmse"] == pytest.approx(result["TEST_RMSE"])
    assert "<img" in open(result["OUTPUT_REPORT"], encoding="utf-8").read()


@pytest.fixture
def small_dataset(tmp_path):
    known_function_dataset(tmp_path / "small.npz", n=300)
    return tmp_path / "small.npz"


def test_model_takes_raw_drivers_and_returns_target_units(plugin, tmp_path, small_dataset):
    """What the metadata says is what the graph does: same outputs from ONNX Runtime on the raw
    patches as the predictions the metrics were computed from; dense_exact for `dense`. The card
    records the dataset's pixel size, CRS and split, and the settings given."""
    from insar_subsidence.core.dataset import open_dataset, split_fingerprint

    result = train(tmp_path, small_dataset, EPOCHS=4)
    data = open_dataset(small_dataset)
    metadata = read_metadata(result["OUTPUT_MODEL"])
    card = ModelCard.from_metadata(metadata)
    assert (card.card_version, card.pixel_size, card.crs) == (CARD_VERSION, (10.0, 10.0), "EPSG:32630")
    assert card.split_fingerprint == split_fingerprint(data["x"], data["y"], data["split"])
    assert card.settings == TrainingSettings(
        architecture="dense",
        epochs=4,
        batch_size=0,
        learning_rate=0.0,
        patience=PATIENCE,
        seed=1,
        device="auto",
        recipe="adaptive",
        steps=STEPS,
        members=1,
    )
    assert json.loads(metadata["band_names"]) == list(data["band_names"])
    np.testing.assert_allclose(json.loads(metadata["band_mean"]), data["band_mean"])
    assert (metadata["patch_size"], metadata["target_units"], metadata["architecture"], metadata["dense_exact"]) == (
        "22",
        "mm",
        "dense",
        "true",
    )
    predicted = predict(result["OUTPUT_MODEL"], data["patches"])
    test = data["split"] == TEST
    rmse = float(np.sqrt(np.mean((predicted[test] - data["targets"][test]) ** 2)))
    assert rmse == pytest.approx(result["TEST_RMSE"], rel=1e-4)
    assert abs(np.mean(predicted) - np.mean(data["targets"])) < 2 * np.std(
        data["targets"]
    )  # target units, not standardised
    # The weights written are those of the epoch with the best validation loss.
    training = data["targets"][data["split"] == TRAIN]
    val = data["split"] == VAL
    val_loss = np.mean(((predicted[val] - data["targets"][val]) / training.std()) ** 2)
    assert val_loss == pytest.approx(
        min(epoch["val_loss"] for epoch in json.loads(metadata["training"])["history"]), rel=1e-4
    )


def test_small_learns_from_9_by_9_patches_and_is_dense_exact(plugin, tmp_path):
    """ARCHITECTURE 2, small, on patches too small for dense (the target's 5 x 5 centre window
    fits in them): it learns (test R² 0.997 when written, above 0.9 required, in 10 epochs), ONNX
    Runtime on the raw test patches gives the test RMSE reported, and the model can be evaluated
    densely, as its metadata says."""
    from insar_subsidence.core.dataset import open_dataset
    from insar_subsidence.models.dense import dense_model

    known_function_dataset(tmp_path / "data.npz", n=1000, size=9)
    result = train(tmp_path, tmp_path / "data.npz", ARCHITECTURE=2, EPOCHS=10)
    metadata = read_metadata(result["OUTPUT_MODEL"])
    assert (metadata["patch_size"], metadata["architecture"], metadata["dense_exact"]) == ("9", "small", "true")
    assert json.loads(metadata["metrics"])["test"]["r2"] > 0.9
    data = open_dataset(tmp_path / "data.npz")
    test = data["split"] == TEST
    predicted = predict(result["OUTPUT_MODEL"], data["patches"][test])
    assert float(np.sqrt(np.mean((predicted - data["targets"][test]) ** 2))) == pytest.approx(
        result["TEST_RMSE"], rel=1e-4
    )
    with open(result["OUTPUT_MODEL"], "rb") as file:
        assert (
            dense_model(file.read())[1] == 8
        )  # raises NotDenseError otherwise; 8: the row and column that pooling drops are never read


def test_a_model_onnx_runtime_does_not_reproduce_is_not_written(tmp_path, small_dataset):
    """finish() compares ONNX Runtime with torch's outputs (by output name) before writing anything."""
    from insar_subsidence.models.export import finish

    raw = tmp_path / "raw.onnx"
    _sum_model(raw)
    inputs = np.ones((2, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="differs from torch"):
        finish(
            str(raw),
            str(tmp_path / "model.onnx"),
            {"architecture": "dense"},
            inputs,
            {"out": np.full((2, 1), 7.0)},
            spread=1.0,
        )
    assert not (tmp_path / "model.onnx").exists()
    finish(
        str(raw),
        str(tmp_path / "model.onnx"),
        {"architecture": "dense", "metrics": {"a": 1}},
        inputs,
        {"out": np.full((2, 1), 4.0)},
        spread=1.0,
    )
    assert read_metadata(str(tmp_path / "model.onnx")) == {"architecture": "dense", "metrics": '{"a": 1}'}


def _sum_model(path):
    """An ONNX graph summing each patch: (N, 1, 2, 2) -> (N, 1)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["patches", "axes"], ["prediction"], keepdims=0),
            helper.make_node("Unsqueeze", ["prediction", "one"], ["out"]),
        ],
        "sum",
        [helper.make_tensor_value_info("patches", TensorProto.FLOAT, ["n", 1, 2, 2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 1])],
        [
            helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
            helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.heavy
def test_same_seed_same_model_other_seed_other_model(plugin, tmp_path, small_dataset):
    from insar_subsidence.core.dataset import open_dataset

    patches = np.array(open_dataset(small_dataset)["patches"][:50])
    outputs, losses = [], []
    for run, seed in enumerate((7, 7, 8)):
        folder = tmp_path / f"run{run}"
        folder.mkdir()
        model = train(folder, small_dataset, EPOCHS=2, SEED=seed)["OUTPUT_MODEL"]
        outputs.append(predict(model, patches))
        losses.append(
            [
                (epoch["train_loss"], epoch["val_loss"])
                for epoch in json.loads(read_metadata(model)["training"])["history"]
            ]
        )
    assert losses[0] == losses[1]  # the epoch where two runs part, if they do
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0], outputs[2])


def test_cancel_stops_the_worker_and_writes_nothing(plugin, tmp_path, small_dataset, log_feedback):
    feedback = log_feedback(cancel_at=0.1)  # cancels at the first progress report, within epoch 1
    with pytest.raises(QgsProcessingException, match="Canceled"):
        train(tmp_path, small_dataset, feedback, EPOCHS=1000)
    assert "Epoch 1000/1000" not in feedback.text  # stopped, not run to its end
    assert not (tmp_path / "model.onnx").exists()


def test_a_worker_error_is_reported_with_its_message(plugin, tmp_path, small_dataset):
    with pytest.raises(QgsProcessingException, match="DEVICE is cuda but torch sees no CUDA device"):
        train(tmp_path, small_dataset, EPOCHS=1, DEVICE=2)
    assert not (tmp_path / "model.onnx").exists()


def test_patches_too_small_for_the_architecture_are_refused_before_training(plugin, tmp_path):
    known_function_dataset(tmp_path / "tiny.npz", n=50, size=12)
    with pytest.raises(QgsProcessingException, match="at least 22 x 22.*Choose the small architecture"):
        train(tmp_path, tmp_path / "tiny.npz", EPOCHS=1)
    assert not (tmp_path / "model.onnx").exists()


def test_a_python_without_torch_says_what_to_install(plugin, tmp_path, small_dataset, monkeypatch):
    monkeypatch.setenv("SUBSIDENCE_TORCH_PYTHON", "/usr/bin/python3")  # Debian's: no torch there
    with pytest.raises(QgsProcessingException, match="/usr/bin/python3 -m pip install torch"):
        train(tmp_path, small_dataset, EPOCHS=1)


def test_worker_command_is_the_documented_command_line():
    command = launch.worker_command(
        "/opt/py/bin/python",
        "/d/data.npz",
        "/tmp/out",
        "paper",
        150,
        128,
        1e-4,
        20,
        3,
        "auto",
        members=5,
        recipe="paper",
        steps=900,
        stop_after=40,
    )
    assert command == [
        "/opt/py/bin/python",
        "-u",
        "-m",
        "insar_subsidence.models.worker",
        "--dataset",
        "/d/data.npz",
        "--output-dir",
        "/tmp/out",
        "--architecture",
        "paper",
        "--recipe",
        "paper",
        "--epochs",
        "150",
        "--steps",
        "900",
        "--batch-size",
        "128",
        "--learning-rate",
        "0.0001",
        "--patience",
        "20",
        "--seed",
        "3",
        "--device",
        "auto",
        "--members",
        "5",
        "--stop-after",
        "40",
    ]


def test_worker_environment_drops_qgis_python_variables():
    env = launch.worker_env(
        {"PATH": "/bin", "PYTHONHOME": "/qgis", "PYTHONPATH": "/qgis/python"}, plugin_dir="/plugins/insar_subsidence"
    )
    assert env == {"PATH": "/bin", "PYTHONPATH": "/plugins", "PYTHONUNBUFFERED": "1"}


def test_runner_streams_events_and_reports_a_crash_with_its_last_lines():
    script = (
        "import json, sys, warnings; print(json.dumps({'event': 'epoch', 'epoch': 1})); print('noise'); "
        "warnings.warn('careful'); print('Traceback: boom', file=sys.stderr); sys.exit(3)"
    )
    events = []
    with pytest.raises(launch.WorkerFailedError, match=r"exit code 3(.|\n)*Traceback: boom"):
        launch.run([sys.executable, "-c", script], dict(os.environ), events.append, lambda: False)
    # No warning event: a failed run's warnings are in the error's last lines.
    assert events == [{"event": "epoch", "epoch": 1}, {"event": "output", "text": "noise"}]


def test_runner_passes_on_the_warnings_of_a_worker_that_succeeds():
    """Python warnings on the worker's stderr (torch's UserWarnings are those) become warning
    events once it has succeeded, each once; other stderr lines do not."""
    script = (
        "import sys, warnings\n"
        "def warn(): warnings.warn('careful')\n"
        "warn(); warnings.warn('odd', RuntimeWarning); print('plain text', file=sys.stderr)\n"
        "warnings.simplefilter('always'); warn(); print('{\"event\": \"done\"}')\n"
    )
    events = []
    launch.run([sys.executable, "-c", script], dict(os.environ), events.append, lambda: False)
    assert events[0] == {"event": "done"} and [event["event"] for event in events[1:]] == ["warning", "warning"]
    assert events[1]["text"].endswith("UserWarning: careful") and events[2]["text"].endswith("RuntimeWarning: odd")


def test_the_workers_warnings_reach_the_log_as_warnings(log_feedback):
    feedback = log_feedback()
    follow = Follower(feedback)
    follow({"event": "warning", "text": "worker.py:12: UserWarning: no CUDA"})
    follow({"event": "output", "text": "a library's line"})
    assert feedback.lines == ["WARNING The training worker warned: worker.py:12: UserWarning: no CUDA"]


def test_runner_kills_the_worker_on_cancel():
    """Cancelled once the worker has said its process id: the process is gone (killed and reaped)."""
    script = "import json, os, time; print(json.dumps({'event': 'start', 'pid': os.getpid()})); time.sleep(60)"
    events = []
    with pytest.raises(InterruptedError):
        launch.run([sys.executable, "-c", script], dict(os.environ), events.append, lambda: bool(events))
    with pytest.raises(ProcessLookupError):
        os.kill(events[0]["pid"], 0)


@pytest.mark.heavy
def test_default_settings_learn_300_patches_and_say_nothing_is_wrong(plugin, tmp_path, log_feedback):
    """About 300 patches of a learnable function, split by spatial blocks, every setting left at
    its default: R² >= 0.8 on the held-out test blocks, the plan and the transforms in the log and
    the model, no nothing-learnt warning."""
    known_function_dataset(tmp_path / "data.npz", n=300, blocks=True)
    feedback = log_feedback()
    result = processing.run(
        "subsidence:traincnn",
        {
            "DATASET": str(tmp_path / "data.npz"),
            "OUTPUT_MODEL": str(tmp_path / "model.onnx"),
            "OUTPUT_REPORT": str(tmp_path / "r.html"),
        },
        feedback=feedback,
    )
    metadata = read_metadata(result["OUTPUT_MODEL"])
    scores = json.loads(metadata["metrics"])
    assert scores["test"]["n"] >= 30 and scores["test"]["r2"] >= 0.8
    training = json.loads(metadata["training"])
    assert training["plan"]["recipe"] == "adaptive" and training["plan"]["batch_size"] == 32
    assert training["settings"]["epochs"] == 0 and training["plan"]["epochs"] > 100  # planned from the steps
    assert [entry["transform"] for entry in json.loads(metadata["band_transforms"])] == ["none", "none", "asinh"]
    assert (
        "Training plan: adaptive recipe" in feedback.text
        and "Log-scaled inside the model, as asinh(x / m): band2" in feedback.text
    )
    assert (
        "learnt nothing" not in feedback.text
        and "learnt nothing" not in open(result["OUTPUT_REPORT"], encoding="utf-8").read()
    )


@pytest.mark.heavy
def test_a_model_that_learnt_nothing_is_reported(plugin, tmp_path, log_feedback):
    known_function_dataset(tmp_path / "data.npz", n=300, blocks=True, shuffled=True)
    feedback = log_feedback()
    result = train(tmp_path, tmp_path / "data.npz", feedback, EPOCHS=40, OUTPUT_REPORT=str(tmp_path / "r.html"))
    warnings = [line for line in feedback.lines if line.startswith("WARNING ") and "learnt nothing" in line]
    assert len(warnings) == 1 and "below the training mean's" in warnings[0]
    assert "Warning: the model learnt nothing useful" in open(result["OUTPUT_REPORT"], encoding="utf-8").read()


def test_stop_after_cuts_the_plan_without_changing_its_schedule(plugin, tmp_path):
    """A run stopped after epoch 3 of a 12-epoch plan is that plan's first three epochs: the same
    learning rates and losses (the same seed), not a 3-epoch schedule (REFIT relies on it)."""
    torch = pytest.importorskip("torch")  # the training interpreter's; none in make test-qgis's QGIS

    from insar_subsidence.core.dataset import open_dataset
    from insar_subsidence.models import worker

    known_function_dataset(tmp_path / "data.npz", n=200)
    data = open_dataset(tmp_path / "data.npz")
    data = {**data, "split": np.where(data["split"] == VAL, 0, data["split"])}  # no validation points
    quiet = lambda *args, **values: None
    full = worker.train(data, "dense", 12, 0, 0.0, 0, 0, torch.device("cpu"), progress=quiet)[1]
    _, cut, plan, _ = worker.train(data, "dense", 12, 0, 0.0, 0, 0, torch.device("cpu"), progress=quiet, stop_after=3)
    assert plan.epochs == 12 and [entry["epoch"] for entry in cut] == [1, 2, 3]
    assert [(e["learning_rate"], e["train_loss"]) for e in cut] == [
        (e["learning_rate"], e["train_loss"]) for e in full[:3]
    ]
    assert len(full) == 12


@pytest.mark.parametrize(("epochs", "ordered"), [(1, False), (6, False), (6, True)])
def test_validation_is_scored_with_the_batch_statistics_of_the_training_patches(plugin, tmp_path, epochs, ordered):
    """The validation loss recorded for the weights kept equals that of the same weights with
    every batch normalisation's statistics computed anew from all training patches in one batch
    (dropout off): a second computation of what eval mode should use. `ordered`: the points sorted
    by their target, so that neighbouring points are alike, as in a PS export sorted by place
    (statistics from slices of neighbours understated the variance: eval mode was another network)."""
    import copy

    torch = pytest.importorskip("torch")  # the training interpreter's; none in make test-qgis's QGIS

    from insar_subsidence.core.dataset import open_dataset
    from insar_subsidence.models import worker

    known_function_dataset(
        tmp_path / "data.npz", n=1000 if ordered else 300, blocks=True
    )  # 1000: several statistics batches
    data = open_dataset(tmp_path / "data.npz")
    if ordered:
        order = np.argsort(data["targets"])
        data = {**data, **{key: np.asarray(data[key])[order] for key in ("patches", "targets", "split")}}
    model, history, _, _ = worker.train(
        data, "dense", epochs, 0, 0.0, 0, 0, torch.device("cpu"), progress=lambda *args, **values: None
    )
    reference = copy.deepcopy(model)
    network = reference.networks[0]
    for module in network.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 1.0  # the running statistics become those of the next batch
    train_index, val = np.flatnonzero(data["split"] == TRAIN), data["split"] == VAL
    with torch.no_grad():
        network.train()
        network(reference.normalise(torch.from_numpy(np.asarray(data["patches"][train_index]))))
    target_std = data["targets"][train_index].std()
    loss = np.mean(((predict_with(reference, data["patches"][val]) - data["targets"][val]) / target_std) ** 2)
    recorded = min(entry["val_loss"] for entry in history)
    assert loss == pytest.approx(recorded, rel=0.01)


def predict_with(model, patches):
    torch = pytest.importorskip("torch")  # the training interpreter's; none in make test-qgis's QGIS

    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(patches)))[0][:, 0].numpy()


def test_the_noise_variance_is_calibrated_on_the_validation_points(plugin, tmp_path, small_dataset):
    """noise_variance makes the validation points' mean squared standardised error 1, with the
    members' spread and the errors ONNX Runtime gives; the recorded test coverage uses that σ."""
    from insar_subsidence.core.dataset import open_dataset

    result = train(tmp_path, small_dataset, EPOCHS=3, ENSEMBLE=2)
    data = open_dataset(small_dataset)
    metadata = read_metadata(result["OUTPUT_MODEL"])
    members = onnxruntime.InferenceSession(result["OUTPUT_MODEL"], providers=["CPUExecutionProvider"]).run(
        ["members"], {"patches": np.asarray(data["patches"])}
    )[0]
    mean, spread = members.mean(axis=1).astype(float), members.std(axis=1, ddof=1).astype(float)
    noise = float(metadata["noise_variance"])
    val, test = data["split"] == VAL, data["split"] == TEST
    assert noise > 0 and np.mean((data["targets"][val] - mean[val]) ** 2 / (spread[val] ** 2 + noise)) == pytest.approx(
        1.0, rel=1e-3
    )
    within = 100 * np.mean(np.abs(data["targets"][test] - mean[test]) <= np.sqrt(spread[test] ** 2 + noise))
    assert json.loads(metadata["calibration"])["test"]["within_1_sigma"] == pytest.approx(within, abs=1e-6)


@pytest.mark.heavy
def test_refit_trains_again_on_every_point_for_the_best_epochs(plugin, tmp_path, small_dataset, log_feedback):
    """REFIT writes a model trained on all the points (its band statistics theirs), for the median of
    the members' best epochs, keeps the split's scores, and evaluate refuses it."""
    from insar_subsidence.algorithms.traincnn import refit_epochs
    from insar_subsidence.core.dataset import open_dataset

    split = train(tmp_path, small_dataset, EPOCHS=6, ENSEMBLE=2, PATIENCE=0, OUTPUT_MODEL=str(tmp_path / "split.onnx"))
    feedback = log_feedback()
    result = train(tmp_path, small_dataset, feedback=feedback, EPOCHS=6, ENSEMBLE=2, PATIENCE=0, REFIT=True)
    data = open_dataset(small_dataset)
    metadata, split_metadata = read_metadata(result["OUTPUT_MODEL"]), read_metadata(split["OUTPUT_MODEL"])
    history = json.loads(split_metadata["training"])["history"]
    best = [min((e for e in history if e["member"] == m), key=lambda e: e["val_loss"])["epoch"] for m in (1, 2)]
    assert json.loads(metadata["refit"]) == {
        "points": len(data["targets"]),
        "epochs": max(1, int(round(np.median(best)))),
        "planned_epochs": 6,
    }
    assert json.loads(metadata["refit"])["epochs"] == refit_epochs(history)
    patches = np.asarray(data["patches"], float)
    np.testing.assert_allclose(json.loads(metadata["band_mean"]), patches.mean(axis=(0, 2, 3)), rtol=1e-6)
    assert result["TEST_RMSE"] == pytest.approx(
        split["TEST_RMSE"], rel=1e-6
    )  # the same seeds: the split's networks, scored
    assert "Refit: training again on all 300 points" in feedback.text
    assert not np.allclose(
        predict(result["OUTPUT_MODEL"], data["patches"]), predict(split["OUTPUT_MODEL"], data["patches"])
    )
    with pytest.raises(QgsProcessingException, match="REFIT"):
        processing.run(
            "subsidence:evaluate",
            {"DATASET": str(small_dataset), "MODEL": result["OUTPUT_MODEL"], "OUTPUT_TABLE": str(tmp_path / "t.csv")},
        )
