"""Predicting every pixel of a driver stack with an ONNX patch model, tile by tile.

Pixel (r, c) stands for the patch of rows r - P//2 ... r - P//2 + P - 1 (columns alike). Cells
beyond the raster's edge are nodata, as in the patches training cut (core.patches.extract), and
nodata follows the model's policy: a pixel whose own drivers are nodata gets nodata; otherwise
nodata cells in its patch are replaced by the band's training mean, and the pixel gets nodata when
its patch has less valid data than the model saw in training (any nodata for "skip" models, under
MIN_VALID_TO_FILL for "fill" models).

A dense model (models.dense) gives a whole tile in one run; another model is run patch by patch,
in batches. An ensemble model gives each member's prediction: their mean is the prediction, their
spread its uncertainty.
"""

import numpy as np

from .blas import available_cores
from .patches import FRACTION_ROUNDING, least_valid

PATCH_BATCH = 256  # patches per run when evaluating patch by patch
# The model's outputs: the ensemble's mean (N, 1), as docs/DESIGN.md's contract has it, and each
# member's prediction (N, members). Models with the first output alone are single networks.
MODEL_OUTPUTS = ("prediction", "members")


def window_sums(values, size):
    """Sums of `values` (2-D) over every size x size window, indexed by the window's top-left
    corner: (rows - size + 1, columns - size + 1), exact for integers, summed in float64 otherwise."""
    table = np.zeros((values.shape[0] + 1, values.shape[1] + 1), np.int64 if values.dtype.kind in "biu" else np.float64)
    np.cumsum(np.cumsum(values, axis=0), axis=1, out=table[1:, 1:])
    return table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]


def session(model_bytes):
    """An ONNX Runtime session on all cores, on CUDA when ONNX Runtime has it."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = available_cores()
    options.log_severity_level = 3  # no warnings about initializers on the console
    providers = [
        provider
        for provider in ("CUDAExecutionProvider", "CPUExecutionProvider")
        if provider in onnxruntime.get_available_providers()
    ]
    return onnxruntime.InferenceSession(model_bytes, options, providers=providers)


class Predictor:
    """Predictions for blocks of raw drivers (bands, rows + P - 1, columns + P - 1), NaN for
    nodata and beyond the raster's edge: prepare(block) gives the block as the model sees
    it and where the policy lets it predict, predict(...) every member's (rows, columns)."""

    def __init__(self, run, dense, patch_size, band_mean, policy, members=1):
        self.run = run  # an onnxruntime session (or anything with its run())
        self.input = run.get_inputs()[0].name
        self.output = members_output(run)
        self.dense = dense
        self.size = patch_size
        self.mean = np.asarray(band_mean, np.float32)[:, None, None]
        self.least_valid = least_valid(policy)
        self.members = members

    def prepare(self, block):
        """(the block with nodata replaced by the band means, the (rows, columns) pixels to predict)."""
        size, half = self.size, self.size // 2
        rows, columns = block.shape[1] - size + 1, block.shape[2] - size + 1
        valid = np.isfinite(block)
        fraction = window_sums(valid.sum(axis=0), size) / (block.shape[0] * size * size)
        wanted = (fraction >= self.least_valid - FRACTION_ROUNDING) & valid[
            :, half : half + rows, half : half + columns
        ].all(axis=0)
        return np.where(valid, block, self.mean).astype(np.float32), wanted

    def predict(self, filled, wanted):
        """(members, rows, columns): each member's predictions where wanted, NaN elsewhere."""
        size = self.size
        rows, columns = wanted.shape
        out = np.full((self.members, rows, columns), np.nan, np.float32)
        if not wanted.any():
            return out
        if self.dense:
            values = self.run.run([self.output], {self.input: filled[None]})[0][0, :, :rows, :columns]
            out[:, wanted] = values[:, wanted]
        else:
            windows = np.lib.stride_tricks.sliding_window_view(
                filled, (size, size), axis=(1, 2)
            )  # (bands, rows, columns, P, P)
            cells = np.flatnonzero(wanted)
            for start in range(0, len(cells), PATCH_BATCH):
                chosen = cells[start : start + PATCH_BATCH]
                patches = np.ascontiguousarray(windows[:, chosen // columns, chosen % columns].transpose(1, 0, 2, 3))
                out.reshape(self.members, -1)[:, chosen] = self.run.run([self.output], {self.input: patches})[0].T
        return out


def members_output(run):
    """The name of a session's output with every member's prediction."""
    names = [output.name for output in run.get_outputs()]
    return MODEL_OUTPUTS[1] if MODEL_OUTPUTS[1] in names else names[0]


def ensemble_summary(members):
    """The prediction (the members' mean) and its uncertainty (their standard deviation, ddof 1;
    NaN for a single member) from (members, ...) predictions."""
    mean = members.mean(axis=0)
    if len(members) < 2:
        return mean, np.full_like(mean, np.nan)
    return mean, members.std(axis=0, ddof=1)
