"""subsidence:exportpatches: patches rebuilt with GDAL, splits without leakage, named bands."""

import numpy as np
import pytest
from osgeo import gdal
from qgis import processing
from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsProcessingException, QgsVectorLayer

from insar_subsidence.core.dataset import open_dataset

LEFT, TOP, PIXEL, WIDTH, HEIGHT, BANDS, SIZE = 300000.0, 4200000.0, 10.0, 120, 100, 3, 8
NODATA = -9999.0


@pytest.fixture
def stack_path(tmp_path, geotiff):
    rng = np.random.default_rng(0)
    values = rng.normal(0, 1, (BANDS, HEIGHT, WIDTH)).astype(np.float32)
    values[1, 40:44, 60:63] = NODATA
    return geotiff(
        tmp_path / "stack.tif", values, (LEFT, PIXEL, 0, TOP, 0, -PIXEL), 32630, NODATA, ["elevation", "ndvi", "twi"]
    )


def points_layer(cells, split=None):
    """Points at the centres of (row, column) cells, value = row + column / 1000."""
    layer = QgsVectorLayer("Point?crs=EPSG:32630&field=displacement:double&field=part:string", "ps", "memory")
    features = []
    for number, (row, column) in enumerate(cells):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(
            QgsGeometry.fromPointXY(QgsPointXY(LEFT + (column + 0.5) * PIXEL, TOP - (row + 0.5) * PIXEL))
        )
        feature.setAttributes([float(row + column / 1000), split[number] if split else None])
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    return layer


def export(tmp_path, layer, stack, **parameters):
    defaults = {
        "POINTS": layer,
        "FIELD": "displacement",
        "FACTORS": stack,
        "PATCH_SIZE": SIZE,
        "OUTPUT": str(tmp_path / "d.npz"),
    }
    results = processing.run("subsidence:exportpatches", {**defaults, **parameters})
    return results, open_dataset(results["OUTPUT"])


def gdal_patch(path, row, column):
    """The patch read window by window with GDAL; cells outside the raster or nodata are NaN."""
    dataset = gdal.Open(path)
    patch = np.full((BANDS, SIZE, SIZE), np.nan)
    first_row, first_column = row - SIZE // 2, column - SIZE // 2
    r0, r1 = max(first_row, 0), min(first_row + SIZE, HEIGHT)
    c0, c1 = max(first_column, 0), min(first_column + SIZE, WIDTH)
    window = dataset.ReadAsArray(c0, r0, c1 - c0, r1 - r0).astype(float)
    window[window == NODATA] = np.nan
    patch[:, r0 - first_row : r1 - first_row, c0 - first_column : c1 - first_column] = window
    return patch


def random_cells(n, seed=1):
    rng = np.random.default_rng(seed)
    cells = {(int(r), int(c)) for r, c in zip(rng.integers(0, HEIGHT, n), rng.integers(0, WIDTH, n))}
    return sorted(cells | {(0, 0), (HEIGHT - 1, WIDTH - 1), (0, WIDTH - 1), (42, 61), (38, 58)})


def test_patches_equal_gdal_windows_with_edges_and_nodata(plugin, tmp_path, stack_path):
    cells = random_cells(150)
    _, data = export(tmp_path, points_layer(cells), stack_path, NODATA_POLICY=1, SPLIT=1)
    assert list(data["band_names"]) == ["elevation", "ndvi", "twi"] and int(data["patch_size"]) == SIZE
    assert isinstance(data["patches"], np.memmap)  # read lazily, not loaded
    position = {(round(x, 6), round(y, 6)): i for i, (x, y) in enumerate(zip(data["x"], data["y"]))}
    checked = 0
    for row, column in cells:
        key = (round(LEFT + (column + 0.5) * PIXEL, 6), round(TOP - (row + 0.5) * PIXEL, 6))
        expected = gdal_patch(stack_path, row, column)
        if np.isfinite(expected).mean() < 0.5 or not np.isfinite(expected[:, SIZE // 2, SIZE // 2]).all():
            assert key not in position  # nodata at the point or too little valid data: skipped even when filling
            continue
        i = position[key]
        filled = np.where(np.isfinite(expected), expected, data["band_mean"][:, None, None])
        np.testing.assert_array_equal(data["patches"][i], filled.astype(np.float32))
        assert data["targets"][i] == np.float32(row + column / 1000)
        checked += 1
    assert checked > 100


def test_skip_policy_drops_and_statistics_come_from_training_only(plugin, tmp_path, stack_path):
    cells = random_cells(200, seed=2)
    results, data = export(tmp_path, points_layer(cells), stack_path, SPLIT=1, VAL_FRACTION=0.2, TEST_FRACTION=0.2)
    complete = [cell for cell in cells if np.isfinite(gdal_patch(stack_path, *cell)).all()]
    assert len(data["targets"]) == len(complete)
    # Every patch kept is its GDAL window as it is: nothing to fill.
    rows = np.round((TOP - data["y"]) / PIXEL - 0.5).astype(int)
    columns = np.round((data["x"] - LEFT) / PIXEL - 0.5).astype(int)
    assert sorted(zip(rows.tolist(), columns.tolist())) == complete
    for i, (row, column) in enumerate(zip(rows.tolist(), columns.tolist())):
        np.testing.assert_array_equal(data["patches"][i], gdal_patch(stack_path, row, column).astype(np.float32))
    training = np.asarray(data["patches"])[data["split"] == 0].astype(float)
    np.testing.assert_allclose(data["band_mean"], training.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(data["band_std"], training.std(axis=(0, 2, 3)), rtol=1e-9)
    assert (results["N_TRAIN"], results["N_VAL"], results["N_TEST"]) == tuple(
        int((data["split"] == k).sum()) for k in range(3)
    )


def overlaps(data, held_out=2, others=(0, 1)):
    """Brute force: how many points of the `others` splits have a patch overlapping a `held_out` one."""
    rows = np.round((TOP - data["y"]) / PIXEL - 0.5).astype(int)
    columns = np.round((data["x"] - LEFT) / PIXEL - 0.5).astype(int)
    test = data["split"] == held_out
    others = np.isin(data["split"], others)
    close = (np.abs(rows[others][:, None] - rows[test][None]) < SIZE) & (
        np.abs(columns[others][:, None] - columns[test][None]) < SIZE
    )
    return int(close.any(axis=1).sum())


def test_spatial_split_leaves_no_training_patch_over_a_test_patch(plugin, tmp_path, stack_path):
    cells = random_cells(600, seed=3)
    results, data = export(tmp_path, points_layer(cells), stack_path, NODATA_POLICY=1, BLOCK_SIZE=200)
    assert results["N_TEST"] > 0 and results["N_TRAIN"] > 0 and results["N_VAL"] > 0
    assert (
        overlaps(data) == 0 and overlaps(data, held_out=1, others=(0,)) == 0
    )  # nor a training patch over a validation patch
    _, randomly = export(tmp_path, points_layer(cells), stack_path, NODATA_POLICY=1, SPLIT=1)
    assert (
        overlaps(randomly) > 0 and overlaps(randomly, held_out=1, others=(0,)) > 0
    )  # the checks above can fail: a random split leaks


def test_split_from_a_field(plugin, tmp_path, stack_path):
    cells = [(20, 20), (50, 50), (80, 100), (30, 90)]
    _, data = export(
        tmp_path, points_layer(cells, ["train", "test", "val", "train"]), stack_path, SPLIT=2, SPLIT_FIELD="part"
    )
    assert sorted(data["split"].tolist()) == [0, 0, 1, 2]


def test_points_off_the_stack_are_a_clear_error(plugin, tmp_path, stack_path):
    with pytest.raises(QgsProcessingException):
        export(tmp_path, points_layer([(-50, -50), (500, 500)]), stack_path)
    assert not (tmp_path / "d.npz").exists()


@pytest.mark.parametrize(
    ("width", "height", "patch_metres", "expected"),
    [
        (40000.0, 30000.0, 550.0, 4000.0),  # a tenth of the extent, above four patch widths
        (7400.0, 7400.0, 750.0, 3000.0),  # four patch widths still leave 3 x 3 blocks
        (14600.0, 9300.0, 1350.0, np.sqrt(14600.0 * 9300.0 / 9)),  # 5400 would leave 3 x 2: a small area
    ],
)
def test_default_block_size_leaves_a_small_area_enough_blocks(width, height, patch_metres, expected):
    from insar_subsidence.core.patches import default_block_size, square_blocks

    # Points on a 100 m lattice over the extent: the blocks counted are the occupied ones.
    x, y = (axis.ravel() for axis in np.meshgrid(np.arange(0.0, width + 1, 100.0), np.arange(0.0, height + 1, 100.0)))
    block = default_block_size(x, y, patch_metres)
    assert block == pytest.approx(expected)
    assert len(np.unique(square_blocks(x, y, block))) >= 9
