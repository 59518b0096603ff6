"""The plugin as users script it: qgis_process.bin with QGIS_PLUGINPATH, in a fresh profile."""

import json
import os

import numpy

from insar_subsidence.algorithms.provider import ALGORITHMS


def parse(done):
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout)


def test_list_shows_the_provider_and_its_algorithms(qgis_process):
    providers = parse(qgis_process("--json", "list"))["providers"]
    assert providers["subsidence"]["name"] == "InSAR Subsidence Mapper"
    assert sorted(providers["subsidence"]["algorithms"]) == sorted(f"subsidence:{a().name()}" for a in ALGORITHMS)


def test_checksetup_runs_end_to_end(qgis_process):
    import torch

    results = parse(qgis_process("--json", "run", "subsidence:checksetup"))["results"]
    assert results["MISSING_PACKAGES"] == ""
    assert results["TORCH_VERSION"] == torch.__version__


def test_a_missing_package_is_reported_with_its_install_command(qgis_process, tmp_path):
    # Shadow the venv's onnxruntime with one that fails to import, as in a QGIS without it.
    broken = tmp_path / "shadow" / "onnxruntime"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('onnxruntime is not installed')\n")
    done = qgis_process("--json", "run", "subsidence:checksetup", pythonpath_first=broken.parent)
    results = parse(done)["results"]
    assert results["MISSING_PACKAGES"] == "onnxruntime"
    [command] = [line.split() for line in results["REPORT"].splitlines() if " -m pip install " in line]
    python, arguments = command[0], command[command.index("install") + 1 :]
    assert os.path.isfile(python)  # QGIS's own interpreter, not a guess
    assert [word for word in arguments if not word.startswith("-") and "==" not in word] == ["onnxruntime"]
    assert f"numpy=={numpy.__version__}" in arguments  # pip must not replace QGIS's numpy
