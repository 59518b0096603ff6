"""core.model_card: the card's round trip through the ONNX metadata, its refusals naming the field,
the models of earlier versions read as they were written, and what it maps and checks."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from cnn_data import known_function_dataset

from insar_subsidence.core.dataset import open_dataset, split_fingerprint
from insar_subsidence.core.errors import InputError
from insar_subsidence.core.model_card import CARD_VERSION, REQUIRED, ModelCard, TrainingSettings, dataset_fields
from insar_subsidence.core.patches import TEST, TRAIN
from insar_subsidence.models import launch
from insar_subsidence.models.export import read_metadata

LEGACY_MODEL = Path(__file__).parent / "data" / "models" / "legacy_small.onnx"  # tests/data/README.md


def full_card():
    """A card with every field away from its default, so that the round trip tests each one."""
    return ModelCard(
        band_names=("slope", "twi"),
        band_mean=(1.5, -2.0),
        band_std=(0.5, 3.0),
        patch_size=9,
        target_field="velocity",
        target_units="mm/yr",
        architecture="small",
        dense_exact=True,
        metrics={"test": {"n": 12, "rmse": 1.25}},
        plugin_version="9.8.7",
        card_version=CARD_VERSION,
        band_transforms=[{"band": "slope", "transform": "none"}, {"band": "twi", "transform": "asinh", "scale": 2.5}],
        pixel_size=(50.0, 49.5),
        crs="EPSG:25830",
        nodata_policy="fill",
        edge_policy="nodata",
        ensemble_members=3,
        calibration={"test": {"within_1_sigma": 70.0, "within_2_sigma": 96.0}},
        noise_variance=0.1 + 0.2,  # a float whose shortest repr has many digits
        applicability={"samples": "AAAA", "mean_distance": 2.0, "threshold": 0.4},
        split_fingerprint="ab" * 32,
        settings=TrainingSettings(
            architecture="small",
            epochs=12,
            batch_size=16,
            learning_rate=2e-3,
            patience=5,
            seed=7,
            device="cpu",
            recipe="paper",
            steps=900,
            members=3,
        ),
        history=({"member": 1, "epoch": 1, "train_loss": 0.5, "val_loss": None},),
        plan={"recipe": "paper", "epochs": 12},
        refit={"points": 40, "epochs": 3, "planned_epochs": 12},
    )


def test_every_field_survives_the_metadata_round_trip():
    card = full_card()
    for field in dataclasses.fields(ModelCard):
        if field.default is not dataclasses.MISSING and field.name not in ("card_version", "edge_policy"):
            assert getattr(card, field.name) != field.default, field.name  # each field is tested
    metadata = card.to_metadata()
    assert all(isinstance(value, str) for value in metadata.values())
    assert ModelCard.from_metadata(metadata) == card
    # The keys of earlier versions keep their names and encodings.
    assert json.loads(metadata["band_names"]) == ["slope", "twi"] and metadata["patch_size"] == "9"
    assert metadata["dense_exact"] == "true" and metadata["ensemble_members"] == "3"
    assert (metadata["card_version"], metadata["edge_policy"]) == (str(CARD_VERSION), "nodata")  # their only values
    assert float(metadata["noise_variance"]) == 0.1 + 0.2
    assert json.loads(metadata["training"])["settings"]["learning_rate"] == 2e-3


@pytest.mark.parametrize("key", REQUIRED)
def test_a_missing_required_field_is_refused_by_name(key):
    metadata = full_card().to_metadata()
    del metadata[key]
    with pytest.raises(InputError, match=f"lacks the metadata {key}:"):
        ModelCard.from_metadata(metadata)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("patch_size", "nine"),
        ("patch_size", "0"),
        ("band_mean", "[1.5]"),  # one number for two bands
        ("band_std", "[0.5, 3.0"),  # not JSON
        ("band_names", '["slope", 2]'),
        ("dense_exact", "yes"),
        ("pixel_size", "[50.0]"),
        ("pixel_size", "[50.0, -49.5]"),
        ("nodata_policy", "mirror"),
        ("edge_policy", "mirror"),
        ("ensemble_members", "0"),
        ("noise_variance", "nan"),
        ("metrics", "[]"),
        ("band_transforms", "[]"),
        ("card_version", "one"),
        ("training", '{"history": [], "settings": {"architecture": "small"}}'),  # no epochs
        ("training", json.dumps({"history": [], "settings": {**full_card().settings.to_dict(), "epochs": 2.5}})),
    ],
)
def test_a_malformed_field_is_refused_by_name(key, value):
    metadata = {**full_card().to_metadata(), key: value}
    with pytest.raises(InputError, match=f"metadata {re.escape(key)}[ .].*malformed"):
        ModelCard.from_metadata(metadata)


def test_a_card_of_a_later_version_asks_for_an_update():
    metadata = {**full_card().to_metadata(), "card_version": str(CARD_VERSION + 1)}
    with pytest.raises(InputError, match="newer than this plugin reads.*update the plugin"):
        ModelCard.from_metadata(metadata)


def test_a_model_of_the_previous_version_reads_as_it_was_written():
    """The model in tests/data/models was written by version 0.1.0, before the card: no card version,
    pixel size, CRS or split fingerprint (None, and the checks say it predates them); the edge
    policy it was trained with, nodata; everything else as it was written, key for key."""
    written = read_metadata(str(LEGACY_MODEL))
    card = ModelCard.from_metadata(written)
    assert (card.card_version, card.pixel_size, card.crs, card.split_fingerprint) == (None, None, None, None)
    assert card.edge_policy == "nodata" and "predates the model card" in card.unrecorded_warning("x", "Y")
    # How it was made (tests/data/README.md): qgis_process with ARCHITECTURE=2 EPOCHS=2 ENSEMBLE=2 SEED=0.
    assert card.settings == TrainingSettings(
        architecture="small",
        epochs=2,
        batch_size=0,
        learning_rate=0.0,
        patience=30,
        seed=0,
        device="auto",
        recipe="adaptive",
        steps=4000,
        members=2,
    )
    assert (card.band_names, card.patch_size, card.ensemble_members) == (("band0", "band1", "band2"), 9, 2)
    assert (card.architecture, card.dense_exact, card.nodata_policy) == ("small", True, "fill")
    rewritten = card.to_metadata()
    assert set(rewritten) == set(written) | {"edge_policy"}
    for key, value in written.items():
        try:
            assert json.loads(rewritten[key]) == json.loads(value), key
        except json.JSONDecodeError:  # text, not JSON
            assert rewritten[key] == value, key


def test_the_settings_map_to_the_workers_keywords():
    """Stored names in, worker_command's keywords out; settings not recorded take the worker's defaults."""
    settings = full_card().settings
    command = launch.worker_command("py", "d.npz", "out", **settings.worker_arguments(stop_after=4))
    assert command[command.index("--recipe") :] == [
        "--recipe",
        "paper",
        "--epochs",
        "12",
        "--steps",
        "900",
        "--batch-size",
        "16",
        "--learning-rate",
        "0.002",
        "--patience",
        "5",
        "--seed",
        "7",
        "--device",
        "cpu",
        "--members",
        "3",
        "--stop-after",
        "4",
    ]
    recorded = ("architecture", "epochs", "batch_size", "learning_rate", "patience", "seed", "device")
    older = TrainingSettings.from_dict({key: settings.to_dict()[key] for key in recorded})
    assert (older.recipe, older.steps, older.members) == (None, None, None)
    command = launch.worker_command("py", "d.npz", "out", **older.worker_arguments())
    assert command == launch.worker_command("py", "d.npz", "out", "small", 12, 16, 2e-3, 5, 7, "cpu")


def test_the_split_fingerprint_tells_the_training_split_from_any_other(tmp_path):
    known_function_dataset(tmp_path / "data.npz", n=100)
    data = open_dataset(tmp_path / "data.npz")
    x, y, split = np.array(data["x"]), np.array(data["y"]), np.array(data["split"])
    recorded = dataset_fields(data)["split_fingerprint"]
    assert split_fingerprint(x.copy(), y.copy(), split.astype(np.int64)) == recorded  # the values, not the dtype
    swapped = split.copy()
    first_train, first_test = np.flatnonzero(split == TRAIN)[0], np.flatnonzero(split == TEST)[0]
    swapped[[first_train, first_test]] = TEST, TRAIN
    moved = x.copy()
    moved[0] += 0.01
    assert split_fingerprint(x, y, swapped) != recorded
    assert split_fingerprint(moved, y, split) != recorded
    assert split_fingerprint(x[:-1], y[:-1], split[:-1]) != recorded


def test_the_pixel_size_may_differ_by_one_percent():
    card = dataclasses.replace(full_card(), pixel_size=(10.0, 10.0))
    assert card.resolution_problem(10.09, 9.91) is None
    problem = card.resolution_problem(10.2, 10.0)
    assert "10.2 x 10 map units" in problem and "gdalwarp -tr 10 10" in problem
    assert "50 x 50" in card.resolution_problem(50.0, 50.0)
    assert dataclasses.replace(card, pixel_size=None).resolution_problem(50.0, 50.0) is None
