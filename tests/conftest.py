"""Headless QGIS with the plugin loaded the way QGIS loads it."""

import contextlib
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from qgis.core import QgsProcessingFeedback

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# OpenMP threads (torch's, in the tests and in the training workers they start) that wait for work
# sleep instead of spinning: with two pytest-xdist workers training at once on two cores, spinning
# threads took the cores from the working ones (two trainings side by side: 45 s passive, > 150 s
# spinning).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Each pytest-xdist worker gets its share of the cores for the threads it and the processes it
# starts use (torch, ONNX Runtime, kriging: core.blas.available_cores; OpenBLAS below). Two
# threads on a core the other worker also uses cost more than they give: the applicability test's
# training took 27 s with one thread and 67 s with two; a kriging test 0.2 s alone and 20 s beside
# a training.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))

REPO = Path(__file__).resolve().parents[1]
# Real third-party data bundled with the plugin (sources and licences in its README).
DONANA_ASC = REPO / "resources" / "sample_data" / "donana" / "Sentinel_Asc.shp"  # 573 P-SBAS points, EPSG:25830
DONANA_EXTENT = "176000,196000,4122000,4140000 [EPSG:25830]"
# Real data for the tests only (tests/data/README.md).
MINNESOTA_DEM = REPO / "tests" / "data" / "minnesota_dem" / "dem.tif"  # 400 x 400, 1 m LiDAR, EPSG:26915
PLUGIN_NAME = "insar_subsidence"
# The training interpreter: the tests' own, or the one `make test-qgis` names, where the tests run
# in a QGIS whose Python has no torch (as a user's QGIS has none).
TORCH_PYTHON = os.environ.get("SUBSIDENCE_TORCH_PYTHON") or sys.executable
# The clone's folder may have any name: QGIS and the tests find the plugin by its package name,
# through a folder holding a link (the same one `make demo` uses).
PLUGIN_PATH = REPO / "build" / "pluginpath"
PLUGIN_PATH.mkdir(parents=True, exist_ok=True)
if not (PLUGIN_PATH / PLUGIN_NAME).exists():
    try:
        (PLUGIN_PATH / PLUGIN_NAME).symlink_to(REPO, target_is_directory=True)
    except FileExistsError:  # another pytest-xdist worker made it first
        pass
sys.path.insert(0, str(PLUGIN_PATH))
sys.path.insert(0, str(Path(__file__).parent))  # shared test helpers (synthetic.py)


def pytest_collection_modifyitems(items):
    """The heavy tests first (the longest first is how two workers end together): in collection
    order, the training tests of test_traincnn.py came last and one worker ran them alone."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: ignored when xdist is not loaded
def pytest_xdist_make_scheduler(config, log):
    """With `--dist loadgroup` (`make test`), the tests of a module that defines a module-scoped
    fixture (a set of trained models, a demo run) go to one worker, so that the fixture is made
    once, not once per worker; every other test is scheduled on its own.

    pytest-xdist 3.8 cannot group them from xdist_group marks under pytest 9.2 (pytest-xdist
    issue 1386): the scheduler groups them itself, from the modules' source."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class ModuleFixtureScheduling(LoadGroupScheduling):
        grouped = {}

        def _split_scope(self, nodeid):
            path = nodeid.split("::", 1)[0]
            if path not in self.grouped:
                source = (config.rootpath / path).read_text(encoding="utf-8") if path.endswith(".py") else ""
                self.grouped[path] = re.search(r"@pytest\.fixture\([^)]*scope=[\"'](module|class)[\"']", source)
            return path if self.grouped[path] else super()._split_scope(nodeid)

    return ModuleFixtureScheduling(config, log)


class LogFeedback(QgsProcessingFeedback):
    """Keeps what an algorithm logs, warnings marked "WARNING "; cancels once the progress reaches
    `cancel_at`, if given."""

    def __init__(self, cancel_at=None):
        super().__init__()
        self.lines = []
        self.cancel_at = cancel_at
        self.progressChanged.connect(self._progress)

    def _progress(self, value):
        if self.cancel_at is not None and value >= self.cancel_at:
            self.cancel()

    def pushInfo(self, info):
        self.lines.append(info)

    def pushWarning(self, warning):
        self.lines.append("WARNING " + warning)

    def reportError(self, error, fatalError=False):
        self.lines.append(error)

    @property
    def text(self):
        return "\n".join(self.lines)


@pytest.fixture(scope="session", autouse=True)
def blas_thread_share():
    """OpenBLAS: one thread per worker where OMP_NUM_THREADS gives each one core (above). GDAL loads
    OpenBLAS before this file runs, so it has not read the variable; its thread count is set."""
    from insar_subsidence.core.blas import one_blas_thread

    with one_blas_thread() if os.environ.get("OMP_NUM_THREADS") == "1" else contextlib.nullcontext():
        yield


@pytest.fixture
def log_feedback():
    """The LogFeedback class: log_feedback() or log_feedback(cancel_at=80)."""
    return LogFeedback


@pytest.fixture(scope="session")
def plugin(qgis_processing):
    import insar_subsidence

    loaded = insar_subsidence.classFactory(None)
    loaded.initProcessing()
    yield loaded
    loaded.unload()


@pytest.fixture
def provider(plugin):
    return plugin.provider


def qgis_process_environment(profile, plugin_path=PLUGIN_PATH, pythonpath_first=None):
    """The environment in which qgis_process.bin uses the QGIS profile folder `profile`, finds the
    plugin in plugin_path and the venv's packages (after pythonpath_first, if given)."""
    paths = [str(pythonpath_first)] if pythonpath_first else []
    paths.append(sysconfig.get_paths()["purelib"])
    paths += [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]  # make test-qgis's
    return dict(
        os.environ,
        QGIS_CUSTOM_CONFIG_PATH=str(profile),
        QGIS_OPTIONS_PATH=str(profile),
        QT_QPA_PLATFORM="offscreen",
        QGIS_PLUGINPATH=str(plugin_path),
        PYTHONPATH=os.pathsep.join(paths),
    )


@pytest.fixture(scope="session")
def qgis_profile(tmp_path_factory):
    """A throw-away QGIS profile folder with the plugin enabled, shared by a test worker's
    qgis_process runs: enabling it costs a qgis_process start of its own."""
    profile = tmp_path_factory.mktemp("qgis-profile")
    enable = ["qgis_process.bin", "plugins", "enable", PLUGIN_NAME]
    enabled = subprocess.run(enable, env=qgis_process_environment(profile), capture_output=True, text=True, timeout=300)
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    return profile


@pytest.fixture
def qgis_process(qgis_profile):
    """Runs qgis_process.bin in a throw-away QGIS profile, with the plugin enabled.

    run(*args, plugin_path=PLUGIN_PATH, pythonpath_first=None) -> CompletedProcess, where
    `plugin_path` is the folder QGIS finds the plugin in (by its name, enabled in the profile) and
    `pythonpath_first` goes before the venv's packages (to shadow one of them).
    """

    def run(*args, plugin_path=PLUGIN_PATH, pythonpath_first=None):
        env = qgis_process_environment(qgis_profile, plugin_path, pythonpath_first)
        return subprocess.run(["qgis_process.bin", *args], env=env, capture_output=True, text=True, timeout=300)

    return run


@pytest.fixture(scope="session")
def dense_model(tmp_path_factory):
    """An ensemble of 2 dense networks briefly trained on cnn_data's bands band0..band2 (22 x 22 patches)."""
    from cnn_data import trained_model

    return trained_model(tmp_path_factory.mktemp("dense_model"), "dense", 22, epochs=1, members=2)


@pytest.fixture
def sample_parameters(tmp_path, dense_model):
    """Valid parameters for every algorithm of the provider: the compliance test runs each one.

    A new algorithm must add its entry here (the compliance test fails until it does), with
    every optional output requested, so that each declared output is exercised.
    """
    return sample_parameters_in(tmp_path, dense_model)


def sample_parameters_in(tmp_path, dense_model):
    """sample_parameters with its files in the folder `tmp_path`."""
    write_amplitude_stack(tmp_path / "amplitudes.tif")
    return {
        "subsidence:checksetup": {},
        "subsidence:selectps": {
            "INPUT": [str(tmp_path / "amplitudes.tif")],
            "OUTPUT_DISPERSION": str(tmp_path / "dispersion.tif"),
            "OUTPUT": str(tmp_path / "candidates.gpkg"),
        },
        "subsidence:distance": {
            "INPUT": points_on_amplitude_grid(5),
            "REFERENCE": str(tmp_path / "amplitudes.tif"),
            "OUTPUT": str(tmp_path / "distance.tif"),
        },
        "subsidence:terrainfactors": {
            "INPUT": str(MINNESOTA_DEM),
            **{key: str(tmp_path / f"{key.lower()}.tif") for key in ("SLOPE", "ASPECT", "CATCHMENT", "TWI", "SPI")},
        },
        "subsidence:stackfactors": {
            "INPUTS": [str(tmp_path / "amplitudes.tif")],
            "OUTPUT": str(tmp_path / "stack.tif"),
        },
        "subsidence:exportpatches": {
            "POINTS": points_on_amplitude_grid(),
            "FIELD": "displacement",
            "FACTORS": str(tmp_path / "amplitudes.tif"),
            "PATCH_SIZE": 4,
            "SPLIT": 1,
            "NODATA_POLICY": 1,
            "OUTPUT": str(tmp_path / "dataset.npz"),
        },
        "subsidence:traincnn": {
            "DATASET": _small_training_dataset(tmp_path),
            "EPOCHS": 1,
            "OUTPUT_MODEL": str(tmp_path / "model.onnx"),
            "OUTPUT_REPORT": str(tmp_path / "training.html"),
        },
        "subsidence:predictsurface": {
            "MODEL": dense_model,
            "FACTORS": _driver_stack(tmp_path),
            "OUTPUT": str(tmp_path / "surface.tif"),
            "OUTPUT_UNCERTAINTY": str(tmp_path / "uncertainty.tif"),
            "OUTPUT_APPLICABILITY": str(tmp_path / "applicability.tif"),
        },
        "subsidence:evaluate": {
            # The dataset the model was trained on (trained_model writes it beside the model): evaluate
            # refuses a dataset whose split differs from the model's.
            "DATASET": str(Path(dense_model).parent / "data.npz"),
            "MODEL": dense_model,
            "OUTPUT_TABLE": str(tmp_path / "comparison.csv"),
            "OUTPUT_REPORT": str(tmp_path / "evaluation.html"),
        },
        "subsidence:importps": {"INPUT": str(DONANA_ASC), "UNITS": 2, "OUTPUT": str(tmp_path / "ps.gpkg")},
        "subsidence:krige": {
            "POINTS": str(DONANA_ASC),
            "FIELD": "Vel",
            "EXTENT": DONANA_EXTENT,
            "PIXEL_SIZE": 1000,
            "OUTPUT": str(tmp_path / "kriged.tif"),
            "OUTPUT_VARIANCE": str(tmp_path / "variance.tif"),
            "OUTPUT_REPORT": str(tmp_path / "report.html"),
        },
        "subsidence:krigeresiduals": {
            "SURFACE": _donana_surface(tmp_path, "surface.tif", 0.0),
            "SURFACE_UNCERTAINTY": _donana_surface(tmp_path, "sigma.tif", 1.0),
            "POINTS": str(DONANA_ASC),
            "FIELD": "Vel",
            "OUTPUT": str(tmp_path / "hybrid.tif"),
            "OUTPUT_VARIANCE": str(tmp_path / "hybrid_variance.tif"),
            "OUTPUT_REPORT": str(tmp_path / "hybrid.html"),
        },
    }


def _donana_surface(tmp_path, name, value):
    """A constant 1 km raster over the Doñana points (DONANA_EXTENT)."""
    return write_geotiff(tmp_path / name, np.full((18, 20), value), (176000, 1000, 0, 4140000, 0, -1000), 25830)


def _small_training_dataset(tmp_path):
    from cnn_data import known_function_dataset

    known_function_dataset(tmp_path / "training.npz", n=200)
    return str(tmp_path / "training.npz")


def _driver_stack(tmp_path):
    from cnn_data import smooth_fields

    return write_geotiff(
        tmp_path / "drivers.tif",
        smooth_fields(3, 40, 50),
        (400000, 10, 0, 4500000, 0, -10),
        32630,
        names=["band0", "band1", "band2"],
    )


def write_geotiff(path, values, geotransform, epsg, nodata=None, names=None):
    """A float32 GeoTIFF from (bands, rows, columns) or (rows, columns) values; returns its path."""
    from osgeo import gdal, osr

    values = np.asarray(values)
    values = values[None] if values.ndim == 2 else values
    dataset = gdal.GetDriverByName("GTiff").Create(
        str(path), values.shape[2], values.shape[1], values.shape[0], gdal.GDT_Float32
    )
    dataset.SetGeoTransform(geotransform)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    dataset.SetProjection(srs.ExportToWkt())
    for number, band_values in enumerate(values, start=1):
        band = dataset.GetRasterBand(number)
        band.WriteArray(band_values)
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if names:
            band.SetDescription(names[number - 1])
    dataset = None
    return str(path)


@pytest.fixture
def geotiff():
    """write_geotiff(path, values, geotransform, epsg, nodata=None, names=None) -> path."""
    return write_geotiff


def write_amplitude_stack(path, images=16, size=20):
    """A small amplitude stack (EPSG:32630): Rayleigh clutter, stable pixels on the diagonal."""
    rng = np.random.default_rng(0)
    amplitudes = rng.rayleigh(1.0, (images, size, size))
    amplitudes[:, range(size), range(size)] = 5.0 + rng.normal(0, 0.1, (images, size))
    write_geotiff(path, amplitudes, (500000.0, 20.0, 0.0, 4100000.0, 0.0, -20.0), 32630)


def displacement_points(x, y, values, crs="EPSG:32630"):
    """A memory point layer in `crs` with a `displacement` field."""
    from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsVectorLayer

    layer = QgsVectorLayer(f"Point?crs={crs}&field=displacement:double", "ps", "memory")
    features = []
    for a, b, value in zip(x, y, values):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(a, b)))
        feature.setAttributes([float(value)])
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    return layer


def points_on_amplitude_grid(n=60):
    """Random points with a displacement over the grid of write_amplitude_stack."""
    rng = np.random.default_rng(1)
    return displacement_points(rng.uniform(500000, 500400, n), rng.uniform(4099600, 4100000, n), rng.normal(0, 5, n))


@pytest.fixture
def donana():
    """The real Doñana ascending-track points and the extent used with them."""
    return DONANA_ASC, DONANA_EXTENT


def pytest_terminal_summary(terminalreporter):
    """The size of test_bad_input's matrix (issue 23 asks for it in the output)."""
    reports = [
        report
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if re.match(r"tests/test_bad_input\.py::test_bad_\w+_refused\w*\[", report.nodeid) and report.when == "call"
    ]
    if reports:
        algorithms = {report.nodeid.split("[", 1)[1].split("-", 1)[0] for report in reports}
        passed = sum(report.passed for report in reports)
        again = sum("gdal_exceptions_on" in report.nodeid for report in reports)
        terminalreporter.write_line(
            f"bad-input matrix: {len(reports)} cases over {len(algorithms)} algorithms ({again} of them the raster "
            f"cases again with GDAL's exceptions on), {passed} refused cleanly"
        )
