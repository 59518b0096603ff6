"""subsidence:evaluate: its table's metrics against numpy, kriging kept away from the test points,
and clear errors for a model of other drivers or a dataset without test points."""

import numpy as np
import pytest
from cnn_data import known_function_dataset
from qgis import processing
from qgis.core import QgsProcessingException, QgsVectorLayer

from insar_subsidence.core import evaluation
from insar_subsidence.core.dataset import open_dataset


def run(tmp_path, dataset, model, **parameters):
    return processing.run(
        "subsidence:evaluate",
        {"DATASET": str(dataset), "MODEL": model, "OUTPUT_TABLE": str(tmp_path / "table.csv"), "OUTPUT_REPORT": str(tmp_path / "r.html"), **parameters},
    )


def test_table_metrics_equal_numpy_on_its_rows(plugin, tmp_path, dense_model):
    known_function_dataset(tmp_path / "data.npz", n=400)
    result = run(tmp_path, tmp_path / "data.npz", dense_model)
    layer = QgsVectorLayer(result["OUTPUT_TABLE"], "table", "ogr")
    rows = [feature.attributes() for feature in layer.getFeatures()]
    names = [field.name() for field in layer.fields()]
    points = [dict(zip(names, row)) for row in rows if row[names.index("row")] == "point"]
    summary = {row[names.index("method")]: dict(zip(names, row)) for row in rows if row[names.index("row")] == "summary"}
    data = open_dataset(tmp_path / "data.npz")
    assert len(points) == (data["split"] == 2).sum()
    observed = np.array([float(p["observed"]) for p in points])
    for method in ("cnn", "kriging"):
        predicted = np.array([float(p[method]) for p in points])
        error = predicted - observed
        np.testing.assert_allclose([float(p[f"{method}_error"]) for p in points], error, rtol=1e-6, atol=1e-9)
        expected = {
            "rmse": np.sqrt(np.mean(error**2)), "mae": np.mean(np.abs(error)), "bias": np.mean(error),
            "r2": 1 - np.sum(error**2) / np.sum((observed - observed.mean()) ** 2), "n": len(observed),
        }  # fmt: skip
        for key, value in expected.items():
            assert float(summary[method][key]) == pytest.approx(value, rel=1e-6)
    assert result["CNN_RMSE"] == pytest.approx(float(summary["cnn"]["rmse"]))
    assert result["IMPROVEMENT_PERCENT"] == pytest.approx(100 * (1 - result["CNN_RMSE"] / result["KRIGING_RMSE"]))
    assert "<img" in open(result["OUTPUT_REPORT"], encoding="utf-8").read()


def test_calibration_is_the_share_of_errors_within_one_and_two_sigma(plugin, tmp_path, geotiff):
    """With an ensemble: the table's and the outputs' shares equal numpy's on the point rows (σ the
    members' standard deviation, the kriging variance's root); the report shows them and maps."""
    import onnxruntime
    from cnn_data import smooth_fields, trained_model

    model = trained_model(tmp_path, "dense", 22, members=3)  # on known_function_dataset(n=600), seed 0
    result = run(tmp_path, tmp_path / "data.npz", model)
    layer = QgsVectorLayer(result["OUTPUT_TABLE"], "table", "ogr")
    names = [field.name() for field in layer.fields()]
    rows = [dict(zip(names, feature.attributes())) for feature in layer.getFeatures()]
    points = [row for row in rows if row["row"] == "point"]
    summary = {row["method"]: row for row in rows if row["row"] == "summary"}
    data = open_dataset(tmp_path / "data.npz")
    members = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(["members"], {"patches": np.array(data["patches"][data["split"] == 2])})[0]
    observed = np.array([float(p["observed"]) for p in points])
    sigmas = {"cnn": np.array([float(p["cnn_sigma"]) for p in points]), "kriging": np.sqrt([float(p["kriging_variance"]) for p in points])}
    np.testing.assert_allclose(sigmas["cnn"], members.std(axis=1, ddof=1), rtol=1e-5)
    np.testing.assert_allclose([float(p["cnn"]) for p in points], members.mean(axis=1), rtol=1e-5)
    for method in ("cnn", "kriging"):
        error = np.abs(np.array([float(p[method]) for p in points]) - observed)
        for k in (1, 2):
            expected = 100 * np.mean(error <= k * sigmas[method])
            assert float(summary[method][f"within_{k}_sigma"]) == pytest.approx(expected)
            assert result[f"{method.upper()}_WITHIN_{k}_SIGMA"] == pytest.approx(expected)
    assert 0 < result["KRIGING_WITHIN_2_SIGMA"] <= 100 and result["KRIGING_WITHIN_1_SIGMA"] <= result["KRIGING_WITHIN_2_SIGMA"]
    grid = (400000.0, 10.0, 0, 4500000.0, 0, -10.0)
    stack = geotiff(tmp_path / "stack.tif", smooth_fields(3, 60, 80), grid, 32630, names=["band0", "band1", "band2"])
    surfaces = processing.run(
        "subsidence:predictsurface", {"MODEL": model, "FACTORS": stack, "OUTPUT": str(tmp_path / "s.tif"), "OUTPUT_UNCERTAINTY": str(tmp_path / "u.tif")}
    )
    area = geotiff(tmp_path / "aoa.tif", np.stack([np.linspace(0, 2, 4800).reshape(60, 80), np.linspace(0, 2, 4800).reshape(60, 80) < 1]), grid, 32630)
    mapped = run(tmp_path, tmp_path / "data.npz", model, SURFACE=surfaces["OUTPUT"], UNCERTAINTY=surfaces["OUTPUT_UNCERTAINTY"], APPLICABILITY=area)
    page = open(mapped["OUTPUT_REPORT"], encoding="utf-8").read()
    assert "Calibration of the uncertainties" in page and "calibration curve" in page
    assert 'alt="maps of the surface, its uncertainty and its area of applicability"' in page


def test_kriging_never_sees_a_test_point(tmp_path, monkeypatch):
    known_function_dataset(tmp_path / "data.npz", n=300)
    data = open_dataset(tmp_path / "data.npz")
    given = []

    class Spy(evaluation.OrdinaryKriging):
        def __init__(self, x, y, z, *args, **kwargs):
            given.append(np.column_stack([x, y]))
            super().__init__(x, y, z, *args, **kwargs)

    monkeypatch.setattr(evaluation, "OrdinaryKriging", Spy)
    result = evaluation.compare(data, lambda patches: np.zeros((len(patches), 1)), "spherical", 16)
    test = {tuple(point) for point in np.column_stack([data["x"], data["y"]])[data["split"] == 2]}
    assert len(given) == 1 and not test & {tuple(point) for point in given[0]}
    assert len(given[0]) == (data["split"] != 2).sum() == result.kriging_points


def test_a_model_of_other_drivers_is_refused(plugin, tmp_path, dense_model):
    known_function_dataset(tmp_path / "data.npz", n=200, bands=4)
    with pytest.raises(QgsProcessingException, match="not trained on this dataset's drivers"):
        run(tmp_path, tmp_path / "data.npz", dense_model)


def test_a_dataset_without_test_points_is_refused(plugin, tmp_path, dense_model):
    from insar_subsidence.core import dataset

    known_function_dataset(tmp_path / "data.npz", n=200)
    data = open_dataset(tmp_path / "data.npz")
    arrays = {key: value for key, value in data.items() if key != "patches"}
    arrays["split"] = np.where(data["split"] == 2, 0, data["split"]).astype(np.int8)
    dataset.write(tmp_path / "no_test.npz", np.array(data["patches"]), np.arange(len(arrays["split"])), arrays)
    with pytest.raises(QgsProcessingException, match="no test points"):
        run(tmp_path, tmp_path / "no_test.npz", dense_model)


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
        assert np.array_equal(split == 2, fold_of == fold)
        learnt = np.flatnonzero((split == 0) | (split == 1))
        assert (split == 1).any() and (split == -1).any()
        test = np.flatnonzero(split == 2)
        # Brute force: no training/validation patch (22 x 10 m) overlaps a test patch.
        apart = (np.abs(x[learnt, None] - x[test]) >= 220 - 1e-6) | (np.abs(y[learnt, None] - y[test]) >= 220 - 1e-6)
        assert apart.all()


def test_a_model_without_training_settings_cannot_be_cross_validated(plugin, tmp_path, dense_model):
    known_function_dataset(tmp_path / "data.npz", n=200)
    with pytest.raises(QgsProcessingException, match="does not record how it was trained"):
        run(tmp_path, tmp_path / "data.npz", dense_model, FOLDS=3)


def test_cross_validation_retrains_per_fold_and_pools_the_held_out_errors(plugin, tmp_path, monkeypatch):
    known_function_dataset(tmp_path / "data.npz", n=500)
    spread_out(tmp_path / "data.npz")
    trained = processing.run(
        "subsidence:traincnn",
        {"DATASET": str(tmp_path / "data.npz"), "EPOCHS": 2, "LEARNING_RATE": 1e-3, "ENSEMBLE": 2, "OUTPUT_MODEL": str(tmp_path / "model.onnx")},
    )
    given = []  # the points each kriging was given

    class Spy(evaluation.OrdinaryKriging):
        def __init__(self, x, y, z, *args, **kwargs):
            given.append({tuple(point) for point in np.column_stack([x, y])})
            super().__init__(x, y, z, *args, **kwargs)

    monkeypatch.setattr(evaluation, "OrdinaryKriging", Spy)
    result = run(tmp_path, tmp_path / "data.npz", trained["OUTPUT_MODEL"], FOLDS=3)
    layer = QgsVectorLayer(result["OUTPUT_TABLE"], "table", "ogr")
    names = [field.name() for field in layer.fields()]
    rows = [dict(zip(names, feature.attributes())) for feature in layer.getFeatures()]
    folds = {row["row"]: {} for row in rows if str(row["row"]).startswith("fold")}
    for row in rows:
        if row["row"] in folds:
            folds[row["row"]][row["method"]] = row
    assert sorted(folds) == ["fold 1", "fold 2", "fold 3"]
    data = open_dataset(tmp_path / "data.npz")
    points = np.column_stack([data["x"], data["y"]])
    # One kriging for the dataset's own split, then one per fold, which never saw the fold's test
    # points (nor the points left out for overlapping them).
    assert len(given) == 4
    unseen = [sum(tuple(point) not in seen for point in points) for seen in given[1:]]
    for method in ("cnn", "kriging"):
        n = np.array([float(folds[f][method]["n"]) for f in sorted(folds)])
        rmse = np.array([float(folds[f][method]["rmse"]) for f in sorted(folds)])
        assert n.sum() == len(points)  # every point held out exactly once
        assert all(count >= held for count, held in zip(unseen, n)) and min(n) > 0
        pooled = np.sqrt(np.sum(n * rmse**2) / n.sum())  # the pooled RMSE from the folds' own
        assert result[f"CV_{method.upper()}_RMSE"] == pytest.approx(pooled, rel=1e-6)
    assert "Spatial cross-validation" in open(result["OUTPUT_REPORT"], encoding="utf-8").read()
    pooled_rows = [row for row in rows if row["row"] == "cross-validation"]  # each fold's ensemble and kriging σ
    assert len(pooled_rows) == 2 and all(0 <= float(row["within_1_sigma"]) <= float(row["within_2_sigma"]) <= 100 for row in pooled_rows)
