"""The area of applicability and the ensemble's uncertainty: core.applicability against brute
force, and the whole chain on drivers that leave the training range."""

import numpy as np
import onnxruntime
import pytest
from cnn_data import smooth_fields
from osgeo import gdal
from qgis import processing
from scipy.spatial.distance import cdist, pdist

from insar_subsidence.core import applicability, dataset
from insar_subsidence.core.evaluation import spatial_folds
from insar_subsidence.models.export import read_metadata

LEFT, TOP, PIXEL = 400000.0, 4500000.0, 10.0
SIZE = 9  # the small architecture's patches: the test is about the chain, not the network
SHIFTED_FROM = 150  # columns from here on: band 0 far above anything trained on
SHIFT = 16.0  # raw units; band 0 has a standard deviation of about 2


def test_outlier_free_maximum_is_the_upper_whisker():
    values = np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 30])  # quartiles 3.25 and 7.75: whisker 14.5
    assert applicability.outlier_free_maximum(values) == 9.0
    assert applicability.outlier_free_maximum(values[:-1]) == 9.0


def test_training_dissimilarity_is_to_the_nearest_sample_of_another_fold():
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 1000, 300), rng.uniform(0, 1000, 300)
    patches = rng.normal(0, 1, (300, 3, 5, 5)).astype(np.float32)
    area, training = applicability.fit(patches, np.zeros(3), np.ones(3), x, y, 250.0, np.random.default_rng(7))
    features = np.concatenate([patches[:, :, 2, 2], patches.mean(axis=(2, 3))], axis=1)
    distances = cdist(features.astype(float), features.astype(float))
    mean_distance = pdist(features.astype(float)).mean()
    assert area.mean_distance == pytest.approx(mean_distance, rel=1e-9)
    fold_of = spatial_folds(x, y, 250.0, 10, np.random.default_rng(7))  # the folds fit draws (16 blocks)
    distances[fold_of[:, None] == fold_of[None, :]] = np.inf
    np.testing.assert_allclose(training, distances.min(axis=1) / mean_distance, rtol=1e-6)
    assert area.threshold == applicability.outlier_free_maximum(training)
    query = rng.normal(0, 2, (50, 6)).astype(np.float32)
    block = rng.normal(0, 1, (3, 6, 6)).astype(np.float32)  # 2 x 2 patches of 5 x 5
    wanted = np.array([[True, False], [True, True]])
    by_block = area.block_dissimilarity(block, 5, wanted)
    windows = np.lib.stride_tricks.sliding_window_view(block, (5, 5), axis=(1, 2))
    own = np.concatenate([windows[:, :, :, 2, 2], windows.mean(axis=(3, 4))]).transpose(1, 2, 0)
    np.testing.assert_allclose(by_block[wanted], cdist(own[wanted], features).min(axis=1) / mean_distance, rtol=1e-5)
    assert np.isnan(by_block[0, 1])
    np.testing.assert_allclose(area.dissimilarity(query), cdist(query, features).min(axis=1) / mean_distance, rtol=1e-5)
    few = applicability.Applicability(
        features[:3], 1.0, 1.0, np.zeros(3), np.ones(3)
    )  # fewer samples than features: the rotation stays whole
    np.testing.assert_allclose(few.dissimilarity(query), cdist(query, features[:3]).min(axis=1), rtol=1e-5)


def test_features_of_a_block_are_those_of_its_patches():
    rng = np.random.default_rng(0)
    block = rng.normal(5, 3, (2, 30, 40)).astype(np.float32)
    mean, std = np.array([5.0, 4.0]), np.array([3.0, 0.0])  # a constant band is not scaled
    windows = np.lib.stride_tricks.sliding_window_view(block, (9, 9), axis=(1, 2)).transpose(1, 2, 0, 3, 4)
    expected = applicability.patch_features(windows.reshape(-1, 2, 9, 9), mean, std).reshape(22, 32, 4)
    np.testing.assert_allclose(applicability.block_features(block, 9, mean, std), expected, atol=1e-5)
    assert expected[0, 0, 0] == pytest.approx((block[0, 4, 4] - 5) / 3, rel=1e-6)
    assert expected[0, 0, 3] == pytest.approx(block[1, :9, :9].mean() - 4, rel=1e-5)


def shifted_stack(geotiff, path, rows=100, columns=220):
    values = smooth_fields(3, rows, columns, seed=4)
    values[0, :, SHIFTED_FROM:] += SHIFT
    names = ["band0", "band1", "band2"]
    return geotiff(path, values, (LEFT, PIXEL, 0, TOP, 0, -PIXEL), 32630, names=names), values


def training_dataset(path, values):
    """Patches around pixels of the unshifted left part only (they reach column 118 at most);
    target band 0 at the centre + 3 x band 1's mean over the 5 x 5 centre."""
    half = SIZE // 2
    rows, columns = np.meshgrid(np.arange(half, 89, 3), np.arange(half, 109, 3), indexing="ij")
    rows, columns = rows.ravel(), columns.ravel()
    patches = np.stack(
        [values[:, r - half : r - half + SIZE, c - half : c - half + SIZE] for r, c in zip(rows, columns)]
    ).astype(np.float32)
    targets = patches[:, 0, half, half] + 3 * patches[:, 1, half - 2 : half + 3, half - 2 : half + 3].mean(axis=(1, 2))
    split = np.random.default_rng(0).choice(3, len(rows), p=[0.7, 0.15, 0.15]).astype(np.int8)
    training = patches[split == 0]
    dataset.write(
        path,
        patches,
        np.arange(len(rows)),
        {
            "targets": targets.astype(np.float32),
            "x": LEFT + (columns + 0.5) * PIXEL,
            "y": TOP - (rows + 0.5) * PIXEL,
            "pid": np.array([f"p{i}" for i in range(len(rows))]),
            "split": split,
            "band_names": np.array(["band0", "band1", "band2"]),
            "band_mean": training.mean(axis=(0, 2, 3)).astype(np.float64),
            "band_std": training.std(axis=(0, 2, 3)).astype(np.float64),
            "patch_size": SIZE,
            "pixel_size": np.array([PIXEL, PIXEL]),
            "crs": "EPSG:32630",
            "target_field": "displacement",
            "target_units": "mm",
            "nodata_policy": "fill",
        },
    )
    return patches[split == 0], training.mean(axis=(0, 2, 3)), training.std(axis=(0, 2, 3))


def read(path, number):
    raster = gdal.Open(path)  # kept open while its band is read
    band = raster.GetRasterBand(number)
    values = band.ReadAsArray().astype(float)
    values[values == band.GetNoDataValue()] = np.nan
    return values


@pytest.mark.heavy
def test_drivers_outside_the_training_range_are_flagged_and_less_certain(plugin, tmp_path, geotiff, monkeypatch):
    """Trained on the left part, predicted everywhere: beyond SHIFTED_FROM the mask is 0 and the
    ensemble's spread larger; the DI is the brute-force one; BLANK_OUTSIDE blanks the same pixels."""
    # The training's torch threads (core.blas.available_cores) held at one, whatever the test run
    # gives each worker: torch's sums depend on them, and so do these five 12-epoch members. The
    # spread's ratio below was 7.3 with one thread and 2.7 with two (`make test TEST_WORKERS=0`).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    stack, values = shifted_stack(geotiff, tmp_path / "stack.tif")
    patches, mean, std = training_dataset(tmp_path / "data.npz", values)
    model = processing.run(
        "subsidence:traincnn",
        {
            "DATASET": str(tmp_path / "data.npz"),
            "ARCHITECTURE": 2,  # small
            "EPOCHS": 12,
            "BATCH_SIZE": 32,
            "LEARNING_RATE": 2e-3,
            "PATIENCE": 0,
            "ENSEMBLE": 5,
            "OUTPUT_MODEL": str(tmp_path / "m.onnx"),
        },
    )["OUTPUT_MODEL"]
    assert read_metadata(model)["ensemble_members"] == "5"
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    prediction, members = session.run(["prediction", "members"], {"patches": patches[:10]})
    assert [output.name for output in session.get_outputs()] == [
        "prediction",
        "members",
    ]  # docs/DESIGN.md: the first is (N, 1)
    assert prediction.shape == (10, 1) and members.shape == (10, 5)
    np.testing.assert_allclose(prediction[:, 0], members.mean(axis=1), rtol=1e-5)
    outputs = {
        "OUTPUT": str(tmp_path / "s.tif"),
        "OUTPUT_UNCERTAINTY": str(tmp_path / "sd.tif"),
        "OUTPUT_APPLICABILITY": str(tmp_path / "aoa.tif"),
    }
    result = processing.run("subsidence:predictsurface", {"MODEL": model, "FACTORS": stack, **outputs})
    sd, di, mask = (
        read(result["OUTPUT_UNCERTAINTY"], 1),
        read(result["OUTPUT_APPLICABILITY"], 1),
        read(result["OUTPUT_APPLICABILITY"], 2),
    )
    # Beyond the stack's edge the drivers are nodata: a pixel whose patch is under half inside the
    # stack (near the corners) gets nodata, and every other pixel a value.
    half = SIZE // 2
    inside_rows = np.minimum(np.arange(100) + SIZE - half, 100) - np.maximum(np.arange(100) - half, 0)
    inside_columns = np.minimum(np.arange(220) + SIZE - half, 220) - np.maximum(np.arange(220) - half, 0)
    np.testing.assert_array_equal(np.isnan(mask), np.outer(inside_rows, inside_columns) < SIZE * SIZE / 2)
    trained = (slice(half, 89), slice(half, 109))
    outside = (slice(None), slice(SHIFTED_FROM + half, None))  # patches wholly in the shifted part
    assert np.mean(mask[trained] == 1) > 0.95
    assert np.mean(mask[outside][np.isfinite(mask[outside])] == 0) > 0.99
    assert np.nanmedian(sd[outside]) > 3 * np.median(sd[trained])
    assert result["APPLICABLE_PERCENT"] == pytest.approx(100 * np.mean(mask[np.isfinite(mask)] == 1))
    features = np.concatenate([patches[:, :, SIZE // 2, SIZE // 2], patches.mean(axis=(2, 3))], axis=1)
    scale = np.tile(np.where(std > 0, std, 1), 2)
    features = (features - np.tile(mean, 2)) / scale
    mean_distance = pdist(features).mean()
    for row, column in [(20, 30), (50, 100), (50, 140), (60, 200), (5, 5)]:
        # The patch as training cuts it: beyond the edge nodata, filled with the band's training mean.
        patch = np.pad(values, ((0, 0), (half, half), (half, half)), constant_values=np.nan)
        patch = patch[:, row : row + SIZE, column : column + SIZE]
        patch = np.where(np.isfinite(patch), patch, mean[:, None, None])
        here = (np.concatenate([patch[:, SIZE // 2, SIZE // 2], patch.mean(axis=(1, 2))]) - np.tile(mean, 2)) / scale
        assert di[row, column] == pytest.approx(cdist(here[None], features).min() / mean_distance, rel=1e-4), (
            row,
            column,
        )
    blanked = processing.run(
        "subsidence:predictsurface",
        {"MODEL": model, "FACTORS": stack, "BLANK_OUTSIDE": True, "OUTPUT": str(tmp_path / "b.tif")},
    )
    surface = read(blanked["OUTPUT"], 1)
    np.testing.assert_array_equal(np.isnan(surface), (mask == 0) | np.isnan(mask))
    np.testing.assert_allclose(surface[mask == 1], read(result["OUTPUT"], 1)[mask == 1], rtol=1e-6)
