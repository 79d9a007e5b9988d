"""The learning-rate range test (Smith 2017, as fastai's lr_find): train on a few hundred batches while the
learning rate grows exponentially, record the loss, and suggest a rate: a tenth of the rate at the smoothed
loss's minimum (on cats vs dogs' pooled head that gave 1e-3, the rate validation chose; the steepest descent,
also reported, fell for the moving average's early noise)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

SMOOTHING = 0.98  # exponential moving average of the batch losses, debiased (as fastai)
DIVERGED = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum


@dataclass(frozen=True)
class RangeTest:
    learning_rates: list[float]
    losses: list[float]  # the raw batch losses
    smoothed: list[float]
    steepest: float  # steepest descent of the smoothed loss before its minimum
    minimum: float  # the rate at the smoothed loss's minimum, over 10: the suggestion

    @property
    def suggestion(self) -> float:
        return self.minimum


def range_test(
    model: keras.Model, batches: tf.data.Dataset, steps: int = 200, start: float = 1e-7, end: float = 1.0
) -> RangeTest:
    """Run the test on a compiled `model` (its weights change: pass a fresh one) over `batches`, cycled."""
    rates, losses, smoothed = [], [], []
    average, best = 0.0, float("inf")
    cycled = itertools.cycle(batches)  # a few hundred steps may need more than one pass over small data
    for i in tqdm(range(steps), desc="learning-rate range test"):
        rate = start * (end / start) ** (i / max(steps - 1, 1))
        model.optimizer.learning_rate.assign(rate)
        x, y = next(cycled)
        loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])  # this batch's loss alone
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        value = average / (1 - SMOOTHING ** (i + 1))
        rates.append(rate)
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if not np.isfinite(value) or value > DIVERGED * best:
            break
    return RangeTest(rates, losses, smoothed, *suggest(rates, smoothed))


def suggest(rates: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(rate of the steepest descent before the minimum, rate at the minimum / 10). The first tenth of the steps
    is skipped: the moving average is still settling there, and its noise would pass for a descent."""
    low = int(np.argmin(smoothed))
    skip = max(len(rates) // 10, 3)
    if low - skip < 2:  # the loss never fell after the start: no descent to point at, only the lowest loss
        return rates[low], rates[low] / 10
    slopes = np.gradient(np.asarray(smoothed[skip : low + 1]), np.log10(rates[skip : low + 1]))
    return float(rates[skip + int(np.argmin(slopes))]), rates[low] / 10
