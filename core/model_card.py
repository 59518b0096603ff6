"""The model card: everything that passes from training to prediction and evaluation, in one place.

The card travels inside the ONNX file as its custom metadata (strings only): text fields as they
are, numbers and structures as JSON. The key names are those the earliest models used, so old and
new models read the same way. Models written before the card existed (no `card_version`) read as
cards whose pixel size, CRS and split fingerprint are None: the checks that need them are skipped,
with a warning (unrecorded_warning). TrainingSettings keeps the names under which the settings are
stored apart from the worker's keyword arguments (worker_arguments), so that renaming a worker
keyword does not break the models already trained.
"""

import json
import math
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Optional

from .dataset import split_fingerprint
from .errors import InputError
from .patches import POLICY_NAMES

CARD_VERSION = 1
EDGE_POLICIES = ("nodata",)  # cells beyond the raster's edge: nodata, in training and in prediction
RESOLUTION_TOLERANCE = 0.01  # a stack's pixel may differ from the model's by this fraction
# Every model following the plugin's conventions records these (docs/DESIGN.md); the rest is optional.
REQUIRED = (
    "band_names",
    "band_mean",
    "band_std",
    "patch_size",
    "target_field",
    "target_units",
    "architecture",
    "dense_exact",
    "metrics",
    "plugin_version",
)


@dataclass(frozen=True)
class TrainingSettings:
    """How the networks were trained, under the names the card stores. None for recipe, steps or
    members: not recorded (models of earlier versions), the worker's default."""

    architecture: str
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    seed: int
    device: str
    recipe: Optional[str] = None
    steps: Optional[int] = None
    members: Optional[int] = None

    def worker_arguments(self, stop_after=0):
        """models.launch.worker_command's keyword arguments; stop_after: the last epoch to run
        (0: the plan's last). The stored names map to the worker's here and only here."""
        arguments = {
            "architecture": self.architecture,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "patience": self.patience,
            "seed": self.seed,
            "device": self.device,
            "stop_after": stop_after,
        }
        optional = {"recipe": self.recipe, "steps": self.steps, "members": self.members}
        arguments.update({key: value for key, value in optional.items() if value is not None})
        return arguments

    def to_dict(self):
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, values, where="training.settings"):
        if not isinstance(values, dict):
            raise _malformed(where, "not an object")
        kinds = {"architecture": str, "device": str, "recipe": str, "learning_rate": float}
        decoded = {}
        for field in fields(cls):
            key = field.name
            if key not in values:
                if field.default is MISSING:
                    raise _malformed(where, f"{key} is missing")
                continue
            kind = kinds.get(key, int)
            decoded[key] = _typed(values[key], kind, f"{where}.{key}")
        return cls(**decoded)


@dataclass(frozen=True)
class ModelCard:
    band_names: tuple
    band_mean: tuple
    band_std: tuple
    patch_size: int
    target_field: str
    target_units: str
    architecture: str
    dense_exact: bool
    metrics: dict
    plugin_version: str
    card_version: Optional[int] = CARD_VERSION  # None: written before the card existed
    band_transforms: Optional[list] = None  # core.transforms.to_metadata
    pixel_size: Optional[tuple] = None  # (x, y) in map units
    crs: Optional[str] = None  # WKT or an authority id such as EPSG:32630
    nodata_policy: str = "skip"
    edge_policy: str = "nodata"
    ensemble_members: int = 1
    calibration: Optional[dict] = None
    noise_variance: Optional[float] = None  # only when finite
    applicability: Optional[dict] = None  # core.applicability.Applicability.to_metadata
    split_fingerprint: Optional[str] = None  # core.dataset.split_fingerprint of the training dataset
    settings: Optional[TrainingSettings] = None
    history: tuple = ()
    plan: Optional[dict] = None  # models.recipe.Plan._asdict()
    refit: Optional[dict] = None

    def __post_init__(self):
        # Sequences as tuples, so that a card equals its round trip through the metadata.
        for name in ("band_names", "band_mean", "band_std", "pixel_size", "history"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))

    def to_metadata(self):
        """The ONNX custom metadata: {key: string}."""
        values = {
            "band_names": list(self.band_names),
            "band_mean": list(self.band_mean),
            "band_std": list(self.band_std),
            "band_transforms": self.band_transforms,
            "patch_size": str(self.patch_size),
            "pixel_size": None if self.pixel_size is None else list(self.pixel_size),
            "crs": self.crs,
            "target_field": self.target_field,
            "target_units": self.target_units,
            "nodata_policy": self.nodata_policy,
            "edge_policy": self.edge_policy,
            "architecture": self.architecture,
            "dense_exact": "true" if self.dense_exact else "false",
            "ensemble_members": str(self.ensemble_members),
            "metrics": self.metrics,
            "calibration": self.calibration,
            "noise_variance": None if self.noise_variance is None else repr(float(self.noise_variance)),
            "applicability": self.applicability,
            "split_fingerprint": self.split_fingerprint,
            "plugin_version": self.plugin_version,
            "card_version": None if self.card_version is None else str(self.card_version),
            "training": self._training(),
            "refit": self.refit,
        }
        return {
            key: value if isinstance(value, str) else json.dumps(value)
            for key, value in values.items()
            if value is not None
        }

    def _training(self):
        if self.settings is None and not self.history and self.plan is None:
            return None
        training = {"epochs_run": len(self.history), "history": list(self.history)}
        if self.settings is not None:
            training["settings"] = self.settings.to_dict()
        if self.plan is not None:
            training["plan"] = self.plan
        return training

    @classmethod
    def from_metadata(cls, metadata):
        """The card of a model's metadata ({key: string}); InputError naming the field that is
        missing or malformed."""
        missing = [key for key in REQUIRED if key not in metadata]
        if missing:
            raise InputError(
                f"The model lacks the metadata {', '.join(missing)}: it was not written by 'Train the CNN'; "
                "train it with 'Train the CNN'."
            )
        version = _optional(metadata, "card_version", lambda key: _typed(_json(metadata, key), int, key))
        if version is not None and version > CARD_VERSION:
            raise InputError(
                f"The model's card is of version {version}, newer than this plugin reads ({CARD_VERSION}): "
                "update the plugin."
            )
        band_names = _strings(metadata, "band_names")
        training = _optional(metadata, "training", lambda key: _object(metadata, key))
        settings = None
        if training is not None and "settings" in training:
            settings = TrainingSettings.from_dict(training["settings"])
        return cls(
            band_names=band_names,
            band_mean=_numbers(metadata, "band_mean", len(band_names)),
            band_std=_numbers(metadata, "band_std", len(band_names)),
            patch_size=_positive_int(metadata, "patch_size"),
            target_field=metadata["target_field"],
            target_units=metadata["target_units"],
            architecture=metadata["architecture"],
            dense_exact=_boolean(metadata, "dense_exact"),
            metrics=_object(metadata, "metrics"),
            plugin_version=metadata["plugin_version"],
            card_version=version,
            band_transforms=_optional(metadata, "band_transforms", lambda key: _transforms(metadata, key, band_names)),
            pixel_size=_optional(metadata, "pixel_size", lambda key: _pixel_size(metadata, key)),
            crs=_optional(metadata, "crs", lambda key: metadata[key] or None),
            nodata_policy=_choice(metadata, "nodata_policy", POLICY_NAMES, "skip"),
            edge_policy=_choice(metadata, "edge_policy", EDGE_POLICIES, "nodata"),
            ensemble_members=_optional(metadata, "ensemble_members", lambda key: _positive_int(metadata, key)) or 1,
            calibration=_optional(metadata, "calibration", lambda key: _object(metadata, key)),
            noise_variance=_optional(metadata, "noise_variance", lambda key: _noise(metadata, key)),
            applicability=_optional(metadata, "applicability", lambda key: _object(metadata, key)),
            split_fingerprint=_optional(metadata, "split_fingerprint", lambda key: metadata[key] or None),
            settings=settings,
            history=_history(training),
            plan=None if training is None else training.get("plan"),
            refit=_optional(metadata, "refit", lambda key: _object(metadata, key)),
        )

    def resolution_problem(self, pixel_width, pixel_height):
        """Why a stack of pixel_width x pixel_height map units does not suit the model (its pixels
        more than RESOLUTION_TOLERANCE off those it was trained at), or None."""
        if self.pixel_size is None:
            return None
        trained_x, trained_y = self.pixel_size
        if all(
            abs(given - trained) <= RESOLUTION_TOLERANCE * trained
            for given, trained in ((pixel_width, trained_x), (pixel_height, trained_y))
        ):
            return None
        return (
            f"The stack's pixels are {pixel_width:g} x {pixel_height:g} map units, the model was trained on drivers "
            f"of {trained_x:g} x {trained_y:g}: its patches would cover another area on the ground than in training. "
            f"Resample the drivers to the model's pixel size ('Stack driver rasters' with a REFERENCE raster of "
            f"{trained_x:g} x {trained_y:g} pixels, or gdalwarp -tr {trained_x:g} {trained_y:g}), or train a model "
            "on drivers of this resolution."
        )

    def unrecorded_warning(self, what, check):
        """The warning for a check skipped because the card does not record `what`; `check`: what
        goes unchecked, as the start of a sentence."""
        if self.card_version is None:
            why = f"it predates the model card (written by version {self.plugin_version} of the plugin)"
        else:
            why = "its training dataset did not record it"
        return f"The model does not record {what}: {why}. {check} is not checked."


def dataset_fields(data):
    """The card's fields that come from a training dataset (core.dataset.open_dataset's dict)."""
    crs = str(data["crs"]) if "crs" in data else ""
    return {
        "band_names": [str(name) for name in data["band_names"]],
        "patch_size": int(data["patch_size"]),
        "pixel_size": [abs(float(value)) for value in data["pixel_size"]] if "pixel_size" in data else None,
        "crs": crs or None,
        "target_field": str(data["target_field"]),
        "target_units": str(data["target_units"]),
        "nodata_policy": str(data["nodata_policy"]) if "nodata_policy" in data else "skip",
        "split_fingerprint": split_fingerprint(data["x"], data["y"], data["split"]),
    }


def _malformed(key, reason):
    return InputError(
        f"The model's metadata {key} is malformed ({reason}): the file was changed or not written by "
        "'Train the CNN'; train the model again."
    )


def _optional(metadata, key, decode):
    return decode(key) if key in metadata else None


def _json(metadata, key):
    try:
        return json.loads(metadata[key])
    except ValueError:
        raise _malformed(key, "not JSON") from None


def _typed(value, kind, key):
    """value as `kind` (int, float or str), refusing booleans, fractions for int and non-finite floats."""
    if kind is str:
        if not isinstance(value, str):
            raise _malformed(key, "not text")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _malformed(key, "not a number")
    if kind is int:
        if value != int(value):
            raise _malformed(key, "not a whole number")
        return int(value)
    if not math.isfinite(value):
        raise _malformed(key, "not finite")
    return float(value)


def _strings(metadata, key):
    values = _json(metadata, key)
    if not isinstance(values, list) or not values or not all(isinstance(value, str) for value in values):
        raise _malformed(key, "not a list of names")
    return values


def _numbers(metadata, key, count):
    values = _json(metadata, key)
    if not isinstance(values, list) or len(values) != count:
        raise _malformed(key, f"not a list of {count} numbers, one per band")
    return [_typed(value, float, key) for value in values]


def _positive_int(metadata, key):
    try:
        value = int(metadata[key])
    except ValueError:
        raise _malformed(key, f"{metadata[key]!r} is not a whole number") from None
    if value < 1:
        raise _malformed(key, f"{value} is not positive")
    return value


def _boolean(metadata, key):
    if metadata[key] not in ("true", "false"):
        raise _malformed(key, f"{metadata[key]!r} is neither true nor false")
    return metadata[key] == "true"


def _object(metadata, key):
    value = _json(metadata, key)
    if not isinstance(value, dict):
        raise _malformed(key, "not an object")
    return value


def _choice(metadata, key, choices, legacy):
    """The value among `choices`; `legacy` when the model predates the key."""
    value = metadata.get(key, legacy)
    if value not in choices:
        raise _malformed(key, f"{value!r} is not one of {', '.join(choices)}")
    return value


def _transforms(metadata, key, band_names):
    values = _json(metadata, key)
    if not isinstance(values, list) or len(values) != len(band_names) or not all(isinstance(v, dict) for v in values):
        raise _malformed(key, "not one transform per band")
    return values


def _pixel_size(metadata, key):
    values = _json(metadata, key)
    if not isinstance(values, list) or len(values) != 2:
        raise _malformed(key, "not [x, y]")
    sizes = tuple(_typed(value, float, key) for value in values)
    if min(sizes) <= 0:
        raise _malformed(key, "not positive")
    return sizes


def _noise(metadata, key):
    try:
        value = float(metadata[key])
    except ValueError:
        raise _malformed(key, f"{metadata[key]!r} is not a number") from None
    if not value >= 0 or not math.isfinite(value):
        raise _malformed(key, f"{value} is not a finite variance")
    return value


def _history(training):
    history = [] if training is None else training.get("history", [])
    if not isinstance(history, list) or not all(isinstance(entry, dict) for entry in history):
        raise _malformed("training.history", "not a list of epochs")
    return history
