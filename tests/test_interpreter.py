"""Choosing the Python that runs torch: configured first, discovered otherwise, never assumed."""

import os

import pytest

from insar_subsidence.models import interpreter
from insar_subsidence.models.interpreter import ENV_VARIABLE, find_torch_python, probe_torch


def fake_python(folder, name, torch_version=None, script=None):
    """An executable that answers the torch probe like a Python with (or without) torch."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if script is None:
        script = (
            f"echo {torch_version}"
            if torch_version
            else "echo \"ModuleNotFoundError: No module named 'torch'\" >&2; exit 1"
        )
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


def test_environment_variable_wins_over_setting(tmp_path):
    from_env = fake_python(tmp_path, "env-python", "2.1.0")
    from_setting = fake_python(tmp_path, "setting-python", "2.2.0")
    chosen = find_torch_python(from_setting, environ={ENV_VARIABLE: from_env})
    assert (chosen.path, chosen.torch_version, chosen.problem) == (from_env, "2.1.0", None)
    assert ENV_VARIABLE in chosen.source


def test_setting_is_used_when_the_variable_is_blank(tmp_path):
    from_setting = fake_python(tmp_path, "setting-python", "2.2.0")
    chosen = find_torch_python(from_setting, environ={ENV_VARIABLE: "  "})
    assert (chosen.path, chosen.torch_version, chosen.source) == (from_setting, "2.2.0", "provider setting")


def test_configured_python_without_torch_is_reported_not_replaced(tmp_path):
    without_torch = fake_python(tmp_path, "python-without-torch")
    chosen = find_torch_python(without_torch, environ={}, plugin_dir=str(tmp_path))
    assert chosen.path == without_torch and chosen.torch_version is None
    assert "No module named 'torch'" in chosen.problem
    assert f"{without_torch} -m pip install torch" in chosen.problem


def test_configured_python_that_does_not_exist(tmp_path):
    chosen = find_torch_python(str(tmp_path / "nowhere" / "python"), environ={})
    assert "does not exist" in chosen.problem


def test_discovery_prefers_the_plugin_venv(tmp_path):
    venv = fake_python(tmp_path, ".venv/bin/python", "9.9.9")
    chosen = find_torch_python("", environ={}, plugin_dir=str(tmp_path))
    assert (chosen.path, chosen.torch_version, chosen.source, chosen.problem) == (venv, "9.9.9", "discovered", None)


def test_discovery_finds_the_real_torch_of_the_development_venv():
    torch = pytest.importorskip("torch")  # the venv made by `make setup` has it
    chosen = find_torch_python("", environ={})
    assert chosen.problem is None
    assert chosen.torch_version == torch.__version__


def test_discovery_without_any_torch_lists_what_it_tried(tmp_path, monkeypatch):
    without_torch = fake_python(tmp_path, "python3", None)
    monkeypatch.setattr(interpreter, "candidate_pythons", lambda plugin_dir: [without_torch])
    chosen = find_torch_python("", environ={})
    assert chosen.path is None
    assert "No Python interpreter with torch" in chosen.problem
    assert without_torch in chosen.problem and ENV_VARIABLE in chosen.problem


def test_candidates_exist_and_do_not_repeat(tmp_path):
    fake_python(tmp_path, ".venv/bin/python", "1.0")
    candidates = interpreter.candidate_pythons(str(tmp_path))
    assert candidates[0] == str(tmp_path / ".venv" / "bin" / "python")
    assert all(os.path.isfile(path) for path in candidates)
    real = [os.path.realpath(path) for path in candidates]
    assert len(real) == len(set(real))


def test_probe_notices_a_reinstalled_interpreter(tmp_path):
    python = fake_python(tmp_path, "python", "1.0")
    assert probe_torch(python) == ("1.0", None)
    fake_python(tmp_path, "python", "2.0")
    stat = os.stat(python)
    os.utime(python, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert probe_torch(python) == ("2.0", None)


def test_probe_does_not_pass_qgis_python_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/qgis/python")
    monkeypatch.setenv("PYTHONHOME", "/qgis")
    python = fake_python(tmp_path, "python", script='echo "${PYTHONPATH:-unset}-${PYTHONHOME:-unset}"')
    assert probe_torch(python) == ("unset-unset", None)


def test_probe_opens_no_console_window_on_windows(tmp_path, monkeypatch):
    """From the QGIS desktop on Windows, each probe would otherwise flash a console window."""
    import subprocess
    import sys

    python = fake_python(tmp_path, "python", "3.0")
    calls = []

    def run(command, **options):
        calls.append(options)
        return subprocess.CompletedProcess(command, 0, stdout="3.0\n", stderr="")

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(subprocess, "CREATE_NO_WINDOW", 0x08000000, raising=False)
    monkeypatch.setattr(interpreter.subprocess, "run", run)
    interpreter._probe_cached.cache_clear()
    assert probe_torch(python) == ("3.0", None)
    interpreter._probe_cached.cache_clear()  # the fake answer must not outlive the test
    assert calls[0]["creationflags"] == 0x08000000
