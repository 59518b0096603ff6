"""Starting the training worker in the torch interpreter and following it: the command line (a
pure function, tested as data), and a runner that streams its JSON progress lines, kills it on
cancel, reports its last error lines when it fails and its warnings when it succeeds."""

import collections
import json
import os
import queue
import re
import subprocess
import threading

from ..core.dependencies import no_console_window
from .interpreter import PLUGIN_DIR, worker_environment
from .recipe import STEPS

DEVICES = ("auto", "cpu", "cuda")  # the DEVICE enum's order
PACKAGE = __name__.split(".")[0]  # the plugin's package name, whatever its folder is called
ERROR_LINES = 12  # of the worker's stderr, quoted when it fails
POLL_S = 0.2  # how often a waiting run looks at the cancel flag
# A line of Python's warnings module ("file.py:12: UserWarning: text"), torch's included.
WARNING_LINE = re.compile(r":\d+: \w*Warning: ")
MAX_WARNINGS = 50  # distinct warning lines passed on, at most


def worker_command(
    python,
    dataset,
    output_dir,
    architecture,
    epochs,
    batch_size,
    learning_rate,
    patience,
    seed,
    device,
    members=1,
    recipe="adaptive",
    steps=STEPS,
    stop_after=0,
):
    """The worker's command line; 0 for epochs, batch_size or learning_rate: the recipe's; 0 for
    stop_after: the plan's last epoch."""
    return [
        python,
        "-u",
        "-m",
        f"{PACKAGE}.models.worker",
        "--dataset",
        dataset,
        "--output-dir",
        output_dir,
        "--architecture",
        architecture,
        "--recipe",
        recipe,
        "--epochs",
        str(epochs),
        "--steps",
        str(steps),
        "--batch-size",
        str(batch_size),
        "--learning-rate",
        repr(float(learning_rate)),
        "--patience",
        str(patience),
        "--seed",
        str(seed),
        "--device",
        device,
        "--members",
        str(members),
        "--stop-after",
        str(stop_after),
    ]


def worker_env(environ, plugin_dir=PLUGIN_DIR):
    """The worker's environment: QGIS's own Python variables removed, the plugin's parent folder
    as the only PYTHONPATH (so `-m <plugin>.models.worker` imports this very plugin)."""
    env = worker_environment(environ)
    env["PYTHONPATH"] = os.path.dirname(plugin_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerFailedError(Exception):
    pass


def run(command, env, on_event, cancelled):
    """Run the worker; on_event(dict) for each JSON line it prints, and once it has succeeded
    {"event": "warning", "text": line} for each distinct warning line of its stderr. Raises
    InterruptedError (after killing it) when cancelled() turns true, WorkerFailedError with its
    last error lines when it exits with an error."""
    # As a context manager, Popen closes the pipes and waits for the worker however this ends.
    with subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        **no_console_window(),
    ) as process:
        lines = queue.Queue()
        errors = collections.deque(maxlen=ERROR_LINES)
        warnings = {}  # distinct warning lines, in order (a dict: insertion-ordered)

        def keep_error_line(line):
            errors.append(line)
            if WARNING_LINE.search(line) and len(warnings) < MAX_WARNINGS:
                warnings[line] = None

        readers = [
            threading.Thread(target=_read, args=(process.stdout, lines.put), daemon=True),
            threading.Thread(target=_read, args=(process.stderr, keep_error_line), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            while True:
                try:
                    line = lines.get(timeout=POLL_S)
                except queue.Empty:
                    line = None
                if cancelled():
                    raise InterruptedError
                if line is not None:
                    _dispatch(line, on_event)
                elif process.poll() is not None and not readers[0].is_alive():
                    break
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            for reader in readers:
                reader.join()  # the pipes end with the worker: the readers stop before they close
        while not lines.empty():
            _dispatch(lines.get(), on_event)
    if process.returncode != 0:
        raise WorkerFailedError(_failure(process.returncode, list(errors)))
    for line in warnings:
        on_event({"event": "warning", "text": line})


def _read(stream, put):
    for line in stream:
        put(line.rstrip("\n"))


def _dispatch(line, on_event):
    try:
        event = json.loads(line)
    except ValueError:
        event = {"event": "output", "text": line}  # e.g. a library's warning on stdout
    on_event(event if isinstance(event, dict) else {"event": "output", "text": line})


def _failure(code, errors):
    user = [line[len("ERROR: ") :] for line in errors if line.startswith("ERROR: ")]
    if user:
        return user[-1]
    return f"The training worker failed (exit code {code}). Its last error lines:\n" + "\n".join(errors)
