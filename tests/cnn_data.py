"""Synthetic training datasets whose target is a known function of the patches."""

import numpy as np
from conftest import TORCH_PYTHON
from scipy.ndimage import gaussian_filter

from insar_subsidence.core import dataset
from insar_subsidence.core.patches import spatial_blocks


def known_function_dataset(path, n=3000, bands=3, size=22, seed=0, blocks=False, shuffled=False, policy="fill"):
    """Bands are smooth random fields (like driver rasters); the target is band 0 at the patch's
    centre pixel + 3 x the mean of band 1 over the 5 x 5 centre; band 2, positive and heavy-tailed
    like a catchment area (so that the model log-scales it), plays no part. Split 70 / 15 / 15 at
    random, or with `blocks` by whole 250 x 250 m blocks of the points (as exportpatches does);
    `shuffled`: the targets shuffled, so that nothing can be learnt; `policy`: the nodata policy
    recorded (the patches have no nodata). Returns the targets' std."""
    rng = np.random.default_rng(seed)
    patches = gaussian_filter(rng.normal(0, 1, (n, bands, size, size)), sigma=(0, 0, 5, 5), mode="wrap")
    patches = (patches / patches.std()).astype(np.float32)
    patches[:, 0] = 10 + 2 * patches[:, 0]  # raw values off zero and off unit scale: normalisation matters
    if bands > 2:
        patches[:, 2] = np.exp(1.5 * patches[:, 2])
    centre = size // 2
    targets = (
        patches[:, 0, centre, centre]
        + 3 * patches[:, 1, centre - 2 : centre + 3, centre - 2 : centre + 3].mean(axis=(1, 2))
    ).astype(np.float32)
    if shuffled:
        targets = rng.permutation(targets)
    x, y = rng.uniform(0, 1000, n), rng.uniform(0, 1000, n)
    if blocks:
        split = spatial_blocks(x, y, 250.0, 0.15, 0.15, rng).astype(np.int8)
    else:
        split = rng.choice(3, n, p=[0.7, 0.15, 0.15]).astype(np.int8)
    training = patches[split == 0]
    dataset.write(
        path,
        patches,
        np.arange(n),
        {
            "targets": targets,
            "x": x,
            "y": y,
            "pid": np.array([f"p{i}" for i in range(n)]),
            "split": split,
            "band_names": np.array([f"band{b}" for b in range(bands)]),
            "band_mean": training.mean(axis=(0, 2, 3)).astype(np.float64),
            "band_std": training.std(axis=(0, 2, 3)).astype(np.float64),
            "patch_size": size,
            "pixel_size": np.array([10.0, 10.0]),
            "crs": "EPSG:32630",
            "target_field": "displacement",
            "target_units": "mm",
            "nodata_policy": policy,
        },
    )
    return float(targets.std())


def trained_model(folder, architecture, size, policy="fill", epochs=3, members=1, n=600):
    """A model of `architecture` (an ensemble of `members`) trained briefly on n known_function_dataset
    patches of `size` (folder / "data.npz", its nodata policy `policy`) by the worker in the venv's
    interpreter, as traincnn trains one, and written with its model card; returns its path."""
    from qgis.core import QgsProcessingFeedback

    from insar_subsidence.core import applicability
    from insar_subsidence.core.dataset import open_dataset
    from insar_subsidence.core.model_card import ModelCard, TrainingSettings, dataset_fields
    from insar_subsidence.core.patches import TRAIN
    from insar_subsidence.core.prediction import MODEL_OUTPUTS
    from insar_subsidence.models.architecture import dense_exact
    from insar_subsidence.models.export import finish
    from insar_subsidence.models.training import train_in_worker

    known_function_dataset(folder / "data.npz", n=n, size=size, policy=policy)
    data = open_dataset(folder / "data.npz")
    settings = TrainingSettings(
        architecture=architecture,
        epochs=epochs,
        batch_size=64,
        learning_rate=3e-3,
        patience=0,
        seed=0,
        device="cpu",
        members=members,
    )
    train_in_worker(str(folder / "data.npz"), str(folder), settings, TORCH_PYTHON, QgsProcessingFeedback())
    with np.load(folder / "result.npz") as result:
        inputs = result["check_inputs"]
        outputs = {name: result[f"check_{name}"] for name in MODEL_OUTPUTS}
    train = data["split"] == TRAIN
    area, _ = applicability.fit(
        data["patches"][train],
        data["band_mean"],
        data["band_std"],
        data["x"][train],
        data["y"][train],
        250.0,
        np.random.default_rng(0),
    )
    card = ModelCard(
        **dataset_fields(data),
        band_mean=data["band_mean"].tolist(),
        band_std=data["band_std"].tolist(),
        architecture=architecture,
        dense_exact=dense_exact(architecture),
        ensemble_members=members,
        applicability=area.to_metadata(),
        metrics={},
        plugin_version="test",
        settings=settings,
    )
    path = str(folder / f"{architecture}{members}.onnx")
    finish(str(folder / "model.onnx"), path, card.to_metadata(), inputs, outputs, float(np.ptp(data["targets"])))
    return path


def smooth_fields(bands, rows, columns, seed=0):
    """Driver-like rasters with the statistics of known_function_dataset's bands."""
    rng = np.random.default_rng(seed)
    fields = gaussian_filter(rng.normal(0, 1, (bands, rows, columns)), sigma=(0, 5, 5), mode="wrap")
    fields /= fields.std()
    fields[0] = 10 + 2 * fields[0]
    if bands > 2:
        fields[2] = np.exp(1.5 * fields[2])
    return fields
