"""Kriging on a Dask cluster (issue 22): a real LocalCluster of two worker processes gives the
rasters this process gives, also when a worker dies mid-run; a cancel writes nothing and stops
the tasks; the errors name what to fix."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from osgeo import gdal
from qgis import processing
from qgis.core import QgsProcessingException

from insar_subsidence.core import cluster as dask_tiles
from synthetic import subsidence_bowls

from conftest import displacement_points

distributed = pytest.importorskip("distributed")

ROWS_PER_BLOCK = 6  # blocks of rows small enough that the grid makes many tasks
EXTENT = "0,40000,0,30000 [EPSG:32630]"


@pytest.fixture(scope="module")
def dask_cluster():
    """A LocalCluster of two single-threaded worker processes and a client of it."""
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        yield cluster, client


@pytest.fixture
def small_blocks(plugin, monkeypatch):
    from insar_subsidence.algorithms import kriging_base

    monkeypatch.setattr(kriging_base, "BLOCK_CELLS", 200 * ROWS_PER_BLOCK)


def krige(tmp_path, name, feedback=None, **extra):
    """subsidence:krige of 3000 bowl points onto 200 x 150 cells: (values, variances) read back."""
    x, y, z = subsidence_bowls(3000, extent=40000.0, seed=3)
    outputs = {"OUTPUT": str(tmp_path / f"{name}.tif"), "OUTPUT_VARIANCE": str(tmp_path / f"{name}_variance.tif")}
    parameters = {
        "POINTS": displacement_points(x, y * 0.75, z),
        "FIELD": "displacement",
        "EXTENT": EXTENT,
        "PIXEL_SIZE": 200,
        "N_NEIGHBOURS": 16,
        **outputs,
        **extra,
    }
    processing.run("subsidence:krige", parameters, feedback=feedback)
    return [gdal.Open(path).ReadAsArray().astype(float) for path in outputs.values()]


def assert_same_rasters(got, expected):
    for a, b in zip(got, expected):
        assert a.shape == b.shape == (150, 200)
        assert np.abs(a - b).max() <= 1e-6 * np.ptp(b)


@pytest.mark.parametrize("where", ["address", "local:2"])
def test_the_cluster_kriges_what_this_process_kriges(where, dask_cluster, small_blocks, tmp_path, log_feedback):
    cluster, _ = dask_cluster
    expected = krige(tmp_path, "here")
    feedback = log_feedback()
    scheduler = cluster.scheduler_address if where == "address" else where
    got = krige(tmp_path, "cluster", feedback, SCHEDULER=scheduler)
    assert_same_rasters(got, expected)
    assert "Kriging 25 blocks of rows on " in feedback.text


def test_kriged_residuals_on_the_cluster_are_those_of_this_process(
    dask_cluster, plugin, tmp_path, geotiff, monkeypatch
):
    from insar_subsidence.algorithms import kriging_base
    from test_krigeresiduals import GRID, SHAPE, points_layer, read, run, surface_values

    cluster, _ = dask_cluster
    monkeypatch.setattr(kriging_base, "BLOCK_CELLS", SHAPE[1] * ROWS_PER_BLOCK)
    surface = geotiff(tmp_path / "surface.tif", surface_values(), GRID, 32630)
    uncertainty = geotiff(tmp_path / "sigma.tif", np.full(SHAPE, 0.5), GRID, 32630)
    inputs = {"SURFACE": surface, "POINTS": points_layer()[0], "SURFACE_UNCERTAINTY": uncertainty}
    outputs = {name: str(tmp_path / f"{name}.tif") for name in ("OUTPUT", "OUTPUT_VARIANCE")}
    here = run(tmp_path, **inputs, **outputs)
    expected = [read(here[name]) for name in outputs]
    transitions = cluster.scheduler.transition_counter
    there = run(
        tmp_path,
        **inputs,
        OUTPUT=str(tmp_path / "c.tif"),
        OUTPUT_VARIANCE=str(tmp_path / "cv.tif"),
        SCHEDULER=cluster.scheduler_address,
    )
    assert cluster.scheduler.transition_counter > transitions  # the blocks were kriged there
    got = [read(there[name]) for name in outputs]
    for a, b in zip(got, expected):
        assert a.shape == b.shape == SHAPE
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        assert np.nanmax(np.abs(a - b)) <= 1e-6 * (np.nanmax(b) - np.nanmin(b))


def test_a_worker_killed_mid_run_changes_nothing(dask_cluster, small_blocks, tmp_path, log_feedback):
    cluster, client = dask_cluster
    expected = krige(tmp_path, "here")
    pids = client.run(os.getpid)
    killed = []

    def kill_a_worker_once_it_kriges():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            busy = [worker for worker, keys in client.processing().items() if keys]
            if busy:
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(busy[0])
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_a_worker_once_it_kriges)
    killer.start()
    got = krige(tmp_path, "cluster", log_feedback(), SCHEDULER=cluster.scheduler_address)
    killer.join()
    assert killed, "no worker was seen kriging"
    assert_same_rasters(got, expected)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it, for the next tests


def test_a_cancel_writes_nothing_and_stops_the_tasks(dask_cluster, small_blocks, tmp_path, log_feedback):
    cluster, _ = dask_cluster
    with pytest.raises(QgsProcessingException, match="Canceled: no output was written"):
        krige(tmp_path, "canceled", log_feedback(cancel_at=20), SCHEDULER=cluster.scheduler_address)
    assert not list(tmp_path.iterdir())
    deadline = time.monotonic() + 10
    while cluster.scheduler.tasks and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not cluster.scheduler.tasks


def test_without_dask_the_message_says_what_to_install(small_blocks, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed then fails
    with pytest.raises(
        QgsProcessingException, match=r"local Dask cluster of 2 (.|\n)*-m pip install (.|\n)*distributed"
    ):
        krige(tmp_path, "none", SCHEDULER="local:2")
    assert not list(tmp_path.iterdir())


def test_an_unreachable_scheduler_is_named(small_blocks, tmp_path, monkeypatch):
    monkeypatch.setattr(dask_tiles, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(QgsProcessingException, match=r"Cannot reach the Dask scheduler at tcp://127.0.0.1:9: .*1 s"):
        krige(tmp_path, "none", SCHEDULER="tcp://127.0.0.1:9")
    assert not list(tmp_path.iterdir())


def test_a_package_missing_on_the_workers_is_named_with_them(dask_cluster, small_blocks, tmp_path, monkeypatch):
    from insar_subsidence.algorithms import kriging_base

    cluster, client = dask_cluster
    monkeypatch.setattr(kriging_base, "KRIGING_PACKAGES", ("numpy", "no_such_package_here"))
    with pytest.raises(QgsProcessingException) as refused:
        krige(tmp_path, "none", SCHEDULER=cluster.scheduler_address)
    for worker in client.scheduler_info()["workers"]:
        assert f"{worker} lacks no_such_package_here" in str(refused.value)
    assert not list(tmp_path.iterdir())


def _die(*arguments):
    os._exit(1)  # as the kernel's OOM killer ends a worker that outgrows its memory


def test_a_worker_that_dies_on_every_try_ends_the_run_with_a_message(plugin, small_blocks, tmp_path, monkeypatch):
    """Dask gives up on a tile after its workers died allowed-failures + 1 times (a tile too big
    for their memory): the run stops with our message and writes nothing."""
    import cloudpickle
    import dask

    from insar_subsidence.algorithms import kriging_base

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import this module
    monkeypatch.setattr(kriging_base, "krige_block", _die)
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
    ):
        with pytest.raises(QgsProcessingException, match=r"died every time they tried a tile .*out of memory"):
            krige(tmp_path, "none", SCHEDULER=cluster.scheduler_address)
    assert not list(tmp_path.iterdir())


def test_a_remote_cluster_without_the_plugin_is_sent_it(plugin, small_blocks, tmp_path):
    """A scheduler and a worker started on their own, in a Python that cannot import the plugin
    (as on another machine): the plugin is sent to both, and the rasters are this process's."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    remote = tmp_path / "remote"
    remote.mkdir()
    environment = {"PATH": os.environ["PATH"], "HOME": str(remote)}
    environment["PYTHONPATH"] = os.path.dirname(os.path.dirname(distributed.__file__))  # dask, not the plugin
    commands = (
        ["-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        ["-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-dashboard"],
    )
    started = [
        subprocess.Popen([sys.executable, *command], env=environment, cwd=remote, stderr=subprocess.DEVNULL)
        for command in commands
    ]
    try:
        with distributed.Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=60)
            lacks = f"__import__('importlib.util').util.find_spec({dask_tiles.PACKAGE!r}) is None"
            assert list(client.run(eval, lacks).values()) == [True] and client.run_on_scheduler(eval, lacks)
        expected = krige(tmp_path, "here")
        assert_same_rasters(krige(tmp_path, "remote", SCHEDULER=address), expected)
    finally:
        for process in started:
            process.terminate()
            process.wait(timeout=30)


def test_the_plugin_sent_to_workers_imports_without_it(dask_cluster):
    """A worker of a remote cluster has no plugin: the zip sent to it must be importable alone."""
    _, client = dask_cluster
    dask_tiles._send_plugin(client)

    def import_from_the_zip():
        archive = next(path for path in sys.path if path.endswith(f"{dask_tiles.PACKAGE}.zip"))
        module = f"{dask_tiles.PACKAGE}.core.kriging"
        code = f"import sys; sys.path.insert(0, {archive!r}); import {module} as k; print(k.__file__)"
        done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd="/")
        return archive, done.stdout.strip(), done.stderr

    for archive, imported, errors in client.run(import_from_the_zip).values():
        assert imported == os.path.join(archive, dask_tiles.PACKAGE, "core", "kriging.py"), errors
