"""Qt 6 readiness, read from the source of the plugin, its tools and its tests:
- Qt is imported through qgis.PyQt only, which QGIS maps to PyQt5 or PyQt6;
- Qt's enums are written scoped (Qt.AspectRatioMode.KeepAspectRatio), the only form PyQt6 knows;
- no QVariant.Type member (QVariant.Double …): Qt 6 removed QVariant.Type, and QgsField takes a
  QMetaType.Type there (layers.new_fields builds fields without either).
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIRECT_QT = ("PyQt5", "PyQt6", "sip")


def python_files():
    return sorted(p for p in REPO.rglob("*.py") if not {".venv", "build", ".git"} & set(p.relative_to(REPO).parts))


def qt6_problems(source):
    """(line, text) of each Qt-5-only construct in source."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            problems += [(node.lineno, f"import {n}") for n in names if n.split(".")[0] in DIRECT_QT]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            scoped = isinstance(parents.get(node), ast.Attribute) and parents[node].value is node
            if node.value.id == "Qt" and not scoped:
                problems.append((node.lineno, f"Qt.{node.attr} unscoped"))
            elif node.value.id == "QVariant":
                problems.append((node.lineno, f"QVariant.{node.attr}"))
    return problems


def test_no_qt5_only_construct():
    found = [(str(p.relative_to(REPO)), *problem) for p in python_files() for problem in qt6_problems(p.read_text())]
    assert found == []


def test_the_check_catches_each_planted_construct():
    planted = (
        "from PyQt5.QtCore import Qt\n"
        "import sip\n"
        "a = Qt.KeepAspectRatio\n"
        "b = QVariant.Double\n"
        "c = Qt.AspectRatioMode.KeepAspectRatio\n"  # scoped: fine
        "d = isinstance(x, QVariant)\n"  # the class itself: fine
    )
    assert [line for line, _ in qt6_problems(planted)] == [1, 2, 3, 4]
