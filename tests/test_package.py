"""`make package` builds a zip that the QGIS plugin manager can install: the plugin folder,
without tests and development files, loadable by QGIS from where it is unpacked."""

import configparser
import subprocess
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    build = tmp_path_factory.mktemp("build")
    done = subprocess.run(["make", "-s", "package", f"BUILD={build}"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return build / "insar_subsidence.zip"


def test_zip_holds_the_plugin_folder_and_no_development_files(package):
    names = zipfile.ZipFile(package).namelist()
    assert all(name.startswith("insar_subsidence/") for name in names)
    for required in (
        "metadata.txt",
        "__init__.py",
        "plugin.py",
        "LICENSE",
        "algorithms/provider.py",
        "resources/icon.svg",
    ):
        assert f"insar_subsidence/{required}" in names
    for excluded in ("tests/", "tools/", ".ci/", "Makefile", "pytest.ini", "requirements-dev.txt", ".venv/"):
        assert not any(name.startswith(f"insar_subsidence/{excluded}") for name in names), excluded


def test_zip_metadata_is_readable(package):
    metadata = configparser.ConfigParser()
    metadata.read_string(zipfile.ZipFile(package).read("insar_subsidence/metadata.txt").decode())
    assert metadata["general"]["hasProcessingProvider"] == "yes"


def test_unpacked_zip_loads_in_qgis(package, qgis_process, tmp_path):
    plugins = tmp_path / "plugins"
    zipfile.ZipFile(package).extractall(plugins)
    done = qgis_process("list", plugin_path=plugins)
    assert done.returncode == 0, done.stderr
    assert "subsidence:checksetup" in done.stdout
