"""Packages the plugin needs beyond what QGIS ships, and the exact command that installs them.

The numeric modules import these lazily (inside functions), so a missing package disables only
the algorithms that need it; each algorithm declares its modules and asks `missing_message`.
"""

import importlib
import os
import subprocess
import sys
import sysconfig

# Import name -> distribution name on PyPI, for what algorithms import at run time (their REQUIRES).
# PyKrige is not among them: only the tests compare the kriging with it.
PIP_NAMES = {
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
    "skimage": "scikit-image",
}

# Import name -> distribution name of what only some runs import, asked for by a setting: the
# Dask scheduler (core.cluster). pip brings dask with distributed.
OPTIONAL_PIP_NAMES = {"distributed": "distributed"}

# QGIS's own numeric stack: pinned at the installed versions in the install command, so pip picks
# package versions that work with them instead of upgrading them (a numpy 2 breaks GDAL's bindings).
PROTECTED = ("numpy", "scipy")


def no_console_window():
    """Keyword arguments for subprocess.run/Popen that keep Windows from opening a console
    window for a child process started from the QGIS desktop (nothing elsewhere)."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NO_WINDOW}
    return {}


def import_error(module):
    """Why `module` cannot be imported, or None when it can."""
    try:
        importlib.import_module(module)
    except Exception as error:  # a broken install can raise more than ImportError
        return f"{type(error).__name__}: {error}"
    return None


def qgis_python():
    """The interpreter of the running Python's installation.

    Embedded in QGIS, `sys.executable` is QGIS itself (Windows, macOS) or whatever `python3` comes
    first on the PATH (Linux), so the installation's own folder is asked first.
    """
    major, minor = sys.version_info[:2]
    if sys.platform == "win32":
        candidates = [os.path.join(sys.exec_prefix, "python.exe")]
    else:
        folder = os.path.join(sys.exec_prefix, "bin")
        candidates = [os.path.join(folder, f"python{major}.{minor}"), os.path.join(folder, f"python{major}")]
    if os.path.basename(sys.executable).lower().startswith("python"):
        candidates.append(sys.executable)
    return next((path for path in candidates if os.path.isfile(path)), "python3")


def _externally_managed():
    """True for a distribution's Python (PEP 668), where pip refuses plain installs."""
    in_venv = sys.prefix != sys.base_prefix
    marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
    return not in_venv and os.path.exists(marker)


def _installed_version(module):
    try:
        return importlib.import_module(module).__version__
    except Exception:
        return None


def install_command(modules):
    packages = [{**PIP_NAMES, **OPTIONAL_PIP_NAMES}.get(module, module) for module in modules]
    pins = [f"{name}=={version}" for name in PROTECTED if (version := _installed_version(name))]
    flags = ["--user", "--break-system-packages"] if _externally_managed() else []
    python = qgis_python()
    quoted = f'"{python}"' if " " in python else python
    return " ".join([quoted, "-m", "pip", "install", *flags, *packages, *pins])


def missing_message(modules):
    """A message that names the missing packages and the command to run, or None if all import."""
    problems = {module: import_error(module) for module in modules}
    missing = [module for module, problem in problems.items() if problem is not None]
    if not missing:
        return None
    reasons = "; ".join(f"{module} ({problems[module]})" for module in missing)
    return (
        f"This algorithm needs Python packages that QGIS's Python cannot import: {reasons}. "
        f"Install them with:\n{install_command(missing)}\nthen restart QGIS."
    )
