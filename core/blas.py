"""Holding OpenBLAS to one thread while the plugin's own threads call into it.

Many small LAPACK calls from several threads are fastest with one BLAS thread each; OpenBLAS's
default pool instead makes the threads contend and spin (measured here: 2.4x slower per 33 x 33
solve with two threads). Inside QGIS the OPENBLAS_NUM_THREADS variable is read too early to
help, so the thread count is set through OpenBLAS's own functions, found in the loaded libraries.
"""

import contextlib
import ctypes
import glob
import os
from functools import lru_cache


def available_cores():
    """The cores this process may use: OMP_NUM_THREADS when set (a test runner or a cluster's job
    sharing the machine says so there), else those the operating system lets it run on."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _loaded_blas_paths():
    import numpy  # loads its BLAS, which must be mapped before the maps are read

    paths = set()
    if os.path.exists("/proc/self/maps"):  # Linux: the libraries this process has loaded
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if "blas" in os.path.basename(path).lower():
                    paths.add(path)
    root = os.path.dirname(numpy.__file__)  # wheels on Windows and macOS carry OpenBLAS beside numpy
    for folder in (os.path.join(root, ".libs"), os.path.join(root, ".dylibs"), root + ".libs"):
        paths.update(glob.glob(os.path.join(folder, "*openblas*")))
    return sorted(paths)


@lru_cache(maxsize=1)
def _thread_controls():
    controls = []
    for path in _loaded_blas_paths():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix in ("", "64_"):  # 64-bit-integer builds suffix their symbols
            get = getattr(library, f"openblas_get_num_threads{suffix}", None)
            set_ = getattr(library, f"openblas_set_num_threads{suffix}", None)
            if get and set_:
                controls.append((get, set_))
                break
    return tuple(controls)


@contextlib.contextmanager
def one_blas_thread():
    """Yields True while OpenBLAS is held to one thread, False where its BLAS cannot be
    controlled (then callers should not call LAPACK from several threads)."""
    controls = _thread_controls()
    before = [get() for get, _ in controls]
    for _, set_ in controls:
        set_(1)
    try:
        yield bool(controls)
    finally:
        for (_, set_), count in zip(controls, before):
            set_(count)
