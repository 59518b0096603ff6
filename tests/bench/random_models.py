"""Dense-architecture models with random weights for the benchmarks: prediction speed does not
depend on training."""

import os
import shutil
import tempfile

import numpy as np


def write_dense_model(path, names, size, members=1, applicability=None):
    """An ensemble of `members` dense networks on the bands `names` (raw = normalised values) with
    size x size patches, written the way traincnn writes one; `applicability`: its metadata."""
    import torch

    from insar_subsidence.core.model_card import ModelCard
    from insar_subsidence.models.cnn import Deployed, build
    from insar_subsidence.models.export import finish
    from insar_subsidence.models.worker import export

    bands = len(names)
    torch.manual_seed(0)
    model = Deployed(
        [build("dense", bands, size) for _ in range(members)],
        np.zeros(bands),
        np.zeros(bands),
        np.ones(bands),
        0.0,
        1.0,
    ).eval()
    patches = np.random.default_rng(0).normal(0, 1, (64, bands, size, size)).astype(np.float32)
    folder = tempfile.mkdtemp()
    inputs, outputs = export(model, patches, folder)
    card = ModelCard(
        band_names=tuple(names),
        band_mean=(0.0,) * bands,
        band_std=(1.0,) * bands,
        patch_size=size,
        target_field="displacement",
        target_units="mm",
        architecture="dense",
        dense_exact=True,
        metrics={},
        plugin_version="bench",
        nodata_policy="fill",
        ensemble_members=members,
        applicability=applicability,
    )
    metadata = card.to_metadata()
    finish(os.path.join(folder, "model.onnx"), str(path), metadata, inputs, outputs, spread=1.0)
    shutil.rmtree(folder)
