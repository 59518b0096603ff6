"""The plugin as users script it: qgis_process.bin with QGIS_PLUGINPATH, in a profile of its own."""

import json
import os
import subprocess

import numpy
import pytest
from conftest import TORCH_PYTHON
from qgis.core import QgsApplication, QgsCoordinateTransformContext, QgsVectorFileWriter, QgsVectorLayer

from insar_subsidence.algorithms.provider import ALGORITHMS


def parse(done):
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout)


def test_list_shows_the_provider_and_its_algorithms(qgis_process):
    providers = parse(qgis_process("--json", "list"))["providers"]
    assert providers["subsidence"]["name"] == "InSAR Subsidence Mapper"
    assert sorted(providers["subsidence"]["algorithms"]) == sorted(f"subsidence:{a().name()}" for a in ALGORITHMS)


def test_checksetup_runs_end_to_end(qgis_process):
    results = parse(qgis_process("--json", "run", "subsidence:checksetup"))["results"]
    assert results["MISSING_PACKAGES"] == ""
    version = subprocess.run(
        [TORCH_PYTHON, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True, check=True
    )
    assert results["TORCH_VERSION"] == version.stdout.strip()


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


def as_argument(value, folder, name):
    """A sample parameter as qgis_process takes it: a memory layer saved to a file first."""
    if isinstance(value, QgsVectorLayer):
        path = str(folder / f"{name}.gpkg")
        options = QgsVectorFileWriter.SaveVectorOptions()
        error = QgsVectorFileWriter.writeAsVectorFormatV3(value, path, QgsCoordinateTransformContext(), options)
        assert error[0] == QgsVectorFileWriter.NoError, error
        return path
    return str(value)


@pytest.mark.parametrize("algorithm_id", [f"subsidence:{algorithm().name()}" for algorithm in ALGORITHMS])
def test_secondary_outputs_can_be_left_out(plugin, qgis_process, sample_parameters, tmp_path, algorithm_id):
    """Each algorithm through qgis_process with the sample inputs and only its required output (or its
    first, where all are optional): no secondary output (variance, report, uncertainty…) is demanded,
    and none is written."""
    algorithm = QgsApplication.processingRegistry().algorithmById(algorithm_id)
    outputs = {parameter.name(): parameter for parameter in algorithm.destinationParameterDefinitions()}
    required = [name for name, parameter in outputs.items() if not parameter.flags() & parameter.FlagOptional]
    required = required or list(outputs)[:1]  # where every output is optional (terrain factors), the first
    arguments = []
    for name, value in sample_parameters[algorithm_id].items():
        if name in outputs and name not in required:
            continue
        for item in value if isinstance(value, list) else [value]:
            arguments.append(f"{name}={as_argument(item, tmp_path, name)}")
    written_before = set(tmp_path.rglob("*"))
    results = parse(qgis_process("--json", "run", algorithm_id, "--", *arguments))["results"]
    for name in required:
        assert os.path.exists(results[name])
    written = {str(path) for path in set(tmp_path.rglob("*")) - written_before}
    left_out = {str(sample_parameters[algorithm_id][name]) for name in outputs if name not in required}
    assert written & left_out == set()
