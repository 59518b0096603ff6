"""Training throughput of both architectures (9 bands, 30 x 30 patches, batch 128, CPU): samples
per second of a training epoch through the worker's data path (a memory-mapped dataset file,
batches gathered by a second thread), against the bare forward + backward + Adam step of the
same model on a batch already in memory. Target: epoch / bare >= 0.8 (the data path is not the
bottleneck)."""

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "build" / "pluginpath"))
from insar_subsidence.core import dataset
from insar_subsidence.models import cnn, worker

BANDS, SIZE, BATCH = 9, 30, 128
SAMPLES = {"dense": 8192, "paper": 512}


def write_dataset(path, n):
    rng = np.random.default_rng(0)
    patches = rng.normal(0, 1, (n, BANDS, SIZE, SIZE)).astype(np.float32)
    arrays = {
        "targets": rng.normal(0, 10, n).astype(np.float32),
        "x": np.zeros(n),
        "y": np.zeros(n),
        "pid": np.array([str(i) for i in range(n)]),
        "split": np.zeros(n, np.int8),  # all training: the epoch is the training pass alone
        "band_names": np.array([f"b{b}" for b in range(BANDS)]),
        "band_mean": np.zeros(BANDS),
        "band_std": np.ones(BANDS),
        "patch_size": SIZE,
        "pixel_size": np.array([10.0, 10.0]),
        "crs": "",
        "target_field": "t",
        "target_units": "mm",
    }
    dataset.write(path, patches, np.arange(n), arrays)


def bare_throughput(name, seconds=8.0):
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)  # as the worker trains
    network = cnn.build(name, BANDS, SIZE)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-4)
    inputs, wanted = torch.randn(BATCH, BANDS, SIZE, SIZE), torch.randn(BATCH)

    def step():
        optimiser.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(network(inputs)[:, 0], wanted).backward()
        optimiser.step()

    step()  # warm-up
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    return steps * BATCH / (time.perf_counter() - start)


def epoch_throughput(name, path, n, epochs):
    history = []
    worker.train(
        dataset.open_dataset(path),
        name,
        epochs,
        BATCH,
        1e-4,
        0,
        0,
        worker.choose_device("cpu"),
        progress=lambda *a, **k: None if a[0] != "epoch" else history.append(k),
    )
    return n / np.mean([entry["train_seconds"] for entry in history])


def main():
    folder = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        print(
            f"CPU, {torch.get_num_threads()} threads; {BANDS} bands, {SIZE} x {SIZE} patches, batch {BATCH}", flush=True
        )
        for name, n in SAMPLES.items():
            path = folder / f"{name}.npz"
            write_dataset(path, n)
            # Interleaved, twice each: this machine's speed drifts by tens of percent over minutes.
            bare, epoch = [], []
            for _ in range(2):
                bare.append(bare_throughput(name))
                epoch.append(epoch_throughput(name, path, n, epochs=1))
            bare, epoch = float(np.mean(bare)), float(np.mean(epoch))
            print(
                f"{name}: training epoch {epoch:.0f} samples/s ({n} memory-mapped patches); bare forward+backward "
                f"{bare:.0f} samples/s; ratio {epoch / bare:.2f} (target >= 0.8)",
                flush=True,
            )
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
