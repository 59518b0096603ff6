"""Who may import what, read from the source (every import statement, relative ones resolved,
inside functions too):
- core/ holds the numeric work: no QGIS, Qt, GDAL's bindings or torch, and nothing of algorithms/
  or models/;
- models/ runs in the torch interpreter too: no QGIS, Qt or GDAL, nothing of algorithms/, and
  torch only in the worker and the network it trains;
- algorithms/ runs inside QGIS: never torch, the worker or the network;
- an algorithm's module imports no other algorithm's module: what two share lives beside them
  (base.py, kriging_base.py, layers.py) or in core/.
"""

import ast
import importlib
import inspect
from pathlib import Path, PurePosixPath

import pytest
from qgis.core import QgsProcessingAlgorithm

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "insar_subsidence"
QGIS_QT_GDAL = ("qgis", "PyQt4", "PyQt5", "PyQt6", "sip", "osgeo", "processing")
TORCH_FILES = ("models/worker.py", "models/cnn.py")
FORBIDDEN = {
    "core": (*QGIS_QT_GDAL, "torch", f"{PACKAGE}.algorithms", f"{PACKAGE}.models"),
    "models": (*QGIS_QT_GDAL, f"{PACKAGE}.algorithms"),
    "algorithms": ("torch", f"{PACKAGE}.models.worker", f"{PACKAGE}.models.cnn"),
}


def module_name(path):
    """The dotted name of the plugin's module at `path` (relative to the repository)."""
    parts = PurePosixPath(path).with_suffix("").parts
    return ".".join((PACKAGE, *(parts[:-1] if parts[-1] == "__init__" else parts)))


def is_plugin_module(name):
    path = REPO.joinpath(*name.split(".")[1:])
    return name.startswith(PACKAGE + ".") and (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file())


def imported_modules(source, path):
    """Every module the source of the plugin's file `path` imports, as absolute dotted names;
    `from package import name` gives `package.name` when that is a module (always for a relative
    `from . import name`), else `package`."""
    package = module_name(path) if PurePosixPath(path).name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                if node.level > len(parts):
                    raise ValueError(f"{path}: a relative import beyond the top-level package")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            if node.module is not None:
                submodules = [name for name in submodules if is_plugin_module(name)]
            found += submodules if len(submodules) == len(node.names) else [base, *submodules]
    return found


def is_within(module, prefix):
    return module == prefix or module.startswith(prefix + ".")


def forbidden_imports(source, path):
    """The imports of `path`'s source that its folder's rules forbid."""
    path = PurePosixPath(path)
    forbidden = FORBIDDEN.get(path.parts[0], ())
    if path.parts[0] == "models" and str(path) not in TORCH_FILES:
        forbidden += ("torch",)
    return [module for module in imported_modules(source, path) if any(is_within(module, f) for f in forbidden)]


def plugin_files(folder):
    files = sorted((REPO / folder).glob("*.py"))
    assert files, folder
    return {f"{folder}/{file.name}": file.read_text(encoding="utf-8") for file in files}


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_each_folder_imports_only_what_it_may(folder):
    offenders = {path: forbidden_imports(source, path) for path, source in plugin_files(folder).items()}
    assert {path: found for path, found in offenders.items() if found} == {}


def test_torch_is_imported_by_the_worker_and_the_network():
    # So that the torch rule is not met merely because nothing matched.
    importers = [
        path
        for path, source in plugin_files("models").items()
        if any(is_within(module, "torch") for module in imported_modules(source, path))
    ]
    assert importers == sorted(TORCH_FILES)


def algorithm_modules():
    """The modules of algorithms/ that define an algorithm (a QgsProcessingAlgorithm with its own
    name()), not the base classes they share."""
    found = set()
    for path in plugin_files("algorithms"):
        module = importlib.import_module(module_name(path))
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, QgsProcessingAlgorithm) and "name" in vars(cls):
                found.add(module.__name__)
    return found


def imports_of_other_algorithms(source, path, algorithms):
    own = module_name(path)
    return sorted(
        {
            other
            for module in imported_modules(source, path)
            for other in algorithms
            if other != own and is_within(module, other)
        }
    )


def test_no_algorithm_imports_another_algorithm(plugin):
    from insar_subsidence.algorithms.provider import ALGORITHMS

    algorithms = algorithm_modules()
    assert algorithms == {cls.__module__ for cls in ALGORITHMS}  # every registered algorithm, and only those
    offenders = {
        path: imports_of_other_algorithms(source, path, algorithms)
        for path, source in plugin_files("algorithms").items()
        if module_name(path) in algorithms
    }
    assert {path: found for path, found in offenders.items() if found} == {}


# The checks themselves, on planted imports.

KRIGE = f"{PACKAGE}.algorithms.krige"


def test_relative_and_absolute_imports_are_resolved():
    source = (
        "import os, numpy.linalg\n"
        "from qgis.core import QgsRasterLayer\n"
        "from . import report\n"
        "from .grid import Grid\n"
        "from ..algorithms.layers import open_raster\n"
        "from .. import models\n"
        "def later():\n"
        "    from osgeo import gdal\n"
    )
    assert imported_modules(source, "core/kriging.py") == [
        "os",
        "numpy.linalg",
        "qgis.core",
        f"{PACKAGE}.core.report",
        f"{PACKAGE}.core.grid",
        f"{PACKAGE}.algorithms.layers",
        f"{PACKAGE}.models",
        "osgeo",
    ]
    assert imported_modules("from . import worker\n", "models/__init__.py") == [f"{PACKAGE}.models.worker"]


def test_core_rules_catch_each_planted_import():
    source = (
        "import numpy\n"
        "import qgis.core\n"
        "from qgis.PyQt import QtCore\n"
        "from osgeo import gdal\n"
        "from ..algorithms.layers import read_band\n"
        "from ..models import recipe\n"
        "from .grid import Grid\n"
        "def train():\n"
        "    import torch\n"
    )
    assert forbidden_imports(source, "core/planted.py") == [
        "qgis.core",
        "qgis.PyQt",
        "osgeo",
        f"{PACKAGE}.algorithms.layers",
        f"{PACKAGE}.models.recipe",
        "torch",
    ]


def test_models_rules_allow_torch_only_in_the_worker_and_the_network():
    source = "import torch\nfrom torch import nn\nfrom ..core import transforms\nfrom .recipe import plan\n"
    assert forbidden_imports(source, "models/worker.py") == []
    assert forbidden_imports(source, "models/cnn.py") == []
    assert forbidden_imports(source, "models/architecture.py") == ["torch", "torch"]
    assert forbidden_imports("from qgis.core import Qgis\nfrom ..algorithms import base\n", "models/export.py") == [
        "qgis.core",
        f"{PACKAGE}.algorithms.base",
    ]


def test_algorithms_rules_keep_torch_out_of_qgis():
    source = "from ..models.worker import train\nfrom ..models import cnn\nfrom ..models.launch import DEVICES\n"
    assert forbidden_imports(source, "algorithms/traincnn.py") == [
        f"{PACKAGE}.models.worker",
        f"{PACKAGE}.models.cnn",
    ]


def test_an_algorithm_importing_another_is_caught():
    algorithms = {KRIGE, f"{PACKAGE}.algorithms.krigeresiduals"}
    for source in (
        "from .krige import Krige\n",
        "from . import krige\n",
        f"from {KRIGE} import Krige\n",
        f"import {KRIGE}\n",
    ):
        assert imports_of_other_algorithms(source, "algorithms/krigeresiduals.py", algorithms) == [KRIGE], source
    shared = "from .kriging_base import KrigingAlgorithm\nfrom .layers import open_raster\nfrom .krige_tools import x\n"
    assert imports_of_other_algorithms(shared, "algorithms/krigeresiduals.py", algorithms) == []
