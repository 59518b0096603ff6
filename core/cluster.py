"""Tiles as tasks on a Dask distributed cluster, for when one machine is not enough.

Dask and distributed are optional: nothing here imports them until a scheduler is asked for. The
client (the kriging algorithms, in QGIS) submits a few tiles ahead of the workers and
hands each finished one to a writer as it completes, so that its memory holds a few tiles, never
the whole raster; the workers compute exactly what this process would.
"""

import contextlib
import multiprocessing
import os
import queue
import re
import tempfile
import zipfile

from .dependencies import install_command
from .errors import InputError

CONNECT_TIMEOUT_S = 10
LOCAL = re.compile(r"local:(\d+)")
TILES_AHEAD = 2  # tiles submitted per worker thread beyond those running: the client's memory bound
POLL_S = 0.25  # how often a run waiting for tiles checks for a cancel
KRIGING_PACKAGES = ("numpy", "scipy")
PACKAGE = __package__.split(".")[0]  # the plugin's package, as workers import it
PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_SENT = ("tests", "build", "docs", "resources", "__pycache__")


class CanceledError(Exception):
    """The user canceled: the tiles still queued or running were canceled too."""


def describe(scheduler):
    """How the log names the scheduler setting's value."""
    local = LOCAL.fullmatch(scheduler)
    if local:
        return f"a local Dask cluster of {local.group(1)} worker processes"
    return f"the Dask scheduler at {scheduler}"


@contextlib.contextmanager
def cluster(scheduler, packages, python=None):
    """A distributed.Client of `scheduler`: "local:N" (a LocalCluster of N single-threaded worker
    processes, started here and closed after) or a scheduler's address such as tcp://host:8786.
    Every worker must import `packages`; `python` is the interpreter local workers are started
    with, where this process's sys.executable is not one (QGIS on Windows and macOS)."""
    try:
        import distributed
    except ImportError as error:
        raise InputError(
            f"Running on {describe(scheduler)} needs the Python packages dask and distributed, which are not "
            f"installed here ({error}). Install them into QGIS's Python with\n{install_command(['distributed'])}\n"
            "then restart QGIS; or clear the scheduler to run in this process."
        ) from error
    with contextlib.ExitStack() as stack:
        local = LOCAL.fullmatch(scheduler)
        if local:
            workers = int(local.group(1))
            if workers < 1:
                raise InputError(f"'{scheduler}': a local cluster needs at least one worker, as in local:2.")
            if python:
                stack.enter_context(_spawning_with(python))
            address = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
                )
            )
        else:
            address = scheduler
        client = stack.enter_context(_connected(distributed, address, scheduler))
        _check_packages(client, packages)
        yield client


@contextlib.contextmanager
def _spawning_with(python):
    """multiprocessing starts its processes with `python` while the block runs (the local
    cluster's nannies restart dead workers with it too), then with what it had before."""
    before = multiprocessing.spawn.get_executable()
    multiprocessing.set_executable(python)
    try:
        yield
    finally:
        multiprocessing.set_executable(before)


@contextlib.contextmanager
def _connected(distributed, address, scheduler):
    try:
        client = distributed.Client(address, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        raise InputError(
            f"Cannot reach the Dask scheduler at {scheduler}: {error} (tried for {CONNECT_TIMEOUT_S} s). Check that "
            "the scheduler runs (`dask scheduler` prints its address), that this machine can reach its port, and "
            "the address: tcp://host:8786, or local:N for N worker processes on this machine."
        ) from error
    with client:
        yield client


def _check_packages(client, packages):
    """Refuses a cluster on which a worker cannot import one of `packages`, naming both; sends the
    plugin to a scheduler and workers that lack it (a remote cluster), as a zip they put on their
    path. The check itself is builtins only (eval), which any worker can unpickle."""
    missing = _lacking(client, packages)
    if any(PACKAGE in names for names in missing.values()):
        _send_plugin(client)
        missing = _lacking(client, packages)
    missing = {worker: names for worker, names in missing.items() if names}
    if missing:
        lines = "; ".join(f"{worker} lacks {', '.join(names)}" for worker, names in sorted(missing.items()))
        raise InputError(
            f"Some Dask workers cannot run these tiles: {lines}. Install those packages into the workers' "
            "Python (python -m pip install …), then run again."
        )


def _lacking(client, packages):
    """{worker address, or "the scheduler": what it cannot import} of `packages` and the plugin
    (the scheduler unpickles the tasks, so it needs the plugin too)."""
    lacking = client.run(eval, _missing_expression((*packages, PACKAGE)))
    lacking["the scheduler"] = client.run_on_scheduler(eval, _missing_expression([PACKAGE]))
    return lacking


def _missing_expression(packages):
    """A Python expression: the list of `packages` that cannot be imported where it is evaluated."""
    return f"[name for name in {list(packages)!r} if __import__('importlib.util').util.find_spec(name) is None]"


def _send_plugin(client):
    """Uploads this plugin's Python modules to every worker, present and future."""
    with tempfile.TemporaryDirectory() as folder:
        archive = os.path.join(folder, f"{PACKAGE}.zip")
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            for parent, folders, files in os.walk(PLUGIN_DIR):
                folders[:] = [name for name in folders if name not in NOT_SENT and not name.startswith(".")]
                for name in files:
                    if name.endswith(".py"):
                        path = os.path.join(parent, name)
                        zipped.write(path, os.path.join(PACKAGE, os.path.relpath(path, PLUGIN_DIR)))
        client.upload_file(archive)


def run_tiles(client, task, tiles, count, write, progress, canceled):
    """Runs task(*arguments) on the cluster for every (tile, arguments) of `tiles`, `count` of
    them, taken only as they are submitted, and write(tile, result) here as each finishes, in any
    order, with at most TILES_AHEAD tiles per worker thread (as many as the cluster has now)
    waiting beyond those running. progress(fraction done) after every tile;
    canceled() is polled every POLL_S: then the tiles still submitted are canceled and CanceledError
    is raised. A worker that dies has its tiles run again elsewhere by Dask; one that dies every
    time (out of memory) ends the run with a message saying so."""
    pending = {}
    finished = queue.Queue()  # futures, put there by Dask as they finish
    queued = iter(tiles)
    done = 0
    try:
        while True:
            limit = max(1, sum(client.nthreads().values())) * (1 + TILES_AHEAD)
            while len(pending) < limit:
                tile, arguments = next(queued, (None, None))
                if arguments is None:
                    break
                future = client.submit(task, *arguments, pure=False)
                pending[future] = tile
                future.add_done_callback(finished.put)
            if not pending:
                return
            with contextlib.suppress(queue.Empty):
                future = finished.get(timeout=POLL_S)
                write(pending.pop(future), _result(future, task))
                done += 1
                progress(done / count)
            if canceled():
                raise CanceledError()
    except BaseException:
        client.cancel(list(pending))
        raise


def _result(future, task):
    import distributed

    try:
        return future.result()
    except distributed.KilledWorker as error:
        raise InputError(
            f"The workers running {task.__name__} died every time they tried a tile ({error}): most often they "
            "ran out of memory. Give the workers more memory, or fewer threads each."
        ) from error
