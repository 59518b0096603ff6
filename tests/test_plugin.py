"""The plugin loads as QGIS loads it and registers exactly its provider."""

import configparser
from pathlib import Path

from qgis.core import QgsApplication
from processing.core.ProcessingConfig import ProcessingConfig

REPO = Path(__file__).resolve().parents[1]


def test_provider_is_registered_with_its_algorithms(provider):
    from insar_subsidence.algorithms.provider import ALGORITHMS

    registered = QgsApplication.processingRegistry().providerById("subsidence")
    assert registered is provider
    assert registered.name() == "InSAR Subsidence Mapper"
    assert not registered.icon().isNull()
    assert sorted(a.id() for a in registered.algorithms()) == sorted(f"subsidence:{cls().name()}" for cls in ALGORITHMS)


def test_raster_outputs_are_geotiff_only(provider):
    assert provider.supportedOutputRasterLayerExtensions() == ["tif"]
    assert provider.defaultRasterFileExtension() == "tif"


def test_torch_setting_is_offered_under_the_provider(provider):
    from insar_subsidence.algorithms.settings import TORCH_PYTHON_SETTING

    setting = ProcessingConfig.settings[TORCH_PYTHON_SETTING]
    assert setting.group == provider.name()
    assert ProcessingConfig.getSetting(TORCH_PYTHON_SETTING) == ""


def test_initgui_does_not_register_twice_and_unload_leaves_no_trace(plugin):
    from insar_subsidence.algorithms.settings import TORCH_PYTHON_SETTING

    registry = QgsApplication.processingRegistry()
    try:
        plugin.initGui()  # QGIS desktop calls initGui after initProcessing
        assert [p.id() for p in registry.providers()].count("subsidence") == 1
        plugin.unload()
        assert registry.providerById("subsidence") is None
        assert TORCH_PYTHON_SETTING not in ProcessingConfig.settings
    finally:
        plugin.initGui()
    assert registry.providerById("subsidence") is not None


def test_metadata_declares_what_qgis_needs():
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "metadata.txt")
    general = metadata["general"]
    assert general["name"] == "InSAR Subsidence Mapper"
    assert general["qgisMinimumVersion"] == "3.22"
    # Only what is tested (README, "QGIS versions tested"): 3.22 to 3.44, all Qt 5.
    assert general["qgisMaximumVersion"] == "3.99"
    assert general["hasProcessingProvider"] == "yes"
    assert general["supportsQt6"] == "False"
    for key in ("description", "version", "author", "email", "about", "icon"):
        assert general[key].strip(), key
    assert (REPO / general["icon"]).is_file()
    from insar_subsidence.core.dependencies import PIP_NAMES

    for distribution in PIP_NAMES.values():
        assert distribution.lower() in general["about"].lower(), distribution


def test_qt_is_imported_only_through_qgis_pyqt():
    import re

    offenders = [
        str(path.relative_to(REPO))
        for path in REPO.glob("**/*.py")
        if ".venv" not in path.parts
        and "build" not in path.parts
        and re.search(r"^\s*(from|import)\s+PyQt[456]", path.read_text(), re.MULTILINE)
    ]
    assert offenders == []
