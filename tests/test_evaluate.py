"""subsidence:evaluate: its table's metrics against numpy, kriging kept away from the test points,
and clear errors for a model of other drivers, of another split, or a dataset without test points."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from cnn_data import known_function_dataset, smooth_fields
from conftest import displacement_points
from osgeo import gdal
from qgis import processing
from qgis.core import QgsProcessingException, QgsVectorLayer

from insar_subsidence.algorithms import evaluate
from insar_subsidence.core import evaluation
from insar_subsidence.core.dataset import open_dataset, split_fingerprint
from insar_subsidence.core.model_card import ModelCard
from insar_subsidence.core.patches import DROPPED, TEST, TRAIN, VAL
from insar_subsidence.models.export import read_metadata


def run(tmp_path, dataset, model, **parameters):
    return processing.run(
        "subsidence:evaluate",
        {
            "DATASET": str(dataset),
            "MODEL": model,
            "OUTPUT_TABLE": str(tmp_path / "table.csv"),
            "OUTPUT_REPORT": str(tmp_path / "r.html"),
            **parameters,
        },
    )


def with_card(model, path, **changes):
    """A copy of the model whose card has `changes` (dataclasses.replace), as another training or an
    earlier version would have written it."""
    import onnx

    card = dataclasses.replace(ModelCard.from_metadata(read_metadata(model)), **changes)
    edited = onnx.load(model)
    del edited.metadata_props[:]
    onnx.helper.set_model_props(edited, card.to_metadata())
    onnx.save(edited, str(path))
    return str(path)


def own_dataset(model):
    """The dataset cnn_data.trained_model trained `model` on."""
    return Path(model).parent / "data.npz"


def table_rows(path):
    layer = QgsVectorLayer(path, "table", "ogr")
    names = [field.name() for field in layer.fields()]
    return [dict(zip(names, feature.attributes())) for feature in layer.getFeatures()]


def test_table_metrics_equal_numpy_on_its_rows(plugin, tmp_path, dense_model):
    """Every method's row is scored on the same test points, the dataset's own, in its order; the
    null row is the training mean's error."""
    result = run(tmp_path, own_dataset(dense_model), dense_model)
    rows = table_rows(result["OUTPUT_TABLE"])
    points = [row for row in rows if row["row"] == "point"]
    summary = {row["method"]: row for row in rows if row["row"] == "summary"}
    data = open_dataset(own_dataset(dense_model))
    test = data["split"] == TEST
    assert [p["pid"] for p in points] == [str(pid) for pid in data["pid"][test]]
    observed = np.array([float(p["observed"]) for p in points])
    np.testing.assert_allclose(observed, data["targets"][test], rtol=1e-6)
    np.testing.assert_allclose(
        [float(p["mean"]) for p in points], data["targets"][data["split"] == TRAIN].astype(float).mean(), rtol=1e-9
    )
    assert sorted(summary) == sorted(evaluation.METHODS)
    for method in evaluation.METHODS:
        predicted = np.array([float(p[method]) for p in points])
        error = predicted - observed
        np.testing.assert_allclose([float(p[f"{method}_error"]) for p in points], error, rtol=1e-6, atol=1e-9)
        expected = {
            "rmse": np.sqrt(np.mean(error**2)),
            "mae": np.mean(np.abs(error)),
            "bias": np.mean(error),
            "r2": 1 - np.sum(error**2) / np.sum((observed - observed.mean()) ** 2),
            "n": test.sum(),
        }
        for key, value in expected.items():
            assert float(summary[method][key]) == pytest.approx(value, rel=1e-6)
        assert result[f"{method.upper()}_RMSE"] == pytest.approx(expected["rmse"], rel=1e-6)
    assert result["IMPROVEMENT_PERCENT"] == pytest.approx(100 * (1 - result["CNN_RMSE"] / result["KRIGING_RMSE"]))
    best = min(evaluation.METHODS, key=lambda method: result[f"{method.upper()}_RMSE"])
    assert result["BEST_METHOD"] == best and evaluation.NAMES[best] in result["VERDICT"]
    page = open(result["OUTPUT_REPORT"], encoding="utf-8").read()
    assert "<img" in page and result["VERDICT"].split(":")[0] in page


@pytest.mark.heavy
def test_calibration_is_the_share_of_errors_within_one_and_two_sigma(plugin, tmp_path, geotiff):
    """With an ensemble: σ is the members' spread plus the noise variance that makes the validation
    points' mean squared standardised error 1; the table's and the outputs' shares and CRPS equal
    numpy's on the point rows; the report shows them and maps."""
    import onnxruntime
    from cnn_data import trained_model

    model = trained_model(tmp_path, "dense", 22, members=3)  # on known_function_dataset(n=600), seed 0
    result = run(tmp_path, tmp_path / "data.npz", model)
    rows = table_rows(result["OUTPUT_TABLE"])
    points = [row for row in rows if row["row"] == "point"]
    summary = {row["method"]: row for row in rows if row["row"] == "summary"}
    data = open_dataset(tmp_path / "data.npz")
    run_model = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    members = run_model.run(["members"], {"patches": np.array(data["patches"][data["split"] == TEST])})[0].astype(float)
    validation = run_model.run(["members"], {"patches": np.array(data["patches"][data["split"] == VAL])})[0].astype(
        float
    )
    residuals, spread = data["targets"][data["split"] == VAL] - validation.mean(axis=1), validation.std(axis=1, ddof=1)
    noise = float(
        np.square(np.array([float(p["cnn_sigma"]) for p in points])).mean()
        - np.square(members.std(axis=1, ddof=1)).mean()
    )
    assert noise > 0 and np.mean(residuals**2 / (spread**2 + noise)) == pytest.approx(1.0, rel=1e-4)
    observed = np.array([float(p["observed"]) for p in points])
    np.testing.assert_allclose([float(p["cnn_spread"]) for p in points], members.std(axis=1, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(
        [float(p["cnn_sigma"]) for p in points], np.sqrt(members.std(axis=1, ddof=1) ** 2 + noise), rtol=1e-5
    )
    np.testing.assert_allclose([float(p["cnn"]) for p in points], members.mean(axis=1), rtol=1e-5)
    sigmas = {"kriging": np.sqrt([float(p["kriging_variance"]) for p in points])}
    sigmas.update(
        {
            method: np.array([float(p[f"{method}_sigma"]) for p in points])
            for method in ("regression_kriging", "cnn", "hybrid")
        }
    )
    for method, sigma in sigmas.items():
        error = np.array([float(p[method]) for p in points]) - observed
        for k in (1, 2):
            expected = 100 * np.mean(np.abs(error) <= k * sigma)
            assert float(summary[method][f"within_{k}_sigma"]) == pytest.approx(expected)
            assert result[f"{method.upper()}_WITHIN_{k}_SIGMA"] == pytest.approx(expected)
        assert (
            result[f"{method.upper()}_CRPS"] == pytest.approx(float(summary[method]["crps"]))
            and float(summary[method]["crps"]) > 0
        )
    assert not summary["mean"]["within_1_sigma"] and not summary["mean"]["crps"]  # empty: the null model has no σ
    grid = (400000.0, 10.0, 0, 4500000.0, 0, -10.0)
    stack = geotiff(tmp_path / "stack.tif", smooth_fields(3, 60, 80), grid, 32630, names=["band0", "band1", "band2"])
    surfaces = processing.run(
        "subsidence:predictsurface",
        {
            "MODEL": model,
            "FACTORS": stack,
            "OUTPUT": str(tmp_path / "s.tif"),
            "OUTPUT_UNCERTAINTY": str(tmp_path / "u.tif"),
        },
    )
    area = geotiff(
        tmp_path / "aoa.tif",
        np.stack([np.linspace(0, 2, 4800).reshape(60, 80), np.linspace(0, 2, 4800).reshape(60, 80) < 1]),
        grid,
        32630,
    )
    mapped = run(
        tmp_path,
        tmp_path / "data.npz",
        model,
        SURFACE=surfaces["OUTPUT"],
        UNCERTAINTY=surfaces["OUTPUT_UNCERTAINTY"],
        APPLICABILITY=area,
    )
    page = open(mapped["OUTPUT_REPORT"], encoding="utf-8").read()
    assert "Calibration of the uncertainties" in page and "calibration curve" in page
    assert 'alt="maps of the surface, its uncertainty and its area of applicability"' in page


def pykrige(fit, x, y, z, tx, ty, neighbours):
    from pykrige.ok import OrdinaryKriging as PyKrige

    return PyKrige(
        x, y, z, variogram_model=fit.variogram.model, variogram_parameters=fit.variogram.as_pykrige_dict()
    ).execute("points", tx, ty, backend="C", n_closest_points=neighbours)


def test_regression_kriging_and_the_hybrid_equal_least_squares_and_pykrige(tmp_path):
    """Regression kriging: numpy's least squares on the patch-centre values and patch means of the
    training and validation points, plus PyKrige of its residuals; the hybrid: the CNN plus PyKrige
    of its residuals at the validation points. The same variograms, the same 16 neighbours."""
    known_function_dataset(tmp_path / "data.npz", n=400, blocks=True)
    data = open_dataset(tmp_path / "data.npz")
    patches = np.array(data["patches"], float)

    def predict(batch):  # three "members": a function of the patches that misses a smooth field
        centre = batch[:, 0, 11, 11].astype(float)
        return np.column_stack([centre + offset for offset in (-0.1, 0.0, 0.2)])

    result = evaluation.compare(data, predict, "spherical", 16)
    split, targets, x, y = data["split"], data["targets"].astype(float), data["x"], data["y"]
    test, known, validation = split == TEST, split != TEST, split == VAL
    features = np.column_stack([np.ones(len(targets)), patches[:, :, 11, 11], patches.mean(axis=(2, 3))])
    coefficients = np.linalg.lstsq(features[known], targets[known], rcond=None)[0]
    trend = features @ coefficients
    correction, variance = pykrige(
        result.variograms["regression_kriging"], x[known], y[known], (targets - trend)[known], x[test], y[test], 16
    )
    np.testing.assert_allclose(result.predicted["regression_kriging"], trend[test] + correction, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(result.sigma["regression_kriging"] ** 2, variance, rtol=1e-6, atol=1e-10)
    cnn = predict(patches).mean(axis=1)
    correction, variance = pykrige(
        result.variograms["hybrid"], x[validation], y[validation], (targets - cnn)[validation], x[test], y[test], 16
    )
    np.testing.assert_allclose(result.predicted["hybrid"], cnn[test] + correction, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(result.sigma["hybrid"] ** 2, variance, rtol=1e-6, atol=1e-10)
    assert result.points["hybrid"] == validation.sum() and result.points["regression_kriging"] == known.sum()
    np.testing.assert_array_equal(result.test, np.flatnonzero(test))


def test_no_kriging_sees_a_test_point(tmp_path, monkeypatch):
    known_function_dataset(tmp_path / "data.npz", n=300)
    data = open_dataset(tmp_path / "data.npz")
    given = []

    class Spy(evaluation.OrdinaryKriging):
        def __init__(self, x, y, z, *args, **kwargs):
            given.append(np.column_stack([x, y]))
            super().__init__(x, y, z, *args, **kwargs)

    monkeypatch.setattr(evaluation, "OrdinaryKriging", Spy)
    result = evaluation.compare(data, lambda patches: np.zeros((len(patches), 1)), "spherical", 16)
    test = {tuple(point) for point in np.column_stack([data["x"], data["y"]])[data["split"] == TEST]}
    assert len(given) == 3 and not any(
        test & {tuple(point) for point in points} for points in given
    )  # kriging, regression kriging, hybrid
    assert len(given[0]) == len(given[1]) == (data["split"] != 2).sum() == result.points["kriging"]
    assert len(given[2]) == (data["split"] == VAL).sum() == result.points["hybrid"]


def test_a_model_of_other_drivers_is_refused(plugin, tmp_path, dense_model):
    known_function_dataset(tmp_path / "data.npz", n=200, bands=4)
    with pytest.raises(QgsProcessingException, match="not trained on this dataset's drivers"):
        run(tmp_path, tmp_path / "data.npz", dense_model)


def test_a_dataset_without_test_points_is_refused(plugin, tmp_path, dense_model):
    from insar_subsidence.core import dataset

    data = open_dataset(own_dataset(dense_model))
    arrays = {key: value for key, value in data.items() if key != "patches"}
    arrays["split"] = np.where(data["split"] == TEST, TRAIN, data["split"]).astype(np.int8)
    dataset.write(tmp_path / "no_test.npz", np.array(data["patches"]), np.arange(len(arrays["split"])), arrays)
    trained_on_it = split_fingerprint(arrays["x"], arrays["y"], arrays["split"])
    model = with_card(dense_model, tmp_path / "model.onnx", split_fingerprint=trained_on_it)
    with pytest.raises(QgsProcessingException, match="no test points"):
        run(tmp_path, tmp_path / "no_test.npz", model)


def test_a_model_of_another_split_of_the_points_is_refused(plugin, tmp_path, geotiff, log_feedback):
    """The same points exported with SEED 0 and with SEED 1 (random splits): the model trained on
    the first is evaluated on it, refused on the second (its training points are test points
    there); a model that predates the card is evaluated with a warning instead."""
    fields = smooth_fields(3, 60, 60)
    stack = geotiff(
        tmp_path / "stack.tif",
        fields,
        (400000.0, 10.0, 0, 4500000.0, 0, -10.0),
        32630,
        names=["band0", "band1", "band2"],
    )
    rng = np.random.default_rng(2)
    rows, columns = np.divmod(rng.choice(50 * 50, 200, replace=False), 50)  # 200 distinct pixels
    rows, columns = rows + 5, columns + 5  # their patches inside the stack
    points = displacement_points(400005.0 + 10 * columns, 4499995.0 - 10 * rows, fields[0, rows, columns])
    datasets = []
    for seed in (0, 1):
        exported = processing.run(
            "subsidence:exportpatches",
            {
                "POINTS": points,
                "FIELD": "displacement",
                "FACTORS": stack,
                "PATCH_SIZE": 9,
                "SPLIT": 1,
                "SEED": seed,
                "OUTPUT": str(tmp_path / f"seed{seed}.npz"),
            },
        )
        datasets.append(exported["OUTPUT"])
    first, second = (open_dataset(path) for path in datasets)
    np.testing.assert_array_equal(first["x"], second["x"])  # the same points, split otherwise
    assert not np.array_equal(first["split"], second["split"])
    model = processing.run(
        "subsidence:traincnn",
        {"DATASET": datasets[0], "ARCHITECTURE": 2, "EPOCHS": 1, "OUTPUT_MODEL": str(tmp_path / "model.onnx")},
    )["OUTPUT_MODEL"]
    # Its card records the CRS as exportpatches does, in WKT, which predictsurface matches with the stack's.
    assert ModelCard.from_metadata(read_metadata(model)).crs.startswith(("PROJCS[", "PROJCRS["))
    surface = processing.run(
        "subsidence:predictsurface", {"MODEL": model, "FACTORS": stack, "OUTPUT": str(tmp_path / "surface.tif")}
    )
    assert gdal.Open(surface["OUTPUT"]).RasterXSize == 60
    rows = table_rows(run(tmp_path, datasets[0], model)["OUTPUT_TABLE"])
    assert [row["pid"] for row in rows if row["row"] == "point"] == [
        str(pid) for pid in first["pid"][first["split"] == TEST]
    ]
    with pytest.raises(
        QgsProcessingException, match=r"another split of these points \(e\.g\. exported with another SEED"
    ):
        run(tmp_path, datasets[1], model)
    older = with_card(model, tmp_path / "older.onnx", card_version=None, split_fingerprint=None)
    feedback = log_feedback()
    processing.run(
        "subsidence:evaluate",
        {"DATASET": datasets[1], "MODEL": older, "OUTPUT_TABLE": str(tmp_path / "older.csv")},
        feedback=feedback,
    )
    assert "predates the model card" in feedback.text and "split of the points it was trained on" in feedback.text


def spread_out(path, seed=0):
    """known_function_dataset's points moved over 6 x 6 km (patches of 220 m), so that there are
    enough spatial blocks for folds."""
    from insar_subsidence.core import dataset

    data = open_dataset(path)
    rng = np.random.default_rng(seed)
    arrays = {key: value for key, value in data.items() if key != "patches"}
    arrays.update(x=rng.uniform(0, 6000, len(arrays["x"])), y=rng.uniform(0, 6000, len(arrays["y"])))
    dataset.write(path, np.array(data["patches"]), np.arange(len(arrays["x"])), arrays)


def test_folds_hold_every_point_out_once_and_keep_patches_apart():
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 6000, 800), rng.uniform(0, 6000, 800)
    fold_of = evaluation.spatial_folds(x, y, 880.0, 4, rng)
    assert sorted(np.unique(fold_of)) == [0, 1, 2, 3]
    assert np.bincount(fold_of).min() > 0.15 * len(x)  # balanced by blocks
    for fold in range(4):
        split = evaluation.fold_split(fold_of == fold, x, y, np.array([10.0, 10.0]), 22, 880.0, 0.15, rng)
        assert np.array_equal(split == TEST, fold_of == fold)
        learnt = np.flatnonzero((split == TRAIN) | (split == VAL))
        assert (split == VAL).any() and (split == DROPPED).any()
        test = np.flatnonzero(split == TEST)
        # Brute force: no training/validation patch (22 x 10 m) overlaps a test patch.
        apart = (np.abs(x[learnt, None] - x[test]) >= 220 - 1e-6) | (np.abs(y[learnt, None] - y[test]) >= 220 - 1e-6)
        assert apart.all()


def test_a_model_without_training_settings_cannot_be_cross_validated(plugin, tmp_path, dense_model):
    model = with_card(dense_model, tmp_path / "model.onnx", settings=None)
    with pytest.raises(QgsProcessingException, match="does not record how it was trained"):
        run(tmp_path, own_dataset(dense_model), model, FOLDS=3)


@pytest.mark.heavy
def test_cross_validation_retrains_per_fold_and_pools_the_held_out_errors(plugin, tmp_path, monkeypatch):
    known_function_dataset(tmp_path / "data.npz", n=500)
    spread_out(tmp_path / "data.npz")
    trained = processing.run(
        "subsidence:traincnn",
        {
            "DATASET": str(tmp_path / "data.npz"),
            "EPOCHS": 2,
            "LEARNING_RATE": 1e-3,
            "ENSEMBLE": 2,
            "OUTPUT_MODEL": str(tmp_path / "model.onnx"),
        },
    )
    given = []  # the points each kriging was given

    class Spy(evaluation.OrdinaryKriging):
        def __init__(self, x, y, z, *args, **kwargs):
            given.append({tuple(point) for point in np.column_stack([x, y])})
            super().__init__(x, y, z, *args, **kwargs)

    monkeypatch.setattr(evaluation, "OrdinaryKriging", Spy)
    pooled_from = {}  # the out-of-fold predictions and σ the pooled scores come from

    def spy_pooled(data, predicted, sigma, fold_scores):
        pooled_from.update(predicted=predicted, sigma=sigma)
        return evaluation.pooled(data, predicted, sigma, fold_scores)

    monkeypatch.setattr(evaluate, "pooled", spy_pooled)
    result = run(tmp_path, tmp_path / "data.npz", trained["OUTPUT_MODEL"], FOLDS=3)
    rows = table_rows(result["OUTPUT_TABLE"])
    folds = {row["row"]: {} for row in rows if str(row["row"]).startswith("fold")}
    for row in rows:
        if row["row"] in folds:
            folds[row["row"]][row["method"]] = row
    assert sorted(folds) == ["fold 1", "fold 2", "fold 3"]
    data = open_dataset(tmp_path / "data.npz")
    points = np.column_stack([data["x"], data["y"]])
    # Three krigings (kriging, regression kriging, hybrid) for the dataset's own split, then three
    # per fold, which never saw the fold's test points (nor the points left out for overlapping them).
    assert len(given) == 12
    unseen = [
        min(sum(tuple(point) not in seen for point in points) for seen in given[3 * fold : 3 * fold + 3])
        for fold in (1, 2, 3)
    ]
    for method in evaluation.METHODS:
        n = np.array([float(folds[f][method]["n"]) for f in sorted(folds)])
        rmse = np.array([float(folds[f][method]["rmse"]) for f in sorted(folds)])
        assert n.sum() == len(points)  # every point held out exactly once
        assert all(count >= held for count, held in zip(unseen, n)) and min(n) > 0
        pooled = np.sqrt(np.sum(n * rmse**2) / n.sum())  # the pooled RMSE from the folds' own
        assert result[f"CV_{method.upper()}_RMSE"] == pytest.approx(pooled, rel=1e-6)
    assert "Spatial cross-validation" in open(result["OUTPUT_REPORT"], encoding="utf-8").read()
    # Each method's σ over all the points, each held out once: the share of its errors within ±1σ and ±2σ.
    pooled_rows = {row["method"]: row for row in rows if row["row"] == "cross-validation" and row["method"] != "mean"}
    assert sorted(pooled_rows) == sorted(("kriging", "regression_kriging", "cnn", "hybrid"))
    for method, row in pooled_rows.items():
        error = np.abs(pooled_from["predicted"][method] - data["targets"])
        for k in (1, 2):
            expected = 100 * np.mean(error <= k * pooled_from["sigma"][method])
            assert float(row[f"within_{k}_sigma"]) == pytest.approx(expected)
