"""Finishing the worker's ONNX file in QGIS: the metadata (core.model_card.ModelCard.to_metadata),
and the check that ONNX Runtime gives torch's numbers before the file is written."""

import json
import os
import tempfile

import numpy as np

TOLERANCE = 1e-4  # of the targets' spread: how far ONNX Runtime may be from torch


def metadata_value(value):
    """custom_metadata_map holds strings: text as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def finish(raw_model, destination, metadata, check_inputs, check_outputs, spread):
    """Write raw_model (a path) to destination with `metadata` (name -> value) after checking
    that ONNX Runtime reproduces check_outputs ({output name: torch's values}) on check_inputs to
    TOLERANCE x spread."""
    import onnx
    import onnxruntime

    model = onnx.load(raw_model)
    onnx.helper.set_model_props(model, {name: metadata_value(value) for name, value in metadata.items()})
    data = model.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(list(check_outputs), {session.get_inputs()[0].name: np.asarray(check_inputs, np.float32)})
    error = max(float(np.max(np.abs(value - expected))) for value, expected in zip(got, check_outputs.values()))
    if not error <= TOLERANCE * max(spread, 1e-12):
        raise ValueError(
            f"ONNX Runtime's output differs from torch's by {error:.3g} (allowed {TOLERANCE * spread:.3g}); "
            "the model was not written."
        )
    folder = os.path.dirname(os.path.abspath(destination))
    handle, temporary = tempfile.mkstemp(suffix=".onnx", dir=folder)
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    os.replace(temporary, destination)  # never a half-written model at the destination
    return error


def read_metadata(model):
    """The custom metadata of an ONNX model (a path or the file's bytes)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def plugin_version():
    import configparser

    from .interpreter import PLUGIN_DIR

    parser = configparser.ConfigParser()
    parser.read(os.path.join(PLUGIN_DIR, "metadata.txt"), encoding="utf-8")
    return parser.get("general", "version", fallback="unknown")


def read_card(model):
    """The model card of an ONNX model (a path or the file's bytes); core.errors.InputError when
    its metadata is not a card this version reads."""
    from ..core.model_card import ModelCard

    return ModelCard.from_metadata(read_metadata(model))
