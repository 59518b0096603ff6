"""subsidence:predictsurface against ONNX Runtime run by hand on each pixel's own patch."""

import functools
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from cnn_data import smooth_fields, trained_model
from osgeo import gdal
from qgis import processing
from qgis.core import QgsFeature, QgsGeometry, QgsProcessingException, QgsVectorLayer

from insar_subsidence.models.dense import dense_model
from insar_subsidence.models.export import read_metadata

NAMES = ["band0", "band1", "band2"]  # those of cnn_data's datasets
LEFT, TOP, PIXEL = 400000.0, 4500000.0, 10.0  # cnn_data's datasets record 10 m pixels in EPSG:32630
LEGACY = Path(__file__).parent / "data" / "models"  # a model of version 0.1.0 and its surface (README.md)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Models trained for one epoch (the tests are of the prediction, not of the model), by
    (architecture, patch size, nodata policy, ensemble members); the paper's slow one on fewer points."""
    made = {}
    for architecture, size, policy, members, points in (
        ("dense", 22, "fill", 1, 600),
        ("dense", 23, "skip", 1, 600),
        ("dense", 22, "fill", 3, 600),
        ("paper", 8, "fill", 2, 200),
        ("small", 9, "fill", 1, 600),
    ):
        folder = tmp_path_factory.mktemp(f"{architecture}{size}")
        made[(architecture, size, policy, members)] = trained_model(
            folder, architecture, size, policy, epochs=1, members=members, n=points
        )
    return made


def write_stack(path, geotiff, rows=70, columns=90, holes=True, order=(0, 1, 2), seed=0):
    values = smooth_fields(3, rows, columns, seed)
    if holes:
        values[1, 30:33, 40:44] = -9999  # nodata in one band
        values[:, 60:62, 5:9] = -9999  # in all bands
    values = values[list(order)]
    return geotiff(
        path, values, (LEFT, PIXEL, 0, TOP, 0, -PIXEL), 32630, nodata=-9999, names=[NAMES[i] for i in order]
    ), values


def by_hand(model, values, row, column, size, policy):
    """The model's members on pixel (row, column)'s patch built as documented: nodata beyond the
    edge, nodata filled with the band's training mean; None where the policy says nodata."""
    session, mean = reference(model)
    beyond = np.pad(values, ((0, 0), (size, size), (size, size)), constant_values=-9999)
    top, left = row - size // 2 + size, column - size // 2 + size
    patch = beyond[:, top : top + size, left : left + size].astype(np.float32)
    valid = patch != -9999
    if not valid[:, size // 2, size // 2].all() or valid.mean() < (1.0 if policy == "skip" else 0.5):
        return None
    patch = np.where(valid, patch, mean[:, None, None]).astype(np.float32)
    return session.run(["members"], {"patches": patch[None]})[0][0].astype(float)


@functools.lru_cache
def reference(model):
    """(an ONNX Runtime session, the bands' training means) of a model, read once: reading the
    paper's 21 M weights for each pixel took most of a test."""
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session, np.array(json.loads(read_metadata(model)["band_mean"]))


def predictable(values, size, policy):
    """Where the policy lets a pixel be predicted, from window counts of valid cells (nodata beyond
    the edge): its own cell valid in every band, and enough of its patch (all for skip, half for fill)."""
    valid = np.pad(values != -9999, ((0, 0), (size, size), (size, size)))
    windows = np.lib.stride_tricks.sliding_window_view(valid, (size, size), axis=(1, 2))
    first = size - size // 2
    windows = windows[:, first : first + values.shape[1], first : first + values.shape[2]]
    share = windows.sum(axis=(0, 3, 4)) / (values.shape[0] * size * size)
    return (values != -9999).all(axis=0) & (share >= (1.0 if policy == "skip" else 0.5) - 1e-9)


def read(path, number=1):
    dataset = gdal.Open(path)  # kept while its band is read: GDAL crashes otherwise
    band = dataset.GetRasterBand(number)
    values = band.ReadAsArray().astype(float)
    values[values == band.GetNoDataValue()] = np.nan
    return values


def predict(tmp_path, model, stack, **parameters):
    result = processing.run(
        "subsidence:predictsurface",
        {"MODEL": model, "FACTORS": stack, "OUTPUT": str(tmp_path / "out.tif"), **parameters},
    )
    return read(result["OUTPUT"]), gdal.Open(result["OUTPUT"]).GetGeoTransform()


def sample_pixels(shape, rng):
    """Corners, edges, pixels next to the nodata blocks and random interior ones."""
    rows, columns = shape
    chosen = [
        (0, 0),
        (0, columns - 1),
        (rows - 1, 0),
        (rows - 1, columns - 1),
        (0, 37),
        (rows - 1, columns - 7),
        (20, 0),
        (33, columns - 1),
    ]
    chosen += [(29, 40), (31, 45), (33, 44), (30, 39), (59, 6), (62, 9), (50, 10), (45, 45)]
    chosen += [tuple(pixel) for pixel in rng.integers(0, [rows, columns], (30, 2))]
    return chosen


@pytest.mark.heavy
@pytest.mark.parametrize(
    "architecture, size, policy, members, tile",
    [
        ("dense", 22, "fill", 1, 32),
        ("dense", 23, "skip", 1, 512),
        ("dense", 22, "fill", 3, 40),
        ("paper", 8, "fill", 2, 512),
        ("small", 9, "fill", 1, 24),
    ],
)
def test_every_pixel_is_the_model_on_its_own_patch(
    plugin, tmp_path, geotiff, models, architecture, size, policy, members, tile
):
    """To 1e-4 of the output's range, at corners, edges, next to nodata and at random; for an
    ensemble the surface is the members' mean and the uncertainty their standard deviation. The
    models log-scale band2 in their graph (a skewed band, see cnn_data)."""
    model = models[(architecture, size, policy, members)]
    assert "Log" in {node.op_type for node in onnx.load(model).graph.node}  # the transform is in
    if architecture != "paper":  # 'valid' convolutions only
        with open(model, "rb") as file:
            dense_model(file.read())  # raises NotDenseError if the surface would come patch by patch
    # The paper's network runs patch by patch (21 M weights): a narrower stack, holes and edges alike.
    stack, values = write_stack(tmp_path / "stack.tif", geotiff, columns=46 if architecture == "paper" else 90)
    uncertainty = {"OUTPUT_UNCERTAINTY": str(tmp_path / "sd.tif")} if members > 1 else {}
    out, transform = predict(tmp_path, model, stack, TILE_SIZE=tile, **uncertainty)
    sd = read(uncertainty["OUTPUT_UNCERTAINTY"]) if members > 1 else None
    assert out.shape == values.shape[1:] and transform == (LEFT, PIXEL, 0, TOP, 0, -PIXEL)
    rng = np.random.default_rng(1)
    spread = np.nanmax(out) - np.nanmin(out)
    for row, column in sample_pixels(out.shape, rng):
        expected = by_hand(model, values, row, column, size, policy)
        if expected is None:
            assert np.isnan(out[row, column]), (row, column)
            assert sd is None or np.isnan(sd[row, column])
        else:
            assert len(expected) == members
            assert abs(out[row, column] - expected.mean()) <= 1e-4 * spread, (row, column)
            assert sd is None or abs(sd[row, column] - expected.std(ddof=1)) <= 1e-4 * spread, (row, column)
    np.testing.assert_array_equal(np.isfinite(out), predictable(values, size, policy))
    assert np.isnan(out[30:33, 40:44]).all() and np.isnan(out[60:62, 5:9]).all()
    assert sd is None or np.nanmin(sd) > 0  # the members differ


@pytest.mark.parametrize("architecture, size", [("dense", 22), ("small", 8), ("small", 9), ("small", 11)])
def test_the_dense_form_is_the_patch_model_at_every_window(tmp_path, architecture, size):
    """dense_model's output at (i, j) equals ONNX Runtime's patch model on the window starting at
    (i, j), for every window of a block (odd sizes: both ignore the row and column that pooling
    drops); an ensemble of 2 untrained networks with random batch-norm statistics."""
    torch = pytest.importorskip("torch")  # the training interpreter's; none in make test-qgis's QGIS

    from insar_subsidence.models.cnn import Deployed, build
    from insar_subsidence.models.worker import export

    torch.manual_seed(0)
    networks = [build(architecture, 3, size) for _ in range(2)]
    for module in (module for network in networks for module in network.modules()):
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):  # not the identity a fresh one is
            module.running_mean.normal_(0, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    model = Deployed(networks, np.zeros(3), np.zeros(3), np.ones(3), 0.0, 1.0)
    block = np.random.default_rng(0).normal(0, 1, (3, size + 13, size + 9)).astype(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(block, (size, size), axis=(1, 2))  # (bands, rows, columns, P, P)
    rows, columns = windows.shape[1:3]
    patches = np.ascontiguousarray(windows.transpose(1, 2, 0, 3, 4).reshape(-1, 3, size, size))
    export(model, patches, str(tmp_path))
    patch_model = (tmp_path / "model.onnx").read_bytes()
    expected = onnxruntime.InferenceSession(patch_model, providers=["CPUExecutionProvider"]).run(
        ["members"], {"patches": patches}
    )[0]
    expected = expected.reshape(rows, columns, 2).transpose(2, 0, 1)
    dense_bytes, extent = dense_model(patch_model)
    dense = onnxruntime.InferenceSession(dense_bytes, providers=["CPUExecutionProvider"]).run(
        ["members"], {"patches": block[None]}
    )[0][0]
    assert extent <= size and dense.shape[1:] == (block.shape[1] - extent + 1, block.shape[2] - extent + 1)
    np.testing.assert_allclose(dense[:, :rows, :columns], expected, rtol=0, atol=1e-5 * np.ptp(expected))


def test_uncertainty_needs_an_ensemble_and_applicability_recorded_drivers(plugin, tmp_path, geotiff, models):
    stack, _ = write_stack(tmp_path / "stack.tif", geotiff)
    with pytest.raises(QgsProcessingException, match="single network.*ENSEMBLE"):
        predict(tmp_path, models[("dense", 22, "fill", 1)], stack, OUTPUT_UNCERTAINTY=str(tmp_path / "sd.tif"))
    older = onnx.load(models[("dense", 22, "fill", 1)])  # as an earlier version wrote it
    kept = [entry for entry in older.metadata_props if entry.key != "applicability"]
    del older.metadata_props[:]
    older.metadata_props.extend(kept)
    onnx.save(older, str(tmp_path / "older.onnx"))
    with pytest.raises(QgsProcessingException, match="does not record the drivers"):
        predict(tmp_path, str(tmp_path / "older.onnx"), stack, BLANK_OUTSIDE=True)
    assert not (tmp_path / "out.tif").exists()


def test_bands_are_matched_by_name_whatever_their_order(plugin, tmp_path, geotiff, models):
    model = models[("dense", 22, "fill", 1)]
    first, _ = predict(tmp_path, model, write_stack(tmp_path / "a.tif", geotiff)[0])
    second, _ = predict(tmp_path, model, write_stack(tmp_path / "b.tif", geotiff, order=(2, 0, 1))[0])
    np.testing.assert_array_equal(first, second)


def test_missing_or_extra_bands_are_refused(plugin, tmp_path, geotiff, models):
    model = models[("dense", 22, "fill", 1)]
    stack = geotiff(
        tmp_path / "s.tif",
        np.zeros((3, 30, 30)),
        (LEFT, PIXEL, 0, TOP, 0, -PIXEL),
        32630,
        names=["band0", "band1", "slope"],
    )
    with pytest.raises(QgsProcessingException, match="missing .*: band2; in the stack but not in the model: slope"):
        predict(tmp_path, model, stack)


def test_extent_and_mask_limit_the_output(plugin, tmp_path, geotiff, models):
    model = models[("dense", 22, "fill", 1)]
    stack, values = write_stack(tmp_path / "stack.tif", geotiff, holes=False)
    whole, _ = predict(tmp_path, model, stack)
    extent = f"{LEFT + 205},{LEFT + 495},{TOP - 395},{TOP - 105} [EPSG:32630]"  # columns 20..49, rows 10..39
    part, transform = predict(tmp_path, model, stack, EXTENT=extent)
    assert transform == (LEFT + 200, PIXEL, 0, TOP - 100, 0, -PIXEL)
    np.testing.assert_allclose(part, whole[10:40, 20:50], rtol=1e-6)
    mask = QgsVectorLayer("Polygon?crs=EPSG:32630", "mask", "memory")
    feature = QgsFeature()
    feature.setGeometry(
        QgsGeometry.fromWkt(
            f"POLYGON(({LEFT} {TOP}, {LEFT + 300} {TOP}, {LEFT + 300} {TOP - 200}, {LEFT} {TOP - 200}, {LEFT} {TOP}))"
        )
    )
    mask.dataProvider().addFeatures([feature])
    masked, _ = predict(tmp_path, model, stack, MASK=mask)
    np.testing.assert_allclose(masked[:20, :30], whole[:20, :30], rtol=1e-6)
    assert np.isnan(masked[20:]).all() and np.isnan(masked[:, 30:]).all()


def test_cancel_leaves_no_output(plugin, tmp_path, geotiff, models, log_feedback):
    model = models[("dense", 22, "fill", 1)]
    stack, _ = write_stack(tmp_path / "stack.tif", geotiff)
    with pytest.raises(QgsProcessingException, match="Canceled"):
        processing.run(
            "subsidence:predictsurface",
            {"MODEL": model, "FACTORS": stack, "TILE_SIZE": 16, "OUTPUT": str(tmp_path / "out.tif")},
            feedback=log_feedback(cancel_at=20),
        )
    assert not (tmp_path / "out.tif").exists()


def with_noise_variance(model, path, noise):
    """The model with `noise_variance` added to its metadata, as traincnn records it."""
    edited = onnx.load(model)
    entry = edited.metadata_props.add()
    entry.key, entry.value = "noise_variance", repr(noise)
    onnx.save(edited, str(path))
    return str(path)


@pytest.mark.parametrize("members", [1, 3])
def test_the_uncertainty_adds_the_recorded_noise_variance_to_the_spread(plugin, tmp_path, geotiff, models, members):
    stack, _ = write_stack(tmp_path / "stack.tif", geotiff)
    plain = models[("dense", 22, "fill", members)]
    noisy = with_noise_variance(plain, tmp_path / "noisy.onnx", 0.25)
    out, _ = predict(tmp_path, noisy, stack, OUTPUT_UNCERTAINTY=str(tmp_path / "sigma.tif"))
    sigma = read(str(tmp_path / "sigma.tif"))
    if members > 1:
        (tmp_path / "plain").mkdir()
        predict(tmp_path / "plain", plain, stack, OUTPUT_UNCERTAINTY=str(tmp_path / "plain" / "sd.tif"))
        spread = read(str(tmp_path / "plain" / "sd.tif"))
    else:
        spread = np.where(np.isfinite(out), 0.0, np.nan)  # a single network: no spread, nodata where the surface is
    np.testing.assert_allclose(sigma, np.sqrt(spread**2 + 0.25), rtol=1e-5)
    assert np.array_equal(np.isnan(sigma), np.isnan(out))


def test_a_stack_of_another_resolution_is_refused(plugin, tmp_path, geotiff, models):
    """The model was trained on 10 m drivers: 10.05 m pixels pass (within 1 %), 20 m ones are
    refused with how to resample them, before any output is written."""
    model = models[("dense", 22, "fill", 1)]
    values = smooth_fields(3, 30, 30)
    close = geotiff(tmp_path / "close.tif", values, (LEFT, 10.05, 0, TOP, 0, -10.05), 32630, names=NAMES)
    out, _ = predict(tmp_path, model, close)
    assert out.shape == (30, 30)
    coarse = geotiff(tmp_path / "coarse.tif", values, (LEFT, 20.0, 0, TOP, 0, -20.0), 32630, names=NAMES)
    with pytest.raises(QgsProcessingException, match=r"pixels are 20 x 20 map units.*10 x 10.*gdalwarp -tr 10 10"):
        predict(tmp_path, model, coarse, OUTPUT=str(tmp_path / "coarse_out.tif"))
    assert not (tmp_path / "coarse_out.tif").exists()


def test_a_stack_in_another_crs_is_refused(plugin, tmp_path, geotiff, models):
    model = models[("dense", 22, "fill", 1)]
    stack = geotiff(tmp_path / "s.tif", smooth_fields(3, 30, 30), (LEFT, PIXEL, 0, TOP, 0, -PIXEL), 32631, names=NAMES)
    with pytest.raises(QgsProcessingException, match=r"stack is in EPSG:32631.*in EPSG:32630.*Reproject"):
        predict(tmp_path, model, stack)
    assert not (tmp_path / "out.tif").exists()


def test_a_model_of_the_previous_version_still_predicts(plugin, tmp_path, log_feedback):
    """The model version 0.1.0 wrote (before the model card) gives the surface and σ it gave then,
    away from the edge (the edge convention has changed since: P//2 = 4 pixels); it records no
    pixel size or CRS, so they go unchecked, with a warning."""
    feedback = log_feedback()
    result = processing.run(
        "subsidence:predictsurface",
        {
            "MODEL": str(LEGACY / "legacy_small.onnx"),
            "FACTORS": str(LEGACY / "legacy_stack.tif"),
            "OUTPUT": str(tmp_path / "out.tif"),
            "OUTPUT_UNCERTAINTY": str(tmp_path / "sigma.tif"),
        },
        feedback=feedback,
    )
    interior = (slice(4, -4), slice(4, -4))
    for output, expected in (
        (result["OUTPUT"], "legacy_surface.tif"),
        (result["OUTPUT_UNCERTAINTY"], "legacy_sigma.tif"),
    ):
        then, now = read(str(LEGACY / expected))[interior], read(output)[interior]
        assert np.isfinite(then).mean() > 0.9  # a surface to compare
        np.testing.assert_array_equal(np.isnan(now), np.isnan(then))
        np.testing.assert_allclose(now, then, rtol=0, atol=1e-5 * np.nanmax(np.abs(then)))
    assert "predates the model card" in feedback.text and "pixel size and CRS" in feedback.text
