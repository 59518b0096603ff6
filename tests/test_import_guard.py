"""core/ holds the numeric work and must run without QGIS, Qt or GDAL's Python bindings."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("qgis", "PyQt4", "PyQt5", "PyQt6", "sip", "osgeo", "processing")


def forbidden_imports(source):
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        found += [name for name in names if name.split(".")[0] in FORBIDDEN]
    return found


def test_core_imports_no_qgis_qt_or_gdal():
    files = sorted((REPO / "core").rglob("*.py"))
    assert files
    offenders = {str(f.relative_to(REPO)): forbidden_imports(f.read_text()) for f in files}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_guard_catches_each_form_of_import():
    source = "import os\nimport qgis.core\nfrom osgeo import gdal\nfrom .x import y\ndef f():\n    from PyQt5 import QtCore\n"
    assert forbidden_imports(source) == ["qgis.core", "osgeo", "PyQt5"]
