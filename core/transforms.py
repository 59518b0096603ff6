"""Band transforms the model applies to raw driver values before standardising them.

Strictly non-negative, strongly right-skewed drivers (specific catchment area, SPI, often
precipitation or distances in a city of wells) span several orders of magnitude: standardised
linearly, nearly all their values collapse onto one number and a few cells dominate. Such bands
are log-scaled as asinh(x / m), m the median of their positive training values: log(2x / m) for
large values, linear near zero, and finite for any value the prediction may meet (zeros, or
negative values outside the training range). The same formula is in the ONNX graph
(models.cnn.Deployed), so training and prediction cannot disagree.
"""

import numpy as np

SKEWNESS = 2.0  # above this (and with no negative value) a band is log-scaled
SAMPLE_PATCHES = 2000  # training patches whose pixels decide


def log_scales(patches, index, rng=None):
    """Per band, m for the bands to log-scale and 0 for the others, decided on (up to
    SAMPLE_PATCHES of) the training patches at `index`."""
    rng = rng or np.random.default_rng(0)
    chosen = np.sort(rng.choice(index, min(len(index), SAMPLE_PATCHES), replace=False))
    sample = np.asarray(patches[chosen], np.float64)
    scales = np.zeros(sample.shape[1])
    for band in range(sample.shape[1]):
        values = sample[:, band].ravel()
        values = values[np.isfinite(values)]
        positive = values[values > 0]
        if len(positive) and values.min() >= 0 and skewness(values) > SKEWNESS:
            scales[band] = float(np.median(positive))
    return scales


def skewness(values):
    spread = values.std()
    return float(np.mean(((values - values.mean()) / spread) ** 3)) if spread > 0 else 0.0


def apply(patches, scales):
    """patches (N, C, P, P) with the bands whose scale is > 0 log-scaled."""
    scales = np.asarray(scales, np.float64)
    out = np.array(patches, np.float64)
    for band in np.flatnonzero(scales > 0):
        out[:, band] = np.arcsinh(out[:, band] / scales[band])
    return out


def to_metadata(names, scales):
    """The model metadata's `band_transforms`: per band, in band order, its transform."""
    return [
        {"band": str(name), "transform": "asinh", "scale": float(scale)}
        if scale > 0
        else {"band": str(name), "transform": "none"}
        for name, scale in zip(names, scales)
    ]


def describe(names, scales):
    """'name (m = …)' for every log-scaled band, or an empty list."""
    return [f"{name} (m = {scale:.4g})" for name, scale in zip(names, scales) if scale > 0]
