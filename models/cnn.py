"""The CNNs in torch (shapes and the reasons for them in architecture.py), and the deployed
model: raw driver values in, the target in its units out (the ensemble's mean and each member's)."""

import torch
from torch import nn

from .architecture import BLOCK_WIDTHS, DENSE_WIDTHS, DROPOUT, PADDING, POOLING, check_patch_size, feature_size

# Keras's BatchNormalization defaults, which the paper's model used: momentum 0.99 there is
# 0.01 in torch's convention. The running statistics this momentum keeps trail the weights by
# about 100 optimiser steps, so the worker recomputes them before each evaluation
# (worker.recompute_batch_norm) instead of trusting them.
BATCH_NORM = {"eps": 1e-3, "momentum": 0.01}


def build(architecture, bands, patch_size):
    """The network mapping normalised patches (N, bands, P, P) to the standardised target (N, 1)."""
    problem = check_patch_size(architecture, patch_size)
    if problem:
        raise ValueError(problem)
    layers = []
    channels = bands
    for width, pooled in zip(BLOCK_WIDTHS[architecture], POOLING[architecture]):
        layers += [
            nn.Conv2d(channels, width, 1),
            nn.Conv2d(width, width, 3, padding=PADDING[architecture]),
            nn.ReLU(),
            nn.BatchNorm2d(width, **BATCH_NORM),
            *([nn.MaxPool2d(2)] if pooled else []),
            nn.Dropout(DROPOUT),
        ]
        channels = width
    layers.append(nn.Flatten())
    features = channels * feature_size(architecture, patch_size) ** 2
    widths = DENSE_WIDTHS[architecture]
    for index, width in enumerate(widths):
        layers += [nn.Linear(features, width), nn.ReLU(), nn.BatchNorm1d(width, **BATCH_NORM)]
        if index < len(widths) - 1:
            layers.append(nn.Dropout(DROPOUT))
        features = width
    layers.append(nn.Linear(features, 1))
    return nn.Sequential(*layers)


class Deployed(nn.Module):
    """Log-scales the bands core.transforms chose, standardises every band with its training
    statistics (after that transform), applies each network of the ensemble and turns their
    standardised outputs back into the target's units: what the .onnx file contains. Outputs: the
    prediction (N, 1), the members' mean, as docs/DESIGN.md's model contract has it; and the members'
    own predictions (N, members), whose spread is the uncertainty."""

    def __init__(self, networks, log_scales, band_mean, band_std, target_mean, target_std):
        super().__init__()
        self.networks = nn.ModuleList(networks)
        as_bands = lambda values: torch.as_tensor(values, dtype=torch.float32).reshape(1, -1, 1, 1)
        scales, std = torch.as_tensor(log_scales, dtype=torch.float32), torch.as_tensor(band_std, dtype=torch.float32)
        self.register_buffer("linear_band", as_bands(scales <= 0))  # 1 for the bands left as they are, else 0
        self.register_buffer(
            "log_inverse", as_bands(torch.where(scales > 0, 1 / scales, torch.zeros_like(scales)))
        )  # 0: asinh(0) = 0
        self.register_buffer("band_mean", as_bands(band_mean))
        self.register_buffer("band_scale", as_bands(torch.where(std > 0, 1 / std, torch.ones_like(std))))
        self.register_buffer("target_mean", torch.tensor(float(target_mean)))
        self.register_buffer("target_std", torch.tensor(float(target_std)))

    def normalise(self, patches):
        # Element-wise with (1, C, 1, 1) factors, so the dense rewrite takes it as it is. Each band
        # gets one of the two terms, the other being exactly 0.
        transformed = patches * self.linear_band + _asinh(patches * self.log_inverse)
        return (transformed - self.band_mean) * self.band_scale

    def forward(self, patches):
        normalised = self.normalise(patches)
        members = (
            torch.cat([network(normalised) for network in self.networks], dim=1) * self.target_std + self.target_mean
        )
        return members.mean(dim=1, keepdim=True), members


def _asinh(values):
    """asinh written out (torch's ONNX exporter has no asinh), odd-symmetric so that negative
    values lose no precision."""
    magnitude = torch.abs(values)
    return torch.sign(values) * torch.log(magnitude + torch.sqrt(magnitude * magnitude + 1))
