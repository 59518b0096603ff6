"""How the CNN is trained: the recipes, and the plan (optimiser, rate, batch size, epochs,
warm-up) each resolves to for a given number of training patches. Without torch, so that QGIS can
describe a plan before the worker starts.

`adaptive` (the default) is sized by optimiser steps rather than epochs, so that it learns from
a few hundred patches as well as from tens of thousands:
- AdamW at a peak rate of 1e-3 with weight decay 1e-4, batches of 32: small batches give a small
  dataset enough steps per epoch, and AdamW's decoupled decay keeps the weights in check without
  fighting Adam's step sizes;
- a budget of STEPS optimiser steps (epochs = steps / steps per epoch, between MIN_EPOCHS and
  MAX_EPOCHS): 800 patches get about 150 epochs, 50 000 patches MIN_EPOCHS;
- the rate rises linearly over the warm-up (the first WARMUP_FRACTION of the epochs), then falls
  along a cosine to FINAL_RATE_FRACTION of its peak at the last planned step;
- gradients are clipped to a norm of 1: without it, Adam with batch normalisation at this rate
  now and then takes one step that throws the training loss back by ten times (measured on
  tests/cnn_data's known function: test RMSE 0.21 of the target's spread without, 0.06 with);
- early stopping counts epochs without a better validation loss only after the warm-up, so that
  no network is stopped before it has trained at its full rate.
`paper` is the published recipe, for reproduction: Adam at a constant 1e-4, batches of 128,
150 epochs (tuned there for 48 790 training patches, about 57 000 steps).
"""

import math
from typing import NamedTuple

RECIPES = ("adaptive", "paper")  # the RECIPE enum's order: part of the interface
STEPS = 4000
MIN_EPOCHS = 10
MAX_EPOCHS = 1000
WARMUP_FRACTION = 0.1
FINAL_RATE_FRACTION = 0.01
PATIENCE = 30

_DEFAULTS = {
    "adaptive": {
        "optimiser": "adamw",
        "learning_rate": 1e-3,
        "weight_decay": 1e-4,
        "batch_size": 32,
        "schedule": "warm-up and cosine",
        "clip_norm": 1.0,
    },
    "paper": {
        "optimiser": "adam",
        "learning_rate": 1e-4,
        "weight_decay": 0.0,
        "batch_size": 128,
        "schedule": "constant",
        "clip_norm": 0.0,
        "epochs": 150,
    },
}


class Plan(NamedTuple):
    recipe: str
    optimiser: str  # "adamw" or "adam"
    learning_rate: float  # the peak rate
    weight_decay: float
    batch_size: int
    epochs: int
    steps_per_epoch: int
    warmup_epochs: int  # epochs of rising rate, during which early stopping does not count
    schedule: str  # "warm-up and cosine" or "constant"
    clip_norm: float  # gradients are clipped to this norm; 0: not clipped

    @classmethod
    def from_dict(cls, values):
        """The plan the worker sent (its _asdict(), through JSON)."""
        return cls(**{key: values[key] for key in cls._fields})

    def rate_factor(self, step):
        """The learning rate at optimiser step `step` (from 0) as a fraction of the peak."""
        if self.schedule == "constant":
            return 1.0
        warmup, total = self.warmup_epochs * self.steps_per_epoch, self.epochs * self.steps_per_epoch
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return FINAL_RATE_FRACTION + (1 - FINAL_RATE_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))

    def describe(self):
        return (
            f"{self.recipe} recipe: {self.optimiser} at {self.learning_rate:g} ({self.schedule}), "
            f"weight decay {self.weight_decay:g}, "
            + (f"gradients clipped to norm {self.clip_norm:g}, " if self.clip_norm else "")
            + f"batches of {self.batch_size}, "
            f"{self.epochs} epochs of {self.steps_per_epoch} steps"
            + (f", the first {self.warmup_epochs} a warm-up" if self.warmup_epochs else "")
        )


def plan(recipe, n_train, epochs=0, batch_size=0, learning_rate=0.0, steps=STEPS):
    """The plan for n_train training patches; 0 for epochs, batch_size or learning_rate means the
    recipe's own value."""
    if recipe not in RECIPES:
        raise ValueError(f"Unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}.")
    defaults = _DEFAULTS[recipe]
    batch_size = int(batch_size) or defaults["batch_size"]
    steps_per_epoch = max(1, math.ceil(n_train / batch_size))
    if not epochs:
        epochs = defaults.get("epochs") or min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(steps / steps_per_epoch)))
    warmup = math.ceil(WARMUP_FRACTION * epochs) if recipe == "adaptive" else 0
    return Plan(
        recipe,
        defaults["optimiser"],
        float(learning_rate) or defaults["learning_rate"],
        defaults["weight_decay"],
        batch_size,
        int(epochs),
        steps_per_epoch,
        min(warmup, int(epochs) - 1),
        defaults["schedule"],
        defaults["clip_norm"],
    )
