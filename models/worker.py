"""The training worker, run in the torch interpreter as `python -m <plugin>.models.worker`.

It reads a dataset written by subsidence:exportpatches, trains the CNN and writes into
--output-dir: `model.onnx` (raw drivers in, target units out, no metadata yet), `result.npz`
(every member's prediction for every sample, (N, members), the loss history, a check batch with torch's
outputs) — QGIS adds the metadata and checks ONNX Runtime against torch. Progress goes to stdout
as one JSON object per line; errors to stderr, the last line a message for the user.
"""

import argparse
import functools
import json
import os
import queue
import sys
import threading
import time
import warnings

import numpy as np
import torch

from ..core import transforms
from ..core.blas import available_cores
from ..core.dataset import open_dataset
from ..core.patches import band_statistics
from ..core.prediction import MODEL_OUTPUTS
from .architecture import ARCHITECTURES, check_patch_size
from .cnn import Deployed, build
from .launch import DEVICES
from .recipe import PATIENCE, RECIPES, STEPS, plan

CHECK_BATCH = 64  # patches on which QGIS compares ONNX Runtime with torch
REPORT_EVERY_S = 1.0  # progress within an epoch at most this often
PREFETCHED_BATCHES = 2
RECOMPUTE_PATCHES = 4096  # training patches the batch statistics are recomputed from, at most
RECOMPUTE_BATCH = 256


class UserError(Exception):
    """A problem with the inputs, reported as one line for the user."""


def parse(argv):
    parser = argparse.ArgumentParser(prog="worker", description=__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--architecture", choices=ARCHITECTURES, default="dense")
    parser.add_argument("--recipe", choices=RECIPES, default=RECIPES[0])
    parser.add_argument("--epochs", type=int, default=0, help="0: the recipe's")
    parser.add_argument(
        "--steps", type=int, default=STEPS, help="the adaptive recipe's budget in optimiser steps, when --epochs is 0"
    )
    parser.add_argument("--batch-size", type=int, default=0, help="0: the recipe's")
    parser.add_argument("--learning-rate", type=float, default=0.0, help="peak rate; 0: the recipe's")
    parser.add_argument(
        "--patience",
        type=int,
        default=PATIENCE,
        help="epochs after the warm-up without a better validation loss before stopping; 0: off",
    )
    parser.add_argument(
        "--stop-after",
        type=int,
        default=0,
        help="the last epoch to run, the plan's schedule unchanged; 0: the plan's last",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--members", type=int, default=1, help="ensemble members, trained from seeds seed, seed + 1, ..."
    )
    parser.add_argument("--device", choices=DEVICES, default="auto")
    return parser.parse_args(argv)


def emit(event, **values):
    print(json.dumps({"event": event, **values}), flush=True)


def choose_device(name):
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("DEVICE is cuda but torch sees no CUDA device; choose auto or cpu.")
    if name != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    torch.set_num_threads(available_cores())
    return torch.device("cpu")


def batches(patches, targets, order, batch_size):
    """Batches of (patches, targets) in `order`, gathered by a second thread while the previous
    batch trains, so reading the (memory-mapped) patches stays off the critical path."""
    ready = queue.Queue(PREFETCHED_BATCHES)

    def produce():
        for start in range(0, len(order), batch_size):
            chosen = np.sort(order[start : start + batch_size])  # sorted: sequential reads
            ready.put((torch.from_numpy(np.ascontiguousarray(patches[chosen])), torch.from_numpy(targets[chosen])))
        ready.put(None)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    while (batch := ready.get()) is not None:
        yield batch
    thread.join()


def predict(model, patches, index, device, batch_size=1024):
    """The deployed model's (len(index), members) predictions for patches[index]."""
    model.eval()
    out = np.empty((len(index), len(model.networks)), np.float32)
    with torch.no_grad():
        for start in range(0, len(index), batch_size):
            chosen = index[start : start + batch_size]
            out[start : start + len(chosen)] = (
                model(torch.from_numpy(np.asarray(patches[chosen])).to(device))[1].cpu().numpy()
            )
    return out


def train(
    data,
    architecture,
    epochs,
    batch_size,
    learning_rate,
    patience,
    seed,
    device,
    members=1,
    progress=emit,
    recipe=RECIPES[0],
    steps=STEPS,
    stop_after=0,
):
    """Train `members` networks on data (open_dataset's dict), member k from seed + k (its weights
    and the order of its batches), along recipe.plan(recipe, …), up to epoch stop_after if given;
    returns (the deployed ensemble with each member's best weights, the history: one dict per
    member and epoch, the plan, the bands' log scales)."""
    patches, split = data["patches"], data["split"]
    bands, patch_size = patches.shape[1], patches.shape[2]
    problem = check_patch_size(architecture, patch_size)
    if problem:
        raise UserError(problem)
    train_index, val_index = np.flatnonzero(split == 0), np.flatnonzero(split == 1)
    if len(train_index) < 2:
        raise UserError(f"The dataset has {len(train_index)} training patches; at least 2 are needed.")
    schedule = plan(recipe, len(train_index), epochs, batch_size, learning_rate, steps)
    progress("plan", **schedule._asdict())
    targets = data["targets"].astype(np.float32)
    target_mean, target_std = float(targets[train_index].mean()), float(targets[train_index].std()) or 1.0
    standardised = ((targets - target_mean) / target_std).astype(np.float32)
    scales = transforms.log_scales(patches, train_index, np.random.default_rng(seed))
    progress("transforms", bands=transforms.describe(data["band_names"], scales))
    band_mean, band_std = band_statistics(patches, train_index, transform=lambda block: transforms.apply(block, scales))
    deploy = lambda networks: Deployed(networks, scales, band_mean, band_std, target_mean, target_std).to(device)
    # The same seed gives the same model: torch's deterministic kernels, and oneDNN's (the CPU
    # convolutions) in its own deterministic mode, a separate switch.
    torch.use_deterministic_algorithms(True)
    torch.backends.mkldnn.deterministic = True
    networks, history = [], []
    for member in range(members):
        torch.manual_seed(seed + member)
        rng = np.random.default_rng(seed + member)
        model = deploy([build(architecture, bands, patch_size)])
        step = functools.partial(progress, member=member + 1, members=members)
        entries = _train_member(
            model,
            patches,
            standardised,
            targets,
            train_index,
            val_index,
            target_std,
            rng,
            schedule,
            patience,
            device,
            step,
            stop_after,
        )
        history += [{"member": member + 1, **entry} for entry in entries]
        networks.append(model.networks[0])
    return deploy(networks).eval(), history, schedule, scales


def _optimiser(network, schedule):
    kind = torch.optim.AdamW if schedule.optimiser == "adamw" else torch.optim.Adam
    return kind(network.parameters(), lr=schedule.learning_rate, weight_decay=schedule.weight_decay)


def _train_member(
    model,
    patches,
    standardised,
    targets,
    train_index,
    val_index,
    target_std,
    rng,
    schedule,
    patience,
    device,
    progress,
    stop_after=0,
):
    """Trains the one network of `model` in place, leaving it with the weights (and batch
    statistics) of the best validation loss, or of the last epoch without validation points;
    returns one history dict per epoch."""
    network = model.networks[0]
    optimiser = _optimiser(network, schedule)
    epochs = min(schedule.epochs, stop_after) if stop_after else schedule.epochs
    # The batch statistics are recomputed from the same training patches after every epoch, in
    # batches of a random sample each: batches of neighbouring points, as a dataset in the PS
    # export's order gives, vary less than the whole, and their variances understate its.
    statistics_index = rng.choice(train_index, min(len(train_index), RECOMPUTE_PATCHES), replace=False)
    history, best, best_loss, best_epoch, stale, taken = [], None, np.inf, 0, 0, 0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        network.train()
        seen, total, reported = 0, 0.0, time.perf_counter()
        for inputs, wanted in batches(patches, standardised, rng.permutation(train_index), schedule.batch_size):
            if len(wanted) < 2:
                continue  # batch normalisation needs two samples
            for group in optimiser.param_groups:
                group["lr"] = schedule.learning_rate * schedule.rate_factor(taken)
            inputs, wanted = inputs.to(device), wanted.to(device)
            optimiser.zero_grad(set_to_none=True)
            # The network learns the standardised target from normalised inputs.
            loss = torch.nn.functional.mse_loss(network(model.normalise(inputs))[:, 0], wanted)
            loss.backward()
            if schedule.clip_norm:
                torch.nn.utils.clip_grad_norm_(network.parameters(), schedule.clip_norm)
            optimiser.step()
            taken += 1
            seen += len(wanted)
            total += loss.item() * len(wanted)
            if time.perf_counter() - reported > REPORT_EVERY_S:
                progress("batch", epoch=epoch, epochs=epochs, fraction=seen / len(train_index))
                reported = time.perf_counter()
        train_loss, train_seconds = total / max(seen, 1), time.perf_counter() - start
        recompute_batch_norm(network, model.normalise, patches, statistics_index, device)
        val_loss = (
            _standardised_loss(model, patches, targets, val_index, target_std, device) if len(val_index) else None
        )
        entry = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "learning_rate": optimiser.param_groups[0]["lr"],
            "train_seconds": train_seconds,
            "seconds": time.perf_counter() - start,
        }
        history.append(entry)
        progress("epoch", epochs=epochs, **entry)
        if val_loss is None or val_loss < best_loss:
            best_loss, best_epoch, stale = (np.inf if val_loss is None else val_loss), epoch, 0
            best = {key: value.detach().clone() for key, value in model.state_dict().items()}
        elif epoch > schedule.warmup_epochs:  # patience counts only after the warm-up
            stale += 1
            if patience and len(val_index) and stale >= patience:
                progress("stopped", epoch=epoch, best_epoch=best_epoch)
                break
    model.load_state_dict(best)
    return history


def recompute_batch_norm(network, normalise, patches, index, device):
    """Sets the running statistics of every batch normalisation of `network` to those of
    patches[index] under its current weights (an equal-weight average over consecutive slices of
    `index`, of nearly equal size, dropout off), so that the eval-mode network is the one just
    trained. Leaves the network in eval mode."""
    norms = [module for module in network.modules() if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    network.eval()
    if not norms:
        return
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average
        norm.train()
    with torch.no_grad():
        for chosen in np.array_split(index, max(1, len(index) // RECOMPUTE_BATCH)):
            network(
                normalise(torch.from_numpy(np.asarray(patches[np.sort(chosen)])).to(device))
            )  # sorted: sequential reads
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
        norm.eval()


def _standardised_loss(model, patches, targets, index, target_std, device):
    predicted = predict(model, patches, index, device)[:, 0]
    return float(np.mean(((predicted - targets[index]) / target_std) ** 2))


def export(model, patches, output_dir):
    """model.onnx (dynamic batch size) and the check batch with torch's outputs, by name."""
    model = model.to("cpu").eval()
    check = torch.from_numpy(np.array(patches[:CHECK_BATCH], np.float32))  # a copy: the memory map is read-only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but needs no onnxscript
        torch.onnx.export(
            model,
            (check,),
            os.path.join(output_dir, "model.onnx"),
            dynamo=False,
            input_names=["patches"],
            output_names=list(MODEL_OUTPUTS),
            dynamic_axes={"patches": {0: "batch"}, **{name: {0: "batch"} for name in MODEL_OUTPUTS}},
            opset_version=17,
        )
    with torch.no_grad():
        return check.numpy(), {name: value.numpy() for name, value in zip(MODEL_OUTPUTS, model(check))}


def main(argv=None):
    args = parse(argv)
    try:
        device = choose_device(args.device)
        data = open_dataset(args.dataset)
        emit("start", device=str(device), threads=torch.get_num_threads(), samples=int(len(data["targets"])))
        model, history, schedule, scales = train(
            data,
            args.architecture,
            args.epochs,
            args.batch_size,
            args.learning_rate,
            args.patience,
            args.seed,
            device,
            args.members,
            recipe=args.recipe,
            steps=args.steps,
            stop_after=args.stop_after,
        )
        everything = np.arange(len(data["targets"]))
        predictions = predict(model, data["patches"], everything, device)
        check_inputs, check_outputs = export(model, data["patches"], args.output_dir)
        np.savez(
            os.path.join(args.output_dir, "result.npz"),
            predictions=predictions,
            history=json.dumps(history),
            plan=json.dumps(schedule._asdict()),
            log_scales=scales,
            check_inputs=check_inputs,
            **{f"check_{name}": value for name, value in check_outputs.items()},
            device=str(device),
        )
        emit("done")
    except UserError as error:
        print(f"ERROR: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
