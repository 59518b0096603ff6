"""A missing optional package disables only the algorithms that need it, with the exact command
that installs it; the other algorithms still run."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy
import pytest
import scipy
from qgis import processing
from qgis.core import QgsProcessingException, QgsProcessingOutputString

from insar_subsidence.algorithms.base import SubsidenceAlgorithm
from insar_subsidence.algorithms.provider import ALGORITHMS
from insar_subsidence.core import dependencies
from test_import_guard import REPO, imported_modules, plugin_files


class NeedsOnnxruntime(SubsidenceAlgorithm):
    """Stands for any algorithm that declares onnxruntime (e.g. prediction)."""

    REQUIRES = ("onnxruntime",)

    def name(self):
        return "needsonnxruntime"

    def displayName(self):
        return "Needs onnxruntime"

    def initAlgorithm(self, config=None):
        self.addOutput(QgsProcessingOutputString("RAN", "Ran"))

    def processAlgorithm(self, parameters, context, feedback):
        import onnxruntime

        return {"RAN": onnxruntime.__name__}


@pytest.fixture
def without_onnxruntime(monkeypatch):
    # What a QGIS without onnxruntime sees: importing it fails.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)


# Where the tests run on a distribution's Python (make test-qgis), pip needs these flags.
DISTRIBUTION_FLAGS = ("--user", "--break-system-packages")


def expected_command(*packages, flags=None):
    """The install command for this interpreter: `flags` are the distribution's flags on a
    distribution's Python (marked EXTERNALLY-MANAGED, not a venv), none in a venv, unless given."""
    if flags is None:
        marker = Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED"
        flags = DISTRIBUTION_FLAGS if sys.prefix == sys.base_prefix and marker.exists() else ()
    pins = (f"numpy=={numpy.__version__}", f"scipy=={scipy.__version__}")
    return " ".join([dependencies.qgis_python(), "-m", "pip", "install", *flags, *packages, *pins])


def test_install_command_pins_qgis_numpy_and_scipy():
    assert dependencies.install_command(["onnxruntime", "skimage"]) == expected_command("onnxruntime", "scikit-image")


def test_install_command_uses_the_running_interpreter():
    python = dependencies.qgis_python()
    prefix = subprocess.run([python, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True)
    assert prefix.stdout.strip() == sys.prefix


def test_install_command_on_a_distribution_python(monkeypatch):
    # Debian's /usr/bin/python3 is marked EXTERNALLY-MANAGED: plain pip installs are refused there.
    monkeypatch.setattr(sys, "prefix", sys.base_prefix)
    monkeypatch.setattr(sys, "exec_prefix", sys.base_exec_prefix)
    if not dependencies._externally_managed():
        pytest.skip("this Python's installation is not marked EXTERNALLY-MANAGED")
    assert dependencies.install_command(["skimage"]) == expected_command("scikit-image", flags=DISTRIBUTION_FLAGS)


def test_message_is_none_when_everything_imports():
    assert dependencies.missing_message(tuple(dependencies.PIP_NAMES)) is None


def test_message_names_only_the_missing_package(without_onnxruntime):
    message = dependencies.missing_message(("onnxruntime", "skimage"))
    assert "onnxruntime" in message and "skimage" not in message and "scikit-image" not in message
    assert expected_command("onnxruntime") in message.splitlines()


def test_affected_algorithm_cannot_execute_and_says_what_to_install(plugin, without_onnxruntime):
    ok, message = NeedsOnnxruntime().canExecute()
    assert not ok
    assert expected_command("onnxruntime") in message.splitlines()


def test_affected_algorithm_fails_in_processing_run_with_the_command(plugin, without_onnxruntime, log_feedback):
    feedback = log_feedback()
    with pytest.raises(QgsProcessingException):
        processing.run(NeedsOnnxruntime(), {}, feedback=feedback)
    assert any(expected_command("onnxruntime") in line for line in feedback.lines)


def test_affected_algorithm_runs_when_the_package_is_there(plugin):
    assert processing.run(NeedsOnnxruntime(), {}) == {"RAN": "onnxruntime"}


def test_provider_algorithms_are_disabled_exactly_when_they_need_it(plugin, without_onnxruntime):
    for algorithm_class in ALGORITHMS:
        ok, message = algorithm_class().canExecute()
        needs = "onnxruntime" in algorithm_class.REQUIRES
        assert ok is not needs, algorithm_class.__name__
        assert (expected_command("onnxruntime") in message) is needs


def test_checksetup_still_runs_and_reports_the_missing_package(plugin, without_onnxruntime):
    results = processing.run("subsidence:checksetup", {})
    assert results["MISSING_PACKAGES"] == "onnxruntime"
    assert expected_command("onnxruntime") in results["REPORT"]


# What comes with QGIS (its Python bindings, GDAL's, Processing; numpy and scipy, pinned in the
# install command) and matplotlib, which the reports import and the Windows and macOS installers
# ship. torch runs in the worker's own interpreter (see test_import_guard).
NOT_INSTALLED_BY_THE_PLUGIN = {"qgis", "osgeo", "processing", "numpy", "scipy", "matplotlib", "torch"}


def test_pip_names_are_exactly_the_optional_packages_the_code_imports():
    """Every third-party module the plugin's code imports (inside functions too) is either shipped
    with QGIS or in PIP_NAMES, and PIP_NAMES asks for nothing the code does not import: PyKrige,
    which only the tests use, stays out of QGIS's Python."""
    imported = {
        module.split(".")[0]
        for folder in ("algorithms", "core", "models")
        for path, source in plugin_files(folder).items()
        for module in imported_modules(source, path)
    }
    third_party = imported - set(sys.stdlib_module_names) - {"insar_subsidence"} - NOT_INSTALLED_BY_THE_PLUGIN
    assert third_party == set(dependencies.PIP_NAMES) | set(dependencies.OPTIONAL_PIP_NAMES)


def test_every_package_is_required_by_an_algorithm_and_every_requirement_is_known():
    required = {module for algorithm_class in ALGORITHMS for module in algorithm_class.REQUIRES}
    assert required == set(dependencies.PIP_NAMES)


def test_requirements_txt_pins_each_package_qgis_needs():
    lines = (REPO / "requirements.txt").read_text().splitlines()
    pinned = {line.split("==")[0] for line in lines if line.strip() and not line.startswith("#")}
    assert pinned == set(dependencies.PIP_NAMES.values())
