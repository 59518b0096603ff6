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


def test_kriging_never_sees_a_test_point(tmp_path, monkeypatch):
    known_function_dataset(tmp_path / "data.npz", n=300)
    data = open_dataset(tmp_path / "data.npz")
    given = []

    class Spy(evaluation.OrdinaryKriging):
        def __init__(self, x, y, z, *args, **kwargs):
            given.append(np.column_stack([x, y]))
            super().__init__(x, y, z, *args, **kwargs)

    monkeypatch.setattr(evaluation, "OrdinaryKriging", Spy)
    result = evaluation.compare(data, lambda patches: np.zeros(len(patches)), "spherical", 16)
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
