"""Running one algorithm through qgis_process in its own process, for the benchmarks: time and
the peak memory of that process, in a throw-away QGIS profile with the plugin enabled."""

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_MEASURE = (
    "import resource, subprocess, sys, json; "
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "print(json.dumps([done.returncode, done.stdout[-5000:] + done.stderr[-3000:], "
    "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))"
)


def environment(**extra):
    profile = tempfile.mkdtemp(prefix="bench-profile-")
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        QGIS_PLUGINPATH=str(REPO / "build" / "pluginpath"),
        QGIS_CUSTOM_CONFIG_PATH=profile,
        PYTHONPATH=sysconfig.get_paths()["purelib"],
        **extra,
    )
    subprocess.run(
        ["qgis_process.bin", "plugins", "enable", "insar_subsidence"], env=env, capture_output=True, check=True
    )
    return env


def run(algorithm, parameters, env):
    """(seconds, peak MB, output text) of `qgis_process.bin run algorithm -- KEY=value …`; a
    list value is passed as KEY=item once per item."""
    pairs = [
        (key, item) for key, value in parameters.items() for item in (value if isinstance(value, list) else [value])
    ]
    command = ["qgis_process.bin", "run", algorithm, "--", *(f"{key}={value}" for key, value in pairs)]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command], env=env, capture_output=True, text=True, check=True
    )
    seconds = time.perf_counter() - start
    code, output, peak = json.loads(done.stdout)
    if code:
        sys.exit(output)
    return seconds, peak, output
