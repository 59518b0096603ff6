"""Which Python runs the torch training worker.

QGIS's own Python rarely has torch, and inside QGIS `sys.executable` is often QGIS itself (Windows,
macOS), so the interpreter is chosen explicitly, in this order:
1. the environment variable SUBSIDENCE_TORCH_PYTHON,
2. the provider setting (Settings > Options > Processing > Providers),
3. the first of these that can import torch: the plugin folder's `.venv` (made by `make setup`),
   QGIS's own Python, `python3` and `python` on the PATH.
An interpreter named in 1 or 2 is used as given: when it lacks torch, that is reported, not
silently replaced.
"""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from ..core.dependencies import no_console_window, qgis_python

ENV_VARIABLE = "SUBSIDENCE_TORCH_PYTHON"
PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE_TIMEOUT_S = 120
INSTALL_TORCH = "-m pip install torch"

# QGIS sets these for its own Python (OSGeo4W, the macOS bundle); another interpreter given
# them would load QGIS's standard library or packages and fail in confusing ways.
_QGIS_PYTHON_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE")


@dataclass(frozen=True)
class TorchPython:
    """The chosen interpreter; `problem` says what is missing and how to fix it, or is None."""

    path: Optional[str]
    torch_version: Optional[str]
    source: str
    problem: Optional[str] = None


def worker_environment(environ):
    return {key: value for key, value in environ.items() if key not in _QGIS_PYTHON_VARIABLES}


def venv_python(folder):
    if sys.platform == "win32":
        return os.path.join(folder, ".venv", "Scripts", "python.exe")
    return os.path.join(folder, ".venv", "bin", "python")


def candidate_pythons(plugin_dir=PLUGIN_DIR):
    """Existing interpreters to try when none is configured, best first, without repeats."""
    candidates = [venv_python(plugin_dir), qgis_python(), shutil.which("python3"), shutil.which("python")]
    found = []
    for path in candidates:
        if path and os.path.isfile(path) and os.path.realpath(path) not in map(os.path.realpath, found):
            found.append(path)
    return found


def probe_torch(python):
    """(torch version, None) when `python` imports torch, else (None, the reason)."""
    if not os.path.isfile(python):
        return None, f"{python} does not exist"
    return _probe_cached(os.path.abspath(python), os.path.getmtime(python))


@lru_cache(maxsize=16)
def _probe_cached(python, _mtime):
    # The modification time is part of the key so that reinstalling the interpreter is noticed.
    command = [python, "-c", "import torch; print(torch.__version__)"]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            env=worker_environment(os.environ),
            **no_console_window(),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"{python} could not be run: {error}"
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        return None, f"{python} cannot import torch ({last_line})"
    return done.stdout.strip().splitlines()[-1], None


def find_torch_python(setting="", environ=None, plugin_dir=PLUGIN_DIR):
    environ = os.environ if environ is None else environ
    for source, value in (
        (f"environment variable {ENV_VARIABLE}", environ.get(ENV_VARIABLE, "")),
        ("provider setting", setting or ""),
    ):
        if value.strip():
            return _configured(value.strip(), source)
    return _discovered(plugin_dir)


def _configured(python, source):
    version, problem = probe_torch(python)
    if problem:
        problem = (
            f"The torch interpreter from the {source} is unusable: {problem}. "
            f"Install torch with:\n{python} {INSTALL_TORCH}"
        )
    return TorchPython(python, version, source, problem)


def _discovered(plugin_dir):
    tried = []
    for python in candidate_pythons(plugin_dir):
        version, problem = probe_torch(python)
        if version:
            return TorchPython(python, version, "discovered")
        tried.append(problem)
    problem = (
        "No Python interpreter with torch was found"
        + (" (tried: " + "; ".join(tried) + ")" if tried else "")
        + f". Install torch into a Python 3 interpreter (<python> {INSTALL_TORCH}) and name it under "
        f"Settings > Options > Processing > Providers > InSAR Subsidence Mapper, or in the "
        f"environment variable {ENV_VARIABLE}."
    )
    return TorchPython(None, None, "discovered", problem)
